import CaseModel
import Crypto
import Replication

extension DigestSum {
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

extension UInt32 {
    var bigEndianBytes4: [UInt8] { [UInt8(self >> 24), UInt8(self >> 16 & 0xff), UInt8(self >> 8 & 0xff), UInt8(self & 0xff)] }
}
