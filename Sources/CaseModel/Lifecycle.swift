/// The ticket lifecycle of DOMAIN.md as a table. A transition not in the table is
/// refused with an error naming both states.
public enum Lifecycle {
    /// Who may cause a transition.
    public enum Cause: Sendable, Equatable {
        /// An operator editing the ticket's status directly.
        case operatorEdit
        /// A transfer being sent, accepted, rejected or returned (transfer workflow).
        case transfer
        /// A merge of duplicates.
        case merge
    }

    public struct Rule: Sendable {
        public let from: TicketStatus
        public let to: TicketStatus
        public let cause: Cause
    }

    public static let rules: [Rule] = {
        var r: [Rule] = []
        func op(_ from: TicketStatus, _ tos: TicketStatus...) { for t in tos { r.append(Rule(from: from, to: t, cause: .operatorEdit)) } }
        func tr(_ from: TicketStatus, _ tos: TicketStatus...) { for t in tos { r.append(Rule(from: from, to: t, cause: .transfer)) } }
        op(.new, .registered)
        op(.registered, .inWork, .deferred, .closed)
        op(.inWork, .waiting, .answered, .deferred)
        op(.waiting, .inWork)
        op(.deferred, .inWork, .answered, .closed)
        op(.answered, .closed, .inWork)
        op(.closed, .reopened)
        op(.reopened, .inWork, .answered)
        tr(.registered, .transferPending)
        tr(.inWork, .transferPending)
        tr(.reopened, .transferPending)
        tr(.transferPending, .transferredOut, .inWork)
        tr(.transferredOut, .inWork)
        for s in TicketStatus.allCases where s != .merged && s != .transferredOut && s != .transferPending {
            r.append(Rule(from: s, to: .merged, cause: .merge))
        }
        return r
    }()

    private static let table: [TicketStatus: [TicketStatus: Cause]] = {
        var t: [TicketStatus: [TicketStatus: Cause]] = [:]
        for rule in rules { t[rule.from, default: [:]][rule.to] = rule.cause }
        return t
    }()

    /// The cause a transition needs, or nil when the lifecycle forbids it.
    public static func cause(from: TicketStatus, to: TicketStatus) -> Cause? {
        table[from]?[to]
    }

    /// Checks a transition made for `cause` on a ticket of `regime`.
    public static func check(from: TicketStatus, to: TicketStatus, regime: LegalRegime,
                             cause: Cause) throws(TicketError) {
        guard let needed = Lifecycle.cause(from: from, to: to) else {
            throw .transitionNotAllowed(from: from, to: to)
        }
        guard needed == cause else {
            throw .transitionNeedsWorkflow(from: from, to: to, workflow: needed)
        }
        // A 59-FZ appeal must be answered in writing: it cannot close at first contact
        // or from a deferral without an answer.
        if regime == .appeal59FZ && to == .closed && (from == .registered || from == .deferred) {
            throw .appealNeedsAnswer(from: from)
        }
        // Deferral is for ЕКЦ consultations (callback within 8 working hours).
        if regime == .appeal59FZ && to == .deferred {
            throw .deferralOnlyForConsultations
        }
    }
}
