import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

@Suite("Case store: atomicity of failing edits")
struct AtomicityTests {
    /// Everything a failed edit could have left behind.
    struct Snapshot: Equatable {
        let tables: [String: Int]
        let lastSequence: UInt64
        let ticket: Ticket?
        let history: [HistoryEvent]?
        let notes: [Note]?
        let feed: [FeedShape]
        let record: Record?
        let list: [TicketID]
        init(_ store: CaseStore, _ id: TicketID) throws {
            tables = try store.tableCounts()
            lastSequence = store.lastSequence
            ticket = try store.ticket(.id(id))
            history = try store.history(of: .id(id))
            notes = try store.notes(of: .id(id))
            feed = try store.feedShape()
            record = try store.record(kind: TicketRecord.kind, id: id)
            list = try store.list(TicketQuery(limit: 500)).items.map(\.id)
        }
    }

    @Test("an edit failing after it began writing leaves nothing behind", arguments: [
        "create.afterTicket", "create.beforeFeed", "patch.afterTicket", "note.afterNote",
    ])
    func faultLeavesNothing(point: String) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(assignee: "petrov"), actor: ivanova)
        _ = try await store.note(.id(a.id), "first note")
        let b = try await store.create(draft(.phone), actor: ivanova)
        let before = try Snapshot(store, a.id)
        #expect(before.tables["tickets"] == 2 && before.tables["children"] == 4)   // 2 creations, a note and its event
        let stampBefore = try #require(try store.ticket(.id(b.id))).updatedStamp

        clock.advance(60_000)
        store.faults.arm(point)
        let edit: Edit
        switch point {
        case "create.afterTicket", "create.beforeFeed": edit = .create(draft(.phone, assignee: "sidorova"))
        case "patch.afterTicket": edit = .patch(.id(a.id), TicketPatch(status: .registered, assignee: .some("sidorova")), ifMatch: 1)
        default: edit = .addNote(.id(a.id), text: "second note", visibility: .shared)
        }
        await #expect(throws: StoreError.injectedFault(point)) { try await store.perform(edit, actor: ivanova) }
        store.faults.disarm(point)

        let after = try Snapshot(store, a.id)
        #expect(after.tables == before.tables, "\(point)")
        #expect(after.lastSequence == before.lastSequence)
        #expect(after == before)
        #expect(try store.list(TicketQuery(assignee: "sidorova")).items.isEmpty)
        #expect(try store.list(TicketQuery(status: .registered)).items.map(\.id) == [b.id])

        // Nothing was consumed: the same edit now succeeds as if the failure never happened.
        let out = try await store.perform(edit, actor: ivanova)
        #expect(store.lastSequence == before.lastSequence + 1)
        switch out {
        case .ticket(let t, let changed):
            #expect(changed)
            if point.hasPrefix("create") {
                #expect(t.number.description == "38-2026-000003")
            } else {
                #expect(t.version == 2)
            }
            #expect(t.updatedStamp > stampBefore)
        case .note(let n):
            #expect(try store.notes(of: .id(a.id)) == before.notes! + [n])
        case .merged, .record, .transfer, .accessRecorded, .scrubbed, .restored:
            Issue.record("a local edit reported \(out)")
        }
        try auditFeed(store)
    }

    @Test("a create refused by a fault leaves the next number free across many attempts")
    func counterNotConsumed() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        _ = try await store.create(draft(), actor: ivanova)
        store.faults.arm("create.beforeFeed")
        for _ in 0..<5 {
            await #expect(throws: StoreError.injectedFault("create.beforeFeed")) { try await store.create(draft(), actor: ivanova) }
        }
        store.faults.disarm("create.beforeFeed")
        #expect(try await store.create(draft(), actor: ivanova).number.sequence == 2)
        #expect(try store.stats().tickets == 2)
    }

    /// Holds LMDB's write lock on another thread, so that the commit thread blocks and
    /// everything submitted meanwhile queues up for one group.
    final class WriterBlock: @unchecked Sendable {
        let release = DispatchSemaphore(value: 0)
        let holding = Box(false)
        let error = Box<Error?>(nil)
        init(_ env: Environment) {
            Thread { [self] in
                do {
                    try env.write { _ in
                        self.holding.with { $0 = true }
                        self.release.wait()
                    }
                } catch { self.error.with { $0 = error } }
            }.start()
        }
    }

    @Test("the other edits of a group with a failing edit all commit")
    func groupWithFailingEdit() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let target = try await store.create(draft(.phone), actor: ivanova)       // 000001
        let noted = try await store.create(draft(.phone), actor: ivanova)        // 000002
        let before = try store.tableCounts()

        let block = WriterBlock(store.env)
        #expect(try await eventually { block.holding.get })
        let results = Box<[Int: Result<EditOutcome, StoreError>]>([:])
        // The first edit is taken alone by the commit thread, which then waits for the lock.
        store.submitCollecting(.create(draft()), index: -1, into: results)
        #expect(try await eventually { store.queueDepth == 0 })
        try await Task.sleep(nanoseconds: 50_000_000)

        store.faults.arm("patch.afterTicket")
        for i in 0..<200 {
            if i == 100 {
                store.submitCollecting(.patch(.id(target.id), TicketPatch(priority: .urgent), ifMatch: 1), index: 1_000, into: results)
                store.submitCollecting(.addNote(.id(noted.id), text: "в той же группе", visibility: .internal), index: 1_001, into: results)
                // refused before writing (stale If-Match): fails alone, like the faulty one
                store.submitCollecting(.patch(.id(noted.id), TicketPatch(status: .inWork), ifMatch: 9), index: 1_002, into: results)
            }
            store.submitCollecting(.create(draft(assignee: "group")), index: i, into: results)
        }
        // all 203 wait together: they will be one group
        #expect(store.queueDepth == 203)
        block.release.signal()
        #expect(try await eventually { results.get.count == 204 })
        store.faults.disarm("patch.afterTicket")
        #expect(block.error.get == nil)

        let r = results.get
        guard case .failure(let e) = r[1_000] else { Issue.record("failing patch succeeded: \(String(describing: r[1_000]))"); return }
        #expect(e == .injectedFault("patch.afterTicket"))
        // the blocker is 000003; the 200 creates of the group take 000004…000203 in submission order
        var numbers: [UInt64] = []
        for i in 0..<200 {
            guard case .success(.ticket(let t, true)) = r[i] else { Issue.record("create \(i): \(String(describing: r[i]))"); continue }
            numbers.append(t.number.sequence)
            #expect(try store.ticket(.id(t.id)) == t)
        }
        #expect(numbers == Array(4...203))
        guard case .success(.note(let n)) = r[1_001] else { Issue.record("note: \(String(describing: r[1_001]))"); return }
        #expect(try store.notes(of: .id(noted.id)) == [n])
        if case .failure(let stale)? = r[1_002] {
            #expect(stale == .versionMismatch(current: 1, expected: 9))
        } else {
            Issue.record("stale patch: \(String(describing: r[1_002]))")
        }
        #expect(try store.ticket(.id(noted.id))?.status == .registered)
        let target2 = try #require(try store.ticket(.id(target.id)))
        #expect(target2 == target)
        #expect(target2.priority == .normal && target2.version == 1)
        #expect(try store.history(of: .id(target.id))?.count == 1)
        let after = try store.tableCounts()
        #expect(after["tickets"] == before["tickets"]! + 201)
        #expect(after["children"] == before["children"]! + 201 + 2)   // a history event per create, the note and its event
        #expect(try store.list(TicketQuery(assignee: "group", limit: 500)).items.count == 200)
        #expect(store.lastSequence == 2 + 1 + 200 + 1)   // blocker, 200 creates, the note
        #expect(try store.changes(since: 3, limit: 1_000).changes.count == 201)
        try auditFeed(store)
    }

    @Test("a fault armed for every patch fails only the patches of a busy group")
    func concurrentWithFault() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let target = try await store.create(draft(), actor: ivanova)
        store.faults.arm("patch.afterTicket")
        let outcomes = await withTaskGroup(of: (Bool, Result<EditOutcome, StoreError>).self) { group in
            for i in 0..<200 {
                group.addTask {
                    let r: Result<EditOutcome, StoreError>
                    do throws(StoreError) { r = .success(try await store.perform(.create(draft()), actor: ivanova)) } catch { r = .failure(error) }
                    return (false, r)
                }
                if i % 50 == 0 {
                    group.addTask {
                        do throws(StoreError) { return (true, .success(try await store.perform(.patch(.id(target.id), TicketPatch(priority: .high), ifMatch: nil), actor: ivanova))) }
                        catch { return (true, .failure(error)) }
                    }
                }
            }
            var out: [(Bool, Result<EditOutcome, StoreError>)] = []
            for await o in group { out.append(o) }
            return out
        }
        store.faults.disarm("patch.afterTicket")
        let creates = outcomes.filter { !$0.0 }.map(\.1)
        let patches = outcomes.filter { $0.0 }.map(\.1)
        #expect(patches.count == 4)
        #expect(patches.allSatisfy { if case .failure(.injectedFault("patch.afterTicket")) = $0 { true } else { false } })
        let numbers = creates.compactMap { (try? $0.get())?.ticket?.number.sequence }
        #expect(numbers.count == 200)
        #expect(numbers.sorted() == Array(2...201))
        #expect(try store.ticket(.id(target.id)) == target)
        #expect(try store.stats().tickets == 201)
        #expect(store.lastSequence == 201)
    }
}
