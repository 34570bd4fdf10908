import CaseModel
import Replication

/// One replica of one ticket record, edited as a store edits: an edit writes the
/// registers it changes with one dot and adds a history event with that dot; a note
/// is a child. Merging takes another replica's whole record.
public struct TicketReplica: Sendable {
    public let node: NodeID
    public var record: Record
    public var clock = HybridLogicalClock(maxSkew: 3_600_000)
    var counter: UInt64 = 0

    public init(node: NodeID, id: RecordID) {
        self.node = node
        record = Record(state: TicketRecord.schema.emptyState(id))
    }

    public var id: RecordID { record.state.id }

    /// The ticket as every register's winner says (nil before it is opened here).
    public var ticket: Ticket? { Ticket.materialise(record.state, local: LocalRecordInfo(version: 1)) }

    public mutating func dot(_ now: Millis) -> Dot { Dot(node: node, stamp: clock.tick(wall: now)) }

    /// A child id unique to this replica, ordered by the stamp it is made at.
    public mutating func nextID(_ dot: Dot) -> RecordID {
        counter += 1
        return RecordID(millis: UInt64(dot.stamp.millis),
                        randomHigh: UInt16((irkutskNodes + [fundNode, novgorodNode]).firstIndex(of: node) ?? 99),
                        randomLow: counter)
    }

    /// Opens `ticket` here: every register written with one dot, and a history event.
    public mutating func open(_ ticket: Ticket, now: Millis) {
        let d = dot(now)
        record.state.record(ticket, from: nil, dot: d)
        addChild(TicketRecord.child(HistoryEvent(
            id: nextID(d), ticketID: id, actor: Actor(user: "op-ivanova", role: "operator"), node: node, at: now,
            stamp: d.stamp, field: "ticket", old: nil, new: "created \(ticket.number) as \(ticket.status.rawValue)")))
    }

    /// Edits the ticket as `change` says; writes what changed and a history event.
    /// False when the ticket is not here yet or nothing changed.
    @discardableResult
    public mutating func edit(_ now: Millis, field: String = "edit", old oldValue: String? = nil, new newValue: String? = nil,
                              _ change: (inout Ticket) -> Void) -> Bool {
        guard let old = ticket else { return false }
        var t = old
        change(&t)
        guard t.registerValues != old.registerValues else { return false }
        let d = dot(now)
        record.state.record(t, from: old, dot: d)
        addChild(TicketRecord.child(HistoryEvent(
            id: nextID(d), ticketID: id, actor: Actor(user: "op-ivanova", role: "operator"), node: node, at: now,
            stamp: d.stamp, field: field, old: oldValue, new: newValue)))
        return true
    }

    /// One random edit of a field an operator or a transfer changes; every value stays
    /// valid for its codec.
    public mutating func randomEdit(_ now: Millis, _ rng: inout some RandomNumberGenerator) {
        let which = Int.random(in: 0..<9, using: &rng)
        let status = TicketStatus.allCases.randomElement(using: &rng)!
        let assignee = ["op-ivanova", "op-petrova", "op-sidorov", nil].randomElement(using: &rng)!
        let priority = Priority.allCases.randomElement(using: &rng)!
        let topic = ["pension", "child-benefits", "victory-card"].randomElement(using: &rng)!
        let measure = ["single-allowance", nil].randomElement(using: &rng)!
        let callback: Millis? = Bool.random(using: &rng) ? now + Millis.random(in: 0...1_000_000, using: &rng) : nil
        let forward: Millis? = Bool.random(using: &rng) ? now + 7 * Calendar59.millisPerDay : nil
        let registered: Millis? = Bool.random(using: &rng) ? now : nil
        let extensionDays = Int.random(in: 0...30, using: &rng)
        let citizen = [nil, Citizen(ref: "CIT-7F3K2"),
                       Citizen(ref: "CIT-9Q1", name: "Иванова Мария Петровна", snils: Snils(trusted: "11223344595"),
                               phone: "+79140000067")].randomElement(using: &rng)!
        let owner = irkutskNodes.randomElement(using: &rng)!
        let subject = "тема \(Int.random(in: 0..<5, using: &rng))"
        let old: String? = Bool.random(using: &rng) ? "before" : nil
        let new: String? = Bool.random(using: &rng) ? "после" : nil
        edit(now, old: old, new: new) { t in
            switch which {
            case 0: t.status = status
            case 1: t.assignee = assignee
            case 2: t.priority = priority
            case 3:
                t.topic = topic
                t.supportMeasure = measure
            case 4:
                t.deadlines.callbackBy = callback
                t.deadlines.forwardBy = forward
            case 5:
                t.registeredAt = registered
                t.deadlines.extensionDays = extensionDays
            case 6: t.citizen = citizen
            case 7: t.ownerNode = owner
            default: t.subject = subject
            }
        }
    }

    @discardableResult
    public mutating func addNote(_ now: Millis, visibility: NoteVisibility, text: String? = nil) -> Note {
        let d = dot(now)
        let noteID = nextID(d)
        let note = Note(id: noteID, ticketID: id, author: Actor(user: "op-ivanova", role: "operator"), node: node, at: now,
                        stamp: d.stamp, visibility: visibility, text: text ?? "заметка \(noteID)")
        addChild(TicketRecord.child(note))
        return note
    }

    public mutating func addChild(_ c: Child) { record.children[c.key] = c }

    public mutating func receive(_ other: Record, now: Millis) {
        record = record.merged(other)
        _ = try? clock.receive(other.state.clock.maxStamp, wall: now)
    }
}

/// Every state a random history of `steps` edits, notes and exchanges over four
/// replicas of region 38 passes through: conflicts, notes, history, present and
/// absent optionals. The first is the empty record.
public func ticketStatePool(seed: UInt64, steps: Int) -> [Record] {
    var rng = SeededRandom(seed: seed)
    let id = TicketID(millis: UInt64(testNow), randomHigh: 1, randomLow: seed)
    var replicas = irkutskNodes.prefix(4).map { TicketReplica(node: $0, id: id) }
    var now = testNow
    var opened = openedTicket(id: id, at: irkutskNodes[0], now: now)
    if seed % 2 == 0 { opened.citizen = Citizen(ref: "CIT-1", name: "Петров П.") }
    replicas[0].open(opened, now: now)
    var pool = [Record(state: TicketRecord.schema.emptyState(id))]
    for _ in 0..<steps {
        now += Millis.random(in: 0...50, using: &rng)
        let i = Int.random(in: 0..<replicas.count, using: &rng)
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<4: replicas[i].randomEdit(now, &rng)
        case 4: replicas[i].addNote(now, visibility: Bool.random(using: &rng) ? .shared : .internal)
        default:
            let j = Int.random(in: 0..<replicas.count, using: &rng)
            replicas[j].receive(replicas[i].record, now: now)
        }
        pool.append(replicas[i].record)
    }
    return pool
}

/// A ticket opened on irk-main about a citizen and edited on both sides of a
/// partition (irk-main and irk-office-1): status and assignee conflict, each side
/// adds a history event and a note. `at` is when it was opened.
public func conflictedTicketRecord(idLow: UInt64, at: Millis = testNow) -> Record {
    let id = TicketID(millis: UInt64(at), randomHigh: 0x38, randomLow: idLow)
    var a = TicketReplica(node: irkutskNodes[0], id: id)
    var b = TicketReplica(node: irkutskNodes[1], id: id)
    var t = openedTicket(id: id, at: a.node, now: at, sequence: 417)
    t.citizen = Citizen(ref: "CIT-7F3K2", name: "Иванова Мария Петровна", snils: Snils(trusted: "11223344595"),
                        phone: "+79140000067")
    t.supportMeasure = "single-allowance"
    a.open(t, now: at)
    b.receive(a.record, now: at + 5)
    for (side, status, assignee, when) in [(0, TicketStatus.inWork, "op-petrova", at + 100),
                                           (1, TicketStatus.deferred, "op-sidorov", at + 120)] {
        var r = side == 0 ? a : b
        let old = r.ticket!.status
        r.edit(when, field: "status", old: old.rawValue, new: status.rawValue) {
            $0.status = status
            $0.assignee = assignee
        }
        r.addNote(when + 1, visibility: side == 0 ? .internal : .shared)
        if side == 0 { a = r } else { b = r }
    }
    a.receive(b.record, now: at + 200)
    return a.record
}

/// A random part of `record`, as a feed entry may carry it: some registers (each
/// whole) and some children; never empty unless the record is.
public func randomDelta(of record: Record, _ rng: inout some RandomNumberGenerator) -> RecordDelta {
    var state = RecordState(kind: record.state.kind, id: record.state.id, registerCount: record.state.registers.count)
    for (i, r) in record.state.registers.enumerated() where Bool.random(using: &rng) { state.registers[i] = r }
    // In key order before drawing: a dictionary's order differs between runs, and a seed must replay exactly.
    let children = record.children.values.sorted { $0.key < $1.key }.filter { _ in Bool.random(using: &rng) }
    let delta = RecordDelta(state: state, children: children)
    return delta.isEmpty ? record.delta : delta
}
