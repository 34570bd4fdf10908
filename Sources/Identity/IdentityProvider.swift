import Foundation

/// An organisation's identity provider as a node trusts it: whose tokens, signed by
/// which keys (a JWKS file; nothing is fetched over the network), for which audience,
/// and where the roles are in a token. Keycloak: issuer `https://HOST/realms/REALM`,
/// roles claim `realm_access.roles`.
public struct IdentityProvider: Sendable, Equatable {
    public var organisation: String
    public var issuer: String
    /// A token must name at least one of these in `aud`.
    public var audiences: [String]
    public var jwksPath: String
    /// A dotted path to an array of role names, e.g. `realm_access.roles` or `roles`.
    public var rolesClaim: String
    /// The claim whose value becomes the actor in history (`sub`, or `preferred_username`).
    public var subjectClaim: String
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    public var leewaySeconds: Int

    public static let defaultRolesClaim = "realm_access.roles"
    public static let defaultAudience = "ekc"

    public init(organisation: String, issuer: String, audiences: [String] = [IdentityProvider.defaultAudience],
                jwksPath: String, rolesClaim: String = IdentityProvider.defaultRolesClaim,
                subjectClaim: String = "sub", leewaySeconds: Int = 60) {
        self.organisation = organisation
        self.issuer = issuer
        self.audiences = audiences
        self.jwksPath = jwksPath
        self.rolesClaim = rolesClaim
        self.subjectClaim = subjectClaim
        self.leewaySeconds = leewaySeconds
    }
}

/// Why a bearer token was refused. Each is a 401 at the edge; the message says what
/// to fix without echoing the token.
public enum TokenError: Error, Sendable, Equatable {
    case missing
    case malformed(String)
    case algorithmNotAllowed(String)
    case unknownKey(String)
    case badSignature
    case expired
    case notYetValid
    case wrongIssuer(String)
    case wrongAudience
    case invalidSubject(String)

    public var code: String {
        switch self {
        case .missing: "token_missing"
        case .malformed: "token_malformed"
        case .algorithmNotAllowed: "token_algorithm"
        case .unknownKey: "token_unknown_key"
        case .badSignature: "token_signature"
        case .expired: "token_expired"
        case .notYetValid: "token_not_yet_valid"
        case .wrongIssuer: "token_issuer"
        case .wrongAudience: "token_audience"
        case .invalidSubject: "token_subject"
        }
    }

    public var message: String {
        switch self {
        case .missing: "send `Authorization: Bearer <token>` from your organisation's identity provider (development: `ekc login`)"
        case .malformed(let why): "the bearer token is not a signed JWT: \(why)"
        case .algorithmNotAllowed(let alg): "tokens signed with \(alg) are not accepted; RS256, ES256 or EdDSA only"
        case .unknownKey(let kid): "the token's signing key \(kid) is not among this organisation's keys"
        case .badSignature: "the token's signature does not verify"
        case .expired: "the token has expired; sign in again"
        case .notYetValid: "the token is not valid yet (nbf); check the clocks"
        case .wrongIssuer(let iss): "tokens of issuer \(iss) are not accepted by this node"
        case .wrongAudience: "the token is not meant for this node (aud)"
        case .invalidSubject(let why): "the token's subject \(why)"
        }
    }
}

/// A problem with a provider's configuration or key file, found at start or reload.
public struct IdentityConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
