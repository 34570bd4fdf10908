/// Why the model refused an edit. The HTTP edge maps each case to a status code
/// and a JSON body that names the field and the rule.
public enum TicketError: Error, Equatable, Sendable {
    case invalidField(field: String, rule: String)
    /// A value over its byte budget (`Budget`): `bytes` of UTF-8 where `limit` are allowed.
    case tooLong(field: String, bytes: Int, limit: Int)
    case transitionNotAllowed(from: TicketStatus, to: TicketStatus)
    case transitionNeedsWorkflow(from: TicketStatus, to: TicketStatus, workflow: Lifecycle.Cause)
    case appealNeedsAnswer(from: TicketStatus)
    case deferralOnlyForConsultations
    case immutableField(field: String, status: TicketStatus)
    case extensionAlreadyUsed
    case extensionNotApplicable
    case readOnlyMirror(status: TicketStatus)
    /// This node's organisation does not write the field: another organisation owns the
    /// ticket (a partner of a transfer) or said it (the origin's fields).
    case notOwner(organisation: String)
    case personalDataOnMessenger

    public var field: String? {
        switch self {
        case .invalidField(let f, _): return f
        case .tooLong(let f, _, _): return f
        case .transitionNotAllowed, .transitionNeedsWorkflow, .appealNeedsAnswer, .deferralOnlyForConsultations:
            return "status"
        case .immutableField(let f, _): return f
        case .extensionAlreadyUsed, .extensionNotApplicable: return "extendAnswerByDays"
        case .readOnlyMirror, .notOwner: return nil
        case .personalDataOnMessenger: return "citizen"
        }
    }

    public var message: String {
        switch self {
        case .invalidField(let f, let rule): return "\(f): \(rule)"
        case .tooLong(let f, let bytes, let limit): return "\(f) is \(bytes) bytes of UTF-8; at most \(limit) are allowed"
        case .transitionNotAllowed(let from, let to):
            return "transition \(from.rawValue) → \(to.rawValue) is not allowed by the ticket lifecycle"
        case .transitionNeedsWorkflow(let from, let to, let w):
            let how: String
            switch w {
            case .transfer: how = "through the transfer workflow"
            case .merge: how = "through a merge of duplicates"
            case .operatorEdit: how = "by an operator's edit"
            }
            return "transition \(from.rawValue) → \(to.rawValue) happens only \(how)"
        case .appealNeedsAnswer(let from):
            return "a 59-FZ appeal cannot go \(from.rawValue) → CLOSED without an answer"
        case .deferralOnlyForConsultations:
            return "only ЕКЦ consultations can be DEFERRED; a 59-FZ appeal keeps its legal clock"
        case .immutableField(let f, let s):
            return "\(f) is immutable once registered (ticket is \(s.rawValue)); add a note to correct it"
        case .extensionAlreadyUsed: return "the answer deadline can be extended only once"
        case .extensionNotApplicable: return "only a registered 59-FZ appeal has an answer deadline to extend"
        case .readOnlyMirror(let s):
            switch s {
            case .transferPending: return "ticket is TRANSFER_PENDING: read-only until the receiving body accepts or rejects the redirect, or it is cancelled"
            case .merged: return "ticket is MERGED into another: edit the surviving ticket"
            default: return "ticket is \(s.rawValue): a read-only mirror of the receiving body's status"
            }
        case .notOwner(let org):
            return "this ticket is handled by organisation \(org); only its nodes change how it is handled (add a note instead)"
        case .personalDataOnMessenger:
            return "citizen: no citizen data may be taken through a foreign messenger (152-FZ); use another channel"
        }
    }
}
