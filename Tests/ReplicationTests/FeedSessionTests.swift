import CaseModel
import TestSupport
import XCTest
@testable import Replication

/// The sender's machine, driven with no channel and no store: every event in every
/// state, the rules of each legal path, and seeded random schedules checked against
/// the invariants (position only grows, at most one page out, a page only while
/// writable, nothing lost, heartbeat iff idle for the interval, silence once finished).
final class FeedSessionTests: XCTestCase {
    typealias Action = FeedSession.Action

    static let path = "/replication/v2/pull"
    static let peer = NodeID("irk-office-1")!
    static let storeID: [UInt8] = Array(repeating: 7, count: 16)
    static let config = FeedSession.Configuration(pullPath: path, supportedVersions: 2...2)
    static let t0 = MonotonicInstant(nanoseconds: 1_000_000_000_000)

    static func at(_ seconds: Double) -> MonotonicInstant { t0 + .milliseconds(Int64(seconds * 1000)) }

    static func request(version: UInt32 = 2, checkpoint: FeedCheckpoint? = FeedCheckpoint(sourceStoreID: storeID, sequence: 100),
                        maxBatch: UInt32 = 0, method: String = "POST", path: String = path,
                        peer: NodeID? = peer, allowed: Bool = true) -> FeedSession.Request {
        .init(method: method, path: path, peer: peer, peerAllowed: allowed,
              body: .pull(.init(protocolVersion: version, checkpoint: checkpoint, maxBatch: maxBatch)))
    }

    static let store = FeedSession.StoreFacts(storeID: storeID, lastSequence: 500, served: 500)

    // MARK: - States

    enum StateKind: String, CaseIterable {
        case awaitingRequest
        /// Streaming, a page out, writable, at 100.
        case reading
        /// Streaming, caught up at 500, served marks not yet persisted.
        case drained
        /// Streaming at 200, flow control has the stream unwritable, more to send.
        case blocked
        case finished
    }

    static func machine(_ kind: StateKind) -> FeedSession {
        var m = FeedSession(configuration: config)
        switch kind {
        case .awaitingRequest:
            break
        case .reading:
            _ = m.requestReceived(request(), store: store, now: t0)
        case .drained:
            _ = m.requestReceived(request(), store: store, now: t0)
            _ = m.pageSent(through: 500, entriesRead: 400, firstFrameEntries: 400, writable: true, now: t0)
            _ = m.pageSent(through: nil, entriesRead: 0, firstFrameEntries: 0, writable: true, now: t0)
        case .blocked:
            _ = m.requestReceived(request(), store: store, now: t0)
            _ = m.pageSent(through: 200, entriesRead: 512, firstFrameEntries: 100, writable: false, now: t0)
        case .finished:
            _ = m.channelClosed()
        }
        XCTAssertEqual(name(m), kind.rawValue, "fixture \(kind)")
        return m
    }

    /// A name per fixture, read from the state (so the table can check where each event leads).
    static func name(_ m: FeedSession) -> String {
        switch m.state {
        case .awaitingRequest: "awaitingRequest"
        case .finished: "finished"
        case .streaming(let s):
            switch s.pump {
            case .reading: "reading"
            case .idle(drained: true): "drained"
            case .idle(drained: false): s.writable ? "pending" : "blocked"
            }
        }
    }

    // MARK: - Events

    enum Event: String, CaseIterable {
        case requestOK, requestBadRoute, requestBodyTooLarge, writable, unwritable, feedCommitted,
             pageSent, emptyPage, readFailed, tickEarly, tickDue, shuttingDown, channelClosed, renew
    }

    static func apply(_ e: Event, _ m: inout FeedSession) -> [Action] {
        switch e {
        case .requestOK: m.requestReceived(request(), store: store, now: at(1))
        case .requestBadRoute: m.requestReceived(request(method: "GET"), store: store, now: at(1))
        case .requestBodyTooLarge: m.requestBodyTooLarge()
        case .writable: m.writabilityChanged(true)
        case .unwritable: m.writabilityChanged(false)
        case .feedCommitted: m.feedCommitted()
        case .pageSent: m.pageSent(through: 510, entriesRead: 10, firstFrameEntries: 10, writable: true, now: at(1))
        case .emptyPage: m.pageSent(through: nil, entriesRead: 0, firstFrameEntries: 0, writable: true, now: at(1))
        case .readFailed: m.readFailed("disk")
        case .tickEarly: m.tick(now: at(4.999))
        case .tickDue: m.tick(now: at(5))
        case .shuttingDown: m.shuttingDown()
        case .channelClosed: m.channelClosed()
        case .renew: m.renew()
        }
    }

    // MARK: - Every event in every state

    func testEveryEventInEveryState() {
        let begin: Action = .beginStream(resume: .init(resumeAfter: 100, checkpointReset: false, rewound: false),
                                         lastSequence: 500, protocolVersion: 2, link: .base)
        let routeError = SessionError(.badRequest, "GET \(Self.path): the replication endpoint is POST \(Self.path)")
        let tooLarge = SessionError(.badRequest, "the PullRequest exceeds 65536 bytes")
        let readError = SessionError(.internal, "reading the feed failed: disk")
        let shutdown = SessionError(.shuttingDown, "this node is shutting down")
        let secondRequest = SessionError(.badRequest, "a second request on a pull stream")
        let lateBody = SessionError(.badRequest, "request body after the stream began")
        let unasked = SessionError(.internal, "a feed page was reported that was not asked for")
        let early = SessionError(.internal, "a feed page was reported before the stream began")
        /// A begun stream's end: final frame, observer gone, served marks kept if any.
        func end(_ e: SessionError, persist: Bool) -> ([Action], String) {
            ([.finish(e), .stopObserving] + (persist ? [.persistServed] : []), "finished")
        }

        let table: [StateKind: [Event: ([Action], String)]] = [
            .awaitingRequest: [
                .requestOK: ([begin, .sendPage(after: 100, limit: 512)], "reading"),
                .requestBadRoute: ([.refuse(routeError)], "finished"),
                .requestBodyTooLarge: ([.refuse(tooLarge)], "finished"),
                .writable: ([], "awaitingRequest"),
                .unwritable: ([], "awaitingRequest"),
                .feedCommitted: ([], "awaitingRequest"),
                .pageSent: ([.refuse(early)], "finished"),
                .emptyPage: ([.refuse(early)], "finished"),
                .readFailed: ([.refuse(readError)], "finished"),
                .tickEarly: ([], "awaitingRequest"),
                .tickDue: ([], "awaitingRequest"),
                .shuttingDown: ([.refuse(shutdown)], "finished"),
                .channelClosed: ([], "finished"),
                .renew: ([], "awaitingRequest"),
            ],
            .reading: [
                .requestOK: end(secondRequest, persist: false),
                .requestBadRoute: end(secondRequest, persist: false),
                .requestBodyTooLarge: end(lateBody, persist: false),
                .writable: ([], "reading"),
                .unwritable: ([], "reading"),
                .feedCommitted: ([], "reading"),
                .pageSent: ([.noteServed(through: 510), .sendPage(after: 510, limit: 512)], "reading"),
                .emptyPage: ([], "drained"),
                .readFailed: end(readError, persist: false),
                .tickEarly: ([], "reading"),
                .tickDue: ([.sendHeartbeat], "reading"),
                .shuttingDown: end(shutdown, persist: false),
                .channelClosed: ([.stopObserving], "finished"),
                .renew: ([.endStream, .stopObserving], "finished"),
            ],
            .drained: [
                .requestOK: end(secondRequest, persist: true),
                .requestBadRoute: end(secondRequest, persist: true),
                .requestBodyTooLarge: end(lateBody, persist: true),
                .writable: ([], "drained"),
                .unwritable: ([], "drained"),
                .feedCommitted: ([.sendPage(after: 500, limit: 512)], "reading"),
                .pageSent: end(unasked, persist: true),
                .emptyPage: end(unasked, persist: true),
                .readFailed: end(readError, persist: true),
                .tickEarly: ([], "drained"),
                .tickDue: ([.persistServed, .sendHeartbeat], "drained"),
                .shuttingDown: end(shutdown, persist: true),
                .channelClosed: ([.stopObserving, .persistServed], "finished"),
                .renew: ([.endStream, .stopObserving, .persistServed], "finished"),
            ],
            .blocked: [
                .requestOK: end(secondRequest, persist: true),
                .requestBadRoute: end(secondRequest, persist: true),
                .requestBodyTooLarge: end(lateBody, persist: true),
                .writable: ([.sendPage(after: 200, limit: 200)], "reading"),
                .unwritable: ([], "blocked"),
                .feedCommitted: ([], "blocked"),
                .pageSent: end(unasked, persist: true),
                .emptyPage: end(unasked, persist: true),
                .readFailed: end(readError, persist: true),
                .tickEarly: ([], "blocked"),
                // The heartbeat is queued even while unwritable, as the reference did.
                .tickDue: ([.persistServed, .sendHeartbeat], "blocked"),
                .shuttingDown: end(shutdown, persist: true),
                .channelClosed: ([.stopObserving, .persistServed], "finished"),
                .renew: ([.endStream, .stopObserving, .persistServed], "finished"),
            ],
            .finished: Dictionary(uniqueKeysWithValues: Event.allCases.map { ($0, ([], "finished")) }),
        ]

        var checked = 0
        for kind in StateKind.allCases {
            for event in Event.allCases {
                guard let (actions, next) = table[kind]?[event] else {
                    XCTFail("no expectation for \(event) in \(kind)")
                    continue
                }
                var m = Self.machine(kind)
                XCTAssertEqual(Self.apply(event, &m), actions, "\(event) in \(kind)")
                XCTAssertEqual(Self.name(m), next, "\(event) in \(kind): next state")
                checked += 1
            }
        }
        XCTAssertEqual(checked, StateKind.allCases.count * Event.allCases.count)
    }

    // MARK: - Request checks

    func testRequestChecksInOrder() {
        func refusal(_ r: FeedSession.Request, _ store: FeedSession.StoreFacts = FeedSessionTests.store) -> SessionError? {
            var m = FeedSession(configuration: Self.config)
            let actions = m.requestReceived(r, store: store, now: Self.t0)
            XCTAssertTrue(m.isFinished || !actions.isEmpty)
            if case .refuse(let e)? = actions.first { return e }
            return nil
        }
        // The route is checked first, whatever else is wrong.
        XCTAssertEqual(refusal(Self.request(version: 9, path: "/x", peer: nil, allowed: false))?.code, .badRequest)
        XCTAssertEqual(refusal(Self.request(version: 9, peer: nil, allowed: false)),
                       SessionError(.unauthenticated, "no verified client certificate with a urn:ekc:node: id"))
        let forbidden = refusal(Self.request(version: 9, allowed: false))
        XCTAssertEqual(forbidden, SessionError(.forbidden, "node irk-office-1 is not a replication peer of this node"))
        XCTAssertEqual(forbidden?.httpStatus, 403)
        var garbled = Self.request()
        garbled.body = .undecodable("truncated varint")
        XCTAssertEqual(refusal(garbled), SessionError(.badRequest, "the body is not a PullRequest: truncated varint"))
        let mismatch = refusal(Self.request(version: 1))
        XCTAssertEqual(mismatch, SessionError(.protocolVersionMismatch,
                                              "protocol version 1 is not supported; this node speaks v2: upgrade the pulling node to a release that speaks v2",
                                              supportedVersions: 2...2))
        XCTAssertEqual(mismatch?.httpStatus, 400)
        let long = FeedCheckpoint(sourceStoreID: Array(repeating: 1, count: 65), sequence: 3)
        XCTAssertEqual(refusal(Self.request(checkpoint: long)),
                       SessionError(.badRequest, "checkpoint.source_store_id is longer than 64 bytes"))
        let longest = FeedCheckpoint(sourceStoreID: Array(repeating: 1, count: 64), sequence: 3)
        XCTAssertNil(refusal(Self.request(checkpoint: longest)))  // another store: a reset, not a refusal
        // A feed position past 2^53 − 1 is refused here as the puller refuses it in a header.
        XCTAssertEqual(refusal(Self.request(checkpoint: FeedCheckpoint(sourceStoreID: [1], sequence: .max))),
                       SessionError(.badRequest, "checkpoint.sequence 18446744073709551615 is past the largest feed position, 2^53 − 1"))
        XCTAssertNil(refusal(Self.request(checkpoint: FeedCheckpoint(sourceStoreID: [1], sequence: FeedPosition.maximum))))
        XCTAssertNil(refusal(Self.request()))
    }

    func testSupportedVersionsAreAParameter() {
        var v1 = FeedSession(configuration: .init(pullPath: "/replication/v1/pull", supportedVersions: 1...2))
        var r = Self.request(version: 1, path: "/replication/v1/pull")
        guard case .beginStream(_, _, let version, _)? = v1.requestReceived(r, store: Self.store, now: Self.t0).first else {
            return XCTFail("version 1 of 1...2 not served")
        }
        XCTAssertEqual(version, 1, "the stream is in the requested version")
        var v2 = FeedSession(configuration: Self.config)
        r = Self.request(version: 3)
        XCTAssertEqual(v2.requestReceived(r, store: Self.store, now: Self.t0).first,
                       .refuse(.init(.protocolVersionMismatch, "protocol version 3 is not supported; this node speaks v2: the puller retries in a version both speak, or this node needs a release that speaks v3",
                                     supportedVersions: 2...2)))
    }

    /// A puller two majors behind learns what to install; one ahead, that it retries lower.
    func testVersionMismatchNamesTheReleaseToInstall() {
        var c = FeedSession.Configuration(pullPath: Self.path, supportedVersions: 3...4, release: "0.30.0",
                                          firstReleases: [2: "0.18.0", 3: "0.25.0"])
        c.timers = .protocolDefaults
        var m = FeedSession(configuration: c)
        XCTAssertEqual(m.requestReceived(Self.request(version: 2), store: Self.store, now: Self.t0),
                       [.refuse(.init(.protocolVersionMismatch,
                                      "protocol version 2 is not supported; this node (release 0.30.0) speaks v3–v4: upgrade the pulling node to release 0.25.0 or later",
                                      supportedVersions: 3...4))])
        m = FeedSession(configuration: c)
        guard case .refuse(let e)? = m.requestReceived(Self.request(version: 5), store: Self.store, now: Self.t0).first else {
            return XCTFail("version 5 served")
        }
        XCTAssertEqual(e.supportedVersions, 3...4, "the range lets a newer puller retry in a version both speak")
        XCTAssertTrue(e.message.contains("retries in a version both speak"), e.message)
    }

    /// A link speaks what both ends support; a set that breaks a rule is refused naming it.
    func testCapabilitiesAreCheckedAndIntersected() {
        var c = Self.config
        c.capabilities = Capabilities(known: ["retention", "callbacks"])
        func begin(_ advertised: [String]) -> [Action] {
            var m = FeedSession(configuration: c)
            let r = FeedSession.Request(method: "POST", path: Self.path, peer: Self.peer, peerAllowed: true,
                                        body: .pull(.init(protocolVersion: 2, checkpoint: nil, capabilities: advertised)))
            return m.requestReceived(r, store: Self.store, now: Self.t0)
        }
        func link(_ advertised: [String]) -> [String]? {
            guard case .beginStream(_, _, _, let link)? = begin(advertised).first else { return nil }
            return link.names
        }
        XCTAssertEqual(link([]), [], "a puller of a release before capabilities: the base protocol")
        XCTAssertEqual(link(["retention"]), ["retention"])
        XCTAssertEqual(link(["zzz-future", "callbacks", "retention"]), ["callbacks", "retention"],
                       "a name this build does not know is left out, not refused")
        let refusals: [([String], String)] = [
            (["retention", "retention"], "capabilities[1]: retention is advertised twice"),
            ([""], "capabilities[0]: a capability name has 1–48 bytes, not 0"),
            ([String(repeating: "a", count: 49)], "capabilities[0]: a capability name has 1–48 bytes, not 49"),
            (["Retention"], "capabilities[0]: a capability name is lower-case ASCII letters, digits, '-' and '.', starting with a letter"),
            (["1x"], "capabilities[0]: a capability name is lower-case ASCII letters, digits, '-' and '.', starting with a letter"),
            (["a b"], "capabilities[0]: a capability name is lower-case ASCII letters, digits, '-' and '.', starting with a letter"),
            (["ретеншн"], "capabilities[0]: a capability name is lower-case ASCII letters, digits, '-' and '.', starting with a letter"),
            ((0..<65).map { "c\($0)" }, "capabilities: at most 64 capabilities, not 65"),
        ]
        for (advertised, why) in refusals {
            XCTAssertEqual(begin(advertised), [.refuse(.init(.badRequest, why))], "\(advertised.prefix(2))")
        }
        XCTAssertNotNil(link((0..<64).map { "c\($0)" }), "64 names are within the limit")
    }

    func testStreamBeginsAtTheResumePoint() {
        func begin(_ checkpoint: FeedCheckpoint?, served: UInt64?) -> [Action] {
            var m = FeedSession(configuration: Self.config)
            return m.requestReceived(Self.request(checkpoint: checkpoint),
                                     store: .init(storeID: Self.storeID, lastSequence: 500, served: served), now: Self.t0)
        }
        let other = FeedCheckpoint(sourceStoreID: [9], sequence: 300)
        XCTAssertEqual(begin(other, served: 500),
                       [.beginStream(resume: .init(resumeAfter: 0, checkpointReset: true, rewound: false),
                                     lastSequence: 500, protocolVersion: 2, link: .base), .sendPage(after: 0, limit: 512)])
        let ours = FeedCheckpoint(sourceStoreID: Self.storeID, sequence: 300)
        XCTAssertEqual(begin(ours, served: 120),
                       [.beginStream(resume: .init(resumeAfter: 120, checkpointReset: false, rewound: true),
                                     lastSequence: 500, protocolVersion: 2, link: .base), .sendPage(after: 120, limit: 512)])
        XCTAssertEqual(begin(nil, served: nil).first,
                       .beginStream(resume: .init(resumeAfter: 0, checkpointReset: false, rewound: false),
                                    lastSequence: 500, protocolVersion: 2, link: .base))
    }

    func testBatchLimitFollowsTheRequest() {
        for (asked, limit) in [(0, 512), (1, 1), (7, 7), (4096, 4096), (4097, 4096), (UInt32.max, 4096)] as [(UInt32, Int)] {
            var m = FeedSession(configuration: Self.config)
            let actions = m.requestReceived(Self.request(maxBatch: asked), store: Self.store, now: Self.t0)
            XCTAssertEqual(actions.last, .sendPage(after: 100, limit: limit), "max_batch \(asked)")
        }
    }

    // MARK: - Pumping

    func testAStreamUnwritableFromTheStartWaitsForWritability() {
        var m = FeedSession(configuration: Self.config)
        XCTAssertEqual(m.writabilityChanged(false), [])
        let actions = m.requestReceived(Self.request(), store: Self.store, now: Self.t0)
        XCTAssertEqual(actions.count, 1, "begins, but reads nothing it could not write")
        XCTAssertEqual(m.writabilityChanged(true), [.sendPage(after: 100, limit: 512)])
    }

    func testPageLimitShrinksWhileEntriesAreLongAndRecovers() {
        var m = Self.machine(.reading)
        // Long tickets: the first frame took 20 of 512 entries; read two frames' worth next time.
        XCTAssertEqual(m.pageSent(through: 140, entriesRead: 512, firstFrameEntries: 20, writable: true, now: Self.at(1)),
                       [.noteServed(through: 140), .sendPage(after: 140, limit: 40)])
        XCTAssertEqual(m.pageSent(through: 141, entriesRead: 40, firstFrameEntries: 1, writable: true, now: Self.at(1)),
                       [.noteServed(through: 141), .sendPage(after: 141, limit: 2)])
        // Short again: the page fit one frame, so the limit doubles back to the batch limit.
        var limits: [Int] = []
        var position: UInt64 = 141
        for _ in 0..<10 {
            let actions = m.pageSent(through: position + 1, entriesRead: 2, firstFrameEntries: 2, writable: true, now: Self.at(1))
            position += 1
            guard case .sendPage(_, let limit)? = actions.last else { return XCTFail("no next page: \(actions)") }
            limits.append(limit)
        }
        XCTAssertEqual(limits, [4, 8, 16, 32, 64, 128, 256, 512, 512, 512])
    }

    func testACommitDuringAnEmptyReadIsNotLost() {
        var m = Self.machine(.reading)
        XCTAssertEqual(m.feedCommitted(), [], "a page is out; one at a time")
        // The page may have been read before the commit: empty, but not drained.
        XCTAssertEqual(m.pageSent(through: nil, entriesRead: 0, firstFrameEntries: 0, writable: true, now: Self.at(1)),
                       [.sendPage(after: 100, limit: 512)])
        XCTAssertEqual(m.pageSent(through: nil, entriesRead: 0, firstFrameEntries: 0, writable: true, now: Self.at(1)), [])
        XCTAssertEqual(Self.name(m), "drained")
    }

    func testAPageThatStopsAtUnwritableResumesOnWritability() {
        var m = Self.machine(.reading)
        XCTAssertEqual(m.pageSent(through: 150, entriesRead: 512, firstFrameEntries: 512, writable: false, now: Self.at(1)),
                       [.noteServed(through: 150)])
        XCTAssertEqual(m.feedCommitted(), [])
        XCTAssertEqual(m.tick(now: Self.at(2)), [], "no page while unwritable, even on a tick")
        XCTAssertEqual(m.writabilityChanged(true), [.sendPage(after: 150, limit: 512)])
        XCTAssertEqual(m.writabilityChanged(true), [], "never two pages out")
    }

    func testWritabilityChangingWhileAPageIsOutIsTakenFromTheReport() {
        var m = Self.machine(.reading)
        XCTAssertEqual(m.writabilityChanged(false), [])
        XCTAssertEqual(m.writabilityChanged(true), [], "the page is still out")
        // The shell's report after writing is the truth about writability.
        XCTAssertEqual(m.pageSent(through: 120, entriesRead: 20, firstFrameEntries: 20, writable: false, now: Self.at(1)),
                       [.noteServed(through: 120)])
        XCTAssertEqual(Self.name(m), "blocked")
    }

    func testPositionNeverMovesBackwards() {
        for through: UInt64 in [100, 99, 0] {
            var m = Self.machine(.reading)
            XCTAssertEqual(m.pageSent(through: through, entriesRead: 1, firstFrameEntries: 1, writable: true, now: Self.at(1)),
                           [.finish(.init(.internal, "a feed page ended at \(through), not past 100")), .stopObserving])
            XCTAssertTrue(m.isFinished)
        }
    }

    func testAbsurdCountsFromTheShellDoNotTrap() {
        var m = FeedSession(configuration: .init(pullPath: Self.path, supportedVersions: 2...2, maxBatch: .max))
        _ = m.requestReceived(Self.request(maxBatch: .max), store: Self.store, now: Self.t0)
        XCTAssertEqual(m.pageSent(through: 101, entriesRead: .max, firstFrameEntries: .max - 1, writable: true, now: Self.t0),
                       [.noteServed(through: 101), .sendPage(after: 101, limit: Int(UInt32.max))])
        XCTAssertEqual(m.pageSent(through: 102, entriesRead: -5, firstFrameEntries: -1, writable: true, now: Self.t0),
                       [.noteServed(through: 102), .sendPage(after: 102, limit: Int(UInt32.max))])
        XCTAssertEqual(m.pageSent(through: .max, entriesRead: 1, firstFrameEntries: 1, writable: true, now: Self.t0),
                       [.noteServed(through: .max), .sendPage(after: .max, limit: Int(UInt32.max))])
        var tiny = FeedSession(configuration: .init(pullPath: Self.path, supportedVersions: 2...2, defaultBatch: 0, maxBatch: 0))
        XCTAssertEqual(tiny.requestReceived(Self.request(), store: Self.store, now: Self.t0).last, .sendPage(after: 100, limit: 1))
    }

    func testPagesWithFramesButNoEntriesStillAdvance() {
        // Scoped feeds (§9) send batches that only advance through_sequence.
        var m = Self.machine(.reading)
        XCTAssertEqual(m.pageSent(through: 160, entriesRead: 60, firstFrameEntries: 0, writable: true, now: Self.at(1)),
                       [.noteServed(through: 160), .sendPage(after: 160, limit: 512)])
    }

    // MARK: - Heartbeats

    func testHeartbeatIsDueOnlyAfterTheIntervalWithNothingSent() {
        var m = Self.machine(.drained)  // began at t0 with a heartbeat, pages sent at t0
        XCTAssertEqual(m.nextTick, Self.at(5))
        XCTAssertEqual(m.tick(now: Self.at(4.999)), [])
        XCTAssertEqual(m.tick(now: Self.at(5)), [.persistServed, .sendHeartbeat])
        XCTAssertEqual(m.nextTick, Self.at(10))
        XCTAssertEqual(m.tick(now: Self.at(9)), [])
        // Frames sent count as sending: the heartbeat moves out.
        XCTAssertEqual(m.feedCommitted(), [.sendPage(after: 500, limit: 512)])
        XCTAssertEqual(m.pageSent(through: 501, entriesRead: 1, firstFrameEntries: 1, writable: true, now: Self.at(9.5)).first,
                       .noteServed(through: 501))
        XCTAssertEqual(m.pageSent(through: nil, entriesRead: 0, firstFrameEntries: 0, writable: true, now: Self.at(9.5)), [])
        XCTAssertEqual(m.tick(now: Self.at(10)), [])
        XCTAssertEqual(m.nextTick, Self.at(14.5))
        XCTAssertEqual(m.tick(now: Self.at(14.5)), [.persistServed, .sendHeartbeat])
        // Nothing noted since: no needless persist.
        XCTAssertEqual(m.tick(now: Self.at(19.5)), [.sendHeartbeat])
        // An empty page sends nothing, so it does not defer the heartbeat.
        XCTAssertEqual(m.feedCommitted(), [.sendPage(after: 501, limit: 512)])
        XCTAssertEqual(m.pageSent(through: nil, entriesRead: 0, firstFrameEntries: 0, writable: true, now: Self.at(24)), [])
        XCTAssertEqual(m.tick(now: Self.at(24.5)), [.sendHeartbeat])
    }

    func testTimersComeFromTheConfiguration() {
        var config = Self.config
        config.timers.heartbeatInterval = .seconds(2)
        var m = FeedSession(configuration: config)
        _ = m.requestReceived(Self.request(), store: Self.store, now: Self.t0)
        XCTAssertEqual(m.tick(now: Self.at(1.999)), [])
        XCTAssertEqual(m.tick(now: Self.at(2)), [.sendHeartbeat])
    }

    func testNoTimerOutsideAStream() {
        XCTAssertNil(Self.machine(.awaitingRequest).nextTick)
        XCTAssertNil(Self.machine(.finished).nextTick)
        XCTAssertEqual(Self.machine(.blocked).nextTick, Self.at(5))
    }

    func testAClockThatStepsBackDoesNotFireOrTrap() {
        var m = Self.machine(.drained)
        XCTAssertEqual(m.tick(now: MonotonicInstant(nanoseconds: 0)), [])
        XCTAssertEqual(m.tick(now: MonotonicInstant(nanoseconds: .max)), [.persistServed, .sendHeartbeat])
    }

    // MARK: - Random schedules

    /// The feed and channel as a shell would see them, to answer the machine's actions.
    struct World {
        var feedLast: UInt64 = 500
        var writable = true
        var now = FeedSessionTests.t0
        /// The page asked for, read at once (as the shell does) but reported later, so that
        /// commits can land between the read and the report.
        var pageOut: (after: UInt64, limit: Int, feedLast: UInt64)?
        var lastSent: MonotonicInstant?
        var position: UInt64?
        var served: UInt64 = 0
        var finished = false
    }

    func testRandomSchedulesKeepTheInvariants() {
        for seed in Self.regressionSeeds + Array(1...300) {
            runRandomSchedule(seed: seed)
        }
    }

    /// Seeds that once failed stay here.
    static let regressionSeeds: [UInt64] = []

    func runRandomSchedule(seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        var config = Self.config
        config.timers.heartbeatInterval = .seconds(2)
        var m = FeedSession(configuration: config)
        var w = World()
        let interval = config.timers.heartbeatInterval
        let maxBatch = [0, 3, 50, 9000].randomElement(using: &rng) ?? 0
        let batchLimit = BatchSequence.limit(requested: UInt32(maxBatch))

        func fail(_ message: String, _ step: Int) {
            XCTFail("seed \(seed) step \(step): \(message)")
        }

        /// Checks the actions of one event and carries them out in the world.
        func absorb(_ actions: [Action], _ step: Int, tick: Bool = false) {
            if w.finished && !actions.isEmpty { fail("actions after finish: \(actions)", step) }
            if tick, let last = w.lastSent, !w.finished {
                let due = w.now - last >= interval
                if due != actions.contains(.sendHeartbeat) { fail("heartbeat due \(due) but got \(actions)", step) }
            }
            for a in actions {
                switch a {
                case .beginStream(let resume, _, _, _):
                    w.position = resume.resumeAfter
                    w.lastSent = w.now
                case .sendPage(let after, let limit):
                    if w.pageOut != nil { fail("a second page out", step) }
                    if !w.writable { fail("a page while unwritable", step) }
                    if after != w.position { fail("page after \(after), position \(String(describing: w.position))", step) }
                    if !(1...batchLimit).contains(limit) { fail("page limit \(limit) outside 1...\(batchLimit)", step) }
                    w.pageOut = (after, limit, w.feedLast)
                case .sendHeartbeat:
                    w.lastSent = w.now
                case .noteServed(let through):
                    if through <= w.served { fail("served went from \(w.served) to \(through)", step) }
                    w.served = through
                case .refuse, .finish, .endStream:
                    w.finished = true
                case .persistServed, .stopObserving:
                    break
                }
            }
            if m.isFinished { w.finished = true; w.pageOut = nil }
        }

        /// The shell reads and writes the outstanding page.
        func completePage(_ step: Int) {
            guard let (after, limit, feedLast) = w.pageOut else { return }
            w.pageOut = nil
            let read = Int(min(UInt64(limit), feedLast - after))
            var written = 0
            var first = 0
            if Int.random(in: 0..<40, using: &rng) == 0 {
                absorb(m.readFailed("random"), step)
                return
            }
            while written < read {
                let frame = Int.random(in: 1...(read - written), using: &rng)
                if first == 0 { first = frame }
                written += frame
                if Int.random(in: 0..<4, using: &rng) == 0 { w.writable = false; break }
            }
            let through: UInt64? = written == 0 ? nil : after + UInt64(written)
            if let through { w.position = through; w.lastSent = w.now }
            absorb(m.pageSent(through: through, entriesRead: read, firstFrameEntries: first, writable: w.writable, now: w.now), step)
        }

        absorb(m.requestReceived(Self.request(maxBatch: UInt32(maxBatch)), store: Self.store, now: w.now), 0)
        for step in 1...400 {
            w.now = w.now + .milliseconds(Int64.random(in: 0...700, using: &rng))
            switch Int.random(in: 0..<1000, using: &rng) {
            case 0..<300:
                completePage(step)
            case 300..<450:
                w.feedLast += UInt64.random(in: 1...200, using: &rng)
                absorb(m.feedCommitted(), step)
            case 450..<600:
                w.writable.toggle()
                absorb(m.writabilityChanged(w.writable), step)
            case 600..<993:
                absorb(m.tick(now: w.now), step, tick: true)
            case 993, 994:
                // The shell must not report a page it was not asked for; if it does, the stream ends.
                if w.pageOut == nil && !w.finished {
                    absorb(m.pageSent(through: nil, entriesRead: 0, firstFrameEntries: 0, writable: w.writable, now: w.now), step)
                    if !m.isFinished { fail("an unasked page was accepted", step) }
                }
            case 995:
                absorb(m.channelClosed(), step)
            case 996:
                let wasStreaming = { if case .streaming = m.state { return true } else { return false } }()
                let actions = m.renew()
                if wasStreaming != actions.contains(.endStream) { fail("renew while streaming \(wasStreaming) gave \(actions)", step) }
                absorb(actions, step)
            case 997:
                absorb(m.shuttingDown(), step)
            default:
                absorb(m.requestBodyTooLarge(), step)
            }
            if let p = w.position, case .streaming(let s) = m.state {
                if s.position != p { fail("machine at \(s.position), stream at \(p)", step) }
                if s.pageLimit < 1 || s.pageLimit > s.batchLimit { fail("page limit \(s.pageLimit)", step) }
                // No lost wake-up: believing the feed drained means it is.
                if s.pump == .idle(drained: true) && p != w.feedLast { fail("drained at \(p), feed at \(w.feedLast)", step) }
            }
        }

        // Liveness: a finished stream stays silent; a live one, once writable, sends everything.
        guard !w.finished else {
            for e in Event.allCases { XCTAssertEqual(Self.apply(e, &m), [], "seed \(seed): \(e) after finish") }
            return
        }
        w.writable = true
        absorb(m.writabilityChanged(true), 500)
        var guardSteps = 0
        while let (after, limit, feedLast) = w.pageOut, guardSteps < 10_000, !w.finished {
            w.pageOut = nil
            let read = Int(min(UInt64(limit), feedLast - after))
            let through: UInt64? = read == 0 ? nil : after + UInt64(read)
            if let through { w.position = through }
            absorb(m.pageSent(through: through, entriesRead: read, firstFrameEntries: read, writable: true, now: w.now), 501)
            guardSteps += 1
        }
        if !w.finished {
            XCTAssertEqual(w.position, w.feedLast, "seed \(seed): stream stopped short of the feed")
            XCTAssertEqual(w.served, w.feedLast, "seed \(seed): served marks short of the feed")
        }
    }
}
