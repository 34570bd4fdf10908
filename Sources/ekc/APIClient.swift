import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Options every command that talks to a node shares.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "Base URL of the node's API (or set EKC_NODE).")
    var node: String = ProcessInfo.processInfo.environment["EKC_NODE"] ?? "http://127.0.0.1:8400"

    @Option(name: .long, help: "Operator id recorded in history (or set EKC_ACTOR).")
    var actor: String = ProcessInfo.processInfo.environment["EKC_ACTOR"] ?? ProcessInfo.processInfo.environment["USER"] ?? "operator"

    @Flag(name: .long, help: "Print the API's JSON instead of a table.")
    var json = false
}

/// A failure the user can act on: printed as one line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

struct APIClient {
    let base: String
    let actor: String

    init(_ o: ClientOptions) {
        self.init(base: o.node, actor: o.actor)
    }

    init(base: String, actor: String) {
        self.base = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.actor = actor
    }

    /// Sends a request; returns the parsed JSON body of a 2xx answer, or throws the API's error message.
    func call(_ method: String, _ path: String, body: [String: Any]? = nil,
              headers: [String: String] = [:]) async throws -> (Any, Data) {
        guard let url = URL(string: base + path) else { throw CLIError("invalid node URL \(base)") }
        var req = URLRequest(url: url)
        req.httpMethod = method
        req.setValue(actor, forHTTPHeaderField: "X-EKC-Actor")
        for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
        if let body {
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
            req.httpBody = try JSONSerialization.data(withJSONObject: body)
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: req)
        } catch {
            throw CLIError("cannot reach the node at \(base) (\(error.localizedDescription)); is it running? Start one with `ekc node start`, or pass --node URL")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let parsed = (try? JSONSerialization.jsonObject(with: data)) ?? [:]
        guard (200..<300).contains(status) else {
            if let e = (parsed as? [String: Any])?["error"] as? [String: Any] {
                let field = (e["field"] as? String).map { " [\($0)]" } ?? ""
                throw CLIError("\(status) \(e["code"] as? String ?? "error")\(field): \(e["message"] as? String ?? "")")
            }
            throw CLIError("the node answered \(status)")
        }
        return (parsed, data)
    }
}

func printJSON(_ data: Data) {
    if let obj = try? JSONSerialization.jsonObject(with: data),
       let pretty = try? JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys]) {
        print(String(decoding: pretty, as: UTF8.self))
    } else {
        print(String(decoding: data, as: UTF8.self))
    }
}

/// A plain text table for people.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map { $0.count }
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}

func text(_ v: Any?) -> String {
    switch v {
    case nil, is NSNull: return "-"
    case let s as String: return s
    case let n as NSNumber: return n.stringValue
    default: return "\(v!)"
    }
}

func shorten(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }
