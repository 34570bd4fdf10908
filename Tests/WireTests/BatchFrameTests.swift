import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import Testing
@testable import Wire

/// The sender writes TicketState and batch frames directly; swift-protobuf's generated
/// messages are the definition, so the bytes must be identical to theirs.
@Suite struct DirectEncodingTests {
    func generated(_ t: ReplicatedTicket) throws -> [UInt8] {
        try Ekc_Replication_V1_TicketState(t).serializedBytes()
    }

    @Test(arguments: [11, 12, 13, 14, 15] as [UInt64])
    func everyStateOfRandomHistoriesEncodesAsGenerated(seed: UInt64) throws {
        let pool = statePool(seed: seed, steps: 400)
        var checked = 0
        for t in pool {
            #expect(t.wireBytes() == (try generated(t)))
            checked += 1
        }
        #expect(checked == 401)
        let conflicted = conflictedTicket(idLow: seed)
        #expect(conflicted.wireBytes() == (try generated(conflicted)))
    }

    /// Lengths that need two and three varint bytes, empty and absent optionals,
    /// negative times, an empty ticket.
    @Test func edgeValuesEncodeAsGenerated() throws {
        let id = TicketID(millis: UInt64(baseTime), randomHigh: 7, randomLow: 9)
        let node = irkutskNodes[1]
        for (text, citizen, received) in [
            (String(repeating: "ж", count: 70), nil, baseTime),                            // 140 bytes
            (String(repeating: "я", count: 9_000), Citizen(ref: ""), -5),                  // 18,000 bytes
            ("", Citizen(ref: "CIT-1", name: "", snils: nil, phone: ""), 0),
        ] as [(String, Citizen?, Millis)] {
            // Set after opening: opening validates what a replica need not.
            var ticket = openedTicket(id: id, at: node, now: baseTime)
            ticket.citizen = citizen
            ticket.statement = text
            ticket.registeredAt = received
            ticket.assignee = text.isEmpty ? "" : nil
            ticket.deadlines.callbackBy = -1
            let t = ReplicatedTicket(opened: ticket, dot: Dot(node: node, stamp: Stamp(millis: baseTime, logical: 3)))
            #expect(t.wireBytes() == (try generated(t)))
            #expect(try ReplicatedTicket(wireBytes: t.wireBytes()) == t)
        }
        let empty = ReplicatedTicket(id: id)
        #expect(empty.wireBytes() == (try generated(empty)))
    }

    @Test func batchFrameEqualsGeneratedEncoding() throws {
        let pool = statePool(seed: 21, steps: 120)
        let tickets = pool.enumerated().map { (UInt64($0.offset * 3 + 1), $0.element) }
        for (through, last) in [(UInt64(360), UInt64(999)), (360, 0), (0, 0)] {
            for changes in [tickets, Array(tickets.prefix(1)), []] {
                let expected = try WireCoding.delimited(WireFrame.batch(changes, throughSequence: through, sourceLastSequence: last))
                #expect(WireCoding.batchFrame(changes, throughSequence: through, sourceLastSequence: last) == expected)
            }
        }
    }

    /// Long tickets are split into frames of about the target size, none near the
    /// receivers' limit; each frame is what batchFrame writes for its changes.
    @Test func framesCloseAtTheTargetSize() throws {
        let node = irkutskNodes[0]
        let tickets: [(UInt64, ReplicatedTicket)] = (1...60 as ClosedRange<UInt64>).map { i in
            let id = TicketID(millis: UInt64(baseTime) + i, randomHigh: 3, randomLow: i)
            var t = openedTicket(id: id, at: node, now: baseTime)
            t.statement = String(repeating: "щ", count: Int(i % 7) * 3_000 + 10)   // up to 36 KB
            return (i * 2, ReplicatedTicket(opened: t, dot: Dot(node: node, stamp: Stamp(millis: baseTime, logical: UInt16(i)))))
        }
        let target = 100_000
        let frames = WireCoding.batchFrames(tickets, sourceLastSequence: 500, targetBytes: target)
        #expect(frames.count > 5)
        var decoder = FrameDecoder()
        var seen: [UInt64] = []
        var next = 0
        for f in frames {
            #expect(f.bytes.count < target + 40_000)
            let part = Array(tickets[next..<(next + f.count)])
            #expect(f.bytes == WireCoding.batchFrame(part, throughSequence: f.through, sourceLastSequence: 500))
            #expect(f.through == part.last!.0)
            next += f.count
            decoder.append(f.bytes)
            let frame = try #require(try decoder.next())
            seen += frame.batch.changes.map(\.sequence)
        }
        #expect(seen == tickets.map(\.0))
        // A ticket larger than the target travels alone.
        let alone = WireCoding.batchFrames(Array(tickets.prefix(3)), sourceLastSequence: 1, targetBytes: 10)
        #expect(alone.map(\.count) == [1, 1, 1])
    }
}
