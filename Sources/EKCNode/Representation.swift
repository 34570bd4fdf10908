import CaseModel
import CaseStore

/// How records look in the operator API. A citizen's name, SNILS and phone are masked
/// unless a caller unmasked them, one ticket at a time with a reason that the access log
/// records before the response leaves (152-FZ: minimised, every disclosure logged).
extension JSONWriter {
    /// A ticket, with its transfers; `unmasked` are the citizen fields shown in full.
    mutating func ticket(_ t: Ticket, transfers: [Transfer]? = nil, now: Millis = 0, unmasked: Set<CitizenField> = []) {
        beginObject()
        field("id", t.id.description)
        field("number", t.number.description)
        field("status", t.status.rawValue)
        field("handlerStatus", t.handlerStatus?.rawValue)
        field("version", t.version)
        field("originNode", t.originNode.value)
        field("ownerNode", t.ownerNode.value)
        field("channel", t.channel.rawValue)
        field("topic", t.topic)
        field("supportMeasure", t.supportMeasure)
        field("subject", t.subject)
        field("statement", t.statement)
        key("citizen")
        if let c = t.citizen {
            beginObject()
            field("ref", c.ref)
            field("name", unmasked.contains(.name) ? c.name : c.name.map(Citizen.maskName))
            field("snils", unmasked.contains(.snils) ? c.snils?.formatted : c.snils?.masked)
            field("phone", unmasked.contains(.phone) ? c.phone : c.phone.map(Citizen.maskPhone))
            endObject()
        } else {
            null()
        }
        field("assignee", t.assignee)
        field("priority", t.priority.rawValue)
        field("legalRegime", t.legalRegime.rawValue)
        key("deadlines")
        beginObject()
        field("registerBy", time: t.deadlines.registerBy)
        field("forwardBy", time: t.deadlines.forwardBy)
        field("answerBy", time: t.deadlines.answerBy)
        field("extensionDays", t.deadlines.extensionDays)
        field("callbackBy", time: t.deadlines.callbackBy)
        endObject()
        field("receivedAt", time: t.receivedAt)
        field("registeredAt", time: t.registeredAt)
        field("updatedAt", time: t.updatedAt)
        field("duplicateOf", t.duplicateOf?.description)
        if let transfers {
            key("transfers")
            beginArray()
            for tr in transfers { transfer(tr, now: now) }
            endArray()
        }
        endObject()
    }

    mutating func note(_ n: Note) {
        beginObject()
        field("id", n.id.description)
        field("ticketId", n.ticketID.description)
        field("author", n.author.user)
        field("role", n.author.role)
        field("node", n.node.value)
        field("at", time: n.at)
        field("visibility", n.visibility.rawValue)
        field("text", n.text)
        endObject()
    }

    mutating func event(_ e: HistoryEvent) {
        beginObject()
        field("id", e.id.description)
        field("at", time: e.at)
        field("stamp", e.stamp.description)
        field("actor", e.actor.user)
        field("role", e.actor.role)
        field("node", e.node.value)
        field("field", e.field)
        field("old", e.old)
        field("new", e.new)
        endObject()
    }
}

/// Request bodies → model values, with every field checked for type and unknown fields refused.
enum RequestDecoding {
    static func draft(_ body: JSONValue) throws(APIError) -> TicketDraft {
        var r = try ObjectReader(body)
        let channel = try r.enumeration("channel", Channel.self)
        let topic = try r.requiredString("topic")
        let measure = try r.string("supportMeasure")
        let subject = try r.requiredString("subject")
        let statement = try r.requiredString("statement")
        let priority = try r.enumeration("priority", Priority.self) ?? .normal
        let regime = try r.enumeration("legalRegime", LegalRegime.self) ?? .consultation
        let assignee = try r.string("assignee")
        let status = try r.enumeration("status", TicketStatus.self)
        var received: Millis? = nil
        if let s = try r.string("receivedAt") {
            guard let t = TimeParsing.parse(s) else {
                throw APIError.unprocessable("invalid_value", "receivedAt must be an RFC 3339 time", field: "receivedAt")
            }
            received = t
        }
        var citizen: Citizen? = nil
        if var c = try r.object("citizen") {
            let ref = try c.requiredString("ref")
            let name = try c.string("name")
            let phone = try c.string("phone")
            var snils: Snils? = nil
            if let s = try c.string("snils") {
                do { snils = try Snils(s) } catch { throw APIError(error) }
            }
            try c.rejectUnknown()
            citizen = Citizen(ref: ref, name: name, snils: snils, phone: phone)
        }
        try r.rejectUnknown()
        guard let channel else { throw APIError.unprocessable("missing_field", "channel is required", field: "channel") }
        return TicketDraft(channel: channel, topic: topic, supportMeasure: measure, subject: subject,
                           statement: statement, citizen: citizen, priority: priority, legalRegime: regime,
                           assignee: assignee, initialStatus: status, receivedAt: received)
    }

    static func patch(_ body: JSONValue) throws(APIError) -> TicketPatch {
        var r = try ObjectReader(body)
        var p = TicketPatch()
        p.status = try r.enumeration("status", TicketStatus.self)
        p.assignee = try r.nullableString("assignee")
        p.priority = try r.enumeration("priority", Priority.self)
        p.topic = try r.string("topic")
        p.supportMeasure = try r.nullableString("supportMeasure")
        p.subject = try r.string("subject")
        p.statement = try r.string("statement")
        p.extendAnswerByDays = try r.integer("extendAnswerByDays")
        try r.rejectUnknown()
        return p
    }

    static func note(_ body: JSONValue) throws(APIError) -> (String, NoteVisibility) {
        var r = try ObjectReader(body)
        let text = try r.requiredString("text")
        let vis = try r.enumeration("visibility", NoteVisibility.self) ?? .internal
        try r.rejectUnknown()
        return (text, vis)
    }
}
