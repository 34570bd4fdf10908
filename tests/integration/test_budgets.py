"""Byte budgets of free text (CaseModel `Budget`), counted in UTF-8 bytes, not characters.

Each text field is tried just at its budget (accepted, stored byte for byte) and one byte
over (422 `too_long` naming the field, with `bytes` and `limitBytes`, and nothing written:
the change feed's lastSequence does not move). Texts are Cyrillic (two bytes a letter),
a few characters carrying many bytes of combining marks, and ASCII with one Cyrillic letter
at the end that crosses the budget although the character count is within it. Bodies are
sent as raw UTF-8 (`ensure_ascii=False`) so that a 40,000-byte statement stays far below
the 128 KiB body limit, which has its own test: a note body of 128 KiB + 1 byte is 413.
"""
import json

import pytest

from conftest import Node, curl

SUBJECT, STATEMENT, NOTE, CITIZEN_NAME = 600, 40_000, 20_000, 200
MAX_BODY = 128 * 1024

BASE = {"channel": "phone", "topic": "child-benefits", "subject": "Единое пособие",
        "statement": "Когда будет решение по заявлению?"}


def cyrillic(n: int) -> str:
    """n bytes of UTF-8: Cyrillic letters (2 bytes each), and one ASCII letter if n is odd."""
    return "я" * (n // 2) + ("a" if n % 2 else "")


def combining(n: int) -> str:
    """n bytes in one or two characters: a base letter with many U+0301 (2 bytes each)."""
    base = "e" if n % 2 else "eu"
    return base + "\u0301" * ((n - len(base)) // 2)


def ascii_then_cyrillic(n: int) -> str:
    """n bytes in n - 1 characters: ASCII, and one two-byte Cyrillic letter at the end."""
    return "a" * (n - 2) + "я"


TEXTS = {"cyrillic": cyrillic, "combining": combining, "ascii+cyrillic": ascii_then_cyrillic}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("budgets") / "data").start()
    yield n
    n.stop()


def post(srv, path, body, method="POST"):
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert len(raw) < MAX_BODY, len(raw)
    return srv.request(method, path, raw=raw, headers={"Content-Type": "application/json; charset=utf-8"})


def last_sequence(srv) -> int:
    s, _, page = srv.request("GET", "/v1/changes?since=0&limit=1")
    assert s == 200, page
    return page["lastSequence"]


def check_too_long(status, payload, field, size, limit):
    assert status == 422, (status, payload)
    err = payload["error"]
    assert err["code"] == "too_long", err
    assert err["field"] == field, err
    assert err["bytes"] == size and err["limitBytes"] == limit, err
    assert str(limit) in err["message"], err


def test_texts_have_the_sizes_they_claim():
    for make in TEXTS.values():
        for n in (SUBJECT, SUBJECT + 1, NOTE, NOTE + 1, STATEMENT + 1):
            assert len(make(n).encode()) == n, (make, n)
    assert len(combining(SUBJECT + 1)) == 1 + SUBJECT // 2  # one letter and its marks
    assert len(ascii_then_cyrillic(SUBJECT + 1)) == SUBJECT  # within a 600-character limit


@pytest.mark.parametrize("kind", TEXTS)
@pytest.mark.parametrize("field,limit", [("subject", SUBJECT), ("statement", STATEMENT)])
def test_create_at_and_over_the_budget(srv, field, limit, kind):
    make = TEXTS[kind]
    before = last_sequence(srv)
    s, _, t = post(srv, "/v1/tickets", {**BASE, field: make(limit)})
    assert s == 201, t
    assert t[field] == make(limit)  # stored and returned byte for byte
    assert last_sequence(srv) == before + 1

    before = last_sequence(srv)
    s, _, e = post(srv, "/v1/tickets", {**BASE, field: make(limit + 1)})
    check_too_long(s, e, field, limit + 1, limit)
    assert last_sequence(srv) == before, "a refused create was written"


@pytest.mark.parametrize("kind", TEXTS)
def test_note_at_and_over_the_budget(srv, kind):
    make = TEXTS[kind]
    t = srv.create()
    path = f"/v1/tickets/{t['id']}/notes"
    before = last_sequence(srv)
    s, _, n = post(srv, path, {"text": make(NOTE)})
    assert s == 201, n
    assert n["text"] == make(NOTE)
    assert last_sequence(srv) == before + 1

    before = last_sequence(srv)
    s, _, e = post(srv, path, {"text": make(NOTE + 1), "visibility": "shared"})
    check_too_long(s, e, "text", NOTE + 1, NOTE)
    assert last_sequence(srv) == before, "a refused note was written"
    s, _, notes = srv.request("GET", path)
    assert s == 200 and len(notes["items"]) == 1, notes


@pytest.mark.parametrize("kind", TEXTS)
def test_patch_of_a_new_ticket_at_and_over_the_budget(srv, kind):
    make = TEXTS[kind]
    t = srv.create(channel="web")  # NEW: subject and statement may still change
    assert t["status"] == "NEW"
    for field, limit in (("subject", SUBJECT), ("statement", STATEMENT)):
        before = last_sequence(srv)
        s, _, e = post(srv, f"/v1/tickets/{t['id']}", {field: make(limit + 1)}, method="PATCH")
        check_too_long(s, e, field, limit + 1, limit)
        assert last_sequence(srv) == before, "a refused patch was written"
        s, _, t2 = post(srv, f"/v1/tickets/{t['id']}", {field: make(limit)}, method="PATCH")
        assert s == 200 and t2[field] == make(limit), t2
        assert last_sequence(srv) == before + 1


def test_citizen_name_at_and_over_the_budget(srv):
    before = last_sequence(srv)
    s, _, t = post(srv, "/v1/tickets", {**BASE, "citizen": {"ref": "CIT-B-1", "name": cyrillic(CITIZEN_NAME)}})
    assert s == 201 and t["citizen"]["name"] == "я***", t  # shown masked; stored whole:
    s, _, full = srv.request("GET", f"/v1/tickets/{t['id']}?unmask=name&reason=budget%20check")
    assert s == 200 and full["citizen"]["name"] == cyrillic(CITIZEN_NAME)
    before = last_sequence(srv)
    s, _, e = post(srv, "/v1/tickets", {**BASE, "citizen": {"ref": "CIT-B-1", "name": combining(CITIZEN_NAME + 1)}})
    check_too_long(s, e, "citizen.name", CITIZEN_NAME + 1, CITIZEN_NAME)
    assert last_sequence(srv) == before


def note_body(size: int) -> bytes:
    """A note's JSON body of exactly `size` bytes."""
    empty = b'{"text": ""}'
    raw = b'{"text": "' + b"x" * (size - len(empty)) + b'"}'
    assert len(raw) == size
    return raw


@pytest.mark.parametrize("http", ["--http1.1", "--http2-prior-knowledge"])
def test_note_body_over_128_kib_is_413_and_writes_nothing(srv, tmp_path, http):
    t = srv.create()
    path = f"/v1/tickets/{t['id']}/notes"
    before = last_sequence(srv)
    body = tmp_path / "note.json"
    body.write_bytes(note_body(MAX_BODY + 1))
    r = curl(http, "-H", "Content-Type: application/json", "-H", "Expect:", "--data-binary", f"@{body}",
             "-w", "\n%{http_code}", srv.url + path)
    out, code = r.stdout.rsplit("\n", 1)
    assert code == "413", r.stdout[:300] + r.stderr
    err = json.loads(out)["error"]
    assert err["code"] == "body_too_large" and err["field"] is None, err
    assert last_sequence(srv) == before, "an oversized note was written"

    # exactly 128 KiB is read, and refused for its text's size, not the body's
    s, _, e = srv.request("POST", path, raw=note_body(MAX_BODY), headers={"Content-Type": "application/json"})
    text_bytes = MAX_BODY - len(b'{"text": ""}')
    check_too_long(s, e, "text", text_bytes, NOTE)
    assert last_sequence(srv) == before
    s, _, notes = srv.request("GET", path)
    assert s == 200 and notes["items"] == [], notes
