import Testing
@testable import CaseModel

private func randomID<G: RandomNumberGenerator>(_ g: inout G) -> TicketID {
    TicketID(high: UInt64.random(in: 0...UInt64.max, using: &g), low: UInt64.random(in: 0...UInt64.max, using: &g))
}

private func lexLess(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.lexicographicallyPrecedes(b) }

/// An independent Crockford base32 encoder of 128 bits (26 characters, first one 3 bits).
private func crockford(_ id: TicketID) -> String {
    let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    var bits: [UInt8] = [0, 0]  // pad to 130 bits
    for w in [id.high, id.low] { for i in (0..<64).reversed() { bits.append(UInt8((w >> UInt64(i)) & 1)) } }
    var out = ""
    for c in 0..<26 {
        var v = 0
        for b in 0..<5 { v = v << 1 | Int(bits[c * 5 + b]) }
        out.append(alphabet[v])
    }
    return out
}

@Suite("TicketID")
struct TicketIDTests {
    @Test("string round trip of many random ids, matching an independent encoder")
    func roundTrip() {
        var g = SystemRandomNumberGenerator()
        for _ in 0..<5_000 {
            let id = randomID(&g)
            let s = id.description
            #expect(s.utf8.count == 26)
            #expect(s == crockford(id))
            #expect(TicketID(s) == id)
            #expect(TicketID(s.lowercased()) == id)
            #expect(TicketID(bytes: id.bytes) == id)
        }
        for id in [TicketID(high: 0, low: 0), TicketID(high: .max, low: .max), TicketID(high: 1, low: 0), TicketID(high: 0, low: 1 << 63)] {
            #expect(TicketID(id.description) == id)
            #expect(id.description == crockford(id))
        }
        #expect(TicketID(high: 0, low: 0).description == String(repeating: "0", count: 26))
        #expect(TicketID(high: .max, low: .max).description == "7" + String(repeating: "Z", count: 25))
    }

    @Test("string order == id order == byte order")
    func ordering() {
        var g = SystemRandomNumberGenerator()
        var ids = (0..<2_000).map { _ in randomID(&g) }
        // pairs that differ only in the low word or in one bit near the word boundary
        ids += [TicketID(high: 5, low: 1), TicketID(high: 5, low: 2), TicketID(high: 4, low: .max),
                TicketID(high: 1, low: 0), TicketID(high: 0, low: .max)]
        for _ in 0..<5_000 {
            let a = ids.randomElement(using: &g)!, b = ids.randomElement(using: &g)!
            let byID = a < b
            #expect(byID == (a.description < b.description))
            #expect(byID == lexLess(a.bytes, b.bytes))
        }
        let sorted = ids.sorted()
        #expect(sorted.map(\.description) == ids.map(\.description).sorted())
        #expect(sorted.map(\.bytes) == ids.map(\.bytes).sorted(by: lexLess))
    }

    @Test("millis, random parts and time order")
    func millis() {
        let a = TicketID(millis: 1_795_132_800_000, randomHigh: 0xFFFF, randomLow: .max)
        let b = TicketID(millis: 1_795_132_800_001, randomHigh: 0, randomLow: 0)
        #expect(a.millis == 1_795_132_800_000)
        #expect(b.millis == 1_795_132_800_001)
        #expect(a < b)
        #expect(a.high & 0xFFFF == 0xFFFF)
        #expect(a.low == .max)
    }

    @Test("Crockford decoding: lower case, I and L as 1, O as 0")
    func crockfordDecoding() {
        let one = TicketID(high: 0, low: 1)
        #expect(TicketID("0000000000000000000000000I") == one)
        #expect(TicketID("0000000000000000000000000i") == one)
        #expect(TicketID("0000000000000000000000000L") == one)
        #expect(TicketID("0000000000000000000000000l") == one)
        #expect(TicketID("OOOOOOOOOOOOOOOOOOOOOOOOO1") == one)
        #expect(TicketID("ooooooooooooooooooooooooo1") == one)
        #expect(TicketID("0000000000000000000000000Z") == TicketID(high: 0, low: 31))
        #expect(TicketID("0000000000000000000000000z") == TicketID(high: 0, low: 31))
        #expect(TicketID("01ARZ3NDEKTSV4RRFFQ69G5FAV") == TicketID("01arz3ndektsv4rrffq69g5fav"))
        #expect(TicketID("01ARZ3NDEKTSV4RRFFQ69G5FAV")?.description == "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    }

    @Test("rejections: length, first character above 7, letters outside the alphabet")
    func rejections() {
        let good = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
        #expect(TicketID(good) != nil)
        #expect(TicketID(String(good.dropLast())) == nil)       // 25
        #expect(TicketID(good + "0") == nil)                    // 27
        #expect(TicketID("") == nil)
        #expect(TicketID("8" + String(good.dropFirst())) == nil)
        #expect(TicketID("Z" + String(good.dropFirst())) == nil)
        #expect(TicketID("7" + String(good.dropFirst())) != nil)
        #expect(TicketID("0000000000000000000000000U") == nil)
        #expect(TicketID("000000000000000000000000-0") == nil)
        #expect(TicketID("00000000000000000000000000".replacingFirst("0", "é")) == nil)
        #expect(TicketID(bytes: [UInt8](repeating: 0, count: 15)) == nil)
        #expect(TicketID(bytes: [UInt8](repeating: 0, count: 17)) == nil)
    }

    @Test("incremented")
    func incremented() {
        #expect(TicketID(high: 7, low: 9).incremented() == TicketID(high: 7, low: 10))
        #expect(TicketID(high: 7, low: .max).incremented() == TicketID(high: 8, low: 0))
        let id = TicketID(millis: 1000, randomHigh: 3, randomLow: 41)
        #expect(id.incremented() > id)
        #expect(id.incremented().millis == id.millis)
    }
}

extension String {
    fileprivate func replacingFirst(_ a: Character, _ b: Character) -> String {
        guard let i = firstIndex(of: a) else { return self }
        var s = self
        s.replaceSubrange(i...i, with: String(b))
        return s
    }
}

@Suite("TicketNumber, NodeID, RegionCode")
struct NumberTests {
    @Test("formatting pads the sequence to six digits")
    func formatting() {
        #expect(TicketNumber(region: "38", year: 2026, sequence: 1).description == "38-2026-000001")
        #expect(TicketNumber(region: "38", year: 2026, sequence: 417).description == "38-2026-000417")
        #expect(TicketNumber(region: "52", year: 2027, sequence: 999_999).description == "52-2027-999999")
        #expect(TicketNumber(region: "77", year: 2026, sequence: 1_234_567).description == "77-2026-1234567")
        #expect(TicketNumber(region: "sfr", year: 2026, sequence: 12).description == "sfr-2026-000012")
        #expect(TicketNumber(region: "38", year: 2026, sequence: 5).counterKey == "38-2026")
    }

    @Test("parsing")
    func parsing() throws {
        let n = try #require(TicketNumber("38-2026-000417"))
        #expect(n.region == "38" && n.year == 2026 && n.sequence == 417)
        #expect(TicketNumber("777-2026-1234567") == TicketNumber(region: "777", year: 2026, sequence: 1_234_567))
        #expect(TicketNumber("sfr-2026-1")?.description == "sfr-2026-000001")
        for bad in ["", "38", "38-2026", "38-2026-", "38-2026-000000", "38-26-000001", "38-20266-000001",
                    "3-2026-000001", "RU-2026-000001", "38-2026-00a001", "38-2026-000001-1", "38--2026-000001",
                    "38-2026- 00001", "38-2026-+00001", "38-2026-99999999999999999999", "38-abcd-000001",
                    "38-2026-١٢٣"] {
            #expect(TicketNumber(bad) == nil, "\(bad)")
        }
    }

    /// A parsed number must print back as the same text, or the `numbers` index (keyed by
    /// the printed form) and the text an operator typed disagree.
    @Test("a parsed number prints as the text it was parsed from (canonical numbers only)")
    func parseIsCanonical() {
        for text in ["38-+026-000001", "38-+202-000001", "38-0026-000001"] {
            if let n = TicketNumber(text) {
                #expect(n.description == text, "\(text) parsed as \(n)")
            }
        }
    }

    @Test("node ids")
    func nodeIDs() {
        #expect(NodeID("irk-main")?.value == "irk-main")
        #expect(NodeID("sfr-federal") != nil)
        #expect(NodeID("0node") != nil)
        #expect(NodeID(String(repeating: "a", count: 63)) != nil)
        for bad in ["", "-irk", "Irk", "irk_main", "irk main", String(repeating: "a", count: 64), "ирк"] {
            #expect(NodeID(bad) == nil, "\(bad)")
        }
        #expect(NodeID("a")! < NodeID("b")!)
    }
}

@Suite("SNILS and citizen")
struct SnilsTests {
    /// sum of digit[i] × (9 − i) over the first nine digits, mod 101, 100 → 0
    static func checksum(_ nine: String) -> Int {
        let d = nine.map { Int(String($0))! }
        var s = 0
        for i in 0..<9 { s += d[i] * (9 - i) }
        let c = s % 101
        return c == 100 ? 0 : c
    }

    @Test("valid checksums computed by the algorithm")
    func valid() throws {
        // 112233445: 9+8+14+12+15+12+12+8+5 = 95
        #expect(Self.checksum("112233445") == 95)
        #expect(try Snils("11223344595").digits == "11223344595")
        // 123456789: sum 165 → 64
        #expect(Self.checksum("123456789") == 64)
        #expect(try Snils("123-456-789 64").digits == "12345678964")
        // 100018999: sum 100 → 00
        #expect(Self.checksum("100018999") == 0)
        #expect(try Snils("100-018-999 00").digits == "10001899900")
        // 900000084: sum 101 → 00
        #expect(try Snils("90000008400").digits == "90000008400")
        // 900087997: sum 201 → 201 mod 101 = 100 → 00
        #expect(Self.checksum("900087997") == 0)
        #expect(try Snils("90008799700").digits == "90008799700")
        // 987654321: sum 285 → 83
        #expect(try Snils("98765432183").digits == "98765432183")

        var g = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let n = Int.random(in: 1_002_000...999_999_999, using: &g)
            var nine = String(n)
            nine = String(repeating: "0", count: 9 - nine.count) + nine
            let c = Self.checksum(nine)
            let text = nine + (c < 10 ? "0\(c)" : "\(c)")
            #expect(throws: Never.self) { try Snils(text) }
            let wrong = nine + String(format2: (c + 1) % 100)
            #expect(throws: TicketError.invalidField(field: "citizen.snils", rule: "checksum does not match")) { try Snils(wrong) }
        }
    }

    @Test("invalid checksum, wrong length, non-digits")
    func invalid() {
        #expect(throws: TicketError.self) { try Snils("11223344596") }
        #expect(throws: TicketError.self) { try Snils("12345678900") }
        #expect(throws: TicketError.self) { try Snils("1122334459") }
        #expect(throws: TicketError.self) { try Snils("112233445950") }
        #expect(throws: TicketError.self) { try Snils("") }
        #expect(throws: TicketError.self) { try Snils("1122334459a") }
        #expect(throws: TicketError.self) { try Snils("١١٢٢٣٣٤٤٥٩٥") }
        do {
            _ = try Snils("1122334459")
            Issue.record("accepted 10 digits")
        } catch {
            #expect(error.field == "citizen.snils")
        }
    }

    @Test("numbers up to 001-001-998 carry no checksum")
    func smallNumbers() {
        #expect(throws: Never.self) { try Snils("00100199812") }
        #expect(throws: Never.self) { try Snils("00000000199") }
        #expect(throws: TicketError.self) { try Snils("00100199912") }  // 1 001 999: checked, sum ≠ 12
    }

    @Test("formatting and masking")
    func masking() throws {
        let s = try Snils("11223344595")
        #expect(s.formatted == "112-233-445 95")
        #expect(s.masked == "***-***-445 95")
        #expect(!s.masked.contains("112") && !s.masked.contains("233"))
        #expect(Citizen.maskPhone("+79140001267") == "+7 *** ***-**-67")
    }

    @Test("citizen fields")
    func citizen() {
        #expect(throws: Never.self) { try Citizen(ref: "CIT-7F3K2", name: "Иванов И. И.", phone: "+79140001267").validate() }
        #expect(throws: TicketError.invalidField(field: "citizen.ref", rule: "1 to 64 letters, digits or hyphens")) {
            try Citizen.validate(ref: "")
        }
        #expect(throws: TicketError.self) { try Citizen.validate(ref: "CIT 1") }
        #expect(throws: TicketError.self) { try Citizen.validate(name: "") }
        for bad in ["89140001267", "+7914000126", "+791400012670", "+7914000126a", "+19140001267"] {
            #expect(throws: TicketError.self, "\(bad)") { try Citizen.validate(phone: bad) }
        }
        // A SNILS made without its check (as the store reads one back) is judged by the same rule.
        #expect(throws: TicketError.invalidField(field: "citizen.snils", rule: "checksum does not match")) {
            try Citizen(ref: "CIT-1", snils: Snils(trusted: "11223344596")).validate()
        }
    }

    @Test("the stored form is judged by the rule the operator's form is: 11 digits, then the checksum")
    func storedForm() {
        #expect(throws: Never.self) { try Snils.validate(digits: "11223344595") }
        #expect(throws: TicketError.invalidField(field: "citizen.snils", rule: "checksum does not match")) {
            try Snils.validate(digits: "11223344596")
        }
        for bad in ["112-233-445 95", "1122334459", "", "1122334459a", "١١٢٢٣٣٤٤٥٩٥"] {
            #expect(throws: TicketError.invalidField(field: "citizen.snils", rule: "11 digits, as 123-456-789 01 (stored without its separators)"),
                    "\(bad)") { try Snils.validate(digits: bad) }
        }
    }
}

extension String {
    fileprivate init(format2 v: Int) { self = v < 10 ? "0\(v)" : "\(v)" }
}
