import CaseModel

/// A kind of replicated record (ticket, transfer, …): its number on the wire and in
/// store keys, 1–255.
public struct RecordKindID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// The registers of one record, aligned with its kind's register table (index i
/// holds `schema.registers[i]`). Children (notes, history events) are not held here:
/// a record may have any number of them, so they live and travel on their own.
public struct RecordState: Hashable, Sendable {
    public let kind: RecordKindID
    public let id: RecordID
    public var registers: [Register]

    /// A record with no register written yet.
    public init(kind: RecordKindID, id: RecordID, registerCount: Int) {
        self.kind = kind
        self.id = id
        registers = Array(repeating: Register(), count: registerCount)
    }

    public init(kind: RecordKindID, id: RecordID, registers: [Register]) {
        self.kind = kind
        self.id = id
        self.registers = registers
    }

    public func merged(_ other: RecordState) -> RecordState {
        precondition(other.kind == kind && other.id == id && other.registers.count == registers.count,
                     "merging different records")
        var m = self
        for i in registers.indices where !other.registers[i].isEmpty {
            m.registers[i].merge(other.registers[i])
        }
        return m
    }

    public mutating func merge(_ other: RecordState) { self = merged(other) }

    /// The latest stamp of any write the registers have seen.
    public var latestStamp: Stamp {
        var m = Stamp.zero
        for r in registers { let s = r.latestStamp; if s > m { m = s } }
        return m
    }

    /// Every write the registers hold or have seen.
    public var clock: VersionVector {
        registers.reduce(into: VersionVector()) { $0.join($1.seen) }
    }

    public var isConflicted: Bool { registers.contains { $0.isConflicted } }
}

/// An immutable child record of a grow-only collection (a note, a history event):
/// written once by the node and at the stamp of its dot, never changed or removed.
public struct Child: Hashable, Sendable {
    /// The collection's number in the kind's table.
    public let collection: UInt8
    public let id: RecordID
    public let dot: Dot
    public let value: ValueBytes

    public init(collection: UInt8, id: RecordID, dot: Dot, value: ValueBytes) {
        self.collection = collection
        self.id = id
        self.dot = dot
        self.value = value
    }

    /// Children of one record are keyed by collection and id.
    public var key: ChildKey { ChildKey(collection: collection, id: id) }

    /// Of two variants of one child (a forged id), the one every replica keeps.
    public static func preferred(_ a: Child, _ b: Child) -> Child {
        if a == b { return a }
        if a.dot != b.dot { return a.dot < b.dot ? a : b }
        return Version.precedes(a.value, b.value) ? a : b
    }
}

extension Child {
    /// A child holding `value` in `collection`, for checking a value on its own: a
    /// collection's check judges the value, not the id or dot placed around it here.
    public static func checking(_ value: ValueBytes, in collection: UInt8) -> Child {
        Child(collection: collection, id: RecordID(high: 0, low: 0), dot: Dot(node: NodeID(trusted: "x"), stamp: Stamp(raw: 1)),
              value: value)
    }
}

public struct ChildKey: Hashable, Comparable, Sendable {
    public let collection: UInt8
    public let id: RecordID
    public init(collection: UInt8, id: RecordID) {
        self.collection = collection
        self.id = id
    }
    public static func < (a: Self, b: Self) -> Bool {
        a.collection != b.collection ? a.collection < b.collection : a.id < b.id
    }
}

/// What travels: the registers of a record that changed (each whole) and the children
/// that are new. Registers not in the delta are empty. Any part of a record's state
/// is a valid delta, and merging one is idempotent.
public struct RecordDelta: Hashable, Sendable {
    public var state: RecordState
    /// Sorted by key, unique.
    public var children: [Child]

    public init(state: RecordState, children: [Child] = []) {
        self.state = state
        self.children = children
    }

    public var kind: RecordKindID { state.kind }
    public var id: RecordID { state.id }
    public var isEmpty: Bool { children.isEmpty && state.registers.allSatisfy(\.isEmpty) }
}

/// A whole record in memory: its registers and every child. The store never holds a
/// record this way (children live in their own database); merge-law tests and the
/// simulation do.
public struct Record: Hashable, Sendable {
    public var state: RecordState
    public var children: [ChildKey: Child]

    public init(state: RecordState, children: [ChildKey: Child] = [:]) {
        self.state = state
        self.children = children
    }

    public mutating func merge(_ delta: RecordDelta) {
        state.merge(delta.state)
        for c in delta.children { children[c.key] = children[c.key].map { Child.preferred($0, c) } ?? c }
    }

    public func merged(_ other: Record) -> Record {
        var m = self
        m.state.merge(other.state)
        m.children.merge(other.children) { Child.preferred($0, $1) }
        return m
    }

    /// The whole record as one delta.
    public var delta: RecordDelta { RecordDelta(state: state, children: children.values.sorted { $0.key < $1.key }) }
}
