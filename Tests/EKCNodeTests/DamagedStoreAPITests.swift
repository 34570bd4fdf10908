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
}
