import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

/// One codec of `TicketValues` beside the generated message it must agree with.
struct ValueCodec<Model: Equatable, Message: SwiftProtobuf.Message & Equatable>: Sendable {
    let random: @Sendable (inout SeededRandom) -> Model
    let encode: @Sendable (Model) -> ValueBytes
    let decode: @Sendable (ValueBytes) throws(Refusal) -> Model
    /// The generated message of a value, built field by field.
    let message: @Sendable (Model) -> Message
    /// A generated message read into the model without the codec's rules (nil where
    /// the model cannot hold it: an unknown enum value, a malformed node id).
    let model: @Sendable (Message) -> Model?
}

// The fixed parts of a child (its id, its dot, its ticket) that the value message does not carry.
private let childID = RecordID(millis: UInt64(testNow), randomHigh: 5, randomLow: 5)
private let childDot = Dot(node: irkutskNodes[2], stamp: Stamp(millis: testNow, logical: 17))
private let ticketID = RecordID(millis: UInt64(testNow), randomHigh: 6, randomLow: 6)

private func wire<E: SwiftProtobuf.Enum>(_ v: some StoredCode, _: E.Type = E.self) -> E where E.RawValue == Int { E(rawValue: v.wireNumber)! }
private func model<M: StoredCode, E: SwiftProtobuf.Enum>(_ e: E) -> M? where E.RawValue == Int { M(wireNumber: e.rawValue) }

private func actor(_ a: Actor) -> Ekc_Replication_V2_Actor {
    var g = Ekc_Replication_V2_Actor()
    g.user = a.user
    g.role = a.role
    return g
}

enum Codecs {
    static let header = ValueCodec<TicketHeader, Ekc_Replication_V2_TicketHeader>(
        random: { RandomTicketValues.header(&$0) },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in try TicketValues.header(b) },
        message: { h in
            var g = Ekc_Replication_V2_TicketHeader()
            g.number.region = h.number.region
            g.number.year = Int64(h.number.year)
            g.number.sequence = h.number.sequence
            g.originNode = h.originNode.value
            g.channel = wire(h.channel)
            g.legalRegime = wire(h.legalRegime)
            g.receivedAt = h.receivedAt
            return g
        },
        model: { g in
            guard g.hasNumber, let node = NodeID(g.originNode), let c: Channel = model(g.channel),
                  let r: LegalRegime = model(g.legalRegime) else { return nil }
            return TicketHeader(number: TicketNumber(region: g.number.region, year: Int(g.number.year), sequence: g.number.sequence),
                                originNode: node, channel: c, legalRegime: r, receivedAt: g.receivedAt)
        })

    static let statement = ValueCodec<Statement, Ekc_Replication_V2_Statement>(
        random: { RandomTicketValues.statement(&$0) },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in try TicketValues.statement(b) },
        message: { s in
            var g = Ekc_Replication_V2_Statement()
            g.subject = s.subject
            g.text = s.text
            return g
        },
        model: { Statement(subject: $0.subject, text: $0.text) })

    static let citizen = ValueCodec<Citizen?, Ekc_Replication_V2_CitizenValue>(
        random: { RandomTicketValues.citizen(&$0) },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in try TicketValues.citizen(b) },
        message: { c in
            var g = Ekc_Replication_V2_CitizenValue()
            if let c {
                g.citizen.ref = c.ref
                if let n = c.name { g.citizen.name = n }
                if let s = c.snils { g.citizen.snils = s.digits }
                if let p = c.phone { g.citizen.phone = p }
            }
            return g
        },
        model: { g in
            guard g.hasCitizen else { return .some(nil) }
            let c = g.citizen
            return Citizen(ref: c.ref, name: c.hasName ? c.name : nil, snils: c.hasSnils ? Snils(trusted: c.snils) : nil,
                           phone: c.hasPhone ? c.phone : nil)
        })

    static let progress = ValueCodec<Replication.Progress, Ekc_Replication_V2_Progress>(
        random: { RandomTicketValues.progress(&$0) },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in try TicketValues.progress(b) },
        message: { p in
            var g = Ekc_Replication_V2_Progress()
            g.status = wire(p.status)
            if let r = p.registeredAt { g.registeredAt = r }
            g.deadlines.registerBy = p.deadlines.registerBy
            if let f = p.deadlines.forwardBy { g.deadlines.forwardBy = f }
            if let a = p.deadlines.answerBy { g.deadlines.answerBy = a }
            g.deadlines.extensionDays = Int64(p.deadlines.extensionDays)
            if let c = p.deadlines.callbackBy { g.deadlines.callbackBy = c }
            return g
        },
        model: { g in
            guard g.hasDeadlines, let s: TicketStatus = model(g.status) else { return nil }
            let d = g.deadlines
            return Replication.Progress(status: s, registeredAt: g.hasRegisteredAt ? g.registeredAt : nil,
                            deadlines: Deadlines(registerBy: d.registerBy, forwardBy: d.hasForwardBy ? d.forwardBy : nil,
                                                 answerBy: d.hasAnswerBy ? d.answerBy : nil, extensionDays: Int(d.extensionDays),
                                                 callbackBy: d.hasCallbackBy ? d.callbackBy : nil))
        })

    static let assignee = ValueCodec<String?, Ekc_Replication_V2_AssigneeValue>(
        random: { RandomTicketValues.assignee(&$0) },
        encode: { TicketValues.encode(assignee: $0) },
        decode: { b throws(Refusal) in try TicketValues.assignee(b) },
        message: { a in
            var g = Ekc_Replication_V2_AssigneeValue()
            if let a { g.operator = a }
            return g
        },
        model: { g in .some(g.hasOperator ? g.operator : nil) })

    static let priority = ValueCodec<Priority, Ekc_Replication_V2_PriorityValue>(
        random: { RandomTicketValues.priority(&$0) },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in try TicketValues.priority(b) },
        message: { p in
            var g = Ekc_Replication_V2_PriorityValue()
            g.priority = wire(p)
            return g
        },
        model: { model($0.priority) })

    static let topic = ValueCodec<Topic, Ekc_Replication_V2_Topic>(
        random: { RandomTicketValues.topic(&$0) },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in try TicketValues.topic(b) },
        message: { t in
            var g = Ekc_Replication_V2_Topic()
            g.topic = t.topic
            if let m = t.supportMeasure { g.supportMeasure = m }
            return g
        },
        model: { Topic(topic: $0.topic, supportMeasure: $0.hasSupportMeasure ? $0.supportMeasure : nil) })

    static let owner = ValueCodec<NodeID, Ekc_Replication_V2_OwnerValue>(
        random: { RandomTicketValues.node(&$0) },
        encode: { TicketValues.encode(owner: $0) },
        decode: { b throws(Refusal) in try TicketValues.owner(b) },
        message: { n in
            var g = Ekc_Replication_V2_OwnerValue()
            g.node = n.value
            return g
        },
        model: { NodeID($0.node) })

    static let note = ValueCodec<Note, Ekc_Replication_V2_Note>(
        random: { rng in
            let n = RandomTicketValues.note(&rng, ticket: ticketID)
            return Note(id: childID, ticketID: ticketID, author: n.author, node: childDot.node, at: n.at, stamp: childDot.stamp,
                        visibility: n.visibility, text: n.text)
        },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in
            try TicketValues.note(Child(collection: 1, id: childID, dot: childDot, value: b), ticket: ticketID)
        },
        message: { n in
            var g = Ekc_Replication_V2_Note()
            g.author = actor(n.author)
            g.at = n.at
            g.visibility = wire(n.visibility)
            g.text = n.text
            return g
        },
        model: { g in
            guard g.hasAuthor, let v: NoteVisibility = model(g.visibility) else { return nil }
            return Note(id: childID, ticketID: ticketID, author: Actor(user: g.author.user, role: g.author.role), node: childDot.node,
                        at: g.at, stamp: childDot.stamp, visibility: v, text: g.text)
        })

    static let event = ValueCodec<HistoryEvent, Ekc_Replication_V2_HistoryEvent>(
        random: { rng in
            let e = RandomTicketValues.event(&rng, ticket: ticketID)
            return HistoryEvent(id: childID, ticketID: ticketID, actor: e.actor, node: childDot.node, at: e.at, stamp: childDot.stamp,
                                field: e.field, old: e.old, new: e.new)
        },
        encode: { TicketValues.encode($0) },
        decode: { b throws(Refusal) in
            try TicketValues.event(Child(collection: 2, id: childID, dot: childDot, value: b), ticket: ticketID)
        },
        message: { e in
            var g = Ekc_Replication_V2_HistoryEvent()
            g.actor = actor(e.actor)
            g.at = e.at
            g.field = e.field
            if let o = e.old { g.oldValue = o }
            if let n = e.new { g.newValue = n }
            return g
        },
        model: { g in
            guard g.hasActor else { return nil }
            return HistoryEvent(id: childID, ticketID: ticketID, actor: Actor(user: g.actor.user, role: g.actor.role),
                                node: childDot.node, at: g.at, stamp: childDot.stamp, field: g.field,
                                old: g.hasOldValue ? g.oldValue : nil, new: g.hasNewValue ? g.newValue : nil)
        })
}

/// Each codec against its generated message: on random valid values, the same bytes
/// both ways and the same value back; on randomly damaged bytes, whatever our codec
/// accepts swift-protobuf reads as the same value, and whatever swift-protobuf refuses
/// our codec refuses.
@Suite struct TicketValuesTests {
    func agreement<M, G>(_ c: ValueCodec<M, G>, seed: UInt64, cases: Int = 400) throws {
        var rng = SeededRandom(seed: seed)
        var mismatches = 0
        for i in 0..<cases {
            let v = c.random(&rng)
            let ours = c.encode(v)
            let theirs: [UInt8] = try c.message(v).serializedBytes()
            if ours != theirs { mismatches += 1 }
            #expect(ours == theirs, "case \(i): \(v)")
            #expect(try G(serializedBytes: ours) == c.message(v), "case \(i)")
            #expect(try c.decode(theirs) == v, "case \(i)")
            #expect(c.model(try G(serializedBytes: ours)) == v, "case \(i)")
            if mismatches > 3 { return }
        }
        var accepted = 0
        for round in 0..<cases * 4 {
            var b = c.encode(c.random(&rng))
            for _ in 0..<Int.random(in: 1...3, using: &rng) { b = mutate(b, &rng) }
            let reference = try? G(serializedBytes: b)
            let ours = Result { () throws(Refusal) in try c.decode(b) }
            if reference == nil, case .success(let v) = ours {
                Issue.record("round \(round): swift-protobuf refuses \(b), ours reads \(v)")
            }
            if case .success(let v) = ours {
                accepted += 1
                #expect(reference.flatMap(c.model) == v, "round \(round): \(b)")
            }
        }
        #expect(accepted > 0)
    }

    @Test(arguments: [1, 2] as [UInt64]) func header(seed: UInt64) throws { try agreement(Codecs.header, seed: seed) }
    @Test(arguments: [1, 2] as [UInt64]) func statement(seed: UInt64) throws { try agreement(Codecs.statement, seed: seed, cases: 150) }
    @Test(arguments: [1, 2] as [UInt64]) func citizen(seed: UInt64) throws { try agreement(Codecs.citizen, seed: seed) }
    @Test(arguments: [1, 2] as [UInt64]) func progress(seed: UInt64) throws { try agreement(Codecs.progress, seed: seed) }
    @Test(arguments: [1, 2] as [UInt64]) func assignee(seed: UInt64) throws { try agreement(Codecs.assignee, seed: seed) }
    @Test(arguments: [1, 2] as [UInt64]) func priority(seed: UInt64) throws { try agreement(Codecs.priority, seed: seed) }
    @Test(arguments: [1, 2] as [UInt64]) func topic(seed: UInt64) throws { try agreement(Codecs.topic, seed: seed) }
    @Test(arguments: [1, 2] as [UInt64]) func owner(seed: UInt64) throws { try agreement(Codecs.owner, seed: seed) }
    @Test(arguments: [1, 2] as [UInt64]) func note(seed: UInt64) throws { try agreement(Codecs.note, seed: seed, cases: 200) }
    @Test(arguments: [1, 2] as [UInt64]) func event(seed: UInt64) throws { try agreement(Codecs.event, seed: seed, cases: 200) }

    /// A whole ticket's register values are the eight codecs', in table order, and read back as the ticket.
    @Test func ticketRegisterValues() throws {
        var rng = SeededRandom(seed: 3)
        for _ in 0..<200 {
            let t = RandomTicketValues.ticket(&rng)
            let v = t.registerValues
            #expect(v.count == TicketRecord.schema.registers.count)
            #expect(v[0] == Codecs.header.encode(TicketHeader(number: t.number, originNode: t.originNode, channel: t.channel,
                                                               legalRegime: t.legalRegime, receivedAt: t.receivedAt)))
            #expect(v[3] == Codecs.progress.encode(Replication.Progress(status: t.status, registeredAt: t.registeredAt, deadlines: t.deadlines)))
            #expect(v[7] == Codecs.owner.encode(t.ownerNode))
            for (i, d) in TicketRecord.schema.registers.enumerated() {
                #expect(throws: Never.self, "\(d.name)") { try d.check(v[i], CheckContext(directory: testDirectory)) }
                #expect(v[i].count <= d.maxValueBytes, "\(d.name)")
            }
            let back = Ticket.ticket(id: t.id, winners: v, local: LocalRecordInfo(version: t.version), latest: t.updatedStamp)
            #expect(back == t)
        }
    }

    /// Each rule of a value, broken alone, is refused naming the field.
    @Test func valueRefusals() throws {
        func bytes<G: SwiftProtobuf.Message>(_ g: G) -> ValueBytes { try! g.serializedBytes() }
        var rng = SeededRandom(seed: 4)
        let h = Codecs.header.message(RandomTicketValues.header(&rng))
        var p = Codecs.progress.message(RandomTicketValues.progress(&rng))
        p.status = .inWork
        let n = Codecs.note.message(Codecs.note.random(&rng))
        let e = Codecs.event.message(Codecs.event.random(&rng))
        let huge = String(repeating: "я", count: Budget.statementBytes / 2) + "x"
        typealias Case = (String, RefusalReason, String, () throws(Refusal) -> Void)
        func header(_ change: (inout Ekc_Replication_V2_TicketHeader) -> Void, directory: Directory? = nil) -> () throws(Refusal) -> Void {
            var g = h
            change(&g)
            let b = bytes(g)
            return { () throws(Refusal) in _ = try TicketValues.header(b, directory: directory) }
        }
        func progress(_ change: (inout Ekc_Replication_V2_Progress) -> Void) -> () throws(Refusal) -> Void {
            var g = p
            change(&g)
            let b = bytes(g)
            return { () throws(Refusal) in _ = try TicketValues.progress(b) }
        }
        func note(_ change: (inout Ekc_Replication_V2_Note) -> Void) -> () throws(Refusal) -> Void {
            var g = n
            change(&g)
            let b = bytes(g)
            return { () throws(Refusal) in _ = try Codecs.note.decode(b) }
        }
        func event(_ change: (inout Ekc_Replication_V2_HistoryEvent) -> Void) -> () throws(Refusal) -> Void {
            var g = e
            change(&g)
            let b = bytes(g)
            return { () throws(Refusal) in _ = try Codecs.event.decode(b) }
        }
        func plain(_ b: ValueBytes, _ decode: @escaping (ValueBytes) throws(Refusal) -> Void) -> () throws(Refusal) -> Void {
            { () throws(Refusal) in try decode(b) }
        }
        let cases: [Case] = [
            ("header without number", .invalidValue, "number", header { $0.clearNumber() }),
            ("region", .invalidValue, "number.region", header { $0.number.region = "Иркутск" }),
            ("year", .invalidValue, "number.year", header { $0.number.year = 1999 }),
            ("year far out", .invalidValue, "number.year", header { $0.number.year = Int64(Int32.max) + 2026 }),
            ("sequence 0", .invalidValue, "number.sequence", header { $0.number.sequence = 0 }),
            ("sequence too large", .invalidValue, "number.sequence", header { $0.number.sequence = 1_000_000_000_001 }),
            ("origin node", .invalidValue, "origin_node", header { $0.originNode = "-x" }),
            ("origin unknown", .unknownNode, "origin_node", header({ $0.originNode = "xx-nowhere" }, directory: testDirectory)),
            ("channel unknown", .invalidValue, "channel: must be one of: phone, walk-in", header { $0.channel = .UNRECOGNIZED(42) }),
            ("legal regime unspecified", .invalidValue, "legalRegime: must be one of", header { $0.legalRegime = .unspecified }),
            ("received at int64 min", .invalidValue, "receivedAt: must be a time from 2000-01-01", header { $0.receivedAt = .min }),
            ("received at 1970", .invalidValue, "receivedAt", header { $0.receivedAt = 0 }),
            ("status unknown", .invalidValue, "status: must be one of: NEW, REGISTERED", progress { $0.status = .UNRECOGNIZED(99) }),
            ("status unspecified", .invalidValue, "status", progress { $0.status = .unspecified }),
            ("no deadlines", .invalidValue, "deadlines", progress { $0.clearDeadlines() }),
            ("extension 31 days", .invalidValue, "extendAnswerByDays: must be 1 to 30 days", progress { $0.deadlines.extensionDays = 31 }),
            ("extension negative", .invalidValue, "extendAnswerByDays", progress { $0.deadlines.extensionDays = -1 }),
            ("answer by int64 max", .invalidValue, "deadlines.answerBy", progress { $0.deadlines.answerBy = .max }),
            ("registered at 2200", .invalidValue, "registeredAt", progress { $0.registeredAt = PlausibleTime.range.upperBound }),
            ("snils with separators", .invalidValue, "citizen.snils: 11 digits", plain(bytes(Ekc_Replication_V2_CitizenValue.with {
                $0.citizen.ref = "CIT-1"; $0.citizen.snils = "112-233-445 95"
            })) { b throws(Refusal) in _ = try TicketValues.citizen(b) }),
            ("snils checksum", .invalidValue, "citizen.snils: checksum does not match", plain(bytes(Ekc_Replication_V2_CitizenValue.with {
                $0.citizen.ref = "CIT-1"; $0.citizen.snils = "11223344596"
            })) { b throws(Refusal) in _ = try TicketValues.citizen(b) }),
            ("snils register checksum", .invalidValue, "citizen.snils: checksum does not match",
             plain(bytes(Ekc_Replication_V2_CitizenSnils.with { $0.snils = "11223344596" })) {
                 b throws(Refusal) in _ = try TicketValues.citizenDetail(.snils, b)
             }),
            ("name register control character", .invalidValue, "citizen.name: must not contain control characters",
             plain(bytes(Ekc_Replication_V2_CitizenName.with { $0.name = "Иванова\u{7}" })) {
                 b throws(Refusal) in _ = try TicketValues.citizenDetail(.name, b)
             }),
            ("phone register", .invalidValue, "citizen.phone: +7 followed by 10 digits",
             plain(bytes(Ekc_Replication_V2_CitizenPhone.with { $0.phone = "89140000000" })) {
                 b throws(Refusal) in _ = try TicketValues.citizenDetail(.phone, b)
             }),
            ("citizen ref", .invalidValue, "citizen.ref", plain(bytes(Ekc_Replication_V2_CitizenValue.with { $0.citizen.ref = "" })) {
                b throws(Refusal) in _ = try TicketValues.citizen(b)
            }),
            ("phone", .invalidValue, "citizen.phone", plain(bytes(Ekc_Replication_V2_CitizenValue.with {
                $0.citizen.ref = "CIT-1"; $0.citizen.phone = "89140000000"
            })) { b throws(Refusal) in _ = try TicketValues.citizen(b) }),
            ("empty subject", .invalidValue, "subject: must not be empty", plain(bytes(Ekc_Replication_V2_Statement.with { $0.text = "t" })) {
                b throws(Refusal) in _ = try TicketValues.statement(b)
            }),
            ("statement too long", .tooLarge, "statement is 40001 bytes of UTF-8", plain(bytes(Ekc_Replication_V2_Statement.with {
                $0.subject = "s"; $0.text = huge
            })) { b throws(Refusal) in _ = try TicketValues.statement(b) }),
            ("assignee", .invalidValue, "assignee", plain(bytes(Ekc_Replication_V2_AssigneeValue.with { $0.operator = "op ivanova" })) {
                b throws(Refusal) in _ = try TicketValues.assignee(b)
            }),
            ("empty assignee", .invalidValue, "assignee", plain(bytes(Ekc_Replication_V2_AssigneeValue.with { $0.operator = "" })) {
                b throws(Refusal) in _ = try TicketValues.assignee(b)
            }),
            ("priority unspecified", .invalidValue, "priority", plain([]) { b throws(Refusal) in _ = try TicketValues.priority(b) }),
            ("topic", .invalidValue, "topic", plain(bytes(Ekc_Replication_V2_Topic.with { $0.topic = "Pensions" })) {
                b throws(Refusal) in _ = try TicketValues.topic(b)
            }),
            ("support measure", .invalidValue, "supportMeasure", plain(bytes(Ekc_Replication_V2_Topic.with { $0.topic = "p"; $0.supportMeasure = "" })) {
                b throws(Refusal) in _ = try TicketValues.topic(b)
            }),
            ("owner node", .invalidValue, "node", plain([]) { b throws(Refusal) in _ = try TicketValues.owner(b) }),
            ("owner unknown", .unknownNode, "node", plain(bytes(Ekc_Replication_V2_OwnerValue.with { $0.node = "xx-nowhere" })) {
                b throws(Refusal) in _ = try TicketValues.owner(b, directory: testDirectory)
            }),
            ("note without author", .invalidValue, "author", note { $0.clearAuthor() }),
            ("note author", .invalidValue, "author", note { $0.author.user = "" }),
            ("note visibility", .invalidValue, "visibility", note { $0.visibility = .UNRECOGNIZED(3) }),
            ("note text empty", .invalidValue, "text: must not be empty", note { $0.text = "" }),
            ("note text too long", .tooLarge, "text is 20001 bytes", note { $0.text = String(repeating: "x", count: Budget.noteBytes + 1) }),
            ("note at", .invalidValue, "at", note { $0.at = -1 }),
            ("event without actor", .invalidValue, "actor", event { $0.clearActor() }),
            ("event field empty", .invalidValue, "field", event { $0.field = "" }),
            ("event field with a space", .invalidValue, "field", event { $0.field = "a b" }),
            ("event old value too long", .tooLarge, "old is 40001 bytes", event { $0.oldValue = huge }),
            ("event new value too long", .tooLarge, "new is 40001 bytes", event { $0.newValue = huge }),
            ("garbage", .malformed, "header", plain([0xFF, 0xFF]) { b throws(Refusal) in _ = try TicketValues.header(b) }),
            ("truncated", .malformed, "number", plain([0x0A, 0x05, 0x0A]) { b throws(Refusal) in _ = try TicketValues.header(b) }),
            ("bad UTF-8", .malformed, "subject", plain([0x0A, 0x02, 0xC3, 0x28]) { b throws(Refusal) in _ = try TicketValues.statement(b) }),
        ]
        for (name, reason, path, decode) in cases {
            do throws(Refusal) {
                try decode()
                Issue.record("\(name): accepted")
            } catch {
                #expect(error.reason == reason, "\(name): \(error)")
                #expect(error.detail.hasPrefix(path), "\(name): \(error)")
            }
        }
    }

    /// Where a value's nested message appears twice, protobuf merges the two (the
    /// deadlines of a Progress written in two parts mean all of them); the value is
    /// refused instead, as malformed, never read as its last part.
    @Test func nestedValueMessagesAreRefused() throws {
        var first = Ekc_Replication_V2_Progress()
        first.status = .registered
        first.registeredAt = testNow
        first.deadlines.registerBy = testNow + 1
        first.deadlines.forwardBy = testNow + 2
        var second = Ekc_Replication_V2_Progress()
        second.deadlines.registerBy = testNow + 1
        second.deadlines.answerBy = testNow + 3
        let bytes: [UInt8] = try first.serializedBytes() + second.serializedBytes()
        let theirs = try #require(Codecs.progress.model(try Ekc_Replication_V2_Progress(serializedBytes: bytes)))
        #expect(theirs.deadlines.forwardBy == testNow + 2 && theirs.deadlines.answerBy == testNow + 3)
        #expect(throws: Refusal.self) { try TicketValues.progress(bytes) }
        #expect((try? TicketValues.progress(bytes)) == nil)
    }
}
