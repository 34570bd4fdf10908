import Foundation
import Testing
import CaseModel
import Replication
@testable import CaseStore

/// Two stores of one region exchanging their feeds through the store API, as the
/// replicator will: pull `replicationChanges` from one, `merge` into the other.
let mainNode = NodeID("irk-main")!
let officeNode = NodeID("irk-office-1")!
let fundNode = NodeID("sfr-federal")!
let regionDirectory = Directory([mainNode: "38", officeNode: "38", fundNode: "sfr"])


final class Pair {
    let dirs: [StoreDir]
    let clock = TestClock()
    let a: CaseStore
    let b: CaseStore
    init() throws {
        dirs = [try StoreDir(), try StoreDir()]
        let wall = clock.function
        func cfg(_ node: NodeID) -> StoreConfiguration {
            StoreConfiguration(node: node, region: "38", utcOffsetMinutes: 480, directory: regionDirectory, wallClock: wall)
        }
        a = try CaseStore(path: dirs[0].path, configuration: cfg(mainNode))
        b = try CaseStore(path: dirs[1].path, configuration: cfg(officeNode))
    }
    deinit {
        a.close(); b.close()
        dirs.forEach { $0.remove() }
    }

    /// Pulls everything `from` has after `to`'s checkpoint for it, and merges it.
    @discardableResult
    func pull(_ to: CaseStore, from: CaseStore) async throws -> MergeReport {
        let cp = try to.checkpoint(for: from.configuration.node)
        let since = cp?.sourceStoreID == from.storeIDBytes ? cp!.sequence : 0
        let (changes, last) = try from.replicationChanges(since: since, limit: 10_000)
        return try await to.merge(RemoteBatch(peer: from.configuration.node, sourceStoreID: from.storeIDBytes,
                                              throughSequence: changes.last?.sequence ?? last,
                                              tickets: changes.map(\.ticket)))
    }

    func sync() async throws {
        try await pull(b, from: a)
        try await pull(a, from: b)
    }
}

@Suite("Case store: merging peers' changes")
struct ReplicationStoreTests {
    /// The operator's view without the local edit counter, which each store keeps for itself.
    func view(_ t: Ticket?) -> Ticket? {
        guard var t else { return nil }
        t.version = 0
        return t
    }

    @Test("a ticket created on one node appears on the other with the same view, notes and history")
    func createReplicates() async throws {
        let p = try Pair()
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        _ = try await p.a.note(.id(t.id), "перезвонить")
        let r = try await p.pull(p.b, from: p.a)
        #expect(r.changedTickets == 1 && r.rejections.isEmpty)
        #expect(view(try p.b.ticket(.id(t.id))) == view(try p.a.ticket(.id(t.id))))
        #expect(try p.b.ticket(TicketRef(t.number.description)!)?.id == t.id)
        #expect(try p.b.notes(of: .id(t.id)) == p.a.notes(of: .id(t.id)))
        #expect(try p.b.history(of: .id(t.id)) == p.a.history(of: .id(t.id)))
        #expect(try p.b.checkpoint(for: mainNode) == Checkpoint(sourceStoreID: p.a.storeIDBytes, sequence: 2))
        // The merge is in b's own feed, for b's other peers.
        #expect(try p.b.changes(since: 0, limit: 10).changes.map(\.ticket.id) == [t.id])
    }

    @Test("two tickets with one number (nodes sharing a series, or a node restored from a copy) stay apart and are reported")
    func duplicateNumbersAreReported() async throws {
        let p = try Pair()  // both stores number in series 0
        let ta = try await p.a.create(draft(.phone), actor: ivanova)
        let tb = try await p.b.create(draft(.web), actor: ivanova)
        #expect(ta.number == tb.number && ta.id != tb.id)
        let r = try await p.pull(p.b, from: p.a)
        #expect(r.duplicateNumbers == [ta.number.description])
        // Both reachable by id; the number keeps naming the ticket that had it here first.
        #expect(try p.b.ticket(.id(ta.id)) != nil)
        #expect(try p.b.ticket(TicketRef(tb.number.description)!)?.id == tb.id)
        // The next number b issues skips the one now taken twice.
        let next = try await p.b.create(draft(.phone), actor: ivanova)
        #expect(next.number.sequence == tb.number.sequence + 1)
        // Pulling it again reports nothing new.
        #expect(try await p.pull(p.b, from: p.a).duplicateNumbers.isEmpty)
    }

    @Test("pulling the same batch again changes nothing")
    func mergeIsIdempotent() async throws {
        let p = try Pair()
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        try await p.pull(p.b, from: p.a)
        let before = try p.b.tableCounts()
        let seq = p.b.lastSequence
        let (changes, _) = try p.a.replicationChanges(since: 0, limit: 100)
        let again = try await p.b.merge(RemoteBatch(peer: mainNode, sourceStoreID: p.a.storeIDBytes,
                                                    throughSequence: 1, tickets: changes.map(\.ticket)))
        #expect(again.changedTickets == 0 && again.unchangedTickets == 1)
        #expect(p.b.lastSequence == seq)
        #expect(try p.b.tableCounts() == before)
        #expect(try p.b.ticket(.id(t.id))?.version == 1)
    }

    @Test("edits on both sides of a partition converge; the losing status and assignee are listed on both; resolving clears them")
    func partitionConflictAndResolution() async throws {
        let p = try Pair()
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        try await p.sync()
        // Partition: both sides edit the same ticket.
        p.clock.advance(1_000)
        _ = try await p.a.patch(.id(t.id), TicketPatch(status: .inWork, assignee: "op-ivanova"))
        _ = try await p.a.note(.id(t.id), "note from the main centre")
        p.clock.advance(10)
        _ = try await p.b.patch(.id(t.id), TicketPatch(status: .deferred, assignee: "op-petrova"))
        _ = try await p.b.note(.id(t.id), "note from the office")
        // Heal.
        try await p.sync()
        try await p.sync()
        let va = try p.a.ticket(.id(t.id)), vb = try p.b.ticket(.id(t.id))
        #expect(view(va) == view(vb))
        #expect(va?.status == .deferred && va?.assignee == "op-petrova")  // the later stamp wins
        #expect(try p.a.notes(of: .id(t.id))?.count == 2 && p.b.notes(of: .id(t.id)) == p.a.notes(of: .id(t.id)))
        #expect(try p.a.history(of: .id(t.id)) == p.b.history(of: .id(t.id)))
        let ca = try p.a.conflicts(), cb = try p.b.conflicts()
        #expect(Set(ca.map(\.id)) == Set(cb.map(\.id)))
        #expect(Set(ca.map(\.field)) == [.progress, .assignee])
        #expect(ca.first { $0.field == .progress }?.losingValue == "IN_WORK")
        // Resolve on b, keeping the loser; after an exchange no conflict is left anywhere.
        let statusConflict = try #require(cb.first { $0.field == .progress })
        _ = try await p.b.perform(.resolve(conflictID: statusConflict.id, keep: .loser), actor: petrov)
        let assigneeConflict = try #require(cb.first { $0.field == .assignee })
        _ = try await p.b.perform(.resolve(conflictID: assigneeConflict.id, keep: .winner), actor: petrov)
        await #expect(throws: StoreError.conflictNotFound(statusConflict.id)) {
            try await p.b.perform(.resolve(conflictID: statusConflict.id, keep: .winner), actor: petrov)
        }
        try await p.sync()
        try await p.sync()
        #expect(try p.a.conflicts().isEmpty && p.b.conflicts().isEmpty)
        #expect(try p.a.ticket(.id(t.id))?.status == .inWork && p.b.ticket(.id(t.id))?.status == .inWork)
        #expect(try p.a.ticket(.id(t.id))?.assignee == "op-petrova")
        #expect(view(try p.a.ticket(.id(t.id))) == view(try p.b.ticket(.id(t.id))))
        #expect(try p.a.list(TicketQuery(status: .inWork)).items.map(\.id) == [t.id])
    }

    @Test("a write claiming an author its sender may not speak for is rejected and reported")
    func forgedAuthorIsRejected() async throws {
        let p = try Pair()
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        try await p.pull(p.b, from: p.a)
        var forged = try #require(try p.a.replica(of: t.id))
        forged.assignee.write("intruder", dot: Dot(node: fundNode, stamp: Stamp(millis: p.clock.now + 5, logical: 0)))
        let r = try await p.b.merge(RemoteBatch(peer: mainNode, sourceStoreID: p.a.storeIDBytes,
                                                throughSequence: 1, tickets: [forged]))
        #expect(r.rejections.count == 1)
        #expect(try p.b.ticket(.id(t.id))?.assignee == nil)
    }
}
