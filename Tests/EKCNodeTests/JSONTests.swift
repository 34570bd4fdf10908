import CaseModel
import Foundation
import NIOCore
import Testing
@testable import EKCNode

@Suite struct TimeParsingTests {
    @Test func epochMillisAndRFC3339() {
        #expect(TimeParsing.parse("0") == 0)
        #expect(TimeParsing.parse("1795305793589") == 1_795_305_793_589)
        #expect(TimeParsing.parse("1970-01-01T00:00:00Z") == 0)
        #expect(TimeParsing.parse("2026-11-22T00:03:13.589Z") == 1_795_305_793_589)
        #expect(TimeParsing.parse("2026-11-22T08:03:13.589+08:00") == 1_795_305_793_589)
        #expect(TimeParsing.parse("2026-11-21T21:03:13.5-03:00") == 1_795_305_793_500)
        #expect(TimeParsing.parse("2000-02-29T12:00:00Z") == 951_825_600_000)
        #expect(TimeParsing.parse("2026-11-22T00:03:13.123456789Z") == 1_795_305_793_123)
    }

    @Test func refusesMalformed() {
        for bad in ["", "2026-11-22", "2026-11-22T00:03:13", "2026-13-01T00:00:00Z", "2026-11-22T25:00:00Z",
                    "2026-11-22T00:03:13.Z", "2026-11-22T00:03:13Zjunk", "2026-11-22T00:03:13+0800", "yesterday",
                    "2026-11-22 00:03:13Z"] {
            #expect(TimeParsing.parse(bad) == nil, "\(bad) should be refused")
        }
    }

    @Test func writerAndParserAgree() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let t = Millis.random(in: 0...4_102_444_800_000, using: &rng)
            var w = JSONWriter()
            w.time(t)
            let s = String(buffer: w.buffer)
            #expect(TimeParsing.parse(String(s.dropFirst().dropLast())) == t, "\(s)")
        }
    }
}

@Suite struct JSONWriterTests {
    @Test func escapesEverythingJSONRequires() throws {
        let nasty = "quote\" backslash\\ newline\n tab\t cr\r nul\u{0} bell\u{7} кириллица 🇷🇺 \u{1F}"
        var w = JSONWriter()
        w.beginObject()
        w.field("s", nasty)
        w.key("n"); w.int(-42)
        w.key("a"); w.beginArray(); w.bool(true); w.null(); w.string("x"); w.endArray()
        w.endObject()
        let obj = try JSONSerialization.jsonObject(with: Data(w.buffer.readableBytesView)) as! [String: Any]
        #expect(obj["s"] as? String == nasty)
        #expect(obj["n"] as? Int == -42)
        #expect((obj["a"] as? [Any])?.count == 3)
    }
}

@Suite struct RequestDecodingTests {
    func parse(_ s: String) throws -> JSONValue {
        try JSONValue.parse(ByteBuffer(string: s))
    }

    @Test func minimalDraft() throws {
        let d = try RequestDecoding.draft(try parse(#"{"channel":"phone","topic":"child-benefits","subject":"s","statement":"t"}"#))
        #expect(d.channel == .phone && d.topic == "child-benefits" && d.priority == .normal && d.legalRegime == .consultation)
        #expect(d.citizen == nil && d.initialStatus == nil)
    }

    @Test func fullDraft() throws {
        let d = try RequestDecoding.draft(try parse("""
            {"channel":"web","topic":"pension","supportMeasure":"pension-recalc","subject":"s","statement":"t",
             "priority":"high","legalRegime":"appeal-59fz","assignee":"op-1","status":"NEW",
             "receivedAt":"2026-11-20T10:00:00+03:00","citizen":{"ref":"CIT-1","name":"Иванова И.","snils":"112-233-445 95","phone":"+79001234567"}}
            """))
        #expect(d.legalRegime == .appeal59FZ && d.priority == .high && d.initialStatus == .new)
        #expect(d.citizen?.snils?.digits == "11223344595")
        #expect(d.receivedAt == TimeParsing.parse("2026-11-20T07:00:00Z"))
    }

    func refusal(_ body: String) -> APIError? {
        do {
            _ = try RequestDecoding.draft(try parse(body))
            return nil
        } catch let e as APIError {
            return e
        } catch {
            return nil
        }
    }

    @Test func refusesWithTheFieldNamed() {
        let base = #""channel":"phone","topic":"t","subject":"s","statement":"x""#
        let cases: [(String, Int, String, String?)] = [
            ("{\(base),\"extra\":1}", 400, "unknown_field", "extra"),
            ("{\(base),\"citizen\":{\"ref\":\"C\",\"inn\":\"1\"}}", 400, "unknown_field", "citizen.inn"),
            (#"{"channel":"phone","topic":"t","subject":5,"statement":"x"}"#, 400, "invalid_type", "subject"),
            ("{\(base),\"citizen\":\"CIT-1\"}", 400, "invalid_type", "citizen"),
            ("{\(base),\"priority\":true}", 400, "invalid_type", "priority"),
            (#"{"channel":"phone","topic":"t","statement":"x"}"#, 422, "missing_field", "subject"),
            (#"{"topic":"t","subject":"s","statement":"x"}"#, 422, "missing_field", "channel"),
            (#"{"channel":"fax","topic":"t","subject":"s","statement":"x"}"#, 422, "invalid_value", "channel"),
            ("{\(base),\"receivedAt\":\"yesterday\"}", 422, "invalid_value", "receivedAt"),
            ("{\(base),\"citizen\":{\"ref\":\"C\",\"snils\":\"112-233-445 96\"}}", 422, "invalid_value", "citizen.snils"),
            ("[1,2]", 400, "invalid_type", nil),
        ]
        for (body, status, code, field) in cases {
            let e = refusal(body)
            #expect(e != nil, "\(body) should be refused")
            #expect(Int(e?.status.code ?? 0) == status, "\(body)")
            #expect(e?.code == code, "\(body)")
            #expect(e?.field == field, "\(body)")
        }
    }

    @Test func malformedJSON() {
        for body in ["{", "{\"a\":}", "nope", "", "{\"a\":1,}", "[1,]", "{\"a\":1,\"a\":2}", "01", "1.", "\"\\x\"", "\"\u{1}\"", "[" + String(repeating: "[", count: 40) + "]", "{\"a\":NaN}", "\"\\ud800\"", "{} {}"] {
            #expect(throws: APIError.self) { try JSONValue.parse(ByteBuffer(string: body)) }
        }
    }

    @Test func parsesWhatRFC8259Allows() throws {
        #expect(try parse(#" {"a" : [1, -2.5e3, true, false, null, "\u00e9\ud83c\uddf7"] } "#)
            == .object(["a": .array([.number(1), .number(-2500), .bool(true), .bool(false), .null, .string("é\u{1F1F7}")])]))
        #expect(try parse(#""кириллица \"q\" \\ \/ \n""#) == .string("кириллица \"q\" \\ / \n"))
    }

    @Test func patchDistinguishesAbsentNullAndValue() throws {
        let p1 = try RequestDecoding.patch(try parse(#"{"assignee":null}"#))
        #expect(p1.assignee == .some(nil))
        let p2 = try RequestDecoding.patch(try parse(#"{"assignee":"op-2","status":"IN_WORK","extendAnswerByDays":10}"#))
        #expect(p2.assignee == .some("op-2") && p2.status == .inWork && p2.extendAnswerByDays == 10)
        let p3 = try RequestDecoding.patch(try parse(#"{"priority":"low"}"#))
        #expect(p3.assignee == nil)
        #expect(throws: APIError.self) { try RequestDecoding.patch(try parse(#"{"extendAnswerByDays":1.5}"#)) }
        #expect(throws: APIError.self) { try RequestDecoding.patch(try parse(#"{"number":"x"}"#)) }
    }
}
