"""Functional tests of the operator API against a real node (HTTP/1.1, urllib)."""
import re
import time
from datetime import datetime, timedelta, timezone

from conftest import TICKET_REGISTERS, all_changes, list_all

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
DAY_MS = 86_400_000
SNILS = "112-233-445 95"  # synthetic, valid checksum (see test_snils_checksum_of_fixture)


def parse_time(s: str) -> int:
    """RFC 3339 (as the API writes it) → epoch milliseconds."""
    dt = datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def hdr(headers: dict, name: str):
    """A response header by case-insensitive name."""
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def snils_checksum_ok(s: str) -> bool:
    d = [int(c) for c in s if c.isdigit()]
    assert len(d) == 11
    total = sum(d[i] * (9 - i) for i in range(9))
    expected = total % 101
    if expected == 100:
        expected = 0
    return expected == d[9] * 10 + d[10]


def test_snils_checksum_of_fixture():
    assert snils_checksum_ok(SNILS)
    assert not snils_checksum_ok("112-233-445 96")


def test_create_returns_registered_ticket(node):
    body = {"channel": "phone", "topic": "child-benefits", "subject": "Единое пособие",
            "statement": "Когда будет решение?"}
    status, headers, t = node.request("POST", "/v1/tickets", body, headers=node.auth("op-ivanova"))
    assert status == 201, t
    assert ULID.match(t["id"]), t["id"]
    assert len(t["id"]) == 26
    year = datetime.now(timezone(timedelta(hours=8))).year
    assert t["number"] == f"38-{year}-000001"
    assert t["status"] == "REGISTERED"
    assert t["version"] == 1
    assert hdr(headers, "ETag") == '"1"'
    assert hdr(headers, "Location") == f"/v1/tickets/{t['id']}"
    assert t["registeredAt"] is not None
    assert t["originNode"] == t["ownerNode"] == "irk-test"
    assert t["subject"] == "Единое пособие"
    assert t["priority"] == "normal" and t["legalRegime"] == "consultation"
    # the next ticket takes the next number
    t2 = node.create()
    assert t2["number"] == f"38-{year}-000002"
    assert t2["id"] != t["id"]


def test_web_ticket_starts_new_and_registers(node):
    t = node.create(channel="web")
    assert t["status"] == "NEW"
    assert t["registeredAt"] is None
    assert t["deadlines"]["registerBy"] is not None
    # 3 days to register
    assert parse_time(t["deadlines"]["registerBy"]) - parse_time(t["receivedAt"]) == 3 * DAY_MS
    # the statement can still be corrected while NEW
    status, _, t2 = node.request("PATCH", f"/v1/tickets/{t['id']}", {"statement": "Исправленный текст"})
    assert status == 200, t2
    assert t2["statement"] == "Исправленный текст" and t2["version"] == 2
    status, _, t3 = node.request("PATCH", f"/v1/tickets/{t['id']}", {"status": "REGISTERED"})
    assert status == 200, t3
    assert t3["status"] == "REGISTERED" and t3["registeredAt"] is not None and t3["version"] == 3


def test_get_by_id_and_by_number_are_equal(node):
    t = node.create()
    s1, h1, by_id = node.request("GET", f"/v1/tickets/{t['id']}")
    s2, h2, by_number = node.request("GET", f"/v1/tickets/{t['number']}")
    assert s1 == s2 == 200
    assert by_id == by_number == t
    assert hdr(h1, "ETag") == hdr(h2, "ETag") == '"1"'


def test_patch_bumps_version_and_records_history_with_actor(node):
    t = node.create()
    status, headers, t2 = node.request("PATCH", f"/v1/tickets/{t['id']}",
                                       {"status": "IN_WORK", "assignee": "op-petrova"},
                                       headers={**node.auth("op-sidorov"), "If-Match": '"1"'})
    assert status == 200, t2
    assert t2["version"] == 2
    assert hdr(headers, "ETag") == '"2"'
    assert t2["status"] == "IN_WORK" and t2["assignee"] == "op-petrova"
    assert parse_time(t2["updatedAt"]) >= parse_time(t["updatedAt"])

    status, _, hist = node.request("GET", f"/v1/tickets/{t['id']}/history")
    assert status == 200
    events = hist["items"]
    by_field = {e["field"]: e for e in events}
    assert by_field["ticket"]["actor"] == "op-test"  # the token node.create used
    assert "created" in by_field["ticket"]["new"] and t["number"] in by_field["ticket"]["new"]
    assert by_field["status"]["actor"] == "op-sidorov"
    assert by_field["status"]["old"] == "REGISTERED" and by_field["status"]["new"] == "IN_WORK"
    assert by_field["assignee"]["actor"] == "op-sidorov"
    assert by_field["assignee"]["old"] is None and by_field["assignee"]["new"] == "op-petrova"
    assert all(e["node"] == "irk-test" for e in events)
    assert len(events) == 3

    # a patch that changes nothing keeps the version and writes no history
    status, _, t3 = node.request("PATCH", f"/v1/tickets/{t['id']}", {"assignee": "op-petrova"})
    assert status == 200 and t3["version"] == 2
    _, _, hist2 = node.request("GET", f"/v1/tickets/{t['id']}/history")
    assert hist2 == hist

    # clearing the assignee with null
    status, _, t4 = node.request("PATCH", f"/v1/tickets/{t['id']}", {"assignee": None})
    assert status == 200 and t4["assignee"] is None and t4["version"] == 3


def test_concurrent_if_match_only_one_wins(node):
    """30 clients PATCH the same ticket at version 1 at once: exactly one succeeds, the
    others get 412 — also when the edits land in the same group commit."""
    import threading
    t = node.create()
    results = []
    lock = threading.Lock()

    def patch(i):
        r = node.request("PATCH", f"/v1/tickets/{t['id']}", {"priority": ["low", "high", "urgent"][i % 3]},
                         headers={"If-Match": '"1"', **node.auth(f"op-{i}")})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(30)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    codes = sorted(r[0] for r in results)
    assert codes == [200] + [412] * 29, codes
    winner = next(r[2] for r in results if r[0] == 200)
    assert winner["version"] == 2
    for s, _, err in results:
        if s == 412:
            assert str(err["error"]["currentVersion"]) in ("1", "2")
    s, _, now = node.request("GET", f"/v1/tickets/{t['id']}")
    assert now == winner
    _, _, hist = node.request("GET", f"/v1/tickets/{t['id']}/history")
    assert [e["field"] for e in hist["items"]].count("priority") == 1
    # If-Match: * matches any version
    s, _, t3 = node.request("PATCH", f"/v1/tickets/{t['id']}", {"priority": "normal"}, headers={"If-Match": "*"})
    assert s == 200 and t3["version"] == 3


def test_notes(node):
    t = node.create()
    status, _, n1 = node.request("POST", f"/v1/tickets/{t['id']}/notes", {"text": "Перезвонить завтра"},
                                 headers=node.auth("op-a"))
    assert status == 201, n1
    assert n1["ticketId"] == t["id"] and n1["author"] == "op-a" and n1["visibility"] == "internal"
    status, _, n2 = node.request("POST", f"/v1/tickets/{t['number']}/notes",
                                 {"text": "Документы получены", "visibility": "shared"})
    assert status == 201, n2
    status, _, notes = node.request("GET", f"/v1/tickets/{t['id']}/notes")
    assert status == 200
    assert [n["text"] for n in notes["items"]] == ["Перезвонить завтра", "Документы получены"]
    assert [n["visibility"] for n in notes["items"]] == ["internal", "shared"]
    assert notes["items"][0] == n1 and notes["items"][1] == n2
    # notes show in history
    _, _, hist = node.request("GET", f"/v1/tickets/{t['id']}/history")
    assert sum(1 for e in hist["items"] if e["field"] == "note") == 2
    # notes of a ticket without notes
    t2 = node.create()
    assert node.request("GET", f"/v1/tickets/{t2['id']}/notes")[2] == {"items": []}


def test_list_filters(node):
    a = [node.create() for _ in range(3)]
    b = [node.create(channel="web") for _ in range(2)]
    for t in a[:2]:
        s, _, _ = node.request("PATCH", f"/v1/tickets/{t['id']}", {"status": "IN_WORK", "assignee": "op-x"})
        assert s == 200
    s, _, _ = node.request("PATCH", f"/v1/tickets/{a[2]['id']}", {"assignee": "op-y"})
    assert s == 200

    ids = lambda items: sorted(t["id"] for t in items)
    assert ids(list_all(node, "status=IN_WORK")) == sorted(t["id"] for t in a[:2])
    assert ids(list_all(node, "status=NEW")) == sorted(t["id"] for t in b)
    assert ids(list_all(node, "status=REGISTERED")) == [a[2]["id"]]
    assert ids(list_all(node, "assignee=op-x")) == sorted(t["id"] for t in a[:2])
    assert ids(list_all(node, "assignee=op-y")) == [a[2]["id"]]
    assert list_all(node, "assignee=op-nobody") == []
    assert ids(list_all(node, "status=IN_WORK&assignee=op-y")) == []
    assert ids(list_all(node, "status=REGISTERED&assignee=op-y")) == [a[2]["id"]]
    assert len(list_all(node)) == 5
    # every listed item is the full ticket representation, its transfers included
    for t in list_all(node, "status=IN_WORK"):
        assert t == node.request("GET", f"/v1/tickets/{t['id']}")[2]


def test_list_updated_since_and_due_before(node):
    old = node.create()
    time.sleep(0.01)
    new = node.create()
    assert parse_time(new["updatedAt"]) > parse_time(old["updatedAt"])
    got = [t["id"] for t in list_all(node, f"updatedSince={new['updatedAt']}")]
    assert got == [new["id"]]
    got = sorted(t["id"] for t in list_all(node, f"updatedSince={parse_time(old['updatedAt'])}"))
    assert got == sorted([old["id"], new["id"]])

    web = node.create(channel="web")                     # NEW: registerBy = +3 days
    appeal = node.create(legalRegime="appeal-59fz")      # answerBy = +30 days
    now = parse_time(web["receivedAt"])
    due10 = [t["id"] for t in list_all(node, f"dueBefore={now + 10 * DAY_MS}")]
    assert due10 == [web["id"]]
    due40 = sorted(t["id"] for t in list_all(node, f"dueBefore={now + 40 * DAY_MS}"))
    assert due40 == sorted([web["id"], appeal["id"]])   # consultations without a deadline are not due


def test_cursor_pagination_returns_each_ticket_once(node):
    created = {node.create(subject=f"Обращение {i}")["id"] for i in range(25)}
    assert len(created) == 25
    seen, sizes, cursor = [], [], None
    for _ in range(10):
        path = "/v1/tickets?limit=7" + (f"&cursor={cursor}" if cursor else "")
        status, _, page = node.request("GET", path)
        assert status == 200, page
        sizes.append(len(page["items"]))
        seen.extend(t["id"] for t in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert sizes == [7, 7, 7, 4]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == created
    # the same through an index walk (status filter)
    seen2 = [t["id"] for t in list_all(node, "status=REGISTERED", limit=7)]
    assert sorted(seen2) == sorted(created)


def test_changes_feed_order(node):
    t1, t2, t3 = node.create(), node.create(), node.create()
    changes, last = all_changes(node)
    assert [c["id"] for c in changes] == [t1["id"], t2["id"], t3["id"]]
    seqs = [c["seq"] for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert last == seqs[-1]
    assert all(set(c["registers"]) == TICKET_REGISTERS and c["children"] == {"history": 1} for c in changes)
    # editing t1 moves what changed (its priority, with the edit's history event) to the
    # end of the feed; the rest of t1 stays where it was, listed once
    s, _, t1b = node.request("PATCH", f"/v1/tickets/{t1['id']}", {"priority": "high"})
    assert s == 200
    changes2, last2 = all_changes(node)
    assert [c["id"] for c in changes2] == [t1["id"], t2["id"], t3["id"], t1["id"]]
    assert "priority" not in changes2[0]["registers"] and changes2[0]["children"] == {"history": 1}
    assert changes2[-1]["registers"] == ["priority"] and changes2[-1]["children"] == {"history": 1}
    assert last2 > last
    assert changes2[-1]["seq"] == last2 and changes2[-1]["version"] == 2
    # since=X returns only what changed after X
    s, _, page = node.request("GET", f"/v1/changes?since={last}")
    assert s == 200
    assert [c["id"] for c in page["changes"]] == [t1["id"]]
    assert page["next"] == last2 and page["lastSequence"] == last2
    s, _, page = node.request("GET", f"/v1/changes?since={last2}")
    assert page["changes"] == [] and page["next"] == last2
    # limit pages the feed
    s, _, page = node.request("GET", "/v1/changes?since=0&limit=2")
    assert [c["id"] for c in page["changes"]] == [t1["id"], t2["id"]]
    s, _, page = node.request("GET", f"/v1/changes?since={page['next']}&limit=2")
    assert [c["id"] for c in page["changes"]] == [t3["id"], t1["id"]]


def test_health_and_metrics(node):
    for _ in range(3):
        node.create()
    status, _, h = node.request("GET", "/v1/health")
    assert status == 200
    assert h["status"] == "ok" and h["node"] == "irk-test" and h["region"] == "38"
    assert h["store"]["tickets"] == 3 and h["store"]["lastSequence"] == 3
    status, headers, body = node.request("GET", "/metrics")
    assert status == 200
    text = body.decode()
    assert "ekc_http_requests_total" in text
    m = re.search(r'^ekc_http_requests_total\{[^}]*route="create"[^}]*\} (\d+(?:\.\d+)?)$', text, re.M)
    assert m, text
    assert float(m.group(1)) == 3
    m = re.search(r"^ekc_store_tickets(?:\{[^}]*\})? (\d+(?:\.\d+)?)$", text, re.M)
    assert m, text
    assert float(m.group(1)) == 3


def test_openapi_document_is_served(node):
    status, headers, body = node.request("GET", "/openapi.yaml")
    assert status == 200
    assert hdr(headers, "Content-Type") == "application/yaml"
    assert body.startswith(b"openapi:"), f"/openapi.yaml served {len(body)} bytes: {body[:80]!r}"
    assert b"/v1/tickets" in body


def test_appeal_59fz_deadlines_and_single_extension(node):
    t = node.create(legalRegime="appeal-59fz")
    reg = parse_time(t["registeredAt"])
    d = t["deadlines"]
    assert parse_time(d["answerBy"]) - reg == 30 * DAY_MS
    assert parse_time(d["forwardBy"]) - reg == 7 * DAY_MS
    assert d["extensionDays"] == 0

    status, _, t2 = node.request("PATCH", f"/v1/tickets/{t['id']}", {"extendAnswerByDays": 10})
    assert status == 200, t2
    assert parse_time(t2["deadlines"]["answerBy"]) - reg == 40 * DAY_MS
    assert t2["deadlines"]["extensionDays"] == 10 and t2["version"] == 2

    status, _, err = node.request("PATCH", f"/v1/tickets/{t['id']}", {"extendAnswerByDays": 5})
    assert status == 409, err
    assert err["error"]["code"] == "extension_already_used"
    assert err["error"]["field"] == "extendAnswerByDays"
    assert node.request("GET", f"/v1/tickets/{t['id']}")[2] == t2

    # a consultation has no answer deadline to extend
    c = node.create()
    status, _, err = node.request("PATCH", f"/v1/tickets/{c['id']}", {"extendAnswerByDays": 5})
    assert status == 409 and err["error"]["code"] == "extension_not_applicable"
    # an appeal cannot close without an answer
    status, _, err = node.request("PATCH", f"/v1/tickets/{t['id']}", {"status": "CLOSED"})
    assert status == 409 and err["error"]["code"] == "appeal_needs_answer"


def test_snils_and_phone_are_masked(node):
    t = node.create(citizen={"ref": "CIT-TEST-0001", "name": "Тестовый Заявитель", "snils": SNILS,
                             "phone": "+79001234567"})
    c = t["citizen"]
    assert c["snils"].startswith("***-***-")
    assert c["snils"] == "***-***-445 95"
    assert c["phone"] == "+7 *** ***-**-67"
    assert c["ref"] == "CIT-TEST-0001" and c["name"] == "Т*** З***"  # masked too; unmasking: test_access_log.py
    status, _, raw = node.request("GET", f"/v1/tickets/{t['id']}", headers={"Accept": "application/json"})
    assert raw["citizen"] == c
    # the full identifiers appear in no representation
    for path in (f"/v1/tickets/{t['id']}", "/v1/tickets", f"/v1/tickets/{t['id']}/history", "/v1/changes"):
        import urllib.request
        with urllib.request.urlopen(urllib.request.Request(node.url + path, headers=node.auth()), timeout=10) as r:
            text = r.read().decode()
        assert "11223344595" not in text and "112-233-445" not in text and "9001234567" not in text, path


def test_invalid_snils_checksum_refused(node):
    assert not snils_checksum_ok("112-233-445 96")
    status, _, err = node.request("POST", "/v1/tickets", {
        "channel": "phone", "topic": "child-benefits", "subject": "s", "statement": "x",
        "citizen": {"ref": "CIT-1", "snils": "112-233-445 96"}})
    assert status == 422, err
    assert err["error"]["field"] == "citizen.snils"
    assert node.request("GET", "/v1/health")[2]["store"]["tickets"] == 0


def test_messenger_with_citizen_refused(node):
    status, _, err = node.request("POST", "/v1/tickets", {
        "channel": "messenger", "topic": "child-benefits", "subject": "Вопрос", "statement": "Общий вопрос",
        "citizen": {"ref": "CIT-TEST-0002"}})
    assert status == 422, err
    assert err["error"]["code"] == "personal_data_not_allowed"
    assert err["error"]["field"] == "citizen"
    assert node.request("GET", "/v1/health")[2]["store"]["tickets"] == 0
    # a general question through a messenger, without citizen data, is fine
    t = node.create(channel="messenger")
    assert t["status"] == "NEW" and t["citizen"] is None
