import CaseModel

/// Everything a caller can ask a node to do, at the granularity the roles differ on.
/// Each operator route names one action; an edit may need more (`TicketPatch.actions`).
public enum Action: String, Sendable, CaseIterable {
    case ticketsList = "tickets.list"
    case ticketRead = "ticket.read"
    case ticketCreate = "ticket.create"
    case ticketEdit = "ticket.edit"
    /// Assigning a ticket to someone else, or clearing its assignee (taking it is an edit).
    case ticketAssign = "ticket.assign"
    case ticketReopen = "ticket.reopen"
    case ticketExtendDeadline = "ticket.extend_deadline"
    case notesRead = "notes.read"
    case noteAdd = "note.add"
    case historyRead = "history.read"
    case transfersRead = "transfers.read"
    case transferSend = "transfer.send"
    /// The receiver's steps: accept, reject, return, complete.
    case transferAnswer = "transfer.answer"
    case transferCancel = "transfer.cancel"
    /// The change feed: what changed, with ticket contents.
    case changesRead = "changes.read"
    case conflictsRead = "conflicts.read"
    case conflictResolve = "conflict.resolve"
    case replicationRead = "replication.read"
    /// Compare digests with a peer now and pull what differs (anti-entropy).
    case replicationRepair = "replication.repair"
    /// `/v1/health` beyond liveness: store, queue, links, transfers overdue.
    case healthDetails = "health.details"
    case metricsRead = "metrics.read"
    /// A citizen's name, SNILS or phone in full, one ticket at a time, with a reason.
    case personalDataUnmask = "personal_data.unmask"
    /// Many tickets' personal data at once, with a reason.
    case personalDataExport = "personal_data.export"
    case auditRead = "audit.read"
}

/// Who may do what: one table, consulted by every request. Organisation scope is
/// not here: a node admits only its own organisation's tokens, and holds of other
/// organisations' tickets only what their transfers put in scope.
public enum PermissionTable {
    static let operatorActions: Set<Action> = [
        .ticketsList, .ticketRead, .ticketCreate, .ticketEdit, .notesRead, .noteAdd, .historyRead,
        .transfersRead, .transferSend, .transferAnswer, .transferCancel, .changesRead, .conflictsRead,
        .personalDataUnmask,
    ]

    public static let grants: [Role: Set<Action>] = [
        .operator: operatorActions,
        .supervisor: operatorActions.union([.ticketAssign, .ticketReopen, .ticketExtendDeadline,
                                            .conflictResolve, .personalDataExport]),
        .auditor: [.auditRead],
        .ops: [.healthDetails, .replicationRead, .replicationRepair, .metricsRead],
    ]

    /// The roles that may do `action`.
    public static func roles(for action: Action) -> Set<Role> {
        Set(Role.allCases.filter { grants[$0]?.contains(action) == true })
    }

    /// Allowed by the least of the caller's roles that grants the action (that role is
    /// what history records), or denied with the roles that would have allowed it.
    public static func decide(_ action: Action, for principal: Principal) -> Decision {
        if let role = principal.roles.sorted().first(where: { grants[$0]?.contains(action) == true }) {
            return .allowed(by: role)
        }
        return .denied(needs: roles(for: action))
    }

    /// Every action of `actions` must be allowed; the role recorded is the one that
    /// allows them all, or the most privileged of those used.
    public static func decide(_ actions: [Action], for principal: Principal) -> Decision {
        var granted: Role? = nil
        for a in actions {
            switch decide(a, for: principal) {
            case .denied(let needs): return .deniedAction(a, needs: needs)
            case .deniedAction(let a, let needs): return .deniedAction(a, needs: needs)
            case .allowed(let role): granted = max(granted ?? role, role)
            }
        }
        guard let granted else { return .denied(needs: []) }
        return .allowed(by: granted)
    }
}

public enum Decision: Sendable, Equatable {
    case allowed(by: Role)
    case denied(needs: Set<Role>)
    /// One of several actions an edit needs is denied.
    case deniedAction(Action, needs: Set<Role>)
}

extension TicketPatch {
    /// The actions a patch needs beyond `ticket.edit`: reopening, assigning to someone
    /// other than the caller (or clearing the assignee), extending the answer deadline.
    public func actions(by subject: String) -> [Action] {
        var out: [Action] = [.ticketEdit]
        if status == .reopened { out.append(.ticketReopen) }
        if let a = assignee, a != subject { out.append(.ticketAssign) }
        if extendAnswerByDays != nil { out.append(.ticketExtendDeadline) }
        return out
    }
}
