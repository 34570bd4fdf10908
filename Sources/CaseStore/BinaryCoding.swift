/// The byte format records are stored in. Little work per field: varints and
/// length-prefixed UTF-8, read in place from the LMDB map.
struct BinaryWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    @inline(__always) mutating func u8(_ v: UInt8) { bytes.append(v) }

    @inline(__always) mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Zig-zag encoded signed integer.
    @inline(__always) mutating func int(_ v: Int64) {
        varint(UInt64(bitPattern: (v << 1) ^ (v >> 63)))
    }

    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { buf in
            varint(UInt64(buf.count))
            bytes.append(contentsOf: buf)
        }
    }

    mutating func optionalString(_ s: String?) {
        if let s { u8(1); string(s) } else { u8(0) }
    }

    mutating func optionalInt(_ v: Int64?) {
        if let v { u8(1); int(v) } else { u8(0) }
    }

    mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }

    mutating func u64be(_ v: UInt64) {
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (56 - 8 * i))) }
    }
}

public struct CorruptRecord: Error, CustomStringConvertible, Sendable {
    public let what: String
    public var description: String { "corrupt record: \(what)" }
}

struct BinaryReader {
    let buf: UnsafeRawBufferPointer
    var pos = 0

    init(_ buf: UnsafeRawBufferPointer) { self.buf = buf }

    var atEnd: Bool { pos >= buf.count }

    @inline(__always) mutating func u8() throws(CorruptRecord) -> UInt8 {
        guard pos < buf.count else { throw CorruptRecord(what: "truncated") }
        defer { pos += 1 }
        return buf[pos]
    }

    @inline(__always) mutating func varint() throws(CorruptRecord) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
            if shift > 63 { throw CorruptRecord(what: "varint too long") }
        }
    }

    @inline(__always) mutating func int() throws(CorruptRecord) -> Int64 {
        let u = try varint()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }

    mutating func string() throws(CorruptRecord) -> String {
        let n = Int(try varint())
        guard n <= buf.count - pos else { throw CorruptRecord(what: "string past end") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: buf[pos..<pos + n]), as: UTF8.self)
        pos += n
        return s
    }

    mutating func optionalString() throws(CorruptRecord) -> String? {
        try u8() == 0 ? nil : try string()
    }

    mutating func optionalInt() throws(CorruptRecord) -> Int64? {
        try u8() == 0 ? nil : try int()
    }

    mutating func raw(_ n: Int) throws(CorruptRecord) -> UnsafeRawBufferPointer {
        guard n <= buf.count - pos else { throw CorruptRecord(what: "bytes past end") }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: buf[pos..<pos + n])
    }

    mutating func u64be() throws(CorruptRecord) -> UInt64 {
        let r = try raw(8)
        var v: UInt64 = 0
        for b in r { v = v << 8 | UInt64(b) }
        return v
    }
}

extension UInt64 {
    /// Big-endian bytes: sorts in LMDB's byte order as the number sorts.
    var bigEndianBytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: self >> (56 - 8 * $0)) }
    }

    init?(bigEndianBytes b: UnsafeRawBufferPointer) {
        guard b.count >= 8 else { return nil }
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(b[i]) }
        self = v
    }
}

import LMDB

extension TransactionProtocol {
    /// A big-endian u64 value, nil when the key is absent.
    func u64(_ db: Database, _ key: [UInt8]) throws -> UInt64? {
        try withValue(db, key: key) { UInt64(bigEndianBytes: $0) } ?? nil
    }
}
