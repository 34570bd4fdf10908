import Foundation
import Testing
import CaseModel
import LMDB
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
        let feed: [TicketID]
        let list: [TicketID]
        init(_ store: CaseStore, _ id: TicketID) throws {
            tables = try store.tableCounts()
            lastSequence = store.lastSequence
            ticket = try store.ticket(.id(id))
            history = try store.history(of: .id(id))
            notes = try store.notes(of: .id(id))
            feed = try store.changes(since: 0, limit: 1_000).changes.map(\.ticket.id)
            list = try store.list(TicketQuery(limit: 500)).items.map(\.id)
        }
    }

    @Test("an edit failing after it began writing leaves nothing behind", arguments: [
        "create.afterTicket", "create.beforeFeed", "patch.afterTicket", "note.afterNote",
    ])
    func faultLeavesNothing(point: String) async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        let store = try CaseStore(path: dir.path, configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(assignee: "petrov"), actor: ivanova)
        _ = try await store.note(.id(a.id), "first note")
        let b = try await store.create(draft(.phone), actor: ivanova)
        let before = try Snapshot(store, a.id)
        #expect(before.tables["tickets"] == 2 && before.tables["notes"] == 1)
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
        case .merged:
            Issue.record("a local edit reported a merge")
        }
    }

    @Test("a create refused by a fault leaves the next number free across many attempts")
    func counterNotConsumed() async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        let store = try CaseStore(path: dir.path, configuration: configuration(clock))
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
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        let store = try CaseStore(path: dir.path, configuration: configuration(clock))
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
        #expect(after["notes"] == before["notes"]! + 1)
        #expect(try store.list(TicketQuery(assignee: "group", limit: 500)).items.count == 200)
        #expect(store.lastSequence == 2 + 1 + 200 + 1)   // blocker, 200 creates, the note
        #expect(try store.changes(since: 3, limit: 1_000).changes.count == 201)
    }

    @Test("a fault armed for every patch fails only the patches of a busy group")
    func concurrentWithFault() async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        let store = try CaseStore(path: dir.path, configuration: configuration(clock))
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

@Suite("Case store: group commit, durability, identity")
struct GroupCommitDurabilityTests {
    @Test("2,000 concurrent creates: distinct ids, numbers 1…2000 without gaps")
    func concurrentCreates() async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        let store = try CaseStore(path: dir.path, configuration: configuration(clock))
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
        #expect(counts["numbers"] == 2_000 && counts["feed"] == 2_000 && counts["history"] == 2_000)
        #expect(counts["counters"] == 1)
        #expect(try store.changes(since: 0, limit: 10_000).changes.count == 2_000)
        for t in tickets.prefix(50) { #expect(try store.ticket(.number(t.number)) == t) }
    }

    @Test("small groups: maxGroup 7 still numbers without gaps")
    func smallGroups() async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        let store = try CaseStore(path: dir.path, configuration: configuration(clock, maxGroup: 7))
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
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        var tickets: [Ticket] = []
        var stamps: [Stamp] = []
        var lastSequence: UInt64 = 0
        var storeID = ""
        do {
            let store = try CaseStore(path: dir.path, configuration: configuration(clock))
            storeID = store.storeID
            for i in 0..<5 { tickets.append(try await store.create(draft(i % 2 == 0 ? .phone : .web), actor: ivanova)) }
            tickets[0] = try await store.patch(.id(tickets[0].id), TicketPatch(status: .inWork, assignee: .some("petrov")))
            _ = try await store.note(.id(tickets[1].id), "до перезапуска")
            for t in tickets { stamps += try #require(try store.history(of: .id(t.id))).map(\.stamp) }
            lastSequence = store.lastSequence
            store.close()
            store.close()   // idempotent
            await #expect(throws: StoreError.closed) { try await store.create(draft(), actor: ivanova) }
        }
        #expect(lastSequence == 7)

        // The wall clock did not move (or even went back): stamps must still move forward.
        clock.advance(-1_000)
        let store = try CaseStore(path: dir.path, configuration: configuration(clock))
        defer { store.close() }
        #expect(store.storeID == storeID)
        #expect(store.lastSequence == lastSequence)
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
    }

    /// History and notes are keyed by ticket id + record id, so their order is the order of
    /// the record ids. After a restart the id generator must not issue ids that sort before
    /// the ones already stored, even if the wall clock was stepped back meanwhile.
    @Test("notes and history stay in append order across restarts with the wall clock stepped back")
    func orderAcrossRestarts() async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        var id: TicketID? = nil
        for cycle in 0..<4 {
            let store = try CaseStore(path: dir.path, configuration: configuration(clock))
            if id == nil { id = try await store.create(draft(.phone), actor: ivanova).id }
            _ = try await store.note(.id(id!), "note \(cycle)")
            _ = try await store.patch(.id(id!), TicketPatch(priority: cycle % 2 == 0 ? .high : .low))
            store.close()
            clock.advance(-5_000)   // NTP stepped the clock back while the node was down
        }
        let store = try CaseStore(path: dir.path, configuration: configuration(clock))
        defer { store.close() }
        #expect(try store.notes(of: .id(id!))?.map(\.text) == ["note 0", "note 1", "note 2", "note 3"])
        let h = try #require(try store.history(of: .id(id!)))
        #expect(h.first?.field == "ticket")
        #expect(zip(h, h.dropFirst()).allSatisfy { $0.stamp < $1.stamp }, "history not in stamp order: \(h.map { "\($0.field) \($0.stamp)" })")
    }

    @Test("a store opened with another node id is refused")
    func identityMismatch() async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        do {
            let store = try CaseStore(path: dir.path, configuration: configuration(clock))
            _ = try await store.create(draft(), actor: ivanova)
            store.close()
        }
        let error = #expect(throws: StoreError.self) {
            _ = try CaseStore(path: dir.path, configuration: configuration(clock, node: NodeID("nnov-main")!))
        }
        guard case .identityMismatch(let message)? = error else {
            Issue.record("expected identityMismatch, got \(String(describing: error))")
            return
        }
        #expect(message.contains("irk-main") && message.contains("nnov-main"))
        // the rightful node still opens it, and the data is intact
        let again = try CaseStore(path: dir.path, configuration: configuration(clock))
        defer { again.close() }
        #expect(try again.stats().tickets == 1)
        #expect(try again.stats().node == "irk-main")
    }

    @Test("stats and inspect describe the store")
    func statsAndInspect() async throws {
        let dir = try StoreDir()
        defer { dir.remove() }
        let clock = TestClock()
        do {
            let store = try CaseStore(path: dir.path, configuration: configuration(clock))
            _ = try await store.create(draft(), actor: ivanova)
            let s = try store.stats()
            #expect(s.node == "irk-main" && s.tickets == 1 && s.lastSequence == 1)
            #expect(Set(s.tables.map(\.name)) == ["meta", "tickets", "numbers", "counters", "notes", "history", "feed",
                                                 "feed_position", "idx_status", "idx_assignee", "idx_updated", "idx_deadline",
                                                 "replicas", "idx_conflicts", "checkpoints", "served"])
            #expect(s.storeID.count == 32)
            store.close()
        }
        let inspected = try CaseStore.inspect(path: dir.path)
        let tickets = inspected.tables.first { $0.0 == "tickets" }
        #expect(tickets?.1.entries == 1)
        #expect(inspected.tables.count == 16)
    }
}

@Suite("Record codec")
struct RecordCodecTests {
    @Test("a ticket with every field set survives encode and decode")
    func ticketRoundTrip() throws {
        let t = Ticket(
            id: TicketID(millis: UInt64(t0), randomHigh: 77, randomLow: 0xDEAD_BEEF),
            number: TicketNumber(region: "38", year: 2026, sequence: 1_234_567),
            originNode: irk, ownerNode: NodeID("sfr-federal")!, channel: .videoSign, topic: "pensions",
            supportMeasure: "victory-card", subject: "Тема ✓", statement: "Текст\nв две строки",
            citizen: Citizen(ref: "CIT-7F3K2", name: "Иванов И. И.", snils: try Snils("11223344595"), phone: "+79140001267"),
            status: .waiting, assignee: "petrov", priority: .urgent, legalRegime: .appeal59FZ,
            deadlines: Deadlines(registerBy: t0, forwardBy: t0 + 1, answerBy: t0 + 2, extensionDays: 12, callbackBy: t0 + 3),
            receivedAt: t0 - 5, registeredAt: t0 - 1, updatedAt: t0 + 9, updatedStamp: Stamp(millis: t0 + 9, logical: 65_535),
            version: 300, duplicateOf: TicketID(high: 1, low: 2))
        let bytes = RecordCodec.encode(t)
        let back = try bytes.withUnsafeBytes { try RecordCodec.decodeTicket($0) }
        #expect(back == t)
        let minimal = try draft().open(id: TicketID(high: 5, low: 6), number: TicketNumber(region: "38", year: 2026, sequence: 1),
                                       node: irk, now: t0, stamp: Stamp(millis: t0, logical: 0))
        let m = try RecordCodec.encode(minimal).withUnsafeBytes { try RecordCodec.decodeTicket($0) }
        #expect(m == minimal)
        // a truncated record is reported, not trapped on
        for cut in [0, 1, 17, bytes.count / 2, bytes.count - 1] {
            let short = Array(bytes.prefix(cut))
            #expect(throws: CorruptRecord.self, "cut at \(cut)") { try short.withUnsafeBytes { try RecordCodec.decodeTicket($0) } }
        }
    }
}
