import CaseModel
import Replication

/// A test federation: five nodes of region 38, two nodes of a fund and a node of region 52.
public let irkutskNodes = ["irk-main", "irk-office-1", "irk-office-2", "irk-office-3", "irk-office-4"].map { NodeID($0)! }
public let fundNode = NodeID("sfr-federal")!
public let fundBackupNode = NodeID("sfr-reserve")!
public let novgorodNode = NodeID("nn-main")!
public let testDirectory = Directory(Dictionary(uniqueKeysWithValues: irkutskNodes.map { ($0, "38") }
    + [(fundNode, "sfr"), (fundBackupNode, "sfr"), (novgorodNode, "52")]))

/// 2026-11-20 12:00 Irkutsk.
public let testNow: Millis = 1_795_132_800_000 + 4 * 3_600_000

public func openedTicket(id: TicketID, at node: NodeID, now: Millis, sequence: UInt64 = 1) -> Ticket {
    let draft = TicketDraft(channel: .phone, topic: "child-benefits", subject: "Единое пособие",
                            statement: "Когда будет решение?", legalRegime: .appeal59FZ)
    return try! draft.open(id: id, number: TicketNumber(region: "38", year: 2026, sequence: sequence), node: node,
                           now: now, stamp: Stamp(millis: now, logical: 0))
}

/// A ticket as a new record: every register written with `dot`.
public func ticketRecord(_ t: Ticket, dot: Dot) -> Record {
    var state = TicketRecord.schema.emptyState(t.id)
    state.record(t, from: nil, dot: dot)
    return Record(state: state)
}
