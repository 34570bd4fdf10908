import Access
import CaseModel
import Foundation
import LMDB
import NIOHTTP1
import Replication
import Testing
@testable import CaseStore
@testable import EKCNode

/// Stored bytes are outside input too: a store damaged under the node (a disk, a hand
/// with the files) must answer the operator API with an error naming the damage, never
/// trap. Each test damages one value the way such a store would hold it, then asks the
/// API for what shows it.
@Suite struct DamagedStoreAPITests {
    private func error(_ body: [String: Any]) -> String {
        ((body["error"] as? [String: Any])?["message"] as? String) ?? ""
    }

    @Test("a stored SNILS of 5 digits is a corrupt ticket, not a trap when it is masked")
    func shortSnils() async throws {
        let f = try await APIFixture()
        let t = try f.create(#","citizen":{"ref":"CIT-1","name":"Иванова Мария","snils":"112-233-445 95"}"#)
        let id = try #require((t["id"] as? String).flatMap(TicketID.init))
        let (ok, _, shown) = try f.call(.GET, "/v1/tickets/\(id)")
        #expect(ok == 200 && (shown["citizen"] as? [String: Any])?["snils"] as? String == "***-***-445 95")
        // The ticket's view as a store written before the citizen's details had registers
        // of their own holds it (register 3), with the number cut short.
        let ticket = try #require(try f.store.ticket(.id(id)))
        var winners: [ValueBytes?] = ticket.registerValues
        winners[TicketRecord.Register.citizen.rawValue] = TicketValues.encode(Citizen(ref: "CIT-1", snils: Snils(trusted: "44595")))
        winners[TicketRecord.Register.citizenSnils.rawValue] = nil
        try f.store.env.write { txn in
            try txn.put(f.store.schema.tickets, key: id.bytes,
                        value: TicketView.encode(winners, version: ticket.version, stamp: ticket.updatedStamp))
        }
        let (status, _, body) = try f.call(.GET, "/v1/tickets/\(id)")
        #expect(status == 500 && error(body).contains("corrupt"), "\(status) \(body)")
    }

    @Test("an access-log entry stored with at = Int64.min is a corrupt entry, not a trap in the time writer",
          arguments: [Int64.min, -(Int64.max - 86_399_998), 0, 7_258_118_400_000])
    func accessEntryAt(at: Int64) async throws {
        let f = try await APIFixture()
        let entry = AccessEntry(at: f.store.configuration.wallClock(), subject: "op-test", role: "operator", organisation: "38",
                                action: "ticket.unmask", ticket: nil, fields: ["snils"], reason: "звонок гражданина",
                                remote: "127.0.0.1", route: "/v1/tickets/{ref}")
        #expect(try await f.store.recordAccess([entry]) == [1])
        var damaged = entry
        damaged.at = at
        try f.store.env.write { txn in
            let bytes = damaged.encoded()
            let prev = AccessHead.genesis.hash
            try txn.put(f.store.schema.accessLog, key: Keys.sequence(1),
                        value: StoredAccess(entry: bytes, prev: prev, hash: AccessChain.hash(prev: prev, sequence: 1, entry: bytes)).encode())
        }
        let auditor = APIFixture.principal("aud-test", [.auditor])
        let (status, _, body) = try f.call(.GET, "/v1/audit/access", as: auditor)
        #expect(status == 500 && error(body).contains("is not a time between 2000 and 2200"), "\(status) \(body)")
    }

    @Test("a purge stored with at = Int64.min is corrupt, not a trap when its transfer is shown")
    func purgeAt() async throws {
        let f = try await APIFixture(directory: Directory([NodeID("irk-main")!: "38", NodeID("sfr-federal")!: "sfr"]))
        let t = try f.create()
        let ticket = try #require(t["id"] as? String)
        let (sent, _, transfer) = try f.call(.POST, "/v1/tickets/\(ticket)/transfers",
                                             #"{"to":"sfr","kind":"COPY","reason":{"code":"info","text":"для сведения"}}"#)
        #expect(sent == 201, "\(transfer)")
        let transferID = try #require((transfer["id"] as? String).flatMap(RecordID.init))
        let ticketID = try #require(TicketID(ticket))
        try f.store.env.write { txn in
            try txn.put(f.store.schema.purged, key: ticketID.bytes,
                        value: Purge(ticket: ticketID, transfer: transferID, at: .min, state: .completed, ownWrites: VersionVector()).encode())
        }
        let (status, _, body) = try f.call(.GET, "/v1/transfers/\(transferID)")
        #expect(status == 500 && error(body).contains("is not a time between 2000 and 2200"), "\(status) \(body)")
    }

    @Test("a record whose stored edit counter is UInt64.max is corrupt: the next edit is refused, the commit thread does not trap")
    func versionAtTheTop() async throws {
        let f = try await APIFixture()
        let t = try f.create()
        let id = try #require((t["id"] as? String).flatMap(TicketID.init))
        let key = Keys.record(TicketRecord.kind.rawValue, id)
        try f.store.env.write { txn in
            var record = try #require(try txn.withValue(f.store.schema.records, key: key) {
                try StoredRecord.decode($0, TicketRecord.schema, id: id)
            })
            record.local.version = .max
            try txn.put(f.store.schema.records, key: key, value: record.encode(TicketRecord.schema))
        }
        let (status, _, body) = try f.call(.PATCH, "/v1/tickets/\(id)", #"{"assignee":"op-other"}"#)
        #expect(status == 500 && error(body).contains("version 18446744073709551615"), "\(status) \(body)")
        // The node still answers, and the ticket is as it was.
        let (shown, _, again) = try f.call(.GET, "/v1/tickets/\(id)")
        #expect(shown == 200 && again["assignee"] is NSNull)
    }
}
