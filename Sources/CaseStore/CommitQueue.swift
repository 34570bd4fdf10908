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

    private func run() {
        mutex.withLock { commitThread = pthread_self() }
        while true {
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
            process(group)
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
