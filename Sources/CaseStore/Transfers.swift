import CaseModel
import LMDB
import Replication

/// What an operator asks when handing a ticket to another organisation.
public struct TransferRequest: Sendable {
    public var ticket: TicketRef
    public var to: String
    public var kind: TransferKind
    public var reasonCode: String
    public var reasonText: String
    public var scope: Set<CitizenField>
    /// When the receiver should have accepted it (or answered, for an INFO_REQUEST); a
    /// default per kind when absent.
    public var due: Millis?

    public init(ticket: TicketRef, to: String, kind: TransferKind, reasonCode: String, reasonText: String,
                scope: Set<CitizenField>, due: Millis? = nil) {
        self.ticket = ticket
        self.to = to
        self.kind = kind
        self.reasonCode = reasonCode
        self.reasonText = reasonText
        self.scope = scope
        self.due = due
    }

    /// Days to acceptance of a REDIRECT (the 59-FZ forwarding term) and of a COPY.
    public static let redirectDays = 7
    public static let copyDays = 30
}

/// A step an operator of one side takes on a transfer.
public struct TransferStepRequest: Sendable {
    public var transfer: RecordID
    public var state: TransferState
    public var reasonCode: String?
    public var reasonText: String?
    public var answer: String?

    public init(transfer: RecordID, state: TransferState, reasonCode: String? = nil, reasonText: String? = nil,
                answer: String? = nil) {
        self.transfer = transfer
        self.state = state
        self.reasonCode = reasonCode
        self.reasonText = reasonText
        self.answer = answer
    }
}

/// The stored projection of a transfer (`transfers`): its order and the state its
/// steps add up to, for lists without reading every step.
/// TransferView { bytes order = 1; uint64 state = 2; uint64 version = 3 }
enum TransferView {
    static func encode(_ t: Transfer) -> [UInt8] {
        var w = ProtoWriter(capacity: 128)
        w.bytesField(1, TransferValues.encode(t.order))
        w.uint64(2, UInt64(t.state.wireNumber))
        w.uint64(3, t.version)
        return w.bytes
    }

    static func decode(_ b: UnsafeRawBufferPointer, id: RecordID) throws(CorruptRecord) -> (order: TransferOrder, state: TransferState, version: UInt64) {
        var r = ProtoReader(b)
        var order: TransferOrder?, state: TransferState?, version: UInt64 = 0
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                switch (n, t) {
                case (1, 2): order = try? TransferValues.order(UnsafeRawBufferPointer(rebasing: b[try r.body()]), checked: false)
                case (2, 0): state = TransferState(wireNumber: Int(try r.varint()))
                case (3, 0): version = try r.varint()
                default: try r.skip(t)
                }
            }
        } catch {
            throw CorruptRecord(what: "transfer \(id): \(error)")
        }
        guard let order, let state else { throw CorruptRecord(what: "transfer \(id): incomplete view") }
        return (order, state, version)
    }
}

extension CaseStore {
    /// This node's organisation (the directory's, or its numbering region without a topology).
    var organisation: String { configuration.directory.org(configuration.node) ?? configuration.region }

    func applySendTransfer(_ q: TransferRequest, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64,
                           now: Millis) throws -> EditOutcome {
        let (transfer, ticket, dot) = try refusing { () throws -> (Transfer, Ticket, Dot) in
            guard let id = try resolve(q.ticket, txn), let ticket = try loadTicket(id, txn) else {
                throw StoreError.ticketNotFound(q.ticket.description)
            }
            // Field rules first, in the API's words (a reason over its budget is a 422 too_long).
            try Validation.code(q.reasonCode, field: "reasonCode")
            try Validation.text(q.reasonText, field: "reason", maxBytes: TransferBudget.reasonTextBytes)
            let mine = organisation
            guard q.to != mine else { throw StoreError.transferRefused(.invalid(field: "to", rule: "a transfer goes to another organisation")) }
            guard Set(configuration.directory.organisation.values).contains(q.to) else {
                throw StoreError.transferRefused(.invalid(field: "to", rule: "\(q.to) is not an organisation of the federation"))
            }
            switch q.kind {
            case .redirect:
                guard ticket.status == .registered || ticket.status == .inWork else {
                    throw StoreError.transferRefused(.invalid(field: "kind", rule: "a ticket is redirected from REGISTERED or IN_WORK, not \(ticket.status.rawValue)"))
                }
                for other in try transferIDs(ofTicket: id, txn) {
                    if let v = try transferView(other, txn), v.order.kind == .redirect, !v.state.isFinal {
                        throw StoreError.transferRefused(.redirectActive(existing: other))
                    }
                }
            case .infoRequest, .copy:
                guard ![.closed, .merged].contains(ticket.status) else {
                    throw StoreError.transferRefused(.invalid(field: "ticket", rule: "the ticket is \(ticket.status.rawValue)"))
                }
            }
            let days = q.kind == .infoRequest ? TransferLifecycle.infoRequestDays
                : q.kind == .copy ? TransferRequest.copyDays : TransferRequest.redirectDays
            let due = q.due ?? now + Millis(days) * Calendar59.millisPerDay
            guard due > now else { throw StoreError.transferRefused(.invalid(field: "due", rule: "must be in the future")) }
            let order = TransferOrder(ticket: id, fromOrganisation: mine, fromNode: configuration.node, toOrganisation: q.to,
                                      kind: q.kind, reasonCode: q.reasonCode, reasonText: q.reasonText, scope: q.scope,
                                      createdAt: now, dueAt: due)
            do throws(Refusal) { _ = try TransferValues.order(TransferValues.encode(order), directory: configuration.directory) } catch {
                throw StoreError.transferRefused(.invalid(field: "transfer", rule: error.detail))
            }
            let dot = Dot(node: configuration.node, stamp: writer.clock.tick(wall: now))
            return (Transfer(id: writer.nextID(now: now), order: order), ticket, dot)
        }
        var record = StoredRecord.new(TransferRecord.schema, transfer.id)
        let written = record.state.record(transfer, from: nil, dot: dot)
        record.local.version = 1
        try commitRecord(TransferRecord.schema, &record, changed: written, children: [], txn, &seq, isNew: true)
        try noteOnTicket(ticket.id, actor, dot, field: "transfer", old: nil,
                         new: "\(transfer.order.kind.rawValue) to \(transfer.order.toOrganisation) (\(transfer.id))", txn, &seq, now: now)
        try projectTransfer(transfer, txn)
        return .transfer(transfer)
    }

    func applyTransferStep(_ q: TransferStepRequest, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64,
                           now: Millis) throws -> EditOutcome {
        let (current, step) = try refusing { () throws -> (Transfer, TransferStep) in
            guard let current = try loadTransfer(q.transfer, txn) else { throw StoreError.transferNotFound(q.transfer.description) }
            if let c = q.reasonCode { try Validation.code(c, field: "reasonCode") }
            if let t = q.reasonText { try Validation.text(t, field: "reason", maxBytes: TransferBudget.reasonTextBytes) }
            if let a = q.answer { try Validation.text(a, field: "answer", maxBytes: TransferBudget.answerBytes) }
            guard let side = current.side(of: organisation) else {
                throw StoreError.transferRefused(.wrongSide(step: q.state, side: .receiver))
            }
            if let refusal = TransferLifecycle.check(q.state, by: side, current: current.state,
                                                      reasonCode: q.reasonCode, reasonText: q.reasonText) {
                throw StoreError.transferRefused(refusal)
            }
            let step = TransferStep(id: writer.nextID(now: now), state: q.state, node: configuration.node,
                                    stamp: writer.clock.tick(wall: now), actor: actor, reasonCode: q.reasonCode,
                                    reasonText: q.reasonText, answer: q.answer)
            do throws(Refusal) { _ = try TransferValues.step(TransferRecord.child(step)) } catch {
                throw StoreError.transferRefused(.invalid(field: "step", rule: error.detail))
            }
            return (current, step)
        }
        try addSteps([step], to: q.transfer, txn, &seq)
        if try txn.contains(schema.tickets, key: current.order.ticket.bytes) {
            try noteOnTicket(current.order.ticket, actor, Dot(node: step.node, stamp: step.stamp), field: "transfer",
                             old: current.state.rawValue, new: "\(step.state.rawValue) (\(q.transfer))", txn, &seq, now: now)
        }
        var stepped = current
        stepped.steps.add(step)
        try projectTransfer(stepped, txn)
        return .transfer(stepped)
    }

    /// After a merge changed a transfer: its projection, and the transport
    /// acknowledgement when this node's organisation receives it and none of its nodes
    /// has acknowledged it yet.
    func mergedTransfer(_ id: RecordID, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws {
        guard var t = try loadTransfer(id, txn) else { return }
        if t.order.toOrganisation == organisation, t.state == .sent {
            let step = TransferStep(id: writer.nextID(now: now), state: .delivered, node: configuration.node,
                                    stamp: writer.clock.tick(wall: now), actor: Actor(user: "system", role: "system"))
            try addSteps([step], to: id, txn, &seq)
            t.steps.add(step)
        }
        try projectTransfer(t, txn)
    }

    private func addSteps(_ steps: [TransferStep], to id: RecordID, _ txn: WriteTransaction, _ seq: inout UInt64) throws {
        guard var record = try loadRecord(TransferRecord.schema, id, txn) else { throw StoreError.transferNotFound(id.description) }
        try commitRecord(TransferRecord.schema, &record, changed: .none, children: steps.map(TransferRecord.child), txn, &seq, isNew: false)
    }

    /// A history event on a ticket this node holds, about one of its transfers.
    private func noteOnTicket(_ ticket: TicketID, _ actor: Actor, _ dot: Dot, field: String, old: String?, new: String?,
                              _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws {
        guard var record = try loadRecord(TicketRecord.schema, ticket, txn) else { return }
        let event = TicketRecord.child(HistoryEvent(id: writer.nextID(now: now), ticketID: ticket, actor: actor, node: dot.node,
                                                    at: now, stamp: dot.stamp, field: field, old: old, new: new))
        try commitRecord(TicketRecord.schema, &record, changed: .none, children: [event], txn, &seq, isNew: false)
    }

    /// Writes the view of a transfer as its record and steps now stand, and moves its
    /// index entries (the callers hold the transfer already: it is not read again).
    func projectTransfer(_ t: Transfer, _ txn: WriteTransaction) throws {
        let id = t.id
        if let old = try transferView(id, txn) {
            for (db, key) in transferIndexEntries(id, old.order) { _ = try txn.delete(db, key: key) }
        }
        try txn.put(schema.transfers, key: id.bytes, value: TransferView.encode(t))
        for (db, key) in transferIndexEntries(id, t.order) { try txn.put(db, key: key, value: []) }
    }

    private func transferIndexEntries(_ id: RecordID, _ o: TransferOrder) -> [(Database, [UInt8])] {
        [(schema.transfersByTicket, o.ticket.bytes + id.bytes),
         (schema.transferInbox, Keys.organisationTime(o.toOrganisation, o.dueAt, id)),
         (schema.transferOutbox, Keys.organisationTime(o.fromOrganisation, o.createdAt, id))]
    }

    // MARK: Reads

    func loadTransfer(_ id: RecordID, _ txn: some TransactionProtocol) throws -> Transfer? {
        guard let record = try loadRecord(TransferRecord.schema, id, txn),
              var t = Transfer.materialise(record.state, local: record.local) else { return nil }
        let steps = try TransferRecord.Collection.allCases.flatMap { try children(TransferRecord.kind, id, $0.rawValue, txn) }
        t.steps = TransferRecord.steps(steps)
        return t
    }

    func transferView(_ id: RecordID, _ txn: some TransactionProtocol) throws -> (order: TransferOrder, state: TransferState, version: UInt64)? {
        try txn.withValue(schema.transfers, key: id.bytes) { try TransferView.decode($0, id: id) }
    }

    func transferIDs(ofTicket ticket: TicketID, _ txn: some TransactionProtocol) throws -> [RecordID] {
        let prefix = ticket.bytes
        return try txn.withCursor(schema.transfersByTicket) { c in
            var out: [RecordID] = []
            var ok = try c.seek(atLeast: prefix)
            while ok && c.keyHasPrefix(prefix) {
                out.append(RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[16...])))
                ok = try c.next()
            }
            return out
        }
    }

    /// A transfer with its steps, or nil when this node holds none by that id.
    public func transfer(_ id: RecordID) throws -> Transfer? {
        try readTxn { try loadTransfer(id, $0) }
    }

    /// Every transfer of a ticket, oldest first.
    public func transfers(ofTicket ref: TicketRef) throws -> [Transfer] {
        try readTxn { txn in
            guard let id = try resolve(ref, txn) else { return [] }
            return try transferIDs(ofTicket: id, txn).compactMap { try loadTransfer($0, txn) }
                .sorted { $0.order.createdAt < $1.order.createdAt }
        }
    }

    public enum TransferDirection: String, Sendable { case incoming = "in", outgoing = "out" }

    /// This organisation's inbox (by due time) or outbox (by creation time), optionally
    /// only one state or only overdue ones, from after `cursor` (a transfer id).
    public func transferList(_ direction: TransferDirection, state: TransferState? = nil, overdue: Bool? = nil,
                             now: Millis, after cursor: RecordID? = nil, limit: Int = 50) throws -> [Transfer] {
        let org = organisation
        let db = direction == .incoming ? schema.transferInbox : schema.transferOutbox
        return try readTxn { txn in
            let prefix = Array(org.utf8) + [0]
            var start = prefix
            if let cursor, let v = try transferView(cursor, txn) {
                start = Keys.organisationTime(org, direction == .incoming ? v.order.dueAt : v.order.createdAt, cursor) + [0]
            }
            return try txn.withCursor(db) { c in
                var out: [Transfer] = []
                var ok = try c.seek(atLeast: start)
                while ok && c.keyHasPrefix(prefix) && out.count < limit {
                    let id = RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[(c.key.count - 16)...]))
                    if let v = try transferView(id, txn),
                       state == nil || v.state == state,
                       overdue == nil || TransferLifecycle.isOverdue(state: v.state, dueAt: v.order.dueAt, now: now) == overdue,
                       let t = try loadTransfer(id, txn) {
                        out.append(t)
                    }
                    ok = try c.next()
                }
                return out
            }
        }
    }
}
