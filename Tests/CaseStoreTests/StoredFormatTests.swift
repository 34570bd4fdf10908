import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// The store's own formats: records with their feed positions, children, feed entries
/// and ticket views. Each is a protobuf message read by the same reader as the wire's.
@Suite("Case store: stored formats")
struct StoredFormatTests {
    func states(_ seed: UInt64) -> [Record] {
        ticketStatePool(seed: seed, steps: 150) + [conflictedTicketRecord(idLow: seed)]
    }

    @Test("a stored record (registers, feed positions, version) survives encode and decode", arguments: [1, 2] as [UInt64])
    func storedRecordRoundTrip(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        for r in states(seed) {
            let stored = StoredRecord(state: r.state, local: LocalRecordInfo(version: UInt64.random(in: 0...1_000, using: &rng)),
                                      feedSequence: r.state.registers.map { $0.isEmpty ? 0 : UInt64.random(in: 1...UInt64.max >> 1, using: &rng) })
            let bytes = stored.encode(TicketRecord.schema)
            let back = try bytes.withUnsafeBytes { try StoredRecord.decode($0, TicketRecord.schema, id: r.state.id) }
            #expect(back.state == stored.state && back.local == stored.local && back.feedSequence == stored.feedSequence)
        }
    }

    @Test("the registers a sender copies from a stored record are the wire's Register messages, byte for byte")
    func copiedRegistersAreWireRegisters() throws {
        var rng = SeededRandom(seed: 5)
        for r in states(5) where !r.state.registers.allSatisfy(\.isEmpty) {
            let stored = StoredRecord(state: r.state, local: LocalRecordInfo(version: 3),
                                      feedSequence: r.state.registers.map { _ in UInt64.random(in: 1...1_000_000, using: &rng) })
            var wanted = RegisterSet()
            for i in r.state.registers.indices where Bool.random(using: &rng) { wanted.insert(i) }
            var copied = ProtoWriter()
            try stored.encode(TicketRecord.schema).withUnsafeBytes {
                try StoredRecord.copyRegisters($0, TicketRecord.schema, wanted, field: 3, into: &copied)
            }
            var expected = ProtoWriter()
            for (i, reg) in r.state.registers.enumerated() where wanted.contains(i) && !reg.isEmpty {
                expected.message(3) { RecordCoding.registerFields(&$0, number: TicketRecord.schema.registers[i].number, reg) }
            }
            #expect(copied.bytes == expected.bytes)
        }
    }

    @Test("a stored register of a number this build does not know is left alone")
    func unknownRegisterIgnored() throws {
        let r = conflictedTicketRecord(idLow: 3)
        let stored = StoredRecord(state: r.state, local: LocalRecordInfo(version: 2), feedSequence: Array(repeating: 4, count: TicketRecord.schema.registers.count))
        var bytes = stored.encode(TicketRecord.schema)
        var later = ProtoWriter()
        later.message(2) { w in
            RecordCoding.registerFields(&w, number: 40, Register([1, 2, 3], dot: Dot(node: irk, stamp: Stamp(millis: t0, logical: 1))))
            w.uint64(StoredRecord.feedSequenceField, 5)
        }
        bytes += later.bytes
        let back = try bytes.withUnsafeBytes { try StoredRecord.decode($0, TicketRecord.schema, id: r.state.id) }
        #expect(back.state == stored.state && back.feedSequence == stored.feedSequence)
    }

    @Test("a cut stored record is reported as corrupt or reads as fewer registers, never traps")
    func truncatedRecord() throws {
        let r = conflictedTicketRecord(idLow: 4)
        let stored = StoredRecord(state: r.state, local: LocalRecordInfo(version: 300), feedSequence: Array(repeating: 77, count: TicketRecord.schema.registers.count))
        let bytes = stored.encode(TicketRecord.schema)
        var corrupt = 0
        for cut in 0..<bytes.count {
            let short = Array(bytes.prefix(cut))
            do {
                let back = try short.withUnsafeBytes { try StoredRecord.decode($0, TicketRecord.schema, id: r.state.id) }
                for (i, reg) in back.state.registers.enumerated() where !reg.isEmpty { #expect(reg == r.state.registers[i], "cut at \(cut)") }
            } catch {
                corrupt += 1
            }
        }
        #expect(corrupt > bytes.count / 2)
    }

    @Test("children, feed entries and ticket views survive encode and decode")
    func otherFormats() throws {
        var rng = SeededRandom(seed: 9)
        for r in states(9) {
            for c in r.children.values {
                let back = try StoredChild.encode(c).withUnsafeBytes { try StoredChild.decode($0, collection: c.collection, id: c.id) }
                #expect(back == c)
            }
            let entry = FeedEntry(kind: TicketRecord.kind, id: r.state.id, registerNumbers: UInt64.random(in: 0...0x1FE, using: &rng) & ~1,
                                  children: r.children.keys.sorted())
            #expect(try entry.encode().withUnsafeBytes { try FeedEntry.decode($0) } == entry)
        }
        #expect(throws: CorruptRecord.self) { try [0x22, 0x02, 1, 2].withUnsafeBytes { try FeedEntry.decode($0) } }
        #expect(throws: CorruptRecord.self) { try [0x08, 0x01].withUnsafeBytes { try FeedEntry.decode($0) } }   // no id
        for _ in 0..<300 {
            let t = RandomTicketValues.ticket(&rng)
            let bytes = TicketView.encode(t.registerValues, version: t.version, stamp: t.updatedStamp)
            #expect(try bytes.withUnsafeBytes { try TicketView.decode($0, id: t.id) } == t)
        }
        // A view missing a register is corrupt, not a ticket with a made-up value.
        let t = RandomTicketValues.ticket(&rng)
        var winners: [ValueBytes?] = t.registerValues
        winners[R.owner.rawValue] = nil
        let partial = TicketView.encode(winners, version: 1, stamp: t.updatedStamp)
        #expect(throws: CorruptRecord.self) { try partial.withUnsafeBytes { try TicketView.decode($0, id: t.id) } }
    }
}
