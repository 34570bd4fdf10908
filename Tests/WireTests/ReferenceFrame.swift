import Foundation
import SwiftProtobuf
@testable import Wire

// A Frame as swift-protobuf reads it, except that each change's record is kept as
// bytes, so that a record that does not parse fails alone (as the puller's reader
// makes it) instead of failing the frame. Written as the generated code is (oneof,
// merging of a message field that appears twice), except where the protocol is
// stricter (proto/README.md §4): a frame holds one kind once, and a change whose
// record appears twice is refused (protobuf would merge the two).

struct ReferenceChange: SwiftProtobuf.Message, SwiftProtobuf._MessageImplementationBase, SwiftProtobuf._ProtoNameProviding {
    static let protoMessageName = "ekc.test.ReferenceChange"
    static let _protobuf_nameMap = SwiftProtobuf._NameMap(bytecode: "\0\u{1}sequence\0\u{1}record\0")
    var sequence: UInt64 = 0
    var record: Data?
    var recordParts = 0
    var unknownFields = SwiftProtobuf.UnknownStorage()

    mutating func decodeMessage<D: SwiftProtobuf.Decoder>(decoder: inout D) throws {
        while let n = try decoder.nextFieldNumber() {
            switch n {
            case 1: try decoder.decodeSingularUInt64Field(value: &sequence)
            case 2:
                var part: Data?
                try decoder.decodeSingularBytesField(value: &part)
                if let part {
                    record = (record ?? Data()) + part
                    recordParts += 1
                }
            default: break
            }
        }
    }

    func traverse<V: SwiftProtobuf.Visitor>(visitor: inout V) throws {
        if sequence != 0 { try visitor.visitSingularUInt64Field(value: sequence, fieldNumber: 1) }
        if let record { try visitor.visitSingularBytesField(value: record, fieldNumber: 2) }
        try unknownFields.traverse(visitor: &visitor)
    }

    static func == (a: Self, b: Self) -> Bool { a.sequence == b.sequence && a.record == b.record && a.unknownFields == b.unknownFields }
}

struct ReferenceBatch: SwiftProtobuf.Message, SwiftProtobuf._MessageImplementationBase, SwiftProtobuf._ProtoNameProviding {
    static let protoMessageName = "ekc.test.ReferenceBatch"
    static let _protobuf_nameMap = SwiftProtobuf._NameMap(bytecode: "\0\u{1}changes\0\u{3}through_sequence\0\u{3}source_last_sequence\0")
    var changes: [ReferenceChange] = []
    var throughSequence: UInt64 = 0
    var sourceLastSequence: UInt64 = 0
    var unknownFields = SwiftProtobuf.UnknownStorage()

    mutating func decodeMessage<D: SwiftProtobuf.Decoder>(decoder: inout D) throws {
        while let n = try decoder.nextFieldNumber() {
            switch n {
            case 1: try decoder.decodeRepeatedMessageField(value: &changes)
            case 2: try decoder.decodeSingularUInt64Field(value: &throughSequence)
            case 3: try decoder.decodeSingularUInt64Field(value: &sourceLastSequence)
            default: break
            }
        }
    }

    func traverse<V: SwiftProtobuf.Visitor>(visitor: inout V) throws {
        if !changes.isEmpty { try visitor.visitRepeatedMessageField(value: changes, fieldNumber: 1) }
        if throughSequence != 0 { try visitor.visitSingularUInt64Field(value: throughSequence, fieldNumber: 2) }
        if sourceLastSequence != 0 { try visitor.visitSingularUInt64Field(value: sourceLastSequence, fieldNumber: 3) }
        try unknownFields.traverse(visitor: &visitor)
    }

    static func == (a: Self, b: Self) -> Bool {
        a.changes == b.changes && a.throughSequence == b.throughSequence && a.sourceLastSequence == b.sourceLastSequence
            && a.unknownFields == b.unknownFields
    }
}

struct ReferenceFrame: SwiftProtobuf.Message, SwiftProtobuf._MessageImplementationBase, SwiftProtobuf._ProtoNameProviding {
    static let protoMessageName = "ekc.test.ReferenceFrame"
    static let _protobuf_nameMap = SwiftProtobuf._NameMap(bytecode: "\0\u{1}header\0\u{1}batch\0\u{1}heartbeat\0\u{1}error\0")

    enum Kind: Equatable, Sendable {
        case header(WireStreamHeader)
        case batch(ReferenceBatch)
        case heartbeat(WireHeartbeat)
        case error(WireStreamError)
    }

    var kind: Kind?
    var unknownFields = SwiftProtobuf.UnknownStorage()

    /// A oneof message field as the protocol reads it: the first value of the oneof,
    /// and a frame refused when a second one follows.
    private mutating func decodeCase<M: SwiftProtobuf.Message, D: SwiftProtobuf.Decoder>(
        _ decoder: inout D, _ current: (Kind) -> M?, _ make: (M) -> Kind
    ) throws {
        // Decoded afresh, not merged into the current value: a second value of the
        // oneof is refused below, and a field of the wrong wire type (left unread by
        // swift-protobuf, which keeps it as an unknown field) leaves `v` nil.
        var v: M?
        let hadOneofValue = kind != nil
        try decoder.decodeSingularMessageField(value: &v)
        if let v {
            // proto/README.md §4: one kind per frame, once. Protobuf's binary rules
            // would keep the last of two kinds (or merge one sent twice); the protocol
            // refuses such a frame, and so does the reference.
            if hadOneofValue { throw BinaryDecodingError.malformedProtobuf }
            kind = make(v)
        }
    }

    mutating func decodeMessage<D: SwiftProtobuf.Decoder>(decoder: inout D) throws {
        while let n = try decoder.nextFieldNumber() {
            switch n {
            case 1: try decodeCase(&decoder, { if case .header(let m) = $0 { m } else { nil } }, Kind.header)
            case 2: try decodeCase(&decoder, { if case .batch(let m) = $0 { m } else { nil } }, Kind.batch)
            case 3: try decodeCase(&decoder, { if case .heartbeat(let m) = $0 { m } else { nil } }, Kind.heartbeat)
            case 4: try decodeCase(&decoder, { if case .error(let m) = $0 { m } else { nil } }, Kind.error)
            default: break
            }
        }
    }

    func traverse<V: SwiftProtobuf.Visitor>(visitor: inout V) throws {
        switch kind {
        case .header(let m)?: try visitor.visitSingularMessageField(value: m, fieldNumber: 1)
        case .batch(let m)?: try visitor.visitSingularMessageField(value: m, fieldNumber: 2)
        case .heartbeat(let m)?: try visitor.visitSingularMessageField(value: m, fieldNumber: 3)
        case .error(let m)?: try visitor.visitSingularMessageField(value: m, fieldNumber: 4)
        case nil: break
        }
        try unknownFields.traverse(visitor: &visitor)
    }

    static func == (a: Self, b: Self) -> Bool { a.kind == b.kind && a.unknownFields == b.unknownFields }
}

/// What a frame body means by the reference; nil when protobuf refuses the frame.
func referenceMeaning(_ body: [UInt8]) -> FrameMeaning? {
    guard let f = try? ReferenceFrame(serializedBytes: body) else { return nil }
    switch f.kind {
    case .header(let h)?: return .header(h)
    case .heartbeat(let h)?: return .heartbeat(h)
    case .error(let e)?: return .error(e)
    case nil: return .unknown
    case .batch(let b)?:
        return .batch(through: b.throughSequence, last: b.sourceLastSequence, records: b.changes.map { c in
            guard let r = c.record, c.recordParts == 1, let d = referenceRecord([UInt8](r)) else { return .refused(c.sequence) }
            return .delta(c.sequence, d)
        })
    }
}
