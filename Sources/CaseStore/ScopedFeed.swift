import CaseModel
import LMDB
import Replication

/// Scoped replication (proto/README.md §9): what a node of another organisation receives.
///
/// Every feed entry that may concern a partner organisation is also written to
/// `scope_feed` under that organisation, at the same sequence, so that a partner's
/// pull reads its own entries and never scans the whole feed. What of an entry is sent
/// is decided when it is read, from the transfers held then (`TicketScope`): a
/// transfer that was cancelled since stops the updates at once. A ticket newly in a
/// partner's scope is backfilled: its registers and children are indexed again, at
/// new sequences of this store, so the partner receives it without any checkpoint
/// being reset (the full feed has no entry at those sequences).
extension CaseStore {
    /// The transfers of a ticket as its scope and grants need them: only those sent by
    /// the ticket's origin organisation (the only one that sends it, proto/README.md §9).
    /// A transfer any other organisation wrote about the ticket — a partner fabricating
    /// one from itself to gain the ticket — is kept as a record but counts for nothing.
    /// `origin`: the ticket's origin organisation where the caller knows it (from a
    /// delta's header; asked only when the ticket has transfers); otherwise the stored record's.
    func links(ofTicket ticket: TicketID, _ txn: some TransactionProtocol,
               origin: (() -> String?)? = nil) throws -> [TicketScope.Link] {
        // Most tickets have no transfer: one cursor seek; neither the record nor a header is read.
        let ids = try transferIDs(ofTicket: ticket, txn)
        guard !ids.isEmpty else { return [] }
        let origin = try origin?() ?? originOrganisation(ofTicket: ticket, txn)
        return try ids.compactMap { id in
            guard let v = try transferView(id, txn), origin == nil || v.order.fromOrganisation == origin else { return nil }
            return TicketScope.Link(order: v.order, state: v.state, acceptedBy: v.acceptedBy)
        }
    }

    /// The organisation of a stored ticket's origin node, from its header register.
    func originOrganisation(ofTicket id: TicketID, _ txn: some TransactionProtocol) throws -> String? {
        guard let record = try loadRecord(TicketRecord.schema, id, txn) else { return nil }
        return TicketRecord.originOrganisation(record.state, configuration.directory)
    }

    /// The roles a ticket's transfers grant, for admission and for this node's own edits.
    func grants(forTicket ticket: TicketID, _ txn: some TransactionProtocol, origin: (() -> String?)? = nil) throws -> Grants {
        TicketScope.grants(try links(ofTicket: ticket, txn, origin: origin))
    }

    /// Refuses a local edit of a ticket's registers unless this node's organisation
    /// plays the register's role now (origin or owner: not a grant, so a former owner
    /// cannot edit), and a child unless it plays the collection's role or a partner's.
    func checkEntitled(_ record: StoredRecord, registers: RegisterSet, collection: UInt8? = nil,
                       _ txn: some TransactionProtocol) throws {
        let schema = TicketRecord.schema
        let mine = organisation
        var roles = schema.roles(record.state, configuration.directory)
        // The owner is who handles it as its transfers decide, not the register's last write.
        if let h = try handling(record, txn) { roles[TicketRecord.owner] = h.organisation }
        let ownerOrg = roles[TicketRecord.owner] ?? "unknown"
        // A ticket kept only until its home holds our writes (its transfer ended: PurgeHold)
        // takes no more of them: they would come after the point the purge waits for.
        if try txn.contains(self.schema.purgeHeld, key: record.state.id.bytes) {
            throw Refused(error: .rejected(.notOwner(organisation: roles[TicketRecord.origin] ?? "unknown")))
        }
        for i in registers where !schema.registers[i].writers.contains(where: { roles[$0] == mine }) {
            throw Refused(error: .rejected(.notOwner(organisation: schema.registers[i].writers.contains(TicketRecord.origin)
                ? roles[TicketRecord.origin] ?? "unknown" : ownerOrg)))
        }
        if let collection, let coll = schema.collection(number: UInt64(collection)) {
            let grants = try grants(forTicket: record.state.id, txn)
            guard grants.entitles(mine, among: coll.writers, roles: roles) else {
                throw Refused(error: .rejected(.notOwner(organisation: ownerOrg)))
            }
        }
    }

    /// The organisations a change of this record may concern, other than this node's.
    func partners(of schema: RecordSchema, _ record: StoredRecord, _ txn: some TransactionProtocol) throws -> Set<String> {
        let mine = organisation
        switch schema.kind {
        case TransferRecord.kind:
            guard let t = Transfer.materialise(record.state, local: record.local) else { return [] }
            return Set([t.order.fromOrganisation, t.order.toOrganisation]).subtracting([mine])
        case TicketRecord.kind:
            return TicketScope.partners(of: mine, links: try links(ofTicket: record.state.id, txn))
        default:
            return []
        }
    }

    /// Indexes feed entries just written for the partners they may concern, except the
    /// organisation they arrived from (it holds them).
    func indexForPartners(_ schema: RecordSchema, _ record: StoredRecord, _ entries: [(UInt64, FeedEntry)],
                          arrivedFrom: String?, _ txn: WriteTransaction) throws {
        var orgs = try partners(of: schema, record, txn)
        if let arrivedFrom { orgs.remove(arrivedFrom) }
        for org in orgs {
            for (seq, entry) in entries { try txn.put(self.schema.scopeFeed, key: Keys.scope(org, seq), value: entry.encode()) }
        }
    }

    /// Indexes the whole ticket again for `partner` at new sequences: its registers and
    /// every child (at most `FeedEntry.maxChildren` per entry).
    func backfill(ticket id: TicketID, for partner: String, _ txn: WriteTransaction, _ seq: inout UInt64) throws {
        let schema = TicketRecord.schema
        guard let record = try loadRecord(schema, id, txn) else { return }
        var present = RegisterSet()
        for (i, r) in record.state.registers.enumerated() where !r.isEmpty { present.insert(i) }
        var keys: [ChildKey] = []
        for coll in schema.collections {
            let prefix = Keys.childPrefix(schema.kind.rawValue, id, coll.number)
            try txn.withCursor(self.schema.children) { c in
                var ok = try c.seek(atLeast: prefix)
                while ok && c.keyHasPrefix(prefix) {
                    guard c.key.count == prefix.count + 16 else {
                        throw CorruptRecord(what: "children of \(id): a key of \(c.key.count) bytes")
                    }
                    keys.append(ChildKey(collection: coll.number, id: RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[prefix.count...]))))
                    ok = try c.next()
                }
            }
        }
        var rest = keys[...]
        var numbers = schema.numbers(present)
        repeat {
            try advance(&seq)
            let entry = FeedEntry(kind: schema.kind, id: id, registerNumbers: numbers, children: Array(rest.prefix(FeedEntry.maxChildren)))
            rest = rest.dropFirst(FeedEntry.maxChildren)
            numbers = 0
            try txn.put(self.schema.scopeFeed, key: Keys.scope(partner, seq), value: entry.encode())
        } while !rest.isEmpty
    }

    /// What `partner` may receive of a record, decided now: nil for nothing.
    func partnerFilter(_ kind: RecordKindID, _ id: RecordID, partner: String,
                       _ txn: some TransactionProtocol) throws -> DeltaFilter? {
        switch kind {
        case TransferRecord.kind:
            guard let record = try loadRecord(TransferRecord.schema, id, txn),
                  let t = Transfer.materialise(record.state, local: record.local),
                  t.order.fromOrganisation == partner || t.order.toOrganisation == partner else { return nil }
            return DeltaFilter(registers: TransferRecord.schema.allRegisters, child: nil)
        case TicketRecord.kind:
            // A ticket no live transfer joins us to any more is still sent to its home while
            // its purge waits for the home to hold our writes (PurgeHold.swift): the home's
            // own ticket, with what we added that it may see. (The origin is read only then.)
            guard let scope = try TicketScope.of(partner: partner, mine: organisation, links: links(ofTicket: id, txn))
                    ?? homeScope(id, partner: partner, txn) else {
                return nil
            }
            return DeltaFilter(registers: scope.registers, child: { scope.admits($0, ticket: id) })
        default:
            return nil
        }
    }

    /// `TicketScope.home` when `partner` is the ticket's home and this node is not.
    private func homeScope(_ id: RecordID, partner: String, _ txn: some TransactionProtocol) throws -> TicketScope? {
        guard partner != organisation, try originOrganisation(ofTicket: id, txn) == partner else { return nil }
        return .home
    }

    /// Entries of `partner`'s scope after `since`, as `feedPage` reads the full feed.
    func scopedFeedPage(after since: UInt64, limit: Int, maxBytes: Int, partner: String, link: Capabilities? = nil) throws -> FeedPage {
        let limit = min(max(limit, 1), 10_000)
        return try readTxn { txn in
            let last = try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
            let prefix = Array(partner.utf8) + [0]
            var readThrough = since
            var skipped: [FeedPage.Skip] = []
            let entries = try txn.withCursor(schema.scopeFeed) { c in
                var out: [FeedPage.Entry] = []
                var bytes = 0
                // Entries read and found out of scope count too, so a page costs at most this.
                var budget = limit * 8
                // Decisions per record within one page: a backfill names a record many times.
                var filters: [RecordRef: DeltaFilter?] = [:]
                var ok = since == .max ? false : try c.seek(atLeast: Keys.scope(partner, since + 1))
                while out.count < limit && (out.isEmpty || bytes < maxBytes) && budget > 0 {
                    guard ok && c.keyHasPrefix(prefix) else { readThrough = max(readThrough, last); break }
                    budget -= 1
                    // A key that is no sequence (a damaged table) is a corrupt store, not a trap.
                    guard c.key.count == prefix.count + 8,
                          let seq = UInt64(bigEndianBytes: UnsafeRawBufferPointer(rebasing: c.key[prefix.count...])) else {
                        throw CorruptRecord(what: "scope feed of \(partner): a key of \(c.key.count) bytes")
                    }
                    let delta = try encodeEntry(c.value, at: seq, txn, skipped: &skipped) { entry in
                        let key = RecordRef(kind: entry.kind, id: entry.id)
                        if let known = filters[key] { return known }
                        let filter = narrowed(try partnerFilter(entry.kind, entry.id, partner: partner, txn), entry.kind, link: link)
                        filters[key] = filter
                        return filter
                    }
                    if let delta {
                        bytes += delta.count
                        out.append(FeedPage.Entry(sequence: seq, delta: delta))
                    }
                    readThrough = seq
                    ok = try c.next()
                }
                return out
            }
            return FeedPage(entries: entries, lastSequence: last, readThrough: readThrough, skipped: skipped)
        }
    }
}

/// Which parts of a record a delta carries: a register subset and, for children, a test.
struct DeltaFilter: Sendable {
    var registers: RegisterSet
    var child: (@Sendable (Child) -> Bool)?
    static let everything = DeltaFilter(registers: RegisterSet(bits: .max), child: nil)
}
