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

/// What one comparison with a peer found and did.
public struct RepairRound: Sendable {
    public var peer: NodeID
    public var at: Date
    /// The scope compared: the peer's organisation (this node's own for a peer of it).
    public var scope: String
    /// Both digests are built (a store from before digests builds them first).
    public var ready = true
    public var equal = false
    public var ourRecords: UInt64 = 0
    public var theirRecords: UInt64 = 0
    public var ourRoot = ""
    public var theirRoot = ""
    public var differingRanges = 0
    public var differingBuckets = 0
    /// Records the two hold differently (or one lacks).
    public var differingRecords = 0
    /// Records pulled from the peer, and how many of them changed something here.
    public var pulled = 0
    public var repaired = 0
    /// Records (or parts) the merge refused, as a pull would.
    public var refused = 0
    /// Records found damaged here that the peer's copy replaced writes of.
    public var damagedReplaced = 0
    public var error: String?
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

    /// Most buckets compared in one round: a peer that differs everywhere (a store
    /// restored from nothing) is repaired over several rounds, not in one burst.
    static let maxBucketsPerRound = 4096
    /// Records per records request.
    static let pullChunk = 500

    public init(store: CaseStore, tls: NodeTLS, peers: [PeerAddress], group: EventLoopGroup, replicator: Replicator,
                interval: Duration?, logger: Logger) throws {
        self.store = store
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

    public func stop() async {
        let running = tasks.withLockedValue { t -> [Task<Void, Never>] in defer { t = [] }; return t }
        for t in running { t.cancel() }
        for t in running { await t.value }
    }

    public var rounds: [NodeID: RepairRound] { lastRounds.withLockedValue { $0 } }

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
            try await compare(peer, channel, multiplexer, &round)
        } catch {
            round.error = "\(error)"
        }
        if let error = round.error {
            logger.warning("anti-entropy round failed", metadata: ["peer": "\(node)", "error": "\(error)"])
        } else if !round.equal {
            logger.notice("anti-entropy: digests differed", metadata: [
                "peer": "\(node)", "scope": "\(scope)", "ranges": "\(round.differingRanges)", "buckets": "\(round.differingBuckets)",
                "records": "\(round.differingRecords)", "pulled": "\(round.pulled)", "repaired": "\(round.repaired)"])
        }
        let result = round.error != nil ? "failed" : !round.ready ? "not_ready" : round.equal ? "equal" : "repaired"
        Counter(label: "ekc_anti_entropy_rounds_total", dimensions: [("result", result)]).increment()
        Gauge(label: "ekc_anti_entropy_differing_records", dimensions: [("peer", node.value)]).record(round.differingRecords)
        lastRounds.withLockedValue { $0[node] = round }
        return round
    }

    private func compare(_ peer: PeerAddress, _ channel: NIOCore.Channel, _ mux: NIOHTTP2Handler.StreamMultiplexer,
                         _ round: inout RepairRound) async throws {
        let scope = round.scope
        func level(_ level: UInt32, _ position: Int) async throws -> WireDigestReply {
            var request = WireDigestRequest()
            request.protocolVersion = ReplicationProtocol.version
            request.level = level
            request.position = UInt32(position)
            let (status, body) = try await ReplicationConnection.call(mux, on: channel, peer: peer, path: ReplicationProtocol.digestPath,
                                                                      body: try WireCoding.serialize(request), maxBytes: 16 << 20)
            guard status == 200 else {
                throw ReplicationCallError.refused(ReplicationProtocol.digestPath, status, String(decoding: body.prefix(300), as: UTF8.self))
            }
            return try WireCoding.parse(WireDigestReply.self, from: body)
        }
        let top = try await level(0, 0)
        let mine = try store.digestSummary(scope: scope)
        let theirs = AntiEntropy.nodes(top.ranges)
        round.ourRecords = mine.records
        round.theirRecords = top.records
        round.ourRoot = mine.root.hex
        round.theirRoot = DigestSummary(scope: scope, records: top.records, ranges: theirs).root.hex
        round.ready = top.ready && store.digestsReady
        round.equal = round.ourRoot == round.theirRoot
        guard round.ready, !round.equal else { return }
        let ranges = DigestComparison.differing(mine.ranges, theirs)
        round.differingRanges = ranges.count
        var buckets: [UInt16] = []
        for r in ranges where buckets.count < AntiEntropy.maxBucketsPerRound {
            let reply = try await level(1, Int(r))
            buckets += DigestComparison.differing(try store.digestBuckets(scope: scope, range: UInt8(r)), AntiEntropy.nodes(reply.ranges))
        }
        round.differingBuckets = buckets.count
        var toPull: [RecordRef] = []
        for b in buckets.prefix(AntiEntropy.maxBucketsPerRound) {
            let reply = try await level(2, Int(b))
            let theirEntries = reply.entries.compactMap { e -> DigestEntry? in
                guard (1...255).contains(e.kind.rawValue), let id = RecordID(bytes: Array(e.id)), let sum = DigestSum(bytes: Array(e.sum))
                else { return nil }
                return DigestEntry(kind: RecordKindID(rawValue: UInt8(e.kind.rawValue)), id: id, value: sum)
            }
            let ours = try store.digestEntries(scope: scope, bucket: b)
            let pull = DigestComparison.toPull(mine: ours, theirs: theirEntries)
            round.differingRecords += pull.count + DigestComparison.toOffer(mine: ours, theirs: theirEntries)
                .filter { o in !pull.contains { $0.kind == o.kind && $0.id == o.id } }.count
            toPull += pull.map { RecordRef(kind: $0.kind, id: $0.id) }
        }
        try await pull(toPull, from: peer, channel, mux, &round)
    }

    /// Pulls whole records in chunks and merges each chunk as a repair.
    private func pull(_ refs: [RecordRef], from peer: PeerAddress, _ channel: NIOCore.Channel, _ mux: NIOHTTP2Handler.StreamMultiplexer,
                      _ round: inout RepairRound) async throws {
        let reading = RecordReading(kinds: store.kinds, check: CheckContext(directory: store.configuration.directory))
        var rest = refs[...]
        while !rest.isEmpty {
            var ask = Array(rest.prefix(AntiEntropy.pullChunk))
            rest = rest.dropFirst(ask.count)
            // A response carries about 4 MiB: what it left out is asked again.
            while !ask.isEmpty {
                var request = WireRecordsRequest()
                request.protocolVersion = ReplicationProtocol.version
                request.records = ask.map { r in
                    var w = WireRecordRef()
                    w.kind = .init(rawValue: Int(r.kind.rawValue)) ?? .unspecified
                    w.id = Data(r.id.bytes)
                    return w
                }
                let (status, body) = try await ReplicationConnection.call(mux, on: channel, peer: peer, path: ReplicationProtocol.recordsPath,
                                                                          body: try WireCoding.serialize(request))
                guard status == 200 else {
                    throw ReplicationCallError.refused(ReplicationProtocol.recordsPath, status, String(decoding: body.prefix(300), as: UTF8.self))
                }
                var decoder = FrameDecoder(reading: reading)
                decoder.append(body)
                var records: [RemoteRecord] = []
                while let frame = try decoder.next() {
                    if case .batch(let b) = frame { records += b.records }
                }
                try decoder.finish()
                guard !records.isEmpty else { break }
                let got = Set(records.compactMap { r -> RecordRef? in
                    guard case .delta(let d) = r.content else { return nil }
                    return RecordRef(kind: d.kind, id: d.id)
                })
                ask.removeAll { got.contains($0) }
                round.pulled += records.count
                let report = try await store.merge(RemoteBatch(peer: peer.node, sourceStoreID: [], throughSequence: 0,
                                                               records: records, repair: true))
                replicator.booked(report, from: peer.node)
                round.repaired += report.changedRecords
                round.refused += report.rejections.count
                round.damagedReplaced += report.repairedDamaged
                repairedRecords.increment(by: report.changedRecords)
                damagedReplaced.increment(by: report.repairedDamaged)
                if got.isEmpty { break }
            }
        }
    }

    static func nodes(_ ranges: [WireDigestRange]) -> [DigestNode] {
        ranges.compactMap { r in
            guard r.position <= 0xffff, let sum = DigestSum(bytes: Array(r.sum)) else { return nil }
            return DigestNode(position: UInt16(r.position), sum: sum, records: r.records)
        }
    }
}
