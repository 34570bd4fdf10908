import CaseModel
import CaseStore
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP2
import NIOSSL
import Replication
import Wire

/// What one comparison with a peer found and did: the round's outcome as its session
/// (`RepairSession`) counted it, the roots of both digests, and why it failed.
public struct RepairRound: Sendable {
    public var peer: NodeID
    public var at: Date
    /// The scope compared: the peer's organisation (this node's own for a peer of it).
    public var scope: String
    public var outcome = RepairOutcome()
    public var ourRoot = ""
    public var theirRoot = ""
    /// Why the round failed or was refused (a refusal is `outcome.end` too).
    public var error: String?

    /// Why the peer's answer was refused, if it was (the round ended there).
    public var refusal: RepairRefusal? {
        if case .refused(let r) = outcome.end { return r }
        return nil
    }
}

/// Anti-entropy (proto/README.md §13): every `interval`, with each peer whose pull is
/// caught up, compare the digests of the scope the two share, level by level, and pull
/// the records that differ, merged as any pull is but without moving the checkpoint.
/// The feed delivers every change once; this finds what it could not: records changed
/// under a store, or lost with a restored backup, or refused once and never resent.
/// Only pulls: what the peer lacks, it pulls in its own round.
public final class AntiEntropy: Sendable {
    let store: CaseStore
    let tls: NIOSSLContext
    let peers: [PeerAddress]
    let group: EventLoopGroup
    let replicator: Replicator
    let interval: Duration?
    let logger: Logger
    let lastRounds = NIOLockedValueBox<[NodeID: RepairRound]>([:])
    let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])
    let repairedRecords = Counter(label: "ekc_anti_entropy_repaired_records_total")
    let damagedReplaced = Counter(label: "ekc_anti_entropy_damaged_replaced_total")

    /// What one round may cost (`RepairBudget`): a peer that answers endlessly, or
    /// with records never asked for, costs at most this.
    let budget: RepairBudget

    public init(store: CaseStore, tls: NodeTLS, peers: [PeerAddress], group: EventLoopGroup, replicator: Replicator,
                interval: Duration?, budget: RepairBudget = RepairBudget(), logger: Logger) throws {
        self.store = store
        self.budget = budget
        self.tls = try tls.makeClientContext()
        self.peers = peers
        self.group = group
        self.replicator = replicator
        self.interval = interval
        self.logger = logger
    }

    public func start() {
        guard let interval else { return }
        let started = peers.map { peer in Task { await self.loop(peer, every: interval) } }
        tasks.withLockedValue { $0 = started }
    }

    /// Stops the rounds, those asked for by `repairSoon` too, and waits for them: a round
    /// still opening a connection once the node's event loops are shut down would crash
    /// the node on its way out (seen in the rolling-upgrade run, release 0.18.0).
    public func stop() async {
        let running = tasks.withLockedValue { t -> [Task<Void, Never>] in defer { t = [] }; return t }
        let soon = asked.withLockedValue { a -> [Task<Void, Never>] in
            a.stopped = true
            defer { a.rounds = [:] }
            return Array(a.rounds.values)
        }
        for t in running + soon { t.cancel() }
        for t in running + soon { await t.value }
    }

    public var rounds: [NodeID: RepairRound] { lastRounds.withLockedValue { $0 } }

    /// Rounds asked for by `repairSoon` that have not finished, one per peer at most; none
    /// once the node stops.
    struct Asked {
        var rounds: [NodeID: Task<Void, Never>] = [:]
        var stopped = false
    }
    let asked = NIOLockedValueBox(Asked())

    /// Compares with `node` now, outside the interval, unless a round asked this way is
    /// running already: records this node must fetch whole (a ticket whose purge was
    /// undone) are what differs.
    public func repairSoon(with node: NodeID) {
        asked.withLockedValue { a in
            guard !a.stopped, a.rounds[node] == nil else { return }
            a.rounds[node] = Task {
                if !Task.isCancelled { _ = await self.round(with: node) }
                self.asked.withLockedValue { _ = $0.rounds.removeValue(forKey: node) }
            }
        }
    }

    private func loop(_ peer: PeerAddress, every interval: Duration) async {
        var rng = SystemRandomNumberGenerator()
        while !Task.isCancelled {
            // Spread over the interval, so that links do not all compare at once.
            let jitter = Double.random(in: 0.75...1.25, using: &rng)
            try? await Task.sleep(for: interval * jitter)
            guard !Task.isCancelled else { break }
            // While the feed is still delivering, digests differ by what is in flight.
            guard let link = replicator.links.first(where: { $0.peer == peer.node }), link.connected,
                  link.appliedSequence >= link.peerSequence else { continue }
            _ = await round(with: peer.node)
        }
    }

    /// Compares with `peer` now and repairs what differs.
    public func round(with node: NodeID) async -> RepairRound {
        let scope = store.configuration.directory.org(node) ?? ""
        var round = RepairRound(peer: node, at: Date(), scope: scope)
        guard let peer = peers.first(where: { $0.node == node }) else {
            round.error = "\(node) is not a peer of this node"
            return round
        }
        do {
            let (channel, multiplexer) = try await ReplicationConnection.open(peer, tls: tls, group: group)
            defer { channel.close(promise: nil) }
            try await run(RepairCalls(peer: peer, channel: channel, multiplexer: multiplexer), &round)
        } catch {
            round.error = "\(error)"
        }
        if let refusal = round.refusal {
            // The peer answered what the protocol forbids: visible on the link, as a refused record is.
            replicator.refusedAnswer(refusal, from: node)
            logger.warning("anti-entropy round refused the peer's answer", metadata: [
                "peer": "\(node)", "reason": "\(refusal.reason.rawValue)", "detail": "\(refusal.detail.prefix(300))",
                "calls": "\(round.outcome.calls)"])
        } else if let error = round.error {
            logger.warning("anti-entropy round failed", metadata: ["peer": "\(node)", "error": "\(error)"])
        } else if !round.outcome.equal {
            logger.notice("anti-entropy: digests differed", metadata: [
                "peer": "\(node)", "scope": "\(scope)", "ranges": "\(round.outcome.differingRanges)",
                "buckets": "\(round.outcome.differingBuckets)", "records": "\(round.outcome.differingRecords)",
                "pulled": "\(round.outcome.pulled)", "repaired": "\(round.outcome.repaired)"])
        }
        Counter(label: "ekc_anti_entropy_rounds_total", dimensions: [("result", round.result)]).increment()
        Gauge(label: "ekc_anti_entropy_differing_records", dimensions: [("peer", node.value)]).record(round.outcome.differingRecords)
        lastRounds.withLockedValue { $0[node] = round }
        return round
    }

    /// One connection's calls to a peer.
    struct RepairCalls {
        let peer: PeerAddress
        let channel: NIOCore.Channel
        let multiplexer: NIOHTTP2Handler.StreamMultiplexer

        /// The answer's body; nil (with the session fed) when there is none to read.
        func call(_ path: String, _ body: [UInt8], maxBytes: Int, timeout: Duration) async throws -> [UInt8] {
            let (status, answer) = try await ReplicationConnection.call(
                multiplexer, on: channel, peer: peer, path: path, body: body, maxBytes: maxBytes,
                timeout: .nanoseconds(Int64(clamping: timeout.components.seconds &* 1_000_000_000)))
            guard status == 200 else {
                throw ReplicationCallError.refused(path, status, PeerText.shown(bytes: answer))
            }
            return answer
        }
    }

    /// Carries out the round's session (`RepairSession`): each call, this node's side of
    /// each level, each merge; the session checks the answers and decides what is next.
    private func run(_ calls: RepairCalls, _ round: inout RepairRound) async throws {
        let scope = round.scope
        let reading = RecordReading(kinds: store.kinds, check: CheckContext(directory: store.configuration.directory))
        var session = RepairSession(configuration: .init(budget: budget, kinds: Set(store.kinds.schemas.map(\.kind)),
                                                         position: { DigestHashing.position($0, $1) }))
        var ourSummary: DigestSummary?
        var actions = session.start(now: SessionTimer.now())[...]
        while let action = actions.popFirst() {
            let next: [RepairSession.Action]
            switch action {
            case .compare(let level, let maxBytes, let timeout):
                var request = WireDigestRequest()
                request.protocolVersion = ReplicationProtocol.version
                (request.level, request.position) = level.wire
                let body: [UInt8]
                do {
                    body = try await calls.call(ReplicationProtocol.digestPath, try WireCoding.serialize(request),
                                                maxBytes: maxBytes, timeout: timeout)
                } catch {
                    next = AntiEntropy.failed(&session, error)
                    actions = next[...]
                    continue
                }
                let reply: WireDigestReply
                do { reply = try WireCoding.parse(WireDigestReply.self, from: body) } catch {
                    actions = session.answerUndecodable("DigestReply: \(error)", bytes: body.count, now: SessionTimer.now())[...]
                    continue
                }
                let ours: OurDigest
                switch level {
                case .ranges:
                    let summary = try store.digestSummary(scope: scope)
                    ourSummary = summary
                    ours = .summary(records: summary.records, ranges: summary.ranges, ready: store.digestsReady)
                case .buckets(let range): ours = .buckets(try store.digestBuckets(scope: scope, range: range))
                case .records(let bucket): ours = .records(try store.digestEntries(scope: scope, bucket: bucket))
                }
                next = session.compared(level, theirs: AntiEntropy.answer(reply), ours: ours, bytes: body.count, now: SessionTimer.now())
            case .fetch(let refs, let maxBytes, let timeout):
                var request = WireRecordsRequest()
                request.protocolVersion = ReplicationProtocol.version
                request.records = refs.map { r in
                    var w = WireRecordRef()
                    w.kind = .init(rawValue: Int(r.kind.rawValue)) ?? .unspecified
                    w.id = Data(r.id.bytes)
                    return w
                }
                let body: [UInt8]
                do {
                    body = try await calls.call(ReplicationProtocol.recordsPath, try WireCoding.serialize(request),
                                                maxBytes: maxBytes, timeout: timeout)
                } catch {
                    actions = AntiEntropy.failed(&session, error)[...]
                    continue
                }
                do {
                    next = session.fetched(try AntiEntropy.records(body, reading), bytes: body.count, now: SessionTimer.now())
                } catch {
                    next = session.answerUndecodable("records answer: \(error)", bytes: body.count, now: SessionTimer.now())
                }
            case .merge(let records):
                do {
                    let report = try await store.merge(RemoteBatch(peer: calls.peer.node, sourceStoreID: [], throughSequence: 0,
                                                                   records: records, repair: true))
                    replicator.booked(report, from: calls.peer.node)
                    repairedRecords.increment(by: report.changedRecords)
                    damagedReplaced.increment(by: report.repairedDamaged)
                    next = session.merged(changed: report.changedRecords, refused: report.rejections.count,
                                          damagedReplaced: report.repairedDamaged, now: SessionTimer.now())
                } catch {
                    next = session.mergeFailed("\(error)")
                }
            case .finish(let outcome):
                round.record(outcome, ourRoot: ourSummary?.root.hex ?? "",
                             theirRoot: DigestSummary(scope: scope, records: outcome.theirRecords, ranges: outcome.theirRanges).root.hex)
                return
            }
            actions = next[...]
        }
    }

    /// A call that brought no answer to check: an answer over its size is the session's
    /// to judge (the budget's or the protocol's limit); anything else failed the call.
    private static func failed(_ session: inout RepairSession, _ error: Error) -> [RepairSession.Action] {
        if case ReplicationCallError.tooLarge = error { return session.answerTooLarge(now: SessionTimer.now()) }
        return session.callFailed("\(error)")
    }

    /// A digest reply's values as the peer sent them, for the session to check.
    static func answer(_ reply: WireDigestReply) -> DigestAnswer {
        DigestAnswer(ready: reply.ready, records: reply.records,
                     ranges: reply.ranges.map { .init(position: $0.position, sum: Array($0.sum), records: $0.records) },
                     entries: reply.entries.map { .init(kind: $0.kind.rawValue, id: Array($0.id), sum: Array($0.sum)) })
    }

    /// A records answer: ChangeBatch frames only, each record decoded and checked on its
    /// own (a record that fails is a refused entry, still named by kind and id).
    static func records(_ body: [UInt8], _ reading: RecordReading) throws -> [RemoteRecord] {
        var decoder = FrameDecoder(reading: reading)
        decoder.append(body)
        var records: [RemoteRecord] = []
        while let frame = try decoder.next() {
            switch frame {
            case .batch(let b): records += b.records
            case .unknown: continue  // a later revision's frame kind (§4)
            case .header, .heartbeat, .error: throw RecordsAnswerError.notABatch
            }
        }
        try decoder.finish()
        return records
    }

    enum RecordsAnswerError: Error, CustomStringConvertible {
        case notABatch
        var description: String { "a records answer holds ChangeBatch frames only" }
    }
}

extension RepairRound {
    /// The session's outcome, with the roots the shell hashed.
    mutating func record(_ o: RepairOutcome, ourRoot: String, theirRoot: String) {
        outcome = o
        self.ourRoot = ourRoot
        self.theirRoot = theirRoot
        switch o.end {
        case .complete, .notReady: break
        case .failed(let why): error = why
        case .refused(let r): error = "refused the peer's answer: \(r)"
        }
    }

    /// The result as the rounds metric counts it.
    var result: String {
        refusal != nil ? "refused" : error != nil ? "failed" : !outcome.ready ? "not_ready" : outcome.equal ? "equal" : "repaired"
    }
}
