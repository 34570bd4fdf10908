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
    public var rejectedWrites = 0

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
final class PullStream: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let replicator: Replicator
    let peer: PeerAddress
    let checkpoint: Checkpoint?
    let done: EventLoopPromise<Bool>
    private var decoder = FrameDecoder()
    private var status: HTTPResponseStatus?
    private var sourceStoreID: [UInt8]?
    private var position: UInt64 = 0
    private var merging = false
    private var applied = false
    private var finished = false
    private var lastHeard = NIODeadline.now()
    private var idleCheck: RepeatedTask?
    /// A frame read while gathering batches that was not a batch: handled next.
    private var held: WireFrame?
    /// Consecutive batches already received are merged together (one transaction, one
    /// fsync) up to this many tickets, so a sender's many small batches don't queue up
    /// behind one commit each.
    private static let coalesceTickets = 4096

    init(replicator: Replicator, peer: PeerAddress, checkpoint: Checkpoint?, done: EventLoopPromise<Bool>) {
        self.replicator = replicator
        self.peer = peer
        self.checkpoint = checkpoint
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        var request = WirePullRequest()
        request.protocolVersion = ReplicationProtocol.version
        if let checkpoint {
            var c = Ekc_Replication_V1_Checkpoint()
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
        if !merging && !finished { context.read() }
    }

    private func process(_ context: ChannelHandlerContext) {
        while !merging && !finished {
            let frame: WireFrame?
            do {
                if let h = held { frame = h; held = nil } else { frame = try decoder.next() }
            } catch {
                fail(context, "undecodable frame: \(error)")
                return
            }
            guard let frame else { return }
            if status != .ok {
                fail(context, frame.error.message.isEmpty ? "HTTP \(status?.code ?? 0)" : "\(frame.error.code): \(frame.error.message)")
                return
            }
            switch frame.kind {
            case .header(let h)?:
                guard h.node == peer.node.value else {
                    fail(context, "stream header names \(h.node), expected \(peer.node)")
                    return
                }
                sourceStoreID = Array(h.storeID)
                position = h.resumeAfter
                replicator.update(peer.node) { s in
                    s.peerSequence = h.lastSequence
                    if h.checkpointReset { s.appliedSequence = 0 }
                    if h.lastSequence > h.resumeAfter { s.behindSince = s.behindSince ?? Date() } else { s.behindSince = nil; s.lastSuccess = Date() }
                }
            case .batch(let b)?:
                var batches = [b]
                var count = b.changes.count
                do {
                    while count < PullStream.coalesceTickets, let f = try decoder.next() {
                        guard case .batch(let more)? = f.kind else { held = f; break }
                        batches.append(more)
                        count += more.changes.count
                    }
                } catch {
                    fail(context, "undecodable frame: \(error)")
                    return
                }
                apply(context, batches)
            case .heartbeat(let hb)?:
                replicator.update(peer.node) { s in
                    s.peerSequence = max(s.peerSequence, hb.sourceLastSequence)
                    if s.appliedSequence >= s.peerSequence { s.behindSince = nil; s.lastSuccess = Date() }
                }
            case .error(let e)?:
                fail(context, "\(e.code): \(e.message)")
            case nil:
                break
            }
        }
    }

    private func apply(_ context: ChannelHandlerContext, _ batches: [Ekc_Replication_V1_ChangeBatch]) {
        guard let storeID = sourceStoreID else { fail(context, "a batch before the stream header"); return }
        var after = position
        var tickets: [ReplicatedTicket] = []
        for batch in batches {
            do {
                try ReplicationProtocol.check(batch, after: after)
            } catch {
                fail(context, "invalid batch: \(error)")
                return
            }
            do {
                tickets += try batch.changes.map { c throws(WireError) in try ReplicatedTicket(wire: c.ticket) }
            } catch {
                fail(context, "undecodable ticket: \(error)")
                return
            }
            after = batch.throughSequence
        }
        merging = true
        let through = after
        let sourceLast = batches.map(\.sourceLastSequence).max() ?? 0
        let count = tickets.count
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let replicator = self.replicator
        let node = peer.node
        replicator.store.submit(.merge(RemoteBatch(peer: node, sourceStoreID: storeID, throughSequence: through, tickets: tickets)),
                                actor: .system) { result in
            loop.execute {
                let (handler, ctx) = bound.value
                handler.merging = false
                switch result {
                case .success(.merged(let report)):
                    handler.position = through
                    handler.applied = true
                    replicator.metrics.recordsReceived.increment(by: count)
                    if !report.rejections.isEmpty {
                        replicator.metrics.rejectedWrites.increment(by: report.rejections.count)
                        let quarantined = report.rejections.filter {
                            if case .stampTooFarAhead = $0.reason { return true } else { return false }
                        }.count
                        if quarantined > 0 { replicator.metrics.quarantinedStamps.increment(by: quarantined) }
                        replicator.logger.warning("rejected remote writes", metadata: [
                            "peer": "\(node)", "count": "\(report.rejections.count)",
                            "first": "\(report.rejections[0].reason)"])
                    }
                    replicator.update(node) { s in
                        s.appliedSequence = through
                        s.peerSequence = max(s.peerSequence, sourceLast)
                        s.recordsReceived += count
                        s.rejectedWrites += report.rejections.count
                        s.lastSuccess = Date()
                        if through >= s.peerSequence { s.behindSince = nil } else { s.behindSince = s.behindSince ?? Date() }
                    }
                    handler.process(ctx)
                    if !handler.merging && !handler.finished { ctx.read() }
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
