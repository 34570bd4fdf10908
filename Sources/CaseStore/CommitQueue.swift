import Foundation

/// Group commit: edits from many requests queue here, and one dedicated thread
/// (never a cooperative-pool or event-loop thread, since a commit blocks in fsync)
/// takes everything waiting, applies it in one write transaction, commits once,
/// and only then completes each edit. Many edits, one fsync; no acknowledgement
/// before the commit has returned.
final class CommitQueue<Item: Sendable>: @unchecked Sendable {
    private let mutex = Mutex()
    private var waiting: [Item] = []
    private var stopping = false
    private var running = true
    private let maxGroup: Int
    private let done = DispatchSemaphore(value: 0)
    private let process: ([Item]) -> Void
    private var commitThread: pthread_t?

    init(name: String, maxGroup: Int, process: @escaping ([Item]) -> Void) {
        self.maxGroup = maxGroup
        self.process = process
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    /// Queues an item; false when the queue is shut down.
    func submit(_ item: Item) -> Bool {
        mutex.withLock {
            guard !stopping else { return false }
            waiting.append(item)
            if waiting.count == 1 { mutex.broadcast() }
            return true
        }
    }

    var depth: Int { mutex.withLock { waiting.count } }

    /// Most time a group may wait to gather more edits; nil lets the queue choose.
    var gatherWindowMicros: UInt32? = nil
    private var lastGroupSize = 0
    private var lastCommitMicros: UInt64 = 0

    /// Under concurrent load (the last group held more than one edit) the next group
    /// waits a quarter of the last commit's duration, at most 1 ms, for more edits to
    /// arrive: answers to the last group reach their clients, whose next requests then
    /// share one fsync instead of paying for their own. A lone edit never waits.
    private var gatherWindow: UInt32 {
        if let fixed = gatherWindowMicros { return fixed }
        guard lastGroupSize > 1 else { return 0 }
        return UInt32(min(1_000, lastCommitMicros / 4))
    }

    private func run() {
        mutex.withLock { commitThread = pthread_self() }
        while true {
            let window = gatherWindow
            if window > 0 {
                let gather = mutex.withLock { () -> Bool in
                    while waiting.isEmpty && !stopping { mutex.wait() }
                    return !waiting.isEmpty && waiting.count < maxGroup
                }
                if gather { usleep(window) }
            }
            let group: [Item]? = mutex.withLock {
                while waiting.isEmpty && !stopping { mutex.wait() }
                if waiting.isEmpty { return nil }
                if waiting.count <= maxGroup {
                    defer { waiting.removeAll(keepingCapacity: true) }
                    return waiting
                }
                let g = Array(waiting.prefix(maxGroup))
                waiting.removeFirst(maxGroup)
                return g
            }
            guard let group else { break }
            let started = DispatchTime.now().uptimeNanoseconds
            process(group)
            lastCommitMicros = (DispatchTime.now().uptimeNanoseconds - started) / 1_000
            lastGroupSize = group.count
        }
        done.signal()
    }

    /// Stops taking items, finishes what is queued, and waits for the thread to end.
    /// From the commit thread itself (a completion dropping the last reference to the
    /// store) it only asks the thread to stop, since waiting for itself would never end.
    func shutdown() {
        let (wasRunning, onCommitThread): (Bool, Bool) = mutex.withLock {
            stopping = true
            mutex.broadcast()
            defer { running = false }
            let me = pthread_self()
            return (running, commitThread.map { pthread_equal($0, me) != 0 } ?? false)
        }
        if wasRunning && !onCommitThread { done.wait() }
    }
}
