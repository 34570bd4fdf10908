import ArgumentParser
import CaseModel
import CaseStore
import EKCNode
import Foundation
import Logging
import NIOPosix
import Replication

/// Replication between two nodes in one process, over loopback HTTP/2 with mutual
/// TLS, every commit fsync'd: catch-up of an empty node, steady-state lag, and a
/// reconnect with nothing new.
struct ReplicationBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "replication", abstract: "Benchmark replication.")

    @Option(help: "Scratch directory (deleted and recreated).") var dir = "/tmp/ekc-bench-replication"
    @Option(help: "Directory with ca.pem and irk-main/irk-office-1 certificates (ops/dev-ca.sh).") var certs: String
    @Option(help: "Tickets the new node catches up on.") var tickets = 200_000
    @Option(help: "Steady write rate for the lag measurement (creates/s).") var rate = 1_000
    @Option(help: "Seconds of steady writes.") var seconds = 5

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    static func rssKiB() -> (current: Int, peak: Int) {
        let s = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            s.split(separator: "\n").first { $0.hasPrefix(name) }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
        }
        return (field("VmRSS:"), field("VmHWM:"))
    }

    func run() async throws {
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let main = NodeID("irk-main")!, office = NodeID("irk-office-1")!
        let directory = Directory([main: "38", office: "38"])
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        func store(_ node: NodeID, _ series: UInt64) throws -> CaseStore {
            var c = StoreConfiguration(node: node, region: "38", directory: directory)
            c.numberSeries = series
            return try CaseStore(path: "\(dir)/\(node)", configuration: c)
        }
        let a = try store(main, 0)
        // One event loop per node, as each node process has its own.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let groupB = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let tlsA = try NodeTLS(certificate: "\(certs)/irk-main.pem", key: "\(certs)/irk-main.key", ca: "\(certs)/ca.pem", expected: main)
        let tlsB = try NodeTLS(certificate: "\(certs)/irk-office-1.pem", key: "\(certs)/irk-office-1.key", ca: "\(certs)/ca.pem", expected: office)
        let server = try await ReplicationServer.start(store: a, tls: tlsA, host: "127.0.0.1", port: 0, peers: [office],
                                                       group: group, metrics: ReplicationMetrics(), logger: logger)
        let peerA = PeerAddress(node: main, host: "127.0.0.1", port: server.port)

        // 1. Fill the source.
        let actor = Actor(user: "bench", role: "operator")
        var t0 = now()
        try await withThrowingTaskGroup(of: Void.self) { g in
            for w in 0..<64 {
                g.addTask {
                    for i in stride(from: w, to: tickets, by: 64) { _ = try await a.create(StoreBench.draft(i), actor: actor) }
                }
            }
            try await g.waitForAll()
        }
        print(String(format: "source filled: %d tickets in %.1f s", tickets, now() - t0))

        // 2. Catch-up of an empty node.
        let b = try store(office, 1)
        let rssBefore = ReplicationBench.rssKiB()
        let replicator = try Replicator(store: b, tls: tlsB, peers: [peerA], group: groupB, metrics: ReplicationMetrics(), logger: logger)
        t0 = now()
        replicator.start()
        let target = a.lastSequence
        var peakRSS = rssBefore.current
        while (replicator.links.first?.appliedSequence ?? 0) < target {
            try await Task.sleep(nanoseconds: 20_000_000)
            peakRSS = max(peakRSS, ReplicationBench.rssKiB().current)
        }
        let catchUp = now() - t0
        print(String(format: "replication.catchup  %9.0f tickets/s   (%d tickets into an empty node in %.2f s, mutual TLS, fsync'd)",
                     Double(tickets) / catchUp, tickets, catchUp))
        print(String(format: "  process memory during catch-up: %d MiB before, %d MiB peak (both stores' map pages included)",
                     rssBefore.current / 1024, peakRSS / 1024))

        // 3. Steady writes on the source; lag from submitting a create on one node until
        // the other node has committed it (so it includes the source's own fsync).
        let total = rate * seconds
        let submitted = Locked([Double](repeating: 0, count: total))
        let lags = Locked([Double]())
        let watcher = Task {
            var seen = b.lastSequence
            while !Task.isCancelled {
                if let page = try? b.changes(since: seen, limit: 10_000), !page.changes.isEmpty {
                    let t = now()
                    for c in page.changes where c.ticket.subject.hasPrefix("lag ") {
                        if let i = Int(c.ticket.subject.dropFirst(4)) {
                            let s = submitted.with { $0[i] }
                            if s > 0 { lags.with { $0.append(t - s) } }
                        }
                    }
                    seen = page.changes.last!.sequence
                }
                try? await Task.sleep(nanoseconds: 250_000)
            }
        }
        t0 = now()
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<total {
                let due = t0 + Double(i) / Double(rate)
                let wait = due - now()
                if wait > 0 { try await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
                var d = StoreBench.draft(tickets + i)
                d.subject = "lag \(i)"
                let draft = d
                submitted.with { $0[i] = now() }
                g.addTask { _ = try await a.create(draft, actor: actor) }
            }
            try await g.waitForAll()
        }
        let deadline = now() + 10
        while lags.with({ $0.count }) < total && now() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
        watcher.cancel()
        let sorted = lags.with { $0 }.sorted()
        func pct(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000 }
        print(String(format: "replication.lag      p50 %.2f ms  p99 %.2f ms  max %.2f ms   (%d of %d creates at %d/s, submitted on one node → committed on the other)",
                     pct(0.5), pct(0.99), sorted.last.map { $0 * 1000 } ?? .nan, sorted.count, total, rate))

        // 4. Reconnect with nothing new: one request, no records, no rescan.
        await replicator.stop()
        let again = try Replicator(store: b, tls: tlsB, peers: [peerA], group: groupB, metrics: ReplicationMetrics(), logger: logger)
        t0 = now()
        again.start()
        while again.links.first?.connected != true || (again.links.first?.peerSequence ?? 0) < a.lastSequence {
            try await Task.sleep(nanoseconds: 1_000_000)
        }
        print(String(format: "replication.reconnect  %.1f ms to a caught-up stream; %d records re-sent (checkpoint %d of %d)",
                     (now() - t0) * 1000, again.links.first!.recordsReceived, again.links.first!.appliedSequence, a.lastSequence))
        await again.stop()
        await server.close()
        try await group.shutdownGracefully()
        try await groupB.shutdownGracefully()
        a.close()
        b.close()
    }
}

final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func with<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
}
