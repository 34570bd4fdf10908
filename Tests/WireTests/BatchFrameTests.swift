import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

/// The sender writes batch frames directly around the records' bytes; swift-protobuf's
/// generated messages are the definition, so the frames must be the bytes it writes
/// for the same Frame. The records' own bytes are given here as swift-protobuf writes
/// them (RecordCodingTests compares ours with those): what is checked is the frame.
@Suite struct BatchFrameTests {
    func entries(_ deltas: [RecordDelta], firstSequence: UInt64 = 1, step: UInt64 = 3) throws -> [BatchFrames.Entry] {
        try deltas.enumerated().map { i, d in (firstSequence + UInt64(i) * step, try generated(d).serializedBytes()) }
    }

    func expected(_ part: ArraySlice<BatchFrames.Entry>, through: UInt64, last: UInt64) throws -> [UInt8] {
        try WireCoding.delimited(batchFrame(part.map { ($0.sequence, try GDelta(serializedBytes: $0.delta)) }, through: through, last: last))
    }

    @Test(arguments: [21, 22, 23] as [UInt64])
    func batchFrameEqualsGeneratedEncoding(seed: UInt64) throws {
        let all = try entries(sampleDeltas(seed: seed, count: 120))
        var rng = SeededRandom(seed: seed)
        for last in [UInt64(999), 360, 0] {
            for part in [all, Array(all.prefix(1)), Array(all.shuffled(using: &rng).prefix(17))] {
                var next = 0
                let frame = BatchFrames.next(part, from: &next, sourceLastSequence: last)
                #expect(next == part.count && frame.count == part.count && frame.through == part.last!.sequence)
                #expect(frame.bytes == (try expected(part[...], through: part.last!.sequence, last: last)))
            }
        }
        // A batch with nothing in scope only advances.
        for (through, last) in [(UInt64(360), UInt64(999)), (360, 0), (0, 0), (UInt64.max, UInt64.max)] {
            #expect(BatchFrames.empty(through: through, sourceLastSequence: last) == (try expected([], through: through, last: last)))
        }
        // Sequences that need long varints.
        let far = try entries(Array(sampleDeltas(seed: seed, count: 3)), firstSequence: UInt64.max - 10, step: 5)
        #expect(BatchFrames.all(far, sourceLastSequence: .max).map(\.bytes) == [try expected(far[...], through: far.last!.sequence, last: .max)])
    }

    /// Long records are split into frames of about the target size (1 MiB by default),
    /// none near the receivers' limit; each frame is what swift-protobuf writes for its
    /// changes, and the puller reads every record back in order.
    @Test func framesCloseAtTheTargetSize() throws {
        let node = irkutskNodes[0]
        let deltas: [RecordDelta] = (1...150 as ClosedRange<UInt64>).map { i in
            let statement = String(repeating: "щ", count: Int(i % 7) * 3_000 + 10)   // up to 36 KB
            var r = TicketReplica(node: node, id: RecordID(millis: UInt64(testNow) + i, randomHigh: 3, randomLow: i))
            r.open(openedTicket(id: r.id, at: node, now: testNow), now: testNow)
            r.edit(testNow + 1) { $0.statement = statement }
            return r.record.delta
        }
        let all = try entries(deltas)
        let total = all.reduce(0) { $0 + $1.delta.count }
        #expect(total > 2 * ReplicationProtocol.batchTargetBytes)
        let frames = BatchFrames.all(all, sourceLastSequence: 500)
        #expect(frames.count >= 2 && frames.count <= total / ReplicationProtocol.batchTargetBytes + 1)
        var decoder = FrameDecoder(reading: reading)
        var seen: [UInt64] = []
        var records: [RecordDelta] = []
        var next = 0
        let largest = all.map(\.delta.count).max()!
        for (k, f) in frames.enumerated() {
            if k < frames.count - 1 { #expect(f.bytes.count >= ReplicationProtocol.batchTargetBytes) }
            #expect(f.bytes.count < ReplicationProtocol.batchTargetBytes + largest + 64)
            #expect(f.bytes.count < ReplicationProtocol.maxFrameBytes / 8)
            let part = all[next..<(next + f.count)]
            #expect(f.bytes == (try expected(part, through: part.last!.sequence, last: 500)))
            #expect(f.through == part.last!.sequence)
            next += f.count
            decoder.append(f.bytes)
            guard case .batch(let b)? = try decoder.next() else { Issue.record("frame \(k) is not a batch"); continue }
            #expect(b.throughSequence == f.through && b.sourceLastSequence == 500)
            seen += b.sequences
            for r in b.records { if case .delta(let d) = r.content { records.append(d) } }
        }
        try decoder.finish()
        #expect(seen == all.map(\.sequence))
        #expect(records == deltas)
    }

    /// An entry larger than the target travels alone when it opens a frame, and closes
    /// the frame it joins otherwise; a frame is never empty.
    @Test func largeEntries() throws {
        let small = try entries(sampleDeltas(seed: 41, count: 6))
        let three = Array(small.prefix(3))
        #expect(BatchFrames.all(three, sourceLastSequence: 1, targetBytes: 10).map(\.count) == [1, 1, 1])
        var rng = SeededRandom(seed: 42)
        var r = TicketReplica(node: irkutskNodes[0], id: RecordID(millis: UInt64(testNow), randomHigh: 4, randomLow: 4))
        r.open(openedTicket(id: r.id, at: irkutskNodes[0], now: testNow), now: testNow)
        for i in 0..<60 { r.addNote(testNow + Millis(i), visibility: .internal, text: RandomTicketValues.text(&rng, maxBytes: 20) + String(repeating: "я", count: 9_990)) }
        let huge: BatchFrames.Entry = (100, try generated(r.record.delta).serializedBytes())
        #expect(huge.delta.count > ReplicationProtocol.batchTargetBytes)
        let alone = BatchFrames.all([huge] + small.prefix(2), sourceLastSequence: 200)
        #expect(alone.map(\.count) == [1, 2])
        #expect(alone[0].bytes == (try expected([huge][...], through: 100, last: 200)))
        let joined = BatchFrames.all(Array(small.prefix(2)) + [huge] + small.suffix(1), sourceLastSequence: 200)
        #expect(joined.map(\.count) == [3, 1])
        #expect(joined.allSatisfy { $0.bytes.count < ReplicationProtocol.maxFrameBytes })
        var decoder = FrameDecoder(reading: reading)
        decoder.append(alone[0].bytes)
        guard case .batch(let b)? = try decoder.next(), case .delta(let d) = b.records.first?.content else {
            Issue.record("the large record does not read back")
            return
        }
        #expect(d == r.record.delta && d.children.count == 61)
    }
}
