import Access
import CaseModel
import CaseStore
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Prometheus
import Replication

/// The operator API: routes a request (`OperatorRoutes.swift`) to its handler and
/// counts it. Reads run on the calling event loop (a short LMDB read transaction);
/// edits are handed to the store's commit thread and answered when their commit returns.
public final class OperatorAPI: Sendable {
    /// What a route runs: the API, and the request with its path parameters and query.
    typealias Handler = @Sendable (OperatorAPI, RouteRequest) throws -> Reply

    public let store: CaseStore
    public let node: NodeID
    public let region: String
    public let maxBodyBytes: Int
    /// Token verification and the names the port answers to.
    public let access: OperatorAccess
    let registry: PrometheusCollectorRegistry?
    let openAPIDocument: ByteBuffer
    let startedAt = Date()
    let replicator: Replicator?
    /// Digest comparison with peers (nil without replication) and the store's scrub.
    let antiEntropy: AntiEntropy?
    let scrubber: DigestScrubber?
    /// When this node's federation certificate expires (nil without replication).
    let certificateNotValidAfter: Date?
    let router = Router<Handler>(OperatorAPI.routes)
    /// `ekc_http_requests_total` by route and status code, keyed `metric * 1000 + code`
    /// where `metric` is the route's index in the table, or `errorMetric`.
    private let requestCounters = NIOLockedValueBox<[Int: Metrics.Counter]>([:])
    private var errorMetric: Int { router.routes.count }

    public init(store: CaseStore, access: OperatorAccess, registry: PrometheusCollectorRegistry?, replicator: Replicator? = nil,
                certificateNotValidAfter: Date? = nil, maxBodyBytes: Int = 128 * 1024,
                antiEntropy: AntiEntropy? = nil, scrubber: DigestScrubber? = nil) {
        self.store = store
        self.antiEntropy = antiEntropy
        self.scrubber = scrubber
        self.access = access
        self.replicator = replicator
        self.certificateNotValidAfter = certificateNotValidAfter
        self.node = store.configuration.node
        self.region = store.configuration.region
        self.maxBodyBytes = maxBodyBytes
        self.registry = registry
        self.openAPIDocument = ByteBuffer(bytes: OperatorAPI.loadOpenAPI())
    }

    static func loadOpenAPI() -> [UInt8] {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"),
              let data = try? Data(contentsOf: url) else { return Array("openapi: 3.1.0\n".utf8) }
        return Array(data)
    }

    /// Answers a request from `caller`: the Host is checked, the route found, the
    /// permission table consulted for the route's action, then the handler runs.
    public func handle(_ request: APIRequest, caller: Caller, on loop: EventLoop) -> Reply {
        var req = request
        let (path, query) = OperatorAPI.split(req.uri)
        let metric: Int
        let reply: Reply
        do {
            try access.checkOrigin(req.headers)
            switch router.match(req.method, Router<Handler>.segments(path)) {
            case .found(let route, let parameters):
                metric = route
                try admit(router.routes[route].action, caller, &req)
                reply = try router.routes[route].handler(
                    self, RouteRequest(request: req, parameters: parameters, query: query, loop: loop))
            case .notFound:
                throw APIError.notFound("no such path: \(req.uri)")
            case .methodNotAllowed(let allow):
                throw APIError.methodNotAllowed(req.method, allow: allow)
            }
        } catch let e as APIError {
            count(metric: errorMetric, status: e.status)
            return .now(.error(e))
        } catch {
            let e = APIError(status: .internalServerError, code: "internal", message: "\(error)", field: nil)
            return .now(.error(e))
        }
        switch reply {
        case .now(let r):
            count(metric: metric, status: r.status)
        case .later(let f):
            f.whenSuccess { [self] r in count(metric: metric, status: r.status) }
        }
        return reply
    }

    /// A refused token is 401 everywhere; a public route takes anyone else; any other
    /// needs a principal whose roles the permission table allows the action.
    private func admit(_ action: Action?, _ caller: Caller, _ req: inout APIRequest) throws(APIError) {
        let principal: Principal
        switch caller {
        case .refused(let e): throw .unauthorized(e)
        case .anonymous:
            guard action != nil else { return }
            throw .unauthorized(.missing)
        case .principal(let p): principal = p
        }
        req.principal = principal
        guard let action else { return }
        switch PermissionTable.decide(action, for: principal) {
        case .allowed(let role): req.actor = principal.actor(as: role)
        case .denied(let needs), .deniedAction(_, let needs): throw .forbidden(action, needs: needs, has: principal.roles)
        }
    }

    /// An edit that needs more than its route's action (a patch that assigns or
    /// reopens): every action must be allowed; the actor is recorded with the role that did.
    func authorize(_ actions: [Action], _ req: APIRequest) throws(APIError) -> Actor {
        guard let p = req.principal else { throw .unauthorized(.missing) }
        switch PermissionTable.decide(actions, for: p) {
        case .allowed(let role): return p.actor(as: role)
        case .denied(let needs): throw .forbidden(actions.first ?? .ticketEdit, needs: needs, has: p.roles)
        case .deniedAction(let a, let needs): throw .forbidden(a, needs: needs, has: p.roles)
        }
    }

    /// Counts a request the HTTP layer answered itself (`error` for a body over the limit).
    func count(route: String, status: HTTPResponseStatus) {
        count(metric: router.routes.firstIndex { $0.name == route } ?? errorMetric, status: status)
    }

    private func count(metric: Int, status: HTTPResponseStatus) {
        let key = metric * 1000 + Int(status.code)
        let counter = requestCounters.withLockedValue { cache -> Metrics.Counter in
            if let c = cache[key] { return c }
            let name = metric < router.routes.count ? router.routes[metric].name : "error"
            let c = Metrics.Counter(label: "ekc_http_requests_total", dimensions: [("route", name), ("code", String(status.code))])
            cache[key] = c
            return c
        }
        counter.increment()
    }

    /// Hands an edit to the store's commit thread; the reply is rendered when its commit returns.
    func submit(_ edit: Edit, _ actor: Actor, _ loop: EventLoop,
                render: @escaping @Sendable (EditOutcome) -> APIResponse) -> EventLoopFuture<APIResponse> {
        let promise = loop.makePromise(of: APIResponse.self)
        store.submit(edit, actor: actor) { result in
            switch result {
            case .success(let outcome): promise.succeed(render(outcome))
            case .failure(let e): promise.succeed(.error(APIError(e)))
            }
        }
        return promise.futureResult
    }
}

/// A matched request as a handler sees it.
struct RouteRequest {
    let request: APIRequest
    let parameters: PathParameters
    let query: [String: String]
    let loop: EventLoop

    /// A path parameter the route's pattern names, percent-decoded.
    func parameter(_ name: String) throws(APIError) -> String {
        guard let v = parameters[name] else {
            throw APIError(status: .internalServerError, code: "internal",
                           message: "the route has no path parameter {\(name)}", field: nil)
        }
        return v
    }
}
