import CaseModel
import CaseStore
import CMalloc
import Foundation
import NIOCore
import NIOHTTP1
import Replication
import Wire

/// The puller's side of one stream. The protocol's decisions are `PullSession`'s
/// (Sources/Replication/Session): this handler decodes frames (each record decoded and
/// checked on its own, on this event loop, while the previous merge commits), feeds
/// them to the session, and carries out its actions: the request, reads (the
/// flow-control lever), merges, link status, close.
final class PullStream: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let replicator: Replicator
    let peer: PeerAddress
    let checkpoint: Checkpoint?
    let done: EventLoopPromise<(PullCloseReason, Bool)>
    private var session: PullSession<RemoteRecord>
    private var decoder: FrameDecoder
    private var timer = SessionTimer()
    private var context: ChannelHandlerContext?

    /// Most records gathered into one merge (one transaction, one fsync).
    static let mergeRecords = 4096
    /// A merge at least this large is catch-up: afterwards the allocator gives back what
    /// it freed. Records are decoded on this loop and merged on the commit thread, and
    /// glibc keeps what each thread's arena freed: without this a node catching up a
    /// million tickets held 480 MiB it no longer used, with it about 100 MiB (`make bench`).
    static let releaseMemoryAfter = 1024
    /// A batch without changes (a partner's scope holds nothing of what the peer wrote)
    /// only moves the checkpoint: it is written at most this often, not once per batch.
    /// Otherwise every commit of every centre cost each linked partner a durable commit
    /// (`make bench`, fan-in: 54 fsyncs per transfer across 20 regions). Losing such a
    /// move to a crash costs nothing but reading the same out-of-scope range again.
    static let quietCheckpointInterval: TimeAmount = .seconds(10)
    private var lastCheckpointWrite = NIODeadline.distantPast

    init(replicator: Replicator, peer: PeerAddress, checkpoint: Checkpoint?, done: EventLoopPromise<(PullCloseReason, Bool)>) {
        self.replicator = replicator
        self.peer = peer
        self.checkpoint = checkpoint
        self.done = done
        var configuration = PullSession<RemoteRecord>.Configuration(peer: peer.node, protocolVersion: ReplicationProtocol.version,
                                                                    mergeLimit: PullStream.mergeRecords)
        configuration.capabilities = ReplicationProtocol.capabilities
        session = PullSession(configuration: configuration)
        let store = replicator.store
        decoder = FrameDecoder(reading: RecordReading(kinds: store.kinds,
                                                      check: CheckContext(directory: store.configuration.directory)))
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelActive(context: ChannelHandlerContext) {
        let start = checkpoint.map { FeedCheckpoint(sourceStoreID: $0.sourceStoreID, sequence: $0.sequence, capabilities: $0.capabilities) }
        run(session.start(checkpoint: start, now: SessionTimer.now()))
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            run(session.responseHead(status: Int(h.status.code), now: SessionTimer.now()))
        case .body(let chunk):
            replicator.metrics.bytesReceived.increment(by: chunk.readableBytes)
            decoder.append(chunk.readableBytesView)
            decodeAvailable()
        case .end:
            decodeAvailable()
            run(session.streamEnded())
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        run(session.readComplete(now: SessionTimer.now()))
    }

    /// Feeds whole frames to the session while it takes them (not while the merge
    /// being gathered is full: the bytes wait in the decoder, and reading stops).
    private func decodeAvailable() {
        while session.acceptsFrames {
            let frame: IncomingFrame?
            do { frame = try decoder.next() } catch {
                run(session.undecodable("\(error)"))
                return
            }
            guard let frame else { return }
            let now = SessionTimer.now()
            switch frame {
            case .header(let h):
                run(session.header(node: h.node, storeID: Array(h.storeID), resumeAfter: h.resumeAfter,
                                   checkpointReset: h.checkpointReset, lastSequence: h.lastSequence,
                                   protocolVersion: h.protocolVersion, capabilities: h.capabilities, now: now))
            case .batch(let b):
                run(session.batch(sequences: b.sequences, through: b.throughSequence, sourceLast: b.sourceLastSequence,
                                  payloads: b.records, now: now))
            case .heartbeat(let hb):
                run(session.heartbeat(sourceLastSequence: hb.sourceLastSequence, sourceStamp: Stamp(raw: hb.sourceStamp),
                                      localWallMillis: replicator.store.configuration.wallClock(), now: now))
            case .error(let e):
                var error = SessionError(SessionError.Code(wireValue: e.code.rawValue), PeerText.shown(e.message))
                if e.code == .protocolVersionMismatch { error.supportedVersions = e.minProtocolVersion...max(e.minProtocolVersion, e.maxProtocolVersion) }
                run(session.errorFrame(error))
            case .unknown:
                continue
            }
        }
    }

    private func run(_ actions: [PullSession<RemoteRecord>.Action]) {
        guard let context else { return }
        for action in actions {
            switch action {
            case .sendRequest(let checkpoint, let maxBatch, let version):
                sendRequest(context, checkpoint, maxBatch, version)
            case .read:
                context.read()
            case .resumeDecoding:
                decodeAvailable()
            case .submitMerge(let g):
                submit(context, g)
            case .linkEvent(let e):
                replicator.record(e, from: peer.node)
            case .close(let reason, let applied):
                // What the peer sent broke the protocol: counted on the link as a refusal too.
                if case .protocolViolation(let why) = reason { replicator.refusedAnswer("protocol_violation", why, from: peer.node) }
                if case .undecodable(let why) = reason { replicator.refusedAnswer("malformed_answer", why, from: peer.node) }
                timer.cancel()
                done.succeed((reason, applied))
                context.close(promise: nil)
                return
            }
        }
        schedule(context)
    }

    private func sendRequest(_ context: ChannelHandlerContext, _ checkpoint: FeedCheckpoint?, _ maxBatch: UInt32, _ version: UInt32) {
        var request = WirePullRequest()
        request.protocolVersion = version
        request.maxBatch = maxBatch
        request.capabilities = session.configuration.capabilities.names
        if let checkpoint {
            var c = WireCheckpoint()
            c.sourceStoreID = Data(checkpoint.sourceStoreID)
            c.sequence = checkpoint.sequence
            c.capabilities = checkpoint.capabilities
            request.checkpoint = c
        }
        let body = (try? WireCoding.serialize(request)) ?? []
        var headers: HTTPHeaders = ["content-type": ReplicationProtocol.requestContentType, "content-length": String(body.count)]
        headers.add(name: "host", value: "\(peer.host):\(peer.port)")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http2, method: .POST,
                                                            uri: ReplicationProtocol.pullPath, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// Hands the gathered batches to the store as one merge; the next one is gathered meanwhile.
    private func submit(_ context: ChannelHandlerContext, _ g: PullSession<RemoteRecord>.Gathered) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let now = NIODeadline.now()
        if g.payloads.isEmpty && now - lastCheckpointWrite < PullStream.quietCheckpointInterval {
            // Nothing to merge: the link's position moves in memory (the session's applied
            // mark and the link status), the stored checkpoint with the next write.
            loop.execute { bound.value.run(bound.value.session.mergeCommitted(now: SessionTimer.now())) }
            return
        }
        lastCheckpointWrite = now
        let replicator = self.replicator
        let node = peer.node
        let batch = RemoteBatch(peer: node, sourceStoreID: g.sourceStoreID, throughSequence: g.through, records: g.payloads,
                                capabilities: g.capabilities.names)
        let large = g.payloads.count >= PullStream.releaseMemoryAfter
        replicator.store.submit(.merge(batch), actor: .system) { result in
            loop.execute {
                // The batch's last reference is dropped here, on the event loop: freeing
                // thousands of records is not the commit thread's work.
                withExtendedLifetime(batch) {}
                if large { malloc_trim(0) }
                let handler = bound.value
                switch result {
                case .success(.merged(let report)):
                    replicator.booked(report, from: node)
                    handler.run(handler.session.mergeCommitted(now: SessionTimer.now()))
                case .success:
                    handler.run(handler.session.mergeFailed("the store returned no merge report"))
                case .failure(let e):
                    handler.run(handler.session.mergeFailed("\(e)"))
                }
            }
        }
    }

    /// One timer, at the session's next deadline.
    private func schedule(_ context: ChannelHandlerContext) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer.set(session.nextTick, on: context.eventLoop) {
            let handler = bound.value
            handler.timer.fired()
            handler.run(handler.session.tick(now: SessionTimer.now()))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        run(session.connectionClosed())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        run(session.transportFailed("\(error)"))
    }
}
