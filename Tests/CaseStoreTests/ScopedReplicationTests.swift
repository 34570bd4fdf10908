import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// Scoped replication between organisations, through the stores' feeds as nodes pull
/// them (`StorePeers.pull` asks for the page a sender serves the puller's organisation):
/// a fund receives only what was transferred to it, only the citizen fields in scope,
/// shared notes and the history it needs; the sender follows the receiver's progress;
/// ownership moves on an accepted redirect; a transfer that ends stops the updates and
/// the receiver purges what it received.
@Suite("Case store: scoped replication")
struct ScopedReplicationTests {
    let snils = "11223344595"

    /// irk-main and irk-office-1 (region 38), the fund's node (sfr) and nn-main (region 52).
    func federation() throws -> StorePeers { try StorePeers([irk, office, fundNode, novgorodNode]) }

    func citizenTicket(_ store: CaseStore, subject: String = "Перерасчёт пенсии") async throws -> Ticket {
        var d = draft(subject: subject)
        d.citizen = Citizen(ref: "CIT-7F3K2", name: "Иванова Мария Петровна", snils: try Snils(snils), phone: "+79001234567")
        let t = try await store.create(d, actor: ivanova)
        return try await store.patch(TicketRef(t), TicketPatch(status: .registered))
    }

    func transfer(_ t: Ticket, _ kind: TransferKind = .redirect, to: String = "sfr", scope: Set<CitizenField> = [.ref, .name]) -> TransferRequest {
        TransferRequest(ticket: TicketRef(t), to: to, kind: kind, reasonCode: "pension-recalc",
                        reasonText: "Вопрос компетенции фонда", scope: scope)
    }

    /// Every byte of every value a store holds, as text: what `mdb_dump` would show.
    func everything(_ store: CaseStore) throws -> String {
        try store.env.read { txn in
            var out = ""
            for db in store.schema.all {
                try txn.withCursor(db) { c in
                    var ok = try c.first()
                    while ok {
                        out += String(decoding: c.key, as: UTF8.self) + "=" + String(decoding: c.value, as: UTF8.self) + "\n"
                        ok = try c.next()
                    }
                }
            }
            return out
        }
    }

    @Test("a fund receives only the ticket transferred to it, the citizen fields in scope, shared notes and the history it needs; other organisations receive nothing")
    func fundReceivesOnlyItsScope() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, fund, novgorod) = (p.stores[0], p.stores[2], p.stores[3])
        let other = try await citizenTicket(region, subject: "Другое обращение")
        let t = try await citizenTicket(region)
        _ = try await region.perform(.addNote(TicketRef(t), text: "Внутренняя заметка: звонила дважды", visibility: .internal), actor: ivanova)
        _ = try await region.perform(.addNote(TicketRef(t), text: "Для фонда: справка приложена", visibility: .shared), actor: ivanova)
        _ = try await region.patch(TicketRef(t), TicketPatch(assignee: "op-petrov"))
        // The fund's node pulls before any transfer: nothing, and its position moves on.
        #expect(try await p.pull(fund, from: region).changedRecords == 0)
        #expect(try fund.checkpoint(for: irk)?.sequence == region.lastSequence)

        let sent = try await region.send(transfer(t))
        #expect(try region.ticket(TicketRef(t))?.status == .transferPending)
        let r = try await p.pull(fund, from: region)
        #expect(r.rejections.isEmpty)
        // The new transfer brought the whole ticket (a backfill), without any checkpoint reset.
        let there = try #require(try fund.ticket(TicketRef(t)))
        #expect(there.citizen == Citizen(ref: "CIT-7F3K2", name: "Иванова Мария Петровна"))
        #expect(there.subject == t.subject && there.statement == t.statement && there.ownerNode == irk)
        #expect(try fund.notes(of: TicketRef(t))?.map(\.text) == ["Для фонда: справка приложена"])
        let history = try #require(try fund.history(of: TicketRef(t)))
        #expect(Set(history.map(\.field)).isSubset(of: ["ticket", "status", "transfer"]) && history.contains { $0.field == "transfer" })
        #expect(try fund.transfer(sent.id)?.state == .delivered)
        #expect(try fund.ticket(TicketRef(other)) == nil && fund.record(kind: TicketRecord.kind, id: other.id) == nil)
        let dump = try everything(fund)
        // (The handling registers travel whole, the assignee's login among them: a receiver
        // that takes the ticket over must write over them, not beside them.)
        let leaked = [snils, "+79001234567", "Внутренняя заметка", "Другое обращение"].filter { dump.contains($0) }
        #expect(leaked.isEmpty, "the fund's store holds \(leaked)")
        #expect(dump.contains("Иванова Мария Петровна"))

        // Region 52 and a region 38 office's view of it: 52 receives nothing at all.
        #expect(try await p.pull(novgorod, from: region).changedRecords == 0)
        #expect(try await p.pull(novgorod, from: fund).changedRecords == 0)
        #expect(try novgorod.stats().tables.first { $0.name == "records" }?.entries == 0)

        // The acknowledgement comes back to the sender.
        _ = try await p.pull(region, from: fund)
        #expect(try region.transfer(sent.id)?.state == .delivered)
    }

    @Test("an accepted redirect moves ownership: the sender shows TRANSFERRED_OUT with the fund's status, read-only; its office follows through the centre")
    func acceptanceMovesOwnership() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, officeStore, fund) = (p.stores[0], p.stores[1], p.stores[2])
        let t = try await citizenTicket(region)
        let sent = try await region.send(transfer(t))
        _ = try await p.pull(fund, from: region)
        // Before acceptance the fund does not handle the ticket.
        await #expect(throws: StoreError.rejected(.notOwner(organisation: "38"))) {
            _ = try await fund.patch(TicketRef(t), TicketPatch(priority: .high))
        }
        p.clock.advance(60_000)
        _ = try await fund.step(sent.id, .accepted)
        let accepted = try #require(try fund.ticket(TicketRef(t)))
        #expect(accepted.ownerNode == fundNode && accepted.status == .registered && accepted.registeredAt == t0 + 60_000)
        #expect(try await p.pull(region, from: fund).rejections.isEmpty)
        let mirror = try #require(try region.ticket(TicketRef(t)))
        #expect(mirror.status == .transferredOut && mirror.handlerStatus == .registered && mirror.ownerNode == fundNode)
        await #expect(throws: StoreError.rejected(.readOnlyMirror(status: .transferredOut))) {
            _ = try await region.patch(TicketRef(t), TicketPatch(priority: .high))
        }
        // Neither side sends it onward: the region no longer handles it, and the fund is
        // not its origin (a partner may not relay the origin's writes to a third).
        let onward = TransferRequest(ticket: TicketRef(t), to: "52", kind: .infoRequest, reasonCode: "ask", reasonText: "Вопрос", scope: [.ref])
        await #expect(throws: StoreError.transferRefused(.invalid(field: "ticket", rule: "the ticket is handled by organisation sfr; only it transfers it"))) {
            _ = try await region.send(onward)
        }
        await #expect(throws: StoreError.transferRefused(.invalid(field: "ticket",
                                                                  rule: "the ticket came from organisation 38 by transfer; only 38 transfers it further"))) {
            _ = try await fund.send(onward)
        }

        // The fund works on it; the sender follows, and so does the office through its centre.
        p.clock.advance(60_000)
        _ = try await fund.patch(TicketRef(t), TicketPatch(status: .inWork))
        _ = try await fund.perform(.addNote(TicketRef(t), text: "Ответ: перерасчёт выполнен", visibility: .shared), actor: ivanova)
        _ = try await fund.perform(.addNote(TicketRef(t), text: "Внутреннее: проверить стаж", visibility: .internal), actor: ivanova)
        #expect(try await p.pull(region, from: fund).rejections.isEmpty)
        let officePull = try await p.pull(officeStore, from: region)
        #expect(officePull.rejections.isEmpty, "\(officePull.rejections)")
        for s in [region, officeStore] {
            let v = try #require(try s.ticket(TicketRef(t)))
            #expect(v.status == .transferredOut && v.handlerStatus == .inWork)
            #expect(try s.notes(of: TicketRef(t))?.map(\.text).contains("Ответ: перерасчёт выполнен") == true)
            #expect(try s.notes(of: TicketRef(t))?.map(\.text).contains("Внутреннее: проверить стаж") == false)
        }
        // The region may still add a note (it is the fund's partner), which reaches the fund.
        _ = try await region.perform(.addNote(TicketRef(t), text: "Заявитель звонил повторно", visibility: .shared), actor: ivanova)
        _ = try await p.pull(fund, from: region)
        #expect(try fund.notes(of: TicketRef(t))?.map(\.text).contains("Заявитель звонил повторно") == true)
    }

    @Test("a rejection gives the ticket back to the sender's IN_WORK, stops the updates, and the fund purges what it received; the transfer stays")
    func rejectionPurgesAtTheReceiver() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, fund) = (p.stores[0], p.stores[2])
        let t = try await citizenTicket(region)
        let sent = try await region.send(transfer(t))
        _ = try await p.pull(fund, from: region)
        #expect(try fund.ticket(TicketRef(t)) != nil)
        p.clock.advance(30_000)
        _ = try await fund.step(sent.id, .rejected, reason: ("not-competent", "Вопрос не относится к фонду"))
        #expect(try fund.ticket(TicketRef(t)) == nil && fund.record(kind: TicketRecord.kind, id: t.id) == nil)
        #expect(try fund.notes(of: TicketRef(t)) == nil)
        let purge = try #require(try fund.purge(ofTicket: t.id))
        #expect(purge.transfer == sent.id && purge.state == .rejected && purge.at == t0 + 30_000)
        #expect(try fund.transfer(sent.id)?.state == .rejected)
        #expect(!(try everything(fund)).contains("Иванова"))

        _ = try await p.pull(region, from: fund)
        let back = try #require(try region.ticket(TicketRef(t)))
        #expect(back.status == .inWork && back.ownerNode == irk)
        #expect(try region.transfer(sent.id)?.steps.deciding?.reasonText == "Вопрос не относится к фонду")
        #expect(try region.history(of: TicketRef(t))?.contains { $0.field == "status" && $0.new == "IN_WORK" && $0.actor.user == "system" } == true)

        // Later edits at the region do not reach the fund.
        _ = try await region.patch(TicketRef(t), TicketPatch(priority: .high))
        #expect(try await p.pull(fund, from: region).changedRecords == 0)
        #expect(try fund.record(kind: TicketRecord.kind, id: t.id) == nil)
        // A new transfer brings it again.
        let again = try await region.send(transfer(t, .infoRequest, scope: [.ref]))
        _ = try await p.pull(fund, from: region)
        let rec = try fund.record(kind: TicketRecord.kind, id: t.id)
        #expect(try fund.ticket(TicketRef(t))?.citizen == Citizen(ref: "CIT-7F3K2"), "\(String(describing: rec))")
        #expect(try fund.transfer(again.id)?.state == .delivered)
    }

    @Test("a region that took another region's ticket over writes none of the citizen details outside its scope, so its own office takes all it writes")
    func aSuccessorWritesNoRegisterItDoesNotHold() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, officeStore, novgorod) = (p.stores[0], p.stores[1], p.stores[3])
        let t = try await citizenTicket(novgorod)
        let sent = try await novgorod.send(transfer(t, to: "38", scope: [.snils]))
        _ = try await p.pull(region, from: novgorod)
        p.clock.advance(60_000)
        _ = try await region.step(sent.id, .accepted)
        _ = try await region.patch(TicketRef(t), TicketPatch(priority: .high))
        let held = try #require(try region.record(kind: TicketRecord.kind, id: t.id))
        for r in [TicketRecord.Register.citizenName, .citizenPhone] {
            #expect(held.state.registers[r.rawValue].isEmpty, "\(r) written by the successor")
        }
        // The office judges what its centre relays (the home's writes from before the
        // redirect among them): nothing refused, the two replicas of the ticket equal.
        let pulled = try await p.pull(officeStore, from: region)
        #expect(pulled.rejections.isEmpty, "\(pulled.rejections)")
        #expect(try officeStore.record(kind: TicketRecord.kind, id: t.id) == region.record(kind: TicketRecord.kind, id: t.id))
        // Once the centre has the office's own delivery step too, their digests agree.
        #expect(try await p.pull(region, from: officeStore).rejections.isEmpty)
        #expect(try officeStore.digestSummary(scope: "38").root == region.digestSummary(scope: "38").root)
        #expect(try await p.pull(novgorod, from: region).rejections.isEmpty)
    }

    @Test("when one of two live transfers ends, the fund keeps only the citizen details the other's scope names")
    func scopeNarrowsWhenATransferEnds() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, fund) = (p.stores[0], p.stores[2])
        let t = try await citizenTicket(region)
        let wide = try await region.send(transfer(t, .infoRequest, scope: [.ref, .name, .snils]))
        _ = try await region.send(transfer(t, .copy, scope: [.ref, .phone]))
        _ = try await p.pull(fund, from: region)
        let before = try #require(try fund.ticket(TicketRef(t)))
        #expect(before.citizen?.name != nil && before.citizen?.snils != nil && before.citizen?.phone != nil)
        p.clock.advance(10_000)
        _ = try await region.step(wide.id, .cancelled, reason: ("no-longer-needed", "Сведения больше не нужны"))
        _ = try await p.pull(fund, from: region)
        let after = try #require(try fund.ticket(TicketRef(t)), "the copy keeps the ticket at the fund")
        #expect(after.citizen?.ref == "CIT-7F3K2" && after.citizen?.phone != nil)
        #expect(after.citizen?.name == nil && after.citizen?.snils == nil)
        let stored = try #require(try fund.record(kind: TicketRecord.kind, id: t.id))
        #expect(stored.state.registers[TicketRecord.Register.citizenName.rawValue].isEmpty)
        #expect(stored.state.registers[TicketRecord.Register.citizenSnils.rawValue].isEmpty)
        #expect(!(try everything(fund)).contains("Иванова"))
        // Once both have pulled, the two sides agree on what the fund may hold.
        try await p.sync()
        #expect(try fund.ticket(TicketRef(t))?.citizen?.name == nil)
        #expect(try region.digestSummary(scope: "sfr").root == fund.digestSummary(scope: "38").root)
    }

    @Test("a fund's note the region has not pulled yet outlives the end of the transfer: the purge waits until the region says it holds it")
    func aPurgeWaitsForTheHomeToHoldThePartnersNotes() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, fund) = (p.stores[0], p.stores[2])
        let t = try await citizenTicket(region)
        let sent = try await region.send(transfer(t, .infoRequest, scope: [.ref, .name]))
        _ = try await p.pull(fund, from: region)
        _ = try await fund.perform(.addNote(TicketRef(t), text: "Ответ фонда: стаж подтверждён", visibility: .shared), actor: ivanova)
        // The region cancels before it pulled the answer; the fund learns of it.
        p.clock.advance(10_000)
        _ = try await region.step(sent.id, .cancelled, reason: ("no-longer-needed", "Уже не нужно"))
        _ = try await p.pull(fund, from: region)
        #expect(try fund.purge(ofTicket: t.id) == nil, "purged before the region had the answer")
        #expect(try fund.heldPurgeCount() == 1)
        // Kept only for the region's sake: the fund writes nothing more to it.
        await #expect(throws: StoreError.rejected(.notOwner(organisation: "38"))) {
            _ = try await fund.perform(.addNote(TicketRef(t), text: "Ещё одна заметка", visibility: .shared), actor: ivanova)
        }
        // The fund's feed still carries the note to the region.
        _ = try await p.pull(region, from: fund)
        #expect(try region.notes(of: TicketRef(t))?.map(\.text).contains("Ответ фонда: стаж подтверждён") == true)
        // A region node's next pull request says how far it holds the fund's feed: the purge goes ahead.
        let holds = try #require(try region.checkpoint(for: fundNode)).sequence
        #expect(!fund.acknowledged(by: irk, through: holds - 1) || holds - 1 >= fund.lastSequence)
        #expect(!fund.heldPurgeReleasable)
        #expect(fund.acknowledged(by: irk, through: holds))
        // Until the release has run (or after it failed), the feed's heartbeat sees it due.
        #expect(fund.heldPurgeReleasable)
        try await fund.releaseHeldPurges()
        #expect(!fund.heldPurgeReleasable)
        #expect(try fund.purge(ofTicket: t.id)?.transfer == sent.id)
        #expect(try fund.ticket(TicketRef(t)) == nil && fund.heldPurgeCount() == 0)
        #expect(!(try everything(fund)).contains("Иванова"))
    }

    /// irk-main, irk-office-1 and nn-main: the centre links to region 52 (the home) and its
    /// office; the office only to the centre.
    func regionWithOffice() throws -> StorePeers {
        try StorePeers([irk, office, novgorodNode], linked: [irk: ["38", "52"], office: ["38"], novgorodNode: ["38"]])
    }

    /// Region 52 asks region 38 for information on a citizen's ticket; the centre and its office hold it.
    func requestFromRegion52(_ p: StorePeers) async throws -> (Ticket, Transfer) {
        let (centre, branch, home) = (p.stores[0], p.stores[1], p.stores[2])
        let t = try await citizenTicket(home)
        let sent = try await home.send(transfer(t, .infoRequest, to: "38", scope: [.ref, .name]))
        _ = try await p.pull(centre, from: home)
        _ = try await p.pull(branch, from: centre)
        return (t, sent)
    }

    @Test("an office's note that reaches its centre after the centre purged the ticket is kept there until the home holds it")
    func aLateNoteOfTheOfficeOutlivesTheCentresPurge() async throws {
        let p = try regionWithOffice()
        defer { p.close() }
        let (centre, branch, home) = (p.stores[0], p.stores[1], p.stores[2])
        let (t, sent) = try await requestFromRegion52(p)
        _ = try await branch.perform(.addNote(TicketRef(t), text: "Ответ отделения: справка выдана", visibility: .shared), actor: ivanova)
        let officeFeed = try branch.feedPage(after: 0, limit: 10_000, maxBytes: 1 << 22, partner: nil).entries
        // Region 52 cancels; the centre, holding nothing it wrote, purges before the office's note reaches it.
        p.clock.advance(10_000)
        _ = try await home.step(sent.id, .cancelled, reason: ("no-longer-needed", "Уже не нужно"))
        _ = try await p.pull(centre, from: home)
        let firstPurge = try #require(try centre.purge(ofTicket: t.id))
        #expect(firstPurge.ownWrites.isEmpty)
        // The note arrives: the centre takes the ticket back and holds it for the home.
        // (Only the note and the header come back: no view for operators, and no personal data.)
        _ = try await p.pull(centre, from: branch)
        #expect(try centre.purge(ofTicket: t.id) == nil && centre.heldPurgeCount() == 1)
        let kept = try #require(try centre.record(kind: TicketRecord.kind, id: t.id))
        #expect(kept.children.values.filter { $0.collection == TicketRecord.Collection.notes.rawValue }.count == 1)
        #expect(try !everything(centre).contains("Иванова"))
        // The office learns of the end and holds its note; the centre holds it, so the office may purge.
        _ = try await p.pull(branch, from: centre)
        #expect(try branch.heldPurgeCount() == 1)
        _ = try await p.pull(centre, from: branch)
        #expect(branch.acknowledged(by: irk, through: try #require(try centre.checkpoint(for: office)).sequence))
        try await branch.releaseHeldPurges()
        #expect(try branch.purge(ofTicket: t.id) != nil && branch.heldPurgeCount() == 0)
        // The office's acknowledgement does not release the centre's hold: the office purged the
        // ticket, and the centre has a link to the home.
        #expect(!centre.acknowledged(by: office, through: centre.lastSequence))
        #expect(!centre.heldPurgeReleasable)
        // The home pulls the note, says so, and the centre purges at last.
        _ = try await p.pull(home, from: centre)
        #expect(try home.notes(of: TicketRef(t))?.map(\.text).contains("Ответ отделения: справка выдана") == true)
        #expect(centre.acknowledged(by: novgorodNode, through: try #require(try home.checkpoint(for: irk)).sequence))
        try await centre.releaseHeldPurges()
        let purge = try #require(try centre.purge(ofTicket: t.id))
        #expect(!purge.ownWrites.isEmpty)
        #expect(try centre.heldPurgeCount() == 0)
        #expect(try !everything(centre).contains("Иванова"))
        #expect(try !everything(branch).contains("Иванова"))
        // What the purge knew, sent again (a lagging node of the region), is not taken back:
        // no ticket goes back and forth between a region's nodes.
        _ = try await centre.merge(p.batch(officeFeed, from: branch, through: try p.resumePoint(centre, from: branch)))
        #expect(try centre.purge(ofTicket: t.id) != nil)
        #expect(try centre.heldPurgeCount() == 0 && centre.record(kind: TicketRecord.kind, id: t.id) == nil)
    }

    @Test("a hold waits for the home to hold a write of the centre's office that reached the held ticket after the hold began")
    func aHoldWaitsForTheOfficesLaterNote() async throws {
        let p = try regionWithOffice()
        defer { p.close() }
        let (centre, branch, home) = (p.stores[0], p.stores[1], p.stores[2])
        let (t, sent) = try await requestFromRegion52(p)
        _ = try await centre.perform(.addNote(TicketRef(t), text: "Ответ центра", visibility: .shared), actor: ivanova)
        _ = try await branch.perform(.addNote(TicketRef(t), text: "Ответ отделения", visibility: .shared), actor: ivanova)
        p.clock.advance(10_000)
        _ = try await home.step(sent.id, .cancelled, reason: ("no-longer-needed", "Уже не нужно"))
        _ = try await p.pull(centre, from: home)
        #expect(try centre.heldPurgeCount() == 1)
        // The home pulls the centre's note before the office's arrives there.
        _ = try await p.pull(home, from: centre)
        let early = try #require(try home.checkpoint(for: irk)).sequence
        _ = try await p.pull(centre, from: branch)
        // The home's acknowledgement of the earlier point no longer releases the hold.
        #expect(!centre.acknowledged(by: novgorodNode, through: early))
        try await centre.releaseHeldPurges()
        #expect(try centre.heldPurgeCount() == 1 && centre.purge(ofTicket: t.id) == nil)
        _ = try await p.pull(home, from: centre)
        #expect(try Set(home.notes(of: TicketRef(t))?.map(\.text) ?? []) == ["Ответ центра", "Ответ отделения"])
        #expect(centre.acknowledged(by: novgorodNode, through: try #require(try home.checkpoint(for: irk)).sequence))
        try await centre.releaseHeldPurges()
        #expect(try centre.purge(ofTicket: t.id) != nil && centre.heldPurgeCount() == 0)
    }

    @Test("a new transfer to a ticket whose purge is held narrows it to the new scope at once and drops the hold: no purge is pending")
    func aHeldPurgeNarrowsToANewTransfer() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, fund) = (p.stores[0], p.stores[2])
        let t = try await citizenTicket(region)
        let first = try await region.send(transfer(t, .infoRequest, scope: [.ref, .name, .phone]))
        _ = try await p.pull(fund, from: region)
        _ = try await fund.perform(.addNote(TicketRef(t), text: "Ответ фонда", visibility: .shared), actor: ivanova)
        p.clock.advance(10_000)
        _ = try await region.step(first.id, .cancelled, reason: ("no-longer-needed", "Уже не нужно"))
        _ = try await p.pull(fund, from: region)
        #expect(try fund.heldPurgeCount() == 1 && fund.ticket(TicketRef(t))?.citizen?.phone != nil)
        _ = try await region.send(transfer(t, .copy, scope: [.ref]))
        _ = try await p.pull(fund, from: region)
        #expect(try fund.ticket(TicketRef(t))?.citizen == Citizen(ref: "CIT-7F3K2"))
        #expect(try fund.heldPurgeCount() == 0, "the new transfer entitles the fund to the ticket: the hold is gone")
        // The fund's operators write to it again (a held ticket takes none of their writes).
        _ = try await fund.perform(.addNote(TicketRef(t), text: "Копия получена", visibility: .shared), actor: ivanova)
        _ = try await p.pull(region, from: fund)
        #expect(!fund.acknowledged(by: irk, through: try #require(try region.checkpoint(for: fundNode)).sequence))
        try await fund.releaseHeldPurges()
        #expect(try fund.heldPurgeCount() == 0 && fund.purge(ofTicket: t.id) == nil)
        #expect(try fund.ticket(TicketRef(t))?.citizen == Citizen(ref: "CIT-7F3K2"))
        #expect(!(try everything(fund)).contains("Иванова"))
    }

    @Test("a citizen detail that a node behind on a transfer's end still sends is not kept past the live scopes")
    func aLaggingNodeCannotWidenTheScope() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, officeStore, fund) = (p.stores[0], p.stores[1], p.stores[2])
        let t = try await citizenTicket(region)
        let wide = try await region.send(transfer(t, .infoRequest, scope: [.ref, .name]))
        _ = try await region.send(transfer(t, .copy, scope: [.ref, .phone]))
        _ = try await p.pull(officeStore, from: region)
        p.clock.advance(10_000)
        _ = try await region.step(wide.id, .cancelled, reason: ("no-longer-needed", "Сведения больше не нужны"))
        _ = try await p.pull(fund, from: region)
        #expect(try fund.ticket(TicketRef(t))?.citizen?.name == nil)
        // The office has not seen the cancellation: it sends the fund the name still.
        _ = try await p.pull(fund, from: officeStore)
        #expect(try fund.ticket(TicketRef(t))?.citizen?.name == nil)
        #expect(try fund.ticket(TicketRef(t))?.citizen?.phone != nil)
        #expect(!(try everything(fund)).contains("Иванова"))
    }

    @Test("a ticket that reaches the fund after the cancellation of its transfer (by another path) is purged on arrival")
    func cancellationOvertakesTheTicket() async throws {
        let p = try StorePeers([irk, office, fundNode])
        defer { p.close() }
        let (centre, branch, fund) = (p.stores[0], p.stores[1], p.stores[2])
        let t = try await citizenTicket(branch)
        let sent = try await branch.send(transfer(t, .infoRequest, scope: [.ref, .name]))
        _ = try await p.pull(centre, from: branch)
        p.clock.advance(5_000)
        _ = try await branch.step(sent.id, .cancelled, reason: ("no-longer-needed", "Уже не нужно"))
        _ = try await p.pull(fund, from: branch)
        #expect(try fund.transfer(sent.id)?.state == .cancelled && fund.ticket(TicketRef(t)) == nil)
        // The centre has not seen the cancellation: it still sends the ticket.
        _ = try await p.pull(fund, from: centre)
        #expect(try fund.ticket(TicketRef(t)) == nil && fund.record(kind: TicketRecord.kind, id: t.id) == nil)
        #expect(try fund.purge(ofTicket: t.id)?.transfer == sent.id)
        #expect(!(try everything(fund)).contains("Иванова"))
        try await p.sync()
        #expect(try fund.ticket(TicketRef(t)) == nil)
    }

    @Test("a transfer sent from a remote office reaches the fund through the region's centre, ticket and all")
    func officeTransferThroughTheCentre() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, officeStore, fund) = (p.stores[0], p.stores[1], p.stores[2])
        let t = try await citizenTicket(officeStore)
        let sent = try await officeStore.send(transfer(t, .infoRequest, scope: [.ref, .phone]))
        _ = try await p.pull(region, from: officeStore)
        #expect(try await p.pull(fund, from: region).rejections.isEmpty)
        #expect(try fund.ticket(TicketRef(t))?.citizen == Citizen(ref: "CIT-7F3K2", phone: "+79001234567"))
        #expect(try fund.transfer(sent.id)?.state == .delivered)
        _ = try await p.pull(region, from: fund)
        _ = try await p.pull(officeStore, from: region)
        #expect(try officeStore.transfer(sent.id)?.state == .delivered)
        // An INFO_REQUEST keeps ownership: the office still handles the ticket.
        #expect(try officeStore.ticket(TicketRef(t))?.status == .registered)
        _ = try await officeStore.patch(TicketRef(t), TicketPatch(status: .inWork))
    }

    @Test("a fund node that purged on a cancellation gets the ticket again when its organisation's acceptance wins")
    func purgedThenLiveAgain() async throws {
        let p = try StorePeers([irk, fundNode, fundBackupNode])
        defer { p.close() }
        let (region, fund, reserve) = (p.stores[0], p.stores[1], p.stores[2])
        let t = try await citizenTicket(region)
        let sent = try await region.send(transfer(t))
        _ = try await p.pull(fund, from: region)
        _ = try await p.pull(reserve, from: region)
        _ = try await p.pull(region, from: fund)
        p.clock.advance(10_000)
        // The region cancels while the fund's main node accepts; the reserve node sees the
        // cancellation first and purges.
        _ = try await region.step(sent.id, .cancelled)
        _ = try await fund.step(sent.id, .accepted)
        _ = try await p.pull(reserve, from: region)
        #expect(try reserve.transfer(sent.id)?.state == .cancelled && reserve.ticket(TicketRef(t)) == nil)
        #expect(try reserve.purge(ofTicket: t.id) != nil)
        // The acceptance reaches the region and the reserve; the region sends the ticket again.
        _ = try await p.pull(region, from: fund)
        _ = try await p.pull(reserve, from: fund)
        #expect(try reserve.transfer(sent.id)?.state == .accepted)
        let again = try await p.pull(reserve, from: region)
        #expect(again.rejections.isEmpty, "\(again.rejections)")
        let back = try #require(try reserve.ticket(TicketRef(t)))
        #expect(back.citizen == Citizen(ref: "CIT-7F3K2", name: "Иванова Мария Петровна") && back.ownerNode == fundNode)
        try await p.sync()
        #expect(view(try reserve.ticket(TicketRef(t))) == view(try fund.ticket(TicketRef(t))))
    }

    @Test("a transfer a partner fabricates about a region's ticket, from itself, gains it nothing: no data, no notes, no delivery")
    func fabricatedTransferGainsNothing() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, fund) = (p.stores[0], p.stores[2])
        let t = try await citizenTicket(region)
        // A dishonest fund node writes a REDIRECT of region 38's ticket from the fund to
        // region 38, with SNILS and phone in scope: a valid transfer record of the fund's.
        let order = TransferOrder(ticket: t.id, fromOrganisation: "sfr", fromNode: fundNode, toOrganisation: "38", kind: .redirect,
                                  reasonCode: "fake", reasonText: "Дайте нам данные", scope: [.ref, .snils, .phone],
                                  createdAt: t0, dueAt: t0 + 86_400_000)
        guard case .record(let fake) = try await fund.perform(.write(RecordWrite(kind: TransferRecord.kind,
                                                                                  values: [0: TransferValues.encode(order)])),
                                                              actor: ivanova) else { Issue.record("no record"); return }
        let r0 = try await p.pull(region, from: fund)
        #expect(r0.rejections.isEmpty, "\(r0)")   // the record itself is well-formed
        let kept = try region.transfer(fake)
        #expect(kept?.state == .sent, "kept, not acknowledged: the ticket's origin did not send it: \(String(describing: kept))")
        // Later work on the ticket at the region does not flow to the fund either.
        _ = try await region.patch(TicketRef(t), TicketPatch(status: .inWork, priority: .high))
        _ = try await region.perform(.addNote(TicketRef(t), text: "Для фонда?", visibility: .shared), actor: ivanova)
        #expect(try await p.pull(fund, from: region).changedRecords == 0)
        #expect(try fund.record(kind: TicketRecord.kind, id: t.id) == nil)
        // Nor may the fund add to the ticket as if it were a partner.
        let note = TicketRecord.child(Note(id: RecordID(high: 77, low: 1), ticketID: t.id, author: ivanova, node: fundNode, at: t0,
                                           stamp: Stamp(millis: t0 + 1, logical: 0), visibility: .shared, text: "чужая"))
        var header = TicketRecord.schema.emptyState(t.id)
        header.registers[TicketRecord.Register.header.rawValue] = try #require(try region.record(kind: TicketRecord.kind, id: t.id))
            .state.registers[TicketRecord.Register.header.rawValue]
        let r = try await region.merge(RemoteBatch(peer: fundNode, sourceStoreID: fund.storeIDBytes, throughSequence: 99,
                                                   records: [RemoteRecord(sequence: 99, delta: RecordDelta(state: header, children: [note]))]))
        #expect(r.rejections.map(\.refusal.reason) == [.notAuthorised])
        #expect(try region.notes(of: TicketRef(t))?.map(\.text) == ["Для фонда?"])
    }

    @Test("a cancellation and an acceptance in a partition settle on the acceptance at every node, with one owner")
    func partitionCancelVersusAccept() async throws {
        let p = try federation()
        defer { p.close() }
        let (region, officeStore, fund) = (p.stores[0], p.stores[1], p.stores[2])
        let t = try await citizenTicket(region)
        let sent = try await region.send(transfer(t))
        _ = try await p.pull(fund, from: region)
        _ = try await p.pull(region, from: fund)
        p.clock.advance(10_000)
        _ = try await region.step(sent.id, .cancelled)
        #expect(try region.ticket(TicketRef(t))?.status == .registered)
        _ = try await fund.step(sent.id, .accepted)
        for _ in 0..<2 {
            #expect(try await p.pull(region, from: fund).rejections.isEmpty)
            #expect(try await p.pull(fund, from: region).rejections.isEmpty)
            #expect(try await p.pull(officeStore, from: region).rejections.isEmpty)
        }
        for s in [region, officeStore, fund] {
            let tr = try #require(try s.transfer(sent.id))
            #expect(tr.state == .accepted && tr.steps.conflicts.map(\.state) == [.cancelled])
            #expect(try s.record(kind: TicketRecord.kind, id: t.id) != nil)
        }
        #expect(try region.ticket(TicketRef(t))?.ownerNode == fundNode && fund.ticket(TicketRef(t))?.ownerNode == fundNode)
        #expect(try region.ticket(TicketRef(t))?.status == .transferredOut)
    }
}
