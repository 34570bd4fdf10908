import CaseModel
import CaseStore
import Foundation
import NIOCore
import NIOHTTP1

/// What a handler reads from a request besides its path: the query, the actor, `If-Match`, a ticket reference and the JSON body. Each refusal names the
/// parameter, header or field (400), or is 404 for a reference that names nothing.
extension OperatorAPI {
    /// The path and the query's parameters; a parameter given twice is remembered as
    /// such, for `checkQuery` to refuse.
    static func split(_ uri: String) -> (Substring, [String: String]) {
        guard let q = uri.firstIndex(of: "?") else { return (uri[...], [:]) }
        var out: [String: String] = [:]
        for pair in uri[uri.index(after: q)...].split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = OperatorAPI.decodeComponent(kv[0])
            let v = kv.count > 1 ? OperatorAPI.decodeComponent(kv[1]) : ""
            out[k] = out[k] == nil ? v : "\u{0}duplicate"
        }
        return (uri[..<q], out)
    }

    /// Form-style decoding of a query component (`+` is a space), skipped when nothing is encoded.
    static func decodeComponent(_ part: Substring) -> String {
        let raw = String(part)
        guard raw.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else { return raw }
        return raw.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? raw
    }

    /// A ticket id or readable number from a path parameter (already percent-decoded by the router).
    func ticketRef(_ s: String) throws(APIError) -> TicketRef {
        guard let ref = TicketRef(s) else {
            throw APIError.notFound("\(s) is neither a ticket id (26-character ULID) nor a number like \(region)-2026-000001")
        }
        return ref
    }

    func checkQuery(_ q: [String: String], allowed: Set<String>) throws(APIError) {
        for (k, v) in q {
            guard allowed.contains(k) else {
                throw .badRequest("unknown_parameter", "\(k) is not a parameter here; allowed: \(allowed.sorted().joined(separator: ", "))", field: k)
            }
            if v == "\u{0}duplicate" { throw .badRequest("duplicate_parameter", "\(k) is given more than once", field: k) }
        }
    }

    func intParam(_ q: [String: String], _ name: String, range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let s = q[name] else { return nil }
        guard let v = Int(s), range.contains(v) else {
            throw .badRequest("invalid_parameter", "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)", field: name)
        }
        return v
    }

    func timeParam(_ q: [String: String], _ name: String) throws(APIError) -> Millis? {
        guard let s = q[name] else { return nil }
        guard let t = TimeParsing.parse(s) else {
            throw .badRequest("invalid_parameter", "\(name) must be an RFC 3339 time or epoch milliseconds", field: name)
        }
        return t
    }

    /// Who an edit is recorded as: the token's subject, with the role that allowed it.
    func actor(_ req: APIRequest) throws(APIError) -> Actor {
        guard let a = req.actor else { throw .unauthorized(.missing) }
        return a
    }

    func jsonBody(_ req: APIRequest) throws(APIError) -> JSONValue {
        let type = req.headers.first(name: "content-type")?.lowercased() ?? ""
        guard type.hasPrefix("application/json") || type.hasPrefix("application/merge-patch+json") else {
            throw APIError(status: .unsupportedMediaType, code: "unsupported_media_type",
                           message: "send the body as application/json", field: "Content-Type")
        }
        return try JSONValue.parse(req.body ?? ByteBuffer())
    }

    /// `If-Match: "7"`, `7` or `W/"7"`; `*` matches any version.
    func ifMatch(_ headers: HTTPHeaders) throws(APIError) -> UInt64? {
        guard let raw = headers.first(name: "if-match")?.trimmingCharacters(in: .whitespaces) else { return nil }
        if raw == "*" { return nil }
        var s = Substring(raw)
        if s.hasPrefix("W/") { s = s.dropFirst(2) }
        if s.hasPrefix("\"") && s.hasSuffix("\"") && s.count >= 2 { s = s.dropFirst().dropLast() }
        guard let v = UInt64(s) else {
            throw .badRequest("invalid_header", "If-Match must be a ticket version such as \"3\"", field: "If-Match")
        }
        return v
    }
}
