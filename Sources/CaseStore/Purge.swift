import CaseModel
import LMDB
import Metrics
import Replication

private let purges = Counter(label: "ekc_transfer_purges_total")

/// The record that a ticket's personal data was purged here: which transfer's end
/// caused it, when, and the state it ended in. `PurgeRecord { bytes transfer = 1;
/// int64 at = 2; uint64 state = 3; VersionVector own_writes = 4 }`, kept in `purged`
/// by ticket id.
public struct Purge: Sendable, Equatable {
    public let ticket: TicketID
    public let transfer: RecordID
    public let at: Millis
    public let state: TransferState
    /// The latest of this organisation's writes (register values and notes) the ticket
    /// held when it was purged, per node: a later one that arrives from a node of this
    /// organisation was not in the ticket the home acknowledged, and is kept until the
    /// home has it (`retakeForLateOwnWrites`).
    public let ownWrites: VersionVector

    func encode() -> [UInt8] {
        var w = ProtoWriter(capacity: 32)
        w.presentBytes(1, transfer.bytes)
        w.int64(2, Int64(at))
        w.uint64(3, UInt64(state.wireNumber))
        if !ownWrites.isEmpty { RecordCoding.vector(&w, 4, ownWrites) }
        return w.bytes
    }

    static func decode(_ b: UnsafeRawBufferPointer, ticket: TicketID) throws(CorruptRecord) -> Purge {
        var r = ProtoReader(b)
        var transfer: RecordID?, at: Millis = 0, state: TransferState?, own = VersionVector()
        do {
            while let (n, t) = try r.field() {
                switch (n, t) {
                case (1, 2): transfer = RecordID(bytes: try r.bytes())
                case (2, 0): at = Millis(bitPattern: try r.varint())
                case (3, 0): state = Int(exactly: try r.varint()).flatMap(TransferState.init(wireNumber:))
                case (4, 2): own = try RecordCoding.readVector(&r, limit: 4096, "own_writes")
                default: try r.skip(t)
                }
            }
        } catch {
            throw CorruptRecord(what: "purge of \(ticket): \(error)")
        }
        guard let transfer, let state else { throw CorruptRecord(what: "purge of \(ticket): incomplete") }
        guard PlausibleTime.range.contains(at) else { throw CorruptRecord(what: "purge of \(ticket): at \(at) is not a time between 2000 and 2200") }
        return Purge(ticket: ticket, transfer: transfer, at: at, state: state, ownWrites: own)
    }
}

extension CaseStore {
    /// Whether this node's organisation may hold the ticket: it said it (origin), or a
    /// live transfer joins it to the ticket.
    /// `origin`: the ticket's origin organisation when the caller holds its record.
    func mayHold(_ id: TicketID, origin: String?, _ txn: some TransactionProtocol) throws -> Bool {
        let mine = organisation
        if origin == mine { return true }
        return try links(ofTicket: id, txn, origin: origin.map { o in { o } }).contains { l in
            TicketScope.isLive(l.state) && (l.order.fromOrganisation == mine || l.order.toOrganisation == mine)
        }
    }

    /// Purges a ticket this node received by transfer once no live transfer joins its
    /// organisation to it (proto/README.md §9): its registers, notes and history, its view and
    /// index entries go; the transfer records stay, and the purge is recorded (and shown
    /// with the transfer). Returns whether it purged. A ticket holding writes of this
    /// organisation that its home has not acknowledged yet (the feed through `through`)
    /// is kept until it has (PurgeHold.swift): not purged yet.
    /// `feedAt`: the last sequence this transaction has written (every feed entry naming
    /// the ticket is at or before it).
    func purgeIfOutOfScope(_ id: TicketID, because t: Transfer, _ txn: WriteTransaction, through: UInt64,
                           feedAt: UInt64, now: Millis) throws -> Bool {
        let schema = TicketRecord.schema
        guard let record = try loadRecord(schema, id, txn) else { return false }
        let origin = TicketRecord.originOrganisation(record.state, configuration.directory)
        guard try !mayHold(id, origin: origin, txn) else { return false }
        if let origin, try mustHoldPurge(id, record, home: origin, through: through, txn) {
            try holdPurge(id, because: t, home: origin, through: through, txn)
            return false
        }
        _ = try txn.delete(self.schema.purgeHeld, key: id.bytes)
        let own = try ownWrites(id, record, txn)
        let recordKey = Keys.record(schema.kind.rawValue, id)
        digestTouched(schema.kind, id)
        // Its leaves are hashed again from what is left: a batch of a catch-up may bring the
        // ticket back after this, and adding its children to the leaves of before the purge
        // would count the purged ones too (fault seed 6: a fund's leaf counted 18 of 13).
        digestWork.recompute.insert(RecordRef(kind: schema.kind, id: id))
        // The feed forgets the registers (each sits in one entry, which the record names);
        // the entries naming its children stay, passed over up to this point
        // (`purgedThrough`), also once a transfer made live again brings the ticket back.
        var leaving: [UInt64: UInt64] = [:]
        for (i, at) in record.feedSequence.enumerated() where at != 0 {
            leaving[at, default: 0] |= 1 << UInt64(schema.registers[i].number)
        }
        try removeFromFeed(leaving, txn)
        try txn.put(self.schema.purgedThrough, key: id.bytes, value: feedAt.bigEndianBytes)
        _ = try txn.delete(self.schema.records, key: recordKey)
        _ = try txn.delete(self.schema.conflicted, key: recordKey)
        let childKeys = try txn.withCursor(self.schema.children) { c in
            var keys: [[UInt8]] = []
            var ok = try c.seek(atLeast: recordKey)
            while ok && c.keyHasPrefix(recordKey) {
                keys.append(Array(c.key))
                ok = try c.next()
            }
            return keys
        }
        for k in childKeys { _ = try txn.delete(self.schema.children, key: k) }
        if let facts = try txn.withValue(self.schema.tickets, key: id.bytes, { TicketIndexFacts(view: $0, id: id) }) ?? nil {
            for (db, key) in indexEntries(facts) { _ = try txn.delete(db, key: key) }
            let number = Keys.number(facts.number)
            if try txn.get(self.schema.numbers, key: number) == id.bytes { _ = try txn.delete(self.schema.numbers, key: number) }
        }
        _ = try txn.delete(self.schema.tickets, key: id.bytes)
        try txn.put(self.schema.purged, key: id.bytes,
                    value: Purge(ticket: id, transfer: t.id, at: now, state: t.state, ownWrites: own).encode())
        purges.increment()
        return true
    }

    /// A receiver that another live transfer still joins to a ticket keeps only the
    /// citizen details the live transfers' scopes name: those a transfer that ended
    /// brought are removed here (and their feed entries forget them), as a purge removes
    /// everything when no transfer is live (152-FZ: nothing beyond what the purpose
    /// needs). A later transfer that names them again brings them back by backfill.
    /// Returns whether it removed anything.
    @discardableResult
    func narrowToScope(_ id: TicketID, _ txn: WriteTransaction) throws -> Bool {
        let schema = TicketRecord.schema
        guard var record = try loadRecord(schema, id, txn),
              let origin = TicketRecord.originOrganisation(record.state, configuration.directory), origin != organisation,
              let scope = TicketScope.of(partner: organisation, mine: origin, links: try links(ofTicket: id, txn)) else { return false }
        var leaving: [UInt64: UInt64] = [:]
        var removed = false
        for r in TicketRecord.citizenRegisters {
            let i = r.rawValue
            guard !scope.registers.contains(i), !record.state.registers[i].isEmpty else { continue }
            record.state.registers[i] = Register()
            removed = true
            if record.feedSequence[i] != 0 { leaving[record.feedSequence[i], default: 0] |= 1 << UInt64(schema.registers[i].number) }
            record.feedSequence[i] = 0
        }
        guard removed else { return false }
        try removeFromFeed(leaving, txn)
        record.local.version += 1
        try txn.put(self.schema.records, key: Keys.record(schema.kind.rawValue, id), value: record.encode(schema))
        digestTouched(schema.kind, id)
        try projectTicket(record, txn)
        return true
    }

    /// Whether a ticket was purged here and this organisation may not hold it now: what
    /// still arrives of it (a peer of this organisation behind on the transfer's end)
    /// is not kept.
    func isPurgedAndOutOfScope(_ id: TicketID, _ txn: some TransactionProtocol) throws -> Bool {
        guard try txn.contains(schema.purged, key: id.bytes) else { return false }
        return try !mayHold(id, origin: nil, txn)
    }

    /// Whether a part of a record that a feed entry at `sequence` names may be gone because
    /// a purge took it: the ticket is purged here, or was purged at or after that entry
    /// (`purgedThrough`; a transfer live again brought it back). `sequence` nil: not a feed
    /// entry, so only a purge in force counts.
    func partGoneByPurge(_ kind: RecordKindID, _ id: RecordID, since sequence: UInt64?,
                         _ txn: some TransactionProtocol) throws -> Bool {
        guard kind == TicketRecord.kind else { return false }
        if try txn.contains(schema.purged, key: id.bytes) { return true }
        guard let sequence, let through = try txn.u64(schema.purgedThrough, id.bytes) else { return false }
        return through >= sequence
    }

    /// The purge of a ticket's personal data at this node, if there was one.
    public func purge(ofTicket id: TicketID) throws -> Purge? {
        try readTxn { txn in try txn.withValue(schema.purged, key: id.bytes) { try Purge.decode($0, ticket: id) } }
    }
}
