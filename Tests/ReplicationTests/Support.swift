import CaseModel
@testable import Replication

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

let irkutskNodes = ["irk-main", "irk-office-1", "irk-office-2", "irk-office-3", "irk-office-4"].map { NodeID($0)! }
let directory = Directory(Dictionary(uniqueKeysWithValues: irkutskNodes.map { ($0, "38") }
    + [(NodeID("sfr-federal")!, "sfr"), (NodeID("nn-main")!, "52")]))

func openedTicket(id: TicketID, at node: NodeID, now: Millis) -> Ticket {
    let draft = TicketDraft(channel: .phone, topic: "child-benefits", subject: "Единое пособие",
                            statement: "Когда будет решение?", legalRegime: .appeal59FZ)
    return try! draft.open(id: id, number: TicketNumber(region: "38", year: 2026, sequence: 1), node: node,
                           now: now, stamp: Stamp(millis: now, logical: 0))
}

/// One replica of one ticket: its state, its clock, its wall-clock error.
struct Replica {
    let node: NodeID
    var state: ReplicatedTicket
    var clock = HybridLogicalClock(maxSkew: 3_600_000)
    var wallOffset: Millis = 0
    var writes: [(Field, Dot)] = []
    var noteCounter: UInt64 = 0

    init(node: NodeID, id: TicketID) {
        self.node = node
        state = ReplicatedTicket(id: id)
    }

    mutating func stamp(_ trueTime: Millis) -> Dot {
        Dot(node: node, stamp: clock.tick(wall: trueTime + wallOffset))
    }

    /// A random operator edit, as the store would record it.
    mutating func randomEdit<R: RandomNumberGenerator>(_ trueTime: Millis, _ rng: inout R) {
        guard var t = state.ticket(version: 1) else { return }
        let old = t
        let field = Int.random(in: 0..<6, using: &rng)
        switch field {
        case 0: t.status = TicketStatus.allCases.randomElement(using: &rng)!
        case 1: t.assignee = ["op-ivanova", "op-petrova", "op-sidorov", nil].randomElement(using: &rng)!
        case 2: t.priority = Priority.allCases.randomElement(using: &rng)!
        case 3: t.topic = ["pension", "child-benefits", "victory-card"].randomElement(using: &rng)!
        case 4: t.deadlines.callbackBy = Millis.random(in: 0...1_000_000, using: &rng)
        default: t.subject = "тема \(Int.random(in: 0..<5, using: &rng))"
        }
        guard t != old else { return }
        let dot = stamp(trueTime)
        state.record(t, from: old, dot: dot)
        for f in Field.allCases where register(f, of: state).contains(dot) { writes.append((f, dot)) }
    }

    mutating func addNote(_ trueTime: Millis) {
        let dot = stamp(trueTime)
        noteCounter += 1
        let id = RecordID(high: UInt64(dot.stamp.millis) << 16, low: noteCounter &* 1000 &+ UInt64(irkutskNodes.firstIndex(of: node) ?? 99))
        state.add(Note(id: id, ticketID: state.id, author: Actor(user: "op", role: "operator"), node: node,
                       at: dot.stamp.millis, stamp: dot.stamp, visibility: .internal, text: "note \(id)"))
    }

    mutating func receive(_ remote: ReplicatedTicket, trueTime: Millis) {
        state.merge(remote)
        _ = try? clock.receive(remote.clock.maxStamp, wall: trueTime + wallOffset)
    }
}

/// The dots a register's versions hold, for checking that no write vanished.
func register(_ f: Field, of t: ReplicatedTicket) -> [Dot] {
    switch f {
    case .header: return t.header.versions.map(\.dot)
    case .statement: return t.statement.versions.map(\.dot)
    case .citizen: return t.citizen.versions.map(\.dot)
    case .progress: return t.progress.versions.map(\.dot)
    case .assignee: return t.assignee.versions.map(\.dot)
    case .priority: return t.priority.versions.map(\.dot)
    case .topic: return t.topic.versions.map(\.dot)
    case .owner: return t.owner.versions.map(\.dot)
    }
}

func context(_ f: Field, of t: ReplicatedTicket) -> VersionVector {
    switch f {
    case .header: return t.header.context
    case .statement: return t.statement.context
    case .citizen: return t.citizen.context
    case .progress: return t.progress.context
    case .assignee: return t.assignee.context
    case .priority: return t.priority.context
    case .topic: return t.topic.context
    case .owner: return t.owner.context
    }
}
