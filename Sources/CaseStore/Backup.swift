import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LMDB

// Hot backup (issue 19, item 4): LMDB's compacting copy, taken from one read transaction
// while the node goes on writing, into FILE; beside it FILE.manifest.json says what the
// copy is (node, store, format, last sequence) and how to know it is whole (bytes,
// SHA-256). Both are written under a temporary name, synced and renamed, so a backup
// cut short by a crash or a full disk never looks like a finished one.

/// What a backup file holds; written beside it as `FILE.manifest.json`.
public struct BackupManifest: Codable, Sendable, Equatable {
    public static let suffix = ".manifest.json"
    public static let currentFormat = 1

    /// The manifest's own format.
    public var manifestFormat: Int
    public var node: String
    public var storeId: String
    public var storeFormat: UInt32
    public var lastSequence: UInt64
    /// The release of the binary that took it.
    public var release: String
    /// Milliseconds since the epoch.
    public var takenAt: Int64
    public var bytes: UInt64
    public var sha256: String
}

public enum BackupError: Error, Equatable, CustomStringConvertible {
    case noStore(String)
    case exists(String)
    case noManifest(String)
    case badManifest(String, String)
    case io(String, String)
    case storage(String)

    public var description: String {
        switch self {
        case .noStore(let p): return "\(p) holds no store (no data.mdb); pass --data DIR of a node"
        case .exists(let p): return "\(p) exists; a backup never overwrites: choose a new file"
        case .noManifest(let p):
            return "\(p)\(BackupManifest.suffix) is missing: a backup is FILE with FILE\(BackupManifest.suffix) beside it"
        case .badManifest(let p, let why): return "\(p)\(BackupManifest.suffix) is not a backup manifest: \(why)"
        case .io(let p, let why): return "\(p): \(why)"
        case .storage(let why): return why
        }
    }
}

/// What a store copy's meta table says of it.
struct StoreCopyMeta: Equatable {
    var node: String
    var storeId: String
    var storeFormat: UInt32
    var lastSequence: UInt64
}

extension CaseStore {
    /// Copies the store at `path` (a node may be serving it) into `file`, compacted, and
    /// writes its manifest. Refuses when `file` or its manifest exists.
    public static func backup(path: String, to file: String, release: String, now: Int64) throws(BackupError) -> BackupManifest {
        let fm = FileManager.default
        guard fm.fileExists(atPath: path + "/data.mdb") else { throw .noStore(path) }
        for p in [file, file + BackupManifest.suffix] where fm.fileExists(atPath: p) { throw .exists(p) }
        let partial = file + ".partial"
        // A partial of ours is what a backup cut short left: never a finished one.
        try? fm.removeItem(atPath: partial)
        do {
            var cfg = Environment.Configuration()
            cfg.readOnly = true
            cfg.initialMapSize = 0
            let env = try Environment(path: path, configuration: cfg)
            let fd = Glibc.open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw BackupError.io(partial, String(cString: strerror(errno))) }
            defer { Glibc.close(fd) }
            try env.copy(toFileDescriptor: fd, compact: true)
            guard fsync(fd) == 0 else { throw BackupError.io(partial, "fsync: \(String(cString: strerror(errno)))") }
        } catch let e as BackupError {
            try? fm.removeItem(atPath: partial)
            throw e
        } catch {
            try? fm.removeItem(atPath: partial)
            throw .storage("copying \(path): \(error)")
        }
        let meta: StoreCopyMeta
        let (bytes, sha): (UInt64, String)
        do {
            meta = try readCopyMeta(partial)
            (bytes, sha) = try digest(partial)
        } catch {
            try? fm.removeItem(atPath: partial)
            throw error
        }
        let manifest = BackupManifest(manifestFormat: BackupManifest.currentFormat, node: meta.node, storeId: meta.storeId,
                                      storeFormat: meta.storeFormat, lastSequence: meta.lastSequence, release: release,
                                      takenAt: now, bytes: bytes, sha256: sha)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json: Data
        do { json = try encoder.encode(manifest) } catch { throw .storage("manifest: \(error)") }
        try durablyRename(partial, to: file)
        try durablyWrite(json, to: file + BackupManifest.suffix)
        return manifest
    }

    /// Checks a backup against its manifest: its size and SHA-256, then what its meta
    /// table says. Returns the manifest and what disagrees (empty: the file is the copy
    /// the manifest describes). Reads the file only: no lock file, no write.
    public static func checkBackup(_ file: String) throws(BackupError) -> (manifest: BackupManifest, problems: [String]) {
        let fm = FileManager.default
        guard fm.fileExists(atPath: file) else { throw .io(file, "no such file") }
        guard let data = fm.contents(atPath: file + BackupManifest.suffix) else { throw .noManifest(file) }
        guard data.count <= 64 << 10 else { throw .badManifest(file, "\(data.count) bytes; a manifest is a few hundred") }
        let m: BackupManifest
        do { m = try JSONDecoder().decode(BackupManifest.self, from: data) } catch {
            throw .badManifest(file, "\(error)")
        }
        guard m.manifestFormat == BackupManifest.currentFormat else {
            throw .badManifest(file, "manifestFormat \(m.manifestFormat); this build reads \(BackupManifest.currentFormat)")
        }
        var problems: [String] = []
        let (bytes, sha) = try digest(file)
        if bytes != m.bytes { problems.append("size: the file has \(bytes) bytes, the manifest says \(m.bytes)") }
        if sha != m.sha256.lowercased() { problems.append("sha256: the file's is \(sha), the manifest says \(m.sha256)") }
        guard problems.isEmpty else { return (m, problems) }
        let meta: StoreCopyMeta
        do { meta = try readCopyMeta(file) } catch { return (m, ["store: \(error)"]) }
        if meta.node != m.node { problems.append("node: the store's is \(meta.node), the manifest says \(m.node)") }
        if meta.storeId != m.storeId { problems.append("storeId: the store's is \(meta.storeId), the manifest says \(m.storeId)") }
        if meta.storeFormat != m.storeFormat {
            problems.append("storeFormat: the store's is \(meta.storeFormat), the manifest says \(m.storeFormat)")
        }
        if meta.lastSequence != m.lastSequence {
            problems.append("lastSequence: the store's is \(meta.lastSequence), the manifest says \(m.lastSequence)")
        }
        return (m, problems)
    }

    /// The meta table of a single-file store copy, opened read-only without a lock file.
    static func readCopyMeta(_ file: String) throws(BackupError) -> StoreCopyMeta {
        do {
            var cfg = Environment.Configuration()
            cfg.readOnly = true
            cfg.singleFile = true
            cfg.noLock = true
            cfg.initialMapSize = 0
            let env = try Environment(path: file, configuration: cfg)
            guard try env.databaseNames().contains("meta") else { throw BackupError.storage("\(file) is not a case store (no meta table)") }
            let meta = try env.openDatabase("meta", options: [])
            return try env.read { txn throws -> StoreCopyMeta in
                func u64(_ key: [UInt8]) throws -> UInt64? {
                    try txn.get(meta, key: key).flatMap { v in v.count == 8 ? v.withUnsafeBytes { UInt64(bigEndianBytes: $0) } : nil }
                }
                guard let node = try txn.get(meta, key: Schema.MetaKey.nodeID).map({ String(decoding: $0, as: UTF8.self) }),
                      let id = try txn.get(meta, key: Schema.MetaKey.storeID),
                      let format = try u64(Schema.MetaKey.schemaVersion), format <= UInt64(UInt32.max) else {
                    throw BackupError.storage("\(file) is not a case store (its meta table names no node, store id or format)")
                }
                return StoreCopyMeta(node: node, storeId: hexString(id),
                                     storeFormat: UInt32(format), lastSequence: try u64(Schema.MetaKey.lastSequence) ?? 0)
            }
        } catch let e as BackupError {
            throw e
        } catch {
            throw .storage("\(file) cannot be read as a store: \(error)")
        }
    }

    /// Size and SHA-256 (hex) of a file, read in 1 MiB chunks.
    static func digest(_ file: String) throws(BackupError) -> (UInt64, String) {
        guard let h = FileHandle(forReadingAtPath: file) else { throw .io(file, "cannot be opened for reading") }
        defer { try? h.close() }
        var hasher = SHA256()
        var total: UInt64 = 0
        while true {
            let chunk: Data
            do { chunk = try h.read(upToCount: 1 << 20) ?? Data() } catch { throw .io(file, "\(error)") }
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
            total += UInt64(chunk.count)
        }
        return (total, hexString(hasher.finalize()))
    }

    private static func durablyRename(_ from: String, to: String) throws(BackupError) {
        guard link(from, to) == 0 else { throw .io(to, String(cString: strerror(errno))) }  // fails if `to` appeared meanwhile
        unlink(from)
        syncDirectory(of: to)
    }

    private static func durablyWrite(_ data: Data, to path: String) throws(BackupError) {
        let partial = path + ".partial"
        unlink(partial)
        let fd = Glibc.open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(partial, String(cString: strerror(errno))) }
        let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        Glibc.close(fd)
        guard written == data.count, synced else { unlink(partial); throw .io(partial, "short write or fsync failed") }
        try durablyRename(partial, to: path)
    }

    /// Copies `file` to `path` (which must not exist) through `path.partial`: written in
    /// 1 MiB chunks, synced, renamed, the directory synced.
    static func copyDurably(_ file: String, to path: String) throws(BackupError) {
        let partial = path + ".partial"
        unlink(partial)
        let src = Glibc.open(file, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { throw .io(file, String(cString: strerror(errno))) }
        defer { Glibc.close(src) }
        let dst = Glibc.open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard dst >= 0 else { throw .io(partial, String(cString: strerror(errno))) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var failure: String?
        while failure == nil {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(src, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 { failure = "reading \(file): \(String(cString: strerror(errno)))"; break }
            let w = buffer.withUnsafeBytes { Glibc.write(dst, $0.baseAddress, n) }
            if w != n { failure = "writing \(partial): \(w < 0 ? String(cString: strerror(errno)) : "short write")" }
        }
        if failure == nil, fsync(dst) != 0 { failure = "fsync \(partial): \(String(cString: strerror(errno)))" }
        Glibc.close(dst)
        if let failure { unlink(partial); throw .io(path, failure) }
        try durablyRename(partial, to: path)
    }

    private static func syncDirectory(of path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let fd = Glibc.open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); Glibc.close(fd) }
    }
}
