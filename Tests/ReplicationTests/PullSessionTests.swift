import CaseModel
import TestSupport
import XCTest
@testable import Replication

/// The puller's machine, driven with no channel and no store (payloads are `Int`s):
/// every event in every state, each check of the stream, the pipelining of merges and
/// the idle timer, and seeded random schedules checked against the invariants (at
/// most one merge in flight, gathered within the bound, position only forward, no
/// read while full, idle timeout iff nothing heard while listening, silence once closed).
final class PullSessionTests: XCTestCase {
    typealias Session = PullSession<Int>
    typealias Action = Session.Action

    static let peer = NodeID("irk-main")!
    static let storeID: [UInt8] = [1, 2, 3]
    static let checkpoint = FeedCheckpoint(sourceStoreID: storeID, sequence: 50)
    /// Batches of at most 512 (max_batch 0); a merge of at most 1,024, so two batches fill it.
    static let config = Session.Configuration(peer: peer, protocolVersion: 2, mergeLimit: 1024)
    static let t0 = MonotonicInstant(nanoseconds: 1_000_000_000_000)
    static let wall: Millis = 1_795_000_000_000
    /// The peer's last sequence in the random schedules: past any batch they send.
    static let randomLast: UInt64 = 10_000_000

    static func at(_ seconds: Double) -> MonotonicInstant { t0 + .milliseconds(Int64(seconds * 1000)) }

    static func gathered(_ sequences: ClosedRange<UInt64>, sourceLast: UInt64? = nil) -> Session.Gathered {
        .init(sourceStoreID: storeID, payloads: sequences.map { Int($0) }, through: sequences.upperBound,
              sourceLast: sourceLast ?? max(100, sequences.upperBound))
    }

    @discardableResult
    /// A batch of `sequences`; the peer's last sequence is the header's (100) or the batch's end.
    static func batch(_ m: inout Session, _ sequences: ClosedRange<UInt64>, sourceLast: UInt64? = nil,
                      now: MonotonicInstant = t0) -> [Action] {
        m.batch(sequences: Array(sequences), through: sequences.upperBound, sourceLast: sourceLast ?? max(100, sequences.upperBound),
                payloads: sequences.map { Int($0) }, now: now)
    }

    @discardableResult
    static func header(_ m: inout Session, node: String = "irk-main", storeID: [UInt8] = storeID, resumeAfter: UInt64 = 50,
                       reset: Bool = false, last: UInt64 = 100, version: UInt32 = 2, now: MonotonicInstant = t0) -> [Action] {
        m.header(node: node, storeID: storeID, resumeAfter: resumeAfter, checkpointReset: reset, lastSequence: last,
                 protocolVersion: version, now: now)
    }

    // MARK: - States

    enum StateKind: String, CaseIterable {
        case idle, awaitingResponse, awaitingHeader
        /// HTTP 403 arrived.
        case refused
        /// Header at 50, nothing gathered, no merge.
        case streaming
        /// A merge of 51...52 in flight.
        case merging
        /// A merge in flight and 600 gathered (no room for another batch of 512); a read withheld.
        case full
        case closed
    }

    static func machine(_ kind: StateKind) -> Session {
        var m = Session(configuration: config)
        func upTo(_ k: StateKind) {
            _ = m.start(checkpoint: checkpoint, now: t0)
            if k == .awaitingResponse { return }
            _ = m.responseHead(status: k == .refused ? 403 : 200, now: t0)
            if k == .awaitingHeader || k == .refused { return }
            header(&m)
            if k == .streaming { return }
            batch(&m, 51...52)
            if k == .merging { return }
            batch(&m, 53...352)
            batch(&m, 353...652)
            _ = m.readComplete(now: t0)
        }
        switch kind {
        case .idle: break
        case .closed:
            _ = m.start(checkpoint: checkpoint, now: t0)
            _ = m.connectionClosed()
        default: upTo(kind)
        }
        XCTAssertEqual(name(m), kind.rawValue, "fixture \(kind)")
        return m
    }

    static func name(_ m: Session) -> String {
        switch m.state {
        case .idle: "idle"
        case .awaitingResponse: "awaitingResponse"
        case .awaitingHeader: "awaitingHeader"
        case .refused: "refused"
        case .closed: "closed"
        case .streaming(let s):
            s.inFlight == nil ? "streaming" : s.hasRoom(m.configuration) ? "merging" : "full"
        }
    }

    // MARK: - Events

    enum Event: String, CaseIterable {
        case start, head200, head503, header, headerOtherNode, batch, badBatch, heartbeat, errorFrame, undecodable,
             mergeCommitted, mergeFailed, readComplete, streamEnded, connectionClosed, transportFailed, tickEarly, tickDue
    }

    static let shutdown = SessionError(.shuttingDown, "bye")

    static func apply(_ e: Event, _ m: inout Session) -> [Action] {
        switch e {
        case .start: m.start(checkpoint: checkpoint, now: at(1))
        case .head200: m.responseHead(status: 200, now: at(1))
        case .head503: m.responseHead(status: 503, now: at(1))
        case .header: header(&m, now: at(1))
        case .headerOtherNode: header(&m, node: "irk-office-1", now: at(1))
        case .batch: batch(&m, 60...60, now: at(1))
        case .badBatch: batch(&m, 40...40, now: at(1))
        case .heartbeat:
            m.heartbeat(sourceLastSequence: 1000, sourceStamp: Stamp(millis: wall + 500, logical: 3),
                        localWallMillis: wall, now: at(1))
        case .errorFrame: m.errorFrame(shutdown)
        case .undecodable: m.undecodable("varint too long")
        case .mergeCommitted: m.mergeCommitted(now: at(1))
        case .mergeFailed: m.mergeFailed("disk full")
        case .readComplete: m.readComplete(now: at(1))
        case .streamEnded: m.streamEnded()
        case .connectionClosed: m.connectionClosed()
        case .transportFailed: m.transportFailed("tls: bad certificate")
        case .tickEarly: m.tick(now: at(14.999))
        case .tickDue: m.tick(now: at(15))
        }
    }

    // MARK: - Every event in every state

    func testEveryEventInEveryState() {
        typealias Outcome = ([Action], String)
        func closes(_ r: PullCloseReason, applied: Bool = false) -> Outcome { ([.close(r, appliedAny: applied)], "closed") }
        func unexpected(_ s: String) -> Outcome { closes(.unexpectedEvent(s)) }
        func violation(_ s: String) -> Outcome { closes(.protocolViolation(s)) }
        let refused403 = closes(.refused(status: 403, error: nil))
        let idle15 = closes(.idleTimeout(.seconds(15)))
        let heartbeat: Outcome = ([.linkEvent(.heartbeat(peerSequence: 1000, clockOffsetMillis: 500))], "")

        /// What every begun stream does alike; `same` is the state name it stays in.
        func streamingCommon(_ same: String, _ position: UInt64) -> [Event: Outcome] {
            [
                .start: unexpected("start in streaming"),
                .head200: violation("a second response head (200)"),
                .head503: violation("a second response head (503)"),
                .header: violation("a second stream header"),
                .headerOtherNode: violation("a second stream header"),
                .badBatch: violation("invalid batch: batch.through_sequence: 40 does not advance past \(position)"),
                .heartbeat: (heartbeat.0, same),
                .errorFrame: closes(.peerError(Self.shutdown)),
                .undecodable: closes(.undecodable("varint too long")),
                .mergeFailed: closes(.mergeFailed("disk full")),
                .readComplete: ([.read], same),
                .streamEnded: closes(.streamEnded),
                .connectionClosed: closes(.connectionClosed),
                .transportFailed: closes(.transportFailed("tls: bad certificate")),
                .tickEarly: ([], same),
                .tickDue: idle15,
            ]
        }

        var table: [StateKind: [Event: Outcome]] = [
            .idle: [
                .start: ([.sendRequest(checkpoint: Self.checkpoint, maxBatch: 0, protocolVersion: 2), .read], "awaitingResponse"),
                .head200: unexpected("responseHead in idle"),
                .head503: unexpected("responseHead in idle"),
                .header: unexpected("a header frame in idle"),
                .headerOtherNode: unexpected("a header frame in idle"),
                .batch: unexpected("a batch frame in idle"),
                .badBatch: unexpected("a batch frame in idle"),
                .heartbeat: unexpected("a heartbeat frame in idle"),
                .errorFrame: unexpected("an error frame in idle"),
                .undecodable: unexpected("undecodable in idle"),
                .mergeCommitted: unexpected("mergeCommitted in idle"),
                .mergeFailed: unexpected("mergeFailed in idle"),
                .readComplete: ([], "idle"),
                .streamEnded: unexpected("streamEnded in idle"),
                .connectionClosed: closes(.connectionClosed),
                .transportFailed: closes(.transportFailed("tls: bad certificate")),
                .tickEarly: ([], "idle"),
                .tickDue: ([], "idle"),
            ],
            .awaitingResponse: [
                .start: unexpected("start in awaitingResponse"),
                .head200: ([.linkEvent(.connected)], "awaitingHeader"),
                .head503: ([], "refused"),
                .header: violation("a header frame in awaitingResponse"),
                .headerOtherNode: violation("a header frame in awaitingResponse"),
                .batch: violation("a batch frame in awaitingResponse"),
                .badBatch: violation("a batch frame in awaitingResponse"),
                .heartbeat: violation("a heartbeat frame in awaitingResponse"),
                .errorFrame: violation("an error frame in awaitingResponse"),
                .undecodable: closes(.undecodable("varint too long")),
                .mergeCommitted: unexpected("mergeCommitted in awaitingResponse"),
                .mergeFailed: unexpected("mergeFailed in awaitingResponse"),
                .readComplete: ([.read], "awaitingResponse"),
                .streamEnded: closes(.streamEnded),
                .connectionClosed: closes(.connectionClosed),
                .transportFailed: closes(.transportFailed("tls: bad certificate")),
                .tickEarly: ([], "awaitingResponse"),
                .tickDue: idle15,
            ],
            .awaitingHeader: [
                .start: unexpected("start in awaitingHeader"),
                .head200: violation("a second response head (200)"),
                .head503: violation("a second response head (503)"),
                .header: ([.linkEvent(.header(resumeAfter: 50, lastSequence: 100, checkpointReset: false, resync: nil, protocolVersion: 2, capabilities: .base))],
                          "streaming"),
                .headerOtherNode: violation("stream header names irk-office-1, expected irk-main"),
                .batch: violation("a batch before the stream header"),
                .badBatch: violation("a batch before the stream header"),
                .heartbeat: violation("a heartbeat before the stream header"),
                .errorFrame: closes(.peerError(Self.shutdown)),
                .undecodable: closes(.undecodable("varint too long")),
                .mergeCommitted: unexpected("mergeCommitted in awaitingHeader"),
                .mergeFailed: unexpected("mergeFailed in awaitingHeader"),
                .readComplete: ([.read], "awaitingHeader"),
                .streamEnded: closes(.streamEnded),
                .connectionClosed: closes(.connectionClosed),
                .transportFailed: closes(.transportFailed("tls: bad certificate")),
                .tickEarly: ([], "awaitingHeader"),
                .tickDue: idle15,
            ],
            // After a refusal, whatever ends the stream, the close is the refusal.
            .refused: [
                .start: unexpected("start in refused"),
                .head200: refused403, .head503: refused403,
                .header: refused403, .headerOtherNode: refused403,
                .batch: refused403, .badBatch: refused403, .heartbeat: refused403,
                .errorFrame: closes(.refused(status: 403, error: Self.shutdown)),
                .undecodable: refused403,
                .mergeCommitted: unexpected("mergeCommitted in refused"),
                .mergeFailed: unexpected("mergeFailed in refused"),
                .readComplete: ([.read], "refused"),
                .streamEnded: refused403, .connectionClosed: refused403, .transportFailed: refused403,
                .tickEarly: ([], "refused"),
                .tickDue: refused403,
            ],
            .closed: Dictionary(uniqueKeysWithValues: Event.allCases.map { ($0, ([], "closed")) }),
        ]
        table[.streaming] = streamingCommon("streaming", 50).merging([
            .batch: ([.submitMerge(Self.gathered(60...60))], "merging"),
            .mergeCommitted: unexpected("mergeCommitted in streaming"),
        ]) { $1 }
        table[.merging] = streamingCommon("merging", 52).merging([
            .batch: ([], "merging"),  // gathered behind the merge in flight
            .mergeCommitted: ([.linkEvent(.applied(records: 2, through: 52, sourceLast: 100))], "streaming"),
        ]) { $1 }
        table[.full] = streamingCommon("full", 652).merging([
            // The shell must not feed frames while the machine takes none.
            .batch: unexpected("a batch while the gathered merge is full in streaming"),
            .badBatch: unexpected("a batch while the gathered merge is full in streaming"),
            .mergeCommitted: ([.linkEvent(.applied(records: 2, through: 52, sourceLast: 100)),
                               .submitMerge(Self.gathered(53...652)), .resumeDecoding, .read], "merging"),
            .readComplete: ([], "full"),
            // Not listening while our own merge holds reads back.
            .tickDue: ([], "full"),
        ]) { $1 }

        var checked = 0
        for kind in StateKind.allCases {
            for event in Event.allCases {
                guard let (actions, next) = table[kind]?[event] else {
                    XCTFail("no expectation for \(event) in \(kind)")
                    continue
                }
                var m = Self.machine(kind)
                XCTAssertEqual(Self.apply(event, &m), actions, "\(event) in \(kind)")
                XCTAssertEqual(Self.name(m), next.isEmpty ? kind.rawValue : next, "\(event) in \(kind): next state")
                checked += 1
            }
        }
        XCTAssertEqual(checked, StateKind.allCases.count * Event.allCases.count)
    }

    // MARK: - Request and header

    func testRequestCarriesTheConfiguredBatchWithinTheMergeBound() {
        var m = Session(configuration: .init(peer: Self.peer, protocolVersion: 1, maxBatch: 9000, mergeLimit: 100))
        XCTAssertEqual(m.start(checkpoint: nil, now: Self.t0),
                       [.sendRequest(checkpoint: nil, maxBatch: 100, protocolVersion: 1), .read])
        let defaults = Session.Configuration(peer: Self.peer, protocolVersion: 2)
        XCTAssertEqual(defaults.maxBatch, 0)
        XCTAssertEqual(defaults.batchLimit, 512)
        XCTAssertEqual(defaults.mergeLimit, 4096)
        XCTAssertEqual(Session.Configuration(peer: Self.peer, protocolVersion: 2, maxBatch: 0, mergeLimit: 10).maxBatch, 10)
        XCTAssertEqual(Session.Configuration(peer: Self.peer, protocolVersion: 2, mergeLimit: 0).mergeLimit, 1)
    }

    func testHeaderChecks() {
        func closeReason(_ body: (inout Session) -> [Action]) -> PullCloseReason? {
            var m = Self.machine(.awaitingHeader)
            guard case .close(let r, _)? = body(&m).last else { return nil }
            return r
        }
        XCTAssertEqual(closeReason { Self.header(&$0, version: 1) },
                       .protocolViolation("stream header is protocol version 1, version 2 was requested"))
        XCTAssertEqual(closeReason { Self.header(&$0, storeID: []) },
                       .protocolViolation("stream header store_id has 0 bytes, not 1–64"))
        XCTAssertEqual(closeReason { Self.header(&$0, storeID: Array(repeating: 0, count: 65)) },
                       .protocolViolation("stream header store_id has 65 bytes, not 1–64"))
        XCTAssertNil(closeReason { Self.header(&$0, storeID: Array(repeating: 0, count: 64)) })
    }

    /// The capabilities a merge stores with its checkpoint (§8.1): what the old checkpoint
    /// had, until the stream passes where that checkpoint stood; then the link's.
    func testCheckpointCapabilitiesFollowTheStream() {
        func merges(checkpoint: FeedCheckpoint?, resumeAfter: UInt64, reset: Bool = false,
                    batches: [ClosedRange<UInt64>]) -> [[String]] {
            var c = Self.config
            c.capabilities = Capabilities(known: ["callbacks", "retention"])
            var m = Session(configuration: c)
            _ = m.start(checkpoint: checkpoint, now: Self.t0)
            _ = m.responseHead(status: 200, now: Self.t0)
            _ = m.header(node: "irk-main", storeID: Self.storeID, resumeAfter: resumeAfter, checkpointReset: reset,
                         lastSequence: 200, protocolVersion: 2, capabilities: ["callbacks", "retention"], now: Self.t0)
            var out: [[String]] = []
            for b in batches {
                for a in Self.batch(&m, b, sourceLast: 200) {
                    if case .submitMerge(let g) = a { out.append(g.capabilities.names) }
                }
                _ = m.mergeCommitted(now: Self.t0)
            }
            return out
        }
        // Reached with retention only, at 120; the source rewound to 40 for callbacks.
        let old = FeedCheckpoint(sourceStoreID: Self.storeID, sequence: 120, capabilities: ["retention"])
        XCTAssertEqual(merges(checkpoint: old, resumeAfter: 40, batches: [41...80, 81...119, 120...150]),
                       [["retention"], ["retention"], ["callbacks", "retention"]])
        // A reset (another store): the whole feed comes in this stream.
        XCTAssertEqual(merges(checkpoint: old, resumeAfter: 0, reset: true, batches: [1...10]), [["callbacks", "retention"]])
        // A checkpoint of another store counts for nothing either.
        let other = FeedCheckpoint(sourceStoreID: [9], sequence: 500, capabilities: ["callbacks", "retention"])
        XCTAssertEqual(merges(checkpoint: other, resumeAfter: 0, reset: true, batches: [1...10]), [["callbacks", "retention"]])
        // A stored set that no longer parses reads as none: at worst a resend.
        let damaged = FeedCheckpoint(sourceStoreID: Self.storeID, sequence: 120, capabilities: ["Bad name"])
        XCTAssertEqual(merges(checkpoint: damaged, resumeAfter: 100, batches: [101...110]), [[]])
    }

    /// The source's capabilities get the check the source gives ours; the link event
    /// carries what both ends support.
    func testHeaderCapabilitiesAreCheckedAndIntersected() {
        func run(_ advertised: [String]) -> [Action] {
            var c = Self.config
            c.capabilities = Capabilities(known: ["callbacks", "retention"])
            var m = Session(configuration: c)
            _ = m.start(checkpoint: Self.checkpoint, now: Self.t0)
            _ = m.responseHead(status: 200, now: Self.t0)
            return m.header(node: "irk-main", storeID: Self.storeID, resumeAfter: 50, checkpointReset: false, lastSequence: 100,
                            protocolVersion: 2, capabilities: advertised, now: Self.t0)
        }
        func link(_ advertised: [String]) -> [String]? {
            guard case .linkEvent(.header(_, _, _, _, _, let c))? = run(advertised).first else { return nil }
            return c.names
        }
        XCTAssertEqual(link([]), [], "a source of a release before capabilities")
        XCTAssertEqual(link(["retention", "newer-thing"]), ["retention"])
        for bad in [["retention", "retention"], ["Bad"], [String(repeating: "x", count: 49)], (0..<65).map { "c\($0)" }] {
            guard case .close(.protocolViolation(let why), _)? = run(bad).last else { return XCTFail("\(bad.prefix(2)) accepted") }
            XCTAssertTrue(why.hasPrefix("stream header capabilities"), why)
        }
    }

    func testHeaderReportsWhyTheCheckpointWasNotHonoured() {
        func resync(_ checkpoint: FeedCheckpoint?, resumeAfter: UInt64, reset: Bool) -> PullResync? {
            var m = Session(configuration: Self.config)
            _ = m.start(checkpoint: checkpoint, now: Self.t0)
            _ = m.responseHead(status: 200, now: Self.t0)
            guard case .linkEvent(.header(let after, _, let r, let resync, let version, _))? = Self.header(&m, resumeAfter: resumeAfter, reset: reset).first
            else { XCTFail("no header event"); return nil }
            XCTAssertEqual(after, resumeAfter)
            XCTAssertEqual(r, reset)
            XCTAssertEqual(version, Self.config.protocolVersion, "the link reports the version it speaks")
            return resync
        }
        XCTAssertEqual(resync(Self.checkpoint, resumeAfter: 0, reset: true),
                       PullResync(reason: .checkpointReset, checkpointSequence: 50, resumedAfter: 0))
        XCTAssertEqual(resync(Self.checkpoint, resumeAfter: 20, reset: false),
                       PullResync(reason: .peerRewound, checkpointSequence: 50, resumedAfter: 20))
        XCTAssertNil(resync(Self.checkpoint, resumeAfter: 50, reset: false))
        XCTAssertNil(resync(nil, resumeAfter: 0, reset: false))
        XCTAssertNil(resync(FeedCheckpoint(sourceStoreID: [], sequence: 0), resumeAfter: 0, reset: true), "a first pull is no resync")
    }

    func testRefusalCarriesStatusAndErrorFrame() {
        var m = Self.machine(.awaitingResponse)
        XCTAssertEqual(m.responseHead(status: 400, now: Self.t0), [])
        let mismatch = SessionError(.protocolVersionMismatch, "speaks 1–1", supportedVersions: 1...1)
        XCTAssertEqual(m.errorFrame(mismatch), [.close(.refused(status: 400, error: mismatch), appliedAny: false)])
        XCTAssertEqual(m.closeReason, .refused(status: 400, error: mismatch))
        XCTAssertEqual(m.closeReason?.description, "HTTP 400: protocolVersionMismatch: speaks 1–1")
    }

    // MARK: - Batches and merges

    func testBatchChecks() {
        func close(_ body: (inout Session) -> [Action]) -> [Action] {
            var m = Self.machine(.streaming)
            return body(&m)
        }
        XCTAssertEqual(close { Self.batch(&$0, 51...563) },
                       [.close(.protocolViolation("a batch of 513 changes; at most 512 were asked for"), appliedAny: false)])
        XCTAssertEqual(close { $0.batch(sequences: [51, 51], through: 52, sourceLast: 9, payloads: [1, 2], now: Self.t0) },
                       [.close(.protocolViolation("invalid batch: batch.changes[1].sequence: 51 is not in (51, 52]"), appliedAny: false)])
        XCTAssertEqual(close { $0.batch(sequences: [53], through: 52, sourceLast: 9, payloads: [1], now: Self.t0) },
                       [.close(.protocolViolation("invalid batch: batch.changes[0].sequence: 53 is not in (50, 52]"), appliedAny: false)])
        XCTAssertEqual(close { $0.batch(sequences: [51], through: 52, sourceLast: 9, payloads: [], now: Self.t0) },
                       [.close(.unexpectedEvent("a batch with 1 sequences and 0 payloads in streaming"), appliedAny: false)])
        // A batch that only advances through_sequence (§4.2) is merged: it moves the checkpoint.
        XCTAssertEqual(close { $0.batch(sequences: [], through: 70, sourceLast: 110, payloads: [], now: Self.t0) },
                       [.submitMerge(.init(sourceStoreID: Self.storeID, payloads: [], through: 70, sourceLast: 110))])
        // The peer's last sequence: never behind what it said (the header's 100), never
        // before the batch's end, never past a feed position.
        XCTAssertEqual(close { $0.batch(sequences: [51], through: 52, sourceLast: 99, payloads: [1], now: Self.t0) },
                       [.close(.protocolViolation("batch.source_last_sequence 99 is behind 100, which the peer said before: its feed only grows"),
                               appliedAny: false)])
        XCTAssertEqual(close { $0.batch(sequences: [151], through: 152, sourceLast: 151, payloads: [1], now: Self.t0) },
                       [.close(.protocolViolation("invalid batch: batch.through_sequence 152 is past its source_last_sequence 151"),
                               appliedAny: false)])
        for last in [FeedPosition.maximum + 1, UInt64.max] {
            XCTAssertEqual(close { $0.batch(sequences: [51], through: 52, sourceLast: last, payloads: [1], now: Self.t0) },
                           [.close(.protocolViolation("batch.source_last_sequence \(last) is past the largest feed position, 2^53 − 1"),
                                   appliedAny: false)])
        }
        XCTAssertEqual(close { $0.batch(sequences: [51], through: 52, sourceLast: FeedPosition.maximum, payloads: [1], now: Self.t0) },
                       [.submitMerge(.init(sourceStoreID: Self.storeID, payloads: [1], through: 52, sourceLast: FeedPosition.maximum))])
    }

    func testPipelinedMergesAndFlowControl() {
        var m = Self.machine(.streaming)
        XCTAssertEqual(Self.batch(&m, 51...100, sourceLast: 2000), [.submitMerge(Self.gathered(51...100, sourceLast: 2000))])
        // While it commits, batches gather behind it; sourceLast is the latest said.
        XCTAssertEqual(Self.batch(&m, 101...400, sourceLast: 2050), [])
        XCTAssertTrue(m.acceptsFrames)
        XCTAssertEqual(Self.batch(&m, 401...800, sourceLast: 2100), [])
        // 700 gathered: another 512 would not fit in 1,024, so no more frames and no read.
        XCTAssertFalse(m.acceptsFrames)
        XCTAssertNil(m.nextTick, "not listening while our merge holds reads back")
        XCTAssertEqual(m.readComplete(now: Self.at(1)), [])
        XCTAssertEqual(m.tick(now: Self.at(60)), [], "a slow merge of ours is not the peer's silence")
        XCTAssertEqual(m.mergeCommitted(now: Self.at(61)), [
            .linkEvent(.applied(records: 50, through: 100, sourceLast: 2000)),
            .submitMerge(Self.gathered(101...800, sourceLast: 2100)),
            .resumeDecoding, .read,
        ])
        XCTAssertEqual(m.nextTick, Self.at(61 + 15), "listening again: the idle clock restarts")
        XCTAssertEqual(m.mergeCommitted(now: Self.at(62)), [.linkEvent(.applied(records: 700, through: 800, sourceLast: 2100))])
        XCTAssertEqual(m.mergeCommitted(now: Self.at(62)),
                       [.close(.unexpectedEvent("mergeCommitted in streaming"), appliedAny: true)])
    }

    func testFullBeforeTheReadCompletesAsksForNoExtraRead() {
        var m = Self.machine(.streaming)
        Self.batch(&m, 51...51)
        Self.batch(&m, 52...600)  // 549 > 512: rejected as too large
        XCTAssertTrue(m.isClosed)
        m = Self.machine(.streaming)
        Self.batch(&m, 51...51)
        Self.batch(&m, 52...563)
        Self.batch(&m, 564...564)  // 513 gathered: full
        XCTAssertFalse(m.acceptsFrames)
        // The merge commits before the read completes: no read is owed yet…
        XCTAssertEqual(m.mergeCommitted(now: Self.t0).suffix(2), [.submitMerge(Self.gathered(52...564)), .resumeDecoding])
        // …and the read completing asks for the next one as usual.
        XCTAssertEqual(m.readComplete(now: Self.t0), [.read])
    }

    func testCloseSaysWhetherAnythingWasApplied() {
        var m = Self.machine(.merging)
        XCTAssertEqual(m.streamEnded(), [.close(.streamEnded, appliedAny: false)], "a merge in flight is not applied")
        m = Self.machine(.merging)
        _ = m.mergeCommitted(now: Self.t0)
        XCTAssertEqual(m.errorFrame(Self.shutdown), [.close(.peerError(Self.shutdown), appliedAny: true)])
        XCTAssertEqual(m.mergeCommitted(now: Self.t0), [], "a merge committing after close changes nothing")
    }

    // MARK: - Heartbeats and idle

    func testHeartbeatReportsClockOffset() {
        var m = Self.machine(.streaming)
        XCTAssertEqual(m.heartbeat(sourceLastSequence: 107, sourceStamp: .zero, localWallMillis: Self.wall, now: Self.t0),
                       [.linkEvent(.heartbeat(peerSequence: 107, clockOffsetMillis: nil))])
        XCTAssertEqual(m.heartbeat(sourceLastSequence: 108, sourceStamp: Stamp(millis: Self.wall - 2_000, logical: 0),
                                   localWallMillis: Self.wall, now: Self.t0),
                       [.linkEvent(.heartbeat(peerSequence: 108, clockOffsetMillis: -2_000))])
    }

    /// A heartbeat's values are a peer's answer too: a last sequence past any feed
    /// position (UInt64.max once showed as a lag of 1.8e19 records), behind what the peer
    /// said before, or a stamp outside 2000–2200 closes the stream as a violation.
    func testHeartbeatValuesAreChecked() {
        func heartbeat(_ last: UInt64, _ stamp: Stamp = .zero) -> [Action] {
            var m = Self.machine(.streaming)
            return m.heartbeat(sourceLastSequence: last, sourceStamp: stamp, localWallMillis: Self.wall, now: Self.t0)
        }
        XCTAssertEqual(heartbeat(.max), [.close(.protocolViolation(
            "heartbeat.source_last_sequence 18446744073709551615 is past the largest feed position, 2^53 − 1"), appliedAny: false)])
        XCTAssertEqual(heartbeat(FeedPosition.maximum + 1).count, 1)
        XCTAssertEqual(heartbeat(FeedPosition.maximum), [.linkEvent(.heartbeat(peerSequence: FeedPosition.maximum, clockOffsetMillis: nil))])
        XCTAssertEqual(heartbeat(99), [.close(.protocolViolation(
            "heartbeat.source_last_sequence 99 is behind 100, which the peer said before: its feed only grows"), appliedAny: false)])
        XCTAssertEqual(heartbeat(100), [.linkEvent(.heartbeat(peerSequence: 100, clockOffsetMillis: nil))])
        for bad in [Stamp(raw: 1), Stamp(raw: .max), Stamp(millis: PlausibleTime.range.upperBound, logical: 0)] {
            XCTAssertEqual(heartbeat(100, bad), [.close(.protocolViolation(
                "heartbeat.source_stamp \(bad.millis) ms is not a time between 2000 and 2200"), appliedAny: false)])
        }
        // After a batch, the peer's last is at least the batch's.
        var m = Self.machine(.streaming)
        Self.batch(&m, 51...52, sourceLast: 300)
        XCTAssertEqual(m.heartbeat(sourceLastSequence: 200, sourceStamp: .zero, localWallMillis: Self.wall, now: Self.t0).count, 1)
        XCTAssertTrue(m.isClosed)
    }

    /// What a peer writes in an error frame or an error body is shown on the link and
    /// logged: cut to 300 bytes on a character boundary, without control characters.
    func testPeerTextIsCutAndCleaned() {
        XCTAssertEqual(PeerText.shown("the node is stopping"), "the node is stopping")
        XCTAssertEqual(PeerText.shown("line\nforged: level=error\r\u{1B}[31m"), "line\u{FFFD}forged: level=error\u{FFFD}\u{FFFD}[31m")
        let long = PeerText.shown(String(repeating: "я", count: 10_000))
        XCTAssertEqual(long.utf8.count, 300 + "…".utf8.count)
        XCTAssertTrue(long.hasSuffix("я…"))
        XCTAssertEqual(PeerText.shown(bytes: [0x66, 0xFF, 0x6F]), "f\u{FFFD}o")
        XCTAssertEqual(PeerText.shown(bytes: [UInt8](repeating: 0x41, count: 16 << 20)).utf8.count, 300 + "…".utf8.count)
    }

    func testHeaderPositionsAreChecked() {
        func header(resumeAfter: UInt64, last: UInt64) -> [Action] {
            var m = Self.machine(.awaitingHeader)
            return Self.header(&m, resumeAfter: resumeAfter, last: last)
        }
        XCTAssertEqual(header(resumeAfter: 101, last: 100), [.close(.protocolViolation(
            "stream header resume_after 101 is past its last_sequence 100: a feed resumes within itself"), appliedAny: false)])
        XCTAssertEqual(header(resumeAfter: 0, last: .max), [.close(.protocolViolation(
            "stream header last_sequence 18446744073709551615 is past the largest feed position, 2^53 − 1"), appliedAny: false)])
        XCTAssertEqual(header(resumeAfter: 50, last: 50).count, 1)
        var m = Self.machine(.awaitingHeader)
        Self.header(&m, resumeAfter: 50, last: 50)
        XCTAssertEqual(Self.name(m), "streaming")
    }

    func testIdleTimeoutFiresExactlyAfterTheTimeoutWithNothingHeard() {
        var m = Self.machine(.streaming)
        XCTAssertEqual(m.nextTick, Self.at(15))
        XCTAssertEqual(m.tick(now: Self.at(10)), [])
        _ = m.heartbeat(sourceLastSequence: 101, sourceStamp: .zero, localWallMillis: 0, now: Self.at(10))
        XCTAssertEqual(m.tick(now: Self.at(24.999)), [])
        // Bytes of a long frame still arriving count as heard.
        XCTAssertEqual(m.readComplete(now: Self.at(20)), [.read])
        XCTAssertEqual(m.tick(now: Self.at(34.999)), [])
        XCTAssertEqual(m.nextTick, Self.at(35))
        XCTAssertEqual(m.tick(now: Self.at(35)), [.close(.idleTimeout(.seconds(15)), appliedAny: false)])
        XCTAssertNil(m.nextTick)
    }

    func testIdleTimeoutComesFromTheConfiguration() {
        var config = Self.config
        config.timers.idleTimeout = .seconds(2)
        var m = Session(configuration: config)
        _ = m.start(checkpoint: nil, now: Self.t0)
        XCTAssertEqual(m.tick(now: Self.at(1.999)), [])
        XCTAssertEqual(m.tick(now: Self.at(2)), [.close(.idleTimeout(.seconds(2)), appliedAny: false)])
    }

    func testCloseReasonsDescribeThemselves() {
        let reasons: [PullCloseReason] = [
            .refused(status: 503, error: nil), .peerError(Self.shutdown), .protocolViolation("x"), .undecodable("y"),
            .idleTimeout(.seconds(15)), .streamEnded, .connectionClosed, .transportFailed("z"), .mergeFailed("w"),
            .unexpectedEvent("v"),
        ]
        XCTAssertEqual(Set(reasons.map(\.description)).count, reasons.count)
        XCTAssertEqual(PullCloseReason.refused(status: 503, error: nil).description, "HTTP 503")
    }

    // MARK: - Random schedules

    /// Seeds that once failed stay here.
    static let regressionSeeds: [UInt64] = []

    func testRandomSchedulesKeepTheInvariants() {
        for seed in Self.regressionSeeds + Array(1...300) {
            runRandomSchedule(seed: seed)
        }
    }

    func runRandomSchedule(seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        let mergeLimit = [1, 100, 1024, 4096].randomElement(using: &rng) ?? 1024
        let maxBatch = [0, 1, 64, 4096].randomElement(using: &rng) ?? 0
        var config = Session.Configuration(peer: Self.peer, protocolVersion: 2, maxBatch: UInt32(maxBatch), mergeLimit: mergeLimit)
        config.timers.idleTimeout = .seconds(3)
        let idle = config.timers.idleTimeout
        var m = Session(configuration: config)
        var now = Self.t0
        var heardAt = now
        var sent: UInt64 = UInt64.random(in: 0...50, using: &rng)  // the peer's position in its feed
        var mergesOut: [Session.Gathered] = []
        var lastMerged: UInt64 = sent
        var committed = false
        /// A read asked of the channel and not yet completed; with autoRead off nothing
        /// arrives without one, so a machine that takes frames but has none out is stalled.
        var readOutstanding = false
        var closes = 0

        func fail(_ message: String, _ step: Int) { XCTFail("seed \(seed) step \(step): \(message)") }

        func absorb(_ actions: [Action], _ step: Int, closedBefore: Bool) {
            if closedBefore && !actions.isEmpty { fail("actions after close: \(actions)", step) }
            for a in actions {
                switch a {
                case .submitMerge(let g):
                    if !mergesOut.isEmpty { fail("a second merge in flight", step) }
                    if g.payloads.count > mergeLimit { fail("a merge of \(g.payloads.count) > \(mergeLimit)", step) }
                    if g.through <= lastMerged { fail("merge through \(g.through) after \(lastMerged)", step) }
                    if g.sourceStoreID != Self.storeID { fail("merge names store \(g.sourceStoreID)", step) }
                    lastMerged = g.through
                    mergesOut.append(g)
                case .read:
                    if !m.acceptsFrames { fail("a read while full", step) }
                    readOutstanding = true
                case .close(_, let applied):
                    closes += 1
                    if applied != committed { fail("appliedAny \(applied), committed \(committed)", step) }
                case .linkEvent, .sendRequest, .resumeDecoding:
                    break
                }
            }
            if closes > 1 { fail("closed twice", step) }
            if case .streaming(let s) = m.state, (s.gathered?.payloads.count ?? 0) > mergeLimit {
                fail("gathered \(s.gathered?.payloads.count ?? 0) > \(mergeLimit)", step)
            }
        }

        /// Feeds one event, checking what applies to every event.
        func step(_ n: Int, heard: Bool, _ event: (inout Session) -> [Action]) {
            let closedBefore = m.isClosed
            let listeningBefore = m.nextTick != nil
            let before = m.state
            let actions = event(&m)
            absorb(actions, n, closedBefore: closedBefore)
            if heard && listeningBefore && !m.isClosed { heardAt = now }
            if actions.contains(.resumeDecoding) { heardAt = now }
            if case .streaming(let b) = before, case .streaming(let a) = m.state, a.position < b.position {
                fail("position went back from \(b.position) to \(a.position)", n)
            }
            if !m.isClosed, let next = m.nextTick, next != heardAt + idle {
                fail("idle deadline \(next), heard at \(heardAt)", n)
            }
            if m.acceptsFrames && !m.isClosed && !readOutstanding { fail("takes frames but asked for none: stalled", n) }
        }

        /// A batch after `sent`: mostly valid, now and then one out of order.
        func randomBatch(_ n: Int) {
            let count = Int.random(in: 0...m.configuration.batchLimit, using: &rng)
            var sequences: [UInt64] = []
            var s = sent
            for _ in 0..<count { s += UInt64.random(in: 1...3, using: &rng); sequences.append(s) }
            var through = s + UInt64.random(in: 0...2, using: &rng)
            if through == sent { through += 1 }
            if Int.random(in: 0..<200, using: &rng) == 0 { through = sent }
            let before = m.state
            step(n, heard: true) {
                $0.batch(sequences: sequences, through: through, sourceLast: Self.randomLast,
                         payloads: sequences.map { Int($0) }, now: now)
            }
            if case .streaming = before, case .streaming = m.state { sent = through }
        }

        func readComplete(_ n: Int) {
            readOutstanding = false
            step(n, heard: true) { $0.readComplete(now: now) }
        }

        func tick(_ n: Int) {
            let deadline = m.nextTick
            let wasClosed = m.isClosed
            step(n, heard: false) { $0.tick(now: now) }
            let fired = !wasClosed && m.closeReason == .idleTimeout(idle)
            if let deadline, now >= deadline, !fired, !wasClosed { fail("idle deadline passed without closing", n) }
            if fired && (deadline.map { now < $0 } ?? true) { fail("idle timeout before its deadline", n) }
        }

        step(0, heard: true) { $0.start(checkpoint: Self.checkpoint, now: now) }
        for n in 1...400 {
            now = now + .milliseconds(100 * Int64.random(in: 0...4, using: &rng))  // coarse, so deadlines are hit exactly
            let r = Int.random(in: 0..<1000, using: &rng)
            if r >= 992 {
                // A peer, a network or a shell misbehaving: the stream must end with a reason.
                switch Int.random(in: 0..<8, using: &rng) {
                case 0: step(n, heard: false) { $0.errorFrame(Self.shutdown) }
                case 1: step(n, heard: false) { $0.connectionClosed() }
                case 2: step(n, heard: false) { $0.mergeFailed("random") }
                case 3: step(n, heard: false) { $0.undecodable("random") }
                case 4: step(n, heard: true) { $0.responseHead(status: 200, now: now) }
                case 5: step(n, heard: true) { Self.header(&$0, resumeAfter: sent, now: now) }
                case 6: randomBatch(n)  // perhaps before the header, or while full
                default: step(n, heard: false) { $0.streamEnded() }
                }
                continue
            }
            if r < 15 {
                // The peer goes quiet for a while: the idle timer may fire, unless our merge holds reads back.
                for _ in 0..<Int.random(in: 1...40, using: &rng) where !m.isClosed {
                    now = now + .milliseconds(100)
                    tick(n)
                }
                continue
            }
            switch m.state {
            case .idle, .refused, .closed:
                tick(n)
            case .awaitingResponse:
                if r < 300 { step(n, heard: true) { $0.responseHead(status: 200, now: now) } }
                else if r < 600 && readOutstanding { readComplete(n) } else { tick(n) }
            case .awaitingHeader:
                if r < 300 { step(n, heard: true) { Self.header(&$0, resumeAfter: sent, last: Self.randomLast, now: now) } }
                else if r < 600 && readOutstanding { readComplete(n) } else { tick(n) }
            case .streaming:
                if r < 350 && m.acceptsFrames {
                    randomBatch(n)
                } else if r < 450 {
                    step(n, heard: true) {
                        $0.heartbeat(sourceLastSequence: Self.randomLast, sourceStamp: Stamp(millis: Self.wall, logical: 0),
                                     localWallMillis: Self.wall, now: now)
                    }
                } else if r < 650 && !mergesOut.isEmpty {
                    mergesOut.removeFirst()
                    committed = true
                    step(n, heard: false) { $0.mergeCommitted(now: now) }
                } else if r < 800 && readOutstanding {
                    readComplete(n)
                } else {
                    tick(n)
                }
            }
        }
        if m.isClosed {
            XCTAssertEqual(closes, 1, "seed \(seed): one close")
            for e in Event.allCases { XCTAssertEqual(Self.apply(e, &m), [], "seed \(seed): \(e) after close") }
        }
    }
}
