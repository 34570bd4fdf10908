import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// Replica digests (Digest/): the sums and comparisons; leaves kept by every write equal
/// leaves hashed from scratch; replicas of a scope agree; bytes changed under a store
/// are found by a scrub and replaced from a peer by a repair.
@Suite("Case store: replica digests")
struct DigestTests {
    @Test("sums add and subtract lane by lane, round-trip through bytes, and do not depend on order")
    func sums() {
        let x = DigestSum.sha256(Array("a".utf8)), y = DigestSum.sha256(Array("b".utf8)), z = DigestSum.sha256(Array("c".utf8))
        #expect(x + y + z == z + x + y)
        #expect(x + y - y == x)
        #expect(DigestSum(bytes: x.bytes) == x && x.bytes.count == 32)
        #expect(DigestSum(bytes: [UInt8](repeating: 0, count: 31)) == nil)
        #expect(DigestSum(a: .max, b: 0, c: 0, d: 0) + DigestSum(a: 1, b: 0, c: 0, d: 0) == .zero)
    }

    @Test("comparison names the ranges that differ or that one side lacks, and the records to pull")
    func comparison() {
        let s = { DigestSum.sha256([$0]) }
        let mine = [DigestNode(position: 1, sum: s(1), records: 1), DigestNode(position: 2, sum: s(2), records: 2),
                    DigestNode(position: 4, sum: s(4), records: 1)]
        let theirs = [DigestNode(position: 1, sum: s(1), records: 1), DigestNode(position: 2, sum: s(9), records: 2),
                      DigestNode(position: 3, sum: s(3), records: 1)]
        #expect(DigestComparison.differing(mine, theirs) == [2, 3, 4])
        #expect(DigestComparison.differing(mine, mine).isEmpty)
        let id: (Int) -> RecordID = { RecordID(high: UInt64($0), low: 0) }
        let a = [DigestEntry(kind: TicketRecord.kind, id: id(1), value: s(1)), DigestEntry(kind: TicketRecord.kind, id: id(2), value: s(2))]
        let b = [DigestEntry(kind: TicketRecord.kind, id: id(2), value: s(7)), DigestEntry(kind: TicketRecord.kind, id: id(3), value: s(3))]
        #expect(DigestComparison.toPull(mine: a, theirs: b).map(\.id) == [id(2), id(3)])
        #expect(DigestComparison.toOffer(mine: a, theirs: b).map(\.id) == [id(1), id(2)])
    }

    func scrubToEnd(_ store: CaseStore) async throws -> ScrubReport {
        var total = ScrubReport()
        for _ in 0..<10_000 {
            guard case .scrubbed(let r) = try await store.perform(.scrubDigests(limit: 7), actor: .system) else {
                Issue.record("no scrub report")
                return total
            }
            total.checked += r.checked
            total.fixed += r.fixed
            total.damaged += r.damaged
            if r.finished { total.finished = true; return total }
        }
        return total
    }

    func root(_ store: CaseStore, _ scope: String) throws -> String { try store.digestSummary(scope: scope).root.hex }

    func citizenTicket(_ store: CaseStore, _ subject: String) async throws -> Ticket {
        var d = draft(subject: subject)
        d.citizen = Citizen(ref: "CIT-\(subject.count)", name: "Иванова Мария Петровна", snils: try Snils("11223344595"), phone: "+79001234567")
        return try await store.create(d, actor: ivanova)
    }

    @Test("leaves kept by every write (edits, notes, merges, transfers, a purge) equal a scrub's from scratch, and replicas of each scope agree")
    func incrementalEqualsScratch() async throws {
        let p = try StorePeers([irk, office, fundNode])
        defer { p.close() }
        let (region, branch, fund) = (p.stores[0], p.stores[1], p.stores[2])
        for s in p.stores {
            #expect(!s.digestsReady)
            #expect(try await scrubToEnd(s).finished)
            #expect(s.digestsReady)
        }
        var tickets: [Ticket] = []
        for i in 0..<12 { tickets.append(try await citizenTicket(i % 3 == 0 ? branch : region, "Обращение \(i)")) }
        _ = try await region.note(TicketRef(tickets[1]), "внутренняя", .internal)
        _ = try await region.note(TicketRef(tickets[1]), "для фонда", .shared)
        _ = try await region.patch(TicketRef(tickets[1]), TicketPatch(status: .registered))
        _ = try await region.patch(TicketRef(tickets[2]), TicketPatch(status: .registered))
        try await p.sync()
        let kept = try await region.perform(.sendTransfer(TransferRequest(
            ticket: TicketRef(tickets[1]), to: "sfr", kind: .redirect, reasonCode: "pension-recalc",
            reasonText: "Вопрос компетенции фонда", scope: [.ref, .name])), actor: ivanova)
        let rejected = try await region.perform(.sendTransfer(TransferRequest(
            ticket: TicketRef(tickets[2]), to: "sfr", kind: .infoRequest, reasonCode: "pension-recalc",
            reasonText: "Нужны сведения", scope: [.ref])), actor: ivanova)
        try await p.sync()
        guard case .transfer(let t1) = kept, case .transfer(let t2) = rejected else { Issue.record("no transfers"); return }
        _ = try await fund.perform(.transferStep(TransferStepRequest(transfer: t1.id, state: .accepted)), actor: ivanova)
        _ = try await fund.note(TicketRef(tickets[1]), "фонд принял", .shared)
        _ = try await fund.perform(.transferStep(TransferStepRequest(transfer: t2.id, state: .rejected, reasonCode: "not-competent",
                                                                     reasonText: "Не к фонду")), actor: ivanova)
        #expect(try fund.ticket(TicketRef(tickets[2])) == nil, "the fund purged the rejected request")
        try await p.sync()
        _ = try await branch.patch(TicketRef(tickets[0]), TicketPatch(priority: .high))
        try await p.sync()

        // Every write kept the leaves a scrub would compute from the records themselves.
        for s in p.stores {
            let r = try await scrubToEnd(s)
            #expect(r.fixed == 0 && r.damaged.isEmpty, "\(s.configuration.node): \(r)")
        }
        // The region's nodes hold the same; the region and the fund agree on their shared scope.
        #expect(try root(region, "38") == root(branch, "38"))
        #expect(try region.digestSummary(scope: "38").records == 14)
        #expect(try root(region, "sfr") == root(fund, "38"))
        #expect(try root(branch, "sfr") == root(fund, "38"))
        // Shared: the ticket kept in scope and both transfers (the rejected one's ticket left the scope).
        #expect(try fund.digestSummary(scope: "38").records == 3)
        #expect(try region.digestScopeNames() == ["38", "sfr"])
    }

    @Test("a purge and the ticket's return by a new transfer in one batch (a catch-up) leave the leaves a scrub computes")
    func purgeAndReturnInOneBatch() async throws {
        let p = try StorePeers([irk, fundNode])
        defer { p.close() }
        let (region, fund) = (p.stores[0], p.stores[1])
        for s in p.stores { #expect(try await scrubToEnd(s).finished) }
        let t = try await citizenTicket(region, "Перерасчёт")
        _ = try await region.note(TicketRef(t), "для фонда", .shared)
        _ = try await region.patch(TicketRef(t), TicketPatch(status: .registered))
        guard case .transfer(let first) = try await region.perform(.sendTransfer(TransferRequest(
            ticket: TicketRef(t), to: "sfr", kind: .infoRequest, reasonCode: "pension-recalc",
            reasonText: "Нужны сведения", scope: [.ref, .name])), actor: ivanova) else { Issue.record("no transfer"); return }
        _ = try await p.pull(fund, from: region)
        _ = try await p.pull(region, from: fund)
        // The fund is cut off while the region cancels and asks again: it catches up in one batch.
        p.clock.advance(5_000)
        _ = try await region.step(first.id, .cancelled, reason: ("no-longer-needed", "Уже не нужно"))
        _ = try await region.perform(.sendTransfer(TransferRequest(
            ticket: TicketRef(t), to: "sfr", kind: .infoRequest, reasonCode: "pension-recalc",
            reasonText: "Снова нужны сведения", scope: [.ref])), actor: ivanova)
        let before = try fund.lastSequence
        _ = try await p.pull(fund, from: region)
        // Purged on the cancellation, taken again by the new request: the purge is undone.
        #expect(try fund.ticket(TicketRef(t)) != nil && fund.purge(ofTicket: t.id) == nil)
        #expect(try fund.verify().isClean)
        #expect(try fund.lastSequence > before)
        let r = try await scrubToEnd(fund)
        #expect(r.fixed == 0 && r.damaged.isEmpty, "\(r)")
        _ = try await p.pull(region, from: fund)   // the fund's delivery of the new request
        #expect(try root(region, "sfr") == root(fund, "38"))
    }

    @Test("a record changed under the store is found damaged by a scrub, the digest shows it, and a repair from a peer replaces the altered write")
    func damageFoundAndRepaired() async throws {
        let p = try StorePeers([irk, office])
        defer { p.close() }
        for s in p.stores { _ = try await scrubToEnd(s) }
        let t = try await p.a.create(draft(subject: "ПОДМЕНА-AAAA"), actor: ivanova)
        _ = try await p.a.note(TicketRef(t), "заметка")
        try await p.sync()
        #expect(try root(p.a, "38") == root(p.b, "38"))

        // Same length, same write id, another value: the feed would never resend it.
        let key = Keys.record(TicketRecord.kind.rawValue, t.id)
        try p.b.env.write { txn in
            let bytes = try #require(try txn.get(p.b.schema.records, key: key))
            let from = Array("AAAA".utf8), to = Array("ZZZZ".utf8)
            let at = try #require((0...(bytes.count - 4)).first { Array(bytes[$0..<($0 + 4)]) == from })
            var changed = bytes
            changed.replaceSubrange(at..<(at + 4), with: to)
            try txn.put(p.b.schema.records, key: key, value: changed)
        }
        #expect(try root(p.a, "38") == root(p.b, "38"), "the leaves were written before the change")
        let found = try await scrubToEnd(p.b)
        #expect(found.damaged == [RecordRef(kind: TicketRecord.kind, id: t.id)])
        #expect(try p.b.damagedRecords() == found.damaged)
        #expect(try root(p.a, "38") != root(p.b, "38"))
        #expect(try await scrubToEnd(p.b).damaged.isEmpty, "found once; the leaf now says what the store holds")

        // The damaged side pulls the record from its peer as a repair: the peer's write wins.
        let whole = try p.a.wholeRecords(found.damaged, for: "38", maxBytes: 1 << 20)
        let records = whole.enumerated().map { i, w in remoteRecord(FeedPage.Entry(sequence: UInt64(i + 1), delta: w.1)) }
        let before = try p.b.checkpoint(for: irk)
        let report = try await p.b.merge(RemoteBatch(peer: irk, sourceStoreID: [], throughSequence: 0, records: records, repair: true))
        #expect(report.changedRecords == 1 && report.repairedDamaged == 1 && report.rejections.isEmpty, "\(report)")
        #expect(try p.b.checkpoint(for: irk) == before, "a repair does not move the checkpoint")
        #expect(try root(p.a, "38") == root(p.b, "38"))
        #expect(try p.b.damagedRecords().isEmpty)
        #expect(try p.b.ticket(TicketRef(t))?.subject == "ПОДМЕНА-AAAA")
        #expect(try await scrubToEnd(p.b).fixed == 0)

        // The undamaged side refuses the damaged copy as an equivocation, as any pull would.
        let back = try p.b.wholeRecords(found.damaged, for: "38", maxBytes: 1 << 20)
        #expect(back.count == 1)
    }

    /// A scrub step and a merge that adds children to the same record, in one group
    /// commit: the scrub hashed the record with the new children from the store, and the
    /// end of the transaction added them to its leaf again, so the next pass found the
    /// record "changed under the store" (seen after a kill -9, when the restarted node's
    /// first scrub ran beside its catch-up). The scrub's records are hashed again whole.
    @Test("a scrub step and a merge of new children in one transaction leave the leaf as a scrub from scratch would")
    func scrubBesideMerge() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let t = try await p.a.create(draft(), actor: ivanova)
        try await p.pull(p.b, from: p.a)
        #expect(try await scrubToEnd(p.b).finished)
        _ = try await p.a.note(.id(t.id), "first note")
        let page = try p.a.feedPage(after: try p.resumePoint(p.b, from: p.a), limit: 100)
        let batch = p.batch(page.entries, from: p.a, through: page.readThrough)
        // What the commit loop does for a group of [merge, scrub step], in one transaction.
        try p.b.env.write { txn in
            p.b.digestWork.reset()
            var seq = try txn.u64(p.b.schema.meta, Schema.MetaKey.lastSequence) ?? 0
            _ = try p.b.applyMerge(batch, txn, &seq, now: p.clock.now)
            try txn.put(p.b.schema.meta, key: Schema.MetaKey.digestScrub, value: [1])   // the records phase, from the start
            _ = try p.b.applyScrub(limit: 1000, txn)
            try p.b.updateDigests(txn)
            try txn.put(p.b.schema.meta, key: Schema.MetaKey.lastSequence, value: seq.bigEndianBytes)
        }
        let again = try await scrubToEnd(p.b)
        #expect(again.damaged.isEmpty && again.fixed == 0, "the next pass found \(again.fixed) leaves to fix")
        #expect(try root(p.a, "38") == root(p.b, "38"))
    }
}
