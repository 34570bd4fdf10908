import CaseModel
import Foundation
import LMDB
import Metrics
import Replication

/// A local edit an operator (or a tool) asks for.
public enum Edit: Sendable {
    case create(TicketDraft)
    case patch(TicketRef, TicketPatch, ifMatch: UInt64?)
    case addNote(TicketRef, text: String, visibility: NoteVisibility)
    /// Settle a conflict by keeping one of the competing values (its id from `conflicts()`).
    case resolve(conflictID: String, keep: ConflictChoice)
    /// A batch pulled from a peer: merged, with the peer's checkpoint, in one transaction.
    case merge(RemoteBatch)
    /// Only writes the marks of how far the feed was served (see `noteServed`).
    case persistServed
}

public enum ConflictChoice: String, Sendable, CaseIterable {
    /// Keep the value that won the race (confirming it clears the conflict).
    case winner
    /// Keep the value that lost.
    case loser
}

/// Tickets received from a peer's change feed, through `throughSequence` of the
/// feed of the store `sourceStoreID`.
public struct RemoteBatch: Sendable {
    public let peer: NodeID
    public let sourceStoreID: [UInt8]
    public let throughSequence: UInt64
    public let tickets: [ReplicatedTicket]

    public init(peer: NodeID, sourceStoreID: [UInt8], throughSequence: UInt64, tickets: [ReplicatedTicket]) {
        self.peer = peer
        self.sourceStoreID = sourceStoreID
        self.throughSequence = throughSequence
        self.tickets = tickets
    }
}

/// What merging a batch did.
public struct MergeReport: Sendable, Equatable {
    public var changedTickets = 0
    public var unchangedTickets = 0
    public var rejections: [Rejection] = []
    /// Readable numbers another ticket already had (misconfigured number series).
    public var duplicateNumbers: [String] = []
}

public enum EditOutcome: Sendable {
    /// The ticket after the edit; `changed` is false when the patch changed nothing.
    case ticket(Ticket, changed: Bool)
    case note(Note)
    case merged(MergeReport)

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
struct Refusal: Error {
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

    // MARK: The commit thread

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
                    var out = [Result<EditOutcome, StoreError>?](repeating: nil, count: group.count)
                    var seq = try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
                    let startSeq = seq
                    for (i, p) in group.enumerated() {
                        if let e = excluded[i] { out[i] = .failure(e); continue }
                        do {
                            out[i] = .success(try apply(p, txn, &seq, now: now))
                        } catch let r as Refusal {
                            out[i] = .failure(r.error)
                        } catch {
                            failing = i
                            throw error
                        }
                    }
                    applied = DispatchTime.now().uptimeNanoseconds
                    // Marks of how far the feed was served ride along with this commit.
                    servedWritten = pendingServed.withLock { $0 }
                    for (peer, through) in servedWritten {
                        try txn.put(schema.served, key: Array(peer.value.utf8), value: through.bigEndianBytes)
                    }
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
        if committed {
            // Forget marks now on disk, unless a newer one arrived meanwhile.
            pendingServed.withLock { p in for (peer, v) in servedWritten where p[peer] == v { p.removeValue(forKey: peer) } }
        }
        if feedMoved && committed {
            for observer in commitObservers.withLock({ Array($0.values) }) { observer() }
        }
        for (p, r) in zip(group, results) {
            let r = r ?? .failure(.corrupt("edit not applied"))
            switch r {
            case .success: editsCommitted.increment()
            case .failure(.rejected), .failure(.ticketNotFound), .failure(.versionMismatch), .failure(.conflictNotFound):
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
        case .merge(let batch): return try applyMerge(batch, txn, &seq, now: now)
        case .persistServed: return .merged(MergeReport())
        }
    }

    /// Runs the read-and-validate phase of an edit; anything thrown here is a refusal.
    private func refusing<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as TicketError {
            throw Refusal(error: .rejected(e))
        } catch let e as StoreError {
            throw Refusal(error: e)
        }
    }

    private func context(_ actor: Actor, now: Millis) -> EditContext {
        EditContext(actor: actor, node: configuration.node, now: now, stamp: writer.clock.tick(wall: now),
                    workingHours: configuration.workingHours)
    }

    private func applyCreate(_ draft: TicketDraft, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64,
                             now: Millis) throws -> EditOutcome {
        let node = configuration.node
        let (ticket, counterKey) = try refusing { () throws -> (Ticket, [UInt8]) in
            let year = Calendar59.year(of: now, offsetMinutes: configuration.utcOffsetMinutes)
            let counterKey = Array("\(configuration.region)-\(year)".utf8)
            // Each node of a region numbers in its own series (series × 10,000,000 + n), so
            // numbers are unique without coordination; a number already taken (a node
            // misconfigured with another's series) is skipped, never reused.
            var n = (try txn.u64(schema.counters, counterKey) ?? 0) + 1
            var number = TicketNumber(region: configuration.region, year: year,
                                      sequence: configuration.numberSeries * 10_000_000 + n)
            while try txn.contains(schema.numbers, key: Array(number.description.utf8)) {
                n += 1
                number = TicketNumber(region: configuration.region, year: year, sequence: configuration.numberSeries * 10_000_000 + n)
            }
            let ctx = context(actor, now: now)
            let ticket = try draft.open(id: writer.nextID(now: now), number: number, node: node, now: now, stamp: ctx.stamp)
            return (ticket, counterKey)
        }
        // From here on every failure aborts the whole transaction.
        try txn.put(schema.counters, key: counterKey,
                    value: (ticket.number.sequence - configuration.numberSeries * 10_000_000).bigEndianBytes)
        try txn.putAppending(schema.tickets, key: ticket.id.bytes, value: RecordCodec.encode(ticket), options: .noOverwrite)
        try faults.hit("create.afterTicket")
        try txn.putAppending(schema.numbers, key: Array(ticket.number.description.utf8), value: ticket.id.bytes, options: .noOverwrite)
        for (db, key) in Schema.indexEntries(ticket, schema) { try txn.putAppending(db, key: key, value: []) }
        let replica = ReplicatedTicket(opened: ticket, dot: Dot(node: node, stamp: ticket.updatedStamp))
        try txn.putAppending(schema.replicas, key: ticket.id.bytes, value: ReplicaCodec.encode(replica))
        try record(HistoryEvent(id: writer.nextID(now: now), ticketID: ticket.id, actor: actor, node: node, at: now,
                                stamp: ticket.updatedStamp, field: "ticket", old: nil,
                                new: "created \(ticket.number) as \(ticket.status.rawValue)"), txn)
        try faults.hit("create.beforeFeed")
        try moveInFeed(ticket.id, txn, &seq, isNew: true)
        return .ticket(ticket, changed: true)
    }

    private func applyPatch(_ ref: TicketRef, _ patch: TicketPatch, _ ifMatch: UInt64?, _ actor: Actor,
                            _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        let (old, edited, changes, ctx) = try refusing { () throws -> (Ticket, Ticket, [FieldChange], EditContext) in
            guard let id = try resolve(ref, txn), let old = try loadTicket(id, txn) else {
                throw StoreError.ticketNotFound(ref.description)
            }
            if let ifMatch, ifMatch != old.version {
                throw StoreError.versionMismatch(current: old.version, expected: ifMatch)
            }
            let ctx = context(actor, now: now)
            let (new, changes) = try old.applying(patch, ctx)
            return (old, new, changes, ctx)
        }
        guard !changes.isEmpty else { return .ticket(old, changed: false) }
        // The edit is a write to the changed fields' registers; the stored ticket is
        // what the registers now say, the same view every replica will compute.
        var replica = try loadReplica(old.id, txn)!
        replica.record(edited, from: old, dot: Dot(node: ctx.node, stamp: ctx.stamp))
        let new = replica.ticket(version: edited.version) ?? edited
        try txn.put(schema.tickets, key: new.id.bytes, value: RecordCodec.encode(new))
        try faults.hit("patch.afterTicket")
        try txn.put(schema.replicas, key: new.id.bytes, value: ReplicaCodec.encode(replica))
        try markConflicts(replica, txn)
        try reindex(old, new, txn)
        for c in changes {
            try record(HistoryEvent(id: writer.nextID(now: now), ticketID: new.id, actor: actor, node: ctx.node,
                                    at: now, stamp: ctx.stamp, field: c.field, old: c.old, new: c.new), txn)
        }
        try moveInFeed(new.id, txn, &seq)
        return .ticket(new, changed: true)
    }

    private func applyNote(_ ref: TicketRef, _ text: String, _ visibility: NoteVisibility, _ actor: Actor,
                           _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        let note = try refusing { () throws -> Note in
            guard let id = try resolve(ref, txn), try txn.contains(schema.tickets, key: id.bytes) else {
                throw StoreError.ticketNotFound(ref.description)
            }
            try Note.validate(text: text)
            let ctx = context(actor, now: now)
            return Note(id: writer.nextID(now: now), ticketID: id, author: actor, node: ctx.node, at: now,
                        stamp: ctx.stamp, visibility: visibility, text: text)
        }
        try txn.put(schema.notes, key: note.ticketID.bytes + note.id.bytes, value: RecordCodec.encode(note))
        try faults.hit("note.afterNote")
        try record(HistoryEvent(id: writer.nextID(now: now), ticketID: note.ticketID, actor: actor, node: note.node,
                                at: now, stamp: note.stamp, field: "note", old: nil,
                                new: "\(note.visibility.rawValue) note \(note.id)"), txn)
        try moveInFeed(note.ticketID, txn, &seq)
        return .note(note)
    }

    /// Moves a ticket's index entries from what `old` had to what `new` has.
    private func reindex(_ old: Ticket?, _ new: Ticket, _ txn: WriteTransaction) throws {
        let before = old.map { Schema.indexEntries($0, schema) } ?? []
        let after = Schema.indexEntries(new, schema)
        for (db, key) in before where !after.contains(where: { $0.0 == db && $0.1 == key }) {
            try txn.delete(db, key: key)
        }
        for (db, key) in after where !before.contains(where: { $0.0 == db && $0.1 == key }) {
            try txn.putAppending(db, key: key, value: [])
        }
    }

    private func markConflicts(_ r: ReplicatedTicket, _ txn: WriteTransaction) throws {
        if r.conflicts.isEmpty {
            try txn.delete(schema.conflicted, key: r.id.bytes)
        } else {
            try txn.put(schema.conflicted, key: r.id.bytes, value: [])
        }
    }

    private func applyResolve(_ conflictID: String, _ keep: ConflictChoice, _ actor: Actor, _ txn: WriteTransaction,
                              _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        let (old, replica, conflict, ctx) = try refusing { () throws -> (Ticket, ReplicatedTicket, Conflict, EditContext) in
            guard let (id, _, _) = Conflict.parse(id: conflictID), let old = try loadTicket(id, txn),
                  let replica = try loadReplica(id, txn) else { throw StoreError.conflictNotFound(conflictID) }
            guard let c = replica.conflicts.first(where: { $0.id == conflictID }) else {
                throw StoreError.conflictNotFound(conflictID)
            }
            return (old, replica, c, context(actor, now: now))
        }
        var settled = replica
        let dot = Dot(node: ctx.node, stamp: ctx.stamp)
        _ = settled.resolve(conflict.field, choosing: keep == .winner ? conflict.winner : conflict.loser, with: dot)
        let new = settled.ticket(version: old.version + 1)!
        try txn.put(schema.tickets, key: new.id.bytes, value: RecordCodec.encode(new))
        try txn.put(schema.replicas, key: new.id.bytes, value: ReplicaCodec.encode(settled))
        try markConflicts(settled, txn)
        try reindex(old, new, txn)
        let kept = keep == .winner ? conflict.winningValue : conflict.losingValue
        let dropped = keep == .winner ? conflict.losingValue : conflict.winningValue
        try record(HistoryEvent(id: writer.nextID(now: now), ticketID: new.id, actor: actor, node: ctx.node, at: now,
                                stamp: ctx.stamp, field: "conflict.\(conflict.field.rawValue)", old: dropped,
                                new: "kept \(kept)"), txn)
        try moveInFeed(new.id, txn, &seq)
        return .ticket(new, changed: true)
    }

    /// Merges a peer's batch. Each ticket's remote writes pass admission (entitled
    /// organisation, relayed by its own nodes, stamp within the skew bound); what is
    /// refused is reported, never merged. The peer's checkpoint moves in the same
    /// transaction, so a crash can only make the batch be pulled again, and pulling
    /// it again changes nothing (merge is idempotent).
    private func applyMerge(_ batch: RemoteBatch, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        var report = MergeReport()
        for remote in batch.tickets {
            let local = try loadReplica(remote.id, txn)
            let (admitted, rejections) = remote.admitted(
                from: batch.peer, local: local, directory: configuration.directory, now: now,
                maxSkew: configuration.maxClockSkew)
            report.rejections += rejections
            let registers = local.map { $0.registersOnly.merged(admitted.registersOnly) } ?? admitted.registersOnly
            var newNotes: [Note] = []
            for note in admitted.notes.values.sorted(by: { $0.id < $1.id })
            where try !txn.contains(schema.notes, key: note.ticketID.bytes + note.id.bytes) && note.ticketID == remote.id {
                newNotes.append(note)
            }
            var newEvents: [HistoryEvent] = []
            for e in admitted.history.values.sorted(by: { $0.id < $1.id })
            where try !txn.contains(schema.history, key: e.ticketID.bytes + e.id.bytes) && e.ticketID == remote.id {
                newEvents.append(e)
            }
            let registersChanged = registers != local?.registersOnly
            guard registersChanged || !newNotes.isEmpty || !newEvents.isEmpty else {
                report.unchangedTickets += 1
                continue
            }
            let old = try loadTicket(remote.id, txn)
            let version = (old?.version ?? 0) + (registersChanged ? 1 : 0)
            // A ticket whose opening write has not arrived (or was refused) waits for it.
            guard let new = registers.ticket(version: version) else {
                report.unchangedTickets += 1
                continue
            }
            _ = try? writer.clock.receive(registers.latestStamp, wall: now)
            for n in newNotes { _ = try? writer.clock.receive(n.stamp, wall: now) }
            for e in newEvents { _ = try? writer.clock.receive(e.stamp, wall: now) }
            if registersChanged {
                try txn.put(schema.replicas, key: new.id.bytes, value: ReplicaCodec.encode(registers))
                try txn.put(schema.tickets, key: new.id.bytes, value: RecordCodec.encode(new))
                if old == nil {
                    // Two tickets with one number (nodes sharing a series) stay reachable by id;
                    // the number keeps naming the first.
                    let key = Array(new.number.description.utf8)
                    if try !txn.contains(schema.numbers, key: key) {
                        try txn.put(schema.numbers, key: key, value: new.id.bytes)
                    } else {
                        report.duplicateNumbers.append(new.number.description)
                    }
                }
                try reindex(old, new, txn)
                try markConflicts(registers, txn)
            }
            for n in newNotes { try txn.put(schema.notes, key: n.ticketID.bytes + n.id.bytes, value: RecordCodec.encode(n)) }
            for e in newEvents { try record(e, txn) }
            try moveInFeed(new.id, txn, &seq, isNew: old == nil)
            report.changedTickets += 1
        }
        var checkpoint = batch.sourceStoreID
        checkpoint += batch.throughSequence.bigEndianBytes
        try txn.put(schema.checkpoints, key: Array(batch.peer.value.utf8), value: checkpoint)
        return .merged(report)
    }

    private func record(_ e: HistoryEvent, _ txn: WriteTransaction) throws {
        try txn.putAppending(schema.history, key: e.ticketID.bytes + e.id.bytes, value: RecordCodec.encode(e))
    }

    /// The feed holds each ticket once, at its latest sequence.
    private func moveInFeed(_ id: TicketID, _ txn: WriteTransaction, _ seq: inout UInt64, isNew: Bool = false) throws {
        let key = id.bytes
        if !isNew, let old = try txn.get(schema.feedPosition, key: key) {
            try txn.delete(schema.feed, key: old)
        }
        seq += 1
        let seqKey = seq.bigEndianBytes
        try txn.put(schema.feed, key: seqKey, value: key, options: .append)
        if isNew {
            try txn.putAppending(schema.feedPosition, key: key, value: seqKey)
        } else {
            try txn.put(schema.feedPosition, key: key, value: seqKey)
        }
    }
}
