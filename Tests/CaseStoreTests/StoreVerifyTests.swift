import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

extension CaseStore {
    /// Every feed page after 0, the whole feed and each partner's scope: what was left out.
    func allSkips(partners: [String] = ["38", "sfr", "52"]) throws -> [FeedPage.Skip] {
        var out: [FeedPage.Skip] = []
        for partner in [nil] + partners.map(Optional.some) {
            var after: UInt64 = 0
            while true {
                let page = try feedPage(after: after, limit: 5, partner: partner)
                out += page.skipped
                guard page.readThrough > after else { break }
                after = page.readThrough
            }
        }
        return out
    }
}

/// The store's invariants (StoreVerify.swift) and a feed that never stops at an entry it
/// cannot encode (issue 18: a purge undone by a winning acceptance stopped a fund node's
/// replication for good with "feed names missing child").
@Suite("Case store: invariants and feeds that go on")
struct StoreVerifyTests {
    func redirect(_ t: Ticket) -> TransferRequest {
        TransferRequest(ticket: TicketRef(t), to: "sfr", kind: .redirect, reasonCode: "pension-recalc",
                        reasonText: "Перерасчёт пенсии: вопрос фонда", scope: [.ref, .name])
    }

    @Test("a purge undone by an acceptance on the fund's other node, then a return and a completion: every store verifies clean and its feed encodes whole")
    func purgeUndoneByAcceptanceOnTheOtherFundNode() async throws {
        let p = try StorePeers([irk, fundNode, fundBackupNode])
        defer { p.close() }
        let region = p.stores[0], fund1 = p.stores[1], fund2 = p.stores[2]
        let ticket = try await region.registered()
        let sent = try await region.send(redirect(ticket))
        try await p.pull(fund1, from: region)
        try await p.pull(fund2, from: region)
        try await p.pull(fund2, from: fund1)
        try await p.pull(fund1, from: fund2)
        #expect(try fund1.transfer(sent.id)?.state == .delivered)
        // The fund's two nodes apart: node 1 rejects (and purges), node 2 accepts.
        p.clock.advance(1_000)
        _ = try await fund1.step(sent.id, .rejected, reason: ("not-ours", "Вопрос не относится к фонду"))
        #expect(try fund1.ticket(.id(ticket.id)) == nil, "node 1 purged the ticket on its rejection")
        #expect(try fund1.purge(ofTicket: ticket.id) != nil)
        p.clock.advance(1_000)
        _ = try await fund2.step(sent.id, .accepted)
        // Node 1 hears of the acceptance last: what the region backfilled meanwhile came
        // while the transfer still looked rejected here, and was not kept.
        try await p.pull(region, from: fund1)
        try await p.pull(region, from: fund2)
        try await p.pull(fund1, from: region)
        let report = try await p.pull(fund1, from: fund2)
        #expect(report.wanted == [RecordRef(kind: TicketRecord.kind, id: ticket.id)], "node 1 asks for the ticket whole")
        #expect(try fund1.purge(ofTicket: ticket.id) == nil, "the purge is undone")
        // What the node does on it: a repair (anti-entropy) from the peer that told it.
        try await p.repair(fund1, from: fund2, [RecordRef(kind: TicketRecord.kind, id: ticket.id)])
        try await p.sync()
        // The acceptance wins: the ticket is back at node 1, whose feed still names what the purge took.
        for s in p.stores { #expect(try s.transfer(sent.id)?.state == .accepted, "\(s.configuration.node)") }
        #expect(try fund1.ticket(.id(ticket.id)) != nil, "node 1 holds the ticket again")
        for s in p.stores {
            #expect(try s.verify().violations == [], "\(s.configuration.node)")
            #expect(try s.allSkips() == [], "\(s.configuration.node)")
        }
        // Node 1 returns it; node 2 completes it.
        p.clock.advance(1_000)
        _ = try await fund1.step(sent.id, .returned, reason: ("wrong-fund", "Вопрос другого фонда"))
        p.clock.advance(1_000)
        _ = try await fund2.step(sent.id, .completed, answer: "Перерасчёт выполнен")
        try await p.sync()
        for s in p.stores {
            #expect(try s.transfer(sent.id)?.state == .completed, "\(s.configuration.node)")
            #expect(try s.verify().violations == [], "\(s.configuration.node)")
            #expect(try s.allSkips() == [], "\(s.configuration.node)")
        }
        // A note node 1 writes afterwards reaches the others: its feed goes on.
        _ = try await fund1.note(.id(ticket.id), "Проверено вторым узлом фонда", .shared)
        try await p.sync()
        #expect(try #require(try region.notes(of: .id(ticket.id))).contains { $0.text == "Проверено вторым узлом фонда" })
    }

    @Test("a child gone behind the store's back: verify names it; a feed page leaves it out, says so, and serves the entries after it")
    func missingChildIsSkippedAndNamed() async throws {
        let p = try StorePeers([irk, office])
        defer { p.close() }
        let a = p.a
        let first = try await a.create(draft(subject: "Первое"), actor: ivanova)   // 1: its creation event
        let second = try await a.create(draft(subject: "Второе"), actor: ivanova)  // 2
        #expect(try a.verify().isClean)
        // Damage: the first ticket's creation event disappears.
        let entry = try a.entry(1)
        let child = try #require(entry.children.first)
        try a.env.write { txn in
            _ = try txn.delete(a.schema.children, key: Keys.child(TicketRecord.kind.rawValue, first.id, child.collection, child.id))
        }
        let v = try a.verify()
        #expect(v.violations.map(\.rule) == ["feed.child"])
        #expect(v.violations.first?.detail.contains("\(child.id)") == true)
        let page = try a.feedPage(after: 0, limit: 10)
        #expect(page.entries.map(\.sequence) == [1, 2], "the entry goes without the child, and the next one after it")
        #expect(page.skipped.map(\.sequence) == [1] && page.skipped.first?.id == first.id)
        #expect(page.skipped.first?.reason.contains("missing child") == true)
        // A peer catching up gets both tickets (the first without its lost event).
        try await p.pull(p.b, from: a)
        #expect(try p.b.ticket(.id(first.id)) != nil && p.b.ticket(.id(second.id)) != nil)
        // An entry that does not decode is left out too.
        try a.env.write { txn in try txn.put(a.schema.feed, key: Keys.sequence(2), value: [0xff, 0xff]) }
        let broken = try a.feedPage(after: 0, limit: 10)
        #expect(broken.entries.map(\.sequence) == [1] && broken.skipped.map(\.sequence) == [1, 2])
        #expect(broken.readThrough == 2, "the page reads past what it left out")
    }

    @Test("verify names a view without a record, an index entry without a view, and a transfer view that disagrees with its steps")
    func verifyNamesBrokenViewsAndIndexes() async throws {
        let p = try StorePeers([irk, fundNode])
        defer { p.close() }
        let a = p.a
        let t = try await a.registered()
        let sent = try await a.send(redirect(t))
        #expect(try a.verify().isClean)
        let ghost = RecordID(high: 1, low: 2)
        try a.env.write { txn in
            try txn.put(a.schema.byAssignee, key: Keys.assignee("nobody", ghost), value: [])
            // The transfer's view says ACCEPTED; its steps say SENT.
            var accepted = try #require(try a.loadTransfer(sent.id, txn))
            accepted.steps.add(TransferStep(id: RecordID(high: 9, low: 9), state: .accepted, node: fundNode,
                                            stamp: Stamp(millis: t0, logical: 0), actor: ivanova))
            try txn.put(a.schema.transfers, key: sent.id.bytes, value: TransferView.encode(accepted))
            _ = try txn.delete(a.schema.tickets, key: t.id.bytes)
        }
        let rules = Set(try a.verify().violations.map(\.rule))
        #expect(rules == ["ticket.index", "ticket.view", "transfer.view"])
    }
}

/// Admission that does not depend on arrival order (AdmissionHold.swift).
@Suite("Case store: writes held for the acceptance that entitles them")
struct AdmissionHoldTests {
    /// The region redirects a ticket to the fund, and holds the delivery; the fund accepts
    /// and edits it (`patch`). Nothing of the acceptance has reached the region yet.
    func acceptedAndEdited(_ p: StorePeers, _ patch: TicketPatch) async throws -> (Ticket, Transfer) {
        let (region, fund) = (p.a, p.b)
        let ticket = try await region.registered()
        let sent = try await region.send(TransferRequest(ticket: TicketRef(ticket), to: "sfr", kind: .redirect, reasonCode: "pension-recalc",
                                                          reasonText: "Вопрос фонда", scope: [.ref]))
        try await p.pull(fund, from: region)
        try await p.pull(region, from: fund)                      // the region holds the delivery
        p.clock.advance(1_000)
        _ = try await fund.step(sent.id, .accepted)
        _ = try await fund.patch(TicketRef(ticket), patch)
        return (ticket, sent)
    }

    @Test("the fund's status written after accepting reaches the region before the acceptance: held, not refused, then admitted with it")
    func heldUntilTheAcceptanceArrives() async throws {
        let p = try StorePeers([irk, fundNode])
        defer { p.close() }
        let (region, fund) = (p.a, p.b)
        let (ticket, _) = try await acceptedAndEdited(p, TicketPatch(status: .inWork, assignee: "fund-op"))
        // The fund's ticket, whole, before its acceptance (as a repair or a relay can bring it).
        let early = try await p.repair(region, from: fund, [RecordRef(kind: TicketRecord.kind, id: ticket.id)])
        #expect(early.rejections.isEmpty, "\(early.rejections)")
        #expect(early.heldForEntitlement >= 2)
        #expect(try region.heldAdmissionCount() == 1)
        #expect(try region.ticket(TicketRef(ticket))?.assignee != "fund-op", "not admitted before the acceptance")
        // The acceptance arrives: the held writes are judged again and admitted.
        let report = try await p.pull(region, from: fund)
        #expect(report.rejections.isEmpty, "\(report.rejections)")
        #expect(try region.heldAdmissionCount() == 0)
        let shown = try #require(try region.ticket(TicketRef(ticket)))
        #expect(shown.status == .transferredOut && shown.handlerStatus == .inWork && shown.assignee == "fund-op")
        #expect(try region.verify().isClean)
    }

    @Test("held writes the transfer's end does not entitle are refused then, and reported like any refusal")
    func refusedWhenTheTransferEndsOtherwise() async throws {
        let p = try StorePeers([irk, fundNode])
        defer { p.close() }
        let (region, fund) = (p.a, p.b)
        let (ticket, sent) = try await acceptedAndEdited(p, TicketPatch(assignee: "fund-op"))
        _ = try await p.repair(region, from: fund, [RecordRef(kind: TicketRecord.kind, id: ticket.id)])
        #expect(try region.heldAdmissionCount() == 1)
        // The region cancels before the acceptance reaches it: what was held is refused now
        // (should the acceptance win after all, anti-entropy brings the fund's writes, §13).
        _ = try await region.step(sent.id, .cancelled, reason: ("no-longer-needed", "Уже не нужно"))
        #expect(try region.heldAdmissionCount() == 0)
        #expect(try region.ticket(TicketRef(ticket))?.assignee != "fund-op")
        #expect(try region.verify().isClean)
    }
}
