import TestSupport
import XCTest
@testable import Replication

/// The reconnect policy (proto/README.md §4.6, §7) and the time arithmetic the
/// session timers rest on.
final class BackoffTests: XCTestCase {
    static let noJitter = SessionTimers(backoffJitter: 0)

    func testDoublesFromTheBaseUpToTheCap() {
        var b = Backoff(timers: Self.noJitter)
        var rng = SeededRandom(seed: 1)
        let delays = (0..<12).map { _ in b.nextDelay(using: &rng) }
        XCTAssertEqual(delays, [
            .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1_600),
            .milliseconds(3_200), .milliseconds(6_400), .milliseconds(12_800), .milliseconds(25_600),
            .seconds(30), .seconds(30), .seconds(30),
        ])
        XCTAssertEqual(b.attempt, 12)
    }

    /// While the peer's host refuses the connection (its node is starting), the link is
    /// tried again within `notListeningMax` (500 ms), not after up to 30 s; once it is
    /// reached and fails otherwise, the usual backoff goes on from the attempts made.
    func testAPeerNotListeningIsTriedAgainWithinHalfASecond() {
        var b = Backoff(timers: Self.noJitter)
        var rng = SeededRandom(seed: 1)
        let refused = PullCloseReason.notListening("connection refused")
        let delays = (0..<8).map { _ in b.delay(after: refused, appliedAny: false, using: &rng) }
        XCTAssertEqual(delays, [.milliseconds(100), .milliseconds(200), .milliseconds(400)] + Array(repeating: .milliseconds(500), count: 5))
        XCTAssertEqual(b.delay(after: .transportFailed("tls"), appliedAny: false, using: &rng), .milliseconds(25_600))
        var jittered = Backoff()
        for _ in 0..<200 {
            XCTAssertLessThanOrEqual(jittered.delay(after: refused, appliedAny: false, using: &rng), .milliseconds(500))
        }
        // Never above the ordinary cap either, whatever a deployment sets.
        var short = Backoff(timers: SessionTimers(backoffMax: .milliseconds(200), backoffJitter: 0))
        for _ in 0..<5 { _ = short.delay(after: refused, appliedAny: false, using: &rng) }
        XCTAssertEqual(short.delay(after: refused, appliedAny: false, using: &rng), .milliseconds(200))
    }

    func testProtocolDefaultsAreTheSpecsTimers() {
        let t = SessionTimers.protocolDefaults
        XCTAssertEqual(t.heartbeatInterval, .seconds(5))
        XCTAssertEqual(t.idleTimeout, .seconds(15))
        XCTAssertEqual(t.backoffBase, .milliseconds(100))
        XCTAssertEqual(t.backoffMax, .seconds(30))
        XCTAssertEqual(t.backoffJitter, 0.5)
        XCTAssertEqual(t.notListeningMax, .milliseconds(500))
        XCTAssertEqual(Backoff().timers, t)
    }

    func testJitterStaysWithinHalfEitherSideAndUnderTheCap() {
        for seed in UInt64(1)...50 {
            var rng = SeededRandom(seed: seed)
            var b = Backoff()
            var nominal = 0.1
            for attempt in 0..<20 {
                let d = b.nextDelay(using: &rng)
                let seconds = Double(d.wholeNanoseconds) / 1e9
                XCTAssertGreaterThanOrEqual(seconds, nominal * 0.5 - 1e-9, "seed \(seed) attempt \(attempt)")
                XCTAssertLessThanOrEqual(seconds, min(30, nominal * 1.5) + 1e-9, "seed \(seed) attempt \(attempt)")
                nominal = min(30, nominal * 2)
            }
        }
    }

    func testJitterSpreadsDelays() {
        var rng = SeededRandom(seed: 42)
        var seen = Set<Duration>()
        for _ in 0..<100 {
            var b = Backoff()
            seen.insert(b.nextDelay(using: &rng))
        }
        XCTAssertGreaterThan(seen.count, 90, "pullers that failed together must not retry together")
    }

    func testTheSameSeedReplaysTheSameSchedule() {
        func schedule(_ seed: UInt64) -> [Duration] {
            var rng = SeededRandom(seed: seed)
            var b = Backoff()
            return (0..<15).map { _ in b.nextDelay(using: &rng) }
        }
        XCTAssertEqual(schedule(7), schedule(7))
        XCTAssertNotEqual(schedule(7), schedule(8))
    }

    func testProgressResetsTheCount() {
        var rng = SeededRandom(seed: 3)
        var b = Backoff(timers: Self.noJitter)
        for _ in 0..<6 { _ = b.delay(after: .connectionClosed, appliedAny: false, using: &rng) }
        XCTAssertEqual(b.delay(after: .connectionClosed, appliedAny: false, using: &rng), .milliseconds(6_400))
        // A stream that applied something and then dropped reconnects at the base delay.
        XCTAssertEqual(b.delay(after: .idleTimeout(.seconds(15)), appliedAny: true, using: &rng), .milliseconds(100))
        XCTAssertEqual(b.delay(after: .streamEnded, appliedAny: false, using: &rng), .milliseconds(200))
        b.reset()
        XCTAssertEqual(b.attempt, 0)
    }

    func testRefusalsThatNeedAConfigurationChangeWaitTheLongestBackoff() {
        var rng = SeededRandom(seed: 4)
        let permanent: [PullCloseReason] = [
            .refused(status: 401, error: .init(.unauthenticated, "no certificate")),
            .refused(status: 403, error: .init(.forbidden, "not a peer")),
            .refused(status: 400, error: .init(.badRequest, "too large")),
            .refused(status: 400, error: .init(.protocolVersionMismatch, "speaks 1–1", supportedVersions: 1...1)),
            .refused(status: 403, error: nil), .refused(status: 401, error: nil), .refused(status: 400, error: nil),
            .refused(status: 404, error: nil), .refused(status: 405, error: nil), .refused(status: 415, error: nil),
            .peerError(.init(.forbidden, "no longer a peer")),
        ]
        for reason in permanent {
            var b = Backoff()
            XCTAssertTrue(Backoff.requiresConfigurationChange(reason), "\(reason)")
            XCTAssertEqual(b.delay(after: reason, appliedAny: false, using: &rng), .seconds(30), "\(reason)")
            XCTAssertEqual(b.attempt, 0, "a refusal does not consume an attempt")
        }
        let transient: [PullCloseReason] = [
            .refused(status: 503, error: .init(.shuttingDown, "bye")), .refused(status: 500, error: .init(.internal, "disk")),
            .refused(status: 500, error: nil), .refused(status: 503, error: nil), .refused(status: 502, error: nil),
            .peerError(.init(.shuttingDown, "bye")), .peerError(.init(.internal, "disk")),
            .protocolViolation("x"), .undecodable("x"), .idleTimeout(.seconds(15)), .streamEnded, .connectionClosed,
            .transportFailed("tls"), .mergeFailed("disk"), .unexpectedEvent("bug"),
        ]
        for reason in transient {
            var b = Backoff(timers: Self.noJitter)
            XCTAssertFalse(Backoff.requiresConfigurationChange(reason), "\(reason)")
            XCTAssertEqual(b.delay(after: reason, appliedAny: false, using: &rng), .milliseconds(100), "\(reason)")
        }
    }

    func testEveryCodeIsClassified() {
        let permanent = SessionError.Code.allCases.filter(Backoff.requiresConfigurationChange)
        XCTAssertEqual(Set(permanent.map(\.wireValue)), [1, 2, 3, 4])
        for code in SessionError.Code.allCases { XCTAssertEqual(SessionError.Code(wireValue: code.wireValue), code) }
        // UNSPECIFIED and codes from a later revision are INTERNAL (§7): retried.
        XCTAssertEqual(SessionError.Code(wireValue: 0), .internal)
        XCTAssertEqual(SessionError.Code(wireValue: 99), .internal)
        XCTAssertEqual(SessionError.Code(wireValue: -1), .internal)
        XCTAssertEqual(SessionError.Code.allCases.map { SessionError($0, "").httpStatus }, [400, 401, 403, 400, 500, 503])
    }

    func testDegenerateTimersDoNotTrap() {
        var rng = SeededRandom(seed: 5)
        var zero = Backoff(timers: .init(backoffBase: .zero, backoffMax: .zero))
        XCTAssertEqual(zero.nextDelay(using: &rng), .zero)
        var huge = Backoff(timers: .init(backoffBase: .seconds(Int64.max / 2), backoffMax: .seconds(Int64.max), backoffJitter: 7))
        for _ in 0..<100 { XCTAssertGreaterThanOrEqual(huge.nextDelay(using: &rng), .zero) }
        var negative = Backoff(timers: .init(backoffBase: .seconds(-1), backoffMax: .seconds(-5), backoffJitter: -1))
        XCTAssertEqual(negative.nextDelay(using: &rng), .zero)
        XCTAssertEqual(negative.delay(after: .refused(status: 403, error: nil), appliedAny: false, using: &rng), .zero)
        var many = Backoff()
        for _ in 0..<10_000 { XCTAssertLessThanOrEqual(many.nextDelay(using: &rng), .seconds(30)) }
    }

    // MARK: - Time

    func testMonotonicInstantArithmetic() {
        let t = MonotonicInstant(nanoseconds: 1_000)
        XCTAssertEqual(t + .nanoseconds(500), MonotonicInstant(nanoseconds: 1_500))
        XCTAssertEqual(t + .seconds(1), MonotonicInstant(nanoseconds: 1_000_001_000))
        XCTAssertEqual(t + .nanoseconds(-400), MonotonicInstant(nanoseconds: 600))
        XCTAssertEqual((t + .seconds(3)) - t, .seconds(3))
        XCTAssertEqual(t - (t + .seconds(3)), .seconds(-3))
        XCTAssertEqual(t - t, .zero)
        XCTAssertLessThan(t, t + .nanoseconds(1))
        // Saturating at both ends rather than trapping.
        XCTAssertEqual(t + .seconds(-5), MonotonicInstant(nanoseconds: 0))
        XCTAssertEqual(MonotonicInstant(nanoseconds: .max - 1) + .seconds(1), MonotonicInstant(nanoseconds: .max))
        // A duration past Int64's nanoseconds (292 years) counts as that much.
        XCTAssertEqual(t + .seconds(Int64.max), MonotonicInstant(nanoseconds: 1_000 + UInt64(Int64.max)))
        XCTAssertEqual(MonotonicInstant(nanoseconds: .max - 5) + .seconds(Int64.max), MonotonicInstant(nanoseconds: .max))
        XCTAssertEqual(MonotonicInstant(nanoseconds: .max) - MonotonicInstant(nanoseconds: 0), .nanoseconds(UInt64.max))
        XCTAssertEqual(MonotonicInstant(nanoseconds: 0) - MonotonicInstant(nanoseconds: .max), .zero - .nanoseconds(UInt64.max))
        XCTAssertEqual(Duration.milliseconds(1_500).wholeNanoseconds, 1_500_000_000)
        XCTAssertEqual(Duration.seconds(Int64.max).wholeNanoseconds, .max)
        XCTAssertEqual(Duration.seconds(Int64.min).wholeNanoseconds, .min)
    }
}
