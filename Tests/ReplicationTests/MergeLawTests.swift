import CaseModel
import TestSupport
import Testing
@testable import Replication

/// Merge is commutative, associative and idempotent for every record kind, over states
/// that real histories produce and over dishonest ones a buggy or hostile node could
/// send (forged contexts, write ids and child ids reused for other values): merging
/// them in any order, any number of times, gives every replica the same state.
@Suite struct MergeLawTests {
    /// 5 seeds × 2,000 triples: 10,000 cases per law per kind (EKC_PROPERTY_CASES to change).
    static let seeds: [UInt64] = [1, 2, 3, 4, 5]
    static var perSeed: Int { propertyCases(10_000) / seeds.count }

    func laws<R: Simulated>(_ kind: R.Type, seed: UInt64) {
        let honest = honestPool(R.self, seed: seed, steps: 400)
        var rng = SeededRandom(seed: seed &* 7919)
        func pick() -> Record {
            let r = honest.randomElement(using: &rng)!
            return Int.random(in: 0..<3, using: &rng) == 0 ? forged(r, honest, &rng) : r
        }
        // Failures are counted by law (records are too large to print case by case).
        var broken: [String: Int] = [:]
        for _ in 0..<MergeLawTests.perSeed {
            let a = pick(), b = pick(), c = pick()
            if a.merged(b) != b.merged(a) { broken["commutative", default: 0] += 1 }
            if a.merged(b).merged(c) != a.merged(b.merged(c)) { broken["associative", default: 0] += 1 }
            if a.merged(a) != a { broken["idempotent", default: 0] += 1 }
            if a.merged(b).merged(b) != a.merged(b) { broken["absorbing", default: 0] += 1 }
            // Deltas: any parts of a state merged in any order, then the rest, give the state.
            let parts = (0..<3).map { _ in randomDelta(of: b, &rng) }
            var viaParts = a
            for p in parts.shuffled(using: &rng) { viaParts.merge(p) }
            viaParts.merge(b.delta)
            if viaParts != a.merged(b) { broken["deltas", default: 0] += 1 }
        }
        #expect(broken.isEmpty, "\(R.schema.name), seed \(seed): laws broken in \(broken) of \(MergeLawTests.perSeed) cases")
    }

    @Test(arguments: seeds) func ticketLaws(seed: UInt64) { laws(Ticket.self, seed: seed) }
    @Test(arguments: seeds) func memoLaws(seed: UInt64) { laws(Memo.self, seed: seed) }
    @Test(arguments: seeds) func transferLaws(seed: UInt64) { laws(Transfer.self, seed: seed) }

    /// What every replica checks of a peer's delta holds of every honest state, and
    /// merging two states that pass the checks gives one that passes: a node never
    /// holds a record its peers would refuse.
    func validityIsClosedUnderMerge<R: Simulated>(_ kind: R.Type, seed: UInt64) {
        let pool = honestPool(R.self, seed: seed, steps: 400)
        let context = CheckContext(directory: testDirectory)
        for r in pool { #expect(throws: Never.self) { try R.schema.check(r.delta, context: context) } }
        var rng = SeededRandom(seed: seed &* 31)
        let dishonest = (0..<300).map { _ in forged(pool.randomElement(using: &rng)!, pool, &rng) }
        let valid = pool + dishonest.filter { (try? R.schema.check($0.delta, context: context)) != nil }
        for _ in 0..<MergeLawTests.perSeed / 4 {
            let m = valid.randomElement(using: &rng)!.merged(valid.randomElement(using: &rng)!)
            #expect(throws: Never.self, "seed \(seed)") { try R.schema.check(m.delta, context: context) }
        }
    }

    @Test(arguments: seeds) func ticketValidityClosed(seed: UInt64) { validityIsClosedUnderMerge(Ticket.self, seed: seed) }
    @Test(arguments: seeds) func memoValidityClosed(seed: UInt64) { validityIsClosedUnderMerge(Memo.self, seed: seed) }
    @Test(arguments: seeds) func transferValidityClosed(seed: UInt64) { validityIsClosedUnderMerge(Transfer.self, seed: seed) }

    @Test func versionVectorJoinLaws() {
        var rng = SeededRandom(seed: 99)
        func random() -> VersionVector {
            var v = VersionVector()
            for n in irkutskNodes where Bool.random(using: &rng) {
                v.add(Dot(node: n, stamp: Stamp(raw: UInt64.random(in: 1...50, using: &rng))))
            }
            return v
        }
        for _ in 0..<propertyCases(10_000) {
            let a = random(), b = random(), c = random()
            #expect(a.joined(b) == b.joined(a))
            #expect(a.joined(b).joined(c) == a.joined(b.joined(c)))
            #expect(a.joined(a) == a)
            #expect(a.joined(b).dominates(a) && a.joined(b).dominates(b))
            // The sorted-array vector against a dictionary's pointwise maximum.
            let reference = a.entries.merging(b.entries) { max($0, $1) }
            #expect(a.joined(b).entries == reference)
            for n in irkutskNodes { #expect(a.joined(b)[n] == reference[n] ?? .zero) }
        }
    }
}

@Suite struct RegisterTests {
    let a = NodeID("irk-main")!, b = NodeID("irk-office-1")!
    func v(_ s: String) -> ValueBytes { Array(s.utf8) }
    func dot(_ n: NodeID, _ ms: Millis) -> Dot { Dot(node: n, stamp: Stamp(millis: ms, logical: 0)) }

    @Test func concurrentWritesBecomeSiblingsWithADeterministicWinner() {
        var base = Register(v("x"), dot: dot(a, 10))
        var left = base, right = base
        left.write(v("left"), dot: dot(a, 20))
        right.write(v("right"), dot: dot(b, 20))
        let m = left.merged(right)
        #expect(m.isConflicted && m.versions.count == 2)
        #expect(m.value == v("right"))  // equal stamps: the greater node id wins
        #expect(m.losers.map(\.value) == [v("left")])
        // Resolving is a write that has seen both: the conflict clears, and stays cleared
        // when the resolution meets either old sibling again.
        var resolved = m
        resolved.write(v("left"), dot: dot(a, 30))
        #expect(!resolved.isConflicted)
        #expect(resolved.merged(left) == resolved && resolved.merged(right) == resolved)
        // A causally later write replaces without conflict.
        base.write(v("later"), dot: dot(a, 11))
        #expect(!base.merged(Register(v("x"), dot: dot(a, 10))).isConflicted)
    }

    @Test func laterStampWinsRegardlessOfNode() {
        let r1 = Register(v("early"), dot: dot(b, 5))
        let r2 = Register(v("late"), dot: dot(a, 6))
        #expect(r1.merged(r2).value == v("late") && r2.merged(r1).value == v("late"))
    }

    /// The context is what makes merge lawful: a version a replica has seen superseded
    /// stays gone even after the version that superseded it is itself superseded
    /// elsewhere (the case that a context rebuilt from surviving versions gets wrong).
    @Test func supersededStaysGoneWhateverTheOrder() {
        let x = Register(v("x"), dot: dot(a, 10))
        var y = x
        y.write(v("y"), dot: dot(b, 20))          // b saw x
        var z = y
        z.write(v("z"), dot: dot(a, 30))          // a saw y, hence x
        let one = x.merged(y).merged(z), two = x.merged(y.merged(z)), three = z.merged(x)
        #expect(one == two && two == three)
        #expect(one.versions.map(\.value) == [v("z")])
    }

    /// Two variants of one write (a forged or corrupted dot) settle the same way everywhere.
    @Test func variantsOfOneDotSettleDeterministically() {
        let d = dot(a, 10)
        let p = Register(v("aa"), dot: d), q = Register(v("b"), dot: d)
        #expect(p.merged(q) == q.merged(p))
        #expect(p.merged(q).value == v("b"))  // fewer bytes first
    }
}
