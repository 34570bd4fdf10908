import CaseModel

/// What an operator's organisation says the person is, from the token's roles claim.
/// Roles the node does not know (an identity provider adds its own, such as
/// `offline_access`) are ignored rather than refused.
public enum Role: String, Sendable, CaseIterable, Comparable {
    /// Works the organisation's tickets and transfers.
    case `operator`
    /// An operator who may also assign, reopen, extend deadlines, resolve conflicts and export.
    case supervisor
    /// Reads the personal-data access log; edits nothing.
    case auditor
    /// Keeps the node healthy: health details, replication, metrics; never personal data.
    case ops

    /// Order used only to pick which role to record when several grant an action.
    private var rank: Int {
        switch self {
        case .operator: 0
        case .supervisor: 1
        case .auditor: 2
        case .ops: 3
        }
    }

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

/// A verified caller: who (the token's subject), of which organisation (the identity
/// provider that signed the token), with which roles, until when.
public struct Principal: Sendable, Hashable {
    public let subject: String
    public let organisation: String
    public let roles: Set<Role>
    /// The token's expiry, epoch milliseconds.
    public let expiresAt: Millis

    public init(subject: String, organisation: String, roles: Set<Role>, expiresAt: Millis) {
        self.subject = subject
        self.organisation = organisation
        self.roles = roles
        self.expiresAt = expiresAt
    }

    /// How the principal appears in history and notes when `role` granted the edit.
    public func actor(as role: Role) -> Actor {
        Actor(user: subject, role: role.rawValue)
    }
}
