import Access
import CaseModel
import Foundation
import LMDB
import Metrics
import Replication

/// A local edit an operator (or a tool) asks for, or a batch from a peer.
public enum Edit: Sendable {
    case create(TicketDraft)
    case patch(TicketRef, TicketPatch, ifMatch: UInt64?)
    case addNote(TicketRef, text: String, visibility: NoteVisibility)
    /// Settle a conflict by keeping one of the competing values (its id from `conflicts()`).
    case resolve(conflictID: String, keep: ConflictChoice)
    /// A local write to a record of any kind: register values by index, new children
    /// by collection number. The kind's own edits (tickets' above) are built on the same path.
    case write(RecordWrite)
    /// Hand a ticket to another organisation.
    case sendTransfer(TransferRequest)
    /// A step of this node's side on a transfer.
    case transferStep(TransferStepRequest)
    /// A batch pulled from a peer: merged, with the peer's checkpoint, in one transaction.
    case merge(RemoteBatch)
    /// Only writes the marks of how far the feed was served (see `noteServed`).
    case persistServed
    /// Appends disclosures of personal data to the access log (AccessLog.swift): no feed
    /// entry, no ticket touched. Several entries (an export) take one commit.
    case recordAccess([AccessEntry])
    /// One step of the digest scrub (Digest/DigestScrub.swift): at most `limit` items.
    case scrubDigests(limit: Int)
    /// Carries out the purges held for a home organisation's acknowledgement that it now gave.
    case releaseHeldPurges
    /// Records a restore from a backup on the placed copy (Restore.swift).
    case markRestored(RestoreRequest)
    /// Ends a restored store's wait for its peers: local writes are taken again.
    case finishRestore

    /// A write an operator or a tool makes here, which a restored store holds back until
    /// it has caught up with its peers (Restore.swift).
    var isLocalWrite: Bool {
        switch self {
        case .create, .patch, .addNote, .resolve, .write, .sendTransfer, .transferStep: true
        case .merge, .persistServed, .recordAccess, .scrubDigests, .releaseHeldPurges, .markRestored, .finishRestore: false
        }
    }
}

public enum ConflictChoice: String, Sendable, CaseIterable {
    /// Keep the value that won the race (confirming it clears the conflict).
    case winner
    /// Keep the value that lost.
    case loser
}

/// A local write to a record of a kind without edits of its own (generic).
public struct RecordWrite: Sendable {
    public var kind: RecordKindID
    public var id: RecordID?
    public var values: [Int: ValueBytes]
    public var children: [(collection: UInt8, value: ValueBytes)]

    public init(kind: RecordKindID, id: RecordID? = nil, values: [Int: ValueBytes],
                children: [(collection: UInt8, value: ValueBytes)] = []) {
        self.kind = kind
        self.id = id
        self.values = values
        self.children = children
    }
}

public enum EditOutcome: Sendable {
    /// The ticket after the edit; `changed` is false when the patch changed nothing.
    case ticket(Ticket, changed: Bool)
    case note(Note)
    case transfer(Transfer)
    case record(RecordID)
    case merged(MergeReport)
    /// The access log sequences given to the entries, in order.
    case accessRecorded([UInt64])
    case scrubbed(ScrubReport)
    case restored(RestoreRecord)

    public var ticket: Ticket? {
        if case .ticket(let t, _) = self { return t }
        return nil
    }
}

struct PendingEdit: Sendable {
    let edit: Edit
    let actor: Actor
    let completion: @Sendable (Result<EditOutcome, StoreError>) -> Void
}

/// An edit refused before it wrote anything: only that edit fails, the group goes on.
struct Refused: Error {
    let error: StoreError
}

private let commitTimer = Metrics.Timer(label: "ekc_store_commit_duration")
private let commitGroupSize = Recorder(label: "ekc_store_commit_group_size")
private let editsCommitted = Counter(label: "ekc_store_edits_total", dimensions: [("result", "committed")])
private let editsRefused = Counter(label: "ekc_store_edits_total", dimensions: [("result", "refused")])
private let editsFailed = Counter(label: "ekc_store_edits_total", dimensions: [("result", "failed")])

extension CaseStore {
    /// Queues `edit`; `completion` runs on the commit thread after the group's commit returned.
    public func submit(_ edit: Edit, actor: Actor, completion: @escaping @Sendable (Result<EditOutcome, StoreError>) -> Void) {
        if edit.isLocalWrite && restorePending {
            completion(.failure(.restoring("this store was restored from a backup and takes writes once it has caught up with "
                                           + "every peer (GET /v1/replication shows each link); the write was not made")))
            return
        }
        submitPending(PendingEdit(edit: edit, actor: actor, completion: completion))
    }

    public func perform(_ edit: Edit, actor: Actor) async throws(StoreError) -> EditOutcome {
        let result: Result<EditOutcome, StoreError> = await withCheckedContinuation { cont in
            submit(edit, actor: actor) { cont.resume(returning: $0) }
        }
        return try result.get()
    }

    public func create(_ draft: TicketDraft, actor: Actor) async throws(StoreError) -> Ticket {
        try await perform(.create(draft), actor: actor).ticket!
    }

    /// Applies a group of edits in one write transaction. An edit refused by validation
    /// writes nothing and fails alone. An edit that fails after it began writing aborts
    /// the transaction; the group is then redone without it, so it leaves nothing behind.
    func commit(_ group: [PendingEdit]) {
        let started = DispatchTime.now().uptimeNanoseconds
        var applied = started
        let now = configuration.wallClock()
        var excluded: [Int: StoreError] = [:]
        var results: [Result<EditOutcome, StoreError>?]
        var feedMoved = false
        var servedWritten: [NodeID: UInt64] = [:]
        while true {
            var failing: Int?
            do {
                results = try env.write { txn in
                    failing = nil
                    digestWork.reset()
                    var out = [Result<EditOutcome, StoreError>?](repeating: nil, count: group.count)
                    var seq = try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
                    let startSeq = seq
                    for (i, p) in group.enumerated() {
                        if let e = excluded[i] { out[i] = .failure(e); continue }
                        do {
                            out[i] = .success(try apply(p, txn, &seq, now: now))
                        } catch let r as Refused {
                            out[i] = .failure(r.error)
                        } catch {
                            failing = i
                            throw error
                        }
                    }
                    // Digests follow the records written, in the same transaction.
                    try updateDigests(txn)
                    if configuration.verifyEachCommit { try verifyCommit(txn, startSequence: startSeq, through: seq) }
                    applied = DispatchTime.now().uptimeNanoseconds
                    // Marks of how far the feed was served ride along with this commit.
                    servedWritten = try servedMarks.write(txn, schema.served)
                    feedMoved = seq != startSeq
                    if seq != startSeq {
                        try txn.put(schema.meta, key: Schema.MetaKey.lastSequence, value: seq.bigEndianBytes)
                        try txn.put(schema.meta, key: Schema.MetaKey.lastStamp, value: writer.clock.last.raw.bigEndianBytes)
                        try txn.put(schema.meta, key: Schema.MetaKey.lastRecordID, value: writer.lastID.bytes)
                    }
                    return out
                }
                break
            } catch {
                let e = CaseStore.storeError(error)
                if let i = failing {
                    excluded[i] = e
                    continue
                }
                results = Array(repeating: .failure(e), count: group.count)
                break
            }
        }
        let finished = DispatchTime.now().uptimeNanoseconds
        commitTimer.recordNanoseconds(Int64(finished - started))
        commitGroupSize.record(group.count)
        statistics.withLock {
            $0.groups += 1
            $0.edits += group.count
            $0.applyNanos += applied - started
            $0.commitNanos += finished - applied
        }
        let committed = results.contains { if case .success? = $0 { return true } else { return false } }
        if committed { servedMarks.committed(servedWritten) }
        if feedMoved && committed {
            for observer in commitObservers.withLock({ Array($0.values) }) { observer() }
        }
        for (p, r) in zip(group, results) {
            let r = r ?? .failure(.corrupt("edit not applied"))
            switch r {
            case .success: editsCommitted.increment()
            case .failure(.rejected), .failure(.ticketNotFound), .failure(.versionMismatch), .failure(.conflictNotFound),
                 .failure(.transferNotFound), .failure(.transferRefused):
                editsRefused.increment()
            case .failure: editsFailed.increment()
            }
            p.completion(r)
        }
    }

    static func storeError(_ error: Error) -> StoreError {
        switch error {
        case let e as StoreError: return e
        case let e as LMDBError: return .storage(e)
        case let e as CorruptRecord: return .corrupt(e.what)
        case let e as TicketError: return .rejected(e)
        default: return .corrupt("\(error)")
        }
    }

    private func apply(_ p: PendingEdit, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        switch p.edit {
        case .create(let draft): return try applyCreate(draft, p.actor, txn, &seq, now: now)
        case .patch(let ref, let patch, let ifMatch): return try applyPatch(ref, patch, ifMatch, p.actor, txn, &seq, now: now)
        case .addNote(let ref, let text, let vis): return try applyNote(ref, text, vis, p.actor, txn, &seq, now: now)
        case .resolve(let id, let keep): return try applyResolve(id, keep, p.actor, txn, &seq, now: now)
        case .write(let w): return try applyWrite(w, txn, &seq, now: now)
        case .sendTransfer(let q): return try applySendTransfer(q, p.actor, txn, &seq, now: now)
        case .transferStep(let q): return try applyTransferStep(q, p.actor, txn, &seq, now: now)
        case .merge(let batch): return try applyMerge(batch, txn, &seq, now: now)
        case .persistServed: return .merged(MergeReport())
        case .recordAccess(let entries): return try applyRecordAccess(entries, txn)
        case .scrubDigests(let limit): return try applyScrub(limit: limit, txn)
        case .releaseHeldPurges: return try applyReleaseHeldPurges(txn, &seq, now: now)
        case .markRestored(let request): return try applyMarkRestored(request, txn, now: now)
        case .finishRestore: return try applyFinishRestore(txn)
        }
    }

    /// Runs the read-and-validate phase of an edit; anything thrown here is a refusal.
    func refusing<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as TicketError {
            throw Refused(error: .rejected(e))
        } catch let e as StoreError {
            throw Refused(error: e)
        }
    }

    /// Writes a record whose registers `changed` were just written or merged, with its
    /// new children: the changed registers leave the feed entries they sat in and,
    /// with the children, form a new entry at the next sequence (more children than an
    /// entry holds take further sequences). The conflicts index follows the registers,
    /// and the partner organisations' scope index the entries (`arrivedFrom`: the
    /// organisation a merged change came from, which holds it).
    func commitRecord(_ schema: RecordSchema, _ record: inout StoredRecord, changed: RegisterSet, children: [Child],
                      _ txn: WriteTransaction, _ seq: inout UInt64, isNew: Bool, arrivedFrom: String? = nil) throws {
        guard !changed.isEmpty || !children.isEmpty else { return }
        digestTouched(schema.kind, record.state.id, children: children)
        let kind = schema.kind.rawValue
        let id = record.state.id
        try advance(&seq)
        let at = seq
        // The first sequence of a part of each capability: a link that gains it resumes
        // from there (proto/README §8.1). Only kinds with marked parts pay for the check.
        if !schema.capabilities.isEmpty {
            for c in schema.capabilities(registers: changed, collections: children.map(\.collection)) {
                let key = CapabilityMeta.since(c)
                if try !txn.contains(self.schema.meta, key: key) { try txn.put(self.schema.meta, key: key, value: at.bigEndianBytes) }
            }
        }
        if !changed.isEmpty {
            var leaving: [UInt64: UInt64] = [:]
            for i in changed {
                let old = record.feedSequence[i]
                if old != 0 { leaving[old, default: 0] |= 1 << UInt64(schema.registers[i].number) }
                record.feedSequence[i] = at
            }
            try removeFromFeed(leaving, txn)
            let key = Keys.record(kind, id)
            if isNew {
                try txn.put(self.schema.records, key: key, value: record.encode(schema), options: .noOverwrite)
            } else {
                try txn.put(self.schema.records, key: key, value: record.encode(schema))
            }
            if record.state.isConflicted {
                try txn.put(self.schema.conflicted, key: key, value: [])
            } else if !isNew {
                _ = try txn.delete(self.schema.conflicted, key: key)
            }
        }
        for c in children {
            try txn.put(self.schema.children, key: Keys.child(kind, id, c.collection, c.id), value: StoredChild.encode(c),
                        options: .noOverwrite)
        }
        var rest = children[...]
        var entry = FeedEntry(kind: schema.kind, id: id, registerNumbers: schema.numbers(changed),
                              children: rest.prefix(FeedEntry.maxChildren).map(\.key))
        rest = rest.dropFirst(FeedEntry.maxChildren)
        try txn.put(self.schema.feed, key: Keys.sequence(at), value: entry.encode(), options: .append)
        var written = [(at, entry)]
        while !rest.isEmpty {
            try advance(&seq)
            entry = FeedEntry(kind: schema.kind, id: id, registerNumbers: 0, children: rest.prefix(FeedEntry.maxChildren).map(\.key))
            rest = rest.dropFirst(FeedEntry.maxChildren)
            try txn.put(self.schema.feed, key: Keys.sequence(seq), value: entry.encode(), options: .append)
            written.append((seq, entry))
        }
        try indexForPartners(schema, record, written, arrivedFrom: arrivedFrom, txn)
    }

    /// Takes register numbers out of the feed entries at the given sequences (sequence →
    /// register number bits): the registers moved to a later entry, or are gone. An entry
    /// left with nothing is deleted.
    func removeFromFeed(_ leaving: [UInt64: UInt64], _ txn: WriteTransaction) throws {
        for (at, numbers) in leaving {
            let key = Keys.sequence(at)
            guard var entry = try txn.withValue(self.schema.feed, key: key, { try FeedEntry.decode($0) }) else { continue }
            entry.registerNumbers &= ~numbers
            if entry.isEmpty { _ = try txn.delete(self.schema.feed, key: key) } else {
                try txn.put(self.schema.feed, key: key, value: entry.encode())
            }
        }
    }

    /// The next feed position. A stored last sequence already at the largest one a feed
    /// may hold (2^53 − 1, which peers refuse past) is a damaged meta table: a corrupt
    /// store, never a trap (`seq += 1` at UInt64.max was one).
    func advance(_ seq: inout UInt64) throws {
        guard seq < FeedPosition.maximum else {
            throw CorruptRecord(what: "the feed's last sequence \(seq) leaves no position before 2^53 − 1")
        }
        seq += 1
    }
}
