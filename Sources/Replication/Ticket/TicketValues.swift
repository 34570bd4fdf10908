import CaseModel

// The value of each register and child of a ticket, and its protobuf encoding
// (proto/ekc/replication/v2/ticket.proto). Encoding is canonical: the same value
// always gives the same bytes. Decoding checks every rule of every field by calling
// the model's function for it (CaseModel's `Validation` lists them), the one the
// operator API calls, and throws a refusal whose detail is the model's message
// (field and rule); values in a store were checked on arrival.

/// The facts fixed when a ticket is opened.
public struct TicketHeader: Hashable, Sendable {
    public var number: TicketNumber
    public var originNode: NodeID
    public var channel: Channel
    public var legalRegime: LegalRegime
    public var receivedAt: Millis

    public init(number: TicketNumber, originNode: NodeID, channel: Channel, legalRegime: LegalRegime, receivedAt: Millis) {
        self.number = number
        self.originNode = originNode
        self.channel = channel
        self.legalRegime = legalRegime
        self.receivedAt = receivedAt
    }
}

/// Subject and statement: one value, immutable once registered.
public struct Statement: Hashable, Sendable {
    public var subject: String
    public var text: String
    public init(subject: String, text: String) {
        self.subject = subject
        self.text = text
    }
}

/// Status with the legal clocks its changes start: they change together, so they
/// are one register and can never disagree.
public struct Progress: Hashable, Sendable {
    public var status: TicketStatus
    public var registeredAt: Millis?
    public var deadlines: Deadlines
    public init(status: TicketStatus, registeredAt: Millis?, deadlines: Deadlines) {
        self.status = status
        self.registeredAt = registeredAt
        self.deadlines = deadlines
    }
}

public struct Topic: Hashable, Sendable {
    public var topic: String
    public var supportMeasure: String?
    public init(topic: String, supportMeasure: String?) {
        self.topic = topic
        self.supportMeasure = supportMeasure
    }
}

/// Protobuf enum numbers: every enum's wire number is its stored code + 1 (0 is
/// UNSPECIFIED); both follow `allCases`, which may only grow at the end.
extension StoredCode {
    public var wireNumber: Int { Int(code) + 1 }
    public init?(wireNumber: Int) {
        guard wireNumber >= 1, wireNumber <= 256, let v = Self(code: UInt8(wireNumber - 1)) else { return nil }
        self = v
    }
}

/// Reading a value message: a refusal for malformed bytes and for broken rules.
/// Unchecked (`checked: false`) is for values this node admitted before it stored them:
/// the structure is still read strictly (with the enumerations and instants the model
/// needs to hold a value at all), the rules of the domain and UTF-8 are not judged
/// again on every read (perf: a third of a point read). Judged or not, a rule is the
/// model's function, never one of this file's own.
struct ValueReader {
    var r: ProtoReader
    let path: String
    var checked = true

    @inline(__always)
    static func read<T>(_ bytes: some ValueSource, _ path: String, checked: Bool = true,
                        _ body: (inout ValueReader) throws(Refusal) -> T) throws(Refusal) -> T {
        let result: Result<T, Refusal> = bytes.withValueBytes { b in
            var v = ValueReader(r: ProtoReader(b), path: path, checked: checked)
            do throws(Refusal) { return .success(try body(&v)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    func malformed(_ e: ProtoError, _ field: String) -> Refusal { Refusal(.malformed, "\(field): \(e)") }

    /// Calls `take` for every field; the fields it does not read are skipped.
    mutating func fields(_ take: (inout ValueReader, Int, UInt8) throws(Refusal) -> Bool) throws(Refusal) {
        while true {
            let next: (number: Int, wireType: UInt8)?
            do throws(ProtoError) { next = try r.field() } catch { throw malformed(error, path) }
            guard let (n, t) = next else { return }
            if try !take(&self, n, t) {
                do throws(ProtoError) { try r.skip(t) } catch { throw malformed(error, path) }
            }
        }
    }

    mutating func varint(_ field: String) throws(Refusal) -> UInt64 {
        do throws(ProtoError) { return try r.varint() } catch { throw malformed(error, field) }
    }

    mutating func int64(_ field: String) throws(Refusal) -> Int64 { Int64(bitPattern: try varint(field)) }

    mutating func string(_ field: String) throws(Refusal) -> String {
        do throws(ProtoError) { return try r.string(verify: checked) } catch { throw malformed(error, field) }
    }

    mutating func bytes(_ field: String) throws(Refusal) -> [UInt8] {
        do throws(ProtoError) { return try r.bytes() } catch { throw malformed(error, field) }
    }

    var atEnd: Bool { r.atEnd }

    mutating func nested<T>(_ field: String, _ body: (inout ValueReader) throws(Refusal) -> T) throws(Refusal) -> T {
        var sub: ProtoReader
        do throws(ProtoError) { sub = try r.nested() } catch { throw malformed(error, field) }
        var v = ValueReader(r: sub, path: field, checked: checked)
        return try body(&v)
    }

    /// An instant (`PlausibleTime`), judged on every read: deadline arithmetic must not overflow.
    func time(_ v: Int64, _ field: String) throws(Refusal) -> Millis {
        do throws(TicketError) { return try PlausibleTime.check(v, field: field) } catch { throw ValueReader.refusal(error) }
    }

    /// An enumeration's wire number (its stored code + 1); UNSPECIFIED and unknown
    /// numbers are refused as the operator API refuses an unknown name.
    func enumValue<E: StoredCode & RawRepresentable>(_ raw: UInt64, _ field: String) throws(Refusal) -> E where E.RawValue == String {
        guard raw <= 255, let e = E(wireNumber: Int(raw)) else { throw ValueReader.refusal(Validation.notOneOf(E.self, field: field)) }
        return e
    }

    func node(_ s: String, _ field: String, _ directory: Directory?) throws(Refusal) -> NodeID {
        guard let n = NodeID(s) else { throw Refusal(.invalidValue, "\(field): \"\(s.prefix(80))\" is not a node id") }
        if let directory, !directory.knows(n) { throw Refusal(.unknownNode, "\(field): \(n) is not in the topology") }
        return n
    }

    /// Runs the model's rules of a value, when checking: a broken one is refused with
    /// the model's message, which names the field and the rule as the operator API does.
    func model(_ check: () throws(TicketError) -> Void) throws(Refusal) {
        guard checked else { return }
        do throws(TicketError) { try check() } catch { throw ValueReader.refusal(error) }
    }

    /// The model's refusal on the wire: over a byte budget is `too_large`, any other
    /// broken rule `invalid_value`; the detail is the message the operator API gives.
    static func refusal(_ e: TicketError) -> Refusal {
        if case .tooLong = e { return Refusal(.tooLarge, e.message) }
        return Refusal(.invalidValue, e.message)
    }
}

// MARK: - Codecs, one per value message

public enum TicketValues {
    // Register 1: TicketHeader { TicketNumber number = 1; origin_node = 2; channel = 3; legal_regime = 4; received_at = 5 }
    public static func encode(_ h: TicketHeader) -> ValueBytes {
        var w = ProtoWriter(capacity: 48)
        w.message(1) { w in
            w.string(1, h.number.region)
            w.int64(2, Int64(h.number.year))
            w.uint64(3, h.number.sequence)
        }
        w.string(2, h.originNode.value)
        w.enumValue(3, h.channel.wireNumber)
        w.enumValue(4, h.legalRegime.wireNumber)
        w.int64(5, h.receivedAt)
        return w.bytes
    }

    public static func header(_ b: some ValueSource, directory: Directory? = nil, checked: Bool = true) throws(Refusal) -> TicketHeader {
        try ValueReader.read(b, "header", checked: checked) { v throws(Refusal) in
            var number: TicketNumber?
            var origin = "", channel: UInt64 = 0, regime: UInt64 = 0, received: Int64 = 0
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 2):
                    guard number == nil else { throw RecordCoding.twice("header.number") }
                    number = try v.nested("number") { v throws(Refusal) in
                        var region = "", year: Int64 = 0, seq: UInt64 = 0
                        try v.fields { v, n, t throws(Refusal) in
                            switch (n, t) {
                            case (1, 2): region = try v.string("number.region")
                            case (2, 0): year = try v.int64("number.year")
                            case (3, 0): seq = try v.varint("number.sequence")
                            default: return false
                            }
                            return true
                        }
                        guard RegionCode.isValid(region) else {
                            throw Refusal(.invalidValue, "number.region: \"\(region.prefix(40))\" is not a region or fund code")
                        }
                        guard PlausibleTime.years.contains(Int(truncatingIfNeeded: year)), year == Int64(Int(truncatingIfNeeded: year)) else {
                            throw Refusal(.invalidValue, "number.year: \(year) is not in 2000–2199")
                        }
                        guard (1...1_000_000_000_000).contains(seq) else {
                            throw Refusal(.invalidValue, "number.sequence: \(seq) is not in 1–10^12")
                        }
                        return TicketNumber(region: region, year: Int(year), sequence: seq)
                    }
                case (2, 2): origin = try v.string("origin_node")
                case (3, 0): channel = try v.varint("channel")
                case (4, 0): regime = try v.varint("legal_regime")
                case (5, 0): received = try v.int64("received_at")
                default: return false
                }
                return true
            }
            guard let number else { throw Refusal(.invalidValue, "number: required") }
            return TicketHeader(number: number, originNode: try v.node(origin, "origin_node", directory),
                                channel: try v.enumValue(channel, "channel"),
                                legalRegime: try v.enumValue(regime, "legalRegime"),
                                receivedAt: try v.time(received, "receivedAt"))
        }
    }

    // Register 2: Statement { subject = 1; text = 2 }
    public static func encode(_ s: Statement) -> ValueBytes {
        var w = ProtoWriter(capacity: 16 + s.subject.utf8.count + s.text.utf8.count)
        w.string(1, s.subject)
        w.string(2, s.text)
        return w.bytes
    }

    public static func statement(_ b: some ValueSource, checked: Bool = true) throws(Refusal) -> Statement {
        try ValueReader.read(b, "statement", checked: checked) { v throws(Refusal) in
            var subject = "", text = ""
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 2): subject = try v.string("subject")
                case (2, 2): text = try v.string("text")
                default: return false
                }
                return true
            }
            try v.model { () throws(TicketError) in
                try Validation.subject(subject)
                try Validation.statement(text)
            }
            return Statement(subject: subject, text: text)
        }
    }

    // Register 3: CitizenValue { Citizen citizen = 1 }, Citizen { ref = 1; optional name = 2; optional snils = 3; optional phone = 4 }
    public static func encode(_ c: Citizen?) -> ValueBytes {
        guard let c else { return [] }
        var w = ProtoWriter(capacity: 64)
        w.message(1) { w in
            w.string(1, c.ref)
            w.optionalString(2, c.name)
            w.optionalString(3, c.snils?.digits)
            w.optionalString(4, c.phone)
        }
        return w.bytes
    }

    public static func citizen(_ b: some ValueSource, checked: Bool = true) throws(Refusal) -> Citizen? {
        try ValueReader.read(b, "citizen", checked: checked) { v throws(Refusal) in
            var citizen: Citizen?
            var seen = false
            try v.fields { v, n, t throws(Refusal) in
                guard n == 1, t == 2 else { return false }
                guard !seen else { throw RecordCoding.twice("citizen") }
                seen = true
                citizen = try v.nested("citizen") { v throws(Refusal) in
                    var ref = "", name: String?, snils: String?, phone: String?
                    try v.fields { v, n, t throws(Refusal) in
                        switch (n, t) {
                        case (1, 2): ref = try v.string("ref")
                        case (2, 2): name = try v.string("name")
                        case (3, 2): snils = try v.string("snils")
                        case (4, 2): phone = try v.string("phone")
                        default: return false
                        }
                        return true
                    }
                    // A value written before the split may carry the details: each by its rule.
                    try v.model { () throws(TicketError) in
                        try Citizen.validate(ref: ref)
                        if let name { try Citizen.validate(name: name) }
                        if let snils { try Snils.validate(digits: snils) }
                        if let phone { try Citizen.validate(phone: phone) }
                    }
                    // A stored value is read unchecked, but not its length: masking slices 11 bytes (O(1)).
                    if !checked, let s = snils, s.utf8.count != 11 { throw Refusal(.invalidValue, "citizen.snils: \(s.utf8.count) bytes, not 11 digits") }
                    return Citizen(ref: ref, name: name, snils: snils.map { Snils(trusted: $0) }, phone: phone)
                }
                return true
            }
            return citizen
        }
    }

    // Registers 9–11: CitizenName { optional name = 1 }, CitizenSnils { optional snils = 1 },
    // CitizenPhone { optional phone = 1 }: one detail each, the same layout.
    public enum CitizenDetail: String, CaseIterable, Sendable {
        case name, snils, phone
    }

    public static func encode(detail: String?) -> ValueBytes {
        var w = ProtoWriter(capacity: 24)
        w.optionalString(1, detail)
        return w.bytes
    }

    public static func citizenDetail(_ d: CitizenDetail, _ b: some ValueSource, checked: Bool = true) throws(Refusal) -> String? {
        try ValueReader.read(b, "citizen.\(d.rawValue)", checked: checked) { v throws(Refusal) in
            var s: String?
            try v.fields { v, n, t throws(Refusal) in
                guard n == 1, t == 2 else { return false }
                s = try v.string(d.rawValue)
                return true
            }
            guard let s else { return nil }
            try v.model { () throws(TicketError) in
                switch d {
                case .name: try Citizen.validate(name: s)
                case .snils: try Snils.validate(digits: s)
                case .phone: try Citizen.validate(phone: s)
                }
            }
            return s
        }
    }

    // Register 4: Progress { status = 1; optional registered_at = 2; Deadlines deadlines = 3 }
    // Deadlines { register_by = 1; optional forward_by = 2; optional answer_by = 3; extension_days = 4; optional callback_by = 5 }
    public static func encode(_ p: Progress) -> ValueBytes {
        var w = ProtoWriter(capacity: 48)
        w.enumValue(1, p.status.wireNumber)
        w.optionalInt64(2, p.registeredAt)
        let d = p.deadlines
        w.message(3) { w in
            w.int64(1, d.registerBy)
            w.optionalInt64(2, d.forwardBy)
            w.optionalInt64(3, d.answerBy)
            w.int64(4, Int64(d.extensionDays))
            w.optionalInt64(5, d.callbackBy)
        }
        return w.bytes
    }

    public static func progress(_ b: some ValueSource, checked: Bool = true) throws(Refusal) -> Progress {
        try ValueReader.read(b, "progress", checked: checked) { v throws(Refusal) in
            var status: UInt64 = 0, registered: Int64?
            var deadlines: Deadlines?
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 0): status = try v.varint("status")
                case (2, 0): registered = try v.int64("registered_at")
                case (3, 2):
                    guard deadlines == nil else { throw RecordCoding.twice("progress.deadlines") }
                    deadlines = try v.nested("deadlines") { v throws(Refusal) in
                        var registerBy: Int64 = 0, forward: Int64?, answer: Int64?, ext: Int64 = 0, callback: Int64?
                        try v.fields { v, n, t throws(Refusal) in
                            switch (n, t) {
                            case (1, 0): registerBy = try v.int64("deadlines.register_by")
                            case (2, 0): forward = try v.int64("deadlines.forward_by")
                            case (3, 0): answer = try v.int64("deadlines.answer_by")
                            case (4, 0): ext = try v.int64("deadlines.extension_days")
                            case (5, 0): callback = try v.int64("deadlines.callback_by")
                            default: return false
                            }
                            return true
                        }
                        // 0 is no extension; any other number is the days of the one extension
                        // (judged on every read, as the instants are: a value the model holds).
                        if ext != 0 {
                            do throws(TicketError) { try Deadlines.validate(extensionDays: Int(ext)) } catch { throw ValueReader.refusal(error) }
                        }
                        return Deadlines(registerBy: try v.time(registerBy, "deadlines.registerBy"),
                                         forwardBy: try forward.map { x throws(Refusal) in try v.time(x, "deadlines.forwardBy") },
                                         answerBy: try answer.map { x throws(Refusal) in try v.time(x, "deadlines.answerBy") },
                                         extensionDays: Int(ext),
                                         callbackBy: try callback.map { x throws(Refusal) in try v.time(x, "deadlines.callbackBy") })
                    }
                default: return false
                }
                return true
            }
            guard let deadlines else { throw Refusal(.invalidValue, "deadlines: required") }
            return Progress(status: try v.enumValue(status, "status"),
                            registeredAt: try registered.map { x throws(Refusal) in try v.time(x, "registeredAt") },
                            deadlines: deadlines)
        }
    }

    // Register 5: AssigneeValue { optional operator = 1 }
    public static func encode(assignee a: String?) -> ValueBytes {
        var w = ProtoWriter(capacity: 24)
        w.optionalString(1, a)
        return w.bytes
    }

    public static func assignee(_ b: some ValueSource, checked: Bool = true) throws(Refusal) -> String? {
        try ValueReader.read(b, "assignee", checked: checked) { v throws(Refusal) in
            var a: String?
            try v.fields { v, n, t throws(Refusal) in
                guard n == 1, t == 2 else { return false }
                a = try v.string("operator")
                return true
            }
            if let a { try v.model { () throws(TicketError) in try Validation.assignee(a) } }
            return a
        }
    }

    // Register 6: PriorityValue { priority = 1 }
    public static func encode(_ p: Priority) -> ValueBytes {
        var w = ProtoWriter(capacity: 2)
        w.enumValue(1, p.wireNumber)
        return w.bytes
    }

    public static func priority(_ b: some ValueSource, checked: Bool = true) throws(Refusal) -> Priority {
        try ValueReader.read(b, "priority", checked: checked) { v throws(Refusal) in
            var raw: UInt64 = 0
            try v.fields { v, n, t throws(Refusal) in
                guard n == 1, t == 0 else { return false }
                raw = try v.varint("priority")
                return true
            }
            return try v.enumValue(raw, "priority")
        }
    }

    // Register 7: Topic { topic = 1; optional support_measure = 2 }
    public static func encode(_ t: Topic) -> ValueBytes {
        var w = ProtoWriter(capacity: 48)
        w.string(1, t.topic)
        w.optionalString(2, t.supportMeasure)
        return w.bytes
    }

    public static func topic(_ b: some ValueSource, checked: Bool = true) throws(Refusal) -> Topic {
        try ValueReader.read(b, "topic", checked: checked) { v throws(Refusal) in
            var topic = "", measure: String?
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 2): topic = try v.string("topic")
                case (2, 2): measure = try v.string("support_measure")
                default: return false
                }
                return true
            }
            try v.model { () throws(TicketError) in
                try Validation.topic(topic)
                if let measure { try Validation.supportMeasure(measure) }
            }
            return Topic(topic: topic, supportMeasure: measure)
        }
    }

    // Register 8: OwnerValue { node = 1 }
    public static func encode(owner: NodeID) -> ValueBytes {
        var w = ProtoWriter(capacity: 24)
        w.string(1, owner.value)
        return w.bytes
    }

    public static func owner(_ b: some ValueSource, directory: Directory? = nil, checked: Bool = true) throws(Refusal) -> NodeID {
        try ValueReader.read(b, "owner", checked: checked) { v throws(Refusal) in
            var node = ""
            try v.fields { v, n, t throws(Refusal) in
                guard n == 1, t == 2 else { return false }
                node = try v.string("node")
                return true
            }
            return try v.node(node, "node", directory)
        }
    }

    // Actor { user = 1; role = 2 }
    static func actor(_ v: inout ValueReader, _ field: String) throws(Refusal) -> Actor {
        try v.nested(field) { v throws(Refusal) in
            var user = "", role = ""
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 2): user = try v.string("\(field).user")
                case (2, 2): role = try v.string("\(field).role")
                default: return false
                }
                return true
            }
            // Judged on every read, as before: an actor is who a person sees wrote it.
            do throws(TicketError) { try Actor.validate(user: user, role: role, field: field) } catch { throw ValueReader.refusal(error) }
            return Actor(user: user, role: role)
        }
    }

    // Collection 1: Note { Actor author = 1; at = 2; visibility = 3; text = 4 } (node and stamp: the child's dot)
    public static func encode(_ n: Note) -> ValueBytes {
        var w = ProtoWriter(capacity: 48 + n.text.utf8.count)
        w.message(1) { w in
            w.string(1, n.author.user)
            w.string(2, n.author.role)
        }
        w.int64(2, n.at)
        w.enumValue(3, n.visibility.wireNumber)
        w.string(4, n.text)
        return w.bytes
    }

    public static func note(_ c: Child, ticket: TicketID, checked: Bool = true) throws(Refusal) -> Note {
        try ValueReader.read(c.value, "note", checked: checked) { v throws(Refusal) in
            var author: Actor?, at: Int64 = 0, visibility: UInt64 = 0, text = ""
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 2):
                    guard author == nil else { throw RecordCoding.twice("note.author") }
                    author = try actor(&v, "author")
                case (2, 0): at = try v.int64("at")
                case (3, 0): visibility = try v.varint("visibility")
                case (4, 2): text = try v.string("text")
                default: return false
                }
                return true
            }
            guard let author else { throw Refusal(.invalidValue, "author: required") }
            try v.model { () throws(TicketError) in try Note.validate(text: text) }
            return Note(id: c.id, ticketID: ticket, author: author, node: c.dot.node, at: try v.time(at, "at"),
                        stamp: c.dot.stamp, visibility: try v.enumValue(visibility, "visibility"), text: text)
        }
    }

    // Collection 2: HistoryEvent { Actor actor = 1; at = 2; field = 3; optional old_value = 4; optional new_value = 5 }
    public static func encode(_ e: HistoryEvent) -> ValueBytes {
        var w = ProtoWriter(capacity: 64 + (e.old?.utf8.count ?? 0) + (e.new?.utf8.count ?? 0))
        w.message(1) { w in
            w.string(1, e.actor.user)
            w.string(2, e.actor.role)
        }
        w.int64(2, e.at)
        w.string(3, e.field)
        w.optionalString(4, e.old)
        w.optionalString(5, e.new)
        return w.bytes
    }

    public static func event(_ c: Child, ticket: TicketID, checked: Bool = true) throws(Refusal) -> HistoryEvent {
        try ValueReader.read(c.value, "history", checked: checked) { v throws(Refusal) in
            var actor: Actor?, at: Int64 = 0, field = "", old: String?, new: String?
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 2):
                    guard actor == nil else { throw RecordCoding.twice("history.actor") }
                    actor = try TicketValues.actor(&v, "actor")
                case (2, 0): at = try v.int64("at")
                case (3, 2): field = try v.string("field")
                case (4, 2): old = try v.string("old_value")
                case (5, 2): new = try v.string("new_value")
                default: return false
                }
                return true
            }
            guard let actor else { throw Refusal(.invalidValue, "actor: required") }
            try v.model { () throws(TicketError) in try HistoryEvent.validate(field: field, old: old, new: new) }
            return HistoryEvent(id: c.id, ticketID: ticket, actor: actor, node: c.dot.node, at: try v.time(at, "at"),
                                stamp: c.dot.stamp, field: field, old: old, new: new)
        }
    }
}
