import Access
import Crypto
import Foundation
import Identity
import JWTKit
import Testing

/// Token verification against a development provider's keys: what is accepted, and
/// each way a token is refused, through `TokenVerifier.verify` (the node's only path).
@Suite struct TokenTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-idp-\(UUID().uuidString)").path
    let now = Date()
    var nowMillis: Int64 { Int64(now.timeIntervalSince1970 * 1000) }

    func verifier(_ org: String = "38") async throws -> (DevIdentityProvider, TokenVerifier) {
        let dev = DevIdentityProvider(directory: dir, organisation: org)
        try dev.ensureKeys()
        return (dev, try await TokenVerifier(provider: dev.provider))
    }

    @Test func aDevelopmentTokenGivesItsSubjectRolesAndOrganisation() async throws {
        let (dev, v) = try await verifier()
        let t = try await dev.token(user: "op-ivanova", roles: [.operator, .supervisor], now: now)
        let p = try await v.verify(t, now: nowMillis).get()
        #expect(p.subject == "op-ivanova" && p.organisation == "38" && p.roles == [.operator, .supervisor])
        #expect(v.remembered(t, now: nowMillis) == p)
        // remembered only while valid
        #expect(v.remembered(t, now: nowMillis + 9 * 3600 * 1000) == nil)
    }

    @Test func expiredNotYetValidAndOtherAudienceAreRefused() async throws {
        let (dev, v) = try await verifier()
        let old = try await dev.token(user: "u", roles: [.operator], now: now.addingTimeInterval(-9 * 3600))
        #expect(await v.verify(old, now: nowMillis) == .failure(.expired))
        let future = try await dev.token(user: "u", roles: [.operator], now: now.addingTimeInterval(600))
        #expect(await v.verify(future, now: nowMillis) == .failure(.notYetValid))
        // within the minute of leeway both are fine
        let skewed = try await dev.token(user: "u", roles: [.operator], now: now.addingTimeInterval(30))
        #expect((try? await v.verify(skewed, now: nowMillis).get()) != nil)
        let elsewhere = try await dev.token(user: "u", roles: [.operator], now: now, audience: "another-app")
        #expect(await v.verify(elsewhere, now: nowMillis) == .failure(.wrongAudience))
    }

    @Test func anotherOrganisationsTokenIsRefused() async throws {
        let (_, v) = try await verifier("38")
        let other = DevIdentityProvider(directory: dir, organisation: "52")
        try other.ensureKeys()
        let t = try await other.token(user: "u", roles: [.supervisor], now: now)
        guard case .failure(.unknownKey) = await v.verify(t, now: nowMillis) else {
            Issue.record("a token of organisation 52 was not refused by 38's verifier"); return
        }
    }

    @Test func unsignedHMACAndGarbledTokensAreRefusedBeforeAnyKeyIsUsed() async throws {
        let (dev, v) = try await verifier()
        let t = try await dev.token(user: "u", roles: [.operator], now: now)
        let parts = t.split(separator: ".").map(String.init)
        func b64(_ s: String) -> String {
            Data(s.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        }
        let kid = try #require(v.keyIDs.first)
        #expect(await v.verify(b64(#"{"alg":"none"}"#) + "." + parts[1] + "." + parts[2], now: nowMillis)
                == .failure(.algorithmNotAllowed("none")))
        // HS256 "signed" with the public key: refused by algorithm, whatever the MAC
        let pub = try String(contentsOfFile: dev.jwksPath, encoding: .utf8)
        let input = b64(#"{"alg":"HS256","kid":"\#(kid)"}"#) + "." + parts[1]
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(pub.utf8)))
        let forged = input + "." + Data(mac).base64EncodedString().replacingOccurrences(of: "=", with: "")
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        #expect(await v.verify(forged, now: nowMillis) == .failure(.algorithmNotAllowed("HS256")))
        #expect(await v.verify(parts[0] + "." + parts[1], now: nowMillis)
                == .failure(.malformed("expected three dot-separated parts, got 2")))
        var sig = Array(parts[2])
        sig[4] = sig[4] == "A" ? "B" : "A"
        #expect(await v.verify(parts[0] + "." + parts[1] + "." + String(sig), now: nowMillis) == .failure(.badSignature))
        #expect(v.remembered(parts[0] + "." + parts[1] + "." + String(sig), now: nowMillis) == nil)
    }

    @Test func aKeyFileWithSymmetricOrPrivateKeysIsRefused() async throws {
        let path = dir + "-bad.json"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try #"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let p = IdentityProvider(organisation: "38", issuer: "https://idp.example/realms/38", jwksPath: path)
        await #expect(throws: IdentityConfigurationError.self) { _ = try await TokenVerifier(provider: p) }
        let key = P256.Signing.PrivateKey()
        let raw = key.publicKey.x963Representation
        func b64(_ d: Data) -> String {
            d.base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_")
        }
        let withPrivate = #"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"\#(b64(raw[1..<33]))","y":"\#(b64(raw[33..<65]))","d":"\#(b64(key.rawRepresentation))"}]}"#
        try withPrivate.write(toFile: path, atomically: true, encoding: .utf8)
        await #expect(throws: IdentityConfigurationError.self) { _ = try await TokenVerifier(provider: p) }
    }

    @Test func rotatedKeysAreReadAgainAndForgetRememberedTokens() async throws {
        let (dev, v) = try await verifier()
        let t = try await dev.token(user: "u", roles: [.operator], now: now)
        #expect((try? await v.verify(t, now: nowMillis).get()) != nil)
        // a new key replaces the old one in the file
        try FileManager.default.removeItem(atPath: dev.folder)
        try dev.ensureKeys()
        #expect(try await v.reloadIfChanged())
        #expect(v.remembered(t, now: nowMillis) == nil)
        guard case .failure(.unknownKey) = await v.verify(t, now: nowMillis) else {
            Issue.record("a token of the removed key still verifies"); return
        }
        let fresh = try await dev.token(user: "u", roles: [.operator], now: now)
        #expect((try? await v.verify(fresh, now: nowMillis).get()) != nil)
    }

    @Test func nodesStartingTogetherAgreeOnOneDevelopmentKey() async throws {
        let dev = DevIdentityProvider(directory: dir, organisation: "38")
        let created = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 { group.addTask { (try? dev.ensureKeys()) ?? false } }
            var n = 0
            for await c in group where c { n += 1 }
            return n
        }
        #expect(created == 1)
        // the key that signs is the key the JWKS names
        let v = try await TokenVerifier(provider: dev.provider)
        let t = try await dev.token(user: "u", roles: [.operator], now: now)
        #expect((try? await v.verify(t, now: nowMillis).get()) != nil)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty, "staging folders left behind: \(leftovers)")
    }
}
