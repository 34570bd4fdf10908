// swift-tools-version:6.2
import PackageDescription

// Dependencies point one way only:
//   CaseModel ← Replication ← CaseStore ← EKCNode ← ekc
//   CaseModel ← Access ← Identity ← EKCNode
// LMDB (the safe layer over liblmdb) is used by CaseStore only; nothing below
// EKCNode imports NIO, and nothing in CaseModel or Replication imports LMDB.

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOHTTP1", package: "swift-nio"),
    .product(name: "NIOHTTP2", package: "swift-nio-http2"),
]

let targets: [Target] = [
    .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
    .target(name: "LMDB", dependencies: ["CLMDB"]),
    .systemLibrary(name: "CMalloc"),
    .target(name: "CaseModel"),
    // Who may do what: roles, the permission table, an operator's principal. Pure.
    .target(name: "Access", dependencies: ["CaseModel"]),
    // Operators' bearer tokens: JWKS per organisation, verification with jwt-kit,
    // the development identity provider.
    .target(
        name: "Identity",
        dependencies: ["Access", .product(name: "JWTKit", package: "jwt-kit"),
                       .product(name: "Crypto", package: "swift-crypto")]),
    .target(name: "Replication", dependencies: ["CaseModel"]),
    .target(
        name: "CaseStore",
        dependencies: ["CaseModel", "Replication", "LMDB", "Access",
                       .product(name: "Crypto", package: "swift-crypto"),
                       .product(name: "Logging", package: "swift-log"),
                       .product(name: "Metrics", package: "swift-metrics")]),
    .target(
        name: "EKCNode",
        dependencies: ["CaseModel", "Replication", "CaseStore", "Wire", "CMalloc", "Access", "Identity"] + nio + [
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ],
        resources: [.copy("Resources/openapi.yaml")]),
    .executableTarget(
        name: "ekc",
        dependencies: [
            "CaseModel", "CaseStore", "EKCNode", "LMDB", "Access", "Identity",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    .executableTarget(
        name: "ekc-bench",
        dependencies: ["CaseModel", "Replication", "CaseStore", "LMDB", "EKCNode",
                       .product(name: "ArgumentParser", package: "swift-argument-parser"),
                       .product(name: "Logging", package: "swift-log")] + nio),
    .target(
        name: "Wire",
        dependencies: ["CaseModel", "Replication", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
    // Helpers shared by the test targets: seeded generators, a test federation, a
    // record kind used only by tests, fake clocks.
    .target(name: "TestSupport", dependencies: ["CaseModel", "Replication"], path: "Tests/TestSupport"),
    .testTarget(name: "LMDBTests", dependencies: ["LMDB"]),
    .testTarget(name: "CaseModelTests", dependencies: ["CaseModel"]),
    .testTarget(name: "AccessTests", dependencies: ["Access", "CaseModel"]),
    .testTarget(name: "IdentityTests", dependencies: ["Identity", "Access",
                                                      .product(name: "JWTKit", package: "jwt-kit"),
                                                      .product(name: "Crypto", package: "swift-crypto")]),
    .testTarget(name: "CaseStoreTests", dependencies: ["CaseStore", "CaseModel", "LMDB", "Replication", "TestSupport", "Access"]),
    .testTarget(name: "WireTests", dependencies: ["Wire", "Replication", "CaseModel", "TestSupport",
                                                  .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
    .testTarget(name: "ReplicationTests", dependencies: ["Replication", "TestSupport"]),
    .testTarget(name: "EKCNodeTests", dependencies: ["EKCNode", "CaseStore", "CaseModel", "Replication", "Wire", "TestSupport"]),
]

// Release builds: generic code of the storage layer (transactions, cursors,
// codecs) must be specialised across module boundaries, or every read pays for
// runtime generic metadata lookups.
for target in targets where target.type != .system {
    // Exclusivity is proven statically for our value types; the dynamic checks on
    // class properties cost a measurable share of every request.
    target.swiftSettings = [.unsafeFlags(["-cross-module-optimization", "-enforce-exclusivity=unchecked"],
                                         .when(configuration: .release))]
}

// The fuzzing package (fuzz/, `make fuzz`) builds its targets against the modules
// below; it sets EKC_FUZZ=1 when it builds, and only then are they a product. Every
// other build sees the two executables only.
let fuzzProducts: [Product] = Context.environment["EKC_FUZZ"] == nil ? [] : [
    .library(name: "EKCFuzzModules",
             targets: ["CaseModel", "Access", "Identity", "Replication", "CaseStore", "Wire", "EKCNode"]),
]

let package = Package(
    name: "ekc",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "ekc", targets: ["ekc"]),
        .executable(name: "ekc-bench", targets: ["ekc-bench"]),
    ] + fuzzProducts,
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.0"),
    ],
    targets: targets,
    swiftLanguageModes: [.v6]
)
