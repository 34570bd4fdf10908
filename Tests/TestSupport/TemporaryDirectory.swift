import Foundation

/// A fresh directory under the temporary directory, for a store or a file a test
/// writes; `remove()` deletes it with everything in it.
public struct TemporaryDirectory: Sendable {
    public let url: URL

    public init(prefix: String = "ekc-tests") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)",
                                                                             isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory (a store's LMDB directory, by default).
    public func path(_ name: String = "store") -> String { url.appendingPathComponent(name).path }

    public func remove() { try? FileManager.default.removeItem(at: url) }
}
