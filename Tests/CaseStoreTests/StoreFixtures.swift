import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

// What the suites of this target share: a store on a temporary directory, drafts,
// the edits as one-line calls, and the feed read back as a peer would read it.

let hour: Millis = 3_600_000
let day: Millis = 86_400_000
/// Friday 2026-11-20 08:00 UTC = 16:00 in Irkutsk (UTC+8).
let t0: Millis = 1_795_132_800_000 + 8 * hour
let irk = irkutskNodes[0]        // irk-main
let office = irkutskNodes[1]     // irk-office-1
let ivanova = Actor(user: "ivanova", role: "operator")
let petrov = Actor(user: "petrov", role: "supervisor")
let ticketKinds = RecordKinds([TicketRecord.schema, TransferRecord.schema, Memo.schema])

func configuration(_ clock: TestClock, node: NodeID = irk, maxGroup: Int = 2048, series: UInt64 = 0) -> StoreConfiguration {
    var c = StoreConfiguration(node: node, region: "38", utcOffsetMinutes: 480, maxGroup: maxGroup, directory: testDirectory,
                               wallClock: clock.function)
    c.numberSeries = series
    c.extraKinds = [Memo.schema]
    // Every commit of every store test is held to the store's invariants.
    c.verifyEachCommit = true
    return c
}

func draft(_ channel: Channel = .web, regime: LegalRegime = .consultation, subject: String = "Пособие",
           assignee: String? = nil) -> TicketDraft {
    TicketDraft(channel: channel, topic: "child-benefits", subject: subject,
                statement: "Когда придёт единое пособие на ребёнка?", legalRegime: regime, assignee: assignee)
}

extension TicketRef {
    init(_ t: Ticket) { self = .id(t.id) }
}

extension CaseStore {
    func tableCounts() throws -> [String: Int] {
        Dictionary(uniqueKeysWithValues: try stats().tables.map { ($0.name, $0.entries) })
    }

    func patch(_ ref: TicketRef, _ p: TicketPatch, ifMatch: UInt64? = nil, actor: Actor = ivanova) async throws(StoreError) -> Ticket {
        try await perform(.patch(ref, p, ifMatch: ifMatch), actor: actor).ticket!
    }

    func note(_ ref: TicketRef, _ text: String, _ visibility: NoteVisibility = .internal,
              actor: Actor = ivanova) async throws(StoreError) -> Note {
        guard case .note(let n) = try await perform(.addNote(ref, text: text, visibility: visibility), actor: actor) else {
            throw .corrupt("not a note")
        }
        return n
    }

    /// A generic write; the record's id.
    @discardableResult
    func write(_ w: RecordWrite) async throws(StoreError) -> RecordID {
        guard case .record(let id) = try await perform(.write(w), actor: ivanova) else { throw .corrupt("not a record") }
        return id
    }

    /// Submits without waiting; the result lands in `results[index]`.
    func submitCollecting(_ edit: Edit, index: Int, into results: Box<[Int: Result<EditOutcome, StoreError>]>) {
        submit(edit, actor: ivanova) { r in results.with { $0[index] = r } }
    }

    /// The feed's entries after `since` as (sequence, registers by name, children by collection name).
    /// Each entry's own parts: the registers that sit at its sequence and the children
    /// it added (its delta as sent also carries the kind's authority registers).
    func feedShape(since: UInt64 = 0) throws -> [FeedShape] {
        try feedDeltas(since: since).map { seq, d in
            let schema = kinds[d.kind]!
            let own = try entry(seq)
            return FeedShape(sequence: seq, id: d.id,
                             registers: schema.indexes(numbers: own.registerNumbers).map { schema.registers[$0].name },
                             children: d.children.reduce(into: [:]) { $0[schema.collection(number: UInt64($1.collection))!.name, default: 0] += 1 })
        }
    }

    /// The stored feed entry at `sequence`.
    func entry(_ sequence: UInt64) throws -> FeedEntry {
        try env.read { txn in
            try #require(try txn.withValue(schema.feed, key: Keys.sequence(sequence)) { try FeedEntry.decode($0) })
        }
    }

    /// Every entry of the feed after `since`, read through `feedPage` and decoded as a peer decodes it.
    func feedDeltas(since: UInt64 = 0, limit: Int = 7) throws -> [(UInt64, RecordDelta)] {
        var out: [(UInt64, RecordDelta)] = []
        var after = since
        while true {
            let page = try feedPage(after: after, limit: limit)
            guard let last = page.entries.last else { return out }
            for e in page.entries { out.append((e.sequence, try decode(e.delta))) }
            after = last.sequence
        }
    }
}

struct FeedShape: Equatable, CustomStringConvertible {
    let sequence: UInt64
    let id: RecordID
    let registers: [String]
    let children: [String: Int]
    var description: String { "\(sequence): \(registers) \(children)" }
}

/// A RecordDelta's bytes decoded (and not checked).
func decode(_ bytes: [UInt8]) throws -> RecordDelta {
    try bytes.withUnsafeBytes { b in try RecordCoding.decodeDelta(b, kinds: ticketKinds) }
}

/// One entry of a peer's feed as a puller reads it: decoded, then checked by its kind's
/// rules; a record that fails either is a refused record in its place.
func remoteRecord(_ e: FeedPage.Entry) -> RemoteRecord {
    do {
        let d = try decode(e.delta)
        try ticketKinds[d.kind]!.check(d, context: CheckContext(directory: testDirectory))
        return RemoteRecord(sequence: e.sequence, delta: d)
    } catch let r as Refusal {
        return RemoteRecord(sequence: e.sequence, refusedKind: nil, id: nil, r)
    } catch {
        return RemoteRecord(sequence: e.sequence, refusedKind: nil, id: nil, Refusal(.malformed, "\(error)"))
    }
}

/// The invariants of the feed of parts, checked against the records themselves: every
/// register a record holds sits in exactly one entry, with the record's current value;
/// every child in exactly one entry; no entry is empty or holds more than 64 children;
/// and every record the store holds is in the feed.
func auditFeed(_ store: CaseStore, _ note: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
    var registerAt: [RecordID: [Int: UInt64]] = [:]
    var childAt: [RecordID: [ChildKey: UInt64]] = [:]
    var kindOf: [RecordID: RecordKindID] = [:]
    var previous: UInt64 = 0
    for (seq, d) in try store.feedDeltas() {
        #expect(seq > previous, note, sourceLocation: sourceLocation)
        previous = seq
        #expect(!d.isEmpty, "entry \(seq) is empty", sourceLocation: sourceLocation)
        #expect(d.children.count <= 64, "entry \(seq) holds \(d.children.count) children", sourceLocation: sourceLocation)
        kindOf[d.id] = d.kind
        let record = try #require(try store.record(kind: d.kind, id: d.id), sourceLocation: sourceLocation)
        let schema = try #require(store.kinds[d.kind], sourceLocation: sourceLocation)
        let own = schema.indexes(numbers: try store.entry(seq).registerNumbers)
        for (i, r) in d.state.registers.enumerated() where !r.isEmpty {
            // Every delta carries the authority registers as they are now; the others only in their own entry.
            #expect(own.contains(i) || schema.authorityRegisters.contains(i), "entry \(seq) sends register \(i) it does not hold",
                    sourceLocation: sourceLocation)
            #expect(r == record.state.registers[i], "entry \(seq) holds a stale register \(i)", sourceLocation: sourceLocation)
        }
        for i in own {
            #expect(registerAt[d.id, default: [:]][i] == nil, "register \(i) of \(d.id) in two entries", sourceLocation: sourceLocation)
            registerAt[d.id, default: [:]][i] = seq
            #expect(!d.state.registers[i].isEmpty, "entry \(seq) does not send its register \(i)", sourceLocation: sourceLocation)
        }
        for c in d.children {
            #expect(childAt[d.id, default: [:]][c.key] == nil, "child \(c.id) in two entries", sourceLocation: sourceLocation)
            childAt[d.id, default: [:]][c.key] = seq
            #expect(record.children[c.key] == c, sourceLocation: sourceLocation)
        }
    }
    for (id, kind) in kindOf {
        let record = try #require(try store.record(kind: kind, id: id), sourceLocation: sourceLocation)
        let written = Set(record.state.registers.indices.filter { !record.state.registers[$0].isEmpty })
        #expect(Set(registerAt[id, default: [:]].keys) == written, "registers of \(id) missing from the feed", sourceLocation: sourceLocation)
        #expect(Set(childAt[id, default: [:]].keys) == Set(record.children.keys), "children of \(id) missing from the feed",
                sourceLocation: sourceLocation)
    }
    let stored = try store.env.read { try $0.stat(store.schema.records).entries }
    #expect(stored == kindOf.count, "records not in the feed", sourceLocation: sourceLocation)
}

/// Stores of the test federation on one wall clock, exchanging their feeds through the
/// store API as the replicator does: a page of one store's feed after the other's
/// checkpoint, each entry decoded and checked on its own, merged with the new checkpoint.
final class StorePeers {
    let clock: TestClock
    let dirs: [TemporaryDirectory]
    let stores: [CaseStore]

    /// `linked`: per node, the organisations it has links to (`StoreConfiguration.linkedOrganisations`).
    init(_ nodes: [NodeID] = [irk, office], series: [UInt64]? = nil, clock: TestClock = TestClock(t0),
         linked: [NodeID: Set<String>] = [:]) throws {
        self.clock = clock
        let dirs = try nodes.map { _ in try TemporaryDirectory(prefix: "casestore-peers") }
        self.dirs = dirs
        stores = try nodes.enumerated().map { i, node in
            var c = configuration(clock, node: node, series: series?[i] ?? 0)
            c.linkedOrganisations = linked[node] ?? []
            return try CaseStore(path: dirs[i].path(), configuration: c)
        }
    }

    var a: CaseStore { stores[0] }
    var b: CaseStore { stores[1] }

    func close() {
        for s in stores { s.close() }
        for d in dirs { d.remove() }
    }

    /// Where `to` resumes `from`'s feed: its checkpoint, if it was taken against that store.
    func resumePoint(_ to: CaseStore, from: CaseStore) throws -> UInt64 {
        let cp = try to.checkpoint(for: from.configuration.node)
        return cp?.sourceStoreID == from.storeIDBytes ? cp!.sequence : 0
    }

    /// A batch of `from`'s feed entries `entries`, as `to` receives it.
    func batch(_ entries: [FeedPage.Entry], from: CaseStore, through: UInt64? = nil) -> RemoteBatch {
        RemoteBatch(peer: from.configuration.node, sourceStoreID: from.storeIDBytes,
                    throughSequence: through ?? entries.last?.sequence ?? 0, records: entries.map(remoteRecord))
    }

    /// Pulls everything `from` has after `to`'s checkpoint, a page at a time; the reports
    /// of every batch together. `from` decides what `to` receives by `to`'s organisation,
    /// as a node does from its peer's certificate: everything for its own organisation's
    /// nodes, the scope of their transfers for others. `unscoped`: the whole feed, as a
    /// hostile or misconfigured sender could send it (admission is the receiver's own
    /// defence). `pages`: stop after that many pages of `limit` entries (a pull cut short).
    @discardableResult
    func pull(_ to: CaseStore, from: CaseStore, limit: Int = 10_000, maxBytes: Int = 1 << 20,
              unscoped: Bool = false, pages: Int = .max) async throws -> MergeReport {
        var total = MergeReport()
        let partner = unscoped ? nil : from.configuration.directory.org(to.configuration.node) ?? ""
        for _ in 0..<pages {
            let after = try resumePoint(to, from: from)
            let page = try from.feedPage(after: after, limit: limit, maxBytes: maxBytes, partner: partner)
            guard !page.entries.isEmpty else {
                // Nothing in scope, but the position moves (a batch without changes).
                if page.readThrough > after { _ = try await to.merge(batch([], from: from, through: page.readThrough)) }
                return total
            }
            let r = try await to.merge(batch(page.entries, from: from, through: page.readThrough))
            total.changedRecords += r.changedRecords
            total.unchangedRecords += r.unchangedRecords
            total.rejections += r.rejections
            total.duplicateNumbers += r.duplicateNumbers
            total.wanted += r.wanted
        }
        return total
    }

    /// Whole records `refs` from `from` merged into `to` as a repair, as anti-entropy does.
    @discardableResult
    func repair(_ to: CaseStore, from: CaseStore, _ refs: [RecordRef]) async throws -> MergeReport {
        let partner = from.configuration.directory.org(to.configuration.node) ?? ""
        let records = try from.wholeRecords(refs, for: partner, maxBytes: 1 << 20).map { _, delta in
            remoteRecord(FeedPage.Entry(sequence: 0, delta: delta))
        }
        return try await to.merge(RemoteBatch(peer: from.configuration.node, sourceStoreID: [], throughSequence: 0,
                                              records: records, repair: true))
    }

    /// Every store pulls from every other, twice over.
    func sync() async throws {
        for _ in 0..<2 {
            for to in stores { for from in stores where from !== to { try await pull(to, from: from) } }
        }
    }
}

/// The operator's view without the local edit counter, which each store keeps for itself.
func view(_ t: Ticket?) -> Ticket? {
    guard var t else { return nil }
    t.version = 0
    return t
}
