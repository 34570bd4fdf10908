import CaseModel
import CaseStore
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Replication
import Wire

/// Serves one pull stream (one HTTP/2 stream of a mutually authenticated connection).
/// The protocol's decisions are `FeedSession`'s (Sources/Replication/Session): this
/// handler turns channel events into session events, and carries out the actions the
/// session returns: reading feed pages, writing frames, heartbeats, served marks.
final class FeedSender: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let store: CaseStore
    private let peer: NodeID?
    private let allowed: Bool
    /// The peer's organisation: what of the feed it receives is decided by it (its own
    /// organisation's nodes receive everything, others their scope; proto/README.md §9). An
    /// unidentified peer's scope names no organisation and holds nothing.
    private let partner: String
    private let metrics: ReplicationMetrics
    private let logger: Logger
    private var session = FeedSession(configuration: .init(
        pullPath: ReplicationProtocol.pullPath, supportedVersions: ReplicationProtocol.supportedVersions,
        defaultBatch: Int(ReplicationProtocol.defaultBatchChanges), maxBatch: Int(ReplicationProtocol.maxBatchChanges),
        maxRequestBytes: ReplicationProtocol.maxRequestBytes, capabilities: ReplicationProtocol.capabilities,
        release: Release.name, firstReleases: ReplicationProtocol.firstReleases))
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var bodyRefused = false
    private var observer: Int?
    /// How far the puller said it holds the feed when this stream began.
    private var acknowledgedThrough: UInt64 = 0
    /// How far this stream has sent the feed.
    private var sentThrough: UInt64 = 0
    private var timer = SessionTimer()
    private var context: ChannelHandlerContext?
    /// What this stream speaks beyond the base protocol (proto/README §8.1): parts of
    /// other capabilities are left out of its pages.
    private var link: Capabilities = .base

    init(store: CaseStore, peer: NodeID?, allowed: Bool, metrics: ReplicationMetrics, logger: Logger) {
        self.store = store
        self.peer = peer
        self.allowed = allowed
        self.partner = peer.flatMap { store.configuration.directory.org($0) } ?? ""
        self.metrics = metrics
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body(let chunk):
            guard !bodyRefused else { return }
            guard body.count + chunk.readableBytes <= ReplicationProtocol.maxRequestBytes else {
                bodyRefused = true
                if let h = head, AntiEntropyResponder.handles(h.uri) {
                    answer(context, h, AntiEntropyResponder.bodyTooLarge(path: h.uri))
                } else {
                    run(session.requestBodyTooLarge())
                }
                return
            }
            body += chunk.readableBytesView
        case .end:
            guard !bodyRefused, let h = head else { return }
            if AntiEntropyResponder.handles(h.uri) {
                answerAntiEntropy(context, h)
                return
            }
            run(session.requestReceived(request(h), store: facts(), now: SessionTimer.now()))
        }
    }

    /// The request as the session checks it. A pull at another version's path is a
    /// pull in that version, refused as a version mismatch rather than an unknown path.
    private func request(_ h: HTTPRequestHead) -> FeedSession.Request {
        var path = h.uri
        if ReplicationProtocol.otherVersionPaths.contains(path) { path = ReplicationProtocol.pullPath }
        let parsed: FeedSession.Request.Body
        do {
            let r = try WireCoding.parse(WirePullRequest.self, from: body)
            let checkpoint = r.hasCheckpoint && !(r.checkpoint.sourceStoreID.isEmpty && r.checkpoint.sequence == 0)
                ? FeedCheckpoint(sourceStoreID: Array(r.checkpoint.sourceStoreID), sequence: r.checkpoint.sequence,
                                 capabilities: r.checkpoint.capabilities) : nil
            parsed = .pull(.init(protocolVersion: r.protocolVersion, checkpoint: checkpoint, maxBatch: r.maxBatch,
                                 capabilities: r.capabilities))
        } catch {
            parsed = .undecodable("\(error)")
        }
        return .init(method: h.method.rawValue, path: path, peer: peer, peerAllowed: allowed, body: parsed)
    }

    private func facts() -> FeedSession.StoreFacts {
        let served = peer.flatMap { (try? store.served(to: $0)) ?? nil }
        return .init(storeID: store.storeIDBytes, lastSequence: store.lastSequence, served: served,
                     // Unreadable: as if every part came first, so a link resends rather than skip one.
                     capabilitySince: (try? store.capabilitySince()) ?? store.capabilitiesFromTheStart)
    }

    // MARK: Actions

    /// Carries out `actions` in order; an action that produces events feeds their
    /// actions back in the same loop.
    private func run(_ actions: [FeedSession.Action]) {
        guard let context else { return }
        var queue = actions[...]
        while let action = queue.popFirst() {
            switch action {
            case .refuse(let e):
                refuse(context, e)
            case .beginStream(let resume, let last, let version, let link):
                self.link = link
                if let peer { store.noteLink(peer, speaks: link) }
                if resume.checkpointReset { logger.notice("checkpoint reset", metadata: ["peer": "\(peer?.value ?? "?")"]) }
                // The puller resumes after its checkpoint: it holds the feed that far.
                acknowledgedThrough = resume.checkpointReset ? 0 : resume.resumeAfter
                if let peer, !resume.checkpointReset, store.acknowledged(by: peer, through: resume.resumeAfter) {
                    let store = self.store
                    Task { try? await store.releaseHeldPurges() }
                }
                if resume.rewound {
                    logger.notice("peer is ahead of what this store served it; resending",
                                  metadata: ["peer": "\(peer?.value ?? "?")", "resumeAfter": "\(resume.resumeAfter)"])
                }
                var headers: HTTPHeaders = ["content-type": ReplicationProtocol.responseContentType]
                headers.add(name: "cache-control", value: "no-store")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head?.version ?? .http2, status: .ok, headers: headers))),
                              promise: nil)
                send(context, .header(node: store.configuration.node, storeID: store.storeIDBytes, resumeAfter: resume.resumeAfter,
                                      checkpointReset: resume.checkpointReset, lastSequence: last, protocolVersion: version))
                sendHeartbeat(context)
                context.flush()
                let loop = context.eventLoop
                let bound = NIOLoopBound(self, eventLoop: loop)
                observer = store.observeCommits { loop.execute { bound.value.run(bound.value.session.feedCommitted()) } }
                metrics.streamsServed.increment()
            case .sendPage(let after, let limit):
                queue += sendPage(context, after: after, limit: limit)
            case .sendHeartbeat:
                // A purge waits for the peer's organisation to hold what this stream sent:
                // the stream is renewed, so that the peer's next request says how far it
                // holds the feed. Only at a heartbeat (the stream idle for its interval), so
                // the peer has merged what it was sent; ended right after the last batch,
                // the peer would drop batches still waiting to merge, and come back for them.
                if let peer, store.purgeWaits(forOrganisationOf: peer, sentThrough: sentThrough, acknowledged: acknowledgedThrough) {
                    queue += session.renew()
                    continue
                }
                sendHeartbeat(context)
                context.flush()
                // A held purge whose release failed (a full disk) is tried again.
                if store.heldPurgeReleasable {
                    let store = self.store
                    Task { try? await store.releaseHeldPurges() }
                }
            case .noteServed(let through):
                if let peer { store.noteServed(peer, through: through) }
            case .persistServed:
                let store = self.store
                Task { await store.persistServed() }
            case .finish(let e):
                send(context, .error(wire(e)))
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case .endStream:
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case .stopObserving:
                stopObserving()
            }
        }
        schedule(context)
    }

    /// Reads a page of the feed and writes it as frames of about 1 MiB while the
    /// stream takes them; what is left of the page is read again next time.
    private func sendPage(_ context: ChannelHandlerContext, after: UInt64, limit: Int) -> [FeedSession.Action] {
        let page: FeedPage
        do {
            page = try store.feedPage(after: after, limit: limit, partner: partner, link: link)
        } catch {
            return session.readFailed("\(error)")
        }
        if !page.skipped.isEmpty { reportSkipped(page.skipped) }
        let entries = page.entries.map { (sequence: $0.sequence, delta: $0.delta) }
        var next = 0
        var firstFrame = 0
        var through: UInt64?
        while next < entries.count && (next == 0 || context.channel.isWritable) {
            let frame = BatchFrames.next(entries, from: &next, sourceLastSequence: page.lastSequence)
            if firstFrame == 0 { firstFrame = frame.count }
            metrics.bytesSent.increment(by: frame.bytes.count)
            metrics.recordsSent.increment(by: frame.count)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: frame.bytes)))), promise: nil)
            through = frame.through
        }
        // Past the page's last entry lie only gaps or entries out of the peer's scope:
        // a batch without changes moves its position there.
        if next == entries.count, page.readThrough > (through ?? after) {
            let bytes = BatchFrames.empty(through: page.readThrough, sourceLastSequence: page.lastSequence)
            metrics.bytesSent.increment(by: bytes.count)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
            through = page.readThrough
        }
        if through != nil { context.flush() }
        if let through { sentThrough = max(sentThrough, through) }
        return session.pageSent(through: through, entriesRead: entries.count, firstFrameEntries: firstFrame,
                                writable: context.channel.isWritable, now: SessionTimer.now())
    }

    /// Entries of the page that could not be encoded: left out so that the link goes on
    /// (the peer's anti-entropy brings the records), and said in the log, the metrics
    /// and the replication endpoint, since the store needs a look (`ekc store verify`).
    private func reportSkipped(_ skipped: [FeedPage.Skip]) {
        let who = peer ?? NodeID(trusted: "unidentified")
        store.noteSkipped(who, skipped)
        metrics.skipped(peer: who, count: skipped.count)
        for s in skipped.prefix(3) {
            logger.error("feed entry left out of a page: it cannot be encoded", metadata: [
                "peer": "\(who.value)", "sequence": "\(s.sequence)", "kind": "\(s.kind.rawValue)", "id": "\(s.id)",
                "reason": "\(s.reason)", "more": "\(skipped.count - 1)"])
        }
    }

    /// Our last sequence and our clock (wall time as an HLC stamp), for the puller's
    /// lag and clock-offset figures.
    private func sendHeartbeat(_ context: ChannelHandlerContext) {
        send(context, .heartbeat(sourceLastSequence: store.lastSequence,
                                 sourceStamp: Stamp(millis: store.configuration.wallClock(), logical: 0)))
    }

    private func send(_ context: ChannelHandlerContext, _ frame: WireFrame) {
        guard let bytes = try? WireCoding.delimited(frame) else { return }
        metrics.bytesSent.increment(by: bytes.count)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
    }

    private func wire(_ e: SessionError) -> WireStreamError {
        var w = WireStreamError(WireStreamError.Code(rawValue: e.code.wireValue) ?? .internal, e.message)
        if let v = e.supportedVersions {
            w.minProtocolVersion = v.lowerBound
            w.maxProtocolVersion = v.upperBound
        }
        return w
    }

    /// An error found before streaming: an HTTP status with one error frame as the body.
    private func refuse(_ context: ChannelHandlerContext, _ e: SessionError) {
        logger.warning("pull refused", metadata: ["peer": "\(peer?.value ?? "unidentified")", "reason": "\(e.message)"])
        var f = WireFrame()
        f.error = wire(e)
        let bytes = (try? WireCoding.delimited(f)) ?? []
        let head = HTTPResponseHead(version: head?.version ?? .http2, status: HTTPResponseStatus(statusCode: e.httpStatus),
                                    headers: ["content-type": ReplicationProtocol.responseContentType,
                                              "content-length": String(bytes.count)])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// A digest or records request (anti-entropy): one answer, then the stream ends.
    private func answerAntiEntropy(_ context: ChannelHandlerContext, _ h: HTTPRequestHead) {
        answer(context, h, AntiEntropyResponder.answer(method: h.method.rawValue, path: h.uri, body: body, allowed: allowed,
                                                       partner: partner, store: store,
                                                       link: peer.flatMap { store.linkSpoken(by: $0) } ?? .base))
    }

    private func answer(_ context: ChannelHandlerContext, _ h: HTTPRequestHead, _ reply: AntiEntropyResponder.Reply) {
        if reply.status >= 400 {
            logger.warning("anti-entropy request refused", metadata: [
                "peer": "\(peer?.value ?? "unidentified")", "path": "\(h.uri)", "status": "\(reply.status)",
                "reason": "\(String(decoding: reply.body.prefix(300), as: UTF8.self))"])
        }
        metrics.bytesSent.increment(by: reply.body.count)
        let head = HTTPResponseHead(version: h.version, status: HTTPResponseStatus(statusCode: reply.status),
                                    headers: ["content-type": reply.contentType, "content-length": String(reply.body.count)])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: reply.body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
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

    private func stopObserving() {
        if let o = observer { store.removeCommitObserver(o); observer = nil }
        timer.cancel()
    }

    // MARK: Channel events

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        run(session.writabilityChanged(context.channel.isWritable))
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        run(session.channelClosed())
        stopObserving()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        run(session.channelClosed())
        stopObserving()
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        run(session.channelClosed())
        stopObserving()
        context.close(promise: nil)
    }
}
