"""Operators sign in (issue 9): bearer tokens from the organisation's identity provider,
one permission table deciding every route for every role, organisation scope, and the
names the operator port answers to — all through the real HTTP interface of real nodes.

The route × role cases are generated from the node's own table (`ekc access table
--json`), not listed here: a route added without a line in the table, or a role
granted something the table does not say, fails here.
"""
import base64
import hashlib
import hmac
import json
import os
import signal
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from conftest import Node, ekc
from federation import running, wait_until
from tokens import DEV_IDP, b64url, claims, ensure_keys, issuer, sign_es256, token

ROLES = ("operator", "supervisor", "auditor", "ops")
BODY = {"channel": "phone", "topic": "pension", "subject": "Перерасчёт пенсии", "statement": "Прошу пересчитать"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("auth") / "data").start()
    yield n
    n.stop()


def last_sequence(node) -> int:
    s, _, h = node.request("GET", "/v1/health")
    assert s == 200, h
    return h["store"]["lastSequence"]


def bearer(t: str) -> dict:
    return {"Authorization": "Bearer " + t}


# --------------------------------------------------------------------------- hostile tokens

def hostile_tokens():
    """(name, token, expected code) for every way a token must be refused."""
    key, kid, jwks = ensure_keys("38")
    now = int(time.time())
    es = lambda payload, **h: sign_es256(key, {"alg": "ES256", "typ": "JWT", "kid": kid, **h}, payload)
    good = claims("38", "op-hostile", ["supervisor"])
    valid = es(good)
    head, payload, sig = valid.split(".")
    stranger = ec.generate_private_key(ec.SECP256R1())
    pem_public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = jwks["keys"][0]

    def hs256(secret: bytes) -> str:
        signing = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + payload
        return signing + "." + b64url(hmac.new(secret, signing.encode(), hashlib.sha256).digest())

    def flip(s: str) -> str:
        return s[:5] + ("A" if s[5] != "A" else "B") + s[6:]

    other_key, other_kid, _ = ensure_keys("52")
    return [
        ("expired", es(claims("38", "op-hostile", ["supervisor"], iat=now - 7200, nbf=now - 7200, exp=now - 600)), "token_expired"),
        ("not yet valid", es(claims("38", "op-hostile", ["supervisor"], nbf=now + 600, exp=now + 3600)), "token_not_yet_valid"),
        ("another issuer", es(claims("38", "op-hostile", ["supervisor"], iss=issuer("52"))), "token_issuer"),
        ("no issuer", es(claims("38", "op-hostile", ["supervisor"], iss=None)), "token_issuer"),
        ("another audience", es(claims("38", "op-hostile", ["supervisor"], aud="some-other-app")), "token_audience"),
        ("no expiry", es(claims("38", "op-hostile", ["supervisor"], exp=None)), "token_malformed"),
        ("bad subject", es(claims("38", "op hostile", ["supervisor"])), "token_subject"),
        ("unknown kid", sign_es256(stranger, {"alg": "ES256", "kid": "not-ours"}, good), "token_unknown_key"),
        ("an unknown key under our kid", sign_es256(stranger, {"alg": "ES256", "kid": kid}, good), "token_signature"),
        ("another organisation's key and issuer", sign_es256(other_key, {"alg": "ES256", "kid": other_kid},
                                                             claims("52", "op-hostile", ["supervisor"])), "token_unknown_key"),
        ("alg none, no signature", b64url(b'{"alg":"none","typ":"JWT"}') + "." + payload + ".", "token_malformed"),
        ("alg none with a signature", b64url(b'{"alg":"none","typ":"JWT"}') + "." + payload + "." + sig, "token_algorithm"),
        ("HS256 keyed with the public key PEM", hs256(pem_public), "token_algorithm"),
        ("HS256 keyed with the JWK", hs256(json.dumps(jwk).encode()), "token_algorithm"),
        ("RS256 header on an EC key", b64url(json.dumps({"alg": "RS256", "kid": kid}).encode()) + "." + payload + "." + sig,
         "token_algorithm"),
        ("signature altered", head + "." + payload + "." + flip(sig), "token_signature"),
        ("payload altered", head + "." + flip(payload) + "." + sig, "token_signature"),
        ("two parts", head + "." + payload, "token_malformed"),
        ("four parts", valid + ".x", "token_malformed"),
        ("not base64", "@@@." + payload + "." + sig, "token_malformed"),
        ("header not JSON", b64url(b"garbage") + "." + payload + "." + sig, "token_malformed"),
        ("crit header", es(good, crit=["exp"]), "token_malformed"),
        ("9 KiB", "a" * 9000 + "." + payload + "." + sig, "token_malformed"),
        ("empty", "", "token_malformed"),
    ]


def test_refused_tokens_get_401_with_a_json_error_and_write_nothing(srv):
    before = last_sequence(srv)
    cases = hostile_tokens()
    for name, t, code in cases:
        for method, path, body in (("POST", "/v1/tickets", BODY), ("GET", "/v1/tickets", None),
                                   ("GET", "/v1/health", None)):
            s, h, e = srv.request(method, path, body, headers=bearer(t))
            assert s == 401, (name, method, path, s, e)
            assert e["error"]["code"] == code and e["error"]["field"] == "Authorization", (name, e)
            assert {k.lower(): v for k, v in h.items()}["www-authenticate"].startswith('Bearer realm="ekc"'), (name, h)
    # the Basic scheme, and no token at all
    s, _, e = srv.request("POST", "/v1/tickets", BODY, headers={"Authorization": "Basic b3A6cHc="})
    assert (s, e["error"]["code"]) == (401, "token_malformed")
    s, h, e = srv.request("POST", "/v1/tickets", BODY, authorize=False)
    assert (s, e["error"]["code"]) == (401, "token_missing")
    assert {k.lower(): v for k, v in h.items()}["www-authenticate"] == 'Bearer realm="ekc"'
    assert last_sequence(srv) == before, "a refused request wrote something"
    # and a valid token still works afterwards (nothing was cached wrongly)
    s, _, t = srv.request("POST", "/v1/tickets", BODY, headers=srv.auth("op-after"))
    assert s == 201 and last_sequence(srv) > before


def test_identity_headers_are_gone_and_the_actor_is_the_token_subject(srv):
    s, _, e = srv.request("POST", "/v1/tickets", BODY, authorize=False,
                          headers={"X-EKC-Actor": "system", "X-EKC-Role": "system"})
    assert (s, e["error"]["code"]) == (401, "token_missing")
    s, _, t = srv.request("POST", "/v1/tickets", BODY,
                          headers={**srv.auth("op-ivanova", roles=("operator",)), "X-EKC-Actor": "intruder"})
    assert s == 201
    s, _, n = srv.request("POST", f"/v1/tickets/{t['id']}/notes", {"text": "Перезвонить"},
                          headers={**srv.auth("op-ivanova", roles=("operator",)), "X-EKC-Role": "system"})
    assert s == 201 and n["author"] == "op-ivanova" and n["role"] == "operator"
    s, _, _ = srv.request("PATCH", f"/v1/tickets/{t['id']}", {"assignee": "op-petrova"},
                          headers=srv.auth("sv-orlova", roles=("operator", "supervisor")))
    assert s == 200
    history = srv.request("GET", f"/v1/tickets/{t['id']}/history")[2]["items"]
    assert [(e["actor"], e["role"]) for e in history] == [
        ("op-ivanova", "operator"), ("op-ivanova", "operator"), ("sv-orlova", "supervisor")], history


def test_rs256_and_eddsa_keys_of_a_configured_provider_and_key_rotation(make_node, tmp_path):
    """A provider configured by issuer and JWKS file (as for Keycloak): RS256 and EdDSA
    keys verify; a key removed from the file is no longer trusted within seconds, a new
    one is; a file that cannot be used keeps the old keys (SIGHUP too)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    n_ = rsa_key.public_key().public_numbers()
    rsa_jwk = {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
               "n": b64url(n_.n.to_bytes((n_.n.bit_length() + 7) // 8, "big")), "e": b64url(n_.e.to_bytes(3, "big"))}
    ed_jwk = {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig",
              "x": b64url(ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))}
    jwks = tmp_path / "realm.jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_jwk, ed_jwk]}))
    iss = "https://sso.example.test/realms/ekc-38"
    node = make_node(extra=["--idp-issuer", iss, "--idp-jwks", str(jwks), "--idp-audience", "ekc-api"]).start()

    def signed(alg, kid, signer, **over):
        c = {"iss": iss, "aud": ["account", "ekc-api"], "sub": "f3b1c7d2-keycloak-user", "exp": int(time.time()) + 600,
             "realm_access": {"roles": ["operator", "offline_access"]}, **over}
        signing = b64url(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode()) + "." + b64url(json.dumps(c).encode())
        return signing + "." + b64url(signer(signing.encode()))

    rs = signed("RS256", "rsa-1", lambda m: rsa_key.sign(m, padding.PKCS1v15(), hashes.SHA256()))
    ed = signed("EdDSA", "ed-1", ed_key.sign)
    for t in (rs, ed):
        s, _, created = node.request("POST", "/v1/tickets", BODY, headers=bearer(t))
        assert s == 201, created
        hist = node.request("GET", f"/v1/tickets/{created['id']}/history", headers=bearer(t))[2]["items"]
        assert (hist[0]["actor"], hist[0]["role"]) == ("f3b1c7d2-keycloak-user", "operator")
    s, _, e = node.request("GET", "/v1/tickets", headers=bearer(signed("EdDSA", "rsa-1", ed_key.sign)))
    assert (s, e["error"]["code"]) == (401, "token_algorithm")
    s, _, e = node.request("GET", "/v1/tickets", headers=node.auth())  # the development provider is not trusted here
    assert (s, e["error"]["code"]) == (401, "token_unknown_key"), e

    # rotation: the RSA key leaves the file
    jwks.write_text(json.dumps({"keys": [ed_jwk]}))
    wait_until(lambda: node.request("GET", "/v1/tickets", headers=bearer(rs))[0] == 401, 10.0,
               "the removed key is no longer trusted")
    assert node.request("GET", "/v1/tickets", headers=bearer(ed))[0] == 200
    # a broken file (and a SIGHUP to read it) keeps the keys in use
    jwks.write_text("{not json")
    node.proc.send_signal(signal.SIGHUP)
    time.sleep(3)
    assert node.proc.poll() is None, "the node stopped on a broken key file"
    assert node.request("GET", "/v1/tickets", headers=bearer(ed))[0] == 200
    assert "cannot" in node.log_path.read_text()


def test_host_and_origin_name_the_node(srv, make_node):
    s, _, e = srv.request("GET", "/v1/tickets", headers={"Host": "attacker.example"})
    assert (s, e["error"]["code"], e["error"]["field"]) == (421, "host_not_served", "Host")
    s, _, e = srv.request("GET", "/v1/health", headers={"Host": "attacker.example:80"})
    assert s == 421
    s, _, e = srv.request("POST", "/v1/tickets", BODY, headers={"Origin": "http://attacker.example"})
    assert (s, e["error"]["code"]) == (403, "origin_not_allowed")
    for host in (f"localhost:{srv.port}", f"127.0.0.1:{srv.port}", f"LOCALHOST:{srv.port}"):
        assert srv.request("GET", "/v1/tickets", headers={"Host": host, "Origin": f"http://{host}"})[0] == 200
    named = make_node(extra=["--api-host-name", "ekc-38.region.example"]).start()
    assert named.request("GET", "/v1/health", headers={"Host": "ekc-38.region.example:8400"})[0] == 200
    assert named.request("GET", "/v1/health", headers={"Host": "ekc-52.region.example"})[0] == 421


# --------------------------------------------------------------------------- the table, generated

FEDERATION = [
    {"id": "irk-main", "region": "38", "peers": ["irk-office-1", "pension-1"]},
    {"id": "irk-office-1", "region": "38", "peers": ["irk-main"]},
    {"id": "pension-1", "region": "pension", "peers": ["irk-main"]},
]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    yield from running(tmp_path_factory.mktemp("authfed"), FEDERATION)


def as_role(node, role):
    roles = ("offline_access",) if role is None else (role,)
    return node.auth(f"u-{role or 'norole'}", roles=roles)


class Targets:
    """Fresh things for a route to act on, made as a supervisor."""

    def __init__(self, fed):
        self.fed = fed
        self.region, self.office, self.fund = fed["irk-main"], fed["irk-office-1"], fed["pension-1"]

    def ticket(self):
        t = self.region.create(citizen={"ref": "CIT-AUTH-1", "name": "Петрова Анна"})
        if t["status"] == "NEW":
            t = self.region.patch(t["id"], {"status": "REGISTERED"})
        return t

    def transfer(self):
        t = self.ticket()
        s, _, tr = self.region.request("POST", f"/v1/tickets/{t['id']}/transfers", {
            "to": "pension", "kind": "REDIRECT", "reason": {"code": "competence", "text": "Вопрос фонда"}, "scope": ["ref"]})
        assert s == 201, tr
        wait_until(lambda: self.fund.request("GET", f"/v1/transfers/{tr['id']}")[0] == 200, 10.0, "transfer at the fund")
        return tr

    def accepted(self):
        tr = self.transfer()
        s, _, out = self.fund.request("POST", f"/v1/transfers/{tr['id']}/accept", {})
        assert s == 200, out
        return tr

    def conflict(self):
        t = self.ticket()
        wait_until(lambda: self.office.ticket(t["id"]) is not None, 10.0, "ticket at the office")
        self.fed.cut("irk-office-1")
        wait_until(lambda: not self.region.link("irk-office-1")["connected"], 10.0, "office cut off")
        self.region.patch(t["id"], {"priority": "high"})
        self.office.patch(t["id"], {"priority": "low"})
        self.fed.heal("irk-office-1")
        found = wait_until(lambda: [c for c in self.region.conflicts() if c["ticketId"] == t["id"]], 20.0, "a conflict")
        return found[0]

    def call(self, method, pattern):
        """(node, path, body) for a call of the route that succeeds when allowed."""
        g = self
        if pattern == "/v1/tickets":
            return g.region, pattern, (BODY if method == "POST" else None)
        if pattern.startswith("/v1/tickets/{ref}"):
            if pattern.endswith("/transfers") and method == "POST":
                t = g.ticket()
                return g.region, f"/v1/tickets/{t['id']}/transfers", {
                    "to": "pension", "kind": "COPY", "reason": {"code": "info", "text": "Для сведения"}, "scope": ["ref"]}
            t = g.ticket()
            path = pattern.replace("{ref}", t["id"])
            body = {"PATCH": {"priority": "high"}, "POST": {"text": "Заметка"}}.get(method)
            return g.region, path, body
        if pattern == "/v1/transfers/{id}":
            return g.region, f"/v1/transfers/{g.transfer()['id']}", None
        if pattern.startswith("/v1/transfers/{id}/"):
            step = pattern.rsplit("/", 1)[1]
            if step == "cancel":
                return g.region, f"/v1/transfers/{g.transfer()['id']}/cancel", {}
            tr = g.accepted() if step in ("return", "complete") else g.transfer()
            body = {"reason": {"code": "not-ours", "text": "Не компетенция фонда"}} if step in ("reject", "return") else {}
            if step == "complete":
                body = {"answer": "Ответ направлен заявителю"}
            return g.fund, f"/v1/transfers/{tr['id']}/{step}", body
        if pattern == "/v1/exports":
            return g.region, pattern, {"tickets": [g.ticket()["id"]], "fields": ["name"], "reason": "Проверка прав доступа"}
        if pattern == "/v1/digest/repair":
            return g.region, pattern, {"peer": g.region.replication()["peers"][0]["node"]}
        if pattern == "/v1/conflicts/{id}/resolve":
            return g.region, f"/v1/conflicts/{g.conflict()['id']}/resolve", {"keep": "winner"}
        return g.region, pattern, None


def quiet(fed, settle: float = 0.3, timeout: float = 10.0):
    """Until no node's sequence moves for `settle` seconds: what a step replicates back
    (a DELIVERED stamp, a TRANSFERRED_OUT status) must not count as a refused call's write."""
    def sequences():
        return [last_sequence(n) for n in fed.all()]
    deadline = time.monotonic() + timeout
    before = sequences()
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = sequences()
        if now == before:
            return
        before = now
    raise AssertionError("the federation did not settle")


def test_every_route_for_every_role_and_organisation_gets_what_the_table_says(fed):
    r = ekc("access", "table", "--json")
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)
    routes = table["routes"]
    assert len(routes) >= 20 and all(x["action"] or x["path"] in ("/v1/health", "/openapi.yaml") for x in routes)
    targets = Targets(fed)
    seen = []
    for route in routes:
        method, pattern, action, allowed = route["method"], route["path"], route["action"], set(route["roles"])
        node, path, body = targets.call(method, pattern)
        quiet(fed)
        before = last_sequence(node)
        # Refused: every role the table does not name, a token with no role we know, and a
        # token of another organisation (its own provider's key: not this node's).
        for role in [x for x in ROLES if x not in allowed] + [None]:
            s, _, e = node.request(method, path, body, headers=as_role(node, role))
            if action is None:
                assert s == 200, (method, pattern, role, s, e)
                continue
            assert s == 403, (method, pattern, role, s, e)
            assert e["error"]["code"] == "forbidden" and e["error"]["action"] == action, e
            assert set(e["error"]["roles"].split(",")) == allowed, e
            seen.append((pattern, method, role, 403))
        foreign = "52" if node.org != "52" else "38"
        s, _, e = node.request(method, path, body, headers={"Authorization": "Bearer " + token(foreign, "op-foreign")})
        assert (s, e["error"]["code"]) == (401, "token_unknown_key"), (method, pattern, s, e)
        if method != "GET":
            assert last_sequence(node) == before, f"a refused {method} {pattern} wrote something"
        # Allowed: each role the table names succeeds, on something fresh.
        for i, role in enumerate(sorted(allowed)):
            if i > 0:
                node, path, body = targets.call(method, pattern)
            s, _, e = node.request(method, path, body, headers=as_role(node, role))
            assert 200 <= s < 300, (method, pattern, role, s, e)
            seen.append((pattern, method, role, s))
    # every role was both allowed and refused somewhere
    for role in ROLES:
        assert any(x[2] == role and x[3] == 403 for x in seen) and any(x[2] == role and x[3] < 300 for x in seen), role


def test_a_patch_needs_what_its_fields_need(fed):
    """Assigning someone else, reopening and extending need the actions the table gives supervisors."""
    table = json.loads(ekc("access", "table", "--json").stdout)["actions"]
    region = fed["irk-main"]
    t = Targets(fed).ticket()
    cases = [({"assignee": "op-other"}, "ticket.assign"), ({"assignee": None}, "ticket.assign"),
             ({"extendAnswerByDays": 10}, "ticket.extend_deadline")]
    for body, action in cases:
        for role in ROLES:
            cur = region.ticket(t["id"])
            s, _, e = region.request("PATCH", f"/v1/tickets/{t['id']}", body, headers=as_role(region, role))
            if role in table[action] and "ticket.edit" in [a for a, rs in table.items() if role in rs]:
                assert s in (200, 409), (body, role, s, e)  # 409: e.g. the extension was used already
            else:
                assert s == 403 and e["error"]["action"] in (action, "ticket.edit"), (body, role, e)
                assert region.ticket(t["id"])["version"] == cur["version"]
    # taking a ticket oneself is an edit, not an assignment
    s, _, e = region.request("PATCH", f"/v1/tickets/{t['id']}", {"assignee": "u-operator"}, headers=as_role(region, "operator"))
    assert s == 200 and e["assignee"] == "u-operator"
    # reopening a closed ticket
    c = region.create()
    for st in ("REGISTERED", "CLOSED"):
        region.patch(c["id"], {"status": st})
    s, _, e = region.request("PATCH", f"/v1/tickets/{c['id']}", {"status": "REOPENED"}, headers=as_role(region, "operator"))
    assert (s, e["error"]["action"]) == (403, "ticket.reopen")
    s, _, e = region.request("PATCH", f"/v1/tickets/{c['id']}", {"status": "REOPENED"}, headers=as_role(region, "supervisor"))
    assert s == 200 and e["status"] == "REOPENED"


def test_a_fund_operator_sees_only_what_was_transferred_and_only_fields_in_scope(fed):
    region, fund = fed["irk-main"], fed["pension-1"]
    kept = region.create(subject="Не для фонда", citizen={"ref": "CIT-HOME-1", "name": "Сидоров Пётр"})
    sent = region.create(citizen={"ref": "CIT-FUND-1", "name": "Кузнецова Ольга", "snils": "112-233-445 95",
                                  "phone": "+79001112233"})
    sent = region.patch(sent["id"], {"status": "REGISTERED"}) if sent["status"] == "NEW" else sent
    s, _, tr = region.request("POST", f"/v1/tickets/{sent['id']}/transfers", {
        "to": "pension", "kind": "REDIRECT", "reason": {"code": "competence", "text": "Вопрос фонда"}, "scope": ["ref", "name"]})
    assert s == 201
    op = fund.auth("op-fund", roles=("operator",))
    wait_until(lambda: fund.request("GET", f"/v1/tickets/{sent['id']}", headers=op)[0] == 200, 10.0, "the ticket at the fund")
    s, _, there = fund.request("GET", f"/v1/tickets/{sent['id']}", headers=op)
    assert there["citizen"]["ref"] == "CIT-FUND-1" and there["citizen"]["snils"] is None and there["citizen"]["phone"] is None
    assert there["citizen"]["name"] is not None
    for ref in (kept["id"], kept["number"]):
        s, _, e = fund.request("GET", f"/v1/tickets/{ref}", headers=op)
        assert s == 404, e
    listed = [t["id"] for t in fund.request("GET", "/v1/tickets?limit=500", headers=op)[2]["items"]]
    assert sent["id"] in listed and kept["id"] not in listed
    # a region operator's token is not a fund operator's: the fund's node refuses it
    s, _, e = fund.request("GET", f"/v1/tickets/{sent['id']}", headers=region.auth("op-region", roles=("operator",)))
    assert s == 401
