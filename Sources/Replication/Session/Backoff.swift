/// The reconnect policy of a pull link (proto/README.md §4.6, §7): jittered exponential
/// backoff from `backoffBase` doubling up to `backoffMax`, reset by progress; up to
/// `notListeningMax` only while the peer's host refuses the connection (its node is
/// starting); and no quick retry of a refusal that only a configuration change can cure. The randomness
/// is passed in, so a seeded generator replays a schedule exactly.
public struct Backoff: Sendable, Equatable {
    public var timers: SessionTimers
    /// Failed attempts since the last progress; the next delay's exponent.
    public private(set) var attempt = 0

    public init(timers: SessionTimers = .protocolDefaults) {
        self.timers = timers
    }

    /// Forgets past failures: the link made progress.
    public mutating func reset() { attempt = 0 }

    /// The wait before reconnecting after a stream closed for `reason`. A stream that
    /// applied anything resets the count first, so a link that works but drops now and
    /// then reconnects at once. A refusal that needs a configuration change waits the
    /// longest backoff, without consuming an attempt.
    public mutating func delay(after reason: PullCloseReason, appliedAny: Bool,
                               using rng: inout some RandomNumberGenerator) -> Duration {
        if appliedAny { reset() }
        if Backoff.requiresConfigurationChange(reason) { return max(.zero, timers.backoffMax) }
        if case .notListening = reason { return nextDelay(cap: min(timers.notListeningMax, timers.backoffMax), using: &rng) }
        return nextDelay(using: &rng)
    }

    /// The next failure's delay: base × 2^attempt, capped at `backoffMax` (or `cap`),
    /// scaled by a random factor in 1 ± jitter, and never above the cap.
    public mutating func nextDelay(cap: Duration? = nil, using rng: inout some RandomNumberGenerator) -> Duration {
        let limit = cap ?? timers.backoffMax
        let base = max(0, Double(timers.backoffBase.wholeNanoseconds))
        let cap = max(0, Double(limit.wholeNanoseconds))
        // 2^attempt is capped before it can overflow; the cap is reached long before.
        let nominal = min(cap, base * Double(1 << UInt64(min(attempt, 62))))
        if attempt < Int.max { attempt += 1 }
        let j = min(max(timers.backoffJitter, 0), 1)
        let factor = j > 0 ? Double.random(in: (1 - j)...(1 + j), using: &rng) : 1
        let jittered = nominal * factor
        return jittered < cap ? .nanoseconds(Int64(jittered)) : max(.zero, limit)
    }

    /// §7: UNAUTHENTICATED, FORBIDDEN, BAD_REQUEST and a version mismatch are not cured
    /// by retrying; neither are the statuses a sender gives a request it will never
    /// serve (401, 403; 400, 404, 405, 415: wrong version, path, method or content type)
    /// when no error frame said more. Everything else (INTERNAL, SHUTTING_DOWN, 5xx,
    /// connection and protocol failures) is retried with backoff.
    public static func requiresConfigurationChange(_ reason: PullCloseReason) -> Bool {
        switch reason {
        case .refused(_, let error?), .peerError(let error):
            return requiresConfigurationChange(error.code)
        case .refused(let status, nil):
            return [400, 401, 403, 404, 405, 415].contains(status)
        default:
            return false
        }
    }

    public static func requiresConfigurationChange(_ code: SessionError.Code) -> Bool {
        switch code {
        case .unauthenticated, .forbidden, .badRequest, .protocolVersionMismatch: true
        case .internal, .shuttingDown: false
        }
    }
}
