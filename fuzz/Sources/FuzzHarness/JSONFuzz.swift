import Access
import CaseModel
@testable import CaseStore
@testable import EKCNode
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Replication

/// The operator API's request parsing: a body as each kind of request reads it (the
/// handlers' own calls up to the point where they submit an edit), and GET requests
/// (path, query, routing, permission, handler) answered by a real API over a store
/// holding one ticket.
///
/// Input: a selector byte, then
/// - 0 create, 1 patch, 2 note, 3 transfer send, 4 transfer step, 5 export,
///   6 conflict resolve: the request body;
/// - 7: a GET request's URI (path and query), through `OperatorAPI.handle`;
/// - 8: `If-Match`, `Content-Type` (fields: a length byte, then bytes), then the body,
///   through the API's own readers of them.
public enum JSONFuzz {
    public static let modes = ["create", "patch", "note", "transfer-send", "transfer-step", "export", "resolve", "get", "headers"]

    /// Builds the fixtures before the first input.
    public static func prepare() { _ = FuzzStore.shared; _ = TokenFuzz.verifier }

    public static func run(_ data: [UInt8]) {
        var input = FuzzBytes(data)
        let mode = Int(input.byte()) % modes.count
        let api = FuzzStore.shared.api
        switch mode {
        case 7:
            get(FuzzStore.shared, String(decoding: input.rest, as: UTF8.self))
        case 8:
            let ifMatch = input.string()
            let contentType = input.string()
            let req = request(input.rest, headers: [("if-match", ifMatch), ("content-type", contentType)])
            _ = try? api.ifMatch(req.headers)
            if let body = try? api.jsonBody(req) { decode(mode: Int(contentType.utf8.count) % 7, body, req, api) }
        default:
            let req = request(input.rest, headers: [("content-type", "application/json")])
            // What every handler with a body calls first.
            guard let body = try? api.jsonBody(req) else { return }
            decode(mode: mode, body, req, api)
        }
    }

    static func request(_ body: [UInt8], headers: [(String, String)], method: HTTPMethod = .POST, uri: String = "/") -> APIRequest {
        var h = HTTPHeaders(headers)
        h.add(name: "host", value: "localhost")
        var req = APIRequest(method: method, uri: uri, headers: h, body: ByteBuffer(bytes: body))
        req.principal = FuzzStore.principal
        req.actor = FuzzWorld.supervisor
        return req
    }

    /// A body as the handler of `mode` reads it, then what the store checks before writing.
    static func decode(mode: Int, _ body: JSONValue, _ req: APIRequest, _ api: OperatorAPI) {
        switch mode {
        case 0:  // TicketHandlers.create → CaseStore.applyCreate
            guard let draft = try? RequestDecoding.draft(body) else { return }
            guard let t = try? draft.open(id: TicketID(high: 1, low: 2), number: TicketNumber(region: "38", year: 2026, sequence: 1),
                                          node: FuzzWorld.irkMain, now: FuzzWorld.now, stamp: Stamp(millis: FuzzWorld.now, logical: 0))
            else { return }
            render(t, api)
        case 1:  // TicketHandlers.patch → CaseStore.applyPatch
            guard let patch = try? RequestDecoding.patch(body) else { return }
            _ = patch.actions(by: FuzzWorld.supervisor.user)
            _ = try? api.ifMatch(req.headers)
            let ctx = EditContext(actor: FuzzWorld.supervisor, node: FuzzWorld.irkMain, now: FuzzWorld.now + 60_000,
                                  stamp: Stamp(millis: FuzzWorld.now + 60_000, logical: 0), workingHours: FuzzWorld.workingHours)
            for t in FuzzStore.shared.tickets {
                if let (changed, _) = try? t.applying(patch, ctx) { render(changed, api) }
            }
        case 2:  // TicketHandlers.addNote → CaseStore.applyNote
            guard let (text, _) = try? RequestDecoding.note(body) else { return }
            try? Note.validate(text: text)
        case 3:  // TransferHandlers.sendTransfer → CaseStore.applySendTransfer
            guard let q = try? sendTransfer(body) else { return }
            try? TransferOrder.validate(to: q.to, from: "38", organisations: nil)
            try? TransferOrder.validate(reasonCode: q.reasonCode)
            try? TransferOrder.validate(reasonText: q.reasonText)
            if let due = q.due { try? TransferOrder.validate(createdAt: FuzzWorld.now, dueAt: due) }
        case 4:  // TransferHandlers.transferStep → CaseStore.applyTransferStep
            guard let (code, text, answer) = try? transferStep(body) else { return }
            if let code { try? TransferOrder.validate(reasonCode: code) }
            if let text { try? TransferOrder.validate(reasonText: text) }
            if let answer { try? TransferStep.validate(answer: answer) }
        case 5:  // Disclosures.export
            guard let (refs, fields, _) = try? export(body) else { return }
            for ref in refs {
                guard let r = TicketRef(ref), let t = try? api.store.ticket(r) else { continue }
                _ = OperatorAPI.disclosed(t, fields)
            }
        default:  // OperationalHandlers.resolve
            _ = try? resolve(body)
        }
    }

    // The body readers of the handlers that read inline, up to their `submit`: kept
    // call for call with TransferHandlers.swift, Disclosures.swift, OperationalHandlers.swift.

    /// `TransferHandlers.sendTransfer`.
    static func sendTransfer(_ body: JSONValue) throws(APIError) -> TransferRequest {
        var r = try ObjectReader(body)
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
        return TransferRequest(ticket: .id(TicketID(high: 1, low: 2)), to: to, kind: kind, reasonCode: code!, reasonText: text!,
                               scope: scope, due: due)
    }

    /// `TransferHandlers.transferStep`.
    static func transferStep(_ body: JSONValue) throws(APIError) -> (String?, String?, String?) {
        var r = try ObjectReader(body)
        let (code, text) = try OperatorAPI.reason(&r, required: false)
        let answer = try r.string("answer")
        try r.rejectUnknown()
        return (code, text, answer)
    }

    /// `OperatorAPI.export`.
    static func export(_ json: JSONValue) throws(APIError) -> ([String], Set<CitizenField>, String) {
        var body = try ObjectReader(json)
        guard let refs = try body.stringArray("tickets"), !refs.isEmpty else {
            throw APIError.unprocessable("missing_field", "tickets", field: "tickets")
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
        return (refs, fields, reason)
    }

    /// `OperatorAPI.resolve`.
    static func resolve(_ body: JSONValue) throws(APIError) -> ConflictChoice {
        var r = try ObjectReader(body)
        guard let keep = try r.enumeration("keep", ConflictChoice.self) else {
            throw APIError.unprocessable("missing_field", "keep is required: winner or loser", field: "keep")
        }
        try r.rejectUnknown()
        return keep
    }

    /// A ticket as the API shows it, masked and in full.
    static func render(_ t: Ticket, _ api: OperatorAPI) {
        for unmasked in [[], Set(OperatorAPI.maskableFields)] {
            var w = JSONWriter()
            w.ticket(t, transfers: [], now: FuzzWorld.now, unmasked: unmasked)
            // What the API writes, its own parser reads.
            checkJSON(w.bytes)
        }
        _ = t.registerValues
    }

    /// A GET request through the whole API: Host check, routing, permission, handler.
    static func get(_ fixture: FuzzStore, _ uri: String) {
        let req = APIRequest(method: .GET, uri: uri, headers: ["host": "localhost"], body: nil)
        let response: APIResponse?
        switch fixture.api.handle(req, caller: .principal(FuzzStore.principal), on: fixture.loop) {
        case .now(let r): response = r
        case .later(let f): response = try? f.wait()
        }
        // Every answer with a JSON body is JSON.
        if let r = response, r.headers.first(name: "content-type") == "application/json" {
            checkJSON(Array(r.body.readableBytesView))
        }
    }
}

/// The API a harness asks: a store on a temporary folder, reached with every role.
/// `shared` holds a ticket (without citizen data, so that no read writes the access
/// log); `damaged` is empty, for StoreFuzz to write damaged tables into.
final class FuzzStore: @unchecked Sendable {
    static let shared = FuzzStore(name: "store", ticket: true)
    static let damaged = FuzzStore(name: "damaged", ticket: false)
    static let principal = Principal(subject: "sv-orlova", organisation: "38", roles: Set(Role.allCases),
                                     expiresAt: FuzzWorld.now + 3_600_000)

    let api: OperatorAPI
    let loop: EventLoop
    /// Tickets a patch is applied to: new, in work, answered.
    let tickets: [Ticket]

    private init(name: String, ticket: Bool) {
        var configuration = StoreConfiguration(node: FuzzWorld.irkMain, region: "38", utcOffsetMinutes: 480,
                                               directory: FuzzWorld.directory, wallClock: { FuzzWorld.now })
        configuration.environment.initialMapSize = 16 << 20
        let path = "\(FuzzWorld.folder)/\(name)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let store = try! CaseStore(path: path, configuration: configuration)
        loop = MultiThreadedEventLoopGroup.singleton.next()
        api = OperatorAPI(store: store, access: OperatorAccess(verifier: TokenFuzz.verifier, hostNames: ["localhost"]),
                          registry: nil)
        let draft = TicketDraft(channel: .phone, topic: "child-benefits", subject: "Единое пособие",
                                statement: "Когда будет решение?", citizen: nil, assignee: "op-ivanova")
        let created = ticket ? blocking { try? await store.create(draft, actor: FuzzWorld.supervisor) } : nil
        let open = try! draft.open(id: TicketID(high: 1, low: 2), number: TicketNumber(region: "38", year: 2026, sequence: 9),
                                   node: FuzzWorld.irkMain, now: FuzzWorld.now, stamp: Stamp(millis: FuzzWorld.now, logical: 0))
        var inWork = open
        inWork.status = .inWork
        var answered = open
        answered.status = .answered
        tickets = [created ?? open, inWork, answered]
    }
}
