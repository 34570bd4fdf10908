import CaseModel
import Foundation

/// A wall clock a test moves by hand; its `function` is what a store or node takes as
/// its clock.
public final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Millis

    public init(_ start: Millis = testNow) { value = start }

    public var now: Millis {
        get { lock.lock(); defer { lock.unlock() }; return value }
        set { lock.lock(); value = newValue; lock.unlock() }
    }

    public func advance(_ ms: Millis) { lock.lock(); value += ms; lock.unlock() }

    public var function: @Sendable () -> Millis { { [self] in self.now } }
}
