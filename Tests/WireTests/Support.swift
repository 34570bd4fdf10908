import CaseModel
import Replication

/// A seeded generator (SplitMix64): a failing seed replays exactly.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let irkutskNodes = ["irk-main", "irk-office-1", "irk-office-2", "irk-office-3"].map { NodeID($0)! }
let baseTime: Millis = 1_795_000_000_000

func openedTicket(id: TicketID, at node: NodeID, now: Millis, citizen: Citizen? = nil,
                  channel: Channel = .phone, regime: LegalRegime = .appeal59FZ) -> Ticket {
    let draft = TicketDraft(channel: channel, topic: "child-benefits", supportMeasure: "single-allowance",
                            subject: "Единое пособие", statement: "Когда будет решение по заявлению?",
                            citizen: citizen, legalRegime: regime, assignee: "op-ivanova")
    return try! draft.open(id: id, number: TicketNumber(region: "38", year: 2026, sequence: 417), node: node,
                           now: now, stamp: Stamp(millis: now, logical: 0))
}

/// One replica of one ticket, editing it as the store would (copied in spirit from
/// ReplicationTests/Support.swift, with citizen, deadline and history edits added so
/// every optional field of the wire format is exercised).
struct Replica {
    let node: NodeID
    var state: ReplicatedTicket
    var clock = HybridLogicalClock(maxSkew: 3_600_000)
    var counter: UInt64 = 0

    init(node: NodeID, id: TicketID) {
        self.node = node
        state = ReplicatedTicket(id: id)
    }

    mutating func stamp(_ now: Millis) -> Dot { Dot(node: node, stamp: clock.tick(wall: now)) }

    mutating func nextID(_ dot: Dot) -> RecordID {
        counter += 1
        return RecordID(millis: UInt64(dot.stamp.millis), randomHigh: UInt16(irkutskNodes.firstIndex(of: node) ?? 9),
                        randomLow: counter)
    }

    mutating func randomEdit<R: RandomNumberGenerator>(_ now: Millis, _ rng: inout R) {
        guard var t = state.ticket(version: 1) else { return }
        let old = t
        switch Int.random(in: 0..<9, using: &rng) {
        case 0: t.status = TicketStatus.allCases.randomElement(using: &rng)!
        case 1: t.assignee = ["op-ivanova", "op-petrova", "op-sidorov", nil].randomElement(using: &rng)!
        case 2: t.priority = Priority.allCases.randomElement(using: &rng)!
        case 3:
            t.topic = ["pension", "child-benefits", "victory-card"].randomElement(using: &rng)!
            t.supportMeasure = ["single-allowance", nil].randomElement(using: &rng)!
        case 4:
            t.deadlines.callbackBy = Bool.random(using: &rng) ? Millis.random(in: 0...1_000_000, using: &rng) : nil
            t.deadlines.forwardBy = Bool.random(using: &rng) ? baseTime + 7 * Calendar59.millisPerDay : nil
        case 5:
            t.registeredAt = Bool.random(using: &rng) ? now : nil
            t.deadlines.extensionDays = Int.random(in: 0...30, using: &rng)
        case 6:
            t.citizen = [nil, Citizen(ref: "CIT-7F3K2"),
                         Citizen(ref: "CIT-9Q1", name: "Иванова Мария Петровна", snils: Snils(trusted: "11223344595"),
                                 phone: "+79140000067")].randomElement(using: &rng)!
        case 7: t.ownerNode = irkutskNodes.randomElement(using: &rng)!
        default: t.subject = "тема \(Int.random(in: 0..<5, using: &rng))"
        }
        guard t != old else { return }
        let dot = stamp(now)
        state.record(t, from: old, dot: dot)
        state.add(HistoryEvent(id: nextID(dot), ticketID: state.id, actor: Actor(user: "op-ivanova", role: "operator"),
                               node: node, at: now, stamp: dot.stamp, field: "edit",
                               old: Bool.random(using: &rng) ? "before" : nil, new: Bool.random(using: &rng) ? "после" : nil))
    }

    mutating func addNote(_ now: Millis, visibility: NoteVisibility) {
        let dot = stamp(now)
        let id = nextID(dot)
        state.add(Note(id: id, ticketID: state.id, author: Actor(user: "op", role: "operator"), node: node,
                       at: now, stamp: dot.stamp, visibility: visibility, text: "заметка \(id)"))
    }

    mutating func receive(_ remote: ReplicatedTicket, now: Millis) {
        state.merge(remote)
        _ = try? clock.receive(remote.clock.maxStamp, wall: now)
    }
}

/// Every state a random history of `steps` edits and exchanges over four replicas
/// passes through (conflicts, notes and history included).
func statePool(seed: UInt64, steps: Int) -> [ReplicatedTicket] {
    var rng = SeededRandom(seed: seed)
    let id = TicketID(millis: UInt64(baseTime), randomHigh: 1, randomLow: seed)
    var replicas = irkutskNodes.map { Replica(node: $0, id: id) }
    var now = baseTime
    let citizen = seed % 2 == 0 ? Citizen(ref: "CIT-1", name: "Петров П.", snils: nil, phone: nil) : nil
    replicas[0].state = ReplicatedTicket(opened: openedTicket(id: id, at: irkutskNodes[0], now: now, citizen: citizen),
                                         dot: replicas[0].stamp(now))
    var pool: [ReplicatedTicket] = [ReplicatedTicket(id: id)]
    for _ in 0..<steps {
        now += Millis.random(in: 0...50, using: &rng)
        let i = Int.random(in: 0..<replicas.count, using: &rng)
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<4: replicas[i].randomEdit(now, &rng)
        case 4: replicas[i].addNote(now, visibility: Bool.random(using: &rng) ? .shared : .internal)
        default:
            let j = Int.random(in: 0..<replicas.count, using: &rng)
            replicas[j].receive(replicas[i].state, now: now)
        }
        pool.append(replicas[i].state)
    }
    return pool
}

/// A ticket opened on irk-main and edited on both sides of a partition: status and
/// assignee conflict, each side adds a note and history.
func conflictedTicket(idLow: UInt64) -> ReplicatedTicket {
    let id = TicketID(millis: UInt64(baseTime), randomHigh: 0x38, randomLow: idLow)
    var a = Replica(node: irkutskNodes[0], id: id)
    var b = Replica(node: irkutskNodes[1], id: id)
    let citizen = Citizen(ref: "CIT-7F3K2", name: "Иванова Мария Петровна", snils: Snils(trusted: "11223344595"),
                          phone: "+79140000067")
    a.state = ReplicatedTicket(opened: openedTicket(id: id, at: a.node, now: baseTime, citizen: citizen),
                               dot: a.stamp(baseTime))
    b.receive(a.state, now: baseTime + 5)
    // Partition: both sides edit status and assignee.
    for (r, status, assignee, t) in [(0, TicketStatus.inWork, "op-petrova", baseTime + 100),
                                     (1, TicketStatus.deferred, "op-sidorov", baseTime + 120)] {
        var rep = r == 0 ? a : b
        var tk = rep.state.ticket(version: 1)!
        let old = tk
        tk.status = status
        tk.assignee = assignee
        let dot = rep.stamp(t)
        rep.state.record(tk, from: old, dot: dot)
        rep.state.add(HistoryEvent(id: rep.nextID(dot), ticketID: id, actor: Actor(user: assignee, role: "operator"),
                                   node: rep.node, at: t, stamp: dot.stamp, field: "status",
                                   old: old.status.rawValue, new: status.rawValue))
        rep.addNote(t + 1, visibility: r == 0 ? .internal : .shared)
        if r == 0 { a = rep } else { b = rep }
    }
    a.receive(b.state, now: baseTime + 200)
    return a.state
}
