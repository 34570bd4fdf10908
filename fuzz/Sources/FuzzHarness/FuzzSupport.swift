import Access
import CaseModel
import Dispatch
import Foundation
import Replication
@testable import EKCNode

// What the four harnesses share. These files are compiled twice: into the fuzz package's
// FuzzHarness module (libFuzzer, address sanitizer) and into the node's EKCNodeTests,
// which replays fuzz/corpus/<target>/ through the same functions (a symlink,
// Tests/EKCNodeTests/FuzzHarness). A harness refuses nothing: whatever the bytes, the
// code under test must answer with a value or a typed error; a trap, a hang or a leak
// is the finding.

/// The harnesses by the name of their corpus folder and libFuzzer target.
public enum FuzzTargets {
    public static let all: [(name: String, run: @Sendable ([UInt8]) -> Void)] = [
        ("json", JSONFuzz.run),
        ("frame", FrameFuzz.run),
        ("store", StoreFuzz.run),
        ("token", TokenFuzz.run),
        ("answers", AnswerFuzz.run),
    ]
}

/// The fixed world every input is judged in: a federation of two regions and a fund,
/// and one instant (so that seeds stay valid and runs repeat).
enum FuzzWorld {
    /// 2026-11-20 16:00 Irkutsk (08:00 UTC).
    static let now: Millis = 1_795_132_800_000 + 8 * 3_600_000
    static let irkMain = NodeID("irk-main")!
    static let irkOffice = NodeID("irk-office-1")!
    static let pfrMain = NodeID("pfr-main")!
    static let nnMain = NodeID("nn-main")!
    static let directory = Directory([irkMain: "38", irkOffice: "38", pfrMain: "pension", nnMain: "52"])
    static let kinds = RecordKinds([TicketRecord.schema, TransferRecord.schema])
    static let supervisor = Actor(user: "sv-orlova", role: "supervisor")
    static let workingHours = WorkingHours(offsetMinutes: 480)

    /// A folder of this process for files a harness needs (a JWKS, a store), removed at exit.
    static let folder: String = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let path = "\(base)/ekc-fuzz-\(getpid())-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        atexit { FuzzWorld.removeFolders() }
        FuzzWorld.created.withLock { $0.append(path) }
        return path
    }()

    static let created = FuzzLocked<[String]>([])

    static func removeFolders() {
        for p in created.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: p) }
    }
}

/// A value behind a lock.
final class FuzzLocked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ v: Value) { value = v }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Runs async code to its end from synchronous code (libFuzzer's callback is
/// synchronous; the token verifier and the key set loader are async).
func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    let box = FuzzLocked<T?>(nil)
    Task.detached {
        let v = await body()
        box.withLock { $0 = v }
        done.signal()
    }
    done.wait()
    return box.withLock { $0! }
}

/// Reads a fuzz input: a selector byte, then bytes taken as fields. Past the end every
/// read gives zeros / empty, so any input is a complete case.
struct FuzzBytes {
    let bytes: [UInt8]
    var i = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var rest: [UInt8] { i < bytes.count ? Array(bytes[i...]) : [] }
    var isEmpty: Bool { i >= bytes.count }

    mutating func byte() -> UInt8 {
        guard i < bytes.count else { return 0 }
        defer { i += 1 }
        return bytes[i]
    }

    /// A field of up to 255 bytes, its length in the first byte.
    mutating func field() -> [UInt8] {
        let n = Int(byte())
        let end = min(bytes.count, i + n)
        defer { i = end }
        return i < end ? Array(bytes[i..<end]) : []
    }

    /// A field of up to 65535 bytes, its length in two bytes (big-endian).
    mutating func longField() -> [UInt8] {
        let n = Int(byte()) << 8 | Int(byte())
        let end = min(bytes.count, i + n)
        defer { i = end }
        return i < end ? Array(bytes[i..<end]) : []
    }

    mutating func string() -> String { String(decoding: field(), as: UTF8.self) }
}

/// What the API writes must be JSON its own strict parser reads.
func checkJSON(_ bytes: [UInt8]) {
    do { _ = try JSONParser.parse(bytes) } catch {
        preconditionFailure("the API wrote JSON it cannot read (\(error)): \(String(decoding: bytes.prefix(300), as: UTF8.self))")
    }
}
