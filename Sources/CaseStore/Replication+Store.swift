import CaseModel
import LMDB
import Replication

/// One entry of the feed as peers receive it: the ticket's whole replicated state.
public struct ReplicationChange: Sendable {
    public let sequence: UInt64
    public let ticket: ReplicatedTicket
}

/// Where a puller stands in a peer's feed, tied to the identity of that peer's store.
public struct Checkpoint: Sendable, Equatable {
    public let sourceStoreID: [UInt8]
    public let sequence: UInt64
    public init(sourceStoreID: [UInt8], sequence: UInt64) {
        self.sourceStoreID = sourceStoreID
        self.sequence = sequence
    }
}

extension CaseStore {
    /// The store id as bytes, as checkpoints carry it.
    public var storeIDBytes: [UInt8] { CaseStore.decodeCursor(storeID) ?? [] }

    /// A ticket's full replicated state: registers, notes and history.
    public func replica(of id: TicketID) throws -> ReplicatedTicket? {
        try readTxn { txn in try fullReplica(id, txn) }
    }

    func fullReplica(_ id: TicketID, _ txn: some TransactionProtocol) throws -> ReplicatedTicket? {
        guard var r = try loadReplica(id, txn) else { return nil }
        for n in try scanPrefix(schema.notes, prefix: id.bytes, txn, { try RecordCodec.decodeNote($0) }) { r.add(n) }
        for e in try scanPrefix(schema.history, prefix: id.bytes, txn, { try RecordCodec.decodeEvent($0) }) { r.add(e) }
        return r
    }

    /// The feed after `since`, as peers pull it, with the last sequence at the time of reading.
    public func replicationChanges(since: UInt64, limit: Int) throws -> (changes: [ReplicationChange], lastSequence: UInt64) {
        let limit = min(max(limit, 1), 10_000)
        return try readTxn { txn in
            let last = try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
            let changes = try txn.withCursor(schema.feed) { c in
                var out: [ReplicationChange] = []
                var ok = since == .max ? false : try c.seek(atLeast: (since + 1).bigEndianBytes)
                while ok && out.count < limit {
                    let seq = UInt64(bigEndianBytes: c.key)!
                    let id = TicketID(raw: c.value)
                    guard let r = try fullReplica(id, txn) else { throw StoreError.corrupt("feed names missing ticket \(id)") }
                    out.append(ReplicationChange(sequence: seq, ticket: r))
                    ok = try c.next()
                }
                return out
            }
            return (changes, last)
        }
    }

    /// What this store has applied of `peer`'s feed.
    public func checkpoint(for peer: NodeID) throws -> Checkpoint? {
        try readTxn { txn in
            try txn.withValue(schema.checkpoints, key: Array(peer.value.utf8)) { b -> Checkpoint? in
                guard b.count == 24 else { return nil }
                return Checkpoint(sourceStoreID: Array(b[0..<16]), sequence: UInt64(bigEndianBytes: UnsafeRawBufferPointer(rebasing: b[16...]))!)
            } ?? nil
        }
    }

    /// Notes that this store's feed was sent to `peer` through `sequence`. Kept in memory
    /// and written with the next commit (no fsync of its own): if it is lost in a crash,
    /// the peer is only sent some changes again, which merging ignores.
    public func noteServed(_ peer: NodeID, through sequence: UInt64) {
        pendingServed.withLock { p in p[peer] = max(p[peer] ?? 0, sequence) }
    }

    /// How far this store remembers serving its feed to `peer`. A store restored from
    /// a copy remembers only what it had served when the copy was taken, so a peer whose
    /// checkpoint is further along is resumed from here and receives whatever the
    /// restored store has written since, instead of skipping it.
    public func served(to peer: NodeID) throws -> UInt64? {
        if let pending = pendingServed.withLock({ $0[peer] }) { return pending }
        return try readTxn { txn in try txn.u64(schema.served, Array(peer.value.utf8)) }
    }

    /// Writes the served marks now (a commit of their own); for an idle node.
    public func persistServed() async {
        guard pendingServed.withLock({ !$0.isEmpty }) else { return }
        _ = try? await perform(.persistServed, actor: .system)
    }

    /// Unresolved conflicts, oldest ticket first.
    public func conflicts(limit: Int = 500) throws -> [Conflict] {
        try readTxn { txn in
            try txn.withCursor(schema.conflicted) { c in
                var out: [Conflict] = []
                var ok = try c.first()
                while ok && out.count < limit {
                    if let r = try loadReplica(TicketID(raw: c.key), txn) { out += r.conflicts }
                    ok = try c.next()
                }
                return out
            }
        }
    }

    /// Merges a batch pulled from a peer (one transaction with the peer's checkpoint).
    public func merge(_ batch: RemoteBatch) async throws(StoreError) -> MergeReport {
        guard case .merged(let report) = try await perform(.merge(batch), actor: .system) else {
            throw .corrupt("merge produced no report")
        }
        return report
    }
}
