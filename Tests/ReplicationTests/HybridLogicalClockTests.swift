import Testing
import CaseModel
import TestSupport
@testable import Replication

private let t0: Millis = 1_795_132_800_000

@Suite("Hybrid logical clock")
struct HybridLogicalClockTests {
    @Test("never goes backwards over random ticks and receives with jumping wall time",
          arguments: [1, 2, 3, 42, 1_000, 0xDEAD])
    func monotonic(seed: UInt64) {
        var g = SeededRandom(seed: seed)
        var clock = HybridLogicalClock(maxSkew: 60_000)
        var wall = t0
        var previous = Stamp.zero
        var refused = 0, adopted = 0
        for step in 0..<20_000 {
            // wall time mostly creeps forward, sometimes stalls, sometimes jumps back (NTP step)
            switch Int.random(in: 0..<10, using: &g) {
            case 0: wall -= Millis.random(in: 1...120_000, using: &g)
            case 1, 2: break
            default: wall += Millis.random(in: 0...50, using: &g)
            }
            let s: Stamp
            if Bool.random(using: &g) {
                s = clock.tick(wall: wall)
                #expect(s.millis >= wall || s.millis >= previous.millis, "step \(step)")
            } else {
                let remote = Stamp(millis: wall + Millis.random(in: -100_000...100_000, using: &g),
                                   logical: UInt16.random(in: 0...UInt16.max, using: &g))
                do {
                    s = try clock.receive(remote, wall: wall)
                    #expect(s > remote, "step \(step): \(s) not after remote \(remote)")
                    adopted += 1
                } catch {
                    #expect(clock.last == previous, "step \(step): a refused receive moved the clock")
                    refused += 1
                    continue
                }
            }
            if s <= previous {
                Issue.record("seed \(seed) step \(step): \(s) after \(previous)")
                return
            }
            #expect(clock.last == s)
            previous = s
        }
        #expect(refused > 0 && adopted > 0)
    }

    @Test("tick follows wall time, and at the same wall time increments the logical counter")
    func tick() {
        var c = HybridLogicalClock()
        #expect(c.tick(wall: t0) == Stamp(millis: t0, logical: 0))
        #expect(c.tick(wall: t0) == Stamp(millis: t0, logical: 1))
        #expect(c.tick(wall: t0) == Stamp(millis: t0, logical: 2))
        #expect(c.tick(wall: t0 - 5_000) == Stamp(millis: t0, logical: 3))  // wall went back
        #expect(c.tick(wall: t0 + 1) == Stamp(millis: t0 + 1, logical: 0))
    }

    @Test("a stamp more than maxSkew ahead is refused and the clock is unchanged")
    func tooFarAhead() {
        var c = HybridLogicalClock(maxSkew: 60_000)
        _ = c.tick(wall: t0)
        _ = c.tick(wall: t0)
        let before = c
        let remote = Stamp(millis: t0 + 60_001, logical: 7)
        #expect(throws: HybridLogicalClock.Refusal.tooFarAhead(remote: remote, ahead: 60_001)) {
            try c.receive(remote, wall: t0)
        }
        #expect(c == before)
        #expect(c.last == Stamp(millis: t0, logical: 1))
        // exactly maxSkew ahead is still adopted
        let edge = Stamp(millis: t0 + 60_000, logical: 7)
        #expect(throws: Never.self) { try c.receive(edge, wall: t0) }
        #expect(c.last == Stamp(millis: t0 + 60_000, logical: 8))
    }

    @Test("a future stamp within the skew is adopted: the result follows it")
    func adoptsFuture() throws {
        var c = HybridLogicalClock(maxSkew: 60_000)
        _ = c.tick(wall: t0)
        let remote = Stamp(millis: t0 + 30_000, logical: 4)
        let r = try c.receive(remote, wall: t0)
        #expect(r > remote)
        #expect(r == Stamp(millis: t0 + 30_000, logical: 5))
        // later local ticks stay after it while the wall clock is behind
        #expect(c.tick(wall: t0 + 1) == Stamp(millis: t0 + 30_000, logical: 6))
        #expect(c.tick(wall: t0 + 30_001) == Stamp(millis: t0 + 30_001, logical: 0))
    }

    @Test("an old remote stamp does not pull the clock back; wall time ahead of both wins")
    func receivePast() throws {
        var c = HybridLogicalClock()
        _ = c.tick(wall: t0)
        let r = try c.receive(Stamp(millis: t0 - 10_000, logical: 99), wall: t0)
        #expect(r == Stamp(millis: t0, logical: 1))
        let w = try c.receive(Stamp(millis: t0 - 10_000, logical: 99), wall: t0 + 500)
        #expect(w == Stamp(millis: t0 + 500, logical: 0))
        // remote in the same millisecond with a higher counter
        let m = try c.receive(Stamp(millis: t0 + 500, logical: 40), wall: t0 + 500)
        #expect(m == Stamp(millis: t0 + 500, logical: 41))
    }

    @Test("logical overflow at 0xFFFF moves to the next millisecond")
    func overflow() throws {
        var c = HybridLogicalClock(last: Stamp(millis: t0, logical: 0xFFFE))
        #expect(c.tick(wall: t0) == Stamp(millis: t0, logical: 0xFFFF))
        let s = c.tick(wall: t0)
        #expect(s == Stamp(millis: t0 + 1, logical: 0))
        #expect(s > Stamp(millis: t0, logical: 0xFFFF))
        var r = HybridLogicalClock()
        let got = try r.receive(Stamp(millis: t0, logical: 0xFFFF), wall: t0)
        #expect(got == Stamp(millis: t0 + 1, logical: 0))
        // a clock restored at a full counter still moves forward
        var restored = HybridLogicalClock(last: Stamp(millis: t0, logical: 0xFFFF))
        #expect(restored.tick(wall: t0 - 1) == Stamp(millis: t0 + 1, logical: 0))
    }

    @Test("stamp packing: integer order is (millis, logical) order")
    func stampPacking() {
        let a = Stamp(millis: t0, logical: 0xFFFF)
        let b = Stamp(millis: t0 + 1, logical: 0)
        #expect(a < b)
        #expect(a.millis == t0 && a.logical == 0xFFFF)
        #expect(Stamp(raw: a.raw) == a)
        #expect(Stamp(millis: -5, logical: 3) == Stamp(millis: 0, logical: 3))
        #expect(a.description == "\(t0).65535")
    }
}
