import Access
@testable import CaseStore
import CaseModel
import Foundation
@testable import FuzzHarness
import LMDB
import Replication
import Wire

// Writes the seeds of the frame and store targets from a real store: tickets (with and
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
print("seeds: \(entries.count) feed entries; store at \(folder)")
