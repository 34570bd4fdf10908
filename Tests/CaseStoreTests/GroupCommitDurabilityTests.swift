import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

@Suite("Case store: group commit, durability, identity")
struct GroupCommitDurabilityTests {
    @Test("2,000 concurrent creates: distinct ids, numbers 1…2000 without gaps")
    func concurrentCreates() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let tickets = try await withThrowingTaskGroup(of: Ticket.self) { group in
            for i in 0..<2_000 {
                group.addTask { try await store.create(draft(i % 3 == 0 ? .phone : .web), actor: ivanova) }
            }
            var out: [Ticket] = []
            for try await t in group { out.append(t) }
            return out
        }
        #expect(tickets.count == 2_000)
        #expect(Set(tickets.map(\.id)).count == 2_000)
        #expect(Set(tickets.map(\.updatedStamp)).count == 2_000)
        #expect(tickets.map(\.number.sequence).sorted() == Array(1...2_000))
        #expect(Set(tickets.map { $0.number.description }).count == 2_000)
        // ids and numbers were issued in the same order
        let byNumber = tickets.sorted { $0.number.sequence < $1.number.sequence }
        #expect(zip(byNumber, byNumber.dropFirst()).allSatisfy { $0.id < $1.id && $0.updatedStamp < $1.updatedStamp })
        let stats = try store.stats()
        #expect(stats.tickets == 2_000)
        #expect(stats.lastSequence == 2_000)
        let counts = try store.tableCounts()
        #expect(counts["numbers"] == 2_000 && counts["feed"] == 2_000 && counts["children"] == 2_000 && counts["records"] == 2_000)
        #expect(counts["counters"] == 1)
        #expect(try store.changes(since: 0, limit: 10_000).changes.count == 2_000)
        for t in tickets.prefix(50) { #expect(try store.ticket(.number(t.number)) == t) }
    }

    @Test("small groups: maxGroup 7 still numbers without gaps")
    func smallGroups() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock, maxGroup: 7))
        defer { store.close() }
        let numbers = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for _ in 0..<300 { group.addTask { try await store.create(draft(), actor: ivanova).number.sequence } }
            var out: [UInt64] = []
            for try await n in group { out.append(n) }
            return out
        }
        #expect(numbers.sorted() == Array(1...300))
    }

    @Test("durable across close and reopen; numbering and the HLC continue")
    func reopen() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        var tickets: [Ticket] = []
        var stamps: [Stamp] = []
        var lastSequence: UInt64 = 0
        var storeID = ""
        var feed: [[UInt8]] = []
        do {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            storeID = store.storeID
            for i in 0..<5 { tickets.append(try await store.create(draft(i % 2 == 0 ? .phone : .web), actor: ivanova)) }
            tickets[0] = try await store.patch(.id(tickets[0].id), TicketPatch(status: .inWork, assignee: .some("petrov")))
            _ = try await store.note(.id(tickets[1].id), "до перезапуска")
            for t in tickets { stamps += try #require(try store.history(of: .id(t.id))).map(\.stamp) }
            lastSequence = store.lastSequence
            feed = try store.feedPage(after: 0, limit: 100).entries.map(\.delta)
            store.close()
            store.close()   // idempotent
            await #expect(throws: StoreError.closed) { try await store.create(draft(), actor: ivanova) }
        }
        #expect(lastSequence == 7)

        // The wall clock did not move (or even went back): stamps must still move forward.
        clock.advance(-1_000)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        #expect(store.storeID == storeID)
        #expect(store.lastSequence == lastSequence)
        #expect(try store.feedPage(after: 0, limit: 100).entries.map(\.delta) == feed)
        for t in tickets { #expect(try store.ticket(.id(t.id)) == t) }
        #expect(try store.ticket(#require(TicketRef("38-2026-000005")))?.id == tickets[4].id)
        #expect(try store.notes(of: .id(tickets[1].id))?.map(\.text) == ["до перезапуска"])
        #expect(try store.list(TicketQuery(assignee: "petrov")).items.map(\.id) == [tickets[0].id])
        let next = try await store.create(draft(), actor: ivanova)
        #expect(next.number.description == "38-2026-000006")
        #expect(next.updatedStamp > stamps.max()!)
        let edited = try await store.patch(.id(tickets[2].id), TicketPatch(priority: .high))
        #expect(edited.updatedStamp > next.updatedStamp)
        #expect(store.lastSequence == lastSequence + 2)
        #expect(try store.changes(since: lastSequence, limit: 10).changes.map(\.ticket.id) == [next.id, tickets[2].id])
        try auditFeed(store)
    }

    /// History and notes are keyed by ticket id + record id, so their order is the order of
    /// the record ids. After a restart the id generator must not issue ids that sort before
    /// the ones already stored, even if the wall clock was stepped back meanwhile.
    @Test("notes and history stay in append order across restarts with the wall clock stepped back")
    func orderAcrossRestarts() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        var id: TicketID? = nil
        for cycle in 0..<4 {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            if id == nil { id = try await store.create(draft(.phone), actor: ivanova).id }
            _ = try await store.note(.id(id!), "note \(cycle)")
            _ = try await store.patch(.id(id!), TicketPatch(priority: cycle % 2 == 0 ? .high : .low))
            store.close()
            clock.advance(-5_000)   // NTP stepped the clock back while the node was down
        }
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        #expect(try store.notes(of: .id(id!))?.map(\.text) == ["note 0", "note 1", "note 2", "note 3"])
        let h = try #require(try store.history(of: .id(id!)))
        #expect(h.first?.field == "ticket")
        #expect(zip(h, h.dropFirst()).allSatisfy { $0.stamp < $1.stamp }, "history not in stamp order: \(h.map { "\($0.field) \($0.stamp)" })")
    }

    @Test("a store opened with another node id is refused")
    func identityMismatch() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        do {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            _ = try await store.create(draft(), actor: ivanova)
            store.close()
        }
        let error = #expect(throws: StoreError.self) {
            _ = try CaseStore(path: dir.path(), configuration: configuration(clock, node: NodeID("nnov-main")!))
        }
        guard case .identityMismatch(let message)? = error else {
            Issue.record("expected identityMismatch, got \(String(describing: error))")
            return
        }
        #expect(message.contains("irk-main") && message.contains("nnov-main"))
        // the rightful node still opens it, and the data is intact
        let again = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { again.close() }
        #expect(try again.stats().tickets == 1)
        #expect(try again.stats().node == "irk-main")
    }

    @Test("a store whose meta lost its store id is refused as corrupt, not a trap")
    func missingStoreID() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        do {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            try store.env.write { txn in _ = try txn.delete(store.schema.meta, key: Schema.MetaKey.storeID) }
            store.close()
        }
        let error = #expect(throws: StoreError.self) {
            _ = try CaseStore(path: dir.path(), configuration: configuration(clock))
        }
        guard case .corrupt(let message)? = error else {
            Issue.record("expected corrupt, got \(String(describing: error))")
            return
        }
        #expect(message.contains("store id"))
    }

    @Test("a schema-1 store (whole-ticket replicas) is refused with what to do, and left as it was")
    func schemaOneRefused() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        // The meta of a store written by the previous build, and some of its tables.
        let metaKeys: [(String, [UInt8])] = [("store_id", [UInt8](repeating: 7, count: 16)),
                                              ("schema_version", UInt64(1).bigEndianBytes),
                                              ("node_id", Array("irk-main".utf8)),
                                              ("last_sequence", UInt64(42).bigEndianBytes)]
        do {
            let env = try Environment(path: dir.path())
            let meta = try env.openDatabase("meta")
            let replicas = try env.openDatabase("replicas")
            try env.write { txn in
                for (k, v) in metaKeys { try txn.put(meta, key: Array(k.utf8), value: v) }
                try txn.put(replicas, key: [UInt8](repeating: 1, count: 16), value: [1, 2, 3])
            }
        }
        let error = #expect(throws: StoreError.self) {
            _ = try CaseStore(path: dir.path(), configuration: configuration(clock))
        }
        guard case .identityMismatch(let message)? = error else {
            Issue.record("expected identityMismatch, got \(String(describing: error))")
            return
        }
        #expect(message.contains(dir.path()))
        #expect(message.contains("format 1") && message.contains("whole-ticket replicas"))
        #expect(message.contains("move it aside") && message.contains("catch up from its peers"))
        // Nothing of the old store was changed by the attempt.
        let env = try Environment(path: dir.path())
        let meta = try env.openDatabase("meta", options: [])
        let replicas = try env.openDatabase("replicas", options: [])
        let (values, replica) = try env.read { txn throws in
            (try metaKeys.map { try txn.get(meta, key: Array($0.0.utf8)) }, try txn.get(replicas, key: [UInt8](repeating: 1, count: 16)))
        }
        #expect(values == metaKeys.map(\.1))
        #expect(replica == [1, 2, 3])
    }

    @Test("stats and inspect describe the store")
    func statsAndInspect() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        do {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            _ = try await store.create(draft(), actor: ivanova)
            let s = try store.stats()
            #expect(s.node == "irk-main" && s.tickets == 1 && s.lastSequence == 1)
            #expect(Set(s.tables.map(\.name)) == ["meta", "records", "children", "feed", "idx_conflicts", "checkpoints", "served",
                                                 "tickets", "numbers", "counters", "idx_status", "idx_assignee", "idx_updated",
                                                 "idx_deadline", "transfers", "idx_transfer_ticket", "idx_transfer_inbox",
                                                 "idx_transfer_outbox", "scope_feed", "purged", "access_log",
                                                 "digest_leaves", "digest_buckets", "digest_damaged", "purge_held", "purged_through", "admission_held"])
            #expect(s.storeID.count == 32)
            store.close()
        }
        let inspected = try CaseStore.inspect(path: dir.path())
        let tickets = inspected.tables.first { $0.0 == "tickets" }
        #expect(tickets?.1.entries == 1)
        #expect(inspected.tables.count == 27)
    }
}
