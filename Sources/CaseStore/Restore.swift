import Access
import CaseModel
import Foundation
import LMDB

// Restore (issue 19, item 4): a backup copied into an empty data directory becomes the
// node's store again, as a store of its own. What the node wrote after the backup is
// held by its peers, which send it back; what it must never do is hand out again what
// it handed out before the loss:
//
// - a checkpoint: the restored store gets a new store id, so every peer's checkpoint
//   against the old one is reset and the peer pulls the restored feed from its start
//   (proto/README §5) instead of trusting positions the copy never reached;
// - a readable number: numbering goes on from the next million of each year's counter
//   (`numbers_floor`), past anything issued since the backup, whether or not a peer
//   holds the ticket that got it;
// - a stamp: until the store has caught up with every peer once (`restore_pending`), it
//   takes no local write, so its clock has seen every stamp of its own that a peer holds
//   and a new write cannot reuse one (a dot names one write; a peer would refuse a second
//   write under it as equivocation).
//
// The access log goes on from the copy's head with an entry recording the restore.

/// What a restore records in the store (meta `restore`), shown by `ekc store restore`
/// and `GET /v1/health`.
public struct RestoreRecord: Codable, Sendable, Equatable {
    /// The store id of the backup (the store that was lost).
    public var fromStoreId: String
    public var backupSequence: UInt64
    public var backupTakenAt: Int64
    public var restoredAt: Int64
    /// The restored store's new id.
    public var storeId: String
    /// Numbers of years up to `numbersYear` continue after this counter value (per
    /// region-year counter; the node's series is added as before).
    public var numbersFrom: UInt64
    public var numbersYear: Int
}

/// A restore to record: who ran it, why, and which backup.
public struct RestoreRequest: Sendable {
    public var manifest: BackupManifest
    public var subject: String
    public var reason: String
    public var organisation: String

    public init(manifest: BackupManifest, subject: String, reason: String, organisation: String) {
        self.manifest = manifest
        self.subject = subject
        self.reason = reason
        self.organisation = organisation
    }
}

enum RestoreMeta {
    static let record: [UInt8] = Array("restore".utf8)
    /// 1 byte: present while the restored store waits to catch up with its peers.
    static let pending: [UInt8] = Array("restore_pending".utf8)
    /// year (u64 BE) + counter floor (u64 BE)
    static let numbersFloor: [UInt8] = Array("numbers_floor".utf8)
    /// Numbers after a restore continue at the next multiple of this.
    static let numbersStep: UInt64 = 1_000_000
}

extension CaseStore {
    /// Copies the backup `file` (checked against its manifest by the caller) into the empty
    /// or missing directory `path` as `data.mdb`, durably. Refuses a directory that holds
    /// anything: a restore never replaces a store.
    public static func placeBackup(_ file: String, into path: String) throws(BackupError) {
        if try !isEmptyRestoreTarget(path) {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw .io(path, "\(error)")
            }
        }
        try copyDurably(file, to: path + "/data.mdb")
    }

    /// Whether `path` is an empty directory (true) or missing (false); refuses a file or a
    /// directory that holds anything: a restore never replaces a store.
    @discardableResult
    public static func isEmptyRestoreTarget(_ path: String) throws(BackupError) -> Bool {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return false }
        guard isDir.boolValue else { throw .io(path, "is a file, not a data directory") }
        let held = (try? fm.contentsOfDirectory(atPath: path)) ?? []
        guard held.isEmpty else {
            throw .io(path, "holds \(held.sorted().prefix(3).joined(separator: ", ")); a restore goes into an empty "
                      + "directory: move the old one aside (it may be evidence of what was lost)")
        }
        return true
    }

    /// The restore record, if this store was restored.
    public var restoreRecord: RestoreRecord? {
        (try? readTxn { txn in
            try txn.get(schema.meta, key: RestoreMeta.record).flatMap { try? JSONDecoder().decode(RestoreRecord.self, from: Data($0)) }
        }) ?? nil
    }

    /// Whether the store was restored and has not yet caught up with every peer: local
    /// writes are refused meanwhile (`StoreError.restoring`).
    public var restorePending: Bool { restoreGate.withLock { $0 } }

    /// Marks the store restored from `request`'s backup: a new store id, numbering past
    /// the next million, writes held until caught up, an access-log entry. Run by
    /// `ekc store restore` on the placed copy, before any node serves it.
    public func markRestored(_ request: RestoreRequest) async throws(StoreError) -> RestoreRecord {
        guard case .restored(let r) = try await perform(.markRestored(request), actor: .system) else {
            throw .corrupt("restore not recorded")
        }
        return r
    }

    /// Ends the wait after a restore: every peer has been caught up with once.
    public func finishRestore() async throws(StoreError) {
        _ = try await perform(.finishRestore, actor: .system)
        restoreGate.withLock { $0 = false }
    }

    func applyMarkRestored(_ request: RestoreRequest, _ txn: WriteTransaction, now: Millis) throws -> EditOutcome {
        var rng = SystemRandomNumberGenerator()
        let newID = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let year = Calendar59.year(of: now, offsetMinutes: configuration.utcOffsetMinutes)
        // Past every counter and every earlier restore's floor, to the next million.
        var highest = try numbersFloor(txn)?.floor ?? 0
        try txn.withCursor(schema.counters) { c in
            var ok = try c.first()
            while ok {
                if let n = UInt64(bigEndianBytes: c.value) { highest = max(highest, n) }
                ok = try c.next()
            }
        }
        let (floor, overflow) = (highest / RestoreMeta.numbersStep + 1).multipliedReportingOverflow(by: RestoreMeta.numbersStep)
        guard !overflow else { throw Refused(error: .corrupt("a ticket counter is at \(highest): no number is left after it")) }
        try txn.put(schema.meta, key: RestoreMeta.numbersFloor, value: UInt64(max(0, year)).bigEndianBytes + floor.bigEndianBytes)
        try txn.put(schema.meta, key: Schema.MetaKey.storeID, value: newID)
        let record = RestoreRecord(fromStoreId: request.manifest.storeId, backupSequence: request.manifest.lastSequence,
                                   backupTakenAt: request.manifest.takenAt, restoredAt: now, storeId: hexString(newID),
                                   numbersFrom: floor, numbersYear: year)
        try txn.put(schema.meta, key: RestoreMeta.record, value: Array(try JSONEncoder().encode(record)))
        try txn.put(schema.meta, key: RestoreMeta.pending, value: [1])
        let entry = AccessEntry(at: now, subject: request.subject, role: "ops", organisation: request.organisation,
                                action: "store.restore", reason: request.reason,
                                route: "ekc store restore: backup of store \(request.manifest.storeId) through sequence "
                                    + "\(request.manifest.lastSequence), taken at \(request.manifest.takenAt); new store \(record.storeId)")
        _ = try applyRecordAccess([entry], txn)
        return .restored(record)
    }

    func applyFinishRestore(_ txn: WriteTransaction) throws -> EditOutcome {
        try txn.delete(schema.meta, key: RestoreMeta.pending)
        return .merged(MergeReport())
    }

    /// The counter value numbering continues after in `year`: the stored one, or the
    /// floor a restore set for this year and earlier ones.
    func counterFloor(_ stored: UInt64, year: Int, _ txn: some TransactionProtocol) throws -> UInt64 {
        guard let f = try numbersFloor(txn), year <= f.year else { return stored }
        return max(stored, f.floor)
    }

    /// The floor a restore set, if any; a value of another length is a damaged meta table.
    private func numbersFloor(_ txn: some TransactionProtocol) throws -> (year: Int, floor: UInt64)? {
        try txn.withValue(schema.meta, key: RestoreMeta.numbersFloor) { b throws -> (year: Int, floor: UInt64) in
            guard b.count == 16, let y = UInt64(bigEndianBytes: b), y <= 9999,
                  let f = UInt64(bigEndianBytes: UnsafeRawBufferPointer(rebasing: b[8...])) else {
                throw CorruptRecord(what: "meta numbers_floor: \(b.count) bytes that are no year and counter")
            }
            return (Int(y), f)
        }
    }
}
