import Foundation
import JWTKit

/// The verification keys of one provider, read from its JWKS file: jwt-kit's key
/// collection, and what the node checks before handing a token to it (which
/// algorithm each key may verify). Symmetric and private keys are refused: a JWKS
/// a node trusts holds public keys only, so an HMAC "secret" can never be a public key.
struct KeySet: Sendable {
    enum KeyKind: Sendable, Equatable {
        case rsa, p256, ed25519

        var algorithm: String {
            switch self {
            case .rsa: "RS256"
            case .p256: "ES256"
            case .ed25519: "EdDSA"
            }
        }
    }

    let collection: JWTKeyCollection
    /// kid → the one algorithm its key verifies.
    let kinds: [String: KeyKind]
    /// The file as read, to tell a changed file on reload.
    let fingerprint: FileFingerprint

    static let allowedAlgorithms: Set<String> = ["RS256", "ES256", "EdDSA"]

    static func load(_ path: String) async throws -> KeySet {
        let fingerprint = FileFingerprint(path)
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw IdentityConfigurationError("cannot read the JWKS file \(path): \(error.localizedDescription)")
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let keys = json["keys"] as? [[String: Any]] else {
            throw IdentityConfigurationError("\(path) is not a JWKS: expected {\"keys\": [...]}")
        }
        guard !keys.isEmpty else { throw IdentityConfigurationError("\(path) lists no keys") }
        var kinds: [String: KeyKind] = [:]
        for (i, key) in keys.enumerated() {
            let kty = key["kty"] as? String ?? ""
            guard let kid = key["kid"] as? String, !kid.isEmpty else {
                throw IdentityConfigurationError("\(path): key \(i) has no kid; every key needs one")
            }
            guard kinds[kid] == nil else { throw IdentityConfigurationError("\(path): kid \(kid) is listed twice") }
            if key["d"] != nil || key["p"] != nil || key["k"] != nil {
                throw IdentityConfigurationError("\(path): key \(kid) holds private or symmetric key material; a node trusts public keys only")
            }
            if let use = key["use"] as? String, use != "sig" { continue }  // encryption keys do not verify tokens
            let kind: KeyKind
            switch (kty, key["crv"] as? String) {
            case ("RSA", _): kind = .rsa
            case ("EC", "P-256"): kind = .p256
            case ("OKP", "Ed25519"): kind = .ed25519
            default:
                throw IdentityConfigurationError("\(path): key \(kid) is \(kty) \(key["crv"] as? String ?? ""); accepted: RSA (RS256), EC P-256 (ES256), OKP Ed25519 (EdDSA)")
            }
            if let alg = key["alg"] as? String, alg != kind.algorithm {
                throw IdentityConfigurationError("\(path): key \(kid) says alg \(alg), but a \(kty) key verifies \(kind.algorithm) here")
            }
            kinds[kid] = kind
        }
        guard !kinds.isEmpty else { throw IdentityConfigurationError("\(path) lists no signing keys (use: sig)") }
        let collection = JWTKeyCollection()
        do {
            let jwks = try JSONDecoder().decode(JWKS.self, from: data)
            for jwk in jwks.keys where jwk.keyIdentifier.map({ kinds[$0.string] != nil }) == true {
                var pinned = jwk
                // The key verifies its one algorithm, whatever a token's header asks for.
                pinned.algorithm = JWK.Algorithm(rawValue: kinds[jwk.keyIdentifier!.string]!.algorithm)
                try await collection.add(jwk: pinned)
            }
        } catch let e as IdentityConfigurationError {
            throw e
        } catch {
            throw IdentityConfigurationError("\(path): a key cannot be used: \(error)")
        }
        return KeySet(collection: collection, kinds: kinds, fingerprint: fingerprint)
    }
}

/// Size and modification time of a file, to notice a replaced key file.
struct FileFingerprint: Sendable, Equatable {
    let size: Int
    let modified: Double

    init(_ path: String) {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        size = (attributes?[.size] as? NSNumber)?.intValue ?? -1
        modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? -1
    }
}
