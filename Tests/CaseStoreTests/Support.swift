import Foundation
import Testing
import CaseModel
import LMDB
@testable import CaseStore

let hour: Millis = 3_600_000
let day: Millis = 86_400_000
/// Friday 2026-11-20 08:00 UTC = 16:00 in Irkutsk (UTC+8).
let t0: Millis = 1_795_132_800_000 + 8 * hour
let irk = NodeID("irk-main")!
let ivanova = Actor(user: "ivanova", role: "operator")
let petrov = Actor(user: "petrov", role: "supervisor")

/// A wall clock the test moves by hand.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Millis
    init(_ start: Millis = t0) { value = start }
    var now: Millis {
        get { lock.lock(); defer { lock.unlock() }; return value }
        set { lock.lock(); value = newValue; lock.unlock() }
    }
    func advance(_ ms: Millis) { lock.lock(); value += ms; lock.unlock() }
    var function: @Sendable () -> Millis { { [self] in self.now } }
}

final class Box<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func with<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
    var get: T { with { $0 } }
}

/// A unique directory under the temporary directory; `remove()` deletes it.
struct StoreDir {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("casestore-tests-\(UUID().uuidString)",
                                                                             isDirectory: true)
    init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
    var path: String { url.appendingPathComponent("store").path }
    func remove() { try? FileManager.default.removeItem(at: url) }
}

func configuration(_ clock: TestClock, node: NodeID = irk, maxGroup: Int = 2048) -> StoreConfiguration {
    StoreConfiguration(node: node, region: "38", utcOffsetMinutes: 480, maxGroup: maxGroup, wallClock: clock.function)
}

func draft(_ channel: Channel = .web, regime: LegalRegime = .consultation, subject: String = "Пособие",
           assignee: String? = nil) -> TicketDraft {
    TicketDraft(channel: channel, topic: "child-benefits", subject: subject,
                statement: "Когда придёт единое пособие на ребёнка?", legalRegime: regime, assignee: assignee)
}

extension CaseStore {
    func tableCounts() throws -> [String: Int] {
        Dictionary(uniqueKeysWithValues: try stats().tables.map { ($0.name, $0.entries) })
    }

    func patch(_ ref: TicketRef, _ p: TicketPatch, ifMatch: UInt64? = nil, actor: Actor = ivanova) async throws(StoreError) -> Ticket {
        try await perform(.patch(ref, p, ifMatch: ifMatch), actor: actor).ticket!
    }

    func note(_ ref: TicketRef, _ text: String, _ visibility: NoteVisibility = .internal,
              actor: Actor = ivanova) async throws(StoreError) -> Note {
        guard case .note(let n) = try await perform(.addNote(ref, text: text, visibility: visibility), actor: actor) else {
            throw .corrupt("not a note")
        }
        return n
    }

    /// Submits without waiting; the result lands in `results[index]`.
    func submitCollecting(_ edit: Edit, index: Int, into results: Box<[Int: Result<EditOutcome, StoreError>]>) {
        submit(edit, actor: ivanova) { r in results.with { $0[index] = r } }
    }
}

/// Waits (without blocking a cooperative thread) until `condition` holds or ~30 s pass.
func eventually(_ condition: () -> Bool) async throws -> Bool {
    for _ in 0..<3_000 {
        if condition() { return true }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}

extension TicketRef {
    init(_ t: Ticket) { self = .id(t.id) }
}
