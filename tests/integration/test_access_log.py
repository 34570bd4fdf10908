"""The personal-data access log (issue 9): citizen data is masked unless a caller
unmasks it with a reason; every disclosure is an entry, committed before the data is
sent, in an append-only hash chain that `ekc audit verify` checks — and that a test
then breaks directly in LMDB (Python's `lmdb`, the node stopped)."""
import json
import struct
import time

import lmdb
import pytest
from urllib.parse import quote

from conftest import ekc
from tokens import token

NAME, SNILS, PHONE = "Кузнецова Ольга Ивановна", "11223344595", "+79001112233"
FULL = (NAME, SNILS, "112-233-445 95", PHONE)
REASON = "Гражданка просит подтвердить данные по телефону"
Q = quote(REASON)  # as it travels in a query


def citizen_ticket(node, ref="CIT-PD-1"):
    return node.create(citizen={"ref": ref, "name": NAME, "snils": SNILS, "phone": PHONE})


def as_(node, user, *roles):
    return node.auth(user, roles=roles)


def entries(node, **filters):
    q = "&".join(f"{k}={v}" for k, v in filters.items())
    s, _, page = node.request("GET", "/v1/audit/access?limit=1000" + (("&" + q) if q else ""),
                              headers=as_(node, "aud-petrov", "auditor"))
    assert s == 200, page
    return page["items"]


def shows_full(payload) -> bool:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return any(v in text for v in FULL)


def test_masked_by_default_and_every_disclosure_is_an_entry(node):
    t = citizen_ticket(node)
    node.request("POST", f"/v1/tickets/{t['id']}/notes", {"text": "Перезвонить"})
    op = as_(node, "op-ivanova", "operator")
    # Every read that is not an explicit disclosure shows the citizen masked, logs nothing.
    for path in (f"/v1/tickets/{t['id']}", f"/v1/tickets/{t['number']}", "/v1/tickets", f"/v1/tickets/{t['id']}/notes",
                 f"/v1/tickets/{t['id']}/history", f"/v1/tickets/{t['id']}/transfers", "/v1/changes?since=0",
                 "/v1/conflicts", "/v1/transfers"):
        s, _, body = node.request("GET", path, headers=op)
        assert s == 200 and not shows_full(body), (path, body)
    shown = node.request("GET", f"/v1/tickets/{t['id']}", headers=op)[2]["citizen"]
    assert shown == {"ref": "CIT-PD-1", "name": "К*** О*** И***", "snils": "***-***-445 95", "phone": "+7 *** ***-**-33"}
    assert entries(node) == []

    # Refusals disclose nothing and log nothing.
    base = f"/v1/tickets/{t['id']}"
    for path, headers, status, code in (
            (base + "?unmask=name", op, 400, "reason_required"),
            (base + "?unmask=name&reason=x", op, 400, "reason_required"),
            (base + "?unmask=inn&reason=" + Q, op, 400, "invalid_parameter"),
            (base + "?unmask=ref&reason=" + Q, op, 400, "invalid_parameter"),
            (base + "?unmask=name&reason=" + Q, as_(node, "ops-duty", "ops"), 403, "forbidden"),
            (base + "?unmask=name&reason=" + Q, as_(node, "aud-petrov", "auditor"), 403, "forbidden"),
            ("/v1/tickets?unmask=name&reason=" + Q, op, 400, "unknown_parameter")):
        s, _, e = node.request("GET", path, headers=headers)
        assert (s, e["error"]["code"]) == (status, code), (path, e)
        assert not shows_full(e)
    assert entries(node) == []

    # One ticket unmasked with a reason: the fields in full, and the entry says all of it.
    s, _, full = node.request("GET", f"{base}?unmask=name,snils,phone&reason={Q}", headers=op)
    assert s == 200 and full["citizen"] == {"ref": "CIT-PD-1", "name": NAME, "snils": "112-233-445 95", "phone": PHONE}
    s, _, part = node.request("GET", f"/v1/tickets/{t['number']}?unmask=phone&reason={Q}",
                              headers=as_(node, "sv-orlova", "supervisor"))
    assert part["citizen"]["phone"] == PHONE and part["citizen"]["name"] == "К*** О*** И***"
    log = entries(node)
    assert [(e["subject"], e["role"], e["action"], e["ticketId"], e["fields"], e["reason"]) for e in log] == [
        ("op-ivanova", "operator", "ticket.unmask", t["id"], ["name", "snils", "phone"], REASON),
        ("sv-orlova", "supervisor", "ticket.unmask", t["id"], ["phone"], REASON)]
    assert all(e["organisation"] == "38" and e["remote"].startswith("127.0.0.1:") and e["at"] for e in log), log
    assert [e["sequence"] for e in log] == [1, 2] and len({e["hash"] for e in log}) == 2

    # An export: supervisors only, one entry per ticket that had something to disclose.
    other = citizen_ticket(node, "CIT-PD-2")
    bare = node.create()
    body = {"tickets": [t["number"], other["id"], bare["id"], "38-2001-000001"], "fields": ["name", "snils"],
            "reason": "Запрос прокуратуры № 12/7"}
    s, _, e = node.request("POST", "/v1/exports", body, headers=op)
    assert (s, e["error"]["code"]) == (403, "forbidden")
    s, _, e = node.request("POST", "/v1/exports", {**body, "reason": ""}, headers=as_(node, "sv-orlova", "supervisor"))
    assert (s, e["error"]["code"]) == (400, "reason_required")
    assert len(entries(node)) == 2
    s, _, out = node.request("POST", "/v1/exports", body, headers=as_(node, "sv-orlova", "supervisor"))
    assert s == 200 and out["missing"] == ["38-2001-000001"]
    assert [i["citizen"]["name"] if i["citizen"] else None for i in out["items"]] == [NAME, NAME, None]
    assert all(i["citizen"]["phone"] == "+7 *** ***-**-33" for i in out["items"][:2])  # not asked for
    log = entries(node)
    assert [(e["action"], e["ticketId"], e["fields"]) for e in log[2:]] == [
        ("ticket.export", t["id"], ["name", "snils"]), ("ticket.export", other["id"], ["name", "snils"])]
    # filters, and who may read the log
    assert [e["sequence"] for e in entries(node, subject="sv-orlova")] == [2, 3, 4]
    assert [e["sequence"] for e in entries(node, ticket=other["id"])] == [4]
    for role in ("operator", "supervisor", "ops"):
        assert node.request("GET", "/v1/audit/access", headers=as_(node, "x", role))[0] == 403


def test_the_cli_unmasks_with_a_reason_and_lists_verifies_and_exports_the_log(node, tmp_path):
    t = citizen_ticket(node)
    op = {"EKC_TOKEN": token("38", "op-cli", ("operator",))}
    aud = {"EKC_TOKEN": token("38", "aud-cli", ("auditor",))}
    r = ekc("ticket", "show", t["number"], "--node", node.url, "--unmask", "name", env=op)
    assert r.returncode != 0 and "--reason" in r.stderr
    r = ekc("ticket", "show", t["number"], "--node", node.url, "--unmask", "name,snils", "--reason", REASON, "--json", env=op)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["citizen"]["name"] == NAME
    r = ekc("audit", "list", "--node", node.url, env=aud)
    assert r.returncode == 0 and "op-cli" in r.stdout and "ticket.unmask" in r.stdout and "name,snils" in r.stdout, r.stdout
    r = ekc("audit", "verify", "--node", node.url, env=aud)
    assert r.returncode == 0 and r.stdout.startswith("access log intact: 1 entries"), r.stdout + r.stderr
    out = tmp_path / "log.jsonl"
    r = ekc("audit", "export", "--node", node.url, "--out", out, env=aud)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["subject"], x["fields"]) for x in lines] == [("op-cli", ["name", "snils"])]
    r = ekc("audit", "list", "--node", node.url, env=op)
    assert r.returncode != 0 and "403" in r.stderr


def _edit_log(data_dir, edit):
    env = lmdb.open(str(data_dir), max_dbs=64, subdir=True, readonly=False, lock=True)
    try:
        db = env.open_db(b"access_log", create=False)
        with env.begin(write=True, db=db) as txn:
            edit(txn)
    finally:
        env.close()


def _key(seq: int) -> bytes:
    return struct.pack(">Q", seq)


@pytest.mark.parametrize("damage, seq, kind", [
    ("alter", 2, "altered"), ("delete", 2, "missing"), ("delete", 3, "head_mismatch")])
def test_verify_names_an_entry_altered_or_removed_in_lmdb(make_node, damage, seq, kind):
    n = make_node().start()
    t = citizen_ticket(n)
    for i in range(3):
        s, _, _ = n.request("GET", f"/v1/tickets/{t['id']}?unmask=name&reason={Q}%20{i}")
        assert s == 200
    r = ekc("audit", "verify", "--data", n.data_dir)
    assert r.returncode == 0 and "3 entries" in r.stdout, r.stdout + r.stderr
    assert n.stop() == 0

    def edit(txn):
        if damage == "delete":
            assert txn.delete(_key(seq))
        else:
            v = bytearray(txn.get(_key(seq)))
            i = v.find(REASON.encode())
            assert i >= 0
            v[i] ^= 0x01  # one bit of the reason
            txn.put(_key(seq), bytes(v))
    _edit_log(n.data_dir, edit)

    r = ekc("audit", "verify", "--data", n.data_dir)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"TAMPERED at entry #{seq} ({kind})" in r.stderr, r.stderr
    n.start()
    s, _, v = n.request("GET", "/v1/audit/verify", headers=as_(n, "aud", "auditor"))
    assert s == 200 and v["intact"] is False and v["problem"]["sequence"] == seq and v["problem"]["kind"] == kind, v


def test_an_unmasked_read_answered_before_kill_9_has_its_entry(make_node):
    n = make_node().start()
    t = citizen_ticket(n)
    seen = []
    for i in range(20):
        s, _, body = n.request("GET", f"/v1/tickets/{t['id']}?unmask=snils&reason={Q}%20%23{i}",
                               headers=as_(n, "op-fast", "operator"))
        assert s == 200 and body["citizen"]["snils"] == "112-233-445 95"
        seen.append(i)
    n.kill9()
    n.start()
    log = entries(n)
    assert [e["reason"] for e in log] == [f"{REASON} #{i}" for i in seen]
    r = ekc("audit", "verify", "--data", n.data_dir)
    assert r.returncode == 0 and "20 entries" in r.stdout
