import CaseModel

/// A protocol error as a `StreamError` frame carries it (proto/README.md §7): sent by a
/// sender, before streaming with an HTTP status, after it as the stream's last frame.
public struct SessionError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable, CaseIterable {
        case protocolVersionMismatch, unauthenticated, forbidden, badRequest, `internal`, shuttingDown

        /// From the wire's enum number; UNSPECIFIED and unknown codes are INTERNAL (§7).
        public init(wireValue: Int) {
            switch wireValue {
            case 1: self = .protocolVersionMismatch
            case 2: self = .unauthenticated
            case 3: self = .forbidden
            case 4: self = .badRequest
            case 6: self = .shuttingDown
            default: self = .internal
            }
        }

        public var wireValue: Int {
            switch self {
            case .protocolVersionMismatch: 1
            case .unauthenticated: 2
            case .forbidden: 3
            case .badRequest: 4
            case .internal: 5
            case .shuttingDown: 6
            }
        }
    }

    public var code: Code
    public var message: String
    /// With `protocolVersionMismatch`: the versions the sender speaks (min/max_protocol_version).
    public var supportedVersions: ClosedRange<UInt32>?

    public init(_ code: Code, _ message: String, supportedVersions: ClosedRange<UInt32>? = nil) {
        self.code = code
        self.message = message
        self.supportedVersions = supportedVersions
    }

    /// The status a sender answers with when the error is found before streaming.
    public var httpStatus: Int {
        switch code {
        case .protocolVersionMismatch, .badRequest: 400
        case .unauthenticated: 401
        case .forbidden: 403
        case .shuttingDown: 503
        case .internal: 500
        }
    }

    public var description: String { "\(code): \(message)" }
}

/// The sender's side of one pull stream (proto/README.md §3–§5, §7), as a value: the
/// shell (an NIO handler) feeds it events and carries out the actions it returns, in
/// order. It never reads the feed, the clock or the channel itself.
///
/// A stream is served like this: once the request has ended, it is checked (route,
/// identity, peer, body, version, checkpoint) and either refused or begun; then the
/// feed after the resume point is sent page by page while the stream is writable (so
/// HTTP/2 flow control paces the sender and at most one page is held), the stream stays
/// open and each commit restarts the pump, and a heartbeat goes out whenever nothing
/// was sent for `heartbeatInterval`.
public struct FeedSession: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// The pull endpoint's path (`/replication/v1/pull`, `/replication/v2/pull`).
        public var pullPath: String
        /// The protocol versions this sender serves; a v2 node serves exactly 2...2.
        public var supportedVersions: ClosedRange<UInt32>
        public var timers: SessionTimers
        /// Changes per batch for `max_batch` 0, and the most ever sent (§3); at least 1.
        public let defaultBatch: Int
        public let maxBatch: Int
        /// The largest PullRequest body read (§3); named in the refusal.
        public var maxRequestBytes: Int
        /// The longest `checkpoint.source_store_id` accepted (§7).
        public var maxStoreIDBytes: Int
        /// What this build supports (§8.1); a link speaks its intersection with the puller's.
        public var capabilities: Capabilities
        /// This build's release and, per protocol version, the first release that speaks
        /// it: a version mismatch tells the people who run the puller what to install.
        public var release: String
        public var firstReleases: [UInt32: String]

        public init(pullPath: String, supportedVersions: ClosedRange<UInt32>, timers: SessionTimers = .protocolDefaults,
                    defaultBatch: Int = BatchSequence.defaultLimit, maxBatch: Int = BatchSequence.maximumLimit,
                    maxRequestBytes: Int = 64 << 10, maxStoreIDBytes: Int = 64, capabilities: Capabilities = .base,
                    release: String = "", firstReleases: [UInt32: String] = [:]) {
            self.pullPath = pullPath
            self.supportedVersions = supportedVersions
            self.capabilities = capabilities
            self.release = release
            self.firstReleases = firstReleases
            self.timers = timers
            self.maxBatch = max(1, maxBatch)
            self.defaultBatch = min(max(1, defaultBatch), self.maxBatch)
            self.maxRequestBytes = maxRequestBytes
            self.maxStoreIDBytes = maxStoreIDBytes
        }
    }

    /// What the shell knows once the request has ended.
    public struct Request: Sendable, Equatable {
        public var method: String
        public var path: String
        /// The node id of the verified client certificate; nil if none reached the handler.
        public var peer: NodeID?
        /// Whether the topology makes `peer` a replication peer of this node.
        public var peerAllowed: Bool
        public var body: Body

        public enum Body: Sendable, Equatable {
            case pull(PullRequest)
            /// The body did not parse as a PullRequest; why.
            case undecodable(String)
        }

        public init(method: String, path: String, peer: NodeID?, peerAllowed: Bool, body: Body) {
            self.method = method
            self.path = path
            self.peer = peer
            self.peerAllowed = peerAllowed
            self.body = body
        }
    }

    /// A decoded PullRequest (§3).
    public struct PullRequest: Sendable, Equatable {
        public var protocolVersion: UInt32
        public var checkpoint: FeedCheckpoint?
        public var maxBatch: UInt32
        /// The capabilities the puller advertised, as the wire had them (checked here).
        public var capabilities: [String]

        public init(protocolVersion: UInt32, checkpoint: FeedCheckpoint?, maxBatch: UInt32 = 0, capabilities: [String] = []) {
            self.protocolVersion = protocolVersion
            self.checkpoint = checkpoint
            self.maxBatch = maxBatch
            self.capabilities = capabilities
        }
    }

    /// What the store says when the request is checked.
    public struct StoreFacts: Sendable, Equatable {
        public var storeID: [UInt8]
        public var lastSequence: UInt64
        /// How far this store remembers serving the peer; nil if it has no record.
        public var served: UInt64?
        /// Per capability, the first sequence of this store's feed that held a part of it.
        public var capabilitySince: [String: UInt64]

        public init(storeID: [UInt8], lastSequence: UInt64, served: UInt64?, capabilitySince: [String: UInt64] = [:]) {
            self.storeID = storeID
            self.lastSequence = lastSequence
            self.served = served
            self.capabilitySince = capabilitySince
        }
    }

    public enum Action: Sendable, Equatable {
        /// Answer the request with `error.httpStatus`, a body of exactly this one error
        /// frame, and END_STREAM. Nothing else is ever sent on this stream.
        case refuse(SessionError)
        /// Write the 200 response head, the StreamHeader (`protocolVersion`, this node,
        /// the store id, `resume`, `lastSequence`, this build's capabilities) and a first
        /// heartbeat, so the puller learns our clock before any idle period; flush; start
        /// observing commits (each one is reported back as `feedCommitted`). Log a reset
        /// or a rewind. `link`: what the stream speaks (§8.1), shown per link.
        case beginStream(resume: ResumePoint, lastSequence: UInt64, protocolVersion: UInt32, link: Capabilities)
        /// Read up to `limit` feed entries after `after`, write them as batch frames of
        /// about 1 MiB while the stream stays writable, flush, and report how far it got
        /// with `pageSent` (or `readFailed`). Never asked for while another is out, nor
        /// while the machine believes the stream unwritable.
        case sendPage(after: UInt64, limit: Int)
        /// Write and flush a heartbeat: the store's last sequence and its wall clock as a stamp.
        case sendHeartbeat
        /// Record in memory that the peer has been sent the feed through this sequence.
        case noteServed(through: UInt64)
        /// Write the in-memory served marks to the store (off the event loop).
        case persistServed
        /// Write this final error frame, then END_STREAM (§4.6).
        case finish(SessionError)
        /// Stop observing commits; the stream is over.
        case stopObserving
        /// END_STREAM with no error frame: the puller reconnects at once (`renew`).
        case endStream
    }

    enum State: Sendable, Equatable {
        case awaitingRequest(AwaitingRequest)
        case streaming(Streaming)
        case finished
    }

    struct AwaitingRequest: Sendable, Equatable {
        var writable = true
    }

    struct Streaming: Sendable, Equatable {
        /// The last sequence written to the stream (or the resume point). Only grows.
        var position: UInt64
        var batchLimit: Int
        /// Entries read per page: the batch limit, or fewer while entries are long (about
        /// two frames' worth), so long tickets are not decoded by the hundred only to be
        /// sent a few dozen at a time.
        var pageLimit: Int
        var writable: Bool
        var pump: Pump
        var lastSent: MonotonicInstant
        /// Served marks noted since the last `persistServed`.
        var servedUnpersisted = false
    }

    /// Where reading the feed stands. A page in flight and "nothing left" cannot both hold.
    enum Pump: Sendable, Equatable {
        /// No page in flight; `drained`: the last read found nothing and nothing has
        /// committed since, so there is nothing to read until `feedCommitted`.
        case idle(drained: Bool)
        /// A `sendPage` is out; `commitSeen`: a commit arrived meanwhile, which the page
        /// may have missed, so an empty page does not mean drained.
        case reading(commitSeen: Bool)
    }

    public let configuration: Configuration
    private(set) var state: State = .awaitingRequest(AwaitingRequest())

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Whether the stream is over: every further event returns no action.
    public var isFinished: Bool { state == .finished }

    /// When the shell should call `tick` next (a one-shot timer replaces the old 1 s
    /// polling); nil while no timer is needed.
    public var nextTick: MonotonicInstant? {
        guard case .streaming(let s) = state else { return nil }
        return s.lastSent + configuration.timers.heartbeatInterval
    }

    // MARK: - Events

    /// The request has ended (END_STREAM from the puller): check it and begin or refuse.
    public mutating func requestReceived(_ request: Request, store: StoreFacts, now: MonotonicInstant) -> [Action] {
        switch state {
        case .awaitingRequest(let waiting):
            let pull: PullRequest
            let advertised: (link: Capabilities, earned: Capabilities)
            switch check(request) {
            case .failure(let error):
                state = .finished
                return [.refuse(error)]
            case .success(let p):
                (pull, advertised) = p
            }
            let link = configuration.capabilities.intersection(advertised.link)
            let resume = ResumePoint(checkpoint: pull.checkpoint, storeID: store.storeID,
                                     lastSequence: store.lastSequence, served: store.served)
                .holdingBack(link: link, earned: advertised.earned, since: store.capabilitySince)
            let limit = BatchSequence.limit(requested: pull.maxBatch, defaultLimit: configuration.defaultBatch,
                                            maximum: configuration.maxBatch)
            var s = Streaming(position: resume.resumeAfter, batchLimit: limit, pageLimit: limit,
                              writable: waiting.writable, pump: .idle(drained: false), lastSent: now)
            let page = s.pumpIfPossible()
            state = .streaming(s)
            return [.beginStream(resume: resume, lastSequence: store.lastSequence, protocolVersion: pull.protocolVersion,
                                 link: link)]
                + page
        case .streaming:
            // HTTP/2 carries one request per stream; a second one is a broken shell or peer.
            return close(.init(.badRequest, "a second request on a pull stream"))
        case .finished:
            return []
        }
    }

    /// The request body grew past `maxRequestBytes`; the shell stops reading it.
    public mutating func requestBodyTooLarge() -> [Action] {
        switch state {
        case .awaitingRequest:
            state = .finished
            return [.refuse(.init(.badRequest, "the PullRequest exceeds \(configuration.maxRequestBytes) bytes"))]
        case .streaming:
            return close(.init(.badRequest, "request body after the stream began"))
        case .finished:
            return []
        }
    }

    public mutating func writabilityChanged(_ writable: Bool) -> [Action] {
        switch state {
        case .awaitingRequest:
            state = .awaitingRequest(AwaitingRequest(writable: writable))
            return []
        case .streaming(var s):
            s.writable = writable
            let page = s.pumpIfPossible()
            state = .streaming(s)
            return page
        case .finished:
            return []
        }
    }

    /// The store committed something new to its feed.
    public mutating func feedCommitted() -> [Action] {
        guard case .streaming(var s) = state else { return [] }  // before the stream: not observed yet
        switch s.pump {
        case .idle: s.pump = .idle(drained: false)
        case .reading: s.pump = .reading(commitSeen: true)
        }
        let page = s.pumpIfPossible()
        state = .streaming(s)
        return page
    }

    /// The shell carried out `sendPage`: it read `entriesRead` entries (0: the feed holds
    /// nothing after the position), wrote frames through `through` (nil: none), the first
    /// frame holding `firstFrameEntries`; `writable` is the stream's state afterwards.
    public mutating func pageSent(through: UInt64?, entriesRead: Int, firstFrameEntries: Int, writable: Bool,
                                  now: MonotonicInstant) -> [Action] {
        switch state {
        case .awaitingRequest:
            state = .finished
            return [.refuse(.init(.internal, "a feed page was reported before the stream began"))]
        case .streaming(var s):
            guard case .reading(let commitSeen) = s.pump else {
                return close(.init(.internal, "a feed page was reported that was not asked for"))
            }
            var actions: [Action] = []
            if let through {
                guard through > s.position else {
                    return close(.init(.internal, "a feed page ended at \(through), not past \(s.position)"))
                }
                s.position = through
                s.lastSent = max(s.lastSent, now)
                s.servedUnpersisted = true
                actions.append(.noteServed(through: through))
            }
            if entriesRead > 0 && firstFrameEntries > 0 {
                // Entries that did not fit the first frame are long: read two frames' worth
                // next time; once a page fits one frame again, double back to the limit.
                if firstFrameEntries < entriesRead {
                    s.pageLimit = doubled(firstFrameEntries, cap: s.batchLimit)
                } else if s.pageLimit < s.batchLimit {
                    s.pageLimit = doubled(s.pageLimit, cap: s.batchLimit)
                }
            }
            s.writable = writable
            s.pump = .idle(drained: entriesRead == 0 && !commitSeen)
            actions += s.pumpIfPossible()
            state = .streaming(s)
            return actions
        case .finished:
            return []
        }
    }

    /// Reading the feed (or the store before the stream began) failed.
    public mutating func readFailed(_ message: String) -> [Action] {
        let error = SessionError(.internal, "reading the feed failed: \(message)")
        switch state {
        case .awaitingRequest:
            state = .finished
            return [.refuse(error)]
        case .streaming:
            return close(error)
        case .finished:
            return []
        }
    }

    /// Time passed: a heartbeat if nothing was sent for `heartbeatInterval`, with the
    /// served marks persisted (the stream is idle, a commit of their own costs nothing);
    /// and a page if one is possible and somehow not under way.
    public mutating func tick(now: MonotonicInstant) -> [Action] {
        guard case .streaming(var s) = state else { return [] }
        var actions: [Action] = []
        if now - s.lastSent >= configuration.timers.heartbeatInterval {
            if s.servedUnpersisted { actions.append(.persistServed) }
            s.servedUnpersisted = false
            actions.append(.sendHeartbeat)
            s.lastSent = now
        }
        actions += s.pumpIfPossible()
        state = .streaming(s)
        return actions
    }

    /// The node is shutting down gracefully (§7 SHUTTING_DOWN).
    public mutating func shuttingDown() -> [Action] {
        let error = SessionError(.shuttingDown, "this node is shutting down")
        switch state {
        case .awaitingRequest:
            state = .finished
            return [.refuse(error)]
        case .streaming:
            return close(error)
        case .finished:
            return []
        }
    }

    /// The shell wants the puller to say again how far it holds the feed (a purge waits
    /// for it: PurgeHold.swift in the store): the stream ends without an error, and the
    /// puller's next request carries its checkpoint. Only a begun stream is renewed.
    public mutating func renew() -> [Action] {
        guard case .streaming(let s) = state else { return [] }
        state = .finished
        return [.endStream, .stopObserving] + (s.servedUnpersisted ? [.persistServed] : [])
    }

    /// The stream or its connection closed (or failed) under us; nothing can be written.
    public mutating func channelClosed() -> [Action] {
        defer { state = .finished }
        guard case .streaming(let s) = state else { return [] }
        return [.stopObserving] + (s.servedUnpersisted ? [.persistServed] : [])
    }

    // MARK: - Rules

    /// The request checks of §3 and §7, in the order the reference handler made them.
    private func check(_ r: Request) -> Result<(PullRequest, (link: Capabilities, earned: Capabilities)), SessionError> {
        guard r.method == "POST", r.path == configuration.pullPath else {
            return .failure(.init(.badRequest, "\(r.method) \(r.path): the replication endpoint is POST \(configuration.pullPath)"))
        }
        guard let peer = r.peer else {
            return .failure(.init(.unauthenticated, "no verified client certificate with a urn:ekc:node: id"))
        }
        guard r.peerAllowed else { return .failure(.init(.forbidden, "node \(peer) is not a replication peer of this node")) }
        let pull: PullRequest
        switch r.body {
        case .undecodable(let why): return .failure(.init(.badRequest, "the body is not a PullRequest: \(why)"))
        case .pull(let p): pull = p
        }
        let versions = configuration.supportedVersions
        guard versions.contains(pull.protocolVersion) else {
            return .failure(.init(.protocolVersionMismatch, mismatch(pull.protocolVersion), supportedVersions: versions))
        }
        if let c = pull.checkpoint, c.sourceStoreID.count > configuration.maxStoreIDBytes {
            return .failure(.init(.badRequest, "checkpoint.source_store_id is longer than \(configuration.maxStoreIDBytes) bytes"))
        }
        // The same rule as for every feed position a peer states (the puller's side too).
        if let c = pull.checkpoint, let why = FeedPosition.check(c.sequence, "checkpoint.sequence") {
            return .failure(.init(.badRequest, why))
        }
        // What the puller supports, and what its checkpoint was reached with: one rule for both.
        let advertised: (link: Capabilities, earned: Capabilities)
        do {
            advertised = (try Capabilities(advertised: pull.capabilities, field: "capabilities"),
                          try Capabilities(advertised: pull.checkpoint?.capabilities ?? [], field: "checkpoint.capabilities"))
        } catch {
            return .failure(.init(.badRequest, error.description))
        }
        return .success((pull, advertised))
    }

    /// A version mismatch as the people who run the puller read it: what this node
    /// speaks, and what to install (§8: a peer two majors behind is refused).
    private func mismatch(_ asked: UInt32) -> String {
        let v = configuration.supportedVersions
        let speaks = v.lowerBound == v.upperBound ? "v\(v.lowerBound)" : "v\(v.lowerBound)–v\(v.upperBound)"
        let this = configuration.release.isEmpty ? "this node" : "this node (release \(configuration.release))"
        var message = "protocol version \(asked) is not supported; \(this) speaks \(speaks)"
        if asked < v.lowerBound {
            let first = configuration.firstReleases[v.lowerBound].map { "release \($0) or later" } ?? "a release that speaks v\(v.lowerBound)"
            message += ": upgrade the pulling node to \(first)"
        } else {
            message += ": the puller retries in a version both speak, or this node needs a release that speaks v\(asked)"
        }
        return message
    }

    /// Ends a begun stream with a final error frame.
    private mutating func close(_ error: SessionError) -> [Action] {
        guard case .streaming(let s) = state else { return [] }
        state = .finished
        return [.finish(error), .stopObserving] + (s.servedUnpersisted ? [.persistServed] : [])
    }
}

/// `min(cap, 2n)`, at least 1, without overflowing on counts a shell got wrong.
private func doubled(_ n: Int, cap: Int) -> Int {
    n > cap / 2 ? cap : max(1, n * 2)
}

extension FeedSession.Streaming {
    /// Asks for the next page if the stream can take one, none is out, and the feed may
    /// hold more: a sender never reads ahead of what it can write (§4.5).
    mutating func pumpIfPossible() -> [FeedSession.Action] {
        guard writable, pump == .idle(drained: false) else { return [] }
        pump = .reading(commitSeen: false)
        return [.sendPage(after: position, limit: pageLimit)]
    }
}
