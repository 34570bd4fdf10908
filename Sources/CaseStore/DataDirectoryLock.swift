import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive advisory lock on a data directory (`DIR/ekc.lock`, flock), held by the
/// one process that writes the store as its owner: a node for its lifetime, or
/// `ekc store migrate` while it runs. Readers (`ekc store verify`, `stats`, `backup`)
/// take none: LMDB gives them a snapshot beside the writer. The kernel drops the lock
/// when the process dies, kill -9 included, so a stale file never blocks a restart.
public final class DataDirectoryLock: @unchecked Sendable {
    public static let fileName = "ekc.lock"
    private var fd: Int32

    /// Takes the lock or says who holds it (the pid the holder wrote, if any).
    public init(directory: String, holder: String) throws(BackupError) {
        let path = directory + "/" + DataDirectoryLock.fileName
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(path, String(cString: strerror(errno))) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 200)
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            Glibc.close(fd)
            let who = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "another process"
            throw .io(directory, "held by \(who): one process writes a store at a time (stop it first)")
        }
        let text = Array("\(holder) (pid \(getpid()))\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.fd = fd
    }

    public func release() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }

    deinit { release() }
}
