import Foundation
import SwiftProtobuf

// Length-delimited framing (proto/README.md, "Framing"): each message is preceded by
// its length in bytes as a protobuf base-128 varint, the framing of protobuf's
// `writeDelimitedTo` / `parseDelimitedFrom`. No NIO here: bytes in, bytes out, so
// the node's HTTP/2 handlers can feed ByteBuffer contents in as they arrive.

public enum WireCoding {
    /// The protobuf bytes of a message.
    public static func serialize<M: SwiftProtobuf.Message>(_ message: M) throws(WireError) -> [UInt8] {
        do { return try message.serializedBytes() } catch {
            throw .encodingFailed(String(describing: error))
        }
    }

    /// Parses a whole (not delimited) message, e.g. a PullRequest body.
    public static func parse<M: SwiftProtobuf.Message>(_ type: M.Type = M.self, from bytes: ArraySlice<UInt8>)
        throws(WireError) -> M
    {
        do { return try M(serializedBytes: ByteView(bytes)) } catch {
            throw .malformedMessage(String(describing: error))
        }
    }

    public static func parse<M: SwiftProtobuf.Message>(_ type: M.Type = M.self, from bytes: [UInt8]) throws(WireError) -> M {
        try parse(type, from: bytes[...])
    }

    /// Appends `value` as a base-128 varint.
    public static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    /// Appends one length-delimited message to `out`.
    public static func appendDelimited<M: SwiftProtobuf.Message>(_ message: M, to out: inout [UInt8]) throws(WireError) {
        let body = try serialize(message)
        appendVarint(UInt64(body.count), to: &out)
        out.append(contentsOf: body)
    }

    /// One length-delimited message.
    public static func delimited<M: SwiftProtobuf.Message>(_ message: M) throws(WireError) -> [UInt8] {
        var out: [UInt8] = []
        try appendDelimited(message, to: &out)
        return out
    }

    /// Every message of a complete delimited stream (a captured response body, say).
    public static func decodeAll<M: SwiftProtobuf.Message>(
        _ type: M.Type = M.self, from bytes: [UInt8], maxFrameBytes: Int = ReplicationProtocol.maxFrameBytes
    ) throws(WireError) -> [M] {
        var decoder = DelimitedDecoder<M>(maxFrameBytes: maxFrameBytes)
        decoder.append(bytes)
        var out: [M] = []
        while let m = try decoder.next() { out.append(m) }
        try decoder.finish()
        return out
    }
}

/// A streaming reader of length-delimited messages: feed it bytes in chunks of any
/// size and boundary, take whole messages out. It holds at most the bytes of one
/// incomplete frame beyond what the caller has not yet taken out, and refuses a frame
/// whose announced length exceeds `maxFrameBytes` as soon as the length prefix is
/// read, before buffering its body. After any error the decoder stays failed: the
/// stream it was reading cannot be resynchronised and must be dropped.
public struct DelimitedDecoder<M: Sendable>: Sendable {
    public let maxFrameBytes: Int
    private var buffer: [UInt8] = []
    private var start = 0
    /// The prefix and body lengths of the frame being read, once its prefix is complete.
    private var pending: (prefix: Int, body: Int)?
    private var failure: WireError?
    /// Reads one frame's body.
    private let parse: @Sendable (UnsafeRawBufferPointer) throws(WireError) -> M

    public init(maxFrameBytes: Int, parse: @escaping @Sendable (UnsafeRawBufferPointer) throws(WireError) -> M) {
        precondition(maxFrameBytes >= 0)
        self.maxFrameBytes = maxFrameBytes
        self.parse = parse
    }

    /// Bytes received and not yet returned as messages.
    public var bufferedBytes: Int { buffer.count - start }

    public mutating func append<C: Collection<UInt8>>(_ bytes: C) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// The next whole message, or nil when more bytes are needed.
    public mutating func next() throws(WireError) -> M? {
        if let failure { throw failure }
        do throws(WireError) {
            return try readNext()
        } catch {
            failure = error
            throw error
        }
    }

    /// Call at the end of the input: throws if it stopped inside a frame.
    public func finish() throws(WireError) {
        if let failure { throw failure }
        if bufferedBytes > 0 { throw .truncatedFrame(bufferedBytes: bufferedBytes) }
    }

    private mutating func readNext() throws(WireError) -> M? {
        if pending == nil {
            guard let (length, prefixBytes) = try readVarint() else { return nil }
            guard length <= UInt64(maxFrameBytes) else { throw .frameTooLarge(length: length, limit: maxFrameBytes) }
            pending = (prefixBytes, Int(length))
        }
        let (prefix, length) = pending!
        guard buffer.count - start >= prefix + length else { return nil }
        let body = buffer[(start + prefix)..<(start + prefix + length)]
        let message: M
        do {
            message = try body.withUnsafeBytes { b throws(WireError) in try parse(b) }
        } catch let e as WireError {
            throw e
        } catch {
            throw .malformedMessage(String(describing: error))
        }
        start += prefix + length
        pending = nil
        return message
    }

    /// The varint at `start`, and its size; nil if incomplete.
    private func readVarint() throws(WireError) -> (UInt64, Int)? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var i = start
        while i < buffer.count {
            let b = buffer[i]
            let n = i - start
            // The tenth byte may only carry the 64th bit.
            if n == 9 && b > 1 { throw .malformedLengthPrefix }
            value |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return (value, n + 1) }
            // A prefix already past the limit need not be read to its end.
            if value > UInt64(maxFrameBytes) { throw .frameTooLarge(length: value, limit: maxFrameBytes) }
            shift += 7
            i += 1
        }
        return nil
    }

    private mutating func compact() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
        } else if start >= 1 << 16 && start * 2 >= buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
    }
}

extension DelimitedDecoder where M: SwiftProtobuf.Message {
    /// Messages read by swift-protobuf.
    public init(maxFrameBytes: Int = ReplicationProtocol.maxFrameBytes) {
        self.init(maxFrameBytes: maxFrameBytes) { b throws(WireError) in
            do { return try M(serializedBytes: Data(b)) } catch { throw .malformedMessage(String(describing: error)) }
        }
    }
}

/// The puller's reader of a response body: frames, with batches read record by record.
public typealias FrameDecoder = DelimitedDecoder<IncomingFrame>

extension DelimitedDecoder where M == IncomingFrame {
    public init(reading: RecordReading) {
        self.init(maxFrameBytes: ReplicationProtocol.maxFrameBytes) { b throws(WireError) in
            try FrameReader.frame(b, reading: reading)
        }
    }
}

/// A view of bytes that swift-protobuf can parse without a copy.
struct ByteView: SwiftProtobufContiguousBytes {
    var bytes: ArraySlice<UInt8>
    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
    init(repeating: UInt8, count: Int) { bytes = ArraySlice(repeating: repeating, count: count) }
    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 { bytes = ArraySlice(sequence) }
    var count: Int { bytes.count }
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBytes(body)
    }
    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeMutableBytes(body)
    }
}
