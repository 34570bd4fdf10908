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
    @Flag(help: "Reuse the source store left in --dir when it holds at least --tickets changes (to profile the catch-up alone).")
    var reuseSource = false
    @Flag(help: "Measure the catch-up only.") var catchUpOnly = false

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Resident memory, and the part of it that is not file-backed (heap, stacks: what
    /// the process itself holds, as opposed to the stores' memory-mapped pages).
    static func rssKiB() -> (current: Int, anonymous: Int) {
        let s = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            s.split(separator: "\n").first { $0.hasPrefix(name) }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
        }
        return (field("VmRSS:"), field("RssAnon:"))
    }

    /// CPU seconds (user + system) this process has used.
    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    func run() async throws {
        try? FileManager.default.removeItem(atPath: "\(dir)/irk-office-1")
        if !reuseSource { try? FileManager.default.removeItem(atPath: dir) }
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
        if a.lastSequence >= UInt64(tickets) {
            print("source reused: \(a.lastSequence) changes")
        } else {
        try await withThrowingTaskGroup(of: Void.self) { g in
            for w in 0..<64 {
                g.addTask {
                    for i in stride(from: w, to: tickets, by: 64) { _ = try await a.create(StoreBench.draft(i), actor: actor) }
                }
            }
            try await g.waitForAll()
        }
        print(String(format: "source filled: %d tickets in %.1f s", tickets, now() - t0))
        }

        // 2. Catch-up of an empty node.
        let b = try store(office, 1)
        let rssBefore = ReplicationBench.rssKiB()
        let replicator = try Replicator(store: b, tls: tlsB, peers: [peerA], group: groupB, metrics: ReplicationMetrics(), logger: logger)
        t0 = now()
        let cpu0 = ReplicationBench.cpuSeconds()
        replicator.start()
        let target = a.lastSequence
        var peakRSS = rssBefore.current
        var peakAnon = rssBefore.anonymous
        while (replicator.links.first?.appliedSequence ?? 0) < target {
            try await Task.sleep(nanoseconds: 20_000_000)
            let rss = ReplicationBench.rssKiB()
            peakRSS = max(peakRSS, rss.current)
            peakAnon = max(peakAnon, rss.anonymous)
        }
        let catchUp = now() - t0
        let cpu = ReplicationBench.cpuSeconds() - cpu0
        print(String(format: "replication.catchup  %9.0f tickets/s   (%d tickets into an empty node in %.2f s, mutual TLS, fsync'd)",
                     Double(target) / catchUp, target, catchUp))
        print(String(format: "  CPU during catch-up: %.1f s for both nodes = %.2f cores busy, %.1f µs per ticket",
                     cpu, cpu / catchUp, cpu / Double(target) * 1e6))
        print(String(format: "  process memory during catch-up: resident %d MiB before, %d MiB peak (both stores' mapped pages included); not file-backed %d MiB before, %d MiB peak",
                     rssBefore.current / 1024, peakRSS / 1024, rssBefore.anonymous / 1024, peakAnon / 1024))

        if catchUpOnly {
            await replicator.stop()
            await server.close()
            try await group.shutdownGracefully()
            try await groupB.shutdownGracefully()
            a.close()
            b.close()
            return
        }

        // 3. Steady writes on the source. Two lags per create: from submitting it on
        // one node until the other node has committed it (so it includes the source's
        // own durable commit), and from the source's acknowledgement until then (what
        // replication adds, as PostgreSQL's replay lag counts from the primary's flush).
        let total = rate * seconds
        let submitted = Locked([Double](repeating: 0, count: total))
        let acked = Locked([Double](repeating: 0, count: total))
        let seen = Locked([Double](repeating: 0, count: total))
        let seenCount = Locked(0)
        let watcher = Task {
            var after = b.lastSequence
            while !Task.isCancelled {
                if let page = try? b.changes(since: after, limit: 10_000), !page.changes.isEmpty {
                    let t = now()
                    for c in page.changes where c.ticket.subject.hasPrefix("lag ") {
                        if let i = Int(c.ticket.subject.dropFirst(4)), i < total {
                            seen.with { $0[i] = t }
                            seenCount.with { $0 += 1 }
                        }
                    }
                    after = page.changes.last!.sequence
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
                g.addTask {
                    _ = try await a.create(draft, actor: actor)
                    let t = now()
                    acked.with { $0[i] = t }
                }
            }
            try await g.waitForAll()
        }
        let deadline = now() + 10
        while seenCount.with({ $0 }) < total && now() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
        watcher.cancel()
        let (sub, ack, got) = (submitted.with { $0 }, acked.with { $0 }, seen.with { $0 })
        let received = (0..<total).filter { got[$0] > 0 }
        func percentiles(_ values: [Double]) -> (p50: Double, p99: Double, max: Double) {
            let v = values.sorted()
            guard !v.isEmpty else { return (.nan, .nan, .nan) }
            func p(_ q: Double) -> Double { v[min(v.count - 1, Int(Double(v.count) * q))] * 1000 }
            return (p(0.5), p(0.99), v.last! * 1000)
        }
        let endToEnd = percentiles(received.map { got[$0] - sub[$0] })
        let fromAck = percentiles(received.map { max(0, got[$0] - ack[$0]) })
        let ownCommit = percentiles((0..<total).map { ack[$0] - sub[$0] })
        print(String(format: "replication.lag      p50 %.2f ms  p99 %.2f ms  max %.2f ms   (source acknowledged → committed on the other node; %d of %d creates at %d/s)",
                     fromAck.p50, fromAck.p99, fromAck.max, received.count, total, rate))
        print(String(format: "  end to end         p50 %.2f ms  p99 %.2f ms  max %.2f ms   (submitted on the source → committed on the other; the source's own durable create: p50 %.2f ms, p99 %.2f ms)",
                     endToEnd.p50, endToEnd.p99, endToEnd.max, ownCommit.p50, ownCommit.p99))

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
