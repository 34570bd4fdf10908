import Access
import CaseModel
import Foundation
import JWTKit

/// Verifies operators' bearer tokens for one organisation: the header is checked
/// first (three base64url parts, an allowed algorithm, a known key of the matching
/// type), jwt-kit verifies the signature, and the claims are checked against the
/// provider (issuer, audience, expiry and not-before with leeway, subject, roles).
///
/// Verified tokens are remembered until they expire or the keys change, so a busy
/// operator's requests pay for one signature check, not one each.
public final class TokenVerifier: Sendable {
    public let provider: IdentityProvider
    private let state: Locked<State>

    struct State {
        var keys: KeySet
        var generation: Int
        /// token → principal, for tokens verified with keys of `generation`.
        var verified: [String: Principal] = [:]
    }

    /// Longest token considered; a real one is well under 4 KiB.
    public static let maxTokenBytes = 8 * 1024
    /// Verified tokens remembered at most; beyond, the memory starts over.
    static let cacheLimit = 10_000

    public init(provider: IdentityProvider) async throws {
        self.provider = provider
        let keys = try await KeySet.load(provider.jwksPath)
        state = Locked(State(keys: keys, generation: 1))
    }

    /// Reads the JWKS file again (SIGHUP, or a changed file). On a problem the old
    /// keys stay in use and the problem is thrown for the caller to log.
    @discardableResult
    public func reload() async throws -> Int {
        let keys = try await KeySet.load(provider.jwksPath)
        return state.withLock { s in
            s.keys = keys
            s.generation += 1
            s.verified = [:]
            return keys.kinds.count
        }
    }

    /// Reloads when the file's size or modification time changed since it was read.
    public func reloadIfChanged() async throws -> Bool {
        let current = FileFingerprint(provider.jwksPath)
        guard state.withLock({ $0.keys.fingerprint }) != current else { return false }
        try await reload()
        return true
    }

    public var keyIDs: [String] { state.withLock { $0.keys.kinds.keys.sorted() } }

    /// A token verified earlier and still valid at `now`, without a signature check; nil
    /// when it must be verified.
    public func remembered(_ token: String, now: Millis) -> Principal? {
        state.withLock { s in
            guard let p = s.verified[token] else { return nil }
            return now < p.expiresAt + Millis(provider.leewaySeconds) * 1000 ? p : nil
        }
    }

    public func verify(_ token: String, now: Millis) async -> Result<Principal, TokenError> {
        if let p = remembered(token, now: now) { return .success(p) }
        let (keys, generation) = state.withLock { ($0.keys, $0.generation) }
        let result: Result<Principal, TokenError>
        do {
            result = .success(try await check(token, keys: keys, now: now))
        } catch let e as TokenError {
            result = .failure(e)
        } catch {
            result = .failure(.malformed("\(error)"))
        }
        if case .success(let p) = result {
            state.withLock { s in
                guard s.generation == generation else { return }
                if s.verified.count >= TokenVerifier.cacheLimit { s.verified = [:] }
                s.verified[token] = p
            }
        }
        return result
    }

    private func check(_ token: String, keys: KeySet, now: Millis) async throws -> Principal {
        let header = try TokenHeader(token)
        guard KeySet.allowedAlgorithms.contains(header.alg) else { throw TokenError.algorithmNotAllowed(header.alg) }
        let kid: String
        if let k = header.kid {
            kid = k
        } else if keys.kinds.count == 1 {
            kid = keys.kinds.keys.first!
        } else {
            throw TokenError.unknownKey("(no kid)")
        }
        guard let kind = keys.kinds[kid] else { throw TokenError.unknownKey(kid) }
        guard kind.algorithm == header.alg else { throw TokenError.algorithmNotAllowed("\(header.alg) with a \(kind.algorithm) key") }
        let claims: Claims
        do {
            claims = try await keys.collection.verify(Array(token.utf8), as: Claims.self)
        } catch let e as JWTError where e.errorType == .signatureVerificationFailed {
            throw TokenError.badSignature
        } catch {
            throw TokenError.malformed("\(error)")
        }
        return try principal(claims.object, now: now)
    }

    /// The claims, checked against the provider at `now`.
    func principal(_ c: [String: ClaimValue], now: Millis) throws(TokenError) -> Principal {
        guard case .string(let iss)? = c["iss"] else { throw .wrongIssuer("(none)") }
        guard iss == provider.issuer else { throw .wrongIssuer(iss) }
        let audiences: [String]
        switch c["aud"] {
        case .string(let a)?: audiences = [a]
        case .array(let list)?: audiences = list.compactMap { if case .string(let s) = $0 { s } else { nil } }
        default: audiences = []
        }
        guard audiences.contains(where: provider.audiences.contains) else { throw .wrongAudience }
        let leeway = Millis(provider.leewaySeconds) * 1000
        guard case .number(let exp)? = c["exp"], exp.isFinite, exp > 0, exp < 1e11 else {
            throw .malformed("it has no expiry (exp)")
        }
        let expiresAt = Millis(exp * 1000)
        guard now < expiresAt + leeway else { throw .expired }
        if let nbfValue = c["nbf"] {
            // Bounded on both sides: a time of -1e300 is finite, and no Millis.
            guard case .number(let nbf) = nbfValue, nbf.isFinite, abs(nbf) < 1e11 else { throw .malformed("nbf is not a time") }
            guard now + leeway >= Millis(nbf * 1000) else { throw .notYetValid }
        }
        guard case .string(let subject)? = c[provider.subjectClaim] else {
            throw .invalidSubject("claim \(provider.subjectClaim) is missing")
        }
        guard Actor.isValidName(subject) else {
            throw .invalidSubject("must be 1 to 64 letters, digits, '.', '_', '-' or '@'")
        }
        var node: ClaimValue? = .object(c)
        for part in provider.rolesClaim.split(separator: ".") {
            if case .object(let o)? = node { node = o[String(part)] } else { node = nil }
        }
        var roles: Set<Role> = []
        if case .array(let names)? = node {
            for case .string(let name) in names { if let r = Role(rawValue: name) { roles.insert(r) } }
        }
        return Principal(subject: subject, organisation: provider.organisation, roles: roles, expiresAt: expiresAt)
    }
}

/// A token's header, read before anything is verified to choose (or refuse) the key.
struct TokenHeader {
    let alg: String
    let kid: String?

    init(_ token: String) throws(TokenError) {
        guard token.utf8.count <= TokenVerifier.maxTokenBytes else { throw .malformed("longer than \(TokenVerifier.maxTokenBytes) bytes") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformed("expected three dot-separated parts, got \(parts.count)") }
        for p in parts {
            guard !p.isEmpty, p.utf8.allSatisfy(TokenHeader.isBase64URL) else {
                throw .malformed("a part is empty or not base64url")
            }
        }
        guard let data = TokenHeader.base64URL(parts[0]),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .malformed("the header is not a JSON object")
        }
        guard let alg = json["alg"] as? String else { throw .malformed("the header names no alg") }
        if json["crit"] != nil { throw .malformed("critical header extensions are not supported") }
        if let kid = json["kid"], !(kid is String) { throw .malformed("kid is not a string") }
        self.alg = alg
        self.kid = json["kid"] as? String
    }

    static func isBase64URL(_ c: UInt8) -> Bool {
        (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 45 || c == 95
    }

    static func base64URL(_ s: Substring) -> Data? {
        var b = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b.count % 4 != 0 { b += "=" }
        return Data(base64Encoded: b)
    }
}

/// A token's payload as JSON, so that any claim (the configured roles path among
/// them) can be read; checked by `TokenVerifier.principal`, not by jwt-kit.
struct Claims: JWTPayload {
    let object: [String: ClaimValue]

    init(from decoder: any Decoder) throws {
        object = try decoder.singleValueContainer().decode([String: ClaimValue].self)
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(object)
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

enum ClaimValue: Codable, Sendable, Equatable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case array([ClaimValue])
    case object([String: ClaimValue])
    case null

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([ClaimValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: ClaimValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .number(let n): try c.encode(n)
        case .bool(let b): try c.encode(b)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        case .null: try c.encodeNil()
        }
    }
}

/// A value behind a lock (no NIO in this module).
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ v: Value) { value = v }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
