import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

@Suite("Case store: creating, reading, editing")
struct CaseStoreBasicTests {
    @Test("create numbers tickets {region}-{year}-000001, 000002; found by id and by number")
    func createAndRead() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }

        let out = try await store.perform(.create(draft()), actor: ivanova)
        guard case .ticket(let a, let changed) = out else { Issue.record("not a ticket: \(out)"); return }
        #expect(changed)
        #expect(a.number.description == "38-2026-000001")
        #expect(a.status == .new && a.version == 1)
        #expect(a.originNode == irk && a.ownerNode == irk)
        #expect(a.receivedAt == t0 && a.updatedAt == t0)
        #expect(a.deadlines.registerBy == t0 + 3 * day)
        #expect(a.id.millis == UInt64(t0))
        let b = try await store.create(draft(.phone), actor: ivanova)
        #expect(b.number.description == "38-2026-000002")
        #expect(b.status == .registered && b.registeredAt == t0)
        #expect(a.id != b.id && a.id < b.id)
        #expect(a.updatedStamp < b.updatedStamp)

        #expect(try store.ticket(.id(a.id)) == a)
        #expect(try store.ticket(#require(TicketRef("38-2026-000001"))) == a)
        #expect(try store.ticket(#require(TicketRef("38-2026-000002"))) == b)
        #expect(try store.ticket(#require(TicketRef(b.id.description))) == b)
        #expect(try store.ticket(#require(TicketRef(b.id.description.lowercased()))) == b)
        #expect(try store.ticket(#require(TicketRef("38-2026-000003"))) == nil)
        #expect(try store.ticket(.id(a.id.incremented())) == nil)
        #expect(TicketRef("garbage") == nil)
        #expect(try store.stats().tickets == 2)
        #expect(store.lastSequence == 2)
        // The view is what the record's registers say, with the store's own edit counter.
        let record = try #require(try store.record(kind: TicketRecord.kind, id: a.id))
        #expect(Ticket.materialise(record.state, local: LocalRecordInfo(version: 1)) == a)
        #expect(record.state.registers.allSatisfy { $0.versions.count == 1 && $0.winner?.dot == Dot(node: irk, stamp: a.updatedStamp) })
        #expect(record.children.count == 1)   // the history event of the creation
        try auditFeed(store)
    }

    @Test("numbers follow the local year of the centre (Irkutsk, UTC+8)")
    func yearByLocalTime() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let newYearIrkutsk: Millis = 1_798_761_600_000 - 8 * hour   // 2027-01-01 00:00 at UTC+8
        let clock = TestClock(newYearIrkutsk - 1)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        #expect(try await store.create(draft(), actor: ivanova).number.description == "38-2026-000001")
        #expect(try await store.create(draft(), actor: ivanova).number.description == "38-2026-000002")
        clock.now = newYearIrkutsk
        #expect(try await store.create(draft(), actor: ivanova).number.description == "38-2027-000001")
        #expect(try await store.create(draft(), actor: ivanova).number.description == "38-2027-000002")
        #expect(try store.tableCounts()["counters"] == 2)
    }

    @Test("a node numbers in its own series: series × 10,000,000 + n, and the counter counts n")
    func numberSeries() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock, series: 3))
        defer { store.close() }
        let a = try await store.create(draft(), actor: ivanova)
        let b = try await store.create(draft(), actor: ivanova)
        #expect(a.number.description == "38-2026-30000001" && b.number.sequence == 30_000_002)
        #expect(try store.ticket(.number(b.number))?.id == b.id)
        #expect(try store.tableCounts()["counters"] == 1)
    }

    @Test("a draft the model refuses creates nothing and consumes no number")
    func refusedCreate() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        _ = try await store.create(draft(), actor: ivanova)
        let before = try store.tableCounts()
        var bad = draft(.messenger)
        bad.citizen = Citizen(ref: "CIT-1")
        await #expect(throws: StoreError.rejected(.personalDataOnMessenger)) { try await store.create(bad, actor: ivanova) }
        await #expect(throws: StoreError.rejected(.invalidField(field: "subject", rule: "must not be empty"))) {
            try await store.create(draft(subject: " "), actor: ivanova)
        }
        await #expect(throws: StoreError.rejected(.tooLong(field: "subject", bytes: 601, limit: Budget.subjectBytes))) {
            try await store.create(draft(subject: String(repeating: "ж", count: 300) + "x"), actor: ivanova)
        }
        #expect(try store.tableCounts() == before)
        #expect(store.lastSequence == 1)
        #expect(try await store.create(draft(), actor: ivanova).number.sequence == 2)
    }

    @Test("patch: If-Match, unknown ticket, version + 1, no-op")
    func patchRules() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(), actor: ivanova)

        await #expect(throws: StoreError.versionMismatch(current: 1, expected: 7)) {
            try await store.patch(.id(a.id), TicketPatch(priority: .high), ifMatch: 7)
        }
        #expect(try store.ticket(.id(a.id)) == a)
        #expect(store.lastSequence == 1)

        clock.advance(60_000)
        let a2 = try await store.patch(.id(a.id), TicketPatch(priority: .high), ifMatch: 1)
        #expect(a2.version == 2 && a2.priority == .high && a2.updatedAt == t0 + 60_000)
        #expect(a2.updatedStamp > a.updatedStamp)
        #expect(try store.ticket(.id(a.id)) == a2)
        #expect(store.lastSequence == 2)
        // the old version is now stale
        await #expect(throws: StoreError.versionMismatch(current: 2, expected: 1)) {
            try await store.patch(.id(a.id), TicketPatch(priority: .low), ifMatch: 1)
        }
        // no If-Match: applies to the current version
        let a3 = try await store.patch(.number(a.number), TicketPatch(priority: .low))
        #expect(a3.version == 3)

        let unknown = TicketID(millis: UInt64(t0), randomHigh: 1, randomLow: 1)
        await #expect(throws: StoreError.ticketNotFound(unknown.description)) {
            try await store.patch(.id(unknown), TicketPatch(priority: .high))
        }
        await #expect(throws: StoreError.ticketNotFound("38-2026-000099")) {
            try await store.patch(.number(TicketNumber(region: "38", year: 2026, sequence: 99)), TicketPatch(priority: .high))
        }

        // a patch that changes nothing: same version, nothing written
        let seq = store.lastSequence
        let counts = try store.tableCounts()
        let out = try await store.perform(.patch(.id(a.id), TicketPatch(priority: .low), ifMatch: 3), actor: ivanova)
        guard case .ticket(let same, let changed) = out else { Issue.record("\(out)"); return }
        #expect(!changed)
        #expect(same == a3)
        #expect(store.lastSequence == seq)
        #expect(try store.tableCounts() == counts)
        // Only the priority register was written by the patches: one version each, the last patch's.
        let record = try #require(try store.record(kind: TicketRecord.kind, id: a.id))
        let priority = record.state.registers[TicketRecord.Register.priority.rawValue]
        #expect(priority.versions.count == 1 && priority.winner?.dot.stamp == a3.updatedStamp)
        #expect(record.state.registers[TicketRecord.Register.header.rawValue].winner?.dot.stamp == a.updatedStamp)
        try auditFeed(store)
    }

    @Test("a forbidden transition is refused and leaves ticket, history and sequence unchanged")
    func forbiddenTransition() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(), actor: ivanova)
        let history = try #require(try store.history(of: .id(a.id)))
        let seq = store.lastSequence
        let counts = try store.tableCounts()

        await #expect(throws: StoreError.rejected(.transitionNotAllowed(from: .new, to: .closed))) {
            try await store.patch(.id(a.id), TicketPatch(status: .closed, priority: .urgent))
        }
        await #expect(throws: StoreError.rejected(.transitionNeedsWorkflow(from: .new, to: .merged, workflow: .merge))) {
            try await store.patch(.id(a.id), TicketPatch(status: .merged))
        }
        // a refused edit in the middle of other edits
        let b = try await store.create(draft(.phone, regime: .appeal59FZ), actor: ivanova)
        await #expect(throws: StoreError.rejected(.appealNeedsAnswer(from: .registered))) {
            try await store.patch(.id(b.id), TicketPatch(status: .closed))
        }
        #expect(try store.ticket(.id(a.id)) == a)
        #expect(try store.history(of: .id(a.id)) == history)
        #expect(store.lastSequence == seq + 1)   // only the create of b
        var c2 = try store.tableCounts()
        for table in ["tickets", "numbers", "records", "children", "feed", "idx_status", "idx_updated", "idx_deadline",
                      "digest_leaves", "digest_buckets"] {
            c2[table]! -= 1
        }
        #expect(c2 == counts)
        #expect(try store.ticket(.id(b.id))?.status == .registered)
    }

    @Test("status changes: registration sets the 59-FZ clocks, deferral the callback deadline")
    func statusEffects() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let appeal = try await store.create(draft(.web, regime: .appeal59FZ), actor: ivanova)
        clock.advance(hour)
        let r = try await store.patch(.id(appeal.id), TicketPatch(status: .registered))
        #expect(r.registeredAt == t0 + hour)
        #expect(r.deadlines.answerBy == t0 + hour + 30 * day)
        let e = try await store.patch(.id(appeal.id), TicketPatch(extendAnswerByDays: 30))
        #expect(e.deadlines.answerBy == t0 + hour + 60 * day)
        await #expect(throws: StoreError.rejected(.extensionAlreadyUsed)) {
            try await store.patch(.id(appeal.id), TicketPatch(extendAnswerByDays: 1))
        }
        clock.now = t0   // Friday 16:00 Irkutsk
        let c = try await store.create(draft(.phone), actor: ivanova)
        let d = try await store.patch(.id(c.id), TicketPatch(status: .deferred))
        #expect(d.deadlines.callbackBy == 1_795_392_000_000 + 7 * hour)   // Monday 15:00 Irkutsk
        // Status and its clocks are one register: they changed together, in one write.
        #expect(try store.feedShape().last?.registers == ["progress"])
    }
}

@Suite("Case store: notes and history")
struct NotesHistoryTests {
    @Test("notes are append-only and listed in order")
    func notes() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(.phone), actor: ivanova)
        let b = try await store.create(draft(.phone), actor: ivanova)
        #expect(try store.notes(of: .id(a.id)) == [])
        var written: [Note] = []
        for i in 0..<12 {
            if i % 3 == 0 { clock.advance(1) }
            let n = try await store.note(.id(a.id), "Заметка \(i)", i % 2 == 0 ? .internal : .shared,
                                         actor: i % 2 == 0 ? ivanova : petrov)
            #expect(n.ticketID == a.id && n.node == irk && n.text == "Заметка \(i)")
            written.append(n)
            _ = try await store.note(.id(b.id), "other \(i)")
        }
        let listed = try #require(try store.notes(of: .id(a.id)))
        #expect(listed == written)
        #expect(listed.map(\.text) == (0..<12).map { "Заметка \($0)" })
        #expect(listed[1].visibility == .shared && listed[1].author == petrov)
        #expect(zip(listed, listed.dropFirst()).allSatisfy { $0.stamp < $1.stamp && $0.id < $1.id })
        #expect(try store.notes(of: .number(b.number))?.count == 12)
        #expect(try store.notes(of: .id(TicketID(high: 1, low: 1))) == nil)
        await #expect(throws: StoreError.rejected(.invalidField(field: "text", rule: "must not be empty"))) {
            try await store.note(.id(a.id), "")
        }
        await #expect(throws: StoreError.rejected(.tooLong(field: "text", bytes: Budget.noteBytes + 2, limit: Budget.noteBytes))) {
            try await store.note(.id(a.id), String(repeating: "я", count: Budget.noteBytes / 2 + 1))
        }
        await #expect(throws: StoreError.ticketNotFound(TicketID(high: 1, low: 1).description)) {
            try await store.note(.id(TicketID(high: 1, low: 1)), "x")
        }
        #expect(try store.notes(of: .id(a.id))?.count == 12)
        // adding a note adds an entry to the feed but does not change the ticket's version
        #expect(try store.ticket(.id(a.id))?.version == 1)
        // a note is a child of its ticket, written with the dot of its own edit
        let record = try #require(try store.record(kind: TicketRecord.kind, id: a.id))
        let child = try #require(record.children[ChildKey(collection: TicketRecord.Collection.notes.rawValue, id: written[3].id)])
        #expect(child.dot == Dot(node: irk, stamp: written[3].stamp))
        #expect(try TicketValues.note(child, ticket: a.id) == written[3])
        try auditFeed(store)
    }

    @Test("history records the creation and each field change with old/new, actor and node")
    func history() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(), actor: ivanova)
        clock.advance(1_000)
        _ = try await store.patch(.id(a.id), TicketPatch(status: .registered, assignee: .some("petrov"), priority: .high),
                                  actor: petrov)
        clock.advance(1_000)
        _ = try await store.patch(.id(a.id), TicketPatch(status: .inWork, assignee: .some(nil)), actor: ivanova)
        let n = try await store.note(.id(a.id), "Позвонить завтра", .shared, actor: petrov)

        let h = try #require(try store.history(of: .id(a.id)))
        let rows = h.map { [$0.field, $0.old ?? "∅", $0.new ?? "∅", $0.actor.user] }
        #expect(rows == [
            ["ticket", "∅", "created 38-2026-000001 as NEW", "ivanova"],
            ["assignee", "∅", "petrov", "petrov"],
            ["priority", "normal", "high", "petrov"],
            ["status", "NEW", "REGISTERED", "petrov"],
            ["assignee", "petrov", "∅", "ivanova"],
            ["status", "REGISTERED", "IN_WORK", "ivanova"],
            ["note", "∅", "shared note \(n.id)", "petrov"],
        ])
        #expect(h.allSatisfy { $0.node == irk && $0.ticketID == a.id })
        #expect(h.map(\.at) == [t0, t0 + 1_000, t0 + 1_000, t0 + 1_000, t0 + 2_000, t0 + 2_000, t0 + 2_000])
        #expect(h[1].actor == petrov && h[0].actor == ivanova)
        // the events of one edit share its stamp; later edits have later stamps
        #expect(h[1].stamp == h[2].stamp && h[2].stamp == h[3].stamp)
        #expect(h[0].stamp < h[1].stamp && h[3].stamp < h[4].stamp && h[5].stamp < h[6].stamp)
        #expect(Set(h.map(\.id)).count == h.count)
        #expect(try store.history(of: .id(TicketID(high: 9, low: 9))) == nil)
    }
}

@Suite("Case store: change feed of tickets")
struct ChangeFeedTests {
    @Test("an entry per change, listing the registers that still sit there and the children added there")
    func feed() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(), actor: ivanova)
        let b = try await store.create(draft(), actor: ivanova)
        let seqAfterB = store.lastSequence
        let a2 = try await store.patch(.id(a.id), TicketPatch(priority: .urgent))
        let all = TicketRecord.schema.registers.map(\.name)

        let page = try store.changes(since: 0, limit: 100)
        #expect(page.changes.map(\.sequence) == [1, 2, 3])
        #expect(page.changes.map(\.ticket.id) == [a.id, b.id, a.id])
        // each entry shows the ticket as it is now
        #expect(page.changes.map(\.ticket) == [a2, b, a2])
        #expect(page.changes.map(\.registers) == [all.filter { $0 != "priority" }, all, ["priority"]])
        #expect(page.changes.map(\.children) == [["history": 1], ["history": 1], ["history": 1]])
        #expect(page.lastSequence == 3 && store.lastSequence == 3)

        let after = try store.changes(since: seqAfterB, limit: 100)
        #expect(after.changes.map(\.ticket.id) == [a.id])
        #expect(try store.changes(since: 3, limit: 100).changes.isEmpty)
        #expect(try store.changes(since: .max, limit: 100).changes.isEmpty)
        #expect(try store.changes(since: 0, limit: 1).changes.map(\.ticket.id) == [a.id])

        // a note is an entry of children only
        _ = try await store.note(.id(b.id), "x")
        let again = try store.changes(since: 3, limit: 100)
        #expect(again.changes.map(\.ticket.id) == [b.id])
        #expect(again.changes.map(\.registers) == [[]])
        #expect(again.changes.map(\.children) == [["notes": 1, "history": 1]])
        #expect(try store.tableCounts()["feed"] == 4)
        try auditFeed(store)
    }

    @Test("a reader that follows the feed page by page sees every register of every ticket exactly once")
    func follow() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        var ids: [TicketID] = []
        for _ in 0..<10 { ids.append(try await store.create(draft(), actor: ivanova).id) }
        var rng = SeededRandom(seed: 7)
        let patched = Array(ids.shuffled(using: &rng).prefix(4))
        for id in patched { _ = try await store.patch(.id(id), TicketPatch(priority: .high)) }
        var since: UInt64 = 0
        var seen: [TicketID: [String]] = [:]
        var versions: [TicketID: UInt64] = [:]
        while true {
            let p = try store.changes(since: since, limit: 3)
            if p.changes.isEmpty { break }
            #expect(p.changes.count <= 3)
            for c in p.changes {
                seen[c.ticket.id, default: []] += c.registers
                versions[c.ticket.id] = c.ticket.version
            }
            since = p.changes.last!.sequence
        }
        #expect(Set(seen.keys) == Set(ids))
        for (id, names) in seen {
            #expect(names.sorted() == TicketRecord.schema.registers.map(\.name).sorted(), "\(id)")
        }
        #expect(versions.values.filter { $0 == 2 }.count == 4)
        #expect(Set(versions.filter { $0.value == 2 }.keys) == Set(patched))
        #expect(since == 14)
    }
}
