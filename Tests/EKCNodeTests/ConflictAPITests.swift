import CaseModel
import CaseStore
import Foundation
import NIOHTTP1
import Replication
import Testing
@testable import EKCNode

/// Conflicts through the operator API: a second store of the same region edits the
/// same ticket concurrently; its batch is merged into the API's store.
@Suite struct ConflictAPITests {
    @Test func listAndResolveThroughTheAPI() async throws {
        let peerNode = NodeID("irk-office-1")!
        let directory = Directory([NodeID("irk-main")!: "38", peerNode: "38"])
        let f = try await APIFixture(directory: directory)
        let t = try f.create()
        let id = try #require(t["id"] as? String).description
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-peer-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try CaseStore(path: dir, configuration: StoreConfiguration(node: peerNode, region: "38", directory: directory))
        defer { peer.close() }
        // The peer pulls the ticket, then both sides set a different assignee.
        try await pull(from: f.store, into: peer)
        let (s1, _, _) = try f.call(.PATCH, "/v1/tickets/\(id)", #"{"assignee":"op-main"}"#)
        #expect(s1 == 200)
        try await Task.sleep(nanoseconds: 5_000_000)
        _ = try await peer.perform(.patch(.id(TicketID(id)!), TicketPatch(assignee: .some("op-office")), ifMatch: nil),
                                   actor: Actor(user: "op-office", role: "operator"))
        // The API's store merges the peer's batch (its directory knows the peer).
        let (report, _) = try await pull(from: peer, into: f.store)
        #expect(report.rejections.isEmpty && report.changedRecords == 1)

        let (s2, _, list) = try f.call(.GET, "/v1/conflicts")
        #expect(s2 == 200)
        let items = try #require(list["items"] as? [[String: Any]])
        #expect(items.count == 1)
        let c = try #require(items.first)
        #expect(c["field"] as? String == "assignee" && c["ticketId"] as? String == id && c["kind"] as? String == "ticket")
        #expect((c["winner"] as? [String: Any])?["value"] as? String == "op-office")
        #expect((c["loser"] as? [String: Any])?["value"] as? String == "op-main")
        let cid = try #require(c["id"] as? String)

        let (bad, _, e) = try f.call(.POST, "/v1/conflicts/\(cid)/resolve", #"{"keep":"both"}"#)
        #expect(bad == 422 && (e["error"] as? [String: Any])?["field"] as? String == "keep")
        let (s3, _, resolved) = try f.call(.POST, "/v1/conflicts/\(cid)/resolve", #"{"keep":"loser"}"#,
                                           as: APIFixture.principal("supervisor-1", [.supervisor]))
        #expect(s3 == 200 && resolved["assignee"] as? String == "op-main")
        let (s4, _, again) = try f.call(.POST, "/v1/conflicts/\(cid)/resolve", #"{"keep":"winner"}"#)
        #expect(s4 == 404 && (again["error"] as? [String: Any])?["code"] as? String == "not_found")
        let (_, _, empty) = try f.call(.GET, "/v1/conflicts")
        #expect((empty["items"] as? [Any])?.isEmpty == true)
        let (_, _, hist) = try f.call(.GET, "/v1/tickets/\(id)/history")
        let last = try #require((hist["items"] as? [[String: Any]])?.last)
        #expect(last["field"] as? String == "conflict.assignee" && last["actor"] as? String == "supervisor-1")
    }
}
