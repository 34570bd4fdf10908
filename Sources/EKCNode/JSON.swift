import CaseModel
import Foundation
import NIOCore

/// A parsed JSON document, with types kept exact so that a wrong type can be
/// refused with the field's name.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    static func parse(_ bytes: ByteBuffer) throws(APIError) -> JSONValue {
        guard bytes.readableBytes > 0 else { throw APIError.badRequest("empty_body", "a JSON body is required", field: nil) }
        do {
            return try JSONParser.parse(Array(bytes.readableBytesView))
        } catch {
            switch error {
            case .syntax(let offset, let expected):
                throw APIError.badRequest("malformed_json", "the body is not valid JSON: expected \(expected) at byte \(offset)", field: nil)
            case .duplicateKey(let key):
                throw APIError.badRequest("duplicate_field", "\(key) appears more than once", field: key)
            case .tooDeep:
                throw APIError.badRequest("malformed_json", "the body nests deeper than \(JSONParser.maxDepth) levels", field: nil)
            }
        }
    }
}

/// Reads the fields of one JSON object, refusing unknown fields and wrong types.
struct ObjectReader {
    let path: String
    let fields: [String: JSONValue]
    private(set) var known: Set<String> = []

    init(_ value: JSONValue, path: String = "") throws(APIError) {
        guard case .object(let o) = value else {
            throw APIError.badRequest("invalid_type", "\(path.isEmpty ? "the body" : path) must be a JSON object",
                                      field: path.isEmpty ? nil : path)
        }
        self.path = path
        self.fields = o
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private mutating func value(_ key: String) -> JSONValue? {
        known.insert(key)
        guard let v = fields[key] else { return nil }
        return v
    }

    private func wrongType(_ key: String, _ expected: String, _ got: JSONValue) -> APIError {
        .badRequest("invalid_type", "\(name(key)) must be \(expected), not \(got.typeName)", field: name(key))
    }

    /// absent → nil; null → .some(nil); string → .some(value)
    mutating func nullableString(_ key: String) throws(APIError) -> String?? {
        switch value(key) {
        case nil: return nil
        case .null?: return .some(nil)
        case .string(let s)?: return .some(s)
        case let v?: throw wrongType(key, "a string or null", v)
        }
    }

    mutating func string(_ key: String) throws(APIError) -> String? {
        switch value(key) {
        case nil: return nil
        case .string(let s)?: return s
        case let v?: throw wrongType(key, "a string", v)
        }
    }

    mutating func requiredString(_ key: String) throws(APIError) -> String {
        guard let s = try string(key) else {
            throw APIError.unprocessable("missing_field", "\(name(key)) is required", field: name(key))
        }
        return s
    }

    mutating func integer(_ key: String) throws(APIError) -> Int? {
        switch value(key) {
        case nil: return nil
        case .number(let d)? where d == d.rounded() && abs(d) < 1e15: return Int(d)
        case let v?: throw wrongType(key, "an integer", v)
        }
    }

    mutating func object(_ key: String) throws(APIError) -> ObjectReader? {
        switch value(key) {
        case nil, .null?: return nil
        case let v?: return try ObjectReader(v, path: name(key))
        }
    }

    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) throws(APIError) -> E?
    where E.RawValue == String {
        guard let s = try string(key) else { return nil }
        do throws(TicketError) { return try Validation.oneOf(s, field: name(key)) } catch { throw APIError(error) }
    }

    /// An array of strings; absent or null → nil.
    mutating func stringArray(_ key: String) throws(APIError) -> [String]? {
        switch value(key) {
        case nil, .null?: return nil
        case .array(let items)?:
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item else { throw wrongType(key, "an array of strings", item) }
                out.append(s)
            }
            return out
        case let v?: throw wrongType(key, "an array of strings", v)
        }
    }

    /// An array of enumeration values, each at most once; absent → nil.
    mutating func enumerationSet<E: RawRepresentable & CaseIterable & Hashable>(_ key: String, _ type: E.Type) throws(APIError) -> Set<E>?
    where E.RawValue == String {
        switch value(key) {
        case nil: return nil
        case .array(let items)?:
            var out = Set<E>()
            for item in items {
                guard case .string(let s) = item, let e = E(rawValue: s) else {
                    throw APIError(Validation.notOneOf(E.self, field: name(key)))
                }
                guard out.insert(e).inserted else { throw APIError(Validation.listedTwice(s, field: name(key))) }
            }
            return out
        case let v?: throw wrongType(key, "an array", v)
        }
    }

    /// Call after reading every field: any field not read is unknown.
    func rejectUnknown() throws(APIError) {
        if let extra = fields.keys.filter({ !known.contains($0) }).sorted().first {
            throw APIError.badRequest("unknown_field", "\(name(extra)) is not a field of this request", field: name(extra))
        }
    }
}

/// Writes JSON into a byte array, then hands it over as one ByteBuffer: the read
/// path's serializer, kept free of Foundation's encoders and of per-call buffer
/// bookkeeping so a GET costs little more than the LMDB read.
struct JSONWriter {
    private(set) var bytes: [UInt8]
    private var needsComma = false

    init(capacity: Int = 1024) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    var buffer: ByteBuffer { ByteBuffer(bytes: bytes) }

    @inline(__always) private mutating func byte(_ b: UInt8) { bytes.append(b) }
    @inline(__always) private mutating func raw(_ s: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    mutating func beginObject() { separate(); byte(UInt8(ascii: "{")); needsComma = false }
    mutating func endObject() { byte(UInt8(ascii: "}")); needsComma = true }
    mutating func beginArray() { separate(); byte(UInt8(ascii: "[")); needsComma = false }
    mutating func endArray() { byte(UInt8(ascii: "]")); needsComma = true }

    @inline(__always) private mutating func separate() {
        if needsComma { byte(UInt8(ascii: ",")) }
    }

    mutating func key(_ k: StaticString) {
        separate()
        byte(UInt8(ascii: "\""))
        raw(k)
        byte(UInt8(ascii: "\""))
        byte(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func key(_ k: String) {
        separate()
        writeEscaped(k)
        byte(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func string(_ s: String) { separate(); writeEscaped(s); needsComma = true }
    mutating func string(_ s: String?) { if let s { string(s) } else { null() } }
    mutating func int<I: BinaryInteger>(_ i: I) {
        separate()
        if i >= 0 && i < 10 {
            byte(48 + UInt8(truncatingIfNeeded: i))
        } else {
            bytes.append(contentsOf: String(i).utf8)
        }
        needsComma = true
    }
    mutating func double(_ d: Double) {
        separate()
        bytes.append(contentsOf: (d.isFinite ? String(format: "%.3f", d) : "null").utf8)
        needsComma = true
    }
    mutating func bool(_ b: Bool) { separate(); if b { raw("true") } else { raw("false") }; needsComma = true }
    mutating func null() { separate(); raw("null"); needsComma = true }
    mutating func time(_ t: Millis?) {
        if let t { separate(); byte(UInt8(ascii: "\"")); writeTime(t); byte(UInt8(ascii: "\"")); needsComma = true } else { null() }
    }

    mutating func field(_ k: StaticString, _ s: String?) { key(k); string(s) }
    mutating func field<I: BinaryInteger>(_ k: StaticString, _ i: I) { key(k); int(i) }
    mutating func field(_ k: StaticString, time t: Millis?) { key(k); time(t) }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func writeEscaped(_ s: String) {
        byte(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            var start = 0
            for i in 0..<utf8.count {
                let c = utf8[i]
                guard c < 0x20 || c == 0x22 || c == 0x5C else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<i]))
                switch c {
                case 0x22: raw("\\\"")
                case 0x5C: raw("\\\\")
                case 0x0A: raw("\\n")
                case 0x0D: raw("\\r")
                case 0x09: raw("\\t")
                default:
                    raw("\\u00")
                    byte(JSONWriter.hex[Int(c >> 4)])
                    byte(JSONWriter.hex[Int(c & 15)])
                }
                start = i + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<utf8.count]))
        }
        byte(UInt8(ascii: "\""))
    }

    /// RFC 3339 in UTC with milliseconds: 2026-11-21T23:51:13.123Z
    private mutating func writeTime(_ t: Millis) {
        let days = t >= 0 ? t / 86_400_000 : -((-t + 86_399_999) / 86_400_000)
        let msOfDay = Int(t - days * 86_400_000)
        let (y, m, d) = Calendar59.civil(daysSinceEpoch: days)
        if (0...9999).contains(y) {
            byte(UInt8(48 + y / 1000)); byte(UInt8(48 + y / 100 % 10)); byte(UInt8(48 + y / 10 % 10)); byte(UInt8(48 + y % 10))
        } else {
            bytes.append(contentsOf: String(y).utf8)
        }
        func two(_ v: Int) { byte(UInt8(48 + v / 10)); byte(UInt8(48 + v % 10)) }
        byte(UInt8(ascii: "-")); two(m)
        byte(UInt8(ascii: "-")); two(d)
        byte(UInt8(ascii: "T")); two(msOfDay / 3_600_000)
        byte(UInt8(ascii: ":")); two(msOfDay / 60_000 % 60)
        byte(UInt8(ascii: ":")); two(msOfDay / 1000 % 60)
        byte(UInt8(ascii: ".")); let ms = msOfDay % 1000
        byte(UInt8(48 + ms / 100)); two(ms % 100)
        byte(UInt8(ascii: "Z"))
    }
}

enum TimeParsing {
    /// Accepts epoch milliseconds or RFC 3339 (`2026-11-21T10:00:00Z`, `…+03:00`, fractional seconds).
    static func parse(_ s: String) -> Millis? {
        if let ms = Int64(s) { return ms }
        let u = Array(s.utf8)
        func num(_ r: Range<Int>) -> Int? {
            guard r.upperBound <= u.count else { return nil }
            var v = 0
            for i in r { guard u[i] >= 48 && u[i] <= 57 else { return nil }; v = v * 10 + Int(u[i] - 48) }
            return v
        }
        guard u.count >= 20, u[4] == 45, u[7] == 45, u[10] == 84 || u[10] == 116, u[13] == 58, u[16] == 58,
              let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13),
              let mi = num(14..<16), let se = num(17..<19),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61
        else { return nil }
        var i = 19
        var frac = 0
        if i < u.count && u[i] == 46 {
            i += 1
            var digits = 0
            while i < u.count && u[i] >= 48 && u[i] <= 57 {
                if digits < 3 { frac = frac * 10 + Int(u[i] - 48) }
                digits += 1; i += 1
            }
            guard digits > 0 else { return nil }
            if digits < 3 { for _ in digits..<3 { frac *= 10 } }
        }
        var offsetMinutes = 0
        guard i < u.count else { return nil }
        if u[i] == 90 || u[i] == 122 {
            i += 1
        } else if u[i] == 43 || u[i] == 45, let oh = num(i + 1..<i + 3), i + 3 < u.count, u[i + 3] == 58,
                  let om = num(i + 4..<i + 6) {
            offsetMinutes = (oh * 60 + om) * (u[i] == 43 ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == u.count else { return nil }
        // days from civil (Hinnant)
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = Int64(era * 146_097 + doe - 719_468)
        return days * 86_400_000 + Int64(h * 3600 + mi * 60 + se) * 1000 + Int64(frac) - Int64(offsetMinutes) * 60_000
    }
}
