import CaseModel

/// A register value in its encoded form: the protobuf bytes of the register's value
/// message (the kind's table names it). The generic core merges, compares and ships
/// values as bytes; a kind's codecs give them their types.
public typealias ValueBytes = [UInt8]

/// Bytes a value can be read from in place: a value of a record in memory, or a slice of
/// a stored view read straight from the store's pages (no copy per register).
public protocol ValueSource {
    func withValueBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R
}

extension Array: ValueSource where Element == UInt8 {
    @inlinable public func withValueBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R { withUnsafeBytes(body) }
}

extension UnsafeRawBufferPointer: ValueSource {
    @inlinable public func withValueBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R { body(self) }
}

/// One value of a register and the write that made it.
public struct Version: Hashable, Sendable {
    public let dot: Dot
    public let value: ValueBytes

    public init(dot: Dot, value: ValueBytes) {
        self.dot = dot
        self.value = value
    }

    /// The order in which two variants of one dot (a forged or corrupted write) are
    /// settled, the same on every replica: fewer bytes, then bytewise.
    static func precedes(_ a: ValueBytes, _ b: ValueBytes) -> Bool {
        a.count != b.count ? a.count < b.count : a.lexicographicallyPrecedes(b)
    }
}

/// A multi-value register with a deterministic winner, in the delta-state form of
/// Almeida, Shoker and Baquero (a dot store and a causal context): the concurrent
/// writes nobody has superseded (`versions`, sorted by dot) and everything the
/// register's writers had seen (`seen`, which covers every version's dot).
///
/// The winner is the version with the greatest dot (HLC stamp, then node id); the
/// others are losers a person must see. A local write supersedes every version, so
/// resolving a conflict is an ordinary write, and it clears the conflict on every
/// replica that merges it.
///
/// Merge keeps a version if both sides hold it, or if the side without it has not
/// seen it; contexts join. Because the context is explicit (not rebuilt from the
/// surviving versions), merge is commutative, associative and idempotent even over
/// forged contexts; two variants of one dot are settled by `Version.precedes`
/// (property-tested with dishonest histories). The store refuses such variants on
/// arrival; the rule here only keeps the laws.
public struct Register: Hashable, Sendable {
    public private(set) var versions: [Version]
    public private(set) var seen: VersionVector

    public init() {
        versions = []
        seen = VersionVector()
    }

    public init(_ value: ValueBytes, dot: Dot) {
        versions = [Version(dot: dot, value: value)]
        seen = VersionVector(dot: dot)
    }

    /// A register from decoded parts: versions sorted by dot with unique dots (the
    /// caller checked), and the context widened to cover them.
    public init(sortedVersions: [Version], seen: VersionVector) {
        versions = sortedVersions
        var s = seen
        for v in sortedVersions where !s.contains(v.dot) { s.add(v.dot) }
        self.seen = s
    }

    public var winner: Version? { versions.last }
    public var value: ValueBytes? { versions.last?.value }
    public var losers: ArraySlice<Version> { versions.dropLast() }
    public var isConflicted: Bool { versions.count > 1 }
    /// No version and nothing seen: a register never written (or absent from a delta).
    public var isEmpty: Bool { versions.isEmpty && seen.isEmpty }

    /// A local write by a writer that sees this register as it is: supersedes every version.
    public mutating func write(_ value: ValueBytes, dot: Dot) {
        seen.add(dot)
        versions = [Version(dot: dot, value: value)]
    }

    public func merged(_ other: Register) -> Register {
        if other.isEmpty || other == self { return self }
        if isEmpty { return other }
        var out: [Version] = []
        out.reserveCapacity(max(versions.count, other.versions.count))
        var i = 0, j = 0
        while i < versions.count || j < other.versions.count {
            if j == other.versions.count || (i < versions.count && versions[i].dot < other.versions[j].dot) {
                if !other.seen.contains(versions[i].dot) { out.append(versions[i]) }
                i += 1
            } else if i == versions.count || other.versions[j].dot < versions[i].dot {
                if !seen.contains(other.versions[j].dot) { out.append(other.versions[j]) }
                j += 1
            } else {
                let a = versions[i], b = other.versions[j]
                out.append(a.value == b.value || Version.precedes(a.value, b.value) ? a : b)
                i += 1
                j += 1
            }
        }
        var r = Register()
        r.versions = out
        r.seen = seen.joined(other.seen)
        return r
    }

    public mutating func merge(_ other: Register) { self = merged(other) }

    /// The latest stamp this register has seen.
    public var latestStamp: Stamp { seen.maxStamp }
}
