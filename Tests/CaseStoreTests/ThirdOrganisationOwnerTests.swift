import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// Issue 18: an organisation that holds a ticket by an INFO_REQUEST or a COPY sees none
/// of its REDIRECTs, so it shows the owner the origin keeps in the owner register.
@Suite("Case store: the owner a third organisation shows")
struct ThirdOrganisationOwnerTests {
    /// The fault run's seed 1002: the office redirects to region 52, the centre asks the
    /// fund for information; 52 accepts and returns the ticket. The fund must show the
    /// ticket as the region's again, not 52's.
    @Test func aReturnedRedirectGivesTheTicketBackEvenWhereOnlyAnInfoRequestIsHeld() async throws {
        let p = try StorePeers([irk, office, novgorodNode, fundNode])
        defer { p.close() }
        let (centre, off, nn, fund) = (p.stores[0], p.stores[1], p.stores[2], p.stores[3])
        let ticket = try await centre.registered()
        _ = try await p.pull(off, from: centre)
        let redirect = try await off.send(TransferRequest(ticket: TicketRef(ticket), to: "52", kind: .redirect, reasonCode: "other-region",
                                                          reasonText: "Другой регион", scope: [.ref, .name]))
        _ = try await p.pull(centre, from: off)
        _ = try await centre.send(TransferRequest(ticket: TicketRef(ticket), to: "sfr", kind: .infoRequest, reasonCode: "pension-info",
                                                  reasonText: "Сведения", scope: [.ref]))
        _ = try await p.pull(fund, from: centre)
        _ = try await p.pull(nn, from: centre)
        _ = try await nn.step(redirect.id, .accepted)
        _ = try await p.pull(centre, from: nn)
        _ = try await p.pull(fund, from: centre)
        #expect(try fund.ticket(TicketRef(ticket)).map { testDirectory.org($0.ownerNode) } == "52")
        _ = try await nn.step(redirect.id, .returned, reason: ("why", "Не наш"))
        for _ in 0..<3 {
            _ = try await p.pull(centre, from: nn)
            _ = try await p.pull(off, from: centre)
            _ = try await p.pull(centre, from: off)
            _ = try await p.pull(fund, from: centre)
        }
        for (i, s) in p.stores.enumerated() where i != 2 {
            let t = try #require(try s.ticket(TicketRef(ticket)))
            #expect(testDirectory.org(t.ownerNode) == "38", "node \(i) shows owner \(t.ownerNode)")
        }
    }

    /// The step that ends a redirect and the receiver's owner write travel as two
    /// records: the fund's node 1 accepts (the step, then its owner write, in its feed),
    /// node 2 hears of the acceptance alone and returns the ticket, and the centre hears of
    /// the return before the owner write. Region 52, holding a COPY, must show the region
    /// as owner however the origin's nodes order the two.
    @Test func anOwnerWriteThatArrivesAfterTheReturnIsOverruledByTheOrigin() async throws {
        let p = try StorePeers([irk, fundNode, fundBackupNode, novgorodNode])
        defer { p.close() }
        let (centre, fund1, fund2, nn) = (p.stores[0], p.stores[1], p.stores[2], p.stores[3])
        let ticket = try await centre.registered()
        let redirect = try await centre.send(TransferRequest(ticket: TicketRef(ticket), to: "sfr", kind: .redirect, reasonCode: "pension-recalc",
                                                             reasonText: "Вопрос фонда", scope: [.ref, .name]))
        _ = try await centre.send(TransferRequest(ticket: TicketRef(ticket), to: "52", kind: .copy, reasonCode: "for-information",
                                                  reasonText: "Для сведения", scope: [.ref]))
        _ = try await p.pull(nn, from: centre)
        _ = try await p.pull(fund1, from: centre)
        _ = try await p.pull(fund2, from: centre)
        // Node 2 has all node 1 wrote before the acceptance; of the acceptance it takes the
        // step alone (the next entry of node 1's feed; a ticket's entry would carry its
        // owner register, as every entry of a ticket does), then returns the ticket.
        _ = try await p.pull(fund2, from: fund1)
        _ = try await fund1.step(redirect.id, .accepted)
        _ = try await p.pull(fund2, from: fund1, limit: 1, pages: 1)
        #expect(try fund2.transfer(redirect.id)?.state == .accepted)
        #expect(try fund2.record(kind: TicketRecord.kind, id: ticket.id).map {
            $0.state.registers[TicketRecord.Register.owner.rawValue].versions.map(\.dot.node) } == [irk])
        _ = try await fund2.step(redirect.id, .returned, reason: ("why", "Не наш вопрос"))
        _ = try await p.pull(centre, from: fund2)
        #expect(try centre.transfer(redirect.id)?.state == .returned)
        _ = try await p.pull(centre, from: fund1)
        _ = try await p.pull(nn, from: centre)
        for (i, s) in [centre, nn].enumerated() {
            let t = try #require(try s.ticket(TicketRef(ticket)))
            #expect(testDirectory.org(t.ownerNode) == "38", "node \(i) shows owner \(t.ownerNode)")
        }
    }

    /// The region's centre and its office, apart, each redirect the ticket (to the fund and
    /// to region 52) and both receivers accept. The one sent first stands; the origin's
    /// word in the owner register tells the other receiver, which sees only its own
    /// redirect, that it was overruled: every node names one owner, and only its
    /// organisation can edit the ticket.
    @Test(arguments: [false, true])
    func twoRedirectsAcceptedAtOnceLeaveOneOwner(officeFirst: Bool) async throws {
        let p = try StorePeers([irk, office, fundNode, novgorodNode])
        defer { p.close() }
        let (centre, off, fund, nn) = (p.stores[0], p.stores[1], p.stores[2], p.stores[3])
        let ticket = try await centre.registered()
        _ = try await p.pull(off, from: centre)
        func redirect(_ s: CaseStore, to org: String) async throws -> Transfer {
            try await s.send(TransferRequest(ticket: TicketRef(ticket), to: org, kind: .redirect, reasonCode: "other",
                                             reasonText: "Не наш вопрос", scope: [.ref]))
        }
        let first = officeFirst ? try await redirect(off, to: "52") : try await redirect(centre, to: "sfr")
        p.clock.advance(1_000)
        let second = officeFirst ? try await redirect(centre, to: "sfr") : try await redirect(off, to: "52")
        _ = try await p.pull(centre, from: off)       // the office's redirect reaches 52 through the centre
        _ = try await p.pull(fund, from: centre)
        _ = try await p.pull(nn, from: centre)
        for (s, t) in [(fund, officeFirst ? second : first), (nn, officeFirst ? first : second)] {
            _ = try await s.step(t.id, .accepted)
        }
        for _ in 0..<3 {
            for (to, from) in [(centre, fund), (centre, nn), (off, centre), (centre, off), (fund, centre), (nn, centre)] {
                _ = try await p.pull(to, from: from)
            }
        }
        let winner = officeFirst ? "52" : "sfr", loser = officeFirst ? fund : nn
        for (i, s) in p.stores.enumerated() {
            let t = try #require(try s.ticket(TicketRef(ticket)))
            #expect(testDirectory.org(t.ownerNode) == winner, "node \(i) shows owner \(t.ownerNode)")
        }
        let winnerNode = officeFirst ? nn : fund
        _ = try await winnerNode.patch(TicketRef(ticket), TicketPatch(assignee: "handler"))
        await #expect(throws: StoreError.self) { _ = try await loser.patch(TicketRef(ticket), TicketPatch(assignee: "overruled")) }
    }

    /// The fault run's seed 1001: the fund's node 1 accepts and extends the answer
    /// deadline; node 2 completes while node 1 returns. The region hears of the return
    /// first and takes the ticket back (keeping the fund's deadlines as it saw them); the
    /// completion then overrules the return. The fund handles the ticket again, and its
    /// extension is what every node shows.
    @Test func aDeadlineExtensionSurvivesAReturnOverruledByACompletion() async throws {
        let p = try StorePeers([irk, fundNode, fundBackupNode])
        defer { p.close() }
        let (centre, fund1, fund2) = (p.stores[0], p.stores[1], p.stores[2])
        let opened = try await centre.create(draft(regime: .appeal59FZ), actor: ivanova)
        let ticket = try await centre.patch(TicketRef(opened), TicketPatch(status: .registered))
        let redirect = try await centre.send(TransferRequest(ticket: TicketRef(ticket), to: "sfr", kind: .redirect, reasonCode: "pension-recalc",
                                                             reasonText: "Вопрос фонда", scope: [.ref]))
        _ = try await p.pull(fund1, from: centre)
        _ = try await fund1.step(redirect.id, .accepted)
        let before = try #require(try fund1.ticket(TicketRef(ticket))?.deadlines.answerBy)
        let extended = try await fund1.patch(TicketRef(ticket), TicketPatch(extendAnswerByDays: 14))
        let answerBy = try #require(extended.deadlines.answerBy)
        #expect(answerBy > before)
        _ = try await p.pull(fund2, from: fund1)
        _ = try await fund2.step(redirect.id, .completed)
        _ = try await fund1.step(redirect.id, .returned, reason: ("why", "Не наш вопрос"))
        _ = try await p.pull(centre, from: fund1)
        #expect(try centre.transfer(redirect.id)?.state == .returned)
        for _ in 0..<3 {
            for (to, from) in [(centre, fund2), (fund1, fund2), (fund2, fund1), (fund1, centre), (fund2, centre)] {
                _ = try await p.pull(to, from: from)
            }
        }
        for (i, s) in p.stores.enumerated() {
            let t = try #require(try s.ticket(TicketRef(ticket)))
            #expect(try s.transfer(redirect.id)?.state == .completed)
            #expect(testDirectory.org(t.ownerNode) == "sfr", "node \(i) shows owner \(t.ownerNode)")
            #expect(t.deadlines.answerBy == answerBy, "node \(i) shows the answer due \(t.deadlines.answerBy as Any), not \(answerBy)")
        }
    }
}
