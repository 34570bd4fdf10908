import CaseModel

/// Who writes a part of a record, as the kind names it: `origin` and `owner` for a
/// ticket, `sender` and `receiver` for a transfer. Which organisation plays a role
/// for one record is decided by the kind's `roles` from the record's own registers.
public struct Role: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }
}

/// Why a value or a record from a peer is refused. The raw values are stable: they
/// are the `reason` of `/v1/replication` and of the metric of refused records.
public enum RefusalReason: String, CaseIterable, Hashable, Sendable {
    /// The bytes are not the protobuf message they should be.
    case malformed
    /// A value breaks a rule of its field: a range, an enum value, a required part.
    case invalidValue = "invalid_value"
    /// Over a budget: bytes of a value, versions of a register, entries of a context.
    case tooLarge = "too_large"
    /// A node id the topology does not know.
    case unknownNode = "unknown_node"
    /// A context that claims what no write can have seen (a write later than itself).
    case impossibleCausality = "impossible_causality"
    /// A stamp further ahead of local time than the clock accepts (quarantined).
    case stampTooFarAhead = "stamp_too_far_ahead"
    /// The author's organisation does not write this part of this record.
    case notAuthorised = "not_authorised"
    /// The sending node may not relay writes of this author.
    case cannotSpeakFor = "cannot_speak_for"
    /// A write or child id seen before with different content.
    case equivocation
    /// A record kind, register or collection this node does not know.
    case unknownKind = "unknown_kind"
}

/// A refusal with the path of the offending part (`registers[progress].versions[0].value.status`).
public struct Refusal: Error, Hashable, Sendable, CustomStringConvertible {
    public let reason: RefusalReason
    public let detail: String
    public init(_ reason: RefusalReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }
    public var description: String { "\(reason.rawValue): \(detail)" }

    /// The same refusal with its path placed under `prefix`.
    public func at(_ prefix: String) -> Refusal { Refusal(reason, detail.isEmpty ? prefix : prefix + "." + detail) }
}

/// Which organisation each node belongs to (a region's code or a fund's), from the
/// topology: the nodes a peer may name.
public struct Directory: Sendable {
    public let organisation: [NodeID: String]
    /// Every organisation some node belongs to: those a transfer may be addressed to.
    public let organisations: Set<String>
    public init(_ organisation: [NodeID: String]) {
        self.organisation = organisation
        organisations = Set(organisation.values)
    }
    public func org(_ node: NodeID) -> String? { organisation[node] }
    public func knows(_ node: NodeID) -> Bool { organisation[node] != nil }
    public var count: Int { organisation.count }
}

/// What a value check may consult.
public struct CheckContext: Sendable {
    public let directory: Directory
    public init(directory: Directory) { self.directory = directory }
}

/// One register of a kind: its number (wire and store tag, never reused), its name,
/// who writes it, its byte budget, how a value is checked and how a value is shown
/// beside its rival in a conflict.
public struct RegisterDescriptor: Sendable {
    public let number: UInt8
    public let name: String
    /// A version may be written by an organisation playing any of these roles.
    public let writers: [Role]
    public let maxValueBytes: Int
    /// Decodes `value` and checks every rule of its fields; throws naming the field.
    public let check: @Sendable (ValueBytes, CheckContext) throws(Refusal) -> Void
    public let show: @Sendable (ValueBytes) -> String
    /// Every field the register holds, shown: a register of several fields (a topic
    /// with its support measure) must show each in a conflict, or a person choosing
    /// between two values could not see what a loser would throw away.
    public let fields: @Sendable (ValueBytes) -> [ShownField]
    /// The capability (proto/README §8.1) of a register added after the base protocol: it
    /// goes only over links that speak it. nil: part of the base protocol.
    public let capability: String?

    public init(number: UInt8, name: String, writer: Role, maxValueBytes: Int,
                check: @escaping @Sendable (ValueBytes, CheckContext) throws(Refusal) -> Void,
                show: @escaping @Sendable (ValueBytes) -> String,
                fields: (@Sendable (ValueBytes) -> [ShownField])? = nil, capability: String? = nil) {
        self.init(number: number, name: name, writers: [writer], maxValueBytes: maxValueBytes, check: check, show: show,
                  fields: fields, capability: capability)
    }

    public init(number: UInt8, name: String, writers: [Role], maxValueBytes: Int,
                check: @escaping @Sendable (ValueBytes, CheckContext) throws(Refusal) -> Void,
                show: @escaping @Sendable (ValueBytes) -> String,
                fields: (@Sendable (ValueBytes) -> [ShownField])? = nil, capability: String? = nil) {
        precondition((1...63).contains(number), "register numbers are 1–63")
        precondition(!writers.isEmpty, "a register has a writer")
        self.capability = capability
        self.number = number
        self.name = name
        self.writers = writers
        self.maxValueBytes = maxValueBytes
        self.check = check
        self.show = show
        self.fields = fields ?? { [ShownField(name, show($0))] }
    }
}

/// One field of a register's value as a person reads it (nil: the field is empty).
public struct ShownField: Hashable, Sendable {
    public let name: String
    public let value: String?
    public init(_ name: String, _ value: String?) {
        self.name = name
        self.value = value
    }
}

/// Roles a record's own registers cannot tell, granted by records related to it: the
/// organisations a ticket has been transferred to or from may add notes to it, and
/// the receiver of its accepted redirect takes its ownership. The store derives them
/// (from its transfers) and hands them to admission and to its own edit checks, so
/// that both judge a write the same way.
public struct Grants: Sendable, Equatable {
    public var organisations: [Role: Set<String>]
    public init(_ organisations: [Role: Set<String>] = [:]) { self.organisations = organisations }
    public static let none = Grants()

    /// Whether `org` plays one of `writers` for a record whose own roles are `roles`.
    public func entitles(_ org: String, among writers: [Role], roles: [Role: String]) -> Bool {
        writers.contains { roles[$0] == org || organisations[$0]?.contains(org) == true }
    }
}

/// One grow-only collection of child records (a ticket's notes, its history).
public struct CollectionDescriptor: Sendable {
    public let number: UInt8
    public let name: String
    /// A child may be written by an organisation playing any of these roles.
    public let writers: [Role]
    public let maxValueBytes: Int
    public let check: @Sendable (ValueBytes, CheckContext) throws(Refusal) -> Void
    /// As a register's: the capability of a collection added after the base protocol.
    public let capability: String?

    public init(number: UInt8, name: String, writers: [Role], maxValueBytes: Int,
                check: @escaping @Sendable (ValueBytes, CheckContext) throws(Refusal) -> Void, capability: String? = nil) {
        precondition(number >= 1, "collection numbers are 1–255")
        self.capability = capability
        self.number = number
        self.name = name
        self.writers = writers
        self.maxValueBytes = maxValueBytes
        self.check = check
    }
}

/// A record kind's table: everything the generic core needs to merge, admit, check,
/// list conflicts of, encode and store records of this kind. A new kind is a schema
/// and a conformance to `ReplicatedRecord`, nothing else.
public struct RecordSchema: Sendable {
    public let kind: RecordKindID
    public let name: String
    /// Ascending by number.
    public let registers: [RegisterDescriptor]
    /// Ascending by number.
    public let collections: [CollectionDescriptor]
    /// Indexes of the registers whose values decide `roles`: admitted first, so that
    /// the rest of a delta is judged against the authority they establish.
    public let authorityRegisters: [Int]
    /// Which organisation plays each role for a record in this state (nil where the
    /// deciding register has not arrived).
    public let roles: @Sendable (RecordState, Directory) -> [Role: String]
    /// The role whose organisation is the record's home (a ticket's origin): its own
    /// writes of any part, relayed by its own nodes, are admitted by its nodes as the
    /// relaying node admitted them. A part written before ownership moved away (and
    /// judged then) may reach another of the home's nodes before the transfer that
    /// explains the move; judged again there it would be refused, and kept elsewhere.
    public let homeRole: Role?
    /// Rules that join registers of one record (a ticket's channel and its citizen
    /// data), judged after every value of a delta passed its own check: the model's
    /// rule, as the operator API applies it to a whole draft.
    public let recordCheck: (@Sendable (RecordDelta, CheckContext) throws(Refusal) -> Void)?

    /// Most versions one register may hold: one per node of its writing organisation
    /// (a node's own writes supersede each other), so the topology bounds it too.
    public static let maxVersions = 64
    /// Most entries of a register's context: nodes of the federation (the topology bounds it).
    public static let maxContextEntries = 1_024

    /// The capability of a whole kind added after the base protocol: its records go only
    /// over links that speak it.
    public let capability: String?
    /// Every capability a part of this kind carries (the kind's own included).
    public let capabilities: Set<String>

    public init(kind: RecordKindID, name: String, registers: [RegisterDescriptor], collections: [CollectionDescriptor],
                authorityRegisters: [Int], homeRole: Role? = nil,
                recordCheck: (@Sendable (RecordDelta, CheckContext) throws(Refusal) -> Void)? = nil,
                capability: String? = nil,
                roles: @escaping @Sendable (RecordState, Directory) -> [Role: String]) {
        // Who may write every other part is judged from the authority registers: a peer
        // that could not hold them could judge nothing.
        precondition(authorityRegisters.allSatisfy { registers[$0].capability == nil }, "an authority register has no capability")
        self.capability = capability
        capabilities = Set(registers.compactMap(\.capability) + collections.compactMap(\.capability) + (capability.map { [$0] } ?? []))
        precondition(zip(registers, registers.dropFirst()).allSatisfy { $0.number < $1.number }, "registers by number")
        precondition(zip(collections, collections.dropFirst()).allSatisfy { $0.number < $1.number }, "collections by number")
        self.kind = kind
        self.name = name
        self.registers = registers
        self.collections = collections
        self.authorityRegisters = authorityRegisters
        self.homeRole = homeRole
        self.recordCheck = recordCheck
        self.roles = roles
        var byNumber = [Int](repeating: -1, count: 64)
        for (i, r) in registers.enumerated() { byNumber[Int(r.number)] = i }
        registerIndexByNumber = byNumber
    }

    private let registerIndexByNumber: [Int]

    /// The position of register `number` in the table.
    public func registerIndex(number: UInt64) -> Int? {
        guard number < 64 else { return nil }
        let i = registerIndexByNumber[Int(number)]
        return i < 0 ? nil : i
    }

    public func registerIndex(named name: String) -> Int? { registers.firstIndex { $0.name == name } }

    public func collection(number: UInt64) -> CollectionDescriptor? {
        collections.first { UInt64($0.number) == number }
    }

    public func collection(named name: String) -> CollectionDescriptor? { collections.first { $0.name == name } }

    /// An empty record of this kind.
    public func emptyState(_ id: RecordID) -> RecordState {
        RecordState(kind: kind, id: id, registerCount: registers.count)
    }

    /// Every register index, as a set for deltas carrying the whole record.
    public var allRegisters: RegisterSet { RegisterSet(count: registers.count) }

    /// What of a record of this kind a link speaking `link` may carry; nil when it may
    /// carry everything (every capability of the kind is in `link`: the common case).
    public func parts(for link: Capabilities) -> LinkParts? {
        guard !capabilities.allSatisfy(link.contains) else { return nil }
        guard capability.map(link.contains) ?? true else { return .nothing }
        var allowed = RegisterSet()
        for (i, r) in registers.enumerated() where r.capability.map(link.contains) ?? true { allowed.insert(i) }
        return LinkParts(kind: true, registers: allowed,
                         collectionsLeftOut: Set(collections.filter { !($0.capability.map(link.contains) ?? true) }.map(\.number)))
    }

    /// The capabilities of the parts `registers` and `collections` name.
    public func capabilities(registers changed: RegisterSet, collections: some Sequence<UInt8>) -> Set<String> {
        guard !capabilities.isEmpty else { return [] }
        var out = Set<String>()
        if let capability { out.insert(capability) }
        for i in changed { if let c = registers[i].capability { out.insert(c) } }
        for n in collections { if let c = collection(number: UInt64(n))?.capability { out.insert(c) } }
        return out
    }
}

/// The parts of a record of one kind a link may carry (`RecordSchema.parts(for:)`).
public struct LinkParts: Sendable, Equatable {
    /// false: no part of the kind goes over the link.
    public let kind: Bool
    public let registers: RegisterSet
    public let collectionsLeftOut: Set<UInt8>
    public static let nothing = LinkParts(kind: false, registers: .none, collectionsLeftOut: [])
}

/// A set of register indexes (a kind has at most 63 registers).
public struct RegisterSet: Hashable, Sendable, Sequence {
    public var bits: UInt64
    public init(bits: UInt64 = 0) { self.bits = bits }
    public init(count: Int) { bits = count >= 64 ? .max : (1 << UInt64(count)) - 1 }
    public static let none = RegisterSet()
    public var isEmpty: Bool { bits == 0 }
    public func contains(_ i: Int) -> Bool { bits & (1 << UInt64(i)) != 0 }
    public mutating func insert(_ i: Int) { bits |= 1 << UInt64(i) }
    public mutating func remove(_ i: Int) { bits &= ~(1 << UInt64(i)) }
    public mutating func formUnion(_ o: RegisterSet) { bits |= o.bits }
    public func subtracting(_ o: RegisterSet) -> RegisterSet { RegisterSet(bits: bits & ~o.bits) }
    public var count: Int { bits.nonzeroBitCount }

    public func makeIterator() -> AnyIterator<Int> {
        var rest = bits
        return AnyIterator {
            guard rest != 0 else { return nil }
            let i = rest.trailingZeroBitCount
            rest &= rest - 1
            return i
        }
    }
}

/// The kinds a node knows, by number.
public struct RecordKinds: Sendable {
    public let schemas: [RecordSchema]
    private let byKind: [RecordSchema?]

    public init(_ schemas: [RecordSchema]) {
        self.schemas = schemas.sorted { $0.kind < $1.kind }
        var t = [RecordSchema?](repeating: nil, count: 256)
        for s in schemas {
            precondition(t[Int(s.kind.rawValue)] == nil, "kind \(s.kind) registered twice")
            t[Int(s.kind.rawValue)] = s
        }
        byKind = t
    }

    public subscript(kind: RecordKindID) -> RecordSchema? { byKind[Int(kind.rawValue)] }

    public func schema(number: UInt64) -> RecordSchema? { number < 256 ? byKind[Int(number)] : nil }

    public func schema(named name: String) -> RecordSchema? { schemas.first { $0.name == name } }
}

/// A typed record kind: the model value its registers materialise into, and the
/// register values of a model value. `Ticket` is the first conformer.
public protocol ReplicatedRecord: Sendable {
    static var schema: RecordSchema { get }
    /// The value of each register, aligned with `schema.registers`.
    var registerValues: [ValueBytes] { get }
    /// The record as every register's winner says; nil until every register the model
    /// needs has arrived. `local` is what the store keeps beside it (its edit counter).
    static func materialise(_ state: RecordState, local: LocalRecordInfo) -> Self?
}

/// What a store keeps about a record beside its replicated state: never replicated.
public struct LocalRecordInfo: Hashable, Sendable {
    /// Increases by one with every change of the registers here: the HTTP ETag.
    public var version: UInt64
    public init(version: UInt64) { self.version = version }
}

extension RecordState {
    /// Records a local edit: every register whose value differs between `old` and `new`
    /// is written with `dot` (every register, for a new record). Returns the registers
    /// written. A register this replica does not hold (a citizen detail outside a
    /// partner's scope) is empty here and stays so unless the edit changes it: writing
    /// it would be a write of another organisation's register, refused by every peer.
    @discardableResult
    public mutating func record<R: ReplicatedRecord>(_ new: R, from old: R?, dot: Dot) -> RegisterSet {
        let newValues = new.registerValues
        let oldValues = old?.registerValues
        var written = RegisterSet()
        for i in registers.indices where oldValues == nil || oldValues![i] != newValues[i] {
            registers[i].write(newValues[i], dot: dot)
            written.insert(i)
        }
        return written
    }
}
