/// Byte budgets of what a record holds, counted in UTF-8 bytes. They bound every
/// record and child record, so that no sequence of valid edits can make one change
/// too large to replicate (proto/README.md §11); the operator API and the
/// replication port enforce the same numbers.
public enum Budget {
    /// 300 Cyrillic characters.
    public static let subjectBytes = 600
    /// 20,000 Cyrillic characters.
    public static let statementBytes = 40_000
    /// 10,000 Cyrillic characters.
    public static let noteBytes = 20_000
    /// A citizen's name as the request gives it (100 Cyrillic characters).
    public static let citizenNameBytes = 200
    /// Old or new value in a history event: at most a statement.
    public static let historyValueBytes = statementBytes
    /// The name of what a history event changed.
    public static let historyFieldBytes = 64
}

/// The rules of every value a record holds, one function per value, whichever edge
/// the value came through: the operator API (request parsing, `TicketDraft.validate`,
/// `Ticket.applying`, the store's transfer edits) and the replication wire (each
/// value's codec in `TicketValues` / `TransferValues`, reached from the kind's table,
/// `checked: true`) call the same function and report its `TicketError`: the API as
/// 422 with `field` and `message`, the wire as a refusal whose detail ends with the
/// same message. Values read back from the node's own store were judged when they
/// arrived and are not judged again (`checked: false`).
///
/// Where each value's rule lives:
/// - statement: `subject`, `statement`; topic: `topic`, `supportMeasure`; assignee: `assignee`
/// - citizen: `Citizen.validate(ref:)`, `(name:)`, `(phone:)`, `Snils.validate(digits:)`;
///   citizen data on a channel: `Channel.validate(carriesCitizen:)`
/// - progress: `Deadlines.validate(extensionDays:)`; every instant: `PlausibleTime.check`
/// - notes: `Note.validate(text:)`; history: `HistoryEvent.validate(field:old:new:)`;
///   who wrote them: `Actor.validate(user:role:field:)`
/// - transfers: `TransferOrder.validate(to:from:organisations:)`, `(reasonCode:)`,
///   `(reasonText:)`, `(scope:)`, `(createdAt:dueAt:)`; `TransferStep.validate(answer:)`,
///   `TransferStep.missingReason(state:reasonCode:reasonText:)`
/// - every enumeration: `oneOf` (by name, as an operator writes it) and `notOneOf`
///   (what a peer's unknown number is told)
public enum Validation {
    /// Codes such as topics and support measures: `child-benefits`, `victory-card`.
    public static func code(_ s: String, field: String) throws(TicketError) {
        let u = Array(s.utf8)
        guard (1...64).contains(u.count),
              u.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 46 || $0 == 95 }),
              u[0] != 45
        else { throw .invalidField(field: field, rule: "1 to 64 lower-case letters, digits, '-', '_' or '.'") }
    }

    /// Free text: not blank, at most `maxBytes` bytes of UTF-8, no control characters
    /// but line breaks and tabs. The budget is in bytes, not characters: a character
    /// may be any number of bytes (combining marks), and what is stored and sent is bytes.
    public static func text(_ s: String, field: String, maxBytes: Int) throws(TicketError) {
        let count = s.utf8.count
        if count > maxBytes { throw .tooLong(field: field, bytes: count, limit: maxBytes) }
        var visibleASCII = false
        var nonASCII = false
        for b in s.utf8 {
            if (b < 32 && b != 10 && b != 9 && b != 13) || b == 127 {
                throw .invalidField(field: field, rule: "must not contain control characters")
            }
            if b >= 0x80 { nonASCII = true } else if b > 32 { visibleASCII = true }
        }
        // Text of only non-ASCII whitespace (e.g. U+00A0) is blank too.
        if !visibleASCII && (!nonASCII || s.unicodeScalars.allSatisfy({ $0.properties.isWhitespace })) { throw .invalidField(field: field, rule: "must not be empty") }
    }

    /// Operator ids (`Actor.isValidName`).
    public static func user(_ s: String, field: String) throws(TicketError) {
        guard Actor.isValidName(s) else {
            throw .invalidField(field: field, rule: "1 to 64 letters, digits, '.', '_', '-' or '@'")
        }
    }

    // MARK: The ticket's own values

    /// Register `statement`: its subject.
    public static func subject(_ s: String) throws(TicketError) {
        try text(s, field: "subject", maxBytes: Budget.subjectBytes)
    }

    /// Register `statement`: its text (the wire's `Statement.text`).
    public static func statement(_ s: String) throws(TicketError) {
        try text(s, field: "statement", maxBytes: Budget.statementBytes)
    }

    /// Register `topic`.
    public static func topic(_ s: String) throws(TicketError) { try code(s, field: "topic") }

    /// Register `topic`: its support measure (the wire's `support_measure`).
    public static func supportMeasure(_ s: String) throws(TicketError) { try code(s, field: "supportMeasure") }

    /// Register `assignee` (the wire's `AssigneeValue.operator`).
    public static func assignee(_ s: String) throws(TicketError) { try user(s, field: "assignee") }

    // MARK: Enumerations and lists

    /// A value of an enumeration by its name, as the operator API receives it.
    public static func oneOf<E: RawRepresentable & CaseIterable>(_ name: String, field: String) throws(TicketError) -> E
    where E.RawValue == String {
        guard let e = E(rawValue: name) else { throw notOneOf(E.self, field: field) }
        return e
    }

    /// The refusal of a value that is none of an enumeration's cases: a name an
    /// operator sent, or a number a peer sent (UNSPECIFIED, or one this node does not know).
    public static func notOneOf<E: RawRepresentable & CaseIterable>(_: E.Type, field: String) -> TicketError
    where E.RawValue == String {
        .invalidField(field: field, rule: "must be one of: " + E.allCases.map(\.rawValue).joined(separator: ", "))
    }

    /// The refusal of a set that lists one item twice (a transfer's scope).
    public static func listedTwice(_ item: String, field: String) -> TicketError {
        .invalidField(field: field, rule: "lists \(item) twice")
    }
}

/// The instants a record may hold: 2000-01-01 to 2200-01-01 (UTC). Anything else is
/// a corrupted or hostile value (an int64 extreme overflows deadline arithmetic).
public enum PlausibleTime {
    public static let range: Range<Millis> = 946_684_800_000 ..< 7_258_118_400_000
    public static let years: ClosedRange<Int> = 2000...2199

    @discardableResult
    public static func check(_ t: Millis, field: String) throws(TicketError) -> Millis {
        guard range.contains(t) else {
            throw .invalidField(field: field, rule: "must be a time from 2000-01-01 to 2200-01-01 (UTC)")
        }
        return t
    }
}
