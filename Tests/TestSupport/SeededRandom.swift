/// A seeded generator (SplitMix64): a failing seed replays exactly.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// How many cases a property test runs: `EKC_PROPERTY_CASES` overrides the default
/// (e.g. 100,000 for a long local run).
public func propertyCases(_ standard: Int) -> Int {
    if let s = getenvString("EKC_PROPERTY_CASES"), let n = Int(s), n > 0 { return n }
    return standard
}

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

func getenvString(_ name: String) -> String? {
    guard let p = getenv(name) else { return nil }
    return String(cString: p)
}
