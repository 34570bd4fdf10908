import CaseModel
import CaseStore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Replication
import Wire

/// Pulls every peer's change feed over one long-lived HTTP/2 stream each, merging
/// batches into the store as they arrive and reconnecting with jittered backoff.
/// Reading a stream pauses while its batch is being merged, so HTTP/2 flow control
/// holds the sender back: memory per link is bounded by one batch and the stream
/// window, however far behind this node is.
public final class Replicator: Sendable {
    let store: CaseStore
    let tls: NIOSSLContext
    let peers: [PeerAddress]
    let group: EventLoopGroup
    let metrics: ReplicationMetrics
    let logger: Logger
    let statuses: NIOLockedValueBox<[NodeID: LinkStatus]>
    let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])
    /// Called when a merge from a peer reported tickets to fetch whole
    /// (`MergeReport.wanted`): the anti-entropy's repair with that peer.
    let onWanted = NIOLockedValueBox<(@Sendable (NodeID) -> Void)?>(nil)

    public init(store: CaseStore, tls: NodeTLS, peers: [PeerAddress], group: EventLoopGroup,
                metrics: ReplicationMetrics, logger: Logger) throws {
        self.store = store
        self.tls = try tls.makeClientContext()
        self.peers = peers
        self.group = group
        self.metrics = metrics
        self.logger = logger
        var s: [NodeID: LinkStatus] = [:]
        for p in peers {
            var st = LinkStatus(peer: p.node, address: "\(p.host):\(p.port)")
            if let cp = try? store.checkpoint(for: p.node) { st.appliedSequence = cp.sequence }
            s[p.node] = st
        }
        statuses = NIOLockedValueBox(s)
    }

    public func start() {
        if store.restorePending {
            logger.notice("this store was restored from a backup: it takes local writes once it has caught up with every peer",
                          metadata: ["peers": "\(peers.map(\.node.value).joined(separator: ","))"])
            finishRestoreIfCaughtUp()
        }
        let started = peers.map { peer in Task { await self.pullLoop(peer) } }
        tasks.withLockedValue { $0 = started }
    }

    public func stop() async {
        let running = tasks.withLockedValue { t -> [Task<Void, Never>] in defer { t = [] }; return t }
        for t in running { t.cancel() }
        for t in running { await t.value }
    }

    public var links: [LinkStatus] {
        let ours = store.lastSequence
        return statuses.withLockedValue { s in s.values.sorted { $0.peer < $1.peer }.map { var l = $0; l.ourSequence = ours; return l } }
    }

    func update(_ peer: NodeID, _ body: (inout LinkStatus) -> Void) {
        statuses.withLockedValue { s in if s[peer] != nil { body(&s[peer]!) } }
    }

    /// Books what a merge reported: refused records (counted by reason, logged once,
    /// listed per link) and numbers that already named other tickets.
    func booked(_ report: MergeReport, from node: NodeID) {
        if report.heldForEntitlement > 0 {
            logger.info("held a partner's writes until the acceptance that entitles them arrives", metadata: [
                "peer": "\(node)", "parts": "\(report.heldForEntitlement)"])
        }
        if !report.wanted.isEmpty {
            logger.notice("a transfer is live again for tickets purged here: fetching them whole", metadata: [
                "peer": "\(node)", "tickets": "\(report.wanted.prefix(20).map { $0.id.description }.joined(separator: ","))"])
            onWanted.withLockedValue { $0 }?(node)
        }
        for r in report.rejections {
            metrics.rejected(peer: node, reason: r.refusal.reason.rawValue)
            if r.refusal.reason == .stampTooFarAhead { metrics.quarantinedStamps.increment() }
            // Logged once, here: the peer's checkpoint has moved past it, so it does not come again.
            logger.warning("refused a record from a peer", metadata: [
                "peer": "\(node)", "sequence": "\(r.sequence)", "kind": "\(r.kind.map { store.kinds[$0]?.name ?? "\($0)" } ?? "?")",
                "id": "\(r.id?.description ?? "?")", "reason": "\(r.refusal.reason.rawValue)",
                "detail": "\(r.refusal.detail.prefix(300))", "part": "\(r.whole ? "record" : "part")"])
        }
        if !report.duplicateNumbers.isEmpty {
            metrics.duplicateNumbers.increment(by: report.duplicateNumbers.count)
            logger.error("received tickets whose numbers already name other tickets here", metadata: [
                "peer": "\(node)", "numbers": "\(report.duplicateNumbers.prefix(20).joined(separator: ","))"])
        }
        guard !report.rejections.isEmpty || !report.duplicateNumbers.isEmpty else { return }
        let kinds = store.kinds
        update(node) { s in
            if !report.duplicateNumbers.isEmpty { s.duplicateNumbers = Array((s.duplicateNumbers + report.duplicateNumbers).suffix(20)) }
            let now = Date()
            for r in report.rejections {
                s.rejected.records += 1
                s.rejected.byReason[r.refusal.reason.rawValue, default: 0] += 1
                s.rejected.recent.append(.init(at: now, sequence: r.sequence, kind: r.kind.map { kinds[$0]?.name ?? "\($0)" },
                                               id: r.id?.description, reason: r.refusal.reason.rawValue,
                                               detail: String(r.refusal.detail.prefix(500)), whole: r.whole))
            }
            if s.rejected.recent.count > 20 { s.rejected.recent.removeFirst(s.rejected.recent.count - 20) }
        }
    }

    /// Books an answer of the peer that a call of ours refused (anti-entropy, the pull
    /// stream's header, batches and heartbeats): counted and listed on the link as a
    /// refused record is, under the answer's reason.
    func refusedAnswer(_ reason: String, _ detail: String, from node: NodeID) {
        metrics.rejected(peer: node, reason: reason)
        update(node) { s in
            s.rejected.records += 1
            s.rejected.byReason[reason, default: 0] += 1
            s.rejected.recent.append(.init(at: Date(), sequence: 0, kind: nil, id: nil, reason: reason,
                                           detail: String(detail.prefix(500)), whole: true))
            if s.rejected.recent.count > 20 { s.rejected.recent.removeFirst(s.rejected.recent.count - 20) }
        }
    }

    func refusedAnswer(_ refusal: RepairRefusal, from node: NodeID) {
        refusedAnswer(refusal.reason.rawValue, "anti-entropy: \(refusal.detail)", from: node)
    }

    let finishingRestore = NIOLockedValueBox(false)

    /// A restored store waits until a stream from every peer has begun since this node
    /// started and has applied all the peer had (Restore.swift): then its clock has seen
    /// every stamp of its own a peer holds, and its numbers index every number they hold.
    func finishRestoreIfCaughtUp() {
        guard store.restorePending else { return }
        let behind = links.filter { $0.protocolVersion == nil || $0.behindSince != nil || !$0.connected }
        guard behind.isEmpty else { return }
        guard finishingRestore.withLockedValue({ f in defer { f = true }; return !f }) else { return }
        Task {
            do {
                try await store.finishRestore()
                logger.notice("restored store caught up with every peer: taking local writes again",
                              metadata: ["peers": "\(peers.count)"])
            } catch {
                logger.error("could not end the wait after a restore", metadata: ["error": "\(error)"])
            }
            finishingRestore.withLockedValue { $0 = false }
        }
    }

    /// What the session says of the link, in its status.
    func record(_ event: PullLinkEvent, from node: NodeID) {
        defer { if store.restorePending { finishRestoreIfCaughtUp() } }
        let now = Date()
        switch event {
        case .connected:
            update(node) { $0.connected = true; $0.lastError = nil }
        case .header(let resumeAfter, let last, let reset, let resync, let version, let capabilities):
            if let resync {
                logger.notice("peer cannot resume from our checkpoint", metadata: [
                    "peer": "\(node)", "reason": "\(resync.reason.rawValue)",
                    "checkpoint": "\(resync.checkpointSequence)", "resumedAfter": "\(resync.resumedAfter)"])
            }
            update(node) { s in
                if let resync {
                    s.resync = .init(reason: resync.reason == .checkpointReset ? .checkpointReset : .peerRewound, at: now,
                                     checkpointSequence: resync.checkpointSequence, resumedAfter: resync.resumedAfter)
                }
                s.peerSequence = last
                s.protocolVersion = version
                s.capabilities = capabilities
                if reset { s.appliedSequence = 0 }
                if last > resumeAfter { s.behindSince = s.behindSince ?? now } else { s.behindSince = nil; s.lastSuccess = now }
            }
        case .heartbeat(let peerSequence, let offset):
            if let offset, abs(offset) > store.configuration.maxClockSkew / 2 {
                logger.warning("peer clock far from ours", metadata: [
                    "peer": "\(node)", "offsetMillis": "\(offset)", "maxSkewMillis": "\(store.configuration.maxClockSkew)"])
            }
            update(node) { s in
                if let offset { s.clockOffsetMillis = offset }
                s.peerSequence = max(s.peerSequence, peerSequence)
                if s.appliedSequence >= s.peerSequence { s.behindSince = nil; s.lastSuccess = now }
            }
        case .applied(let records, let through, let sourceLast):
            metrics.recordsReceived.increment(by: records)
            update(node) { s in
                s.appliedSequence = through
                s.peerSequence = max(s.peerSequence, sourceLast)
                s.recordsReceived += records
                s.lastSuccess = now
                if through >= s.peerSequence { s.behindSince = nil } else { s.behindSince = s.behindSince ?? now }
            }
        }
    }

    private func pullLoop(_ peer: PeerAddress) async {
        var backoff = Backoff()
        var rng = SystemRandomNumberGenerator()
        while !Task.isCancelled {
            let (reason, applied): (PullCloseReason, Bool)
            do {
                (reason, applied) = try await runStream(peer)
            } catch is CancellationError {
                break
            } catch {
                (reason, applied) = (ReplicationConnection.refused(error) ? .notListening("\(error)") : .transportFailed("\(error)"), false)
            }
            update(peer.node) { $0.lastError = reason.description; $0.connected = false }
            logger.debug("pull ended", metadata: ["peer": "\(peer.node)", "reason": "\(reason)"])
            let delay = backoff.delay(after: reason, appliedAny: applied, using: &rng)
            try? await Task.sleep(for: delay)
        }
    }

    /// One connection and one pull stream; returns why it ended and whether anything was applied.
    private func runStream(_ peer: PeerAddress) async throws -> (PullCloseReason, Bool) {
        let (channel, multiplexer) = try await ReplicationConnection.open(peer, tls: tls, group: group)
        defer { channel.close(promise: nil) }
        let checkpoint = try store.checkpoint(for: peer.node)
        let done = channel.eventLoop.makePromise(of: (PullCloseReason, Bool).self)
        do {
            _ = try await multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
                    try stream.pipeline.syncOperations.addHandlers([
                        ResponseStatusCheck(), HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .https),
                        PullStream(replicator: self, peer: peer, checkpoint: checkpoint, done: done),
                    ])
                }
            }.get()
        } catch {
            done.fail(error)
            throw error
        }
        return try await withTaskCancellationHandler {
            try await done.futureResult.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}
