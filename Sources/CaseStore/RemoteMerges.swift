import CaseModel
import LMDB
import Replication

/// Records received from a peer's change feed, through `throughSequence` of the feed
/// of the store `sourceStoreID`.
public struct RemoteBatch: Sendable {
    public let peer: NodeID
    public let sourceStoreID: [UInt8]
    public let throughSequence: UInt64
    public let records: [RemoteRecord]
    /// Records a repair pulled because digests differ (AntiEntropy): merged like any
    /// others, but the peer's checkpoint stays where it is (they are not a range of its
    /// feed), and a record found damaged here takes the peer's content for the writes
    /// the two hold differently.
    public let repair: Bool
    /// The capabilities to store with the checkpoint (`Checkpoint.capabilities`).
    public let capabilities: [String]

    public init(peer: NodeID, sourceStoreID: [UInt8], throughSequence: UInt64, records: [RemoteRecord], repair: Bool = false,
                capabilities: [String] = []) {
        self.capabilities = capabilities
        self.peer = peer
        self.sourceStoreID = sourceStoreID
        self.throughSequence = throughSequence
        self.records = records
        self.repair = repair
    }
}

/// A record, or part of one, that a peer sent and this node refused.
public struct RecordRejection: Sendable, Equatable {
    public let sequence: UInt64
    public let kind: RecordKindID?
    public let id: RecordID?
    public let refusal: Refusal
    /// Whether the whole record was refused (its checks) or only a part (admission).
    public let whole: Bool
}

/// What merging a batch did.
public struct MergeReport: Sendable, Equatable {
    public var changedRecords = 0
    public var unchangedRecords = 0
    public var rejections: [RecordRejection] = []
    /// Readable numbers another ticket already had (misconfigured number series).
    public var duplicateNumbers: [String] = []
    /// Records found damaged here that a repair replaced writes of.
    public var repairedDamaged = 0
    /// Parts of records whose author a transfer still awaiting acceptance may entitle,
    /// kept until it is decided (AdmissionHold.swift) instead of being refused.
    public var heldForEntitlement = 0
    /// Tickets this node holds not (or not whole) that a merged transfer entitles it to
    /// again: purged here when the transfer seemed over, live once more (an acceptance on
    /// the receiver's other node beat the rejection taken here). What the peers sent of
    /// them meanwhile was not kept, so the node fetches them whole (anti-entropy).
    public var wanted: [RecordRef] = []

    public init() {}
}

extension CaseStore {
    /// Merges a batch pulled from a peer (one transaction with the peer's checkpoint).
    public func merge(_ batch: RemoteBatch) async throws(StoreError) -> MergeReport {
        guard case .merged(let report) = try await perform(.merge(batch), actor: .system) else {
            throw .corrupt("merge produced no report")
        }
        return report
    }

    /// Merges a peer's batch. Each record was checked by the puller (`RecordSchema.check`);
    /// here it must not claim a write id this node holds with other content
    /// (equivocation), and its writes pass admission (entitled organisation, relayed by
    /// its own nodes, stamp within the skew bound). What is refused is reported, never
    /// merged, and never holds up the rest. The peer's checkpoint moves in the same
    /// transaction, so a crash can only make the batch be pulled again, and pulling it
    /// again changes nothing (merge is idempotent).
    func applyMerge(_ batch: RemoteBatch, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        var report = MergeReport()
        var transferred = Set<TicketID>()
        for remote in batch.records {
            let delta: RecordDelta
            switch remote.content {
            case .refused(let kind, let id, let refusal):
                report.rejections.append(RecordRejection(sequence: remote.sequence, kind: kind, id: id, refusal: refusal, whole: true))
                continue
            case .delta(let d):
                delta = d
            }
            if let ticket = try mergeRecord(delta, sequence: remote.sequence, from: batch.peer, repair: batch.repair, txn, &seq,
                                            now: now, &report) {
                transferred.insert(ticket)
            }
        }
        // Writes held for an entitlement a transfer of this batch may have brought (AdmissionHold.swift).
        for ticket in transferred.sorted() { try readmitHeld(ticket, txn, &seq, now: now, &report) }
        // Wanted whole: only tickets the rest of the batch did not bring back whole.
        if !report.wanted.isEmpty {
            report.wanted = try report.wanted.filter { ref in
                try loadRecord(TicketRecord.schema, ref.id, txn).map { !TicketRecord.isComplete($0.state.registers.map(\.value)) } ?? true
            }
        }
        if !batch.repair {
            let checkpoint = Checkpoint(sourceStoreID: batch.sourceStoreID, sequence: batch.throughSequence,
                                        capabilities: batch.capabilities)
            try txn.put(schema.checkpoints, key: Keys.peer(batch.peer), value: checkpoint.encode())
        }
        return .merged(report)
    }

    /// Merges one record of a peer's batch (`applyMerge`), reporting into `report`.
    /// Returns the ticket of a transfer it changed (whose held writes may now be admitted).
    func mergeRecord(_ received: RecordDelta, sequence: UInt64, from peer: NodeID, repair: Bool, _ txn: WriteTransaction,
                     _ seq: inout UInt64, now: Millis, _ report: inout MergeReport) throws -> TicketID? {
        var delta = received
        let peerOrg = configuration.directory.org(peer)
        let mine = organisation
        guard let schema = kinds[delta.kind] else {
            report.rejections.append(RecordRejection(sequence: sequence, kind: delta.kind, id: delta.id,
                                                     refusal: Refusal(.unknownKind, "kind \(delta.kind)"), whole: true))
            return nil
        }
        let isTicket = schema.kind == TicketRecord.kind
        // A ticket purged here after its transfer ended is not taken back from a peer
        // of this organisation that has not yet seen the end, unless it brings a write
        // of this organisation the purge did not hold (PurgeHold.swift): then the
        // ticket is kept again, and held until its home has that write.
        var retaken: Purge?
        if isTicket, try isPurgedAndOutOfScope(delta.id, txn) {
            retaken = try lateOwnWrites(delta, from: peer, txn)
            guard retaken != nil else {
                report.unchangedRecords += 1
                return nil
            }
            _ = try txn.delete(self.schema.purged, key: delta.id.bytes)
        }
        var local: StoredRecord?
        var adopted = RegisterSet()
        let recordKey = Keys.record(schema.kind.rawValue, delta.id)
        if repair, try txn.contains(self.schema.digestDamaged, key: recordKey) {
            do {
                local = try loadRecord(schema, delta.id, txn)
            } catch is CorruptRecord {
                // Bytes that do not decode: the peer's copy replaces them whole.
                _ = try txn.delete(self.schema.records, key: recordKey)
                local = nil
            }
            adopted = try adoptFromPeer(delta, schema, &local, txn)
            _ = try txn.delete(self.schema.digestDamaged, key: recordKey)
            digestWork.recompute.insert(RecordRef(kind: schema.kind, id: delta.id))
            digestTouched(schema.kind, delta.id)
            report.repairedDamaged += 1
        } else {
            local = try loadRecord(schema, delta.id, txn)
        }
        switch try equivocation(delta, schema, local, txn) {
        case .refused(let refusal):
            report.rejections.append(RecordRejection(sequence: sequence, kind: delta.kind, id: delta.id,
                                                     refusal: refusal, whole: true))
            return nil
        case .known(let children):
            // Children held here already change nothing and need no admission.
            if !children.isEmpty { delta.children.removeAll { children.contains($0.key) } }
        }
        let directory = configuration.directory
        let grants = isTicket
            ? try grants(forTicket: delta.id, txn, origin: { TicketRecord.originOrganisation(local?.state ?? delta.state, directory) })
            : .none
        var (admitted, refusals) = schema.admit(delta, from: peer, local: local?.state,
                                                directory: configuration.directory, now: now,
                                                maxSkew: configuration.maxClockSkew, grants: grants, localOrganisation: mine)
        // Writes an acceptance still on its way will entitle wait for it, not refused.
        if isTicket, local != nil, !refusals.isEmpty {
            refusals = try holdForEntitlement(delta, refusals, from: peer, txn, &report)
        }
        if let first = refusals.first {
            // One entry per record: the first refusal, and how many parts were refused with it.
            let more = refusals.count > 1 ? " (and \(refusals.count - 1) more parts)" : ""
            report.rejections.append(RecordRejection(
                sequence: sequence, kind: delta.kind, id: delta.id,
                refusal: Refusal(first.refusal.reason, first.refusal.detail + more), whole: admitted.isEmpty))
        }
        var record = local ?? StoredRecord.new(schema, delta.id)
        var changed = adopted
        for (i, r) in admitted.state.registers.enumerated() where !r.isEmpty {
            let merged = record.state.registers[i].merged(r)
            if merged != record.state.registers[i] {
                record.state.registers[i] = merged
                changed.insert(i)
            }
        }
        let newChildren = admitted.children
        guard !changed.isEmpty || !newChildren.isEmpty else {
            report.unchangedRecords += 1
            return nil
        }
        _ = try? writer.clock.receive(record.state.latestStamp, wall: now)
        for c in newChildren { _ = try? writer.clock.receive(c.dot.stamp, wall: now) }
        if !changed.isEmpty { record.local.version += 1 }
        try commitRecord(schema, &record, changed: changed, children: newChildren, txn, &seq,
                         isNew: local == nil && !changed.isEmpty, arrivedFrom: peerOrg)
        if !changed.isEmpty && isTicket {
            let duplicate = try projectTicket(record, txn).duplicateNumber
            if let duplicate { report.duplicateNumbers.append(duplicate) }
            if let retaken, let t = try loadTransfer(retaken.transfer, txn) {
                _ = try purgeIfOutOfScope(record.state.id, because: t, txn, through: seq, feedAt: seq, now: now)
            } else if local == nil {
                try mergedTicket(record.state.id, txn, &seq, now: now)
            }
            // An owner written after the step that ended its redirect arrived here (the
            // step and the register travel as two records) is brought back to the handler.
            if changed.contains(TicketRecord.Register.owner.rawValue) {
                try keepOwnerRegister(record.state.id, txn, &seq, now: now)
            }
            // A citizen detail a lagging node still sent (it had not seen the end of the
            // transfer that named it) is not kept past the live transfers' scopes.
            if TicketRecord.citizenRegisters.contains(where: { changed.contains($0.rawValue) }) {
                try narrowToScope(record.state.id, txn)
            }
        } else if schema.kind == TransferRecord.kind {
            if let wanted = try mergedTransfer(record.state.id, arrivedFrom: peerOrg, txn, &seq, now: now) {
                report.wanted.append(wanted)
            }
        }
        if isTicket, local != nil {
            try extendHold(record.state.id, record, changed: changed, children: newChildren, through: seq, txn)
        }
        report.changedRecords += 1
        return schema.kind == TransferRecord.kind ? (try transferView(delta.id, txn))?.order.ticket : nil
    }

    /// A damaged record's writes that the peer holds with other content take the peer's
    /// content: this store's bytes changed under it (its leaf stopped matching), the
    /// peer's did not. Returns the registers replaced; children are replaced in place.
    private func adoptFromPeer(_ delta: RecordDelta, _ schema: RecordSchema, _ local: inout StoredRecord?,
                               _ txn: WriteTransaction) throws -> RegisterSet {
        var adopted = RegisterSet()
        if var l = local {
            for (i, r) in delta.state.registers.enumerated() where !r.isEmpty {
                let mine = l.state.registers[i]
                var versions = mine.versions
                var replaced = false
                for v in r.versions {
                    if let k = versions.firstIndex(where: { $0.dot == v.dot && $0.value != v.value }) {
                        versions[k] = v
                        replaced = true
                    }
                }
                guard replaced else { continue }
                l.state.registers[i] = Register(sortedVersions: versions, seen: mine.seen)
                adopted.insert(i)
            }
            local = l
        }
        for c in delta.children {
            let key = Keys.child(schema.kind.rawValue, delta.id, c.collection, c.id)
            guard let held = try txn.get(self.schema.children, key: key) else { continue }
            let same = held.withUnsafeBytes { (try? StoredChild.decode($0, collection: c.collection, id: c.id)) == c }
            if !same { try txn.put(self.schema.children, key: key, value: StoredChild.encode(c)) }
        }
        return adopted
    }

    enum Equivocation {
        /// A write id held here with other content.
        case refused(Refusal)
        /// No equivocation; these children are held here already (identical).
        case known(Set<ChildKey>)
    }

    /// A write id (a register version's dot, a child's id) this node holds with other
    /// content: the sender forged or corrupted it. Refused rather than kept by arrival
    /// order, and reported.
    private func equivocation(_ delta: RecordDelta, _ schema: RecordSchema, _ local: StoredRecord?,
                              _ txn: WriteTransaction) throws -> Equivocation {
        if let local {
            for (i, r) in delta.state.registers.enumerated() where !r.isEmpty {
                let mine = local.state.registers[i].versions
                for v in r.versions {
                    if let m = mine.first(where: { $0.dot == v.dot }), m.value != v.value {
                        return .refused(Refusal(.equivocation, "registers[\(schema.registers[i].name)]: \(v.dot) already holds another value"))
                    }
                }
            }
        }
        var known = Set<ChildKey>()
        for c in delta.children {
            let key = Keys.child(schema.kind.rawValue, delta.id, c.collection, c.id)
            guard let same = try txn.withValue(self.schema.children, key: key, { b throws -> Bool in
                try StoredChild.decode(b, collection: c.collection, id: c.id) == c
            }) else { continue }
            guard same else { return .refused(Refusal(.equivocation, "children[\(c.collection)/\(c.id)]: already holds other content")) }
            known.insert(c.key)
        }
        return .known(known)
    }
}
