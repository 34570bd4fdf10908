/// A reading of a monotonic clock, in nanoseconds from an arbitrary origin. The
/// session machines never read a clock: the shell passes one of these with every
/// event that needs "now" (NIO's `NIODeadline.now().uptimeNanoseconds` fits), so
/// tests can drive time by hand and a wall-clock step cannot fire a timer.
public struct MonotonicInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static func < (a: MonotonicInstant, b: MonotonicInstant) -> Bool { a.nanoseconds < b.nanoseconds }

    /// Saturates at the ends of the clock instead of trapping: a timer configured
    /// absurdly long must not crash the node.
    public static func + (t: MonotonicInstant, d: Duration) -> MonotonicInstant {
        let n = d.wholeNanoseconds
        if n >= 0 {
            let (sum, overflow) = t.nanoseconds.addingReportingOverflow(UInt64(n))
            return MonotonicInstant(nanoseconds: overflow ? .max : sum)
        }
        let back = n.magnitude
        return MonotonicInstant(nanoseconds: t.nanoseconds > back ? t.nanoseconds - back : 0)
    }

    /// How long from `b` to `a`; negative when `a` is earlier.
    public static func - (a: MonotonicInstant, b: MonotonicInstant) -> Duration {
        a >= b ? .nanoseconds(a.nanoseconds - b.nanoseconds) : .zero - .nanoseconds(b.nanoseconds - a.nanoseconds)
    }

    public var description: String { "\(nanoseconds)ns" }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at Int64's range (±292 years).
    var wholeNanoseconds: Int64 {
        let (s, atto) = components
        let (ns, o1) = s.multipliedReportingOverflow(by: 1_000_000_000)
        let (sum, o2) = ns.addingReportingOverflow(atto / 1_000_000_000)
        if o1 || o2 { return s < 0 ? .min : .max }
        return sum
    }
}

/// The protocol's timers (proto/README.md §4, §7, §11), in one value so that a test or
/// a deployment can shorten them without touching the machines.
public struct SessionTimers: Sendable, Equatable {
    /// A sender that has sent nothing for this long sends a heartbeat.
    public var heartbeatInterval: Duration
    /// A puller that has heard nothing for this long (while it was listening) drops the stream.
    public var idleTimeout: Duration
    /// The first reconnect delay; it doubles with each failed attempt…
    public var backoffBase: Duration
    /// …up to this, which is also the wait after a refusal that needs a configuration change.
    public var backoffMax: Duration
    /// Each delay is scaled by a random factor in 1 ± this (0…1), so pullers that failed
    /// together do not reconnect together.
    public var backoffJitter: Double
    /// The longest wait after the peer's host refused the connection (nothing listening
    /// on the port: the node is starting or restarting). A refused connect costs a SYN
    /// and a RST, so it is retried this often rather than after up to `backoffMax`: a
    /// federation started together is linked within a second of its last node listening.
    public var notListeningMax: Duration

    public init(heartbeatInterval: Duration = .seconds(5), idleTimeout: Duration = .seconds(15),
                backoffBase: Duration = .milliseconds(100), backoffMax: Duration = .seconds(30),
                backoffJitter: Double = 0.5, notListeningMax: Duration = .milliseconds(500)) {
        self.heartbeatInterval = heartbeatInterval
        self.idleTimeout = idleTimeout
        self.backoffBase = backoffBase
        self.backoffMax = backoffMax
        self.backoffJitter = backoffJitter
        self.notListeningMax = notListeningMax
    }

    /// 5 s heartbeat, 15 s idle timeout, reconnect after 100 ms doubling to 30 s, ±50 %.
    public static let protocolDefaults = SessionTimers()
}
