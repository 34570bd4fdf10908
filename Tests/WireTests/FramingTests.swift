import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

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
            var w = ProtoWriter()
            w.varint(v)
            #expect(w.bytes == bytes)
        }
    }

    /// Any split of the byte stream into chunks, down to single bytes and empty
    /// chunks, yields the same frames, for swift-protobuf's messages and for the
    /// puller's reader of batches alike.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func randomChunkBoundaries(seed: UInt64) throws {
        let frames = sampleFrames(seed: seed)
        let bytes = try stream(frames)
        var largestFrame = 0
        for f in frames { largestFrame = max(largestFrame, try WireCoding.delimited(f).count) }
        #expect(try WireCoding.decodeAll(WireFrame.self, from: bytes) == frames)
        let meanings = frames.map(meaning)
        for case .batch(_, _, let records) in meanings {
            for case .refused(let seq) in records { Issue.record("seed \(seed): the record at \(seq) does not pass the reference") }
        }

        var rng = SeededRandom(seed: seed &* 31)
        for round in 0..<12 {
            var generated = DelimitedDecoder<WireFrame>()
            var puller = FrameDecoder(reading: reading)
            var out: [WireFrame] = []
            var read: [FrameMeaning] = []
            var i = 0
            var heldBeyondChunk = 0
            let maxChunk = [1, 3, 17, 256, 4096, 70_000][round % 6]
            while i < bytes.count {
                let n = min(bytes.count - i, Int.random(in: 0...maxChunk, using: &rng))
                if Bool.random(using: &rng) {
                    generated.append(bytes[i..<(i + n)])
                    puller.append(bytes[i..<(i + n)])
                } else {
                    Array(bytes[i..<(i + n)]).withUnsafeBytes {
                        generated.append($0)
                        puller.append($0)
                    }
                }
                i += n
                while let f = try generated.next() { out.append(f) }
                while let f = try puller.next() { read.append(meaning(f)) }
                heldBeyondChunk = max(heldBeyondChunk, puller.bufferedBytes - n)
            }
            // Never more than one incomplete frame (plus the chunk just fed) is held.
            #expect(heldBeyondChunk < largestFrame)
            try generated.finish()
            try puller.finish()
            #expect(out == frames, "round \(round)")
            #expect(read == meanings, "round \(round)")
            #expect(generated.bufferedBytes == 0 && puller.bufferedBytes == 0)
        }
    }

    /// Every split of a stream into two chunks, at every byte.
    @Test func everySplitPoint() throws {
        let frames = [WireFrame.header(node: irkutskNodes[0], storeID: [7], resumeAfter: 0, checkpointReset: false, lastSequence: 2),
                      batchFrame([(1, generated(conflictedTicketRecord(idLow: 9).delta))], through: 1, last: 2),
                      .heartbeat(sourceLastSequence: 2, sourceStamp: Stamp(millis: testNow, logical: 1)),
                      batchFrame([], through: 2, last: 2), .error(.internal, "stop")]
        let bytes = try stream(frames)
        let meanings = frames.map(meaning)
        for split in 0...bytes.count {
            var generated = DelimitedDecoder<WireFrame>()
            var puller = FrameDecoder(reading: reading)
            var out: [WireFrame] = []
            var read: [FrameMeaning] = []
            for chunk in [bytes[..<split], bytes[split...]] {
                generated.append(chunk)
                puller.append(chunk)
                while let f = try generated.next() { out.append(f) }
                while let f = try puller.next() { read.append(meaning(f)) }
            }
            try generated.finish()
            try puller.finish()
            if out != frames || read != meanings { Issue.record("split at \(split) of \(bytes.count)"); break }
        }
    }

    @Test func bufferHoldsOnlyTheIncompleteFrame() throws {
        let frames = sampleFrames(seed: 3)
        var bytes: [UInt8] = []
        var largest = 0
        for f in frames {
            let d = try WireCoding.delimited(f)
            largest = max(largest, d.count)
            bytes += d
        }
        var decoder = FrameDecoder(reading: reading)
        var count = 0
        for start in stride(from: 0, to: bytes.count, by: 100) {
            decoder.append(bytes[start..<min(start + 100, bytes.count)])
            while try decoder.next() != nil { count += 1 }
            #expect(decoder.bufferedBytes < largest + 100)
        }
        #expect(count == frames.count)
    }

    /// A frame longer than the limit is refused as soon as its prefix is read, before
    /// any of its body is buffered, and the decoder stays failed.
    @Test func oversizeFrameRefused() throws {
        let big = batchFrame([(1, generated(conflictedTicketRecord(idLow: 9).delta))], through: 1, last: 1)
        let bytes = try WireCoding.delimited(big)
        let body = try WireCoding.serialize(big).count
        #expect(body > 200)
        var decoder = DelimitedDecoder<WireFrame>(maxFrameBytes: 200)
        decoder.append(bytes.prefix(2))   // the prefix only
        #expect(throws: WireError.frameTooLarge(length: UInt64(body), limit: 200)) { try decoder.next() }
        decoder.append(bytes.dropFirst(2))
        #expect(throws: WireError.frameTooLarge(length: UInt64(body), limit: 200)) { try decoder.next() }
        // Exactly at the limit is fine.
        var exact = DelimitedDecoder<WireFrame>(maxFrameBytes: body)
        exact.append(bytes)
        #expect(try exact.next() == big)
        // A huge announced length is refused before its prefix is even complete.
        var huge = FrameDecoder(reading: reading)
        huge.append([0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: WireError.self) { try huge.next() }
        #expect(huge.bufferedBytes == 4)
        #expect(throws: WireError.self) { try WireCoding.decodeAll(WireFrame.self, from: bytes, maxFrameBytes: 10) }
        // The puller's limit is the protocol's.
        #expect(FrameDecoder(reading: reading).maxFrameBytes == ReplicationProtocol.maxFrameBytes)
        var limit = FrameDecoder(reading: reading)
        var prefix: [UInt8] = []
        WireCoding.appendVarint(UInt64(ReplicationProtocol.maxFrameBytes + 1), to: &prefix)
        limit.append(prefix)
        #expect(throws: WireError.frameTooLarge(length: UInt64(ReplicationProtocol.maxFrameBytes + 1),
                                                limit: ReplicationProtocol.maxFrameBytes)) { try limit.next() }
    }

    @Test func malformedInput() throws {
        // An 11-byte varint, and a 10-byte one carrying more than 64 bits.
        var d = DelimitedDecoder<WireFrame>(maxFrameBytes: .max)
        d.append([UInt8](repeating: 0x80, count: 10) + [0x01])
        #expect(throws: WireError.malformedLengthPrefix) { try d.next() }
        var d2 = FrameDecoder(reading: reading)
        d2.append([UInt8](repeating: 0x80, count: 9) + [0x02])
        #expect(throws: WireError.self) { try d2.next() }
        // The decoder stays failed.
        d.append([0x00])
        #expect(throws: WireError.malformedLengthPrefix) { try d.next() }
        #expect(throws: WireError.malformedLengthPrefix) { try d.finish() }
        // A valid prefix over garbage.
        var g = DelimitedDecoder<WireFrame>()
        g.append([0x03, 0xFF, 0xFF, 0xFF])
        var p = FrameDecoder(reading: reading)
        p.append([0x03, 0xFF, 0xFF, 0xFF])
        for error in [#expect(throws: WireError.self) { try g.next() }, #expect(throws: WireError.self) { try p.next() }] {
            guard case .malformedMessage? = error else { Issue.record("wrong error \(String(describing: error))"); continue }
        }
        // A stream cut inside a frame.
        let bytes = try WireCoding.delimited(WireFrame.error(.internal, "x"))
        var t = FrameDecoder(reading: reading)
        t.append(bytes.dropLast())
        #expect(try t.next() == nil)
        #expect(throws: WireError.truncatedFrame(bufferedBytes: bytes.count - 1)) { try t.finish() }
        t.append(bytes.suffix(1))
        let last = try #require(try t.next())
        #expect(meaning(last) == .error(WireStreamError(.internal, "x")))
        try t.finish()
        // An empty frame is a Frame with no kind (a kind from a later version): not an error here.
        var e = FrameDecoder(reading: reading)
        e.append([0x00])
        #expect(try e.next().map(meaning) == .unknown)
        // A frame of a kind a later version adds (field 9) is unknown too, and the stream goes on.
        var later = FrameDecoder(reading: reading)
        later.append([0x03, 0x4A, 0x01, 0x00] + (try WireCoding.delimited(WireFrame.error(.shuttingDown, "bye"))))
        #expect(try later.next().map(meaning) == .unknown)
        #expect(try later.next().map(meaning) == .error(WireStreamError(.shuttingDown, "bye")))
    }
}
