import CaseModel
import Foundation
import TestSupport
import Testing
@testable import Replication

/// A seeded simulation in the manner of FoundationDB's: five replicas of a region's
/// record edit it while a hostile network loses, duplicates, delays and reorders
/// their messages (whole records and parts of them), cuts links, and their wall clocks
/// jump. After the network heals and every replica has heard from every other, all
/// replicas must be identical, every write ever made must be the winner, a listed
/// sibling, or superseded by a write that saw it (the register's context covers it),
/// every child ever made must be everywhere, and the state must pass the checks a
/// peer applies. A failing seed prints itself; add it to `regressionSeeds`.
@Suite struct SimulationTests {
    struct Message {
        let from: Int, to: Int
        let delta: RecordDelta
    }

    /// Seeds that once failed stay here as regression cases.
    static let regressionSeeds: [UInt64] = []
    /// Seeds per kind and run (EKC_SIMULATION_SEEDS to change).
    static var seedCount: Int { Int(getenv("EKC_SIMULATION_SEEDS").map { String(cString: $0) } ?? "") ?? 1_000 }

    static func run<R: Simulated>(_ kind: R.Type, seed: UInt64, steps: Int = 200) -> [String] {
        var rng = SeededRandom(seed: seed)
        let n = 5
        let id = RecordID(millis: UInt64(testNow), randomHigh: 7, randomLow: seed)
        var replicas = (0..<n).map { Replica<R>(node: irkutskNodes[$0], id: id) }
        var now = testNow
        replicas[Int.random(in: 0..<n, using: &rng)].open(now)
        var inFlight: [Message] = []
        var cut = Set<[Int]>()

        for _ in 0..<steps {
            now += Millis.random(in: 0...30, using: &rng)
            let i = Int.random(in: 0..<n, using: &rng)
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<30:
                replicas[i].randomEdit(now, &rng)
            case 30..<36:
                replicas[i].addChild(now, &rng)
            case 36..<40:
                replicas[i].wallOffset = Millis.random(in: -60_000...60_000, using: &rng)  // clock jump
            case 40..<44:
                let j = Int.random(in: 0..<n, using: &rng)
                if i != j {
                    if cut.contains([i, j]) { cut.remove([i, j]); cut.remove([j, i]) } else { cut.insert([i, j]); cut.insert([j, i]) }
                }
            case 44..<70:
                // Send the whole record or a part of it; the network may lose or duplicate it.
                let j = Int.random(in: 0..<n, using: &rng)
                guard i != j else { continue }
                let delta = Bool.random(using: &rng) ? replicas[i].record.delta : randomDelta(of: replicas[i].record, &rng)
                let copies = Int.random(in: 0..<10, using: &rng) == 0 ? 0 : (Int.random(in: 0..<8, using: &rng) == 0 ? 2 : 1)
                for _ in 0..<copies { inFlight.append(Message(from: i, to: j, delta: delta)) }
            default:
                // Deliver a random message in flight (reordering), unless its link is cut (then it is lost).
                guard !inFlight.isEmpty else { continue }
                let m = inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &rng))
                if !cut.contains([m.from, m.to]) { replicas[m.to].receive(m.delta, trueTime: now) }
            }
        }
        for _ in 0..<2 {
            for a in 0..<n { for b in 0..<n where a != b { replicas[b].receive(replicas[a].record.delta, trueTime: now) } }
        }
        var issues: [String] = []
        let final = replicas[0].record
        for r in replicas where r.record != final { issues.append("\(r.node) differs after healing") }
        for r in replicas {
            for (i, dot) in r.writes where !final.state.registers[i].seen.contains(dot) {
                issues.append("write \(dot) to \(R.schema.registers[i].name) vanished")
            }
            for key in r.created where final.children[key] == nil { issues.append("child \(key.id) lost") }
        }
        for c in R.schema.conflicts(of: final.state) where !(c.loser < c.winner) {
            issues.append("loser \(c.loser) beats winner \(c.winner)")
        }
        if (try? R.schema.check(final.delta, context: CheckContext(directory: testDirectory))) == nil {
            issues.append("the converged state fails the checks a peer applies")
        }
        if final.state.registers.contains(where: { !$0.isEmpty }) && R.materialise(final.state, local: .init(version: 1)) == nil {
            issues.append("the converged state does not materialise")
        }
        return issues.map { "seed \(seed): \($0)" }
    }

    func converges<R: Simulated>(_ kind: R.Type) {
        var failing: [String] = []
        for seed in SimulationTests.regressionSeeds + (1...UInt64(SimulationTests.seedCount)).map({ $0 }) {
            failing += SimulationTests.run(R.self, seed: seed)
        }
        #expect(failing.isEmpty, "\(failing.count) issues; first: \(failing.prefix(5).joined(separator: "; "))")
    }

    @Test func ticketsConverge() { converges(Ticket.self) }
    @Test func memosConverge() { converges(Memo.self) }
    @Test func transfersConverge() { converges(Transfer.self) }
}
