import CaseModel

/// A value that lost a race, beside the value that won: what an operator sees and
/// resolves. Its id is stable on every replica (ticket, field, losing write).
public struct Conflict: Hashable, Sendable {
    public let ticketID: TicketID
    public let field: Field
    public let winner: Dot
    public let winningValue: String
    public let loser: Dot
    public let losingValue: String

    public var id: String { "\(ticketID).\(field.rawValue).\(loser.node).\(loser.stamp.raw)" }
}

extension ReplicatedTicket {
    /// Every sibling that is not its register's winner.
    public var conflicts: [Conflict] {
        var out: [Conflict] = []
        func scan<V>(_ field: Field, _ r: Register<V>, _ show: (V) -> String) {
            guard let w = r.winner else { return }
            for l in r.losers {
                out.append(Conflict(ticketID: id, field: field, winner: w.dot, winningValue: show(w.value),
                                    loser: l.dot, losingValue: show(l.value)))
            }
        }
        scan(.header, header) { "\($0.number)" }
        scan(.statement, statement) { $0.subject }
        scan(.citizen, citizen) { $0?.ref ?? "none" }
        scan(.progress, progress) { $0.status.rawValue }
        scan(.assignee, assignee) { $0 ?? "none" }
        scan(.priority, priority) { $0.rawValue }
        scan(.topic, topic) { $0.topic }
        scan(.owner, owner) { $0.value }
        return out
    }
}
