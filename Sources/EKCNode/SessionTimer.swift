import NIOCore
import Replication

/// The one timer a session shell needs: set to the session's next deadline after each
/// event, replaced when the deadline moves, cancelled when there is none. Event-loop
/// bound, like the handler that owns it.
struct SessionTimer {
    private var scheduled: Scheduled<Void>?
    private var at: MonotonicInstant?

    /// The instant of the event loop's clock, as the session machines take it.
    static func now() -> MonotonicInstant { MonotonicInstant(nanoseconds: NIODeadline.now().uptimeNanoseconds) }

    /// Schedules `fire` at `deadline` unless it is already set for it.
    mutating func set(_ deadline: MonotonicInstant?, on loop: EventLoop, _ fire: @escaping @Sendable () -> Void) {
        guard deadline != at else { return }
        scheduled?.cancel()
        at = deadline
        scheduled = deadline.map { loop.scheduleTask(deadline: .uptimeNanoseconds($0.nanoseconds), fire) }
    }

    /// Called when it fired: the next `set` schedules again even for the same deadline.
    mutating func fired() { at = nil; scheduled = nil }

    mutating func cancel() {
        scheduled?.cancel()
        scheduled = nil
        at = nil
    }
}
