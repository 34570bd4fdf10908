import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Options every command that talks to a node shares.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "Base URL of the node's API (or set EKC_NODE).")
    var node: String = ProcessInfo.processInfo.environment["EKC_NODE"] ?? "http://127.0.0.1:8400"

    @Option(name: .long, help: "File with the bearer token (default: the token `ekc login` saved for the node's organisation; or set EKC_TOKEN to the token itself).")
    var tokenFile: String?

    @Flag(name: .long, help: "Print the API's JSON instead of a table.")
    var json = false
}

/// A failure the user can act on: printed as one line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Talks to one node's API as the signed-in operator: the token comes from
/// `EKC_TOKEN`, `--token-file`, or the one `ekc login` saved for the node's
/// organisation (asked of the node's public health answer).
final class APIClient: @unchecked Sendable {
    let base: String
    private let tokenFile: String?
    private var token: String?
    /// The organisation whose token to use, when the caller knows it (cluster health).
    private let organisation: String?

    convenience init(_ o: ClientOptions) {
        self.init(base: o.node, tokenFile: o.tokenFile)
    }

    init(base: String, tokenFile: String? = nil, organisation: String? = nil) {
        self.base = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.tokenFile = tokenFile
        self.organisation = organisation
        if let t = ProcessInfo.processInfo.environment["EKC_TOKEN"], !t.isEmpty { token = t }
    }

    /// The bearer token for this node, found once.
    private func bearer() async throws -> String {
        if let token { return token }
        let path: String
        if let tokenFile {
            path = tokenFile
        } else {
            var org = organisation
            if org == nil {
                let (health, _) = try await send("GET", "/v1/health", body: nil, headers: [:], bearer: nil)
                org = (health as? [String: Any])?["organisation"] as? String
            }
            guard let org else { throw CLIError("the node at \(base) did not say its organisation; pass --token-file") }
            path = TokenStore.path(organisation: org)
            guard FileManager.default.fileExists(atPath: path) else {
                throw CLIError("not signed in to organisation \(org): run `ekc login --org \(org) --user YOUR-ID --role operator` (development), or save your token in \(path)")
            }
        }
        guard let raw = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError("cannot read the token file \(path)") }
        let t = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        token = t
        return t
    }

    /// Sends a request; returns the parsed JSON body of a 2xx answer, or throws the API's error message.
    func call(_ method: String, _ path: String, body: [String: Any]? = nil,
              headers: [String: String] = [:]) async throws -> (Any, Data) {
        try await send(method, path, body: body, headers: headers, bearer: try await bearer())
    }

    /// A request without a token (liveness, the OpenAPI document).
    func anonymous(_ method: String, _ path: String) async throws -> (Any, Data) {
        try await send(method, path, body: nil, headers: [:], bearer: nil)
    }

    private func send(_ method: String, _ path: String, body: [String: Any]?, headers: [String: String],
                      bearer: String?) async throws -> (Any, Data) {
        guard let url = URL(string: base + path) else { throw CLIError("invalid node URL \(base)") }
        var req = URLRequest(url: url)
        req.httpMethod = method
        if let bearer { req.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
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
                let hint = status == 401 ? " (sign in again: `ekc login`)" : ""
                throw CLIError("\(status) \(e["code"] as? String ?? "error")\(field): \(e["message"] as? String ?? "")\(hint)")
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
