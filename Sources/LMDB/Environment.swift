import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A named database inside an environment.
public struct Database: Sendable, Hashable {
    public let name: String
    let dbi: MDB_dbi
}

public struct DatabaseOptions: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let create = DatabaseOptions(rawValue: UInt32(MDB_CREATE))
    public static let duplicateSort = DatabaseOptions(rawValue: UInt32(MDB_DUPSORT))
    public static let integerKey = DatabaseOptions(rawValue: UInt32(MDB_INTEGERKEY))
}

public struct EnvironmentInfo: Sendable {
    public let mapSize: Int
    public let lastPageNumber: Int
    public let lastTransactionID: Int
    public let maxReaders: Int
    public let readersInUse: Int
    public let pageSize: Int
    /// Bytes of the map actually in use (pages up to the last used one).
    public var usedBytes: Int { (lastPageNumber + 1) * pageSize }
}

public struct DatabaseStat: Sendable {
    public let pageSize: Int
    public let depth: Int
    public let branchPages: Int
    public let leafPages: Int
    public let overflowPages: Int
    public let entries: Int

    /// Branch, leaf and overflow pages together; nil when the counts, which the file keeps
    /// in the database's record and nothing checks, add up past `Int` (a damaged file).
    public var pages: Int? {
        let (a, o1) = branchPages.addingReportingOverflow(leafPages)
        let (b, o2) = a.addingReportingOverflow(overflowPages)
        return o1 || o2 ? nil : b
    }
}

/// An LMDB environment: one directory with `data.mdb` and `lock.mdb`.
///
/// Transactions are scoped to closures and never outlive them; values handed to
/// the closure point into the map and must be copied before it returns.
/// The map grows when it fills: `write` catches `MDB_MAP_FULL`, aborts, doubles
/// the map (up to `maxMapSize`) and runs the closure again, so a write closure
/// must have no side effects outside its transaction.
public final class Environment: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var maxDatabases: Int = 32
        public var maxReaders: Int = 512
        public var initialMapSize: Int = 256 << 20
        public var maxMapSize: Int = 1 << 40
        public var readOnly = false
        /// `path` is the data file itself (a copy, `copy(toFileDescriptor:)`), not a directory.
        public var singleFile = false
        /// No lock file and no reader table: for a file nothing else has open (a backup
        /// being checked), so that reading it creates nothing beside it.
        public var noLock = false
        public init() {}
    }

    let env: OpaquePointer
    let lock = ReadWriteLock()
    /// Reset read transactions kept for reuse: renewing one skips the allocation and
    /// the reader-table mutex that beginning a fresh one costs. A reset transaction
    /// holds no snapshot, so it does not keep old pages alive.
    private let idleReaders = ReaderPool()
    public let path: String
    public let configuration: Configuration
    private var mapSize: Int
    private var growCount = 0

    public init(path: String, configuration: Configuration = .init()) throws(LMDBError) {
        var handle: OpaquePointer?
        try check(mdb_env_create(&handle))
        guard let env = handle else { throw .invalid }
        // Nothing is assigned to self until the environment is open: a failed open
        // closes the handle here, and deinit (which would close it again) never runs.
        var mapSize = configuration.initialMapSize
        do {
            try check(mdb_env_set_maxdbs(env, MDB_dbi(configuration.maxDatabases)))
            try check(mdb_env_set_maxreaders(env, UInt32(configuration.maxReaders)))
            try check(mdb_env_set_mapsize(env, configuration.initialMapSize))
            if !configuration.readOnly && !configuration.singleFile {
                mkdir(path, 0o700)
            }
            var flags = UInt32(MDB_NOTLS)
            if configuration.readOnly { flags |= UInt32(MDB_RDONLY) }
            if configuration.singleFile { flags |= UInt32(MDB_NOSUBDIR) }
            if configuration.noLock { flags |= UInt32(MDB_NOLOCK) }
            try check(mdb_env_open(env, path, flags, 0o600))
            // An existing file may be larger than the configured initial size.
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            mapSize = max(info.me_mapsize, configuration.initialMapSize)
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.env = env
        self.path = path
        self.configuration = configuration
        self.mapSize = mapSize
    }

    deinit {
        idleReaders.drain { mdb_txn_abort($0) }
        mdb_env_close(env)
    }

    /// How many times the map was grown since open (for metrics and tests).
    public var mapGrowths: Int { lock.withShared { growCount } }

    public func openDatabase(_ name: String, options: DatabaseOptions = .create) throws(LMDBError) -> Database {
        let flags = configuration.readOnly ? options.subtracting(.create) : options
        let begin = configuration.readOnly ? UInt32(MDB_RDONLY) : 0
        return try lock.withShared { () throws(LMDBError) -> Database in
            var txn: OpaquePointer?
            try check(mdb_txn_begin(env, nil, begin, &txn))
            var dbi: MDB_dbi = 0
            let rc = mdb_dbi_open(txn, name, flags.rawValue, &dbi)
            if rc != 0 { mdb_txn_abort(txn); throw LMDBError(code: rc) }
            try check(mdb_txn_commit(txn))
            return Database(name: name, dbi: dbi)
        }
    }

    /// Names of the named databases (the keys of the main database).
    public func databaseNames() throws -> [String] {
        let main: MDB_dbi = try read { txn in
            var dbi: MDB_dbi = 0
            try check(mdb_dbi_open(txn.handle, nil, 0, &dbi))
            return dbi
        }
        return try read { txn in
            var names: [String] = []
            try txn.withCursor(Database(name: "", dbi: main)) { cursor throws(LMDBError) in
                var ok = try cursor.first()
                while ok {
                    names.append(String(decoding: cursor.key, as: UTF8.self))
                    ok = try cursor.next()
                }
            }
            return names
        }
    }

    /// A read-only snapshot for the duration of `body`.
    @inline(__always)
    public func read<T, E: Error>(_ body: (ReadTransaction) throws(E) -> T) throws -> T {
        try lock.withShared { () throws -> T in
            var txn: OpaquePointer? = idleReaders.take()
            var rc: Int32
            if let t = txn {
                rc = mdb_txn_renew(t)
                if rc != 0 { mdb_txn_abort(t); txn = nil }
            } else {
                rc = -1
            }
            if txn == nil {
                rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
                if rc == MDB_MAP_RESIZED {
                    // Another process grew the map; adopt its size.
                    mdb_env_set_mapsize(env, 0)
                    rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
                }
            }
            try check(rc)
            defer {
                mdb_txn_reset(txn)
                idleReaders.put(txn!)
            }
            return try body(ReadTransaction(handle: txn!))
        }
    }

    /// One write transaction: committed (with fsync) when `body` returns, aborted when it throws.
    /// Retried after growing the map if it fills, so `body` may run more than once.
    public func write<T>(_ body: (WriteTransaction) throws -> T) throws -> T {
        precondition(!configuration.readOnly, "write on a read-only environment")
        while true {
            do {
                return try lock.withShared { () throws -> T in
                    var txn: OpaquePointer?
                    try check(mdb_txn_begin(env, nil, 0, &txn))
                    let value: T
                    do {
                        value = try body(WriteTransaction(handle: txn!))
                    } catch {
                        mdb_txn_abort(txn)
                        throw error
                    }
                    try check(mdb_txn_commit(txn))  // commit frees the txn even on failure
                    return value
                }
            } catch LMDBError.mapFull {
                try grow()
            }
        }
    }

    private func grow() throws(LMDBError) {
        try lock.withExclusive { () throws(LMDBError) in
            let next = min(mapSize * 2, mapSize + (8 << 30), configuration.maxMapSize)
            guard next > mapSize else { throw LMDBError.mapFull }
            try check(mdb_env_set_mapsize(env, next))
            mapSize = next
            growCount += 1
        }
    }

    /// A consistent copy of the whole environment into `fd` (an open, empty file), taken
    /// from one read transaction while writers go on; `compact` leaves free pages out
    /// and renumbers the rest (LMDB's `mdb_env_copyfd2` with `MDB_CP_COMPACT`, what
    /// `mdb_copy -c` does). The copy is a store of its own: one file, no lock file.
    public func copy(toFileDescriptor fd: Int32, compact: Bool) throws(LMDBError) {
        try check(mdb_env_copyfd2(env, fd, compact ? UInt32(MDB_CP_COMPACT) : 0))
    }

    public func info() -> EnvironmentInfo {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        lock.withShared {
            mdb_env_info(env, &info)
            mdb_env_stat(env, &stat)
        }
        return EnvironmentInfo(
            mapSize: info.me_mapsize, lastPageNumber: info.me_last_pgno,
            lastTransactionID: info.me_last_txnid, maxReaders: Int(info.me_maxreaders),
            readersInUse: Int(info.me_numreaders), pageSize: Int(stat.ms_psize))
    }

}
