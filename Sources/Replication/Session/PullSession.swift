import CaseModel

/// Why a pull stream closed. Every close names one; the reconnect loop shows it as the
/// link's last error and picks the next delay from it (`Backoff`).
public enum PullCloseReason: Sendable, Equatable, CustomStringConvertible {
    /// The sender answered with an HTTP error status, and the error frame of its body
    /// if one arrived before the stream ended (§7).
    case refused(status: Int, error: SessionError?)
    /// The sender ended a begun stream with a final error frame (e.g. SHUTTING_DOWN).
    case peerError(SessionError)
    /// The sender broke the protocol: a frame out of place, a wrong header, a bad batch.
    case protocolViolation(String)
    /// A frame that does not decode (§6.1: the batch is not partially applied).
    case undecodable(String)
    /// Nothing was heard for this long while we were listening (§4.4).
    case idleTimeout(Duration)
    /// END_STREAM without a final error frame, or before any response head (§4.6, §2).
    case streamEnded
    case connectionClosed
    /// The channel reported an error (TLS, HTTP/2, connect).
    case transportFailed(String)
    /// The peer's host refused the connection: nothing listens on its replication port
    /// yet (a node starting or restarting), so it is tried again soon (`Backoff`).
    case notListening(String)
    case mergeFailed(String)
    /// The shell fed an event that makes no sense in the session's state: a bug there,
    /// closed like any failure rather than trapping.
    case unexpectedEvent(String)

    public var description: String {
        switch self {
        case let .refused(status, error?): "HTTP \(status): \(error)"
        case let .refused(status, nil): "HTTP \(status)"
        case let .peerError(e): "\(e)"
        case let .protocolViolation(s): "protocol violation: \(s)"
        case let .undecodable(s): "undecodable frame: \(s)"
        case let .idleTimeout(d): "nothing heard for \(d)"
        case .streamEnded: "the stream ended without an error frame"
        case .connectionClosed: "the connection closed"
        case let .transportFailed(s): "transport failed: \(s)"
        case let .notListening(s): "the peer is not listening: \(s)"
        case let .mergeFailed(s): "merge failed: \(s)"
        case let .unexpectedEvent(s): "unexpected event: \(s)"
        }
    }
}

/// Why a pull could not resume where this node's checkpoint said (from the header).
public struct PullResync: Sendable, Equatable {
    public enum Reason: String, Sendable, Equatable {
        /// The peer's store is not the one the checkpoint names, or is behind it: the
        /// feed restarts from 0.
        case checkpointReset
        /// The peer remembers serving us less than we applied (restored from a copy): it
        /// resends from what it remembers, so nothing it wrote since is skipped.
        case peerRewound
    }

    public var reason: Reason
    public var checkpointSequence: UInt64
    public var resumedAfter: UInt64

    public init(reason: Reason, checkpointSequence: UInt64, resumedAfter: UInt64) {
        self.reason = reason
        self.checkpointSequence = checkpointSequence
        self.resumedAfter = resumedAfter
    }

    /// What the header says about our checkpoint, if the peer could not honour it.
    public init?(checkpoint: FeedCheckpoint?, resumeAfter: UInt64, checkpointReset: Bool) {
        guard let c = checkpoint, c.sequence > 0 else { return nil }
        if checkpointReset {
            self.init(reason: .checkpointReset, checkpointSequence: c.sequence, resumedAfter: resumeAfter)
        } else if resumeAfter < c.sequence {
            self.init(reason: .peerRewound, checkpointSequence: c.sequence, resumedAfter: resumeAfter)
        } else {
            return nil
        }
    }
}

/// What the link status (`GET /v1/replication`, cluster health) should record.
public enum PullLinkEvent: Sendable, Equatable {
    /// 200: the peer accepted the pull; clear the last error.
    case connected
    /// The stream header: the peer's last sequence; with `checkpointReset` the applied
    /// sequence is 0 again; `resync` (to log and show) when our checkpoint was not honoured;
    /// `protocolVersion`, the version the link speaks (asked for and answered), and
    /// `capabilities`, what it speaks beyond the base protocol (§8.1).
    case header(resumeAfter: UInt64, lastSequence: UInt64, checkpointReset: Bool, resync: PullResync?,
                protocolVersion: UInt32, capabilities: Capabilities)
    /// A heartbeat: the peer's last sequence, and its clock minus ours (network delay
    /// included; nil if it sent no stamp).
    case heartbeat(peerSequence: UInt64, clockOffsetMillis: Int64?)
    /// A merge committed: `records` received, the feed applied through `through`, the
    /// peer's last sequence when it sent them.
    case applied(records: Int, through: UInt64, sourceLast: UInt64)
}

/// The puller's side of one pull stream (proto/README.md §3–§7), generic over what a
/// decoded batch entry is (`ReplicatedTicket` in the node, `Int` in tests). The shell
/// decodes frames and feeds them in as events, and carries out the returned actions in
/// order; it never keeps session state of its own.
///
/// Receiving is pipelined: while one merge is being committed, the batches that keep
/// arriving are checked and gathered into the next, which is submitted the moment the
/// first commits, so decoding and committing overlap and a merge grows with the
/// backlog. Once the gathered merge could not take another whole batch, the machine
/// stops accepting frames and withholds reads, and HTTP/2 flow control holds the sender
/// back: at most one merge in flight, one gathered (each of at most `mergeLimit`
/// entries), and the stream window are held per link.
public struct PullSession<Payload: Sendable>: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// The peer this stream is meant to reach; its header must name it.
        public var peer: NodeID
        /// The version requested; the header must carry exactly this one (§8).
        public var protocolVersion: UInt32
        /// `max_batch` as requested (0: the sender's default). Lowered to `mergeLimit`
        /// if it asked for more, so that any one batch fits a merge.
        public private(set) var maxBatch: UInt32
        /// Most entries in one merge (one transaction, one fsync).
        public let mergeLimit: Int
        public var timers: SessionTimers
        /// Changes per batch the sender uses for `max_batch` 0 (§3).
        public let senderDefaultBatch: Int
        /// The longest store id a header may carry (§4.1).
        public var maxStoreIDBytes: Int
        /// What this build supports (§8.1); the link speaks its intersection with the source's.
        public var capabilities: Capabilities = .base

        public init(peer: NodeID, protocolVersion: UInt32, maxBatch: UInt32 = 0, mergeLimit: Int = 4096,
                    timers: SessionTimers = .protocolDefaults, senderDefaultBatch: Int = BatchSequence.defaultLimit, maxStoreIDBytes: Int = 64) {
            self.peer = peer
            self.protocolVersion = protocolVersion
            self.mergeLimit = max(1, mergeLimit)
            self.senderDefaultBatch = max(1, senderDefaultBatch)
            self.maxBatch = maxBatch
            self.timers = timers
            self.maxStoreIDBytes = maxStoreIDBytes
            if batchLimit > self.mergeLimit { self.maxBatch = UInt32(clamping: self.mergeLimit) }
        }

        /// The most changes one batch may carry, given the request.
        public var batchLimit: Int {
            BatchSequence.limit(requested: maxBatch, defaultLimit: senderDefaultBatch, maximum: BatchSequence.maximumLimit)
        }
    }

    /// Batches checked and gathered, to be merged in one transaction; checkpoint
    /// (`sourceStoreID`, `through`) commits with them.
    public struct Gathered: Sendable {
        public var sourceStoreID: [UInt8]
        public var payloads: [Payload]
        public var through: UInt64
        /// The peer's last sequence as the latest of these batches said.
        public var sourceLast: UInt64
        /// The capabilities to store with the checkpoint `through` (§8.1): the link's once
        /// the stream has passed where the puller's checkpoint stood when it began (the
        /// source resumed early enough for every part of them); before that, only those
        /// the old checkpoint was reached with too.
        public var capabilities: Capabilities

        public init(sourceStoreID: [UInt8], payloads: [Payload], through: UInt64, sourceLast: UInt64,
                    capabilities: Capabilities = .base) {
            self.sourceStoreID = sourceStoreID
            self.payloads = payloads
            self.through = through
            self.sourceLast = sourceLast
            self.capabilities = capabilities
        }
    }

    public enum Action: Sendable {
        /// POST the PullRequest (this version, checkpoint, max_batch) and end our side.
        case sendRequest(checkpoint: FeedCheckpoint?, maxBatch: UInt32, protocolVersion: UInt32)
        /// Ask the channel for more bytes (autoRead is off: this is the flow-control lever).
        case read
        /// Feed in the frames already buffered in the decoder, while `acceptsFrames`: the
        /// machine stopped taking them when the gathered merge filled up.
        case resumeDecoding
        /// Merge these into the store in one transaction, with the checkpoint; report
        /// `mergeCommitted` or `mergeFailed`.
        case submitMerge(Gathered)
        /// Update the link status.
        case linkEvent(PullLinkEvent)
        /// Close the stream and its connection; `appliedAny`: some merge of this stream
        /// committed, so the reconnect loop resets its backoff.
        case close(PullCloseReason, appliedAny: Bool)
    }

    enum State: Sendable {
        case idle
        /// The request is sent; no response head yet.
        case awaitingResponse(Waiting)
        /// 200 arrived; the first frame must be the header.
        case awaitingHeader(Waiting)
        /// A non-200 status arrived; its body should be one error frame.
        case refused(Refused)
        case streaming(Streaming)
        case closed(PullCloseReason)
    }

    struct Waiting: Sendable {
        var checkpoint: FeedCheckpoint?
        var lastHeard: MonotonicInstant
    }

    struct Refused: Sendable {
        var status: Int
        var lastHeard: MonotonicInstant
    }

    struct Streaming: Sendable {
        var sourceStoreID: [UInt8]
        /// What the link speaks, and from which position the checkpoint may say so (§8.1).
        var link: Capabilities = .base
        var linkFrom: UInt64 = 0
        var earnedBefore: Capabilities = .base
        /// The through_sequence the next batch must pass: the last one gathered, or the
        /// header's resume_after. Only grows.
        var position: UInt64
        /// The peer's last sequence as it last said (header, batch or heartbeat): its
        /// store only grows, so neither may this.
        var sourceLast: UInt64
        /// The merge submitted and not yet committed.
        var inFlight: InFlight?
        /// Batches gathered while a merge is in flight; nil when none.
        var gathered: Gathered?
        var appliedAny = false
        var lastHeard: MonotonicInstant
        /// A read completed while the machine took no frames, so no read was asked for.
        var readWithheld = false
    }

    struct InFlight: Sendable, Equatable {
        var records: Int
        var through: UInt64
        var sourceLast: UInt64
    }

    public let configuration: Configuration
    private(set) var state: State = .idle

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// Why the stream closed, once it has.
    public var closeReason: PullCloseReason? {
        if case .closed(let r) = state { return r }
        return nil
    }

    /// Whether the shell should decode and feed in the next buffered frame. False once
    /// the gathered merge could not take another whole batch, and after close.
    public var acceptsFrames: Bool {
        switch state {
        case .idle, .closed: false
        case .awaitingResponse, .awaitingHeader, .refused: true
        case .streaming(let s): s.hasRoom(configuration)
        }
    }

    /// When the shell should call `tick` next (the idle deadline); nil while the machine
    /// is not listening: before start, after close, and while it withholds reads itself
    /// (a slow merge of ours is not the peer's silence).
    public var nextTick: MonotonicInstant? {
        listeningSince.map { $0 + configuration.timers.idleTimeout }
    }

    private var listeningSince: MonotonicInstant? {
        switch state {
        case .idle, .closed: nil
        case .awaitingResponse(let w), .awaitingHeader(let w): w.lastHeard
        case .refused(let r): r.lastHeard
        case .streaming(let s): s.hasRoom(configuration) ? s.lastHeard : nil
        }
    }

    // MARK: - Events

    /// The stream channel is active: send the request from `checkpoint`.
    public mutating func start(checkpoint: FeedCheckpoint?, now: MonotonicInstant) -> [Action] {
        guard case .idle = state else { return unexpected("start") }
        state = .awaitingResponse(Waiting(checkpoint: checkpoint, lastHeard: now))
        return [.sendRequest(checkpoint: checkpoint, maxBatch: configuration.maxBatch,
                             protocolVersion: configuration.protocolVersion), .read]
    }

    public mutating func responseHead(status: Int, now: MonotonicInstant) -> [Action] {
        switch state {
        case .awaitingResponse(var w):
            w.lastHeard = max(w.lastHeard, now)
            if status == 200 {
                state = .awaitingHeader(w)
                return [.linkEvent(.connected)]
            }
            state = .refused(Refused(status: status, lastHeard: w.lastHeard))
            return []
        case .idle: return unexpected("responseHead")
        case .closed: return []
        default: return close(.protocolViolation("a second response head (\(status))"))
        }
    }

    /// The StreamHeader frame; `node` as the wire has it (checked against the peer).
    public mutating func header(node: String, storeID: [UInt8], resumeAfter: UInt64, checkpointReset: Bool,
                                lastSequence: UInt64, protocolVersion: UInt32, capabilities: [String] = [],
                                now: MonotonicInstant) -> [Action] {
        switch state {
        case .awaitingHeader(let w):
            guard node == configuration.peer.value else {
                return close(.protocolViolation("stream header names \(node), expected \(configuration.peer)"))
            }
            guard protocolVersion == configuration.protocolVersion else {
                return close(.protocolViolation(
                    "stream header is protocol version \(protocolVersion), version \(configuration.protocolVersion) was requested"))
            }
            guard (1...max(1, configuration.maxStoreIDBytes)).contains(storeID.count) else {
                return close(.protocolViolation("stream header store_id has \(storeID.count) bytes, not 1–\(configuration.maxStoreIDBytes)"))
            }
            if let why = FeedPosition.check(lastSequence, "stream header last_sequence") { return close(.protocolViolation(why)) }
            guard resumeAfter <= lastSequence else {
                return close(.protocolViolation(
                    "stream header resume_after \(resumeAfter) is past its last_sequence \(lastSequence): a feed resumes within itself"))
            }
            // The same rule as the source applies to ours.
            let advertised: Capabilities
            do {
                advertised = try Capabilities(advertised: capabilities, field: "stream header capabilities")
            } catch {
                return close(.protocolViolation(error.description))
            }
            var s = Streaming(sourceStoreID: storeID, position: resumeAfter, sourceLast: lastSequence,
                              lastHeard: max(w.lastHeard, now))
            s.link = configuration.capabilities.intersection(advertised)
            // Our own stored names: a set that no longer parses is treated as none (it costs a resend, never a part).
            let held = w.checkpoint.flatMap { $0.sourceStoreID == storeID && !checkpointReset ? $0 : nil }
            s.earnedBefore = ((try? Capabilities(advertised: held?.capabilities ?? [], field: "checkpoint")) ?? .base).intersection(s.link)
            s.linkFrom = held?.sequence ?? 0
            state = .streaming(s)
            let resync = PullResync(checkpoint: w.checkpoint, resumeAfter: resumeAfter, checkpointReset: checkpointReset)
            return [.linkEvent(.header(resumeAfter: resumeAfter, lastSequence: lastSequence,
                                       checkpointReset: checkpointReset, resync: resync, protocolVersion: protocolVersion,
                                       capabilities: s.link))]
        case .streaming: return close(.protocolViolation("a second stream header"))
        default: return frameOutOfPlace("a header frame")
        }
    }

    /// A ChangeBatch frame: its changes' sequences and decoded payloads (in order, one
    /// each), through_sequence and source_last_sequence.
    public mutating func batch(sequences: [UInt64], through: UInt64, sourceLast: UInt64, payloads: [Payload],
                               now: MonotonicInstant) -> [Action] {
        guard case .streaming(var s) = state else {
            if case .awaitingHeader = state { return close(.protocolViolation("a batch before the stream header")) }
            return frameOutOfPlace("a batch frame")
        }
        guard sequences.count == payloads.count else {
            return unexpected("a batch with \(sequences.count) sequences and \(payloads.count) payloads")
        }
        guard s.hasRoom(configuration) else {
            return unexpected("a batch while the gathered merge is full")
        }
        guard payloads.count <= configuration.batchLimit else {
            return close(.protocolViolation("a batch of \(payloads.count) changes; at most \(configuration.batchLimit) were asked for"))
        }
        do {
            try BatchSequence.check(sequences: sequences, through: through, after: s.position)
        } catch {
            return close(.protocolViolation("invalid batch: \(error)"))
        }
        if let why = FeedPosition.follows(sourceLast, s.sourceLast, "batch.source_last_sequence") { return close(.protocolViolation(why)) }
        guard through <= sourceLast else {
            return close(.protocolViolation(
                "invalid batch: batch.through_sequence \(through) is past its source_last_sequence \(sourceLast)"))
        }
        s.lastHeard = max(s.lastHeard, now)
        s.position = through
        s.sourceLast = sourceLast
        var g = s.gathered ?? Gathered(sourceStoreID: s.sourceStoreID, payloads: [], through: through, sourceLast: 0)
        g.payloads += payloads
        g.through = through
        g.capabilities = through >= s.linkFrom ? s.link : s.earnedBefore
        g.sourceLast = max(g.sourceLast, sourceLast)
        s.gathered = g
        let submit = s.submitIfIdle()
        state = .streaming(s)
        return submit
    }

    /// A Heartbeat frame, with our wall clock when it was read (for the clock offset).
    public mutating func heartbeat(sourceLastSequence: UInt64, sourceStamp: Stamp, localWallMillis: Millis,
                                   now: MonotonicInstant) -> [Action] {
        guard case .streaming(var s) = state else {
            // §4.1: the first frame is always the header.
            if case .awaitingHeader = state { return close(.protocolViolation("a heartbeat before the stream header")) }
            return frameOutOfPlace("a heartbeat frame")
        }
        if let why = FeedPosition.follows(sourceLastSequence, s.sourceLast, "heartbeat.source_last_sequence") {
            return close(.protocolViolation(why))
        }
        guard sourceStamp == .zero || PlausibleTime.range.contains(sourceStamp.millis) else {
            return close(.protocolViolation("heartbeat.source_stamp \(sourceStamp.millis) ms is not a time between 2000 and 2200"))
        }
        s.lastHeard = max(s.lastHeard, now)
        s.sourceLast = sourceLastSequence
        state = .streaming(s)
        let offset: Int64? = sourceStamp == .zero ? nil : sourceStamp.millis &- localWallMillis
        return [.linkEvent(.heartbeat(peerSequence: sourceLastSequence, clockOffsetMillis: offset))]
    }

    /// A StreamError frame: the body of a refusal, or a begun stream's last frame.
    public mutating func errorFrame(_ error: SessionError) -> [Action] {
        switch state {
        case .refused(let r): return close(.refused(status: r.status, error: error))
        case .awaitingHeader, .streaming: return close(.peerError(error))
        default: return frameOutOfPlace("an error frame")
        }
    }

    /// The decoder found a frame it cannot decode (or a length prefix over 16 MiB).
    public mutating func undecodable(_ why: String) -> [Action] {
        switch state {
        case .idle: return unexpected("undecodable")
        case .closed: return []
        default: return close(.undecodable(why))
        }
    }

    /// The submitted merge committed.
    public mutating func mergeCommitted(now: MonotonicInstant) -> [Action] {
        guard case .streaming(var s) = state, let done = s.inFlight else { return unexpected("mergeCommitted") }
        let wasFull = !s.hasRoom(configuration)
        s.inFlight = nil
        s.appliedAny = true
        var actions: [Action] = [.linkEvent(.applied(records: done.records, through: done.through, sourceLast: done.sourceLast))]
        actions += s.submitIfIdle()
        if wasFull && s.hasRoom(configuration) {
            // Listening again: the idle clock restarts, buffered frames are fed in, and
            // a read withheld is asked for now.
            s.lastHeard = max(s.lastHeard, now)
            actions.append(.resumeDecoding)
            if s.readWithheld { actions.append(.read) }
            s.readWithheld = false
        }
        state = .streaming(s)
        return actions
    }

    public mutating func mergeFailed(_ why: String) -> [Action] {
        guard case .streaming = state else { return unexpected("mergeFailed") }
        return close(.mergeFailed(why))
    }

    /// The channel finished delivering a read: bytes arrived (the peer was heard, even
    /// mid-frame), and the machine asks for more unless the gathered merge is full.
    public mutating func readComplete(now: MonotonicInstant) -> [Action] {
        switch state {
        case .idle, .closed:
            return []
        case .awaitingResponse(var w):
            w.lastHeard = max(w.lastHeard, now)
            state = .awaitingResponse(w)
            return [.read]
        case .awaitingHeader(var w):
            w.lastHeard = max(w.lastHeard, now)
            state = .awaitingHeader(w)
            return [.read]
        case .refused(var r):
            r.lastHeard = max(r.lastHeard, now)
            state = .refused(r)
            return [.read]
        case .streaming(var s):
            guard s.hasRoom(configuration) else {
                s.readWithheld = true
                state = .streaming(s)
                return []
            }
            s.lastHeard = max(s.lastHeard, now)
            state = .streaming(s)
            return [.read]
        }
    }

    /// END_STREAM from the sender.
    public mutating func streamEnded() -> [Action] {
        switch state {
        case .idle: return unexpected("streamEnded")
        case .closed: return []
        default: return close(.streamEnded)
        }
    }

    public mutating func connectionClosed() -> [Action] {
        if case .closed = state { return [] }
        return close(.connectionClosed)
    }

    public mutating func transportFailed(_ why: String) -> [Action] {
        if case .closed = state { return [] }
        return close(.transportFailed(why))
    }

    /// Time passed: close if nothing was heard for `idleTimeout` while listening.
    public mutating func tick(now: MonotonicInstant) -> [Action] {
        guard let since = listeningSince, now - since >= configuration.timers.idleTimeout else { return [] }
        return close(.idleTimeout(configuration.timers.idleTimeout))
    }

    // MARK: - Closing

    /// Moves to `closed`; after a non-200 status every close is that refusal, whatever
    /// ended it, so the reconnect policy sees the status.
    private mutating func close(_ reason: PullCloseReason) -> [Action] {
        let applied: Bool
        var reason = reason
        switch state {
        case .closed: return []
        case .streaming(let s): applied = s.appliedAny
        case .refused(let r):
            applied = false
            if case .refused = reason {} else if case .unexpectedEvent = reason {} else {
                reason = .refused(status: r.status, error: nil)
            }
        default: applied = false
        }
        state = .closed(reason)
        return [.close(reason, appliedAny: applied)]
    }

    private mutating func unexpected(_ event: String) -> [Action] {
        if case .closed = state { return [] }
        return close(.unexpectedEvent("\(event) in \(stateName)"))
    }

    /// A frame that cannot come in this state; before the response head it is ours to
    /// notice, after a refusal it only confirms it.
    private mutating func frameOutOfPlace(_ frame: String) -> [Action] {
        switch state {
        case .closed: return []
        case .idle: return unexpected(frame)
        default: return close(.protocolViolation("\(frame) in \(stateName)"))
        }
    }

    var stateName: String {
        switch state {
        case .idle: "idle"
        case .awaitingResponse: "awaitingResponse"
        case .awaitingHeader: "awaitingHeader"
        case .refused: "refused"
        case .streaming: "streaming"
        case .closed: "closed"
        }
    }
}

extension PullSession.Streaming {
    /// Whether the gathered merge can take one more whole batch.
    func hasRoom(_ c: PullSession.Configuration) -> Bool {
        (gathered?.payloads.count ?? 0) + c.batchLimit <= c.mergeLimit
    }

    /// Submits what is gathered if no merge is in flight: at most one ever is.
    mutating func submitIfIdle() -> [PullSession.Action] {
        guard inFlight == nil, let g = gathered else { return [] }
        gathered = nil
        inFlight = PullSession.InFlight(records: g.payloads.count, through: g.through, sourceLast: g.sourceLast)
        return [.submitMerge(g)]
    }
}

extension PullSession.Gathered: Equatable where Payload: Equatable {}
extension PullSession.Action: Equatable where Payload: Equatable {}
