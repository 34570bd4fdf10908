import CaseModel
import TestSupport
import Testing
@testable import Replication

/// What a partner organisation may hold of a ticket, the roles a ticket's transfers
/// grant, the status a sender shows — as values, for every transfer state — and
/// admission judging a partner's writes with those grants.
@Suite struct TicketScopeTests {
    let irk = irkutskNodes[0]

    func link(_ state: TransferState, kind: TransferKind = .redirect, from: String = "38", to: String = "sfr",
              scope: Set<CitizenField> = [.ref, .name]) -> TicketScope.Link {
        TicketScope.Link(order: TransferOrder(ticket: RecordID(high: 1, low: 2), fromOrganisation: from, fromNode: irk,
                                              toOrganisation: to, kind: kind, reasonCode: "c", reasonText: "t", scope: scope,
                                              createdAt: testNow, dueAt: testNow + 1),
                         state: state)
    }

    @Test func aPartnerIsInScopeOnlyWhileATransferBetweenTheTwoIsLive() {
        for state in TransferState.allCases {
            let live = [TransferState.sent, .delivered, .accepted, .completed].contains(state)
            // Seen from either side, and never by a third organisation.
            #expect((TicketScope.of(partner: "sfr", mine: "38", links: [link(state)]) != nil) == live, "\(state)")
            #expect((TicketScope.of(partner: "38", mine: "sfr", links: [link(state)]) != nil) == live, "\(state)")
            #expect(TicketScope.of(partner: "52", mine: "38", links: [link(state)]) == nil)
            #expect(TicketScope.of(partner: "sfr", mine: "52", links: [link(state)]) == nil)
        }
    }

    @Test func theFieldsAreTheUnionOfTheLiveScopesAndTheReferenceAlways() throws {
        let s = try #require(TicketScope.of(partner: "sfr", mine: "38", links: [
            link(.completed, scope: [.name]), link(.delivered, kind: .infoRequest, scope: [.phone]),
            link(.cancelled, kind: .copy, scope: [.snils]),
        ]))
        #expect(s.fields == [.ref, .name, .phone])
        typealias R = TicketRecord.Register
        #expect(s.registers.contains(R.citizen.rawValue) && s.registers.contains(R.citizenName.rawValue))
        #expect(s.registers.contains(R.citizenPhone.rawValue) && !s.registers.contains(R.citizenSnils.rawValue))
        for r in [R.header, .statement, .progress, .assignee, .priority, .topic, .owner] { #expect(s.registers.contains(r.rawValue)) }
    }

    @Test func sharedNotesAndTheHistoryAPartnerNeedsOnly() {
        let s = TicketScope(fields: [.ref])
        let id = RecordID(high: 1, low: 2)
        func note(_ v: NoteVisibility) -> Child {
            TicketRecord.child(Note(id: RecordID(high: 3, low: UInt64(v == .shared ? 1 : 2)), ticketID: id,
                                    author: Actor(user: "op", role: "operator"), node: irk, at: testNow,
                                    stamp: Stamp(millis: testNow, logical: 0), visibility: v, text: "текст"))
        }
        func event(_ field: String) -> Child {
            TicketRecord.child(HistoryEvent(id: RecordID(high: 4, low: 1), ticketID: id, actor: Actor(user: "op", role: "operator"),
                                            node: irk, at: testNow, stamp: Stamp(millis: testNow, logical: 0), field: field,
                                            old: "a", new: "b"))
        }
        #expect(s.admits(note(.shared), ticket: id) && !s.admits(note(.internal), ticket: id))
        for f in ["ticket", "status", "owner", "transfer", "deadlines.answerBy"] { #expect(s.admits(event(f), ticket: id), "\(f)") }
        for f in ["assignee", "note", "statement", "citizen.name", "priority"] { #expect(!s.admits(event(f), ticket: id), "\(f)") }
        let shared = note(.shared)
        #expect(!s.admits(Child(collection: shared.collection, id: shared.id, dot: shared.dot, value: [0xFF, 0x01]), ticket: id))
    }

    @Test func grantsAndTheShownStatusFollowEveryStateOfARedirect() {
        for state in TransferState.allCases {
            let g = TicketScope.grants([link(state)])
            #expect(g.organisations[TicketRecord.partner] == ["38", "sfr"])
            let owning = [TransferState.accepted, .completed, .returned].contains(state)
            #expect(g.organisations[TicketRecord.successor] == (owning ? ["38", "sfr"] : []), "\(state)")
            let shown = TicketScope.shownStatus(mine: "38", links: [link(state)])
            switch state {
            case .sent, .delivered: #expect(shown == .transferPending)
            case .accepted, .completed: #expect(shown == .transferredOut)
            case .cancelled, .rejected, .returned: #expect(shown == nil)
            }
            // The receiver shows the ticket's own status; an info request moves nothing.
            #expect(TicketScope.shownStatus(mine: "sfr", links: [link(state)]) == nil)
            #expect(TicketScope.shownStatus(mine: "38", links: [link(state, kind: .infoRequest)]) == nil)
            #expect(TicketScope.grants([link(state, kind: .infoRequest)]).organisations[TicketRecord.successor] == [])
        }
        // A pending redirect shows over an earlier completed one.
        #expect(TicketScope.shownStatus(mine: "38", links: [link(.completed), link(.sent)]) == .transferPending)
    }

    /// Admission with the grants: a partner's note and a successor's owner write are
    /// admitted; the same writes from an organisation the transfers do not name are not.
    @Test func admissionJudgesAPartnersWritesByTheGrants() throws {
        let directory = testDirectory
        let id = RecordID(high: 9, low: 9)
        var replica = TicketReplica(node: irk, id: id)
        replica.open(openedTicket(id: id, at: irk, now: testNow), now: testNow)
        let local = replica.record.state
        let fundNote = TicketRecord.child(Note(id: RecordID(high: 5, low: 5), ticketID: id, author: Actor(user: "op-f", role: "operator"),
                                               node: fundNode, at: testNow, stamp: Stamp(millis: testNow + 1, logical: 0),
                                               visibility: .shared, text: "ответ фонда"))
        var ownerWrite = local
        ownerWrite.registers[TicketRecord.Register.owner.rawValue].write(TicketValues.encode(owner: fundNode),
                                                                         dot: Dot(node: fundNode, stamp: Stamp(millis: testNow + 2, logical: 0)))
        let delta = RecordDelta(state: ownerWrite, children: [fundNote])
        func admit(_ grants: Grants) -> (RecordDelta, [PartRefusal]) {
            TicketRecord.schema.admit(delta, from: fundNode, local: local, directory: directory, now: testNow + 10,
                                      maxSkew: 60_000, grants: grants, localOrganisation: "38")
        }
        let (none, refusedWithout) = admit(.none)
        #expect(none.children.isEmpty && none.state.registers[TicketRecord.Register.owner.rawValue].isEmpty)
        #expect(refusedWithout.count == 2 && refusedWithout.allSatisfy { $0.refusal.reason == .notAuthorised })
        let partnerOnly = TicketScope.grants([link(.delivered)])
        let (noted, refusedOwner) = admit(partnerOnly)
        #expect(noted.children == [fundNote] && refusedOwner.map(\.refusal.reason) == [.notAuthorised])
        let (all, refused) = admit(TicketScope.grants([link(.accepted)]))
        #expect(refused.isEmpty && all.children == [fundNote])
        #expect(all.state.registers[TicketRecord.Register.owner.rawValue].value == TicketValues.encode(owner: fundNode))
    }

    /// A ticket travels only from its origin: a fund learns of the region that took the
    /// request over by redirect through the origin's node, which relays that region's
    /// writes. The fund cannot judge them (it holds no transfer to that region) and takes
    /// them as the origin took them; the same writes relayed by anyone else are refused.
    @Test func aPartnerTakesAThirdOrganisationsWritesAsTheOriginRelaysThem() throws {
        let id = RecordID(high: 9, low: 8)
        var replica = TicketReplica(node: irk, id: id)
        replica.open(openedTicket(id: id, at: irk, now: testNow), now: testNow)
        let local = replica.record.state
        var taken = local
        taken.registers[TicketRecord.Register.owner.rawValue].write(TicketValues.encode(owner: novgorodNode),
                                                                    dot: Dot(node: novgorodNode, stamp: Stamp(millis: testNow + 2, logical: 0)))
        let delta = RecordDelta(state: taken)
        func admit(from sender: NodeID) -> (RecordDelta, [PartRefusal]) {
            TicketRecord.schema.admit(delta, from: sender, local: local, directory: testDirectory, now: testNow + 10,
                                      maxSkew: 60_000, grants: .none, localOrganisation: "sfr")
        }
        let (fromOrigin, none) = admit(from: irkutskNodes[1])
        #expect(none.isEmpty)
        #expect(fromOrigin.state.registers[TicketRecord.Register.owner.rawValue].value == TicketValues.encode(owner: novgorodNode))
        // Region 52 itself sending its own write to the fund: judged, and the fund sees no grant for it.
        let (fromAuthor, judged) = admit(from: novgorodNode)
        #expect(fromAuthor.state.registers[TicketRecord.Register.owner.rawValue].isEmpty)
        #expect(judged.map(\.refusal.reason) == [.notAuthorised])
        // A node of neither the author's, the receiver's nor the home organisation may not relay it at all.
        let (fromStranger, refused) = TicketRecord.schema.admit(delta, from: fundBackupNode, local: local, directory: testDirectory,
                                                                now: testNow + 10, maxSkew: 60_000, grants: .none,
                                                                localOrganisation: "52")
        #expect(fromStranger.state.registers[TicketRecord.Register.owner.rawValue].isEmpty)
        #expect(refused.map(\.refusal.reason) == [.cannotSpeakFor])
    }

    @Test func aPartnersNodeTakesWhatAnotherNodeOfThePartnerRelaysButTheHome() throws {
        let id = RecordID(high: 9, low: 9)
        var replica = TicketReplica(node: irk, id: id)
        replica.open(openedTicket(id: id, at: irk, now: testNow), now: testNow)
        let local = replica.record.state
        let dot = Dot(node: novgorodNode, stamp: Stamp(millis: testNow + 2, logical: 0))
        var relayed = local
        relayed.registers[TicketRecord.Register.assignee.rawValue].write(TicketValues.encode(assignee: "op-nn"), dot: dot)
        relayed.registers[TicketRecord.Register.owner.rawValue].write(TicketValues.encode(owner: novgorodNode), dot: dot)
        var rehomed = local
        let header = try #require(local.registers[TicketRecord.Register.header.rawValue].value)
        var claimed = try TicketValues.header(header)
        claimed.originNode = novgorodNode
        rehomed.registers[TicketRecord.Register.header.rawValue].write(TicketValues.encode(claimed), dot: dot)
        func admit(_ state: RecordState) -> (RecordDelta, [PartRefusal]) {
            TicketRecord.schema.admit(RecordDelta(state: state), from: fundBackupNode, local: local, directory: testDirectory,
                                      now: testNow + 10, maxSkew: 60_000, grants: .none, localOrganisation: "sfr")
        }
        // A fund node relays to another fund node a region-38 ticket's assignee and owner
        // written by region 52 (the fund cannot judge them: it holds only the transfers to itself).
        let (taken, none) = admit(relayed)
        #expect(none.isEmpty)
        #expect(taken.state.registers[TicketRecord.Register.assignee.rawValue].value == TicketValues.encode(assignee: "op-nn"))
        #expect(taken.state.registers[TicketRecord.Register.owner.rawValue].value == TicketValues.encode(owner: novgorodNode))
        // The header, which names the home, is judged whoever relays it.
        let (header2, judged) = admit(rehomed)
        #expect(header2.state.registers[TicketRecord.Register.header.rawValue].isEmpty)
        #expect(judged.map(\.refusal.reason) == [.notAuthorised])
    }

    /// The origin holds every redirect and derives the handler; a COPY's receiver sees
    /// none and reads the register; a receiver whose redirect no longer stands reads the
    /// register unless it still names the receiver itself (issue 18: a fund holding a
    /// COPY showed the origin as owner of a ticket another region had taken over).
    @Test func whoHandlesATicketAsEachOrganisationCanTellIt() {
        let toFund = link(.accepted), copy = link(.delivered, kind: .copy, to: "52")
        // The origin derives, whatever the register says.
        #expect(TicketScope.handler(origin: "38", links: [toFund, copy], mine: "38", registered: "38").organisation == "sfr")
        #expect(TicketScope.handler(origin: "38", links: [link(.returned), copy], mine: "38", registered: "sfr").organisation == "38")
        // The redirect's receiver knows it handles it.
        #expect(TicketScope.handler(origin: "38", links: [toFund], mine: "sfr", registered: "38").redirect == toFund)
        // A COPY's receiver takes the register's word.
        for registered in ["sfr", "38"] {
            #expect(TicketScope.handler(origin: "38", links: [copy], mine: "52", registered: registered).organisation == registered)
        }
        #expect(TicketScope.handler(origin: "38", links: [copy], mine: "52", registered: nil).organisation == "38")
        // A returned redirect's receiver: the register, but never itself.
        for state in [TransferState.returned, .rejected, .cancelled] {
            #expect(TicketScope.handler(origin: "38", links: [link(state)], mine: "sfr", registered: "sfr").organisation == "38")
            #expect(TicketScope.handler(origin: "38", links: [link(state)], mine: "sfr", registered: "52").organisation == "52")
        }
    }

    /// Issue 18: a fund that holds the origin's owner write beside its own concurrent one
    /// sends both back; the origin has seen its own (it superseded it since) and judges only
    /// the fund's, which the accepted redirect entitles. A forged variant of a version the
    /// origin holds (its dot, another value) is judged, and refused.
    @Test func onlyTheVersionsAReplicaHasNotSeenAreJudged() throws {
        let id = RecordID(high: 9, low: 7)
        var replica = TicketReplica(node: irk, id: id)
        replica.open(openedTicket(id: id, at: irk, now: testNow), now: testNow)
        let base = replica.record.state
        let o = TicketRecord.Register.owner.rawValue
        let officeWrite = Dot(node: irkutskNodes[1], stamp: Stamp(millis: testNow + 1, logical: 0))
        var officeSaw = base
        officeSaw.registers[o].write(TicketValues.encode(owner: irkutskNodes[1]), dot: officeWrite)
        var fundSaw = base
        fundSaw.registers[o].write(TicketValues.encode(owner: fundNode), dot: Dot(node: fundNode, stamp: Stamp(millis: testNow + 2, logical: 0)))
        var sentBack = officeSaw
        sentBack.registers[o].merge(fundSaw.registers[o])
        #expect(sentBack.registers[o].versions.count == 2)
        var local = officeSaw
        local.registers[o].write(TicketValues.encode(owner: irk), dot: Dot(node: irk, stamp: Stamp(millis: testNow + 3, logical: 0)))
        let grants = TicketScope.grants([link(.accepted)])
        func admit(_ state: RecordState, over local: RecordState) -> (RecordDelta, [PartRefusal]) {
            TicketRecord.schema.admit(RecordDelta(state: state), from: fundBackupNode, local: local, directory: testDirectory,
                                      now: testNow + 10, maxSkew: 60_000, grants: grants, localOrganisation: "38")
        }
        let (taken, none) = admit(sentBack, over: local)
        #expect(none.isEmpty)
        #expect(local.registers[o].merged(taken.state.registers[o]).versions.map(\.dot.node) == [fundNode, irk])
        // The office's version with another value, over a replica that holds it: judged.
        var forged = base
        forged.registers[o].write(TicketValues.encode(owner: fundNode), dot: officeWrite)
        let (dropped, refused) = admit(forged, over: officeSaw)
        #expect(dropped.state.registers[o].isEmpty && refused.map(\.refusal.reason) == [.cannotSpeakFor])
    }
}
