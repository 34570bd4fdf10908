import CaseModel

// The values anti-entropy compares (proto/README.md §13), pure: the store keeps and
// hashes them (CaseStore/Digest), a round with a peer compares them (RepairSession).

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
