import FuzzHarness

/// libFuzzer's entry point: one input through the answers harness (FuzzHarness/AnswerFuzz.swift).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    AnswerFuzz.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

/// Before the first input: the harness's fixtures (a store, the token verifier), so
/// that what they allocate once is not counted against an input.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    AnswerFuzz.prepare()
    return 0
}
