/// Not a fuzz target: built with the targets' flags (-sanitize=fuzzer), whose runtime
/// wants this symbol linked in.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { 0 }
