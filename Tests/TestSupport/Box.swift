import Foundation

/// A value behind a lock, for results that completions on other threads deliver.
public final class Box<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T

    public init(_ v: T) { value = v }

    public func with<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }

    public var get: T { with { $0 } }
}
