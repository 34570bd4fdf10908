/// Named features of the wire added within a protocol version (proto/README.md §8.1):
/// a new register, collection or record kind, a new transfer step. Both ends of a link
/// advertise the capabilities their builds support (the puller in its PullRequest, the
/// source in its StreamHeader); the link speaks the intersection. A node of a release
/// before capabilities sends none and ignores the fields: it reads as the empty set, the
/// base protocol.
///
/// The same check at every edge: a puller's request that breaks a rule is refused
/// BAD_REQUEST, a source's header that does is a protocol violation, a checkpoint's set
/// (what the puller says it holds) likewise. A name this build does not know is not an
/// error: a newer build knows more, and the intersection leaves it out.
public struct Capabilities: Hashable, Sendable, CustomStringConvertible {
    /// Sorted, unique, each a valid name.
    public let names: [String]

    /// More names than any build will have: a peer advertising more is broken or hostile.
    public static let maxNames = 64
    public static let maxNameLength = 48

    /// The base protocol: no capability (a peer of a release before capabilities).
    public static let base = Capabilities(checked: [])

    private init(checked names: [String]) { self.names = names }

    /// A build's own set, from names written in its source.
    public init(known names: [String]) {
        let sorted = Array(Set(names)).sorted()
        for n in sorted { precondition(Capabilities.rule(n) == nil, "capability \(n): \(Capabilities.rule(n)!)") }
        self.init(checked: sorted)
    }

    /// A set as a peer advertised it in `field`; throws naming the field and the rule.
    public init(advertised names: [String], field: String) throws(CapabilityError) {
        guard names.count <= Capabilities.maxNames else {
            throw CapabilityError(field: field, rule: "at most \(Capabilities.maxNames) capabilities, not \(names.count)")
        }
        var seen = Set<String>()
        for (i, n) in names.enumerated() {
            if let why = Capabilities.rule(n) { throw CapabilityError(field: "\(field)[\(i)]", rule: why) }
            guard seen.insert(n).inserted else {
                throw CapabilityError(field: "\(field)[\(i)]", rule: "\(n) is advertised twice")
            }
        }
        self.init(checked: seen.sorted())
    }

    /// Why `name` is not a capability name, or nil: 1–48 characters of lower-case ASCII
    /// letters, digits, '-' and '.', starting with a letter.
    static func rule(_ name: String) -> String? {
        let u = Array(name.utf8)
        guard (1...maxNameLength).contains(u.count) else {
            return "a capability name has 1–\(maxNameLength) bytes, not \(u.count)"
        }
        guard let first = u.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first),
              u.allSatisfy({ (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                  || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }) else {
            return "a capability name is lower-case ASCII letters, digits, '-' and '.', starting with a letter"
        }
        return nil
    }

    public func contains(_ name: String) -> Bool { names.contains(name) }
    public var isEmpty: Bool { names.isEmpty }

    /// What a link of these two ends speaks.
    public func intersection(_ other: Capabilities) -> Capabilities {
        Capabilities(checked: names.filter { other.contains($0) })
    }

    /// What of this set `other` lacks.
    public func subtracting(_ other: Capabilities) -> Capabilities {
        Capabilities(checked: names.filter { !other.contains($0) })
    }

    public var description: String { names.isEmpty ? "base" : names.joined(separator: ",") }
}

/// A capability set that breaks a rule, with the field that carried it.
public struct CapabilityError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let rule: String
    public var description: String { "\(field): \(rule)" }
}
