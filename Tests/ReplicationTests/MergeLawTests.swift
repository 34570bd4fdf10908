import CaseModel
import Testing
@testable import Replication

/// merge is commutative, associative and idempotent for every replicated type,
/// over states reached by real histories of edits and exchanges (so that contexts
/// are what replicas actually produce).
@Suite struct MergeLawTests {
    /// Random histories over 4 replicas of one ticket; returns every state seen.
    func statePool(seed: UInt64, steps: Int) -> [ReplicatedTicket] {
        var rng = SeededRandom(seed: seed)
        let id = TicketID(millis: 1_795_000_000_000, randomHigh: 1, randomLow: seed)
        var replicas = (0..<4).map { Replica(node: irkutskNodes[$0], id: id) }
        var now: Millis = 1_795_000_000_000
        replicas[0].state = ReplicatedTicket(opened: openedTicket(id: id, at: irkutskNodes[0], now: now),
                                             dot: replicas[0].stamp(now))
        var pool: [ReplicatedTicket] = [ReplicatedTicket(id: id)]
        for _ in 0..<steps {
            now += Millis.random(in: 0...50, using: &rng)
            let i = Int.random(in: 0..<replicas.count, using: &rng)
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4: replicas[i].randomEdit(now, &rng)
            case 4: replicas[i].addNote(now)
            case 5: replicas[i].wallOffset = Millis.random(in: -5_000...5_000, using: &rng)  // clock jump
            default:
                let j = Int.random(in: 0..<replicas.count, using: &rng)
                replicas[j].receive(replicas[i].state, trueTime: now)
            }
            pool.append(replicas[i].state)
        }
        return pool
    }

    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func ticketMergeLaws(seed: UInt64) {
        let pool = statePool(seed: seed, steps: 600)
        var rng = SeededRandom(seed: seed &* 7919)
        for _ in 0..<2_000 {  // 5 seeds × 2,000 = 10,000 cases per law
            let a = pool.randomElement(using: &rng)!, b = pool.randomElement(using: &rng)!, c = pool.randomElement(using: &rng)!
            #expect(a.merged(b) == b.merged(a))
            #expect(a.merged(b).merged(c) == a.merged(b.merged(c)))
            #expect(a.merged(a) == a)
            #expect(a.merged(b).merged(b) == a.merged(b))
            #expect(a.merged(b).latestStamp == a.merged(b).clock.maxStamp)
        }
    }

    @Test(arguments: [11, 12, 13, 14, 15] as [UInt64])
    func registerMergeLaws(seed: UInt64) {
        let pool = statePool(seed: seed, steps: 600)
        var rng = SeededRandom(seed: seed &* 104_729)
        for _ in 0..<2_000 {
            let a = pool.randomElement(using: &rng)!.progress, b = pool.randomElement(using: &rng)!.progress
            let c = pool.randomElement(using: &rng)!.progress
            #expect(a.merged(b) == b.merged(a))
            #expect(a.merged(b).merged(c) == a.merged(b.merged(c)))
            #expect(a.merged(a) == a)
            // The winner of a merge is the greatest surviving dot, on either side of it.
            if let w = a.merged(b).winner { #expect(a.merged(b).versions.allSatisfy { $0.dot <= w.dot }) }
        }
    }

    @Test func versionVectorJoinLaws() {
        var rng = SeededRandom(seed: 99)
        func random() -> VersionVector {
            var v = VersionVector()
            for n in irkutskNodes where Bool.random(using: &rng) {
                v.add(Dot(node: n, stamp: Stamp(raw: UInt64.random(in: 1...50, using: &rng))))
            }
            return v
        }
        for _ in 0..<10_000 {
            let a = random(), b = random(), c = random()
            #expect(a.joined(b) == b.joined(a))
            #expect(a.joined(b).joined(c) == a.joined(b.joined(c)))
            #expect(a.joined(a) == a)
            #expect(a.joined(b).dominates(a) && a.joined(b).dominates(b))
            // The sorted-array vector against a dictionary's pointwise maximum.
            let reference = a.entries.merging(b.entries) { max($0, $1) }
            #expect(a.joined(b).entries == reference)
            #expect(a.joined(b).sorted.map(\.node) == reference.keys.sorted())
            for n in irkutskNodes { #expect(a.joined(b)[n] == reference[n] ?? .zero) }
        }
    }
}

@Suite struct RegisterTests {
    let a = NodeID("irk-main")!, b = NodeID("irk-office-1")!

    @Test func concurrentWritesBecomeSiblingsWithADeterministicWinner() {
        var base = Register<String>("x", dot: Dot(node: a, stamp: Stamp(millis: 10, logical: 0)))
        var left = base, right = base
        left.write("left", dot: Dot(node: a, stamp: Stamp(millis: 20, logical: 0)))
        right.write("right", dot: Dot(node: b, stamp: Stamp(millis: 20, logical: 0)))
        let m = left.merged(right)
        #expect(m.isConflicted && m.versions.count == 2)
        #expect(m.value == "right")  // equal stamps: the greater node id wins
        #expect(m.losers.map(\.value) == ["left"])
        // Resolving is a write that has seen both: the conflict clears, and stays cleared
        // when the resolution meets either old sibling again.
        var resolved = m
        resolved.write("left", dot: Dot(node: a, stamp: Stamp(millis: 30, logical: 0)))
        #expect(!resolved.isConflicted)
        #expect(resolved.merged(left) == resolved && resolved.merged(right) == resolved)
        // A causally later write replaces without conflict.
        base.write("later", dot: Dot(node: a, stamp: Stamp(millis: 11, logical: 0)))
        #expect(!base.merged(Register("x", dot: Dot(node: a, stamp: Stamp(millis: 10, logical: 0)))).isConflicted)
    }

    @Test func laterStampWinsRegardlessOfNode() {
        let r1 = Register<String>("early", dot: Dot(node: b, stamp: Stamp(millis: 5, logical: 0)))
        let r2 = Register<String>("late", dot: Dot(node: a, stamp: Stamp(millis: 6, logical: 0)))
        #expect(r1.merged(r2).value == "late" && r2.merged(r1).value == "late")
    }
}
