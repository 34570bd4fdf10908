import CaseModel
import Foundation
import LMDB
import Replication

public struct StoreConfiguration: Sendable {
    public var node: NodeID
    /// Region code for readable numbers (`38` for Irkutsk oblast).
    public var region: String
    /// The centre's local time zone, east of UTC, for numbering years and working hours.
    public var utcOffsetMinutes: Int
    public var environment: Environment.Configuration
    /// Most edits one group commit takes.
    public var maxGroup: Int
    /// This node's numbering series within its region (0–99): its readable numbers are
    /// series × 10,000,000 + n, unique across the region's nodes without coordination.
    public var numberSeries: UInt64 = 0
    /// Organisation of every node of the federation, for admitting remote writes.
    public var directory: Directory
    /// A remote write stamped further ahead of local time than this is quarantined.
    /// 15 minutes: wide enough for the clock errors a node really has (an NTP-less
    /// office, a jump of ±10 minutes; a narrower bound loses such a node's writes at
    /// every peer), narrow enough that a clock set years ahead cannot drag every
    /// replica's stamps with it.
    public static let defaultMaxClockSkew: Millis = 15 * 60_000
    public var maxClockSkew: Millis
    /// Fixed gathering window for group commit in microseconds; nil adapts to load.
    public var commitGatherMicros: UInt32?
    public var wallClock: @Sendable () -> Millis
    /// Record kinds besides tickets (tests add a kind of their own; transfers come next).
    public var extraKinds: [RecordSchema] = []
    /// The organisations of the nodes this node replicates with directly (PurgeHold.swift:
    /// a purge held for one of them waits for that organisation's own acknowledgement).
    public var linkedOrganisations: Set<String> = []
    /// Checks the store's invariants (`StoreVerification.rules`) for what each commit
    /// wrote, before it commits; a commit that breaks one fails. For tests: it costs a
    /// read of every record a commit touched.
    public var verifyEachCommit = false
    /// Opening a store of an older format migrates it (Migrations.swift); false refuses
    /// it instead, naming `ekc store migrate`.
    public var migrateOnOpen = true
    /// Told after every chunk of a migration (the node logs it, `ekc store migrate` prints it).
    public var migrationProgress: (@Sendable (MigrationProgress) -> Void)?

    public init(node: NodeID, region: String, utcOffsetMinutes: Int = 180,
                environment: Environment.Configuration = .init(), maxGroup: Int = 2048,
                commitGatherMicros: UInt32? = nil, directory: Directory? = nil, maxClockSkew: Millis = StoreConfiguration.defaultMaxClockSkew,
                wallClock: @escaping @Sendable () -> Millis = CaseStore.systemMillis) {
        self.commitGatherMicros = commitGatherMicros
        self.directory = directory ?? Directory([node: region])
        self.maxClockSkew = maxClockSkew
        self.node = node
        self.region = region
        self.utcOffsetMinutes = utcOffsetMinutes
        self.environment = environment
        self.maxGroup = maxGroup
        self.wallClock = wallClock
    }

    public var workingHours: WorkingHours { WorkingHours(offsetMinutes: utcOffsetMinutes) }
}

/// A ticket by its global id or its readable number.
public enum TicketRef: Sendable, Hashable, CustomStringConvertible {
    case id(TicketID)
    case number(TicketNumber)

    public init?(_ text: String) {
        if let id = TicketID(text) { self = .id(id) } else if let n = TicketNumber(text) { self = .number(n) } else { return nil }
    }

    public var description: String {
        switch self {
        case .id(let id): return id.description
        case .number(let n): return n.description
        }
    }
}

/// The case store: replicated records of every kind with their children, the change
/// feed, and the ticket views and indexes operators query, in one LMDB environment.
/// Reads run on the caller's thread in a short read transaction; edits and merges go
/// through the group-commit queue.
public final class CaseStore: @unchecked Sendable {
    public let env: Environment
    let schema: Schema
    public let configuration: StoreConfiguration
    /// The record kinds this store keeps: tickets, and any the configuration adds.
    public let kinds: RecordKinds
    /// A random id made when the store was created: a checkpoint taken against one
    /// store is never applied to another (a restored or recreated one).
    public let storeID: String
    public let faults = FaultInjector()
    let digestWork = DigestWork()
    let statistics = Locked(CommitStatistics())
    let commitObservers = Locked<[Int: @Sendable () -> Void]>([:])
    let servedMarks = ServedMarks()
    let feedSkips = FeedSkips()
    let peerLinks = PeerLinks()
    let acknowledgements: Acknowledgements
    /// True while a restored store waits to catch up with its peers (Restore.swift).
    let restoreGate = Locked(false)
    let nextObserver = Locked(0)

    /// Calls `body` (on the commit thread; keep it short) after every commit that
    /// moved the change feed, until the token is removed.
    public func observeCommits(_ body: @escaping @Sendable () -> Void) -> Int {
        let token = nextObserver.withLock { n -> Int in n += 1; return n }
        commitObservers.withLock { $0[token] = body }
        return token
    }

    public func removeCommitObserver(_ token: Int) {
        commitObservers.withLock { _ = $0.removeValue(forKey: token) }
    }

    /// Totals since the store opened: where the commit thread's time went.
    public var commitStatistics: CommitStatistics { statistics.withLock { $0 } }
    var writer: WriterState
    private var queue: CommitQueue<PendingEdit>!

    /// The store format this build reads and writes (the meta table's schema_version).
    public static var storeFormat: UInt32 { Schema.version }

    public static let systemMillis: @Sendable () -> Millis = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Millis(ts.tv_sec) * 1000 + Millis(ts.tv_nsec / 1_000_000)
    }

    public init(path: String, configuration: StoreConfiguration) throws {
        self.configuration = configuration
        acknowledgements = Acknowledgements(linked: configuration.linkedOrganisations)
        kinds = RecordKinds([TicketRecord.schema, TransferRecord.schema] + configuration.extraKinds)
        do {
            env = try Environment(path: path, configuration: configuration.environment)
            // The format first: a store newer than this build is refused before anything
            // of it is touched; an older one is migrated, step by step (Migrations.swift).
            let meta = try env.openDatabase("meta")
            switch try env.read({ txn in try Migrations.state(txn, meta, path: path) }) {
            case .refused(let why): throw StoreError.identityMismatch(why)
            case .migratable(let format, _, _) where !configuration.migrateOnOpen:
                throw StoreError.identityMismatch(
                    "store at \(path) has format \(format); this build writes format \(Schema.version): migrate it with "
                    + "`ekc store migrate --data \(path)` (a node migrates its store when it starts)")
            default: break
            }
            schema = try Schema(env: env)
            try Migrations.run(env, schema, path: path, progress: configuration.migrationProgress)
        } catch let e as LMDBError {
            throw StoreError.storage(e)
        }
        let schema = self.schema
        let node = configuration.node
        let (storeID, lastStamp, lastID) = try env.write { txn -> (String, Stamp, TicketID) in
            if let v = try txn.get(schema.meta, key: Schema.MetaKey.schemaVersion) {
                let version = v.withUnsafeBytes { UInt64(bigEndianBytes: $0) } ?? 0
                // Migrated above; anything else is a store changed under this open.
                guard version == UInt64(Schema.version) else {
                    throw StoreError.identityMismatch("store at \(path) has format \(version) after its migration to \(Schema.version)")
                }
                let owner = try txn.get(schema.meta, key: Schema.MetaKey.nodeID).map { String(decoding: $0, as: UTF8.self) }
                guard owner == node.value else {
                    throw StoreError.identityMismatch("store at \(path) belongs to node \(owner ?? "?"), not \(node.value)")
                }
            } else {
                var rng = SystemRandomNumberGenerator()
                let id = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
                try txn.put(schema.meta, key: Schema.MetaKey.storeID, value: id)
                try txn.put(schema.meta, key: Schema.MetaKey.schemaVersion, value: UInt64(Schema.version).bigEndianBytes)
                try txn.put(schema.meta, key: Schema.MetaKey.nodeID, value: Array(node.value.utf8))
                try txn.put(schema.meta, key: Schema.MetaKey.lastSequence, value: UInt64(0).bigEndianBytes)
            }
            // The release that last opened it: a build older than its format names it.
            if try txn.get(schema.meta, key: Migrations.metaRelease) != Array(StoreFormats.release.utf8) {
                try txn.put(schema.meta, key: Migrations.metaRelease, value: Array(StoreFormats.release.utf8))
            }
            // Meta is stored bytes too: a store with a schema but no id is damaged, not a trap.
            guard let sidBytes = try txn.get(schema.meta, key: Schema.MetaKey.storeID) else {
                throw StoreError.corrupt("store at \(path) records a schema but no store id: its meta table was damaged")
            }
            let sid = hexString(sidBytes)
            let stamp = try txn.u64(schema.meta, Schema.MetaKey.lastStamp)
            let lastID = try txn.get(schema.meta, key: Schema.MetaKey.lastRecordID).flatMap { TicketID(bytes: $0) }
            return (sid, Stamp(raw: stamp ?? 0), lastID ?? TicketID(high: 0, low: 0))
        }
        self.storeID = storeID
        let pending = try env.read { txn in try txn.get(schema.meta, key: RestoreMeta.pending) != nil }
        restoreGate.withLock { $0 = pending }
        // The clock resumes after the last stamp ever committed, so stamps never repeat across restarts.
        // The clock and the id generator resume after the last committed stamp and id, so
        // stamps never repeat and new note and event ids sort after the stored ones, even
        // if the wall clock was stepped back while the node was down.
        writer = WriterState(clock: HybridLogicalClock(last: lastStamp, maxSkew: configuration.maxClockSkew), lastID: lastID)
        queue = CommitQueue(name: "ekc-commit", maxGroup: configuration.maxGroup) { [unowned self] group in
            self.commit(group)
        }
        queue.gatherWindowMicros = configuration.commitGatherMicros
        try reloadWaitingPurges()
    }

    /// Finishes queued edits and stops the commit thread. Idempotent.
    public func close() { queue.shutdown() }

    deinit { queue?.shutdown() }

    func submitPending(_ p: PendingEdit) {
        if !queue.submit(p) { p.completion(.failure(.closed)) }
    }

    public var queueDepth: Int { queue.depth }

    // MARK: Reads

    func loadRecord(_ schema: RecordSchema, _ id: RecordID, _ txn: some TransactionProtocol) throws -> StoredRecord? {
        try txn.withValue(self.schema.records, key: Keys.record(schema.kind.rawValue, id)) {
            try StoredRecord.decode($0, schema, id: id)
        }
    }

    /// The children of one collection of a record, in id order.
    func children(_ kind: RecordKindID, _ id: RecordID, _ collection: UInt8, _ txn: some TransactionProtocol) throws -> [Child] {
        let prefix = Keys.childPrefix(kind.rawValue, id, collection)
        return try txn.withCursor(schema.children) { c in
            var out: [Child] = []
            var ok = try c.seek(atLeast: prefix)
            while ok && c.keyHasPrefix(prefix) {
                // A key that names no child (a damaged table) is a corrupt store, not a trap.
                guard c.key.count == prefix.count + 16 else {
                    throw CorruptRecord(what: "children of \(id): a key of \(c.key.count) bytes")
                }
                let childID = RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[prefix.count...]))
                out.append(try StoredChild.decode(c.value, collection: collection, id: childID))
                ok = try c.next()
            }
            return out
        }
    }

    /// A record's registers and every child: what a peer that has nothing of it would be sent.
    public func record(kind: RecordKindID, id: RecordID) throws -> Record? {
        guard let schema = kinds[kind] else { return nil }
        return try readTxn { txn in
            guard let stored = try loadRecord(schema, id, txn) else { return nil }
            var r = Record(state: stored.state)
            for coll in schema.collections {
                for c in try children(kind, id, coll.number, txn) { r.children[c.key] = c }
            }
            return r
        }
    }

    /// A read transaction with LMDB and decoding errors mapped to `StoreError`.
    func readTxn<T>(_ body: (ReadTransaction) throws -> T) throws(StoreError) -> T {
        do {
            return try env.read(body)
        } catch let e as StoreError {
            throw e
        } catch let e as LMDBError {
            throw .storage(e)
        } catch let e as CorruptRecord {
            throw .corrupt(e.what)
        } catch {
            throw .corrupt("\(error)")
        }
    }

    public var lastSequence: UInt64 {
        (try? readTxn { txn in
            try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
        }) ?? 0
    }
}

public struct CommitStatistics: Sendable {
    public var groups = 0
    public var edits = 0
    /// Validating, encoding and writing edits into the transaction.
    public var applyNanos: UInt64 = 0
    /// `mdb_txn_commit`: writing dirty pages and fsync.
    public var commitNanos: UInt64 = 0
}

/// A value behind a mutex.
final class Locked<Value>: @unchecked Sendable {
    private let mutex = Mutex()
    private var value: Value
    init(_ v: Value) { value = v }
    func withLock<T>(_ body: (inout Value) -> T) -> T { mutex.withLock { body(&value) } }
}

struct WriterState {
    var clock: HybridLogicalClock
    var lastID: TicketID
    var rng = SystemRandomNumberGenerator()

    /// Monotonic ULIDs: a fresh random id in a new millisecond, the successor otherwise.
    mutating func nextID(now: Millis) -> TicketID {
        let ms = UInt64(max(0, now))
        if ms > lastID.millis {
            lastID = TicketID(millis: ms, randomHigh: UInt16.random(in: 0...UInt16.max, using: &rng) & 0x7FFF,
                              randomLow: UInt64.random(in: 0...UInt64.max, using: &rng))
        } else {
            lastID = lastID.incremented()
        }
        return lastID
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

/// Bytes as lowercase hex, two digits each (store ids, hashes).
func hexString(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String($0, radix: 16).leftPadded(2) }.joined() }
