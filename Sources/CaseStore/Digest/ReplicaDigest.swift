import CaseModel
import Crypto
import Replication

/// 256 bits added lane by lane (four UInt64, wrapping): the digest of a set of records is
/// the sum of their leaves, so a record that changes costs one subtraction and one
/// addition, whatever the size of the store (the incremental hash trees of Riak's
/// active anti-entropy, rather than Cassandra's trees rebuilt by reading everything).
/// Sums detect accidental divergence, not an adversary who chooses leaves to collide;
/// what a peer sends is checked and admitted record by record anyway.
public struct DigestSum: Hashable, Sendable, CustomStringConvertible {
    public var a: UInt64, b: UInt64, c: UInt64, d: UInt64

    public static let zero = DigestSum(a: 0, b: 0, c: 0, d: 0)

    public init(a: UInt64, b: UInt64, c: UInt64, d: UInt64) {
        self.a = a; self.b = b; self.c = c; self.d = d
    }

    /// 32 bytes (a SHA-256 or a stored sum), big-endian lanes; nil for another length.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        var lanes = [UInt64](repeating: 0, count: 4)
        for (i, byte) in bytes.enumerated() { lanes[i / 8] = lanes[i / 8] << 8 | UInt64(byte) }
        self.init(a: lanes[0], b: lanes[1], c: lanes[2], d: lanes[3])
    }

    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for lane in [a, b, c, d] { for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: lane >> UInt64(shift))) } }
        return out
    }

    public var isZero: Bool { self == .zero }
    public var description: String { bytes.hex }

    public static func + (x: DigestSum, y: DigestSum) -> DigestSum {
        DigestSum(a: x.a &+ y.a, b: x.b &+ y.b, c: x.c &+ y.c, d: x.d &+ y.d)
    }

    public static func - (x: DigestSum, y: DigestSum) -> DigestSum {
        DigestSum(a: x.a &- y.a, b: x.b &- y.b, c: x.c &- y.c, d: x.d &- y.d)
    }

    public static func += (x: inout DigestSum, y: DigestSum) { x = x + y }
    public static func -= (x: inout DigestSum, y: DigestSum) { x = x - y }

    static func sha256(_ bytes: [UInt8]) -> DigestSum {
        DigestSum(bytes: Array(SHA256.hash(data: bytes)))!
    }
}

/// What a record contributes to a scope's digest: a hash of its registers in the
/// scope, plus the sum of its children's hashes (children never change, so a new one
/// is added without reading the others). `filter` is the register set the hash was
/// taken over: when a transfer widens or narrows a partner's scope, the record is
/// hashed again from scratch.
public struct DigestLeaf: Hashable, Sendable {
    public var registers: DigestSum
    public var children: DigestSum
    public var childCount: UInt32
    public var filter: UInt64

    public init(registers: DigestSum, children: DigestSum, childCount: UInt32, filter: UInt64) {
        self.registers = registers
        self.children = children
        self.childCount = childCount
        self.filter = filter
    }

    /// The leaf's value in its bucket's sum and in a comparison with a peer.
    public var value: DigestSum { registers + children }

    static let encodedCount = 32 + 32 + 4 + 8

    func encode() -> [UInt8] {
        registers.bytes + children.bytes + childCount.bigEndianBytes4 + filter.bigEndianBytes
    }

    static func decode(_ b: UnsafeRawBufferPointer) throws(CorruptRecord) -> DigestLeaf {
        guard b.count == encodedCount else { throw CorruptRecord(what: "digest leaf of \(b.count) bytes") }
        return DigestLeaf(registers: DigestSum(bytes: b[0..<32])!, children: DigestSum(bytes: b[32..<64])!,
                          childCount: UInt32(b[64]) << 24 | UInt32(b[65]) << 16 | UInt32(b[66]) << 8 | UInt32(b[67]),
                          filter: UInt64(bigEndianBytes: UnsafeRawBufferPointer(rebasing: b[68..<76]))!)
    }
}

/// How records and their parts are hashed into digests. The same on every node of
/// every version that speaks protocol v2: a digest compares replicas, so it hashes
/// what replicas agree on (the wire form of registers and children), never what one
/// store keeps for itself (feed positions, edit counters).
public enum DigestHashing {
    /// A record's bucket among 65,536: the first two bytes of a hash of its kind and
    /// id (ids begin with their time; hashing spreads a day's records over all buckets).
    public static func position(_ kind: RecordKindID, _ id: RecordID) -> UInt16 {
        let h = SHA256.hash(data: [kind.rawValue] + id.bytes)
        var it = h.makeIterator()
        return UInt16(it.next()!) << 8 | UInt16(it.next()!)
    }

    /// The registers of `state` in `filter` (indexes), in register order, with the
    /// record's kind and id so that equal contents of two records differ.
    public static func registers(_ state: RecordState, _ schema: RecordSchema, filter: RegisterSet) -> DigestSum {
        var w = ProtoWriter(capacity: 512)
        w.bytes.append(0x52)  // "R"
        w.bytes.append(state.kind.rawValue)
        w.bytes += state.id.bytes
        for (i, r) in state.registers.enumerated() where filter.contains(i) && !r.isEmpty {
            w.message(3) { w in RecordCoding.registerFields(&w, number: schema.registers[i].number, r) }
        }
        return DigestSum.sha256(w.bytes)
    }

    public static func child(_ c: Child, kind: RecordKindID, record: RecordID) -> DigestSum {
        var w = ProtoWriter(capacity: 64 + c.value.count)
        w.bytes.append(0x43)  // "C"
        w.bytes.append(kind.rawValue)
        w.bytes += record.bytes
        w.bytes.append(c.collection)
        w.bytes += c.id.bytes
        RecordCoding.childBody(&w, c)
        return DigestSum.sha256(w.bytes)
    }

    /// A whole leaf from a record's registers and children (those the scope admits).
    public static func leaf(_ state: RecordState?, _ schema: RecordSchema, kind: RecordKindID, id: RecordID,
                            filter: RegisterSet, children: [Child]) -> DigestLeaf {
        let regs = state.map { registers($0, schema, filter: filter) }
            ?? registers(RecordState(kind: kind, id: id, registerCount: schema.registers.count), schema, filter: filter)
        var sum = DigestSum.zero
        for c in children { sum += child(c, kind: kind, record: id) }
        return DigestLeaf(registers: regs, children: sum, childCount: UInt32(children.count), filter: filter.bits)
    }
}

/// One entry of a digest level: a range of record positions, the sum of its records'
/// leaves, and how many records it holds.
public struct DigestNode: Hashable, Sendable {
    /// Level 1: the positions' first byte; level 2: the whole position.
    public let position: UInt16
    public let sum: DigestSum
    public let records: UInt64

    public init(position: UInt16, sum: DigestSum, records: UInt64) {
        self.position = position
        self.sum = sum
        self.records = records
    }
}

/// A record's leaf as a digest lists it.
public struct DigestEntry: Hashable, Sendable {
    public let kind: RecordKindID
    public let id: RecordID
    public let value: DigestSum

    public init(kind: RecordKindID, id: RecordID, value: DigestSum) {
        self.kind = kind
        self.id = id
        self.value = value
    }
}

/// A scope's digest at its top: the 256 first-level ranges (those holding records)
/// and a root over them.
public struct DigestSummary: Hashable, Sendable {
    public let scope: String
    public let records: UInt64
    public let ranges: [DigestNode]

    public init(scope: String, records: UInt64, ranges: [DigestNode]) {
        self.scope = scope
        self.records = records
        self.ranges = ranges
    }

    /// SHA-256 over every non-empty range's position, sum and count: equal roots, equal
    /// record sets (up to the sums' strength); an empty scope's root is that of nothing.
    public var root: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ranges.count * 42)
        for r in ranges {
            bytes += [UInt8(r.position >> 8), UInt8(r.position & 0xff)]
            bytes += r.sum.bytes
            bytes += r.records.bigEndianBytes
        }
        return Array(SHA256.hash(data: bytes))
    }
}

/// Comparing two digests level by level (pure): which ranges differ, and which
/// records to pull.
public enum DigestComparison {
    /// Positions whose sums or counts differ, or that one side lacks.
    public static func differing(_ mine: [DigestNode], _ theirs: [DigestNode]) -> [UInt16] {
        var a: [UInt16: DigestNode] = [:]
        for n in mine { a[n.position] = n }
        var out = Set<UInt16>()
        for n in theirs {
            if a.removeValue(forKey: n.position) != n { out.insert(n.position) }
        }
        out.formUnion(a.keys)
        return out.sorted()
    }

    /// The records a peer holds differently or that this side lacks: what pulling
    /// repairs. Records only this side holds are the peer's to pull.
    public static func toPull(mine: [DigestEntry], theirs: [DigestEntry]) -> [DigestEntry] {
        var a: [RecordRef: DigestSum] = [:]
        for e in mine { a[RecordRef(kind: e.kind, id: e.id)] = e.value }
        return theirs.filter { a[RecordRef(kind: $0.kind, id: $0.id)] != $0.value }
    }

    /// Records this side holds that the peer lacks or holds differently.
    public static func toOffer(mine: [DigestEntry], theirs: [DigestEntry]) -> [DigestEntry] {
        toPull(mine: theirs, theirs: mine)
    }
}

/// A record named by kind and id.
public struct RecordRef: Hashable, Sendable, Comparable {
    public let kind: RecordKindID
    public let id: RecordID
    public init(kind: RecordKindID, id: RecordID) {
        self.kind = kind
        self.id = id
    }
    public static func < (x: Self, y: Self) -> Bool { x.kind != y.kind ? x.kind < y.kind : x.id < y.id }
}

extension UInt32 {
    var bigEndianBytes4: [UInt8] { [UInt8(self >> 24), UInt8(self >> 16 & 0xff), UInt8(self >> 8 & 0xff), UInt8(self & 0xff)] }
}

extension Collection where Element == UInt8 {
    /// Lower-case hexadecimal.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for b in self { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xf)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
