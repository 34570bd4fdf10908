import CaseModel

/// A value that lost a race, beside the value that won: what an operator sees and
/// resolves. Its id is stable on every replica (kind, record, register, losing write).
public struct Conflict: Hashable, Sendable {
    public let kind: RecordKindID
    public let kindName: String
    public let recordID: RecordID
    /// Index in the kind's register table, and the register's name.
    public let register: Int
    public let field: String
    public let winner: Dot
    public let winningValue: String
    public let loser: Dot
    public let losingValue: String
    /// Every field of the register in each value (`winningValue` shows the first only).
    public let winningFields: [ShownField]
    public let losingFields: [ShownField]

    public var id: String { "\(kindName).\(recordID).\(field).\(loser.node).\(loser.stamp.raw)" }

    /// The parts of an id made by `id`: kind name, record, register name, the losing write.
    public static func parse(id: String) -> (kind: String, record: RecordID, field: String, loser: Dot)? {
        let parts = id.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, let record = RecordID(parts[1]), let node = NodeID(parts[3]),
              let raw = UInt64(parts[4]) else { return nil }
        return (parts[0], record, parts[2], Dot(node: node, stamp: Stamp(raw: raw)))
    }
}

extension RecordSchema {
    /// Every sibling of `state` that is not its register's winner.
    public func conflicts(of state: RecordState) -> [Conflict] {
        var out: [Conflict] = []
        for (i, r) in state.registers.enumerated() where r.isConflicted {
            let d = registers[i]
            guard let w = r.winner else { continue }
            let shownWinner = d.show(w.value), winnerFields = d.fields(w.value)
            for l in r.losers {
                out.append(Conflict(kind: kind, kindName: name, recordID: state.id, register: i, field: d.name,
                                    winner: w.dot, winningValue: shownWinner, loser: l.dot, losingValue: d.show(l.value),
                                    winningFields: winnerFields, losingFields: d.fields(l.value)))
            }
        }
        return out
    }
}

extension RecordState {
    /// Settles a conflict on register `index` by writing the value of the version
    /// `chosen` again with `dot`, a write that has seen every sibling: the register's
    /// conflict clears on every replica that merges it. False when `chosen` is not a
    /// version of that register.
    public mutating func resolve(register index: Int, choosing chosen: Dot, with dot: Dot) -> Bool {
        guard registers.indices.contains(index),
              let v = registers[index].versions.first(where: { $0.dot == chosen }) else { return false }
        registers[index].write(v.value, dot: dot)
        return true
    }
}
