import Access
import CaseModel
import CaseStore
import NIOCore
import NIOHTTP1

/// Tickets, their notes and their history: reads answer on the event loop, edits
/// when their commit returns.
extension OperatorAPI {
    /// A ticket as the body of a response, with its transfers and its ETag.
    func ticketResponse(_ t: Ticket, _ status: HTTPResponseStatus = .ok, location: Bool = false,
                        unmasked: Set<CitizenField> = []) -> APIResponse {
        var w = JSONWriter(capacity: 1024 + t.statement.utf8.count)
        w.ticket(t, transfers: transfers(of: t), now: store.configuration.wallClock(), unmasked: unmasked)
        var headers: HTTPHeaders = ["etag": OperatorAPI.etag(t)]
        if location { headers.add(name: "location", value: "/v1/tickets/\(t.id)") }
        return .json(status, w, headers: headers)
    }

    static func etag(_ t: Ticket) -> String { "\"\(t.version)\"" }

    /// A ticket's transfers, shown with it wherever it is shown: an operator answering a
    /// repeat call sees where the request is. (A read that fails shows none rather than
    /// failing a response whose edit has committed.)
    func transfers(of t: Ticket) -> [Transfer] {
        (try? store.transfers(ofTicket: .id(t.id))) ?? []
    }

    // MARK: Reads

    /// The ticket, masked; with `unmask=name,snils,phone&reason=...` those fields in full,
    /// answered only once the access log holds the disclosure (Disclosures.swift).
    func show(_ ref: TicketRef, _ r: RouteRequest) throws -> Reply {
        try checkQuery(r.query, allowed: ["unmask", "reason"])
        guard let t = try store.ticket(ref) else { throw APIError.notFound("no ticket \(ref)") }
        guard r.query["unmask"] != nil || r.query["reason"] != nil else { return .now(ticketResponse(t)) }
        return try unmask(t, r)
    }

    func list(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["status", "assignee", "updatedSince", "dueBefore", "limit", "cursor"])
        var query = TicketQuery()
        if let s = q["status"] {
            guard let st = TicketStatus(rawValue: s) else {
                throw APIError.badRequest("invalid_parameter", "status must be one of: \(TicketStatus.allCases.map(\.rawValue).joined(separator: ", "))", field: "status")
            }
            query.status = st
        }
        if let a = q["assignee"] {
            guard Actor.isValidName(a) else { throw APIError.badRequest("invalid_parameter", "assignee is not a valid operator id", field: "assignee") }
            query.assignee = a
        }
        query.updatedSince = try timeParam(q, "updatedSince")
        query.dueBefore = try timeParam(q, "dueBefore")
        query.limit = try intParam(q, "limit", range: 1...TicketQuery.maxLimit) ?? 50
        query.cursor = q["cursor"]
        let page: TicketPage
        do {
            page = try store.list(query)
        } catch QueryError.invalidCursor {
            throw APIError.badRequest("invalid_cursor", "cursor is not a `next` value of this listing", field: "cursor")
        }
        var w = JSONWriter(capacity: 1024 * max(1, page.items.count))
        w.beginObject()
        w.key("items")
        w.beginArray()
        let now = store.configuration.wallClock()
        for t in page.items { w.ticket(t, transfers: transfers(of: t), now: now) }
        w.endArray()
        w.field("next", page.next)
        w.endObject()
        return .json(.ok, w)
    }

    func notes(_ ref: TicketRef) throws -> APIResponse {
        try items(of: ref, try store.notes(of: ref)) { $0.note($1) }
    }

    func history(_ ref: TicketRef) throws -> APIResponse {
        try items(of: ref, try store.history(of: ref)) { $0.event($1) }
    }

    /// `{"items": [...]}` of a ticket's notes or history; nil means no such ticket.
    private func items<T>(of ref: TicketRef, _ list: [T]?, _ render: (inout JSONWriter, T) -> Void) throws -> APIResponse {
        guard let list else { throw APIError.notFound("no ticket \(ref)") }
        var w = JSONWriter()
        w.beginObject(); w.key("items"); w.beginArray()
        for item in list { render(&w, item) }
        w.endArray(); w.endObject()
        return .json(.ok, w)
    }

    // MARK: Edits

    func create(_ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        let draft = try RequestDecoding.draft(try jsonBody(req))
        let actor = try actor(req)
        return submit(.create(draft), actor, loop) { outcome in
            self.ticketResponse(outcome.ticket!, .created, location: true)
        }
    }

    func patch(_ ref: TicketRef, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        let patch = try RequestDecoding.patch(try jsonBody(req))
        let expected = try ifMatch(req.headers)
        // Assigning to someone else, reopening and extending need a supervisor.
        let actor = try authorize(patch.actions(by: req.principal?.subject ?? ""), req)
        return submit(.patch(ref, patch, ifMatch: expected), actor, loop) { outcome in
            self.ticketResponse(outcome.ticket!)
        }
    }

    func addNote(_ ref: TicketRef, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        let (text, vis) = try RequestDecoding.note(try jsonBody(req))
        let actor = try actor(req)
        return submit(.addNote(ref, text: text, visibility: vis), actor, loop) { outcome in
            guard case .note(let n) = outcome else { return .error(APIError(.corrupt("no note"))) }
            var w = JSONWriter()
            w.note(n)
            return .json(.created, w)
        }
    }
}
