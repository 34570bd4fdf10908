"""Transfers through the operator API of a real node of region 38 in a federation that
has a pension fund: sending, the outbox, each refused step with its rule (and nothing
written), cancelling, and a new redirect after the first ended. (Delivery to the fund's
node and the fund's steps need scoped links between organisations; the store tests
cover them.)"""
import json

import pytest

from conftest import all_changes


@pytest.fixture
def region(make_node, tmp_path):
    topology = {
        "organisations": [{"id": "38", "kind": "region"}, {"id": "pension", "kind": "fund", "numbering": "pf"}],
        "nodes": [{"id": "irk-main", "organisation": "38", "role": "regional-centre"},
                  {"id": "pension-1", "organisation": "pension", "role": "fund"}],
    }
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(topology))
    n = make_node("irk-main", extra=["--config", str(path)]).start()
    return n


def registered(node):
    t = node.create()
    status, _, t = node.request("PATCH", f"/v1/tickets/{t['id']}", {"status": "REGISTERED"})
    assert status == 200, t
    return t


def send(node, ticket, **overrides):
    body = {"to": "pension", "kind": "REDIRECT", "reason": {"code": "pension-recalc", "text": "Перерасчёт пенсии"},
            "scope": ["ref", "name"]}
    body.update(overrides)
    return node.request("POST", f"/v1/tickets/{ticket['id']}/transfers", body)


def test_send_list_show_cancel(region):
    t = registered(region)
    status, headers, tr = send(region, t)
    assert status == 201, tr
    assert headers["location"] == f"/v1/transfers/{tr['id']}"
    assert tr["state"] == "SENT" and tr["from"] == "38" and tr["to"] == "pension" and tr["kind"] == "REDIRECT"
    assert tr["scope"] == ["ref", "name"] and tr["overdue"] is False and tr["steps"] == []
    status, _, out = region.request("GET", "/v1/transfers?direction=out")
    assert status == 200 and [x["id"] for x in out["items"]] == [tr["id"]]
    status, _, inbox = region.request("GET", "/v1/transfers?direction=in")
    assert status == 200 and inbox["items"] == []
    status, _, shown = region.request("GET", f"/v1/transfers/{tr['id']}")
    assert status == 200 and shown["id"] == tr["id"]
    status, _, of_ticket = region.request("GET", f"/v1/tickets/{t['id']}/transfers")
    assert status == 200 and [x["id"] for x in of_ticket["items"]] == [tr["id"]]
    status, _, history = region.request("GET", f"/v1/tickets/{t['id']}/history")
    assert any(e["field"] == "transfer" and "REDIRECT to pension" in (e["new"] or "") for e in history["items"])

    status, _, cancelled = region.request("POST", f"/v1/transfers/{tr['id']}/cancel")
    assert status == 200 and cancelled["state"] == "CANCELLED", cancelled
    assert [s["state"] for s in cancelled["steps"]] == ["CANCELLED"]
    # The redirect is over: another may be sent.
    status, _, again = send(region, t)
    assert status == 201, again


DROP = object()


@pytest.mark.parametrize("change, status, code, field", [
    ({"to": "38"}, 422, "invalid_value", "to"),
    ({"to": "mars"}, 422, "invalid_value", "to"),
    ({"to": DROP}, 422, "missing_field", "to"),
    ({"kind": "TELEPORT"}, 422, "invalid_value", "kind"),
    ({"kind": None}, 400, "invalid_type", "kind"),
    ({"reason": DROP}, 422, "missing_field", "reason"),
    ({"reason": {"code": "x"}}, 422, "missing_field", "reason.text"),
    ({"reason": {"code": "x", "text": "я" * 1001}}, 422, "too_long", "reason.text"),
    ({"reason": {"code": "Not A Code", "text": "y"}}, 422, "invalid_value", "reason.code"),
    ({"scope": ["ref", "ref"]}, 422, "invalid_value", "scope"),
    ({"scope": ["passport"]}, 422, "invalid_value", "scope"),
    ({"scope": "ref"}, 400, "invalid_type", "scope"),
    ({"due": "tomorrow"}, 422, "invalid_value", "due"),
    ({"due": "2001-01-01T00:00:00Z"}, 422, "invalid_value", "due"),
    ({"due": "2300-01-01T00:00:00Z"}, 422, "invalid_value", "due"),  # no replica holds a time past 2200
    ({"colour": "red"}, 400, "unknown_field", "colour"),
])
def test_bad_transfer_requests_are_refused_and_write_nothing(region, change, status, code, field):
    t = registered(region)
    before = len(all_changes(region))
    body = {"to": "pension", "kind": "REDIRECT", "reason": {"code": "pension-recalc", "text": "Перерасчёт"}, "scope": ["ref"]}
    for k, v in change.items():
        if v is DROP:
            body.pop(k)
        else:
            body[k] = v
    got, _, err = region.request("POST", f"/v1/tickets/{t['id']}/transfers", body)
    assert got == status, err
    assert err["error"]["code"] == code and err["error"]["field"] == field, err
    assert len(all_changes(region)) == before


def test_lifecycle_refusals_name_the_rule(region):
    t = registered(region)
    _, _, tr = send(region, t)
    before = len(all_changes(region))
    status, _, err = send(region, t)
    assert status == 409 and err["error"]["code"] == "redirect_active" and err["error"]["transfer"] == tr["id"]
    status, _, err = region.request("POST", f"/v1/transfers/{tr['id']}/accept")
    assert status == 403 and err["error"]["code"] == "wrong_side", err
    status, _, err = region.request("POST", f"/v1/transfers/{tr['id']}/reject", {"reason": {"code": "x", "text": "y"}})
    assert status == 403 and err["error"]["code"] == "wrong_side", err
    status, _, err = region.request("POST", "/v1/transfers/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel")
    assert status == 404, err
    status, _, err = region.request("POST", "/v1/transfers/not-an-id/cancel")
    assert status == 404, err
    status, _, err = region.request("POST", f"/v1/transfers/{tr['id']}/cancel", {"answer": 5})
    assert status == 400 and err["error"]["code"] == "invalid_type", err
    assert len(all_changes(region)) == before
    region.request("POST", f"/v1/transfers/{tr['id']}/cancel")
    status, _, err = region.request("POST", f"/v1/transfers/{tr['id']}/cancel")
    assert status == 409 and err["error"]["code"] == "transition_not_allowed" and err["error"]["currentState"] == "CANCELLED"
    status, _, err = region.request("GET", "/v1/transfers?direction=sideways")
    assert status == 400 and err["error"]["field"] == "direction"
    status, _, err = region.request("GET", "/v1/transfers?state=LOST")
    assert status == 400 and err["error"]["field"] == "state"


def test_a_waiting_ticket_is_not_redirected_but_may_ask_for_information(region):
    t = registered(region)
    for status_ in ["IN_WORK", "WAITING"]:
        status, _, t = region.request("PATCH", f"/v1/tickets/{t['id']}", {"status": status_})
        assert status == 200, t
    status, _, err = send(region, t)
    assert status == 422 and err["error"]["field"] == "kind" and "REGISTERED or IN_WORK" in err["error"]["message"], err
    status, _, ok = send(region, t, kind="INFO_REQUEST")
    assert status == 201 and ok["kind"] == "INFO_REQUEST", ok


def test_cli_sends_lists_shows_and_steps(region):
    from conftest import ekc
    t = registered(region)

    def cli(*args):
        return ekc("transfer", *args, "--node", region.url)

    r = cli("send", t["number"], "--to", "pension", "--reason-code", "pension-recalc", "--reason", "Перерасчёт пенсии",
            "--scope", "ref,name", "--json")
    assert r.returncode == 0, r.stderr
    tr = json.loads(r.stdout)
    assert tr["state"] == "SENT" and tr["scope"] == ["ref", "name"]
    r = cli("outbox")
    assert r.returncode == 0 and tr["id"] in r.stdout and "SENT" in r.stdout and "pension" in r.stdout, r.stdout
    r = cli("show", tr["id"])
    assert r.returncode == 0 and "REDIRECT" in r.stdout and "pension-recalc: Перерасчёт пенсии" in r.stdout, r.stdout
    r = cli("accept", tr["id"])
    assert r.returncode == 1 and "wrong_side" in r.stderr, (r.stdout, r.stderr)
    r = cli("reject", tr["id"])
    assert r.returncode != 0 and "--reason-code" in r.stderr, r.stderr
    r = cli("cancel", tr["id"])
    assert r.returncode == 0 and "CANCELLED" in r.stdout, r.stdout + r.stderr
    r = cli("inbox", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["items"] == []
