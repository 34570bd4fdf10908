import Foundation
import Testing
@testable import LMDB

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TempDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("lmdb-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    var path: String { url.path }
    func sub(_ name: String) -> String { url.appendingPathComponent(name).path }
    func remove() { try? FileManager.default.removeItem(at: url) }
}

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func s(_ b: [UInt8]?) -> String? { b.map { String(decoding: $0, as: UTF8.self) } }

@Suite("LMDB environment and transactions")
struct LMDBTests {
    @Test("put, get, contains, delete in a named database")
    func basics() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        let db = try env.openDatabase("things")
        try env.write { (txn) throws in
            try txn.put(db, key: b("a"), value: b("1"))
            try txn.put(db, key: b("b"), value: b("2"))
            try txn.put(db, key: b("a"), value: b("one"))   // overwrite
        }
        try env.read { (txn) throws in
            #expect(s(try txn.get(db, key: b("a"))) == "one")
            #expect(s(try txn.get(db, key: b("b"))) == "2")
            #expect(try txn.get(db, key: b("c")) == nil)
            #expect(try txn.contains(db, key: b("a")))
            #expect(try !txn.contains(db, key: b("zz")))
            #expect(try txn.stat(db).entries == 2)
            let n = try txn.withValue(db, key: b("b")) { $0.count }
            #expect(n == 1)
        }
        let removed = try env.write { txn in (try txn.delete(db, key: b("a")), try txn.delete(db, key: b("a"))) }
        #expect(removed.0 == true && removed.1 == false)
        try env.read { (txn) throws in
            #expect(try txn.get(db, key: b("a")) == nil)
            #expect(try txn.stat(db).entries == 1)
        }
        try env.write { txn in try txn.clear(db) }
        #expect(try env.read { try $0.stat(db).entries } == 0)
    }

    @Test("databases are separate key spaces, and databaseNames lists them")
    func namedDatabases() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        let one = try env.openDatabase("one")
        let two = try env.openDatabase("two")
        _ = try env.openDatabase("three")
        try env.write { (txn) throws in
            try txn.put(one, key: b("k"), value: b("from-one"))
            try txn.put(two, key: b("k"), value: b("from-two"))
        }
        try env.read { (txn) throws in
            #expect(s(try txn.get(one, key: b("k"))) == "from-one")
            #expect(s(try txn.get(two, key: b("k"))) == "from-two")
        }
        #expect(try env.databaseNames().sorted() == ["one", "three", "two"])
        #expect(one.name == "one")
    }

    @Test(".noOverwrite refuses an existing key with .keyExists and keeps the old value")
    func noOverwrite() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        let db = try env.openDatabase("d")
        try env.write { try $0.put(db, key: b("k"), value: b("old"), options: .noOverwrite) }
        #expect(throws: LMDBError.keyExists) {
            try env.write { try $0.put(db, key: b("k"), value: b("new"), options: .noOverwrite) }
        }
        #expect(s(try env.read { try $0.get(db, key: b("k")) }) == "old")
        // .append refuses a key that does not sort last
        try env.write { try $0.put(db, key: b("z"), value: b("1"), options: .append) }
        #expect(throws: LMDBError.keyExists) {
            try env.write { try $0.put(db, key: b("m"), value: b("1"), options: .append) }
        }
    }

    @Test("cursor first/next/last/previous/seek and keyHasPrefix")
    func cursors() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        let db = try env.openDatabase("c")
        let keys = ["apple", "apricot", "banana", "blueberry", "cherry"]
        try env.write { (txn) throws in
            for k in keys.shuffled() { try txn.put(db, key: b(k), value: b(k.uppercased())) }
        }
        try env.read { (txn) throws in
            try txn.withCursor(db) { (c) throws in
                var seen: [String] = []
                var ok = try c.first()
                while ok {
                    seen.append(String(decoding: c.keyBytes, as: UTF8.self))
                    #expect(String(decoding: c.valueBytes, as: UTF8.self) == seen.last!.uppercased())
                    ok = try c.next()
                }
                #expect(seen == keys)
                #expect(try c.last())
                #expect(s(c.keyBytes) == "cherry")
                #expect(try c.previous())
                #expect(s(c.keyBytes) == "blueberry")

                #expect(try c.seek(atLeast: b("b")))
                #expect(s(c.keyBytes) == "banana")
                #expect(c.keyHasPrefix(b("ban")))
                #expect(!c.keyHasPrefix(b("bl")))
                #expect(!c.keyHasPrefix(b("bananas")))   // longer than the key
                #expect(c.keyHasPrefix([]))
                #expect(try c.seek(atLeast: b("apz")))
                #expect(s(c.keyBytes) == "banana")
                #expect(try !c.seek(atLeast: b("d")))
                #expect(try c.seek(exactly: b("apricot")))
                #expect(s(c.valueBytes) == "APRICOT")
                #expect(try !c.seek(exactly: b("apri")))
                // a prefix scan
                var ap: [String] = []
                var more = try c.seek(atLeast: b("ap"))
                while more && c.keyHasPrefix(b("ap")) {
                    ap.append(s(c.keyBytes)!)
                    more = try c.next()
                }
                #expect(ap == ["apple", "apricot"])
            }
        }
        // an empty database
        let empty = try env.openDatabase("empty")
        try env.read { (txn) throws in
            try txn.withCursor(empty) { (c) throws in
                #expect(try !c.first())
                #expect(try !c.last())
                #expect(try !c.seek(atLeast: b("a")))
            }
        }
    }

    @Test("keys sort as unsigned bytes (big-endian numbers sort numerically)")
    func byteOrder() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        let db = try env.openDatabase("n")
        let numbers: [UInt64] = [0, 1, 255, 256, 65_535, 1 << 40, .max, 7, 1_000_000]
        func be(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
        try env.write { txn in for n in numbers { try txn.put(db, key: be(n), value: []) } }
        let read: [[UInt8]] = try env.read { (txn) throws in
            try txn.withCursor(db) { (c) throws in
                var out: [[UInt8]] = []
                var ok = try c.first()
                while ok { out.append(c.keyBytes); ok = try c.next() }
                return out
            }
        }
        #expect(read == numbers.sorted().map(be))
    }

    @Test("a throwing write closure leaves nothing behind")
    func abort() throws {
        struct Boom: Error {}
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        let db = try env.openDatabase("d")
        try env.write { try $0.put(db, key: b("kept"), value: b("1")) }
        #expect(throws: Boom.self) {
            try env.write { (txn) throws in
                try txn.put(db, key: b("lost"), value: b("1"))
                try txn.put(db, key: b("kept"), value: b("2"))
                _ = try txn.delete(db, key: b("kept"))
                throw Boom()
            }
        }
        try env.read { (txn) throws in
            #expect(try txn.get(db, key: b("lost")) == nil)
            #expect(s(try txn.get(db, key: b("kept"))) == "1")
            #expect(try txn.stat(db).entries == 1)
        }
        // the environment is still usable afterwards
        try env.write { try $0.put(db, key: b("after"), value: b("1")) }
        #expect(try env.read { try $0.contains(db, key: b("after")) })
    }

    @Test("a read transaction sees a snapshot: a write committed after it began is invisible inside it")
    func snapshot() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        let db = try env.openDatabase("d")
        try env.write { try $0.put(db, key: b("k"), value: b("v1")) }
        let (before, inside) = try env.read { (txn) throws -> (String?, String?) in
            let before = s(try txn.get(db, key: b("k")))
            // Another thread commits a change while this read is open.
            let done = DispatchSemaphore(value: 0)
            let failure = LockedBox<Error?>(nil)
            let t = Thread {
                do {
                    try env.write { (txn) throws in
                        try txn.put(db, key: b("k"), value: b("v2"))
                        try txn.put(db, key: b("new"), value: b("x"))
                    }
                } catch { failure.set(error) }
                done.signal()
            }
            t.start()
            done.wait()
            #expect(failure.get() == nil)
            #expect(try !txn.contains(db, key: b("new")))
            return (before, s(try txn.get(db, key: b("k"))))
        }
        #expect(before == "v1")
        #expect(inside == "v1")
        try env.read { (txn) throws in
            #expect(s(try txn.get(db, key: b("k"))) == "v2")
            #expect(try txn.contains(db, key: b("new")))
        }
    }

    @Test("the map grows on MDB_MAP_FULL: 20 MB into a 64 KiB map, all readable after reopen")
    func mapGrowth() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var cfg = Environment.Configuration()
        cfg.initialMapSize = 65_536
        let value = [UInt8](repeating: 0xAB, count: 1_000)
        let transactions = 200, perTransaction = 100   // 20,000 × 1,000 bytes = 20 MB
        func key(_ t: Int, _ i: Int) -> [UInt8] { Array(String(format: "%05d-%05d", t, i).utf8) }
        do {
            let env = try Environment(path: dir.sub("env"), configuration: cfg)
            let db = try env.openDatabase("big")
            #expect(env.info().mapSize == 65_536)
            for t in 0..<transactions {
                try env.write { (txn) throws in
                    for i in 0..<perTransaction {
                        var v = value
                        v[0] = UInt8(truncatingIfNeeded: t); v[1] = UInt8(truncatingIfNeeded: i)
                        try txn.put(db, key: key(t, i), value: v)
                    }
                }
            }
            #expect(env.mapGrowths > 0)
            #expect(env.info().mapSize >= 20_000_000)
            #expect(env.info().usedBytes <= env.info().mapSize)
            #expect(try env.read { try $0.stat(db).entries } == transactions * perTransaction)
        }
        // reopen with the same small initial size: the file's size wins
        let env = try Environment(path: dir.sub("env"), configuration: cfg)
        let db = try env.openDatabase("big")
        #expect(env.info().mapSize >= 20_000_000)
        try env.read { (txn) throws in
            #expect(try txn.stat(db).entries == transactions * perTransaction)
            for (t, i) in [(0, 0), (57, 13), (199, 99), (100, 50)] {
                let v = try #require(try txn.get(db, key: key(t, i)))
                #expect(v.count == 1_000)
                #expect(v[0] == UInt8(truncatingIfNeeded: t) && v[1] == UInt8(truncatingIfNeeded: i) && v[999] == 0xAB)
            }
        }
        // and it still accepts writes
        try env.write { try $0.put(db, key: b("after-reopen"), value: value) }
        #expect(try env.read { try $0.contains(db, key: b("after-reopen")) })
    }

    @Test("a map that may not grow further reports .mapFull")
    func mapCeiling() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var cfg = Environment.Configuration()
        cfg.initialMapSize = 65_536
        cfg.maxMapSize = 131_072
        let env = try Environment(path: dir.sub("env"), configuration: cfg)
        let db = try env.openDatabase("d")
        #expect(throws: LMDBError.mapFull) {
            for i in 0..<1_000 {
                try env.write { try $0.put(db, key: b("k\(i)"), value: [UInt8](repeating: 1, count: 2_000)) }
            }
        }
        #expect(env.info().mapSize == 131_072)
        #expect(env.mapGrowths == 1)
    }

    @Test("a read-only environment reads what was written")
    func readOnly() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        do {
            let env = try Environment(path: dir.sub("env"))
            let db = try env.openDatabase("d")
            try env.write { try $0.put(db, key: b("k"), value: b("v")) }
        }
        var cfg = Environment.Configuration()
        cfg.readOnly = true
        let ro = try Environment(path: dir.sub("env"), configuration: cfg)
        let db = try ro.openDatabase("d", options: [])
        #expect(s(try ro.read { try $0.get(db, key: b("k")) }) == "v")
        #expect(throws: LMDBError.notFound) { try ro.openDatabase("missing", options: []) }
    }

    @Test("opening a missing database without .create gives .notFound")
    func missingDatabase() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let env = try Environment(path: dir.sub("env"))
        #expect(throws: LMDBError.notFound) { try env.openDatabase("nope", options: []) }
    }

    @Test("errors have readable descriptions")
    func descriptions() {
        #expect(LMDBError.keyExists.description.contains("exists"))
        #expect(LMDBError.invalid.description.contains("not an LMDB file"))
        #expect(LMDBError(code: 2) == .system(code: 2, message: String(cString: strerror(2))))
    }
}

/// Opening a broken environment must throw, not crash. These run in a child process
/// (exit tests) so that a crash is reported as a failure instead of ending the test run.
/// (Today the child dies with "free(): double free detected": Environment.init closes the
/// env in its catch block, and deinit, which runs because self was fully initialised, closes it again.)
@Suite("LMDB environment open failures")
struct LMDBOpenFailureTests {
    @Test("a directory whose data.mdb is not an LMDB file gives an LMDBError")
    func notLMDB() async throws {
        let dir = try TempDir()
        defer { dir.remove() }   // the child cannot clean up if it crashes
        let garbage = Data((0..<65_536).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        #expect(FileManager.default.createFile(atPath: dir.sub("data.mdb"), contents: garbage))
        let path = dir.path
        await #expect(processExitsWith: .success) { [path = path as String] in
            for _ in 0..<3 {
                do {
                    _ = try Environment(path: path)
                    exit(10)    // opened garbage as a database
                } catch let e as LMDBError {
                    guard e == .invalid || e == .versionMismatch || e == .corrupted else { exit(11) }
                } catch {
                    exit(12)
                }
            }
            exit(0)
        }
    }

    @Test("a missing directory opened read-only gives an LMDBError")
    func missingReadOnly() async throws {
        await #expect(processExitsWith: .success) {
            var cfg = Environment.Configuration()
            cfg.readOnly = true
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lmdb-missing-\(UUID().uuidString)")
            for _ in 0..<3 {
                do {
                    _ = try Environment(path: dir.path, configuration: cfg)
                    exit(10)
                } catch let e as LMDBError {
                    guard case .system(let code, _) = e, code == ENOENT else { exit(11) }
                } catch {
                    exit(12)
                }
            }
            exit(0)
        }
    }

    @Test("an errno error names its number")
    func errnoDescription() {
        #expect(LMDBError.system(code: ENOENT, message: "No such file or directory").description.contains("errno 2"))
    }
}

final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
}
