import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

typealias R = TicketRecord.Register

/// The registers `registers` of `record` (and `children`) as one delta.
func part(_ record: Record, _ registers: [R], children: [Child] = []) -> RecordDelta {
    var state = TicketRecord.schema.emptyState(record.state.id)
    for r in registers { state.registers[r.rawValue] = record.state.registers[r.rawValue] }
    return RecordDelta(state: state, children: children.sorted { $0.key < $1.key })
}

@Suite("Case store: merging peers' changes")
struct ReplicationStoreTests {
    @Test("a ticket created on one node appears on the other with the same view, notes and history")
    func createReplicates() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        _ = try await p.a.note(.id(t.id), "перезвонить")
        let r = try await p.pull(p.b, from: p.a)
        // Two entries of the one ticket: its registers with the creation's event, then the note with its event.
        #expect(r.changedRecords == 2 && r.unchangedRecords == 0 && r.rejections.isEmpty)
        #expect(view(try p.b.ticket(.id(t.id))) == view(try p.a.ticket(.id(t.id))))
        #expect(try p.b.ticket(TicketRef(t.number.description)!)?.id == t.id)
        #expect(try p.b.notes(of: .id(t.id)) == p.a.notes(of: .id(t.id)))
        #expect(try p.b.history(of: .id(t.id)) == p.a.history(of: .id(t.id)))
        #expect(try p.b.record(kind: TicketRecord.kind, id: t.id) == p.a.record(kind: TicketRecord.kind, id: t.id))
        #expect(try p.b.checkpoint(for: irk) == Checkpoint(sourceStoreID: p.a.storeIDBytes, sequence: 2))
        // The merge is in b's own feed, for b's other peers, in the same parts.
        #expect(try p.b.feedShape().map(\.registers) == p.a.feedShape().map(\.registers))
        #expect(try p.b.changes(since: 0, limit: 10).changes.map(\.ticket.id) == [t.id, t.id])
        // Merged writes move b's clock past them: b's next edit is later than anything it has seen.
        let edited = try await p.b.patch(.id(t.id), TicketPatch(priority: .high))
        #expect(edited.updatedStamp > (try p.a.ticket(.id(t.id))!.updatedStamp))
        try auditFeed(p.b)
    }

    @Test("two tickets with one number (nodes sharing a series, or a node restored from a copy) stay apart and are reported")
    func duplicateNumbersAreReported() async throws {
        let p = try StorePeers()   // both stores number in series 0
        defer { p.close() }
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

    @Test("nodes numbering in their own series never collide")
    func seriesKeepNumbersApart() async throws {
        let p = try StorePeers([irk, office, irkutskNodes[2]], series: [0, 1, 2])
        defer { p.close() }
        for s in p.stores { for _ in 0..<3 { _ = try await s.create(draft(.phone), actor: ivanova) } }
        var duplicates: [String] = []
        for to in p.stores {
            for from in p.stores where from !== to { duplicates += try await p.pull(to, from: from).duplicateNumbers }
        }
        #expect(duplicates.isEmpty)
        let numbers = try p.a.list(TicketQuery(limit: 100)).items.map(\.number.description)
        #expect(numbers.count == 9 && Set(numbers).count == 9)
        #expect(Set(numbers) == Set(["38-2026-000001", "38-2026-000002", "38-2026-000003",
                                     "38-2026-10000001", "38-2026-10000002", "38-2026-10000003",
                                     "38-2026-20000001", "38-2026-20000002", "38-2026-20000003"]))
        for n in numbers { #expect(try p.c.ticket(TicketRef(n)!)?.number.description == n) }
    }

    @Test("merging the same entries again, in any order, changes nothing")
    func mergeIsIdempotent() async throws {
        let p = try StorePeers([irk, office, irkutskNodes[2]])
        defer { p.close() }
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        _ = try await p.a.note(.id(t.id), "первая")
        _ = try await p.a.patch(.id(t.id), TicketPatch(status: .inWork, assignee: "op-ivanova"))
        try await p.pull(p.b, from: p.a)
        let before = try p.b.tableCounts()
        let seq = p.b.lastSequence
        let page = try p.a.feedPage(after: 0, limit: 100)
        let again = try await p.b.merge(p.batch(page.entries, from: p.a))
        #expect(again.changedRecords == 0 && again.unchangedRecords == 3 && again.rejections.isEmpty)
        #expect(p.b.lastSequence == seq)
        #expect(try p.b.tableCounts() == before)
        #expect(try p.b.ticket(.id(t.id))?.version == 2)
        // A third store given the entries shuffled and repeated ends where b is (after the
        // entry that brings the ticket's header and owner: admission judges the rest by them).
        var rng = SeededRandom(seed: 11)
        for round in 0..<4 {
            let scrambled = [page.entries[0]] + (page.entries + page.entries.filter { _ in Bool.random(using: &rng) }).shuffled(using: &rng)
            _ = try await p.c.merge(p.batch(scrambled, from: p.a, through: page.lastSequence))
            #expect(try p.c.record(kind: TicketRecord.kind, id: t.id) == p.b.record(kind: TicketRecord.kind, id: t.id), "round \(round)")
        }
        #expect(view(try p.c.ticket(.id(t.id))) == view(try p.b.ticket(.id(t.id))))
        #expect(try p.c.notes(of: .id(t.id)) == p.b.notes(of: .id(t.id)))
        try auditFeed(p.c)
    }

    @Test("the checkpoint moves with the batch, in its transaction: a batch that fails leaves neither its records nor its checkpoint")
    func checkpointMovesWithTheBatch() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let x = try await p.a.create(draft(.phone), actor: ivanova)
        let y = try await p.a.create(draft(.phone), actor: ivanova)
        try await p.pull(p.b, from: p.a, limit: 1)
        #expect(try p.b.checkpoint(for: irk) == Checkpoint(sourceStoreID: p.a.storeIDBytes, sequence: 2))
        // A batch that changes nothing still moves the checkpoint (a peer's feed may hold only what b has).
        _ = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: p.a.storeIDBytes, throughSequence: 9, records: []))
        #expect(try p.b.checkpoint(for: irk)?.sequence == 9)
        #expect(p.b.lastSequence == 2)

        // A batch whose merge fails part-way (a child twice in one delta, which the
        // puller's check refuses; here it reaches the store and its second write fails).
        let z = try await p.a.create(draft(.phone), actor: ivanova)
        let w = try await p.a.create(draft(.phone), actor: ivanova)
        let zRecord = try #require(try p.a.record(kind: TicketRecord.kind, id: z.id))
        let wRecord = try #require(try p.a.record(kind: TicketRecord.kind, id: w.id))
        let event = try #require(wRecord.children.values.first)
        var twice = wRecord.delta
        twice.children = [event, event]
        let before = try p.b.tableCounts()
        await #expect(throws: StoreError.self) {
            try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: p.a.storeIDBytes, throughSequence: 12,
                                            records: [RemoteRecord(sequence: 10, delta: zRecord.delta),
                                                      RemoteRecord(sequence: 12, delta: twice)]))
        }
        #expect(try p.b.checkpoint(for: irk)?.sequence == 9)
        #expect(try p.b.ticket(.id(z.id)) == nil && p.b.record(kind: TicketRecord.kind, id: z.id) == nil)
        #expect(try p.b.tableCounts() == before)
        #expect(p.b.lastSequence == 2)
        // Another store of the same peer (recreated, or restored): the checkpoint names it from now on.
        _ = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: [UInt8](repeating: 0xEE, count: 16), throughSequence: 1, records: []))
        #expect(try p.b.checkpoint(for: irk) == Checkpoint(sourceStoreID: [UInt8](repeating: 0xEE, count: 16), sequence: 1))
        #expect(try p.resumePoint(p.b, from: p.a) == 0)
        try await p.pull(p.b, from: p.a)
        #expect(try p.b.ticket(.id(z.id)) != nil && p.b.ticket(.id(x.id)) != nil && p.b.ticket(.id(y.id)) != nil)
        #expect(try p.b.checkpoint(for: irk) == Checkpoint(sourceStoreID: p.a.storeIDBytes, sequence: 4))
        try auditFeed(p.b)
    }

    @Test("a conflict of a register holding two fields shows both: the support measure a loser would lose is visible")
    func conflictShowsEveryFieldOfItsRegister() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        try await p.sync()
        p.clock.advance(1_000)
        _ = try await p.a.patch(.id(t.id), TicketPatch(supportMeasure: .some("measure.a")))
        p.clock.advance(10)
        _ = try await p.b.patch(.id(t.id), TicketPatch(supportMeasure: .some("measure.b")))
        try await p.sync()
        let c = try #require(try p.a.conflicts().first { $0.field == "topic" })
        // The topics are equal; only the fields say what the loser held.
        #expect(c.losingValue == c.winningValue)
        #expect(c.losingFields == [ShownField("topic", t.topic), ShownField("supportMeasure", "measure.a")])
        #expect(c.winningFields == [ShownField("topic", t.topic), ShownField("supportMeasure", "measure.b")])
    }

    @Test("edits on both sides of a partition converge; the losing status and assignee are listed on both; resolving clears them")
    func partitionConflictAndResolution() async throws {
        let p = try StorePeers()
        defer { p.close() }
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
        let va = try p.a.ticket(.id(t.id)), vb = try p.b.ticket(.id(t.id))
        #expect(view(va) == view(vb))
        #expect(va?.status == .deferred && va?.assignee == "op-petrova")  // the later stamp wins
        #expect(try p.a.notes(of: .id(t.id))?.count == 2 && p.b.notes(of: .id(t.id)) == p.a.notes(of: .id(t.id)))
        #expect(try p.a.history(of: .id(t.id)) == p.b.history(of: .id(t.id)))
        #expect(try p.a.record(kind: TicketRecord.kind, id: t.id) == p.b.record(kind: TicketRecord.kind, id: t.id))
        let ca = try p.a.conflicts(), cb = try p.b.conflicts()
        #expect(Set(ca.map(\.id)) == Set(cb.map(\.id)))
        #expect(Set(ca.map(\.field)) == ["progress", "assignee"])
        #expect(ca.allSatisfy { $0.kind == TicketRecord.kind && $0.kindName == "ticket" && $0.recordID == t.id })
        let progress = try #require(ca.first { $0.field == "progress" })
        #expect(progress.losingValue == "IN_WORK" && progress.winningValue == "DEFERRED")
        #expect(progress.loser.node == irk && progress.winner.node == office)
        #expect(ca.first { $0.field == "assignee" }?.losingValue == "op-ivanova")
        // Resolve on b, keeping the loser; after an exchange no conflict is left anywhere.
        let statusConflict = try #require(cb.first { $0.field == "progress" })
        let kept = try await p.b.perform(.resolve(conflictID: statusConflict.id, keep: .loser), actor: petrov)
        #expect(kept.ticket?.status == .inWork)
        let assigneeConflict = try #require(cb.first { $0.field == "assignee" })
        _ = try await p.b.perform(.resolve(conflictID: assigneeConflict.id, keep: .winner), actor: petrov)
        await #expect(throws: StoreError.conflictNotFound(statusConflict.id)) {
            try await p.b.perform(.resolve(conflictID: statusConflict.id, keep: .winner), actor: petrov)
        }
        await #expect(throws: StoreError.conflictNotFound("ticket.garbage")) {
            try await p.b.perform(.resolve(conflictID: "ticket.garbage", keep: .winner), actor: petrov)
        }
        #expect(try p.b.conflicts().isEmpty)
        #expect(try p.b.history(of: .id(t.id))?.filter { $0.field.hasPrefix("conflict.") }.map(\.field)
                == ["conflict.progress", "conflict.assignee"])
        try await p.sync()
        #expect(try p.a.conflicts().isEmpty && p.b.conflicts().isEmpty)
        #expect(try p.a.ticket(.id(t.id))?.status == .inWork && p.b.ticket(.id(t.id))?.status == .inWork)
        #expect(try p.a.ticket(.id(t.id))?.assignee == "op-petrova")
        #expect(view(try p.a.ticket(.id(t.id))) == view(try p.b.ticket(.id(t.id))))
        #expect(try p.a.list(TicketQuery(status: .inWork)).items.map(\.id) == [t.id])
        #expect(try p.a.list(TicketQuery(status: .deferred)).items.isEmpty)
        try auditFeed(p.a)
        try auditFeed(p.b)
    }

    @Test("admission: a write from outside the organisation that writes its part, relayed by a node that may not speak for its author, or stamped too far ahead is refused and reported, once per record")
    func admissionRefusals() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        try await p.pull(p.b, from: p.a)
        let now = p.clock.now
        func written(_ register: R, _ value: ValueBytes, by node: NodeID, at millis: Millis) throws -> Record {
            guard var r = try p.a.record(kind: TicketRecord.kind, id: t.id) else { throw StoreError.ticketNotFound("\(t.id)") }
            r.state.registers[register.rawValue].write(value, dot: Dot(node: node, stamp: Stamp(millis: millis, logical: 0)))
            return r
        }
        func merge(_ delta: RecordDelta, from peer: NodeID, sequence: UInt64 = 7) async throws -> MergeReport {
            try await p.b.merge(RemoteBatch(peer: peer, sourceStoreID: [UInt8](repeating: 1, count: 16), throughSequence: sequence,
                                            records: [RemoteRecord(sequence: sequence, delta: delta)]))
        }
        let intruder = TicketValues.encode(assignee: "intruder")

        // A node of region 52 relays a write of the fund's node: it may not speak for it.
        var r = try await merge(part(try written(.assignee, intruder, by: fundNode, at: now + 5), [.assignee]), from: novgorodNode)
        #expect(r.rejections.map(\.refusal.reason) == [.cannotSpeakFor])
        #expect(r.rejections.first?.sequence == 7 && r.rejections.first?.kind == TicketRecord.kind)
        #expect(r.rejections.first?.id == t.id && r.rejections.first?.whole == true)
        // The fund's node sends its own write: the fund does not own the ticket.
        r = try await merge(part(try written(.assignee, intruder, by: fundNode, at: now + 5), [.assignee]), from: fundNode)
        #expect(r.rejections.map(\.refusal.reason) == [.notAuthorised])
        #expect(r.rejections.first?.refusal.detail.contains("registers[assignee]") == true)
        // A write of the owner's own node, stamped twenty minutes ahead (the bound is fifteen).
        r = try await merge(part(try written(.assignee, intruder, by: irk, at: now + 20 * 60_000), [.assignee]), from: irk)
        #expect(r.rejections.map(\.refusal.reason) == [.stampTooFarAhead])
        // Another node of the owning organisation may relay the owner's write.
        r = try await merge(part(try written(.assignee, TicketValues.encode(assignee: "op-relayed"), by: irk, at: now + 6), [.assignee]),
                            from: irkutskNodes[3])
        #expect(r.rejections.isEmpty && r.changedRecords == 1)
        #expect(try p.b.ticket(.id(t.id))?.assignee == "op-relayed")

        // A node of this node's own organisation may relay it, and the write is then judged
        // as the fund's own: the fund does not own the ticket.
        r = try await merge(part(try written(.assignee, intruder, by: fundNode, at: now + 5), [.assignee]), from: irk)
        #expect(r.rejections.map(\.refusal.reason) == [.notAuthorised])

        // Refused parts of a delta are refused alone: the admitted part merges, the record is
        // reported once. A copy to the fund makes it a partner: its shared note is admitted,
        // its writes of the owner's registers are not.
        _ = try await p.a.perform(.sendTransfer(TransferRequest(ticket: .id(t.id), to: "sfr", kind: .copy, reasonCode: "info",
                                                               reasonText: "Для сведения", scope: [.ref])), actor: ivanova)
        try await p.pull(p.b, from: p.a)
        var mixed = try written(.priority, TicketValues.encode(Priority.urgent), by: fundNode, at: now + 7)
        mixed.state.registers[R.topic.rawValue].write(TicketValues.encode(Topic(topic: "pensions", supportMeasure: nil)),
                                                       dot: Dot(node: fundNode, stamp: Stamp(millis: now + 7, logical: 1)))
        mixed.state.registers[R.statement.rawValue].write(TicketValues.encode(Statement(subject: "чужая", text: "чужая")),
                                                           dot: Dot(node: fundNode, stamp: Stamp(millis: now + 7, logical: 2)))
        let fundNote = TicketRecord.child(Note(id: RecordID(millis: UInt64(now), randomHigh: 9, randomLow: 9), ticketID: t.id,
                                               author: ivanova, node: fundNode, at: now, stamp: Stamp(millis: now + 7, logical: 3),
                                               visibility: .shared, text: "заметка фонда"))
        r = try await merge(part(mixed, [.priority, .topic, .statement], children: [fundNote]), from: fundNode, sequence: 8)
        #expect(r.rejections.count == 1 && r.changedRecords == 1)
        let rejection = try #require(r.rejections.first)
        #expect(!rejection.whole && rejection.sequence == 8 && rejection.refusal.reason == .notAuthorised)
        #expect(rejection.refusal.detail.hasSuffix("(and 2 more parts)"))
        let merged = try #require(try p.b.ticket(.id(t.id)))
        #expect(merged.priority != .urgent && merged.topic == "child-benefits" && merged.subject == "Пособие")
        #expect(try p.b.notes(of: .id(t.id))?.map(\.text) == ["заметка фонда"])

        // A record not seen before whose authority is refused is refused whole: nothing of it is kept.
        let id = TicketID(millis: UInt64(now), randomHigh: 0x52, randomLow: 1)
        var foreign = TicketReplica(node: novgorodNode, id: id)
        foreign.open(openedTicket(id: id, at: novgorodNode, now: now, sequence: 99), now: now)
        r = try await merge(foreign.record.delta, from: fundNode, sequence: 9)
        #expect(r.rejections.count == 1 && r.rejections[0].whole && r.rejections[0].id == id)
        #expect(r.rejections[0].refusal.reason == .cannotSpeakFor)
        #expect(try p.b.record(kind: TicketRecord.kind, id: id) == nil && p.b.ticket(.id(id)) == nil)
        // Sent by its own organisation's node, it is admitted.
        r = try await merge(foreign.record.delta, from: novgorodNode, sequence: 10)
        #expect(r.rejections.isEmpty && r.changedRecords == 1)
        #expect(try p.b.ticket(.id(id))?.originNode == novgorodNode)
        try auditFeed(p.b)
    }

    @Test("a record refused by the puller's checks is reported and writes nothing; the records around it merge and the checkpoint moves")
    func refusedRecordAlone() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let x = try await p.a.create(draft(.phone), actor: ivanova)
        let y = try await p.a.create(draft(.phone), actor: ivanova)
        let z = try await p.a.create(draft(.phone), actor: ivanova)
        var page = try p.a.feedPage(after: 0, limit: 10).entries
        #expect(page.count == 3)
        // y's entry as a hostile peer might send it: a priority of enum value 99, re-encoded.
        var bad = try decode(page[1].delta)
        bad.state.registers[R.priority.rawValue] = Register([0x08, 99], dot: bad.state.registers[R.priority.rawValue].winner!.dot)
        page[1] = FeedPage.Entry(sequence: page[1].sequence, delta: RecordCoding.encodeDelta(bad, schema: TicketRecord.schema))
        let batch = p.batch(page, from: p.a)
        guard case .refused(_, _, let refusal) = batch.records[1].content else { Issue.record("not refused: \(batch.records[1])"); return }
        #expect(refusal.reason == .invalidValue && refusal.detail.hasPrefix("registers[priority].versions[0].value"))
        // A refused record as the wire reader reports it, with the kind and id it could read.
        let records = [batch.records[0], RemoteRecord(sequence: 2, refusedKind: TicketRecord.kind, id: y.id, refusal), batch.records[2]]
        let r = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: p.a.storeIDBytes, throughSequence: 3, records: records))
        #expect(r.rejections == [RecordRejection(sequence: 2, kind: TicketRecord.kind, id: y.id, refusal: refusal, whole: true)])
        #expect(r.changedRecords == 2)
        #expect(try p.b.ticket(.id(x.id)) != nil && p.b.ticket(.id(z.id)) != nil)
        #expect(try p.b.ticket(.id(y.id)) == nil && p.b.record(kind: TicketRecord.kind, id: y.id) == nil)
        #expect(try p.b.checkpoint(for: irk)?.sequence == 3)
        // A record of a kind this store does not know is refused the same way.
        var unknown = try decode(page[0].delta)
        unknown = RecordDelta(state: RecordState(kind: RecordKindID(rawValue: 77), id: unknown.id, registers: unknown.state.registers))
        let u = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: p.a.storeIDBytes, throughSequence: 4,
                                                records: [RemoteRecord(sequence: 4, delta: unknown)]))
        #expect(u.rejections.map(\.refusal.reason) == [.unknownKind] && u.rejections.first?.whole == true)
        try auditFeed(p.b)
    }

    @Test("equivocation: a write id or child id this store holds with other content is refused, whole, and reported")
    func equivocationRefused() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        let other = try await p.a.create(draft(.phone), actor: ivanova)
        _ = try await p.a.patch(.id(other.id), TicketPatch(priority: .high))
        _ = try await p.b.merge(p.batch(try p.a.feedPage(after: 0, limit: 2).entries, from: p.a))   // both tickets, before the patch
        let before = try #require(try p.b.record(kind: TicketRecord.kind, id: t.id))
        let now = p.clock.now

        // Same dot, other value (a priority of urgent under the creation's dot), with an honest new assignee beside it.
        var forged = before
        let dot = try #require(forged.state.registers[R.priority.rawValue].winner?.dot)
        forged.state.registers[R.priority.rawValue] = Register(sortedVersions: [Version(dot: dot, value: TicketValues.encode(Priority.urgent))],
                                                                seen: forged.state.registers[R.priority.rawValue].seen)
        forged.state.registers[R.assignee.rawValue].write(TicketValues.encode(assignee: "op-new"),
                                                          dot: Dot(node: irk, stamp: Stamp(millis: now + 1, logical: 0)))
        // Same child id, other content.
        let event = try #require(before.children.values.first)
        let rewritten = Child(collection: event.collection, id: event.id, dot: event.dot,
                              value: TicketValues.encode(HistoryEvent(id: event.id, ticketID: t.id, actor: petrov, node: irk, at: now,
                                                                      stamp: event.dot.stamp, field: "ticket", old: nil, new: "forged")))
        let records = [RemoteRecord(sequence: 1, delta: part(forged, [.priority, .assignee])),
                       RemoteRecord(sequence: 2, delta: part(before, [], children: [rewritten])),
                       remoteRecord(try p.a.feedPage(after: 2, limit: 1).entries[0])]   // other's patch, honest
        let r = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: p.a.storeIDBytes, throughSequence: 3, records: records))
        #expect(r.rejections.map(\.refusal.reason) == [.equivocation, .equivocation])
        #expect(r.rejections.map(\.sequence) == [1, 2] && r.rejections.allSatisfy { $0.whole && $0.id == t.id })
        #expect(r.rejections[0].refusal.detail.contains("registers[priority]"))
        #expect(r.changedRecords == 1)
        #expect(try p.b.record(kind: TicketRecord.kind, id: t.id) == before)   // not even the honest assignee
        #expect(try p.b.ticket(.id(other.id))?.priority == .high)
        #expect(try p.b.checkpoint(for: irk)?.sequence == 3)

        // Two variants of one child in one batch: the first is kept, the second refused.
        let id = TicketID(millis: UInt64(now), randomHigh: 3, randomLow: 3)
        let note = { (text: String) in
            TicketRecord.child(Note(id: RecordID(millis: UInt64(now), randomHigh: 4, randomLow: 4), ticketID: id, author: ivanova,
                                    node: irk, at: now, stamp: Stamp(millis: now, logical: 9), visibility: .shared, text: text))
        }
        var fresh = TicketReplica(node: irk, id: id)
        fresh.open(openedTicket(id: id, at: irk, now: now), now: now)
        let twice = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: p.a.storeIDBytes, throughSequence: 5, records: [
            RemoteRecord(sequence: 4, delta: RecordDelta(state: fresh.record.state, children: [note("первый вариант")])),
            RemoteRecord(sequence: 5, delta: part(fresh.record, [], children: [note("второй вариант")])),
        ]))
        #expect(twice.rejections.map(\.refusal.reason) == [.equivocation] && twice.rejections.first?.sequence == 5)
        #expect(try p.b.notes(of: .id(id))?.map(\.text) == ["первый вариант"])
        try auditFeed(p.b)
    }

    @Test("a node catching up a ticket whose owner register moved to a later entry gets every register")
    func catchUpAfterOwnerChange() async throws {
        let p = try StorePeers([irk, office, irkutskNodes[2]])
        defer { p.close() }
        let t = try await p.a.create(draft(.phone, assignee: "petrov"), actor: ivanova)
        // The ticket is handed to irk-office-1, of the same organisation: a write of the owner register by that node.
        p.clock.advance(1_000)
        var handed = try #require(try p.a.record(kind: TicketRecord.kind, id: t.id))
        handed.state.registers[R.owner.rawValue].write(TicketValues.encode(owner: office),
                                                       dot: Dot(node: office, stamp: Stamp(millis: p.clock.now, logical: 0)))
        let r = try await p.a.merge(RemoteBatch(peer: office, sourceStoreID: p.b.storeIDBytes, throughSequence: 1,
                                                records: [RemoteRecord(sequence: 1, delta: part(handed, [.owner]))]))
        #expect(r.rejections.isEmpty && r.changedRecords == 1)
        #expect(try p.a.ticket(.id(t.id))?.ownerNode == office)
        let all = TicketRecord.schema.registers.map(\.name)
        #expect(try p.a.feedShape().map(\.registers) == [all.filter { $0 != "owner" }, ["owner"]])
        // A node that has nothing of the ticket catches up from a's feed, in its order.
        let caught = try await p.pull(p.c, from: p.a)
        #expect(caught.rejections.isEmpty, "\(caught.rejections.map(\.refusal))")
        #expect(try p.c.record(kind: TicketRecord.kind, id: t.id) == p.a.record(kind: TicketRecord.kind, id: t.id))
        #expect(view(try p.c.ticket(.id(t.id))) == view(try p.a.ticket(.id(t.id))))
    }

    @Test("200 children merged at once spread over feed entries of at most 64")
    func manyChildrenSpread() async throws {
        let p = try StorePeers([irk, office, irkutskNodes[2]])
        defer { p.close() }
        let t = try await p.a.create(draft(.phone), actor: ivanova)
        try await p.pull(p.b, from: p.a)
        let now = p.clock.now
        let notes = (0..<200).map { i in
            TicketRecord.child(Note(id: RecordID(millis: UInt64(now), randomHigh: 7, randomLow: UInt64(i)), ticketID: t.id,
                                    author: ivanova, node: irk, at: now, stamp: Stamp(millis: now, logical: UInt16(i + 1)),
                                    visibility: .internal, text: "заметка \(i)"))
        }
        let delta = RecordDelta(state: TicketRecord.schema.emptyState(t.id), children: notes)
        try TicketRecord.schema.check(delta, context: CheckContext(directory: testDirectory))
        let seq = p.b.lastSequence
        let r = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: p.a.storeIDBytes, throughSequence: 1,
                                                records: [RemoteRecord(sequence: 1, delta: delta)]))
        #expect(r.changedRecords == 1 && r.rejections.isEmpty)
        #expect(p.b.lastSequence == seq + 4)
        let shape = try p.b.feedShape(since: seq)
        #expect(shape.map(\.children) == [["notes": 64], ["notes": 64], ["notes": 64], ["notes": 8]])
        #expect(shape.allSatisfy { $0.registers.isEmpty && $0.id == t.id })
        #expect(try p.b.notes(of: .id(t.id))?.count == 200)
        #expect(try p.b.ticket(.id(t.id))?.version == 1)   // children do not change the version
        try auditFeed(p.b)

        // A record not seen before, with its registers and 201 children: the registers
        // travel in the first entry with the first 64 children.
        let whole = try #require(try p.b.record(kind: TicketRecord.kind, id: t.id))
        #expect(whole.children.count == 201)
        let c = p.stores[2]
        _ = try await c.merge(RemoteBatch(peer: office, sourceStoreID: p.b.storeIDBytes, throughSequence: 1,
                                          records: [RemoteRecord(sequence: 1, delta: whole.delta)]))
        let cShape = try c.feedShape()
        #expect(cShape.map(\.children) == [["notes": 64], ["notes": 64], ["notes": 64], ["notes": 8, "history": 1]])
        #expect(cShape.map(\.registers.count) == [TicketRecord.schema.registers.count, 0, 0, 0])
        #expect(try c.record(kind: TicketRecord.kind, id: t.id) == whole)
        // Each entry passes the puller's checks, so c's feed replicates on.
        #expect(try c.feedPage(after: 0, limit: 10).entries.map(remoteRecord).allSatisfy {
            if case .delta = $0.content { return true } else { return false }
        })
        try auditFeed(c)
    }
}

extension StorePeers {
    var c: CaseStore { stores[2] }
}
