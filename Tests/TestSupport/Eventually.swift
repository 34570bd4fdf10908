/// Waits, without blocking a cooperative thread, until `condition` holds or about
/// 30 s have passed; returns whether it holds.
public func eventually(_ condition: () -> Bool) async throws -> Bool {
    for _ in 0..<3_000 {
        if condition() { return true }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}
