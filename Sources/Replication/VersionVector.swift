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
///
/// Kept as a small array sorted by node rather than a dictionary: a federation's
/// vectors name a handful of nodes, and hashing node ids was a visible share of
/// merging and decoding (perf, replication catch-up). The sorted form is also the
/// canonical one that codecs write.
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    public struct Entry: Hashable, Sendable {
        public let node: NodeID
        public let stamp: Stamp
        public init(node: NodeID, stamp: Stamp) {
            self.node = node
            self.stamp = stamp
        }
    }

    /// Sorted by node, no zero stamps, each node once.
    public private(set) var sorted: [Entry]

    public init(_ entries: [NodeID: Stamp] = [:]) {
        sorted = entries.filter { $0.value != .zero }.map { Entry(node: $0.key, stamp: $0.value) }.sorted { $0.node < $1.node }
    }

    public init(dot: Dot) { sorted = dot.stamp == .zero ? [] : [Entry(node: dot.node, stamp: dot.stamp)] }

    /// Entries in ascending node order, each node once (as decoders check); zero stamps are dropped.
    public init(sortedUnique entries: [Entry]) {
        precondition(zip(entries, entries.dropFirst()).allSatisfy { $0.node < $1.node }, "entries must be sorted and unique")
        sorted = entries.filter { $0.stamp != .zero }
    }

    /// Entries already sorted, unique and without zero stamps (a decoder that checked them).
    init(checkedSorted entries: [Entry]) { sorted = entries }

    public var entries: [NodeID: Stamp] { Dictionary(uniqueKeysWithValues: sorted.map { ($0.node, $0.stamp) }) }

    public subscript(node: NodeID) -> Stamp {
        for e in sorted where e.node == node { return e.stamp }
        return .zero
    }

    /// Whether the write `dot` has been seen.
    public func contains(_ dot: Dot) -> Bool { self[dot.node] >= dot.stamp }

    public mutating func add(_ dot: Dot) {
        guard dot.stamp != .zero else { return }
        for i in sorted.indices {
            if sorted[i].node == dot.node {
                if dot.stamp > sorted[i].stamp { sorted[i] = Entry(node: dot.node, stamp: dot.stamp) }
                return
            }
            if dot.node < sorted[i].node {
                sorted.insert(Entry(node: dot.node, stamp: dot.stamp), at: i)
                return
            }
        }
        sorted.append(Entry(node: dot.node, stamp: dot.stamp))
    }

    public mutating func join(_ other: VersionVector) {
        if other.sorted.isEmpty || other == self { return }
        if sorted.isEmpty { self = other; return }
        var out: [Entry] = []
        out.reserveCapacity(sorted.count + other.sorted.count)
        var i = 0, j = 0
        while i < sorted.count && j < other.sorted.count {
            let a = sorted[i], b = other.sorted[j]
            if a.node == b.node {
                out.append(a.stamp >= b.stamp ? a : b)
                i += 1; j += 1
            } else if a.node < b.node {
                out.append(a); i += 1
            } else {
                out.append(b); j += 1
            }
        }
        out += sorted[i...]
        out += other.sorted[j...]
        sorted = out
    }

    public func joined(_ other: VersionVector) -> VersionVector {
        var v = self
        v.join(other)
        return v
    }

    /// Everything `other` has seen, this has seen too.
    public func dominates(_ other: VersionVector) -> Bool {
        other.sorted.allSatisfy { self[$0.node] >= $0.stamp }
    }

    public var isEmpty: Bool { sorted.isEmpty }

    /// The latest stamp of any node.
    public var maxStamp: Stamp { sorted.lazy.map(\.stamp).max() ?? .zero }

    public var description: String {
        "[" + sorted.map { "\($0.node):\($0.stamp)" }.joined(separator: " ") + "]"
    }
}
