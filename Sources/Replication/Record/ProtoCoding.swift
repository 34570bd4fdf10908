#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Protobuf's binary wire format, written and read by hand: register values, child
/// values and stored records are protobuf messages, and the replication core (pure,
/// no dependencies) encodes and decodes them itself. swift-protobuf's generated types
/// stay the definition: tests check these codecs against them.

/// Appends protobuf fields to a byte array. Nested messages are written in place with
/// a one-byte length placeholder widened afterwards if the body is longer than 127
/// bytes, so nothing is sized twice. Singular proto3 fields are omitted at their
/// default value; `optional` and message fields are written whenever present.
public struct ProtoWriter {
    public var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    @inline(__always) public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    @inline(__always) public mutating func tag(_ field: UInt64, _ wireType: UInt64) { varint(field << 3 | wireType) }

    public mutating func uint64(_ field: UInt64, _ v: UInt64) {
        if v != 0 { tag(field, 0); varint(v) }
    }

    public mutating func optionalUInt64(_ field: UInt64, _ v: UInt64?) {
        if let v { tag(field, 0); varint(v) }
    }

    public mutating func int64(_ field: UInt64, _ v: Int64) {
        if v != 0 { tag(field, 0); varint(UInt64(bitPattern: v)) }
    }

    public mutating func optionalInt64(_ field: UInt64, _ v: Int64?) {
        if let v { tag(field, 0); varint(UInt64(bitPattern: v)) }
    }

    public mutating func bool(_ field: UInt64, _ v: Bool) {
        if v { tag(field, 0); varint(1) }
    }

    public mutating func enumValue(_ field: UInt64, _ raw: Int) {
        if raw != 0 { tag(field, 0); varint(UInt64(bitPattern: Int64(raw))) }
    }

    public mutating func fixed64(_ field: UInt64, _ v: UInt64) {
        guard v != 0 else { return }
        tag(field, 1)
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func string(_ field: UInt64, _ s: String) {
        if !s.isEmpty { presentString(field, s) }
    }

    public mutating func optionalString(_ field: UInt64, _ s: String?) {
        if let s { presentString(field, s) }
    }

    private mutating func presentString(_ field: UInt64, _ s: String) {
        var s = s
        s.withUTF8 { u in
            tag(field, 2)
            varint(UInt64(u.count))
            bytes.append(contentsOf: u)
        }
    }

    /// A `bytes` field (omitted when empty, as proto3 does).
    public mutating func bytesField(_ field: UInt64, _ b: [UInt8]) {
        guard !b.isEmpty else { return }
        presentBytes(field, b)
    }

    /// A `bytes` field written even when empty (an embedded message that is present but empty).
    public mutating func presentBytes(_ field: UInt64, _ b: [UInt8]) {
        tag(field, 2)
        varint(UInt64(b.count))
        bytes += b
    }

    public mutating func presentBytes(_ field: UInt64, _ b: UnsafeRawBufferPointer) {
        tag(field, 2)
        varint(UInt64(b.count))
        bytes.append(contentsOf: b)
    }

    /// A message field (always written: present).
    public mutating func message(_ field: UInt64, _ body: (inout ProtoWriter) -> Void) {
        tag(field, 2)
        lengthPrefixed(body)
    }

    /// What `body` writes, preceded by its length as a varint.
    public mutating func lengthPrefixed(_ body: (inout ProtoWriter) -> Void) {
        let at = bytes.count
        bytes.append(0)
        body(&self)
        let length = bytes.count - at - 1
        if length < 0x80 {
            bytes[at] = UInt8(length)
            return
        }
        // A longer prefix: room is made after the reserved byte, without a temporary array.
        var extra = 0
        var rest = UInt64(length) >> 7
        while rest > 0 { extra += 1; rest >>= 7 }
        bytes.insert(contentsOf: repeatElement(0, count: extra), at: at + 1)
        var v = UInt64(length)
        var i = at
        while v >= 0x80 {
            bytes[i] = UInt8(truncatingIfNeeded: v) | 0x80
            v >>= 7
            i += 1
        }
        bytes[i] = UInt8(v)
    }
}

/// Why bytes are not a valid protobuf message.
public enum ProtoError: Error, Hashable, Sendable, CustomStringConvertible {
    case truncated
    case malformed
    case invalidUTF8
    case tooDeep

    public var description: String {
        switch self {
        case .truncated: return "truncated message"
        case .malformed: return "malformed protobuf"
        case .invalidUTF8: return "string is not valid UTF-8"
        case .tooDeep: return "messages nested too deeply"
        }
    }
}

/// Reads protobuf fields from bytes in place. Follows protobuf's rules where a
/// decoder has a choice: a field with an unexpected wire type is skipped as unknown,
/// strings must be valid UTF-8, groups are skipped, nesting is limited.
public struct ProtoReader {
    public let base: UnsafeRawBufferPointer
    public private(set) var position: Int
    public let end: Int
    private var depth: Int
    /// The number of the last field read, for a group's end tag to match.
    private var lastField = 0

    public init(_ bytes: UnsafeRawBufferPointer, depth: Int = 32) {
        base = bytes
        position = 0
        end = bytes.count
        self.depth = depth
    }

    private init(base: UnsafeRawBufferPointer, range: Range<Int>, depth: Int) {
        self.base = base
        position = range.lowerBound
        end = range.upperBound
        self.depth = depth
    }

    public var atEnd: Bool { position >= end }

    /// The next field's number and wire type, or nil at the end of the message.
    public mutating func field() throws(ProtoError) -> (number: Int, wireType: UInt8)? {
        guard position < end else { return nil }
        let tag = try varint()
        guard tag <= UInt64(UInt32.max) else { throw .malformed }
        let wireType = UInt8(tag & 7)
        let number = Int(tag >> 3)
        guard wireType <= 5, wireType != 4, number != 0 else { throw .malformed }
        lastField = number
        return (number, wireType)
    }

    @inline(__always) public mutating func varint() throws(ProtoError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw .truncated }
            guard shift <= 63 else { throw .malformed }
            let b = base[position]
            position += 1
            value |= UInt64(b & 0x7F) &<< shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
    }

    public mutating func int64() throws(ProtoError) -> Int64 { Int64(bitPattern: try varint()) }
    public mutating func enumRaw() throws(ProtoError) -> Int { Int(Int32(truncatingIfNeeded: try varint())) }
    public mutating func bool() throws(ProtoError) -> Bool { try varint() != 0 }

    public mutating func fixed64() throws(ProtoError) -> UInt64 {
        guard end - position >= 8 else { throw .truncated }
        let v = base.loadUnaligned(fromByteOffset: position, as: UInt64.self)
        position += 8
        return UInt64(littleEndian: v)
    }

    /// The range of a length-delimited field's body.
    public mutating func body() throws(ProtoError) -> Range<Int> {
        let length = try varint()
        guard length <= UInt64(end - position) else { throw .truncated }
        let r = position..<(position + Int(length))
        position = r.upperBound
        return r
    }

    /// A string field, refused unless it is valid UTF-8. Decoding with repair and then
    /// comparing the bytes is several times faster than the standard library's
    /// validating initialiser (perf, replication catch-up): a repaired string differs.
    /// `verify: false` is for bytes this node checked before it stored them.
    public mutating func string(verify: Bool = true) throws(ProtoError) -> String {
        let bytes = UnsafeRawBufferPointer(rebasing: base[try body()])
        var s = String(decoding: bytes, as: UTF8.self)
        guard verify else { return s }
        let same = s.withUTF8 { u in
            u.count == bytes.count && (u.isEmpty || memcmp(u.baseAddress!, bytes.baseAddress!, u.count) == 0)
        }
        guard same else { throw .invalidUTF8 }
        return s
    }

    public mutating func bytes() throws(ProtoError) -> [UInt8] {
        Array(UnsafeRawBufferPointer(rebasing: base[try body()]))
    }

    /// A reader of a nested message's body.
    public mutating func nested() throws(ProtoError) -> ProtoReader {
        let r = try body()
        guard depth > 0 else { throw .tooDeep }
        return ProtoReader(base: base, range: r, depth: depth - 1)
    }

    /// Skips a field this reader does not take (unknown, or with an unexpected wire type).
    public mutating func skip(_ wireType: UInt8) throws(ProtoError) {
        switch wireType {
        case 0: _ = try varint()
        case 1:
            guard end - position >= 8 else { throw .truncated }
            position += 8
        case 2: _ = try body()
        case 5:
            guard end - position >= 4 else { throw .truncated }
            position += 4
        case 3:
            // A group: skip to its end-group tag, which must name the same field, nested
            // groups included.
            var open = [UInt64(lastField)]
            while let number = open.last {
                guard position < end else { throw .truncated }
                let tag = try varint()
                let t = UInt8(tag & 7)
                guard tag >> 3 != 0, tag <= UInt64(UInt32.max), t <= 5 else { throw .malformed }
                if t == 3 {
                    open.append(tag >> 3)
                    guard open.count <= depth else { throw .tooDeep }
                } else if t == 4 {
                    guard tag >> 3 == number else { throw .malformed }
                    open.removeLast()
                } else {
                    try skip(t)
                }
            }
        default: throw .malformed
        }
    }
}

extension Array where Element == UInt8 {
    /// Reads these bytes as one protobuf message with `body`.
    @inline(__always)
    public func readProto<T>(_ body: (inout ProtoReader) throws(ProtoError) -> T) throws(ProtoError) -> T {
        let result: Result<T, ProtoError> = withUnsafeBytes { b in
            do throws(ProtoError) {
                var r = ProtoReader(b)
                return .success(try body(&r))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}
