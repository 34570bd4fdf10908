import ArgumentParser
import CaseModel
import CaseStore
import Foundation
import LMDB

/// Store benchmarks: durable writes one per transaction and grouped, point reads,
/// index range reads. Every commit is fsync'd (the store never sets MDB_NOSYNC).
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "store", abstract: "Benchmark the case store.")

    @Option(help: "Scratch directory (deleted and recreated).") var dir = "/tmp/ekc-bench-store"
    @Option(help: "Creates in the grouped-write run.") var grouped = 200_000
    @Option(help: "Creates in the one-per-transaction run.") var single = 500
    @Option(help: "Point reads per thread.") var reads = 1_000_000
    @Option(help: "Reader threads.") var threads = 2

    static func draft(_ i: Int) -> TicketDraft {
        TicketDraft(channel: i % 3 == 0 ? .web : .phone, topic: "child-benefits", supportMeasure: "unified-allowance",
                    subject: "Единое пособие: срок рассмотрения заявления №\(i)",
                    statement: "Подала заявление на единое пособие в прошлом месяце, ответа пока нет. Прошу сообщить срок.",
                    citizen: Citizen(ref: "CIT-BENCH-\(i)"), legalRegime: i % 2 == 0 ? .appeal59FZ : .consultation)
    }

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    func run() async throws {
        try? FileManager.default.removeItem(atPath: dir)
        let store = try CaseStore(path: dir, configuration: StoreConfiguration(node: NodeID("bench")!, region: "38"))
        let actor = Actor(user: "bench", role: "operator")

        // 1. One edit per transaction: each create waits for its own commit (fsync).
        var t0 = now()
        for i in 0..<single { _ = try await store.create(StoreBench.draft(i), actor: actor) }
        var dt = now() - t0
        print(String(format: "store.write.single    %9.0f writes/s   (%d creates, one fsync'd transaction each, %.2f ms/commit)",
                     Double(single) / dt, single, dt * 1000 / Double(single)))

        // 2. Grouped: many creates in flight; the commit thread takes all that wait.
        let done = DispatchSemaphore(value: 0)
        let remaining = Locked(grouped)
        let drafts = (0..<grouped).map { StoreBench.draft(single + $0) }
        t0 = now()
        for d in drafts {
            store.submit(.create(d), actor: actor) { r in
                if case .failure(let e) = r { fatalError("create failed: \(e)") }
                if remaining.with({ n -> Int in n -= 1; return n }) == 0 { done.signal() }
            }
        }
        let enqueued = now() - t0
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async { done.wait(); c.resume() }
        }
        dt = now() - t0
        print(String(format: "store.write.grouped   %9.0f writes/s   (%d creates, group commit, every commit fsync'd; submitting took %.2f s)",
                     Double(grouped) / dt, grouped, enqueued))

        let cs = store.commitStatistics
        print(String(format: "  commit thread: %d groups (%.0f edits each), applying %.2f s, committing (pages + fsync) %.2f s",
                     cs.groups, Double(cs.edits) / Double(max(1, cs.groups)), Double(cs.applyNanos) / 1e9, Double(cs.commitNanos) / 1e9))

        let floor = try LMDBFloor.run(dir: dir + "-floor", tickets: grouped, group: max(1, cs.edits / max(1, cs.groups)))
        print(String(format: "  floor: %9.0f tickets/s of bare LMDB puts (%d puts per ticket, same groups, fsync'd; no model, no codec)",
                     floor.rate, floor.putsPerTicket))
        try? FileManager.default.removeItem(atPath: dir + "-floor")

        // 3. Point reads by id: decode the whole ticket each time.
        var ids: [TicketRef] = []
        var page = try store.list(TicketQuery(limit: 500))
        while ids.count < 100_000 {
            ids += page.items.map { .id($0.id) }
            guard let next = page.next else { break }
            page = try store.list(TicketQuery(limit: 500, cursor: next))
        }
        let idsCopy = ids
        let perThread = reads
        for n in Set([1, threads]).sorted() {
            t0 = now()
            DispatchQueue.concurrentPerform(iterations: n) { k in
                var x = UInt64(k + 1) &* 0x9E37_79B9_7F4A_7C15
                for _ in 0..<perThread {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17
                    guard (try? store.ticket(idsCopy[Int(x % UInt64(idsCopy.count))])) != nil else { fatalError("missing ticket") }
                }
            }
            dt = now() - t0
            print(String(format: "store.read.point      %9.0f reads/s    (%d threads, ticket by id, decoded)", Double(perThread * n) / dt, n))
        }

        // The floor under point reads: the same lookups returning the stored bytes' length, no decoding.
        let rawKeys = idsCopy.compactMap { ref -> [UInt8]? in if case .id(let id) = ref { return id.bytes } else { return nil } }
        let tickets = try store.env.openDatabase("tickets", options: [])
        t0 = now()
        DispatchQueue.concurrentPerform(iterations: threads) { k in
            var x = UInt64(k + 1) &* 0x9E37_79B9_7F4A_7C15
            var total = 0
            for _ in 0..<perThread {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                total &+= (try? store.env.read { try $0.withValue(tickets, key: rawKeys[Int(x % UInt64(rawKeys.count))]) { $0.count } }) ?? 0 ?? 0
            }
            precondition(total > 0)
        }
        dt = now() - t0
        print(String(format: "  floor: %9.0f reads/s    (%d threads, the same LMDB lookups without decoding)", Double(perThread * threads) / dt, threads))

        // 4. Index range reads: pages of 100 REGISTERED tickets via the status index.
        t0 = now()
        var rows = 0
        var cursor: String? = nil
        while rows < 200_000 {
            let p = try store.list(TicketQuery(status: .registered, limit: 100, cursor: cursor))
            rows += p.items.count
            cursor = p.next
            if cursor == nil { cursor = nil; if p.items.isEmpty { break } }
        }
        dt = now() - t0
        print(String(format: "store.read.range      %9.0f rows/s     (status index pages of 100, decoded)", Double(rows) / dt))

        let s = try store.stats()
        print("store: \(s.tickets) tickets, \(s.usedBytes >> 20) MiB used, map \(s.mapSize >> 20) MiB, \(s.mapGrowths) map growths")
        store.close()
    }
}
