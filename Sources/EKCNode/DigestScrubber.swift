import CaseModel
import CaseStore
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers

/// Runs the store's digest scrub (CaseStore/Digest/DigestScrub.swift) when the node
/// starts and then every `interval`: in small steps between other edits, so that
/// operators and pulls wait at most one step. Damage it finds is logged, counted, and
/// shown in the health answer until anti-entropy repairs it from a peer.
public final class DigestScrubber: Sendable {
    public struct Status: Sendable {
        public var passes = 0
        public var running = false
        public var lastFinished: Date?
        public var checked = 0
        public var fixed = 0
        public var damagedFound = 0
    }

    let store: CaseStore
    let interval: Duration
    let logger: Logger
    let state = NIOLockedValueBox(Status())
    let task = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// Items per step: a step is one write transaction on the commit thread.
    static let step = 256

    public init(store: CaseStore, interval: Duration, logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    public var status: Status { state.withLockedValue { $0 } }

    public func start() {
        task.withLockedValue { $0 = Task { await self.loop() } }
    }

    public func stop() async {
        let t = task.withLockedValue { t -> Task<Void, Never>? in defer { t = nil }; return t }
        t?.cancel()
        await t?.value
    }

    private func loop() async {
        while !Task.isCancelled {
            await pass()
            try? await Task.sleep(for: interval)
        }
    }

    /// One whole pass (resuming one a restart interrupted).
    public func pass() async {
        state.withLockedValue { $0.running = true; $0.checked = 0; $0.fixed = 0 }
        defer { state.withLockedValue { $0.running = false } }
        let started = Date()
        while !Task.isCancelled {
            let outcome: EditOutcome
            do {
                outcome = try await store.perform(.scrubDigests(limit: DigestScrubber.step), actor: .system)
            } catch {
                logger.error("digest scrub failed; it resumes at the next pass", metadata: ["error": "\(error)"])
                return
            }
            guard case .scrubbed(let report) = outcome else { return }
            state.withLockedValue { s in
                s.checked += report.checked
                s.fixed += report.fixed
                s.damagedFound += report.damaged.count
            }
            if !report.damaged.isEmpty {
                Counter(label: "ekc_digest_damaged_records_total").increment(by: report.damaged.count)
                logger.error("records changed under the store (their bytes no longer hash to what was written); anti-entropy will replace them from a peer", metadata: [
                    "records": "\(report.damaged.prefix(20).map { "\($0.kind)/\($0.id)" }.joined(separator: ","))"])
            }
            if report.finished {
                let s = state.withLockedValue { s -> Status in
                    s.passes += 1
                    s.lastFinished = Date()
                    return s
                }
                logger.info("digest scrub finished", metadata: [
                    "checked": "\(s.checked)", "fixed": "\(s.fixed)", "seconds": "\(Int(Date().timeIntervalSince(started)))"])
                return
            }
            // Room for other edits between steps.
            try? await Task.sleep(for: .milliseconds(2))
        }
    }
}
