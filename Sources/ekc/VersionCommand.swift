import ArgumentParser
import EKCNode
import Foundation

/// `ekc version`: what this binary is, before it is run against a store or a peer.
struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version",
        abstract: "This build's release, the store format it reads and writes, and the replication protocol versions and capabilities it speaks.")
    @Flag var json = false

    func run() throws {
        let p = Release.protocolVersions
        if json {
            let out: [String: Any] = [
                "release": Release.name, "storeFormat": Int(Release.storeFormat),
                "protocolVersions": ["min": Int(p.lowerBound), "max": Int(p.upperBound)],
                "capabilities": Release.capabilities.names,
            ]
            printJSON(try JSONSerialization.data(withJSONObject: out))
        } else {
            print("ekc \(Release.name)")
            print("store format      \(Release.storeFormat)")
            print("protocol versions \(p.lowerBound == p.upperBound ? "\(p.lowerBound)" : "\(p.lowerBound)-\(p.upperBound)")")
            print("capabilities      \(Release.capabilities.isEmpty ? "none beyond the base protocol" : Release.capabilities.names.joined(separator: ", "))")
        }
    }
}
