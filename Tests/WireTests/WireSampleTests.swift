import CaseModel
import Foundation
import Replication
import Testing
@testable import Wire

/// A fixed response stream, for independent decoders: proto/testdata/sample.frames
/// is these bytes, and tests/integration/test_wire_python.py decodes them (and a
/// fresh copy written by this suite) with Python's protobuf library and protoc's
/// Python code for proto/. Changing what the sample contains means updating that
/// test's expectations; changing the bytes of an unchanged sample means the wire
/// format changed, which v1 must not do.
///
/// Regenerate the committed copy (only on purpose):
///   EKC_WIRE_SAMPLE=proto/testdata/sample.frames swift test --filter WireSample
@Suite struct WireSampleTests {
    static let storeID: [UInt8] = Array(0x10...0x1F)

    static func frames() -> [WireFrame] {
        let conflicted = conflictedTicket(idLow: 0x417)
        let id = TicketID(millis: UInt64(baseTime), randomHigh: 0x38, randomLow: 0x418)
        let plain = ReplicatedTicket(
            opened: openedTicket(id: id, at: irkutskNodes[1], now: baseTime + 1_000, channel: .web, regime: .consultation),
            dot: Dot(node: irkutskNodes[1], stamp: Stamp(millis: baseTime + 1_000, logical: 0)))
        return [
            .header(node: irkutskNodes[0], storeID: storeID, resumeAfter: 0, checkpointReset: true, lastSequence: 3),
            .batch([(UInt64(2), conflicted), (UInt64(3), plain)], throughSequence: 3, sourceLastSequence: 3),
            .heartbeat(sourceLastSequence: 3, sourceStamp: Stamp(millis: baseTime + 5_000, logical: 1)),
            .batch([], throughSequence: 5, sourceLastSequence: 5),
            .error(.shuttingDown, "node irk-main is stopping"),
        ]
    }

    static var committedPath: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("proto/testdata/sample.frames")
    }

    static func bytes() throws -> [UInt8] {
        var out: [UInt8] = []
        for f in frames() { try WireCoding.appendDelimited(f, to: &out) }
        return out
    }

    @Test func writeSampleWhenAsked() throws {
        guard let path = ProcessInfo.processInfo.environment["EKC_WIRE_SAMPLE"], !path.isEmpty else { return }
        try Data(WireSampleTests.bytes()).write(to: URL(fileURLWithPath: path))
    }

    /// The committed sample decodes to these frames, and these frames encode to it
    /// byte for byte.
    @Test func committedSampleMatches() throws {
        let committed = [UInt8](try Data(contentsOf: WireSampleTests.committedPath))
        #expect(try WireCoding.decodeAll(WireFrame.self, from: committed) == WireSampleTests.frames())
        #expect(committed == (try WireSampleTests.bytes()))
        // And the tickets in it are the model values they were made from.
        let batch = try WireCoding.decodeAll(WireFrame.self, from: committed)[1].batch
        #expect(try batch.tickets()[0].ticket == conflictedTicket(idLow: 0x417))
        #expect(try batch.tickets()[0].ticket.conflicts.count == 2)
    }
}
