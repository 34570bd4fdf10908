import CaseModel
import CaseStore
import Foundation
import NIOHTTP1
import Replication
import TestSupport
import Testing
import Wire
@testable import EKCNode

/// One validator per value, whatever the edge. For every register and every child
/// collection of every record kind (walked from the kinds' tables: a new register
/// without bad cases here fails the test), the same bad values go in through the
/// operator API (`OperatorAPI.handle`, in process) and through the peer path (a delta
/// carrying the value, encoded with the node's encoders, read by `RecordReading` as a
/// pull reads it, merged into the same store), and both edges must give the same
/// refusal: the API's 422 body names the field and says the rule, and the wire
/// refusal's detail ends with that same message, with nothing stored by either.
///
/// Values no operator request writes (a header's number and origin node, the owner,
/// a history event, a transfer's creation time and sending node) are walked too: the
/// case says which edge reaches them, and the wire must refuse them.
@Suite(.serialized) struct ValidationParityTests {
    static let main = NodeID("irk-main")!, office = NodeID("irk-office-1")!, fund = NodeID("sfr-federal")!
    static let directory = Directory([main: "38", office: "38", fund: "sfr"])

    /// What both edges must say.
    enum Expected {
        /// The model's refusal of a value: the API's 422 and the wire's refusal both carry it.
        case model(TicketError)
        /// A transfer rule of the model (a step's missing reason).
        case transfer(TransferError)
        /// A value only a peer sends (the node makes it itself): the wire's reason and
        /// the end of its detail.
        case wire(RefusalReason, String)

        var message: String {
            switch self {
            case .model(let e): return e.message
            case .transfer(let e): return e.message
            case .wire(_, let m): return m
            }
        }

        var reason: RefusalReason {
            switch self {
            case .model(.tooLong): return .tooLarge
            case .model, .transfer: return .invalidValue
            case .wire(let r, _): return r
            }
        }

        var api: APIError? {
            switch self {
            case .model(let e): return APIError(e)
            case .transfer(let e): return APIError(e)
            case .wire: return nil
            }
        }
    }

    /// Ids the API requests name (the fixture's own ticket, transfers).
    struct Targets {
        var ticket = "", appeal = "", outgoing = "", incoming = ""
    }

    /// How an operator sends the value: method, path, body (nil: no request writes it).
    typealias APIWrite = (Targets) -> (HTTPMethod, String, String?)

    /// A delta carrying the value: the registers' values (aligned with the kind's
    /// table) and the children, of a valid record the case makes one thing wrong in.
    struct WireRecord {
        var values: [ValueBytes]
        var children: [(collection: UInt8, value: ValueBytes)] = []
    }

    struct BadValue {
        let about: String
        let expected: Expected
        let api: APIWrite?
        /// Which edge writes the value when no operator request does.
        let edge: String?
        let wire: (inout WireRecord) -> Void

        init(_ about: String, _ expected: Expected, api: APIWrite?, edge: String? = nil, wire: @escaping (inout WireRecord) -> Void) {
            precondition(api != nil || edge != nil, "a value without a request says which edge writes it")
            self.about = about
            self.expected = expected
            self.api = api
            self.edge = edge
            self.wire = wire
        }
    }

    // MARK: The cases, by "kind.part" of the tables

    typealias T = TicketRecord.Register

    /// A JSON object of a valid request's fields with `fields` (raw JSON values) put in.
    static func object(_ base: [String: String], _ fields: [String: String]) -> String {
        let all = base.merging(fields) { $1 }
        return "{" + all.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
    }

    static func create(_ fields: [String: String]) -> APIWrite {
        { _ in (.POST, "/v1/tickets", object(["channel": #""phone""#, "topic": #""child-benefits""#, "subject": #""s""#,
                                              "statement": #""t""#], fields)) }
    }

    static func patch(_ body: String, appeal: Bool = false) -> APIWrite {
        { t in (.PATCH, "/v1/tickets/\(appeal ? t.appeal : t.ticket)", body) }
    }

    static func send(_ fields: [String: String]) -> APIWrite {
        { t in
            (.POST, "/v1/tickets/\(t.ticket)/transfers",
             object(["to": #""sfr""#, "kind": #""COPY""#, "reason": #"{"code":"pension-recalc","text":"Перерасчёт"}"#, "scope": #"["ref"]"#], fields))
        }
    }

    static func step(_ path: String, incoming: Bool, _ body: String?) -> APIWrite {
        { t in (.POST, "/v1/transfers/\(incoming ? t.incoming : t.outgoing)/\(path)", body) }
    }

    static func set(_ r: T, _ bytes: ValueBytes) -> (inout WireRecord) -> Void { { $0.values[r.rawValue] = bytes } }

    static let longName = String(repeating: "я", count: 100) + "x"        // 201 bytes
    static let longSubject = String(repeating: "я", count: 300) + "x"     // 601 bytes
    static let longNote = String(repeating: "я", count: 10_000) + "x"     // 20,001 bytes
    static let longReason = String(repeating: "я", count: 1_000) + "x"    // 2,001 bytes
    static let longHistory = String(repeating: "я", count: 20_000) + "x"  // 40,001 bytes

    static func ticketCases(_ base: Ticket) -> [String: [BadValue]] {
        let h = TicketHeader(number: base.number, originNode: base.originNode, channel: base.channel,
                             legalRegime: base.legalRegime, receivedAt: base.receivedAt)
        let p = Replication.Progress(status: base.status, registeredAt: base.registeredAt, deadlines: base.deadlines)
        func detail(_ s: String) -> ValueBytes { TicketValues.encode(detail: s) }
        func citizen(_ c: Citizen) -> ValueBytes { TicketValues.encode(c) }
        return [
            "ticket.header": [
                BadValue("an unknown channel", .model(Validation.notOneOf(Channel.self, field: "channel")),
                         api: create(["channel": #""fax""#]), wire: set(.header, header(h, channel: 99))),
                BadValue("an unknown legal regime", .model(Validation.notOneOf(LegalRegime.self, field: "legalRegime")),
                         api: create(["legalRegime": #""appeal""#]), wire: set(.header, header(h, regime: 0))),
                BadValue("received before 2000", .model(.invalidField(field: "receivedAt", rule: "must be a time from 2000-01-01 to 2200-01-01 (UTC)")),
                         api: create(["receivedAt": #""1999-12-31T23:59:59Z""#]),
                         wire: set(.header, header(h, received: PlausibleTime.range.lowerBound - 1))),
                BadValue("an origin node the topology does not know", .wire(.unknownNode, "origin_node: irk-office-77 is not in the topology"),
                         api: nil, edge: "the node writes its own id; only a peer sends another",
                         wire: set(.header, header(h, origin: "irk-office-77"))),
                BadValue("a number before 2000", .wire(.invalidValue, "number.year: 1999 is not in 2000–2199"),
                         api: nil, edge: "the node numbers its tickets; only a peer sends a number",
                         wire: set(.header, header(h, year: 1999))),
            ],
            "ticket.statement": [
                BadValue("a blank subject", .model(.invalidField(field: "subject", rule: "must not be empty")),
                         api: create(["subject": #""   ""#]), wire: set(.statement, TicketValues.encode(Statement(subject: "   ", text: "t")))),
                BadValue("a subject over its budget", .model(.tooLong(field: "subject", bytes: 601, limit: 600)),
                         api: create(["subject": "\"\(longSubject)\""]),
                         wire: set(.statement, TicketValues.encode(Statement(subject: longSubject, text: "t")))),
                BadValue("a control character in the statement", .model(.invalidField(field: "statement", rule: "must not contain control characters")),
                         api: create(["statement": #""a\u0007b""#]),
                         wire: set(.statement, TicketValues.encode(Statement(subject: "s", text: "a\u{7}b")))),
            ],
            "ticket.citizen": [
                BadValue("a reference with a space", .model(.invalidField(field: "citizen.ref", rule: "1 to 64 letters, digits or hyphens")),
                         api: create(["citizen": #"{"ref":"CIT 1"}"#]), wire: set(.citizen, citizen(Citizen(ref: "CIT 1")))),
                BadValue("a SNILS with a wrong checksum, written before the split", .model(.invalidField(field: "citizen.snils", rule: "checksum does not match")),
                         api: create(["citizen": #"{"ref":"CIT-1","snils":"112-233-445 96"}"#]),
                         wire: set(.citizen, citizen(Citizen(ref: "CIT-1", snils: Snils(trusted: "11223344596"))))),
                BadValue("citizen data on a foreign messenger", .model(.personalDataOnMessenger),
                         api: create(["channel": #""messenger""#, "citizen": #"{"ref":"CIT-1"}"#]),
                         wire: { w in
                             var m = h
                             m.channel = .messenger
                             w.values[T.header.rawValue] = TicketValues.encode(m)
                             w.values[T.citizen.rawValue] = citizen(Citizen(ref: "CIT-1"))
                         }),
            ],
            "ticket.progress": [
                BadValue("an unknown status", .model(Validation.notOneOf(TicketStatus.self, field: "status")),
                         api: patch(#"{"status":"BOGUS"}"#), wire: set(.progress, progress(p, status: 99))),
                BadValue("an extension of 31 days", .model(.invalidField(field: "extendAnswerByDays", rule: "must be 1 to 30 days")),
                         api: patch(#"{"extendAnswerByDays":31}"#, appeal: true), wire: set(.progress, progress(p, extension: 31))),
                BadValue("a deadline past 2200", .wire(.invalidValue, "deadlines.answerBy: must be a time from 2000-01-01 to 2200-01-01 (UTC)"),
                         api: nil, edge: "the node computes deadlines; only a peer sends them",
                         wire: set(.progress, progress(p, answerBy: PlausibleTime.range.upperBound))),
            ],
            "ticket.assignee": [
                BadValue("an operator id with a space", .model(.invalidField(field: "assignee", rule: "1 to 64 letters, digits, '.', '_', '-' or '@'")),
                         api: patch(#"{"assignee":"op x"}"#), wire: set(.assignee, TicketValues.encode(assignee: "op x"))),
            ],
            "ticket.priority": [
                BadValue("an unknown priority", .model(Validation.notOneOf(Priority.self, field: "priority")),
                         api: patch(#"{"priority":"asap"}"#), wire: set(.priority, enumMessage(99))),
            ],
            "ticket.topic": [
                BadValue("a topic in capitals", .model(.invalidField(field: "topic", rule: "1 to 64 lower-case letters, digits, '-', '_' or '.'")),
                         api: patch(#"{"topic":"Bad Topic"}"#), wire: set(.topic, TicketValues.encode(Topic(topic: "Bad Topic", supportMeasure: nil)))),
                BadValue("an empty support measure", .model(.invalidField(field: "supportMeasure", rule: "1 to 64 lower-case letters, digits, '-', '_' or '.'")),
                         api: patch(#"{"supportMeasure":""}"#), wire: set(.topic, TicketValues.encode(Topic(topic: "child-benefits", supportMeasure: "")))),
            ],
            "ticket.owner": [
                BadValue("an owner the topology does not know", .wire(.unknownNode, "node: irk-office-77 is not in the topology"),
                         api: nil, edge: "the node writes its own id (on creation, on accepting a redirect); only a peer sends another",
                         wire: set(.owner, TicketValues.encode(owner: NodeID("irk-office-77")!))),
            ],
            "ticket.citizenName": [
                BadValue("a name over its budget", .model(.tooLong(field: "citizen.name", bytes: 201, limit: 200)),
                         api: create(["citizen": #"{"ref":"CIT-1","name":"\#(longName)"}"#]), wire: set(.citizenName, detail(longName))),
                BadValue("a control character in the name", .model(.invalidField(field: "citizen.name", rule: "must not contain control characters")),
                         api: create(["citizen": #"{"ref":"CIT-1","name":"Иванова\u0000"}"#]), wire: set(.citizenName, detail("Иванова\u{0}"))),
            ],
            "ticket.citizenSnils": [
                BadValue("eleven digits with a wrong checksum", .model(.invalidField(field: "citizen.snils", rule: "checksum does not match")),
                         api: create(["citizen": #"{"ref":"CIT-1","snils":"112-233-445 96"}"#]), wire: set(.citizenSnils, detail("11223344596"))),
                BadValue("three digits", .model(.invalidField(field: "citizen.snils", rule: "11 digits, as 123-456-789 01 (stored without its separators)")),
                         api: create(["citizen": #"{"ref":"CIT-1","snils":"123"}"#]), wire: set(.citizenSnils, detail("123"))),
            ],
            "ticket.citizenPhone": [
                BadValue("a phone without +7", .model(.invalidField(field: "citizen.phone", rule: "+7 followed by 10 digits")),
                         api: create(["citizen": #"{"ref":"CIT-1","phone":"89001234567"}"#]), wire: set(.citizenPhone, detail("89001234567"))),
            ],
            "ticket.notes": [
                BadValue("an empty note", .model(.invalidField(field: "text", rule: "must not be empty")),
                         api: { t in (.POST, "/v1/tickets/\(t.ticket)/notes", #"{"text":""}"#) },
                         wire: { $0.children.append((1, note(text: ""))) }),
                BadValue("a note over its budget", .model(.tooLong(field: "text", bytes: 20_001, limit: 20_000)),
                         api: { t in (.POST, "/v1/tickets/\(t.ticket)/notes", #"{"text":"\#(longNote)"}"#) },
                         wire: { $0.children.append((1, note(text: longNote))) }),
                BadValue("an unknown visibility", .model(Validation.notOneOf(NoteVisibility.self, field: "visibility")),
                         api: { t in (.POST, "/v1/tickets/\(t.ticket)/notes", #"{"text":"x","visibility":"public"}"#) },
                         wire: { $0.children.append((1, note(text: "x", visibility: 9))) }),
                BadValue("an author that is no operator id", .model(.invalidField(field: "author", rule: "user and role must be 1 to 64 letters, digits, '.', '_', '-' or '@'")),
                         api: nil, edge: "the API's author is its token's subject, held to the same rule (Actor.isValidName) when the token is verified",
                         wire: { $0.children.append((1, note(text: "x", user: "op x"))) }),
            ],
            "ticket.history": [
                BadValue("a field name with a space", .model(.invalidField(field: "field", rule: "1 to 64 printable ASCII characters")),
                         api: nil, edge: "the node records its own edits; only a peer sends history",
                         wire: { $0.children.append((2, event(field: "a b"))) }),
                BadValue("an old value over its budget", .model(.tooLong(field: "old", bytes: 40_001, limit: 40_000)),
                         api: nil, edge: "the node records its own edits; only a peer sends history",
                         wire: { $0.children.append((2, event(field: "statement", old: longHistory))) }),
            ],
        ]
    }

    static func transferCases(_ o: TransferOrder) -> [String: [BadValue]] {
        func order(_ change: (inout TransferOrder) -> Void) -> (inout WireRecord) -> Void {
            var m = o
            change(&m)
            let b = TransferValues.encode(m)
            return { $0.values[0] = b }
        }
        func raw(kind: Int = 3, scope: [Int] = [1]) -> (inout WireRecord) -> Void {
            let b = rawOrder(o, kind: kind, scope: scope)
            return { $0.values[0] = b }
        }
        func stepValue(_ s: TransferState, code: String? = nil, text: String? = nil, answer: String? = nil) -> ValueBytes {
            TransferValues.encode(TransferStep(id: RecordID(high: 1, low: 1), state: s, node: office, stamp: Stamp(raw: 1),
                                               actor: Actor(user: "op-1", role: "operator"), reasonCode: code, reasonText: text,
                                               answer: answer))
        }
        return [
            "transfer.order": [
                BadValue("to its own organisation", .model(.invalidField(field: "to", rule: "a transfer goes to another organisation")),
                         api: send(["to": #""38""#]), wire: order { $0.toOrganisation = "38" }),
                BadValue("to an organisation the federation does not have", .model(.invalidField(field: "to", rule: "mars is not an organisation of the federation")),
                         api: send(["to": #""mars""#]), wire: order { $0.toOrganisation = "mars" }),
                BadValue("to no organisation's id", .model(.invalidField(field: "to", rule: "2 to 32 lower-case letters, digits and hyphens (an organisation's id)")),
                         api: send(["to": #""Mars!""#]), wire: order { $0.toOrganisation = "Mars!" }),
                BadValue("an unknown kind", .model(Validation.notOneOf(TransferKind.self, field: "kind")),
                         api: send(["kind": #""TELEPORT""#]), wire: raw(kind: 99)),
                BadValue("a reason code in capitals", .model(.invalidField(field: "reason.code", rule: "1 to 64 lower-case letters, digits, '-', '_' or '.'")),
                         api: send(["reason": #"{"code":"Not A Code","text":"y"}"#]), wire: order { $0.reasonCode = "Not A Code" }),
                BadValue("a reason text over its budget", .model(.tooLong(field: "reason.text", bytes: 2_001, limit: 2_000)),
                         api: send(["reason": #"{"code":"x","text":"\#(longReason)"}"#]), wire: order { $0.reasonText = longReason }),
                BadValue("a scope naming a field twice", .model(Validation.listedTwice("ref", field: "scope")),
                         api: send(["scope": #"["ref","ref"]"#]), wire: raw(scope: [1, 1])),
                BadValue("a scope naming no citizen field", .model(Validation.notOneOf(CitizenField.self, field: "scope")),
                         api: send(["scope": #"["passport"]"#]), wire: raw(scope: [9])),
                BadValue("due past 2200", .model(.invalidField(field: "due", rule: "must be a time from 2000-01-01 to 2200-01-01 (UTC)")),
                         api: send(["due": #""2300-01-01T00:00:00Z""#]), wire: order { $0.dueAt = PlausibleTime.range.upperBound }),
                BadValue("due before it was made", .model(.invalidField(field: "due", rule: "must be later than the transfer's creation (in the future when it is sent)")),
                         api: send(["due": #""2001-01-01T00:00:00Z""#]), wire: order { $0.dueAt = PlausibleTime.range.lowerBound + 1 }),
                BadValue("made before 2000", .model(.invalidField(field: "createdAt", rule: "must be a time from 2000-01-01 to 2200-01-01 (UTC)")),
                         api: nil, edge: "the node stamps its own transfers; only a peer sends a creation time",
                         wire: order { $0.createdAt = 0 }),
                BadValue("sent by a node of another organisation", .wire(.invalidValue, "from: sfr-federal belongs to sfr, not 38"),
                         api: nil, edge: "the node writes its own id and organisation; only a peer sends others",
                         wire: order { $0.fromNode = fund }),
            ],
            "transfer.senderSteps": [
                BadValue("a cancellation's reason code in capitals", .model(.invalidField(field: "reason.code", rule: "1 to 64 lower-case letters, digits, '-', '_' or '.'")),
                         api: step("cancel", incoming: false, #"{"reason":{"code":"Not A Code","text":"y"}}"#),
                         wire: { $0.children.append((1, stepValue(.cancelled, code: "Not A Code", text: "y"))) }),
                BadValue("a control character in a cancellation's reason", .model(.invalidField(field: "reason.text", rule: "must not contain control characters")),
                         api: step("cancel", incoming: false, #"{"reason":{"code":"x","text":"a\u0001b"}}"#),
                         wire: { $0.children.append((1, stepValue(.cancelled, code: "x", text: "a\u{1}b"))) }),
            ],
            "transfer.receiverSteps": [
                BadValue("a rejection without its reason", .transfer(.reasonRequired(step: .rejected)),
                         api: step("reject", incoming: true, nil),
                         wire: { $0.children.append((2, stepValue(.rejected))) }),
                BadValue("an answer over its budget", .model(.tooLong(field: "answer", bytes: 20_001, limit: 20_000)),
                         api: step("complete", incoming: true, #"{"answer":"\#(longNote)"}"#),
                         wire: { $0.children.append((2, stepValue(.completed, answer: longNote))) }),
            ],
        ]
    }

    // MARK: Raw value messages a model value cannot hold

    static func header(_ h: TicketHeader, channel: Int? = nil, regime: Int? = nil, received: Int64? = nil,
                       origin: String? = nil, year: Int64? = nil) -> ValueBytes {
        var w = ProtoWriter()
        w.message(1) { w in
            w.string(1, h.number.region)
            w.int64(2, year ?? Int64(h.number.year))
            w.uint64(3, h.number.sequence)
        }
        w.string(2, origin ?? h.originNode.value)
        w.enumValue(3, channel ?? h.channel.wireNumber)
        w.enumValue(4, regime ?? h.legalRegime.wireNumber)
        w.int64(5, received ?? h.receivedAt)
        return w.bytes
    }

    static func progress(_ p: Replication.Progress, status: Int? = nil, extension ext: Int64? = nil, answerBy: Int64? = nil) -> ValueBytes {
        var w = ProtoWriter()
        w.enumValue(1, status ?? p.status.wireNumber)
        w.optionalInt64(2, p.registeredAt)
        w.message(3) { w in
            w.int64(1, p.deadlines.registerBy)
            w.optionalInt64(2, p.deadlines.forwardBy)
            w.optionalInt64(3, answerBy ?? p.deadlines.answerBy)
            w.int64(4, ext ?? Int64(p.deadlines.extensionDays))
            w.optionalInt64(5, p.deadlines.callbackBy)
        }
        return w.bytes
    }

    static func enumMessage(_ raw: Int) -> ValueBytes {
        var w = ProtoWriter()
        w.enumValue(1, raw)
        return w.bytes
    }

    static func note(text: String, visibility: Int = 2, user: String = "op-1") -> ValueBytes {
        var w = ProtoWriter()
        w.message(1) { w in w.string(1, user); w.string(2, "operator") }
        w.int64(2, wallNow())
        w.enumValue(3, visibility)
        w.string(4, text)
        return w.bytes
    }

    static func event(field: String, old: String? = nil) -> ValueBytes {
        TicketValues.encode(HistoryEvent(id: RecordID(high: 1, low: 1), ticketID: RecordID(high: 1, low: 1),
                                         actor: Actor(user: "op-1", role: "operator"), node: office, at: wallNow(),
                                         stamp: Stamp(raw: 1), field: field, old: old, new: "x"))
    }

    static func rawOrder(_ o: TransferOrder, kind: Int, scope: [Int]) -> ValueBytes {
        var w = ProtoWriter()
        w.bytesField(1, o.ticket.bytes)
        w.string(2, o.fromOrganisation)
        w.string(3, o.fromNode.value)
        w.string(4, o.toOrganisation)
        w.enumValue(5, kind)
        w.string(6, o.reasonCode)
        w.string(7, o.reasonText)
        w.message(8) { w in for f in scope { w.varint(UInt64(f)) } }
        w.int64(9, o.createdAt)
        w.int64(10, o.dueAt)
        return w.bytes
    }

    static func wallNow() -> Millis { Millis(Date().timeIntervalSince1970 * 1000) }

    // MARK: The edges

    /// The store of the API fixture, read as a puller reads a peer's feed.
    final class Peer {
        let f: APIFixture
        let reading: RecordReading
        let source: [UInt8] = (0..<16).map { UInt8($0) }
        var sequence: UInt64 = 0
        var ids = 0

        init(_ f: APIFixture) {
            self.f = f
            reading = RecordReading(kinds: f.store.kinds, check: CheckContext(directory: f.store.configuration.directory))
        }

        /// A fresh ULID a minute old (so that every stamp is behind the store's clock).
        func nextID() -> RecordID {
            ids += 1
            return RecordID(millis: UInt64(wallNow() - 60_000), randomHigh: UInt16(ids), randomLow: UInt64.random(in: 0...UInt64.max))
        }

        func dot(_ node: NodeID) -> Dot {
            ids += 1
            return Dot(node: node, stamp: Stamp(millis: wallNow() - 60_000, logical: UInt16(ids)))
        }

        /// Encodes `delta` with the node's encoder, reads it as a pull does and merges it
        /// (relayed by `via`); the report's refusals.
        func send(_ schema: RecordSchema, _ delta: RecordDelta, via: NodeID) async throws -> [RecordRejection] {
            let bytes = RecordCoding.encodeDelta(delta, schema: schema)
            sequence += 1
            let record = bytes.withUnsafeBytes { reading.record($0, sequence: sequence) }
            let report = try await f.store.merge(RemoteBatch(peer: via, sourceStoreID: source, throughSequence: sequence, records: [record]))
            return report.rejections
        }

        func delta(_ schema: RecordSchema, _ id: RecordID, _ w: WireRecord, dot: Dot) -> RecordDelta {
            var state = schema.emptyState(id)
            for (i, v) in w.values.enumerated() { state.registers[i] = Register(v, dot: dot) }
            var d = dot
            let children = w.children.map { c -> Child in
                d = Dot(node: dot.node, stamp: Stamp(raw: d.stamp.raw + 1))
                return Child(collection: c.collection, id: nextID(), dot: d, value: c.value)
            }.sorted { $0.key < $1.key }
            return RecordDelta(state: state, children: children)
        }
    }

    /// A ticket written at irk-office-1, every register valid (its number in another series).
    static func officeTicket(_ id: TicketID, number: UInt64, at node: NodeID = office, region: String = "38") -> Ticket {
        let now = wallNow() - 60_000
        let draft = TicketDraft(channel: .phone, topic: "child-benefits", subject: "Единое пособие",
                                statement: "Когда будет решение?", legalRegime: .appeal59FZ)
        return try! draft.open(id: id, number: TicketNumber(region: region, year: 2026, sequence: number), node: node,
                               now: now, stamp: Stamp(millis: now, logical: 0))
    }

    @Test func everyRegisterAndChildRefusesTheSameBadValueAtBothEdges() async throws {
        let f = try await APIFixture(directory: Self.directory)
        let peer = Peer(f)

        // What the API cases name: a consultation, an appeal (its answer deadline can be
        // extended), a transfer of ours (the sender cancels it) and one to us (we reject it).
        var targets = Targets()
        targets.ticket = try #require(try f.create()["id"] as? String)
        targets.appeal = try #require(try f.create(#","legalRegime":"appeal-59fz""#)["id"] as? String)
        let (sent, _, outgoing) = try f.call(.POST, "/v1/tickets/\(targets.ticket)/transfers",
                                             #"{"to":"sfr","kind":"COPY","reason":{"code":"pension-recalc","text":"Перерасчёт"},"scope":["ref"]}"#)
        #expect(sent == 201, "\(outgoing)")
        targets.outgoing = try #require(outgoing["id"] as? String)

        // A fund's ticket and its COPY to region 38, which irk-main delivers.
        let fundTicket = Self.officeTicket(peer.nextID(), number: 1, at: Self.fund, region: "sfr")
        let now = Self.wallNow() - 60_000
        let toUs = TransferOrder(ticket: fundTicket.id, fromOrganisation: "sfr", fromNode: Self.fund, toOrganisation: "38", kind: .copy,
                                 reasonCode: "info", reasonText: "Для сведения", scope: [.ref], createdAt: now, dueAt: now + 7 * 86_400_000)
        let incomingID = peer.nextID()
        let fundDot = peer.dot(Self.fund)
        #expect(try await peer.send(TransferRecord.schema, peer.delta(TransferRecord.schema, incomingID,
                                                                      WireRecord(values: [TransferValues.encode(toUs)]), dot: fundDot),
                                    via: Self.fund).isEmpty)
        #expect(try await peer.send(TicketRecord.schema, peer.delta(TicketRecord.schema, fundTicket.id,
                                                                    WireRecord(values: fundTicket.registerValues), dot: peer.dot(Self.fund)),
                                    via: Self.fund).isEmpty)
        #expect(try f.store.transfer(incomingID)?.state == .delivered)
        targets.incoming = incomingID.description

        // The valid records the wire cases change one thing in: accepted as they are.
        let base = Self.officeTicket(peer.nextID(), number: 90_000_001)
        let baseOrder = TransferOrder(ticket: base.id, fromOrganisation: "38", fromNode: Self.office, toOrganisation: "sfr", kind: .copy,
                                      reasonCode: "pension-recalc", reasonText: "Перерасчёт", scope: [.ref], createdAt: now,
                                      dueAt: now + 7 * 86_400_000)
        let valid: [(RecordSchema, WireRecord)] = [
            (TicketRecord.schema, WireRecord(values: base.registerValues,
                                             children: [(1, Self.note(text: "Перезвонить")), (2, Self.event(field: "ticket"))])),
            (TransferRecord.schema, WireRecord(values: [TransferValues.encode(baseOrder)],
                                               children: [(1, TransferValues.encode(TransferStep(id: RecordID(high: 1, low: 1), state: .cancelled,
                                                           node: Self.office, stamp: Stamp(raw: 1), actor: Actor(user: "op-1", role: "operator"))))])),
        ]
        for (schema, w) in valid {
            let id = peer.nextID()
            let refused = try await peer.send(schema, peer.delta(schema, id, w, dot: peer.dot(Self.office)), via: Self.office)
            #expect(refused.isEmpty, "the valid \(schema.name) is refused: \(refused)")
            #expect(try f.store.record(kind: schema.kind, id: id) != nil, "the valid \(schema.name) is not stored")
        }

        // Every part of every kind's table has its bad values, and no case names a part that is not there.
        let kinds: [(RecordSchema, WireRecord, [String: [BadValue]])] = [
            (TicketRecord.schema, valid[0].1, Self.ticketCases(base)),
            (TransferRecord.schema, valid[1].1, Self.transferCases(baseOrder)),
        ]
        for (schema, w, cases) in kinds {
            let parts = schema.registers.map { "\(schema.name).\($0.name)" } + schema.collections.map { "\(schema.name).\($0.name)" }
            #expect(Set(cases.keys).subtracting(parts).isEmpty, "cases for parts \(schema.name) does not have: \(Set(cases.keys).subtracting(parts))")
            for part in parts {
                guard let bad = cases[part], !bad.isEmpty else {
                    Issue.record("\(part) has no bad values: every register and collection is walked at both edges")
                    continue
                }
                for c in bad {
                    try await check(c, part: part, schema: schema, valid: w, f: f, peer: peer, targets: targets)
                }
            }
        }
    }

    func check(_ c: BadValue, part: String, schema: RecordSchema, valid: WireRecord, f: APIFixture, peer: Peer,
               targets: Targets) async throws {
        let name = "\(part): \(c.about)"
        let expected = c.expected

        // The operator API: 422 (or the model's status) naming the field, saying the rule; nothing written.
        if let api = c.api {
            let want = try #require(expected.api, "\(name): a case with a request expects the model's refusal")
            let (method, uri, body) = api(targets)
            let before = f.store.lastSequence
            let (status, _, e) = try f.call(method, uri, body)
            let error = e["error"] as? [String: Any]
            #expect(status == Int(want.status.code), "\(name): \(status) \(e)")
            #expect(error?["code"] as? String == want.code, "\(name): \(e)")
            #expect(error?["field"] as? String == want.field, "\(name): \(e)")
            #expect(error?["message"] as? String == want.message, "\(name): \(e)")
            #expect(f.store.lastSequence == before, "\(name): the API wrote something")
        } else {
            #expect(c.edge != nil, "\(name): say which edge writes it")
        }

        // The peer path: a delta of a new record carrying the value, refused whole with the same message.
        var w = valid
        c.wire(&w)
        let id = peer.nextID()
        let refused = try await peer.send(schema, peer.delta(schema, id, w, dot: peer.dot(Self.office)), via: Self.office)
        #expect(refused.count == 1, "\(name): \(refused)")
        if let r = refused.first {
            #expect(r.refusal.reason == expected.reason, "\(name): \(r.refusal)")
            let m = expected.message
            #expect(r.refusal.detail.hasSuffix("." + m) || r.refusal.detail.hasSuffix(": " + m),
                    "\(name): the wire says \"\(r.refusal.detail)\", the model \"\(m)\"")
            #expect(r.whole, "\(name): refused in part")
        }
        #expect(try f.store.record(kind: schema.kind, id: id) == nil, "\(name): stored")
    }
}
