import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import Testing
@testable import Wire

/// The puller's frame reader against swift-protobuf: on valid frames, on frames whose
/// tickets are mutated (bytes flipped, cut, inserted, repeated) and on mutated whole
/// frames, both must fail, or both succeed with the same changes after mapping.
@Suite struct FrameReaderTests {
    /// What a frame means to the puller: each change's sequence and mapped ticket.
    struct Meaning: Equatable {
        var through: UInt64
        var sourceLast: UInt64
        var changes: [UInt64]
        var tickets: [Result<ReplicatedTicket, WireError>]
    }

    func meaning(_ f: Ekc_Replication_V1_Frame) -> Meaning? {
        guard case .batch(let b)? = f.kind else { return nil }
        return Meaning(through: b.throughSequence, sourceLast: b.sourceLastSequence, changes: b.changes.map(\.sequence),
                       tickets: b.changes.map { c in Result { () throws(WireError) in try ReplicatedTicket(wire: c.ticket) } })
    }

    /// Both readers on one frame body; returns whether the fast reader succeeded.
    @discardableResult
    func compare(_ body: [UInt8], _ note: @autoclosure () -> String) -> Bool {
        let fast: Result<Ekc_Replication_V1_Frame, WireError>
        do {
            fast = .success(try body.withUnsafeBytes { b throws(WireError) in try FrameReader.frame(b) })
        } catch let e as WireError {
            fast = .failure(e)
        } catch {
            fatalError("unexpected \(error)")
        }
        let reference = Result { try Ekc_Replication_V1_Frame(serializedBytes: body) }
        switch (fast, reference) {
        case (.success(let a), .success(let b)):
            #expect(meaning(a) == meaning(b), "\(note())")
            if case .heartbeat = b.kind { #expect(a == b, "\(note())") }
            return true
        case (.failure, .failure):
            return false
        case (.success(let a), .failure(let e)):
            Issue.record("fast reader accepted what swift-protobuf refuses (\(e)): \(String(describing: meaning(a))) — \(note())")
            return true
        case (.failure(let e), .success):
            Issue.record("fast reader refused (\(e)) what swift-protobuf accepts — \(note())")
            return false
        }
    }

    /// A frame body (no length prefix) around tickets given as bytes.
    func frame(_ tickets: [(UInt64, [UInt8])], through: UInt64, last: UInt64) -> [UInt8] {
        var w = ProtoWriter()
        w.message(2) { w in
            for (seq, t) in tickets {
                w.message(1) { w in
                    w.uint64(1, seq)
                    w.tag(2, 2); w.varint(UInt64(t.count)); w.bytes += t
                }
            }
            w.uint64(2, through)
            w.uint64(3, last)
        }
        return w.bytes
    }

    func mutate(_ b: [UInt8], _ rng: inout SeededRandom) -> [UInt8] {
        var b = b
        guard !b.isEmpty else { return [UInt8.random(in: 0...255, using: &rng)] }
        let i = Int.random(in: 0..<b.count, using: &rng)
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: b[i] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
        case 1: b[i] = UInt8.random(in: 0...255, using: &rng)
        case 2: b.removeSubrange(i...)
        case 3: b.insert(contentsOf: (0..<Int.random(in: 1...4, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: i)
        case 4:
            let j = Int.random(in: i..<b.count, using: &rng)
            b.insert(contentsOf: b[i...j], at: j + 1)
        default:
            // An unknown field (number 15–40, any wire type) in front.
            let field = UInt64.random(in: 15...40, using: &rng)
            let type = [0, 1, 2, 5].randomElement(using: &rng)!
            var w = ProtoWriter()
            w.tag(field, UInt64(type))
            switch type {
            case 0: w.varint(UInt64.random(in: 0...UInt64.max, using: &rng))
            case 1: w.bytes += [UInt8](repeating: 7, count: 8)
            case 2: w.varint(3); w.bytes += [1, 2, 3]
            default: w.bytes += [UInt8](repeating: 9, count: 4)
            }
            b.insert(contentsOf: w.bytes, at: 0)
        }
        return b
    }

    @Test(arguments: [31, 32, 33] as [UInt64])
    func validFramesReadAlike(seed: UInt64) {
        let pool = statePool(seed: seed, steps: 200)
        var rng = SeededRandom(seed: seed)
        for _ in 0..<100 {
            let n = Int.random(in: 0...12, using: &rng)
            let tickets = (0..<n).map { i in (UInt64(i + 1), pool.randomElement(using: &rng)!.wireBytes()) }
            let body = frame(tickets, through: UInt64(n), last: UInt64(n + 5))
            #expect(compare(body, "valid frame of \(n)"))
        }
    }

    @Test(arguments: [41, 42, 43, 44] as [UInt64])
    func mutatedTicketsReadAlike(seed: UInt64) {
        let pool = statePool(seed: seed, steps: 200) + [conflictedTicket(idLow: seed)]
        var rng = SeededRandom(seed: seed)
        var accepted = 0
        for round in 0..<1_500 {
            var t = pool.randomElement(using: &rng)!.wireBytes()
            for _ in 0..<Int.random(in: 1...3, using: &rng) { t = mutate(t, &rng) }
            if compare(frame([(1, t)], through: 1, last: 1), "seed \(seed) round \(round)") { accepted += 1 }
        }
        // Many mutations leave a readable message (e.g. a changed string or number).
        #expect(accepted > 150)
    }

    @Test(arguments: [51, 52] as [UInt64])
    func mutatedFramesReadAlike(seed: UInt64) {
        let pool = statePool(seed: seed, steps: 100)
        var rng = SeededRandom(seed: seed)
        for round in 0..<1_500 {
            let tickets = (0..<3).map { i in (UInt64(i + 1), pool.randomElement(using: &rng)!.wireBytes()) }
            var body = frame(tickets, through: 3, last: 9)
            for _ in 0..<Int.random(in: 1...2, using: &rng) { body = mutate(body, &rng) }
            compare(body, "seed \(seed) round \(round)")
        }
    }

    /// Non-batch frames go through swift-protobuf and come out whole.
    @Test func otherFramesAreReadBySwiftProtobuf() throws {
        var hb = Ekc_Replication_V1_Heartbeat()
        hb.sourceLastSequence = 42
        hb.sourceStamp = 7
        var f = WireFrame()
        f.heartbeat = hb
        let body = try f.serializedBytes() as [UInt8]
        #expect(compare(body, "heartbeat"))
        var decoder = FrameDecoder()
        decoder.append(try WireCoding.delimited(f))
        #expect(try decoder.next() == f)
    }

    /// Nesting beyond 100 levels (unknown groups) is refused by both.
    @Test func deepGroupsAreRefusedAlike() {
        for depth in [50, 98, 99, 100, 101, 150] {
            var t: [UInt8] = [0x0A, 0x02, 0x01, 0x02]  // id = 2 bytes (invalid, but parses)
            t += [UInt8](repeating: 0xA3, count: depth)   // start group, field 20
            t += [UInt8](repeating: 0xA4, count: depth)   // end group, field 20
            compare(frame([(1, t)], through: 1, last: 1), "groups nested \(depth) deep")
        }
    }
}
