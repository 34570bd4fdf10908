/// Who edits, where and when: the shell passes this in with every edit.
public struct EditContext: Sendable {
    public var actor: Actor
    public var node: NodeID
    public var now: Millis
    public var stamp: Stamp
    public var workingHours: WorkingHours

    public init(actor: Actor, node: NodeID, now: Millis, stamp: Stamp, workingHours: WorkingHours) {
        self.actor = actor
        self.node = node
        self.now = now
        self.stamp = stamp
        self.workingHours = workingHours
    }
}

/// An operator's change to a ticket. `nil` leaves a field alone; for the clearable
/// fields `.some(nil)` clears it.
public struct TicketPatch: Sendable, Equatable {
    public var status: TicketStatus?
    public var assignee: String??
    public var priority: Priority?
    public var topic: String?
    public var supportMeasure: String??
    /// Editable only while the ticket is NEW (before registration).
    public var subject: String?
    public var statement: String?
    public var extendAnswerByDays: Int?

    public init(status: TicketStatus? = nil, assignee: String?? = nil, priority: Priority? = nil, topic: String? = nil,
                supportMeasure: String?? = nil, subject: String? = nil, statement: String? = nil,
                extendAnswerByDays: Int? = nil) {
        self.status = status
        self.assignee = assignee
        self.priority = priority
        self.topic = topic
        self.supportMeasure = supportMeasure
        self.subject = subject
        self.statement = statement
        self.extendAnswerByDays = extendAnswerByDays
    }

    public var isEmpty: Bool {
        status == nil && assignee == nil && priority == nil && topic == nil && supportMeasure == nil
            && subject == nil && statement == nil && extendAnswerByDays == nil
    }
}

/// One field's change, old → new, as history records it.
public struct FieldChange: Sendable, Equatable {
    public let field: String
    public let old: String?
    public let new: String?
    public init(field: String, old: String?, new: String?) {
        self.field = field
        self.old = old
        self.new = new
    }
}

extension Ticket {
    /// Applies `patch`, returning the new ticket and the changes to record. When nothing
    /// changes the ticket is returned as it was, with no changes and the same version.
    public func applying(_ patch: TicketPatch, _ ctx: EditContext) throws(TicketError) -> (Ticket, [FieldChange]) {
        guard !patch.isEmpty else { throw .invalidField(field: "body", rule: "name at least one field to change") }
        if status == .transferredOut || status == .transferPending || status == .merged { throw .readOnlyMirror(status: status) }
        var t = self
        var changes: [FieldChange] = []

        if let s = patch.subject, s != subject {
            guard status == .new else { throw .immutableField(field: "subject", status: status) }
            try Validation.subject(s)
            changes.append(FieldChange(field: "subject", old: subject, new: s))
            t.subject = s
        }
        if let s = patch.statement, s != statement {
            guard status == .new else { throw .immutableField(field: "statement", status: status) }
            try Validation.statement(s)
            changes.append(FieldChange(field: "statement", old: statement, new: s))
            t.statement = s
        }
        if let topic = patch.topic, topic != self.topic {
            try Validation.topic(topic)
            changes.append(FieldChange(field: "topic", old: self.topic, new: topic))
            t.topic = topic
        }
        if let sm = patch.supportMeasure, sm != supportMeasure {
            if let sm { try Validation.supportMeasure(sm) }
            changes.append(FieldChange(field: "supportMeasure", old: supportMeasure, new: sm))
            t.supportMeasure = sm
        }
        if let a = patch.assignee, a != assignee {
            if let a { try Validation.assignee(a) }
            changes.append(FieldChange(field: "assignee", old: assignee, new: a))
            t.assignee = a
        }
        if let p = patch.priority, p != priority {
            changes.append(FieldChange(field: "priority", old: priority.rawValue, new: p.rawValue))
            t.priority = p
        }
        if let s = patch.status, s != status {
            try Lifecycle.check(from: status, to: s, regime: legalRegime, cause: .operatorEdit)
            changes.append(FieldChange(field: "status", old: status.rawValue, new: s.rawValue))
            t.status = s
            switch s {
            case .registered:
                t.registeredAt = ctx.now
                t.deadlines = t.deadlines.registered(at: ctx.now, regime: legalRegime)
            case .deferred:
                let due = ctx.workingHours.adding(hours: Deadlines.callbackWorkingHours, to: ctx.now)
                t.deadlines.callbackBy = due
                changes.append(FieldChange(field: "deadlines.callbackBy", old: nil, new: String(due)))
            default:
                break
            }
        }
        if let days = patch.extendAnswerByDays {
            guard t.registeredAt != nil else { throw .extensionNotApplicable }
            let old = t.deadlines.answerBy
            t.deadlines = try t.deadlines.extended(byDays: days)
            changes.append(FieldChange(field: "deadlines.answerBy", old: old.map { String($0) },
                                       new: t.deadlines.answerBy.map { String($0) }))
        }
        guard !changes.isEmpty else { return (self, []) }
        t.version = version + 1
        t.updatedAt = ctx.now
        t.updatedStamp = ctx.stamp
        return (t, changes)
    }
}

/// A note on a ticket: append-only, shared with a transfer partner or internal.
public struct Note: Sendable, Hashable {
    public let id: RecordID
    public let ticketID: TicketID
    public let author: Actor
    public let node: NodeID
    public let at: Millis
    public let stamp: Stamp
    public let visibility: NoteVisibility
    public let text: String

    public init(id: RecordID, ticketID: TicketID, author: Actor, node: NodeID, at: Millis, stamp: Stamp,
                visibility: NoteVisibility, text: String) {
        self.id = id
        self.ticketID = ticketID
        self.author = author
        self.node = node
        self.at = at
        self.stamp = stamp
        self.visibility = visibility
        self.text = text
    }

    /// Collection `notes`: the text (`POST /v1/tickets/{ref}/notes` `text`).
    public static func validate(text: String) throws(TicketError) {
        try Validation.text(text, field: "text", maxBytes: Budget.noteBytes)
    }
}

/// One entry of a ticket's history: who changed what, where, when, from what to what.
public struct HistoryEvent: Sendable, Hashable {
    public let id: RecordID
    public let ticketID: TicketID
    public let actor: Actor
    public let node: NodeID
    public let at: Millis
    public let stamp: Stamp
    public let field: String
    public let old: String?
    public let new: String?

    public init(id: RecordID, ticketID: TicketID, actor: Actor, node: NodeID, at: Millis, stamp: Stamp,
                field: String, old: String?, new: String?) {
        self.id = id
        self.ticketID = ticketID
        self.actor = actor
        self.node = node
        self.at = at
        self.stamp = stamp
        self.field = field
        self.old = old
        self.new = new
    }

    /// Collection `history`: what changed and from what to what. No operator writes a
    /// history event (the node records its own edits); a peer's events are judged here.
    /// Old and new values may be empty (a field that was cleared).
    public static func validate(field: String, old: String?, new: String?) throws(TicketError) {
        guard !field.isEmpty, field.utf8.count <= Budget.historyFieldBytes, field.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw .invalidField(field: "field", rule: "1 to \(Budget.historyFieldBytes) printable ASCII characters")
        }
        for (name, value) in [("old", old), ("new", new)] {
            if let value, value.utf8.count > Budget.historyValueBytes {
                throw .tooLong(field: name, bytes: value.utf8.count, limit: Budget.historyValueBytes)
            }
        }
    }
}
