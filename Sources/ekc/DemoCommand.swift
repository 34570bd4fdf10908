import ArgumentParser
import Foundation

/// Synthetic demo data: invented requests, reference ids that point at no real person.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo", abstract: "Demo data for a running node.", subcommands: [Seed.self])

    struct Seed: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create synthetic tickets and move a few through their lifecycle.")
        @OptionGroup var client: ClientOptions
        @Option var count = 12

        // `0..<count` of a negative count trapped.
        func validate() throws {
            guard (1...10_000).contains(count) else { throw ValidationError("--count \(count): use 1 to 10000") }
        }

        static let samples: [(String, String, String, String, String)] = [
            ("phone", "child-benefits", "unified-allowance", "Единое пособие: срок рассмотрения", "Подала заявление на единое пособие, когда будет решение?"),
            ("epgu", "svo-families", "svo-support", "Меры поддержки семьям участников СВО", "Какие выплаты положены семье участника СВО и куда обращаться?"),
            ("phone", "victory-card", "victory-card", "Карта Победы", "Как получить «Карту Победы» ветерану?"),
            ("web", "pension", "pension-recalc", "Перерасчёт пенсии", "Прошу разъяснить порядок перерасчёта пенсии по старости."),
            ("walk-in", "disability", "mse-referral", "Направление на МСЭ", "Как получить направление на медико-социальную экспертизу?"),
            ("chatbot", "employment", "unemployment-benefit", "Пособие по безработице", "Какие документы нужны для пособия по безработице?"),
            ("callback", "displaced-persons", "displaced-certificate", "Удостоверение вынужденного переселенца", "Как оформить удостоверение?"),
            ("video-sign", "disability", "rehab-means", "Средства реабилитации", "Обращение через сурдопереводчика: сроки выдачи ТСР."),
        ]

        func run() async throws {
            let api = APIClient(client)
            for i in 0..<count {
                let s = Seed.samples[i % Seed.samples.count]
                let body: [String: Any] = [
                    "channel": s.0, "topic": s.1, "supportMeasure": s.2, "subject": s.3, "statement": s.4,
                    "legalRegime": i % 3 == 0 ? "appeal-59fz" : "consultation",
                    "citizen": ["ref": String(format: "CIT-DEMO-%04d", i + 1)],
                ]
                let (obj, _) = try await api.call("POST", "/v1/tickets", body: body)
                guard let t = obj as? [String: Any], let id = t["id"] as? String else { continue }
                // Walk some tickets through their lifecycle so the demo shows history.
                if t["status"] as? String == "NEW" && i % 2 == 1 {
                    _ = try await api.call("PATCH", "/v1/tickets/\(id)", body: ["status": "REGISTERED"])
                }
                if i % 4 == 1 {
                    _ = try await api.call("PATCH", "/v1/tickets/\(id)", body: ["status": "IN_WORK", "assignee": "op-petrova"])
                    _ = try await api.call("POST", "/v1/tickets/\(id)/notes",
                                           body: ["text": "Перезвонить после проверки статуса заявления", "visibility": "internal"])
                } else if i % 4 == 2 && i % 3 != 0 && t["status"] as? String == "REGISTERED" {
                    // A consultation answered at first contact.
                    _ = try await api.call("PATCH", "/v1/tickets/\(id)", body: ["status": "CLOSED"])
                }
            }
            print("created \(count) synthetic tickets on \(api.base)")
        }
    }
}
