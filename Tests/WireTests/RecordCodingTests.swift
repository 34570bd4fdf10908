import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

/// `RecordCoding` (the generic RecordDelta, Register, Child messages written and read
/// by hand) against swift-protobuf's generated `Ekc_Replication_V2_RecordDelta`.
@Suite struct RecordCodingTests {
    func decoded(_ bytes: [UInt8]) throws(Refusal) -> RecordDelta {
        let r: Result<RecordDelta, Refusal> = bytes.withUnsafeBytes { b in
            do throws(Refusal) { return .success(try RecordCoding.decodeDelta(b, kinds: wireKinds)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func randomDeltasRoundTrip(seed: UInt64) throws {
        var conflicted = 0, withChildren = 0, partial = 0
        for d in sampleDeltas(seed: seed, count: 300) {
            #expect(try decoded(encoded(d)) == d)
            if d.state.isConflicted { conflicted += 1 }
            if !d.children.isEmpty { withChildren += 1 }
            if d.state.registers.contains(where: \.isEmpty) { partial += 1 }
        }
        #expect(conflicted > 10 && withChildren > 10 && partial > 10)
    }

    /// Ours parsed by swift-protobuf, and swift-protobuf's parsed by ours, mean the same delta.
    @Test(arguments: [5, 6, 7] as [UInt64])
    func agreesWithGeneratedMessages(seed: UInt64) throws {
        for d in sampleDeltas(seed: seed, count: 300) {
            let ours = encoded(d)
            #expect(try GDelta(serializedBytes: ours) == generated(d))
            let theirs: [UInt8] = try generated(d).serializedBytes()
            #expect(try decoded(theirs) == d)
            #expect(referenceRecord(ours) == d)
        }
    }

    /// Byte for byte: the store keeps and the sender ships these bytes, and independent
    /// decoders (Python's protobuf in tests/integration) re-encode them.
    @Test(arguments: [8, 9] as [UInt64])
    func encodesAsSwiftProtobuf(seed: UInt64) throws {
        var differing: [String] = []
        let deltas = sampleDeltas(seed: seed, count: 300)
        for d in deltas {
            let theirs: [UInt8] = try generated(d).serializedBytes()
            if encoded(d) != theirs {
                let empties = d.state.registers.enumerated().flatMap { i, r in
                    r.versions.filter(\.value.isEmpty).map { _ in wireKinds[d.kind]!.registers[i].name }
                }
                differing.append("\(d.id): \(encoded(d).count) vs \(theirs.count) bytes; registers with an empty value: \(empties)")
            }
        }
        #expect(differing.isEmpty, "\(differing.count) of \(deltas.count) deltas encode differently, e.g. \(differing.prefix(3))")
    }

    /// A register whose value message is empty (a ticket about no citizen, an unassigned
    /// ticket): proto3 does not write a `bytes` field at its default.
    @Test func emptyValueIsNotWritten() throws {
        let dot = Dot(node: irkutskNodes[0], stamp: Stamp(millis: testNow, logical: 0))
        var state = TicketRecord.schema.emptyState(RecordID(high: 1 << 20, low: 1))
        state.registers[TicketRecord.Register.citizen.rawValue] = Register(TicketValues.encode(Citizen?.none), dot: dot)
        let d = RecordDelta(state: state)
        let theirs: [UInt8] = try generated(d).serializedBytes()
        #expect(encoded(d) == theirs)
        #expect(try decoded(theirs) == d)
    }

    /// Valid protobuf a canonical encoder would not write: parts out of order, unknown
    /// fields, an absent empty value. Read as protobuf reads them.
    @Test func nonCanonicalInputReadsAsProtobufSays() throws {
        let d = conflictedTicketRecord(idLow: 12).delta
        var m = generated(d)
        m.registers.reverse()
        m.children.reverse()
        for i in m.registers.indices {
            m.registers[i].versions.reverse()
            m.registers[i].seen.entries.reverse()
        }
        var bytes: [UInt8] = try m.serializedBytes()
        #expect(try decoded(bytes) == d)
        // Unknown fields of a later revision, at every level that has them.
        m = generated(d)
        let unknown = try Ekc_Replication_V2_Dot(serializedBytes: [0xA0, 0x06, 0x01] as [UInt8]).unknownFields   // field 100, varint 1
        #expect(!unknown.data.isEmpty)
        m.unknownFields = unknown
        m.registers[0].unknownFields = unknown
        m.registers[0].versions[0].unknownFields = unknown
        m.registers[0].versions[0].dot.unknownFields = unknown
        m.registers[0].seen.unknownFields = unknown
        m.children[0].unknownFields = unknown
        bytes = try m.serializedBytes()
        #expect(try decoded(bytes) == d)
        #expect(referenceRecord(bytes) == d)
    }

    /// Where a singular message field appears twice (a dot's node in one, its stamp in
    /// the other; a context in two halves), protobuf merges the two, which no encoder
    /// writes; the record is refused as malformed instead (proto/README.md §1.5), so it
    /// cannot mean one thing to one reader and another to the next.
    @Test func repeatedMessageFieldsAreRefused() throws {
        let d = conflictedTicketRecord(idLow: 13).delta
        let m = generated(d)
        // Version 0 of register 0 (header) with its dot written as two Dot messages.
        var split = m
        let v = split.registers[0].versions[0]
        var first = Ekc_Replication_V2_Version()
        first.dot.node = v.dot.node
        first.value = v.value
        var second = Ekc_Replication_V2_Version()
        second.dot.stamp = v.dot.stamp
        let merged: [UInt8] = try first.serializedBytes() + second.serializedBytes()
        #expect(try Ekc_Replication_V2_Version(serializedBytes: merged) == v)
        split.registers[0].versions[0] = try Ekc_Replication_V2_Version(serializedBytes: merged)
        var w = ProtoWriter()
        w.uint64(1, UInt64(m.kind.rawValue))
        w.presentBytes(2, [UInt8](m.id))
        for (i, r) in m.registers.enumerated() {
            w.message(3) { w in
                if i == 0 {
                    w.uint64(1, UInt64(r.number))
                    w.presentBytes(2, merged)
                    for x in r.versions.dropFirst() { w.presentBytes(2, try! x.serializedBytes() as [UInt8]) }
                    w.presentBytes(3, try! r.seen.serializedBytes() as [UInt8])
                } else if i == 3 {
                    // The context of the conflicted progress register in two halves.
                    w.uint64(1, UInt64(r.number))
                    for x in r.versions { w.presentBytes(2, try! x.serializedBytes() as [UInt8]) }
                    #expect(r.seen.entries.count == 2)
                    var a = r.seen, b = r.seen
                    a.entries = Array(r.seen.entries.prefix(1))
                    b.entries = Array(r.seen.entries.dropFirst(1))
                    w.presentBytes(3, try! a.serializedBytes() as [UInt8])
                    w.presentBytes(3, try! b.serializedBytes() as [UInt8])
                } else {
                    w.bytes += (try! r.serializedBytes() as [UInt8])
                }
            }
        }
        for c in m.children { w.presentBytes(4, try c.serializedBytes() as [UInt8]) }
        #expect(try GDelta(serializedBytes: w.bytes) == m)   // swift-protobuf merges them into the delta
        do {
            _ = try decoded(w.bytes)
            Issue.record("a record with a dot and a context each sent in two parts was read")
        } catch let r as Refusal {
            // The first part alone is already incomplete (a dot without a stamp), or the second is refused as a repeat.
            #expect(r.reason == .malformed || r.reason == .invalidValue, "\(r)")
        }
    }

    /// Every structural rule of the generic messages, each broken alone, refused with its reason and path.
    @Test func structuralRefusals() throws {
        let good = generated(conflictedTicketRecord(idLow: 2).delta)
        func refusal(_ change: (inout GDelta) -> Void) throws -> Refusal? {
            var m = good
            change(&m)
            do {
                _ = try decoded(try m.serializedBytes())
                return nil
            } catch let r as Refusal {
                return r
            }
        }
        func bytes(_ n: Int) -> Data { Data(repeating: 7, count: n) }
        let cases: [(String, RefusalReason, String, (inout GDelta) -> Void)] = [
            ("id of 15 bytes", .invalidValue, "id", { $0.id = bytes(15) }),
            ("no id", .invalidValue, "id", { $0.id = Data() }),
            ("unknown kind", .unknownKind, "kind", { $0.kind = .UNRECOGNIZED(77) }),
            ("no kind", .unknownKind, "kind", { $0.kind = .unspecified }),
            ("unknown register", .unknownKind, "registers[0].number", { $0.registers[0].number = 40 }),
            ("register twice", .invalidValue, "registers[header]", { $0.registers.append($0.registers[0]) }),
            ("empty register", .invalidValue, "registers[header]", { $0.registers[0] = .init(); $0.registers[0].number = 1 }),
            ("version without dot", .invalidValue, "registers[0].versions[0].dot", { $0.registers[0].versions[0].clearDot() }),
            ("stamp 0", .invalidValue, "registers[0].versions[0].dot.stamp", { $0.registers[0].versions[0].dot.stamp = 0 }),
            ("node id", .invalidValue, "registers[0].versions[0].dot.node", { $0.registers[0].versions[0].dot.node = "Irk Main" }),
            ("dot twice", .invalidValue, "registers[0]", { $0.registers[3].versions.append($0.registers[3].versions[0]); $0.registers.swapAt(0, 3) }),
            ("context node twice", .invalidValue, "registers[0].seen", { $0.registers[0].seen.entries.append($0.registers[0].seen.entries[0]) }),
            ("context stamp 0", .invalidValue, "registers[0].seen.entries[0].stamp", { $0.registers[0].seen.entries[0].stamp = 0 }),
            ("context node id", .invalidValue, "registers[0].seen.entries[0].node", { $0.registers[0].seen.entries[0].node = "" }),
            ("65 versions", .tooLarge, "registers[0]", { m in
                m.registers[0].versions = (1...65).map { i in var v = m.registers[0].versions[0]; v.dot.stamp = UInt64(i); return v }
            }),
            ("1,025 context entries", .tooLarge, "registers[0].seen", { m in
                m.registers[0].seen.entries = (1...1_025).map { i in
                    var e = Ekc_Replication_V2_VersionVector.Entry(); e.node = "n\(i)"; e.stamp = 1; return e
                }
            }),
            ("child collection 0", .unknownKind, "children[0].collection", { $0.children[0].collection = 0 }),
            ("child collection 256", .unknownKind, "children[0].collection", { $0.children[0].collection = 256 }),
            ("child id", .invalidValue, "children[1].id", { $0.children[1].id = bytes(3) }),
            ("child without id", .invalidValue, "children[0].id", { $0.children[0].id = Data() }),
            ("child without dot", .invalidValue, "children[0].dot", { $0.children[0].clearDot() }),
            ("child stamp 0", .invalidValue, "children[0].dot.stamp", { $0.children[0].dot.stamp = 0 }),
        ]
        for (name, reason, path, change) in cases {
            let r = try refusal(change)
            #expect(r?.reason == reason, "\(name): \(String(describing: r))")
            #expect(r?.detail.hasPrefix(path) == true, "\(name): \(String(describing: r))")
        }
        #expect(try refusal { _ in } == nil)
        // Bytes that are not protobuf at all.
        for garbage: [UInt8] in [[0xFF, 0xFF, 0xFF], [0x12, 0x10, 1, 2], [0x1A, 0x05, 0x08], [0x0B]] {
            #expect(throws: Refusal.self, "\(garbage)") { try decoded(garbage) }
        }
    }
}
