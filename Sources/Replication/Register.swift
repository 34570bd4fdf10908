import CaseModel

/// One value of a register, with the write that made it and what that writer had
/// seen of the register (its causal context, which includes its own dot).
public struct Version<Value: Hashable & Sendable>: Hashable, Sendable {
    public let value: Value
    public let dot: Dot
    public let context: VersionVector

    public init(value: Value, dot: Dot, context: VersionVector) {
        var ctx = context
        ctx.add(dot)
        self.value = value
        self.dot = dot
        self.context = ctx
    }
}

/// A multi-value register with a deterministic winner. It keeps every version no
/// other version has seen (concurrent writes are siblings); the winner is the
/// sibling with the greatest dot (HLC stamp, then node id), and the others are the
/// losers a person must see. A write made after seeing all siblings supersedes them,
/// so resolving a conflict is an ordinary write, and it clears the conflict on every
/// replica that merges it.
///
/// Merge is the union of versions less those another version has seen: commutative,
/// associative and idempotent (property-tested). It relies on dots being unique, which
/// holds because a node's stamps strictly increase and remote authors are checked.
public struct Register<Value: Hashable & Sendable>: Hashable, Sendable {
    /// Sorted by dot; no version's dot is in another version's context.
    public private(set) var versions: [Version<Value>]

    public init() { versions = [] }

    public init(_ value: Value, dot: Dot) {
        versions = [Version(value: value, dot: dot, context: VersionVector(dot: dot))]
    }

    public init(versions: [Version<Value>]) {
        self.versions = []
        for v in versions { self = self.merged(Register(unchecked: [v])) }
    }

    private init(unchecked versions: [Version<Value>]) { self.versions = versions }

    public var winner: Version<Value>? { versions.last }
    public var value: Value? { versions.last?.value }
    public var losers: ArraySlice<Version<Value>> { versions.dropLast() }
    public var isConflicted: Bool { versions.count > 1 }
    public var isEmpty: Bool { versions.isEmpty }

    /// Everything the register's versions have seen.
    public var context: VersionVector {
        if versions.count == 1 { return versions[0].context }
        return versions.reduce(into: VersionVector()) { $0.join($1.context) }
    }

    /// A local write by a writer that sees this register as it is: supersedes every version.
    public mutating func write(_ value: Value, dot: Dot) {
        versions = [Version(value: value, dot: dot, context: context)]
    }

    public func merged(_ other: Register) -> Register {
        if other.versions.isEmpty || other == self { return self }
        if versions.isEmpty { return other }
        // Arrays, not a dictionary by dot: registers hold one or two versions, and
        // hashing dots was a visible share of merging.
        var all = versions
        for v in other.versions where !all.contains(where: { $0.dot == v.dot }) {
            // The same dot always carries the same write; keep ours if a forged one differs.
            all.append(v)
        }
        var kept = all.filter { v in !all.contains { w in w.dot != v.dot && w.context.contains(v.dot) } }
        if kept.count > 1 { kept.sort { $0.dot < $1.dot } }
        return Register(unchecked: kept)
    }

    public mutating func merge(_ other: Register) { self = merged(other) }

    /// The register without the versions `reject` refuses (remote writes that fail admission).
    /// `keep` is called once per version, in order; a register that keeps every
    /// version is returned as it is, without copying.
    public func filtered(_ keep: (Version<Value>) -> Bool) -> Register {
        var out: [Version<Value>]?
        for (i, v) in versions.enumerated() {
            if keep(v) {
                out?.append(v)
            } else if out == nil {
                out = Array(versions[..<i])
            }
        }
        return out.map { Register(unchecked: $0) } ?? self
    }
}
