import CaseModel
import LMDB
import Metrics
import Replication

/// How far each peer has said it holds this store's feed: the checkpoint a puller sends
/// with its pull request is committed on its side (it resumes after it), so everything
/// at or before it is durable there. Kept in memory: after a restart the pullers come
/// back and say it again.
final class Acknowledgements: @unchecked Sendable {
    /// The organisations this node has a link to. A purge whose home is one of them waits
    /// for the home itself: a node of this organisation that acknowledged our feed may
    /// have purged the ticket already, dropping what we wrote (a region's centre and the
    /// note its office wrote last). A node with no link to the home (the office) has only
    /// its own organisation to pass its writes on.
    let linked: Set<String>
    private let marks = Locked<[String: UInt64]>([:])

    init(linked: Set<String> = []) { self.linked = linked }
    /// Per home organisation, the lowest point a held purge waits for (none: no entry).
    private let waiting = Locked<[String: UInt64]>([:])

    func wait(_ organisation: String, through: UInt64) {
        waiting.withLock { w in w[organisation] = min(w[organisation] ?? .max, through) }
    }

    func setWaiting(_ all: [String: UInt64]) { waiting.withLock { $0 = all } }

    /// The lowest point a held purge waits for an acknowledgement of `organisation` (this
    /// node's own, `own`, releases those for a home this node has no link to: its node
    /// holds the ticket and passes our writes on to the home, keeping them itself until
    /// the home has them).
    func waitingPoint(_ organisation: String, own: String) -> UInt64? {
        waiting.withLock { w in
            organisation == own ? w.lazy.filter { !self.linked.contains($0.key) }.map(\.value).min() : w[organisation]
        }
    }

    /// Whether some held purge is covered already (its release failed or is still to run).
    func anyCovered(own: String) -> Bool {
        let w = waiting.withLock { $0 }
        return w.contains { home, point in covers(point, home: home, own: own) }
    }

    /// Whether the acknowledgements of the home, or of this node's organisation for a home
    /// this node has no link to, cover `through`.
    func covers(_ through: UInt64, home: String, own: String) -> Bool {
        mark(home) >= through || (!linked.contains(home) && mark(own) >= through)
    }

    /// Notes that a node of `organisation` holds this store's feed through `sequence`;
    /// returns the organisation's new mark.
    @discardableResult
    func note(_ organisation: String, through sequence: UInt64) -> UInt64 {
        marks.withLock { m in
            let v = max(m[organisation] ?? 0, sequence)
            m[organisation] = v
            return v
        }
    }

    /// The furthest point any node of `organisation` has acknowledged.
    func mark(_ organisation: String) -> UInt64 { marks.withLock { $0[organisation] ?? 0 } }
}

/// A purge held back (`purge_held`, by ticket id): `HeldPurge { bytes transfer = 1;
/// uint64 through = 2; string home = 3 }`. The ticket holds writes of this organisation
/// (a partner's notes, its history of the ticket) that the feed carries to the ticket's
/// home organisation; purging before the home has them would lose what this node
/// acknowledged to its operators. It is purged once a node of the home acknowledges the
/// feed through `through`, or a node of this organisation does (a region's office has
/// no link to a fund: its centre holds the ticket, and with it the office's writes,
/// until the home has them). A centre that purged before the office's note reached it
/// takes the ticket back with the note and holds it in turn (`lateOwnWrites`).
struct HeldPurge: Sendable, Equatable {
    let transfer: RecordID
    let through: UInt64
    let home: String

    func encode() -> [UInt8] {
        var w = ProtoWriter(capacity: 48)
        w.presentBytes(1, transfer.bytes)
        w.uint64(2, through)
        w.string(3, home)
        return w.bytes
    }

    static func decode(_ b: UnsafeRawBufferPointer, ticket: TicketID) throws(CorruptRecord) -> HeldPurge {
        var r = ProtoReader(b)
        var transfer: RecordID?, through: UInt64 = 0, home: String?
        do throws(ProtoError) {
            while let (n, t) = try r.field() {
                switch (n, t) {
                case (1, 2): transfer = RecordID(bytes: try r.bytes())
                case (2, 0): through = try r.varint()
                case (3, 2): home = try r.string()
                default: try r.skip(t)
                }
            }
        } catch {
            throw CorruptRecord(what: "held purge of \(ticket): \(error)")
        }
        guard let transfer, let home else { throw CorruptRecord(what: "held purge of \(ticket): incomplete") }
        return HeldPurge(transfer: transfer, through: through, home: home)
    }
}

private let held = Counter(label: "ekc_purges_held_total")

extension CaseStore {
    /// Whether the purge of ticket `id` must wait for its home organisation `home` to
    /// acknowledge this store's feed through `through` (the sequence this transaction
    /// has reached): the record holds a register value or a note this organisation's
    /// nodes wrote. (Its history events about the transfer are not waited for: the
    /// transfer's own steps, which stay, say the same.)
    func mustHoldPurge(_ id: TicketID, _ record: StoredRecord, home: String?, through: UInt64,
                       _ txn: some TransactionProtocol) throws -> Bool {
        guard let home, home != organisation, !acknowledgements.covers(through, home: home, own: organisation) else { return false }
        return try !ownWrites(id, record, txn).isEmpty
    }

    /// Whether a write was made by a node of this organisation.
    func writtenHere(_ dot: Dot) -> Bool { configuration.directory.org(dot.node) == organisation }

    /// The latest write of this organisation's nodes in the ticket: its register values
    /// and notes, what `mustHoldPurge` waits for (kept with the purge).
    func ownWrites(_ id: TicketID, _ record: StoredRecord, _ txn: some TransactionProtocol) throws -> VersionVector {
        var out = VersionVector()
        for r in record.state.registers { for v in r.versions where writtenHere(v.dot) { out.add(v.dot) } }
        for c in try children(TicketRecord.kind, id, TicketRecord.Collection.notes.rawValue, txn) where writtenHere(c.dot) {
            out.add(c.dot)
        }
        return out
    }

    /// Whether a delta that a node of this organisation sent for a ticket purged here
    /// carries a write of this organisation the ticket did not hold when it was purged:
    /// the office's note that reached its centre after the centre's purge. The centre's
    /// acknowledgement released the office's hold, so the note is the centre's to keep:
    /// it takes the ticket back and holds it until the home has it. (What the purge
    /// knew comes back from a lagging node too, and is not taken again: no two nodes
    /// can hand a ticket back and forth.)
    /// Returns the purge then, if so.
    func lateOwnWrites(_ delta: RecordDelta, from peer: NodeID, _ txn: some TransactionProtocol) throws -> Purge? {
        guard configuration.directory.org(peer) == organisation,
              let purge = try txn.withValue(schema.purged, key: delta.id.bytes, { try Purge.decode($0, ticket: delta.id) })
        else { return nil }
        func late(_ dot: Dot) -> Bool { writtenHere(dot) && !purge.ownWrites.contains(dot) }
        let brings = delta.state.registers.contains { $0.versions.contains { late($0.dot) } }
            || delta.children.contains { $0.collection == TicketRecord.Collection.notes.rawValue && late($0.dot) }
        return brings ? purge : nil
    }

    /// A held ticket that a merge brought a write of this organisation: the hold now
    /// waits for the home to hold the feed through `through` (the write's entry), or the
    /// acknowledgement of the earlier point would purge the write with the ticket.
    func extendHold(_ id: TicketID, _ record: StoredRecord, changed: RegisterSet, children: [Child], through: UInt64,
                    _ txn: WriteTransaction) throws {
        guard !changed.isEmpty || !children.isEmpty,
              let h = try txn.withValue(schema.purgeHeld, key: id.bytes, { try HeldPurge.decode($0, ticket: id) }),
              h.through < through else { return }
        guard changed.contains(where: { record.state.registers[$0].versions.contains { writtenHere($0.dot) } })
                || children.contains(where: { writtenHere($0.dot) }) else { return }
        try txn.put(schema.purgeHeld, key: id.bytes, value: HeldPurge(transfer: h.transfer, through: through, home: h.home).encode())
        try reloadWaitingPurges(txn)
    }

    func holdPurge(_ id: TicketID, because t: Transfer, home: String, through: UInt64, _ txn: WriteTransaction) throws {
        try txn.put(schema.purgeHeld, key: id.bytes, value: HeldPurge(transfer: t.id, through: through, home: home).encode())
        acknowledgements.wait(home, through: through)
        held.increment()
    }

    /// Whether a stream to `peer` that began with the peer holding the feed through
    /// `acknowledged`, and has now sent it through `sentThrough`, should be renewed: a
    /// purge waits for the peer's organisation to hold a point in between.
    public func purgeWaits(forOrganisationOf peer: NodeID, sentThrough: UInt64, acknowledged: UInt64) -> Bool {
        guard let org = configuration.directory.org(peer), let point = acknowledgements.waitingPoint(org, own: organisation)
        else { return false }
        return point > acknowledged && point <= sentThrough
    }

    /// The waiting points, from the table (at open, and after purges were released).
    func reloadWaitingPurges() throws {
        try readTxn { txn in try reloadWaitingPurges(txn) }
    }

    func reloadWaitingPurges(_ txn: some TransactionProtocol) throws {
        var points: [String: UInt64] = [:]
        for (_, h) in try heldPurges(txn) { points[h.home] = min(points[h.home] ?? .max, h.through) }
        acknowledgements.setWaiting(points)
    }

    /// A pull request of `peer` said it holds this store's feed through `sequence`.
    /// Returns whether that releases a held purge (`releaseHeldPurges` carries it out).
    @discardableResult
    public func acknowledged(by peer: NodeID, through sequence: UInt64) -> Bool {
        guard let org = configuration.directory.org(peer) else { return false }
        let mark = acknowledgements.note(org, through: sequence)
        guard let point = acknowledgements.waitingPoint(org, own: organisation) else { return false }
        return point <= mark
    }

    /// Whether a held purge could be released now: a release that failed (a full disk) or
    /// has not run yet. Memory only; the feed's heartbeat asks it.
    public var heldPurgeReleasable: Bool { acknowledgements.anyCovered(own: organisation) }

    /// Carries out the held purges the acknowledgements allow (a commit of its own).
    public func releaseHeldPurges() async throws {
        _ = try await perform(.releaseHeldPurges, actor: .system)
    }

    /// Every held purge, by ticket.
    func heldPurges() throws -> [(ticket: TicketID, held: HeldPurge)] {
        try readTxn { txn in try heldPurges(txn) }
    }

    func heldPurges(_ txn: some TransactionProtocol) throws -> [(ticket: TicketID, held: HeldPurge)] {
        try txn.withCursor(schema.purgeHeld) { c in
            var out: [(TicketID, HeldPurge)] = []
            var ok = try c.first()
            while ok {
                guard let id = RecordID(bytes: Array(c.key)) else { throw CorruptRecord(what: "held purge key") }
                out.append((id, try HeldPurge.decode(c.value, ticket: id)))
                ok = try c.next()
            }
            return out
        }
    }

    /// How many purges wait for a home organisation's acknowledgement (health).
    public func heldPurgeCount() throws(StoreError) -> Int {
        try readTxn { txn in try txn.stat(schema.purgeHeld).entries }
    }

    /// Carries out the held purges the acknowledgements now allow; a ticket a transfer
    /// made live again meanwhile is kept, and its hold dropped.
    func applyReleaseHeldPurges(_ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        for (id, h) in try heldPurges(txn) where acknowledgements.covers(h.through, home: h.home, own: organisation) {
            _ = try txn.delete(schema.purgeHeld, key: id.bytes)
            guard let t = try loadTransfer(h.transfer, txn) else { continue }
            // Through the point the hold waited for: this organisation writes nothing new
            // to a ticket no live transfer joins it to. A ticket a new transfer joined us to
            // meanwhile is kept, but only what the live transfers' scopes name.
            if try !purgeIfOutOfScope(id, because: t, txn, through: h.through, feedAt: seq, now: now) {
                try narrowToScope(id, txn)
            }
        }
        try reloadWaitingPurges(txn)
        return .merged(MergeReport())
    }
}
