import CaseModel
import Replication

// The TicketState bytes written straight from a ReplicatedTicket, for the sender's
// hot path. swift-protobuf's generated messages stay the definition: the mapping in
// Mapping.swift builds them, and tests check that these bytes are identical to
// `Ekc_Replication_V1_TicketState(t).serializedBytes()` for random histories. Going
// through the generated messages cost about 60 % of a sender's time in a catch-up
// (perf): building the nested structs, and swift-protobuf sizing every nested message
// once per level of nesting before writing it.

/// Appends protobuf fields to a byte array. Nested messages are written in place with
/// a one-byte length placeholder that is widened afterwards if the body turned out
/// longer than 127 bytes, so nothing is sized twice.
struct ProtoWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: UInt64, _ wireType: UInt64) { varint(field << 3 | wireType) }

    // Singular proto3 fields are omitted at their default value; `optional` ones and
    // message fields are written whenever present, as swift-protobuf does.

    mutating func uint64(_ field: UInt64, _ v: UInt64) {
        if v != 0 { tag(field, 0); varint(v) }
    }

    mutating func int64(_ field: UInt64, _ v: Int64) {
        if v != 0 { tag(field, 0); varint(UInt64(bitPattern: v)) }
    }

    mutating func optionalInt64(_ field: UInt64, _ v: Int64?) {
        if let v { tag(field, 0); varint(UInt64(bitPattern: v)) }
    }

    mutating func enumValue(_ field: UInt64, _ raw: Int) {
        if raw != 0 { tag(field, 0); varint(UInt64(bitPattern: Int64(raw))) }
    }

    mutating func fixed64(_ field: UInt64, _ v: UInt64) {
        guard v != 0 else { return }
        tag(field, 1)
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ field: UInt64, _ s: String) {
        if !s.isEmpty { presentString(field, s) }
    }

    mutating func optionalString(_ field: UInt64, _ s: String?) {
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

    mutating func rawBytes(_ field: UInt64, _ b: [UInt8]) {
        guard !b.isEmpty else { return }
        tag(field, 2)
        varint(UInt64(b.count))
        bytes += b
    }

    /// A message field (always written: present).
    mutating func message(_ field: UInt64, _ body: (inout ProtoWriter) -> Void) {
        tag(field, 2)
        lengthPrefixed(body)
    }

    /// What `body` writes, preceded by its length as a varint.
    mutating func lengthPrefixed(_ body: (inout ProtoWriter) -> Void) {
        let at = bytes.count
        bytes.append(0)
        body(&self)
        let length = bytes.count - at - 1
        if length < 0x80 {
            bytes[at] = UInt8(length)
            return
        }
        var prefix: [UInt8] = []
        var v = UInt64(length)
        while v >= 0x80 {
            prefix.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        prefix.append(UInt8(v))
        bytes.replaceSubrange(at..<(at + 1), with: prefix)
    }
}

extension ProtoWriter {
    mutating func dot(_ d: Dot) {
        message(1) { w in
            w.string(1, d.node.value)
            w.fixed64(2, d.stamp.raw)
        }
    }

    mutating func context(_ v: VersionVector) {
        message(2) { w in
            for e in v.sorted {
                w.message(1) { w in
                    w.string(1, e.node.value)
                    w.fixed64(2, e.stamp.raw)
                }
            }
        }
    }

    /// Every version of a register as field `field` of TicketState (dot 1, context 2, value 3).
    mutating func register<V>(_ field: UInt64, _ r: Register<V>, _ value: (inout ProtoWriter, V) -> Void) {
        for v in r.versions {
            message(field) { w in
                w.dot(v.dot)
                w.context(v.context)
                value(&w, v.value)
            }
        }
    }

    mutating func actor(_ field: UInt64, _ a: Actor) {
        message(field) { w in
            w.string(1, a.user)
            w.string(2, a.role)
        }
    }

    mutating func ticketState(_ t: ReplicatedTicket) {
        rawBytes(1, t.id.bytes)
        register(2, t.header) { w, h in
            w.message(3) { w in
                w.message(1) { w in
                    w.string(1, h.number.region)
                    w.int64(2, Int64(h.number.year))
                    w.uint64(3, h.number.sequence)
                }
                w.string(2, h.originNode.value)
                w.enumValue(3, Ekc_Replication_V1_Channel(h.channel).rawValue)
                w.enumValue(4, Ekc_Replication_V1_LegalRegime(h.legalRegime).rawValue)
                w.int64(5, h.receivedAt)
            }
        }
        register(3, t.statement) { w, s in
            w.message(3) { w in
                w.string(1, s.subject)
                w.string(2, s.text)
            }
        }
        register(4, t.citizen) { w, c in
            guard let c else { return }
            w.message(3) { w in
                w.string(1, c.ref)
                w.optionalString(2, c.name)
                w.optionalString(3, c.snils?.digits)
                w.optionalString(4, c.phone)
            }
        }
        register(5, t.progress) { w, p in
            w.message(3) { w in
                w.enumValue(1, Ekc_Replication_V1_TicketStatus(p.status).rawValue)
                w.optionalInt64(2, p.registeredAt)
                w.message(3) { w in
                    let d = p.deadlines
                    w.int64(1, d.registerBy)
                    w.optionalInt64(2, d.forwardBy)
                    w.optionalInt64(3, d.answerBy)
                    w.int64(4, Int64(d.extensionDays))
                    w.optionalInt64(5, d.callbackBy)
                }
            }
        }
        register(6, t.assignee) { w, a in w.optionalString(3, a) }
        register(7, t.priority) { w, p in w.enumValue(3, Ekc_Replication_V1_Priority(p).rawValue) }
        register(8, t.topic) { w, topic in
            w.message(3) { w in
                w.string(1, topic.topic)
                w.optionalString(2, topic.supportMeasure)
            }
        }
        register(9, t.owner) { w, o in w.string(3, o.value) }
        for n in t.notes.values.sorted(by: { $0.id < $1.id }) {
            message(10) { w in
                w.rawBytes(1, n.id.bytes)
                w.actor(2, n.author)
                w.string(3, n.node.value)
                w.int64(4, n.at)
                w.fixed64(5, n.stamp.raw)
                w.enumValue(6, Ekc_Replication_V1_NoteVisibility(n.visibility).rawValue)
                w.string(7, n.text)
            }
        }
        for e in t.history.values.sorted(by: { $0.id < $1.id }) {
            message(11) { w in
                w.rawBytes(1, e.id.bytes)
                w.actor(2, e.actor)
                w.string(3, e.node.value)
                w.int64(4, e.at)
                w.fixed64(5, e.stamp.raw)
                w.string(6, e.field)
                w.optionalString(7, e.old)
                w.optionalString(8, e.new)
            }
        }
    }
}

extension ReplicatedTicket {
    /// The protobuf bytes of this ticket's wire state (TicketState), canonical.
    public func wireBytes() -> [UInt8] {
        var w = ProtoWriter(capacity: 1024)
        w.ticketState(self)
        return w.bytes
    }
}

extension WireCoding {
    /// A delimited batch frame of tickets, written in one pass: equal byte for byte to
    /// `delimited(Frame.batch(...))`.
    public static func batchFrame(_ changes: [(sequence: UInt64, ticket: ReplicatedTicket)], throughSequence: UInt64,
                                  sourceLastSequence: UInt64) -> [UInt8] {
        var w = ProtoWriter(capacity: changes.count * 1200 + 32)
        var next = 0
        w.batchFrame(changes, from: &next, through: { _ in throughSequence }, sourceLast: sourceLastSequence, targetBytes: .max)
        return w.bytes
    }

    /// The next batch frame of `changes`, from index `next` on: closed once its encoded
    /// changes reach `targetBytes` (a larger ticket travels alone), with
    /// `through_sequence` its last change's sequence (proto/README.md, "Batches"), so no
    /// frame nears the receivers' frame limit however long the tickets. `next` moves
    /// past the changes written. `changes` must not be empty past `next`.
    public static func nextBatchFrame(_ changes: [(sequence: UInt64, ticket: ReplicatedTicket)], from next: inout Int,
                                      sourceLastSequence: UInt64, targetBytes: Int = ReplicationProtocol.batchTargetBytes)
        -> (bytes: [UInt8], through: UInt64, count: Int)
    {
        precondition(next < changes.count)
        let first = next
        var w = ProtoWriter(capacity: min(targetBytes, (changes.count - next) * 1200) + 64)
        w.batchFrame(changes, from: &next, through: { changes[$0 - 1].sequence }, sourceLast: sourceLastSequence,
                     targetBytes: targetBytes)
        return (w.bytes, changes[next - 1].sequence, next - first)
    }

    /// All of `changes` as consecutive batch frames (see `nextBatchFrame`).
    public static func batchFrames(_ changes: [(sequence: UInt64, ticket: ReplicatedTicket)], sourceLastSequence: UInt64,
                                   targetBytes: Int = ReplicationProtocol.batchTargetBytes)
        -> [(bytes: [UInt8], through: UInt64, count: Int)]
    {
        var frames: [(bytes: [UInt8], through: UInt64, count: Int)] = []
        var next = 0
        while next < changes.count {
            frames.append(nextBatchFrame(changes, from: &next, sourceLastSequence: sourceLastSequence, targetBytes: targetBytes))
        }
        return frames
    }
}

extension ProtoWriter {
    /// One length-prefixed Frame{batch} with changes from `next` on, until they are all
    /// written or the frame holds `targetBytes`; `next` ends after the last one written.
    /// `through` gives through_sequence from the end index.
    mutating func batchFrame(_ changes: [(sequence: UInt64, ticket: ReplicatedTicket)], from next: inout Int,
                             through: (Int) -> UInt64, sourceLast: UInt64, targetBytes: Int) {
        let start = bytes.count
        lengthPrefixed { w in                                   // the frame's length prefix
            w.message(2) { w in                                 // Frame.batch = 2
                while next < changes.count {
                    let c = changes[next]
                    w.message(1) { w in                         // ChangeBatch.changes = 1
                        w.uint64(1, c.sequence)                 // Change.sequence = 1
                        w.message(2) { w in w.ticketState(c.ticket) } // Change.ticket = 2
                    }
                    next += 1
                    if w.bytes.count - start >= targetBytes { break }
                }
                w.uint64(2, through(next))                      // ChangeBatch.through_sequence = 2
                w.uint64(3, sourceLast)                         // ChangeBatch.source_last_sequence = 3
            }
        }
    }
}
