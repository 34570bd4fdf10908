import CaseModel
import LMDB

/// The named databases of a case store and how their keys are built.
/// Keys are big-endian so LMDB's byte order is numeric and time order.
struct Schema: Sendable {
    /// store identity, schema version, last sequence, last HLC stamp
    let meta: Database
    /// ticket id (16) → ticket record
    let tickets: Database
    /// readable number (utf8) → ticket id
    let numbers: Database
    /// "{region}-{year}" → last sequence issued (u64 BE)
    let counters: Database
    /// ticket id (16) + note id (16) → note record
    let notes: Database
    /// ticket id (16) + event id (16) → history event
    let history: Database
    /// local sequence (u64 BE) → ticket id: the change feed, each ticket once
    let feed: Database
    /// ticket id → its current sequence in the feed
    let feedPosition: Database
    /// status code (1) + ticket id → ∅
    let byStatus: Database
    /// assignee (utf8) + 0x00 + ticket id → ∅
    let byAssignee: Database
    /// updatedAt ms (u64 BE) + ticket id → ∅
    let byUpdated: Database
    /// next deadline ms (u64 BE) + ticket id → ∅ (open tickets only)
    let byDeadline: Database
    /// ticket id → its replicated state (registers with versions and dots)
    let replicas: Database
    /// ticket id → ∅ for tickets with unresolved conflicts
    let conflicted: Database
    /// peer node id → source store id (16) + last applied sequence of its feed (u64 BE)
    let checkpoints: Database
    /// peer node id → how far this store's own feed has been served to that peer (u64 BE)
    let served: Database

    static let version: UInt32 = 1

    init(env: Environment) throws {
        meta = try env.openDatabase("meta")
        tickets = try env.openDatabase("tickets")
        numbers = try env.openDatabase("numbers")
        counters = try env.openDatabase("counters")
        notes = try env.openDatabase("notes")
        history = try env.openDatabase("history")
        feed = try env.openDatabase("feed")
        feedPosition = try env.openDatabase("feed_position")
        byStatus = try env.openDatabase("idx_status")
        byAssignee = try env.openDatabase("idx_assignee")
        byUpdated = try env.openDatabase("idx_updated")
        byDeadline = try env.openDatabase("idx_deadline")
        replicas = try env.openDatabase("replicas")
        conflicted = try env.openDatabase("idx_conflicts")
        checkpoints = try env.openDatabase("checkpoints")
        served = try env.openDatabase("served")
    }

    var all: [Database] {
        [meta, tickets, numbers, counters, notes, history, feed, feedPosition, byStatus, byAssignee, byUpdated, byDeadline,
         replicas, conflicted, checkpoints, served]
    }

    enum MetaKey {
        static let storeID: [UInt8] = Array("store_id".utf8)
        static let schemaVersion: [UInt8] = Array("schema_version".utf8)
        static let nodeID: [UInt8] = Array("node_id".utf8)
        static let lastSequence: [UInt8] = Array("last_sequence".utf8)
        static let lastStamp: [UInt8] = Array("last_stamp".utf8)
        static let lastRecordID: [UInt8] = Array("last_record_id".utf8)
    }

    static func statusKey(_ s: TicketStatus, _ id: TicketID) -> [UInt8] { [s.code] + id.bytes }
    static func assigneeKey(_ a: String, _ id: TicketID) -> [UInt8] { Array(a.utf8) + [0] + id.bytes }
    static func timeKey(_ t: Millis, _ id: TicketID) -> [UInt8] { UInt64(max(0, t)).bigEndianBytes + id.bytes }

    /// Every index entry a ticket has; an update deletes the old set and writes the new one.
    static func indexEntries(_ t: Ticket, _ s: Schema) -> [(Database, [UInt8])] {
        var e: [(Database, [UInt8])] = [
            (s.byStatus, statusKey(t.status, t.id)),
            (s.byUpdated, timeKey(t.updatedAt, t.id)),
        ]
        if let a = t.assignee { e.append((s.byAssignee, assigneeKey(a, t.id))) }
        if let d = t.deadlines.next(for: t.status) { e.append((s.byDeadline, timeKey(d, t.id))) }
        return e
    }
}
