import CaseModel
import LMDB
import Replication

/// How far this store's feed has been sent to each peer (the sender's half of
/// checkpoints on both ends). Marks are kept in memory and written with the next
/// commit, without an fsync of their own: if one is lost in a crash, a peer is only
/// sent some changes again, which merging ignores. A store restored from a copy
/// remembers only what it had served when the copy was taken, so a peer further
/// along is resumed from here and receives whatever the restored store wrote since.
final class ServedMarks: @unchecked Sendable {
    private let pending = Locked<[NodeID: UInt64]>([:])

    func note(_ peer: NodeID, through sequence: UInt64) {
        pending.withLock { p in p[peer] = max(p[peer] ?? 0, sequence) }
    }

    func pendingMark(_ peer: NodeID) -> UInt64? { pending.withLock { $0[peer] } }

    var hasPending: Bool { pending.withLock { !$0.isEmpty } }

    /// Writes the pending marks into `txn`; returns what was written, to forget once committed.
    func write(_ txn: WriteTransaction, _ db: Database) throws -> [NodeID: UInt64] {
        let marks = pending.withLock { $0 }
        for (peer, through) in marks { try txn.put(db, key: Keys.peer(peer), value: through.bigEndianBytes) }
        return marks
    }

    /// Forgets marks now on disk, unless a newer one arrived meanwhile.
    func committed(_ written: [NodeID: UInt64]) {
        pending.withLock { p in for (peer, v) in written where p[peer] == v { p.removeValue(forKey: peer) } }
    }
}

/// Feed entries left out of what was sent to each peer (`FeedPage.Skip`): counted, and
/// the latest kept, for the replication endpoint. Memory only: a restart that serves
/// the entries again notes them again.
final class FeedSkips: @unchecked Sendable {
    struct PerPeer: Sendable {
        var count = 0
        var recent: [FeedPage.Skip] = []
    }
    static let recentKept = 10
    private let byPeer = Locked<[NodeID: PerPeer]>([:])

    func note(_ peer: NodeID, _ skips: [FeedPage.Skip]) {
        byPeer.withLock { m in
            var p = m[peer] ?? PerPeer()
            p.count += skips.count
            p.recent = Array((p.recent + skips).suffix(FeedSkips.recentKept))
            m[peer] = p
        }
    }

    var all: [NodeID: PerPeer] { byPeer.withLock { $0 } }
}

extension CaseStore {
    /// Notes feed entries left out of what was sent to `peer`.
    public func noteSkipped(_ peer: NodeID, _ skips: [FeedPage.Skip]) {
        guard !skips.isEmpty else { return }
        feedSkips.note(peer, skips)
    }

    /// Per peer: how many feed entries (or children of one) were left out of what it was
    /// sent, and the latest of them.
    public var skippedFeedEntries: [NodeID: (count: Int, recent: [FeedPage.Skip])] {
        feedSkips.all.mapValues { ($0.count, $0.recent) }
    }

    /// Notes that this store's feed was sent to `peer` through `sequence`.
    public func noteServed(_ peer: NodeID, through sequence: UInt64) {
        servedMarks.note(peer, through: sequence)
    }

    /// How far this store remembers serving its feed to `peer`.
    public func served(to peer: NodeID) throws -> UInt64? {
        if let pending = servedMarks.pendingMark(peer) { return pending }
        return try readTxn { txn in try txn.u64(schema.served, Keys.peer(peer)) }
    }

    /// Writes the served marks now (a commit of their own); for an idle node.
    public func persistServed() async {
        guard servedMarks.hasPending else { return }
        _ = try? await perform(.persistServed, actor: .system)
    }
}

/// What each peer's last pull stream spoke (proto/README §8.1), for the anti-entropy
/// answers to that peer. Memory only: until a peer pulls again after a restart, its
/// repairs carry the base protocol's parts alone.
final class PeerLinks: @unchecked Sendable {
    private let byPeer = Locked<[NodeID: Capabilities]>([:])
    func note(_ peer: NodeID, _ link: Capabilities) { byPeer.withLock { $0[peer] = link } }
    func link(_ peer: NodeID) -> Capabilities? { byPeer.withLock { $0[peer] } }
}

extension CaseStore {
    /// Notes what `peer`'s pull stream speaks.
    public func noteLink(_ peer: NodeID, speaks link: Capabilities) { peerLinks.note(peer, link) }
    /// What `peer`'s last pull stream spoke, if it pulled since this store opened.
    public func linkSpoken(by peer: NodeID) -> Capabilities? { peerLinks.link(peer) }
}
