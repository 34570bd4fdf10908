import CaseModel
import CaseStore
import NIOCore
import NIOHTTP1

/// Transfers: sending a ticket to another organisation, the steps of each side, the
/// inbox and outbox, and one transfer with its steps. A refused step is a 4xx naming
/// the rule (`APIError(TransferError)`), and writes nothing.
extension OperatorAPI {
    /// The steps an operator takes by path, and the state each leads to.
    static let transferSteps: [(path: String, state: TransferState)] = [
        ("accept", .accepted), ("reject", .rejected), ("return", .returned), ("complete", .completed), ("cancel", .cancelled),
    ]

    func transferID(_ s: String) throws(APIError) -> RecordID {
        guard let id = RecordID(s) else { throw APIError.notFound("no transfer \(s)") }
        return id
    }

    func sendTransfer(_ ref: TicketRef, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        var r = try ObjectReader(try jsonBody(req))
        let to = try r.requiredString("to")
        guard let kind = try r.enumeration("kind", TransferKind.self) else {
            throw APIError.unprocessable("missing_field", "kind is required", field: "kind")
        }
        let (code, text) = try OperatorAPI.reason(&r, required: true)
        let scope = try r.enumerationSet("scope", CitizenField.self) ?? []
        var due: Millis? = nil
        if let s = try r.string("due") {
            guard let t = TimeParsing.parse(s) else {
                throw APIError.unprocessable("invalid_value", "due must be an RFC 3339 time", field: "due")
            }
            due = t
        }
        try r.rejectUnknown()
        let request = TransferRequest(ticket: ref, to: to, kind: kind, reasonCode: code!, reasonText: text!, scope: scope, due: due)
        let now = store.configuration.wallClock()
        return submit(.sendTransfer(request), try actor(req), loop) { outcome in
            guard case .transfer(let t) = outcome else { return .error(APIError(.corrupt("no transfer"))) }
            var w = JSONWriter()
            w.transfer(t, now: now)
            return .json(.created, w, headers: ["location": "/v1/transfers/\(t.id)"])
        }
    }

    func transferStep(_ id: RecordID, _ state: TransferState, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        var code: String?, text: String?, answer: String?
        if let body = req.body, body.readableBytes > 0 {
            var r = try ObjectReader(try jsonBody(req))
            (code, text) = try OperatorAPI.reason(&r, required: false)
            answer = try r.string("answer")
            try r.rejectUnknown()
        }
        let now = store.configuration.wallClock()
        let request = TransferStepRequest(transfer: id, state: state, reasonCode: code, reasonText: text, answer: answer)
        return submit(.transferStep(request), try actor(req), loop) { outcome in
            guard case .transfer(let t) = outcome else { return .error(APIError(.corrupt("no transfer"))) }
            var w = JSONWriter()
            w.transfer(t, now: now)
            return .json(.ok, w)
        }
    }

    /// `reason: {"code", "text"}`.
    static func reason(_ r: inout ObjectReader, required: Bool) throws(APIError) -> (String?, String?) {
        guard var o = try r.object("reason") else {
            if required { throw APIError.unprocessable("missing_field", "reason {code, text} is required", field: "reason") }
            return (nil, nil)
        }
        let code = try o.requiredString("code"), text = try o.requiredString("text")
        try o.rejectUnknown()
        return (code, text)
    }

    /// `{"items": [...]}`: every transfer of a ticket, oldest first.
    func ticketTransfers(_ ref: TicketRef) throws -> APIResponse {
        guard try store.ticket(ref) != nil else { throw APIError.notFound("no ticket \(ref)") }
        let now = store.configuration.wallClock()
        var w = JSONWriter()
        w.beginObject(); w.key("items"); w.beginArray()
        for t in try store.transfers(ofTicket: ref) { w.transfer(t, now: now) }
        w.endArray(); w.endObject()
        return .json(.ok, w)
    }

    func showTransfer(_ id: RecordID) throws -> APIResponse {
        guard let t = try store.transfer(id) else { throw APIError.notFound("no transfer \(id)") }
        var w = JSONWriter()
        let purge = try store.purge(ofTicket: t.order.ticket).flatMap { $0.transfer == id ? $0 : nil }
        w.transfer(t, now: store.configuration.wallClock(), purge: purge)
        return .json(.ok, w)
    }

    func listTransfers(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["direction", "state", "overdue", "cursor", "limit"])
        let direction: CaseStore.TransferDirection
        switch q["direction"] ?? "in" {
        case "in": direction = .incoming
        case "out": direction = .outgoing
        default: throw APIError.badRequest("invalid_parameter", "direction must be in or out", field: "direction")
        }
        var state: TransferState? = nil
        if let s = q["state"] {
            guard let st = TransferState(rawValue: s) else {
                throw APIError.badRequest("invalid_parameter",
                                          "state must be one of: \(TransferState.allCases.map(\.rawValue).joined(separator: ", "))", field: "state")
            }
            state = st
        }
        var overdue: Bool? = nil
        if let o = q["overdue"] {
            guard o == "true" || o == "false" else { throw APIError.badRequest("invalid_parameter", "overdue must be true or false", field: "overdue") }
            overdue = o == "true"
        }
        var cursor: RecordID? = nil
        if let c = q["cursor"] {
            guard let id = RecordID(c) else { throw APIError.badRequest("invalid_cursor", "cursor is not a `next` value of this listing", field: "cursor") }
            cursor = id
        }
        let limit = try intParam(q, "limit", range: 1...500) ?? 50
        let now = store.configuration.wallClock()
        let items = try store.transferList(direction, state: state, overdue: overdue, now: now, after: cursor, limit: limit + 1)
        var w = JSONWriter(capacity: 1024 * max(1, items.count))
        w.beginObject()
        w.key("items")
        w.beginArray()
        for t in items.prefix(limit) { w.transfer(t, now: now) }
        w.endArray()
        w.field("next", items.count > limit ? items[limit - 1].id.description : nil)
        w.endObject()
        return .json(.ok, w)
    }
}

extension JSONWriter {
    /// A transfer; with `purge`, the purge of the personal data it brought here (the
    /// receiver's record of it, shown with the transfer that ended).
    mutating func transfer(_ t: Transfer, now: Millis, purge: Purge? = nil) {
        beginObject()
        field("id", t.id.description)
        field("ticketId", t.order.ticket.description)
        field("kind", t.order.kind.rawValue)
        field("from", t.order.fromOrganisation)
        field("fromNode", t.order.fromNode.value)
        field("to", t.order.toOrganisation)
        field("state", t.state.rawValue)
        key("reason")
        beginObject()
        field("code", t.order.reasonCode)
        field("text", t.order.reasonText)
        endObject()
        key("scope")
        beginArray()
        for f in CitizenField.allCases where t.order.scope.contains(f) { string(f.rawValue) }
        endArray()
        field("createdAt", time: t.order.createdAt)
        field("due", time: t.order.dueAt)
        field("deliveredAt", time: t.steps.deliveredAt)
        field("acceptedAt", time: t.steps.acceptedAt)
        key("overdue")
        bool(TransferLifecycle.isOverdue(state: t.state, dueAt: t.order.dueAt, now: now))
        field("answer", t.steps.deciding?.answer)
        key("steps")
        beginArray()
        for s in t.steps.steps { transferStep(s) }
        endArray()
        key("conflicts")
        beginArray()
        for s in t.steps.conflicts { transferStep(s) }
        endArray()
        if let purge {
            key("purge")
            beginObject()
            field("at", time: purge.at)
            field("state", purge.state.rawValue)
            field("what", "the ticket's citizen data, statement, notes and history received for this transfer")
            endObject()
        }
        endObject()
    }

    mutating func transferStep(_ s: TransferStep) {
        beginObject()
        field("id", s.id.description)
        field("state", s.state.rawValue)
        field("at", time: s.at)
        field("actor", s.actor.user)
        field("role", s.actor.role)
        field("node", s.node.value)
        if let c = s.reasonCode, let t = s.reasonText {
            key("reason")
            beginObject()
            field("code", c)
            field("text", t)
            endObject()
        }
        if let a = s.answer { field("answer", a) }
        endObject()
    }
}
