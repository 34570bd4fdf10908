import Access
import Foundation
import NIOHTTP1

/// One line of a route table: a method, a path pattern such as `/v1/tickets/{ref}/notes`
/// (`{name}` is a parameter that matches one whole segment), the route's name in
/// `ekc_http_requests_total{route=...}`, the action the permission table decides it
/// by (nil: public), and its handler.
struct Route<Handler: Sendable>: Sendable {
    let method: HTTPMethod
    let pattern: String
    let name: String
    let action: Action?
    let handler: Handler

    init(_ method: HTTPMethod, _ pattern: String, _ name: String, _ action: Action?, _ handler: Handler) {
        self.method = method
        self.pattern = pattern
        self.name = name
        self.action = action
        self.handler = handler
    }
}

/// The parameters of a matched path, percent-decoded, by the names the pattern gives them.
struct PathParameters: Sendable {
    let names: [String]
    let values: [String]

    static let none = PathParameters(names: [], values: [])

    subscript(_ name: String) -> String? {
        for i in names.indices where names[i] == name { return values[i] }
        return nil
    }
}

/// Matches a request's path and method against a route table, built once. A request
/// splits its path once and compares segments: candidates are the patterns with as
/// many segments, most specific first (a literal segment before a parameter, from the
/// left), so the first whose literals all match is the path. No regular expressions,
/// nothing allocated but the segments and the parameters' values.
struct Router<Handler: Sendable>: Sendable {
    enum Segment: Sendable, Equatable {
        case literal(String)
        case parameter(String)
    }

    /// One path of the table with every method it serves.
    struct Path: Sendable {
        let pattern: String
        let segments: [Segment]
        /// Where the parameters are, and their names (shared by every match).
        let parameterPositions: [Int]
        let parameterNames: [String]
        /// Index into `routes` for each method, in table order.
        var methods: [(method: HTTPMethod, route: Int)]
        /// `GET, PATCH`: the `Allow` of a 405.
        var allow: String { methods.map(\.method.rawValue).joined(separator: ", ") }
    }

    enum Match {
        /// `route` indexes `routes`.
        case found(route: Int, parameters: PathParameters)
        case notFound
        case methodNotAllowed(allow: String)
    }

    let routes: [Route<Handler>]
    private(set) var paths: [Path] = []
    /// For each segment count, the indexes into `paths` of patterns that long, most specific first.
    private var candidates: [[Int]] = []

    /// Builds the table. A malformed pattern, or one method twice on one path, or two
    /// patterns that would match the same paths, is a programming error found at start.
    init(_ routes: [Route<Handler>]) {
        self.routes = routes
        var byShape: [String: Int] = [:]
        for (index, route) in routes.enumerated() {
            let segments = Router.parse(route.pattern)
            // Patterns of one shape (literals in place, any parameter names) are one path.
            let shape = segments.map { s -> String in
                if case .literal(let l) = s { return l }
                return "{}"
            }.joined(separator: "/")
            if let p = byShape[shape] {
                precondition(paths[p].segments == segments,
                             "\(route.pattern) and \(paths[p].pattern) match the same paths under different parameter names")
                precondition(!paths[p].methods.contains { $0.method == route.method },
                             "\(route.method.rawValue) \(route.pattern) is in the route table twice")
                paths[p].methods.append((route.method, index))
            } else {
                byShape[shape] = paths.count
                var positions: [Int] = []
                var names: [String] = []
                for (i, s) in segments.enumerated() {
                    if case .parameter(let name) = s {
                        precondition(!names.contains(name), "\(route.pattern) names {\(name)} twice")
                        positions.append(i)
                        names.append(name)
                    }
                }
                paths.append(Path(pattern: route.pattern, segments: segments, parameterPositions: positions,
                                  parameterNames: names, methods: [(route.method, index)]))
            }
        }
        let longest = paths.map(\.segments.count).max() ?? 0
        candidates = Array(repeating: [], count: longest + 1)
        for (i, p) in paths.enumerated() { candidates[p.segments.count].append(i) }
        let built = paths
        for n in candidates.indices {
            candidates[n].sort { Router.moreSpecific(built[$0].segments, than: built[$1].segments) }
        }
    }

    /// `/v1/tickets/{ref}` → [literal v1, literal tickets, parameter ref].
    static func parse(_ pattern: String) -> [Segment] {
        precondition(pattern.hasPrefix("/"), "route pattern \(pattern) must start with /")
        return pattern.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { part in
            precondition(!part.isEmpty, "route pattern \(pattern) has an empty segment")
            if part.hasPrefix("{") && part.hasSuffix("}") && part.count > 2 {
                return .parameter(String(part.dropFirst().dropLast()))
            }
            precondition(!part.contains("{") && !part.contains("}"), "route pattern \(pattern): \(part) is not a parameter")
            return .literal(String(part))
        }
    }

    /// A literal before a parameter at the first place the two differ.
    private static func moreSpecific(_ a: [Segment], than b: [Segment]) -> Bool {
        for (x, y) in zip(a, b) {
            switch (x, y) {
            case (.literal, .parameter): return true
            case (.parameter, .literal): return false
            default: continue
            }
        }
        return false
    }

    /// A request path's segments; empty segments (`//`, a trailing `/`) are skipped.
    static func segments(_ path: Substring) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }

    func match(_ method: HTTPMethod, _ segments: [Substring]) -> Match {
        guard segments.count < candidates.count else { return .notFound }
        for p in candidates[segments.count] {
            let path = paths[p]
            if !Router.literalsMatch(path.segments, segments) { continue }
            guard let route = path.methods.first(where: { $0.method == method })?.route else {
                return .methodNotAllowed(allow: path.allow)
            }
            if path.parameterPositions.isEmpty { return .found(route: route, parameters: .none) }
            let values = path.parameterPositions.map { Router.decode(segments[$0]) }
            return .found(route: route, parameters: PathParameters(names: path.parameterNames, values: values))
        }
        return .notFound
    }

    @inline(__always)
    private static func literalsMatch(_ pattern: [Segment], _ segments: [Substring]) -> Bool {
        for i in pattern.indices {
            if case .literal(let l) = pattern[i], segments[i] != l { return false }
        }
        return true
    }

    /// A path parameter, percent-decoded only when something is encoded (an invalid
    /// escape leaves it as it came).
    static func decode(_ s: Substring) -> String {
        let raw = String(s)
        return raw.utf8.contains(UInt8(ascii: "%")) ? (raw.removingPercentEncoding ?? raw) : raw
    }
}
