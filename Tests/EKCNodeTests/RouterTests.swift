import NIOHTTP1
import Testing
@testable import EKCNode

/// The route table's matching, without a store: which route a method and path reach,
/// 404 and 405, parameters, and the operator table against the OpenAPI document.
@Suite struct RouterTests {
    let router = Router<Int>([
        Route(.GET, "/v1/tickets", "list", nil, 0),
        Route(.POST, "/v1/tickets", "create", nil, 1),
        Route(.GET, "/v1/tickets/{ref}", "show", nil, 2),
        Route(.PATCH, "/v1/tickets/{ref}", "patch", nil, 3),
        Route(.GET, "/v1/tickets/{ref}/notes", "notes", nil, 4),
        Route(.GET, "/v1/tickets/search", "search", nil, 5),  // after {ref}, still preferred
        Route(.POST, "/v1/conflicts/{id}/resolve", "resolve", nil, 6),
        Route(.GET, "/metrics", "metrics", nil, 7),
    ])

    /// `show ref=X`, `404`, or `405 GET, PATCH`.
    func route(_ method: HTTPMethod, _ path: String) -> String {
        switch router.match(method, Router<Int>.segments(path[...])) {
        case .found(let i, let p):
            let r = router.routes[i]
            return ([r.name] + p.names.indices.map { "\(p.names[$0])=\(p.values[$0])" }).joined(separator: " ")
        case .notFound: return "404"
        case .methodNotAllowed(let allow): return "405 \(allow)"
        }
    }

    @Test func methodsAndPatternsReachTheirRoutes() {
        #expect(route(.GET, "/v1/tickets") == "list")
        #expect(route(.POST, "/v1/tickets") == "create")
        #expect(route(.GET, "/v1/tickets/38-2026-000001") == "show ref=38-2026-000001")
        #expect(route(.PATCH, "/v1/tickets/01M80935GXCBKJ5Z15490XGJVY") == "patch ref=01M80935GXCBKJ5Z15490XGJVY")
        #expect(route(.GET, "/v1/tickets/x/notes") == "notes ref=x")
        #expect(route(.POST, "/v1/conflicts/c-1/resolve") == "resolve id=c-1")
        #expect(route(.GET, "/metrics") == "metrics")
    }

    @Test func aLiteralSegmentWinsOverAParameter() {
        #expect(route(.GET, "/v1/tickets/search") == "search")
        #expect(route(.PATCH, "/v1/tickets/search") == "405 GET")
        #expect(route(.GET, "/v1/tickets/searches") == "show ref=searches")
    }

    @Test func unknownPathsAre404AndOtherMethods405() {
        for path in ["/", "", "/v1", "/v2/tickets", "/v1/tickets/x/history", "/v1/tickets/x/notes/y", "/metrics/x",
                     "/v1/conflicts/c-1", "/v1/conflicts/c-1/keep", "/V1/tickets"] {
            #expect(route(.GET, path) == "404", "\(path)")
        }
        #expect(route(.DELETE, "/v1/tickets/x") == "405 GET, PATCH")
        #expect(route(.PUT, "/v1/tickets") == "405 GET, POST")
        #expect(route(.GET, "/v1/conflicts/c-1/resolve") == "405 POST")
        #expect(route(.HEAD, "/metrics") == "405 GET")
    }

    @Test func parametersArePercentDecodedAndLiteralsAreNot() {
        #expect(route(.GET, "/v1/tickets/38%2D2026%2D000001") == "show ref=38-2026-000001")
        #expect(route(.POST, "/v1/conflicts/a%2Fb%20c/resolve") == "resolve id=a/b c")
        #expect(route(.GET, "/v1/tickets/100%") == "show ref=100%")  // not an escape: left as it came
        #expect(route(.GET, "/v1/%74ickets") == "404")
    }

    @Test func emptySegmentsAreSkipped() {
        #expect(route(.GET, "/v1/tickets/") == "list")
        #expect(route(.GET, "//v1//tickets//x//notes") == "notes ref=x")
    }

    /// Every route of the operator table is an operation of openapi.yaml and every
    /// operation is a route: a new route without its documentation fails here.
    @Test func operatorTableIsTheDocumentsPaths() throws {
        let document = String(decoding: OperatorAPI.loadOpenAPI(), as: UTF8.self)
        var documented = Set<String>()
        var inPaths = false
        var path = ""
        for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { continue }
            if !line.hasPrefix(" ") { inPaths = line == "paths:"; continue }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.dropFirst(4).dropLast().uppercased()
                if ["GET", "POST", "PATCH", "PUT", "DELETE"].contains(method) { documented.insert("\(method) \(path)") }
            }
        }
        let routed = Set(OperatorAPI.routes.map { "\($0.method.rawValue) \($0.pattern)" })
        #expect(documented.count >= 10)
        #expect(routed == documented)
        #expect(Set(OperatorAPI.routes.map(\.name)).count == OperatorAPI.routes.count, "route names are unique")
    }
}
