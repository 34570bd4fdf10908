"""After the faults are healed and the federation is quiet: what every node holds,
checked against the history of acknowledged (and indeterminate) writes.

Each violation is a dict {check, node, ticket, message, ops}; `ops` are the op numbers
involved (see history.jsonl).
"""
import re
import time

from workload import GROUP, LIVE, shown, REGISTER_OF, TRANSFER_RANK, get_json, list_all, reader_token, http, NotSent  # noqa: F401
from cluster import FUNDS, REGIONS

UNIQUE_FIELDS = ("assignee", "topic", "supportMeasure", "subject", "statement")
TAG = re.compile(r"(\d+)x(\d+)z")


def _epoch(ts: str) -> float:
    """`2026-11-30T08:35:00.744Z` as epoch seconds."""
    import calendar
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + ts[19:].rstrip("Z"))


def tags(text, seed):
    """Op numbers named by the unique values in `text`."""
    return {int(m.group(2)) for m in TAG.finditer(str(text or "")) if int(m.group(1)) == seed}


class Snapshot:
    """Everything a node shows, read once after quiescence; its replication status
    before and after the rest (a link error in both is one that persists) and its
    health (held purges)."""

    def __init__(self, node):
        self.node = node
        self.replication = [get_json(node, "/v1/replication", timeout=30)]
        self.health = get_json(node, "/v1/health", timeout=30)
        self.tickets = {t["id"]: t for t in list_all(node, "/v1/tickets", timeout=30)}
        self.notes = {}
        for tid in self.tickets:
            self.notes[tid] = get_json(node, f"/v1/tickets/{tid}/notes", timeout=30)["items"]
        self.transfers = {}
        for direction in ("in", "out"):
            for t in list_all(node, f"/v1/transfers?direction={direction}", timeout=30):
                self.transfers[t["id"]] = t
        # Transfers of tickets held here that neither list shows (another organisation's).
        for t in self.tickets.values():
            for tr in t.get("transfers", []):
                self.transfers.setdefault(tr["id"], tr)
        self.conflicts = get_json(node, "/v1/conflicts?limit=500", timeout=30)["items"]
        self.conflicts_truncated = len(self.conflicts) >= 500
        time.sleep(1.0)
        self.replication.append(get_json(node, "/v1/replication", timeout=30))


class Checker:
    def __init__(self, fed, seed, ops, monitor_samples, log=print):
        self.fed = fed
        self.seed = seed
        self.ops = ops
        self.by_num = {o["op"]: o for o in ops if "op" in o}
        self.samples = monitor_samples
        self.violations = []
        self.notes = []   # things checked as "not available" etc.
        self.log = log
        self.snap = {}

    def violation(self, check, message, node=None, ticket=None, ops=()):
        self.violations.append({"check": check, "node": node, "ticket": ticket, "message": message,
                                "ops": sorted(set(ops))})

    # --- the model of who is entitled to what ---
    def org_nodes(self, org):
        return [n.node_id for n in self.fed.org_nodes(org)]

    def run(self, final_state=None):
        """Reads every node, or takes `final_state` (a kept run's final-state.json:
        `run.py --recheck DIR` checks it again without the nodes, digests excepted)."""
        t0 = time.time()
        self.live = final_state is None
        for n in self.fed.all():
            if final_state is None:
                self.snap[n.node_id] = Snapshot(n)
            else:
                snap = Snapshot.__new__(Snapshot)
                snap.__dict__.update(final_state[n.node_id])
                self.snap[n.node_id] = snap
        self.log(f"  checker: read every node in {time.time() - t0:.1f} s")
        self.final_state = {nid: {"tickets": s.tickets, "notes": s.notes, "transfers": s.transfers,
                                  "conflicts": s.conflicts, "replication": getattr(s, "replication", []),
                                  "health": getattr(s, "health", {})} for nid, s in self.snap.items()}
        self.build_model()
        self.check_creates_and_presence()
        self.check_fields()
        self.check_notes()
        self.check_transfers()
        self.check_monotonic()
        self.check_replicas_agree()
        self.check_scope()
        self.check_owner()
        self.check_sender_status()
        self.check_links_and_purges()
        if final_state is None:
            self.check_digests()
        else:
            self.digest_status = "not checked (offline)"
        return self.violations

    def build_model(self):
        # Tickets: every create (acked or indeterminate) by its citizen reference.
        self.creates = {}    # ticket id -> create op
        self.create_by_ref = {}
        for o in self.ops:
            if o.get("kind") == "create" and o.get("result") in ("ok", "info"):
                self.create_by_ref[o["values"]["citizen"]["ref"]] = o
                if o.get("ticket"):
                    self.creates[o["ticket"]] = o
        # Indeterminate creates that happened: find their ids on the nodes.
        for s in self.snap.values():
            for tid, t in s.tickets.items():
                ref = (t.get("citizen") or {}).get("ref")
                o = self.create_by_ref.get(ref)
                if o is not None and tid not in self.creates:
                    self.creates[tid] = o
                    o["ticket"] = tid
        # The final transfers of each ticket, as the origin organisation's nodes hold them.
        self.ticket_transfers = {}   # ticket -> {transfer id: transfer}
        for tid, o in self.creates.items():
            trs = {}
            for nid in self.org_nodes(o["org"]):
                t = self.snap[nid].tickets.get(tid)
                for tr in (t or {}).get("transfers", []):
                    trs.setdefault(tr["id"], tr)
            self.ticket_transfers[tid] = trs
        self.sent_at = {o["transfer"]: o["t0"] for o in self.ops if o.get("kind") == "transfer" and o.get("transfer")}
        self.live = {}    # ticket -> {partner org: scope set}
        for tid, trs in self.ticket_transfers.items():
            live = {}
            for tr in trs.values():
                if tr["state"] in LIVE:
                    live.setdefault(tr["to"], {"ref"}).update(tr["scope"])
            self.live[tid] = live

    # --- ownership, as the transfers' outcomes say ---
    def transfer_state(self, trid):
        """The state a transfer's steps add up to: the furthest any node shows (steps
        only add; `transfer-diverged` reports nodes that disagree), and every node's view."""
        views = {nid: s.transfers[trid]["state"] for nid, s in self.snap.items() if trid in s.transfers}
        for nid, s in self.snap.items():
            for t in s.tickets.values():
                for tr in t.get("transfers", []):
                    if tr["id"] == trid:
                        views.setdefault(nid, tr["state"])
        final = max(views.values(), key=lambda st: TRANSFER_RANK[st]) if views else None
        return final, views

    def redirects(self, tid):
        """[(transfer, final state, {node: state})] of the ticket's REDIRECTs."""
        out = []
        for trid, tr in sorted(self.ticket_transfers.get(tid, {}).items()):
            if tr["kind"] == "REDIRECT":
                final, views = self.transfer_state(trid)
                out.append((tr, final or tr["state"], views))
        return out

    def ticket_ops(self, tid, kinds=("transfer", "step")):
        return [o["op"] for o in self.ops if o.get("ticket") == tid and o.get("kind") in kinds
                and o.get("result") in ("ok", "info")]

    def describe_redirects(self, reds):
        """Each REDIRECT with its final state, every node's view when they differ, and the
        steps that decided it (state by node; a step that lost to a later one is marked)."""
        if not reds:
            return "no REDIRECT"
        parts = []
        for tr, final, views in reds:
            differ = len(set(views.values())) > 1
            full = max((s.transfers.get(tr["id"]) for s in self.snap.values() if tr["id"] in s.transfers),
                       key=lambda x: len(x["steps"]), default=tr)
            lost = {c["id"] for c in full.get("conflicts", [])}
            steps = [f"{st['state']} by {st['node']}" + (" (lost)" if st["id"] in lost else "")
                     for st in full.get("steps", []) if st["state"] != "DELIVERED"]
            parts.append(f"REDIRECT {tr['id']} {tr['from']}->{tr['to']} {final}"
                         + (f" [steps: {', '.join(steps)}]" if steps else "")
                         + (f" (views: {', '.join(f'{n} {st}' for n, st in sorted(views.items()))})" if differ else ""))
        return "; ".join(parts)

    def check_owner(self):
        """One editable owner per ticket: every node holding it names as owner a node of
        the receiver of its ACCEPTED/COMPLETED REDIRECT, else of its origin; and the
        owner's nodes can act on it (not TRANSFER_PENDING / TRANSFERRED_OUT)."""
        for tid, create in sorted(self.creates.items()):
            origin = create["org"]
            reds = self.redirects(tid)
            accepted = [(tr, st) for tr, st, _ in reds if st in ("ACCEPTED", "COMPLETED")]
            why = self.describe_redirects(reds)
            # Two REDIRECTs standing at once (the origin's two nodes each sent one while
            # apart, and both were accepted): the one sent first handles it, then the lesser
            # organisation id (TicketScope.handler), on every node alike.
            accepted.sort(key=lambda a: (a[0].get("createdAt", ""), a[0]["to"]))
            expected = accepted[0][0]["to"] if accepted else origin
            holders = {nid: s.tickets[tid] for nid, s in self.snap.items() if tid in s.tickets}
            if not holders:
                continue
            number = next(iter(holders.values())).get("number")
            wrong = []
            for nid, t in sorted(holders.items()):
                owner = t.get("ownerNode")
                org = self.fed.org_of(owner) if owner in {n.node_id for n in self.fed.all()} else f"unknown node {owner}"
                if org != expected:
                    wrong.append(f"{nid} says owner {owner} ({org}), status {t['status']}")
            if wrong:
                self.violation("owner", f"ticket {tid} ({number}, of {origin}): the owner should be a node of {expected} "
                               f"({why}), but " + "; ".join(wrong) + self.owner_trail(tid, origin, wrong),
                               wrong[0].split()[0], tid, self.ticket_ops(tid))
            # While a REDIRECT waits for the receiver the origin shows TRANSFER_PENDING (read-only
            # by design, `sender-status` checks it); otherwise the owner's nodes can act on it.
            pending = any(st in ("SENT", "DELIVERED") for _, st, _ in reds)
            stuck = [f"{nid} shows {t['status']}" for nid, t in sorted(holders.items()) if not pending
                     and self.fed.org_of(nid) == expected and t["status"] in ("TRANSFER_PENDING", "TRANSFERRED_OUT")]
            if stuck:
                self.violation("owner", f"ticket {tid} ({number}, of {origin}): its owner {expected} cannot act on it "
                               f"({why}): " + "; ".join(stuck), stuck[0].split()[0], tid, self.ticket_ops(tid))

    def owner_trail(self, tid, origin, wrong):
        """The owner register's history on the origin's nodes and the first node that shows
        it wrongly (who wrote which owner, when): the views derive the owner, the history
        says what the register holds. Read live; a kept run rechecked has none."""
        if not getattr(self, "live", False):
            return ""
        out = []
        for nid in self.org_nodes(origin) + [wrong[0].split()[0]]:
            try:
                events = get_json(self.fed.nodes[nid], f"/v1/tickets/{tid}/history", timeout=30).get("items", [])
            except Exception as e:  # noqa: BLE001 - a diagnostic only
                out.append(f"{nid}: history not read ({str(e)[:80]})")
                continue
            owners = [f"{e.get('old')}->{e.get('new')} by {e.get('node')} at {e.get('at')}"
                      for e in events if e.get("field") == "owner"]
            out.append(f"{nid}: " + (", ".join(owners) or "no owner change"))
        return "; owner history: " + " | ".join(out)

    def check_sender_status(self):
        """At the origin region, the ticket's status follows its REDIRECTs: TRANSFER_PENDING
        while one is SENT/DELIVERED, TRANSFERRED_OUT once one is ACCEPTED/COMPLETED, and
        back in the region's own statuses (and ownership) when every one ended CANCELLED,
        REJECTED or RETURNED."""
        for tid, create in sorted(self.creates.items()):
            origin = create["org"]
            reds = self.redirects(tid)
            if not reds:
                continue
            states = [st for _, st, _ in reds]
            if any(st in ("SENT", "DELIVERED") for st in states):
                expect, rule = "TRANSFER_PENDING", "a REDIRECT waits for the receiver"
            elif any(st in ("ACCEPTED", "COMPLETED") for st in states):
                expect, rule = "TRANSFERRED_OUT", "a REDIRECT was accepted"
            else:
                expect, rule = None, "every REDIRECT ended (CANCELLED/REJECTED/RETURNED)"
            why = self.describe_redirects(reds)
            wrong = []
            for nid in self.org_nodes(origin):
                t = self.snap[nid].tickets.get(tid)
                if t is None:
                    continue   # `presence` reports it
                own_view = {tr["id"]: tr["state"] for tr in t.get("transfers", []) if tr["kind"] == "REDIRECT"}
                mine = ", ".join(f"{k} {v}" for k, v in sorted(own_view.items()))
                owner = t.get("ownerNode")
                owner_org = self.fed.org_of(owner) if owner in {n.node_id for n in self.fed.all()} else owner
                if expect and t["status"] != expect:
                    wrong.append(f"{nid} shows {t['status']}, not {expect} (its own view of the REDIRECTs: {mine})")
                elif not expect and (t["status"] in ("TRANSFER_PENDING", "TRANSFERRED_OUT") or owner_org != origin):
                    wrong.append(f"{nid} shows {t['status']} owned by {owner} ({owner_org}), not back in {origin}'s "
                                 f"own statuses and ownership (its own view of the REDIRECTs: {mine})")
            if wrong:
                number = (self.snap[wrong[0].split()[0]].tickets[tid]).get("number")
                self.violation("sender-status", f"ticket {tid} ({number}): {rule} ({why}), but " + "; ".join(wrong),
                               wrong[0].split()[0], tid, self.ticket_ops(tid))

    def check_links_and_purges(self):
        """After quiescence no purge still waits for its home, and every link is connected
        without an error in both of the node's replication readings (before and after the
        checker read it)."""
        for nid, s in sorted(self.snap.items()):
            reps = getattr(s, "replication", None) or []
            if len(reps) >= 2:
                first = {p["node"]: p for p in reps[0]["peers"]}
                for p in reps[-1]["peers"]:
                    q = first.get(p["node"], p)
                    if (not p["connected"] or p.get("lastError")) and (not q["connected"] or q.get("lastError")):
                        rej = (p.get("rejected") or {}).get("byReason")
                        self.violation("link", f"{nid} pulling from {p['node']}: connected={p['connected']}, lastError "
                                       f"{p.get('lastError')!r} (before the checker read {nid}: connected={q['connected']}, "
                                       f"lastError {q.get('lastError')!r}), applied "
                                       f"{p.get('appliedSequence')} of the peer's {p.get('peerSequence')}"
                                       + (f", refused by reason {rej}" if rej else ""), nid)
            health = getattr(s, "health", None) or {}
            waiting = (health.get("transfers") or {}).get("purgesWaiting") or 0
            if waiting:
                org = self.fed.org_of(nid)
                # The tickets it keeps though no live transfer joins it to them: the held ones.
                held = []
                for tid, t in s.tickets.items():
                    create = self.creates.get(tid)
                    if create and create["org"] != org and org not in self.live.get(tid, {}):
                        trs = [f"{tr['kind']} {tr['id']} {tr['to']} {tr['state']}"
                               for tr in self.ticket_transfers.get(tid, {}).values() if tr["to"] == org]
                        held.append(f"{tid} ({'; '.join(trs)})")
                self.violation("held-purge", f"{nid} still holds {waiting} purge(s) waiting for the ticket's home after "
                               f"quiescence; tickets it keeps without a live transfer: {held[:6] or 'none listed'}"
                               f"{' ...' if len(held) > 6 else ''}", nid,
                               held[0].split()[0] if held else None)

    def register_nodes(self, tid):
        o = self.creates[tid]
        nodes = list(self.org_nodes(o["org"]))
        for p in self.live.get(tid, {}):
            nodes += self.org_nodes(p)
        return nodes

    # --- checks ---
    def check_creates_and_presence(self):
        for tid, o in self.creates.items():
            for nid in self.register_nodes(tid):
                if tid not in self.snap[nid].tickets:
                    acked = o["result"] == "ok"
                    if acked or any(tid in s.tickets for s in self.snap.values()):
                        self.violation("presence", f"ticket {tid} (created on {o['node']}, "
                                       f"{'acknowledged' if acked else 'indeterminate, seen elsewhere'}) is missing",
                                       nid, tid, [o["op"]])

    def writes(self, tid):
        return [o for o in self.ops if o.get("ticket") == tid and o.get("kind") in ("edit", "resolve")
                and o.get("result") in ("ok", "info")]

    def observed_tags(self):
        """Op numbers whose values some node shows (so an indeterminate op happened)."""
        if hasattr(self, "_observed"):
            return self._observed
        seen = set()
        for s in self.snap.values():
            for t in s.tickets.values():
                for f in UNIQUE_FIELDS:
                    seen |= tags(t.get(f), self.seed)
            for c in s.conflicts:
                for v in shown(c["winner"]) + shown(c["loser"]):
                    seen |= tags(v, self.seed)
        for o in self.ops:
            if o.get("result") == "ok":
                for v in (o.get("seen") or []) + (o.get("competing") or []):
                    seen |= tags(v, self.seed)
        self._observed = seen
        return seen

    def check_fields(self):
        observed = self.observed_tags()
        for tid, create in self.creates.items():
            ws = self.writes(tid)
            # Ops that superseded values: acked ones, and indeterminate ones that happened.
            superseded = set()
            for o in ws:
                if o["result"] == "ok" or o["op"] in observed:
                    for v in (o.get("seen") or []) + (o.get("competing") or []):
                        superseded |= tags(v, self.seed)
            # A resolution saw both whole values of its register (the conflict list shows
            # only one field of a group: `topic` without the support measure, `progress`
            # without the deadlines), so it supersedes every write of that register
            # acknowledged before it started.
            resolved = {}
            for o in ws:
                if o["kind"] == "resolve" and (o["result"] == "ok" or o["op"] in observed):
                    resolved[o["register"]] = max(resolved.get(o["register"], 0), o["t0"])

            # Accepting a REDIRECT starts the receiver's own 59-FZ clock: a system write of
            # the deadlines (`progress`), after every extension acknowledged before the send.
            accepted_redirects = [_epoch(st["at"]) for tr in self.ticket_transfers.get(tid, {}).values()
                                  if tr["kind"] == "REDIRECT" for st in tr["steps"] if st["state"] == "ACCEPTED"]

            def resolved_after(o):
                if o["field"] == "extendAnswerByDays" and any(t > o.get("t1", float("inf")) for t in accepted_redirects):
                    return True
                return resolved.get(REGISTER_OF[o["field"]], 0) > o.get("t1", float("inf"))

            for nid in self.register_nodes(tid):
                t = self.snap[nid].tickets.get(tid)
                if t is None:
                    continue
                conflict_tags = set()
                for c in self.snap[nid].conflicts:
                    if c["ticketId"] == tid:
                        for v in shown(c["winner"]) + shown(c["loser"]):
                            conflict_tags |= tags(v, self.seed)
                for field in UNIQUE_FIELDS + ("priority",):
                    v = t.get(field)
                    allowed = {create["values"].get(field)} | {o["value"] for o in ws if o.get("field") == field}
                    if field in UNIQUE_FIELDS and isinstance(v, str):
                        ok = bool(tags(v, self.seed) & ({create["op"]} | {o["op"] for o in ws if o.get("field") == field}))
                    else:
                        ok = v in allowed
                    if not ok:
                        self.violation("field-value", f"{field} = {v!r}: no create or write of this ticket wrote it",
                                       nid, tid, [create["op"]] + [o["op"] for o in ws if o.get("field") == field])
                    if field not in UNIQUE_FIELDS:
                        continue
                    held = tags(v, self.seed)
                    for o in ws:
                        if o.get("kind") != "edit" or o.get("field") != field or o["result"] != "ok" or o["value"] is None:
                            continue
                        if o["op"] in held or o["op"] in superseded or o["op"] in conflict_tags or resolved_after(o):
                            continue
                        saw_conflict = any(w["result"] == "ok" and w.get("competing") and w.get("register") == REGISTER_OF[field]
                                           and w["t0"] > o.get("t1", 0) for w in ws)
                        if saw_conflict or any(c["ticketId"] == tid and c["field"] == REGISTER_OF[field]
                                               for c in self.snap[nid].conflicts):
                            # The register is in conflict, but the list shows another field of
                            # the group (`topic` for the support measure, `subject` for the
                            # statement): the write may be the loser, a person cannot see it.
                            self.violation("conflict-hides-value", f"acknowledged {field} = {o['value']!r} (op {o['op']} "
                                           f"on {o['node']}) is not the value here ({v!r}); a {REGISTER_OF[field]} conflict "
                                           f"was listed (now or to a later write) without showing it", nid, tid, [o["op"]])
                            continue
                        self.violation("lost-write", f"acknowledged {field} = {o['value']!r} (op {o['op']} on {o['node']}) "
                                       f"is neither the value here ({v!r}), nor seen by a later write, nor a listed conflict",
                                       nid, tid, [o["op"]])
                # A status only an operator sets (the transfer workflow sets the others).
                if t["status"] in ("WAITING", "ANSWERED", "CLOSED", "DEFERRED", "REOPENED") and \
                        t["status"] not in {o.get("value") for o in ws if o.get("field") == "status"} | \
                        {o.get("value") for o in ws if o.get("kind") == "resolve" and o.get("register") == "progress"}:
                    self.violation("field-value", f"status = {t['status']}: no write of this ticket set it", nid, tid,
                                   [o["op"] for o in ws if o.get("field") == "status"])
                # An acknowledged extension of the answer deadline.
                ext = [o for o in ws if o.get("field") == "extendAnswerByDays"]
                days = t["deadlines"]["extensionDays"]
                if days and days not in {o["value"] for o in ext}:
                    self.violation("field-value", f"extensionDays = {days}: no write asked for it", nid, tid,
                                   [o["op"] for o in ext])
                # An extension a later write of the register saw, as the value or as a listed
                # conflict's, was superseded by it knowingly (as `superseded` for other fields):
                # the PATCH carried the version whose conflict list showed it.
                def seen_later(o):
                    return any(w["kind"] == "edit" and w.get("register") == "progress" and w["t0"] > o.get("t1", float("inf"))
                               and (w["result"] == "ok" or w["op"] in observed)
                               and ({str(o["value"]), f"extensionDays={o['value']}"}
                                    & {str(v) for v in (w.get("seen") or []) + (w.get("competing") or [])})
                               for w in ws)
                if any(o["result"] == "ok" and not resolved_after(o) and not seen_later(o) for o in ext) and not days:
                    if not any(c["ticketId"] == tid and c["field"] == "progress" for c in self.snap[nid].conflicts):
                        self.violation("lost-write", "an acknowledged extension of the answer deadline is gone", nid, tid,
                                       [o["op"] for o in ext if o["result"] == "ok"])

    def check_notes(self):
        for o in self.ops:
            if o.get("kind") != "note" or o.get("result") != "ok" or o.get("ticket") not in self.creates:
                continue
            tid = o["ticket"]
            origin = self.creates[tid]["org"]
            live = self.live.get(tid, {})
            writer = o["org"]
            # A transfer to the writer's organisation sent before the note and ended since:
            # its purge may have taken the note there (by design) before it went anywhere.
            ended = writer != origin and any(
                tr["to"] == writer and tr["state"] not in LIVE and self.sent_at.get(trid, 0) < o.get("t1", 0)
                for trid, tr in self.ticket_transfers.get(tid, {}).items())
            if o["visibility"] == "internal":
                # A partner's internal note never leaves the partner: the purge at the end of
                # its transfer takes it (152-FZ), even if a later transfer brings the ticket back.
                if writer == origin or (writer in live and not ended):
                    entitled = self.org_nodes(writer)
                else:
                    entitled = []   # the partner's purge took it, as designed
            else:
                entitled = set(self.register_nodes(tid))
                if writer != origin and writer not in live:
                    entitled = set(self.org_nodes(origin))   # a partner's shared note from before the end
            for nid in entitled:
                texts = [n["text"] for n in self.snap[nid].notes.get(tid, [])]
                if o["value"] not in texts:
                    kind = "lost-after-transfer-ended" if ended else "lost-note"
                    self.violation(kind, f"acknowledged {o['visibility']} note of op {o['op']} (written on {o['node']}) "
                                   f"is missing", nid, tid, [o["op"]])

    def check_transfers(self):
        for o in self.ops:
            if o.get("result") != "ok" or o.get("kind") not in ("transfer", "step"):
                continue
            trid = o.get("transfer")
            if not trid:
                continue
            frm, to = o["from"], o["to"]
            for nid in self.org_nodes(frm) + self.org_nodes(to):
                tr = self.snap[nid].transfers.get(trid)
                if tr is None:
                    self.violation("lost-transfer", f"acknowledged transfer {trid} ({frm} -> {to}) is missing",
                                   nid, o.get("ticket"), [o["op"]])
                    continue
                if o["kind"] == "step":
                    actors = [s["actor"] for s in tr["steps"] + tr.get("conflicts", [])]
                    if o["actor"] not in actors:
                        self.violation("lost-step", f"acknowledged {o['state']} of transfer {trid} (op {o['op']} on "
                                       f"{o['node']}) is missing; the transfer shows {tr['state']} with steps "
                                       f"{[(s['state'], s['actor']) for s in tr['steps']]}", nid, o.get("ticket"), [o["op"]])
        # Every node of both sides ends in the same state with the same steps.
        all_trs = {}
        for nid, s in self.snap.items():
            for trid, tr in s.transfers.items():
                all_trs.setdefault(trid, {})[nid] = tr
        for trid, views in all_trs.items():
            states = {nid: (tr["state"], tuple(sorted(st["id"] for st in tr["steps"]))) for nid, tr in views.items()}
            if len(set(states.values())) > 1:
                self.violation("transfer-diverged", f"transfer {trid}: nodes disagree: "
                               f"{ {n: s[0] + f' ({len(s[1])} steps)' for n, s in states.items()} }",
                               None, next(iter(views.values()))["ticketId"],
                               [o["op"] for o in self.ops if o.get("transfer") == trid])

    def check_replicas_agree(self):
        """The nodes of one organisation show every ticket alike (but the local edit
        counter `version`): same fields, same notes, same transfers and states."""
        orgs = sorted({n.org for n in self.fed.all()})
        for org in orgs:
            nids = self.org_nodes(org)
            if len(nids) < 2:
                continue
            tids = set().union(*(self.snap[n].tickets for n in nids))
            for tid in sorted(tids):
                views = {}
                for nid in nids:
                    t = self.snap[nid].tickets.get(tid)
                    if t is None:
                        views[nid] = None
                        continue
                    t = dict(t)
                    t.pop("version", None)
                    t["transfers"] = sorted((x["id"], x["state"], len(x["steps"])) for x in t.get("transfers", []))
                    t["notes"] = sorted(n["id"] for n in self.snap[nid].notes.get(tid, []))
                    views[nid] = t
                first = views[nids[0]]
                for nid in nids[1:]:
                    other = views[nid]
                    if other == first:
                        continue
                    if first is None or other is None:
                        diff = "held by " + ", ".join(n for n in nids if views[n] is not None) + " only"
                    else:
                        diff = "; ".join(f"{k}: {nids[0]} {first.get(k)!r} / {nid} {other.get(k)!r}"
                                         for k in sorted(set(first) | set(other)) if first.get(k) != other.get(k))
                    create = self.creates.get(tid)
                    self.violation("replica-diverged", f"nodes of {org} disagree on {tid}: {diff}"[:1500], nid, tid,
                                   [create["op"]] if create else [])

    def check_monotonic(self):
        for (nid, trid), seq in self.samples.items():
            for (t1, a), (t2, b) in zip(seq, seq[1:]):
                if TRANSFER_RANK[b] < TRANSFER_RANK[a]:
                    self.violation("transfer-backwards", f"transfer {trid} went {a} -> {b} on {nid} "
                                   f"(sampled {time.strftime('%H:%M:%S', time.localtime(t1))} -> "
                                   f"{time.strftime('%H:%M:%S', time.localtime(t2))})", nid, None,
                                   [o["op"] for o in self.ops if o.get("transfer") == trid])

    def check_scope(self):
        for nid, s in self.snap.items():
            org = self.fed.org_of(nid)
            for tid, t in s.tickets.items():
                create = self.creates.get(tid)
                if create is None:
                    self.violation("unknown-ticket", f"ticket {tid} ({t.get('number')}) matches no create of the history",
                                   nid, tid)
                    continue
                if create["org"] == org:
                    continue
                live = self.live.get(tid, {})
                if org not in live:
                    self.violation("out-of-scope", f"{nid} ({org}) holds ticket {tid} of {create['org']} "
                                   f"without a live transfer to {org}", nid, tid, [create["op"]])
                    continue
                scope = live[org]
                for f in ("name", "snils", "phone"):
                    if (t.get("citizen") or {}).get(f) is not None and f not in scope:
                        self.violation("out-of-scope", f"{nid} holds citizen {f} of {tid}, outside the scope {sorted(scope)}",
                                       nid, tid, [create["op"]])
                for note in s.notes.get(tid, []):
                    for n in tags(note["text"], self.seed):
                        o = self.by_num.get(n)
                        if o and o.get("visibility") == "internal" and o.get("org") != org:
                            self.violation("out-of-scope", f"{nid} holds the internal note of op {n} written in {o['org']}",
                                           nid, tid, [n])

    def check_digests(self):
        self.digest_status = "checked"
        orgs = sorted({n.org for n in self.fed.all()})
        bodies = {}
        for n in self.fed.all():
            for scope in orgs:
                body = None
                for _ in range(120):   # digests are rebuilt after a start: wait until ready
                    try:
                        status, _, body = http(n, "GET", f"/v1/digest?scope={scope}", timeout=60)
                    except Exception as e:
                        status, body = None, str(e)
                    if status == 404 and not (isinstance(body, dict) and body.get("scope")):
                        self.digest_status = "not available (GET /v1/digest answers 404)"
                        return
                    if status == 200 and isinstance(body, dict) and body.get("ready", True):
                        break
                    time.sleep(0.5)
                if status != 200 or not isinstance(body, dict) or "root" not in body:
                    self.violation("digest", f"GET /v1/digest?scope={scope} on {n.node_id}: {status} {str(body)[:300]}",
                                   n.node_id)
                    continue
                if not body.get("ready", True):
                    self.violation("digest", f"{n.node_id}: digests not ready within 60 s", n.node_id)
                bodies[(n.node_id, scope)] = body
        nodes = {n.node_id: n for n in self.fed.all()}

        def compare(what, pairs):
            """pairs: [(node, scope)]; one violation naming the records that differ."""
            have = [(p, bodies[p]) for p in pairs if p in bodies]
            if len({b["root"] for _, b in have}) <= 1:
                return
            (pa, a), rest = have[0], have[1:]
            for pb, b in rest:
                if b["root"] == a["root"]:
                    continue
                diff = self.digest_diff(nodes[pa[0]], pa[1], a, nodes[pb[0]], pb[1], b)
                first = re.search(r"ticket ([0-9A-Z]{26})", diff)
                self.violation("digest", f"{what}: {pa[0]} (scope={pa[1]}, {a['records']} records) and {pb[0]} "
                               f"(scope={pb[1]}, {b['records']} records) differ; {diff}", pb[0],
                               first.group(1) if first else None)

        for a in orgs:
            compare(f"the nodes of {a} on scope={a}", [(nid, a) for nid in self.org_nodes(a)])
            for b in orgs:
                if b > a:
                    compare(f"{a} and {b} on what they share",
                            [(nid, b) for nid in self.org_nodes(a)] + [(nid, a) for nid in self.org_nodes(b)])

    def digest_diff(self, na, sa, a, nb, sb, b, limit=8):
        """The records whose sums differ between two digests (walking ranges, buckets)."""
        out = []
        try:
            ra = {r["range"]: r["sum"] for r in a.get("ranges", [])}
            rb = {r["range"]: r["sum"] for r in b.get("ranges", [])}
            for r in sorted(set(ra) | set(rb)):
                if ra.get(r) == rb.get(r):
                    continue
                ba = {x["bucket"]: x["sum"] for x in get_json(na, f"/v1/digest?scope={sa}&range={r}", 30)["buckets"]}
                bb = {x["bucket"]: x["sum"] for x in get_json(nb, f"/v1/digest?scope={sb}&range={r}", 30)["buckets"]}
                for k in sorted(set(ba) | set(bb)):
                    if ba.get(k) == bb.get(k):
                        continue
                    ea = {(x["kind"], x["id"]): x["sum"] for x in get_json(na, f"/v1/digest?scope={sa}&bucket={k}", 30)["entries"]}
                    eb = {(x["kind"], x["id"]): x["sum"] for x in get_json(nb, f"/v1/digest?scope={sb}&bucket={k}", 30)["entries"]}
                    for key in sorted(set(ea) | set(eb)):
                        if ea.get(key) != eb.get(key):
                            where = "both, different" if key in ea and key in eb else (na.node_id if key in ea else nb.node_id) + " only"
                            out.append(f"{key[0]} {key[1]} ({where})")
                            if len(out) >= limit:
                                return "records: " + ", ".join(out) + ", ..."
        except Exception as e:
            out.append(f"(could not walk the digests: {e})")
        return "records: " + ", ".join(out) if out else "no record differs at the bucket level (sums of ranges differ)"
