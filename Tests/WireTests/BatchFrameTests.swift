import CaseModel
import Replication
import Testing
@testable import Wire

/// The hand-assembled batch frame is byte for byte what swift-protobuf writes.
@Suite struct BatchFrameTests {
    @Test func handAssembledFrameEqualsGeneratedEncoding() throws {
        let node = NodeID("irk-main")!
        var tickets: [(UInt64, ReplicatedTicket)] = []
        for i in 1...20 as ClosedRange<UInt64> {
            let id = TicketID(millis: 1_795_000_000_000 + i, randomHigh: 1, randomLow: i)
            let draft = TicketDraft(channel: .phone, topic: "pension", subject: "тема \(i)", statement: "текст \(i)")
            let t = try draft.open(id: id, number: TicketNumber(region: "38", year: 2026, sequence: i), node: node,
                                   now: 1_795_000_000_000, stamp: Stamp(millis: 1_795_000_000_000, logical: UInt16(i)))
            tickets.append((i * 3, ReplicatedTicket(opened: t, dot: Dot(node: node, stamp: t.updatedStamp))))
        }
        for (through, last) in [(UInt64(60), UInt64(99)), (60, 0), (0, 0)] {
            let expected = try WireCoding.delimited(WireFrame.batch(tickets.map { ($0.0, $0.1) }, throughSequence: through,
                                                                    sourceLastSequence: last))
            let assembled = WireCoding.batchFrame(
                changes: try tickets.map { ($0.0, try Ekc_Replication_V1_TicketState($0.1).serializedBytes()) },
                throughSequence: through, sourceLastSequence: last)
            #expect(assembled == expected)
        }
    }
}
