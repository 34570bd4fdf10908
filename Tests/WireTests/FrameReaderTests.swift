import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

/// The puller's frame reader against swift-protobuf (`ReferenceFrame`, each record then
/// parsed by the generated RecordDelta, read by `referenceDelta` and checked): on valid
/// frames, on frames whose records are damaged and on damaged whole frames, both refuse
/// the frame, or both give the same records, each the same delta or refused by both.
@Suite struct FrameReaderTests {
    /// Both readers on one frame body; returns whether ours read it.
    @discardableResult
    func compare(_ body: [UInt8], _ note: @autoclosure () -> String) -> Bool {
        let ours = readFrame(body)
        let reference = referenceMeaning(body)
        switch (ours, reference) {
        case (.success(let f), let r?):
            #expect(meaning(f) == r, "\(note()): \(body.count > 300 ? "\(body.prefix(300))…" : "\(body)")")
            // Where swift-protobuf can read the whole frame, it means the same as the reference.
            if let g = try? WireFrame(serializedBytes: body) { #expect(meaning(g) == r, "reference: \(note())") }
            return true
        case (.failure, nil):
            return false
        case (.success(let f), nil):
            Issue.record("ours read what protobuf refuses: \(meaning(f)) — \(note()): \(body.prefix(300))")
            return true
        case (.failure(let e), _?):
            Issue.record("ours refused (\(e)) what protobuf reads — \(note()): \(body.prefix(300))")
            return false
        }
    }

    /// A frame body (no length prefix) around records given as bytes.
    func frame(_ records: [(UInt64, [UInt8])], through: UInt64, last: UInt64) -> [UInt8] {
        var w = ProtoWriter()
        w.message(2) { w in
            for (seq, r) in records {
                w.message(1) { w in
                    w.uint64(1, seq)
                    w.presentBytes(2, r)
                }
            }
            w.uint64(2, through)
            w.uint64(3, last)
        }
        return w.bytes
    }

    @Test(arguments: [31, 32, 33] as [UInt64])
    func validFramesReadAlike(seed: UInt64) {
        let deltas = sampleDeltas(seed: seed, count: 200)
        var rng = SeededRandom(seed: seed)
        for _ in 0..<100 {
            let n = Int.random(in: 0...12, using: &rng)
            let records = (0..<n).map { i in (UInt64(i + 1), encoded(deltas.randomElement(using: &rng)!)) }
            let body = frame(records, through: UInt64(n), last: UInt64(n + 5))
            #expect(compare(body, "valid frame of \(n)"))
            // Every record reads back as the delta it was made from.
            guard case .success(.batch(let b)) = readFrame(body) else { Issue.record("not a batch"); continue }
            #expect(b.records.allSatisfy { if case .delta = $0.content { true } else { false } })
        }
    }

    @Test(arguments: [41, 42, 43, 44] as [UInt64])
    func mutatedRecordsReadAlike(seed: UInt64) {
        let deltas = sampleDeltas(seed: seed, count: 100)
        var rng = SeededRandom(seed: seed)
        var readAsDelta = 0
        for round in 0..<1_500 {
            var r = encoded(deltas.randomElement(using: &rng)!)
            for _ in 0..<Int.random(in: 1...3, using: &rng) { r = mutate(r, &rng) }
            let body = frame([(1, r)], through: 1, last: 1)
            compare(body, "seed \(seed) round \(round)")
            if case .success(.batch(let b)) = readFrame(body), case .delta = b.records.first?.content { readAsDelta += 1 }
        }
        // Many mutations leave a record that is still valid (a changed string or number).
        #expect(readAsDelta > 100)
    }

    @Test(arguments: [51, 52] as [UInt64])
    func mutatedFramesReadAlike(seed: UInt64) {
        let deltas = sampleDeltas(seed: seed, count: 60)
        var rng = SeededRandom(seed: seed)
        for round in 0..<1_500 {
            let records = (0..<3).map { i in (UInt64(i + 1), encoded(deltas.randomElement(using: &rng)!)) }
            var body = frame(records, through: 3, last: 9)
            for _ in 0..<Int.random(in: 1...2, using: &rng) { body = mutate(body, &rng) }
            compare(body, "seed \(seed) round \(round)")
        }
    }

    /// A damaged record in a valid batch is refused alone, with the kind and id that could
    /// be read; the records around it decode.
    @Test(arguments: [61, 62, 63] as [UInt64])
    func damagedRecordRefusedAlone(seed: UInt64) throws {
        let deltas = sampleDeltas(seed: seed, count: 5)
        var rng = SeededRandom(seed: seed)
        var damaged = 0
        for round in 0..<200 {
            var bad = encoded(deltas[2])
            for _ in 0..<Int.random(in: 1...3, using: &rng) { bad = mutate(bad, &rng) }
            guard referenceRecord(bad) == nil else { continue }
            damaged += 1
            var records = deltas.enumerated().map { (UInt64(10 + $0.offset), encoded($0.element)) }
            records[2].1 = bad
            let body = frame(records, through: 14, last: 20)
            guard case .success(.batch(let b)) = readFrame(body) else { Issue.record("round \(round): the frame was refused"); continue }
            #expect(b.sequences == [10, 11, 12, 13, 14] && b.throughSequence == 14 && b.sourceLastSequence == 20)
            for (i, r) in b.records.enumerated() {
                switch r.content {
                case .delta(let d): #expect(i != 2 && d == deltas[i], "round \(round)")
                case .refused: #expect(i == 2, "round \(round)")
                }
            }
        }
        #expect(damaged > 50)
    }

    /// Records that parse but break a rule are refused with the rule and the record's
    /// kind and id, for the report.
    @Test func hostileRecordsAreReported() throws {
        let good = conflictedTicketRecord(idLow: 7).delta
        let id = good.id
        func read(_ d: RecordDelta) throws -> RemoteRecord {
            let body = frame([(5, encoded(d))], through: 5, last: 5)
            guard case .success(.batch(let b)) = readFrame(body), let r = b.records.first else { throw WireError.missingField("batch") }
            return r
        }
        func refusal(_ change: (inout RecordDelta) -> Void) throws -> (RecordKindID?, RecordID?, Refusal)? {
            var d = good
            change(&d)
            guard case .refused(let kind, let rid, let refusal) = try read(d).content else { return nil }
            return (kind, rid, refusal)
        }
        let progress = TicketRecord.Register.progress.rawValue
        let stranger = Dot(node: NodeID("xx-nowhere")!, stamp: Stamp(millis: testNow, logical: 1))
        let cases: [(String, RefusalReason, String, (inout RecordDelta) -> Void)] = [
            ("status 99", .invalidValue, "registers[progress].versions[0].value.status", { d in
                var v = d.state.registers[progress].versions[0].value
                v[1] = 99   // Progress.status is the first field
                d.state.registers[progress] = Register(v, dot: d.state.registers[progress].versions[0].dot)
            }),
            ("an author no one knows", .unknownNode, "registers[progress].versions[0].dot.node", { d in
                d.state.registers[progress] = Register(d.state.registers[progress].versions[0].value, dot: stranger)
            }),
            ("a value over its budget", .tooLarge, "registers[priority].versions[0].value", { d in
                let p = TicketRecord.Register.priority.rawValue
                d.state.registers[p] = Register([UInt8](repeating: 8, count: 9), dot: d.state.registers[p].versions[0].dot)
            }),
            ("a context claiming a later write of its own version's node", .impossibleCausality, "registers[header].seen", { d in
                let dot = d.state.registers[0].versions[0].dot
                d.state.registers[0] = Register(sortedVersions: d.state.registers[0].versions,
                                                seen: VersionVector([dot.node: Stamp(raw: dot.stamp.raw + 1)]))
            }),
            ("children out of order", .invalidValue, "children", { d in d.children.append(d.children[0]) }),
            ("a note that breaks its rule", .invalidValue, "children[notes/", { d in
                let i = d.children.firstIndex { $0.collection == TicketRecord.Collection.notes.rawValue }!
                let c = d.children[i]
                d.children[i] = Child(collection: c.collection, id: c.id, dot: c.dot, value: [0x10, 0x01])
            }),
        ]
        for (name, reason, path, change) in cases {
            let r = try refusal(change)
            #expect(r?.2.reason == reason, "\(name): \(String(describing: r?.2))")
            #expect(r?.2.detail.hasPrefix(path) == true, "\(name): \(String(describing: r?.2))")
            #expect(r?.0 == TicketRecord.kind && r?.1 == id, "\(name)")
        }
        #expect(try refusal { _ in } == nil)
        // A record of a kind this node does not know: refused, its kind and id reported.
        var w = ProtoWriter()
        w.uint64(1, 77)
        w.presentBytes(2, id.bytes)
        let body = frame([(5, w.bytes), (6, encoded(good))], through: 6, last: 6)
        guard case .success(.batch(let b)) = readFrame(body) else { Issue.record("not a batch"); return }
        guard case .refused(let kind, let rid, let refusal) = b.records[0].content else { Issue.record("kind 77 read"); return }
        #expect(kind == RecordKindID(rawValue: 77) && rid == id && refusal.reason == .unknownKind)
        #expect(meaning(.batch(b)) == .batch(through: 6, last: 6, records: [.refused(5), .delta(6, good)]))
        // A change without a record, and a record that is not protobuf at all.
        let holes = frame([(7, [0xFF, 0xFF])], through: 8, last: 8)
        var cut = ProtoWriter()
        cut.message(2) { w in
            w.message(1) { w in w.uint64(1, 9) }
        }
        for (bytes, seq) in [(holes, UInt64(7)), (cut.bytes, UInt64(9))] {
            guard case .success(.batch(let b)) = readFrame(bytes) else { Issue.record("not a batch"); continue }
            guard case .refused(nil, nil, _) = b.records.first?.content else { Issue.record("\(String(describing: b.records.first))"); continue }
            #expect(b.sequences == [seq])
            compare(bytes, "record \(seq)")
        }
    }

    /// Header, heartbeat and error frames are read by swift-protobuf and come out whole.
    @Test func otherFramesAreReadBySwiftProtobuf() throws {
        for f in [WireFrame.header(node: irkutskNodes[0], storeID: Array(0x10...0x1F), resumeAfter: 7, checkpointReset: true, lastSequence: 9),
                  .heartbeat(sourceLastSequence: 42, sourceStamp: Stamp(millis: testNow, logical: 7)),
                  .error(.shuttingDown, "node irk-main is stopping")] {
            let body: [UInt8] = try f.serializedBytes()
            #expect(compare(body, "\(f)"))
            #expect(meaning(try readFrame(body).get()) == meaning(f))
        }
    }

    /// A frame carries one kind, once, and a change one record: where protobuf would
    /// keep the last of two kinds or merge a message sent in parts (which no encoder
    /// writes), the reader refuses the frame, so that no two readers can take it to mean
    /// different things (proto/README.md §1.5). Swift-protobuf reads each of these.
    @Test func repeatedFrameFieldsAreRefused() throws {
        let deltas = sampleDeltas(seed: 71, count: 4)
        let a = frame([(1, encoded(deltas[0]))], through: 1, last: 9)
        let b = frame([(2, encoded(deltas[1])), (3, encoded(deltas[3]))], through: 3, last: 9)
        let header: [UInt8] = try WireFrame.header(node: irkutskNodes[0], storeID: [1], resumeAfter: 0, checkpointReset: false,
                                                   lastSequence: 9).serializedBytes()
        let heartbeat: [UInt8] = try WireFrame.heartbeat(sourceLastSequence: 3, sourceStamp: Stamp(raw: 5)).serializedBytes()
        var h1 = WireStreamHeader()
        h1.node = "irk-main"
        var h2 = WireStreamHeader()
        h2.lastSequence = 12
        var f1 = WireFrame(), f2 = WireFrame()
        f1.header = h1
        f2.header = h2
        let halves: [UInt8] = try f1.serializedBytes() + f2.serializedBytes()
        for (name, body) in [("batch, batch", a + b), ("header, batch", header + a), ("batch, header", a + header),
                             ("batch, heartbeat, batch", a + heartbeat + b), ("a header in two halves", halves)] {
            #expect((try? WireFrame(serializedBytes: body)) != nil, "swift-protobuf reads \(name)")
            guard case .failure = readFrame(body) else { Issue.record("read \(name)"); continue }
        }
        // Each part alone is read.
        for body in [a, b, header, heartbeat] { guard case .success = readFrame(body) else { Issue.record("refused a part"); continue } }
        // A change whose record is written twice (registers split between the two): the
        // record is refused as malformed, alone (proto/README.md §1.5).
        let whole = conflictedTicketRecord(idLow: 72).delta
        var first = whole, second = whole
        for i in whole.state.registers.indices {
            if i < 4 { second.state.registers[i] = Register() } else { first.state.registers[i] = Register() }
        }
        first.children = []
        var w = ProtoWriter()
        w.message(2) { w in
            w.message(1) { w in
                w.uint64(1, 4)
                w.presentBytes(2, encoded(first))
                w.presentBytes(2, encoded(second))
            }
            w.uint64(2, 4)
        }
        guard case .success(.batch(let batch)) = readFrame(w.bytes), batch.records.count == 1,
              case .refused(_, let id, let refusal) = batch.records[0].content else {
            Issue.record("read a record sent in two parts"); return
        }
        #expect(refusal.reason == .malformed && id == whole.id && batch.throughSequence == 4)
    }

    /// Unknown groups nested inside a record: read alike as deep as the reader's nesting
    /// limit (32, below swift-protobuf's 100: a record refused for it is refused alone),
    /// refused alike past swift-protobuf's.
    @Test func deepGroups() {
        let good = encoded(conflictedTicketRecord(idLow: 8).delta)
        func body(_ depth: Int) -> [UInt8] {
            var r = good
            r += [UInt8](repeating: 0x73, count: depth)   // start group, field 14
            r += [UInt8](repeating: 0x74, count: depth)   // end group, field 14
            return frame([(1, r)], through: 1, last: 1)
        }
        for depth in [1, 2, 10, 31, 32, 100, 101, 150] { #expect(compare(body(depth), "groups nested \(depth) deep")) }
        for depth in [33, 50, 99] {
            guard case .success(.batch(let b)) = readFrame(body(depth)), case .refused(_, _, let refusal) = b.records.first?.content else {
                Issue.record("groups nested \(depth) deep: not refused")
                continue
            }
            #expect(refusal.reason == .malformed && refusal.detail.contains("nested too deeply"), "\(refusal)")
            guard case .batch(_, _, let records)? = referenceMeaning(body(depth)) else { Issue.record("reference"); continue }
            #expect(records.map { if case .delta = $0 { true } else { false } } == [true], "swift-protobuf reads \(depth) levels")
        }
    }

    /// A group closed by the end tag of another field is not protobuf.
    @Test func mismatchedGroupEndIsMalformed() {
        let good = encoded(conflictedTicketRecord(idLow: 8).delta)
        let r = good + [0x73, 0x08, 0x01, 0x7C]   // start group 14, a varint, end group 15
        #expect((try? GDelta(serializedBytes: r)) == nil)
        #expect(referenceRecord(r) == nil)
        let result: Result<RecordDelta, Refusal> = r.withUnsafeBytes { b in
            do throws(Refusal) { return .success(try RecordCoding.decodeDelta(b, kinds: wireKinds)) } catch { return .failure(error) }
        }
        #expect(throws: Refusal.self) { try result.get() }
        compare(frame([(1, r)], through: 1, last: 1), "mismatched group end")
    }
}
