import Access
import Crypto
import Foundation
import JWTKit

/// A development identity provider: one ES256 key per organisation, kept in
/// `DIR/ORG/` (`signing-key.pem`, 0600; `jwks.json`, the public key a node trusts).
/// `ekc login` signs tokens with it the way Keycloak would (issuer per realm, roles in
/// `realm_access.roles`). Nothing here is for production: there, nodes read the
/// organisation's real provider's JWKS and never hold a signing key.
public struct DevIdentityProvider: Sendable {
    public let directory: String
    public let organisation: String

    public init(directory: String, organisation: String) {
        self.directory = directory
        self.organisation = organisation
    }

    public var folder: String { "\(directory)/\(organisation)" }
    public var keyPath: String { "\(folder)/signing-key.pem" }
    public var jwksPath: String { "\(folder)/jwks.json" }
    /// Shaped like a Keycloak realm's issuer; `.invalid` so it can never resolve.
    public var issuer: String { DevIdentityProvider.issuer(of: organisation) }

    public static func issuer(of organisation: String) -> String {
        "https://idp.dev.ekc.invalid/realms/\(organisation)"
    }

    /// What a node configures to trust this provider.
    public var provider: IdentityProvider {
        IdentityProvider(organisation: organisation, issuer: issuer, jwksPath: jwksPath)
    }

    /// Creates the key pair unless it exists; returns whether it created it. Several
    /// processes may ask at once (two nodes of one organisation starting together): the
    /// pair is written in a folder of its own and renamed into place, so exactly one
    /// pair wins and everyone reads that one.
    @discardableResult
    public func ensureKeys() throws -> Bool {
        let fm = FileManager.default
        if fm.fileExists(atPath: keyPath) && fm.fileExists(atPath: jwksPath) { return false }
        if fm.fileExists(atPath: folder) {
            throw IdentityConfigurationError("\(folder) exists but lacks signing-key.pem or jwks.json; remove it to create a new development key")
        }
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let staging = "\(directory)/.\(organisation)-\(UUID().uuidString)"
        try fm.createDirectory(atPath: staging, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? fm.removeItem(atPath: staging) }
        let key = P256.Signing.PrivateKey()
        guard fm.createFile(atPath: "\(staging)/signing-key.pem", contents: Data(key.pemRepresentation.utf8),
                            attributes: [.posixPermissions: 0o600]) else {
            throw IdentityConfigurationError("cannot write a development key in \(directory)")
        }
        let raw = key.publicKey.x963Representation  // 0x04 ‖ x ‖ y
        let x = raw[1..<33].base64URLEncodedString()
        let y = raw[33..<65].base64URLEncodedString()
        let kid = "dev-\(organisation)-" + SHA256.hash(data: raw).prefix(6).map { String(format: "%02x", $0) }.joined()
        let jwks: [String: Any] = ["keys": [["kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                                              "kid": kid, "x": x, "y": y]]]
        let json = try JSONSerialization.data(withJSONObject: jwks, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: URL(fileURLWithPath: "\(staging)/jwks.json"))
        // rename(2) of a directory onto a missing path is atomic; onto an existing one it fails.
        if rename(staging, folder) != 0 {
            guard fm.fileExists(atPath: keyPath) && fm.fileExists(atPath: jwksPath) else {
                throw IdentityConfigurationError("cannot create \(folder): \(String(cString: strerror(errno)))")
            }
            return false
        }
        return true
    }

    /// A token for `user` with `roles`, valid for `lifetime` seconds from `now`.
    public func token(user: String, roles: [Role], now: Date = Date(), lifetime: Int = 8 * 3600,
                      audience: String = IdentityProvider.defaultAudience) async throws -> String {
        let pem: String
        do {
            pem = try String(contentsOfFile: keyPath, encoding: .utf8)
        } catch {
            throw IdentityConfigurationError("no development signing key for \(organisation) at \(keyPath); start a node of it or run `ekc login --init`")
        }
        let key = try ES256PrivateKey(pem: pem)
        let jwksData = try Data(contentsOf: URL(fileURLWithPath: jwksPath))
        let jwks = try JSONDecoder().decode(JWKS.self, from: jwksData)
        guard let kid = jwks.keys.first?.keyIdentifier else { throw IdentityConfigurationError("\(jwksPath) has no kid") }
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: key, kid: kid)
        let t = Int(now.timeIntervalSince1970)
        let payload = DevClaims(iss: issuer, sub: user, aud: audience, iat: t, nbf: t, exp: t + lifetime,
                                preferred_username: user, realm_access: .init(roles: roles.map(\.rawValue)),
                                ekc_org: organisation)
        return try await keys.sign(payload, kid: kid)
    }
}

/// What the development provider signs: the claims Keycloak puts in an access token
/// that the node reads.
struct DevClaims: JWTPayload {
    struct RealmAccess: Codable { let roles: [String] }
    let iss: String
    let sub: String
    let aud: String
    let iat: Int
    let nbf: Int
    let exp: Int
    let preferred_username: String
    let realm_access: RealmAccess
    let ekc_org: String

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

extension Data {
    func base64URLEncodedString() -> String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
