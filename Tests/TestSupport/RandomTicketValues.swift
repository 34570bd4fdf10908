import CaseModel
import Replication

/// Random values of every register and child of a ticket, each valid by the rules its
/// codec checks (`TicketValues`), with the shapes an encoder must get right: absent
/// and present optionals, empty and long strings (lengths of one, two and three
/// varint bytes), Cyrillic and other multi-byte text, extreme plausible times.
public enum RandomTicketValues {
    /// Pieces of text: ASCII, Cyrillic, a combining mark, emoji, tabs and line breaks.
    static let words = ["Единое", "пособие", "на", "ребёнка", "pension", "заявление", "№", "417", "x", "Иркутск", "é",
                        "е\u{0301}", "✓", "🙂", "tab\there", "line\nbreak", "crlf\r\n", "«кавычки»", "—", "a.b", "SNILS"]

    /// Text the model accepts (`Validation.text`): not blank, no control characters
    /// but line breaks and tabs, at most `maxBytes` bytes of UTF-8. Mostly short;
    /// now and then near a varint boundary (127/128 bytes) or long.
    public static func text(_ rng: inout some RandomNumberGenerator, maxBytes: Int) -> String {
        let targets = [Int.random(in: 1...24, using: &rng), Int.random(in: 1...24, using: &rng),
                       Int.random(in: 120...135, using: &rng), Int.random(in: 1...maxBytes, using: &rng)]
        var target = min(maxBytes, targets.randomElement(using: &rng)!)
        if maxBytes >= 16_400 && Int.random(in: 0..<40, using: &rng) == 0 { target = Int.random(in: 16_380...16_400, using: &rng) }
        var s = words[Int.random(in: 0..<9, using: &rng)]
        while s.utf8.count > target { s = "x" }
        while true {
            let w = words.randomElement(using: &rng)!
            if s.utf8.count + 1 + w.utf8.count > target { break }
            s += (Bool.random(using: &rng) ? " " : "") + w
        }
        return s
    }

    /// A code (`Validation.code`): topics and support measures.
    public static func code(_ rng: inout some RandomNumberGenerator) -> String {
        let first = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        let rest = Array("abcdefghijklmnopqrstuvwxyz0123456789-._")
        let n = [Int.random(in: 1...16, using: &rng), 64].randomElement(using: &rng)!
        return String(first.randomElement(using: &rng)!) + String((1..<n).map { _ in rest.randomElement(using: &rng)! })
    }

    /// An operator or role name (`Actor.isValidName`).
    public static func user(_ rng: inout some RandomNumberGenerator) -> String {
        let chars = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
        let n = [Int.random(in: 1...12, using: &rng), 64].randomElement(using: &rng)!
        return String((0..<n).map { _ in chars.randomElement(using: &rng)! })
    }

    /// A plausible instant (2000–2200), now and then one of the range's ends.
    public static func time(_ rng: inout some RandomNumberGenerator) -> Millis {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return PlausibleTime.range.lowerBound
        case 1: return PlausibleTime.range.upperBound - 1
        default: return testNow + Millis.random(in: -400 * Calendar59.millisPerDay...400 * Calendar59.millisPerDay, using: &rng)
        }
    }

    /// A node of the test federation (`testDirectory`).
    public static func node(_ rng: inout some RandomNumberGenerator) -> NodeID {
        (irkutskNodes + [fundNode, novgorodNode]).randomElement(using: &rng)!
    }

    public static func number(_ rng: inout some RandomNumberGenerator) -> TicketNumber {
        let region = ["38", "52", "sfr", "77", "fss", "99999999"].randomElement(using: &rng)!
        let year = [2000, 2026, 2027, 2199].randomElement(using: &rng)!
        let sequence = [1, UInt64.random(in: 1...999_999, using: &rng), 90_000_007, 1_000_000_000_000].randomElement(using: &rng)!
        return TicketNumber(region: region, year: year, sequence: sequence)
    }

    public static func header(_ rng: inout some RandomNumberGenerator) -> TicketHeader {
        TicketHeader(number: number(&rng), originNode: node(&rng), channel: Channel.allCases.randomElement(using: &rng)!,
                     legalRegime: LegalRegime.allCases.randomElement(using: &rng)!, receivedAt: time(&rng))
    }

    public static func statement(_ rng: inout some RandomNumberGenerator) -> Statement {
        Statement(subject: text(&rng, maxBytes: Budget.subjectBytes), text: text(&rng, maxBytes: Budget.statementBytes))
    }

    public static func citizen(_ rng: inout some RandomNumberGenerator) -> Citizen? {
        guard Int.random(in: 0..<3, using: &rng) != 0 else { return nil }
        let refChars = Array("ABCDEFGHJKMNPQRSTVWXYZabc0123456789-")
        let ref = "CIT-" + String((0..<Int.random(in: 1...20, using: &rng)).map { _ in refChars.randomElement(using: &rng)! })
        let name: String? = Bool.random(using: &rng) ? text(&rng, maxBytes: Budget.citizenNameBytes) : nil
        let snils: Snils? = Bool.random(using: &rng) ? self.snils(&rng) : nil
        let phone: String? = Bool.random(using: &rng)
            ? "+7" + String((0..<10).map { _ in "0123456789".randomElement(using: &rng)! }) : nil
        return Citizen(ref: ref, name: name, snils: snils, phone: phone)
    }

    /// A SNILS with its checksum (`Snils.validate(digits:)`): nine random digits, then
    /// the sum of digit × (9 − position) mod 101 (100 → 00).
    public static func snils(_ rng: inout some RandomNumberGenerator) -> Snils {
        let nine = (0..<9).map { _ in Int.random(in: 0...9, using: &rng) }
        let sum = nine.enumerated().reduce(0) { $0 + $1.element * (9 - $1.offset) } % 101
        let check = sum == 100 ? 0 : sum
        return Snils(trusted: nine.map(String.init).joined() + (check < 10 ? "0" : "") + String(check))
    }

    public static func progress(_ rng: inout some RandomNumberGenerator) -> Progress {
        func maybeTime(_ rng: inout some RandomNumberGenerator) -> Millis? { Bool.random(using: &rng) ? time(&rng) : nil }
        let deadlines = Deadlines(registerBy: time(&rng), forwardBy: maybeTime(&rng), answerBy: maybeTime(&rng),
                                  extensionDays: [0, 0, Int.random(in: 1...Deadlines.maxExtensionDays, using: &rng)].randomElement(using: &rng)!,
                                  callbackBy: maybeTime(&rng))
        return Progress(status: TicketStatus.allCases.randomElement(using: &rng)!, registeredAt: maybeTime(&rng),
                        deadlines: deadlines)
    }

    public static func assignee(_ rng: inout some RandomNumberGenerator) -> String? {
        Bool.random(using: &rng) ? user(&rng) : nil
    }

    public static func priority(_ rng: inout some RandomNumberGenerator) -> Priority {
        Priority.allCases.randomElement(using: &rng)!
    }

    public static func topic(_ rng: inout some RandomNumberGenerator) -> Topic {
        Topic(topic: code(&rng), supportMeasure: Bool.random(using: &rng) ? code(&rng) : nil)
    }

    public static func actor(_ rng: inout some RandomNumberGenerator) -> Actor {
        Actor(user: user(&rng), role: ["operator", "supervisor", "system", user(&rng)].randomElement(using: &rng)!)
    }

    public static func stamp(_ rng: inout some RandomNumberGenerator) -> Stamp {
        Stamp(millis: time(&rng), logical: [0, UInt16.random(in: 0...UInt16.max, using: &rng)].randomElement(using: &rng)!)
    }

    public static func id(_ rng: inout some RandomNumberGenerator) -> RecordID {
        RecordID(millis: UInt64(testNow) + UInt64.random(in: 0...1_000_000, using: &rng),
                 randomHigh: UInt16.random(in: 0...UInt16.max, using: &rng), randomLow: UInt64.random(in: 0...UInt64.max, using: &rng))
    }

    public static func note(_ rng: inout some RandomNumberGenerator, ticket: TicketID) -> Note {
        Note(id: id(&rng), ticketID: ticket, author: actor(&rng), node: node(&rng), at: time(&rng), stamp: stamp(&rng),
             visibility: NoteVisibility.allCases.randomElement(using: &rng)!, text: text(&rng, maxBytes: Budget.noteBytes))
    }

    public static func event(_ rng: inout some RandomNumberGenerator, ticket: TicketID) -> HistoryEvent {
        let fields = Array("abcdefghijklmnopqrstuvwxyz.ABC_-:0123456789")
        let field = String((0..<Int.random(in: 1...Budget.historyFieldBytes, using: &rng)).map { _ in fields.randomElement(using: &rng)! })
        func value(_ rng: inout some RandomNumberGenerator) -> String? {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: return nil
            case 1: return ""
            default: return text(&rng, maxBytes: Budget.historyValueBytes)
            }
        }
        return HistoryEvent(id: id(&rng), ticketID: ticket, actor: actor(&rng), node: node(&rng), at: time(&rng),
                            stamp: stamp(&rng), field: field, old: value(&rng), new: value(&rng))
    }

    /// A whole ticket whose every field is random and valid for its codec (not
    /// necessarily a state the lifecycle reaches).
    public static func ticket(_ rng: inout some RandomNumberGenerator) -> Ticket {
        let h = header(&rng), s = statement(&rng), p = progress(&rng), t = topic(&rng)
        let stamp = stamp(&rng)
        return Ticket(id: id(&rng), number: h.number, originNode: h.originNode, ownerNode: node(&rng), channel: h.channel,
                      topic: t.topic, supportMeasure: t.supportMeasure, subject: s.subject, statement: s.text,
                      citizen: citizen(&rng), status: p.status, assignee: assignee(&rng), priority: priority(&rng),
                      legalRegime: h.legalRegime, deadlines: p.deadlines, receivedAt: h.receivedAt,
                      registeredAt: p.registeredAt, updatedAt: stamp.millis, updatedStamp: stamp, version: 1, duplicateOf: nil)
    }
}
