import Access
@testable import CaseStore
import CaseModel
import Foundation
@testable import EKCNode
@testable import FuzzHarness
import LMDB
import Replication
import Wire

// Writes the seeds of the frame, store and answers targets from a real store: tickets (with and
// without citizen data), edits, notes, a transfer to the pension fund and a disclosure,
// committed by a store of node irk-office-1; the store's values as LMDB holds them
// (fuzz/corpus/store/) and its feed as a peer streams it (fuzz/corpus/frame/).
//   fuzz/run.sh seeds        (the json and token seeds are written by fuzz/seeds.py)

let out = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "fuzz/corpus"
let folder = NSTemporaryDirectory() + "ekc-seeds-\(getpid())"
try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: folder) }

func write(_ target: String, _ name: String, _ bytes: [UInt8]) {
    let path = "\(out)/\(target)/seed-\(name)"
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

var configuration = StoreConfiguration(node: FuzzWorld.irkOffice, region: "38", utcOffsetMinutes: 480,
                                       directory: FuzzWorld.directory, wallClock: { FuzzWorld.now - 3_600_000 })
configuration.environment.initialMapSize = 16 << 20
let store = try CaseStore(path: folder, configuration: configuration)
let operatorActor = Actor(user: "op-ivanova", role: "operator")

let withCitizen = try await store.create(
    TicketDraft(channel: .phone, topic: "pension-recalc", supportMeasure: "old-age-pension", subject: "Перерасчёт пенсии",
                statement: "Прошу пересчитать пенсию с учётом стажа.\nЗвонила дважды.",
                citizen: Citizen(ref: "citizen-000123", name: "Кузнецова Ольга Ивановна", snils: try Snils("112-233-445 95"),
                                 phone: "+79021234533"),
                priority: .high, legalRegime: .appeal59FZ),
    actor: operatorActor)
let plain = try await store.create(
    TicketDraft(channel: .web, topic: "child-benefits", subject: "Единое пособие", statement: "Когда будет решение?",
                assignee: "op-ivanova"),
    actor: operatorActor)
for status in [TicketStatus.registered, .inWork] {
    var patch = TicketPatch()
    patch.status = status
    patch.assignee = .some("op-petrova")
    _ = try await store.perform(.patch(.id(plain.id), patch, ifMatch: nil), actor: FuzzWorld.supervisor)
}
_ = try await store.perform(.addNote(.id(plain.id), text: "Перезвонить после 15:00", visibility: .internal), actor: operatorActor)
_ = try await store.perform(.addNote(.id(withCitizen.id), text: "Документы получены", visibility: .shared), actor: operatorActor)
_ = try await store.perform(.sendTransfer(TransferRequest(ticket: .id(withCitizen.id), to: "pension", kind: .redirect,
                                                          reasonCode: "pension-recalc", reasonText: "Перерасчёт пенсии",
                                                          scope: [.ref, .name])), actor: operatorActor)
_ = try await store.perform(.recordAccess([AccessEntry(at: FuzzWorld.now, subject: "sv-orlova", role: "supervisor",
                                                       organisation: "38", action: "ticket.unmask",
                                                       ticket: withCitizen.id.description, fields: ["name", "phone"],
                                                       reason: "Гражданка просит подтвердить данные", remote: "127.0.0.1:5123",
                                                       route: "GET /v1/tickets/{ref}")]), actor: FuzzWorld.supervisor)

// MARK: store: the values of each table, with the selector of their decoder.

let schema = store.schema
try store.readTxn { txn in
    func each(_ db: Database, _ body: ([UInt8], [UInt8]) -> Void) throws {
        try txn.withCursor(db) { c throws -> Void in
            var ok = try c.first()
            while ok {
                body(c.keyBytes, c.valueBytes)
                ok = try c.next()
            }
        }
    }
    var n = 0
    try each(schema.records) { k, v in
        n += 1
        write("store", "record-\(n)", [k[0] == TicketRecord.kind.rawValue ? 0 : 1] + v)
    }
    try each(schema.children) { k, v in
        n += 1
        write("store", "child-\(n)", [k[0] == TicketRecord.kind.rawValue ? 2 : 3, k[17]] + v)
    }
    try each(schema.feed) { _, v in n += 1; if n % 2 == 0 { write("store", "feed-\(n)", [4] + v) } }
    try each(schema.tickets) { _, v in n += 1; write("store", "ticket-view-\(n)", [5] + v) }
    try each(schema.transfers) { _, v in n += 1; write("store", "transfer-view-\(n)", [6] + v) }
    try each(schema.accessLog) { _, v in n += 1; write("store", "access-log-\(n)", [8] + v) }
    try each(schema.meta) { k, v in
        if k == Array(Schema.MetaKey.accessHead) { write("store", "access-head", [9] + v) }
    }
    try each(schema.checkpoints) { _, v in n += 1; write("store", "checkpoint-\(n)", [9] + v) }
}
write("store", "purge", [7] + Purge(ticket: withCitizen.id, transfer: RecordID(high: 5, low: 6), at: FuzzWorld.now,
                                    state: .completed, ownWrites: VersionVector()).encode())
// A purge that kept the office's latest write, and a held purge, as damaged tables (mode
// 10: table 15 `purged`, 16 `purge_held`; a key field, then a value of two length bytes).
var officeWrites = VersionVector()
officeWrites.add(Dot(node: FuzzWorld.irkOffice, stamp: Stamp(millis: FuzzWorld.now - 60_000, logical: 2)))
let ownPurge = Purge(ticket: withCitizen.id, transfer: RecordID(high: 5, low: 6), at: FuzzWorld.now, state: .cancelled,
                     ownWrites: officeWrites).encode()
write("store", "purge-own-writes", [7] + ownPurge)
func tableSeed(_ table: UInt8, _ key: [UInt8], _ value: [UInt8]) -> [UInt8] {
    [10, table, UInt8(key.count)] + key + [UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
}
write("store", "table-purged", tableSeed(15, withCitizen.id.bytes, ownPurge))
write("store", "table-purge-held", tableSeed(16, withCitizen.id.bytes,
                                             HeldPurge(transfer: RecordID(high: 5, low: 6), through: 3, home: "52").encode()))

// MARK: frame: the feed as a peer streams it, behind the harness's parameter byte.

let page = try store.feedPage(after: 0, limit: 1000)
let entries = page.entries.map { (sequence: $0.sequence, delta: $0.delta) }
let storeID = store.storeIDBytes
func header(_ node: NodeID, resumeAfter: UInt64 = 0, reset: Bool = false) throws -> [UInt8] {
    try WireCoding.delimited(WireFrame.header(node: node, storeID: storeID, resumeAfter: resumeAfter, checkpointReset: reset,
                                              lastSequence: page.lastSequence))
}
func batches(_ from: Int = 0, target: Int = ReplicationProtocol.batchTargetBytes) -> [UInt8] {
    BatchFrames.all(Array(entries[from...]), sourceLastSequence: page.lastSequence, targetBytes: target).flatMap(\.bytes)
}
let heartbeat = try WireCoding.delimited(WireFrame.heartbeat(sourceLastSequence: page.lastSequence,
                                                              sourceStamp: Stamp(millis: FuzzWorld.now, logical: 3)))
let shuttingDown = try WireCoding.delimited(WireFrame.error(.shuttingDown, "the node is stopping"))
var mismatch = WireStreamError(.protocolVersionMismatch, "this node speaks 3")
mismatch.minProtocolVersion = 3
mismatch.maxProtocolVersion = 3

write("frame", "stream", [0x3F] + (try header(FuzzWorld.irkOffice)) + batches() + heartbeat + shuttingDown)
write("frame", "stream-bytewise", [0x00] + (try header(FuzzWorld.irkOffice)) + batches(target: 1) + heartbeat)
write("frame", "stream-one-per-batch", [0x07] + (try header(FuzzWorld.irkOffice)) + batches(target: 1) + shuttingDown)
write("frame", "stream-from-pension", [0x40 | 0x3F] + (try header(FuzzWorld.pfrMain)) + batches() + heartbeat)
write("frame", "stream-resumed", [0x80 | 0x3F] + (try header(FuzzWorld.irkOffice, resumeAfter: 3, reset: true)) + batches(3))
write("frame", "header-heartbeat", [0x3F] + (try header(FuzzWorld.irkOffice)) + heartbeat + heartbeat)
write("frame", "empty-batch", [0x3F] + (try header(FuzzWorld.irkOffice))
        + BatchFrames.empty(through: page.lastSequence, sourceLastSequence: page.lastSequence))
write("frame", "version-mismatch", [0x3F] + (try WireCoding.delimited(WireFrame.error(mismatch))))
for (i, e) in entries.enumerated() where i < 12 {
    write("frame", "record-\(i)", [0x3F] + (try header(FuzzWorld.irkOffice))
            + BatchFrames.all([e], sourceLastSequence: page.lastSequence).flatMap(\.bytes))
}
// Hostile positions on the stream: a heartbeat past any feed position (once shown as a
// lag of 1.8e19), and a header resuming past its own last sequence.
write("frame", "heartbeat-past-any-position", [0x3F] + (try header(FuzzWorld.irkOffice))
        + (try WireCoding.delimited(WireFrame.heartbeat(sourceLastSequence: .max, sourceStamp: Stamp(millis: FuzzWorld.now, logical: 0)))))
write("frame", "header-resuming-past-its-last", [0x3F] + (try WireCoding.delimited(WireFrame.header(
        node: FuzzWorld.irkOffice, storeID: storeID, resumeAfter: page.lastSequence + 5, checkpointReset: false,
        lastSequence: page.lastSequence))))

// MARK: answers: anti-entropy rounds against AnswerFuzz.ours, answered as a peer would.

/// One answer of the harness's input: a selector byte and two length bytes.
func answer(_ bytes: [UInt8], selector: UInt8 = 0) -> [UInt8] {
    [selector, UInt8(bytes.count >> 8 & 0xFF), UInt8(bytes.count & 0xFF)] + bytes
}

/// A whole round with a peer holding `theirs` (and, for records, the store's tickets),
/// played through the session as the harness plays it: each call's answer in order.
func round(_ parameters: UInt8, theirs: [DigestEntry], records: ([RecordRef]) throws -> [UInt8]) throws -> [UInt8] {
    var out = [parameters]
    var session = RepairSession(configuration: .init(budget: RepairBudget(calls: 4 + 4 * Int(parameters & 0x0F),
                                                                          recordsPerCall: 1 + Int(parameters >> 4 & 0x07)),
                                                     kinds: [TicketRecord.kind, TransferRecord.kind],
                                                     position: { DigestHashing.position($0, $1) }))
    let now = MonotonicInstant(nanoseconds: 1_000_000_000)
    var actions = session.start(now: now)[...]
    while let action = actions.popFirst() {
        switch action {
        case .compare(let level, _, _):
            let body = try WireCoding.serialize(AnswerFuzz.reply(theirs, level))
            out += answer(body)
            actions = session.compared(level, theirs: AntiEntropy.answer(try WireCoding.parse(WireDigestReply.self, from: body)),
                                       ours: AnswerFuzz.ourDigest(level), bytes: body.count, now: now)[...]
        case .fetch(let refs, _, _):
            let body = try records(refs)
            out += answer(body)
            actions = session.fetched(try AntiEntropy.records(body, AnswerFuzz.reading), bytes: body.count, now: now)[...]
        case .merge(let r):
            actions = session.merged(changed: r.count, refused: 0, damagedReplaced: 0, now: now)[...]
        case .finish:
            actions = []
        }
    }
    return out
}

/// The store's whole records for `refs`, as its responder answers a records call.
func held(_ refs: [RecordRef]) throws -> [UInt8] {
    let found = try store.wholeRecords(refs, for: "38", maxBytes: ReplicationProtocol.recordsResponseBytes)
    return BatchFrames.all(found.enumerated().map { (sequence: UInt64($0.offset + 1), delta: $0.element.1) },
                           sourceLastSequence: store.lastSequence).flatMap(\.bytes)
}

let ours = AnswerFuzz.ours
let ticketLeaf = DigestSum(a: 1, b: 2, c: 3, d: 4)
var differing = ours
differing[5] = DigestEntry(kind: differing[5].kind, id: differing[5].id, value: DigestSum(a: 99, b: 0, c: 0, d: 0))
differing.removeLast()
differing.append(DigestEntry(kind: TicketRecord.kind, id: withCitizen.id, value: ticketLeaf))
differing.append(DigestEntry(kind: TicketRecord.kind, id: plain.id, value: ticketLeaf))
write("answers", "honest-round", try round(0x2F, theirs: differing, records: held))
write("answers", "honest-round-one-ref-per-call", try round(0x0F, theirs: differing, records: held))
write("answers", "equal", try round(0x03, theirs: ours, records: held))
// Records never asked for: every records answer holds the other ticket.
write("answers", "unasked-records", try round(0x2F, theirs: ours + [DigestEntry(kind: TicketRecord.kind, id: withCitizen.id, value: ticketLeaf)],
                                              records: { _ in try held([RecordRef(kind: TicketRecord.kind, id: plain.id)]) }))
// The answer that once trapped the node: ranges 300 and 65535 at level 0.
var positions = WireDigestReply()
positions.ready = true
positions.records = 2
positions.ranges = [UInt32(300), 65535].map { p in
    var r = WireDigestRange()
    r.position = p
    r.sum = Data(repeating: 1, count: 32)
    r.records = 1
    return r
}
write("answers", "positions-out-of-range", [0x0F] + answer(try WireCoding.serialize(positions)))
write("answers", "call-failed-then-too-large", [0x0F] + answer([], selector: 0xFD) + answer([], selector: 0xFE))
print("seeds: \(entries.count) feed entries; store at \(folder)")
