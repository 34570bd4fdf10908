import CaseModel
import LMDB
import Replication

/// A rule of the store's layout that does not hold: where, and what was found.
public struct StoreViolation: Sendable, Equatable, CustomStringConvertible {
    /// The rule, as `StoreVerification.rules` names it.
    public let rule: String
    public let detail: String
    public var description: String { "\(rule): \(detail)" }
}

/// What `verify` found: the violations (at most `limit` of them kept) and what it read.
public struct StoreVerification: Sendable {
    public var violations: [StoreViolation] = []
    /// Violations found beyond those kept.
    public var more = 0
    public var feedEntries = 0
    public var records = 0
    public var tickets = 0
    public var transfers = 0
    public var isClean: Bool { violations.isEmpty }

    /// The invariants of a store, checked by `ekc store verify`, and after every commit
    /// of a store opened with `StoreConfiguration.verifyEachCommit` (the tests):
    public static let rules: [(String, String)] = [
        ("feed.entry", "every feed entry decodes, names a known kind, at most 64 children, and is not empty"),
        ("feed.register", "a register a feed entry names is held by its record, whose latest entry for it is that one — unless a purge of the ticket at or after the entry took it"),
        ("feed.child", "a child a feed entry names exists — unless a purge of the ticket at or after the entry took it"),
        ("record.feed", "every register a record holds sits in the feed entry its record names"),
        ("ticket.view", "a ticket whose record is complete has a view, and a view has a record"),
        ("ticket.index", "the ticket indexes (status, assignee, updated, deadline, number) are exactly those of the views"),
        ("transfer.view", "a transfer record has a view, whose state is what its steps add up to; its indexes name it"),
        ("purge", "a ticket purged here and out of scope holds no record, children or view (unless its purge is held)"),
        ("purge.held", "a held purge names a ticket this store holds"),
        ("access_log", "the access log runs from entry #1 to its recorded head, each entry unaltered and chained to the one before"),
    ]
}

extension CaseStore {
    /// The node a store belongs to, read without opening it as a case store (nil: none
    /// recorded, not a case store).
    public static func owningNode(path: String) throws -> String? {
        var cfg = Environment.Configuration()
        cfg.readOnly = true
        cfg.initialMapSize = 0
        let env = try Environment(path: path, configuration: cfg)
        guard try env.databaseNames().contains("meta") else { return nil }
        let meta = try env.openDatabase("meta", options: [])
        return try env.read { txn in try txn.get(meta, key: Schema.MetaKey.nodeID).map { String(decoding: $0, as: UTF8.self) } }
    }

    /// Checks every invariant of `StoreVerification.rules` over the whole store (one read
    /// transaction: a running node may keep writing).
    public func verify(limit: Int = 100) throws(StoreError) -> StoreVerification {
        try readTxn { txn in
            var v = Verifier(limit: limit)
            try verifyAll(txn, &v)
            // The same walk `ekc audit verify` makes, in the same snapshot.
            if case .tampered(let p) = try AccessChain.verify(txn, log: schema.accessLog, meta: schema.meta) {
                v.add("access_log", "entry #\(p.sequence) (\(p.kind.rawValue)): \(p.message)")
            }
            return v.result
        }
    }

    /// After a commit's writes, before it commits (`verifyEachCommit`): the records it
    /// touched and the feed entries it wrote (after `startSequence`).
    func verifyCommit(_ txn: WriteTransaction, startSequence: UInt64, through: UInt64) throws {
        var v = Verifier(limit: 10)
        if through > startSequence {
            try txn.withCursor(schema.feed) { c in
                var ok = try c.seek(atLeast: (startSequence + 1).bigEndianBytes)
                while ok {
                    try verifyFeedEntry(c.key, c.value, txn, &v)
                    ok = try c.next()
                }
            }
        }
        var touched = Set(digestWork.dirty.keys)
        for ref in touched where ref.kind == TransferRecord.kind {
            if let t = try loadTransfer(ref.id, txn) { touched.insert(RecordRef(kind: TicketRecord.kind, id: t.order.ticket)) }
        }
        for ref in touched { try verifyRecord(ref, txn, &v) }
        guard v.result.isClean else {
            throw StoreError.corrupt("store invariant broken by this commit: " + v.result.violations.map(\.description).joined(separator: "; "))
        }
    }

    private func verifyAll(_ txn: ReadTransaction, _ v: inout Verifier) throws {
        try txn.withCursor(schema.feed) { c in
            var ok = try c.first()
            while ok {
                v.result.feedEntries += 1
                try verifyFeedEntry(c.key, c.value, txn, &v)
                ok = try c.next()
            }
        }
        var refs: [RecordRef] = []
        try txn.withCursor(schema.records) { c in
            var ok = try c.first()
            while ok {
                if c.key.count == 17 {
                    refs.append(RecordRef(kind: RecordKindID(rawValue: c.key[0]), id: RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[1...]))))
                } else {
                    v.add("record.feed", "a record key of \(c.key.count) bytes")
                }
                ok = try c.next()
            }
        }
        v.result.records = refs.count
        for ref in refs { try verifyRecord(ref, txn, &v) }
        // Views without records, index entries without views.
        var views = Set<RecordID>()
        try forEachID(in: schema.tickets, rule: "ticket.view", keyName: "a view key", txn, &v) { id, v in
            views.insert(id)
            if try !txn.contains(schema.records, key: Keys.record(TicketRecord.kind.rawValue, id)) {
                v.add("ticket.view", "a view of ticket \(id), whose record is not held")
            }
        }
        v.result.tickets = views.count
        for (db, name) in [(schema.byStatus, "status"), (schema.byAssignee, "assignee"), (schema.byUpdated, "updated"),
                           (schema.byDeadline, "deadline")] {
            try txn.withCursor(db) { c in
                var ok = try c.first()
                while ok {
                    let id = c.key.count >= 16 ? RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[(c.key.count - 16)...])) : nil
                    if id == nil || !views.contains(id!) {
                        v.add("ticket.index", "the \(name) index names \(id.map { "\($0)" } ?? "a short key"), which has no view")
                    }
                    ok = try c.next()
                }
            }
        }
        try txn.withCursor(schema.numbers) { c in
            var ok = try c.first()
            while ok {
                if RecordID(bytes: c.value).map({ views.contains($0) }) != true {
                    v.add("ticket.index", "number \(String(decoding: c.key, as: UTF8.self)) names no ticket held here")
                }
                ok = try c.next()
            }
        }
        v.result.transfers = try forEachID(in: schema.transfers, rule: "transfer.view", keyName: "a view key", txn, &v) { id, v in
            if try !txn.contains(schema.records, key: Keys.record(TransferRecord.kind.rawValue, id)) {
                v.add("transfer.view", "a view of transfer \(id), whose record is not held")
            }
        }
        try txn.withCursor(schema.transfersByTicket) { c in
            var ok = try c.first()
            while ok {
                let named = c.key.count == 32 ? RecordID(bytes: UnsafeRawBufferPointer(rebasing: c.key[16...])) : nil
                let view = try named.flatMap { try transferView($0, txn) }
                if view == nil {
                    v.add("transfer.view", "the transfers-of-a-ticket index names a transfer without a view")
                }
                ok = try c.next()
            }
        }
        try forEachID(in: schema.purged, rule: "purge", keyName: "a purge key", txn, &v) { id, v in
            guard try !mayHold(id, origin: nil, txn), try !txn.contains(schema.purgeHeld, key: id.bytes) else { return }
            let key = Keys.record(TicketRecord.kind.rawValue, id)
            if try txn.contains(schema.records, key: key) { v.add("purge", "ticket \(id) is purged and out of scope, yet its record is held") }
            if try txn.contains(schema.tickets, key: id.bytes) { v.add("purge", "ticket \(id) is purged and out of scope, yet it has a view") }
            if try !everyChild(TicketRecord.schema, id, txn).isEmpty {
                v.add("purge", "ticket \(id) is purged and out of scope, yet children of it are held")
            }
        }
        for (id, _) in try heldPurges(txn) where try !txn.contains(schema.records, key: Keys.record(TicketRecord.kind.rawValue, id)) {
            v.add("purge.held", "a purge of \(id) is held, but the ticket is not")
        }
    }

    /// Walks a table keyed by record id, reporting a key that is no id under `rule`.
    /// Returns the entries walked.
    @discardableResult
    private func forEachID(in db: Database, rule: String, keyName: String, _ txn: some TransactionProtocol,
                           _ v: inout Verifier, _ body: (RecordID, inout Verifier) throws -> Void) throws -> Int {
        try txn.withCursor(db) { c in
            var count = 0
            var ok = try c.first()
            while ok {
                count += 1
                if let id = RecordID(bytes: c.key) {
                    try body(id, &v)
                } else {
                    v.add(rule, "\(keyName) of \(c.key.count) bytes")
                }
                ok = try c.next()
            }
            return count
        }
    }

    private func verifyFeedEntry(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, _ txn: some TransactionProtocol,
                                 _ v: inout Verifier) throws {
        guard key.count == 8, let seq = UInt64(bigEndianBytes: key) else { return v.add("feed.entry", "a key of \(key.count) bytes") }
        let entry: FeedEntry
        do { entry = try FeedEntry.decode(value) } catch { return v.add("feed.entry", "entry \(seq): \(error.what)") }
        guard let schema = kinds[entry.kind] else { return v.add("feed.entry", "entry \(seq) names unknown kind \(entry.kind.rawValue)") }
        if entry.isEmpty { v.add("feed.entry", "entry \(seq) is empty") }
        if entry.children.count > FeedEntry.maxChildren { v.add("feed.entry", "entry \(seq) names \(entry.children.count) children") }
        let record = try loadRecord(schema, entry.id, txn)
        for i in schema.indexes(numbers: entry.registerNumbers) {
            guard let record, !record.state.registers[i].isEmpty else {
                if try !partGoneByPurge(entry.kind, entry.id, since: seq, txn) {
                    v.add("feed.register", "entry \(seq) names register \(schema.registers[i].name) of \(entry.id), which is not held")
                }
                continue
            }
            if record.feedSequence[i] != seq {
                v.add("feed.register", "entry \(seq) names register \(schema.registers[i].name) of \(entry.id), whose latest entry is \(record.feedSequence[i])")
            }
        }
        for k in entry.children where try !txn.contains(self.schema.children, key: Keys.child(entry.kind.rawValue, entry.id, k.collection, k.id)) {
            if try !partGoneByPurge(entry.kind, entry.id, since: seq, txn) {
                v.add("feed.child", "entry \(seq) names child \(k.id) of \(entry.id), which is not held")
            }
        }
    }

    private func verifyRecord(_ ref: RecordRef, _ txn: some TransactionProtocol, _ v: inout Verifier) throws {
        guard let schema = kinds[ref.kind] else { return v.add("record.feed", "record \(ref.id) of unknown kind \(ref.kind.rawValue)") }
        let record: StoredRecord
        do {
            guard let r = try loadRecord(schema, ref.id, txn) else {
                // Gone (a purge): nothing of the ticket may be shown.
                if ref.kind == TicketRecord.kind, try txn.contains(self.schema.tickets, key: ref.id.bytes) {
                    v.add("ticket.view", "a view of ticket \(ref.id), whose record is not held")
                }
                return
            }
            record = r
        } catch let e as CorruptRecord {
            return v.add("record.feed", "record \(ref.id): \(e.what)")
        }
        for (i, r) in record.state.registers.enumerated() where !r.isEmpty {
            let at = record.feedSequence[i]
            let entry = at == 0 ? nil : try txn.withValue(self.schema.feed, key: Keys.sequence(at)) { try FeedEntry.decode($0) }
            let number = UInt64(schema.registers[i].number)
            guard let entry, entry.id == ref.id, entry.kind == ref.kind, entry.registerNumbers & (1 << number) != 0 else {
                v.add("record.feed", "register \(schema.registers[i].name) of \(ref.id) is not in the entry its record names (\(at))")
                continue
            }
        }
        switch ref.kind {
        case TicketRecord.kind:
            let complete = TicketRecord.isComplete(record.state.registers.map(\.value))
            let facts = try txn.withValue(self.schema.tickets, key: ref.id.bytes) { TicketIndexFacts(view: $0, id: ref.id) }
            if complete && facts == nil { v.add("ticket.view", "ticket \(ref.id) is complete but has no view") }
            if !complete, facts != nil { v.add("ticket.view", "ticket \(ref.id) is incomplete but has a view") }
            if let f = facts ?? nil {
                for (db, key) in indexEntries(f) where try !txn.contains(db, key: key) {
                    v.add("ticket.index", "ticket \(ref.id) is missing an index entry of its view")
                }
                if try txn.withValue(self.schema.numbers, key: Keys.number(f.number), { RecordID(bytes: $0) }) == nil {
                    v.add("ticket.index", "number \(f.number) of ticket \(ref.id) is not indexed")
                }
            }
        case TransferRecord.kind:
            guard let t = try loadTransfer(ref.id, txn) else { return }
            guard let view = try transferView(ref.id, txn) else { return v.add("transfer.view", "transfer \(ref.id) has no view") }
            if view.state != t.state {
                v.add("transfer.view", "transfer \(ref.id): the view says \(view.state.rawValue), its steps \(t.state.rawValue)")
            }
            for (db, key) in transferIndexEntries(ref.id, t.order) where try !txn.contains(db, key: key) {
                v.add("transfer.view", "transfer \(ref.id) is missing an index entry")
            }
        default:
            break
        }
    }
}

/// Collects violations up to a limit.
struct Verifier {
    let limit: Int
    var result = StoreVerification()

    init(limit: Int) { self.limit = limit }

    mutating func add(_ rule: String, _ detail: String) {
        if result.violations.count < limit {
            result.violations.append(StoreViolation(rule: rule, detail: detail))
        } else {
            result.more += 1
        }
    }
}
