import CaseModel
import CaseStore
import Foundation
import Logging

/// For fault testing only (`ekc node start --wall-clock-offset-file PATH`): the node's
/// wall clock is the system's plus a signed number of milliseconds read from a file, so
/// a test can jump one node's clock by minutes without touching the machine's. The file
/// is looked at (stat) at most every 200 ms and read again only when its mtime or size
/// changed; a missing or garbled file means no offset, with one warning per change.
final class WallClockOffset: @unchecked Sendable {
    private let path: String
    private let lock = NSLock()
    private var offset: Millis = 0
    private var checkedAt: UInt64 = 0
    private var seen: (sec: Int, nsec: Int, size: Int64)? = nil
    private var problem: String? = nil

    init(path: String) { self.path = path }

    /// Ten years of milliseconds: fault runs jump clocks by minutes.
    static let maxMillis: Millis = 10 * 366 * 86_400_000

    var clock: @Sendable () -> Millis { { [self] in CaseStore.systemMillis() + self.current() } }

    func current() -> Millis {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.lock()
        defer { lock.unlock() }
        if checkedAt != 0 && now &- checkedAt < 200_000_000 { return offset }
        checkedAt = now
        var st = stat()
        guard stat(path, &st) == 0 else {
            seen = nil
            settle(0, problem: "missing")
            return offset
        }
        let key = (sec: Int(st.st_mtim.tv_sec), nsec: Int(st.st_mtim.tv_nsec), size: Int64(st.st_size))
        if let s = seen, s == key { return offset }
        seen = key
        let text = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        // Added to the wall clock on every read: an offset past ±10 years (the file may say
        // Int64.max) is refused like a garbled one, never added to overflow.
        if let text, let value = Millis(text), (-WallClockOffset.maxMillis...WallClockOffset.maxMillis).contains(value) {
            settle(value, problem: nil)
        } else {
            settle(0, problem: "garbled, or past ±10 years")
        }
        return offset
    }

    private func settle(_ value: Millis, problem: String?) {
        let logger = Logger(label: "ekc.clock")
        if let problem, problem != self.problem {
            logger.warning("wall-clock offset file unusable: no offset", metadata: ["path": "\(path)", "problem": "\(problem)"])
        }
        if value != offset { logger.notice("wall-clock offset changed", metadata: ["from_ms": "\(offset)", "to_ms": "\(value)"]) }
        self.problem = problem
        offset = value
    }
}
