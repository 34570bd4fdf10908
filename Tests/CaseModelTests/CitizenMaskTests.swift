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
}
