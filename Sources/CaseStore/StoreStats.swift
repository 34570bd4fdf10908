import LMDB

/// What `ekc store stats` and the health endpoint report about a store.
public struct StoreStats: Sendable {
    public struct Table: Sendable {
        public let name: String
        public let entries: Int
        public let depth: Int
        public let pages: Int
    }
    public let storeID: String
    public let node: String
    public let lastSequence: UInt64
    public let tickets: Int
    public let tables: [Table]
    public let mapSize: Int
    public let usedBytes: Int
    public let mapGrowths: Int
    public let readersInUse: Int
}

extension CaseStore {
    public func stats() throws -> StoreStats {
        let info = env.info()
        return try readTxn { txn in
            let tables = try schema.all.map { db in
                let s = try txn.stat(db)
                guard let pages = s.pages else { throw CorruptRecord(what: "database \(db.name): its page counts add up past \(Int.max)") }
                return StoreStats.Table(name: db.name, entries: s.entries, depth: s.depth, pages: pages)
            }
            let last = try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
            return StoreStats(
                storeID: storeID, node: configuration.node.value, lastSequence: last,
                tickets: tables.first { $0.name == "tickets" }?.entries ?? 0, tables: tables,
                mapSize: info.mapSize, usedBytes: info.usedBytes, mapGrowths: env.mapGrowths,
                readersInUse: info.readersInUse)
        }
    }

    /// Statistics of any LMDB directory, read without opening it as a case store
    /// (so it works on a stopped node's data, or a copy).
    public static func inspect(path: String) throws -> (info: EnvironmentInfo, tables: [(String, DatabaseStat)]) {
        var cfg = Environment.Configuration()
        cfg.readOnly = true
        cfg.initialMapSize = 0
        let env = try Environment(path: path, configuration: cfg)
        let names = try env.databaseNames()
        var out: [(String, DatabaseStat)] = []
        for n in names {
            let db = try env.openDatabase(n, options: [])
            out.append((n, try env.read { try $0.stat(db) }))
        }
        return (env.info(), out)
    }
}
