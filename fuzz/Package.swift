// swift-tools-version:6.2
import Foundation
import PackageDescription

// Coverage-guided fuzzing of what a stranger can send a node (libFuzzer, address
// sanitizer): `make fuzz`, or `fuzz/run.sh TARGET SECONDS`. A package of its own so that
// the node's `swift build` / `swift test` never see it. It builds the node's modules
// from the package above (which lists them as a product only when EKC_FUZZ=1 is set,
// as run.sh does), and reaches their internal entry points with `@testable import`
// (debug builds are built for testing).
//
// FuzzHarness holds the function each target runs its input through; the node's test
// target EKCNodeTests compiles the same files (a symlink, Tests/EKCNodeTests/FuzzHarness)
// and replays fuzz/corpus/<target>/ through them in `make test`.

// The identity SwiftPM gives `.package(path: "..")`: the folder's name.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let node = root.lastPathComponent.lowercased()

func fuzzTarget(_ name: String) -> Target {
    .executableTarget(name: "fuzz-\(name)", dependencies: ["FuzzHarness", "CFuzzMain"])
}

let package = Package(
    name: "ekc-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(path: "..")],
    targets: [
        // libFuzzer's driver, started from each target's main.swift.
        .target(name: "CFuzzMain"),
        .target(name: "FuzzHarness", dependencies: [.product(name: "EKCFuzzModules", package: node)]),
        fuzzTarget("json"),
        fuzzTarget("frame"),
        fuzzTarget("store"),
        fuzzTarget("token"),
        fuzzTarget("answers"),
        // Writes the seed corpus from the node's own encoders (fuzz/README.md says how).
        .executableTarget(name: "fuzz-seeds", dependencies: ["FuzzHarness"]),
    ],
    swiftLanguageModes: [.v6]
)
