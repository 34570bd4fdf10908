import Access
import CaseModel
import Identity
import NIOHTTP1

/// Who is calling, as the HTTP layer found out before routing.
public enum Caller: Sendable {
    /// No `Authorization` header: public routes only.
    case anonymous
    case principal(Principal)
    /// A token was sent and refused; every route answers 401.
    case refused(TokenError)
}

/// Whom the operator port answers: tokens of this node's organisation's identity
/// provider only, on the host names it is configured for (a page in an operator's
/// browser that reaches 127.0.0.1 through DNS rebinding sends its own Host and
/// Origin, and is refused).
public final class OperatorAccess: Sendable {
    public let verifier: TokenVerifier
    /// Lower-case host names (no port) the node is reached by.
    let hostNames: Set<String>

    public init(verifier: TokenVerifier, hostNames: [String]) {
        self.verifier = verifier
        self.hostNames = Set(hostNames.map { $0.lowercased() })
    }

    /// The names a node listening on `listenHost` is reached by without configuration:
    /// the address itself, and the loopback names when it is a loopback address.
    public static func defaultHostNames(listenHost: String) -> [String] {
        var names = [listenHost.lowercased()]
        if ["127.0.0.1", "::1", "localhost", "0.0.0.0", "::"].contains(listenHost) {
            names += ["localhost", "127.0.0.1", "::1"]
        }
        return names
    }

    public enum Lookup {
        case ready(Caller)
        /// A token not seen before (or expired from memory): verify it, then route.
        case verify(String)
    }

    /// The caller, at once when no token was sent or the token was verified before.
    func lookup(_ headers: HTTPHeaders, now: Millis) -> Lookup {
        guard let value = headers.first(name: "authorization") else { return .ready(.anonymous) }
        guard let token = OperatorAccess.bearerToken(value) else {
            return .ready(.refused(.malformed("use the Bearer scheme: `Authorization: Bearer <token>`")))
        }
        if let p = verifier.remembered(token, now: now) { return .ready(.principal(p)) }
        return .verify(token)
    }

    /// The token of `Bearer <token>` (scheme in any case, spaces around), read on the
    /// UTF-8 bytes: this runs on every request, and Foundation's trimming went through
    /// UTF-16 at a fifth of the node's CPU under load.
    static func bearerToken(_ value: String) -> String? {
        var bytes = Substring(value).utf8[...]
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
        while let f = bytes.first, isSpace(f) { bytes = bytes.dropFirst() }
        while let l = bytes.last, isSpace(l) { bytes = bytes.dropLast() }
        let scheme = Array("bearer".utf8)
        guard bytes.count > scheme.count + 1,
              zip(bytes.prefix(scheme.count), scheme).allSatisfy({ ($0 | 0x20) == $1 }),
              let sep = bytes.dropFirst(scheme.count).first, isSpace(sep) else { return nil }
        bytes = bytes.dropFirst(scheme.count)
        while let f = bytes.first, isSpace(f) { bytes = bytes.dropFirst() }
        guard !bytes.isEmpty else { return nil }
        return String(Substring(bytes))
    }

    /// Host (HTTP/2: `:authority`) must name this node; Origin, when a browser sends
    /// one, must be this node too.
    func checkOrigin(_ headers: HTTPHeaders) throws(APIError) {
        guard let host = headers.first(name: "host") else {
            throw APIError(status: .badRequest, code: "host_required", message: "a request must name the node in Host", field: "Host")
        }
        guard hostNames.contains(OperatorAccess.hostName(host)) else {
            throw APIError(status: .misdirectedRequest, code: "host_not_served",
                           message: "this node does not answer to \(host.prefix(100)); configure its names with --api-host-name",
                           field: "Host")
        }
        if let origin = headers.first(name: "origin") {
            let rest = origin.lowercased().split(separator: "://", maxSplits: 1)
            guard rest.count == 2, hostNames.contains(OperatorAccess.hostName(String(rest[1]))) else {
                throw APIError(status: .forbidden, code: "origin_not_allowed",
                               message: "requests from pages of \(origin.prefix(100)) are refused", field: "Origin")
            }
        }
    }

    /// `Example.org:8400` → `example.org`; `[::1]:8400` → `::1`.
    static func hostName(_ authority: String) -> String {
        let s = authority.lowercased()
        if s.hasPrefix("["), let close = s.firstIndex(of: "]") { return String(s[s.index(after: s.startIndex)..<close]) }
        if let colon = s.lastIndex(of: ":"), s.firstIndex(of: ":") == colon { return String(s[..<colon]) }
        return s
    }
}

extension APIError {
    /// 401 with RFC 6750's `WWW-Authenticate`.
    static func unauthorized(_ e: TokenError) -> APIError {
        var error = APIError(status: .unauthorized, code: e.code, message: e.message, field: "Authorization")
        let challenge = e == .missing ? #"Bearer realm="ekc""#
            : #"Bearer realm="ekc", error="invalid_token", error_description="\#(e.code)""#
        error.headers = [("www-authenticate", challenge)]
        return error
    }

    static func forbidden(_ action: Action, needs: Set<Role>, has: Set<Role>) -> APIError {
        let needed = needs.sorted().map(\.rawValue)
        let held = has.sorted().map(\.rawValue)
        let message = needed.isEmpty ? "\(action.rawValue) is not allowed to anyone here"
            : "\(action.rawValue) needs the role \(needed.joined(separator: " or ")); the token has \(held.isEmpty ? "no role this node knows" : held.joined(separator: ", "))"
        var e = APIError(status: .forbidden, code: "forbidden", message: message, field: nil)
        e.extra = [("action", .string(action.rawValue)), ("roles", .string(needed.joined(separator: ",")))]
        return e
    }
}
