import CaseModel
import TestSupport
@testable import Replication

/// A record kind the merge-law and simulation tests can drive: how to open one and how
/// to edit it at random, as operators of any node would.
protocol Simulated: ReplicatedRecord, Equatable {
    static func opened(id: RecordID, at node: NodeID, now: Millis) -> Self
    static func randomEdit(_ r: Self, now: Millis, _ rng: inout SeededRandom) -> Self
    static func randomChild(_ collection: UInt8, now: Millis, _ rng: inout SeededRandom) -> ValueBytes
}

extension Ticket: Simulated {
    static func opened(id: RecordID, at node: NodeID, now: Millis) -> Ticket { openedTicket(id: id, at: node, now: now) }

    static func randomEdit(_ r: Ticket, now: Millis, _ rng: inout SeededRandom) -> Ticket {
        var t = r
        switch Int.random(in: 0..<8, using: &rng) {
        case 0: t.status = TicketStatus.allCases.randomElement(using: &rng)!
        case 1: t.assignee = ["op-ivanova", "op-petrova", "op-sidorov", nil].randomElement(using: &rng)!
        case 2: t.priority = Priority.allCases.randomElement(using: &rng)!
        case 3: t.topic = ["pension", "child-benefits", "victory-card"].randomElement(using: &rng)!
        case 4: t.deadlines.callbackBy = now + Millis.random(in: 0...1_000_000, using: &rng)
        case 5: t.citizen = [nil, Citizen(ref: "CIT-7F3K2"), Citizen(ref: "CIT-9Q1", name: "Иванова")].randomElement(using: &rng)!
        case 6: t.ownerNode = irkutskNodes.randomElement(using: &rng)!
        default: t.subject = "тема \(Int.random(in: 0..<5, using: &rng))"
        }
        return t
    }

    static func randomChild(_ collection: UInt8, now: Millis, _ rng: inout SeededRandom) -> ValueBytes {
        let actor = Actor(user: "op-\(Int.random(in: 0..<3, using: &rng))", role: "operator")
        let placeholder = Child(collection: collection, id: RecordID(high: 0, low: 0),
                                dot: Dot(node: irkutskNodes[0], stamp: Stamp(millis: now, logical: 0)), value: [])
        if collection == TicketRecord.Collection.notes.rawValue {
            return TicketValues.encode(Note(id: placeholder.id, ticketID: placeholder.id, author: actor, node: irkutskNodes[0],
                                            at: now, stamp: placeholder.dot.stamp, visibility: .internal,
                                            text: "заметка \(UInt32.random(in: 0...UInt32.max, using: &rng))"))
        }
        return TicketValues.encode(HistoryEvent(id: placeholder.id, ticketID: placeholder.id, actor: actor, node: irkutskNodes[0],
                                                at: now, stamp: placeholder.dot.stamp, field: "status", old: "NEW",
                                                new: "IN_WORK \(Int.random(in: 0..<100, using: &rng))"))
    }
}

extension Memo: Simulated {
    static func opened(id: RecordID, at node: NodeID, now: Millis) -> Memo {
        Memo(id: id, author: node, title: "Перезвонить", status: "open")
    }

    static func randomEdit(_ r: Memo, now: Millis, _ rng: inout SeededRandom) -> Memo {
        var m = r
        if Bool.random(using: &rng) {
            m.title = ["Перезвонить", "Уточнить СНИЛС", "Запросить справку"].randomElement(using: &rng)!
        } else {
            m.status = ["open", "done", "waiting"].randomElement(using: &rng)!
        }
        return m
    }

    static func randomChild(_ collection: UInt8, now: Millis, _ rng: inout SeededRandom) -> ValueBytes {
        Memo.encodeComment("комментарий \(UInt32.random(in: 0...UInt32.max, using: &rng))")
    }
}

extension Transfer: Simulated {
    static func opened(id: RecordID, at node: NodeID, now: Millis) -> Transfer {
        Transfer(id: id, order: TransferOrder(ticket: RecordID(millis: UInt64(now), randomHigh: 1, randomLow: 2),
                                              fromOrganisation: testDirectory.org(node)!, fromNode: node, toOrganisation: "sfr",
                                              kind: .redirect, reasonCode: "pension-recalc", reasonText: "Перерасчёт пенсии",
                                              scope: [.ref, .name], createdAt: now, dueAt: now + 86_400_000))
    }

    /// The order is written once by the API; a rewrite is still a lawful write to merge.
    static func randomEdit(_ r: Transfer, now: Millis, _ rng: inout SeededRandom) -> Transfer {
        var t = r
        t.order.reasonText = ["Перерасчёт пенсии", "Уточнение стажа", "Справка о выплатах"].randomElement(using: &rng)!
        return t
    }

    static func randomChild(_ collection: UInt8, now: Millis, _ rng: inout SeededRandom) -> ValueBytes {
        let actor = Actor(user: "op-\(Int.random(in: 0..<3, using: &rng))", role: "operator")
        let states: [TransferState] = collection == TransferRecord.Collection.senderSteps.rawValue
            ? [.cancelled] : [.delivered, .accepted, .rejected, .returned, .completed]
        let state = states.randomElement(using: &rng)!
        return TransferValues.encode(TransferStep(id: RecordID(high: 0, low: 0), state: state, node: irkutskNodes[0],
                                                  stamp: Stamp(millis: now, logical: 0), actor: actor,
                                                  reasonCode: state.needsReason ? "out-of-scope" : nil,
                                                  reasonText: state.needsReason ? "Не относится к компетенции фонда" : nil,
                                                  answer: state == .completed ? "Ответ направлен заявителю" : nil))
    }
}

/// One replica of one record: its state, its clock, its wall-clock error, and every
/// write it made (register index and dot) and child it created, for the checkers.
struct Replica<R: Simulated> {
    let node: NodeID
    var record: Record
    var clock = HybridLogicalClock(maxSkew: 3_600_000)
    var wallOffset: Millis = 0
    var writes: [(register: Int, dot: Dot)] = []
    var created: [ChildKey] = []
    var counter: UInt64 = 0

    init(node: NodeID, id: RecordID) {
        self.node = node
        record = Record(state: R.schema.emptyState(id))
    }

    var model: R? { R.materialise(record.state, local: LocalRecordInfo(version: 1)) }

    mutating func dot(_ trueTime: Millis) -> Dot { Dot(node: node, stamp: clock.tick(wall: trueTime + wallOffset)) }

    mutating func open(_ now: Millis) {
        let d = dot(now)
        let written = record.state.record(R.opened(id: record.state.id, at: node, now: now), from: nil, dot: d)
        for i in written { writes.append((i, d)) }
    }

    mutating func randomEdit(_ now: Millis, _ rng: inout SeededRandom) {
        guard let old = model else { return }
        let new = R.randomEdit(old, now: now, &rng)
        guard new.registerValues != old.registerValues else { return }
        let d = dot(now)
        for i in record.state.record(new, from: old, dot: d) { writes.append((i, d)) }
    }

    mutating func addChild(_ now: Millis, _ rng: inout SeededRandom) {
        guard let coll = R.schema.collections.randomElement(using: &rng) else { return }
        let d = dot(now)
        counter += 1
        let id = RecordID(millis: UInt64(d.stamp.millis), randomHigh: UInt16(truncatingIfNeeded: node.value.hashValue & 0x7FFF),
                          randomLow: counter << 8 | UInt64(irkutskNodes.firstIndex(of: node) ?? 99))
        let c = Child(collection: coll.number, id: id, dot: d, value: R.randomChild(coll.number, now: now, &rng))
        record.children[c.key] = c
        created.append(c.key)
    }

    mutating func receive(_ delta: RecordDelta, trueTime: Millis) {
        record.merge(delta)
        _ = try? clock.receive(delta.state.clock.maxStamp, wall: trueTime + wallOffset)
    }
}

/// Every state random histories of one record pass through (four replicas editing,
/// adding children, exchanging whole records and parts of them, clocks jumping).
func honestPool<R: Simulated>(_: R.Type, seed: UInt64, steps: Int) -> [Record] {
    var rng = SeededRandom(seed: seed)
    let id = RecordID(millis: UInt64(testNow), randomHigh: 1, randomLow: seed)
    var replicas = (0..<4).map { Replica<R>(node: irkutskNodes[$0], id: id) }
    var now = testNow
    replicas[0].open(now)
    var pool = [Record(state: R.schema.emptyState(id))]
    for _ in 0..<steps {
        now += Millis.random(in: 0...50, using: &rng)
        let i = Int.random(in: 0..<replicas.count, using: &rng)
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<4: replicas[i].randomEdit(now, &rng)
        case 4: replicas[i].addChild(now, &rng)
        case 5: replicas[i].wallOffset = Millis.random(in: -5_000...5_000, using: &rng)
        default:
            let j = Int.random(in: 0..<replicas.count, using: &rng)
            let delta = Bool.random(using: &rng) ? replicas[i].record.delta : randomDelta(of: replicas[i].record, &rng)
            replicas[j].receive(delta, trueTime: now)
        }
        pool.append(replicas[i].record)
    }
    return pool
}

/// A dishonest variant of a record, as a buggy or hostile node could send it: a
/// forged context (claims of writes nobody made, or of later ones), a write id reused
/// for another value, a version dropped while its dot stays seen, a child id reused
/// for other content.
func forged(_ r: Record, _ pool: [Record], _ rng: inout SeededRandom) -> Record {
    var out = r
    let nodes = irkutskNodes + [fundNode]
    for _ in 0..<Int.random(in: 1...3, using: &rng) {
        let i = Int.random(in: 0..<out.state.registers.count, using: &rng)
        let reg = out.state.registers[i]
        switch Int.random(in: 0..<5, using: &rng) {
        case 0:
            var seen = reg.seen
            seen.add(Dot(node: nodes.randomElement(using: &rng)!,
                         stamp: Stamp(millis: testNow + Millis.random(in: -100...30_000, using: &rng), logical: 0)))
            out.state.registers[i] = Register(sortedVersions: reg.versions, seen: seen)
        case 1:
            guard !reg.versions.isEmpty else { continue }
            var versions = reg.versions
            let k = Int.random(in: 0..<versions.count, using: &rng)
            let other = pool.randomElement(using: &rng)!.state.registers[i].value ?? [0x0A, 0x01, 0x78]
            versions[k] = Version(dot: versions[k].dot, value: other + (Bool.random(using: &rng) ? [] : [0x10, 0x01]))
            out.state.registers[i] = Register(sortedVersions: versions, seen: reg.seen)
        case 2:
            guard !reg.versions.isEmpty else { continue }
            var versions = reg.versions
            versions.remove(at: Int.random(in: 0..<versions.count, using: &rng))
            out.state.registers[i] = Register(sortedVersions: versions, seen: reg.seen)
        case 3:
            // A forged concurrent write of a node that never made it.
            let d = Dot(node: nodes.randomElement(using: &rng)!,
                        stamp: Stamp(millis: testNow + Millis.random(in: 0...30_000, using: &rng), logical: 1))
            let value = pool.randomElement(using: &rng)!.state.registers[i].value ?? [0x0A, 0x01, 0x79]
            var versions = reg.versions.filter { $0.dot != d }
            versions.append(Version(dot: d, value: value))
            versions.sort { $0.dot < $1.dot }
            out.state.registers[i] = Register(sortedVersions: versions, seen: reg.seen)
        default:
            guard let c = out.children.values.randomElement(using: &rng) else { continue }
            let otherDot = Dot(node: nodes.randomElement(using: &rng)!, stamp: Stamp(raw: c.dot.stamp.raw &+ 1))
            out.children[c.key] = Child(collection: c.collection, id: c.id, dot: Bool.random(using: &rng) ? c.dot : otherDot,
                                        value: c.value + [0x10, 0x02])
        }
    }
    return out
}
