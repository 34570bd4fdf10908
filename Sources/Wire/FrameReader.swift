import CaseModel
import Foundation
import Replication
import SwiftProtobuf

/// A frame of a pull stream as the puller reads it.
public enum IncomingFrame: Sendable {
    case header(WireStreamHeader)
    case batch(IncomingBatch)
    case heartbeat(WireHeartbeat)
    case error(WireStreamError)
    /// A kind added by a later revision: ignored (proto/README.md §4).
    case unknown
}

/// A batch whose records were each decoded and checked on their own: a record that
/// fails is a refused record in its place, so that it is reported and the records
/// behind it are merged.
public struct IncomingBatch: Sendable {
    public var records: [RemoteRecord] = []
    public var throughSequence: UInt64 = 0
    public var sourceLastSequence: UInt64 = 0
    public var sequences: [UInt64] { records.map(\.sequence) }
}

/// What the puller needs to turn record bytes into checked deltas.
public struct RecordReading: Sendable {
    public let kinds: RecordKinds
    public let check: CheckContext
    public init(kinds: RecordKinds, check: CheckContext) {
        self.kinds = kinds
        self.check = check
    }

    /// One record: decoded, then checked by its kind's rules.
    public func record(_ bytes: UnsafeRawBufferPointer, sequence: UInt64) -> RemoteRecord {
        do throws(Refusal) {
            let delta = try RecordCoding.decodeDelta(bytes, kinds: kinds)
            guard let schema = kinds[delta.kind] else { throw Refusal(.unknownKind, "kind \(delta.kind)") }
            try schema.check(delta, context: check)
            return RemoteRecord(sequence: sequence, delta: delta)
        } catch {
            let (kind, id) = RecordReading.peek(bytes)
            return RemoteRecord(sequence: sequence, refusedKind: kind, id: id, error)
        }
    }

    /// The kind and id of a record that could not be read whole, for the report.
    static func peek(_ bytes: UnsafeRawBufferPointer) -> (RecordKindID?, RecordID?) {
        var r = ProtoReader(bytes)
        var kind: RecordKindID?, id: RecordID?
        while let (n, t) = try? r.field() {
            if n == 1, t == 0, let k = try? r.varint() { kind = k >= 1 && k <= 255 ? RecordKindID(rawValue: UInt8(k)) : nil; continue }
            if n == 2, t == 2, let b = try? r.bytes() { id = RecordID(bytes: b); continue }
            if (try? r.skip(t)) == nil { break }
        }
        return (kind, id)
    }
}

/// Reads frames. Batches are read here, record by record; the other frame kinds (a
/// few per stream) by swift-protobuf. Frame is a oneof: the last kind present wins,
/// and repeated batch fields merge, as protobuf's rules say.
public enum FrameReader {
    public static func frame(_ bytes: UnsafeRawBufferPointer, reading: RecordReading) throws(WireError) -> IncomingFrame {
        var r = ProtoReader(bytes)
        var result: IncomingFrame = .unknown
        var kinds = 0
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                guard t == 2, (1...4).contains(n) else { try r.skip(t); continue }
                // One kind per frame, once (proto/README.md §4): protobuf would merge a
                // kind sent in parts, or keep the last of two, and no encoder does either.
                kinds += 1
                guard kinds == 1 else { throw ProtoError.malformed }
                let body = try r.body()
                let sub = UnsafeRawBufferPointer(rebasing: bytes[body])
                switch n {
                case 2:
                    var b = IncomingBatch()
                    try readBatch(sub, into: &b, reading: reading)
                    result = .batch(b)
                case 1: result = .header(try parse(sub))
                case 3: result = .heartbeat(try parse(sub))
                default: result = .error(try parse(sub))
                }
            }
        } catch {
            throw .malformedMessage("\(error)")
        }
        return result
    }

    private static func parse<M: SwiftProtobuf.Message>(_ b: UnsafeRawBufferPointer) throws(ProtoError) -> M {
        do { return try M(serializedBytes: Data(b)) } catch { throw .malformed }
    }

    static func readBatch(_ bytes: UnsafeRawBufferPointer, into b: inout IncomingBatch, reading: RecordReading) throws(ProtoError) {
        var r = ProtoReader(bytes)
        while let (n, t) = try r.field() {
            switch (n, t) {
            case (1, 2):
                var c = try r.nested()
                var sequence: UInt64 = 0
                var record: Range<Int>?
                var twice = false
                while let (cn, ct) = try c.field() {
                    switch (cn, ct) {
                    case (1, 0): sequence = try c.varint()
                    case (2, 2):
                        // A record sent twice in one change is not merged (protobuf would
                        // concatenate the two): the record is refused, alone.
                        twice = twice || record != nil
                        record = try c.body()
                    default: try c.skip(ct)
                    }
                }
                if twice {
                    let (kind, id) = record.map { RecordReading.peek(UnsafeRawBufferPointer(rebasing: c.base[$0])) } ?? (nil, nil)
                    b.records.append(RemoteRecord(sequence: sequence, refusedKind: kind, id: id,
                                                  Refusal(.malformed, "record sent twice in one change")))
                } else if let record {
                    b.records.append(reading.record(UnsafeRawBufferPointer(rebasing: c.base[record]), sequence: sequence))
                } else {
                    b.records.append(RemoteRecord(sequence: sequence, refusedKind: nil, id: nil,
                                                  Refusal(.invalidValue, "change without a record")))
                }
            case (2, 0): b.throughSequence = try r.varint()
            case (3, 0): b.sourceLastSequence = try r.varint()
            default: try r.skip(t)
            }
        }
    }
}
