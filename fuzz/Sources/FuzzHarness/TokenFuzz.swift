import Access
import CaseModel
@testable import EKCNode
import Foundation
@testable import Identity
import NIOHTTP1

/// Bearer tokens and what a node reads to check them: the `Authorization` header, the
/// token (header pre-check, signature, claims), the claims alone (as they would be after
/// a valid signature), the provider's JWKS file, and the Host / Origin check.
///
/// Input: a selector byte, then
/// - 0: an `Authorization` header value, through `OperatorAccess.lookup` and, for a
///   token, `TokenVerifier.verify`;
/// - 1: a token, through `TokenVerifier.verify` (header, key choice, jwt-kit, claims);
/// - 2: a token payload (JSON), decoded as jwt-kit decodes it and checked by
///   `TokenVerifier.principal`;
/// - 3: a JWKS file, through `KeySet.load`;
/// - 4: Host and Origin (fields), through `OperatorAccess.checkOrigin`.
public enum TokenFuzz {
    public static let modes = ["authorization", "token", "claims", "jwks", "origin"]

    /// Builds the fixtures before the first input.
    public static func prepare() { _ = access }

    public static func run(_ data: [UInt8]) {
        var input = FuzzBytes(data)
        let mode = Int(input.byte()) % modes.count
        switch mode {
        case 0:
            let headers = HTTPHeaders([("authorization", String(decoding: input.rest, as: UTF8.self))])
            switch access.lookup(headers, now: FuzzWorld.now) {
            case .ready: break
            case .verify(let token): _ = blocking { await verifier.verify(token, now: FuzzWorld.now) }
            }
        case 1:
            let token = String(decoding: input.rest, as: UTF8.self)
            _ = try? TokenHeader(token)
            _ = blocking { await verifier.verify(token, now: FuzzWorld.now) }
        case 2:
            guard let claims = try? JSONDecoder().decode([String: ClaimValue].self, from: Data(input.rest)) else { return }
            _ = try? verifier.principal(claims, now: FuzzWorld.now)
        case 3:
            let path = "\(FuzzWorld.folder)/jwks-input.json"
            guard FileManager.default.createFile(atPath: path, contents: Data(input.rest)) else { return }
            _ = blocking { () async -> Int in ((try? await KeySet.load(path)) != nil) ? 1 : 0 }
        default:
            let host = input.string()
            let origin = input.string()
            var headers = HTTPHeaders([("host", host)])
            if !origin.isEmpty { headers.add(name: "origin", value: origin) }
            _ = OperatorAccess.hostName(host)
            try? access.checkOrigin(headers)
        }
    }

    /// The keys of the seeds' tokens: ES256, RS256 and EdDSA, public halves only (the
    /// private ones signed fuzz/corpus/token/ once and were thrown away).
    static let jwks = #"""
{"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "fuzz-es256", "x": "wdu_SfH-Xr1xbNlgPEd5nDNMw1bHndkmUqjhjZy4sKI", "y": "-pQw96fVQTNByjI7HzOYJDRTk45a_sWo7r7OMiw_PNc"}, {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "fuzz-rs256", "n": "yFEyCYJ_LouyA_S2JQ89cPI9Q9sS2Pg2YdfvqvJy58vRowtIeZ_8SJn8WXvSy5kI9E3NU97bM-XtBADwmUV2Njl_dbqdjrEXEfys3Gf0tDEOPqCCYj7GK_1K7uXGe_t0TpIsKmOjlx6CoelenYMTfEIq20TGvXp25hLO6AWEC8GHBgFaSaNdHn_jfqtkOOmVwm082M8ktpZL4cZ8c86qadiQHjnmhM1_gA3vcaQCtuXwkFb6HU5Du-Ai7GRFFQIG4icOWM8Gg-xxr7dydEpjlqhFuvhb7SK-jOpxao54utMBNH3uyPR0ROEK8CYXRH4bCDEu4CG0Or93CTzAb3GIDQ", "e": "AQAB"}, {"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "fuzz-eddsa", "x": "vX8WqoMKZC7DruTZZbHrsHVNd5Nh97FUq2SNwj22fPM"}]}
"""#

    static let provider = IdentityProvider(organisation: "38", issuer: "https://idp.dev.ekc.invalid/realms/38",
                                           jwksPath: "\(FuzzWorld.folder)/jwks.json", subjectClaim: "preferred_username")

    /// The verifier a node of organisation 38 runs. Verified tokens are remembered, as
    /// they are in a node: a repeated seed takes the remembered path.
    static let verifier: TokenVerifier = {
        FileManager.default.createFile(atPath: provider.jwksPath, contents: Data(jwks.utf8))
        return blocking { try! await TokenVerifier(provider: provider) }
    }()

    static let access = OperatorAccess(verifier: verifier, hostNames: OperatorAccess.defaultHostNames(listenHost: "127.0.0.1") + ["ekc.irkobl.example"])
}
