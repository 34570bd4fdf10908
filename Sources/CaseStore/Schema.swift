import CaseModel
import LMDB

/// The named databases of a case store. Their keys are built in `Keys`.
///
/// Generic, for every record kind: `records`, `children`, `feed`, `idx_conflicts`.
/// The ticket kind's projection (what operators query): `tickets`, `numbers`,
/// `counters` and the `idx_*` indexes of tickets.
struct Schema: Sendable {
    /// store identity, schema version, node id, last sequence, last HLC stamp, last record id
    let meta: Database
    /// kind (1) + record id (16) → the record's registers (StoredRecord)
    let records: Database
    /// kind (1) + record id (16) + collection (1) + child id (16) → the child (StoredChild)
    let children: Database
    /// local sequence (u64 BE) → what changed together at that sequence (FeedEntry); each
    /// register of a record is in one entry, at its latest change; children never move
    let feed: Database
    /// kind (1) + record id (16) → ∅ for records with unresolved conflicts
    let conflicted: Database
    /// peer node id → source store id (16) + last applied sequence of its feed (u64 BE)
    let checkpoints: Database
    /// peer node id → how far this store's own feed has been served to that peer (u64 BE)
    let served: Database
    /// ticket id (16) → the ticket as operators see it (TicketView)
    let tickets: Database
    /// readable number (utf8) → ticket id
    let numbers: Database
    /// "{region}-{year}" → last sequence issued (u64 BE)
    let counters: Database
    /// status code (1) + ticket id → ∅
    let byStatus: Database
    /// assignee (utf8) + 0x00 + ticket id → ∅
    let byAssignee: Database
    /// updatedAt ms (u64 BE) + ticket id → ∅
    let byUpdated: Database
    /// next deadline ms (u64 BE) + ticket id → ∅ (open tickets only)
    let byDeadline: Database
    /// transfer id (16) → the transfer as lists show it (TransferView)
    let transfers: Database
    /// ticket id (16) + transfer id (16) → ∅
    let transfersByTicket: Database
    /// receiving organisation (utf8) + 0x00 + due ms (u64 BE) + transfer id → ∅
    let transferInbox: Database
    /// sending organisation (utf8) + 0x00 + created ms (u64 BE) + transfer id → ∅
    let transferOutbox: Database
    /// partner organisation (utf8) + 0x00 + local sequence (u64 BE) → FeedEntry: the feed
    /// entries (and backfills) that may concern a partner organisation, so that its pull
    /// reads only those; what of them it receives is decided when it is read (TicketScope)
    let scopeFeed: Database
    /// ticket id (16) → PurgeRecord: tickets whose personal data this node purged when
    /// the transfer that brought them ended
    let purged: Database
    /// entry sequence (u64 BE, from 1) → AccessLogValue: who was shown which personal data
    /// (152-FZ), hash-chained; node-local, never in the feed. Its head is in `meta`.
    let accessLog: Database
    /// scope (organisation, utf8) + 0x00 + position (u16 BE) + kind (1) + record id (16) →
    /// DigestLeaf: what the record contributes to that scope's digest (Digest/)
    let digestLeaves: Database
    /// scope + 0x00 + position (u16 BE) → sum of the bucket's leaves (32) + records (u64 BE)
    let digestBuckets: Database
    /// kind (1) + record id (16) → ∅: records whose bytes no longer hash to their leaf
    /// (changed under the store); a repair from a peer may replace their writes
    let digestDamaged: Database
    /// ticket id (16) → HeldPurge: purges waiting until the ticket's home organisation
    /// holds this node's writes of it (PurgeHold.swift)
    let purgeHeld: Database
    /// ticket id (16) → the last sequence (u64 BE) at which the ticket was purged here. A
    /// purge leaves the feed naming the ticket's children (finding their entries would
    /// take a scan); an entry at or before it that names what is gone is passed over,
    /// also after a transfer made live again brought the ticket back (Purge.swift).
    let purgedThrough: Database
    /// ticket id (16) + peer node id (utf8) → RecordDelta: parts of a ticket that peer sent
    /// whose author a REDIRECT still awaiting acceptance may entitle (AdmissionHold.swift)
    let admissionHeld: Database

    /// 2: generic records, children and a feed of parts (issue 7). Stored values are
    /// tagged (protobuf's wire format): fields are added without a new version.
    /// 3 (0.19): a restore's marks in meta (Restore.swift); Migrations.swift steps to it.
    static let version: UInt32 = 3

    init(env: Environment) throws {
        meta = try env.openDatabase("meta")
        records = try env.openDatabase("records")
        children = try env.openDatabase("children")
        feed = try env.openDatabase("feed")
        conflicted = try env.openDatabase("idx_conflicts")
        checkpoints = try env.openDatabase("checkpoints")
        served = try env.openDatabase("served")
        tickets = try env.openDatabase("tickets")
        numbers = try env.openDatabase("numbers")
        counters = try env.openDatabase("counters")
        byStatus = try env.openDatabase("idx_status")
        byAssignee = try env.openDatabase("idx_assignee")
        byUpdated = try env.openDatabase("idx_updated")
        byDeadline = try env.openDatabase("idx_deadline")
        transfers = try env.openDatabase("transfers")
        transfersByTicket = try env.openDatabase("idx_transfer_ticket")
        transferInbox = try env.openDatabase("idx_transfer_inbox")
        transferOutbox = try env.openDatabase("idx_transfer_outbox")
        scopeFeed = try env.openDatabase("scope_feed")
        purged = try env.openDatabase("purged")
        accessLog = try env.openDatabase("access_log")
        digestLeaves = try env.openDatabase("digest_leaves")
        digestBuckets = try env.openDatabase("digest_buckets")
        digestDamaged = try env.openDatabase("digest_damaged")
        purgeHeld = try env.openDatabase("purge_held")
        purgedThrough = try env.openDatabase("purged_through")
        admissionHeld = try env.openDatabase("admission_held")
    }

    var all: [Database] {
        [meta, records, children, feed, conflicted, checkpoints, served, tickets, numbers, counters,
         byStatus, byAssignee, byUpdated, byDeadline, transfers, transfersByTicket, transferInbox, transferOutbox,
         scopeFeed, purged, accessLog, digestLeaves, digestBuckets, digestDamaged, purgeHeld, purgedThrough, admissionHeld]
    }

    enum MetaKey {
        static let storeID: [UInt8] = Array("store_id".utf8)
        static let schemaVersion: [UInt8] = Array("schema_version".utf8)
        static let nodeID: [UInt8] = Array("node_id".utf8)
        static let lastSequence: [UInt8] = Array("last_sequence".utf8)
        static let lastStamp: [UInt8] = Array("last_stamp".utf8)
        static let lastRecordID: [UInt8] = Array("last_record_id".utf8)
        /// the access log's last sequence (u64 BE) + its hash (32)
        static let accessHead: [UInt8] = Array("access_log_head".utf8)
        /// u64 BE: the digest format the leaves were built in; absent until a scrub has
        /// built them for every record (a store from before digests, or a new format)
        static let digestVersion: [UInt8] = Array("digest_version".utf8)
        /// where the running scrub stands (a record key), so a restart goes on from there
        static let digestScrub: [UInt8] = Array("digest_scrub".utf8)
    }
}

/// Every key the store builds, in one place. Keys are big-endian so that LMDB's byte
/// order is numeric and time order.
enum Keys {
    static func record(_ kind: RecordKindIDByte, _ id: TicketID) -> [UInt8] {
        var k = [UInt8]()
        k.reserveCapacity(17)
        k.append(kind)
        k += id.bytes
        return k
    }

    static func childPrefix(_ kind: RecordKindIDByte, _ id: TicketID, _ collection: UInt8) -> [UInt8] {
        record(kind, id) + [collection]
    }

    static func child(_ kind: RecordKindIDByte, _ id: TicketID, _ collection: UInt8, _ child: TicketID) -> [UInt8] {
        childPrefix(kind, id, collection) + child.bytes
    }

    static func sequence(_ s: UInt64) -> [UInt8] { s.bigEndianBytes }

    static func peer(_ node: NodeID) -> [UInt8] { Array(node.value.utf8) }

    static func number(_ n: TicketNumber) -> [UInt8] { Array(n.description.utf8) }

    static func status(_ s: TicketStatus, _ id: TicketID) -> [UInt8] { [s.code] + id.bytes }
    static func assignee(_ a: String, _ id: TicketID) -> [UInt8] { Array(a.utf8) + [0] + id.bytes }
    static func time(_ t: Millis, _ id: TicketID) -> [UInt8] { UInt64(max(0, t)).bigEndianBytes + id.bytes }
    static func scope(_ org: String, _ seq: UInt64) -> [UInt8] { Array(org.utf8) + [0] + seq.bigEndianBytes }
    static func organisationTime(_ org: String, _ t: Millis, _ id: RecordID) -> [UInt8] { Array(org.utf8) + [0] + time(t, id) }
}

typealias RecordKindIDByte = UInt8
