import CaseModel

extension TransferKind: StoredCode { public static let ordered = allCases }
extension TransferState: StoredCode { public static let ordered = allCases }
extension CitizenField: StoredCode { public static let ordered = allCases }

/// The value messages of a transfer (proto/ekc/replication/v2/transfer.proto), each
/// decoded with every rule of its fields checked by the model's function for it, the
/// one the operator API calls (`checked: false` for values this node admitted before
/// it stored them).
public enum TransferValues {
    // Register 1: TransferOrder { ticket_id = 1; from_organisation = 2; from_node = 3; to_organisation = 4;
    //   kind = 5; reason_code = 6; reason_text = 7; repeated scope = 8 (packed); created_at = 9; due_at = 10 }
    public static func encode(_ o: TransferOrder) -> ValueBytes {
        var w = ProtoWriter(capacity: 96 + o.reasonText.utf8.count)
        w.bytesField(1, o.ticket.bytes)
        w.string(2, o.fromOrganisation)
        w.string(3, o.fromNode.value)
        w.string(4, o.toOrganisation)
        w.enumValue(5, o.kind.wireNumber)
        w.string(6, o.reasonCode)
        w.string(7, o.reasonText)
        let scope = CitizenField.ordered.filter(o.scope.contains)
        if !scope.isEmpty {
            w.message(8) { w in for f in scope { w.varint(UInt64(f.wireNumber)) } }
        }
        w.int64(9, o.createdAt)
        w.int64(10, o.dueAt)
        return w.bytes
    }

    public static func order(_ b: some ValueSource, directory: Directory? = nil, checked: Bool = true) throws(Refusal) -> TransferOrder {
        try ValueReader.read(b, "order", checked: checked) { v throws(Refusal) in
            var ticket: [UInt8] = [], from = "", fromNode = "", to = "", kind: UInt64 = 0
            var reasonCode = "", reasonText = "", created: Int64 = 0, due: Int64 = 0
            var scope: [CitizenField] = []
            func field(_ raw: UInt64, _ v: ValueReader) throws(Refusal) {
                let f: CitizenField = try v.enumValue(raw, "scope")
                // At most four: a longer list repeats one, refused below, so it cannot grow past five.
                if scope.count <= CitizenField.allCases.count { scope.append(f) }
            }
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 2): ticket = try v.bytes("ticket_id")
                case (2, 2): from = try v.string("from_organisation")
                case (3, 2): fromNode = try v.string("from_node")
                case (4, 2): to = try v.string("to_organisation")
                case (5, 0): kind = try v.varint("kind")
                case (6, 2): reasonCode = try v.string("reason_code")
                case (7, 2): reasonText = try v.string("reason_text")
                case (8, 0): try field(try v.varint("scope"), v)
                case (8, 2):
                    try v.nested("scope") { s throws(Refusal) in
                        while !s.atEnd { try field(try s.varint("scope"), s) }
                    }
                case (9, 0): created = try v.int64("created_at")
                case (10, 0): due = try v.int64("due_at")
                default: return false
                }
                return true
            }
            guard let id = TicketID(bytes: ticket) else { throw Refusal(.invalidValue, "ticket_id: 16 bytes") }
            let node = try v.node(fromNode, "from_node", directory)
            // Who it is between, judged on every read: the roles of a transfer come from them.
            do throws(TicketError) {
                try TransferOrder.validate(to: to, from: from, organisations: directory?.organisations)
                try TransferOrder.validate(scope: scope)
            } catch { throw ValueReader.refusal(error) }
            if let directory, let org = directory.org(node), org != from {
                throw Refusal(.invalidValue, "from: \(node) belongs to \(org), not \(from)")
            }
            let createdAt = try v.time(created, "createdAt"), dueAt = try v.time(due, "due")
            do throws(TicketError) { try TransferOrder.validate(createdAt: createdAt, dueAt: dueAt) } catch { throw ValueReader.refusal(error) }
            try v.model { () throws(TicketError) in
                try TransferOrder.validate(reasonCode: reasonCode)
                try TransferOrder.validate(reasonText: reasonText)
            }
            return TransferOrder(ticket: id, fromOrganisation: from, fromNode: node, toOrganisation: to,
                                 kind: try v.enumValue(kind, "kind"), reasonCode: reasonCode, reasonText: reasonText,
                                 scope: Set(scope), createdAt: createdAt, dueAt: dueAt)
        }
    }

    // Collections 1 and 2: TransferStep { state = 1; Actor actor = 2; reason_code = 3; reason_text = 4; answer = 5 }
    public static func encode(_ s: TransferStep) -> ValueBytes {
        var w = ProtoWriter(capacity: 48 + (s.reasonText?.utf8.count ?? 0) + (s.answer?.utf8.count ?? 0))
        w.enumValue(1, s.state.wireNumber)
        w.message(2) { w in
            w.string(1, s.actor.user)
            w.string(2, s.actor.role)
        }
        w.optionalString(3, s.reasonCode)
        w.optionalString(4, s.reasonText)
        w.optionalString(5, s.answer)
        return w.bytes
    }

    /// A step from a child of collection 1 (sender) or 2 (receiver): its state must be
    /// one that side takes.
    public static func step(_ c: Child, checked: Bool = true) throws(Refusal) -> TransferStep {
        try ValueReader.read(c.value, "step", checked: checked) { v throws(Refusal) in
            var state: UInt64 = 0, actor: Actor?
            var reasonCode: String?, reasonText: String?, answer: String?
            try v.fields { v, n, t throws(Refusal) in
                switch (n, t) {
                case (1, 0): state = try v.varint("state")
                case (2, 2):
                    guard actor == nil else { throw RecordCoding.twice("step.actor") }
                    actor = try TicketValues.actor(&v, "actor")
                case (3, 2): reasonCode = try v.string("reason_code")
                case (4, 2): reasonText = try v.string("reason_text")
                case (5, 2): answer = try v.string("answer")
                default: return false
                }
                return true
            }
            guard let actor else { throw Refusal(.invalidValue, "actor: required") }
            let s: TransferState = try v.enumValue(state, "state")
            let side: TransferSide? = c.collection == TransferRecord.Collection.senderSteps.rawValue ? .sender
                : c.collection == TransferRecord.Collection.receiverSteps.rawValue ? .receiver : nil
            guard s != .sent, s.takenBy == side else {
                throw Refusal(.invalidValue, "state: \(s.rawValue) is not a step of the \(side?.rawValue ?? "unknown") side")
            }
            if let missing = TransferStep.missingReason(state: s, reasonCode: reasonCode, reasonText: reasonText) {
                throw Refusal(.invalidValue, missing.message)
            }
            try v.model { () throws(TicketError) in
                if let reasonCode { try TransferOrder.validate(reasonCode: reasonCode) }
                if let reasonText { try TransferOrder.validate(reasonText: reasonText) }
                if let answer { try TransferStep.validate(answer: answer) }
            }
            return TransferStep(id: c.id, state: s, node: c.dot.node, stamp: c.dot.stamp, actor: actor,
                                reasonCode: reasonCode, reasonText: reasonText, answer: answer)
        }
    }
}
