import CaseModel
import LMDB
import Replication

/// Edits made on this node: each is a write to the registers it changes (stamped by
/// this node's clock), the history events it records, its feed entry, and the
/// ticket's view and indexes, in the commit loop's transaction.
extension CaseStore {
    private func context(_ actor: Actor, now: Millis) -> EditContext {
        EditContext(actor: actor, node: configuration.node, now: now, stamp: writer.clock.tick(wall: now),
                    workingHours: configuration.workingHours)
    }

    private func event(_ ticket: TicketID, _ actor: Actor, _ ctx: EditContext, field: String, old: String?, new: String?,
                       now: Millis) -> Child {
        TicketRecord.child(HistoryEvent(id: writer.nextID(now: now), ticketID: ticket, actor: actor, node: ctx.node,
                                        at: now, stamp: ctx.stamp, field: field, old: old, new: new))
    }

    func applyCreate(_ draft: TicketDraft, _ actor: Actor, _ txn: WriteTransaction, _ seq: inout UInt64,
                     now: Millis) throws -> EditOutcome {
        let node = configuration.node
        let (ticket, counterKey, ctx) = try refusing { () throws -> (Ticket, [UInt8], EditContext) in
            let year = Calendar59.year(of: now, offsetMinutes: configuration.utcOffsetMinutes)
            let counterKey = Array("\(configuration.region)-\(year)".utf8)
            // Each node of a region numbers in its own series (series × 10,000,000 + n), so
            // numbers are unique without coordination; a number already taken (a node
            // misconfigured with another's series) is skipped, never reused.
            // The counter is stored bytes. No number past 10^12 is issued (a ticket's header
            // holds no other, TicketValues: every read and every peer would refuse it), so a
            // counter that far on (a damaged table) is a corrupt store, not a trap or a
            // ticket nobody can read.
            let maxSequence: UInt64 = 1_000_000_000_000
            func sequence(_ n: UInt64) throws(StoreError) -> UInt64 {
                let (base, overflow) = configuration.numberSeries.multipliedReportingOverflow(by: 10_000_000)
                guard !overflow, n <= maxSequence, base <= maxSequence - n else {
                    throw .corrupt("ticket counter \(configuration.region)-\(year): number \(n) of series \(configuration.numberSeries) would pass 10^12")
                }
                return base + n
            }
            // After a restore, numbering goes on past the next million (Restore.swift).
            let stored = try counterFloor(txn.u64(schema.counters, counterKey) ?? 0, year: year, txn)
            guard stored < maxSequence else {
                throw StoreError.corrupt("ticket counter \(configuration.region)-\(year) is at \(stored): the next number would pass 10^12")
            }
            var n = stored + 1
            var number = TicketNumber(region: configuration.region, year: year, sequence: try sequence(n))
            while try txn.contains(schema.numbers, key: Keys.number(number)) {
                n += 1
                number = TicketNumber(region: configuration.region, year: year, sequence: try sequence(n))
            }
            let ctx = context(actor, now: now)
            let ticket = try draft.open(id: writer.nextID(now: now), number: number, node: node, now: now, stamp: ctx.stamp)
            return (ticket, counterKey, ctx)
        }
        // From here on every failure aborts the whole transaction.
        try txn.put(schema.counters, key: counterKey,
                    value: (ticket.number.sequence - configuration.numberSeries * 10_000_000).bigEndianBytes)
        var record = StoredRecord.new(TicketRecord.schema, ticket.id)
        let written = record.state.record(ticket, from: nil, dot: Dot(node: node, stamp: ctx.stamp))
        record.local.version = 1
        try faults.hit("create.afterTicket")
        let created = event(ticket.id, actor, ctx, field: "ticket", old: nil,
                            new: "created \(ticket.number) as \(ticket.status.rawValue)", now: now)
        try faults.hit("create.beforeFeed")
        try commitRecord(TicketRecord.schema, &record, changed: written, children: [created], txn, &seq, isNew: true)
        try projectTicket(record, txn)
        return .ticket(asRead(ticket, record), changed: true)
    }

    /// What a local edit wrote, as a read will show it: every register it wrote holds
    /// the ticket's value (the new dot has seen every other version), the others are
    /// unchanged, so only the record's stamp and version are new. Decoding the record
    /// again costs a sixth of a create; debug builds check that it would agree.
    private func asRead(_ ticket: Ticket, _ record: StoredRecord) -> Ticket {
        var t = ticket
        t.updatedAt = record.state.latestStamp.millis
        t.updatedStamp = record.state.latestStamp
        t.version = record.local.version
        assert(Ticket.materialise(record.state, local: record.local) == t, "a local edit's ticket differs from its record")
        return t
    }

    func applyPatch(_ ref: TicketRef, _ patch: TicketPatch, _ ifMatch: UInt64?, _ actor: Actor,
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
            if !changes.isEmpty, let record = try loadRecord(TicketRecord.schema, old.id, txn) {
                var written = RegisterSet()
                for (i, (a, b)) in zip(old.registerValues, new.registerValues).enumerated() where a != b { written.insert(i) }
                try checkEntitled(record, registers: written, txn)
            }
            return (old, new, changes, ctx)
        }
        guard !changes.isEmpty else { return .ticket(old, changed: false) }
        // The edit is a write to the changed registers; the view is what the registers
        // now say, the same view every replica will compute.
        guard var record = try loadRecord(TicketRecord.schema, old.id, txn) else {
            throw StoreError.corrupt("ticket \(old.id) has a view but no record")
        }
        let written = record.state.record(edited, from: old, dot: Dot(node: ctx.node, stamp: ctx.stamp))
        record.local.version += 1
        try faults.hit("patch.afterTicket")
        let events = changes.map { event(old.id, actor, ctx, field: $0.field, old: $0.old, new: $0.new, now: now) }
        try commitRecord(TicketRecord.schema, &record, changed: written, children: events, txn, &seq, isNew: false)
        // A ticket with transfers is shown as they decide who handles it (Handling.swift):
        // read back from its view; one without is what the edit wrote.
        if try projectTicket(record, txn).derived, let view = try loadTicket(old.id, txn) {
            return .ticket(view, changed: true)
        }
        return .ticket(asRead(edited, record), changed: true)
    }

    func applyNote(_ ref: TicketRef, _ text: String, _ visibility: NoteVisibility, _ actor: Actor,
                   _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        let (note, ctx) = try refusing { () throws -> (Note, EditContext) in
            guard let id = try resolve(ref, txn), try txn.contains(schema.tickets, key: id.bytes) else {
                throw StoreError.ticketNotFound(ref.description)
            }
            try Note.validate(text: text)
            if let record = try loadRecord(TicketRecord.schema, id, txn) {
                try checkEntitled(record, registers: .none, collection: TicketRecord.Collection.notes.rawValue, txn)
            }
            let ctx = context(actor, now: now)
            return (Note(id: writer.nextID(now: now), ticketID: id, author: actor, node: ctx.node, at: now,
                         stamp: ctx.stamp, visibility: visibility, text: text), ctx)
        }
        try faults.hit("note.afterNote")
        let recorded = event(note.ticketID, actor, ctx, field: "note", old: nil, new: "\(note.visibility.rawValue) note \(note.id)",
                             now: now)
        var record = try loadRecord(TicketRecord.schema, note.ticketID, txn) ?? StoredRecord.new(TicketRecord.schema, note.ticketID)
        try commitRecord(TicketRecord.schema, &record, changed: .none, children: [TicketRecord.child(note), recorded],
                         txn, &seq, isNew: false)
        return .note(note)
    }

    func applyResolve(_ conflictID: String, _ keep: ConflictChoice, _ actor: Actor, _ txn: WriteTransaction,
                      _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        let (schema, record, conflict, ctx) = try refusing { () throws -> (RecordSchema, StoredRecord, Conflict, EditContext) in
            guard let (kindName, id, _, _) = Conflict.parse(id: conflictID), let schema = kinds.schema(named: kindName),
                  let record = try loadRecord(schema, id, txn),
                  let c = schema.conflicts(of: record.state).first(where: { $0.id == conflictID })
            else { throw StoreError.conflictNotFound(conflictID) }
            if schema.kind == TicketRecord.kind {
                var written = RegisterSet()
                written.insert(c.register)
                try checkEntitled(record, registers: written, txn)
            }
            return (schema, record, c, context(actor, now: now))
        }
        var settled = record
        _ = settled.state.resolve(register: conflict.register, choosing: keep == .winner ? conflict.winner : conflict.loser,
                                  with: Dot(node: ctx.node, stamp: ctx.stamp))
        settled.local.version += 1
        var changed = RegisterSet()
        changed.insert(conflict.register)
        let kept = keep == .winner ? conflict.winningValue : conflict.losingValue
        let dropped = keep == .winner ? conflict.losingValue : conflict.winningValue
        var children: [Child] = []
        if schema.kind == TicketRecord.kind {
            children.append(event(record.state.id, actor, ctx, field: "conflict.\(conflict.field)", old: dropped,
                                  new: "kept \(kept)", now: now))
        }
        try commitRecord(schema, &settled, changed: changed, children: children, txn, &seq, isNew: false)
        if schema.kind == TicketRecord.kind {
            try projectTicket(settled, txn)
            // The ticket as the view shows it (what a partner holds of it need not
            // materialise whole: its citizen details outside the scope are absent).
            if let view = try loadTicket(settled.state.id, txn) { return .ticket(view, changed: true) }
        }
        return .record(record.state.id)
    }

    /// A generic local write: each named register gets the value, stamped now; each
    /// child is new. The kind's value checks apply as they do to a peer's writes.
    func applyWrite(_ w: RecordWrite, _ txn: WriteTransaction, _ seq: inout UInt64, now: Millis) throws -> EditOutcome {
        let (schema, id, existing, dot) = try refusing { () throws -> (RecordSchema, RecordID, StoredRecord?, Dot) in
            guard let schema = kinds[w.kind] else {
                throw StoreError.rejected(.invalidField(field: "kind", rule: "no record kind \(w.kind)"))
            }
            let check = CheckContext(directory: configuration.directory)
            for (i, v) in w.values {
                guard schema.registers.indices.contains(i) else {
                    throw StoreError.rejected(.invalidField(field: "register", rule: "\(schema.name) has no register \(i)"))
                }
                do { try schema.registers[i].check(v, check) } catch {
                    throw StoreError.rejected(.invalidField(field: schema.registers[i].name, rule: "\(error)"))
                }
            }
            for c in w.children {
                guard let coll = schema.collection(number: UInt64(c.collection)) else {
                    throw StoreError.rejected(.invalidField(field: "collection", rule: "\(schema.name) has no collection \(c.collection)"))
                }
                do { try coll.check(c.value, check) } catch {
                    throw StoreError.rejected(.invalidField(field: coll.name, rule: "\(error)"))
                }
            }
            let id = w.id ?? writer.nextID(now: now)
            let existing = try loadRecord(schema, id, txn)
            return (schema, id, existing, Dot(node: configuration.node, stamp: writer.clock.tick(wall: now)))
        }
        var record = existing ?? StoredRecord.new(schema, id)
        var changed = RegisterSet()
        for (i, v) in w.values.sorted(by: { $0.key < $1.key }) {
            record.state.registers[i].write(v, dot: dot)
            changed.insert(i)
        }
        if !changed.isEmpty { record.local.version += 1 }
        let children = w.children.map { Child(collection: $0.collection, id: writer.nextID(now: now), dot: dot, value: $0.value) }
        try commitRecord(schema, &record, changed: changed, children: children, txn, &seq, isNew: existing == nil)
        return .record(id)
    }
}
