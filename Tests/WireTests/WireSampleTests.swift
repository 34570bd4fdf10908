import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

/// A fixed response stream, for independent decoders: proto/testdata/sample.frames is
/// these bytes, as a sender writes them (batch frames around each record's RecordCoding
/// bytes, the other frames by swift-protobuf), and tests/integration/test_wire_python.py
/// decodes them (and a fresh copy written by this suite) with Python's protobuf library
/// and protoc's Python code for proto/ekc/replication/v2. Changing what the sample holds
/// means updating that test's expectations; changing the bytes of an unchanged sample
/// means the wire format changed, which v2 must not do.
///
/// Regenerate the committed copy (only on purpose):
///   EKC_WIRE_SAMPLE=$PWD/proto/testdata/sample.frames swift test --filter WireSampleTests
@Suite struct WireSampleTests {
    static let storeID: [UInt8] = Array(0x10...0x1F)

    /// A ticket edited on both sides of a partition (status and assignee conflict, notes and history).
    static let conflicted = conflictedTicketRecord(idLow: 0x417)

    /// A web consultation opened on irk-office-1: no citizen, no registration yet, no children.
    static let plain: Record = {
        let id = TicketID(millis: UInt64(testNow), randomHigh: 0x38, randomLow: 0x418)
        let draft = TicketDraft(channel: .web, topic: "child-benefits", subject: "Перерасчёт пенсии",
                                statement: "Прошу проверить размер пенсии.", legalRegime: .consultation, assignee: "op-ivanova")
        let t = try! draft.open(id: id, number: TicketNumber(region: "38", year: 2026, sequence: 418), node: irkutskNodes[1],
                                now: testNow + 1_000, stamp: Stamp(millis: testNow + 1_000, logical: 0))
        return ticketRecord(t, dot: Dot(node: irkutskNodes[1], stamp: t.updatedStamp))
    }()

    static let header = WireFrame.header(node: irkutskNodes[0], storeID: storeID, resumeAfter: 0, checkpointReset: true, lastSequence: 3)
    static let heartbeat = WireFrame.heartbeat(sourceLastSequence: 3, sourceStamp: Stamp(millis: testNow + 5_000, logical: 1))
    static let error = WireFrame.error(.shuttingDown, "node irk-main is stopping")

    /// The stream as a sender writes it.
    static func bytes() throws -> [UInt8] {
        var out = try WireCoding.delimited(header)
        var next = 0
        let entries: [BatchFrames.Entry] = [(2, encoded(conflicted.delta)), (3, encoded(plain.delta))]
        out += BatchFrames.next(entries, from: &next, sourceLastSequence: 3).bytes
        out += try WireCoding.delimited(heartbeat)
        out += BatchFrames.empty(through: 5, sourceLastSequence: 5)
        out += try WireCoding.delimited(error)
        return out
    }

    /// The same frames as swift-protobuf's generated messages.
    static func frames() -> [WireFrame] {
        [header, batchFrame([(2, generated(conflicted.delta)), (3, generated(plain.delta))], through: 3, last: 3), heartbeat,
         batchFrame([], through: 5, last: 5), error]
    }

    static var committedPath: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("proto/testdata/sample.frames")
    }

    @Test func writeSampleWhenAsked() throws {
        guard let path = ProcessInfo.processInfo.environment["EKC_WIRE_SAMPLE"], !path.isEmpty else { return }
        try Data(WireSampleTests.bytes()).write(to: URL(fileURLWithPath: path))
    }

    /// The committed sample is what a sender writes for these frames, byte for byte, and
    /// reads back as them, through swift-protobuf and through the puller's reader.
    @Test func committedSampleMatches() throws {
        let committed = [UInt8](try Data(contentsOf: WireSampleTests.committedPath))
        #expect(committed == (try WireSampleTests.bytes()))
        #expect(try WireCoding.decodeAll(WireFrame.self, from: committed) == WireSampleTests.frames())
        var decoder = FrameDecoder(reading: reading)
        decoder.append(committed)
        var read: [FrameMeaning] = []
        while let f = try decoder.next() { read.append(meaning(f)) }
        try decoder.finish()
        #expect(read == [
            .header(WireSampleTests.header.header),
            .batch(through: 3, last: 3, records: [.delta(2, WireSampleTests.conflicted.delta), .delta(3, WireSampleTests.plain.delta)]),
            .heartbeat(WireSampleTests.heartbeat.heartbeat),
            .batch(through: 5, last: 5, records: []),
            .error(WireSampleTests.error.error),
        ])
        // And the records in it are the model values they were made from.
        let conflicts = TicketRecord.schema.conflicts(of: WireSampleTests.conflicted.state)
        #expect(conflicts.map(\.field) == ["progress", "assignee"])
        let t = try #require(Ticket.materialise(WireSampleTests.conflicted.state, local: LocalRecordInfo(version: 1)))
        #expect(t.status == .deferred && t.assignee == "op-sidorov" && t.citizen?.ref == "CIT-7F3K2")
        #expect(WireSampleTests.conflicted.children.count == 5)
    }

    /// The sample is also what swift-protobuf writes for the same frames: an independent
    /// encoder writes the same bytes (Python's re-encoding is checked the same way).
    @Test func committedSampleIsSwiftProtobufs() throws {
        let committed = [UInt8](try Data(contentsOf: WireSampleTests.committedPath))
        #expect(committed == (try stream(WireSampleTests.frames())))
    }
}
