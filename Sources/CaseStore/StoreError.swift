import CaseModel
import LMDB

/// Why the store refused or failed an operation.
public enum StoreError: Error, Sendable, Equatable {
    case ticketNotFound(String)
    case conflictNotFound(String)
    case transferNotFound(String)
    /// A transfer or a step on one that its lifecycle or its rules refuse.
    case transferRefused(TransferError)
    /// If-Match named a version that is no longer current.
    case versionMismatch(current: UInt64, expected: UInt64)
    /// The model refused the edit.
    case rejected(TicketError)
    case storage(LMDBError)
    case corrupt(String)
    case closed
    /// A fault injected by a test at a named point.
    case injectedFault(String)
    /// The store belongs to another node or has an unknown schema.
    case identityMismatch(String)
    /// The access log's end disagrees with its recorded head: nothing more is appended
    /// (and so nothing disclosed) until it has been verified and examined.
    case accessLogBroken(String)
    /// A store restored from a backup takes no local write until it has caught up with
    /// its peers (Restore.swift).
    case restoring(String)

    public static func == (a: StoreError, b: StoreError) -> Bool { "\(a)" == "\(b)" }
}

/// Lets tests make a write fail part-way through, to prove that nothing of it stays.
public final class FaultInjector: @unchecked Sendable {
    private let lock = Mutex()
    private var armed: Set<String> = []
    public init() {}
    public func arm(_ point: String) { lock.withLock { _ = armed.insert(point) } }
    public func disarm(_ point: String) { lock.withLock { _ = armed.remove(point) } }
    func hit(_ point: String) throws(StoreError) {
        let fire = lock.withLock { armed.contains(point) }
        if fire { throw .injectedFault(point) }
    }
}
