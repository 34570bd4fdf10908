import CaseModel

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

/// The replicated fields of a ticket, and which organisation writes each
/// (DESIGN principle 3): the origin writes what the citizen said; the current
/// owner writes how it is being handled.
public enum Field: String, CaseIterable, Sendable {
    case header, statement, citizen, progress, assignee, priority, topic, owner

    public enum Group: Sendable { case origin, owner }

    public var group: Group {
        switch self {
        case .header, .statement, .citizen: return .origin
        case .progress, .assignee, .priority, .topic, .owner: return .owner
        }
    }
}

/// A ticket as replicas exchange it: a register per field, notes and history as
/// grow-only sets keyed by id. `merge` is commutative, associative and idempotent,
/// so order, duplication and delay of messages never matter.
public struct ReplicatedTicket: Hashable, Sendable {
    public let id: TicketID
    public var header = Register<TicketHeader>()
    public var statement = Register<Statement>()
    public var citizen = Register<Citizen?>()
    public var progress = Register<Progress>()
    public var assignee = Register<String?>()
    public var priority = Register<Priority>()
    public var topic = Register<Topic>()
    public var owner = Register<NodeID>()
    public var notes: [RecordID: Note] = [:]
    public var history: [RecordID: HistoryEvent] = [:]

    public init(id: TicketID) { self.id = id }

    /// The replicated form of a ticket just opened on `ticket.originNode`.
    public init(opened t: Ticket, dot: Dot) {
        self.init(id: t.id)
        header = Register(TicketHeader(number: t.number, originNode: t.originNode, channel: t.channel,
                                       legalRegime: t.legalRegime, receivedAt: t.receivedAt), dot: dot)
        statement = Register(Statement(subject: t.subject, text: t.statement), dot: dot)
        citizen = Register(t.citizen, dot: dot)
        progress = Register(Progress(status: t.status, registeredAt: t.registeredAt, deadlines: t.deadlines), dot: dot)
        assignee = Register(t.assignee, dot: dot)
        priority = Register(t.priority, dot: dot)
        topic = Register(Topic(topic: t.topic, supportMeasure: t.supportMeasure), dot: dot)
        owner = Register(t.ownerNode, dot: dot)
    }

    /// Records a local edit: every field whose value differs between `old` and `new`
    /// is written with `dot`, superseding what this replica has seen of it.
    public mutating func record(_ new: Ticket, from old: Ticket, dot: Dot) {
        if new.subject != old.subject || new.statement != old.statement {
            statement.write(Statement(subject: new.subject, text: new.statement), dot: dot)
        }
        if new.citizen != old.citizen { citizen.write(new.citizen, dot: dot) }
        if new.status != old.status || new.registeredAt != old.registeredAt || new.deadlines != old.deadlines {
            progress.write(Progress(status: new.status, registeredAt: new.registeredAt, deadlines: new.deadlines), dot: dot)
        }
        if new.assignee != old.assignee { assignee.write(new.assignee, dot: dot) }
        if new.priority != old.priority { priority.write(new.priority, dot: dot) }
        if new.topic != old.topic || new.supportMeasure != old.supportMeasure {
            topic.write(Topic(topic: new.topic, supportMeasure: new.supportMeasure), dot: dot)
        }
        if new.ownerNode != old.ownerNode { owner.write(new.ownerNode, dot: dot) }
    }

    public mutating func add(_ note: Note) { notes[note.id] = notes[note.id] ?? note }
    public mutating func add(_ event: HistoryEvent) { history[event.id] = history[event.id] ?? event }

    public func merged(_ other: ReplicatedTicket) -> ReplicatedTicket {
        precondition(other.id == id, "merging different tickets")
        var m = self
        m.header.merge(other.header)
        m.statement.merge(other.statement)
        m.citizen.merge(other.citizen)
        m.progress.merge(other.progress)
        m.assignee.merge(other.assignee)
        m.priority.merge(other.priority)
        m.topic.merge(other.topic)
        m.owner.merge(other.owner)
        // Grow-only sets; an id names one immutable record, so the first copy is kept.
        m.notes.merge(other.notes) { mine, _ in mine }
        m.history.merge(other.history) { mine, _ in mine }
        return m
    }

    public mutating func merge(_ other: ReplicatedTicket) { self = merged(other) }

    /// Every write this record holds: the join of all dots and contexts.
    public var clock: VersionVector {
        var v = VersionVector()
        v.join(header.context); v.join(statement.context); v.join(citizen.context); v.join(progress.context)
        v.join(assignee.context); v.join(priority.context); v.join(topic.context); v.join(owner.context)
        for n in notes.values { v.add(Dot(node: n.node, stamp: n.stamp)) }
        for e in history.values { v.add(Dot(node: e.node, stamp: e.stamp)) }
        return v
    }

    /// The latest stamp of any write the ticket has seen: `clock.maxStamp` without
    /// building the vector (merging asks for it per ticket).
    public var latestStamp: Stamp {
        var m = Stamp.zero
        func register<V>(_ r: Register<V>) {
            for v in r.versions { for e in v.context.sorted where e.stamp > m { m = e.stamp } }
        }
        register(header); register(statement); register(citizen); register(progress)
        register(assignee); register(priority); register(topic); register(owner)
        for n in notes.values where n.stamp > m { m = n.stamp }
        for e in history.values where e.stamp > m { m = e.stamp }
        return m
    }

    /// The operator's view: every field's winner. `version` is the local edit counter
    /// the store keeps for If-Match; nil until the header and every field have arrived.
    public func ticket(version: UInt64) -> Ticket? {
        guard let h = header.value, let s = statement.value, let c = citizen.winner, let p = progress.value,
              let a = assignee.winner, let pr = priority.value, let tp = topic.value, let o = owner.value
        else { return nil }
        let last = latestStamp
        return Ticket(
            id: id, number: h.number, originNode: h.originNode, ownerNode: o, channel: h.channel, topic: tp.topic,
            supportMeasure: tp.supportMeasure, subject: s.subject, statement: s.text, citizen: c.value,
            status: p.status, assignee: a.value, priority: pr, legalRegime: h.legalRegime, deadlines: p.deadlines,
            receivedAt: h.receivedAt, registeredAt: p.registeredAt, updatedAt: last.millis, updatedStamp: last,
            version: version, duplicateOf: nil)
    }
}
