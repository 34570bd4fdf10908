import CaseModel
import Testing

/// How a citizen's details look unless unmasked: enough to tell two callers apart, not
/// to identify anyone.
@Suite struct CitizenMaskTests {
    @Test func aNameKeepsTheFirstLetterOfEachWord() {
        #expect(Citizen.maskName("Кузнецова Ольга Ивановна") == "К*** О*** И***")
        #expect(Citizen.maskName("  Петров\tПётр  ") == "П*** П***")
        #expect(Citizen.maskName("Анна-Мария") == "А***")
        #expect(Citizen.maskName("") == "")
        #expect(!Citizen.maskName("Иванова").contains("ванова"))
    }

    @Test func snilsAndPhoneKeepTheirLastDigits() throws {
        #expect(try Snils("112-233-445 95").masked == "***-***-445 95")
        #expect(Citizen.maskPhone("+79001112233") == "+7 *** ***-**-33")
    }

    /// `init(trusted:)` holds what a store gave: a damaged value of another length (or of
    /// fewer characters than bytes: CR LF is one Character) once trapped on slicing.
    @Test("a trusted SNILS of another length shows as *** masked or not, never traps",
          arguments: ["", "12345", "1234567890", "123456789012", "123456789\r\n", "12345678\u{0301}90"])
    func trustedSnilsOfAnotherShape(_ digits: String) {
        let s = Snils(trusted: digits)
        if digits.utf8.count == 11 {
            #expect(s.masked.hasPrefix("***-***-"))
        } else {
            #expect(s.masked == "***" && s.formatted == "***")
        }
        #expect(Snils(trusted: "11223344595").formatted == "112-233-445 95")
    }
}
