import CaseModel
import TestSupport
import Testing
@testable import Replication

/// The transfer's lifecycle as values: which side may take which step from which
/// state, the state as a function of the steps (forward-only, the same in any order,
/// acceptance beating a concurrent cancellation), and its value checks.
@Suite struct TransferLifecycleTests {
    let fund = NodeID("pension-1")!
    var order: TransferOrder {
        TransferOrder(ticket: RecordID(high: 1, low: 2), fromOrganisation: "38", fromNode: irkutskNodes[0], toOrganisation: "sfr",
                      kind: .redirect, reasonCode: "pension-recalc", reasonText: "Перерасчёт пенсии", scope: [.ref, .name],
                      createdAt: testNow, dueAt: testNow + 86_400_000)
    }

    func step(_ state: TransferState, _ millis: Millis, node: NodeID? = nil, id: UInt64? = nil) -> TransferStep {
        TransferStep(id: RecordID(high: UInt64(millis), low: id ?? UInt64(state.rank)), state: state,
                     node: node ?? (state.takenBy == .sender ? irkutskNodes[0] : fundNode),
                     stamp: Stamp(millis: millis, logical: 0), actor: Actor(user: "op-1", role: "operator"),
                     reasonCode: state.needsReason ? "out-of-scope" : nil, reasonText: state.needsReason ? "Не наш вопрос" : nil)
    }

    /// Every step × side × current state is decided by the lifecycle's three rules, and
    /// the allowed ones are exactly DOMAIN.md's arrows.
    @Test func everyStepFromEveryStateBySide() {
        let arrows: Set<String> = ["SENT>DELIVERED", "SENT>CANCELLED", "DELIVERED>CANCELLED", "DELIVERED>REJECTED",
                                   "DELIVERED>ACCEPTED", "ACCEPTED>RETURNED", "ACCEPTED>COMPLETED"]
        var allowed = Set<String>()
        for target in TransferState.allCases {
            for current in TransferState.allCases {
                for side in [TransferSide.sender, .receiver] {
                    let withReason = TransferLifecycle.check(target, by: side, current: current, reasonCode: "r", reasonText: "why")
                    let without = TransferLifecycle.check(target, by: side, current: current, reasonCode: nil, reasonText: nil)
                    if target.takenBy != side {
                        #expect(withReason == .wrongSide(step: target, side: side))
                    } else if !target.from.contains(current) {
                        #expect(withReason == .wrongState(step: target, current: current))
                    } else {
                        #expect(withReason == nil)
                        #expect(without == (target.needsReason ? .reasonRequired(step: target) : nil))
                        allowed.insert("\(current.rawValue)>\(target.rawValue)")
                    }
                }
            }
        }
        #expect(allowed == arrows)
        // Every arrow moves forward, so the furthest step is where legal histories end.
        for a in arrows {
            let p = a.split(separator: ">").map { TransferState(rawValue: String($0))! }
            #expect(p[0].rank < p[1].rank, "\(a)")
        }
    }

    @Test func acceptanceBeatsAConcurrentCancellationWhichIsListed() {
        let steps = [step(.delivered, testNow + 1), step(.cancelled, testNow + 5), step(.accepted, testNow + 3)]
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            let s = TransferSteps(order.map { steps[$0] })
            #expect(s.state == .accepted)
            #expect(s.conflicts.map(\.state) == [.cancelled])
            #expect(s.acceptedAt == testNow + 3)
        }
        // Before the acceptance arrives, the cancellation stands and the delivery is history, not a conflict.
        let early = TransferSteps([steps[0], steps[1]])
        #expect(early.state == .cancelled && early.conflicts.isEmpty)
    }

    @Test func concurrentDecisionsOfTwoReceiverNodesSettleTheSameWayEverywhere() {
        let other = NodeID("pension-2")!
        let a = step(.rejected, testNow + 9, node: fund), b = step(.accepted, testNow + 2, node: other)
        #expect(TransferSteps([a, b]).state == .accepted && TransferSteps([b, a]).state == .accepted)
        #expect(TransferSteps([a, b]).conflicts.map(\.state) == [.rejected])
        let done = step(.completed, testNow + 20), back = step(.returned, testNow + 30, node: other)
        let s = TransferSteps([step(.delivered, testNow), b, back, done])
        #expect(s.state == .completed && s.conflicts.map(\.state) == [.returned])
        // Two deliveries (two fund nodes acknowledging) are no conflict.
        #expect(TransferSteps([step(.delivered, testNow, node: fund, id: 1), step(.delivered, testNow + 1, node: other, id: 2)]).conflicts.isEmpty)
    }

    /// Over random sets of steps: the state and the conflicts do not depend on the
    /// order steps arrive in, adding a step never moves the state back, and a step
    /// already held changes nothing.
    @Test(arguments: [1, 2, 3] as [UInt64]) func stateIsAForwardOnlyFunctionOfTheSet(seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        let nodes = [fundNode, NodeID("pension-2")!, irkutskNodes[0], irkutskNodes[1]]
        for _ in 0..<propertyCases(3_000) / 3 {
            let pool = (0..<Int.random(in: 1...7, using: &rng)).map { i in
                step(TransferState.allCases.filter { $0 != .sent }.randomElement(using: &rng)!,
                     testNow + Millis.random(in: 0...20, using: &rng), node: nodes.randomElement(using: &rng)!, id: UInt64(i))
            }
            let reference = TransferSteps(pool)
            let shuffled = TransferSteps(pool.shuffled(using: &rng))
            #expect(shuffled == reference && shuffled.state == reference.state && shuffled.conflicts == reference.conflicts)
            var growing = TransferSteps()
            var rank = TransferState.sent.rank
            for s in pool.shuffled(using: &rng) {
                growing.add(s)
                #expect(growing.state.rank >= rank, "the state moved back from rank \(rank) to \(growing.state)")
                rank = growing.state.rank
                let before = growing
                growing.add(s)
                #expect(growing == before)
            }
        }
    }

    @Test func overdueOnlyWhileUnaccepted() {
        #expect(TransferLifecycle.isOverdue(state: .sent, dueAt: testNow, now: testNow + 1))
        #expect(TransferLifecycle.isOverdue(state: .delivered, dueAt: testNow, now: testNow + 1))
        #expect(!TransferLifecycle.isOverdue(state: .delivered, dueAt: testNow, now: testNow))
        for s in [TransferState.accepted, .completed, .cancelled, .rejected, .returned] {
            #expect(!TransferLifecycle.isOverdue(state: s, dueAt: testNow, now: testNow + 1))
        }
        #expect(TransferLifecycle.senderStatus(kind: .redirect, state: .delivered) == .transferPending)
        #expect(TransferLifecycle.senderStatus(kind: .redirect, state: .accepted) == .transferredOut)
        #expect(TransferLifecycle.senderStatus(kind: .redirect, state: .rejected) == .inWork)
        #expect(TransferLifecycle.senderStatus(kind: .infoRequest, state: .accepted) == nil)
    }

    @Test func orderAndStepsRoundTrip() throws {
        let o = order
        #expect(try TransferValues.order(TransferValues.encode(o), directory: testDirectory) == o)
        for s in TransferState.allCases where s != .sent {
            var st = step(s, testNow)
            if s == .completed { st.answer = "Ответ: перерасчёт выполнен" }
            let c = TransferRecord.child(st)
            #expect(c.collection == (s == .cancelled ? 1 : 2))
            #expect(try TransferValues.step(c) == st)
        }
        let t = Transfer(id: RecordID(high: 9, low: 9), order: o)
        var state = TransferRecord.schema.emptyState(t.id)
        state.record(t, from: nil, dot: Dot(node: irkutskNodes[0], stamp: Stamp(millis: testNow, logical: 0)))
        #expect(Transfer.materialise(state, local: .init(version: 1)) == t)
        let roles = TransferRecord.schema.roles(state, testDirectory)
        #expect(roles[TransferRecord.sender] == "38" && roles[TransferRecord.receiver] == "sfr")
    }

    /// What a peer could send that no honest node writes: each refused naming the field.
    @Test func dishonestValuesAreRefused() {
        func refusal(_ change: (inout TransferOrder) -> Void) -> Refusal? {
            var o = order
            change(&o)
            do { _ = try TransferValues.order(TransferValues.encode(o), directory: testDirectory); return nil } catch { return error }
        }
        #expect(refusal { $0.toOrganisation = "38" }?.detail == "to: a transfer goes to another organisation")
        #expect(refusal { $0.dueAt = $0.createdAt }?.detail.hasPrefix("due: must be later than the transfer's creation") == true)
        #expect(refusal { $0.fromOrganisation = "52" }?.detail.contains("belongs to 38") == true)
        #expect(refusal { $0.toOrganisation = "Фонд" }?.detail.hasPrefix("to: 2 to 32 lower-case letters") == true)
        #expect(refusal { $0.toOrganisation = "mars" }?.detail == "to: mars is not an organisation of the federation")
        #expect(refusal { $0.createdAt = Millis.min }?.detail.hasPrefix("createdAt: must be a time") == true)
        #expect(refusal { $0.dueAt = PlausibleTime.range.upperBound }?.detail.hasPrefix("due: must be a time") == true)
        #expect(refusal { $0.reasonText = String(repeating: "я", count: 1_001) }?.reason == .tooLarge)
        #expect(refusal { $0.reasonCode = "" }?.reason == .invalidValue)
        #expect(refusal { $0.fromNode = NodeID("stranger")! }?.reason == .unknownNode)
        // A scope listing a field twice, and an unknown field.
        var w = ProtoWriter()
        w.bytesField(1, order.ticket.bytes)
        w.string(2, "38"); w.string(3, irkutskNodes[0].value); w.string(4, "sfr"); w.enumValue(5, 1)
        w.string(6, "x"); w.string(7, "y"); w.message(8) { w in w.varint(1); w.varint(1) }
        w.int64(9, testNow); w.int64(10, testNow + 1)
        #expect(throws: Refusal.self) { try TransferValues.order(w.bytes) }
        // Steps in the wrong side's collection, and a rejection without its reason.
        let accepted = TransferValues.encode(step(.accepted, testNow))
        let asSender = Child(collection: 1, id: RecordID(high: 1, low: 1), dot: Dot(node: fundNode, stamp: Stamp(millis: testNow, logical: 0)),
                             value: accepted)
        #expect(throws: Refusal.self) { try TransferValues.step(asSender) }
        var rejected = step(.rejected, testNow)
        rejected.reasonText = nil
        #expect(throws: Refusal(.invalidValue, "reason: REJECTED needs a reason code and a reason text")) {
            try TransferValues.step(TransferRecord.child(rejected))
        }
    }
}
