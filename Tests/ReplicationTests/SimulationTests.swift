import CaseModel
import Testing
@testable import Replication

/// A seeded simulation in the manner of FoundationDB's: five replicas of a region's
/// ticket edit it while a hostile network loses, duplicates, delays and reorders
/// their messages, cuts links, and their wall clocks jump. After the network heals
/// and every replica has heard from every other, all replicas must be identical, and
/// every write ever made must be either the winner, a listed conflict, or causally
/// superseded by a write that saw it: nothing is silently dropped.
@Suite struct SimulationTests {
    struct Message {
        let from: Int, to: Int
        let state: ReplicatedTicket
    }

    /// Seeds that once failed stay here as regression cases.
    static let regressionSeeds: [UInt64] = []

    static func run(seed: UInt64, steps: Int = 500) -> (replicas: [Replica], issues: [String]) {
        var rng = SeededRandom(seed: seed)
        let n = 5
        let id = TicketID(millis: 1_795_000_000_000, randomHigh: 7, randomLow: seed)
        var replicas = (0..<n).map { Replica(node: irkutskNodes[$0], id: id) }
        var now: Millis = 1_795_000_000_000
        let origin = Int.random(in: 0..<n, using: &rng)
        replicas[origin].state = ReplicatedTicket(opened: openedTicket(id: id, at: irkutskNodes[origin], now: now),
                                                  dot: replicas[origin].stamp(now))
        for f in Field.allCases { replicas[origin].writes.append((f, replicas[origin].state.header.winner!.dot)) }
        var inFlight: [Message] = []
        var cut = Set<[Int]>()  // partitioned links, both directions listed

        for _ in 0..<steps {
            now += Millis.random(in: 0...30, using: &rng)
            let i = Int.random(in: 0..<n, using: &rng)
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<30:
                replicas[i].randomEdit(now, &rng)
            case 30..<36:
                replicas[i].addNote(now)
            case 36..<40:
                replicas[i].wallOffset = Millis.random(in: -60_000...60_000, using: &rng)  // clock jump
            case 40..<44:
                // Partition: cut or heal a random link.
                let j = Int.random(in: 0..<n, using: &rng)
                if i != j {
                    if cut.contains([i, j]) { cut.remove([i, j]); cut.remove([j, i]) } else { cut.insert([i, j]); cut.insert([j, i]) }
                }
            case 44..<70:
                // Send a snapshot; the network may lose or duplicate it.
                let j = Int.random(in: 0..<n, using: &rng)
                guard i != j else { continue }
                let copies = Int.random(in: 0..<10, using: &rng) == 0 ? 0 : (Int.random(in: 0..<8, using: &rng) == 0 ? 2 : 1)
                for _ in 0..<copies { inFlight.append(Message(from: i, to: j, state: replicas[i].state)) }
            default:
                // Deliver a random in-flight message (reordering), unless its link is cut (then it is lost).
                guard !inFlight.isEmpty else { continue }
                let m = inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &rng))
                if !cut.contains([m.from, m.to]) { replicas[m.to].receive(m.state, trueTime: now) }
            }
        }
        // Heal: every replica hears from every other, twice round.
        for _ in 0..<2 {
            for a in 0..<n { for b in 0..<n where a != b { replicas[b].receive(replicas[a].state, trueTime: now) } }
        }
        var issues: [String] = []
        let final = replicas[0].state
        for r in replicas where r.state != final { issues.append("\(r.node) differs after healing") }
        // Nothing silently dropped: every write is in its field's context, and a write not
        // superseded by a later causal write is still there as winner or sibling.
        for r in replicas {
            for (field, dot) in r.writes where !context(field, of: final).contains(dot) {
                issues.append("write \(dot) to \(field) vanished")
            }
        }
        for r in replicas {
            for note in r.state.notes.keys where final.notes[note] == nil { issues.append("note \(note) lost") }
        }
        // The winner of each conflicted field is its greatest sibling.
        for c in final.conflicts where !(c.loser < c.winner) { issues.append("loser \(c.loser) beats winner \(c.winner)") }
        if final.ticket(version: 1) == nil { issues.append("the ticket cannot be materialised") }
        return (replicas, issues)
    }

    @Test func twoHundredSeedsConverge() {
        var conflicted = 0
        for seed in (1...200 as ClosedRange<UInt64>).map({ $0 }) + SimulationTests.regressionSeeds {
            let (replicas, issues) = SimulationTests.run(seed: seed)
            #expect(issues.isEmpty, "seed \(seed): \(issues.prefix(5))")
            if !replicas[0].state.conflicts.isEmpty { conflicted += 1 }
        }
        // The schedules must actually produce races, or the test proves little.
        #expect(conflicted > 20, "only \(conflicted) of 200 runs ended with a conflict")
    }

    @Test func aResolutionClearsTheConflictEverywhere() {
        let (replicas, _) = SimulationTests.run(seed: 4242)
        var states = replicas.map(\.state)
        guard let c = states[0].conflicts.first(where: { $0.field == .progress || $0.field == .assignee }) else {
            Issue.record("seed 4242 produced no status or assignee conflict"); return
        }
        // An operator on replica 2 picks the losing value: a write that has seen both.
        var t = states[2]
        let old = t.ticket(version: 1)!
        var chosen = old
        if c.field == .progress {
            chosen.status = t.progress.losers.first { $0.dot == c.loser }!.value.status
        } else {
            chosen.assignee = t.assignee.losers.first { $0.dot == c.loser }!.value
        }
        var clock = HybridLogicalClock(last: t.clock.maxStamp)
        let dot = Dot(node: irkutskNodes[2], stamp: clock.tick(wall: 0))
        if chosen == old {  // the chosen value equals the winner's: rewrite it to supersede
            if c.field == .progress { t.progress.write(t.progress.value!, dot: dot) } else { t.assignee.write(t.assignee.winner!.value, dot: dot) }
        } else {
            t.record(chosen, from: old, dot: dot)
        }
        states[2] = t
        // Gossip the resolution in both directions.
        for _ in 0..<2 { for a in 0..<5 { for b in 0..<5 where a != b { states[b].merge(states[a]) } } }
        for s in states {
            #expect(!s.conflicts.contains { $0.id == c.id })
            #expect(s == states[0])
        }
    }
}

@Suite struct AdmissionTests {
    let now: Millis = 1_795_000_000_000
    let id = TicketID(millis: 1_795_000_000_000, randomHigh: 3, randomLow: 3)

    @Test func writesFromTheEntitledOrganisationPass() {
        let t = ReplicatedTicket(opened: openedTicket(id: id, at: irkutskNodes[0], now: now),
                                 dot: Dot(node: irkutskNodes[0], stamp: Stamp(millis: now, logical: 0)))
        let (ok, rejected) = t.admitted(from: irkutskNodes[1], local: nil, directory: directory, now: now, maxSkew: 60_000)
        #expect(rejected.isEmpty && ok == t)
    }

    @Test func aFundCannotWriteTheRegionsHandlingNorSpeakForIt() {
        let origin = irkutskNodes[0]
        let base = ReplicatedTicket(opened: openedTicket(id: id, at: origin, now: now),
                                    dot: Dot(node: origin, stamp: Stamp(millis: now, logical: 0)))
        var forged = base
        let fund = NodeID("sfr-federal")!
        forged.assignee.write("intruder", dot: Dot(node: fund, stamp: Stamp(millis: now + 1, logical: 0)))
        // Sent by the fund itself: the fund's org does not own this ticket's handling.
        let (kept, rejected) = forged.admitted(from: fund, local: base, directory: directory, now: now, maxSkew: 60_000)
        #expect(rejected.contains { if case .notAuthorised(field: "assignee", author: fund) = $0.reason { return true }; return false })
        #expect(kept.merged(base).assignee.value == Optional<String>.none)
        // Relayed by a region node: it may not speak for the fund's writes either.
        let (_, relayed) = forged.admitted(from: irkutskNodes[1], local: base, directory: directory, now: now, maxSkew: 60_000)
        #expect(relayed.contains { if case .cannotSpeakFor(author: fund, sender: irkutskNodes[1]) = $0.reason { return true }; return false })
    }

    @Test func aStampTooFarAheadIsQuarantined() {
        let origin = irkutskNodes[0]
        let base = ReplicatedTicket(opened: openedTicket(id: id, at: origin, now: now),
                                    dot: Dot(node: origin, stamp: Stamp(millis: now, logical: 0)))
        var ahead = base
        ahead.priority.write(.urgent, dot: Dot(node: irkutskNodes[1], stamp: Stamp(millis: now + 3_600_000, logical: 0)))
        let (kept, rejected) = ahead.admitted(from: irkutskNodes[1], local: base, directory: directory, now: now, maxSkew: 60_000)
        #expect(rejected.count == 1)
        #expect(kept.merged(base).priority.value == .normal)
    }
}
