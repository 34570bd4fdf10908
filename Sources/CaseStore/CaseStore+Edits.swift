import CaseModel
import Foundation
import LMDB
import Metrics

/// A local edit an operator (or a tool) asks for.
public enum Edit: Sendable {
    case create(TicketDraft)
    case patch(TicketRef, TicketPatch, ifMatch: UInt64?)
    case addNote(TicketRef, text: String, visibility: NoteVisibility)
}

public enum EditOutcome: Sendable {
    /// The ticket after the edit; `changed` is false when the patch changed nothing.
    case ticket(Ticket, changed: Bool)
    case note(Note)

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
        for (p, r) in zip(group, results) {
            let r = r ?? .failure(.corrupt("edit not applied"))
            switch r {
            case .success: editsCommitted.increment()
            case .failure(.rejected), .failure(.ticketNotFound), .failure(.versionMismatch): editsRefused.increment()
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
            let last = try txn.u64(schema.counters, counterKey)
            let number = TicketNumber(region: configuration.region, year: year, sequence: (last ?? 0) + 1)
            let ctx = context(actor, now: now)
            let ticket = try draft.open(id: writer.nextID(now: now), number: number, node: node, now: now, stamp: ctx.stamp)
            return (ticket, counterKey)
        }
        // From here on every failure aborts the whole transaction.
        try txn.put(schema.counters, key: counterKey, value: ticket.number.sequence.bigEndianBytes)
        try txn.putAppending(schema.tickets, key: ticket.id.bytes, value: RecordCodec.encode(ticket), options: .noOverwrite)
        try faults.hit("create.afterTicket")
        try txn.putAppending(schema.numbers, key: Array(ticket.number.description.utf8), value: ticket.id.bytes, options: .noOverwrite)
        for (db, key) in Schema.indexEntries(ticket, schema) { try txn.putAppending(db, key: key, value: []) }
        try record(HistoryEvent(id: writer.nextID(now: now), ticketID: ticket.id, actor: actor, node: node, at: now,
                                stamp: ticket.updatedStamp, field: "ticket", old: nil,
                                new: "created \(ticket.number) as \(ticket.status.rawValue)"), txn)
        try faults.hit("create.beforeFeed")
        try moveInFeed(ticket.id, txn, &seq, isNew: true)
        return .ticket(ticket, changed: true)
    }

    private func applyPatch(_ ref: TicketRef, _ patch: TicketPatch, _ ifMatch: UInt64?, _ actor: Actor,
                            _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        let (old, new, changes, ctx) = try refusing { () throws -> (Ticket, Ticket, [FieldChange], EditContext) in
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
        try txn.put(schema.tickets, key: new.id.bytes, value: RecordCodec.encode(new))
        try faults.hit("patch.afterTicket")
        let before = Schema.indexEntries(old, schema)
        let after = Schema.indexEntries(new, schema)
        for (db, key) in before where !after.contains(where: { $0.0 == db && $0.1 == key }) {
            try txn.delete(db, key: key)
        }
        for (db, key) in after where !before.contains(where: { $0.0 == db && $0.1 == key }) {
            try txn.putAppending(db, key: key, value: [])
        }
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
