import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import Testing
@testable import Wire

func sampleFrames(seed: UInt64) -> [WireFrame] {
    let pool = statePool(seed: seed, steps: 60)
    var frames: [WireFrame] = [.header(node: irkutskNodes[0], storeID: Array(repeating: 0xAB, count: 16), resumeAfter: 0,
                                       checkpointReset: false, lastSequence: UInt64(pool.count))]
    var seq: UInt64 = 0
    var rng = SeededRandom(seed: seed)
    while Int(seq) < pool.count {
        let n = Int.random(in: 0...7, using: &rng)
        var changes: [(sequence: UInt64, ticket: ReplicatedTicket)] = []
        for _ in 0..<n where Int(seq) < pool.count {
            seq += 1
            changes.append((seq, pool[Int(seq) - 1]))
        }
        if n == 0 { seq += 1 }  // a batch with no change in scope still advances
        frames.append(.batch(changes, throughSequence: seq, sourceLastSequence: UInt64(pool.count)))
        if Int.random(in: 0..<4, using: &rng) == 0 {
            frames.append(.heartbeat(sourceLastSequence: seq, sourceStamp: Stamp(millis: baseTime, logical: 9)))
        }
    }
    frames.append(.error(.shuttingDown, "node is stopping"))
    return frames
}

@Suite struct FramingTests {
    /// Our prefix is the standard one: the same bytes as swift-protobuf's own
    /// BinaryDelimited writer (the `writeDelimitedTo` framing).
    @Test func prefixMatchesSwiftProtobufDelimited() throws {
        for f in sampleFrames(seed: 1).prefix(12) {
            let stream = OutputStream.toMemory()
            stream.open()
            try BinaryDelimited.serialize(message: f, to: stream)
            stream.close()
            let theirs = [UInt8](stream.property(forKey: .dataWrittenToMemoryStreamKey) as! Data)
            #expect(try WireCoding.delimited(f) == theirs)
        }
    }

    @Test func varints() {
        for (v, bytes) in [(UInt64(0), [0x00]), (1, [0x01]), (127, [0x7F]), (128, [0x80, 0x01]), (300, [0xAC, 0x02]),
                           (16 << 20, [0x80, 0x80, 0x80, 0x08]),
                           (UInt64.max, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])] as [(UInt64, [UInt8])] {
            var out: [UInt8] = []
            WireCoding.appendVarint(v, to: &out)
            #expect(out == bytes)
        }
    }

    /// Any split of the byte stream into chunks, down to single bytes and empty
    /// chunks, yields the same frames.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func randomChunkBoundaries(seed: UInt64) throws {
        let frames = sampleFrames(seed: seed)
        var stream: [UInt8] = []
        var largestFrame = 0
        for f in frames {
            let before = stream.count
            try WireCoding.appendDelimited(f, to: &stream)
            largestFrame = max(largestFrame, stream.count - before)
        }
        #expect(try WireCoding.decodeAll(WireFrame.self, from: stream) == frames)

        var rng = SeededRandom(seed: seed &* 31)
        for round in 0..<12 {
            var decoder = FrameDecoder()
            var out: [WireFrame] = []
            var i = 0
            var heldBeyondChunk = 0
            let maxChunk = [1, 3, 17, 256, 4096, 70_000][round % 6]
            while i < stream.count {
                let n = min(stream.count - i, Int.random(in: 0...maxChunk, using: &rng))
                if Bool.random(using: &rng) {
                    decoder.append(stream[i..<(i + n)])
                } else {
                    Array(stream[i..<(i + n)]).withUnsafeBytes { decoder.append($0) }
                }
                i += n
                while let f = try decoder.next() { out.append(f) }
                heldBeyondChunk = max(heldBeyondChunk, decoder.bufferedBytes - n)
            }
            // Never more than one incomplete frame (plus the chunk just fed) is held.
            #expect(heldBeyondChunk < largestFrame)
            try decoder.finish()
            #expect(out == frames)
            #expect(decoder.bufferedBytes == 0)
        }
    }

    @Test func bufferHoldsOnlyTheIncompleteFrame() throws {
        let frames = sampleFrames(seed: 3)
        var stream: [UInt8] = []
        var largest = 0
        for f in frames {
            let d = try WireCoding.delimited(f)
            largest = max(largest, d.count)
            stream += d
        }
        var decoder = FrameDecoder()
        var count = 0
        for start in stride(from: 0, to: stream.count, by: 100) {
            decoder.append(stream[start..<min(start + 100, stream.count)])
            while try decoder.next() != nil { count += 1 }
            #expect(decoder.bufferedBytes < largest + 100)
        }
        #expect(count == frames.count)
    }

    /// A frame longer than the limit is refused as soon as its prefix is read, before
    /// any of its body is buffered, and the decoder stays failed.
    @Test func oversizeFrameRefused() throws {
        let big = WireFrame.batch([(UInt64(1), conflictedTicket(idLow: 9))], throughSequence: 1, sourceLastSequence: 1)
        let bytes = try WireCoding.delimited(big)
        let body = try WireCoding.serialize(big).count
        #expect(body > 200)
        var decoder = FrameDecoder(maxFrameBytes: 200)
        decoder.append(bytes.prefix(2))  // the prefix only
        #expect(throws: WireError.frameTooLarge(length: UInt64(body), limit: 200)) { try decoder.next() }
        decoder.append(bytes.dropFirst(2))
        #expect(throws: WireError.frameTooLarge(length: UInt64(body), limit: 200)) { try decoder.next() }
        // Exactly at the limit is fine.
        var exact = FrameDecoder(maxFrameBytes: body)
        exact.append(bytes)
        #expect(try exact.next() == big)
        // A huge announced length is refused before its prefix is even complete.
        var huge = FrameDecoder()
        huge.append([0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: WireError.self) { try huge.next() }
        #expect(throws: WireError.self) { try WireCoding.decodeAll(WireFrame.self, from: bytes, maxFrameBytes: 10) }
    }

    @Test func malformedInput() throws {
        // An 11-byte varint.
        var d = FrameDecoder(maxFrameBytes: .max)
        d.append([UInt8](repeating: 0x80, count: 10) + [0x01])
        #expect(throws: WireError.malformedLengthPrefix) { try d.next() }
        // A valid prefix over garbage.
        var g = FrameDecoder()
        g.append([0x03, 0xFF, 0xFF, 0xFF])
        do {
            _ = try g.next()
            Issue.record("garbage decoded")
        } catch {
            guard case .malformedMessage = error else { Issue.record("wrong error \(error)"); return }
        }
        // A stream cut inside a frame.
        let bytes = try WireCoding.delimited(WireFrame.error(.internal, "x"))
        var t = FrameDecoder()
        t.append(bytes.dropLast())
        #expect(try t.next() == nil)
        #expect(throws: WireError.truncatedFrame(bufferedBytes: bytes.count - 1)) { try t.finish() }
        // An empty frame is a Frame with no kind (a kind from a later version): not an error here.
        var e = FrameDecoder()
        e.append([0x00])
        #expect(try e.next()?.kind == nil)
    }

    @Test func batchTicketsDecodeWithPositions() throws {
        let t = conflictedTicket(idLow: 4)
        var f = WireFrame.batch([(UInt64(7), t), (UInt64(9), t)], throughSequence: 10, sourceLastSequence: 12)
        #expect(try f.batch.tickets().map(\.sequence) == [7, 9])
        #expect(try f.batch.tickets().map(\.ticket) == [t, t])
        f.batch.changes[1].ticket.id = Data([1])
        #expect(throws: WireError.invalidID(field: "batch.changes[1].ticket.id", byteCount: 1)) { try f.batch.tickets() }
    }
}

@Suite struct ProtocolRuleTests {
    let store: [UInt8] = Array(repeating: 0x11, count: 16)

    func checkpoint(_ id: [UInt8], _ seq: UInt64) -> Ekc_Replication_V1_Checkpoint {
        var c = Ekc_Replication_V1_Checkpoint()
        c.sourceStoreID = Data(id)
        c.sequence = seq
        return c
    }

    @Test func resumeNeverPassesWhatWasServed() {
        let store: [UInt8] = Array(repeating: 0x11, count: 16)
        var c = Ekc_Replication_V1_Checkpoint()
        c.sourceStoreID = Data(store)
        c.sequence = 42
        #expect(ReplicationProtocol.resumePoint(checkpoint: c, storeID: store, lastSequence: 50, served: 42) == (42, false, false))
        #expect(ReplicationProtocol.resumePoint(checkpoint: c, storeID: store, lastSequence: 50, served: 45) == (42, false, false))
        #expect(ReplicationProtocol.resumePoint(checkpoint: c, storeID: store, lastSequence: 50, served: 3) == (3, false, true))
        #expect(ReplicationProtocol.resumePoint(checkpoint: c, storeID: store, lastSequence: 50, served: nil) == (0, false, true))
        #expect(ReplicationProtocol.resumePoint(checkpoint: nil, storeID: store, lastSequence: 50, served: nil) == (0, false, false))
    }

    @Test func resumePoints() {
        // First pull.
        #expect(ReplicationProtocol.resumePoint(checkpoint: nil, storeID: store, lastSequence: 50) == (0, false))
        #expect(ReplicationProtocol.resumePoint(checkpoint: checkpoint([], 0), storeID: store, lastSequence: 50) == (0, false))
        // Same store: resume where the puller stands, including "nothing new".
        #expect(ReplicationProtocol.resumePoint(checkpoint: checkpoint(store, 42), storeID: store, lastSequence: 50) == (42, false))
        #expect(ReplicationProtocol.resumePoint(checkpoint: checkpoint(store, 50), storeID: store, lastSequence: 50) == (50, false))
        // Another store (recreated peer): restart from 0 and say so.
        #expect(ReplicationProtocol.resumePoint(checkpoint: checkpoint([0x22], 42), storeID: store, lastSequence: 50) == (0, true))
        // A sequence this store never reached (restored from an old copy): restart too.
        #expect(ReplicationProtocol.resumePoint(checkpoint: checkpoint(store, 51), storeID: store, lastSequence: 50) == (0, true))
    }

    @Test func requestChecks() {
        var r = WirePullRequest()
        r.protocolVersion = 1
        #expect(ReplicationProtocol.check(r) == nil)
        r.protocolVersion = 2
        let e = ReplicationProtocol.check(r)
        #expect(e?.code == .protocolVersionMismatch && e?.minProtocolVersion == 1 && e?.maxProtocolVersion == 1)
        #expect(e?.httpStatus == 400)
        r.protocolVersion = 0
        #expect(ReplicationProtocol.check(r)?.code == .protocolVersionMismatch)
        r.protocolVersion = 1
        r.checkpoint = checkpoint(Array(repeating: 1, count: 65), 3)
        #expect(ReplicationProtocol.check(r)?.code == .badRequest)
        #expect(ReplicationProtocol.batchLimit(requested: 0) == 512)
        #expect(ReplicationProtocol.batchLimit(requested: 10) == 10)
        #expect(ReplicationProtocol.batchLimit(requested: 1_000_000) == 4096)
    }

    @Test func batchChecks() throws {
        let t = conflictedTicket(idLow: 5)
        try ReplicationProtocol.check(WireFrame.batch([(UInt64(5), t), (UInt64(8), t)], throughSequence: 9, sourceLastSequence: 9).batch, after: 4)
        try ReplicationProtocol.check(WireFrame.batch([], throughSequence: 9, sourceLastSequence: 9).batch, after: 4)
        #expect(throws: WireError.self) {
            try ReplicationProtocol.check(WireFrame.batch([(UInt64(4), t)], throughSequence: 9, sourceLastSequence: 9).batch, after: 4)
        }
        #expect(throws: WireError.self) {
            try ReplicationProtocol.check(WireFrame.batch([(UInt64(6), t), (UInt64(6), t)], throughSequence: 9, sourceLastSequence: 9).batch, after: 4)
        }
        #expect(throws: WireError.self) {
            try ReplicationProtocol.check(WireFrame.batch([(UInt64(10), t)], throughSequence: 9, sourceLastSequence: 10).batch, after: 4)
        }
        #expect(throws: WireError.self) {
            try ReplicationProtocol.check(WireFrame.batch([], throughSequence: 4, sourceLastSequence: 9).batch, after: 4)
        }
    }

    @Test func requestBodyParses() throws {
        var r = WirePullRequest()
        r.protocolVersion = 1
        r.checkpoint = checkpoint(store, 77)
        r.maxBatch = 100
        let bytes = try WireCoding.serialize(r)
        #expect(try WireCoding.parse(WirePullRequest.self, from: bytes) == r)
        #expect(try WireCoding.parse(WirePullRequest.self, from: ([0xEE] + bytes + [0xEE])[1..<(bytes.count + 1)]) == r)
    }
}
