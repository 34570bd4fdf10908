import CaseModel
import CaseStore
import NIOHTTP1

/// An error as the operator API reports it: a status and
/// `{"error": {"code": "...", "message": "...", "field": "..."}}`.
public struct APIError: Error, Sendable {
    public let status: HTTPResponseStatus
    public let code: String
    public let message: String
    public let field: String?
    /// Keys beside `code`, `message` and `field` where an error needs them: `currentVersion`,
    /// `currentStatus`/`attemptedStatus`, `allow`, `bytes`/`limitBytes`.
    public var extra: [(String, Detail)] = []
    /// Response headers the error requires (e.g. `Allow` with a 405).
    public var headers: [(String, String)] = []

    static func badRequest(_ code: String, _ message: String, field: String?) -> APIError {
        APIError(status: .badRequest, code: code, message: message, field: field)
    }
    static func unprocessable(_ code: String, _ message: String, field: String?) -> APIError {
        APIError(status: .unprocessableEntity, code: code, message: message, field: field)
    }
    static func notFound(_ what: String) -> APIError {
        APIError(status: .notFound, code: "not_found", message: what, field: nil)
    }
    /// 405, with the path's methods in `Allow` and in the error's `allow` (`GET, PATCH`).
    static func methodNotAllowed(_ method: HTTPMethod, allow: String) -> APIError {
        var e = APIError(status: .methodNotAllowed, code: "method_not_allowed",
                         message: "\(method.rawValue) is not allowed here; use \(allow)", field: nil)
        e.extra = [("allow", .string(allow))]
        e.headers = [("allow", allow)]
        return e
    }

    /// The value of an extra key: text, or a number (byte counts).
    public enum Detail: Sendable {
        case string(String)
        case int(Int)
    }

    init(status: HTTPResponseStatus, code: String, message: String, field: String?) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    init(_ e: TicketError) {
        let status: HTTPResponseStatus
        let code: String
        switch e {
        case .invalidField: (status, code) = (.unprocessableEntity, "invalid_value")
        case .tooLong: (status, code) = (.unprocessableEntity, "too_long")
        case .transitionNotAllowed: (status, code) = (.conflict, "transition_not_allowed")
        case .transitionNeedsWorkflow: (status, code) = (.conflict, "transition_needs_workflow")
        case .appealNeedsAnswer: (status, code) = (.conflict, "appeal_needs_answer")
        case .deferralOnlyForConsultations: (status, code) = (.conflict, "deferral_not_allowed")
        case .immutableField: (status, code) = (.conflict, "immutable_field")
        case .extensionAlreadyUsed: (status, code) = (.conflict, "extension_already_used")
        case .extensionNotApplicable: (status, code) = (.conflict, "extension_not_applicable")
        case .readOnlyMirror: (status, code) = (.conflict, "read_only")
        case .notOwner: (status, code) = (.conflict, "not_owner")
        case .personalDataOnMessenger: (status, code) = (.unprocessableEntity, "personal_data_not_allowed")
        }
        self.init(status: status, code: code, message: e.message, field: e.field)
        if case .tooLong(_, let bytes, let limit) = e {
            extra = [("bytes", .int(bytes)), ("limitBytes", .int(limit))]
        }
        if case .transitionNotAllowed(let from, let to) = e {
            extra = [("currentStatus", .string(from.rawValue)), ("attemptedStatus", .string(to.rawValue))]
        }
    }

    /// A refused transfer or step: which rule, in a code a client can act on.
    init(_ e: TransferError) {
        let status: HTTPResponseStatus
        let code: String
        switch e {
        case .wrongSide: (status, code) = (.forbidden, "wrong_side")
        case .wrongState: (status, code) = (.conflict, "transition_not_allowed")
        case .reasonRequired: (status, code) = (.unprocessableEntity, "reason_required")
        case .redirectActive: (status, code) = (.conflict, "redirect_active")
        case .invalid: (status, code) = (.unprocessableEntity, "invalid_value")
        }
        self.init(status: status, code: code, message: e.message, field: e.field)
        switch e {
        case .wrongState(let step, let current):
            extra = [("currentState", .string(current.rawValue)), ("attemptedState", .string(step.rawValue))]
        case .redirectActive(let existing):
            extra = [("transfer", .string(existing.description))]
        default: break
        }
    }

    init(_ e: StoreError) {
        switch e {
        case .ticketNotFound(let ref):
            self.init(status: .notFound, code: "not_found", message: "no ticket \(ref)", field: nil)
        case .conflictNotFound(let id):
            self.init(status: .notFound, code: "not_found", message: "no open conflict \(id) (already resolved?)", field: nil)
        case .versionMismatch(let current, let expected):
            self.init(status: .preconditionFailed, code: "version_mismatch",
                      message: "the ticket is at version \(current), not \(expected): re-read it and retry",
                      field: "If-Match")
            extra = [("currentVersion", .string(String(current)))]
        case .rejected(let t):
            self.init(t)
        case .transferNotFound(let id):
            self.init(status: .notFound, code: "not_found", message: "no transfer \(id)", field: nil)
        case .transferRefused(let t):
            self.init(t)
        case .closed:
            self.init(status: .serviceUnavailable, code: "shutting_down", message: "the node is shutting down", field: nil)
        case .restoring(let why):
            self.init(status: .serviceUnavailable, code: "restoring", message: why, field: nil)
            headers = [("retry-after", "5")]
        case .storage(let l) where l.isOutOfSpace:
            // A full disk is the operator's to fix, not a server fault: the write was not
            // made (its transaction aborted), and the client may retry.
            self.init(status: .insufficientStorage, code: "insufficient_storage",
                      message: "the node's storage is full; the write was not made: retry later or on another node (\(l))",
                      field: nil)
            headers = [("retry-after", "30")]
        default:
            self.init(status: .internalServerError, code: "storage_error", message: "\(e)", field: nil)
        }
    }

    func render() -> JSONWriter {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.key("error")
        w.beginObject()
        w.field("code", code)
        w.field("message", message)
        w.field("field", field)
        for (k, v) in extra {
            w.key(k)
            switch v {
            case .string(let s): w.string(s)
            case .int(let i): w.int(i)
            }
        }
        w.endObject()
        w.endObject()
        return w
    }
}
