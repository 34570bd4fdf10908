import CLMDB

public struct PutOptions: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let noOverwrite = PutOptions(rawValue: UInt32(MDB_NOOVERWRITE))
    /// Key is known to sort after every existing key (sequences, ULIDs).
    public static let append = PutOptions(rawValue: UInt32(MDB_APPEND))
}

/// Operations available in every transaction. The handle is only valid inside
/// the closure passed to `Environment.read` or `Environment.write`.
public protocol TransactionProtocol {
    var handle: OpaquePointer { get }
}

public struct ReadTransaction: TransactionProtocol {
    public let handle: OpaquePointer
}

public struct WriteTransaction: TransactionProtocol {
    public let handle: OpaquePointer
}

@inline(__always)
func withVal<R, E: Error>(_ bytes: UnsafeRawBufferPointer, _ body: (inout MDB_val) throws(E) -> R) throws(E) -> R {
    var val = MDB_val(mv_size: bytes.count, mv_data: UnsafeMutableRawPointer(mutating: bytes.baseAddress))
    return try body(&val)
}

extension MDB_val {
    @inline(__always)
    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: mv_data, count: mv_size) }
}

extension TransactionProtocol {
    /// Calls `body` with the value stored under `key`, in place (no copy); nil when absent.
    @inline(__always)
    public func withValue<R, E: Error>(
        _ db: Database, key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws -> R? {
        var data = MDB_val()
        let rc = withVal(key) { k in mdb_get(handle, db.dbi, &k, &data) }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc)
        return try body(data.buffer)
    }

    @inline(__always)
    public func withValue<R, E: Error>(
        _ db: Database, key: [UInt8], _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws -> R? {
        try key.withUnsafeBytes { k in try withValue(db, key: k, body) }
    }

    /// A copy of the value under `key`.
    public func get(_ db: Database, key: [UInt8]) throws -> [UInt8]? {
        try withValue(db, key: key) { Array($0) }
    }

    public func contains(_ db: Database, key: [UInt8]) throws -> Bool {
        try withValue(db, key: key) { _ in true } ?? false
    }

    public func stat(_ db: Database) throws(LMDBError) -> DatabaseStat {
        var s = MDB_stat()
        try check(mdb_stat(handle, db.dbi, &s))
        return DatabaseStat(
            pageSize: Int(s.ms_psize), depth: Int(s.ms_depth), branchPages: s.ms_branch_pages,
            leafPages: s.ms_leaf_pages, overflowPages: s.ms_overflow_pages, entries: s.ms_entries)
    }

    /// A cursor over `db`, closed when `body` returns.
    public func withCursor<R, E: Error>(_ db: Database, _ body: (Cursor) throws(E) -> R) throws -> R {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, db.dbi, &cursor))
        defer { mdb_cursor_close(cursor) }
        return try body(Cursor(handle: cursor!))
    }
}

extension WriteTransaction {
    public func put(_ db: Database, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer,
                    options: PutOptions = []) throws(LMDBError) {
        let rc = withVal(key) { k in withVal(value) { v in mdb_put(handle, db.dbi, &k, &v, options.rawValue) } }
        try check(rc)
    }

    public func put(_ db: Database, key: [UInt8], value: [UInt8], options: PutOptions = []) throws {
        try key.withUnsafeBytes { k in
            try value.withUnsafeBytes { v in try put(db, key: k, value: v, options: options) }
        }
    }

    /// Puts a key expected to sort after every key in `db` (ids, sequences, times) with
    /// MDB_APPEND, which fills pages instead of splitting them in half; a key that turns
    /// out not to be last is put the ordinary way.
    public func putAppending(_ db: Database, key: [UInt8], value: [UInt8], options: PutOptions = []) throws {
        try key.withUnsafeBytes { k in
            try value.withUnsafeBytes { v in
                let rc = withVal(k) { kv in withVal(v) { vv in
                    mdb_put(handle, db.dbi, &kv, &vv, options.union(.append).rawValue)
                } }
                if rc == MDB_KEYEXIST {
                    try put(db, key: k, value: v, options: options)
                } else {
                    try check(rc)
                }
            }
        }
    }

    /// Removes `key`; returns whether it was there.
    @discardableResult
    public func delete(_ db: Database, key: [UInt8]) throws(LMDBError) -> Bool {
        let rc = key.withUnsafeBytes { kb in withVal(kb) { k in mdb_del(handle, db.dbi, &k, nil) } }
        if rc == MDB_NOTFOUND { return false }
        try check(rc)
        return true
    }

    /// Removes every entry of `db` (the database itself stays).
    public func clear(_ db: Database) throws(LMDBError) {
        try check(mdb_drop(handle, db.dbi, 0))
    }
}

/// A position in a database. `key` and `value` point into the map and are valid
/// until the cursor moves or the transaction ends.
public final class Cursor {
    let handle: OpaquePointer
    private var k = MDB_val()
    private var v = MDB_val()

    init(handle: OpaquePointer) { self.handle = handle }

    public var key: UnsafeRawBufferPointer { k.buffer }
    public var value: UnsafeRawBufferPointer { v.buffer }
    public var keyBytes: [UInt8] { Array(k.buffer) }
    public var valueBytes: [UInt8] { Array(v.buffer) }

    @inline(__always)
    private func move(_ op: MDB_cursor_op) throws(LMDBError) -> Bool {
        let rc = mdb_cursor_get(handle, &k, &v, op)
        if rc == MDB_NOTFOUND { return false }
        try check(rc)
        return true
    }

    public func first() throws(LMDBError) -> Bool { try move(MDB_FIRST) }
    public func last() throws(LMDBError) -> Bool { try move(MDB_LAST) }
    public func next() throws(LMDBError) -> Bool { try move(MDB_NEXT) }
    public func previous() throws(LMDBError) -> Bool { try move(MDB_PREV) }

    /// Moves to the first key greater than or equal to `key`.
    public func seek(atLeast key: [UInt8]) throws -> Bool {
        try key.withUnsafeBytes { kb -> Bool in
            k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            return try move(MDB_SET_RANGE)
        }
    }

    /// Moves to exactly `key`.
    public func seek(exactly key: [UInt8]) throws -> Bool {
        try key.withUnsafeBytes { kb -> Bool in
            k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            return try move(MDB_SET_KEY)
        }
    }

    /// Whether the current key starts with `prefix`.
    public func keyHasPrefix(_ prefix: [UInt8]) -> Bool {
        let key = self.key
        guard key.count >= prefix.count else { return false }
        for i in 0..<prefix.count where key[i] != prefix[i] { return false }
        return true
    }
}
