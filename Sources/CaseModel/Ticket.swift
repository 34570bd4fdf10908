/// A citizen's request (обращение).
public struct Ticket: Sendable, Equatable {
    public let id: TicketID
    public let number: TicketNumber
    public let originNode: NodeID
    public var ownerNode: NodeID
    public let channel: Channel
    public var topic: String
    public var supportMeasure: String?
    /// Immutable once registered; corrections are notes.
    public var subject: String
    public var statement: String
    public var citizen: Citizen?
    public var status: TicketStatus
    public var assignee: String?
    public var priority: Priority
    public let legalRegime: LegalRegime
    public var deadlines: Deadlines
    public let receivedAt: Millis
    public var registeredAt: Millis?
    public var updatedAt: Millis
    /// The HLC stamp of the last change, for ordering across nodes.
    public var updatedStamp: Stamp
    /// Increases by one with every change; the HTTP ETag and If-Match value.
    public var version: UInt64
    public var duplicateOf: TicketID?
    /// Shown where this node's organisation redirected the ticket and the receiver
    /// accepted it (status TRANSFERRED_OUT here): the status at the receiver, which now
    /// handles it. Not replicated; each node derives it from the ticket and its transfers.
    public var handlerStatus: TicketStatus? = nil

    public init(id: TicketID, number: TicketNumber, originNode: NodeID, ownerNode: NodeID, channel: Channel,
                topic: String, supportMeasure: String?, subject: String, statement: String, citizen: Citizen?,
                status: TicketStatus, assignee: String?, priority: Priority, legalRegime: LegalRegime,
                deadlines: Deadlines, receivedAt: Millis, registeredAt: Millis?, updatedAt: Millis,
                updatedStamp: Stamp, version: UInt64, duplicateOf: TicketID?) {
        self.id = id
        self.number = number
        self.originNode = originNode
        self.ownerNode = ownerNode
        self.channel = channel
        self.topic = topic
        self.supportMeasure = supportMeasure
        self.subject = subject
        self.statement = statement
        self.citizen = citizen
        self.status = status
        self.assignee = assignee
        self.priority = priority
        self.legalRegime = legalRegime
        self.deadlines = deadlines
        self.receivedAt = receivedAt
        self.registeredAt = registeredAt
        self.updatedAt = updatedAt
        self.updatedStamp = updatedStamp
        self.version = version
        self.duplicateOf = duplicateOf
    }
}

/// What an operator or an intake channel supplies to open a ticket.
public struct TicketDraft: Sendable, Equatable {
    public var channel: Channel
    public var topic: String
    public var supportMeasure: String?
    public var subject: String
    public var statement: String
    public var citizen: Citizen?
    public var priority: Priority
    public var legalRegime: LegalRegime
    public var assignee: String?
    /// NEW or REGISTERED; nil picks by channel (assisted channels register at once).
    public var initialStatus: TicketStatus?
    /// When the request was received, if earlier than its entry (a voicemail, a letter).
    public var receivedAt: Millis?

    public init(channel: Channel, topic: String, supportMeasure: String? = nil, subject: String, statement: String,
                citizen: Citizen? = nil, priority: Priority = .normal, legalRegime: LegalRegime = .consultation,
                assignee: String? = nil, initialStatus: TicketStatus? = nil, receivedAt: Millis? = nil) {
        self.channel = channel
        self.topic = topic
        self.supportMeasure = supportMeasure
        self.subject = subject
        self.statement = statement
        self.citizen = citizen
        self.priority = priority
        self.legalRegime = legalRegime
        self.assignee = assignee
        self.initialStatus = initialStatus
        self.receivedAt = receivedAt
    }


    /// Checks every field; the first violation is thrown, naming the field.
    public func validate(now: Millis) throws(TicketError) {
        try Validation.topic(topic)
        if let supportMeasure { try Validation.supportMeasure(supportMeasure) }
        try Validation.subject(subject)
        try Validation.statement(statement)
        if let assignee { try Validation.assignee(assignee) }
        if let citizen {
            try channel.validate(carriesCitizen: true)
            try citizen.validate()
        }
        if let s = initialStatus, s != .new && s != .registered {
            throw .invalidField(field: "status", rule: "a new ticket starts as NEW or REGISTERED")
        }
        if let r = receivedAt {
            // The rule every replica applies to the header (a peer's too), then what only
            // the moment of entry can judge: a relay a year later still holds the value.
            try PlausibleTime.check(r, field: "receivedAt")
            guard r <= now else { throw .invalidField(field: "receivedAt", rule: "must not be in the future") }
            guard r >= now - 366 * Calendar59.millisPerDay else {  // no subtraction of r: it may be any Int64
                throw .invalidField(field: "receivedAt", rule: "must be within the last year")
            }
        }
    }

    /// Opens the ticket. `now` is the entry time; the readable number and id come from the store.
    /// Validates the draft and opens the ticket. `now` is the entry time; the readable number and id come from the store.
    public func open(id: TicketID, number: TicketNumber, node: NodeID, now: Millis, stamp: Stamp) throws(TicketError) -> Ticket {
        try validate(now: now)
        let received = receivedAt ?? now
        let status = initialStatus ?? (channel.isAssisted ? .registered : .new)
        var deadlines = Deadlines.onReceipt(receivedAt: received)
        var registeredAt: Millis? = nil
        if status == .registered {
            registeredAt = now
            deadlines = deadlines.registered(at: now, regime: legalRegime)
        }
        return Ticket(
            id: id, number: number, originNode: node, ownerNode: node, channel: channel, topic: topic,
            supportMeasure: supportMeasure, subject: subject, statement: statement, citizen: citizen,
            status: status, assignee: assignee, priority: priority, legalRegime: legalRegime,
            deadlines: deadlines, receivedAt: received, registeredAt: registeredAt, updatedAt: now,
            updatedStamp: stamp, version: 1, duplicateOf: nil)
    }
}
