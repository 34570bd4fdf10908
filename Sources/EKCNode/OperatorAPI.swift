import CaseModel
import CaseStore
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Prometheus
import Replication

public struct APIRequest {
    public var method: HTTPMethod
    public var uri: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer?
}

public struct APIResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    static func json(_ status: HTTPResponseStatus, _ w: JSONWriter, headers extra: HTTPHeaders = [:]) -> APIResponse {
        var h: HTTPHeaders = ["content-type": "application/json"]
        h.add(contentsOf: extra)
        return APIResponse(status: status, headers: h, body: w.buffer)
    }

    static func error(_ e: APIError) -> APIResponse { .json(e.status, e.render(), headers: HTTPHeaders(e.headers)) }
}

public enum Reply {
    case now(APIResponse)
    case later(EventLoopFuture<APIResponse>)
}

/// The operator API: routes a request to the case store and renders the answer.
/// Reads run on the calling event loop (a short LMDB read transaction); edits are
/// handed to the store's commit thread and answered when their commit returns.
public final class OperatorAPI: Sendable {
    public let store: CaseStore
    public let node: NodeID
    public let region: String
    public let maxBodyBytes: Int
    let registry: PrometheusCollectorRegistry?
    let openAPIDocument: ByteBuffer
    let startedAt = Date()
    let replicator: Replicator?
    /// When this node's federation certificate expires (nil without replication).
    let certificateNotValidAfter: Date?
    private let requestCounters = NIOLockedValueBox<[Int: Metrics.Counter]>([:])
    private static let routes = ["metrics", "openapi", "health", "changes", "create", "list", "patch", "show", "note", "notes",
                                 "history", "conflicts", "resolve", "replication", "error"]

    public init(store: CaseStore, registry: PrometheusCollectorRegistry?, replicator: Replicator? = nil,
                certificateNotValidAfter: Date? = nil, maxBodyBytes: Int = 128 * 1024) {
        self.store = store
        self.replicator = replicator
        self.certificateNotValidAfter = certificateNotValidAfter
        self.node = store.configuration.node
        self.region = store.configuration.region
        self.maxBodyBytes = maxBodyBytes
        self.registry = registry
        self.openAPIDocument = ByteBuffer(bytes: OperatorAPI.loadOpenAPI())
    }

    static func loadOpenAPI() -> [UInt8] {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"),
              let data = try? Data(contentsOf: url) else { return Array("openapi: 3.1.0\n".utf8) }
        return Array(data)
    }

    func count(route: String, status: HTTPResponseStatus) {
        let key = (OperatorAPI.routes.firstIndex(of: route) ?? 99) * 1000 + Int(status.code)
        let counter = requestCounters.withLockedValue { cache -> Metrics.Counter in
            if let c = cache[key] { return c }
            let c = Metrics.Counter(label: "ekc_http_requests_total", dimensions: [("route", route), ("code", String(status.code))])
            cache[key] = c
            return c
        }
        counter.increment()
    }

    public func handle(_ req: APIRequest, on loop: EventLoop) -> Reply {
        let (path, query) = OperatorAPI.split(req.uri)
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let route: String
        let reply: Reply
        do {
            (route, reply) = try dispatch(req, parts, query, loop)
        } catch let e as APIError {
            count(route: "error", status: e.status)
            return .now(.error(e))
        } catch {
            let e = APIError(status: .internalServerError, code: "internal", message: "\(error)", field: nil)
            return .now(.error(e))
        }
        switch reply {
        case .now(let r):
            count(route: route, status: r.status)
        case .later(let f):
            f.whenSuccess { [self] r in count(route: route, status: r.status) }
        }
        return reply
    }

    private func dispatch(_ req: APIRequest, _ parts: [String], _ query: [String: String], _ loop: EventLoop) throws
        -> (String, Reply)
    {
        func only(_ allowed: HTTPMethod...) throws {
            guard allowed.contains(req.method) else {
                var e = APIError(status: .methodNotAllowed, code: "method_not_allowed",
                                 message: "\(req.method.rawValue) is not allowed here; use \(allowed.map(\.rawValue).joined(separator: ", "))",
                                 field: nil)
                e.extra = [("allow", allowed.map(\.rawValue).joined(separator: ", "))]
                e.headers = [("allow", allowed.map(\.rawValue).joined(separator: ", "))]
                throw e
            }
        }
        switch (parts.first, parts.count) {
        case ("metrics", 1):
            try only(.GET)
            return ("metrics", .now(metrics()))
        case ("openapi.yaml", 1):
            try only(.GET)
            return ("openapi", .now(APIResponse(status: .ok, headers: ["content-type": "application/yaml"], body: openAPIDocument)))
        case ("v1", _):
            break
        default:
            throw APIError.notFound("no such path: \(req.uri)")
        }
        let rest = Array(parts.dropFirst())
        switch (rest.first, rest.count) {
        case ("health", 1):
            try only(.GET)
            return ("health", .now(try health()))
        case ("changes", 1):
            try only(.GET)
            return ("changes", .now(try changes(query)))
        case ("replication", 1):
            try only(.GET)
            return ("replication", .now(try replication()))
        case ("conflicts", 1):
            try only(.GET)
            return ("conflicts", .now(try conflicts(query)))
        case ("conflicts", 3) where rest[2] == "resolve":
            try only(.POST)
            return ("resolve", .later(try resolve(rest[1], req, loop)))
        case ("tickets", 1):
            try only(.GET, .POST)
            if req.method == .POST { return ("create", .later(try create(req, loop))) }
            return ("list", .now(try list(query)))
        case ("tickets", 2):
            try only(.GET, .PATCH)
            let ref = try ticketRef(rest[1])
            if req.method == .PATCH { return ("patch", .later(try patch(ref, req, loop))) }
            return ("show", .now(try show(ref)))
        case ("tickets", 3) where rest[2] == "notes":
            try only(.GET, .POST)
            let ref = try ticketRef(rest[1])
            if req.method == .POST { return ("note", .later(try addNote(ref, req, loop))) }
            return ("notes", .now(try notes(ref)))
        case ("tickets", 3) where rest[2] == "history":
            try only(.GET)
            return ("history", .now(try history(try ticketRef(rest[1]))))
        default:
            throw APIError.notFound("no such path: \(req.uri)")
        }
    }

    // MARK: Parsing helpers

    static func split(_ uri: String) -> (String, [String: String]) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var out: [String: String] = [:]
        for pair in uri[uri.index(after: q)...].split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = OperatorAPI.decodeComponent(kv[0])
            let v = kv.count > 1 ? OperatorAPI.decodeComponent(kv[1]) : ""
            out[k] = out[k] == nil ? v : "\u{0}duplicate"
        }
        return (String(uri[..<q]), out)
    }

    /// Form-style decoding of a query component (`+` is a space), skipped when nothing is encoded.
    static func decodeComponent(_ part: Substring) -> String {
        let raw = String(part)
        guard raw.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else { return raw }
        return raw.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? raw
    }

    /// A path component, percent-decoded only when something is encoded.
    static func decodePathComponent(_ s: String) -> String {
        s.utf8.contains(UInt8(ascii: "%")) ? (s.removingPercentEncoding ?? s) : s
    }

    /// A ticket as the body of a response, with its ETag.
    static func ticketResponse(_ t: Ticket, _ status: HTTPResponseStatus = .ok, location: Bool = false) -> APIResponse {
        var w = JSONWriter(capacity: 1024 + t.statement.utf8.count)
        w.ticket(t)
        var headers: HTTPHeaders = ["etag": etag(t)]
        if location { headers.add(name: "location", value: "/v1/tickets/\(t.id)") }
        return .json(status, w, headers: headers)
    }

    func ticketRef(_ s: String) throws(APIError) -> TicketRef {
        let s = OperatorAPI.decodePathComponent(s)
        guard let ref = TicketRef(s) else {
            throw APIError.notFound("\(s) is neither a ticket id (26-character ULID) nor a number like \(region)-2026-000001")
        }
        return ref
    }

    func checkQuery(_ q: [String: String], allowed: Set<String>) throws(APIError) {
        for (k, v) in q {
            guard allowed.contains(k) else {
                throw .badRequest("unknown_parameter", "\(k) is not a parameter here; allowed: \(allowed.sorted().joined(separator: ", "))", field: k)
            }
            if v == "\u{0}duplicate" { throw .badRequest("duplicate_parameter", "\(k) is given more than once", field: k) }
        }
    }

    func intParam(_ q: [String: String], _ name: String, range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let s = q[name] else { return nil }
        guard let v = Int(s), range.contains(v) else {
            throw .badRequest("invalid_parameter", "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)", field: name)
        }
        return v
    }

    func timeParam(_ q: [String: String], _ name: String) throws(APIError) -> Millis? {
        guard let s = q[name] else { return nil }
        guard let t = TimeParsing.parse(s) else {
            throw .badRequest("invalid_parameter", "\(name) must be an RFC 3339 time or epoch milliseconds", field: name)
        }
        return t
    }

    func actor(_ headers: HTTPHeaders) throws(APIError) -> Actor {
        let user = headers.first(name: "x-ekc-actor") ?? "anonymous"
        let role = headers.first(name: "x-ekc-role") ?? "operator"
        guard Actor.isValidName(user) else {
            throw .badRequest("invalid_header", "X-EKC-Actor must be 1 to 64 letters, digits, '.', '_', '-' or '@'", field: "X-EKC-Actor")
        }
        guard Actor.isValidName(role) else {
            throw .badRequest("invalid_header", "X-EKC-Role must be 1 to 64 letters, digits, '.', '_', '-' or '@'", field: "X-EKC-Role")
        }
        return Actor(user: user, role: role)
    }

    func jsonBody(_ req: APIRequest) throws(APIError) -> JSONValue {
        let type = req.headers.first(name: "content-type")?.lowercased() ?? ""
        guard type.hasPrefix("application/json") || type.hasPrefix("application/merge-patch+json") else {
            throw APIError(status: .unsupportedMediaType, code: "unsupported_media_type",
                           message: "send the body as application/json", field: "Content-Type")
        }
        return try JSONValue.parse(req.body ?? ByteBuffer())
    }

    /// `If-Match: "7"`, `7` or `W/"7"`; `*` matches any version.
    func ifMatch(_ headers: HTTPHeaders) throws(APIError) -> UInt64? {
        guard let raw = headers.first(name: "if-match")?.trimmingCharacters(in: .whitespaces) else { return nil }
        if raw == "*" { return nil }
        var s = Substring(raw)
        if s.hasPrefix("W/") { s = s.dropFirst(2) }
        if s.hasPrefix("\"") && s.hasSuffix("\"") && s.count >= 2 { s = s.dropFirst().dropLast() }
        guard let v = UInt64(s) else {
            throw .badRequest("invalid_header", "If-Match must be a ticket version such as \"3\"", field: "If-Match")
        }
        return v
    }

    static func etag(_ t: Ticket) -> String { "\"\(t.version)\"" }

    // MARK: Handlers

    func show(_ ref: TicketRef) throws -> APIResponse {
        guard let t = try store.ticket(ref) else { throw APIError.notFound("no ticket \(ref)") }
        return OperatorAPI.ticketResponse(t)
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
        for t in page.items { w.ticket(t) }
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

    func changes(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["since", "limit"])
        var since: UInt64 = 0
        if let s = q["since"] {
            guard let v = UInt64(s) else { throw APIError.badRequest("invalid_parameter", "since must be a sequence number (0 or more)", field: "since") }
            since = v
        }
        let limit = try intParam(q, "limit", range: 1...10_000) ?? 100
        let page = try store.changes(since: since, limit: limit)
        var w = JSONWriter(capacity: 128 * max(1, page.changes.count))
        w.beginObject()
        w.key("changes"); w.beginArray()
        for c in page.changes {
            w.beginObject()
            w.field("seq", c.sequence)
            w.field("id", c.ticket.id.description)
            w.field("number", c.ticket.number.description)
            w.field("version", c.ticket.version)
            w.field("status", c.ticket.status.rawValue)
            w.field("updatedAt", time: c.ticket.updatedAt)
            w.key("registers"); w.beginArray(); for r in c.registers { w.string(r) }; w.endArray()
            w.key("children"); w.beginObject()
            for (k, n) in c.children.sorted(by: { $0.key < $1.key }) { w.key(k); w.int(n) }
            w.endObject()
            w.endObject()
        }
        w.endArray()
        w.field("lastSequence", page.lastSequence)
        w.field("next", page.changes.last?.sequence ?? since)
        w.endObject()
        return .json(.ok, w)
    }

    /// Values that lost a race, beside the winners, on this node (every replica lists the same).
    func conflicts(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["limit"])
        let limit = try intParam(q, "limit", range: 1...TicketQuery.maxLimit) ?? 100
        let list = try store.conflicts(limit: limit)
        var numbers: [TicketID: String] = [:]
        for c in list where c.kind == TicketRecord.kind && numbers[c.recordID] == nil {
            numbers[c.recordID] = try store.ticket(.id(c.recordID))?.number.description
        }
        var w = JSONWriter(capacity: 256 * max(1, list.count))
        w.beginObject(); w.key("items"); w.beginArray()
        for c in list {
            w.beginObject()
            w.field("id", c.id)
            w.field("kind", c.kindName)
            w.field("ticketId", c.recordID.description)
            w.field("ticketNumber", numbers[c.recordID] ?? nil)
            w.field("field", c.field)
            w.key("winner"); w.beginObject()
            w.field("value", c.winningValue); w.field("node", c.winner.node.value); w.field("at", time: c.winner.stamp.millis)
            w.field("stamp", c.winner.stamp.description)
            w.endObject()
            w.key("loser"); w.beginObject()
            w.field("value", c.losingValue); w.field("node", c.loser.node.value); w.field("at", time: c.loser.stamp.millis)
            w.field("stamp", c.loser.stamp.description)
            w.endObject()
            w.endObject()
        }
        w.endArray(); w.endObject()
        return .json(.ok, w)
    }

    /// `{"keep": "winner" | "loser"}`: the choice is itself a replicated edit.
    func resolve(_ id: String, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        var r = try ObjectReader(try jsonBody(req))
        guard let keep = try r.enumeration("keep", ConflictChoice.self) else {
            throw APIError.unprocessable("missing_field", "keep is required: winner or loser", field: "keep")
        }
        try r.rejectUnknown()
        let conflictID = OperatorAPI.decodePathComponent(id)
        return submit(.resolve(conflictID: conflictID, keep: keep), try actor(req.headers), loop) { outcome in
            OperatorAPI.ticketResponse(outcome.ticket!)
        }
    }

    /// Each replication link: connected or not, last success, the peer's sequence and
    /// what we applied of it, lag in records and seconds.
    func replication() throws -> APIResponse {
        let now = Date()
        var w = JSONWriter()
        w.beginObject()
        w.field("node", node.value)
        w.field("storeId", store.storeID)
        w.field("lastSequence", store.lastSequence)
        w.key("peers"); w.beginArray()
        for l in replicator?.links ?? [] {
            w.beginObject()
            w.field("node", l.peer.value)
            w.field("address", l.address)
            w.key("connected"); w.bool(l.connected)
            w.field("lastSuccess", time: l.lastSuccess.map { Millis($0.timeIntervalSince1970 * 1000) })
            w.field("lastError", l.lastError)
            w.field("peerSequence", l.peerSequence)
            w.field("appliedSequence", l.appliedSequence)
            w.field("lagRecords", l.lagRecords)
            w.key("lagSeconds"); w.double(l.lagSeconds(now: now))
            w.field("recordsReceived", l.recordsReceived)
            w.key("rejected"); w.beginObject()
            w.field("records", l.rejected.records)
            w.key("byReason"); w.beginObject()
            for (k, n) in l.rejected.byReason.sorted(by: { $0.key < $1.key }) { w.key(k); w.int(n) }
            w.endObject()
            w.key("recent"); w.beginArray()
            for r in l.rejected.recent {
                w.beginObject()
                w.field("at", time: Millis(r.at.timeIntervalSince1970 * 1000))
                w.field("sequence", r.sequence)
                w.field("kind", r.kind)
                w.field("id", r.id)
                w.field("reason", r.reason)
                w.field("detail", r.detail)
                w.key("wholeRecord"); w.bool(r.whole)
                w.endObject()
            }
            w.endArray()
            w.endObject()
            w.key("duplicateNumbers"); w.beginArray(); for n in l.duplicateNumbers { w.string(n) }; w.endArray()
            w.key("clockOffsetMillis")
            if let o = l.clockOffsetMillis { w.int(o) } else { w.null() }
            w.key("resync")
            if let r = l.resync {
                w.beginObject()
                w.field("reason", r.reason.rawValue)
                w.field("at", time: Millis(r.at.timeIntervalSince1970 * 1000))
                w.field("checkpointSequence", r.checkpointSequence)
                w.field("resumedAfter", r.resumedAfter)
                w.endObject()
            } else {
                w.null()
            }
            w.endObject()
        }
        w.endArray()
        w.endObject()
        return .json(.ok, w)
    }

    func health() throws -> APIResponse {
        let s = try store.stats()
        var w = JSONWriter()
        w.beginObject()
        w.field("status", "ok")
        w.field("node", node.value)
        w.field("region", region)
        w.field("uptimeSeconds", Int(Date().timeIntervalSince(startedAt)))
        w.key("store"); w.beginObject()
        w.field("storeId", s.storeID)
        w.field("tickets", s.tickets)
        w.field("lastSequence", s.lastSequence)
        w.field("mapSizeBytes", s.mapSize)
        w.field("usedBytes", s.usedBytes)
        w.field("mapGrowths", s.mapGrowths)
        w.field("commitQueueDepth", store.queueDepth)
        w.endObject()
        if let expiry = certificateNotValidAfter {
            w.key("certificate"); w.beginObject()
            w.field("notValidAfter", time: Millis(expiry.timeIntervalSince1970 * 1000))
            w.key("daysLeft"); w.double(expiry.timeIntervalSinceNow / 86_400)
            w.endObject()
        }
        w.endObject()
        return .json(.ok, w)
    }

    func metrics() -> APIResponse {
        if let s = try? store.stats() {
            Gauge(label: "ekc_store_tickets").record(s.tickets)
            Gauge(label: "ekc_store_last_sequence").record(Int64(clamping: s.lastSequence))
            Gauge(label: "ekc_store_map_size_bytes").record(s.mapSize)
            Gauge(label: "ekc_store_used_bytes").record(s.usedBytes)
            Gauge(label: "ekc_store_map_growths").record(s.mapGrowths)
            Gauge(label: "ekc_store_commit_queue_depth").record(store.queueDepth)
            Gauge(label: "ekc_conflicts_waiting").record((try? store.conflicts(limit: 10_000).count) ?? 0)
            let now = Date()
            if let expiry = certificateNotValidAfter {
                Gauge(label: "ekc_tls_certificate_expiry_seconds").record(expiry.timeIntervalSince(now))
            }
            for l in replicator?.links ?? [] {
                let peer = [("peer", l.peer.value)]
                Gauge(label: "ekc_replication_lag_records", dimensions: peer).record(Int64(clamping: l.lagRecords))
                Gauge(label: "ekc_replication_lag_seconds", dimensions: peer).record(l.lagSeconds(now: now))
                Gauge(label: "ekc_replication_connected", dimensions: peer).record(l.connected ? 1 : 0)
                if let offset = l.clockOffsetMillis {
                    Gauge(label: "ekc_replication_peer_clock_offset_seconds", dimensions: peer).record(Double(offset) / 1000)
                }
            }
        }
        var bytes: [UInt8] = []
        registry?.emit(into: &bytes)
        return APIResponse(status: .ok, headers: ["content-type": "text/plain; version=0.0.4"], body: ByteBuffer(bytes: bytes))
    }

    // MARK: Edits

    private func submit(_ edit: Edit, _ actor: Actor, _ loop: EventLoop,
                        render: @escaping @Sendable (EditOutcome) -> APIResponse) -> EventLoopFuture<APIResponse> {
        let promise = loop.makePromise(of: APIResponse.self)
        store.submit(edit, actor: actor) { result in
            switch result {
            case .success(let outcome): promise.succeed(render(outcome))
            case .failure(let e): promise.succeed(.error(APIError(e)))
            }
        }
        return promise.futureResult
    }

    func create(_ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        let draft = try RequestDecoding.draft(try jsonBody(req))
        let actor = try actor(req.headers)
        return submit(.create(draft), actor, loop) { outcome in
            OperatorAPI.ticketResponse(outcome.ticket!, .created, location: true)
        }
    }

    func patch(_ ref: TicketRef, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        let patch = try RequestDecoding.patch(try jsonBody(req))
        let expected = try ifMatch(req.headers)
        let actor = try actor(req.headers)
        return submit(.patch(ref, patch, ifMatch: expected), actor, loop) { outcome in
            OperatorAPI.ticketResponse(outcome.ticket!)
        }
    }

    func addNote(_ ref: TicketRef, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        let (text, vis) = try RequestDecoding.note(try jsonBody(req))
        let actor = try actor(req.headers)
        return submit(.addNote(ref, text: text, visibility: vis), actor, loop) { outcome in
            guard case .note(let n) = outcome else { return .error(APIError(.corrupt("no note"))) }
            var w = JSONWriter()
            w.note(n)
            return .json(.created, w)
        }
    }
}
