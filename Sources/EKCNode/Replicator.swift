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

/// A peer to pull from: its node id and replication address.
public struct PeerAddress: Sendable, Hashable {
    public let node: NodeID
    public let host: String
    public let port: Int
    public init(node: NodeID, host: String, port: Int) {
        self.node = node
        self.host = host
        self.port = port
    }
}

/// What `GET /v1/replication` and `ekc cluster health` report of one link.
public struct LinkStatus: Sendable {
    public var peer: NodeID
    public var address: String
    public var connected = false
    public var lastSuccess: Date?
    public var lastError: String?
    /// The peer's last sequence as it last told us.
    public var peerSequence: UInt64 = 0
    /// The last sequence of the peer's feed we have applied.
    public var appliedSequence: UInt64 = 0
    /// Since when we have been behind (nil when caught up).
    public var behindSince: Date?
    public var ourSequence: UInt64 = 0
    public var recordsReceived = 0
    /// Records, or parts of records, refused from this peer: by reason, and the latest.
    public var rejected = Rejected()

    public struct Rejected: Sendable {
        public var records = 0
        public var byReason: [String: Int] = [:]
        /// The latest 20, newest last.
        public var recent: [Entry] = []

        public struct Entry: Sendable {
            public var at: Date
            public var sequence: UInt64
            public var kind: String?
            public var id: String?
            public var reason: String
            public var detail: String
            public var whole: Bool
        }
    }
    /// The peer's clock minus ours, from its last heartbeat (network delay included);
    /// nil until a heartbeat has arrived.
    public var clockOffsetMillis: Int64?
    /// Numbers of tickets received from this peer that already named another ticket
    /// here (nodes configured with one number series, or a node restored from a copy
    /// reissuing numbers its lost tickets had); the latest 20. Both tickets stay
    /// reachable by id; the number names the one that had it here first.
    public var duplicateNumbers: [String] = []
    /// The last time the peer could not resume from our checkpoint.
    public var resync: Resync?

    /// Why a pull could not resume where this node's checkpoint said.
    public struct Resync: Sendable {
        public enum Reason: String, Sendable {
            /// The peer's store is not the one the checkpoint names, or is behind it
            /// (recreated, or restored without a new identity): the feed restarts from 0.
            case checkpointReset
            /// The peer remembers serving us less than we applied (restored from a copy):
            /// it resends from what it remembers, so nothing it wrote since is skipped.
            case peerRewound
        }
        public var reason: Reason
        public var at: Date
        public var checkpointSequence: UInt64
        public var resumedAfter: UInt64
    }

    public var lagRecords: UInt64 { peerSequence > appliedSequence ? peerSequence - appliedSequence : 0 }
    public func lagSeconds(now: Date) -> Double { behindSince.map { now.timeIntervalSince($0) } ?? 0 }
}

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

    /// Books a merge of `count` records through `through` of `node`'s feed.
    func merged(from node: NodeID, count: Int, through: UInt64, sourceLast: UInt64, report: MergeReport) {
        metrics.recordsReceived.increment(by: count)
        if !report.rejections.isEmpty {
            for r in report.rejections {
                metrics.rejected(peer: node, reason: r.refusal.reason.rawValue)
                if r.refusal.reason == .stampTooFarAhead { metrics.quarantinedStamps.increment() }
                // Each refusal is logged once, here, with its reason: the peer will not send it again.
                logger.warning("refused a record from a peer", metadata: [
                    "peer": "\(node)", "sequence": "\(r.sequence)", "kind": "\(r.kind.map { store.kinds[$0]?.name ?? "\($0)" } ?? "?")",
                    "id": "\(r.id?.description ?? "?")", "reason": "\(r.refusal.reason.rawValue)", "detail": "\(r.refusal.detail.prefix(300))",
                    "part": "\(r.whole ? "record" : "part")"])
            }
        }
        if !report.duplicateNumbers.isEmpty {
            metrics.duplicateNumbers.increment(by: report.duplicateNumbers.count)
            logger.error("received tickets whose numbers already name other tickets here", metadata: [
                "peer": "\(node)", "numbers": "\(report.duplicateNumbers.prefix(20).joined(separator: ","))"])
        }
        let kinds = store.kinds
        update(node) { s in
            if !report.duplicateNumbers.isEmpty { s.duplicateNumbers = Array((s.duplicateNumbers + report.duplicateNumbers).suffix(20)) }
            s.appliedSequence = through
            s.peerSequence = max(s.peerSequence, sourceLast)
            s.recordsReceived += count
            let now = Date()
            for r in report.rejections {
                s.rejected.records += 1
                s.rejected.byReason[r.refusal.reason.rawValue, default: 0] += 1
                s.rejected.recent.append(.init(at: now, sequence: r.sequence, kind: r.kind.map { kinds[$0]?.name ?? "\($0)" },
                                               id: r.id?.description, reason: r.refusal.reason.rawValue,
                                               detail: String(r.refusal.detail.prefix(500)), whole: r.whole))
            }
            if s.rejected.recent.count > 20 { s.rejected.recent.removeFirst(s.rejected.recent.count - 20) }
            s.lastSuccess = Date()
            if through >= s.peerSequence { s.behindSince = nil } else { s.behindSince = s.behindSince ?? Date() }
        }
    }

    private func pullLoop(_ peer: PeerAddress) async {
        var attempt = 0
        while !Task.isCancelled {
            do {
                let progressed = try await runStream(peer)
                if progressed { attempt = 0 }
            } catch is CancellationError {
                break
            } catch {
                update(peer.node) { $0.lastError = "\(error)"; $0.connected = false }
                logger.debug("pull failed", metadata: ["peer": "\(peer.node)", "error": "\(error)"])
            }
            update(peer.node) { $0.connected = false }
            // Jittered exponential backoff: 100 ms doubling to 5 s, ±50 %.
            let base = min(5_000.0, 100.0 * pow(2.0, Double(min(attempt, 6))))
            attempt += 1
            let delay = base * Double.random(in: 0.5...1.5)
            try? await Task.sleep(nanoseconds: UInt64(delay * 1_000_000))
        }
    }

    /// One connection and one pull stream; returns whether anything was applied.
    private func runStream(_ peer: PeerAddress) async throws -> Bool {
        let tls = self.tls
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                    try sync.addHandler(NodeIdentityHandler(expecting: peer.node))
                }
            }
            .connect(host: peer.host, port: peer.port).get()
        defer { channel.close(promise: nil) }
        let checkpoint = try store.checkpoint(for: peer.node)
        let multiplexer = try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: ReplicationWindows.connection, streamConfiguration: ReplicationWindows.stream
            ) { $0.eventLoop.makeSucceededVoidFuture() }
        }.get()
        let done = channel.eventLoop.makePromise(of: Bool.self)
        let stream: NIOCore.Channel
        do {
            stream = try await multiplexer.createStreamChannel { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
                try stream.pipeline.syncOperations.addHandlers([
                    HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .https),
                    PullStream(replicator: self, peer: peer, checkpoint: checkpoint, done: done),
                ])
            }
            }.get()
        } catch {
            done.fail(error)
            throw error
        }
        _ = stream
        return try await withTaskCancellationHandler {
            try await done.futureResult.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

/// The puller's side of one stream.
///
/// Receiving is pipelined: while one merge is being committed, the batches that keep
/// arriving are decoded and gathered into the next merge, which is submitted the
/// moment the first completes (so decoding on the event loop and committing on the
/// store's thread overlap, and a merge grows with the backlog). Reading stops once the
/// gathered merge is full, and HTTP/2 flow control then holds the sender back: per
/// link at most one merge in flight, one gathered, and the stream window are held.
final class PullStream: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    /// Batches decoded and checked, to be merged together in one transaction.
    struct Gathered {
        var records: [RemoteRecord] = []
        var through: UInt64 = 0
        var sourceLast: UInt64 = 0
    }

    let replicator: Replicator
    let peer: PeerAddress
    let checkpoint: Checkpoint?
    let done: EventLoopPromise<Bool>
    private var decoder: FrameDecoder
    private var status: HTTPResponseStatus?
    private var sourceStoreID: [UInt8]?
    /// The sequence the next batch must follow (the last one gathered or merged).
    private var expected: UInt64 = 0
    private var inFlight = false
    private var gathered: Gathered?
    private var applied = false
    private var finished = false
    private var lastHeard = NIODeadline.now()
    private var idleCheck: RepeatedTask?
    /// Most tickets gathered into one merge (one transaction, one fsync).
    static let mergeTickets = 4096

    init(replicator: Replicator, peer: PeerAddress, checkpoint: Checkpoint?, done: EventLoopPromise<Bool>) {
        self.replicator = replicator
        self.peer = peer
        self.checkpoint = checkpoint
        self.done = done
        let store = replicator.store
        decoder = FrameDecoder(reading: RecordReading(kinds: store.kinds,
                                                      check: CheckContext(directory: store.configuration.directory)))
    }

    private var full: Bool { (gathered?.records.count ?? 0) >= PullStream.mergeTickets }

    func channelActive(context: ChannelHandlerContext) {
        var request = WirePullRequest()
        request.protocolVersion = ReplicationProtocol.version
        if let checkpoint {
            var c = WireCheckpoint()
            c.sourceStoreID = Data(checkpoint.sourceStoreID)
            c.sequence = checkpoint.sequence
            request.checkpoint = c
        }
        let body = (try? WireCoding.serialize(request)) ?? []
        var headers: HTTPHeaders = ["content-type": ReplicationProtocol.requestContentType, "content-length": String(body.count)]
        headers.add(name: "host", value: "\(peer.host):\(peer.port)")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http2, method: .POST,
                                                            uri: ReplicationProtocol.pullPath, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            let (handler, ctx) = bound.value
            if NIODeadline.now() - handler.lastHeard > .seconds(15) {
                handler.fail(ctx, "no frame from \(handler.peer.node) for 15 s")
            }
        }
        context.read()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastHeard = .now()
        switch unwrapInboundIn(data) {
        case .head(let h):
            status = h.status
            if h.status == .ok { replicator.update(peer.node) { $0.connected = true; $0.lastError = nil } }
        case .body(let chunk):
            replicator.metrics.bytesReceived.increment(by: chunk.readableBytes)
            decoder.append(chunk.readableBytesView)
            process(context)
        case .end:
            if status != .ok { process(context) }
            fail(context, "the stream from \(peer.node) ended")
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !full && !finished { context.read() }
    }

    /// Decodes what has arrived until the gathered merge is full.
    private func process(_ context: ChannelHandlerContext) {
        while !finished && !full {
            let frame: IncomingFrame?
            do { frame = try decoder.next() } catch {
                fail(context, "undecodable frame: \(error)")
                return
            }
            guard let frame else { break }
            if status != .ok {
                if case .error(let e) = frame {
                    fail(context, e.message.isEmpty ? "HTTP \(status?.code ?? 0)" : "\(e.code): \(e.message)")
                } else {
                    fail(context, "HTTP \(status?.code ?? 0)")
                }
                return
            }
            switch frame {
            case .header(let h):
                guard h.node == peer.node.value else {
                    fail(context, "stream header names \(h.node), expected \(peer.node)")
                    return
                }
                guard h.protocolVersion == ReplicationProtocol.version else {
                    fail(context, "stream header is of protocol version \(h.protocolVersion), requested \(ReplicationProtocol.version)")
                    return
                }
                sourceStoreID = Array(h.storeID)
                expected = h.resumeAfter
                if let resync = PullStream.resync(checkpoint: checkpoint, header: h) {
                    replicator.logger.notice("peer cannot resume from our checkpoint", metadata: [
                        "peer": "\(peer.node)", "reason": "\(resync.reason.rawValue)",
                        "checkpoint": "\(resync.checkpointSequence)", "resumedAfter": "\(resync.resumedAfter)"])
                    replicator.update(peer.node) { $0.resync = resync }
                }
                replicator.update(peer.node) { s in
                    s.peerSequence = h.lastSequence
                    if h.checkpointReset { s.appliedSequence = 0 }
                    if h.lastSequence > h.resumeAfter { s.behindSince = s.behindSince ?? Date() } else { s.behindSince = nil; s.lastSuccess = Date() }
                }
            case .batch(let b):
                guard gather(context, b) else { return }
                if !inFlight { submit(context) }
            case .heartbeat(let hb):
                let offset: Int64? = hb.sourceStamp == 0 ? nil
                    : Stamp(raw: hb.sourceStamp).millis - replicator.store.configuration.wallClock()
                if let offset, abs(offset) > replicator.store.configuration.maxClockSkew / 2 {
                    replicator.logger.warning("peer clock far from ours", metadata: [
                        "peer": "\(peer.node)", "offsetMillis": "\(offset)",
                        "maxSkewMillis": "\(replicator.store.configuration.maxClockSkew)"])
                }
                replicator.update(peer.node) { s in
                    if let offset { s.clockOffsetMillis = offset }
                    s.peerSequence = max(s.peerSequence, hb.sourceLastSequence)
                    if s.appliedSequence >= s.peerSequence { s.behindSince = nil; s.lastSuccess = Date() }
                }
            case .error(let e):
                fail(context, "\(e.code): \(e.message)")
            case .unknown:
                break
            }
        }
    }

    /// What the stream header says about our checkpoint, if the peer could not honour it.
    static func resync(checkpoint: Checkpoint?, header h: WireStreamHeader) -> LinkStatus.Resync? {
        guard let c = checkpoint, c.sequence > 0 else { return nil }
        if h.checkpointReset {
            return .init(reason: .checkpointReset, at: Date(), checkpointSequence: c.sequence, resumedAfter: h.resumeAfter)
        }
        if h.resumeAfter < c.sequence {
            return .init(reason: .peerRewound, at: Date(), checkpointSequence: c.sequence, resumedAfter: h.resumeAfter)
        }
        return nil
    }

    /// Checks one batch's sequences and adds its records to the merge being gathered.
    private func gather(_ context: ChannelHandlerContext, _ batch: IncomingBatch) -> Bool {
        guard sourceStoreID != nil else { fail(context, "a batch before the stream header"); return false }
        guard batch.throughSequence > expected else {
            fail(context, "invalid batch: through_sequence \(batch.throughSequence) does not advance past \(expected)")
            return false
        }
        var previous = expected
        for r in batch.records {
            guard r.sequence > previous, r.sequence <= batch.throughSequence else {
                fail(context, "invalid batch: sequence \(r.sequence) is not in (\(previous), \(batch.throughSequence)]")
                return false
            }
            previous = r.sequence
        }
        var g = gathered ?? Gathered()
        g.records += batch.records
        g.through = batch.throughSequence
        g.sourceLast = max(g.sourceLast, batch.sourceLastSequence)
        gathered = g
        expected = batch.throughSequence
        return true
    }

    /// Hands the gathered batches to the store as one merge.
    private func submit(_ context: ChannelHandlerContext) {
        guard let g = gathered, let storeID = sourceStoreID else { return }
        gathered = nil
        inFlight = true
        let count = g.records.count
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let replicator = self.replicator
        let node = peer.node
        replicator.store.submit(.merge(RemoteBatch(peer: node, sourceStoreID: storeID, throughSequence: g.through, records: g.records)),
                                actor: .system) { result in
            loop.execute {
                let (handler, ctx) = bound.value
                handler.inFlight = false
                switch result {
                case .success(.merged(let report)):
                    handler.applied = true
                    replicator.merged(from: node, count: count, through: g.through, sourceLast: g.sourceLast, report: report)
                    guard !handler.finished else { return }
                    // The next merge starts at once; then reading resumes.
                    if handler.gathered != nil { handler.submit(ctx) }
                    handler.process(ctx)
                    if !handler.full && !handler.finished { ctx.read() }
                case .success:
                    handler.fail(ctx, "merge returned no report")
                case .failure(let e):
                    handler.fail(ctx, "merge failed: \(e)")
                }
            }
        }
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: String) {
        guard !finished else { return }
        finished = true
        idleCheck?.cancel()
        replicator.update(peer.node) { $0.lastError = reason; $0.connected = false }
        done.succeed(applied)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(context, "the connection to \(peer.node) closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context, "\(error)")
    }
}
