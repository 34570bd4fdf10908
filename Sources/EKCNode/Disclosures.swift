import Access
import CaseModel
import CaseStore
import NIOCore
import NIOHTTP1

/// Where citizen data leaves the node in full: one ticket unmasked with a reason, or an
/// export of several. Each disclosure is an entry of the access log (who, which ticket,
/// which fields, why, from where), committed durably before the response is written:
/// if the commit fails, nothing is disclosed.
extension OperatorAPI {
    static let maskableFields: [CitizenField] = [.name, .snils, .phone]
    static let maxExport = 500

    func unmask(_ t: Ticket, _ r: RouteRequest) throws -> Reply {
        let req = r.request
        let actor = try authorize([.personalDataUnmask], req)
        let fields = try OperatorAPI.unmaskFields(r.query["unmask"], field: "unmask")
        let reason = try OperatorAPI.disclosureReason(r.query["reason"], field: "reason")
        let disclosed = OperatorAPI.disclosed(t, fields)
        // Nothing of what was asked is held here (a fund outside the transfer's scope).
        guard !disclosed.isEmpty else { return .now(ticketResponse(t)) }
        let entry = accessEntry(req, actor, action: "ticket.unmask", ticket: t, fields: disclosed, reason: reason,
                                route: "GET /v1/tickets/{ref}")
        return .later(submit(.recordAccess([entry]), actor, r.loop) { _ in
            self.ticketResponse(t, unmasked: Set(disclosed))
        })
    }

    /// `POST /v1/exports {"tickets": [ref...], "fields": [...], "reason": "..."}`: the tickets
    /// with those fields in full, one access entry per ticket, all in one commit.
    func export(_ r: RouteRequest) throws -> EventLoopFuture<APIResponse> {
        let req = r.request
        let actor = try actor(req)
        var body = try ObjectReader(try jsonBody(req))
        guard let refs = try body.stringArray("tickets"), !refs.isEmpty else {
            throw APIError.unprocessable("missing_field", "tickets: a list of 1 to \(OperatorAPI.maxExport) ticket ids or numbers", field: "tickets")
        }
        guard refs.count <= OperatorAPI.maxExport else {
            throw APIError.unprocessable("invalid_value", "at most \(OperatorAPI.maxExport) tickets per export", field: "tickets")
        }
        let fieldNames = try body.stringArray("fields") ?? OperatorAPI.maskableFields.map(\.rawValue)
        let fields: Set<CitizenField>
        do {
            fields = try OperatorAPI.unmaskFields(fieldNames.joined(separator: ","), field: "fields")
        } catch {
            throw APIError.unprocessable("invalid_value", error.message, field: "fields")
        }
        let reason = try OperatorAPI.disclosureReason(try body.string("reason"), field: "reason")
        try body.rejectUnknown()
        var found: [(Ticket, [CitizenField])] = []
        var missing: [String] = []
        for ref in refs {
            guard let tr = TicketRef(ref), let t = try store.ticket(tr) else { missing.append(ref); continue }
            found.append((t, OperatorAPI.disclosed(t, fields)))
        }
        let (shown, notHere) = (found, missing)
        let entries = found.filter { !$0.1.isEmpty }.map { t, f in
            accessEntry(req, actor, action: "ticket.export", ticket: t, fields: f, reason: reason, route: "POST /v1/exports")
        }
        let render: @Sendable (EditOutcome?) -> APIResponse = { _ in
            var w = JSONWriter(capacity: 2048 * max(1, shown.count))
            w.beginObject()
            w.key("items"); w.beginArray()
            let now = self.store.configuration.wallClock()
            for (t, f) in shown { w.ticket(t, transfers: self.transfers(of: t), now: now, unmasked: Set(f)) }
            w.endArray()
            w.key("missing"); w.beginArray()
            for m in notHere { w.string(m) }
            w.endArray()
            w.endObject()
            return .json(.ok, w)
        }
        if entries.isEmpty { return r.loop.makeSucceededFuture(render(nil)) }
        return submit(.recordAccess(entries), actor, r.loop) { render($0) }
    }

    // MARK: The access log (auditors)

    func accessLog(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["after", "limit", "subject", "ticket", "since", "until"])
        let limit = try intParam(q, "limit", range: 1...1000) ?? 100
        var after: UInt64 = 0
        if let a = q["after"] {
            guard let v = UInt64(a) else { throw APIError.badRequest("invalid_parameter", "after must be an entry's sequence", field: "after") }
            after = v
        }
        // A ticket by id in any case, or by number (when this node holds it).
        var ticket = q["ticket"]
        if let t = ticket, let ref = TicketRef(t) {
            ticket = (try? store.ticket(ref))?.map { $0.id.description } ?? t.uppercased()
        }
        let filter = AccessLogFilter(subject: q["subject"], ticket: ticket, since: try timeParam(q, "since"),
                                     until: try timeParam(q, "until"))
        let records = try store.accessEntries(after: after, limit: limit, filter: filter)
        var w = JSONWriter(capacity: 256 * max(1, records.count))
        w.beginObject(); w.key("items"); w.beginArray()
        for rec in records {
            let e = rec.entry
            w.beginObject()
            w.field("sequence", rec.sequence)
            w.field("at", time: e.at)
            w.field("subject", e.subject)
            w.field("role", e.role)
            w.field("organisation", e.organisation)
            w.field("action", e.action)
            w.field("ticketId", e.ticket)
            w.key("fields"); w.beginArray(); for f in e.fields { w.string(f) }; w.endArray()
            w.field("reason", e.reason)
            w.field("remote", e.remote)
            w.field("route", e.route)
            w.field("hash", rec.hash)
            w.endObject()
        }
        w.endArray()
        w.field("next", records.count == limit ? records.last.map { String($0.sequence) } : nil)
        w.endObject()
        return .json(.ok, w)
    }

    func verifyAccessLog(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: [])
        var w = JSONWriter()
        w.beginObject()
        switch try store.verifyAccessLog() {
        case .intact(let count, let head, let hash):
            w.key("intact"); w.bool(true)
            w.field("entries", count)
            w.field("head", Int(head))
            w.field("headHash", hash)
        case .tampered(let p):
            w.key("intact"); w.bool(false)
            w.key("problem"); w.beginObject()
            w.field("kind", p.kind.rawValue)
            w.field("sequence", Int(p.sequence))
            w.field("message", p.message)
            w.endObject()
        }
        w.endObject()
        return .json(.ok, w)
    }

    // MARK: Parts

    private func accessEntry(_ req: APIRequest, _ actor: Actor, action: String, ticket: Ticket, fields: [CitizenField],
                             reason: String, route: String) -> AccessEntry {
        AccessEntry(at: store.configuration.wallClock(), subject: actor.user, role: actor.role,
                    organisation: req.principal?.organisation ?? "", action: action, ticket: ticket.id.description,
                    fields: fields.map(\.rawValue), reason: reason, remote: req.remote, route: route)
    }

    /// The asked fields the ticket holds a value of, in a fixed order.
    static func disclosed(_ t: Ticket, _ fields: Set<CitizenField>) -> [CitizenField] {
        guard let c = t.citizen else { return [] }
        return maskableFields.filter { f in
            guard fields.contains(f) else { return false }
            switch f {
            case .name: return c.name != nil
            case .snils: return c.snils != nil
            case .phone: return c.phone != nil
            case .ref: return false
            }
        }
    }

    static func unmaskFields(_ raw: String?, field: String) throws(APIError) -> Set<CitizenField> {
        let names = (raw ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var out: Set<CitizenField> = []
        for n in names {
            guard let f = CitizenField(rawValue: n), f != .ref else {
                throw .badRequest("invalid_parameter", "\(field) lists citizen fields to show in full: name, snils, phone", field: field)
            }
            out.insert(f)
        }
        guard !out.isEmpty else {
            throw .badRequest("invalid_parameter", "\(field) must name at least one of name, snils, phone", field: field)
        }
        return out
    }

    /// Why the data is needed, in words a person wrote: recorded with the disclosure.
    static func disclosureReason(_ raw: String?, field: String) throws(APIError) -> String {
        let r = (raw ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.count >= 5, r.utf8.count <= 500 else {
            throw .badRequest("reason_required", "state why the citizen's data is needed (\(field): 5 to 500 bytes of text)", field: field)
        }
        guard !r.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw .badRequest("invalid_parameter", "\(field) must be plain text", field: field)
        }
        return r
    }
}
