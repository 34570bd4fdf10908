import CaseModel
import Foundation
import Replication
import SwiftProtobuf

// The exact mapping between the replication core's types and the wire messages of
// proto/ekc/replication/v1/replication.proto. Encoding is total and canonical (the
// same state always gives the same bytes: versions by dot, records by id, vector
// entries by node). Decoding checks everything a type's invariants need and throws a
// `WireError` naming the offending field; for every valid state,
// `ReplicatedTicket(wire: Ekc_Replication_V1_TicketState(t)) == t`.
//
// Notes and history events carry no ticket id on the wire: they belong to the
// ticket of the TicketState that carries them (the store keeps that invariant).

public typealias WireDot = Ekc_Replication_V1_Dot
public typealias WireVersionVector = Ekc_Replication_V1_VersionVector
public typealias WireTicketState = Ekc_Replication_V1_TicketState

/// Why a message could not be turned into a model value, with the field's path in
/// the message (e.g. `progress[1].value.status`).
public enum WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// An id that is not exactly 16 bytes.
    case invalidID(field: String, byteCount: Int)
    /// A node id that is not 1–63 lower-case letters, digits and hyphens.
    case invalidNodeID(field: String, value: String)
    /// An enum value that is UNSPECIFIED (0) or unknown to this build.
    case invalidEnum(field: String, value: Int)
    /// A field the type requires is absent.
    case missingField(String)
    /// A value outside its type's domain.
    case invalidValue(field: String, reason: String)
    /// The same key twice where keys are unique (a dot in a register, a record id, a vector entry).
    case duplicate(field: String, key: String)
    /// The protobuf bytes themselves do not parse.
    case malformedMessage(String)
    /// A message could not be serialised.
    case encodingFailed(String)
    /// A length prefix announces a frame longer than the reader accepts.
    case frameTooLarge(length: UInt64, limit: Int)
    /// A length prefix that is not a valid varint (more than 10 bytes, or over 64 bits).
    case malformedLengthPrefix
    /// The input ended in the middle of a frame.
    case truncatedFrame(bufferedBytes: Int)

    public var description: String {
        switch self {
        case let .invalidID(f, n): return "\(f): an id must be 16 bytes, got \(n)"
        case let .invalidNodeID(f, v): return "\(f): invalid node id \"\(v)\""
        case let .invalidEnum(f, v): return "\(f): enum value \(v) is unspecified or unknown"
        case let .missingField(f): return "\(f): required field is missing"
        case let .invalidValue(f, r): return "\(f): \(r)"
        case let .duplicate(f, k): return "\(f): duplicate key \(k)"
        case let .malformedMessage(m): return "malformed message: \(m)"
        case let .encodingFailed(m): return "cannot encode message: \(m)"
        case let .frameTooLarge(l, limit): return "frame of \(l) bytes exceeds the limit of \(limit)"
        case .malformedLengthPrefix: return "malformed frame length prefix"
        case let .truncatedFrame(n): return "stream ended inside a frame (\(n) bytes buffered)"
        }
    }
}

// MARK: - Scalars

enum Decode {
    static func id(_ data: Data, _ field: @autoclosure () -> String) throws(WireError) -> TicketID {
        guard data.count == 16, let id = TicketID(bytes: data) else {
            throw .invalidID(field: field(), byteCount: data.count)
        }
        return id
    }

    static func node(_ s: String, _ field: @autoclosure () -> String) throws(WireError) -> NodeID {
        guard let n = NodeID(s) else { throw .invalidNodeID(field: field(), value: s) }
        return n
    }

    static func stamp(_ raw: UInt64, _ field: @autoclosure () -> String) throws(WireError) -> Stamp {
        guard raw != 0 else { throw .invalidValue(field: field(), reason: "a stamp is never 0") }
        return Stamp(raw: raw)
    }
}

extension TicketID {
    /// The 16 big-endian bytes of the wire form.
    public var wireBytes: Data { Data(bytes) }
}

// MARK: - Dots and version vectors

extension Ekc_Replication_V1_Dot {
    public init(_ d: Dot) {
        self.init()
        node = d.node.value
        stamp = d.stamp.raw
    }
}

extension Dot {
    public init(wire: Ekc_Replication_V1_Dot, field: @autoclosure () -> String = "dot") throws(WireError) {
        self.init(node: try Decode.node(wire.node, field() + ".node"), stamp: try Decode.stamp(wire.stamp, field() + ".stamp"))
    }
}

extension Ekc_Replication_V1_VersionVector {
    public init(_ v: VersionVector) {
        self.init()
        entries = v.sorted.map { entry in
            var e = Entry()
            e.node = entry.node.value
            e.stamp = entry.stamp.raw
            return e
        }
    }
}

extension VersionVector {
    public init(wire: Ekc_Replication_V1_VersionVector, field: @autoclosure () -> String = "context") throws(WireError) {
        var entries: [VersionVector.Entry] = []
        entries.reserveCapacity(wire.entries.count)
        for (i, e) in wire.entries.enumerated() {
            func path() -> String { "\(field()).entries[\(i)]" }
            entries.append(.init(node: try Decode.node(e.node, path() + ".node"), stamp: try Decode.stamp(e.stamp, path() + ".stamp")))
        }
        // Encoders write entries in node order; accept any order, but each node once.
        if !zip(entries, entries.dropFirst()).allSatisfy({ $0.node < $1.node }) {
            entries.sort { $0.node < $1.node }
            for (a, b) in zip(entries, entries.dropFirst()) where a.node == b.node {
                throw .duplicate(field: field() + ".entries", key: a.node.value)
            }
        }
        self.init(sortedUnique: entries)
    }
}

// MARK: - Enums (explicit tables: wire numbers never follow Swift case order)

extension Ekc_Replication_V1_TicketStatus {
    public init(_ s: TicketStatus) {
        switch s {
        case .new: self = .new
        case .registered: self = .registered
        case .inWork: self = .inWork
        case .waiting: self = .waiting
        case .deferred: self = .deferred
        case .answered: self = .answered
        case .closed: self = .closed
        case .reopened: self = .reopened
        case .transferPending: self = .transferPending
        case .transferredOut: self = .transferredOut
        case .merged: self = .merged
        }
    }

    public func model(_ field: @autoclosure () -> String) throws(WireError) -> TicketStatus {
        switch self {
        case .new: return .new
        case .registered: return .registered
        case .inWork: return .inWork
        case .waiting: return .waiting
        case .deferred: return .deferred
        case .answered: return .answered
        case .closed: return .closed
        case .reopened: return .reopened
        case .transferPending: return .transferPending
        case .transferredOut: return .transferredOut
        case .merged: return .merged
        case .unspecified, .UNRECOGNIZED: throw .invalidEnum(field: field(), value: rawValue)
        }
    }
}

extension Ekc_Replication_V1_Channel {
    public init(_ c: Channel) {
        switch c {
        case .phone: self = .phone
        case .walkIn: self = .walkIn
        case .videoSign: self = .videoSign
        case .callback: self = .callback
        case .web: self = .web
        case .epgu: self = .epgu
        case .chatbot: self = .chatbot
        case .voicemail: self = .voicemail
        case .email: self = .email
        case .messenger: self = .messenger
        }
    }

    public func model(_ field: @autoclosure () -> String) throws(WireError) -> Channel {
        switch self {
        case .phone: return .phone
        case .walkIn: return .walkIn
        case .videoSign: return .videoSign
        case .callback: return .callback
        case .web: return .web
        case .epgu: return .epgu
        case .chatbot: return .chatbot
        case .voicemail: return .voicemail
        case .email: return .email
        case .messenger: return .messenger
        case .unspecified, .UNRECOGNIZED: throw .invalidEnum(field: field(), value: rawValue)
        }
    }
}

extension Ekc_Replication_V1_Priority {
    public init(_ p: Priority) {
        switch p {
        case .low: self = .low
        case .normal: self = .normal
        case .high: self = .high
        case .urgent: self = .urgent
        }
    }

    public func model(_ field: @autoclosure () -> String) throws(WireError) -> Priority {
        switch self {
        case .low: return .low
        case .normal: return .normal
        case .high: return .high
        case .urgent: return .urgent
        case .unspecified, .UNRECOGNIZED: throw .invalidEnum(field: field(), value: rawValue)
        }
    }
}

extension Ekc_Replication_V1_LegalRegime {
    public init(_ r: LegalRegime) {
        switch r {
        case .consultation: self = .consultation
        case .appeal59FZ: self = .appeal59Fz
        }
    }

    public func model(_ field: @autoclosure () -> String) throws(WireError) -> LegalRegime {
        switch self {
        case .consultation: return .consultation
        case .appeal59Fz: return .appeal59FZ
        case .unspecified, .UNRECOGNIZED: throw .invalidEnum(field: field(), value: rawValue)
        }
    }
}

extension Ekc_Replication_V1_NoteVisibility {
    public init(_ v: NoteVisibility) {
        switch v {
        case .shared: self = .shared
        case .internal: self = .internal
        }
    }

    public func model(_ field: @autoclosure () -> String) throws(WireError) -> NoteVisibility {
        switch self {
        case .shared: return .shared
        case .internal: return .internal
        case .unspecified, .UNRECOGNIZED: throw .invalidEnum(field: field(), value: rawValue)
        }
    }
}

// MARK: - Register values

extension Ekc_Replication_V1_TicketHeader {
    public init(_ h: TicketHeader) {
        self.init()
        number.region = h.number.region
        number.year = Int64(h.number.year)
        number.sequence = h.number.sequence
        originNode = h.originNode.value
        channel = .init(h.channel)
        legalRegime = .init(h.legalRegime)
        receivedAt = h.receivedAt
    }

    func model(_ field: @autoclosure () -> String) throws(WireError) -> TicketHeader {
        guard hasNumber else { throw .missingField(field() + ".number") }
        guard RegionCode.isValid(number.region) else {
            throw .invalidValue(field: field() + ".number.region", reason: "not a region or fund code: \"\(number.region)\"")
        }
        return TicketHeader(
            number: TicketNumber(region: number.region, year: Int(number.year), sequence: number.sequence),
            originNode: try Decode.node(originNode, field() + ".origin_node"),
            channel: try channel.model(field() + ".channel"),
            legalRegime: try legalRegime.model(field() + ".legal_regime"),
            receivedAt: receivedAt)
    }
}

extension Ekc_Replication_V1_Statement {
    public init(_ s: Replication.Statement) {
        self.init()
        subject = s.subject
        text = s.text
    }

    func model() -> Replication.Statement { Replication.Statement(subject: subject, text: text) }
}

extension Ekc_Replication_V1_Citizen {
    public init(_ c: Citizen) {
        self.init()
        ref = c.ref
        if let n = c.name { name = n }
        if let s = c.snils { snils = s.digits }
        if let p = c.phone { phone = p }
    }

    func model(_ field: @autoclosure () -> String) throws(WireError) -> Citizen {
        var snilsValue: Snils?
        if hasSnils {
            let u = snils.utf8
            guard u.count == 11, u.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw .invalidValue(field: field() + ".snils", reason: "must be 11 digits without separators")
            }
            snilsValue = Snils(trusted: snils)
        }
        return Citizen(ref: ref, name: hasName ? name : nil, snils: snilsValue, phone: hasPhone ? phone : nil)
    }
}

extension Ekc_Replication_V1_Deadlines {
    public init(_ d: Deadlines) {
        self.init()
        registerBy = d.registerBy
        if let v = d.forwardBy { forwardBy = v }
        if let v = d.answerBy { answerBy = v }
        extensionDays = Int64(d.extensionDays)
        if let v = d.callbackBy { callbackBy = v }
    }

    func model(_ field: @autoclosure () -> String) throws(WireError) -> Deadlines {
        guard let days = Int(exactly: extensionDays) else {
            throw .invalidValue(field: field() + ".extension_days", reason: "out of range")
        }
        return Deadlines(registerBy: registerBy, forwardBy: hasForwardBy ? forwardBy : nil,
                         answerBy: hasAnswerBy ? answerBy : nil, extensionDays: days,
                         callbackBy: hasCallbackBy ? callbackBy : nil)
    }
}

extension Ekc_Replication_V1_Progress {
    public init(_ p: Replication.Progress) {
        self.init()
        status = .init(p.status)
        if let r = p.registeredAt { registeredAt = r }
        deadlines = .init(p.deadlines)
    }

    func model(_ field: @autoclosure () -> String) throws(WireError) -> Replication.Progress {
        guard hasDeadlines else { throw .missingField(field() + ".deadlines") }
        return Replication.Progress(status: try status.model(field() + ".status"), registeredAt: hasRegisteredAt ? registeredAt : nil,
                        deadlines: try deadlines.model(field() + ".deadlines"))
    }
}

extension Ekc_Replication_V1_Topic {
    public init(_ t: Replication.Topic) {
        self.init()
        topic = t.topic
        if let s = t.supportMeasure { supportMeasure = s }
    }

    func model() -> Replication.Topic {
        Replication.Topic(topic: topic, supportMeasure: hasSupportMeasure ? supportMeasure : nil)
    }
}

// MARK: - Register versions

/// What every typed version message has in common, so one generic pair of functions
/// maps all eight registers.
protocol WireVersion {
    associatedtype Value: Hashable & Sendable
    init()
    var dot: Ekc_Replication_V1_Dot { get set }
    var hasDot: Bool { get }
    var context: Ekc_Replication_V1_VersionVector { get set }
    /// The value, or nil where the wire value is absent.
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> Value
    mutating func encodeValue(_ value: Value)
}

extension Ekc_Replication_V1_HeaderVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> TicketHeader {
        guard hasValue else { throw .missingField(field()) }
        return try value.model(field())
    }
    mutating func encodeValue(_ v: TicketHeader) { value = .init(v) }
}

extension Ekc_Replication_V1_StatementVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> Replication.Statement {
        guard hasValue else { throw .missingField(field()) }
        return value.model()
    }
    mutating func encodeValue(_ v: Replication.Statement) { value = .init(v) }
}

extension Ekc_Replication_V1_CitizenVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> Citizen? {
        hasValue ? try value.model(field()) : nil
    }
    mutating func encodeValue(_ v: Citizen?) { if let v { value = .init(v) } }
}

extension Ekc_Replication_V1_ProgressVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> Replication.Progress {
        guard hasValue else { throw .missingField(field()) }
        return try value.model(field())
    }
    mutating func encodeValue(_ v: Replication.Progress) { value = .init(v) }
}

extension Ekc_Replication_V1_AssigneeVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> String? { hasValue ? value : nil }
    mutating func encodeValue(_ v: String?) { if let v { value = v } }
}

extension Ekc_Replication_V1_PriorityVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> Priority { try value.model(field()) }
    mutating func encodeValue(_ v: Priority) { value = .init(v) }
}

extension Ekc_Replication_V1_TopicVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> Replication.Topic {
        guard hasValue else { throw .missingField(field()) }
        return value.model()
    }
    mutating func encodeValue(_ v: Replication.Topic) { value = .init(v) }
}

extension Ekc_Replication_V1_OwnerVersion: WireVersion {
    func decodeValue(_ field: @autoclosure () -> String) throws(WireError) -> NodeID { try Decode.node(value, field()) }
    mutating func encodeValue(_ v: NodeID) { value = v.value }
}

enum RegisterMapping {
    static func encode<W: WireVersion>(_ r: Register<W.Value>) -> [W] {
        // Register keeps its versions sorted by dot: the canonical order.
        r.versions.map { v in
            var w = W()
            w.dot = .init(v.dot)
            w.context = .init(v.context)
            w.encodeValue(v.value)
            return w
        }
    }

    /// The register the versions form. Versions another version has seen are dropped
    /// (as a merge would); the same dot twice is refused, since a dot names one write.
    static func decode<W: WireVersion>(_ ws: [W], _ field: String) throws(WireError) -> Register<W.Value> {
        var versions: [Replication.Version<W.Value>] = []
        versions.reserveCapacity(ws.count)
        for (i, w) in ws.enumerated() {
            // Paths are built only for an error message: building them eagerly cost
            // more than decoding the version.
            func path() -> String { "\(field)[\(i)]" }
            guard w.hasDot else { throw .missingField(path() + ".dot") }
            let dot = try Dot(wire: w.dot, field: path() + ".dot")
            guard !versions.contains(where: { $0.dot == dot }) else { throw .duplicate(field: field, key: dot.description) }
            let context = try VersionVector(wire: w.context, field: path() + ".context")
            versions.append(Replication.Version(value: try w.decodeValue(path() + ".value"), dot: dot, context: context))
        }
        return Register(versions: versions)
    }
}

// MARK: - Notes and history

extension Ekc_Replication_V1_Actor {
    public init(_ a: Actor) {
        self.init()
        user = a.user
        role = a.role
    }
}

extension Ekc_Replication_V1_Note {
    public init(_ n: Note) {
        self.init()
        id = n.id.wireBytes
        author = .init(n.author)
        node = n.node.value
        at = n.at
        stamp = n.stamp.raw
        visibility = .init(n.visibility)
        text = n.text
    }

    public func model(ticketID: TicketID, field: @autoclosure () -> String = "note") throws(WireError) -> Note {
        guard hasAuthor else { throw .missingField(field() + ".author") }
        return Note(id: try Decode.id(id, field() + ".id"), ticketID: ticketID,
                    author: Actor(user: author.user, role: author.role),
                    node: try Decode.node(node, field() + ".node"), at: at,
                    stamp: try Decode.stamp(stamp, field() + ".stamp"),
                    visibility: try visibility.model(field() + ".visibility"), text: text)
    }
}

extension Ekc_Replication_V1_HistoryEvent {
    public init(_ e: HistoryEvent) {
        self.init()
        id = e.id.wireBytes
        actor = .init(e.actor)
        node = e.node.value
        at = e.at
        stamp = e.stamp.raw
        field = e.field
        if let o = e.old { oldValue = o }
        if let n = e.new { newValue = n }
    }

    public func model(ticketID: TicketID, field path: @autoclosure () -> String = "history") throws(WireError) -> HistoryEvent {
        guard hasActor else { throw .missingField(path() + ".actor") }
        return HistoryEvent(id: try Decode.id(id, path() + ".id"), ticketID: ticketID,
                            actor: Actor(user: actor.user, role: actor.role),
                            node: try Decode.node(node, path() + ".node"), at: at,
                            stamp: try Decode.stamp(stamp, path() + ".stamp"), field: field,
                            old: hasOldValue ? oldValue : nil, new: hasNewValue ? newValue : nil)
    }
}

// MARK: - Ticket state

extension Ekc_Replication_V1_TicketState {
    /// The wire form of a replicated ticket (canonical: equal states give equal bytes).
    public init(_ t: ReplicatedTicket) {
        self.init()
        id = t.id.wireBytes
        header = RegisterMapping.encode(t.header)
        statement = RegisterMapping.encode(t.statement)
        citizen = RegisterMapping.encode(t.citizen)
        progress = RegisterMapping.encode(t.progress)
        assignee = RegisterMapping.encode(t.assignee)
        priority = RegisterMapping.encode(t.priority)
        topic = RegisterMapping.encode(t.topic)
        owner = RegisterMapping.encode(t.owner)
        notes = t.notes.values.sorted { $0.id < $1.id }.map(Ekc_Replication_V1_Note.init)
        history = t.history.values.sorted { $0.id < $1.id }.map(Ekc_Replication_V1_HistoryEvent.init)
    }
}

extension ReplicatedTicket {
    /// The replicated ticket a wire state describes; throws on anything malformed.
    /// Authority over the writes it carries is not judged here (see `admitted`).
    public init(wire w: Ekc_Replication_V1_TicketState) throws(WireError) {
        self.init(id: try Decode.id(w.id, "id"))
        header = try RegisterMapping.decode(w.header, "header")
        statement = try RegisterMapping.decode(w.statement, "statement")
        citizen = try RegisterMapping.decode(w.citizen, "citizen")
        progress = try RegisterMapping.decode(w.progress, "progress")
        assignee = try RegisterMapping.decode(w.assignee, "assignee")
        priority = try RegisterMapping.decode(w.priority, "priority")
        topic = try RegisterMapping.decode(w.topic, "topic")
        owner = try RegisterMapping.decode(w.owner, "owner")
        for (i, n) in w.notes.enumerated() {
            let note = try n.model(ticketID: id, field: "notes[\(i)]")
            guard notes[note.id] == nil else { throw .duplicate(field: "notes", key: note.id.description) }
            notes[note.id] = note
        }
        for (i, e) in w.history.enumerated() {
            let event = try e.model(ticketID: id, field: "history[\(i)]")
            guard history[event.id] == nil else { throw .duplicate(field: "history", key: event.id.description) }
            history[event.id] = event
        }
    }

    /// Decodes a TicketState from its protobuf bytes.
    public init(wireBytes bytes: [UInt8]) throws(WireError) {
        let w: Ekc_Replication_V1_TicketState
        do { w = try Ekc_Replication_V1_TicketState(serializedBytes: bytes) } catch {
            throw .malformedMessage(String(describing: error))
        }
        try self.init(wire: w)
    }
}
