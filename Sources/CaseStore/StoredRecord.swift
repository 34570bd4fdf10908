import CaseModel
import Replication

/// A record as the store keeps it: its registers, where each sits in the change feed,
/// and what only this store knows of it (its edit counter).
///
/// Stored as a protobuf message, so fields are added without a format change:
/// `StoredRecord { uint64 version = 1; repeated StoredRegister registers = 2; }` and
/// `StoredRegister { uint32 number = 1; repeated Version versions = 2; VersionVector seen = 3;
/// uint64 feed_sequence = 15; }` — the wire's Register with the feed position after it,
/// so that a sender copies the wire part without decoding it.
struct StoredRecord {
    var state: RecordState
    var local: LocalRecordInfo
    /// The feed sequence of each register's latest change (0: never written here).
    var feedSequence: [UInt64]

    init(state: RecordState, local: LocalRecordInfo, feedSequence: [UInt64]) {
        self.state = state
        self.local = local
        self.feedSequence = feedSequence
    }

    static func new(_ schema: RecordSchema, _ id: RecordID) -> StoredRecord {
        StoredRecord(state: schema.emptyState(id), local: LocalRecordInfo(version: 0),
                     feedSequence: Array(repeating: 0, count: schema.registers.count))
    }

    static let feedSequenceField: UInt64 = 15
    /// The largest edit counter a stored record may hold.
    static let maxVersion: UInt64 = (1 << 53) - 1

    func encode(_ schema: RecordSchema) -> [UInt8] {
        var w = ProtoWriter(capacity: 256)
        w.uint64(1, local.version)
        for (i, r) in state.registers.enumerated() where !r.isEmpty {
            w.message(2) { w in
                RecordCoding.registerFields(&w, number: schema.registers[i].number, r)
                w.uint64(StoredRecord.feedSequenceField, feedSequence[i])
            }
        }
        return w.bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, _ schema: RecordSchema, id: RecordID) throws(CorruptRecord) -> StoredRecord {
        var out = StoredRecord.new(schema, id)
        var r = ProtoReader(bytes)
        do {
            while let (n, t) = try r.field() {
                switch (n, t) {
                case (1, 0):
                    // The edit counter is stored bytes that edits add one to: past 2^53 − 1 (no
                    // record is edited that often) it is damaged, refused here rather than trap there.
                    out.local.version = try r.varint()
                    guard out.local.version <= maxVersion else { throw CorruptRecord(what: "record \(id): version \(out.local.version)") }
                case (2, 2):
                    var m = try r.nested()
                    var seq: UInt64 = 0
                    let (number, reg): (UInt64, Register)
                    do throws(Refusal) {
                        (number, reg) = try RecordCoding.readRegister(&m, "register") { m, n, t throws(ProtoError) in
                            guard n == Int(feedSequenceField), t == 0 else { return false }
                            seq = try m.varint()
                            return true
                        }
                    } catch {
                        throw CorruptRecord(what: "record \(id): \(error)")
                    }
                    // A register this build does not know (written by a later one) is left alone.
                    guard let i = schema.registerIndex(number: number) else { continue }
                    out.state.registers[i] = reg
                    out.feedSequence[i] = seq
                default: try r.skip(t)
                }
            }
        } catch let e as CorruptRecord {
            throw e
        } catch {
            throw CorruptRecord(what: "record \(id): \(error)")
        }
        return out
    }

    /// The wire bytes of the registers in `registers` (indexes), each a Register message
    /// as field `field` of the enclosing message, copied from the stored bytes.
    static func copyRegisters(_ stored: UnsafeRawBufferPointer, _ schema: RecordSchema, _ registers: RegisterSet,
                              field: UInt64, into w: inout ProtoWriter) throws(CorruptRecord) {
        var r = ProtoReader(stored)
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                guard n == 2, t == 2 else { try r.skip(t); continue }
                let body = try r.body()
                let bytes = UnsafeRawBufferPointer(rebasing: stored[body])
                // Everything before the store's own feed position (written last) is the wire's Register.
                var scan = ProtoReader(bytes)
                var number: UInt64?
                var end = 0
                while let (fn, ft) = try scan.field() {
                    if fn == Int(feedSequenceField) { break }
                    if fn == 1 && ft == 0 { number = try scan.varint() } else { try scan.skip(ft) }
                    end = scan.position
                }
                guard let number, let i = schema.registerIndex(number: number), registers.contains(i) else { continue }
                w.presentBytes(field, UnsafeRawBufferPointer(rebasing: bytes[0..<end]))
            }
        } catch {
            throw CorruptRecord(what: "record registers: \(error)")
        }
    }
}

/// A child as the store keeps it: `StoredChild { Dot dot = 3; bytes value = 4; }`, the
/// wire's Child without the collection and id its key holds.
enum StoredChild {
    static func encode(_ c: Child) -> [UInt8] {
        var w = ProtoWriter(capacity: 48 + c.value.count)
        RecordCoding.childBody(&w, c)
        return w.bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, collection: UInt8, id: RecordID) throws(CorruptRecord) -> Child {
        var r = ProtoReader(bytes)
        var dot: Dot?
        var value: [UInt8] = []
        do {
            while let (n, t) = try r.field() {
                switch (n, t) {
                case (3, 2): dot = try RecordCoding.readDot(&r, "dot")
                case (4, 2): value = try r.bytes()
                default: try r.skip(t)
                }
            }
        } catch {
            throw CorruptRecord(what: "child \(id): \(error)")
        }
        guard let dot else { throw CorruptRecord(what: "child \(id) without a dot") }
        return Child(collection: collection, id: id, dot: dot, value: value)
    }
}

/// One entry of the change feed: the parts of one record that changed together at
/// its sequence and still sit there. `FeedEntry { uint32 kind = 1; bytes id = 2;
/// uint64 registers = 3 (a bit per register number); repeated bytes children = 4
/// (collection + child id, 17 bytes each) }`.
struct FeedEntry: Equatable {
    var kind: RecordKindID
    var id: RecordID
    /// Bit n: register number n.
    var registerNumbers: UInt64
    var children: [ChildKey]

    /// Most children one entry lists: a merge adding more to one record spreads them
    /// over several sequences, so that no entry outgrows a frame.
    static let maxChildren = 64

    var isEmpty: Bool { registerNumbers == 0 && children.isEmpty }

    func encode() -> [UInt8] {
        var w = ProtoWriter(capacity: 32 + 19 * children.count)
        w.uint64(1, UInt64(kind.rawValue))
        w.presentBytes(2, id.bytes)
        w.uint64(3, registerNumbers)
        for c in children { w.presentBytes(4, [c.collection] + c.id.bytes) }
        return w.bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws(CorruptRecord) -> FeedEntry {
        var r = ProtoReader(bytes)
        var kind: UInt64 = 0, numbers: UInt64 = 0
        var id: RecordID?
        var children: [ChildKey] = []
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                switch (n, t) {
                case (1, 0): kind = try r.varint()
                case (2, 2): id = RecordID(bytes: try r.bytes())
                case (3, 0): numbers = try r.varint()
                case (4, 2):
                    let b = try r.bytes()
                    guard b.count == 17, let cid = RecordID(bytes: b[1...]) else { throw ProtoError.malformed }
                    children.append(ChildKey(collection: b[0], id: cid))
                default: try r.skip(t)
                }
            }
        } catch {
            throw CorruptRecord(what: "feed entry: \(error)")
        }
        guard let id, kind >= 1, kind <= 255 else { throw CorruptRecord(what: "feed entry without kind or id") }
        return FeedEntry(kind: RecordKindID(rawValue: UInt8(kind)), id: id, registerNumbers: numbers, children: children)
    }
}

extension RecordSchema {
    /// The register numbers of a set of register indexes, as a feed entry holds them.
    func numbers(_ set: RegisterSet) -> UInt64 {
        set.reduce(0) { $0 | (1 << UInt64(registers[$1].number)) }
    }

    /// The register indexes of a feed entry's numbers (numbers this build does not know are dropped).
    func indexes(numbers: UInt64) -> RegisterSet {
        var s = RegisterSet()
        var rest = numbers
        while rest != 0 {
            let n = rest.trailingZeroBitCount
            rest &= rest - 1
            if let i = registerIndex(number: UInt64(n)) { s.insert(i) }
        }
        return s
    }
}
