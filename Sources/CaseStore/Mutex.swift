#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A plain pthread mutex with a condition variable (the writer thread waits on it).
final class Mutex: @unchecked Sendable {
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(m, nil)
        pthread_cond_init(c, nil)
    }

    deinit {
        pthread_cond_destroy(c)
        pthread_mutex_destroy(m)
        c.deallocate()
        m.deallocate()
    }

    @inline(__always)
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body()
    }

    /// Waits on the condition; call with the lock held (inside `withLock`).
    func wait() { pthread_cond_wait(c, m) }
    func broadcast() { pthread_cond_broadcast(c) }
}
