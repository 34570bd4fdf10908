import CaseModel

/// The protobuf encoding of the generic record messages (proto/ekc/replication/v2/
/// replication.proto): Dot, VersionVector, Version, Register, Child, RecordDelta.
/// The wire and the store both use it; the store adds its own fields (a register's
/// feed position) after the wire's, under numbers the wire never uses.
public enum RecordCoding {
    // MARK: Writing

    public static func dot(_ w: inout ProtoWriter, _ field: UInt64, _ d: Dot) {
        w.message(field) { w in
            w.string(1, d.node.value)
            w.fixed64(2, d.stamp.raw)
        }
    }

    public static func vector(_ w: inout ProtoWriter, _ field: UInt64, _ v: VersionVector) {
        w.message(field) { w in
            for e in v.sorted {
                w.message(1) { w in
                    w.string(1, e.node.value)
                    w.fixed64(2, e.stamp.raw)
                }
            }
        }
    }

    /// A Register's fields (number 1, versions 2, seen 3), without the enclosing tag.
    public static func registerFields(_ w: inout ProtoWriter, number: UInt8, _ r: Register) {
        w.uint64(1, UInt64(number))
        for v in r.versions {
            w.message(2) { w in
                dot(&w, 1, v.dot)
                w.bytesField(2, v.value)
            }
        }
        vector(&w, 3, r.seen)
    }

    /// A Child's fields after its collection and id: dot 3, value 4.
    public static func childBody(_ w: inout ProtoWriter, _ c: Child) {
        dot(&w, 3, c.dot)
        w.bytesField(4, c.value)
    }

    public static func child(_ w: inout ProtoWriter, _ c: Child) {
        w.uint64(1, UInt64(c.collection))
        w.presentBytes(2, c.id.bytes)
        childBody(&w, c)
    }

    /// A RecordDelta's fields: kind, id, the non-empty registers, the children.
    public static func delta(_ w: inout ProtoWriter, _ d: RecordDelta, schema: RecordSchema) {
        w.uint64(1, UInt64(d.kind.rawValue))
        w.presentBytes(2, d.id.bytes)
        for (i, r) in d.state.registers.enumerated() where !r.isEmpty {
            w.message(3) { w in registerFields(&w, number: schema.registers[i].number, r) }
        }
        for c in d.children { w.message(4) { w in child(&w, c) } }
    }

    // MARK: Reading (structure only: values are checked by their register's check)

    static func bad(_ e: ProtoError, _ path: @autoclosure () -> String) -> Refusal { Refusal(.malformed, "\(path()): \(e)") }

    /// A singular message field sent twice. Protobuf would merge the two parts; records
    /// are refused instead (proto/README.md §1.5): no encoder splits a field, and a
    /// record must mean one thing to every reader.
    static func twice(_ path: String) -> Refusal { Refusal(.malformed, "\(path): a singular message field appears twice") }

    public static func readDot(_ r: inout ProtoReader, _ path: @autoclosure () -> String) throws(Refusal) -> Dot {
        var node = "", stamp: UInt64 = 0
        do throws(ProtoError) {
            var m = try r.nested()
            while let (n, t) = try m.field() {
                switch (n, t) {
                case (1, 2): node = try m.string()
                case (2, 1): stamp = try m.fixed64()
                default: try m.skip(t)
                }
            }
        } catch { throw bad(error, path()) }
        guard let id = NodeID(node) else { throw Refusal(.invalidValue, "\(path()).node: \"\(node.prefix(80))\" is not a node id") }
        guard stamp != 0 else { throw Refusal(.invalidValue, "\(path()).stamp: a stamp is never 0") }
        return Dot(node: id, stamp: Stamp(raw: stamp))
    }

    /// A version vector; at most `limit` entries (counted before they are sorted).
    public static func readVector(_ r: inout ProtoReader, limit: Int, _ path: @autoclosure () -> String) throws(Refusal) -> VersionVector {
        var entries: [VersionVector.Entry] = []
        do {
            var m = try r.nested()
            while let (n, t) = try m.field() {
                guard n == 1, t == 2 else { try m.skip(t); continue }
                guard entries.count < limit else {
                    throw Refusal(.tooLarge, "\(path()): more than \(limit) entries")
                }
                var e = try m.nested()
                var node = "", stamp: UInt64 = 0
                while let (n, t) = try e.field() {
                    switch (n, t) {
                    case (1, 2): node = try e.string()
                    case (2, 1): stamp = try e.fixed64()
                    default: try e.skip(t)
                    }
                }
                guard let id = NodeID(node) else {
                    throw Refusal(.invalidValue, "\(path()).entries[\(entries.count)].node: \"\(node.prefix(80))\" is not a node id")
                }
                guard stamp != 0 else { throw Refusal(.invalidValue, "\(path()).entries[\(entries.count)].stamp: 0") }
                entries.append(.init(node: id, stamp: Stamp(raw: stamp)))
            }
        } catch let e as ProtoError {
            throw bad(e, path())
        } catch let e as Refusal {
            throw e
        } catch {
            throw Refusal(.malformed, path())
        }
        if !zip(entries, entries.dropFirst()).allSatisfy({ $0.node < $1.node }) {
            entries.sort { $0.node < $1.node }
            for (a, b) in zip(entries, entries.dropFirst()) where a.node == b.node {
                throw Refusal(.invalidValue, "\(path()): node \(a.node) twice")
            }
        }
        return VersionVector(checkedSorted: entries)
    }

    /// The body of a Register message (its number already known to the caller, which
    /// passes a reader positioned after it or at the start: field 1 is skipped here).
    /// `extra` sees fields the wire does not define (the store's own).
    public static func readRegister(_ m: inout ProtoReader, _ path: @autoclosure () -> String,
                                    extra: (inout ProtoReader, Int, UInt8) throws(ProtoError) -> Bool = { _, _, _ in false })
        throws(Refusal) -> (number: UInt64, register: Register)
    {
        var number: UInt64 = 0
        var versions: [Version] = []
        var seen = VersionVector()
        var seenRead = false
        do {
            while let (n, t) = try next(&m, path()) {
                switch (n, t) {
                case (1, 0):
                    do throws(ProtoError) { number = try m.varint() } catch { throw bad(error, path()) }
                case (2, 2):
                    guard versions.count < RecordSchema.maxVersions else {
                        throw Refusal(.tooLarge, "\(path()): more than \(RecordSchema.maxVersions) versions")
                    }
                    var v: ProtoReader
                    do throws(ProtoError) { v = try m.nested() } catch { throw bad(error, path()) }
                    var dot: Dot?
                    var value: ValueBytes = []
                    while let (n, t) = try next(&v, path()) {
                        switch (n, t) {
                        case (1, 2):
                            guard dot == nil else { throw twice("\(path()).versions[\(versions.count)].dot") }
                            dot = try readDot(&v, "\(path()).versions[\(versions.count)].dot")
                        case (2, 2):
                            do throws(ProtoError) { value = try v.bytes() } catch { throw bad(error, path()) }
                        default:
                            do throws(ProtoError) { try v.skip(t) } catch { throw bad(error, path()) }
                        }
                    }
                    guard let dot else { throw Refusal(.invalidValue, "\(path()).versions[\(versions.count)].dot: required") }
                    versions.append(Version(dot: dot, value: value))
                case (3, 2):
                    guard !seenRead else { throw twice("\(path()).seen") }
                    seenRead = true
                    seen = try readVector(&m, limit: RecordSchema.maxContextEntries, "\(path()).seen")
                default:
                    var handled = false
                    do throws(ProtoError) {
                        handled = try extra(&m, n, t)
                        if !handled { try m.skip(t) }
                    } catch { throw bad(error, path()) }
                }
            }
        }
        if !zip(versions, versions.dropFirst()).allSatisfy({ $0.dot < $1.dot }) {
            versions.sort { $0.dot < $1.dot }
            for (a, b) in zip(versions, versions.dropFirst()) where a.dot == b.dot {
                throw Refusal(.invalidValue, "\(path()): dot \(a.dot) twice")
            }
        }
        return (number, Register(sortedVersions: versions, seen: seen))
    }

    /// A Child: collection, id, dot, value.
    public static func readChild(_ m: inout ProtoReader, _ path: @autoclosure () -> String) throws(Refusal) -> Child {
        var collection: UInt64 = 0
        var id: RecordID?
        var dot: Dot?
        var value: ValueBytes = []
        while let (n, t) = try next(&m, path()) {
            switch (n, t) {
            case (1, 0):
                do throws(ProtoError) { collection = try m.varint() } catch { throw bad(error, path()) }
            case (2, 2):
                let r: Range<Int>
                do throws(ProtoError) { r = try m.body() } catch { throw bad(error, path()) }
                guard let i = RecordID(bytes: UnsafeRawBufferPointer(rebasing: m.base[r])) else {
                    throw Refusal(.invalidValue, "\(path()).id: \(r.count) bytes, not 16")
                }
                id = i
            case (3, 2):
                guard dot == nil else { throw twice("\(path()).dot") }
                dot = try readDot(&m, "\(path()).dot")
            case (4, 2):
                do throws(ProtoError) { value = try m.bytes() } catch { throw bad(error, path()) }
            default:
                do throws(ProtoError) { try m.skip(t) } catch { throw bad(error, path()) }
            }
        }
        guard collection >= 1, collection <= 255 else { throw Refusal(.unknownKind, "\(path()).collection: \(collection)") }
        guard let id else { throw Refusal(.invalidValue, "\(path()).id: required") }
        guard let dot else { throw Refusal(.invalidValue, "\(path()).dot: required") }
        return Child(collection: UInt8(collection), id: id, dot: dot, value: value)
    }

    /// A RecordDelta of a kind `kinds` knows, structurally checked (see `RecordSchema.check`
    /// for the rest). Registers are matched to the kind's table by number.
    public static func readDelta(_ m: inout ProtoReader, kinds: RecordKinds) throws(Refusal) -> RecordDelta {
        var kindNumber: UInt64 = 0
        var id: RecordID?
        var registers: [(UInt64, Register, Int)] = []
        var children: [Child] = []
        while let (n, t) = try next(&m, "record") {
            switch (n, t) {
            case (1, 0):
                do throws(ProtoError) { kindNumber = try m.varint() } catch { throw bad(error, "kind") }
            case (2, 2):
                let r: Range<Int>
                do throws(ProtoError) { r = try m.body() } catch { throw bad(error, "id") }
                guard let i = RecordID(bytes: UnsafeRawBufferPointer(rebasing: m.base[r])) else {
                    throw Refusal(.invalidValue, "id: \(r.count) bytes, not 16")
                }
                id = i
            case (3, 2):
                guard registers.count < 64 else { throw Refusal(.tooLarge, "registers: more than 63") }
                var r: ProtoReader
                do throws(ProtoError) { r = try m.nested() } catch { throw bad(error, "registers") }
                let (number, reg) = try readRegister(&r, "registers[\(registers.count)]")
                registers.append((number, reg, registers.count))
            case (4, 2):
                var r: ProtoReader
                do throws(ProtoError) { r = try m.nested() } catch { throw bad(error, "children") }
                children.append(try readChild(&r, "children[\(children.count)]"))
            default:
                do throws(ProtoError) { try m.skip(t) } catch { throw bad(error, "record") }
            }
        }
        guard let schema = kinds.schema(number: kindNumber) else {
            throw Refusal(.unknownKind, "kind: \(kindNumber) is not a record kind this node knows")
        }
        guard let id else { throw Refusal(.invalidValue, "id: required") }
        var state = schema.emptyState(id)
        for (number, reg, k) in registers {
            guard let i = schema.registerIndex(number: number) else {
                throw Refusal(.unknownKind, "registers[\(k)].number: \(schema.name) has no register \(number)")
            }
            guard state.registers[i].isEmpty else {
                throw Refusal(.invalidValue, "registers[\(schema.registers[i].name)]: sent twice")
            }
            guard !reg.isEmpty else { throw Refusal(.invalidValue, "registers[\(schema.registers[i].name)]: empty") }
            state.registers[i] = reg
        }
        if !zip(children, children.dropFirst()).allSatisfy({ $0.key < $1.key }) {
            children.sort { $0.key < $1.key }
        }
        return RecordDelta(state: state, children: children)
    }

    @inline(__always)
    static func next(_ m: inout ProtoReader, _ path: @autoclosure () -> String) throws(Refusal) -> (Int, UInt8)? {
        do throws(ProtoError) { return try m.field() } catch { throw bad(error, path()) }
    }

    /// Decodes a whole RecordDelta message.
    public static func decodeDelta(_ bytes: UnsafeRawBufferPointer, kinds: RecordKinds) throws(Refusal) -> RecordDelta {
        var r = ProtoReader(bytes)
        return try readDelta(&r, kinds: kinds)
    }

    public static func encodeDelta(_ d: RecordDelta, schema: RecordSchema) -> [UInt8] {
        var w = ProtoWriter(capacity: 512)
        delta(&w, d, schema: schema)
        return w.bytes
    }
}
