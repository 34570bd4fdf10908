import CaseModel
import CaseStore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Replication
import Wire

/// Serves one pull stream (one HTTP/2 stream of a mutually authenticated
/// connection): reads the PullRequest, answers with the stream header, sends the
/// feed after the puller's checkpoint in batches, then stays open and sends new
/// changes as they commit, with heartbeats when idle. A batch is written only while
/// the stream is writable, so HTTP/2 flow control paces the sender and a slow peer
/// never makes it buffer without bound.
final class FeedSender: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let store: CaseStore
    private let peer: NodeID
    private let allowed: Bool
    private let metrics: ReplicationMetrics
    private let logger: Logger
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var streaming = false
    private var position: UInt64 = 0
    private var batchLimit = 512
    /// Tickets read from the feed at a time: the batch limit, or fewer while tickets are
    /// long (about two frames' worth), so that long tickets are not decoded by the
    /// hundred only to be sent a few dozen at a time.
    private var pageLimit = 512
    private var observer: Int?
    private var heartbeat: RepeatedTask?
    private var lastSent = NIODeadline.now()
    private var pumping = false
    private var context: ChannelHandlerContext?

    init(store: CaseStore, peer: NodeID, allowed: Bool, metrics: ReplicationMetrics, logger: Logger) {
        self.store = store
        self.peer = peer
        self.allowed = allowed
        self.metrics = metrics
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body(let chunk):
            guard body.count + chunk.readableBytes <= ReplicationProtocol.maxRequestBytes else {
                refuse(context, .init(.badRequest, "the PullRequest exceeds \(ReplicationProtocol.maxRequestBytes) bytes"))
                return
            }
            body += chunk.readableBytesView
        case .end:
            guard !streaming, let h = head else { return }
            start(context, h)
        }
    }

    private func start(_ context: ChannelHandlerContext, _ h: HTTPRequestHead) {
        if h.method == .POST, ReplicationProtocol.otherVersionPaths.contains(h.uri) {
            refuse(context, ReplicationProtocol.mismatch(h.uri == "/replication/v1/pull" ? 1 : 0))
            return
        }
        guard h.method == .POST, h.uri == ReplicationProtocol.pullPath else {
            refuse(context, .init(.badRequest, "\(h.method.rawValue) \(h.uri): the replication endpoint is POST \(ReplicationProtocol.pullPath)"))
            return
        }
        guard allowed else {
            refuse(context, .init(.forbidden, "node \(peer) is not a replication peer of this node"))
            return
        }
        let request: WirePullRequest
        do {
            request = try WireCoding.parse(WirePullRequest.self, from: body)
        } catch {
            refuse(context, .init(.badRequest, "the body is not a PullRequest: \(error)"))
            return
        }
        if let e = ReplicationProtocol.check(request) {
            refuse(context, e)
            return
        }
        let last = store.lastSequence
        let served = (try? store.served(to: peer)) ?? nil
        let (resume, reset, rewound) = FeedSender.resumePoint(
            checkpoint: request.hasCheckpoint ? request.checkpoint : nil, storeID: store.storeIDBytes,
            lastSequence: last, served: served)
        if reset { logger.notice("checkpoint reset", metadata: ["peer": "\(peer)"]) }
        if rewound {
            logger.notice("peer is ahead of what this store served it; resending",
                          metadata: ["peer": "\(peer)", "served": "\(served ?? 0)"])
        }
        position = resume
        batchLimit = ReplicationProtocol.batchLimit(requested: request.maxBatch)
        pageLimit = batchLimit
        streaming = true
        var headers: HTTPHeaders = ["content-type": ReplicationProtocol.responseContentType]
        headers.add(name: "cache-control", value: "no-store")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: .ok, headers: headers))), promise: nil)
        send(context, .header(node: store.configuration.node, storeID: store.storeIDBytes, resumeAfter: resume,
                              checkpointReset: reset, lastSequence: last))
        // A first heartbeat at once, so the puller learns our clock before any idle period.
        sendHeartbeat(context)
        context.flush()
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        observer = store.observeCommits { loop.execute { bound.value.pump() } }
        heartbeat = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            bound.value.heartbeatIfIdle()
        }
        metrics.streamsServed.increment()
        pump()
    }

    /// Sends what the feed holds after `position` while the stream can take it.
    func pump() {
        guard streaming, !pumping, let context, context.channel.isActive else { return }
        pumping = true
        defer { pumping = false }
        while context.channel.isWritable {
            let page: FeedPage
            do {
                page = try store.feedPage(after: position, limit: pageLimit)
            } catch {
                finish(context, error: .init(.internal, "reading the feed failed: \(error)"))
                return
            }
            guard !page.entries.isEmpty else { break }
            // Frames of about 1 MiB each, however long the records, written while the
            // stream takes them; what is left of the page is read again next time.
            let entries = page.entries.map { (sequence: $0.sequence, delta: $0.delta) }
            var next = 0
            var firstFrame = 0
            repeat {
                let frame = BatchFrames.next(entries, from: &next, sourceLastSequence: page.lastSequence)
                if firstFrame == 0 { firstFrame = frame.count }
                metrics.bytesSent.increment(by: frame.bytes.count)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: frame.bytes)))), promise: nil)
                metrics.recordsSent.increment(by: frame.count)
                position = frame.through
            } while next < entries.count && context.channel.isWritable
            if firstFrame < entries.count {
                pageLimit = min(batchLimit, max(1, firstFrame * 2))
            } else if pageLimit < batchLimit {
                pageLimit = min(batchLimit, pageLimit * 2)
            }
            lastSent = .now()
            store.noteServed(peer, through: position)
            context.flush()
        }
    }

    private func heartbeatIfIdle() {
        guard streaming, let context, context.channel.isActive else { return }
        if NIODeadline.now() - lastSent >= .seconds(5) {
            let store = self.store
            Task { await store.persistServed() }
            sendHeartbeat(context)
            context.flush()
        }
        pump()
    }

    /// Our last sequence and our clock (wall time as an HLC stamp), for the puller's
    /// lag and clock-offset figures.
    private func sendHeartbeat(_ context: ChannelHandlerContext) {
        send(context, .heartbeat(sourceLastSequence: store.lastSequence,
                                 sourceStamp: Stamp(millis: store.configuration.wallClock(), logical: 0)))
    }

    static func resumePoint(checkpoint: WireCheckpoint?, storeID: [UInt8], lastSequence: UInt64, served: UInt64?)
        -> (UInt64, Bool, Bool)
    {
        var resume: UInt64 = 0, reset = false
        if let c = checkpoint, !(c.sourceStoreID.isEmpty && c.sequence == 0) {
            if Array(c.sourceStoreID) == storeID, c.sequence <= lastSequence { resume = c.sequence } else { reset = true }
        }
        let limit = served ?? 0
        return resume > limit ? (limit, reset, true) : (resume, reset, false)
    }

    private func send(_ context: ChannelHandlerContext, _ frame: WireFrame) {
        guard let bytes = try? WireCoding.delimited(frame) else { return }
        metrics.bytesSent.increment(by: bytes.count)
        lastSent = .now()
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
    }

    /// An error found before streaming: an HTTP status with one error frame as the body.
    private func refuse(_ context: ChannelHandlerContext, _ e: WireStreamError) {
        logger.warning("pull refused", metadata: ["peer": "\(peer)", "reason": "\(e.message)"])
        var f = WireFrame()
        f.error = e
        let bytes = (try? WireCoding.delimited(f)) ?? []
        let head = HTTPResponseHead(version: head?.version ?? .http2, status: HTTPResponseStatus(statusCode: e.httpStatus),
                                    headers: ["content-type": ReplicationProtocol.responseContentType,
                                              "content-length": String(bytes.count)])
        streaming = false
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    private func finish(_ context: ChannelHandlerContext, error: WireStreamError) {
        var f = WireFrame()
        f.error = error
        send(context, f)
        streaming = false
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
        self.context = nil
    }

    private func stop() {
        streaming = false
        if let o = observer { store.removeCommitObserver(o); observer = nil }
        heartbeat?.cancel()
        heartbeat = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        stop()
        context.close(promise: nil)
    }
}
