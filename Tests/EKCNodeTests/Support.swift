import CaseModel
import CaseStore
import Foundation
import Replication
import Wire

/// The repository's root (<root>/Tests/EKCNodeTests/Support.swift).
let repoRoot: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
}()

struct CommandFailed: Error, CustomStringConvertible {
    let description: String
}

/// Runs `/bin/bash ARGUMENTS`; its output, or an error with the output if it failed.
@discardableResult
func run(_ arguments: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/bash")
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard p.terminationStatus == 0 else {
        throw CommandFailed(description: "\(arguments.joined(separator: " ")) exited \(p.terminationStatus): \(text)")
    }
    return text
}

/// What a puller does with a peer's feed, without the network: pages of `source`'s
/// feed after `since`, each record decoded and checked as the wire reader does, merged
/// into `target` with the checkpoint. Returns the last report and sequence.
@discardableResult
func pull(from source: CaseStore, into target: CaseStore, since: UInt64 = 0) async throws -> (MergeReport, UInt64) {
    let reading = RecordReading(kinds: target.kinds, check: CheckContext(directory: target.configuration.directory))
    var after = since
    var report = MergeReport()
    while true {
        let page = try source.feedPage(after: after, limit: 100)
        guard let last = page.entries.last else { return (report, after) }
        let records = page.entries.map { e in e.delta.withUnsafeBytes { reading.record($0, sequence: e.sequence) } }
        report = try await target.merge(RemoteBatch(peer: source.configuration.node, sourceStoreID: source.storeIDBytes,
                                                    throughSequence: last.sequence, records: records))
        after = last.sequence
    }
}
