/// A ticket handed from one organisation to another (DOMAIN.md, "Transfer"): a
/// region's contact centre to a federal fund or to another region. Addressed to an
/// organisation, never to a node.
public enum TransferKind: String, CaseIterable, Sendable, Codable {
    /// Ownership moves to the receiver on acceptance; the receiver's own 59-FZ clock starts when it registers it.
    case redirect = "REDIRECT"
    /// The sender keeps ownership and asks for information; the answer is due in 15 days.
    case infoRequest = "INFO_REQUEST"
    /// For information only.
    case copy = "COPY"
}

/// Where a transfer stands. The order of the cases is the forward order of the
/// lifecycle (`rank`): every legal step moves to a later case, and of two steps taken
/// concurrently the later case wins, so acceptance beats a concurrent cancellation or
/// rejection and completion beats a concurrent return.
public enum TransferState: String, CaseIterable, Sendable, Codable {
    case sent = "SENT"
    /// The receiving organisation's node has committed it (a transport acknowledgement).
    case delivered = "DELIVERED"
    /// By the sender, before acceptance.
    case cancelled = "CANCELLED"
    /// By the receiver, from DELIVERED, with a reason: the ticket goes back to the sender's IN_WORK.
    case rejected = "REJECTED"
    case accepted = "ACCEPTED"
    /// By the receiver, from ACCEPTED, with a reason: the ticket goes back to the sender's IN_WORK.
    case returned = "RETURNED"
    case completed = "COMPLETED"

    /// Position in the forward order.
    public var rank: Int { TransferState.allCases.firstIndex(of: self)! }

    /// No further step: the transfer is over.
    public var isFinal: Bool { [.cancelled, .rejected, .returned, .completed].contains(self) }

    /// The receiver has not accepted yet (the sender may still cancel; past its due
    /// time it is overdue).
    public var awaitsAcceptance: Bool { self == .sent || self == .delivered }

    /// Who may take a step into this state.
    public var takenBy: TransferSide? {
        switch self {
        case .sent: return nil
        case .cancelled: return .sender
        case .delivered, .rejected, .accepted, .returned, .completed: return .receiver
        }
    }

    /// The states a step into this one may start from.
    public var from: Set<TransferState> {
        switch self {
        case .sent: return []
        case .delivered: return [.sent]
        case .cancelled: return [.sent, .delivered]
        case .rejected: return [.delivered]
        case .accepted: return [.delivered]
        case .returned, .completed: return [.accepted]
        }
    }

    /// A reason code and text are required (rejection, return).
    public var needsReason: Bool { self == .rejected || self == .returned }
}

public enum TransferSide: String, Sendable, Codable {
    case sender, receiver
}

/// The citizen fields a transfer lets its receiver see (its personal-data scope).
public enum CitizenField: String, CaseIterable, Sendable, Codable {
    case ref, name, snils, phone
}

/// What the sender writes when it creates a transfer; never changed afterwards.
public struct TransferOrder: Hashable, Sendable {
    public var ticket: TicketID
    public var fromOrganisation: String
    public var fromNode: NodeID
    public var toOrganisation: String
    public var kind: TransferKind
    public var reasonCode: String
    public var reasonText: String
    public var scope: Set<CitizenField>
    public var createdAt: Millis
    public var dueAt: Millis

    public init(ticket: TicketID, fromOrganisation: String, fromNode: NodeID, toOrganisation: String, kind: TransferKind,
                reasonCode: String, reasonText: String, scope: Set<CitizenField>, createdAt: Millis, dueAt: Millis) {
        self.ticket = ticket
        self.fromOrganisation = fromOrganisation
        self.fromNode = fromNode
        self.toOrganisation = toOrganisation
        self.kind = kind
        self.reasonCode = reasonCode
        self.reasonText = reasonText
        self.scope = scope
        self.createdAt = createdAt
        self.dueAt = dueAt
    }

    /// Where it goes: another organisation of the federation (`organisations`: those
    /// the topology names; nil where no topology is known), and whence, as the order
    /// names it (the operator API fills `from` in from the node's own organisation).
    public static func validate(to: String, from: String, organisations: Set<String>?) throws(TicketError) {
        let rule = "2 to 32 lower-case letters, digits and hyphens (an organisation's id)"
        guard OrganisationID.isValid(to) else { throw .invalidField(field: "to", rule: rule) }
        guard OrganisationID.isValid(from) else { throw .invalidField(field: "from", rule: rule) }
        guard to != from else { throw .invalidField(field: "to", rule: "a transfer goes to another organisation") }
        if let organisations, !organisations.contains(to) {
            throw .invalidField(field: "to", rule: "\(to) is not an organisation of the federation")
        }
    }

    /// The reason's code (`reason.code`), of an order and of a step.
    public static func validate(reasonCode: String) throws(TicketError) { try Validation.code(reasonCode, field: "reason.code") }

    /// The reason's text (`reason.text`), of an order and of a step.
    public static func validate(reasonText: String) throws(TicketError) {
        try Validation.text(reasonText, field: "reason.text", maxBytes: TransferBudget.reasonTextBytes)
    }

    /// The personal-data scope: each field at most once (unknown fields are refused
    /// as enumeration values, `Validation.notOneOf`).
    public static func validate(scope: [CitizenField]) throws(TicketError) {
        var seen = Set<CitizenField>()
        for f in scope where !seen.insert(f).inserted { throw Validation.listedTwice(f.rawValue, field: "scope") }
    }

    /// When it was made and when the receiver should have accepted it: plausible
    /// instants, the due time later (the operator API makes it now, so `due` must be
    /// in the future).
    public static func validate(createdAt: Millis, dueAt: Millis) throws(TicketError) {
        try PlausibleTime.check(createdAt, field: "createdAt")
        try PlausibleTime.check(dueAt, field: "due")
        guard dueAt > createdAt else {
            throw .invalidField(field: "due", rule: "must be later than the transfer's creation (in the future when it is sent)")
        }
    }
}

/// Byte budgets of a transfer's values.
public enum TransferBudget {
    public static let reasonTextBytes = 2_000
    public static let answerBytes = Budget.noteBytes
}

/// One step of a transfer's lifecycle, as a node of one side took it. Steps are
/// never changed or removed: the state is what they add up to (`TransferSteps`).
public struct TransferStep: Hashable, Sendable {
    public var id: RecordID
    public var state: TransferState
    public var node: NodeID
    public var stamp: Stamp
    public var actor: Actor
    public var reasonCode: String?
    public var reasonText: String?
    /// The answer of an INFO_REQUEST, with COMPLETED.
    public var answer: String?

    public init(id: RecordID, state: TransferState, node: NodeID, stamp: Stamp, actor: Actor,
                reasonCode: String? = nil, reasonText: String? = nil, answer: String? = nil) {
        self.id = id
        self.state = state
        self.node = node
        self.stamp = stamp
        self.actor = actor
        self.reasonCode = reasonCode
        self.reasonText = reasonText
        self.answer = answer
    }

    public var at: Millis { stamp.millis }

    /// The answer of an INFO_REQUEST (`answer`).
    public static func validate(answer: String) throws(TicketError) {
        try Validation.text(answer, field: "answer", maxBytes: TransferBudget.answerBytes)
    }

    /// A rejection or a return without its reason code and text (nil: nothing missing).
    public static func missingReason(state: TransferState, reasonCode: String?, reasonText: String?) -> TransferError? {
        guard state.needsReason && ((reasonCode ?? "").isEmpty || (reasonText ?? "").isEmpty) else { return nil }
        return .reasonRequired(step: state)
    }
}

/// The lifecycle as a pure function of the steps taken (a grow-only set, merged by
/// union): the state is the furthest step by the forward order, ties by the later
/// stamp (then node). Adding steps never moves the state backwards, so replicas that
/// hold the same steps show the same state whatever order the steps arrived in. A step
/// that was overtaken by one it could not precede (a cancellation or rejection beside
/// an acceptance, a return beside a completion) is a conflict a person must see.
public struct TransferSteps: Hashable, Sendable {
    public private(set) var steps: [TransferStep]

    public init(_ steps: [TransferStep] = []) {
        self.steps = []
        for s in steps { add(s) }
    }

    /// Forward order, then stamp, then node, then id: a total order on steps.
    static func before(_ a: TransferStep, _ b: TransferStep) -> Bool {
        if a.state.rank != b.state.rank { return a.state.rank < b.state.rank }
        if a.stamp != b.stamp { return a.stamp < b.stamp }
        if a.node != b.node { return a.node < b.node }
        return a.id < b.id
    }

    public mutating func add(_ step: TransferStep) {
        guard !steps.contains(where: { $0.id == step.id }) else { return }
        steps.insert(step, at: steps.firstIndex { TransferSteps.before(step, $0) } ?? steps.endIndex)
    }

    /// The step that decides the state (nil: only SENT).
    public var deciding: TransferStep? { steps.last }
    public var state: TransferState { deciding?.state ?? .sent }

    /// Steps the deciding one overtook although they could not lead to it: the
    /// losing sides of concurrent decisions.
    public var conflicts: [TransferStep] {
        let s = state
        let path = TransferSteps.predecessors(of: s)
        return steps.filter { $0.state != s && !path.contains($0.state) }
    }

    /// Every state a legal path to `state` passes through.
    static func predecessors(of state: TransferState) -> Set<TransferState> {
        var out = Set<TransferState>()
        var frontier = state.from
        while let next = frontier.popFirst() {
            if out.insert(next).inserted { frontier.formUnion(next.from) }
        }
        return out
    }

    /// When the receiver accepted (the first acceptance).
    public var acceptedAt: Millis? { steps.first { $0.state == .accepted }?.at }
    /// The receiver's node that accepted first: the node that took the ticket over.
    public var acceptedBy: NodeID? { steps.first { $0.state == .accepted }?.node }
    public var deliveredAt: Millis? { steps.first { $0.state == .delivered }?.at }
}

/// Why a step on a transfer is refused; the edge turns these into messages.
public enum TransferError: Error, Equatable, Sendable {
    /// The other side takes this step.
    case wrongSide(step: TransferState, side: TransferSide)
    /// The transfer is not in a state this step starts from.
    case wrongState(step: TransferState, current: TransferState)
    case reasonRequired(step: TransferState)
    /// A ticket has at most one active REDIRECT.
    case redirectActive(existing: RecordID)
    case invalid(field: String, rule: String)

    /// The field the edge names (a step's state, its reason, the transfer's kind, …).
    public var field: String {
        switch self {
        case .wrongSide, .wrongState: return "state"
        case .reasonRequired: return "reason"
        case .redirectActive: return "kind"
        case .invalid(let f, _): return f
        }
    }

    /// The rule broken, as the operator API and the wire both say it.
    public var message: String {
        switch self {
        case .wrongSide(let step, let side):
            return "\(step.rawValue) is not a step this organisation takes (it is the \(side == .sender ? "receiver" : "sender")'s, or this organisation is not a party)"
        case .wrongState(let step, let current):
            return "the transfer is \(current.rawValue); \(step.rawValue) follows \(step.from.map(\.rawValue).sorted().joined(separator: " or ")) only"
        case .reasonRequired(let step):
            return "reason: \(step.rawValue) needs a reason code and a reason text"
        case .redirectActive(let existing):
            return "the ticket has an active REDIRECT already (\(existing)); cancel it or wait for its end"
        case .invalid(let field, let rule):
            return "\(field): \(rule)"
        }
    }
}

public enum TransferLifecycle {
    /// A step `side` wants to take on a transfer now in `current`: refused with the
    /// rule it breaks, or nil when it may be taken.
    public static func check(_ step: TransferState, by side: TransferSide, current: TransferState,
                             reasonCode: String?, reasonText: String?) -> TransferError? {
        guard step.takenBy == side else { return .wrongSide(step: step, side: side) }
        guard step.from.contains(current) else { return .wrongState(step: step, current: current) }
        return TransferStep.missingReason(state: step, reasonCode: reasonCode, reasonText: reasonText)
    }

    /// Days an INFO_REQUEST's answer is due in.
    public static let infoRequestDays = 15
    /// The ticket status at the sender while a transfer of `kind` is in `state`.
    public static func senderStatus(kind: TransferKind, state: TransferState) -> TicketStatus? {
        switch (kind, state) {
        case (.redirect, .sent), (.redirect, .delivered): return .transferPending
        case (.redirect, .accepted), (.redirect, .completed): return .transferredOut
        case (.redirect, .rejected), (.redirect, .returned), (.redirect, .cancelled): return .inWork
        default: return nil
        }
    }

    /// Unaccepted past its due time: flagged in lists, metrics and cluster health.
    public static func isOverdue(state: TransferState, dueAt: Millis, now: Millis) -> Bool {
        state.awaitsAcceptance && now > dueAt
    }
}

/// A transfer as an operator sees it: the sender's order and the steps both sides took.
public struct Transfer: Hashable, Sendable {
    public var id: RecordID
    public var order: TransferOrder
    public var steps: TransferSteps
    /// The store's edit counter of the record (the HTTP ETag).
    public var version: UInt64

    public init(id: RecordID, order: TransferOrder, steps: TransferSteps = TransferSteps(), version: UInt64 = 1) {
        self.id = id
        self.order = order
        self.steps = steps
        self.version = version
    }

    public var state: TransferState { steps.state }

    /// Which side an organisation is on, if any.
    public func side(of organisation: String) -> TransferSide? {
        organisation == order.fromOrganisation ? .sender : organisation == order.toOrganisation ? .receiver : nil
    }
}
