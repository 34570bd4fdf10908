/// A ticket's global id: a ULID (48-bit millisecond time, 80 random bits), unique
/// without coordination and sortable by creation time. The shell supplies time and
/// randomness; this type only packs and formats them.
public struct TicketID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let high: UInt64  // 48 bits of time, 16 random
    public let low: UInt64   // 64 random

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public init(millis: UInt64, randomHigh: UInt16, randomLow: UInt64) {
        self.high = (millis & 0xFFFF_FFFF_FFFF) << 16 | UInt64(randomHigh)
        self.low = randomLow
    }

    public var millis: UInt64 { high >> 16 }

    /// The next id within the same millisecond (monotonic ULID generation).
    public func incremented() -> TicketID {
        low == .max ? TicketID(high: high &+ 1, low: 0) : TicketID(high: high, low: low + 1)
    }

    public static func < (a: TicketID, b: TicketID) -> Bool {
        a.high != b.high ? a.high < b.high : a.low < b.low
    }

    /// 16 bytes, big-endian, so byte order equals id order.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 16) { buf, n in
            UnsafeMutableRawBufferPointer(buf).storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
            UnsafeMutableRawBufferPointer(buf).storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
            n = 16
        }
    }

    /// From 16 big-endian bytes (the caller guarantees the count).
    @inlinable
    public init(raw b: UnsafeRawBufferPointer) {
        precondition(b.count >= 16)
        self.init(high: UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                  low: UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }

    public init?(bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 16 else { return nil }
        self.init(raw: bytes)
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self = bytes.withUnsafeBytes { TicketID(raw: $0) }
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
        }
        self.init(high: h, low: l)
    }

    static let alphabet: [UInt8] = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    static let decodeTable: [Int8] = {
        var t = [Int8](repeating: -1, count: 128)
        for (i, c) in alphabet.enumerated() {
            t[Int(c)] = Int8(i)
            if c >= 65 && c <= 90 { t[Int(c) + 32] = Int8(i) }  // lower case accepted
        }
        // Crockford: I and L read as 1, O as 0.
        for (c, v) in [("I", 1), ("L", 1), ("O", 0), ("i", 1), ("l", 1), ("o", 0)] {
            t[Int(c.utf8.first!)] = Int8(v)
        }
        return t
    }()

    /// 26 characters of Crockford base32.
    public var description: String {
        var chars = [UInt8](repeating: 0, count: 26)
        // 128 bits → 26 × 5 bits (the first character carries 3 bits).
        for i in 0..<26 {
            let shift = 125 - 5 * i
            let v: UInt64
            if shift >= 64 {
                v = high >> UInt64(shift - 64)
            } else if shift > 59 {
                v = (high << UInt64(64 - shift)) | (low >> UInt64(shift))
            } else {
                v = low >> UInt64(shift)
            }
            chars[i] = TicketID.alphabet[Int(v & 31)]
        }
        return String(decoding: chars, as: UTF8.self)
    }

    public init?(_ text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 26 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, c) in utf8.enumerated() {
            guard c < 128 else { return nil }
            let d = TicketID.decodeTable[Int(c)]
            guard d >= 0 else { return nil }
            if i == 0 && d > 7 { return nil }  // would overflow 128 bits
            // shift the 128-bit (h,l) left by 5 and add d
            h = (h << 5) | (l >> 59)
            l = (l << 5) | UInt64(d)
        }
        self.init(high: h, low: l)
    }
}

/// Ids of notes and history events share the ULID form.
public typealias RecordID = TicketID

/// A federation node's id, e.g. `irk-main`, `sfr-federal`. Lower-case letters,
/// digits and hyphens, 1–63 characters, starting with a letter or digit.
public struct NodeID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let value: String
    public init?(_ value: String) {
        guard NodeID.isValid(value) else { return nil }
        self.value = value
    }
    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        guard (1...63).contains(u.count) else { return false }
        var first = true
        for c in u {
            let ok = (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || (c == 45 && !first)
            if !ok { return false }
            first = false
        }
        return true
    }
    /// For ids read back from the store, which were validated when first written.
    public init(trusted value: String) { self.value = value }
    public var description: String { value }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.value < b.value }
}

/// Who acted: an operator or a system component, with a role.
public struct Actor: Hashable, Sendable {
    public var user: String
    public var role: String
    public init(user: String, role: String) {
        self.user = user
        self.role = role
    }
    public static let system = Actor(user: "system", role: "system")

    /// Operator and role names: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
    public static func isValidName(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...64).contains(u.count) else { return false }
        return u.allSatisfy { c in
            (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == 46 || c == 95 || c == 45 || c == 64
        }
    }

    /// Who wrote a note (`author`), a history event or a transfer's step (`actor`). The
    /// operator API's actor is its token's subject, held to `isValidName` when the token
    /// is verified, with the role that allowed the request.
    public static func validate(user: String, role: String, field: String) throws(TicketError) {
        guard isValidName(user), isValidName(role) else {
            throw .invalidField(field: field, rule: "user and role must be 1 to 64 letters, digits, '.', '_', '-' or '@'")
        }
    }
}

/// The readable number `{region}-{year}-{seq}`, e.g. `38-2026-000417`.
public struct TicketNumber: Hashable, Sendable, CustomStringConvertible {
    public let region: String
    public let year: Int
    public let sequence: UInt64

    public init(region: String, year: Int, sequence: UInt64) {
        self.region = region
        self.year = year
        self.sequence = sequence
    }

    public var description: String {
        let s = String(sequence)
        let padded = s.count < 6 ? String(repeating: "0", count: 6 - s.count) + s : s
        return "\(region)-\(year)-\(padded)"
    }

    /// The counter key: one sequence per region and year.
    public var counterKey: String { "\(region)-\(year)" }

    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, RegionCode.isValid(String(parts[0])),
              parts[1].count == 4, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), parts[1].first != "0",
              let year = Int(parts[1]),
              !parts[2].isEmpty, parts[2].count <= 19, parts[2].allSatisfy({ $0.isASCII && $0.isNumber }),
              let seq = UInt64(parts[2]), seq > 0
        else { return nil }
        self.init(region: String(parts[0]), year: year, sequence: seq)
    }
}

/// A Russian region code (two or three digits, as on vehicle plates and in OKATO), or
/// a fund's short code (letters) for nodes of federal funds.
/// An organisation of the federation: a region's code (`38`) or a fund's id
/// (`social-insurance`): 2–32 lower-case letters, digits and hyphens.
public enum OrganisationID {
    public static func isValid(_ s: String) -> Bool {
        (2...32).contains(s.utf8.count) && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 122) || $0 == 45 }
    }
}

public enum RegionCode {
    public static func isValid(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (2...8).contains(u.count) else { return false }
        return u.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 122) }
    }
}
