import CaseModel

/// One write: the node that made it and the HLC stamp it made it at. A node's
/// stamps strictly increase, so a dot names a write uniquely.
public struct Dot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let node: NodeID
    public let stamp: Stamp

    public init(node: NodeID, stamp: Stamp) {
        self.node = node
        self.stamp = stamp
    }

    /// The deterministic order of concurrent writes: later stamp wins, then node id.
    public static func < (a: Dot, b: Dot) -> Bool {
        a.stamp != b.stamp ? a.stamp < b.stamp : a.node < b.node
    }

    public var description: String { "\(node)@\(stamp)" }
}

/// For each node, the latest stamp of its writes that have been seen. Join is the
/// pointwise maximum: commutative, associative and idempotent.
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    public private(set) var entries: [NodeID: Stamp]

    public init(_ entries: [NodeID: Stamp] = [:]) {
        self.entries = entries.filter { $0.value != .zero }
    }

    public init(dot: Dot) { self.entries = [dot.node: dot.stamp] }

    public subscript(node: NodeID) -> Stamp { entries[node] ?? .zero }

    /// Whether the write `dot` has been seen.
    public func contains(_ dot: Dot) -> Bool { self[dot.node] >= dot.stamp }

    public mutating func add(_ dot: Dot) {
        if dot.stamp > self[dot.node] { entries[dot.node] = dot.stamp }
    }

    public mutating func join(_ other: VersionVector) {
        for (node, stamp) in other.entries where stamp > self[node] { entries[node] = stamp }
    }

    public func joined(_ other: VersionVector) -> VersionVector {
        var v = self
        v.join(other)
        return v
    }

    /// Everything `other` has seen, this has seen too.
    public func dominates(_ other: VersionVector) -> Bool {
        other.entries.allSatisfy { self[$0.key] >= $0.value }
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// The latest stamp of any node.
    public var maxStamp: Stamp { entries.values.max() ?? .zero }

    public var description: String {
        "[" + entries.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: " ") + "]"
    }
}
