/// The citizen a ticket is about, minimised (152-FZ): a reference into the
/// citizen registry, and only those contact fields the request needs.
public struct Citizen: Sendable, Hashable {
    /// Opaque reference, e.g. `CIT-7F3K2`; never an INN, passport or SNILS.
    public var ref: String
    public var name: String?
    /// Eleven digits; shown masked unless explicitly unmasked.
    public var snils: Snils?
    /// `+7` and ten digits.
    public var phone: String?

    public init(ref: String, name: String? = nil, snils: Snils? = nil, phone: String? = nil) {
        self.ref = ref
        self.name = name
        self.snils = snils
        self.phone = phone
    }

    /// Every detail by its own rule (a `Snils` made with `init(trusted:)` too).
    public func validate() throws(TicketError) {
        try Citizen.validate(ref: ref)
        if let name { try Citizen.validate(name: name) }
        if let snils { try Snils.validate(digits: snils.digits) }
        if let phone { try Citizen.validate(phone: phone) }
    }

    /// Register `citizen` (3): the registry reference.
    public static func validate(ref: String) throws(TicketError) {
        let r = Array(ref.utf8)
        guard (1...64).contains(r.count),
              r.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 })
        else { throw .invalidField(field: "citizen.ref", rule: "1 to 64 letters, digits or hyphens") }
    }

    /// Register `citizenName` (9), and the name of a register 3 written before the split.
    public static func validate(name: String) throws(TicketError) {
        try Validation.text(name, field: "citizen.name", maxBytes: Budget.citizenNameBytes)
    }

    /// Register `citizenPhone` (11), and the phone of a register 3 written before the split.
    public static func validate(phone: String) throws(TicketError) {
        let u = Array(phone.utf8)
        guard u.count == 12, u[0] == 43, u[1] == 55, u[2...].allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
            throw .invalidField(field: "citizen.phone", rule: "+7 followed by 10 digits")
        }
    }

    /// `Иванова Мария Петровна` → `И*** М*** П***`: enough to tell two callers apart on
    /// a screen, not to identify anyone.
    /// (One pass over the scalars: it runs for every ticket every response shows.)
    public static func maskName(_ n: String) -> String {
        var out = ""
        out.reserveCapacity(24)
        var wordStart = true
        for s in n.unicodeScalars {
            if s == " " || s == "\t" { wordStart = true; continue }
            guard wordStart else { continue }
            if !out.isEmpty { out.unicodeScalars.append(" ") }
            out.unicodeScalars.append(s)
            out += "***"
            wordStart = false
        }
        return out
    }

    /// `+7 *** ***-**-67`
    public static func maskPhone(_ p: String) -> String {
        "+7 *** ***-**-" + String(p.suffix(2))
    }
}

/// СНИЛС, the insurance number: 9 digits and a 2-digit checksum.
public struct Snils: Sendable, Hashable {
    public let digits: String  // 11 digits, no separators

    /// As an operator writes it: `123-456-789 01`, or with any of its separators left out.
    public init(_ text: String) throws(TicketError) {
        let d = text.filter { $0 != "-" && $0 != " " }
        try Snils.validate(digits: d)
        self.digits = d
    }

    /// Register `citizenSnils` (10), and the SNILS of a register 3 written before the
    /// split: the stored and replicated form, 11 ASCII digits without separators, the
    /// last two the checksum of the first nine (numbers up to 001-001-998 were issued
    /// before the checksum and have none). The operator API reaches it through
    /// `init(_:)` once the separators are dropped.
    public static func validate(digits d: String) throws(TicketError) {
        let u = Array(d.utf8)
        guard u.count == 11, u.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
            throw .invalidField(field: "citizen.snils", rule: "11 digits, as 123-456-789 01 (stored without its separators)")
        }
        let nums = u.map { Int($0) - 48 }
        let number = nums[0..<9].reduce(0) { $0 * 10 + $1 }
        if number > 1_001_998 {
            var sum = 0
            for i in 0..<9 { sum += nums[i] * (9 - i) }
            var expected = sum % 101
            if expected == 100 { expected = 0 }
            guard expected == nums[9] * 10 + nums[10] else {
                throw .invalidField(field: "citizen.snils", rule: "checksum does not match")
            }
        }
    }

    /// For numbers read back from the store, which were validated when first written.
    public init(trusted digits: String) { self.digits = digits }

    /// Sliced by UTF-8 byte, and only when there are 11: `init(trusted:)` holds what a
    /// store gave, and slicing characters of a shorter value (a damaged store) trapped.
    public var formatted: String {
        let a = Array(digits.utf8)
        guard a.count == 11 else { return "***" }
        func s(_ r: Range<Int>) -> String { String(decoding: a[r], as: UTF8.self) }
        return "\(s(0..<3))-\(s(3..<6))-\(s(6..<9)) \(s(9..<11))"
    }

    /// Masked by default: only the last three digits and the checksum.
    public var masked: String {
        let a = Array(digits.utf8)
        guard a.count == 11 else { return "***" }
        return "***-***-\(String(decoding: a[6..<9], as: UTF8.self)) \(String(decoding: a[9..<11], as: UTF8.self))"
    }
}
