import Access
@testable import CaseStore
import CaseModel
@testable import EKCNode
import Foundation
import Replication

/// The store's codecs: every value read from LMDB, damaged. A damaged value must be a
/// typed error (`CorruptRecord`, `ProtoError`) or a value the rest of the node can use;
/// what decodes is then used as the store and the API use it (projected, shown, encoded
/// again).
///
/// Input: a selector byte, then the stored value:
/// - 0 a ticket's record, 1 a transfer's record (`records`, `StoredRecord`);
/// - 2 a ticket's child, 3 a transfer's child (`children`, `StoredChild`; the next byte is
///   the collection);
/// - 4 a feed entry (`feed`, `FeedEntry`);
/// - 5 a ticket view (`tickets`, `TicketView`, `TicketIndexFacts`);
/// - 6 a transfer view (`transfers`, `TransferView`);
/// - 7 a purge (`purged`, `Purge`);
/// - 8 an access log value (`access_log`, `StoredAccess` and its `AccessEntry`);
/// - 9 the access log's head, a checkpoint, a counter (`meta`, `checkpoints`, `counters`);
/// - 10 damaged tables: (key, value) fields (a length byte, two for a value) written straight into the LMDB tables of an
///   otherwise empty store (the next byte picks the table: `tableNames`, modulo their
///   count; a byte past the first round of them also marks the digests built), then read
///   through the store and the API's GET routes (lists, changes, conflicts, transfers,
///   health, the access log and its check, the feed a peer is sent, the digests level by
///   level and the records a repair sends), a few steps of the digest scrub run over
///   them and the digests read again; a damaged access log is appended to (a disclosure)
///   and a damaged counter (its first value is also this year's counter) numbers a new
///   ticket; damaged purges and held purges meet an office's late note, an acknowledgement
///   and the release it allows; then everything is removed again.
public enum StoreFuzz {
    public static let modes = ["ticket-record", "transfer-record", "ticket-child", "transfer-child", "feed-entry",
                               "ticket-view", "transfer-view", "purge", "access-log", "fixed-values", "tables"]

    static let id = RecordID(high: 0x0199_0000_0000_0001, low: 0x0203_0405_0607_0809)

    /// Builds the fixtures before the first input.
    public static func prepare() { _ = FuzzStore.damaged; _ = TokenFuzz.verifier }

    public static func run(_ data: [UInt8]) {
        var input = FuzzBytes(data)
        let mode = Int(input.byte()) % modes.count
        if mode == 10 { return tables(&input) }
        if mode == 2 || mode == 3 {
            let collection = input.byte()
            input.rest.withUnsafeBytes { child($0, collection: collection, transfer: mode == 3) }
            return
        }
        input.rest.withUnsafeBytes { b in
            switch mode {
            case 0: record(b, TicketRecord.schema)
            case 1: record(b, TransferRecord.schema)
            case 4: feedEntry(b)
            case 5: ticketView(b)
            case 6: transferView(b)
            case 7: _ = try? Purge.decode(b, ticket: id)
            case 8: accessLog(b)
            default: fixed(b)
            }
        }
    }

    /// `CaseStore.loadRecord`, then what reads and merges do with a record.
    static func record(_ b: UnsafeRawBufferPointer, _ schema: RecordSchema) {
        guard let r = try? StoredRecord.decode(b, schema, id: id) else { return }
        _ = schema.conflicts(of: r.state)
        _ = schema.roles(r.state, FuzzWorld.directory)
        _ = r.state.latestStamp
        // Stored again, it reads back the same (the store rewrites records it merges into).
        let again = r.encode(schema)
        let reread = again.withUnsafeBytes { try? StoredRecord.decode($0, schema, id: id) }
        precondition(reread?.state == r.state && reread?.local == r.local, "a stored record does not survive its own encoding")
        // A feed sender copies registers out of the stored bytes.
        var w = ProtoWriter(capacity: 64)
        try? StoredRecord.copyRegisters(b, schema, schema.allRegisters, field: 3, into: &w)
        var json = JSONWriter()
        if schema.kind == TicketRecord.kind {
            let winners = r.state.registers.map(\.value)
            _ = TicketIndexFacts(id: id, winners: winners, stamp: r.state.latestStamp)
            if let t = Ticket.materialise(r.state, local: r.local) {
                json.ticket(t, transfers: [], now: FuzzWorld.now)
                let view = TicketView.encode(winners, version: r.local.version, stamp: r.state.latestStamp)
                _ = view.withUnsafeBytes { try? TicketView.decode($0, id: id) }
            }
        } else if let t = Transfer.materialise(r.state, local: r.local) {
            json.transfer(t, now: FuzzWorld.now)
            _ = TransferView.encode(t)
        }
        if !json.bytes.isEmpty { checkJSON(json.bytes) }
    }

    /// `CaseStore.children`, then a ticket's notes and history or a transfer's steps.
    static func child(_ b: UnsafeRawBufferPointer, collection: UInt8, transfer: Bool) {
        guard let c = try? StoredChild.decode(b, collection: collection, id: id) else { return }
        let again = StoredChild.encode(c)
        precondition(again.withUnsafeBytes({ try? StoredChild.decode($0, collection: collection, id: id) }) == c,
                     "a stored child does not survive its own encoding")
        var w = JSONWriter()
        w.beginArray()
        if transfer {
            let steps = TransferRecord.steps([c])
            for s in steps.steps { w.transferStep(s) }
            for s in steps.conflicts { w.transferStep(s) }
        } else {
            if let n = try? TicketValues.note(c, ticket: id, checked: false) { w.note(n) }
            if let e = try? TicketValues.event(c, ticket: id, checked: false) { w.event(e) }
        }
        w.endArray()
        checkJSON(w.bytes)
    }

    /// `CaseStore.changes`, the feed senders and the scoped feed.
    static func feedEntry(_ b: UnsafeRawBufferPointer) {
        guard let e = try? FeedEntry.decode(b) else { return }
        for schema in FuzzWorld.kinds.schemas {
            for i in schema.indexes(numbers: e.registerNumbers) { _ = schema.registers[i].name }
            for k in e.children { _ = schema.collection(number: UInt64(k.collection)) }
        }
        let again = e.encode()
        precondition(again.withUnsafeBytes({ try? FeedEntry.decode($0) }) == e, "a feed entry does not survive its own encoding")
    }

    /// `CaseStore.loadTicket` (every read of a ticket) and the index upkeep's `TicketIndexFacts(view:)`.
    static func ticketView(_ b: UnsafeRawBufferPointer) {
        _ = TicketIndexFacts(view: b, id: id)
        guard let t = try? TicketView.decode(b, id: id) else { return }
        for unmasked in [[], Set(OperatorAPI.maskableFields)] {
            var w = JSONWriter()
            w.ticket(t, transfers: [], now: FuzzWorld.now, unmasked: unmasked)
            checkJSON(w.bytes)
        }
        _ = OperatorAPI.disclosed(t, Set(OperatorAPI.maskableFields))
        _ = t.registerValues
    }

    /// `CaseStore.transferView`: lists of transfers and their index upkeep.
    static func transferView(_ b: UnsafeRawBufferPointer) {
        guard let v = try? TransferView.decode(b, id: id) else { return }
        var w = JSONWriter()
        w.transfer(Transfer(id: id, order: v.order, version: v.version), now: FuzzWorld.now)
        checkJSON(w.bytes)
        _ = TransferLifecycle.isOverdue(state: v.state, dueAt: v.order.dueAt, now: FuzzWorld.now)
    }

    /// `CaseStore.accessEntries` and `AccessChain.verify`: a stored value, its entry, its
    /// hash, as `GET /v1/audit/access` shows it.
    static func accessLog(_ b: UnsafeRawBufferPointer) {
        let entry: AccessEntry
        let stored: StoredAccess
        do {
            stored = try StoredAccess.decode(b)
            entry = try stored.entry.withUnsafeBytes { b throws(ProtoError) in try AccessEntry.decode(b) }
        } catch {
            // An entry alone (the log's value holds one).
            if let e = try? AccessEntry.decode(b) { _ = e.encoded() }
            return
        }
        _ = AccessChain.hash(prev: stored.prev, sequence: 1, entry: stored.entry)
        _ = AccessChain.hex(stored.hash)
        _ = AccessLogFilter(subject: "op-ivanova", ticket: nil, since: 0, until: FuzzWorld.now).matches(entry)
        var w = JSONWriter()
        w.beginObject()
        w.field("at", time: entry.at)
        w.field("subject", entry.subject)
        w.field("ticketId", entry.ticket)
        w.key("fields"); w.beginArray(); for f in entry.fields { w.string(f) }; w.endArray()
        w.field("reason", entry.reason)
        w.field("remote", entry.remote)
        w.endObject()
        checkJSON(w.bytes)
    }

    /// Values of fixed layout: the access log's head (`meta`), a peer's checkpoint, a
    /// counter or served mark (big-endian u64), read as the store reads them.
    static func fixed(_ b: UnsafeRawBufferPointer) {
        _ = AccessHead(bytes: b)
        _ = UInt64(bigEndianBytes: b)
        // `CaseStore.checkpoint(for:)`
        if b.count == 24 {
            _ = Checkpoint(sourceStoreID: Array(b[0..<16]), sequence: UInt64(bigEndianBytes: UnsafeRawBufferPointer(rebasing: b[16...]))!)
        }
        _ = TicketID(bytes: b)
    }

    /// The tables mode 10 writes into, by its table byte (modulo their count).
    static let tableNames = ["access_log", "feed", "tickets", "records", "transfers", "children",
                             "idx_conflicts", "scope_feed", "idx_transfer_ticket", "idx_transfer_inbox", "idx_transfer_outbox",
                             "digest_leaves", "digest_buckets", "digest_damaged", "counters", "purged", "purge_held"]

    /// A store read with damaged tables: the values of the tables `table` picks.
    static func tables(_ input: inout FuzzBytes) {
        let fixture = FuzzStore.damaged
        let store = fixture.api.store
        let s = store.schema
        let dbs = [s.accessLog, s.feed, s.tickets, s.records, s.transfers, s.children,
                   s.conflicted, s.scopeFeed, s.transfersByTicket, s.transferInbox, s.transferOutbox,
                   s.digestLeaves, s.digestBuckets, s.digestDamaged, s.counters, s.purged, s.purgeHeld]
        let selector = Int(input.byte())
        let table = selector % dbs.count
        // Digests marked built: a scrub then counts a leaf that changed as damage.
        let ready = (selector / dbs.count) % 2 == 1
        let db = dbs[table]
        var written: [[UInt8]] = []
        do {
            try store.env.write { txn in
                while !input.isEmpty {
                    let key = input.field(), value = input.longField()
                    guard !key.isEmpty, key.count <= 511 else { continue }
                    try txn.put(db, key: key, value: value)
                    written.append(key)
                }
                // What the access log's check compares its last entry with.
                if table == 0, let last = written.last, last.count == 8 {
                    try txn.put(s.meta, key: Schema.MetaKey.accessHead, value: last + [UInt8](repeating: 0, count: 32))
                }
                if ready { try txn.put(s.meta, key: Schema.MetaKey.digestVersion, value: CaseStore.digestFormat.bigEndianBytes) }
                // What numbers the next ticket.
                if table == 14, let first = written.first, let value = try txn.get(db, key: first) {
                    try txn.put(db, key: counterKey(store), value: value)
                }
            }
        } catch {
            return
        }
        defer {
            // The store empty again: what was written, and what the scrub, a disclosure and
            // a new ticket wrote (every table but meta, and meta's keys they move).
            _ = try? store.env.write { txn in
                for d in s.all where d != s.meta { try txn.clear(d) }
                for k in [Schema.MetaKey.accessHead, Schema.MetaKey.digestVersion, Schema.MetaKey.digestScrub] {
                    _ = try txn.delete(s.meta, key: k)
                }
                try txn.put(s.meta, key: Schema.MetaKey.lastSequence, value: UInt64(0).bigEndianBytes)
            }
            _ = try? store.reloadWaitingPurges()
        }
        for uri in ["/v1/audit/access?limit=1000", "/v1/audit/verify", "/v1/changes?since=0&limit=100", "/v1/tickets?limit=100",
                    "/v1/tickets?status=IN_WORK", "/v1/conflicts", "/v1/transfers?direction=in", "/v1/transfers?direction=out&overdue=true",
                    "/v1/health"] {
            JSONFuzz.get(fixture, uri)
        }
        _ = try? store.feedPage(after: 0, limit: 100)
        _ = try? store.feedPage(after: 0, limit: 100, partner: "pension")
        // The partners a damaged scope feed names.
        if table == 7 {
            for k in written.prefix(2) {
                guard let zero = k.firstIndex(of: 0), zero > 0 else { continue }
                _ = try? store.feedPage(after: 0, limit: 100, partner: String(decoding: k[..<zero], as: UTF8.self))
            }
        }
        _ = try? store.verifyAccessLog()
        // A ticket's transfers by the ticket an index key names.
        if table == 8 { for k in written.prefix(4) where k.count >= 16 { _ = try? store.transfers(ofTicket: .id(TicketID(bytes: k.prefix(16))!)) } }
        digests(store, fixture, written: table == 11 || table == 12 ? written : [])
        for _ in 0..<4 {
            let outcome = blocking { try? await store.perform(.scrubDigests(limit: 32), actor: .system) }
            guard case .scrubbed(let report)? = outcome, !report.finished else { break }
        }
        digests(store, fixture, written: [])
        if table == 0 {
            let entry = AccessEntry(at: FuzzWorld.now, subject: "sv-orlova", role: "supervisor", organisation: "38", action: "show",
                                    ticket: "38-2026-9", fields: ["phone"], reason: "fuzz")
            _ = blocking { try? await store.recordAccess([entry]) }
        }
        if table == 15 || table == 16 { purges(store, written: written) }
        if table == 14 {
            let draft = TicketDraft(channel: .phone, topic: "child-benefits", subject: "Единое пособие",
                                    statement: "Когда будет решение?", citizen: nil, assignee: "op-ivanova")
            _ = blocking { try? await store.create(draft, actor: FuzzWorld.supervisor) }
        }
    }

    /// Damaged purges and held purges, read as the node reads them: the waiting points
    /// loaded as at open, an office's late note for each ticket a key names (a merge asks
    /// the purge what it held, `lateOwnWrites`, and a held ticket's hold, `extendHold`),
    /// the office's acknowledgement of the whole feed (this store has no link to any
    /// home, so its own organisation's acknowledgement releases every hold) and the
    /// release it allows.
    static func purges(_ store: CaseStore, written: [[UInt8]]) {
        _ = try? store.reloadWaitingPurges()
        _ = try? store.heldPurgeCount()
        _ = try? store.heldPurges()
        var records: [RemoteRecord] = []
        for (i, key) in written.prefix(4).enumerated() {
            guard let id = RecordID(bytes: key) else { continue }
            _ = try? store.purge(ofTicket: id)
            let note = Note(id: RecordID(high: 7, low: UInt64(i)), ticketID: id, author: Actor(user: "op-f", role: "operator"),
                            node: FuzzWorld.irkOffice, at: FuzzWorld.now, stamp: Stamp(millis: FuzzWorld.now, logical: UInt16(i)),
                            visibility: .shared, text: "позднее примечание")
            let state = RecordState(kind: TicketRecord.kind, id: id, registerCount: TicketRecord.schema.registers.count)
            records.append(RemoteRecord(sequence: UInt64(i + 1), delta: RecordDelta(state: state, children: [TicketRecord.child(note)])))
        }
        if !records.isEmpty {
            let batch = RemoteBatch(peer: FuzzWorld.irkOffice, sourceStoreID: [UInt8](repeating: 0x0F, count: 16),
                                    throughSequence: UInt64(records.count), records: records)
            _ = blocking { try? await store.merge(batch) }
        }
        if store.acknowledged(by: FuzzWorld.irkOffice, through: .max) || store.heldPurgeReleasable {
            _ = blocking { try? await store.releaseHeldPurges() }
        }
        _ = try? store.heldPurgeCount()
    }

    /// This node's ticket counter of the year `FuzzWorld.now` falls in.
    static func counterKey(_ store: CaseStore) -> [UInt8] {
        let c = store.configuration
        return Array("\(c.region)-\(Calendar59.year(of: FuzzWorld.now, offsetMinutes: c.utcOffsetMinutes))".utf8)
    }

    /// The digests as a peer and an operator read them: the scopes of this organisation,
    /// its partners and those the damaged keys name, level by level; the damaged records;
    /// the records a repair would send.
    static func digests(_ store: CaseStore, _ fixture: FuzzStore, written: [[UInt8]]) {
        var scopes = ["38", "pension", "52"]
        var positions: [UInt16] = []
        for k in written.prefix(4) {
            guard let zero = k.firstIndex(of: 0) else { continue }
            scopes.append(String(decoding: k[..<zero], as: UTF8.self))
            if k.count >= zero + 3 { positions.append(UInt16(k[zero + 1]) << 8 | UInt16(k[zero + 2])) }
        }
        var refs: [RecordRef] = (try? store.damagedRecords(limit: 16)) ?? []
        for scope in scopes {
            guard let summary = try? store.digestSummary(scope: scope) else { continue }
            _ = summary.root
            for range in summary.ranges.prefix(2) {
                for bucket in (try? store.digestBuckets(scope: scope, range: UInt8(range.position))) ?? [] {
                    for e in ((try? store.digestEntries(scope: scope, bucket: bucket.position)) ?? []).prefix(4) {
                        refs.append(RecordRef(kind: e.kind, id: e.id))
                    }
                }
            }
            for p in positions {
                _ = try? store.digestBuckets(scope: scope, range: UInt8(p >> 8))
                _ = try? store.digestEntries(scope: scope, bucket: p)
            }
        }
        _ = try? store.digestScopeNames()
        _ = store.digestsReady
        for partner in ["38", "pension"] { _ = try? store.wholeRecords(Array(refs.prefix(16)), for: partner, maxBytes: 1 << 16) }
        var uris = ["/v1/digest", "/v1/digest?scope=pension", "/v1/digest?range=0"]
        if let p = positions.first { uris += ["/v1/digest?range=\(p >> 8)", "/v1/digest?bucket=\(p)"] }
        for uri in uris { JSONFuzz.get(fixture, uri) }
    }
}
