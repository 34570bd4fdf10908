import Foundation
import SwiftProtobuf

// A reader of batch frames for the puller's hot path. It fills the same generated
// messages swift-protobuf would, with the same rules (proto3 defaults, last value wins
// for a scalar, a repeated singular message is merged, a field with an unexpected wire
// type or number is skipped as unknown, strings must be valid UTF-8, nesting is
// limited to 100), so the mapping to model types and its checks stay as they are;
// tests compare its results with swift-protobuf's on random and mutated input.
// swift-protobuf's generic decoding machinery was about 45 % of a puller's time in a
// catch-up (perf); frames other than batches still go through it. Unknown fields are
// dropped rather than kept, which nothing downstream reads.

/// The failures swift-protobuf reports, with its descriptions, so both readers fail alike.
private func malformed(_ e: BinaryDecodingError) -> WireError { .malformedMessage(String(describing: e)) }

struct ProtoReader {
    private let base: UnsafeRawBufferPointer
    private var position: Int
    private let end: Int
    /// What is left of the nesting budget (swift-protobuf's default limit is 100).
    private var budget: Int

    /// `budget` 99: the top-level message has used one level of swift-protobuf's 100.
    init(_ bytes: UnsafeRawBufferPointer, budget: Int = 99) {
        base = bytes
        position = 0
        end = bytes.count
        self.budget = budget
    }

    private init(base: UnsafeRawBufferPointer, from: Int, to: Int, budget: Int) {
        self.base = base
        position = from
        end = to
        self.budget = budget
    }

    /// The next field's number and wire type, or nil at the end of the message.
    mutating func field() throws(WireError) -> (number: Int, wireType: UInt8)? {
        guard position < end else { return nil }
        // A tag is at most 5 bytes and below 2^32, as swift-protobuf reads it.
        var tag: UInt64 = 0
        var i = 0
        while true {
            guard position < end else { throw malformed(.malformedProtobuf) }
            let b = base[position]
            position += 1
            if i == 4 && b > 15 { throw malformed(.malformedProtobuf) }
            tag |= UInt64(b & 0x7F) << (7 * UInt64(i))
            if b & 0x80 == 0 { break }
            i += 1
        }
        let wireType = UInt8(tag & 7)
        let number = Int(tag >> 3)
        guard wireType <= 5, number != 0 else { throw malformed(.malformedProtobuf) }
        // An end-group tag outside a group is invalid.
        if wireType == 4 { throw malformed(.malformedProtobuf) }
        return (number, wireType)
    }

    mutating func varint() throws(WireError) -> UInt64 {
        guard position < end else { throw malformed(.truncated) }
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end, shift <= 63 else { throw malformed(.malformedProtobuf) }
            let b = base[position]
            position += 1
            value |= UInt64(b & 0x7F) &<< shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
    }

    mutating func fixed64() throws(WireError) -> UInt64 {
        guard end - position >= 8 else { throw malformed(.truncated) }
        var v: UInt64 = 0
        withUnsafeMutableBytes(of: &v) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: base[position..<(position + 8)])) }
        position += 8
        return UInt64(littleEndian: v)
    }

    /// The body of a length-delimited field.
    private mutating func body() throws(WireError) -> Range<Int> {
        let length = try varint()
        guard length < 0x7fff_ffff else { throw malformed(.malformedProtobuf) }
        guard length <= UInt64(end - position) else { throw malformed(.truncated) }
        let r = position..<(position + Int(length))
        position = r.upperBound
        return r
    }

    mutating func string() throws(WireError) -> String {
        let r = try body()
        guard let s = String(validating: UnsafeRawBufferPointer(rebasing: base[r]), as: UTF8.self) else {
            throw malformed(.invalidUTF8)
        }
        return s
    }

    mutating func bytes() throws(WireError) -> Data {
        Data(UnsafeRawBufferPointer(rebasing: base[try body()]))
    }

    /// Reads a sub-message into `value` (merging into what it holds, as protobuf does).
    mutating func message<M>(_ value: inout M, _ parse: (inout ProtoReader, inout M) throws(WireError) -> Void) throws(WireError) {
        let r = try body()
        guard budget >= 1 else { throw malformed(.messageDepthLimit) }
        var sub = ProtoReader(base: base, from: r.lowerBound, to: r.upperBound, budget: budget - 1)
        try parse(&sub, &value)
    }

    /// Skips a field this reader does not take (unknown, or with an unexpected wire type).
    mutating func skip(_ number: Int, _ wireType: UInt8) throws(WireError) {
        switch wireType {
        case 0: _ = try varint()
        case 1:
            guard end - position >= 8 else { throw malformed(.truncated) }
            position += 8
        case 2: _ = try body()
        case 5:
            guard end - position >= 4 else { throw malformed(.truncated) }
            position += 4
        case 3:
            guard budget >= 1 else { throw malformed(.messageDepthLimit) }
            budget -= 1
            defer { budget += 1 }
            while true {
                guard position < end else { throw malformed(.truncated) }
                let (inner, innerType) = try groupField()
                if innerType == 4 {
                    guard inner == number else { throw malformed(.malformedProtobuf) }
                    return
                }
                try skip(inner, innerType)
            }
        default: throw malformed(.truncated)
        }
    }

    /// A tag inside a group, where end-group tags are allowed.
    private mutating func groupField() throws(WireError) -> (Int, UInt8) {
        let tag = try varint()
        guard tag < UInt64(UInt32.max), tag & ~7 != 0, tag & 7 <= 5 else { throw malformed(.malformedProtobuf) }
        return (Int(tag >> 3), UInt8(tag & 7))
    }

    mutating func enumRaw() throws(WireError) -> Int { Int(Int32(truncatingIfNeeded: try varint())) }
    mutating func int64() throws(WireError) -> Int64 { Int64(bitPattern: try varint()) }
}

/// Reads a message's fields: `take` returns false for a field it does not read, which is then skipped.
private func fields<M>(_ r: inout ProtoReader, _ m: inout M,
                       _ take: (inout ProtoReader, inout M, Int, UInt8) throws(WireError) -> Bool) throws(WireError) {
    while let (n, t) = try r.field() {
        if try !take(&r, &m, n, t) { try r.skip(n, t) }
    }
}

enum FrameReader {
    /// A frame: batches by this reader, anything else by swift-protobuf.
    static func frame(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> Ekc_Replication_V1_Frame {
        var probe = ProtoReader(bytes)
        var onlyBatches = true
        do {
            while let (n, t) = try probe.field() {
                guard n == 2 && t == 2 else { onlyBatches = false; break }
                try probe.skip(n, t)
            }
        } catch {
            onlyBatches = false
        }
        guard onlyBatches else {
            do { return try Ekc_Replication_V1_Frame(serializedBytes: Data(bytes)) } catch {
                throw .malformedMessage(String(describing: error))
            }
        }
        var r = ProtoReader(bytes)
        var batch: Ekc_Replication_V1_ChangeBatch?
        // Every field is a batch (the probe said so); repeated ones merge, as protobuf's do.
        while try r.field() != nil {
            var b = batch ?? .init()
            try r.message(&b, changeBatch)
            batch = b
        }
        var f = Ekc_Replication_V1_Frame()
        if let batch { f.batch = batch }
        return f
    }

    static func changeBatch(_ r: inout ProtoReader, _ b: inout Ekc_Replication_V1_ChangeBatch) throws(WireError) {
        try fields(&r, &b) { r, b, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2):
                var c = Ekc_Replication_V1_Change()
                try r.message(&c, change)
                b.changes.append(c)
            case (2, 0): b.throughSequence = try r.varint()
            case (3, 0): b.sourceLastSequence = try r.varint()
            default: return false
            }
            return true
        }
    }

    static func change(_ r: inout ProtoReader, _ c: inout Ekc_Replication_V1_Change) throws(WireError) {
        try fields(&r, &c) { r, c, n, t throws(WireError) in
            switch (n, t) {
            case (1, 0): c.sequence = try r.varint()
            case (2, 2):
                var s = c.ticket
                try r.message(&s, ticketState)
                c.ticket = s
            default: return false
            }
            return true
        }
    }

    static func ticketState(_ r: inout ProtoReader, _ s: inout Ekc_Replication_V1_TicketState) throws(WireError) {
        try fields(&r, &s) { r, s, n, t throws(WireError) in
            guard t == 2 else { return false }
            switch n {
            case 1: s.id = try r.bytes()
            case 2: s.header.append(try version(&r, Ekc_Replication_V1_HeaderVersion.self) { r, v throws(WireError) in
                var h = v.value; try r.message(&h, header); v.value = h })
            case 3: s.statement.append(try version(&r, Ekc_Replication_V1_StatementVersion.self) { r, v throws(WireError) in
                var x = v.value; try r.message(&x, statement); v.value = x })
            case 4: s.citizen.append(try version(&r, Ekc_Replication_V1_CitizenVersion.self) { r, v throws(WireError) in
                var x = v.value; try r.message(&x, citizen); v.value = x })
            case 5: s.progress.append(try version(&r, Ekc_Replication_V1_ProgressVersion.self) { r, v throws(WireError) in
                var x = v.value; try r.message(&x, progress); v.value = x })
            case 6: s.assignee.append(try version(&r, Ekc_Replication_V1_AssigneeVersion.self) { r, v throws(WireError) in
                v.value = try r.string() })
            case 7: s.priority.append(try version(&r, Ekc_Replication_V1_PriorityVersion.self, valueType: 0) { r, v throws(WireError) in
                v.value = .init(rawValue: try r.enumRaw()) ?? .unspecified })
            case 8: s.topic.append(try version(&r, Ekc_Replication_V1_TopicVersion.self) { r, v throws(WireError) in
                var x = v.value; try r.message(&x, topic); v.value = x })
            case 9: s.owner.append(try version(&r, Ekc_Replication_V1_OwnerVersion.self) { r, v throws(WireError) in
                v.value = try r.string() })
            case 10:
                var x = Ekc_Replication_V1_Note()
                try r.message(&x, note)
                s.notes.append(x)
            case 11:
                var x = Ekc_Replication_V1_HistoryEvent()
                try r.message(&x, historyEvent)
                s.history.append(x)
            default: return false
            }
            return true
        }
    }

    /// One register version: dot (1), context (2), and the value (3) read by `value`.
    static func version<V: WireVersion>(_ r: inout ProtoReader, _ type: V.Type, valueType: UInt8 = 2,
                                        _ value: (inout ProtoReader, inout V) throws(WireError) -> Void) throws(WireError) -> V {
        var v = V()
        try r.message(&v) { r, v throws(WireError) in
            try fields(&r, &v) { r, v, n, t throws(WireError) in
                switch (n, t) {
                case (1, 2):
                    var d = v.dot
                    try r.message(&d, dot)
                    v.dot = d
                case (2, 2):
                    var c = v.context
                    try r.message(&c, versionVector)
                    v.context = c
                case (3, valueType): try value(&r, &v)
                default: return false
                }
                return true
            }
        }
        return v
    }

    static func dot(_ r: inout ProtoReader, _ d: inout Ekc_Replication_V1_Dot) throws(WireError) {
        try fields(&r, &d) { r, d, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2): d.node = try r.string()
            case (2, 1): d.stamp = try r.fixed64()
            default: return false
            }
            return true
        }
    }

    static func versionVector(_ r: inout ProtoReader, _ v: inout Ekc_Replication_V1_VersionVector) throws(WireError) {
        try fields(&r, &v) { r, v, n, t throws(WireError) in
            guard n == 1, t == 2 else { return false }
            var e = Ekc_Replication_V1_VersionVector.Entry()
            try r.message(&e) { r, e throws(WireError) in
                try fields(&r, &e) { r, e, n, t throws(WireError) in
                    switch (n, t) {
                    case (1, 2): e.node = try r.string()
                    case (2, 1): e.stamp = try r.fixed64()
                    default: return false
                    }
                    return true
                }
            }
            v.entries.append(e)
            return true
        }
    }

    static func header(_ r: inout ProtoReader, _ h: inout Ekc_Replication_V1_TicketHeader) throws(WireError) {
        try fields(&r, &h) { r, h, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2):
                var x = h.number
                try r.message(&x) { r, x throws(WireError) in
                    try fields(&r, &x) { r, x, n, t throws(WireError) in
                        switch (n, t) {
                        case (1, 2): x.region = try r.string()
                        case (2, 0): x.year = try r.int64()
                        case (3, 0): x.sequence = try r.varint()
                        default: return false
                        }
                        return true
                    }
                }
                h.number = x
            case (2, 2): h.originNode = try r.string()
            case (3, 0): h.channel = .init(rawValue: try r.enumRaw()) ?? .unspecified
            case (4, 0): h.legalRegime = .init(rawValue: try r.enumRaw()) ?? .unspecified
            case (5, 0): h.receivedAt = try r.int64()
            default: return false
            }
            return true
        }
    }

    static func statement(_ r: inout ProtoReader, _ s: inout Ekc_Replication_V1_Statement) throws(WireError) {
        try fields(&r, &s) { r, s, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2): s.subject = try r.string()
            case (2, 2): s.text = try r.string()
            default: return false
            }
            return true
        }
    }

    static func citizen(_ r: inout ProtoReader, _ c: inout Ekc_Replication_V1_Citizen) throws(WireError) {
        try fields(&r, &c) { r, c, n, t throws(WireError) in
            guard t == 2 else { return false }
            switch n {
            case 1: c.ref = try r.string()
            case 2: c.name = try r.string()
            case 3: c.snils = try r.string()
            case 4: c.phone = try r.string()
            default: return false
            }
            return true
        }
    }

    static func progress(_ r: inout ProtoReader, _ p: inout Ekc_Replication_V1_Progress) throws(WireError) {
        try fields(&r, &p) { r, p, n, t throws(WireError) in
            switch (n, t) {
            case (1, 0): p.status = .init(rawValue: try r.enumRaw()) ?? .unspecified
            case (2, 0): p.registeredAt = try r.int64()
            case (3, 2):
                var d = p.deadlines
                try r.message(&d) { r, d throws(WireError) in
                    try fields(&r, &d) { r, d, n, t throws(WireError) in
                        guard t == 0 else { return false }
                        switch n {
                        case 1: d.registerBy = try r.int64()
                        case 2: d.forwardBy = try r.int64()
                        case 3: d.answerBy = try r.int64()
                        case 4: d.extensionDays = try r.int64()
                        case 5: d.callbackBy = try r.int64()
                        default: return false
                        }
                        return true
                    }
                }
                p.deadlines = d
            default: return false
            }
            return true
        }
    }

    static func topic(_ r: inout ProtoReader, _ x: inout Ekc_Replication_V1_Topic) throws(WireError) {
        try fields(&r, &x) { r, x, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2): x.topic = try r.string()
            case (2, 2): x.supportMeasure = try r.string()
            default: return false
            }
            return true
        }
    }

    static func actor(_ r: inout ProtoReader, _ a: inout Ekc_Replication_V1_Actor) throws(WireError) {
        try fields(&r, &a) { r, a, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2): a.user = try r.string()
            case (2, 2): a.role = try r.string()
            default: return false
            }
            return true
        }
    }

    static func note(_ r: inout ProtoReader, _ x: inout Ekc_Replication_V1_Note) throws(WireError) {
        try fields(&r, &x) { r, x, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2): x.id = try r.bytes()
            case (2, 2):
                var a = x.author
                try r.message(&a, actor)
                x.author = a
            case (3, 2): x.node = try r.string()
            case (4, 0): x.at = try r.int64()
            case (5, 1): x.stamp = try r.fixed64()
            case (6, 0): x.visibility = .init(rawValue: try r.enumRaw()) ?? .unspecified
            case (7, 2): x.text = try r.string()
            default: return false
            }
            return true
        }
    }

    static func historyEvent(_ r: inout ProtoReader, _ x: inout Ekc_Replication_V1_HistoryEvent) throws(WireError) {
        try fields(&r, &x) { r, x, n, t throws(WireError) in
            switch (n, t) {
            case (1, 2): x.id = try r.bytes()
            case (2, 2):
                var a = x.actor
                try r.message(&a, actor)
                x.actor = a
            case (3, 2): x.node = try r.string()
            case (4, 0): x.at = try r.int64()
            case (5, 1): x.stamp = try r.fixed64()
            case (6, 2): x.field = try r.string()
            case (7, 2): x.oldValue = try r.string()
            case (8, 2): x.newValue = try r.string()
            default: return false
            }
            return true
        }
    }
}
