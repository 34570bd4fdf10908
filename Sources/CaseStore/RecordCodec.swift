import CaseModel

/// Stored forms of the model's records. Each begins with a format byte so that a
/// later format can be read beside this one. Enum codes are indexes into the
/// enums' `allCases`, which may only grow at the end.
enum RecordCodec {
    static let ticketFormat: UInt8 = 1
    static let noteFormat: UInt8 = 1
    static let eventFormat: UInt8 = 1

    @inline(__always)
    static func code<E: StoredCode>(_ e: E) -> UInt8 { e.code }

    @inline(__always)
    static func decodeCase<E: StoredCode>(_ c: UInt8, _ what: StaticString) throws(CorruptRecord) -> E {
        guard let e = E(code: c) else { throw CorruptRecord(what: "unknown \(what) code \(c)") }
        return e
    }

    // MARK: Ticket

    static func encode(_ t: Ticket) -> [UInt8] {
        var w = BinaryWriter(capacity: 192 + t.subject.utf8.count + t.statement.utf8.count)
        w.u8(ticketFormat)
        w.raw(t.id.bytes)
        w.string(t.number.region); w.varint(UInt64(t.number.year)); w.varint(t.number.sequence)
        w.string(t.originNode.value); w.string(t.ownerNode.value)
        w.u8(code(t.channel))
        w.string(t.topic); w.optionalString(t.supportMeasure)
        w.string(t.subject); w.string(t.statement)
        if let c = t.citizen {
            w.u8(1); w.string(c.ref); w.optionalString(c.name); w.optionalString(c.snils?.digits); w.optionalString(c.phone)
        } else {
            w.u8(0)
        }
        w.u8(t.status.code)
        w.optionalString(t.assignee)
        w.u8(code(t.priority))
        w.u8(code(t.legalRegime))
        let d = t.deadlines
        w.int(d.registerBy); w.optionalInt(d.forwardBy); w.optionalInt(d.answerBy)
        w.varint(UInt64(d.extensionDays)); w.optionalInt(d.callbackBy)
        w.int(t.receivedAt); w.optionalInt(t.registeredAt); w.int(t.updatedAt)
        w.varint(t.updatedStamp.raw); w.varint(t.version)
        if let dup = t.duplicateOf { w.u8(1); w.raw(dup.bytes) } else { w.u8(0) }
        return w.bytes
    }

    static func decodeTicket(_ buf: UnsafeRawBufferPointer) throws(CorruptRecord) -> Ticket {
        var r = BinaryReader(buf)
        guard try r.u8() == ticketFormat else { throw CorruptRecord(what: "unknown ticket format") }
        let id = TicketID(raw: try r.raw(16))
        let number = TicketNumber(region: try r.string(), year: Int(try r.varint()), sequence: try r.varint())
        let origin = NodeID(trusted: try r.string())
        let owner = NodeID(trusted: try r.string())
        let channel: Channel = try decodeCase(try r.u8(), "channel")
        let topic = try r.string()
        let measure = try r.optionalString()
        let subject = try r.string()
        let statement = try r.string()
        var citizen: Citizen? = nil
        if try r.u8() == 1 {
            let ref = try r.string()
            let name = try r.optionalString()
            let snils = try r.optionalString()
            let phone = try r.optionalString()
            citizen = Citizen(ref: ref, name: name, snils: snils.map { Snils(trusted: $0) }, phone: phone)
        }
        guard let status = TicketStatus(code: try r.u8()) else { throw CorruptRecord(what: "status") }
        let assignee = try r.optionalString()
        let priority: Priority = try decodeCase(try r.u8(), "priority")
        let regime: LegalRegime = try decodeCase(try r.u8(), "legal regime")
        let deadlines = Deadlines(
            registerBy: try r.int(), forwardBy: try r.optionalInt(), answerBy: try r.optionalInt(),
            extensionDays: Int(try r.varint()), callbackBy: try r.optionalInt())
        let received = try r.int()
        let registered = try r.optionalInt()
        let updated = try r.int()
        let stamp = Stamp(raw: try r.varint())
        let version = try r.varint()
        let dup: TicketID? = try r.u8() == 1 ? TicketID(raw: try r.raw(16)) : nil
        return Ticket(
            id: id, number: number, originNode: origin, ownerNode: owner, channel: channel, topic: topic,
            supportMeasure: measure, subject: subject, statement: statement, citizen: citizen, status: status,
            assignee: assignee, priority: priority, legalRegime: regime, deadlines: deadlines, receivedAt: received,
            registeredAt: registered, updatedAt: updated, updatedStamp: stamp, version: version, duplicateOf: dup)
    }

    // MARK: Note

    static func encode(_ n: Note) -> [UInt8] {
        var w = BinaryWriter(capacity: 96 + n.text.utf8.count)
        w.u8(noteFormat)
        w.raw(n.id.bytes); w.raw(n.ticketID.bytes)
        w.string(n.author.user); w.string(n.author.role); w.string(n.node.value)
        w.int(n.at); w.varint(n.stamp.raw)
        w.u8(code(n.visibility))
        w.string(n.text)
        return w.bytes
    }

    static func decodeNote(_ buf: UnsafeRawBufferPointer) throws(CorruptRecord) -> Note {
        var r = BinaryReader(buf)
        guard try r.u8() == noteFormat else { throw CorruptRecord(what: "unknown note format") }
        let id = RecordID(raw: try r.raw(16))
        let ticket = TicketID(raw: try r.raw(16))
        let author = Actor(user: try r.string(), role: try r.string())
        let node = NodeID(trusted: try r.string())
        let at = try r.int()
        let stamp = Stamp(raw: try r.varint())
        let vis: NoteVisibility = try decodeCase(try r.u8(), "visibility")
        return Note(id: id, ticketID: ticket, author: author, node: node, at: at, stamp: stamp,
                    visibility: vis, text: try r.string())
    }

    // MARK: History event

    static func encode(_ e: HistoryEvent) -> [UInt8] {
        var w = BinaryWriter(capacity: 96)
        w.u8(eventFormat)
        w.raw(e.id.bytes); w.raw(e.ticketID.bytes)
        w.string(e.actor.user); w.string(e.actor.role); w.string(e.node.value)
        w.int(e.at); w.varint(e.stamp.raw)
        w.string(e.field); w.optionalString(e.old); w.optionalString(e.new)
        return w.bytes
    }

    static func decodeEvent(_ buf: UnsafeRawBufferPointer) throws(CorruptRecord) -> HistoryEvent {
        var r = BinaryReader(buf)
        guard try r.u8() == eventFormat else { throw CorruptRecord(what: "unknown event format") }
        let id = RecordID(raw: try r.raw(16))
        let ticket = TicketID(raw: try r.raw(16))
        let actor = Actor(user: try r.string(), role: try r.string())
        let node = NodeID(trusted: try r.string())
        return HistoryEvent(id: id, ticketID: ticket, actor: actor, node: node, at: try r.int(),
                            stamp: Stamp(raw: try r.varint()), field: try r.string(),
                            old: try r.optionalString(), new: try r.optionalString())
    }
}
