import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

extension CaseStore {
    /// A ticket registered and ready to hand over.
    func registered(_ subject: String = "Пособие") async throws -> Ticket {
        let t = try await create(draft(subject: subject), actor: ivanova)
        return try await patch(TicketRef(t), TicketPatch(status: .registered))
    }

    func send(_ q: TransferRequest, actor: Actor = ivanova) async throws(StoreError) -> Transfer {
        guard case .transfer(let t) = try await perform(.sendTransfer(q), actor: actor) else { throw .corrupt("not a transfer") }
        return t
    }

    func step(_ id: RecordID, _ state: TransferState, reason: (String, String)? = nil, answer: String? = nil,
              actor: Actor = ivanova) async throws(StoreError) -> Transfer {
        let q = TransferStepRequest(transfer: id, state: state, reasonCode: reason?.0, reasonText: reason?.1, answer: answer)
        guard case .transfer(let t) = try await perform(.transferStep(q), actor: actor) else { throw .corrupt("not a transfer") }
        return t
    }
}

/// Transfers in the store: sent by the sender's organisation, acknowledged by the
/// receiver's node when it commits them, stepped by each side within its lifecycle,
/// listed in inboxes and outboxes, and settled the same way on both sides after a
/// concurrent cancellation and acceptance. Every refusal writes nothing.
@Suite("Case store: transfers")
struct TransferStoreTests {
    let fund = fundNode   // sfr-federal, organisation "sfr"

    func redirect(_ t: Ticket, due: Millis? = nil) -> TransferRequest {
        TransferRequest(ticket: TicketRef(t), to: "sfr", kind: .redirect, reasonCode: "pension-recalc",
                        reasonText: "Перерасчёт пенсии: вопрос фонда", scope: [.ref, .name], due: due)
    }

    func expectRefused(_ store: CaseStore, _ expected: StoreError, _ body: () async throws(StoreError) -> Void,
                       sourceLocation: SourceLocation = #_sourceLocation) async {
        let before = store.lastSequence
        do {
            try await body()
            Issue.record("expected \(expected)", sourceLocation: sourceLocation)
        } catch {
            #expect(error == expected, sourceLocation: sourceLocation)
        }
        #expect(store.lastSequence == before, "a refused step wrote something", sourceLocation: sourceLocation)
    }

    @Test("a redirect is sent, acknowledged by the fund's node on arrival, accepted and completed; the sender sees every step")
    func lifecycleAcrossTwoOrganisations() async throws {
        let p = try StorePeers([irk, fund])
        defer { p.close() }
        let ticket = try await p.a.registered()
        let sent = try await p.a.send(redirect(ticket))
        #expect(sent.state == .sent && sent.order.fromOrganisation == "38" && sent.order.toOrganisation == "sfr")
        #expect(sent.order.dueAt == t0 + 7 * day && sent.order.scope == [.ref, .name])
        #expect(try p.a.transferList(.outgoing, now: t0).map(\.id) == [sent.id])
        #expect(try p.a.transferList(.incoming, now: t0).isEmpty)
        #expect(try #require(try p.a.history(of: TicketRef(ticket))).contains { $0.field == "transfer" && ($0.new ?? "").contains("REDIRECT to sfr") })

        _ = try await p.pull(p.b, from: p.a)
        let arrived = try #require(try p.b.transfer(sent.id))
        #expect(arrived.state == .delivered, "the receiving node acknowledges what it committed")
        #expect(arrived.steps.steps.map(\.node) == [fund])
        #expect(try p.b.transferList(.incoming, now: t0).map(\.id) == [sent.id])

        p.clock.advance(60_000)
        #expect(try await p.b.step(sent.id, .accepted).state == .accepted)
        _ = try await p.pull(p.a, from: p.b)
        #expect(try p.a.transfer(sent.id)?.state == .accepted)
        #expect(try p.a.transfer(sent.id)?.steps.acceptedAt == t0 + 60_000)

        p.clock.advance(60_000)
        let done = try await p.b.step(sent.id, .completed, answer: "Перерасчёт выполнен, ответ направлен заявителю")
        #expect(done.state == .completed && done.steps.deciding?.answer?.hasPrefix("Перерасчёт") == true)
        try await p.sync()
        #expect(try p.a.transfer(sent.id) == p.b.transfer(sent.id))
        try auditFeed(p.a)
        try auditFeed(p.b)
    }

    @Test("refused steps name their rule and write nothing: wrong side, wrong state, no reason, a second active redirect")
    func refusals() async throws {
        let p = try StorePeers([irk, fund])
        defer { p.close() }
        let ticket = try await p.a.registered()
        let t = try await p.a.send(redirect(ticket))
        await expectRefused(p.a, .transferRefused(.redirectActive(existing: t.id))) { () throws(StoreError) in
            _ = try await p.a.send(redirect(ticket))
        }
        // Another kind beside it is fine.
        let info = try await p.a.send(TransferRequest(ticket: TicketRef(ticket), to: "52", kind: .infoRequest, reasonCode: "work-record",
                                                      reasonText: "Прошу сообщить стаж", scope: [.ref]))
        #expect(info.order.dueAt == t0 + 15 * day)
        await expectRefused(p.a, .transferRefused(.wrongSide(step: .accepted, side: .sender))) { () throws(StoreError) in
            _ = try await p.a.step(t.id, .accepted)
        }
        await expectRefused(p.a, .rejected(.invalidField(field: "to", rule: "a transfer goes to another organisation"))) { () throws(StoreError) in
            _ = try await p.a.send(TransferRequest(ticket: TicketRef(ticket), to: "38", kind: .copy, reasonCode: "x", reasonText: "y", scope: []))
        }
        await expectRefused(p.a, .rejected(.invalidField(field: "to", rule: "mars is not an organisation of the federation"))) { () throws(StoreError) in
            _ = try await p.a.send(TransferRequest(ticket: TicketRef(ticket), to: "mars", kind: .copy, reasonCode: "x", reasonText: "y", scope: []))
        }
        await expectRefused(p.a, .rejected(.invalidField(field: "due", rule: "must be later than the transfer's creation (in the future when it is sent)"))) { () throws(StoreError) in
            _ = try await p.a.send(TransferRequest(ticket: TicketRef(ticket), to: "sfr", kind: .copy, reasonCode: "x", reasonText: "y",
                                                   scope: [], due: t0 - 1))
        }
        let long = String(repeating: "я", count: 1_001)
        await expectRefused(p.a, .rejected(.tooLong(field: "reason.text", bytes: 2_002, limit: 2_000))) { () throws(StoreError) in
            _ = try await p.a.send(TransferRequest(ticket: TicketRef(ticket), to: "sfr", kind: .copy, reasonCode: "x", reasonText: long, scope: []))
        }
        await expectRefused(p.a, .transferNotFound(RecordID(high: 1, low: 1).description)) { () throws(StoreError) in
            _ = try await p.a.step(RecordID(high: 1, low: 1), .cancelled)
        }

        _ = try await p.pull(p.b, from: p.a)
        await expectRefused(p.b, .transferRefused(.reasonRequired(step: .rejected))) { () throws(StoreError) in
            _ = try await p.b.step(t.id, .rejected)
        }
        await expectRefused(p.b, .transferRefused(.wrongState(step: .completed, current: .delivered))) { () throws(StoreError) in
            _ = try await p.b.step(t.id, .completed)
        }
        await expectRefused(p.b, .transferRefused(.wrongSide(step: .cancelled, side: .receiver))) { () throws(StoreError) in
            _ = try await p.b.step(t.id, .cancelled)
        }
        let rejected = try await p.b.step(t.id, .rejected, reason: ("out-of-scope", "Вопрос не относится к фонду"))
        #expect(rejected.state == .rejected && rejected.steps.deciding?.reasonText == "Вопрос не относится к фонду")
        _ = try await p.pull(p.a, from: p.b)
        #expect(try p.a.transfer(t.id)?.state == .rejected)
        // The redirect is over: a new one may be sent.
        #expect(try await p.a.send(redirect(ticket)).state == .sent)
    }

    @Test("a cancellation and an acceptance taken while apart: both sides show the acceptance and list the cancellation")
    func acceptanceBeatsConcurrentCancellation() async throws {
        let p = try StorePeers([irk, fund])
        defer { p.close() }
        let ticket = try await p.a.registered()
        let t = try await p.a.send(redirect(ticket))
        _ = try await p.pull(p.b, from: p.a)
        _ = try await p.pull(p.a, from: p.b)             // the sender has seen the delivery
        #expect(try p.a.transfer(t.id)?.state == .delivered)
        p.clock.advance(1_000)
        #expect(try await p.a.step(t.id, .cancelled).state == .cancelled)   // partition: neither hears the other
        p.clock.advance(1_000)
        #expect(try await p.b.step(t.id, .accepted).state == .accepted)
        try await p.sync()
        for s in [p.a, p.b] {
            let seen = try #require(try s.transfer(t.id))
            #expect(seen.state == .accepted)
            #expect(seen.steps.conflicts.map(\.state) == [.cancelled])
        }
        await expectRefused(p.a, .transferRefused(.wrongState(step: .cancelled, current: .accepted))) { () throws(StoreError) in
            _ = try await p.a.step(t.id, .cancelled)
        }
    }

    @Test("overdue: an unaccepted transfer past its due time is listed as overdue, an accepted one is not")
    func overdue() async throws {
        let p = try StorePeers([irk, fund])
        defer { p.close() }
        let ticket = try await p.a.registered()
        let late = try await p.a.send(redirect(ticket, due: t0 + hour))
        let other = try await p.a.registered("Другое")
        let ontime = try await p.a.send(redirect(other, due: t0 + 2 * hour))
        _ = try await p.pull(p.b, from: p.a)
        _ = try await p.b.step(ontime.id, .accepted)
        let later = t0 + 3 * hour
        #expect(try p.b.transferList(.incoming, overdue: true, now: later).map(\.id) == [late.id])
        #expect(try p.b.transferList(.incoming, overdue: false, now: later).map(\.id) == [ontime.id])
        #expect(try p.b.transferList(.incoming, overdue: true, now: t0).isEmpty)
        // The inbox is by due time; a cursor continues after the last one shown.
        #expect(try p.b.transferList(.incoming, now: t0).map(\.id) == [late.id, ontime.id])
        #expect(try p.b.transferList(.incoming, now: t0, after: late.id).map(\.id) == [ontime.id])
        #expect(try p.b.transferList(.incoming, state: .accepted, now: t0).map(\.id) == [ontime.id])
    }
}
