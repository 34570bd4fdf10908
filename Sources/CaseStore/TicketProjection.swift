import CaseModel
import LMDB
import Replication

/// What operators query of tickets, kept beside the replicated registers and updated
/// in the same transaction whenever a ticket's registers change (a local edit or a
/// merge): the ticket as its registers' winners say (`tickets`), its readable number,
/// and the indexes of listings.
///
/// A view is stored as `TicketView { bytes <register number> = the winner's value;
/// uint64 version = 20; fixed64 updated_stamp = 21; }`: the registers' own value
/// messages, read by the same codecs as replicated values.
enum TicketView {
    static let versionField: UInt64 = 20
    static let stampField: UInt64 = 21
    /// The status at the organisation handling a ticket this node redirected (its
    /// progress register's own status, while the view shows TRANSFERRED_OUT).
    static let handlerStatusField: UInt64 = 22

    static func encode(_ winners: [ValueBytes?], version: UInt64, stamp: Stamp, handlerStatus: TicketStatus? = nil) -> [UInt8] {
        var w = ProtoWriter(capacity: 64 + winners.reduce(0) { $0 + ($1?.count ?? 0) + 3 })
        for (i, v) in winners.enumerated() {
            if let v { w.presentBytes(UInt64(TicketRecord.schema.registers[i].number), v) }
        }
        w.uint64(versionField, version)
        w.fixed64(stampField, stamp.raw)
        if let handlerStatus { w.uint64(handlerStatusField, UInt64(handlerStatus.code)) }
        return w.bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, id: TicketID) throws(CorruptRecord) -> Ticket {
        let schema = TicketRecord.schema
        // The values are read in place, inside the read transaction that holds the page.
        var winners = [UnsafeRawBufferPointer?](repeating: nil, count: schema.registers.count)
        var version: UInt64 = 0, stamp: UInt64 = 0
        var handler: TicketStatus?
        var r = ProtoReader(bytes)
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                if t == 2, let i = schema.registerIndex(number: UInt64(n)) {
                    winners[i] = UnsafeRawBufferPointer(rebasing: bytes[try r.body()])
                } else if n == Int(versionField), t == 0 {
                    version = try r.varint()
                } else if n == Int(stampField), t == 1 {
                    stamp = try r.fixed64()
                } else if n == Int(handlerStatusField), t == 0 {
                    handler = TicketStatus(code: UInt8(truncatingIfNeeded: try r.varint()))
                } else {
                    try r.skip(t)
                }
            }
        } catch {
            throw CorruptRecord(what: "ticket \(id): \(error)")
        }
        guard var t = Ticket.ticket(id: id, winners: winners, local: LocalRecordInfo(version: version), latest: Stamp(raw: stamp))
        else { throw CorruptRecord(what: "ticket \(id): incomplete view") }
        t.handlerStatus = handler
        return t
    }
}

extension CaseStore {
    func loadTicket(_ id: TicketID, _ txn: some TransactionProtocol) throws -> Ticket? {
        try txn.withValue(schema.tickets, key: id.bytes) { try TicketView.decode($0, id: id) }
    }

    /// Every index entry a ticket has; an update deletes the old set and writes the new one.
    func indexEntries(_ f: TicketIndexFacts) -> [(Database, [UInt8])] {
        var e: [(Database, [UInt8])] = [
            (schema.byStatus, Keys.status(f.status, f.id)),
            (schema.byUpdated, Keys.time(f.updatedAt, f.id)),
        ]
        if let a = f.assignee { e.append((schema.byAssignee, Keys.assignee(a, f.id))) }
        if let d = f.deadlines.next(for: f.status) { e.append((schema.byDeadline, Keys.time(d, f.id))) }
        return e
    }

    /// Brings the ticket view, its number and its index entries in line with the
    /// record's registers. Returns whether the ticket is shown (false while the record
    /// is incomplete: a ticket whose opening write has not arrived is not shown), and
    /// the readable number if another ticket already had it here. Only the values the
    /// number and the indexes need are decoded.
    /// `derived`: the view differs from the registers' winners (the ticket's transfers
    /// decide its owner or status here), so a local edit's result is read back from it.
    @discardableResult
    func projectTicket(_ record: StoredRecord, _ txn: WriteTransaction) throws -> (shown: Bool, duplicateNumber: String?, derived: Bool) {
        let id = record.state.id
        var winners = record.state.registers.map(\.value)
        guard TicketRecord.isComplete(winners) else { return (false, nil, false) }
        // A ticket this organisation redirected shows the transfer's status here
        // (TRANSFER_PENDING, TRANSFERRED_OUT), and the receiver's as its handler status.
        var handler: TicketStatus?
        let p = TicketRecord.Register.progress.rawValue
        let links = try links(ofTicket: id, txn)
        // Who handles it and how far, as its transfers decide (Handling.swift).
        if let h = try handling(record, links: links, txn) {
            winners[TicketRecord.Register.owner.rawValue] = TicketValues.encode(owner: h.node)
            if let progress = try handledProgress(record, h, txn) { winners[p] = progress }
        }
        if let shown = TicketScope.shownStatus(mine: organisation, links: links),
           let b = winners[p], var progress = try? TicketValues.progress(b, checked: false) {
            if shown == .transferredOut { handler = progress.status }
            progress.status = shown
            winners[p] = TicketValues.encode(progress)
        }
        let stamp = record.state.latestStamp
        guard let new = TicketIndexFacts(id: id, winners: winners, stamp: stamp) else { return (false, nil, false) }
        let old = try txn.withValue(schema.tickets, key: id.bytes) { TicketIndexFacts(view: $0, id: id) } ?? nil
        try txn.put(schema.tickets, key: id.bytes, value: TicketView.encode(winners, version: record.local.version, stamp: stamp,
                                                                           handlerStatus: handler))
        var duplicate: String?
        if old == nil {
            // Two tickets with one number (nodes sharing a series) stay reachable by id;
            // the number keeps naming the first.
            let key = Keys.number(new.number)
            if try !txn.contains(schema.numbers, key: key) {
                try txn.put(schema.numbers, key: key, value: id.bytes)
            } else if try txn.get(schema.numbers, key: key) != id.bytes {
                duplicate = new.number.description
            }
        }
        let before = old.map(indexEntries) ?? []
        let after = indexEntries(new)
        for (db, key) in before where !after.contains(where: { $0.0 == db && $0.1 == key }) {
            _ = try txn.delete(db, key: key)
        }
        for (db, key) in after where !before.contains(where: { $0.0 == db && $0.1 == key }) {
            try txn.putAppending(db, key: key, value: [])
        }
        return (true, duplicate, !links.isEmpty)
    }

    func resolve(_ ref: TicketRef, _ txn: some TransactionProtocol) throws -> TicketID? {
        switch ref {
        case .id(let id): return id
        case .number(let n):
            return try txn.withValue(schema.numbers, key: Keys.number(n)) { TicketID(bytes: $0) } ?? nil
        }
    }

    public func ticket(_ ref: TicketRef) throws -> Ticket? {
        try readTxn { txn in
            guard let id = try resolve(ref, txn) else { return nil }
            return try loadTicket(id, txn)
        }
    }

    public func notes(of ref: TicketRef) throws -> [Note]? {
        try readTxn { txn in
            guard let id = try resolve(ref, txn), try txn.contains(schema.tickets, key: id.bytes) else { return nil }
            return try children(TicketRecord.kind, id, TicketRecord.Collection.notes.rawValue, txn).map { c in
                try TicketValues.note(c, ticket: id, checked: false)
            }
        }
    }

    public func history(of ref: TicketRef) throws -> [HistoryEvent]? {
        try readTxn { txn in
            guard let id = try resolve(ref, txn), try txn.contains(schema.tickets, key: id.bytes) else { return nil }
            return try children(TicketRecord.kind, id, TicketRecord.Collection.history.rawValue, txn).map { c in
                try TicketValues.event(c, ticket: id, checked: false)
            }
        }
    }
}

/// What a ticket's number and indexes are made of: read from three of its registers'
/// values, not the whole ticket.
struct TicketIndexFacts {
    let id: TicketID
    let number: TicketNumber
    let status: TicketStatus
    let deadlines: Deadlines
    let assignee: String?
    let updatedAt: Millis

    /// From stored (admitted) values, read without judging them again.
    init?<V: ValueSource>(id: TicketID, header: V?, progress: V?, assignee: V?, stamp: Stamp) {
        guard let header, let progress, let assignee, let h = try? TicketValues.header(header, checked: false),
              let p = try? TicketValues.progress(progress, checked: false),
              let a = TicketIndexFacts.assignee(assignee) else { return nil }
        self.id = id
        number = h.number
        status = p.status
        deadlines = p.deadlines
        self.assignee = a
        updatedAt = stamp.millis
    }

    /// The assignee, or nil when the value does not decode (`try?` would flatten an absent one).
    private static func assignee(_ b: some ValueSource) -> String?? {
        do { return .some(try TicketValues.assignee(b, checked: false)) } catch { return nil }
    }

    init?(id: TicketID, winners: [ValueBytes?], stamp: Stamp) {
        typealias R = TicketRecord.Register
        self.init(id: id, header: winners[R.header.rawValue], progress: winners[R.progress.rawValue],
                  assignee: winners[R.assignee.rawValue], stamp: stamp)
    }

    /// From a stored view, reading only the fields the indexes need.
    init?(view: UnsafeRawBufferPointer, id: TicketID) {
        let schema = TicketRecord.schema
        typealias R = TicketRecord.Register
        let wanted = [R.header, .progress, .assignee].map { UInt64(schema.registers[$0.rawValue].number) }
        var values = [UnsafeRawBufferPointer?](repeating: nil, count: 3)
        var stamp: UInt64 = 0
        var r = ProtoReader(view)
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                if t == 2, let k = wanted.firstIndex(of: UInt64(n)) {
                    values[k] = UnsafeRawBufferPointer(rebasing: view[try r.body()])
                } else if n == Int(TicketView.stampField), t == 1 {
                    stamp = try r.fixed64()
                } else {
                    try r.skip(t)
                }
            }
        } catch {
            return nil
        }
        self.init(id: id, header: values[0], progress: values[1], assignee: values[2], stamp: Stamp(raw: stamp))
    }
}
