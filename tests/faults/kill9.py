#!/usr/bin/env python3
"""kill -9 at random moments during a steady load: every acknowledged operation is
present after the restarts, and `mdb_stat` reads every store after every kill.

    python3 tests/faults/kill9.py --kills 100 --seed 7        # make kill9 KILLS=100 SEED=7
    python3 tests/faults/kill9.py --recheck tests/faults/runs/kill9-7   # the checks again on a kept run
    options: --threads 6, --keep (keep the run's files even when it passes),
             --ekc PATH (the node binary; a copy of it is pinned for the run)

The federation (tests/integration/federation.py, real node processes over mutual TLS):
region 38 with two nodes (`irk-main`, `irk-office-1`) and the pension fund (`pension-1`),
every link caught by a proxy (none is ever cut here: only kill -9).

The load: client threads, each with `random.Random(seed * 1000 + i)`, through the
authenticated operator API, every write as an operator of its own (`k{seed}x{op}z`):

* creates on either region node; a ticket is of class E (edited; its transfers are
  INFO_REQUEST or COPY, which leave ownership at the region) or of class R (never edited;
  its transfers are REDIRECTs to the fund), so that every acknowledged edit has exactly
  one writer node (the ticket's home, with If-Match) and nothing else overwrites it;
* edits of assignee / priority / topic / supportMeasure on the home node;
* notes, shared or internal, by the region (home node) and by the fund (on a ticket it
  holds through a live transfer);
* transfers sent from the region to the fund; steps: the fund accepts, rejects,
  completes and returns, the region cancels (on either region node).

Every request is recorded (history.jsonl) with what its acknowledgement said: 2xx =
acknowledged, 4xx or a connection refused before sending = refused, a timeout, reset or
5xx = indeterminate.

The killer plays a schedule drawn from the seed (kills.jsonl): a random node, and a
moment of one of three kinds — `load` (0.2-2.5 s into steady load: commits are going on),
`catchup` (the node restarted by the previous kill, kept down 1-3 s so that its peers
are ahead, killed once it reports a connected link still behind), `inflight` (right after the
node — or, for the fund, any node — acknowledged a transfer or a transfer step). After
SIGKILL it runs `mdb_stat -a -e DIR` (exit 0, every database listed that the store had
before: Main DB's entry count = the databases listed), `mdb_stat -s NAME DIR` for each
database (exit 0), and `mdb_dump -a DIR` (every page readable), then restarts the node.

After the last kill: heal, wait until every link reports connected with lagRecords 0 and
nothing moves for 3 s, then check every acknowledged create, edit, note, transfer and
step on the node that acknowledged it and on every node entitled to it; no transfer's
state on any node earlier in the lifecycle than an acknowledged step of it; every node
agrees on every transfer, the region's two nodes on every ticket; the fund holds a ticket
only while a transfer of it to the fund is live; a SIGTERM stop exits 0; `mdb_stat`
reads every stopped store.

A failure prints the seed and the command to rerun it, and keeps the node logs, stores,
op history and kill schedule in tests/faults/runs/kill9-<seed>/.
"""
import argparse
import http.client as httpclient
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUNS = HERE / "runs"
sys.path.insert(0, str(REPO / "tests" / "integration"))

import conftest  # noqa: E402
import federation  # noqa: E402
import tokens as devtokens  # noqa: E402

REGION, FUND = "38", "pension"
SPECS = [
    {"id": "irk-main", "region": REGION, "peers": ["irk-office-1", "pension-1"]},
    {"id": "irk-office-1", "region": REGION, "peers": ["irk-main", "pension-1"]},
    {"id": "pension-1", "region": FUND, "peers": ["irk-main", "irk-office-1"]},
]
REGION_NODES = ["irk-main", "irk-office-1"]
FUND_NODE = "pension-1"
RANK = {s: i for i, s in enumerate(["SENT", "DELIVERED", "CANCELLED", "REJECTED", "ACCEPTED", "RETURNED", "COMPLETED"])}
LIVE = {"SENT", "DELIVERED", "ACCEPTED", "COMPLETED"}
STEP_STATE = {"accept": "ACCEPTED", "reject": "REJECTED", "complete": "COMPLETED", "return": "RETURNED",
              "cancel": "CANCELLED"}
EDIT_FIELDS = ["assignee", "priority", "topic", "supportMeasure"]
PRIORITIES = ["low", "normal", "high", "urgent"]
REQUEST_TIMEOUT = 5.0
CRASH_MARKERS = ("Fatal error", "Segmentation", "*** Signal", "Backtracing from", "SIGSEGV", "SIGILL", "SIGBUS")


def say(*a):
    print(*a, flush=True)


# --- tokens and HTTP: the fault runs' own (workload.py) --------------------------------------

from workload import NotSent, http, op_token, reader_token  # noqa: E402


def get(node, path, timeout=REQUEST_TIMEOUT):
    """The parsed body of a 200, None for a 404; anything else raises."""
    s, _, b = http(node, "GET", path, timeout=timeout)
    if s == 404:
        return None
    if s != 200:
        raise RuntimeError(f"{node.node_id} GET {path}: {s} {str(b)[:300]}")
    return b


def list_all(node, path, limit=500):
    items, cursor = [], None
    sep = "&" if "?" in path else "?"
    for _ in range(10000):
        page = get(node, f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""), timeout=15)
        items.extend(page["items"])
        cursor = page.get("next")
        if not cursor:
            return items
    raise RuntimeError("listing did not end")


def trim(body, n=300):
    if isinstance(body, (dict, list)):
        s = json.dumps(body, ensure_ascii=False)
    elif isinstance(body, bytes):
        s = body.decode(errors="replace")
    else:
        s = str(body)
    return s[:n]


# --- mdb_stat ------------------------------------------------------------------------------

def mdb_check(data_dir, expected=None, dump=True):
    """Problems (a list of strings, empty when the store reads) and the databases listed.
    `mdb_stat -a -e` must exit 0, list every database of `expected`, and list as many
    databases as Main DB has entries; `mdb_stat -s NAME` must exit 0 for each;
    `mdb_dump -a` (every page of every database) must exit 0."""
    problems = []
    r = subprocess.run(["mdb_stat", "-a", "-e", str(data_dir)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return [f"mdb_stat -a -e exited {r.returncode}: {(r.stderr or r.stdout)[-500:]}"], set()
    names = re.findall(r"^Status of (.+)$", r.stdout, re.M)
    dbs = {n for n in names if n != "Main DB"}
    main = re.search(r"Status of Main DB\n(?:  .*\n)*?  Entries: (\d+)", r.stdout)
    if "Main DB" not in names or not main:
        problems.append("mdb_stat -a lists no Main DB")
    elif int(main.group(1)) != len(dbs):
        problems.append(f"Main DB has {main.group(1)} entries but mdb_stat -a lists {len(dbs)} databases")
    if expected:
        missing = set(expected) - dbs
        if missing:
            problems.append(f"databases missing from mdb_stat -a: {sorted(missing)}")
    for name in sorted(dbs):
        s = subprocess.run(["mdb_stat", "-s", name, str(data_dir)], capture_output=True, text=True, timeout=60)
        if s.returncode != 0 or f"Status of {name}" not in s.stdout:
            problems.append(f"mdb_stat -s {name} exited {s.returncode}: {(s.stderr or s.stdout)[-300:]}")
    if dump:
        d = subprocess.run(["mdb_dump", "-a", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=120)
        if d.returncode != 0:
            problems.append(f"mdb_dump -a exited {d.returncode}: {d.stderr[-300:]}")
    return problems, dbs


# --- the history and the load ----------------------------------------------------------------

class Load:
    WEIGHTS = [("create", 16), ("edit", 30), ("note", 12), ("fund_note", 6), ("transfer", 12), ("step", 16),
               ("cancel", 5)]

    def __init__(self, fed, seed, threads, history_path):
        self.fed = fed
        self.seed = seed
        self.nthreads = threads
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.ops = []
        self._n = 0
        self._hist = open(history_path, "w")
        self.tickets = {}        # id -> {"home", "cls", "number"}
        self.ticket_order = []
        self.transfers = {}      # id -> {"ticket", "kind", "from_node"}
        self.transfer_order = []
        self.active = {}         # ticket -> transfer id we believe live (best effort)
        self.inflight = {n: 0 for n in fed.nodes}    # writes sent and not answered, per node
        self.events = []         # (time, node, kind) of acknowledged transfers / steps
        self.event_cond = threading.Condition(self.lock)
        self.counts = {}
        self.refusals = {}       # "409 transition_not_allowed" / "node down" -> count
        self._threads = []

    def next_op(self):
        with self.lock:
            self._n += 1
            return self._n

    def record(self, op):
        with self.lock:
            self.ops.append(op)
            self.counts[(op["kind"], op["result"])] = self.counts.get((op["kind"], op["result"]), 0) + 1
            if op["result"] == "refused":
                why = f'{op["status"]} {op.get("code") or ""}'.strip() if op.get("status") else "node down"
                self.refusals[why] = self.refusals.get(why, 0) + 1
            if op["result"] == "ok" and op["kind"] in ("transfer", "step"):
                self.events.append((op["t1"], op["node"], op["kind"]))
                self.event_cond.notify_all()

    def close(self):
        """Writes the history (each op complete: the ids its acknowledgement gave are
        filled in after the write returned), in op order."""
        with self.lock:
            for op in sorted(self.ops, key=lambda o: o["op"]):
                self._hist.write(json.dumps(op, ensure_ascii=False, default=str) + "\n")
            self._hist.close()

    def write(self, op, node, method, path, body, headers=None):
        """Sends one write as the op's own operator and records what came back."""
        op.update({"node": node.node_id, "method": method, "path": path, "t0": time.time()})
        token = op_token(node.org, op["actor"])
        with self.lock:
            self.inflight[node.node_id] += 1
        try:
            status, h, b = http(node, method, path, body=body, token=token, headers=headers)
        except NotSent as e:
            op.update({"result": "refused", "status": None, "error": f"not sent: {e}", "t1": time.time()})
            self.record(op)
            time.sleep(0.05)   # the node is down: do not spin
            return None, None
        except (OSError, httpclient.HTTPException) as e:
            op.update({"result": "indeterminate", "status": None, "error": f"{type(e).__name__}: {e}",
                       "t1": time.time()})
            self.record(op)
            return None, None
        finally:
            with self.lock:
                self.inflight[node.node_id] -= 1
        op["t1"] = time.time()
        op["status"] = status
        op["result"] = "ok" if 200 <= status < 300 else ("refused" if 400 <= status < 500 else "indeterminate")
        if op["result"] != "ok" and isinstance(b, dict) and isinstance(b.get("error"), dict):
            op["code"] = b["error"].get("code")
        op["body"] = trim(b)
        self.record(op)
        return status, b

    def pick(self, rng, order, recent=40):
        with self.lock:
            if not order:
                return None
            return rng.choice(order[-recent:]) if rng.random() < 0.75 else rng.choice(order)

    # --- operations ---
    def op_create(self, rng, n, tag):
        node = self.fed[rng.choice(REGION_NODES)]
        cls = "E" if rng.random() < 0.6 else "R"
        body = {"channel": "phone", "topic": f"t{tag}", "supportMeasure": f"m{tag}", "subject": f"S{tag} Единое пособие",
                "statement": f"ST{tag} Когда будет решение?", "priority": rng.choice(PRIORITIES),
                "assignee": f"a{tag}",
                "citizen": {"ref": f"CIT-{tag}", "name": f"Гражданин Ф{tag}", "phone": f"+79{rng.randrange(10**9):09d}"}}
        op = {"op": n, "kind": "create", "actor": f"k{tag}", "cls": cls, "values": body}
        status, b = self.write(op, node, "POST", "/v1/tickets", body)
        if status == 201:
            op.update({"ticket": b["id"], "number": b["number"], "version": b["version"]})
            with self.lock:
                self.tickets[b["id"]] = {"home": node.node_id, "cls": cls, "number": b["number"]}
                self.ticket_order.append(b["id"])

    def op_edit(self, rng, n, tag):
        tid = self.pick(rng, self.ticket_order)
        if tid is None or self.tickets[tid]["cls"] != "E":
            return
        node = self.fed[self.tickets[tid]["home"]]
        try:
            s, h, t = http(node, "GET", f"/v1/tickets/{tid}")
        except (NotSent, OSError, httpclient.HTTPException):
            time.sleep(0.05)
            return
        if s != 200:
            return
        field = rng.choice(EDIT_FIELDS)
        value = {"assignee": f"a{tag}", "priority": rng.choice(PRIORITIES), "topic": f"t{tag}",
                 "supportMeasure": f"m{tag}"}[field]
        op = {"op": n, "kind": "edit", "actor": f"k{tag}", "ticket": tid, "field": field, "value": value,
              "ifMatch": t["version"]}
        status, b = self.write(op, node, "PATCH", f"/v1/tickets/{tid}", {field: value},
                               headers={"If-Match": h.get("etag", f'"{t["version"]}"')})
        if status == 200:
            op["version"] = b["version"]

    def op_note(self, rng, n, tag):
        tid = self.pick(rng, self.ticket_order)
        if tid is None:
            return
        node = self.fed[self.tickets[tid]["home"]]
        vis = rng.choice(["shared", "internal"])
        op = {"op": n, "kind": "note", "actor": f"k{tag}", "ticket": tid, "visibility": vis, "writer": "region",
              "value": f"N{tag} заметка региона"}
        status, b = self.write(op, node, "POST", f"/v1/tickets/{tid}/notes", {"text": op["value"], "visibility": vis})
        if status == 201:
            op["note"] = b["id"]

    def op_fund_note(self, rng, n, tag):
        trid = self.pick(rng, self.transfer_order, recent=20)
        if trid is None:
            return
        fund = self.fed[FUND_NODE]
        try:
            tr = get(fund, f"/v1/transfers/{trid}")
        except (NotSent, OSError, httpclient.HTTPException, RuntimeError):
            time.sleep(0.05)
            return
        if not tr or tr["state"] not in LIVE:
            return
        vis = rng.choice(["shared", "internal"])
        op = {"op": n, "kind": "note", "actor": f"k{tag}", "ticket": tr["ticketId"], "visibility": vis,
              "writer": "fund", "transfer": trid, "value": f"N{tag} заметка фонда"}
        status, b = self.write(op, fund, "POST", f"/v1/tickets/{tr['ticketId']}/notes",
                               {"text": op["value"], "visibility": vis})
        if status == 201:
            op["note"] = b["id"]

    def op_transfer(self, rng, n, tag):
        tid = self.pick(rng, self.ticket_order)
        if tid is None:
            return
        with self.lock:
            if tid in self.active:
                return
        info = self.tickets[tid]
        node = self.fed[info["home"]]
        kind = "REDIRECT" if info["cls"] == "R" else rng.choice(["INFO_REQUEST", "COPY"])
        scope = sorted(rng.sample(["ref", "name", "phone"], rng.randint(0, 2)))
        body = {"to": FUND, "kind": kind, "reason": {"code": "kill9", "text": f"R{tag} вопрос компетенции фонда"},
                "scope": scope}
        op = {"op": n, "kind": "transfer", "actor": f"k{tag}", "ticket": tid, "transferKind": kind, "scope": scope}
        status, b = self.write(op, node, "POST", f"/v1/tickets/{tid}/transfers", body)
        if status == 201:
            op["transfer"] = b["id"]
            with self.lock:
                self.transfers[b["id"]] = {"ticket": tid, "kind": kind, "from_node": node.node_id}
                self.transfer_order.append(b["id"])
                self.active[tid] = b["id"]
        elif status == 409:
            with self.lock:   # another transfer of it is live: leave it to the steps
                self.active.setdefault(tid, None)

    def op_step(self, rng, n, tag):
        trid = self.pick(rng, self.transfer_order, recent=20)
        if trid is None:
            return
        fund = self.fed[FUND_NODE]
        try:
            tr = get(fund, f"/v1/transfers/{trid}")
        except (NotSent, OSError, httpclient.HTTPException, RuntimeError):
            time.sleep(0.05)
            return
        if not tr:
            return
        if tr["state"] == "DELIVERED":
            action = rng.choice(["accept", "accept", "accept", "reject"])
        elif tr["state"] == "ACCEPTED":
            action = rng.choice(["complete", "complete", "return"])
        else:
            if tr["state"] not in LIVE or tr["state"] == "COMPLETED":
                with self.lock:
                    if self.active.get(tr["ticketId"]) in (trid, None):
                        self.active.pop(tr["ticketId"], None)
            return
        self._step(fund, trid, tr["ticketId"], action, n, tag)

    def op_cancel(self, rng, n, tag):
        trid = self.pick(rng, self.transfer_order, recent=10)
        if trid is None:
            return
        node = self.fed[rng.choice(REGION_NODES)]
        try:
            tr = get(node, f"/v1/transfers/{trid}")
        except (NotSent, OSError, httpclient.HTTPException, RuntimeError):
            time.sleep(0.05)
            return
        if not tr or tr["state"] not in ("SENT", "DELIVERED"):
            return
        self._step(node, trid, tr["ticketId"], "cancel", n, tag)

    def _step(self, node, trid, ticket, action, n, tag):
        body = {}
        if action in ("reject", "return"):
            body["reason"] = {"code": "kill9", "text": f"R{tag} не вопрос фонда"}
        if action == "complete":
            body["answer"] = f"A{tag} ответ дан"
        op = {"op": n, "kind": "step", "actor": f"k{tag}", "transfer": trid, "ticket": ticket, "action": action,
              "state": STEP_STATE[action]}
        status, _ = self.write(op, node, "POST", f"/v1/transfers/{trid}/{action}", body)
        if status == 200 and action in ("reject", "return", "cancel", "complete"):
            with self.lock:
                if self.active.get(ticket) == trid and action != "complete":
                    self.active.pop(ticket, None)

    # --- threads ---
    def _client(self, i):
        rng = random.Random(self.seed * 1000 + i)
        kinds = [k for k, w in self.WEIGHTS for _ in range(w)]
        while not self.stop_event.is_set():
            kind = "create" if len(self.ticket_order) < 6 else rng.choice(kinds)
            n = self.next_op()
            tag = f"{self.seed}x{n}z"
            try:
                getattr(self, f"op_{kind}")(rng, n, tag)
            except Exception as e:   # a bug of this script: say so, keep going
                self.record({"op": n, "kind": kind, "result": "harness-error", "error": repr(e), "t1": time.time()})
                time.sleep(0.05)

    def start(self):
        for i in range(self.nthreads):
            t = threading.Thread(target=self._client, args=(i,), name=f"client-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self):
        self.stop_event.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT * 3)

    def wait_event(self, since, node_id=None, timeout=5.0):
        """The first acknowledged transfer or step after `since` (by `node_id` if given)."""
        deadline = time.time() + timeout
        with self.lock:
            while True:
                for e in reversed(self.events):
                    if e[0] <= since:
                        break
                    if node_id is None or e[1] == node_id:
                        return e
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.event_cond.wait(min(left, 0.05))

    def totals(self):
        out = {"ok": 0, "indeterminate": 0, "refused": 0, "harness-error": 0}
        for (_, r), c in self.counts.items():
            out[r] = out.get(r, 0) + c
        return out


# --- the kill schedule ---------------------------------------------------------------------

def make_schedule(seed, kills):
    rng = random.Random(seed * 7919 + 13)
    nodes = [s["id"] for s in SPECS]
    sched = []
    for i in range(kills):
        mode = rng.choices(["load", "catchup", "inflight"], weights=[45, 25, 30])[0]
        if i == 0 and mode == "catchup":
            mode = "load"
        node = sched[-1]["node"] if mode == "catchup" else rng.choice(nodes)
        sched.append({"i": i, "mode": mode, "node": node,
                      "delay": round(rng.uniform(0.2, 2.5) if mode == "load" else
                                     rng.uniform(0.0, 0.6) if mode == "catchup" else rng.uniform(0.0, 0.15), 3),
                      "down": 0.0})
    # A node killed right after its restart should have something to catch up on.
    for prev, cur in zip(sched, sched[1:]):
        if cur["mode"] == "catchup":
            prev["down"] = round(rng.uniform(1.0, 3.0), 3)
    return sched


# --- quiescence -----------------------------------------------------------------------------

def wait_caught_up(fed, timeout=180.0, quiet=3.0):
    """Until every link of every node reports connected with lagRecords 0 and no node's
    sequence or applied position moves for `quiet` seconds. (ok, seconds, detail)."""
    t0 = time.time()
    stable_since, last_sig, detail = None, None, None
    while time.time() - t0 < timeout:
        try:
            reps = {n.node_id: get(n, "/v1/replication", timeout=5) for n in fed.all()}
        except Exception as e:
            detail, stable_since, last_sig = f"replication unreadable: {e}", None, None
            time.sleep(0.5)
            continue
        behind = [(nid, p["node"], p["connected"], p["lagRecords"]) for nid, r in reps.items() for p in r["peers"]
                  if not p["connected"] or p["lagRecords"] != 0]
        # A fund keeps a ticket whose transfer ended until the region says it holds the
        # fund's notes (a held purge): quiet only once none waits.
        try:
            behind += [(n.node_id, "purgesWaiting", w) for n in fed.all()
                       if (w := get(n, "/v1/health", timeout=5)["transfers"]["purgesWaiting"])]
        except Exception as e:
            behind.append(("health unreadable", str(e)))
        missing = [(nid, y) for nid in reps for y in fed.peers_of(nid)
                   if y not in {p["node"] for p in reps[nid]["peers"]}]
        sig = json.dumps({nid: [r["lastSequence"], sorted((p["node"], p["appliedSequence"]) for p in r["peers"])]
                          for nid, r in reps.items()}, sort_keys=True)
        detail = behind or missing or "caught up"
        if behind or missing:
            stable_since = last_sig = None
        elif sig != last_sig:
            stable_since, last_sig = time.time(), sig
        elif time.time() - stable_since >= quiet:
            return True, time.time() - t0, reps
        time.sleep(0.3)
    return False, time.time() - t0, detail


# --- the checks -----------------------------------------------------------------------------

class Checks:
    def __init__(self):
        self.verified = {}
        self.skipped = {}
        self.violations = []

    def ok(self, name, n=1):
        self.verified[name] = self.verified.get(name, 0) + n

    def skip(self, name, why):
        self.skipped[(name, why)] = self.skipped.get((name, why), 0) + 1

    def bad(self, name, **detail):
        self.violations.append({"check": name, **detail})


def final_state(fed, load, workers=8):
    """Every ticket the load wrote to, its notes, and every transfer of them (those whose
    send was indeterminate too, found in the tickets' views), as each node shows them."""
    from concurrent.futures import ThreadPoolExecutor
    ticket_ids = set(load.tickets) | {op["ticket"] for op in load.ops if op.get("ticket")}
    state = {n.node_id: {"tickets": {}, "notes": {}, "transfers": {}} for n in fed.all()}

    def one_ticket(job):
        node, tid = job
        t = get(node, f"/v1/tickets/{tid}", timeout=15)
        notes = list_all(node, f"/v1/tickets/{tid}/notes") if t is not None else None
        return node.node_id, tid, t, notes

    def one_transfer(job):
        node, trid = job
        return node.node_id, trid, get(node, f"/v1/transfers/{trid}", timeout=15)

    with ThreadPoolExecutor(workers) as pool:
        for nid, tid, t, notes in pool.map(one_ticket, [(n, tid) for n in fed.all() for tid in sorted(ticket_ids)]):
            state[nid]["tickets"][tid] = t
            if notes is not None:
                state[nid]["notes"][tid] = notes
        transfer_ids = set(load.transfers)
        for s in state.values():
            for t in s["tickets"].values():
                transfer_ids |= {x["id"] for x in (t or {}).get("transfers", [])}
        for nid, trid, v in pool.map(one_transfer, [(n, trid) for n in fed.all() for trid in sorted(transfer_ids)]):
            state[nid]["transfers"][trid] = v
    return state


def check(fed, load, state):
    c = Checks()
    ops = sorted(load.ops, key=lambda o: o["op"])
    acked = [o for o in ops if o["result"] == "ok"]
    indeterminate = [o for o in ops if o["result"] == "indeterminate"]
    all_transfers = set().union(*(s["transfers"] for s in state.values()))
    tr_final = {trid: {nid: state[nid]["transfers"].get(trid) for nid in state} for trid in all_transfers}
    ticket_of = {trid: next(v["ticketId"] for v in views.values() if v) for trid, views in tr_final.items()
                 if any(views.values())}

    def fund_holds(tid):
        return state[FUND_NODE]["tickets"].get(tid) is not None

    def live_at_end(trid):
        views = [v for v in tr_final.get(trid, {}).values() if v]
        return bool(views) and all(v["state"] in LIVE for v in views)

    def entitled_live(tid):
        """A live transfer of the ticket to the fund at the end (the fund must hold it)."""
        return any(live_at_end(trid) for trid, t in ticket_of.items() if t == tid)

    # creates: on both region nodes, same number and subject; on the fund while a transfer of it is live
    for o in (o for o in acked if o["kind"] == "create"):
        tid = o["ticket"]
        nodes = list(REGION_NODES) + ([FUND_NODE] if entitled_live(tid) else [])
        for nid in nodes:
            t = state[nid]["tickets"].get(tid)
            if t is None:
                c.bad("create", op=o["op"], ticket=tid, node=nid, acknowledgedBy=o["node"], problem="missing")
            elif t["number"] != o["number"] or t["subject"] != o["values"]["subject"]:
                c.bad("create", op=o["op"], ticket=tid, node=nid, problem="differs",
                      got={"number": t["number"], "subject": t["subject"]},
                      want={"number": o["number"], "subject": o["values"]["subject"]})
            else:
                c.ok("create")
        if not entitled_live(tid) and fund_holds(tid):
            mine = [trid for trid, t in ticket_of.items() if t == tid]
            views = [v for trid in mine for v in tr_final[trid].values() if v]
            # Every transfer of it cancelled before the fund acknowledged it (no DELIVERED
            # step anywhere): a node bug found by these runs, told apart by this flag.
            early = bool(views) and all(v["state"] == "CANCELLED" and
                                        not any(x["state"] == "DELIVERED" for x in v["steps"]) for v in views)
            c.bad("scope", ticket=tid, node=FUND_NODE, problem="the fund holds a ticket without a live transfer",
                  cancelledBeforeDelivery=early,
                  transfers={trid: {nid: v and v["state"] for nid, v in tr_final[trid].items()} for trid in mine})
        elif fund_holds(tid):
            c.ok("scope")

    # edits: each field's value is that of the last acknowledged write of it (the create is
    # version 1) or of an indeterminate write of it based on that version or a later one
    writes = {}
    for o in ops:
        if o["kind"] == "create" and o["result"] == "ok":
            for f in EDIT_FIELDS:
                writes.setdefault((o["ticket"], f), []).append({"op": o["op"], "value": o["values"][f], "version": 1,
                                                                 "result": "ok"})
        elif o["kind"] == "edit" and o["result"] in ("ok", "indeterminate"):
            writes.setdefault((o["ticket"], o["field"]), []).append(
                {"op": o["op"], "value": o["value"], "version": o.get("version"), "ifMatch": o["ifMatch"],
                 "result": o["result"]})
    for (tid, field), ws in writes.items():
        oks = [w for w in ws if w["result"] == "ok"]
        if not oks:
            continue   # an indeterminate create
        last = max(oks, key=lambda w: w["version"])
        allowed = {json.dumps(last["value"])}
        allowed |= {json.dumps(w["value"]) for w in ws if w["result"] == "indeterminate" and w["ifMatch"] >= last["version"]}
        edits = [w for w in oks if w["version"] != 1]
        nodes = list(REGION_NODES) + ([FUND_NODE] if fund_holds(tid) else [])
        for nid in nodes:
            t = state[nid]["tickets"].get(tid)
            if t is None:
                continue   # counted by the create check
            got = t.get(field)
            if json.dumps(got) in allowed:
                c.ok("field-value")
                c.ok("edit", len(edits))   # each one's value, or a later acknowledged one, is there
            else:
                c.bad("edit", ticket=tid, field=field, node=nid, got=got, lastAcknowledged=last,
                      allowed=sorted(allowed), acknowledgedEdits=len(edits))

    # notes: on the writer's organisation's nodes; shared ones on the partner while it holds the ticket
    for o in (o for o in acked if o["kind"] == "note"):
        tid, nid_ack = o["ticket"], o["node"]
        if o["writer"] == "region":
            nodes = list(REGION_NODES)
            if o["visibility"] == "shared" and fund_holds(tid):
                nodes.append(FUND_NODE)
        else:
            if not live_at_end(o["transfer"]):
                c.skip("note", "fund note, its transfer ended (the fund purged the ticket)")
                continue
            nodes = [FUND_NODE] + (list(REGION_NODES) if o["visibility"] == "shared" else [])
        for nid in nodes:
            notes = state[nid]["notes"].get(tid)
            if notes is None:
                c.bad("note", op=o["op"], note=o["note"], ticket=tid, node=nid, acknowledgedBy=nid_ack,
                      problem="ticket missing")
            elif not any(n["id"] == o["note"] and n["text"] == o["value"] for n in notes):
                c.bad("note", op=o["op"], note=o["note"], ticket=tid, node=nid, acknowledgedBy=nid_ack,
                      visibility=o["visibility"], problem="note missing")
            else:
                c.ok("note")
        if o["visibility"] == "internal":
            other = [FUND_NODE] if o["writer"] == "region" else list(REGION_NODES)
            for nid in other:
                if any(n["id"] == o["note"] for n in state[nid]["notes"].get(tid) or []):
                    c.bad("scope", op=o["op"], note=o["note"], node=nid, problem="an internal note left its organisation")

    # transfers: on every node; every acknowledged step in its steps (or its conflicts);
    # no state earlier than an acknowledged step; every node the same state and steps
    steps_of = {}
    for o in (o for o in acked if o["kind"] == "step"):
        steps_of.setdefault(o["transfer"], []).append(o)
    for o in (o for o in acked if o["kind"] == "transfer"):
        trid = o["transfer"]
        views = tr_final[trid]
        for nid, v in views.items():
            if v is None:
                c.bad("transfer", op=o["op"], transfer=trid, node=nid, acknowledgedBy=o["node"], problem="missing")
            elif v["ticketId"] != o["ticket"] or v["kind"] != o["transferKind"]:
                c.bad("transfer", op=o["op"], transfer=trid, node=nid, problem="differs", got=trim(v))
            else:
                c.ok("transfer")
        for s in steps_of.get(trid, []):
            for nid, v in views.items():
                if v is None:
                    continue
                listed = [x for x in v["steps"] + v.get("conflicts", []) if x.get("actor") == s["actor"]]
                if not listed:
                    c.bad("step", op=s["op"], transfer=trid, action=s["action"], node=nid, acknowledgedBy=s["node"],
                          problem="acknowledged step missing", state=v["state"],
                          steps=[(x["state"], x["actor"]) for x in v["steps"]])
                elif listed[0]["state"] != s["state"]:
                    c.bad("step", op=s["op"], transfer=trid, node=nid, problem="step differs", got=listed[0])
                else:
                    c.ok("step")
                if RANK[v["state"]] < RANK[s["state"]]:
                    c.bad("transfer-backwards", op=s["op"], transfer=trid, node=nid, state=v["state"],
                          acknowledgedStep=s["state"], acknowledgedBy=s["node"])
                else:
                    c.ok("transfer-not-behind")
    # the region's two nodes show every ticket alike (but the local edit counter `version`), with the same notes
    for tid in sorted(state[REGION_NODES[0]]["tickets"]):
        views = []
        for nid in REGION_NODES:
            t = state[nid]["tickets"].get(tid)
            t = t and {k: v for k, v in t.items() if k != "version"}
            views.append((t, [n["id"] for n in state[nid]["notes"].get(tid) or []]))
        if any(v != views[0] for v in views[1:]):
            a, b = views[0][0] or {}, views[1][0] or {}
            c.bad("replica-agree", ticket=tid, nodes=REGION_NODES,
                  fields=sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)),
                  notes=[len(v[1]) for v in views])
        else:
            c.ok("replica-agree")

    # every transfer (those of indeterminate sends too): on every node, in one state, with one set of steps
    for trid, views in sorted(tr_final.items()):
        sig = {nid: v and (v["state"], sorted(x["id"] for x in v["steps"])) for nid, v in views.items()}
        if len({json.dumps(x) for x in sig.values()}) != 1:
            c.bad("transfer-agree", transfer=trid, views=sig)
        else:
            c.ok("transfer-agree")
    c.counts = {"acknowledged": len(acked), "indeterminate": len(indeterminate)}
    return c


# --- the run --------------------------------------------------------------------------------

class Result:
    def __init__(self):
        self.ok = False
        self.summary = {}
        self.violations = []
        self.kept = None
        self.rerun = None


def pin_binary(ekc, into):
    pinned = Path(into) / "ekc"
    shutil.copy2(ekc, pinned)
    for mod in (conftest, federation, devtokens):
        mod.EKC = pinned
    return pinned


def run(kills=100, seed=1, threads=6, keep=False, ekc=None, quiet=False, rerun_prefix=None):
    """One seeded run. Returns a Result; prints as it goes unless `quiet`."""
    log = (lambda *a: None) if quiet else say
    res = Result()
    res.rerun = (rerun_prefix or "python3 tests/faults/kill9.py") + f" --kills {kills} --seed {seed}"
    t_start = time.time()
    work = Path(tempfile.mkdtemp(prefix=f"ekc-kill9-{seed}-"))
    pinned = pin_binary(Path(ekc) if ekc else REPO / ".build" / "debug" / "ekc", work)
    log(f"kill9: seed {seed}, {kills} kills, {threads} client threads, binary {pinned} (copy), files in {work}")
    schedule = make_schedule(seed, kills)
    kills_log = open(work / "kills.jsonl", "w")
    failures = []            # fatal problems (a crash, a store mdb_stat cannot read, no quiescence)
    fed = federation.Federation(work / "fed", SPECS)
    load = Load(fed, seed, threads, work / "history.jsonl")
    per_node = {n: 0 for n in fed.nodes}
    mode_counts = {"load": 0, "catchup": 0, "inflight": 0}
    kills_with_writes = 0
    catchup_behind = 0       # catch-up kills of a node that still reported lag
    mdb_checked = 0
    baseline = {}
    checks = None
    try:
        fed.start()
        fed.wait_connected(timeout=30)
        for n in fed.all():
            problems, dbs = mdb_check(n.data_dir, dump=False)
            if problems:
                failures.append({"check": "mdb_stat", "node": n.node_id, "when": "at start", "problems": problems})
            baseline[n.node_id] = dbs
        log(f"federation up in {time.time() - t_start:.1f} s; {len(baseline[FUND_NODE])} databases per store")
        load.start()
        time.sleep(2.0)
        last_restart = time.time()
        for k in schedule:
            node = fed[k["node"]]
            # A node that exited on its own is a crash.
            for n in fed.all():
                if n.proc.poll() is not None:
                    failures.append({"check": "crash", "node": n.node_id, "rc": n.proc.returncode,
                                     "before kill": k["i"], "log": n.tail(1500)})
            if failures:
                break
            if k["mode"] == "load":
                time.sleep(max(0.0, last_restart + k["delay"] - time.time()))
                trigger = None
            elif k["mode"] == "catchup":
                # Killed while it pulls what its peers wrote while it was down: as soon as it
                # reports a connected link still behind (or after 3 s), then 0-0.6 s x 1/4.
                trigger, t_wait = {"lagRecords": None}, time.time()
                while time.time() - t_wait < 3.0:
                    try:
                        rep = get(node, "/v1/replication", timeout=1.0)
                    except Exception as e:
                        trigger = {"lagRecords": None, "error": type(e).__name__}
                        continue
                    behind = [p for p in rep["peers"] if p["connected"] and p["lagRecords"] > 0]
                    trigger = {"lagRecords": sum(p["lagRecords"] for p in behind),
                               "linksBehind": len(behind), "afterRestart": round(time.time() - last_restart, 3)}
                    if behind:
                        catchup_behind += 1
                        break
                    time.sleep(0.01)
                time.sleep(k["delay"] / 4)
            else:
                since = time.time()
                ev = load.wait_event(since, None if node.node_id == FUND_NODE else node.node_id, timeout=6.0)
                trigger = ev and {"after": round(time.time() - ev[0], 3), "node": ev[1], "kind": ev[2]}
                time.sleep(k["delay"])
            with load.lock:
                writes_open = load.inflight[node.node_id]
            t_kill = time.time()
            node.proc.send_signal(signal.SIGKILL)
            if node.proc.wait() != -signal.SIGKILL:   # it had exited on its own just before
                failures.append({"check": "crash", "node": node.node_id, "rc": node.proc.returncode,
                                 "kill": k["i"], "log": node.tail(1500)})
            per_node[node.node_id] += 1
            mode_counts[k["mode"]] += 1
            kills_with_writes += writes_open > 0
            problems, dbs = mdb_check(node.data_dir, expected=baseline[node.node_id])
            mdb_checked += 1
            entry = dict(k, at=round(t_kill - t_start, 3), writesInFlight=writes_open, trigger=trigger,
                         mdb=problems or "ok", databases=len(dbs))
            if problems:
                failures.append({"check": "mdb_stat", "node": node.node_id, "kill": k["i"], "problems": problems})
            time.sleep(k["down"])
            try:
                node.start(timeout=60)
            except RuntimeError as e:
                entry["restart"] = str(e)[-1500:]
                failures.append({"check": "restart", "node": node.node_id, "kill": k["i"], "error": str(e)[-3000:]})
            last_restart = time.time()
            entry["restartSeconds"] = round(last_restart - t_kill - k["down"], 3)
            kills_log.write(json.dumps(entry, ensure_ascii=False) + "\n")
            kills_log.flush()
            if failures:
                break
            if not quiet and (k["i"] + 1) % 10 == 0:
                tot = load.totals()
                log(f"  {k['i'] + 1} kills, {time.time() - t_start:.0f} s: ops ok {tot['ok']}, "
                    f"indeterminate {tot['indeterminate']}, refused {tot['refused']}")
        time.sleep(1.0)
        load.stop()
        for n in fed.all():
            if n.proc.poll() is not None:
                failures.append({"check": "crash", "node": n.node_id, "rc": n.proc.returncode, "log": n.tail(1500)})
        if not failures:
            for n in fed.all():
                fed.heal(n.node_id)
            ok, secs, detail = wait_caught_up(fed)
            log(f"caught up: {ok} after {secs:.1f} s")
            if not ok:
                failures.append({"check": "quiescence", "detail": detail})
            else:
                state = final_state(fed, load)
                (work / "final-state.json").write_text(json.dumps(state, ensure_ascii=False, indent=1))
                checks = check(fed, load, state)
                # SIGTERM: exits 0; then mdb_stat on every stopped store.
                for n in fed.all():
                    rc = n.stop(timeout=20)
                    if rc != 0:
                        failures.append({"check": "sigterm", "node": n.node_id, "rc": rc})
                for n in fed.all():
                    problems, _ = mdb_check(n.data_dir, expected=baseline[n.node_id])
                    mdb_checked += 1
                    if problems:
                        failures.append({"check": "mdb_stat", "node": n.node_id, "when": "after the run", "problems": problems})
                    else:
                        checks.ok("mdb_stat-final")
        for n in fed.all():
            text = n.tail(10 ** 9)
            for m in CRASH_MARKERS:
                if m in text:
                    failures.append({"check": "crash", "node": n.node_id, "marker": m})
                    break
    except Exception as e:
        import traceback
        failures.append({"check": "harness", "error": traceback.format_exc()})
    finally:
        load.stop()
        load.close()
        kills_log.close()
        try:
            fed.stop()
        except Exception as e:
            failures.append({"check": "stop", "error": repr(e)})

    tot = load.totals()
    res.violations = failures + (checks.violations if checks else [])
    if tot.get("harness-error"):
        res.violations.append({"check": "harness", "error": f"{tot['harness-error']} harness errors (history.jsonl)"})
    res.summary = {
        "seed": seed, "kills": sum(per_node.values()), "killsPlanned": kills, "seconds": round(time.time() - t_start, 1),
        "killsPerNode": per_node, "killsByMoment": mode_counts, "killsWithWritesInFlight": kills_with_writes,
        "catchupKillsWhileBehind": catchup_behind,
        "ops": {"acknowledged": tot["ok"], "indeterminate": tot["indeterminate"], "refused": tot["refused"]},
        "opsByKind": {f"{k}/{r}": v for (k, r), v in sorted(load.counts.items())},
        "refusals": dict(sorted(load.refusals.items(), key=lambda kv: -kv[1])),
        "mdbStatRuns": mdb_checked,
        "verified": dict(sorted(checks.verified.items())) if checks else {},
        "notChecked": {f"{k}: {why}": v for (k, why), v in checks.skipped.items()} if checks else {},
        "violations": len(res.violations),
    }
    res.ok = not res.violations and sum(per_node.values()) == kills
    if not res.ok or keep:
        dest = RUNS / f"kill9-{seed}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for f in ("history.jsonl", "kills.jsonl", "final-state.json"):
            if (work / f).exists():
                shutil.copy2(work / f, dest / f)
        for p in (work / "fed").glob("*.log"):
            shutil.copy2(p, dest / p.name)
        for p in (work / "fed").glob("topology-*.json"):
            shutil.copy2(p, dest / p.name)
        if (work / "fed" / "data").exists():
            shutil.copytree(work / "fed" / "data", dest / "data")
        (dest / "violations.json").write_text(json.dumps(res.violations, ensure_ascii=False, indent=1, default=str))
        (dest / "summary.json").write_text(json.dumps(res.summary, ensure_ascii=False, indent=1))
        (dest / "rerun.txt").write_text(res.rerun + "\n")
        res.kept = dest
    shutil.rmtree(work, ignore_errors=True)
    return res


def print_summary(res):
    s = res.summary
    say(f"\n== kill9 seed {s['seed']}: {'PASS' if res.ok else 'FAIL'} in {s['seconds']} s")
    say(f"kills: {s['kills']} of {s['killsPlanned']}; per node {s['killsPerNode']}; by moment {s['killsByMoment']}; "
        f"{s['killsWithWritesInFlight']} with a write in flight on the killed node, "
        f"{s['catchupKillsWhileBehind']} catch-up kills while the node reported lag")
    o = s["ops"]
    say(f"ops: acknowledged {o['acknowledged']}, indeterminate {o['indeterminate']}, refused {o['refused']}")
    say("  by kind: " + ", ".join(f"{k} {v}" for k, v in s["opsByKind"].items()))
    say("  refused: " + ", ".join(f"{k} {v}" for k, v in s["refusals"].items()))
    say(f"mdb_stat + mdb_dump runs: {s['mdbStatRuns']}")
    say("verified: " + (", ".join(f"{k} {v}" for k, v in s["verified"].items()) or "nothing (the run stopped early)"))
    for k, v in s["notChecked"].items():
        say(f"not checked: {k}: {v}")
    if res.violations:
        say(f"VIOLATIONS ({len(res.violations)}):")
        for v in res.violations[:30]:
            say("  " + json.dumps(v, ensure_ascii=False, default=str)[:1500])
    if res.kept:
        say(f"files kept in {res.kept.relative_to(REPO) if res.kept.is_relative_to(REPO) else res.kept}")
    if not res.ok:
        say(f"FAILED seed {s['seed']}; rerun: {res.rerun}")


def recheck(directory):
    """The checks again on a kept run's history.jsonl and final-state.json (no nodes)."""
    from types import SimpleNamespace
    d = Path(directory)
    ops = [json.loads(line) for line in open(d / "history.jsonl")]
    state = json.loads((d / "final-state.json").read_text())
    load = SimpleNamespace(ops=ops, tickets={o["ticket"]: {} for o in ops if o["kind"] == "create" and o["result"] == "ok"},
                           transfers={o["transfer"]: {"ticket": o["ticket"]} for o in ops
                                      if o["kind"] == "transfer" and o["result"] == "ok"})
    c = check(None, load, state)
    say("verified: " + ", ".join(f"{k} {v}" for k, v in sorted(c.verified.items())))
    for (k, why), v in c.skipped.items():
        say(f"not checked: {k}: {why}: {v}")
    for v in c.violations[:30]:
        say("  " + json.dumps(v, ensure_ascii=False, default=str)[:1500])
    say(f"{len(c.violations)} violations")
    return 0 if not c.violations else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None, help="default: a random seed, printed")
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="keep the run's files in tests/faults/runs/kill9-SEED/ even if it passes")
    ap.add_argument("--ekc", default=None, help="the node binary (default .build/debug/ekc; a copy is run)")
    ap.add_argument("--recheck", metavar="DIR", help="only the checks, on a kept run (tests/faults/runs/kill9-SEED)")
    a = ap.parse_args(argv)
    if a.recheck:
        return recheck(a.recheck)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 10 ** 6)
    res = run(kills=a.kills, seed=seed, threads=a.threads, keep=a.keep, ekc=a.ekc)
    print_summary(res)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
