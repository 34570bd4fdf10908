"""The seeded workload: client threads driving the operator API of every node, and a
monitor sampling every transfer's state on every node.

Every write is recorded with what its acknowledgement said:

* `result: "ok"`    2xx: acknowledged (durably committed on that node);
* `result: "fail"`  the node refused it (4xx, or 507 on a full disk) or could not be reached (connection
                    refused before the request was sent): it did not happen;
* `result: "info"`  timeout, reset after sending, 5xx: indeterminate, it may or may
                    not have happened.

Every written value is unique (`...{seed}x{op}z`, the `z` ends it so that op 12's value
is not a prefix of op 123's), and every write is made as an operator of its own
(`u{seed}x{op}z`), so a value, a history event or a transfer step names its op.
An edit first reads the ticket on the same node and the node's conflict list, sends
`If-Match` with the version read, and records the values of the field's register it
saw (the winner and any competing value): an acknowledged edit supersedes exactly those.
"""
import http.client as httpclient
import json
import random
import socket
import threading
import time

import tokens as devtokens
from cluster import FUNDS, REGIONS

# The register (conflict group) of each editable field and the fields it holds.
REGISTER_OF = {"status": "progress", "assignee": "assignee", "priority": "priority", "topic": "topic",
               "supportMeasure": "topic", "subject": "statement", "statement": "statement",
               "extendAnswerByDays": "progress"}
GROUP = {"progress": ["status"], "assignee": ["assignee"], "priority": ["priority"],
         "topic": ["topic", "supportMeasure"], "statement": ["subject", "statement"]}
NEXT_STATUS = {"NEW": ["REGISTERED"], "REGISTERED": ["IN_WORK", "DEFERRED", "CLOSED"],
               "IN_WORK": ["WAITING", "ANSWERED", "DEFERRED"], "WAITING": ["IN_WORK"],
               "DEFERRED": ["IN_WORK", "ANSWERED", "CLOSED"], "ANSWERED": ["CLOSED", "IN_WORK"],
               "CLOSED": ["REOPENED"], "REOPENED": ["IN_WORK", "ANSWERED"]}
TRANSFER_RANK = {s: i for i, s in enumerate(["SENT", "DELIVERED", "CANCELLED", "REJECTED", "ACCEPTED", "RETURNED", "COMPLETED"])}
LIVE = {"SENT", "DELIVERED", "ACCEPTED", "COMPLETED"}
REQUEST_TIMEOUT = 5.0


# --- tokens ------------------------------------------------------------------------------

_keys = {}
_keys_lock = threading.Lock()



def shown(side):
    """Every value one side of a conflict shows: its register's first field and all its fields."""
    return [side["value"]] + [v for v in (side.get("fields") or {}).values() if v is not None]

def op_token(org: str, user: str, roles=("operator", "supervisor")) -> str:
    """A token valid from 20 minutes ago for 8 hours: a node whose clock jumped by ±10
    minutes still accepts it (a refusal then would be about the clock, not the op)."""
    with _keys_lock:
        if org not in _keys:
            key, kid, _ = devtokens.ensure_keys(org)
            _keys[org] = (key, kid)
        key, kid = _keys[org]
    now = int(time.time())
    c = devtokens.claims(org, user, roles, lifetime=8 * 3600, iat=now - 1200, nbf=now - 1200)
    c["exp"] = now + 8 * 3600
    return devtokens.sign_es256(key, {"alg": "ES256", "typ": "JWT", "kid": kid}, c)


_readers = {}


def reader_token(org: str) -> str:
    if org not in _readers:
        _readers[org] = op_token(org, "fault-reader", ("supervisor", "ops"))
    return _readers[org]


# --- HTTP ----------------------------------------------------------------------------------

class NotSent(Exception):
    """The connection could not be made: the request never reached the node."""


def http(node, method: str, path: str, body=None, token: str = None, headers=None, timeout: float = REQUEST_TIMEOUT):
    """(status, headers, parsed body). Raises NotSent before sending, other OSError /
    HTTPException after (indeterminate)."""
    conn = httpclient.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as e:
            raise NotSent(str(e))
        h = {"Authorization": "Bearer " + (token or reader_token(node.org)), "Host": f"127.0.0.1:{node.port}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        payload = r.read()
        ctype = r.getheader("content-type", "")
        parsed = payload
        if payload and ctype.startswith("application/json"):
            try:
                parsed = json.loads(payload)
            except ValueError:
                pass
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
    finally:
        conn.close()


def get_json(node, path: str, timeout: float = REQUEST_TIMEOUT):
    s, _, b = http(node, "GET", path, timeout=timeout)
    if s != 200:
        raise RuntimeError(f"{node.node_id} GET {path}: {s} {str(b)[:300]}")
    return b


def list_all(node, path: str, key: str = "items", cursor_param: str = "cursor", limit: int = 500, timeout: float = 10.0):
    items, cursor = [], None
    sep = "&" if "?" in path else "?"
    for _ in range(10000):
        q = f"{path}{sep}limit={limit}" + (f"&{cursor_param}={cursor}" if cursor else "")
        page = get_json(node, q, timeout=timeout)
        items.extend(page[key])
        cursor = page.get("next")
        if not cursor:
            return items
    raise RuntimeError("listing did not end")


# --- the history ---------------------------------------------------------------------------

class History:
    def __init__(self, path):
        self.path = path
        self.ops = []
        self._lock = threading.Lock()
        self._n = 0
        self._f = open(path, "w")

    def next_op(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def record(self, op: dict):
        with self._lock:
            self.ops.append(op)
            self._f.write(json.dumps(op, ensure_ascii=False, default=str) + "\n")

    def close(self):
        with self._lock:
            self._f.close()


def trim(body, n: int = 400):
    if isinstance(body, (dict, list)):
        s = json.dumps(body, ensure_ascii=False)
    elif isinstance(body, bytes):
        s = body.decode(errors="replace")
    else:
        s = str(body)
    return s[:n]


# --- the workload --------------------------------------------------------------------------

class Workload:
    """`threads` clients, each with its own Random(seed * 1000 + i)."""

    WEIGHTS = [("create", 12), ("edit", 42), ("note", 18), ("transfer", 8), ("step", 16), ("resolve", 4)]

    def __init__(self, fed, seed: int, history: History, threads: int = 10):
        self.fed = fed
        self.seed = seed
        self.history = history
        self.threads = threads
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.tickets = {}      # id -> {"org", "node", "legal"}
        self.ticket_order = []
        self.transfers = {}    # id -> {"ticket", "from", "to", "kind", "scope"}
        self.transfer_order = []
        self.last_transfer = None   # (time, transfer id, from org, to org)
        self.counts = {}
        self._threads = []

    # --- bookkeeping ---
    def count(self, kind, result):
        with self.lock:
            self.counts[(kind, result)] = self.counts.get((kind, result), 0) + 1

    def nodes_of(self, org):
        return [n for n in self.fed.org_nodes(org)]

    def available(self, nodes):
        return [n for n in nodes if n.available()] or list(nodes)

    def pick_ticket(self, rng):
        with self.lock:
            if not self.ticket_order:
                return None
            # Mostly recent tickets: edits meet each other (and the faults) more often.
            if rng.random() < 0.7:
                tid = rng.choice(self.ticket_order[-60:])
            else:
                tid = rng.choice(self.ticket_order)
            return tid, dict(self.tickets[tid])

    def pick_transfer(self, rng):
        with self.lock:
            if not self.transfer_order:
                return None
            tid = rng.choice(self.transfer_order[-40:]) if rng.random() < 0.8 else rng.choice(self.transfer_order)
            return tid, dict(self.transfers[tid])

    def partners_of(self, ticket_id):
        with self.lock:
            return sorted({t["to"] for t in self.transfers.values() if t["ticket"] == ticket_id})

    # --- one write, recorded ---
    def write(self, op: dict, node, method, path, body, token, headers=None):
        op.update({"node": node.node_id, "org": node.org, "method": method, "path": path, "t0": time.time()})
        try:
            status, h, b = http(node, method, path, body=body, token=token, headers=headers)
        except NotSent as e:
            op.update({"result": "fail", "status": None, "error": f"not sent: {e}", "t1": time.time()})
            self.history.record(op)
            self.count(op["kind"], "fail")
            return None, None
        except (OSError, httpclient.HTTPException) as e:
            op.update({"result": "info", "status": None, "error": f"{type(e).__name__}: {e}", "t1": time.time()})
            self.history.record(op)
            self.count(op["kind"], "info")
            return None, None
        op["t1"] = time.time()
        op["status"] = status
        # 507: the disk was full and the node says nothing of the write was stored.
        op["result"] = "ok" if 200 <= status < 300 else ("fail" if 400 <= status < 500 or status == 507 else "info")
        op["body"] = trim(b)
        self.history.record(op)
        self.count(op["kind"], op["result"])
        return status, b

    # --- operations ---
    def op_create(self, rng, n):
        org = rng.choice(REGIONS)
        node = rng.choice(self.available(self.nodes_of(org)))
        tag = f"{self.seed}x{n}z"
        assisted = rng.random() < 0.6
        legal = "appeal-59fz" if rng.random() < 0.4 else "consultation"
        body = {"channel": "phone" if assisted else "web", "topic": f"t{tag}", "supportMeasure": f"m{tag}",
                "subject": f"S{tag} Единое пособие", "statement": f"ST{tag} Когда будет решение?",
                "priority": rng.choice(["low", "normal", "high", "urgent"]), "legalRegime": legal,
                "citizen": {"ref": f"CIT-{tag}", "name": f"Гражданин Ф{tag}", "snils": "112-233-445 95",
                            "phone": f"+79{rng.randrange(10**9):09d}"}}
        if rng.random() < 0.5:
            body["assignee"] = f"a{tag}"
        op = {"op": n, "kind": "create", "values": body, "actor": f"u{tag}"}
        status, b = self.write(op, node, "POST", "/v1/tickets", body, op_token(node.org, f"u{tag}"))
        if status == 201:
            op["ticket"] = b["id"]
            with self.lock:
                self.tickets[b["id"]] = {"org": node.org, "node": node.node_id, "legal": legal}
                self.ticket_order.append(b["id"])
        return op

    def op_edit(self, rng, n):
        picked = self.pick_ticket(rng)
        if not picked:
            return None
        tid, info = picked
        partners = self.partners_of(tid)
        org = info["org"] if (not partners or rng.random() < 0.7) else rng.choice(partners)
        node = rng.choice(self.available(self.nodes_of(org)))
        tag = f"{self.seed}x{n}z"
        try:
            s, h, t = http(node, "GET", f"/v1/tickets/{tid}")
            if s != 200:
                return None
            conflicts = get_json(node, "/v1/conflicts?limit=500")["items"]
        except (NotSent, OSError, httpclient.HTTPException, RuntimeError):
            return None
        fields = ["assignee", "priority", "topic", "supportMeasure", "status", "status"]
        if t["status"] == "NEW":
            fields += ["subject", "statement"]
        if t["legalRegime"] == "appeal-59fz" and t["deadlines"]["extensionDays"] == 0:
            fields.append("extendAnswerByDays")
        field = rng.choice(fields)
        if field == "assignee":
            value = None if rng.random() < 0.1 else f"a{tag}"
        elif field == "priority":
            value = rng.choice(["low", "normal", "high", "urgent"])
        elif field == "topic":
            value = f"t{tag}"
        elif field == "supportMeasure":
            value = None if rng.random() < 0.1 else f"m{tag}"
        elif field == "status":
            value = rng.choice(NEXT_STATUS.get(t["status"], ["IN_WORK"]))
        elif field == "subject":
            value = f"S{tag} Уточнение темы"
        elif field == "statement":
            value = f"ST{tag} Уточнение обращения"
        else:
            value = rng.randint(1, 30)
        register = REGISTER_OF[field]
        seen = [t.get(f) for f in GROUP.get(register, [])]
        if register == "progress":
            seen.append(f"extensionDays={t['deadlines']['extensionDays']}")
        competing = []
        for c in conflicts:
            if c["ticketId"] == tid and c["field"] == register:
                competing += shown(c["winner"]) + shown(c["loser"])
        op = {"op": n, "kind": "edit", "ticket": tid, "field": field, "register": register, "value": value,
              "seen": seen, "competing": competing, "version": t["version"], "actor": f"u{tag}"}
        self.write(op, node, "PATCH", f"/v1/tickets/{tid}", {field: value}, op_token(node.org, f"u{tag}"),
                   headers={"If-Match": h.get("etag", f'"{t["version"]}"')})
        return op

    def op_note(self, rng, n):
        picked = self.pick_ticket(rng)
        if not picked:
            return None
        tid, info = picked
        partners = self.partners_of(tid)
        org = info["org"] if (not partners or rng.random() < 0.6) else rng.choice(partners)
        node = rng.choice(self.available(self.nodes_of(org)))
        tag = f"{self.seed}x{n}z"
        visibility = rng.choice(["shared", "internal"])
        text = f"N{tag} {'общая' if visibility == 'shared' else 'внутренняя'} заметка"
        op = {"op": n, "kind": "note", "ticket": tid, "visibility": visibility, "value": text, "actor": f"u{tag}"}
        status, b = self.write(op, node, "POST", f"/v1/tickets/{tid}/notes", {"text": text, "visibility": visibility},
                               op_token(node.org, f"u{tag}"))
        if status == 201:
            op["note"] = b["id"]
        return op

    def op_transfer(self, rng, n):
        picked = self.pick_ticket(rng)
        if not picked:
            return None
        tid, info = picked
        node = rng.choice(self.available(self.nodes_of(info["org"])))
        to = rng.choice([o for o in REGIONS + FUNDS if o != info["org"]] + list(FUNDS))
        kind = rng.choice(["REDIRECT", "REDIRECT", "INFO_REQUEST", "COPY"])
        scope = sorted(rng.sample(["ref", "name", "snils", "phone"], rng.randint(0, 3)))
        tag = f"{self.seed}x{n}z"
        body = {"to": to, "kind": kind, "reason": {"code": "fault-test", "text": f"R{tag} вопрос компетенции"},
                "scope": scope}
        op = {"op": n, "kind": "transfer", "ticket": tid, "to": to, "transferKind": kind, "scope": scope,
              "from": info["org"], "actor": f"u{tag}"}
        status, b = self.write(op, node, "POST", f"/v1/tickets/{tid}/transfers", body, op_token(node.org, f"u{tag}"))
        if status == 201:
            op["transfer"] = b["id"]
            with self.lock:
                self.transfers[b["id"]] = {"ticket": tid, "from": info["org"], "to": to, "kind": kind, "scope": scope}
                self.transfer_order.append(b["id"])
                self.last_transfer = (time.time(), b["id"], info["org"], to)
        return op

    def op_step(self, rng, n):
        picked = self.pick_transfer(rng)
        if not picked:
            return None
        trid, info = picked
        action = rng.choice(["accept", "accept", "accept", "complete", "complete", "reject", "return", "cancel"])
        org = info["from"] if action == "cancel" else info["to"]
        node = rng.choice(self.available(self.nodes_of(org)))
        tag = f"{self.seed}x{n}z"
        body = {}
        if action in ("reject", "return"):
            body["reason"] = {"code": "fault-test", "text": f"R{tag} не наш вопрос"}
        if action == "complete":
            body["answer"] = f"A{tag} ответ дан"
        state = {"accept": "ACCEPTED", "complete": "COMPLETED", "reject": "REJECTED", "return": "RETURNED",
                 "cancel": "CANCELLED"}[action]
        op = {"op": n, "kind": "step", "transfer": trid, "ticket": info["ticket"], "action": action, "state": state,
              "from": info["from"], "to": info["to"], "actor": f"u{tag}"}
        self.write(op, node, "POST", f"/v1/transfers/{trid}/{action}", body, op_token(node.org, f"u{tag}"))
        return op

    def op_resolve(self, rng, n):
        org = rng.choice(REGIONS + FUNDS)
        node = rng.choice(self.available(self.nodes_of(org)))
        try:
            items = get_json(node, "/v1/conflicts?limit=500")["items"]
        except (NotSent, OSError, httpclient.HTTPException, RuntimeError):
            return None
        if not items:
            return None
        c = rng.choice(items)
        keep = rng.choice(["winner", "loser"])
        tag = f"{self.seed}x{n}z"
        op = {"op": n, "kind": "resolve", "ticket": c["ticketId"], "register": c["field"], "conflict": c["id"],
              "keep": keep, "value": c[keep]["value"], "seen": shown(c["winner"]) + shown(c["loser"]),
              "actor": f"u{tag}"}
        self.write(op, node, "POST", f"/v1/conflicts/{c['id']}/resolve", {"keep": keep},
                   op_token(node.org, f"u{tag}", ("supervisor",)))
        return op

    # --- threads ---
    def _client(self, i):
        rng = random.Random(self.seed * 1000 + i)
        kinds = [k for k, w in self.WEIGHTS for _ in range(w)]
        # Seed every client with a ticket of its own first.
        while not self.stop_event.is_set():
            kind = "create" if len(self.ticket_order) < 10 else rng.choice(kinds)
            if kind == "transfer" and len(self.transfer_order) < 3:
                kind = "transfer"
            n = self.history.next_op()
            try:
                getattr(self, f"op_{kind}")(rng, n)
            except Exception as e:  # a bug of the harness: say so, keep going
                self.history.record({"op": n, "kind": kind, "result": "harness-error", "error": repr(e)})
                self.count(kind, "harness-error")
                time.sleep(0.05)

    def start(self):
        for i in range(self.threads):
            t = threading.Thread(target=self._client, args=(i,), name=f"client-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self):
        self.stop_event.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT * 3)

    def totals(self):
        out = {"ok": 0, "info": 0, "fail": 0, "harness-error": 0}
        for (k, r), c in self.counts.items():
            out[r] = out.get(r, 0) + c
        return out


class Monitor:
    """Samples every transfer's state on every available node about once a second."""

    def __init__(self, fed, interval: float = 1.0):
        self.fed = fed
        self.interval = interval
        self.samples = {}   # (node, transfer) -> [(time, state)]
        self.stop_event = threading.Event()
        self.errors = 0
        self._thread = None

    def sample_once(self):
        for node in self.fed.all():
            if not node.available():
                continue
            seen = {}
            try:
                for direction in ("in", "out"):
                    for t in list_all(node, f"/v1/transfers?direction={direction}", timeout=3.0):
                        seen[t["id"]] = t["state"]
            except Exception:
                self.errors += 1
                continue
            now = time.time()
            for trid, state in seen.items():
                seq = self.samples.setdefault((node.node_id, trid), [])
                if not seq or seq[-1][1] != state:
                    seq.append((now, state))

    def _run(self):
        while not self.stop_event.wait(self.interval):
            self.sample_once()

    def start(self):
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()

    def stop(self):
        self.stop_event.set()
        if self._thread:
            self._thread.join(30)
