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

/// The stored projection of a transfer (`transfers`): its order, the state its steps
/// add up to and the node of its first acceptance, for lists and for who handles its
/// ticket (`TicketScope.handler`) without reading every step.
/// TransferView { bytes order = 1; uint64 state = 2; uint64 version = 3; string accepted_by = 4 }
/// (a view without field 4 is read as not accepted by a known node; every step writes the view again).
struct TransferViewValue: Sendable {
    let order: TransferOrder
    let state: TransferState
    let version: UInt64
    let acceptedBy: NodeID?
}

enum TransferView {
    static func encode(_ t: Transfer) -> [UInt8] {
        var w = ProtoWriter(capacity: 128)
        w.bytesField(1, TransferValues.encode(t.order))
        w.uint64(2, UInt64(t.state.wireNumber))
        w.uint64(3, t.version)
        if let node = t.steps.acceptedBy { w.string(4, node.value) }
        return w.bytes
    }

    static func decode(_ b: UnsafeRawBufferPointer, id: RecordID) throws(CorruptRecord) -> TransferViewValue {
        var r = ProtoReader(b)
        var order: TransferOrder?, state: TransferState?, version: UInt64 = 0, acceptedBy: NodeID?
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                switch (n, t) {
                case (1, 2): order = try? TransferValues.order(UnsafeRawBufferPointer(rebasing: b[try r.body()]), checked: false)
                case (2, 0): state = Int(exactly: try r.varint()).flatMap(TransferState.init(wireNumber:))
                case (3, 0): version = try r.varint()
                case (4, 2): acceptedBy = NodeID(try r.string())
                default: try r.skip(t)
                }
            }
        } catch {
            throw CorruptRecord(what: "transfer \(id): \(error)")
        }
        guard let order, let state else { throw CorruptRecord(what: "transfer \(id): incomplete view") }
        return TransferViewValue(order: order, state: state, version: version, acceptedBy: acceptedBy)
    }
}

extension CaseStore {
    /// This node's organisation (the directory's, or its numbering region without a topology).
    public var organisation: String { configuration.directory.org(configuration.node) ?? configuration.region }

    func applySendTransfer(_ q: TransferRequest, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64,
                           now: Millis) throws -> EditOutcome {
        let (transfer, ticket, dot) = try refusing { () throws -> (Transfer, Ticket, Dot) in
            guard let id = try resolve(q.ticket, txn), let ticket = try loadTicket(id, txn) else {
                throw StoreError.ticketNotFound(q.ticket.description)
            }
            // Field rules first, the model's, which a peer's order is held to as well (a
            // reason over its budget is a 422 too_long).
            let mine = organisation
            try TransferOrder.validate(to: q.to, from: mine, organisations: configuration.directory.organisations)
            try TransferOrder.validate(reasonCode: q.reasonCode)
            try TransferOrder.validate(reasonText: q.reasonText)
            // A partner may not relay the origin's writes (proto/README.md §9), so a ticket
            // travels only from its own organisation, and only while it handles it.
            let ownerOrg = configuration.directory.org(ticket.ownerNode) ?? mine
            let originOrg = configuration.directory.org(ticket.originNode) ?? mine
            guard originOrg == mine, ownerOrg == mine else {
                throw StoreError.transferRefused(.invalid(field: "ticket", rule: originOrg != mine
                    ? "the ticket came from organisation \(originOrg) by transfer; only \(originOrg) transfers it further"
                    : "the ticket is handled by organisation \(ownerOrg); only it transfers it"))
            }
            switch q.kind {
            case .redirect:
                for other in try transferIDs(ofTicket: id, txn) {
                    if let v = try transferView(other, txn), v.order.kind == .redirect, !v.state.isFinal {
                        throw StoreError.transferRefused(.redirectActive(existing: other))
                    }
                }
                guard ticket.status == .registered || ticket.status == .inWork else {
                    throw StoreError.transferRefused(.invalid(field: "kind", rule: "a ticket is redirected from REGISTERED or IN_WORK, not \(ticket.status.rawValue)"))
                }
            case .infoRequest, .copy:
                guard ![.closed, .merged].contains(ticket.status) else {
                    throw StoreError.transferRefused(.invalid(field: "ticket", rule: "the ticket is \(ticket.status.rawValue)"))
                }
            }
            let days = q.kind == .infoRequest ? TransferLifecycle.infoRequestDays
                : q.kind == .copy ? TransferRequest.copyDays : TransferRequest.redirectDays
            let due = q.due ?? now + Millis(days) * Calendar59.millisPerDay
            try TransferOrder.validate(createdAt: now, dueAt: due)
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
        try projectTransfer(transfer, txn)
        // The transfer first, then its ticket: a receiver that purged the ticket after an
        // earlier transfer takes it again only once it holds the transfer that entitles it.
        try backfill(ticket: ticket.id, for: q.to, txn, &seq)
        try noteOnTicket(ticket.id, actor, dot, field: "transfer", old: nil,
                         new: "\(transfer.order.kind.rawValue) to \(transfer.order.toOrganisation) (\(transfer.id))", txn, &seq, now: now)
        try afterTransferChange(transfer, previous: nil, txn, &seq, now: now)
        return .transfer(transfer)
    }

    func applyTransferStep(_ q: TransferStepRequest, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64,
                           now: Millis) throws -> EditOutcome {
        let (current, step) = try refusing { () throws -> (Transfer, TransferStep) in
            guard let current = try loadTransfer(q.transfer, txn) else { throw StoreError.transferNotFound(q.transfer.description) }
            if let c = q.reasonCode { try TransferOrder.validate(reasonCode: c) }
            if let t = q.reasonText { try TransferOrder.validate(reasonText: t) }
            if let a = q.answer { try TransferStep.validate(answer: a) }
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
            if q.state == .accepted, current.order.kind == .redirect,
               try !txn.contains(schema.records, key: Keys.record(TicketRecord.kind.rawValue, current.order.ticket)) {
                throw StoreError.transferRefused(.invalid(field: "transfer", rule: "its ticket has not arrived here yet; accept it once it has"))
            }
            return (current, step)
        }
        try addSteps([step], to: q.transfer, txn, &seq)
        var stepped = current
        stepped.steps.add(step)
        try projectTransfer(stepped, txn)
        if try txn.contains(schema.records, key: Keys.record(TicketRecord.kind.rawValue, current.order.ticket)) {
            try noteOnTicket(current.order.ticket, actor, Dot(node: step.node, stamp: step.stamp), field: "transfer",
                             old: current.state.rawValue, new: "\(step.state.rawValue) (\(q.transfer))", txn, &seq, now: now)
        }
        if step.state == .accepted && current.order.kind == .redirect && stepped.state == .accepted {
            try takeOwnership(of: current.order.ticket, actor, txn, &seq, now: now)
        }
        // Writes held for this transfer's acceptance are judged again (a cancellation here
        // refuses them; they are counted, there being no peer's batch to report them in).
        var judged = MergeReport()
        try readmitHeld(current.order.ticket, txn, &seq, now: now, &judged)
        try afterTransferChange(stepped, previous: current.state, txn, &seq, now: now)
        return .transfer(stepped)
    }

    /// The receiver of an accepted REDIRECT becomes the ticket's owner and registers it:
    /// its own 59-FZ clock starts now (DOMAIN.md).
    private func takeOwnership(of id: TicketID, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws {
        try rewriteTicket(id, actor, txn, &seq, now: now) { t in
            t.ownerNode = configuration.node
            t.status = .registered
            t.registeredAt = now
            t.deadlines = Deadlines.onReceipt(receivedAt: now).registered(at: now, regime: t.legalRegime)
        }
    }

    /// A write of the node's own to a ticket's registers, outside an operator's patch
    /// (the transfer workflow's consequences), with history events for what changed.
    /// `rewriting`: registers written even when their value does not change.
    private func rewriteTicket(_ id: TicketID, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis,
                               rewriting: RegisterSet = .none, _ change: (inout Ticket) -> Void) throws {
        guard var record = try loadRecord(TicketRecord.schema, id, txn),
              let old = Ticket.materialise(record.state, local: record.local) else { return }
        var edited = old
        change(&edited)
        guard edited != old || !rewriting.isEmpty else { return }
        let dot = Dot(node: configuration.node, stamp: writer.clock.tick(wall: now))
        var written = record.state.record(edited, from: old, dot: dot)
        let values = edited.registerValues
        for i in rewriting where !written.contains(i) {
            record.state.registers[i].write(values[i], dot: dot)
            written.insert(i)
        }
        guard !written.isEmpty else { return }
        record.local.version += 1
        var events: [Child] = []
        func event(_ field: String, _ a: String?, _ b: String?) {
            guard a != b else { return }
            events.append(TicketRecord.child(HistoryEvent(id: writer.nextID(now: now), ticketID: id, actor: actor, node: dot.node,
                                                          at: now, stamp: dot.stamp, field: field, old: a, new: b)))
        }
        event("owner", old.ownerNode.value, edited.ownerNode.value)
        event("status", old.status.rawValue, edited.status.rawValue)
        try commitRecord(TicketRecord.schema, &record, changed: written, children: events, txn, &seq, isNew: false)
        try projectTicket(record, txn)
    }

    /// What follows a transfer's change on the ticket at this node: the node that sent a
    /// REDIRECT takes the ticket back to IN_WORK when it is rejected, and back into its
    /// ownership when it is returned (never a dead end); a receiving node purges what it
    /// received once no live transfer joins it to the ticket; the ticket's shown status
    /// follows the transfer's.
    func afterTransferChange(_ t: Transfer, previous: TransferState?, _ txn: WriteTransaction, _ seq: inout UInt64,
                             now: Millis) throws {
        let id = t.order.ticket
        let system = Actor(user: "system", role: "system")
        if t.order.fromNode == configuration.node, t.order.kind == .redirect, previous != t.state {
            switch t.state {
            case .rejected:
                try rewriteTicket(id, system, txn, &seq, now: now) { $0.status = .inWork }
            case .returned:
                try rewriteTicket(id, system, txn, &seq, now: now) { tk in
                    tk.ownerNode = configuration.node
                    tk.status = .inWork
                }
            default: break
            }
        }
        // A redirect still awaiting acceptance changes nobody's handling: no owner to keep
        // (a bulk of sent redirects replicated to the origin's office reads nothing more).
        if t.order.kind == .redirect, t.order.fromOrganisation == organisation, !t.state.awaitsAcceptance {
            try keepOwnerRegister(id, txn, &seq, now: now)
        }
        if t.order.toOrganisation == organisation && !TicketScope.isLive(t.state) {
            if try purgeIfOutOfScope(id, because: t, txn, through: seq, feedAt: seq, now: now) { return }
            try narrowToScope(id, txn)
        } else if t.order.toOrganisation == organisation, try txn.contains(schema.purgeHeld, key: id.bytes) {
            // A transfer joins us to a ticket whose purge waits for its home again (a new
            // one, or this one live once more: a completion on the organisation's other
            // node beat the return taken here): no purge is pending, so the hold goes and
            // the ticket takes this organisation's writes again. What we keep is only what
            // the live transfers' scopes name.
            if try mayHold(id, origin: nil, txn) {
                _ = try txn.delete(schema.purgeHeld, key: id.bytes)
                try reloadWaitingPurges(txn)
            }
            try narrowToScope(id, txn)
        }
        if let record = try loadRecord(TicketRecord.schema, id, txn) { try projectTicket(record, txn) }
    }

    /// At the origin, which holds every redirect of the ticket: the owner register is
    /// brought to the handler the redirects decide (`TicketScope.handler`) when the two
    /// disagree. An organisation that holds the ticket by a COPY or an INFO_REQUEST sees
    /// no redirect and reads the register (a completion that beat a return taken on the
    /// fund's other node left it naming the origin); the register's history says who took
    /// it over as before. Written by one node, the one that sent the deciding redirect (or,
    /// back with the origin, the one that gets it back), so that the origin's nodes do not
    /// write rival values of it. Also run when a merge changed the register: the step that
    /// ended a redirect and the receiver's owner write travel as two records, and the
    /// write may come second.
    func keepOwnerRegister(_ id: TicketID, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws {
        // Most tickets a merge brings have no transfer: one cursor seek, no record read.
        guard try !transferIDs(ofTicket: id, txn).isEmpty,
              let record = try loadRecord(TicketRecord.schema, id, txn),
              TicketRecord.originOrganisation(record.state, configuration.directory) == organisation else { return }
        let mine = organisation
        let links = try links(ofTicket: id, txn, origin: { mine })
        guard let h = try handling(record, links: links, txn) else { return }
        let owner = record.state.registers[TicketRecord.Register.owner.rawValue]
        let directory = configuration.directory
        let registered = owner.value.flatMap { try? TicketValues.owner($0, checked: false) }
        let disagrees = registered.flatMap { directory.org($0) } != h.organisation
        // Two redirects stand (the origin's nodes each sent one while apart): the overruled
        // receiver learns it only from the origin's own word in the register.
        let overrules = owner.winner.map { directory.org($0.dot.node) != organisation } ?? true
            && TicketScope.standingRedirects(origin: organisation, links: links) > 1
        guard disagrees || overrules, (h.redirect?.order.fromNode ?? h.node) == configuration.node else { return }
        // When the value stands already, the origin's node writes it again as its own word.
        try rewriteTicket(id, Actor(user: "system", role: "system"), txn, &seq, now: now,
                          rewriting: RegisterSet(bits: 1 << UInt64(TicketRecord.Register.owner.rawValue))) { $0.ownerNode = h.node }
    }

    /// After a merge changed a transfer: its projection; the transport acknowledgement
    /// when this node's organisation receives it, holds its ticket and none of its nodes
    /// has acknowledged it yet; the ticket backfilled to the partner when the transfer
    /// is new here and did not come from the partner (a transfer sent from a region's
    /// office reaches the fund through the region's centre); and its consequences.
    ///
    /// Returns the ticket when the transfer is live again for this node's organisation and
    /// this node purged the ticket (`MergeReport.wanted`): its purge is undone (the
    /// record of it dropped; the feed's entries before it stay passed over,
    /// `purgedThrough`), and the ticket is to be fetched whole.
    func mergedTransfer(_ id: RecordID, arrivedFrom: String?, _ txn: WriteTransaction, _ seq: inout UInt64,
                        now: Millis) throws -> RecordRef? {
        guard var t = try loadTransfer(id, txn) else { return nil }
        let previous = try transferView(id, txn)?.state
        if try deliverIfHeld(&t, txn, &seq, now: now) == false { try projectTransfer(t, txn) }
        if previous == nil, TicketScope.isLive(t.state), let side = t.side(of: organisation) {
            let partner = side == .sender ? t.order.toOrganisation : t.order.fromOrganisation
            if partner != arrivedFrom { try backfill(ticket: t.order.ticket, for: partner, txn, &seq) }
        } else if let previous, !TicketScope.isLive(previous), TicketScope.isLive(t.state), t.side(of: organisation) == .sender {
            // Live again (an acceptance beat the cancellation seen here first): a node of the
            // receiver that purged on the cancellation gets the ticket once more.
            try backfill(ticket: t.order.ticket, for: t.order.toOrganisation, txn, &seq)
        }
        try afterTransferChange(t, previous: previous, txn, &seq, now: now)
        let ticket = t.order.ticket
        guard t.order.toOrganisation == organisation, TicketScope.isLive(t.state),
              try txn.contains(schema.purged, key: ticket.bytes) else { return nil }
        _ = try txn.delete(schema.purged, key: ticket.bytes)
        let whole = try loadRecord(TicketRecord.schema, ticket, txn).map {
            TicketRecord.isComplete($0.state.registers.map(\.value))
        } ?? false
        return whole ? nil : RecordRef(kind: TicketRecord.kind, id: ticket)
    }

    /// The DELIVERED step, written by a node of the receiving organisation once it holds
    /// both the transfer and its ticket. Returns whether it wrote (and projected) one.
    @discardableResult
    func deliverIfHeld(_ t: inout Transfer, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> Bool {
        guard t.order.toOrganisation == organisation, t.state == .sent,
              let origin = try originOrganisation(ofTicket: t.order.ticket, txn),
              origin == t.order.fromOrganisation else { return false }   // held here, and sent by its origin
        let step = TransferStep(id: writer.nextID(now: now), state: .delivered, node: configuration.node,
                                stamp: writer.clock.tick(wall: now), actor: Actor(user: "system", role: "system"))
        try addSteps([step], to: t.id, txn, &seq)
        t.steps.add(step)
        try projectTransfer(t, txn)
        return true
    }

    /// After a merge brought a ticket new here: one whose every transfer to this
    /// organisation ended before it arrived (a cancellation that overtook it by another
    /// path) is purged at once, as it would have been had it come first; otherwise the
    /// transfers to this organisation that waited for it are delivered.
    func mergedTicket(_ id: TicketID, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws {
        let origin = try originOrganisation(ofTicket: id, txn)
        if origin != organisation, try !mayHold(id, origin: origin, txn) {
            let ended = try transferIDs(ofTicket: id, txn).compactMap { try loadTransfer($0, txn) }
                .last { $0.order.toOrganisation == organisation }
            if let ended, try purgeIfOutOfScope(id, because: ended, txn, through: seq, feedAt: seq, now: now) { return }
        }
        for tid in try transferIDs(ofTicket: id, txn) {
            guard let v = try transferView(tid, txn), v.state == .sent, v.order.toOrganisation == organisation,
                  var t = try loadTransfer(tid, txn) else { continue }
            try deliverIfHeld(&t, txn, &seq, now: now)
        }
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

    func transferIndexEntries(_ id: RecordID, _ o: TransferOrder) -> [(Database, [UInt8])] {
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

    func transferView(_ id: RecordID, _ txn: some TransactionProtocol) throws -> TransferViewValue? {
        try txn.withValue(schema.transfers, key: id.bytes) { try TransferView.decode($0, id: id) }
    }

    func transferIDs(ofTicket ticket: TicketID, _ txn: some TransactionProtocol) throws -> [RecordID] {
        let prefix = ticket.bytes
        return try txn.withCursor(schema.transfersByTicket) { c in
            var out: [RecordID] = []
            var ok = try c.seek(atLeast: prefix)
            while ok && c.keyHasPrefix(prefix) {
                // A key that names no transfer (a damaged index) is a corrupt store, not a trap.
                guard c.key.count == 32 else { throw CorruptRecord(what: "transfers of \(ticket): a key of \(c.key.count) bytes") }
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

    /// Unaccepted transfers past their due time, to this organisation and from it: what
    /// health, metrics and `cluster health` flag. The inbox is read up to now by its due
    /// order; the outbox, kept by creation time, is read whole.
    public func overdueTransfers(now: Millis) throws -> (incoming: Int, outgoing: Int) {
        let org = organisation
        let prefix = Array(org.utf8) + [0]
        return try readTxn { txn in
            func count(_ db: Database, stopAtDue: Bool) throws -> Int {
                try txn.withCursor(db) { c in
                    var n = 0
                    var ok = try c.seek(atLeast: prefix)
                    let end = Keys.organisationTime(org, now, RecordID(high: 0, low: 0))
                    while ok && c.keyHasPrefix(prefix) {
                        if stopAtDue && c.key.lexicographicallyPrecedes(end) == false { break }
                        let id = try CaseStore.transferIndexID(c.key, prefix: prefix)
                        if let v = try transferView(id, txn), TransferLifecycle.isOverdue(state: v.state, dueAt: v.order.dueAt, now: now) {
                            n += 1
                        }
                        ok = try c.next()
                    }
                    return n
                }
            }
            return (try count(schema.transferInbox, stopAtDue: true), try count(schema.transferOutbox, stopAtDue: false))
        }
    }

    /// The transfer an inbox or outbox key names (organisation + 0x00 + time + id); a key
    /// of another length (a damaged index) is a corrupt store, not a trap.
    static func transferIndexID(_ key: UnsafeRawBufferPointer, prefix: [UInt8]) throws(CorruptRecord) -> RecordID {
        guard key.count == prefix.count + 8 + 16 else { throw CorruptRecord(what: "transfer index: a key of \(key.count) bytes") }
        return RecordID(raw: UnsafeRawBufferPointer(rebasing: key[(key.count - 16)...]))
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
                    let id = try CaseStore.transferIndexID(c.key, prefix: prefix)
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
