import CaseModel
import CaseStore
import Foundation
import Logging
import NIOPosix
import Replication
import TestSupport
import Wire
import Testing
@testable import EKCNode

/// A record kind that only tests know (`Memo`: two registers and a comment
/// collection) replicates between two nodes over the real protocol (HTTP/2, mutual
/// TLS, the pull and feed sessions, the store's feed of parts) with nothing but its
/// conformance and table: no line of the node, the wire or the store names it.
@Suite(.serialized) struct RecordKindReplicationTests {
    let main = NodeID("irk-main")!, office = NodeID("irk-office-1")!

    @Test func aNewKindReplicatesConflictsAndSettlesBetweenTwoNodes() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-kind-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try run([repoRoot + "/ops/dev-ca.sh", dir + "/certs", main.value, office.value])
        let directory = Directory([main: "38", office: "38"])
        func store(_ node: NodeID) throws -> CaseStore {
            var c = StoreConfiguration(node: node, region: "38", directory: directory)
            c.extraKinds = [Memo.schema]
            c.numberSeries = node == main ? 0 : 1
            return try CaseStore(path: "\(dir)/\(node)", configuration: c)
        }
        let a = try store(main), b = try store(office)
        defer { a.close(); b.close() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        func tls(_ n: NodeID) throws -> NodeTLS {
            try NodeTLS(certificate: "\(dir)/certs/\(n).pem", key: "\(dir)/certs/\(n).key", ca: "\(dir)/certs/ca.pem", expected: n)
        }
        let metrics = ReplicationMetrics()
        let serverA = try await ReplicationServer.start(store: a, tls: try tls(main), host: "127.0.0.1", port: 0, peers: [office],
                                                        group: group, metrics: metrics, logger: logger)
        let serverB = try await ReplicationServer.start(store: b, tls: try tls(office), host: "127.0.0.1", port: 0, peers: [main],
                                                        group: group, metrics: metrics, logger: logger)
        let pullerA = try Replicator(store: a, tls: try tls(main), peers: [PeerAddress(node: office, host: "127.0.0.1", port: serverB.port)],
                                     group: group, metrics: metrics, logger: logger)
        let pullerB = try Replicator(store: b, tls: try tls(office), peers: [PeerAddress(node: main, host: "127.0.0.1", port: serverA.port)],
                                     group: group, metrics: metrics, logger: logger)
        pullerA.start()
        pullerB.start()

        func memo(_ s: CaseStore, _ id: RecordID) throws -> (Memo?, Record?) {
            let r = try s.record(kind: Memo.kind, id: id)
            return (r.flatMap { Memo.materialise($0.state, local: .init(version: 1)) }, r)
        }
        func eventually(_ what: String, _ condition: () throws -> Bool) async throws {
            for _ in 0..<3_000 {
                if try condition() { return }
                try await Task.sleep(nanoseconds: 10_000_000)
            }
            Issue.record("not within 30 s: \(what); links: \(pullerA.links.map { "\($0.peer) \($0.connected) \($0.lastError ?? "-")" }) \(pullerB.links.map { "\($0.peer) \($0.connected) \($0.lastError ?? "-")" })")
        }

        // Written on irk-main with a comment; it reaches irk-office-1 whole.
        let outcome = try await a.perform(.write(RecordWrite(
            kind: Memo.kind, values: [0: Memo.encodeTitle(author: main, text: "Перезвонить"), 1: Memo.encodeStatus("open")],
            children: [(Memo.comments, Memo.encodeComment("звонила в 10:00"))])), actor: .system)
        guard case .record(let id) = outcome else { Issue.record("no record id"); return }
        try await eventually("irk-office-1 has the memo and its comment") {
            let (m, r) = try memo(b, id)
            return m?.title == "Перезвонить" && m?.status == "open" && r?.children.count == 1
        }

        // Concurrent edits of the status on both nodes, with the links down: a conflict on both.
        await pullerA.stop()
        await pullerB.stop()
        _ = try await a.perform(.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("done")])), actor: .system)
        _ = try await b.perform(.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("waiting")],
                                                   children: [(Memo.comments, Memo.encodeComment("ждём справку"))])),
                                actor: .system)
        let pullerA2 = try Replicator(store: a, tls: try tls(main), peers: [PeerAddress(node: office, host: "127.0.0.1", port: serverB.port)],
                                      group: group, metrics: metrics, logger: logger)
        let pullerB2 = try Replicator(store: b, tls: try tls(office), peers: [PeerAddress(node: main, host: "127.0.0.1", port: serverA.port)],
                                      group: group, metrics: metrics, logger: logger)
        pullerA2.start()
        pullerB2.start()
        try await eventually("both nodes list the same conflict on status") {
            let ca = try a.conflicts().filter { $0.kind == Memo.kind }, cb = try b.conflicts().filter { $0.kind == Memo.kind }
            return ca.count == 1 && ca.map(\.id) == cb.map(\.id) && ca[0].field == "status"
        }
        let conflict = try #require(try a.conflicts().first { $0.kind == Memo.kind })
        #expect(Set([conflict.winningValue, conflict.losingValue]) == ["done", "waiting"])

        // Settled on irk-office-1, keeping the losing value: the conflict clears on both.
        _ = try await b.perform(.resolve(conflictID: conflict.id, keep: .loser), actor: Actor(user: "supervisor-1", role: "supervisor"))
        try await eventually("the settlement reached irk-main and the records are identical") {
            let (ma, ra) = try memo(a, id), (mb, rb) = try memo(b, id)
            let settled = try a.conflicts().isEmpty && b.conflicts().isEmpty
            return settled && ma?.status == conflict.losingValue
                && ra == rb && mb?.status == conflict.losingValue && ra?.children.count == 2
        }
        // The feed carried parts: irk-main's feed holds the memo's status once, at its latest change.
        let page = try a.feedPage(after: 0, limit: 1_000)
        let reading = RecordReading(kinds: a.kinds, check: CheckContext(directory: directory))
        let statusEntries = page.entries.filter { e in
            guard case .delta(let d) = e.delta.withUnsafeBytes({ reading.record($0, sequence: e.sequence) }).content else { return false }
            return d.kind == Memo.kind && !d.state.registers[1].isEmpty
        }
        #expect(statusEntries.count == 1)

        await pullerA2.stop()
        await pullerB2.stop()
        await serverA.close()
        await serverB.close()
        try await group.shutdownGracefully()
    }
}
