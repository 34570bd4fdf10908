import CaseModel

/// One disclosure of a citizen's personal data (152-FZ): who saw which fields of which
/// ticket, when, why and from where. The caller supplies `at`; nothing here reads a clock.
public struct AccessEntry: Sendable, Hashable {
    public var at: Millis
    /// The operator id from the token.
    public var subject: String
    public var role: String
    public var organisation: String
    /// What was done: "ticket.unmask", "ticket.export", "audit.export", …
    public var action: String
    /// The ticket's id text, when the disclosure concerns one ticket.
    public var ticket: String?
    /// The citizen fields disclosed, e.g. ["name", "snils"].
    public var fields: [String]
    public var reason: String
    /// The client's address.
    public var remote: String
    public var route: String

    public init(at: Millis, subject: String, role: String, organisation: String, action: String, ticket: String? = nil,
                fields: [String] = [], reason: String = "", remote: String = "", route: String = "") {
        self.at = at
        self.subject = subject
        self.role = role
        self.organisation = organisation
        self.action = action
        self.ticket = ticket
        self.fields = fields
        self.reason = reason
        self.remote = remote
        self.route = route
    }
}
