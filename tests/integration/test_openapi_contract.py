"""Contract test: the operator API as the node serves it against the OpenAPI 3.1
document it ships (Sources/EKCNode/Resources/openapi.yaml, served at /openapi.yaml).

(a) the served document is the repo file byte for byte and is valid OpenAPI 3.1;
(b) real responses of a running node validate against the schema the document
    declares for their path, method and status, and every status the node
    returned is declared for that operation;
(c) schemathesis, when installed, fuzzes the live node from the document: no 5xx,
    no response that breaks its declared schema, status, content type or headers.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "Sources" / "EKCNode" / "Resources" / "openapi.yaml"
SPEC_URI = "urn:ekc:openapi"


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load(SPEC_PATH.read_bytes())


def _pointer_escape(s: str) -> str:
    return s.replace("~", "~0").replace("/", "~1")


def _resolve(spec, ref: str):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class Contract:
    """Looks up what the document declares and validates real responses against it."""

    def __init__(self, spec):
        self.spec = spec
        self.registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
        self.seen = []  # (path, method, status) the node returned

    def response(self, path: str, method: str, status: int):
        """(response object, JSON pointer of that object) for a declared response, following $refs."""
        op = self.spec["paths"][path][method.lower()]
        responses = op["responses"]
        assert str(status) in responses, (
            f"{method} {path} returned {status}, which the document does not declare "
            f"(declared: {sorted(responses)})")
        pointer = f"#/paths/{_pointer_escape(path)}/{method.lower()}/responses/{status}"
        resp = responses[str(status)]
        while "$ref" in resp:
            pointer = resp["$ref"]
            resp = _resolve(self.spec, pointer)
        return resp, pointer

    def validator(self, schema_pointer: str):
        return Draft202012Validator({"$ref": SPEC_URI + schema_pointer}, registry=self.registry)

    def check(self, path: str, method: str, status: int, headers: dict, body):
        """Asserts that the response is declared and that its body and headers match the declaration."""
        self.seen.append((path, method.upper(), status))
        resp, pointer = self.response(path, method, status)
        headers = {k.lower(): v for k, v in headers.items()}
        for name, h in (resp.get("headers") or {}).items():
            while "$ref" in h:
                h = _resolve(self.spec, h["$ref"])
            if h.get("required"):
                assert name.lower() in headers, f"{method} {path} {status}: required header {name} missing"
            if name.lower() in headers and "schema" in h:
                errors = list(Draft202012Validator(h["schema"]).iter_errors(headers[name.lower()]))
                assert not errors, f"{method} {path} {status}: header {name}={headers[name.lower()]!r}: {errors[0].message}"
        content = resp.get("content")
        if not content:
            return
        ctype = headers.get("content-type", "").split(";")[0].strip()
        assert ctype in content, f"{method} {path} {status}: content-type {ctype!r} not declared ({sorted(content)})"
        schema_pointer = f"{pointer}/content/{_pointer_escape(ctype)}/schema"
        if ctype == "application/yaml":
            body = yaml.safe_load(body)
        elif ctype == "text/plain":
            body = body.decode() if isinstance(body, bytes) else body
        errors = sorted(self.validator(schema_pointer).iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, (
            f"{method} {path} {status}: body does not match {schema_pointer}:\n"
            + "\n".join(f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
            + f"\nbody: {json.dumps(body, ensure_ascii=False)[:2000]}")
        return body


@pytest.fixture
def contract(spec):
    return Contract(spec)


def call(node, contract, method, url, template, *, body=None, headers=None, raw=None, expect=None, authorize=True):
    """One request through the conftest client (as its default supervisor + ops token
    unless `headers` name another Authorization or `authorize` is False), checked
    against the document."""
    status, h, payload = node.request(method, url, body=body, headers=headers, raw=raw, authorize=authorize)
    if expect is not None:
        assert status == expect, f"{method} {url}: expected {expect}, got {status}: {payload!r}"
    contract.check(template, method, status, h, payload)
    return status, {k.lower(): v for k, v in h.items()}, payload


def check_component(contract, response: str, status: int, headers: dict, body):
    """A response every path may give, documented once under components/responses
    (405, 421) rather than under each operation: its body and headers against that."""
    resp = contract.spec["components"]["responses"][response]
    headers = {k.lower(): v for k, v in headers.items()}
    for name, h in (resp.get("headers") or {}).items():
        if h.get("required"):
            assert name.lower() in headers, f"{status}: required header {name} missing"
    contract.validator(f"#/components/responses/{response}/content/application~1json/schema").validate(body)


def raw_http(node, head: bytes, body: bytes = b"", timeout: float = 10.0):
    """Sends raw bytes and reads the answer until the server closes; tolerates a reset after it."""
    data = b""
    with socket.create_connection(("127.0.0.1", node.port), timeout=timeout) as s:
        try:
            s.sendall(head + body)
        except OSError:
            pass
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, json.loads(payload) if payload else None


NEW_TICKET = {"channel": "web", "topic": "child-benefits", "subject": "Единое пособие",
              "statement": "Когда будет решение по заявлению?"}


# --------------------------------------------------------------------------- (a) the document

def test_served_document_is_the_repo_file_and_valid_openapi_31(node):
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    on_disk = SPEC_PATH.read_bytes()
    assert on_disk.strip(), "openapi.yaml is empty"
    status, headers, served = node.request("GET", "/openapi.yaml")
    assert status == 200
    assert headers.get("content-type", headers.get("Content-Type", "")).startswith("application/yaml")
    assert served == on_disk, (
        "GET /openapi.yaml differs from Sources/EKCNode/Resources/openapi.yaml "
        "(rebuild the ekc binary so that SwiftPM copies the resource)")
    doc = yaml.safe_load(served)
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)
    # Every schema in components is itself a valid 2020-12 schema.
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)


def test_document_covers_every_route_and_refuses_unknown_fields(spec):
    expected = {
        "/v1/tickets": {"get", "post"},
        "/v1/tickets/{ref}": {"get", "patch"},
        "/v1/tickets/{ref}/notes": {"get", "post"},
        "/v1/tickets/{ref}/history": {"get"},
        "/v1/tickets/{ref}/transfers": {"get", "post"},
        "/v1/transfers": {"get"},
        "/v1/transfers/{id}": {"get"},
        **{f"/v1/transfers/{{id}}/{step}": {"post"} for step in ("accept", "reject", "return", "complete", "cancel")},
        "/v1/changes": {"get"},
        "/v1/conflicts": {"get"},
        "/v1/conflicts/{id}/resolve": {"post"},
        "/v1/exports": {"post"},
        "/v1/audit/access": {"get"},
        "/v1/audit/verify": {"get"},
        "/v1/replication": {"get"},
        "/v1/digest": {"get"},
        "/v1/digest/repair": {"post"},
        "/v1/health": {"get"},
        "/metrics": {"get"},
        "/openapi.yaml": {"get"},
    }
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    assert {p: set(ops) & methods for p, ops in spec["paths"].items()} == expected
    schemas = spec["components"]["schemas"]
    for name in ("TicketCreate", "TicketPatch", "NoteCreate", "CitizenInput", "ConflictResolution", "TransferCreate",
                 "TransferStepRequest", "Reason", "ExportRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["TicketCreate"]["required"] == ["channel", "topic", "subject", "statement"]
    assert schemas["NoteCreate"]["required"] == ["text"]
    # The enums of the model.
    assert schemas["TicketStatus"]["enum"] == ["NEW", "REGISTERED", "IN_WORK", "WAITING", "DEFERRED", "ANSWERED",
                                              "CLOSED", "REOPENED", "TRANSFER_PENDING", "TRANSFERRED_OUT", "MERGED"]
    assert schemas["Channel"]["enum"] == ["phone", "walk-in", "video-sign", "callback", "web", "epgu", "chatbot",
                                          "voicemail", "email", "messenger"]
    assert schemas["Priority"]["enum"] == ["low", "normal", "high", "urgent"]
    assert schemas["LegalRegime"]["enum"] == ["consultation", "appeal-59fz"]
    assert schemas["NoteVisibility"]["enum"] == ["shared", "internal"]
    assert schemas["TransferKind"]["enum"] == ["REDIRECT", "INFO_REQUEST", "COPY"]
    assert schemas["TransferState"]["enum"] == ["SENT", "DELIVERED", "CANCELLED", "REJECTED", "ACCEPTED", "RETURNED", "COMPLETED"]
    assert schemas["CitizenField"]["enum"] == ["ref", "name", "snils", "phone"]


# --------------------------------------------------------------------------- (b) real responses

def test_ticket_lifecycle_responses_match_the_document(node, contract):
    actor = node.auth("ivanova", roles=("supervisor",))

    # create: an assisted channel with a citizen (registered at once, name, SNILS and phone masked)
    _, h, t = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=201, headers=actor, body={
        "channel": "phone", "topic": "child-benefits", "supportMeasure": "unified-allowance",
        "subject": "Единое пособие", "statement": "Когда будет решение?", "legalRegime": "appeal-59fz",
        "citizen": {"ref": "CIT-7F3K2", "name": "Иванова Мария", "snils": "112-233-445 95", "phone": "+79991234567"}})
    assert t["status"] == "REGISTERED" and t["version"] == 1
    assert h["etag"] == '"1"' and h["location"] == f"/v1/tickets/{t['id']}"
    assert t["citizen"] == {"ref": "CIT-7F3K2", "name": "И*** М***", "snils": "***-***-445 95",
                            "phone": "+7 *** ***-**-67"}
    assert t["deadlines"]["answerBy"] is not None and t["deadlines"]["forwardBy"] is not None
    appeal = t

    # create: a web consultation arrives NEW
    _, h, t = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=201, body=NEW_TICKET)
    assert t["status"] == "NEW" and t["registeredAt"] is None and t["citizen"] is None
    tid, number = t["id"], t["number"]

    # read by id and by number
    for ref in (tid, number, tid.lower()):
        _, h, got = call(node, contract, "GET", f"/v1/tickets/{ref}", "/v1/tickets/{ref}", expect=200)
        assert got["id"] == tid and h["etag"] == '"1"'

    # list, with filters and paging
    _, _, page = call(node, contract, "GET", "/v1/tickets", "/v1/tickets", expect=200)
    assert {x["id"] for x in page["items"]} == {tid, appeal["id"]} and page["next"] is None
    _, _, page = call(node, contract, "GET", "/v1/tickets?limit=1", "/v1/tickets", expect=200)
    assert len(page["items"]) == 1 and page["next"]
    _, _, page2 = call(node, contract, "GET", f"/v1/tickets?limit=1&cursor={page['next']}", "/v1/tickets", expect=200)
    assert page2["items"][0]["id"] != page["items"][0]["id"]
    _, _, page = call(node, contract, "GET", "/v1/tickets?status=NEW&updatedSince=2020-01-01T00:00:00Z",
                      "/v1/tickets", expect=200)
    assert [x["id"] for x in page["items"]] == [tid]
    _, _, page = call(node, contract, "GET", "/v1/tickets?dueBefore=4102444800000", "/v1/tickets", expect=200)
    assert {x["id"] for x in page["items"]} == {tid, appeal["id"]}

    # patch: register, take into work, defer (a consultation may be deferred)
    _, h, t = call(node, contract, "PATCH", f"/v1/tickets/{tid}", "/v1/tickets/{ref}", expect=200,
                   headers={"If-Match": '"1"', **actor}, body={"status": "REGISTERED", "assignee": "ivanova"})
    assert t["status"] == "REGISTERED" and t["version"] == 2 and h["etag"] == '"2"' and t["registeredAt"]
    _, h, t = call(node, contract, "PATCH", f"/v1/tickets/{number}", "/v1/tickets/{ref}", expect=200,
                   headers={"Content-Type": "application/merge-patch+json"},
                   body={"status": "DEFERRED", "assignee": None, "priority": "high"})
    assert t["status"] == "DEFERRED" and t["assignee"] is None and t["deadlines"]["callbackBy"]
    # a patch that changes nothing: 200, same version
    _, h, same = call(node, contract, "PATCH", f"/v1/tickets/{tid}", "/v1/tickets/{ref}", expect=200,
                      body={"priority": "high"})
    assert same["version"] == t["version"] and h["etag"] == f'"{t["version"]}"'
    # the appeal's answer deadline, extended once
    _, _, a = call(node, contract, "PATCH", f"/v1/tickets/{appeal['id']}", "/v1/tickets/{ref}", expect=200,
                   body={"extendAnswerByDays": 30})
    assert a["deadlines"]["extensionDays"] == 30

    # notes
    _, _, n = call(node, contract, "POST", f"/v1/tickets/{tid}/notes", "/v1/tickets/{ref}/notes", expect=201,
                   headers=actor, body={"text": "Перезвонить после 14:00", "visibility": "shared"})
    assert n["author"] == "ivanova" and n["role"] == "supervisor" and n["ticketId"] == tid
    call(node, contract, "POST", f"/v1/tickets/{number}/notes", "/v1/tickets/{ref}/notes", expect=201,
         body={"text": "внутренняя заметка"})
    _, _, notes = call(node, contract, "GET", f"/v1/tickets/{tid}/notes", "/v1/tickets/{ref}/notes", expect=200)
    assert [x["visibility"] for x in notes["items"]] == ["shared", "internal"]
    # the default token (op-test, supervisor and ops): the role recorded is the one that allowed the note
    assert notes["items"][1]["author"] == "op-test" and notes["items"][1]["role"] == "supervisor"

    # history names who acted
    _, _, hist = call(node, contract, "GET", f"/v1/tickets/{tid}/history", "/v1/tickets/{ref}/history", expect=200)
    fields = [e["field"] for e in hist["items"]]
    assert fields[0] == "ticket" and "status" in fields and "note" in fields and "deadlines.callbackBy" in fields
    reg = next(e for e in hist["items"] if e["field"] == "status" and e["new"] == "REGISTERED")
    assert (reg["actor"], reg["role"], reg["old"]) == ("ivanova", "supervisor", "NEW")

    # change feed, health, metrics
    _, _, feed = call(node, contract, "GET", "/v1/changes", "/v1/changes", expect=200)
    assert feed["next"] == feed["lastSequence"] and {c["id"] for c in feed["changes"]} == {tid, appeal["id"]}
    _, _, feed = call(node, contract, "GET", "/v1/changes?since=1&limit=1", "/v1/changes", expect=200)
    assert len(feed["changes"]) == 1 and feed["next"] == feed["changes"][0]["seq"]
    _, _, health = call(node, contract, "GET", "/v1/health", "/v1/health", expect=200)
    assert health["store"]["tickets"] == 2 and health["conflicts"] == 0 and health["organisation"] == "38"
    # without a token, or with one lacking ops: liveness only
    _, _, live = call(node, contract, "GET", "/v1/health", "/v1/health", expect=200, authorize=False)
    assert live == {"status": "ok", "node": node.node_id, "organisation": "38"}
    _, _, live = call(node, contract, "GET", "/v1/health", "/v1/health", expect=200,
                      headers=node.auth("petrova", roles=("operator",)))
    assert live == {"status": "ok", "node": node.node_id, "organisation": "38"}
    _, _, metrics = call(node, contract, "GET", "/metrics", "/metrics", expect=200)
    assert b"ekc_http_requests_total" in metrics
    call(node, contract, "GET", "/openapi.yaml", "/openapi.yaml", expect=200)
    call(node, contract, "GET", "/openapi.yaml", "/openapi.yaml", expect=200, authorize=False)


def test_error_responses_match_the_document(node, contract):
    t = node.create()  # phone: REGISTERED consultation
    tid = t["id"]
    ticket = "/v1/tickets/{ref}"

    # 400: unknown field, wrong type, malformed JSON, empty body, bad query, bad headers
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=400, body={**NEW_TICKET, "urgent": True})
    assert e["error"] == {"code": "unknown_field", "message": e["error"]["message"], "field": "urgent"}
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=400,
                   body={**NEW_TICKET, "citizen": {"ref": "CIT-1", "inn": "7701"}})
    assert (e["error"]["code"], e["error"]["field"]) == ("unknown_field", "citizen.inn")
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=400, body={**NEW_TICKET, "topic": 5})
    assert (e["error"]["code"], e["error"]["field"]) == ("invalid_type", "topic")
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=400, raw=b"{not json")
    assert e["error"]["code"] == "malformed_json"
    _, _, e = call(node, contract, "POST", f"/v1/tickets/{tid}/notes", "/v1/tickets/{ref}/notes", expect=400,
                   raw=b"", headers={"Content-Type": "application/json"})
    assert e["error"]["code"] == "empty_body"
    _, _, e = call(node, contract, "POST", f"/v1/tickets/{tid}/notes", "/v1/tickets/{ref}/notes", expect=400,
                   raw='{"text": "a", "text": "b"}'.encode(), headers={"Content-Type": "application/json"})
    assert (e["error"]["code"], e["error"]["field"]) == ("duplicate_field", "text")
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=400, body={"priority": "low", "x": 1})
    assert (e["error"]["code"], e["error"]["field"]) == ("unknown_field", "x")
    _, _, e = call(node, contract, "GET", "/v1/tickets?sort=asc", "/v1/tickets", expect=400)
    assert (e["error"]["code"], e["error"]["field"]) == ("unknown_parameter", "sort")
    _, _, e = call(node, contract, "GET", "/v1/tickets?limit=501", "/v1/tickets", expect=400)
    assert e["error"]["code"] == "invalid_parameter"
    _, _, e = call(node, contract, "GET", "/v1/tickets?cursor=zz", "/v1/tickets", expect=400)
    assert e["error"]["code"] == "invalid_cursor"
    _, _, e = call(node, contract, "GET", "/v1/changes?since=-1", "/v1/changes", expect=400)
    assert e["error"]["code"] == "invalid_parameter"
    # the old identity headers are ignored: the actor is the token's subject
    _, _, made = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=201, body=NEW_TICKET,
                      headers={"X-EKC-Actor": "a b", "X-EKC-Role": "!"})
    _, _, hist = call(node, contract, "GET", f"/v1/tickets/{made['id']}/history", "/v1/tickets/{ref}/history",
                      expect=200)
    assert (hist["items"][0]["actor"], hist["items"][0]["role"]) == ("op-test", "supervisor")
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=400, body={"priority": "low"},
                   headers={"If-Match": "v1"})
    assert (e["error"]["code"], e["error"]["field"]) == ("invalid_header", "If-Match")

    # 401: no token, a garbled one (on a public operation too), a bearer of another scheme
    _, h, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=401, body=NEW_TICKET,
                   authorize=False)
    assert (e["error"]["code"], e["error"]["field"]) == ("token_missing", "Authorization")
    assert h["www-authenticate"] == 'Bearer realm="ekc"'
    _, h, e = call(node, contract, "GET", f"/v1/tickets/{tid}", ticket, expect=401,
                   headers={"Authorization": "Bearer garbled"})
    assert (e["error"]["code"], e["error"]["field"]) == ("token_malformed", "Authorization")
    assert h["www-authenticate"].startswith('Bearer realm="ekc", error="invalid_token"')
    _, _, e = call(node, contract, "GET", "/v1/health", "/v1/health", expect=401,
                   headers={"Authorization": "Bearer garbled"})
    assert e["error"]["code"] == "token_malformed"
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=401, body={"priority": "low"},
                   headers={"Authorization": "Basic b3A6cHc="})
    assert e["error"]["code"] == "token_malformed"

    # 403: an operator assigning someone else (the route's action allows the patch, what it does does not),
    # an operator at the metrics, ops at the tickets
    operator = node.auth("petrova", roles=("operator",))
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=403,
                   body={"assignee": "ivanova"}, headers=operator)
    assert e["error"] == {"code": "forbidden", "message": e["error"]["message"], "field": None,
                          "action": "ticket.assign", "roles": "supervisor"}
    other = node.create()  # taking a ticket herself is an edit (tid stays at version 1 for the 412 below)
    _, _, t2 = call(node, contract, "PATCH", f"/v1/tickets/{other['id']}", ticket, expect=200,
                    body={"assignee": "petrova"}, headers=operator)
    assert t2["assignee"] == "petrova"
    _, _, e = call(node, contract, "GET", "/metrics", "/metrics", expect=403, headers=operator)
    assert (e["error"]["code"], e["error"]["action"], e["error"]["roles"]) == ("forbidden", "metrics.read", "ops")
    _, _, e = call(node, contract, "GET", "/v1/tickets", "/v1/tickets", expect=403,
                   headers=node.auth("ops-1", roles=("ops",)))
    assert (e["error"]["action"], e["error"]["roles"]) == ("tickets.list", "operator,supervisor")

    # Host and Origin, on every path: 403 origin_not_allowed, 421 host_not_served, 400 host_required
    _, _, e = call(node, contract, "GET", "/v1/tickets", "/v1/tickets", expect=403,
                   headers={"Origin": "https://evil.example"})
    assert (e["error"]["code"], e["error"]["field"]) == ("origin_not_allowed", "Origin")
    status, h, e = raw_http(node, b"GET /v1/health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert status == 421 and (e["error"]["code"], e["error"]["field"]) == ("host_not_served", "Host")
    check_component(contract, "MisdirectedRequest", status, h, e)
    status, h, e = raw_http(node, b"GET /v1/tickets HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status == 400 and (e["error"]["code"], e["error"]["field"]) == ("host_required", "Host")
    contract.check("/v1/tickets", "GET", status, h, e)

    # 404: no such ticket, not a ticket reference
    for ref in ("38-2026-999999", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "not-a-ref"):
        _, _, e = call(node, contract, "GET", f"/v1/tickets/{ref}", ticket, expect=404)
        assert e["error"]["code"] == "not_found"
    call(node, contract, "PATCH", "/v1/tickets/38-2026-999999", ticket, expect=404, body={"priority": "low"})
    call(node, contract, "GET", "/v1/tickets/38-2026-999999/notes", "/v1/tickets/{ref}/notes", expect=404)
    call(node, contract, "POST", "/v1/tickets/38-2026-999999/notes", "/v1/tickets/{ref}/notes", expect=404,
         body={"text": "x"})
    call(node, contract, "GET", "/v1/tickets/38-2026-999999/history", "/v1/tickets/{ref}/history", expect=404)

    # 409: a transition the lifecycle forbids, one that needs a workflow, an immutable field
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=409, body={"status": "NEW"})
    assert e["error"]["code"] == "transition_not_allowed"
    assert (e["error"]["currentStatus"], e["error"]["attemptedStatus"]) == ("REGISTERED", "NEW")
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=409, body={"status": "MERGED"})
    assert e["error"]["code"] == "transition_needs_workflow"
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=409, body={"subject": "другое"})
    assert (e["error"]["code"], e["error"]["field"]) == ("immutable_field", "subject")
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=409, body={"extendAnswerByDays": 5})
    assert e["error"]["code"] == "extension_not_applicable"
    appeal = node.create(legalRegime="appeal-59fz")
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{appeal['id']}", ticket, expect=409,
                   body={"status": "DEFERRED"})
    assert e["error"]["code"] == "deferral_not_allowed"
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{appeal['id']}", ticket, expect=409,
                   body={"status": "CLOSED"})
    assert e["error"]["code"] == "appeal_needs_answer"

    # 412: stale If-Match
    call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=200, body={"priority": "urgent"},
         headers={"If-Match": '"1"'})
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=412, body={"priority": "low"},
                   headers={"If-Match": '"1"'})
    assert (e["error"]["code"], e["error"]["field"], e["error"]["currentVersion"]) == ("version_mismatch", "If-Match", "2")

    # 413: more than 128 KiB, refused as soon as Content-Length says so
    for method, path, template in (("POST", "/v1/tickets", "/v1/tickets"),
                                   ("PATCH", f"/v1/tickets/{tid}", ticket),
                                   ("POST", f"/v1/tickets/{tid}/notes", "/v1/tickets/{ref}/notes")):
        status, h, e = raw_http(node, (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       f"Content-Type: application/json\r\nContent-Length: {128 * 1024 + 1}\r\n\r\n").encode())
        assert status == 413
        contract.check(template, method, status, h, e)
        assert e["error"]["code"] == "body_too_large"
    # ... and a body of exactly 128 KiB is read (and refused for its content, not its size)
    big = json.dumps({**NEW_TICKET, "statement": ""})
    big = big.replace('"statement": ""', '"statement": "' + "x" * (128 * 1024 - len(big)) + '"')
    assert len(big.encode()) == 128 * 1024
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=422, raw=big.encode(),
                   headers={"Content-Type": "application/json"})
    assert e["error"]["field"] == "statement"

    # 415: not JSON
    for method, path, template in (("POST", "/v1/tickets", "/v1/tickets"),
                                   ("PATCH", f"/v1/tickets/{tid}", ticket),
                                   ("POST", f"/v1/tickets/{tid}/notes", "/v1/tickets/{ref}/notes")):
        _, _, e = call(node, contract, method, path, template, expect=415, raw=b"text=hello",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (e["error"]["code"], e["error"]["field"]) == ("unsupported_media_type", "Content-Type")

    # 422: missing field, bad enum value, broken rules
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=422,
                   body={k: v for k, v in NEW_TICKET.items() if k != "subject"})
    assert (e["error"]["code"], e["error"]["field"]) == ("missing_field", "subject")
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=422, body={**NEW_TICKET, "channel": "fax"})
    assert (e["error"]["code"], e["error"]["field"]) == ("invalid_value", "channel")
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=422,
                   body={**NEW_TICKET, "citizen": {"ref": "CIT-1", "snils": "112-233-445 96"}})
    assert (e["error"]["code"], e["error"]["field"]) == ("invalid_value", "citizen.snils")
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=422,
                   body={**NEW_TICKET, "channel": "messenger", "citizen": {"ref": "CIT-1"}})
    assert (e["error"]["code"], e["error"]["field"]) == ("personal_data_not_allowed", "citizen")
    _, _, e = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=422,
                   body={**NEW_TICKET, "receivedAt": "2020-01-01T00:00:00Z"})
    assert e["error"]["field"] == "receivedAt"
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=422, body={})
    assert e["error"]["field"] == "body"
    _, _, e = call(node, contract, "PATCH", f"/v1/tickets/{tid}", ticket, expect=422, body={"topic": "Not A Code"})
    assert e["error"]["field"] == "topic"
    _, _, e = call(node, contract, "POST", f"/v1/tickets/{tid}/notes", "/v1/tickets/{ref}/notes", expect=422,
                   body={"text": "   "})
    assert e["error"]["field"] == "text"

    # 405 is not an operation of the document, but its body is the declared error shape
    status, h, e = node.request("DELETE", f"/v1/tickets/{tid}")
    assert status == 405
    check_component(contract, "MethodNotAllowed", status, h, e)
    assert e["error"]["allow"] == "GET, PATCH"
    assert {k.lower(): v for k, v in h.items()}.get("allow") == "GET, PATCH", "405 without an Allow header (RFC 9110)"

    # The node is still up after all of that.
    call(node, contract, "GET", "/v1/health", "/v1/health", expect=200)


def test_personal_data_responses_match_the_document(node, contract):
    """Unmasking one ticket with a reason, an export, and the access log an auditor reads."""
    ticket = "/v1/tickets/{ref}"
    name, snils, phone = "Кузнецова Ольга Ивановна", "11223344595", "+79001112233"
    t = node.create(citizen={"ref": "CIT-PD-1", "name": name, "snils": snils, "phone": phone})
    bare = node.create()  # no citizen: nothing to disclose
    masked = {"ref": "CIT-PD-1", "name": "К*** О*** И***", "snils": "***-***-445 95", "phone": "+7 *** ***-**-33"}
    full = {"ref": "CIT-PD-1", "name": name, "snils": "112-233-445 95", "phone": phone}
    reason = quote("Гражданка просит подтвердить данные")  # as it travels in a query
    operator = node.auth("op-ivanova", roles=("operator",))
    auditor = node.auth("aud-petrov", roles=("auditor",))
    base = f"/v1/tickets/{t['id']}"

    _, _, got = call(node, contract, "GET", base, ticket, expect=200, headers=operator)
    assert got["citizen"] == masked

    # 400: reason missing or too short, a field that cannot be unmasked, reason without unmask,
    # control characters, an unknown parameter; 403: a role without the ticket
    for query, code, field in (("unmask=name", "reason_required", "reason"),
                               ("unmask=name&reason=x", "reason_required", "reason"),
                               (f"unmask=ref&reason={reason}", "invalid_parameter", "unmask"),
                               (f"unmask=name,inn&reason={reason}", "invalid_parameter", "unmask"),
                               (f"reason={reason}", "invalid_parameter", "unmask"),
                               ("unmask=name&reason=%D0%BF%D1%80%D0%BE%D1%88%D1%83%07%07", "invalid_parameter", "reason"),
                               (f"unmask=name&reason={reason}&why=1", "unknown_parameter", "why")):
        _, _, e = call(node, contract, "GET", f"{base}?{query}", ticket, expect=400, headers=operator)
        assert (e["error"]["code"], e["error"]["field"]) == (code, field), (query, e)
    _, _, e = call(node, contract, "GET", f"/v1/tickets/{t['id']}?unmask=name&reason={reason}&unmask=snils", ticket,
                   expect=400, headers=operator)
    assert (e["error"]["code"], e["error"]["field"]) == ("duplicate_parameter", "unmask")
    _, _, e = call(node, contract, "GET", f"{base}?unmask=name&reason={reason}", ticket, expect=403, headers=auditor)
    assert (e["error"]["code"], e["error"]["action"], e["error"]["roles"]) == ("forbidden", "ticket.read",
                                                                                "operator,supervisor")
    call(node, contract, "GET", f"/v1/tickets/38-2026-999999?unmask=name&reason={reason}", ticket, expect=404,
         headers=operator)

    # 200: in full, by id and by number; a ticket with nothing to disclose comes back masked (no entry)
    _, h, got = call(node, contract, "GET", f"{base}?unmask=name,snils,phone&reason={reason}", ticket, expect=200,
                     headers=operator)
    assert got["citizen"] == full and h["etag"] == '"1"'
    _, _, got = call(node, contract, "GET", f"/v1/tickets/{t['number']}?unmask=phone&reason={reason}", ticket,
                     expect=200)
    assert got["citizen"] == {**masked, "phone": phone}
    _, _, got = call(node, contract, "GET", f"/v1/tickets/{bare['id']}?unmask=name&reason={reason}", ticket,
                     expect=200, headers=operator)
    assert got["citizen"] is None

    # exports: an operator may not (403); the supervisor's refusals (400, 422) and the export itself
    export = {"tickets": [t["number"], bare["id"], "38-2001-000001"], "fields": ["name", "snils"],
              "reason": "Запрос прокуратуры № 12/7"}
    _, _, e = call(node, contract, "POST", "/v1/exports", "/v1/exports", expect=403, body=export, headers=operator)
    assert (e["error"]["code"], e["error"]["action"], e["error"]["roles"]) == ("forbidden", "personal_data.export",
                                                                                "supervisor")
    for body, status, code, field in (({**export, "reason": " "}, 400, "reason_required", "reason"),
                                      ({k: v for k, v in export.items() if k != "reason"}, 400, "reason_required", "reason"),
                                      ({**export, "fields": ["ref"]}, 422, "invalid_value", "fields"),
                                      ({**export, "format": "csv"}, 400, "unknown_field", "format"),
                                      ({**export, "tickets": "38-2026-000001"}, 400, "invalid_type", "tickets"),
                                      ({**export, "tickets": []}, 422, "missing_field", "tickets"),
                                      ({**export, "tickets": [t["id"]] * 501}, 422, "invalid_value", "tickets")):
        _, _, e = call(node, contract, "POST", "/v1/exports", "/v1/exports", expect=status, body=body)
        assert (e["error"]["code"], e["error"]["field"]) == (code, field), (body, e)
    call(node, contract, "POST", "/v1/exports", "/v1/exports", expect=415, raw=b"tickets=1",
         headers={"Content-Type": "application/x-www-form-urlencoded"})
    _, _, out = call(node, contract, "POST", "/v1/exports", "/v1/exports", expect=200, body=export)
    assert [i["id"] for i in out["items"]] == [t["id"], bare["id"]] and out["missing"] == ["38-2001-000001"]
    assert out["items"][0]["citizen"] == {**full, "phone": masked["phone"]} and out["items"][1]["citizen"] is None
    _, _, out = call(node, contract, "POST", "/v1/exports", "/v1/exports", expect=200,
                     body={"tickets": [t["id"]], "reason": "Запрос суда № 3"})
    assert out["items"][0]["citizen"] == full and out["missing"] == []

    # the access log, as an auditor: every disclosure above, in order, and intact
    _, _, page = call(node, contract, "GET", "/v1/audit/access", "/v1/audit/access", expect=200, headers=auditor)
    log = page["items"]
    assert [(e["subject"], e["role"], e["action"], e["ticketId"], e["fields"]) for e in log] == [
        ("op-ivanova", "operator", "ticket.unmask", t["id"], ["name", "snils", "phone"]),
        ("op-test", "supervisor", "ticket.unmask", t["id"], ["phone"]),
        ("op-test", "supervisor", "ticket.export", t["id"], ["name", "snils"]),
        ("op-test", "supervisor", "ticket.export", t["id"], ["name", "snils", "phone"])]
    assert [e["sequence"] for e in log] == [1, 2, 3, 4] and page["next"] is None
    assert log[0]["reason"] == "Гражданка просит подтвердить данные" and log[0]["route"] == "GET /v1/tickets/{ref}"
    assert log[2]["route"] == "POST /v1/exports" and log[0]["remote"].startswith("127.0.0.1:")
    _, _, page = call(node, contract, "GET", "/v1/audit/access?after=1&limit=2&subject=op-test", "/v1/audit/access",
                      expect=200, headers=auditor)
    assert [e["sequence"] for e in page["items"]] == [2, 3] and page["next"] == "3"
    _, _, page = call(node, contract, "GET", f"/v1/audit/access?ticket={bare['id']}&since=2020-01-01T00:00:00Z"
                      "&until=4102444800000", "/v1/audit/access", expect=200, headers=auditor)
    assert page == {"items": [], "next": None}
    for query, code, field in (("limit=0", "invalid_parameter", "limit"), ("after=-1", "invalid_parameter", "after"),
                               ("since=yesterday", "invalid_parameter", "since"), ("actor=x", "unknown_parameter", "actor")):
        _, _, e = call(node, contract, "GET", f"/v1/audit/access?{query}", "/v1/audit/access", expect=400,
                       headers=auditor)
        assert (e["error"]["code"], e["error"]["field"]) == (code, field), (query, e)
    _, _, v = call(node, contract, "GET", "/v1/audit/verify", "/v1/audit/verify", expect=200, headers=auditor)
    assert v == {"intact": True, "entries": 4, "head": 4, "headHash": log[-1]["hash"]}

    # only an auditor reads the log (the default token is supervisor and ops); no token is 401
    for path in ("/v1/audit/access", "/v1/audit/verify"):
        _, _, e = call(node, contract, "GET", path, path, expect=403)
        assert (e["error"]["code"], e["error"]["action"], e["error"]["roles"]) == ("forbidden", "audit.read", "auditor")
        call(node, contract, "GET", path, path, expect=403, headers=operator)
        call(node, contract, "GET", path, path, expect=401, authorize=False)
    call(node, contract, "POST", "/v1/exports", "/v1/exports", expect=401, body=export, authorize=False)


def test_received_at_far_in_the_past_is_refused_not_a_crash(node, contract):
    """receivedAt as epoch milliseconds near Int64.min: the document says 422 (out of range).

    TicketDraft.validate computes `now - receivedAt` unchecked (Ticket.swift), which traps
    on overflow and takes the whole node down.
    """
    for value in ("-9223372036854775808", "-9000000000000000000"):
        try:
            status, h, e = node.request("POST", "/v1/tickets", {**NEW_TICKET, "receivedAt": value})
        except OSError as err:  # the connection died with the node
            status, h, e = None, {}, repr(err)
        if status is None:
            try:
                node.proc.wait(10)  # the Swift runtime prints a backtrace before the process ends
            except subprocess.TimeoutExpired:
                pass
            log = node.log_path.read_text(errors="replace")
            at = log.find(" crashed:")
            crash = log[log.rfind("\n", 0, at) + 1:][:1200] if at >= 0 else log[-1500:]
            pytest.fail(f"POST /v1/tickets with receivedAt={value}: no answer ({e}); the node crashed:\n{crash}")
        assert status == 422, (status, e)
        contract.check("/v1/tickets", "POST", status, h, e)
        assert e["error"]["field"] == "receivedAt"


def test_digest_responses_match_the_document(node, contract):
    """A node without peers: its organisation's digest at every level, bad levels, and a
    repair with nobody to ask (the federation tests in test_digests.py compare replicas)."""
    t = node.create()
    status, h, top = node.request("GET", "/v1/digest")
    assert status == 200 and top["records"] == 1 and top["scope"] == top["organisation"], top
    contract.check("/v1/digest", "GET", status, h, top)
    rng = top["ranges"][0]["range"]
    status, h, level = node.request("GET", f"/v1/digest?range={rng}")
    contract.check("/v1/digest", "GET", status, h, level)
    status, h, leaves = node.request("GET", f"/v1/digest?bucket={level['buckets'][0]['bucket']}")
    contract.check("/v1/digest", "GET", status, h, leaves)
    assert [e["id"] for e in leaves["entries"]] == [t["id"]] and leaves["entries"][0]["kind"] == "ticket"
    for q in ("range=256", "bucket=-1", "scope=", "range=1&bucket=1", "depth=2"):
        status, h, e = node.request("GET", f"/v1/digest?{q}")
        assert status == 400, (q, status, e)
        contract.check("/v1/digest", "GET", status, h, e)
    for body, code in (({"peer": "irk-main"}, 422), ({}, 422), ({"peer": 7}, 400), ({"peer": "x", "more": 1}, 400)):
        status, h, e = node.request("POST", "/v1/digest/repair", body)
        assert status in (400, 422), (body, status, e)
        contract.check("/v1/digest/repair", "POST", status, h, e)


# --------------------------------------------------------------------------- (c) schemathesis

ASSERTED_CHECKS = {
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
}


def test_schemathesis_finds_no_server_errors_or_schema_violations(node, tmp_path):
    pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")
    st = shutil.which("st") or shutil.which("schemathesis")
    if st is None:
        cand = Path(sys.executable).with_name("st")
        st = str(cand) if cand.exists() else None
    if st is None:
        pytest.skip("schemathesis is importable but its `st` command is not on PATH")
    from tokens import token

    report = tmp_path / "st-report"
    cmd = [st, "--no-color", "run", f"{node.url}/openapi.yaml",
           # supervisor and ops reach every operation but the access log's; auditor reaches those
           "-H", "Authorization: Bearer " + token("38", "op-schema", ("supervisor", "ops", "auditor")),
           "--checks", "all",
           "--max-examples", os.environ.get("EKC_ST_MAX_EXAMPLES", "30"),
           "--max-time", os.environ.get("EKC_ST_MAX_TIME", "90"),
           "--seed", os.environ.get("EKC_ST_SEED", "20261122"),
           "--request-timeout", "10",
           "--workers", "1",
           "--generation-database", "none",
           "--report", "json,ndjson", "--report-dir", str(report)]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    elapsed = time.time() - started
    out = proc.stdout + proc.stderr
    print(f"schemathesis ran {elapsed:.0f}s, exit {proc.returncode}\n" + out[-6000:])

    ndjson = list(report.glob("*.ndjson"))
    run_json = list(report.glob("*.json"))
    assert ndjson and run_json, f"schemathesis wrote no report (exit {proc.returncode}):\n{out[-3000:]}"
    summary = json.loads(run_json[0].read_text() or "{}")
    assert summary.get("operations", {}).get("tested", 0) >= 10, summary.get("operations")

    failures = {}  # check name -> [message]
    for line in ndjson[0].read_text().splitlines():
        event = json.loads(line)
        (kind, payload), = event.items()
        if kind != "ScenarioFinished":
            continue
        for results in payload.get("recorder", {}).get("checks", {}).values():
            for r in results:
                if r.get("status") == "failure":
                    f = (r.get("failure_info") or {}).get("failure") or {}
                    failures.setdefault(r["name"], []).append(
                        f"{f.get('code')} {f.get('operation')}: {f.get('title')}: {str(f.get('message'))[:400]}")

    informational = {k: v for k, v in failures.items() if k not in ASSERTED_CHECKS}
    if informational:
        print("schemathesis findings not asserted here:\n" + "\n".join(
            f"  {k}: {len(v)}  e.g. {v[0]}" for k, v in sorted(informational.items())))

    alive = node.proc.poll() is None
    assert alive, f"the node died under schemathesis:\n{node.log_path.read_text()[-3000:]}"
    errors = summary.get("errors") or []
    assert not errors, f"schemathesis hit errors (network errors: the node crashed or hung?): {errors}"
    asserted = {k: v for k, v in failures.items() if k in ASSERTED_CHECKS}
    assert not asserted, "schemathesis found contract violations:\n" + "\n".join(
        f"{k}:\n  " + "\n  ".join(sorted(set(v))[:10]) for k, v in sorted(asserted.items()))


def test_transfer_responses_match_the_document(make_node, tmp_path, contract):
    topology = {"organisations": [{"id": "38", "kind": "region"}, {"id": "pension", "kind": "fund", "numbering": "pf"}],
                "nodes": [{"id": "irk-main", "organisation": "38", "role": "regional-centre"},
                          {"id": "pension-1", "organisation": "pension", "role": "fund"}]}
    (tmp_path / "topology.json").write_text(json.dumps(topology))
    node = make_node("irk-main", extra=["--config", str(tmp_path / "topology.json")]).start()
    _, _, t = call(node, contract, "POST", "/v1/tickets", "/v1/tickets", expect=201,
                   body=dict(NEW_TICKET, channel="phone"))
    send = {"to": "pension", "kind": "REDIRECT", "reason": {"code": "pension-recalc", "text": "Перерасчёт пенсии"},
            "scope": ["ref", "name"]}
    path = f"/v1/tickets/{t['id']}/transfers"
    _, h, tr = call(node, contract, "POST", path, "/v1/tickets/{ref}/transfers", expect=201, body=send)
    assert h["location"] == f"/v1/transfers/{tr['id']}"
    call(node, contract, "POST", path, "/v1/tickets/{ref}/transfers", expect=409, body=send)
    call(node, contract, "POST", path, "/v1/tickets/{ref}/transfers", expect=422, body=dict(send, to="38"))
    call(node, contract, "GET", path, "/v1/tickets/{ref}/transfers", expect=200)
    call(node, contract, "GET", "/v1/transfers?direction=out&limit=1", "/v1/transfers", expect=200)
    call(node, contract, "GET", "/v1/transfers?overdue=maybe", "/v1/transfers", expect=400)
    call(node, contract, "GET", f"/v1/transfers/{tr['id']}", "/v1/transfers/{id}", expect=200)
    call(node, contract, "GET", "/v1/transfers/nope", "/v1/transfers/{id}", expect=404)
    call(node, contract, "POST", f"/v1/transfers/{tr['id']}/accept", "/v1/transfers/{id}/accept", expect=403)
    call(node, contract, "POST", f"/v1/transfers/{tr['id']}/cancel", "/v1/transfers/{id}/cancel", expect=200)
    _, _, err = call(node, contract, "POST", f"/v1/transfers/{tr['id']}/cancel", "/v1/transfers/{id}/cancel", expect=409)
    assert err["error"]["currentState"] == "CANCELLED"
