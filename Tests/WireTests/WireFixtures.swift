import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
@testable import Wire

// What the suites of this target share: the kinds a puller reads, the generated
// messages of our model values (built field by field, not through our encoder), and
// an independent reading of a generated RecordDelta into the model.

let wireKinds = RecordKinds([TicketRecord.schema, Memo.schema])
let reading = RecordReading(kinds: wireKinds, check: CheckContext(directory: testDirectory))

typealias GDelta = Ekc_Replication_V2_RecordDelta

func generated(_ d: Dot) -> Ekc_Replication_V2_Dot {
    var g = Ekc_Replication_V2_Dot()
    g.node = d.node.value
    g.stamp = d.stamp.raw
    return g
}

func generated(_ v: VersionVector) -> Ekc_Replication_V2_VersionVector {
    var g = Ekc_Replication_V2_VersionVector()
    g.entries = v.sorted.map { e in
        var x = Ekc_Replication_V2_VersionVector.Entry()
        x.node = e.node.value
        x.stamp = e.stamp.raw
        return x
    }
    return g
}

/// The generated message of a delta, built field by field.
func generated(_ d: RecordDelta) -> GDelta {
    let schema = wireKinds[d.kind]!
    var m = GDelta()
    m.kind = Ekc_Replication_V2_RecordKind(rawValue: Int(d.kind.rawValue)) ?? .UNRECOGNIZED(Int(d.kind.rawValue))
    m.id = Data(d.id.bytes)
    for (i, r) in d.state.registers.enumerated() where !r.isEmpty {
        var g = Ekc_Replication_V2_Register()
        g.number = UInt32(schema.registers[i].number)
        g.versions = r.versions.map { v in
            var x = Ekc_Replication_V2_Version()
            x.dot = generated(v.dot)
            x.value = Data(v.value)
            return x
        }
        g.seen = generated(r.seen)
        m.registers.append(g)
    }
    m.children = d.children.map { c in
        var g = Ekc_Replication_V2_Child()
        g.collection = UInt32(c.collection)
        g.id = Data(c.id.bytes)
        g.dot = generated(c.dot)
        g.value = Data(c.value)
        return g
    }
    return m
}

/// A generated RecordDelta read into the model by rules written here from the proto's
/// comments, independently of `RecordCoding`: the reference a reader is compared to.
/// Values are not looked at (the kind's check does that).
func referenceDelta(_ m: GDelta) -> Result<RecordDelta, Refusal> {
    func dot(_ d: Ekc_Replication_V2_Dot) throws(Refusal) -> Dot {
        guard let node = NodeID(d.node) else { throw Refusal(.invalidValue, "node") }
        guard d.stamp != 0 else { throw Refusal(.invalidValue, "stamp") }
        return Dot(node: node, stamp: Stamp(raw: d.stamp))
    }
    do throws(Refusal) {
        guard m.kind.rawValue >= 1, m.kind.rawValue <= 255, let schema = wireKinds.schema(number: UInt64(m.kind.rawValue)) else {
            throw Refusal(.unknownKind, "kind")
        }
        guard let id = RecordID(bytes: [UInt8](m.id)) else { throw Refusal(.invalidValue, "id") }
        var state = schema.emptyState(id)
        guard m.registers.count <= 63 else { throw Refusal(.tooLarge, "registers") }
        for g in m.registers {
            guard let i = schema.registerIndex(number: UInt64(g.number)) else { throw Refusal(.unknownKind, "register") }
            guard state.registers[i].isEmpty else { throw Refusal(.invalidValue, "twice") }
            guard g.versions.count <= RecordSchema.maxVersions else { throw Refusal(.tooLarge, "versions") }
            var versions: [Replication.Version] = []
            for v in g.versions {
                guard v.hasDot else { throw Refusal(.invalidValue, "dot") }
                versions.append(Replication.Version(dot: try dot(v.dot), value: [UInt8](v.value)))
            }
            versions.sort { $0.dot < $1.dot }
            guard zip(versions, versions.dropFirst()).allSatisfy({ $0.dot != $1.dot }) else { throw Refusal(.invalidValue, "dot twice") }
            guard g.seen.entries.count <= RecordSchema.maxContextEntries else { throw Refusal(.tooLarge, "seen") }
            var entries: [NodeID: Stamp] = [:]
            for e in g.seen.entries {
                guard let node = NodeID(e.node), e.stamp != 0 else { throw Refusal(.invalidValue, "seen") }
                guard entries[node] == nil else { throw Refusal(.invalidValue, "seen twice") }
                entries[node] = Stamp(raw: e.stamp)
            }
            let register = Register(sortedVersions: versions, seen: VersionVector(entries))
            guard !register.isEmpty else { throw Refusal(.invalidValue, "empty") }
            state.registers[i] = register
        }
        var children: [Child] = []
        for c in m.children {
            guard c.collection >= 1, c.collection <= 255 else { throw Refusal(.unknownKind, "collection") }
            guard let cid = RecordID(bytes: [UInt8](c.id)) else { throw Refusal(.invalidValue, "child id") }
            guard c.hasDot else { throw Refusal(.invalidValue, "child dot") }
            children.append(Child(collection: UInt8(c.collection), id: cid, dot: try dot(c.dot), value: [UInt8](c.value)))
        }
        children.sort { $0.key < $1.key }
        return .success(RecordDelta(state: state, children: children))
    } catch {
        return .failure(error)
    }
}

/// What a puller makes of record bytes, by the reference: swift-protobuf parses them,
/// `referenceDelta` reads the message, the kind's check judges it. Nil: refused.
func referenceRecord(_ bytes: [UInt8]) -> RecordDelta? {
    guard let m = try? GDelta(serializedBytes: bytes), case .success(let d) = referenceDelta(m),
          let schema = wireKinds[d.kind], (try? schema.check(d, context: reading.check)) != nil else { return nil }
    return d
}

/// Random ticket deltas (parts of records of random histories, conflicts included) and
/// a memo or two, with their encodings.
func sampleDeltas(seed: UInt64, count: Int) -> [RecordDelta] {
    var rng = SeededRandom(seed: seed)
    let pool = ticketStatePool(seed: seed, steps: max(60, count)).dropFirst() + [conflictedTicketRecord(idLow: seed)]
    var out = (0..<count).map { _ in randomDelta(of: pool.randomElement(using: &rng)!, &rng) }
    var memo = Record(state: Memo.schema.emptyState(RecordID(millis: UInt64(testNow), randomHigh: 200, randomLow: seed)))
    memo.state.registers[0].write(Memo.encodeTitle(author: irkutskNodes[0], text: "Памятка \(seed)"),
                                  dot: Dot(node: irkutskNodes[0], stamp: Stamp(millis: testNow, logical: 1)))
    memo.state.registers[1].write(Memo.encodeStatus("open"), dot: Dot(node: irkutskNodes[1], stamp: Stamp(millis: testNow, logical: 2)))
    let comment = Child(collection: Memo.comments, id: RecordID(millis: UInt64(testNow), randomHigh: 201, randomLow: seed),
                        dot: Dot(node: irkutskNodes[0], stamp: Stamp(millis: testNow, logical: 3)), value: Memo.encodeComment("да"))
    memo.children[comment.key] = comment
    if count > 3 { out[count / 2] = memo.delta }
    return out
}

func encoded(_ d: RecordDelta) -> [UInt8] { RecordCoding.encodeDelta(d, schema: wireKinds[d.kind]!) }

/// Random damage to bytes: a bit flipped, a byte replaced, the tail cut, bytes inserted,
/// a range repeated, an unknown field put in front.
func mutate(_ b: [UInt8], _ rng: inout SeededRandom) -> [UInt8] {
    var b = b
    guard !b.isEmpty else { return [UInt8.random(in: 0...255, using: &rng)] }
    let i = Int.random(in: 0..<b.count, using: &rng)
    switch Int.random(in: 0..<6, using: &rng) {
    case 0: b[i] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
    case 1: b[i] = UInt8.random(in: 0...255, using: &rng)
    case 2: b.removeSubrange(i...)
    case 3: b.insert(contentsOf: (0..<Int.random(in: 1...4, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: i)
    case 4:
        let j = Int.random(in: i..<b.count, using: &rng)
        b.insert(contentsOf: b[i...j], at: j + 1)
    default:
        let field = UInt64.random(in: 15...40, using: &rng)
        let type = [0, 1, 2, 5].randomElement(using: &rng)!
        var w = ProtoWriter()
        w.tag(field, UInt64(type))
        switch type {
        case 0: w.varint(UInt64.random(in: 0...UInt64.max, using: &rng))
        case 1: w.bytes += [UInt8](repeating: 7, count: 8)
        case 2: w.varint(3); w.bytes += [1, 2, 3]
        default: w.bytes += [UInt8](repeating: 9, count: 4)
        }
        b.insert(contentsOf: w.bytes, at: 0)
    }
    return b
}

/// The stream of `frames` (length-delimited, as swift-protobuf writes them).
func stream(_ frames: [WireFrame]) throws -> [UInt8] {
    var out: [UInt8] = []
    for f in frames { try WireCoding.appendDelimited(f, to: &out) }
    return out
}

/// A generated batch frame of `deltas` at sequences `sequences`.
func batchFrame(_ changes: [(UInt64, GDelta)], through: UInt64, last: UInt64) -> WireFrame {
    var b = Ekc_Replication_V2_ChangeBatch()
    b.changes = changes.map { seq, d in
        var c = Ekc_Replication_V2_Change()
        c.sequence = seq
        c.record = d
        return c
    }
    b.throughSequence = through
    b.sourceLastSequence = last
    var f = WireFrame()
    f.batch = b
    return f
}

/// A response stream's frames: a header, batches of random deltas (some empty),
/// heartbeats, and a closing error.
func sampleFrames(seed: UInt64) -> [WireFrame] {
    let deltas = sampleDeltas(seed: seed, count: 40)
    var frames: [WireFrame] = [.header(node: irkutskNodes[0], storeID: Array(repeating: 0xAB, count: 16), resumeAfter: 0,
                                       checkpointReset: false, lastSequence: UInt64(deltas.count))]
    var rng = SeededRandom(seed: seed)
    var seq: UInt64 = 0
    var i = 0
    while i < deltas.count {
        let n = Int.random(in: 0...7, using: &rng)
        var changes: [(UInt64, GDelta)] = []
        for _ in 0..<n where i < deltas.count {
            seq += 1
            changes.append((seq, generated(deltas[i])))
            i += 1
        }
        if n == 0 { seq += 1 }   // a batch with nothing in scope still advances
        frames.append(batchFrame(changes, through: seq, last: UInt64(deltas.count)))
        if Int.random(in: 0..<4, using: &rng) == 0 {
            frames.append(.heartbeat(sourceLastSequence: seq, sourceStamp: Stamp(millis: testNow, logical: 9)))
        }
    }
    frames.append(.error(.shuttingDown, "node is stopping"))
    return frames
}

/// What a frame means to a puller, comparable: the frame, with each of a batch's
/// records either the delta it holds or refused.
enum FrameMeaning: Equatable {
    case header(WireStreamHeader)
    case heartbeat(WireHeartbeat)
    case error(WireStreamError)
    case unknown
    case batch(through: UInt64, last: UInt64, records: [RecordMeaning])
}

enum RecordMeaning: Equatable {
    case delta(UInt64, RecordDelta)
    case refused(UInt64)
}

/// The meaning of what our reader returned.
func meaning(_ f: IncomingFrame) -> FrameMeaning {
    switch f {
    case .header(let h): return .header(h)
    case .heartbeat(let h): return .heartbeat(h)
    case .error(let e): return .error(e)
    case .unknown: return .unknown
    case .batch(let b):
        return .batch(through: b.throughSequence, last: b.sourceLastSequence, records: b.records.map { r in
            switch r.content {
            case .delta(let d): return .delta(r.sequence, d)
            case .refused: return .refused(r.sequence)
            }
        })
    }
}

/// The meaning of a frame swift-protobuf parsed: each record re-serialised by
/// swift-protobuf and read by the reference.
func meaning(_ f: WireFrame) -> FrameMeaning {
    switch f.kind {
    case .header(let h)?: return .header(h)
    case .heartbeat(let h)?: return .heartbeat(h)
    case .error(let e)?: return .error(e)
    case nil: return .unknown
    case .batch(let b)?:
        return .batch(through: b.throughSequence, last: b.sourceLastSequence, records: b.changes.map { c in
            guard c.hasRecord, let bytes = try? c.record.serializedBytes() as [UInt8], let d = referenceRecord(bytes) else {
                return .refused(c.sequence)
            }
            return .delta(c.sequence, d)
        })
    }
}

/// Our reader over one frame body.
func readFrame(_ body: [UInt8]) -> Result<IncomingFrame, WireError> {
    body.withUnsafeBytes { b in
        do throws(WireError) { return .success(try FrameReader.frame(b, reading: reading)) } catch { return .failure(error) }
    }
}
