import CaseModel
import LMDB
import Metrics
import Replication

private let heldWrites = Counter(label: "ekc_replication_writes_held_total")
private let heldReadmitted = Counter(label: "ekc_replication_writes_held_admitted_total")
private let heldRefused = Counter(label: "ekc_replication_writes_held_refused_total")

/// Admission that does not depend on arrival order (issue 18): a ticket's write whose
/// author's organisation is the receiver of one of its REDIRECTs still awaiting
/// acceptance — the fund's status or assignee, written right after it accepted, that
/// reached a region before the acceptance did (relayed by the fund's other node, or in
/// an older entry of a feed that carries the current owner) — is held, not refused:
/// kept in `admission_held` per ticket and peer, as the delta of the parts refused, and
/// judged again whenever a transfer of the ticket changes here. Once the transfer is
/// decided the parts are admitted (an acceptance entitles them) or refused and reported
/// as any refusal is (a rejection or a cancellation does not). Bounded: at most
/// `maxTickets` tickets and `maxChildren` children per held delta; past that, the parts
/// are refused at once, as before.
extension CaseStore {
    static let heldAdmissionMaxTickets = 10_000
    static let heldAdmissionMaxChildren = 1_024

    /// Holds the parts of `delta` that a pending acceptance may entitle; returns the
    /// refusals left to report.
    func holdForEntitlement(_ delta: RecordDelta, _ refusals: [PartRefusal], from peer: NodeID,
                            _ txn: WriteTransaction, _ report: inout MergeReport) throws -> [PartRefusal] {
        let awaiting = Set(try links(ofTicket: delta.id, txn).filter { $0.order.kind == .redirect && $0.state.awaitsAcceptance }
            .map(\.order.toOrganisation))
        guard !awaiting.isEmpty else { return refusals }
        var hold = RecordDelta(state: TicketRecord.schema.emptyState(delta.id))
        var rest: [PartRefusal] = []
        var parts = 0
        for r in refusals {
            guard r.refusal.reason == .notAuthorised, let org = r.authorOrganisation, awaiting.contains(org) else {
                rest.append(r)
                continue
            }
            switch r.part {
            case .register(let i):
                hold.state.registers[i] = delta.state.registers[i]
                parts += 1
            case .child(let k) where k < delta.children.count:
                hold.children.append(delta.children[k])
                parts += 1
            default:
                rest.append(r)
            }
        }
        guard parts > 0 else { return refusals }
        let key = delta.id.bytes + Array(peer.value.utf8)
        let schema = TicketRecord.schema
        if let held = try txn.withValue(self.schema.admissionHeld, key: key, { b throws(Refusal) in
            try RecordCoding.decodeDelta(b, kinds: kinds)
        }) {
            hold.state = held.state.merged(hold.state)
            var byKey = Dictionary(held.children.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
            for c in hold.children { byKey[c.key] = c }
            hold.children = byKey.values.sorted { $0.key < $1.key }
        } else if try txn.stat(self.schema.admissionHeld).entries >= CaseStore.heldAdmissionMaxTickets {
            return refusals
        }
        hold.children.sort { $0.key < $1.key }
        guard hold.children.count <= CaseStore.heldAdmissionMaxChildren else { return refusals }
        try txn.put(self.schema.admissionHeld, key: key, value: RecordCoding.encodeDelta(hold, schema: schema))
        heldWrites.increment(by: parts)
        report.heldForEntitlement += parts
        return rest
    }

    /// Judges again the writes held for ticket `id` (a transfer of it changed here):
    /// merged as far as they are entitled now, held again while an acceptance may still
    /// come, refused (into `report`) otherwise.
    func readmitHeld(_ id: TicketID, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis,
                     _ report: inout MergeReport) throws {
        let prefix = id.bytes
        let held: [(NodeID, RecordDelta)] = try txn.withCursor(schema.admissionHeld) { c in
            var out: [(NodeID, RecordDelta)] = []
            var ok = try c.seek(atLeast: prefix)
            while ok && c.keyHasPrefix(prefix) {
                guard c.key.count > 16, let peer = NodeID(String(decoding: UnsafeRawBufferPointer(rebasing: c.key[16...]), as: UTF8.self))
                else { throw CorruptRecord(what: "held admission: a key of \(c.key.count) bytes") }
                do {
                    out.append((peer, try RecordCoding.decodeDelta(c.value, kinds: kinds)))
                } catch {
                    throw CorruptRecord(what: "held admission of \(id) from \(peer): \(error)")
                }
                ok = try c.next()
            }
            return out
        }
        guard !held.isEmpty else { return }
        for (peer, _) in held { _ = try txn.delete(schema.admissionHeld, key: prefix + Array(peer.value.utf8)) }
        for (peer, delta) in held {
            let (changed, refused) = (report.changedRecords, report.rejections.count)
            _ = try mergeRecord(delta, sequence: 0, from: peer, repair: false, txn, &seq, now: now, &report)
            if report.changedRecords > changed { heldReadmitted.increment() }
            if report.rejections.count > refused { heldRefused.increment(by: report.rejections.count - refused) }
        }
    }

    /// How many tickets have writes held for an entitlement (health).
    public func heldAdmissionCount() throws(StoreError) -> Int {
        try readTxn { txn in try txn.stat(schema.admissionHeld).entries }
    }
}
