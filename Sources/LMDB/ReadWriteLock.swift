import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A writer-preferring reader/writer lock. Every LMDB transaction of this process
/// holds it shared; growing the map holds it exclusively, because
/// `mdb_env_set_mapsize` may only run while no transaction is active.
/// Not recursive: a transaction must not open another one on the same thread.
final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        #if canImport(Glibc)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        #endif
        pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inline(__always)
    func withShared<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func withExclusive<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// A small stack of idle read transactions, shared by all threads (MDB_NOTLS lets a
/// read transaction move between threads).
final class ReaderPool: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var idle: [OpaquePointer] = []
    private let limit = 64

    init() {
        pthread_mutex_init(mutex, nil)
        idle.reserveCapacity(limit)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    func take() -> OpaquePointer? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return idle.popLast()
    }

    /// Keeps `txn` for reuse, or aborts it when the pool is full.
    @inline(__always)
    func put(_ txn: OpaquePointer) {
        pthread_mutex_lock(mutex)
        if idle.count < limit {
            idle.append(txn)
            pthread_mutex_unlock(mutex)
        } else {
            pthread_mutex_unlock(mutex)
            abortTransaction(txn)
        }
    }

    func drain(_ body: (OpaquePointer) -> Void) {
        pthread_mutex_lock(mutex)
        let all = idle
        idle.removeAll()
        pthread_mutex_unlock(mutex)
        all.forEach(body)
    }
}

@inline(__always)
func abortTransaction(_ txn: OpaquePointer) { mdb_txn_abort(txn) }
