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

# Client i acts for CLIENT_ORGS[i % len]: an operator of that organisation, who may use
# any node of it (the seed picks one per operation) and tries another node of it when a
# call gets no answer. Regions create, edit, transfer and cancel; funds take the steps.
CLIENT_ORGS = ("38", "pension", "fss", "52", "38", "pension", "fss", "38")
RECEIVER_STEPS = {"DELIVERED": ["accept", "accept", "accept", "reject"], "ACCEPTED": ["complete", "complete", "return"]}
ALL_STEPS = ["accept", "accept", "accept", "complete", "complete", "reject", "return"]
STATE_OF = {"accept": "ACCEPTED", "complete": "COMPLETED", "reject": "REJECTED", "return": "RETURNED",
            "cancel": "CANCELLED"}
# Steps raced on the two nodes of the receiving organisation, by the state read first:
# each pair is (on node A, on node B); "cancel" is the sender's, on a node of the sender.
RACES = {"DELIVERED": [("accept", "reject"), ("reject", "accept"), ("accept", "accept"), ("accept", "cancel"),
                       ("accept", "reject", "cancel")],
         "ACCEPTED": [("complete", "return"), ("return", "complete"), ("complete", "complete"), ("return", "return")]}
FINAL = {"CANCELLED", "REJECTED", "RETURNED", "COMPLETED"}


class Unreachable(Exception):
    """A read before a write got no answer from the node: the client tries another node."""


def unanswered(op) -> bool:
    """The call got no answer (never sent, or sent and then a timeout / reset)."""
    return bool(op) and op.get("result") in ("fail", "info") and op.get("status") is None


class Workload:
    """`threads` clients, each with its own Random(seed * 1000 + i), acting for an
    organisation (CLIENT_ORGS)."""

    REGION_WEIGHTS = [("create", 14), ("edit", 36), ("note", 16), ("transfer", 16), ("step", 8), ("race", 3),
                      ("resolve", 4)]
    FUND_WEIGHTS = [("step", 28), ("race", 14), ("edit", 34), ("note", 18), ("resolve", 6)]

    def __init__(self, fed, seed: int, history: History, threads: int = 8, creates_per_second: float = 0):
        self.creates_per_second = creates_per_second
        self.fed = fed
        self.seed = seed
        self.history = history
        self.threads = threads
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.tickets = {}      # id -> {"org", "node", "legal"}
        self.ticket_order = []
        self.org_tickets = {}  # org -> [ticket id]: its own, and those transferred to it
        self.transfers = {}    # id -> {"ticket", "from", "to", "kind", "scope", "state"}
        self.transfer_order = []
        self.last_transfer = None   # (time, transfer id, from org, to org)
        self.last_step = None       # (time, transfer id, node id that acknowledged it, from org, to org, action)
        self.counts = {}
        self._threads = []
        self._tl = threading.local()   # the retry a client thread is making, if any

    # --- bookkeeping ---
    def count(self, kind, result):
        with self.lock:
            self.counts[(kind, result)] = self.counts.get((kind, result), 0) + 1

    def nodes_of(self, org):
        return [n for n in self.fed.org_nodes(org)]

    def owned(self, org):
        """The tickets `org` should own as far as the acknowledged steps tell: a fund's
        accepted REDIRECTs, a region's own tickets that no REDIRECT took away. (Call
        with the lock held.)"""
        taken, out = {}, []
        for t in self.transfers.values():
            if t["kind"] == "REDIRECT" and t["state"] not in ("CANCELLED", "REJECTED", "RETURNED"):
                taken[t["ticket"]] = t
        for tid in self.org_tickets.get(org) or []:
            t = taken.get(tid)
            if (t is None and self.tickets[tid]["org"] == org) or (t and t["to"] == org and t["state"] in ("ACCEPTED", "COMPLETED")):
                out.append(tid)
        return out

    def pick_ticket(self, rng, org, edit=False):
        """A ticket an operator of `org` may handle: its own, or one transferred to it; for
        an edit mostly one it should own (partners may not write the owner's registers)."""
        with self.lock:
            ids = self.org_tickets.get(org) or []
            if edit and rng.random() < 0.85:
                ids = self.owned(org) or ids
            if not ids:
                return None
            # Mostly recent tickets: edits meet each other (and the faults) more often.
            tid = rng.choice(ids[-60:]) if rng.random() < 0.7 else rng.choice(ids)
            return tid, dict(self.tickets[tid])

    def pick_transfer(self, rng, org, receiving=True, redirect_first=False):
        """A transfer to `org` (from it, with receiving=False), mostly one not known to
        have ended."""
        with self.lock:
            ids = [t for t in self.transfer_order
                   if (self.transfers[t]["to"] if receiving else self.transfers[t]["from"]) == org]
            if not ids:
                return None
            if rng.random() < 0.85:
                ids = [t for t in ids if self.transfers[t]["state"] not in FINAL] or ids
            if redirect_first and rng.random() < 0.8:
                live = [t for t in ids[-60:] if self.transfers[t]["kind"] == "REDIRECT"
                        and self.transfers[t]["state"] not in FINAL]
                if live:
                    ids = live
            trid = rng.choice(ids[-40:]) if rng.random() < 0.8 else rng.choice(ids)
            return trid, dict(self.transfers[trid])

    # --- one write, recorded ---
    def write(self, op: dict, node, method, path, body, token, headers=None):
        if getattr(self._tl, "retry", None):
            op.update(self._tl.retry)
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

    def read(self, node, path):
        """(status, headers, body) of a read before a write; Unreachable without an answer."""
        try:
            return http(node, "GET", path)
        except (NotSent, OSError, httpclient.HTTPException) as e:
            raise Unreachable(f"{node.node_id} GET {path}: {e}")

    # --- operations: op_KIND(rng, n, org, node) ---
    def op_create(self, rng, n, org, node):
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
                self.org_tickets.setdefault(node.org, []).append(b["id"])
        return op

    def op_edit(self, rng, n, org, node):
        picked = self.pick_ticket(rng, org, edit=True)
        if not picked:
            return None
        tid, info = picked
        tag = f"{self.seed}x{n}z"
        s, h, t = self.read(node, f"/v1/tickets/{tid}")
        if s != 200:
            return None
        s, _, c = self.read(node, "/v1/conflicts?limit=500")
        if s != 200:
            return None
        conflicts = c["items"]
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
              "seen": seen, "competing": competing, "version": t["version"], "actor": f"u{tag}",
              "sawStatus": t["status"], "sawOwner": t.get("ownerNode")}
        self.write(op, node, "PATCH", f"/v1/tickets/{tid}", {field: value}, op_token(node.org, f"u{tag}"),
                   headers={"If-Match": h.get("etag", f'"{t["version"]}"')})
        return op

    def op_note(self, rng, n, org, node):
        picked = self.pick_ticket(rng, org)
        if not picked:
            return None
        tid, info = picked
        tag = f"{self.seed}x{n}z"
        visibility = rng.choice(["shared", "internal"])
        text = f"N{tag} {'общая' if visibility == 'shared' else 'внутренняя'} заметка"
        op = {"op": n, "kind": "note", "ticket": tid, "visibility": visibility, "value": text, "actor": f"u{tag}"}
        status, b = self.write(op, node, "POST", f"/v1/tickets/{tid}/notes", {"text": text, "visibility": visibility},
                               op_token(node.org, f"u{tag}"))
        if status == 201:
            op["note"] = b["id"]
        return op

    def op_transfer(self, rng, n, org, node):
        with self.lock:
            own = [t for t in (self.org_tickets.get(org) or []) if self.tickets[t]["org"] == org]
        if not own:
            return None
        tid = rng.choice(own[-60:]) if rng.random() < 0.7 else rng.choice(own)
        to = rng.choice([o for o in REGIONS + FUNDS if o != org] + list(FUNDS))
        kind = rng.choice(["REDIRECT", "REDIRECT", "REDIRECT", "INFO_REQUEST", "COPY"])
        scope = sorted(rng.sample(["ref", "name", "snils", "phone"], rng.randint(0, 3)))
        tag = f"{self.seed}x{n}z"
        body = {"to": to, "kind": kind, "reason": {"code": "fault-test", "text": f"R{tag} вопрос компетенции"},
                "scope": scope}
        op = {"op": n, "kind": "transfer", "ticket": tid, "to": to, "transferKind": kind, "scope": scope,
              "from": org, "actor": f"u{tag}"}
        status, b = self.write(op, node, "POST", f"/v1/tickets/{tid}/transfers", body, op_token(node.org, f"u{tag}"))
        if status == 201:
            op["transfer"] = b["id"]
            with self.lock:
                self.transfers[b["id"]] = {"ticket": tid, "from": org, "to": to, "kind": kind, "scope": scope,
                                           "state": "SENT"}
                self.transfer_order.append(b["id"])
                self.org_tickets.setdefault(to, []).append(tid)
                self.last_transfer = (time.time(), b["id"], org, to)
        return op

    def step(self, n, node, trid, info, action, race=None):
        """One step of a transfer on `node`, recorded (a race's steps name the race)."""
        tag = f"{self.seed}x{n}z"
        body = {}
        if action in ("reject", "return"):
            body["reason"] = {"code": "fault-test", "text": f"R{tag} не наш вопрос"}
        if action == "complete":
            body["answer"] = f"A{tag} ответ дан"
        op = {"op": n, "kind": "step", "transfer": trid, "ticket": info["ticket"], "action": action,
              "state": STATE_OF[action], "from": info["from"], "to": info["to"], "transferKind": info["kind"],
              "actor": f"u{tag}"}
        if race:
            op.update(race)
        status, _ = self.write(op, node, "POST", f"/v1/transfers/{trid}/{action}", body, op_token(node.org, f"u{tag}"))
        if status and 200 <= status < 300:
            with self.lock:
                self.transfers[trid]["state"] = STATE_OF[action]
                self.last_step = (time.time(), trid, node.node_id, info["from"], info["to"], action)
        return op

    def op_step(self, rng, n, org, node):
        receiving = rng.random() < 0.9 or org in FUNDS
        picked = self.pick_transfer(rng, org, receiving=receiving)
        if not picked:
            return None
        trid, info = picked
        s, _, tr = self.read(node, f"/v1/transfers/{trid}")
        seen = tr.get("state") if s == 200 and isinstance(tr, dict) else None
        if not receiving:
            action = "cancel"
        elif rng.random() < 0.8 and seen in RECEIVER_STEPS:
            action = rng.choice(RECEIVER_STEPS[seen])   # what an operator would do, seeing the state
        else:
            action = rng.choice(ALL_STEPS)             # and now and then what the node must refuse
        op = self.step(n, node, trid, info, action)
        op["sawState"] = seen
        return op

    def op_race(self, rng, n, org, node):
        """Two (or three) steps of one transfer at nearly the same time on different nodes:
        on node A and on the other node B of the receiving organisation (and the sender's
        cancellation on a node of the sender), from threads released together or back to
        back, before either can have replicated to the other."""
        nodes = self.nodes_of(org)
        if len(nodes) < 2:
            return self.op_step(rng, n, org, node)
        picked = self.pick_transfer(rng, org, receiving=True, redirect_first=True)
        if not picked:
            return None
        trid, info = picked
        s, _, tr = self.read(node, f"/v1/transfers/{trid}")
        if s != 200 or tr.get("state") not in RACES:
            return None
        other = rng.choice([x for x in nodes if x is not node])
        actions = rng.choice(RACES[tr["state"]])
        where = [node, other]
        if "cancel" in actions:
            where = where[:len(actions) - 1] + [rng.choice(self.nodes_of(info["from"]))]
        mode = "threads" if rng.random() < 0.7 else "back-to-back"
        race = {"race": n, "raceMode": mode, "sawState": tr["state"],
                "raceNodes": [x.node_id for x in where], "raceActions": list(actions)}
        nums = [n] + [self.history.next_op() for _ in actions[1:]]
        if mode == "back-to-back":
            for m, x, a in zip(nums, where, actions):
                self.step(m, x, trid, info, a, race)
            return None
        gate = threading.Barrier(len(actions))

        def go(m, x, a):
            try:
                gate.wait(2)
            except threading.BrokenBarrierError:
                pass
            self.step(m, x, trid, info, a, race)
        ts = [threading.Thread(target=go, args=(m, x, a), daemon=True) for m, x, a in zip(nums, where, actions)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(REQUEST_TIMEOUT * 3)
        return None

    def op_resolve(self, rng, n, org, node):
        s, _, c = self.read(node, "/v1/conflicts?limit=500")
        if s != 200:
            return None
        items = c["items"]
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
    def run_op(self, kind, rng, org):
        """One operation on a node of `org` the seed picks; when it gets no answer, once
        more on another node of `org` (a new op with its own history line: `retryOf` the
        op number, `retryAfter` whether the write or the read before it went unanswered)."""
        nodes = self.nodes_of(org)
        node = rng.choice(nodes)
        self._tl.retry = None
        try:
            for _ in range(2):
                n = self.history.next_op()
                try:
                    op = getattr(self, f"op_{kind}")(rng, n, org, node)
                except Unreachable as e:
                    op = {"unreachable": str(e)}
                if not op or not (op.get("unreachable") or unanswered(op)):
                    return
                others = [x for x in nodes if x is not node]
                if not others or self.stop_event.is_set():
                    return
                self._tl.retry = {"retryOf": n, "retryAfter": f"no answer from {node.node_id} to the "
                                  + ("read before the write" if op.get("unreachable") else "write")}
                node = rng.choice(others)
        finally:
            self._tl.retry = None

    def _client(self, i):
        rng = random.Random(self.seed * 1000 + i)
        org = CLIENT_ORGS[i % len(CLIENT_ORGS)]
        weights = self.REGION_WEIGHTS if org in REGIONS else self.FUND_WEIGHTS
        kinds = [k for k, w in weights for _ in range(w)]
        while not self.stop_event.is_set():
            if org in REGIONS and len(self.org_tickets.get(org) or []) < 5:
                kind = "create"   # every region starts with tickets of its own
            elif org in FUNDS and not any(t["to"] == org for t in list(self.transfers.values())):
                time.sleep(0.1)   # nothing sent to this fund yet
                continue
            else:
                kind = rng.choice(kinds)
            try:
                self.run_op(kind, rng, org)
            except Exception as e:  # a bug of the harness: say so, keep going
                import traceback
                n = self.history.next_op()
                self.history.record({"op": n, "kind": kind, "result": "harness-error", "error": repr(e),
                                     "trace": traceback.format_exc()[-1500:]})
                self.count(kind, "harness-error")
                time.sleep(0.05)

    CREATORS_PER_REGION = 2

    def _creator(self, i):
        """Creates at a steady pace on the nodes of one region, beside the mix (the upgrade
        runs' load): each of the creators takes its share of `creates_per_second`."""
        rng = random.Random(self.seed * 1000 + 500 + i)
        org = REGIONS[i % len(REGIONS)]
        interval = len(REGIONS) * self.CREATORS_PER_REGION / self.creates_per_second
        due = time.monotonic()
        while not self.stop_event.is_set():
            try:
                self.run_op("create", rng, org)
            except Exception as e:
                import traceback
                n = self.history.next_op()
                self.history.record({"op": n, "kind": "create", "result": "harness-error", "error": repr(e),
                                     "trace": traceback.format_exc()[-1500:]})
                self.count("create", "harness-error")
            due += interval
            self.stop_event.wait(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - 1.0)   # behind after an outage: no burst to catch up

    def start(self):
        for i in range(self.threads):
            t = threading.Thread(target=self._client, args=(i,), name=f"client-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.creates_per_second > 0:
            for i in range(len(REGIONS) * self.CREATORS_PER_REGION):
                t = threading.Thread(target=self._creator, args=(i,), name=f"creator-{i}", daemon=True)
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

    def step_totals(self):
        """{"action result": n} of the steps."""
        out = {}
        for o in list(self.history.ops):
            if o.get("kind") == "step":
                k = f"{o['action']} {o['result']}"
                out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))

    def retries(self):
        return sum(1 for o in list(self.history.ops) if o.get("retryOf"))

    def races(self):
        """{mode: number of races} from the history."""
        out = {}
        for o in list(self.history.ops):
            if o.get("race") == o.get("op"):
                out[o["raceMode"]] = out.get(o["raceMode"], 0) + 1
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
