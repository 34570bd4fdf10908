import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every LMDB return code as a typed error. `MDB_MAP_FULL` is handled inside
/// `Environment.write` (the map grows and the transaction is retried), so callers
/// only see `.mapFull` when the configured ceiling has been reached.
public enum LMDBError: Error, Equatable, CustomStringConvertible, Sendable {
    case keyExists
    case notFound
    case pageNotFound
    case corrupted
    case panic
    case versionMismatch
    case invalid
    case mapFull
    case databasesFull
    case readersFull
    case tlsFull
    case transactionFull
    case cursorFull
    case pageFull
    case mapResized
    case incompatible
    case badReaderSlot
    case badTransaction
    case badValueSize
    case badDatabase
    /// An errno from the operating system (ENOENT, EACCES, ENOSPC, ...).
    case system(code: Int32, message: String)

    init(code: Int32) {
        switch code {
        case MDB_KEYEXIST: self = .keyExists
        case MDB_NOTFOUND: self = .notFound
        case MDB_PAGE_NOTFOUND: self = .pageNotFound
        case MDB_CORRUPTED: self = .corrupted
        case MDB_PANIC: self = .panic
        case MDB_VERSION_MISMATCH: self = .versionMismatch
        case MDB_INVALID: self = .invalid
        case MDB_MAP_FULL: self = .mapFull
        case MDB_DBS_FULL: self = .databasesFull
        case MDB_READERS_FULL: self = .readersFull
        case MDB_TLS_FULL: self = .tlsFull
        case MDB_TXN_FULL: self = .transactionFull
        case MDB_CURSOR_FULL: self = .cursorFull
        case MDB_PAGE_FULL: self = .pageFull
        case MDB_MAP_RESIZED: self = .mapResized
        case MDB_INCOMPATIBLE: self = .incompatible
        case MDB_BAD_RSLOT: self = .badReaderSlot
        case MDB_BAD_TXN: self = .badTransaction
        case MDB_BAD_VALSIZE: self = .badValueSize
        case MDB_BAD_DBI: self = .badDatabase
        default: self = .system(code: code, message: String(cString: mdb_strerror(code)))
        }
    }

    /// The disk or the map ceiling is full: a write failed for want of space, and
    /// nothing of it was committed.
    public var isOutOfSpace: Bool {
        switch self {
        case .mapFull: return true
        case .system(let code, _): return code == ENOSPC || code == EDQUOT
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .system(let code, let message): return "LMDB: \(message) (errno \(code))"
        case .keyExists: return "LMDB: key already exists"
        case .notFound: return "LMDB: key not found"
        case .mapFull: return "LMDB: map is full and may not grow further"
        default: return "LMDB: \(self.codeName)"
        }
    }

    var codeName: String {
        switch self {
        case .pageNotFound: return "page not found (database may be corrupt)"
        case .corrupted: return "database corrupted"
        case .panic: return "environment panic: must be closed and reopened"
        case .versionMismatch: return "environment version mismatch"
        case .invalid: return "file is not an LMDB file"
        case .databasesFull: return "too many named databases"
        case .readersFull: return "reader table full"
        case .tlsFull: return "thread-local storage full"
        case .transactionFull: return "transaction has too many dirty pages"
        case .cursorFull: return "cursor stack too deep"
        case .pageFull: return "page has no more space"
        case .mapResized: return "map resized by another process"
        case .incompatible: return "operation incompatible with database flags"
        case .badReaderSlot: return "invalid reader slot"
        case .badTransaction: return "transaction must abort, has a child, or is invalid"
        case .badValueSize: return "key or value has an unsupported size"
        case .badDatabase: return "database handle changed unexpectedly"
        default: return "\(self)"
        }
    }
}

@inline(__always)
func check(_ code: Int32) throws(LMDBError) {
    if code != 0 { throw LMDBError(code: code) }
}
