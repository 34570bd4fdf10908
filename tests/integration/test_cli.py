"""The `ekc` CLI against a live node, and `ekc store stats` / mdb_stat on its data."""
import json
import os
import re
import time

import pytest

from conftest import EKC, all_changes, ekc, free_port, run
from tokens import token

DATABASES = ["meta", "records", "children", "feed", "idx_conflicts", "checkpoints", "served", "tickets", "numbers",
             "counters", "idx_status", "idx_assignee", "idx_updated", "idx_deadline", "transfers", "idx_transfer_ticket",
             "idx_transfer_inbox", "idx_transfer_outbox", "scope_feed", "purged", "access_log", "digest_leaves",
             "digest_buckets", "digest_damaged", "purge_held", "purged_through", "admission_held"]


def cli(node, *args, actor="op-cli"):
    """`ekc ARGS --node URL` signed in as `actor` (EKC_TOKEN: the token itself)."""
    return ekc(*args, "--node", node.url, env={"EKC_TOKEN": token(node.org, actor)})


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def table_value(out: str, key: str) -> str:
    m = re.search(rf"^{re.escape(key)}\s+(.*)$", out, re.M)
    assert m, f"no '{key}' row in:\n{out}"
    return m.group(1).strip()


def create(node, *extra):
    out = ok(cli(node, "ticket", "create", "--topic", "child-benefits", "--subject", "Единое пособие",
                 "--statement", "Когда будет решение?", *extra, "--json"))
    return json.loads(out)


def test_create_prints_table_and_json(node):
    out = ok(cli(node, "ticket", "create", "--topic", "child-benefits", "--subject", "Единое пособие",
                 "--statement", "Когда будет решение?", "--measure", "unified-allowance", "--priority", "high"))
    number = table_value(out, "number")
    assert re.fullmatch(r"38-\d{4}-000001", number), out
    assert table_value(out, "status") == "REGISTERED"
    assert table_value(out, "priority") == "high"
    assert table_value(out, "support measure") == "unified-allowance"
    s, _, t = node.request("GET", f"/v1/tickets/{number}")
    assert s == 200 and t["id"] == table_value(out, "id")

    out = ok(cli(node, "ticket", "create", "--channel", "web", "--topic", "pension", "--subject", "Пенсия",
                 "--statement", "Вопрос", "--regime", "appeal-59fz", "--citizen-ref", "CIT-CLI-1", "--json"))
    t = json.loads(out)
    assert t["status"] == "NEW" and t["legalRegime"] == "appeal-59fz" and t["citizen"]["ref"] == "CIT-CLI-1"
    assert t["number"].endswith("-000002") and t["version"] == 1
    s, _, same = node.request("GET", f"/v1/tickets/{t['id']}")
    assert same == t


def test_create_refused_shows_api_error(node):
    r = cli(node, "ticket", "create", "--channel", "fax", "--topic", "x", "--subject", "s", "--statement", "t")
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert "422" in err and "invalid_value" in err and "channel" in err, err
    assert node.request("GET", "/v1/health")[2]["store"]["tickets"] == 0


def test_create_with_citizen_details_needs_the_reference(node):
    # A name or phone without the registry reference is refused before anything is sent.
    r = cli(node, "ticket", "create", "--topic", "x", "--subject", "s", "--statement", "t", "--citizen-name", "Иванова")
    assert r.returncode != 0 and "--citizen-ref" in r.stdout + r.stderr, r
    assert node.request("GET", "/v1/health")[2]["store"]["tickets"] == 0
    # With it, the details reach the ticket; a malformed phone is the API's 422, naming the field.
    r = cli(node, "ticket", "create", "--json", "--topic", "x", "--subject", "s", "--statement", "t",
            "--citizen-ref", "CIT-1", "--citizen-name", "Иванова", "--citizen-phone", "+79001234567")
    assert r.returncode == 0, r
    t = json.loads(r.stdout)
    assert t["citizen"]["name"] == "И***" and t["citizen"]["phone"].endswith("67") and "*" in t["citizen"]["phone"]
    r = cli(node, "ticket", "create", "--topic", "x", "--subject", "s", "--statement", "t",
            "--citizen-ref", "CIT-2", "--citizen-phone", "8900")
    assert r.returncode != 0 and "citizen.phone" in r.stdout + r.stderr, r


def test_status_assign_note_show(node):
    t = create(node)
    number = t["number"]
    out = ok(cli(node, "ticket", "status", number, "in_work"))
    assert table_value(out, "status") == "IN_WORK"
    assert table_value(out, "version") == "2"
    out = ok(cli(node, "ticket", "assign", number, "op-petrova"))
    assert table_value(out, "assignee") == "op-petrova"
    out = ok(cli(node, "ticket", "note", number, "Перезвонить после проверки"))
    assert re.match(r"note [0-9A-Z]{26} added", out), out

    # a forbidden transition: IN_WORK → REGISTERED
    r = cli(node, "ticket", "status", number, "REGISTERED")
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert "transition_not_allowed" in err and "409" in err, err
    assert "IN_WORK" in err and "REGISTERED" in err
    # a stale --if-match
    r = cli(node, "ticket", "status", number, "WAITING", "--if-match", "1")
    assert r.returncode != 0 and "version_mismatch" in r.stdout + r.stderr
    s, _, now = node.request("GET", f"/v1/tickets/{number}")
    assert now["status"] == "IN_WORK" and now["version"] == 3

    out = ok(cli(node, "ticket", "show", number))
    assert table_value(out, "number") == number
    assert table_value(out, "status") == "IN_WORK"
    assert table_value(out, "assignee") == "op-petrova"
    assert "Перезвонить после проверки" in out            # the note
    assert re.search(r"^NOTE AT\s+AUTHOR\s+VISIBILITY\s+TEXT", out, re.M)
    assert re.search(r"^AT\s+ACTOR\s+NODE\s+FIELD\s+CHANGE", out, re.M)
    assert re.search(r"op-cli\s+irk-test\s+status\s+REGISTERED → IN_WORK", out), out
    assert re.search(r"op-cli\s+irk-test\s+assignee\s+- → op-petrova", out), out
    assert re.search(r"op-cli\s+irk-test\s+note\s+", out), out

    shown = json.loads(ok(cli(node, "ticket", "show", t["id"], "--json")))
    assert shown == now

    out = ok(cli(node, "ticket", "assign", number, "--clear"))
    assert table_value(out, "assignee") == "-"
    r = cli(node, "ticket", "assign", number)
    assert r.returncode != 0 and "--clear" in r.stdout + r.stderr


def test_show_unknown_ticket(node):
    r = cli(node, "ticket", "show", "38-2026-999999")
    assert r.returncode != 0
    assert "404" in r.stdout + r.stderr and "not_found" in r.stdout + r.stderr


def test_list(node):
    a = create(node)
    b = create(node)
    create(node, "--channel", "web")
    ok(cli(node, "ticket", "status", a["number"], "IN_WORK"))
    out = ok(cli(node, "ticket", "list"))
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NUMBER", "STATUS", "PRIORITY", "ASSIGNEE", "TOPIC", "DUE", "SUBJECT"]
    assert len(lines) == 4
    assert any(l.startswith(a["number"]) and "IN_WORK" in l for l in lines)
    page = json.loads(ok(cli(node, "ticket", "list", "--status", "IN_WORK", "--json")))
    assert [t["id"] for t in page["items"]] == [a["id"]] and page["next"] is None
    page = json.loads(ok(cli(node, "ticket", "list", "--limit", "2", "--json")))
    assert len(page["items"]) == 2 and page["next"]
    out = ok(cli(node, "ticket", "list", "--limit", "2"))
    assert f"more: --cursor {page['next']}" in out
    page2 = json.loads(ok(cli(node, "ticket", "list", "--limit", "2", "--cursor", page["next"], "--json")))
    assert len(page2["items"]) == 1 and page2["next"] is None
    assert {t["id"] for t in page["items"] + page2["items"]} >= {a["id"], b["id"]}
    r = cli(node, "ticket", "list", "--status", "BOGUS")
    assert r.returncode != 0 and "invalid_parameter" in r.stdout + r.stderr


def test_node_from_environment(node):
    t = create(node)
    r = ekc("ticket", "show", t["number"], "--json", env={"EKC_NODE": node.url})
    assert json.loads(ok(r))["id"] == t["id"]


def test_unreachable_node():
    port = free_port()  # nothing listens here
    for url in ("http://127.0.0.1:1", f"http://127.0.0.1:{port}"):
        r = ekc("ticket", "list", "--node", url, timeout=60)
        assert r.returncode != 0
        err = r.stdout + r.stderr
        assert "cannot reach the node" in err and url in err, err


def test_demo_seed(node):
    out = ok(cli(node, "demo", "seed", "--count", "5"))
    assert "created 5 synthetic tickets" in out
    s, _, h = node.request("GET", "/v1/health")
    assert h["store"]["tickets"] == 5
    s, _, page = node.request("GET", "/v1/tickets?limit=50")
    assert len(page["items"]) == 5
    assert len({t["number"] for t in page["items"]}) == 5
    assert all(t["citizen"]["ref"].startswith("CIT-DEMO-") for t in page["items"])


def next_deadline(t):
    """The deadline the idx_deadline index holds for a ticket (Deadlines.next(for:))."""
    d, s = t["deadlines"], t["status"]
    if s == "NEW":
        return d["registerBy"]
    if s == "DEFERRED":
        return d["callbackBy"] or d["answerBy"]
    if s in ("REGISTERED", "IN_WORK", "WAITING", "REOPENED", "TRANSFER_PENDING"):
        return d["answerBy"]
    return None


def store_stats_json(data_dir):
    r = ekc("store", "stats", "--data", data_dir, "--json")
    return json.loads(ok(r))


def test_store_stats_counts_match(node):
    ok(cli(node, "demo", "seed", "--count", "5"))
    t = create(node)
    ok(cli(node, "ticket", "note", t["number"], "ещё заметка"))
    ok(cli(node, "ticket", "note", t["number"], "и ещё одна"))
    ok(cli(node, "ticket", "assign", t["number"], "op-stats"))
    s, _, h = node.request("GET", "/v1/health")
    tickets = h["store"]["tickets"]
    assert tickets == 6
    history_total = sum(len(node.request("GET", f"/v1/tickets/{x['id']}/history")[2]["items"])
                        for x in node.request("GET", "/v1/tickets?limit=500")[2]["items"])
    notes_total = sum(len(node.request("GET", f"/v1/tickets/{x['id']}/notes")[2]["items"])
                      for x in node.request("GET", "/v1/tickets?limit=500")[2]["items"])
    due_total = sum(1 for x in node.request("GET", "/v1/tickets?limit=500")[2]["items"] if next_deadline(x))
    assigned = sum(1 for x in node.request("GET", "/v1/tickets?limit=500")[2]["items"] if x["assignee"])
    assert notes_total >= 2 and assigned >= 1

    out = ok(ekc("store", "stats", "--data", node.data_dir))
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"store {node.data_dir}")
    assert lines[1].split() == ["DATABASE", "ENTRIES", "DEPTH", "PAGES"]
    rows = {l.split()[0]: int(l.split()[1]) for l in lines[2:]}
    assert set(rows) == set(DATABASES), rows
    changes = all_changes(node)[0]
    expected = {"tickets": tickets, "numbers": tickets, "feed": len(changes),
                "idx_status": tickets, "idx_updated": tickets, "idx_assignee": assigned,
                "children": notes_total + history_total, "counters": 1,
                "idx_deadline": due_total, "records": tickets, "idx_conflicts": 0, "checkpoints": 0, "served": 0}
    for db, n in expected.items():
        assert rows[db] == n, (db, rows)

    js = store_stats_json(node.data_dir)
    assert {k: v["entries"] for k, v in js["databases"].items()} == rows
    assert js["path"] == str(node.data_dir)

    # mdb_stat agrees
    r = run(["mdb_stat", "-a", node.data_dir])
    assert r.returncode == 0, r.stderr
    mdb = dict(re.findall(r"^Status of (\S+)\n(?:  .*\n)*?  Entries: (\d+)", r.stdout, re.M))
    for db in DATABASES:
        assert db in mdb, f"mdb_stat does not list {db}:\n{r.stdout}"
        assert int(mdb[db]) == rows[db], (db, mdb[db], rows[db])


def test_mdb_stat_lists_named_databases(node):
    node.create()
    r = run(["mdb_stat", "-a", node.data_dir])
    assert r.returncode == 0, r.stderr
    names = re.findall(r"^Status of (\S+)$", r.stdout, re.M)
    assert set(DATABASES) <= set(names), names
    m = re.search(r"^Status of Main DB\n(?:  .*\n)*?  Entries: (\d+)", r.stdout, re.M)
    assert m and int(m.group(1)) == len(DATABASES)


def test_store_stats_without_store(tmp_path):
    r = ekc("store", "stats", "--data", "/nonexistent")
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert "/nonexistent" in err and "no store" in err and "--data" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = ekc("store", "stats", "--data", empty)
    assert r.returncode != 0 and "no store" in r.stdout + r.stderr


def test_login_saves_a_token_per_organisation_that_the_other_commands_pick(node, tmp_path):
    """`ekc login` signs with the development key the node trusts and saves the token
    (0600) where every command finds it for the node's organisation; a token from a real
    provider is saved with --save-token; bad roles and users are refused before anything."""
    from tokens import DEV_IDP
    tokens = tmp_path / "tokens"
    env = {"EKC_TOKEN_DIR": str(tokens), "EKC_TOKEN": ""}
    r = ekc("login", "--dev-idp", DEV_IDP, "--org", "38", "--user", "op-login", "--role", "operator", env=env)
    assert r.returncode == 0 and "op-login" in r.stdout, r.stderr
    saved = tokens / "38.jwt"
    assert oct(saved.stat().st_mode & 0o777) == "0o600" and oct(tokens.stat().st_mode & 0o777) == "0o700"
    r = ekc("ticket", "create", "--topic", "pension", "--subject", "s", "--statement", "t", "--node", node.url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    hist = node.request("GET", f"/v1/tickets/{json.loads(r.stdout)['id']}/history")[2]["items"]
    assert (hist[0]["actor"], hist[0]["role"]) == ("op-login", "operator")
    # an operator may not assign someone else: the CLI shows the 403 and its rule
    r = ekc("ticket", "assign", json.loads(r.stdout)["id"], "op-other", "--node", node.url, env=env)
    assert r.returncode != 0 and "403 forbidden" in r.stderr and "supervisor" in r.stderr, r.stderr
    # a token saved from elsewhere replaces it (here: a supervisor's, from stdin)
    from tokens import token
    r = run([EKC, "login", "--org", "38", "--save-token", "-"], input=token("38", "sv-saved", ("supervisor",)),
            env={**os.environ, **env})
    assert r.returncode == 0 and saved.read_text().strip() == token("38", "sv-saved", ("supervisor",))
    # refused before anything is written
    for args, said in ((["--user", "op x", "--role", "operator"], "--user"), (["--user", "op", "--role", "root"], "--role root"),
                       (["--user", "op"], "--role"), (["--role", "operator"], "--user")):
        r = ekc("login", "--dev-idp", DEV_IDP, "--org", "38", *args, env=env)
        assert r.returncode != 0 and said in r.stderr, (args, r.stderr)
    # no token for the node's organisation: a message that says how to sign in
    r = ekc("ticket", "list", "--node", node.url, env={"EKC_TOKEN_DIR": str(tmp_path / "none"), "EKC_TOKEN": ""})
    assert r.returncode != 0 and "ekc login --org 38" in r.stderr, r.stderr


@pytest.mark.parametrize("flag,value,rule", [
    ("--anti-entropy-interval", "604801", "0 (only on demand) to 604800 seconds"),
    ("--anti-entropy-interval", "-1", None),
    ("--digest-scrub-interval", "59", "60 to 2592000 seconds"),
    ("--digest-scrub-interval", "2592001", "60 to 2592000 seconds"),
    ("--digest-scrub-interval", "daily", None),
])
def test_node_start_refuses_intervals_out_of_bounds(tmp_path, flag, value, rule):
    r = ekc("node", "start", "--node-id", "irk-flags", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
            f"{flag}={value}", timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and flag in out, out
    if rule:
        assert rule in out, out
    assert not (tmp_path / "data" / "data.mdb").exists(), "a store was created before the flags were checked"


def test_cluster_health_shows_what_a_node_answers_of_extreme_counts_and_does_not_trap(tmp_path):
    """`ekc cluster health` reads each node's /v1/health and /v1/replication: numbers a
    broken or hostile node chose. Overdue counts of 2^63 − 1 and 1 once trapped the CLI,
    which added them; they are shown as the node said them."""
    import http.server
    import threading

    big = 9223372036854775807
    answers = {
        "/v1/health": {"status": "ok", "node": "irk-main", "organisation": "38", "conflicts": big,
                       "store": {"tickets": big, "lastSequence": big},
                       "transfers": {"overdueIncoming": big, "overdueOutgoing": 1}},
        "/v1/replication": {"node": "irk-main", "peers": [
            {"node": "irk-office-1", "connected": True, "lagRecords": big, "appliedSequence": big, "peerSequence": -big,
             "clockOffsetMillis": -big - 1, "rejected": {"records": big, "byReason": {"invalid_value": big}}}]},
    }

    class Node(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(answers.get(self.path.split("?")[0], {})).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        topology = tmp_path / "one.json"
        topology.write_text(json.dumps({
            "organisations": [{"id": "38", "kind": "region"}],
            "nodes": [{"id": "irk-main", "organisation": "38", "role": "regional-centre",
                       "listen": f"127.0.0.1:{server.server_address[1]}"}]}))
        r = ekc("cluster", "health", "--config", str(topology), env={"EKC_TOKEN": token("38", "ops-cli")}, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert "Fatal error" not in r.stderr and r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert f"OVERDUE {big} in, 1 out" in r.stdout, r.stdout


def test_a_wall_clock_offset_file_past_ten_years_is_refused_not_added(make_node, tmp_path):
    """`--wall-clock-offset-file` (fault runs): its number is added to the wall clock on
    every read. Int64.max there once trapped the node at its first clock read; it is
    refused like a garbled file (no offset, a warning), and the node works on."""
    offset = tmp_path / "offset"
    offset.write_text("9223372036854775807\n")
    n = make_node("irk-clock", extra=["--wall-clock-offset-file", str(offset)]).start()
    t = n.create(subject="Часы не сдвинуты")
    received = t["receivedAt"]
    assert received.startswith(time.strftime("%Y-", time.gmtime())), t
    status, _, _ = n.request("GET", "/v1/health")
    assert status == 200 and n.proc.poll() is None
    n.stop()
    log = n.log_path.read_text()
    assert "wall-clock offset file unusable" in log and "garbled, or past ±10 years" in log, log[-3000:]
    assert "Fatal error" not in log


def test_store_stats_names_a_database_whose_page_counts_add_up_past_int(node):
    """`ekc store stats` adds each database's page counts, which the file keeps in the
    database's record and LMDB never checks: counts damaged to add up past 2^63 − 1
    once trapped the CLI. The database is named as damaged, with exit 1."""
    node.create()
    node.stop()
    data = node.data_dir / "data.mdb"
    raw = bytearray(data.read_bytes())
    key = b"tickets"
    pattern = bytes([48, 0, 0, 0, 0x02, 0, len(key), 0]) + key   # main-database node: 48 bytes of MDB_db, F_SUBDATA
    at, patched = raw.find(pattern), 0
    while at >= 0:
        branch = at + len(pattern) + 8                             # MDB_db { pad u32, flags u16, depth u16, branch_pages, ... }
        raw[branch:branch + 8] = (2 ** 63 - 1).to_bytes(8, "little")
        patched += 1
        at = raw.find(pattern, at + 1)
    assert patched >= 1
    data.write_bytes(bytes(raw))
    for extra in ([], ["--json"]):
        r = ekc("store", "stats", "--data", node.data_dir, *extra)
        assert r.returncode == 1 and "database tickets is damaged: its page counts add up past" in r.stderr, (r.returncode, r.stderr)
        assert "Fatal error" not in r.stderr
    # mdb_stat shows what the file says
    r = run(["mdb_stat", "-s", "tickets", node.data_dir])
    assert r.returncode == 0 and "Branch pages: 9223372036854775807" in r.stdout, r.stdout


@pytest.mark.parametrize("count", ["-1", "0", "10001"])
def test_demo_seed_refuses_a_count_out_of_range(count):
    """`0..<count` of a negative --count trapped the CLI before it asked anything."""
    r = ekc("demo", "seed", f"--count={count}", "--node", "http://127.0.0.1:1", timeout=30)
    assert r.returncode != 0 and f"--count {count}: use 1 to 10000" in r.stderr, (r.returncode, r.stderr)
    assert "Fatal error" not in r.stderr


def test_store_verify_holds_on_a_working_store_and_names_what_was_damaged(node):
    """`ekc store verify` checks the store's invariants (issue 18): clean after real work;
    a history event deleted behind the store's back (python-lmdb, as a damaged file or a
    bad tool would) is named with its rule and exit 1; a directory with no store is exit
    2 or a message a human can act on."""
    import lmdb
    ok(cli(node, "demo", "seed", "--count", "5"))
    t = create(node)
    ok(cli(node, "ticket", "note", t["number"], "заметка для проверки"))
    node.stop()
    out = ok(ekc("store", "verify", "--data", node.data_dir))
    assert "every rule holds" in out and "6 tickets" in out, out
    r = ekc("store", "verify", "--data", node.data_dir, "--json")
    report = json.loads(ok(r))
    assert report["clean"] is True and report["violations"] == [] and report["tickets"] == 6, report

    env = lmdb.open(str(node.data_dir), max_dbs=64, subdir=True, readonly=False, map_size=1 << 30)
    children = env.open_db(b"children", create=False)
    with env.begin(write=True, db=children) as txn:
        key = next(k for k, _ in txn.cursor() if k[0] == 1 and k[17] == 2)   # a ticket's history event
        assert txn.delete(key)
    env.close()
    r = ekc("store", "verify", "--data", node.data_dir)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "feed.child: entry " in r.stdout and "1 violations" in r.stdout, r.stdout
    # The node starts on it, and its feed leaves the entry out rather than stopping.
    node.start()
    changes = node.request("GET", "/v1/changes?since=0&limit=100")
    assert changes[0] == 200, changes

    r = ekc("store", "verify", "--data", "/nonexistent")
    assert r.returncode != 0 and "holds no store" in r.stderr, (r.returncode, r.stderr)
    r = ekc("store", "verify", "--config", "/nonexistent.json", "--node-id", "x")
    assert r.returncode != 0 and "cannot read /nonexistent.json" in r.stderr, (r.returncode, r.stderr)
    r = ekc("store", "verify", "--data", node.data_dir, "--limit", "0")
    assert r.returncode != 0 and "--limit must be 1 to 10000" in r.stderr, (r.returncode, r.stderr)
