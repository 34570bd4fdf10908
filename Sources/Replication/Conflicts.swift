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

extension ReplicatedTicket {
    /// Settles a conflict on `field` by writing the value of the sibling `chosen` again
    /// with `dot`, a write that has seen every sibling: the field's conflict clears on
    /// every replica that merges it. False when `chosen` is not a version of the field.
    public mutating func resolve(_ field: Field, choosing chosen: Dot, with dot: Dot) -> Bool {
        func settle<V>(_ r: inout Register<V>) -> Bool {
            guard let v = r.versions.first(where: { $0.dot == chosen }) else { return false }
            r.write(v.value, dot: dot)
            return true
        }
        switch field {
        case .header: return settle(&header)
        case .statement: return settle(&statement)
        case .citizen: return settle(&citizen)
        case .progress: return settle(&progress)
        case .assignee: return settle(&assignee)
        case .priority: return settle(&priority)
        case .topic: return settle(&topic)
        case .owner: return settle(&owner)
        }
    }

    /// The registers alone (notes and history emptied): what the store keeps per ticket.
    public var registersOnly: ReplicatedTicket {
        var t = self
        t.notes = [:]
        t.history = [:]
        return t
    }
}

extension Conflict {
    /// Parses an id made by `Conflict.id`: ticket, field, and the losing write's dot.
    public static func parse(id: String) -> (TicketID, Field, Dot)? {
        let parts = id.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, let ticket = TicketID(parts[0]), let field = Field(rawValue: parts[1]),
              let node = NodeID(parts[2]), let raw = UInt64(parts[3]) else { return nil }
        return (ticket, field, Dot(node: node, stamp: Stamp(raw: raw)))
    }
}
