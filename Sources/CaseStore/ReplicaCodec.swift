import CaseModel
import Replication

/// The stored form of a ticket's replicated state (its registers; notes and history
/// live in their own databases). Kept beside the materialised ticket so that reads
/// never decode registers, and replication never re-derives them.
enum ReplicaCodec {
    static let format: UInt8 = 1

    static func encode(_ t: ReplicatedTicket) -> [UInt8] {
        var w = BinaryWriter(capacity: 512)
        w.u8(format)
        w.raw(t.id.bytes)
        register(&w, t.header) { w, h in
            w.string(h.number.region); w.varint(UInt64(h.number.year)); w.varint(h.number.sequence)
            w.string(h.originNode.value); w.u8(h.channel.code); w.u8(h.legalRegime.code); w.int(h.receivedAt)
        }
        register(&w, t.statement) { w, s in w.string(s.subject); w.string(s.text) }
        register(&w, t.citizen) { w, c in
            if let c {
                w.u8(1); w.string(c.ref); w.optionalString(c.name); w.optionalString(c.snils?.digits); w.optionalString(c.phone)
            } else {
                w.u8(0)
            }
        }
        register(&w, t.progress) { w, p in
            w.u8(p.status.code); w.optionalInt(p.registeredAt)
            let d = p.deadlines
            w.int(d.registerBy); w.optionalInt(d.forwardBy); w.optionalInt(d.answerBy)
            w.varint(UInt64(d.extensionDays)); w.optionalInt(d.callbackBy)
        }
        register(&w, t.assignee) { w, a in w.optionalString(a) }
        register(&w, t.priority) { w, p in w.u8(p.code) }
        register(&w, t.topic) { w, tp in w.string(tp.topic); w.optionalString(tp.supportMeasure) }
        register(&w, t.owner) { w, o in w.string(o.value) }
        return w.bytes
    }

    /// Versions with their dots; a context that is just the version's own dot (the
    /// common case) takes one byte.
    private static func register<V>(_ w: inout BinaryWriter, _ r: Register<V>, _ value: (inout BinaryWriter, V) -> Void) {
        w.varint(UInt64(r.versions.count))
        for v in r.versions {
            value(&w, v.value)
            w.string(v.dot.node.value)
            w.varint(v.dot.stamp.raw)
            if v.context == VersionVector(dot: v.dot) {
                w.u8(0)
            } else {
                w.u8(1)
                w.varint(UInt64(v.context.sorted.count))
                for e in v.context.sorted { w.string(e.node.value); w.varint(e.stamp.raw) }
            }
        }
    }

    static func decode(_ buf: UnsafeRawBufferPointer) throws(CorruptRecord) -> ReplicatedTicket {
        var r = BinaryReader(buf)
        guard try r.u8() == format else { throw CorruptRecord(what: "unknown replica format") }
        var t = ReplicatedTicket(id: TicketID(raw: try r.raw(16)))
        t.header = try register(&r) { r throws(CorruptRecord) in
            let number = TicketNumber(region: try r.string(), year: Int(try r.varint()), sequence: try r.varint())
            let origin = NodeID(trusted: try r.string())
            let channel: Channel = try RecordCodec.decodeCase(try r.u8(), "channel")
            let regime: LegalRegime = try RecordCodec.decodeCase(try r.u8(), "legal regime")
            return TicketHeader(number: number, originNode: origin, channel: channel, legalRegime: regime, receivedAt: try r.int())
        }
        t.statement = try register(&r) { r throws(CorruptRecord) in Statement(subject: try r.string(), text: try r.string()) }
        t.citizen = try register(&r) { r throws(CorruptRecord) -> Citizen? in
            guard try r.u8() == 1 else { return nil }
            let ref = try r.string()
            let name = try r.optionalString()
            let snils = try r.optionalString()
            return Citizen(ref: ref, name: name, snils: snils.map { Snils(trusted: $0) }, phone: try r.optionalString())
        }
        t.progress = try register(&r) { r throws(CorruptRecord) in
            guard let status = TicketStatus(code: try r.u8()) else { throw CorruptRecord(what: "status") }
            let registered = try r.optionalInt()
            let d = Deadlines(registerBy: try r.int(), forwardBy: try r.optionalInt(), answerBy: try r.optionalInt(),
                              extensionDays: Int(try r.varint()), callbackBy: try r.optionalInt())
            return Progress(status: status, registeredAt: registered, deadlines: d)
        }
        t.assignee = try register(&r) { r throws(CorruptRecord) in try r.optionalString() }
        t.priority = try register(&r) { r throws(CorruptRecord) -> Priority in try RecordCodec.decodeCase(try r.u8(), "priority") }
        t.topic = try register(&r) { r throws(CorruptRecord) in Topic(topic: try r.string(), supportMeasure: try r.optionalString()) }
        t.owner = try register(&r) { r throws(CorruptRecord) in NodeID(trusted: try r.string()) }
        return t
    }

    private static func register<V>(_ r: inout BinaryReader, _ value: (inout BinaryReader) throws(CorruptRecord) -> V)
        throws(CorruptRecord) -> Register<V>
    {
        let n = Int(try r.varint())
        guard n <= 1_000 else { throw CorruptRecord(what: "register with \(n) versions") }
        var versions: [Version<V>] = []
        versions.reserveCapacity(n)
        for _ in 0..<n {
            let v = try value(&r)
            let dot = Dot(node: NodeID(trusted: try r.string()), stamp: Stamp(raw: try r.varint()))
            var context = VersionVector(dot: dot)
            if try r.u8() == 1 {
                let m = Int(try r.varint())
                guard m <= 10_000 else { throw CorruptRecord(what: "context with \(m) entries") }
                for _ in 0..<m { context.add(Dot(node: NodeID(trusted: try r.string()), stamp: Stamp(raw: try r.varint()))) }
            }
            versions.append(Version(value: v, dot: dot, context: context))
        }
        return Register(versions: versions)
    }
}
