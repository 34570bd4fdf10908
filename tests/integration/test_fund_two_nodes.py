"""A fund with two nodes: the three timelines of issue 18 as deterministic real-process
tests (steps through the operator API on the named nodes, partitions between them).

The federation: region 38 (irk-main and its office irk-office-1, the office peering
only with irk-main), region 52 (nn-main) and the pension fund with two nodes
(pension-1, pension-2), which peer with each other and with irk-main and nn-main.
Every directed link runs through a proxy the test cuts and heals (federation.py).

Splitting the two fund nodes
----------------------------
Cutting only the two proxies between pension-1 and pension-2 does not split them: the
region's centre holds every transfer of its tickets and relays each fund node's steps
to the other within a pull. Two steps are concurrent only when neither node can hear
of the other's, so "a split of the fund's nodes" here isolates one of them from every
peer (`fed.cut(node)`: its links to the other fund node and to the region centres,
both directions), which contains the split the issue names. Which node is isolated,
and which links heal first, is chosen per timeline to force the order of arrivals the
timeline found; each test says why. Nothing waits on a race: every step waits for the
state it needs, then the next step is taken.

Each test checks what an operator would expect of the end state after quiescence (no
view or link position changes for a few seconds) and fails with every node's view of
the ticket and the transfer, its links (connected, lastError, rejections by reason) and
the node log lines about refusals.
"""
import re
import time

import pytest

from federation import (CITIZEN_NAME, CITIZEN_PHONE, CITIZEN_SNILS, citizen_ticket, identical_everywhere, post, running,
                        wait_until)

FEDERATION = [
    {"id": "irk-main", "region": "38", "peers": ["irk-office-1", "nn-main", "pension-1", "pension-2"]},
    {"id": "irk-office-1", "region": "38", "peers": ["irk-main"]},
    {"id": "nn-main", "region": "52", "peers": ["irk-main", "pension-1", "pension-2"]},
    # Debug logs on the fund's nodes: a pull that ends with an error is logged only at debug
    # ("pull ended", with the reason), and these tests are about the fund's links.
    {"id": "pension-1", "region": "pension", "peers": ["pension-2", "irk-main", "nn-main"], "flags": ["--log-level", "debug"]},
    {"id": "pension-2", "region": "pension", "peers": ["pension-1", "irk-main", "nn-main"], "flags": ["--log-level", "debug"]},
]
REGION = ["irk-main", "irk-office-1"]
FUND = ["pension-1", "pension-2"]
HOLDERS = REGION + FUND        # the nodes that may hold region 38's ticket
SETTLE = 30.0   # seconds: replication after a heal, on a shared and loaded 2-core machine
SNILS, PHONE, NAME = CITIZEN_SNILS, CITIZEN_PHONE, CITIZEN_NAME
REJECT = {"reason": {"code": "not-competent", "text": "Вопрос не относится к фонду"}}
RETURN = {"reason": {"code": "wrong-fund", "text": "Возвращаем: вопрос ведёт региональный центр"}}
ANSWER = {"answer": "Перерасчёт выполнен, ответ направлен заявителю"}


@pytest.fixture
def fed(tmp_path):
    yield from running(tmp_path / "fed", FEDERATION)


# --- steps through the operator API ------------------------------------------------------------

def send(node, ticket_id):
    status, _, tr = post(node, f"/v1/tickets/{ticket_id}/transfers",
                         {"to": "pension", "kind": "REDIRECT", "scope": ["ref", "name"],
                          "reason": {"code": "pension-recalc", "text": "Вопрос компетенции фонда"}}, actor="op-ivanova")
    assert status == 201, (node.node_id, status, tr)
    return tr["id"]


def transfer(node, tid):
    status, _, tr = node.request("GET", f"/v1/transfers/{tid}")
    return tr if status == 200 else None


def step(node, tid, action, body=None, actor="op-fund"):
    status, _, tr = post(node, f"/v1/transfers/{tid}/{action}", body, actor=actor)
    assert status == 200, (node.node_id, action, status, tr)
    return tr


def state_of(node, tid):
    return (transfer(node, tid) or {}).get("state")


def note_ids(node, ticket_id):
    status, _, notes = node.request("GET", f"/v1/tickets/{ticket_id}/notes")
    return [n["id"] for n in notes["items"]] if status == 200 else []


# --- links ----------------------------------------------------------------------------------------

def cut_link(fed, puller, pulled):
    """`puller` can no longer pull from `pulled` (it dials `pulled` through this proxy)."""
    fed.proxies[(puller, pulled)].cut()


def heal_link(fed, puller, pulled):
    fed.proxies[(puller, pulled)].heal()


def link_problems(fed, node_id):
    """Every link into and out of `node_id` that is not connected or reports an error."""
    problems = []
    for x in fed.peers_of(node_id):
        for puller, pulled in ((x, node_id), (node_id, x)):
            link = fed[puller].link(pulled)
            if not link["connected"] or link["lastError"] is not None:
                problems.append(f"{puller} pulling from {pulled}: connected={link['connected']} "
                                f"lastError={link['lastError']!r} applied={link['appliedSequence']}/{link['peerSequence']}")
    return problems


def rejections(fed, node_id, reason):
    """{peer: (count, [details])} of the records `node_id` refused from its peers for `reason`."""
    out = {}
    for p in fed[node_id].replication()["peers"]:
        n = p["rejected"]["byReason"].get(reason, 0)
        if n:
            out[p["node"]] = (n, [r["detail"] for r in p["rejected"]["recent"] if r["reason"] == reason])
    return out


# --- what the nodes show, for assertion messages -----------------------------------------------

def describe(fed, ticket_id=None, tid=None) -> str:
    """Each node's view of the ticket and the transfer, its held purges and its links."""
    out = []
    for n in fed.all():
        out.append(f"--- {n.node_id} (organisation {n.org}){'' if n.alive() else ' NOT RUNNING'}")
        try:
            if ticket_id:
                t = n.ticket(ticket_id)
                out.append("  ticket: " + ("absent" if t is None else
                           f"owner={t['ownerNode']} status={t['status']} handlerStatus={t['handlerStatus']} "
                           f"assignee={t['assignee']} priority={t['priority']} version={t['version']}"))
                if t is not None:
                    history = n.get(f"/v1/tickets/{ticket_id}/history")["items"]
                    out.append("  owner and status history: " + ", ".join(
                        f"{h['field']}->{h['new']} by {h['node']}" for h in history if h["field"] in ("owner", "status")))
            if tid:
                tr = transfer(n, tid)
                out.append("  transfer: " + ("absent" if tr is None else
                           f"state={tr['state']} steps={[(s['state'], s['node']) for s in tr['steps']]} "
                           f"conflicts={[(s['state'], s['node']) for s in tr['conflicts']]} purge={tr.get('purge')}"))
            out.append(f"  purgesWaiting={n.get('/v1/health')['transfers']['purgesWaiting']}")
            for p in n.replication()["peers"]:
                out.append(f"  pulling from {p['node']}: connected={p['connected']} lastError={p['lastError']!r} "
                           f"applied={p['appliedSequence']}/{p['peerSequence']} rejected={p['rejected']['byReason']} "
                           f"recent={[(r['reason'], r['detail']) for r in p['rejected']['recent'][-3:]]}")
        except Exception as e:  # a node that does not answer is part of the picture
            out.append(f"  (no answer: {e!r})")
    return "\n".join(out)


def log_lines(fed, pattern=r"corrupt|refused|error", limit=8) -> str:
    """The node log lines matching `pattern` (the last `limit` of each node), but for the
    pulls the tests' own cuts ended ("transport failed")."""
    rx = re.compile(pattern, re.I)
    out = []
    for n in fed.all():
        hits = [line for line in n.tail(2_000_000).splitlines() if rx.search(line) and "transport failed" not in line]
        if hits:
            out.append(f"--- log of {n.node_id}: {len(hits)} lines matching /{pattern}/, the last {min(limit, len(hits))}:")
            out.extend("  " + h[:500] for h in hits[-limit:])
    return "\n".join(out)


def picture(fed, ticket_id, tid) -> str:
    return f"\n{describe(fed, ticket_id, tid)}\n{log_lines(fed)}"


def settle(fed, what, predicate, ticket_id=None, tid=None, timeout=SETTLE):
    """wait_until, failing with every node's view and the relevant log lines."""
    try:
        return wait_until(predicate, timeout, what, interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}{picture(fed, ticket_id, tid)}") from None


def quiesce(fed, ticket_id, tid, still=3.0, timeout=45.0):
    """Until nothing moves for `still` seconds: every node's view of the ticket and the
    transfer, its held purges and every link's positions. (A link that fails for good
    stays where it is, so this does not wait for links to be healthy.)"""
    def signature():
        sig = []
        for n in fed.all():
            t, tr = n.ticket(ticket_id), transfer(n, tid)
            sig.append((n.node_id, t and (t["ownerNode"], t["status"], t["handlerStatus"], t["assignee"], t["version"]),
                        tr and (tr["state"], len(tr["steps"])), n.get("/v1/health")["transfers"]["purgesWaiting"],
                        [(p["node"], p["appliedSequence"], p["peerSequence"]) for p in n.replication()["peers"]]))
        return sig
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = signature()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return
        time.sleep(0.25)
    raise AssertionError(f"the federation did not quiesce within {timeout} s{picture(fed, ticket_id, tid)}")


def no_purge_waits(fed, ticket_id, tid, timeout=20.0):
    """No node holds a purge back: a held purge is released at the home's next pull
    request, and a feed renews an idle stream for that after a heartbeat (5 s)."""
    settle(fed, "no purge waits (health: transfers.purgesWaiting 0 on every node)",
           lambda: all(fed[x].get("/v1/health")["transfers"]["purgesWaiting"] == 0 for x in fed.nodes),
           ticket_id, tid, timeout=timeout)


def delivered_to_the_fund(fed, ticket_id, tid):
    for x in FUND:
        settle(fed, f"{x} holds the ticket and sees the transfer DELIVERED",
               lambda: fed[x].ticket(ticket_id) is not None and state_of(fed[x], tid) == "DELIVERED", ticket_id, tid)


def owner_organisations(fed, ticket_id):
    """{node: organisation of the owner its view names} for every node holding the ticket."""
    out = {}
    for x in HOLDERS:
        t = fed[x].ticket(ticket_id)
        if t is not None:
            out[x] = fed[t["ownerNode"]].org if t["ownerNode"] in fed.nodes else f"? {t['ownerNode']}"
    return out


# --- timeline 1 --------------------------------------------------------------------------------

def test_a_purge_undone_by_a_concurrent_acceptance_leaves_every_link_of_the_fund_node_working(fed):
    """Timeline 1, "purge undone stops a fund node's replication for good".

    The office redirects its ticket to the pension fund; both fund nodes hold it. With
    pension-2 cut off, pension-1 rejects it (with a reason) and purges the ticket once the
    region has the rejection (no live transfer joins the fund to it any more), while
    pension-2's operator notes on the ticket and accepts it. pension-1 then pulls from
    pension-2 before anything else heals, so the ticket comes back to pension-1 (pension-2's
    note is a write of the fund that the purge did not hold) ahead of the acceptance, and is
    held there; then every link heals and the acceptance wins (acceptance beats a concurrent
    rejection). With pension-1 cut off, pension-1 returns it while pension-2 completes it;
    the region hears of the completion first; healed, completion wins.

    (Why the note: each node's feed carries the acceptance before the acceptor's ticket
    writes, so without a write of pension-2 made before its acceptance, pension-1 takes the
    ticket back through the now-live transfer, not by undoing its purge.)

    Expected, after quiescence: every link of pension-1 works (on both ends: connected, no
    lastError); nothing waits for a purge; a note written at pension-1 reaches pension-2 and
    both region 38 nodes; the replicas agree: one transfer, COMPLETED, with the same steps
    and conflicts on every holder, and the same ticket on the two fund nodes and on the two
    region nodes. Found: pension-2's pulls from pension-1 fail for good with
    `corrupt("feed names missing child …")` (the feed of pension-1 still names the history
    event its purge removed, and the purge's record is gone).
    """
    office = fed["irk-office-1"]
    p1, p2 = fed["pension-1"], fed["pension-2"]
    t = citizen_ticket(office)
    ticket = t["id"]
    tid = send(office, ticket)
    delivered_to_the_fund(fed, ticket, tid)

    # Split: pension-1 rejects and purges; pension-2 notes and accepts.
    fed.cut("pension-2")
    step(p1, tid, "reject", REJECT)
    settle(fed, "the office has the ticket back IN_WORK",
           lambda: state_of(office, tid) == "REJECTED" and office.ticket(ticket)["status"] == "IN_WORK", ticket, tid)
    settle(fed, "pension-1 purged the ticket",
           lambda: p1.ticket(ticket) is None and (transfer(p1, tid).get("purge") or {}).get("state") == "REJECTED",
           ticket, tid)
    assert state_of(p2, tid) == "DELIVERED", picture(fed, ticket, tid)
    fund_note = p2.add_note(ticket, "Фонд: запрошена выписка о стаже", actor="op-fund", visibility="shared")
    step(p2, tid, "accept")

    # pension-1 pulls from pension-2 first: the note (with the ticket's current owner)
    # arrives before the acceptance, so once pension-1 has the acceptance it has had both.
    heal_link(fed, "pension-1", "pension-2")
    settle(fed, "pension-1 sees the acceptance", lambda: state_of(p1, tid) == "ACCEPTED", ticket, tid)
    fed.heal("pension-2")
    settle(fed, "the ticket is back at pension-1 with pension-2's note",
           lambda: p1.ticket(ticket) is not None and fund_note["id"] in note_ids(p1, ticket), ticket, tid)
    settle(fed, "the region sees the acceptance, pension-2 the owner",
           lambda: all(state_of(fed[x], tid) == "ACCEPTED" and fed[x].ticket(ticket)["ownerNode"] == "pension-2"
                       for x in REGION), ticket, tid)

    # Split again: pension-1 returns, pension-2 completes; the region hears of the completion first.
    fed.cut("pension-1")
    step(p1, tid, "return", RETURN)
    step(p2, tid, "complete", ANSWER)
    settle(fed, "the region sees the completion", lambda: all(state_of(fed[x], tid) == "COMPLETED" for x in REGION),
           ticket, tid)
    fed.heal("pension-1")
    settle(fed, "pension-1 sees the completion", lambda: state_of(p1, tid) == "COMPLETED", ticket, tid)
    quiesce(fed, ticket, tid)

    # Every link of pension-1 works, on both ends (given the time a link takes to reconnect).
    try:
        wait_until(lambda: not link_problems(fed, "pension-1"), 15.0, "every link of pension-1 works", interval=0.2)
    except AssertionError:
        raise AssertionError("links of pension-1 fail after quiescence:\n  " + "\n  ".join(link_problems(fed, "pension-1"))
                             + picture(fed, ticket, tid)) from None
    no_purge_waits(fed, ticket, tid)
    # A write at pension-1 reaches the other fund node and both region 38 nodes.
    status, _, note = post(p1, f"/v1/tickets/{ticket}/notes", {"text": "Фонд: перерасчёт подтверждён", "visibility": "shared"},
                           actor="op-fund")
    assert status == 201, f"a note at pension-1 was refused: {status} {note}" + picture(fed, ticket, tid)
    for x in ["pension-2", *REGION]:
        settle(fed, f"pension-1's note reaches {x}", lambda: note["id"] in note_ids(fed[x], ticket), ticket, tid)
    # The replicas agree.
    def same_transfer():
        seen = {x: transfer(fed[x], tid) for x in HOLDERS}
        return len({repr((tr["state"], [s["id"] for s in tr["steps"]], [s["id"] for s in tr["conflicts"]]))
                    for tr in seen.values()}) == 1 and seen["pension-1"]["state"] == "COMPLETED"
    settle(fed, "every holder shows the transfer COMPLETED with the same steps and conflicts", same_transfer, ticket, tid)
    settle(fed, "the fund's two nodes hold the same ticket (view, notes, history)",
           lambda: identical_everywhere([p1, p2], ticket), ticket, tid)
    settle(fed, "the region's two nodes hold the same ticket (view, notes, history)",
           lambda: identical_everywhere([fed[x] for x in REGION], ticket), ticket, tid)
    assert len(set(owner_organisations(fed, ticket).values())) == 1, \
        f"the holders name different owners: {owner_organisations(fed, ticket)}" + picture(fed, ticket, tid)


# --- timeline 2 --------------------------------------------------------------------------------

def test_a_completion_beating_a_concurrent_return_leaves_the_ticket_with_the_fund(fed):
    """Timeline 2 (a), "ownership does not follow the outcome when the receiver's two
    nodes race".

    irk-main redirects its ticket to the pension fund; pension-1 accepts it (the fund owns
    it, both fund nodes see it). With pension-1 cut off, pension-2 returns it (the region
    takes it back: owner irk-main, IN_WORK) while pension-1 completes it. Healed,
    completion beats the concurrent return: the transfer ends COMPLETED.

    Expected (the lifecycle: a completed REDIRECT leaves the ticket with the receiver, and
    the sender shows TRANSFERRED_OUT for ACCEPTED and COMPLETED; "no reachable state leaves
    a ticket without an owner who can edit it"): every holder names the same owner, a node
    of the fund; the region shows TRANSFERRED_OUT (read-only) exactly because the fund owns
    it; the owner organisation's operator can PATCH the ticket on the owner node. Found:
    every holder has it owned by the region, which shows it read-only as TRANSFERRED_OUT,
    while the fund does not own it: nobody can edit it.
    """
    region = fed["irk-main"]
    p1, p2 = fed["pension-1"], fed["pension-2"]
    ticket = citizen_ticket(region)["id"]
    tid = send(region, ticket)
    delivered_to_the_fund(fed, ticket, tid)
    step(p1, tid, "accept")
    settle(fed, "every holder sees the acceptance, pension-1 the owner",
           lambda: all(state_of(fed[x], tid) == "ACCEPTED" and fed[x].ticket(ticket)["ownerNode"] == "pension-1"
                       for x in HOLDERS), ticket, tid)

    fed.cut("pension-1")
    step(p2, tid, "return", RETURN)
    settle(fed, "the region has the ticket back (owner irk-main, IN_WORK)",
           lambda: state_of(region, tid) == "RETURNED" and region.ticket(ticket)["ownerNode"] == "irk-main"
           and region.ticket(ticket)["status"] == "IN_WORK", ticket, tid)
    step(p1, tid, "complete", ANSWER)
    fed.heal("pension-1")
    settle(fed, "every node that holds the transfer sees it COMPLETED",
           lambda: all(state_of(fed[x], tid) == "COMPLETED" for x in HOLDERS), ticket, tid)
    quiesce(fed, ticket, tid)

    owners = owner_organisations(fed, ticket)
    assert set(owners) >= set(REGION) and len(set(owners.values())) == 1, \
        f"the holders name different owner organisations: {owners}" + picture(fed, ticket, tid)
    owner_org = next(iter(owners.values()))
    assert owner_org == "pension", \
        f"the transfer is COMPLETED but the fund does not own the ticket: owners {owners}" + picture(fed, ticket, tid)
    for x in REGION:
        v = fed[x].ticket(ticket)
        assert (v["status"] == "TRANSFERRED_OUT") == (owner_org == "pension"), \
            f"{x} shows {v['status']} while organisation {owner_org} owns the ticket" + picture(fed, ticket, tid)
    owner = fed[fed[FUND[0]].ticket(ticket)["ownerNode"]]
    status, _, body = owner.request("PATCH", f"/v1/tickets/{ticket}", {"priority": "high"}, headers=owner.auth("op-fund"))
    assert status == 200, f"the owner's operator cannot edit the ticket on {owner.node_id}: {status} {body}" \
        + picture(fed, ticket, tid)
    no_purge_waits(fed, ticket, tid)


def test_two_fund_nodes_each_accepting_and_returning_give_the_ticket_back_to_the_region(fed):
    """Timeline 2 (b).

    irk-main redirects its ticket to the pension fund; both fund nodes hold it. With
    pension-1 cut off, pension-2 accepts and returns it (the region takes it back: owner
    irk-main, IN_WORK), and then pension-1 accepts and returns it too. Healed, the
    transfer ends RETURNED.

    Expected: the ticket is region 38's again on every node that holds it: owner irk-main
    (its sender), IN_WORK, and the region's operator can edit it; the fund's nodes purge
    their copies (nothing waits after quiescence). Found: region 38 shows it owned by
    pension-1 and REGISTERED (pension-1's acceptance, later than the region's taking it
    back, wins the owner and status registers, and nothing takes them back since the
    transfer was RETURNED already).
    """
    region = fed["irk-main"]
    p1, p2 = fed["pension-1"], fed["pension-2"]
    ticket = citizen_ticket(region)["id"]
    tid = send(region, ticket)
    delivered_to_the_fund(fed, ticket, tid)

    fed.cut("pension-1")
    step(p2, tid, "accept")
    step(p2, tid, "return", RETURN)
    settle(fed, "the region has the ticket back (owner irk-main, IN_WORK)",
           lambda: all(state_of(fed[x], tid) == "RETURNED" and fed[x].ticket(ticket)["ownerNode"] == "irk-main"
                       and fed[x].ticket(ticket)["status"] == "IN_WORK" for x in REGION), ticket, tid)
    step(p1, tid, "accept")
    step(p1, tid, "return", RETURN)
    fed.heal("pension-1")
    settle(fed, "every node that holds the transfer sees it RETURNED",
           lambda: all(state_of(fed[x], tid) == "RETURNED" for x in HOLDERS), ticket, tid)
    quiesce(fed, ticket, tid)

    views = {x: fed[x].ticket(ticket) for x in REGION}
    shown = {x: (v["ownerNode"], v["status"]) for x, v in views.items()}
    assert shown == dict.fromkeys(REGION, ("irk-main", "IN_WORK")), \
        f"the RETURNED ticket is not region 38's, IN_WORK: {shown}" + picture(fed, ticket, tid)
    status, _, body = region.request("PATCH", f"/v1/tickets/{ticket}", {"priority": "high"}, headers=region.auth("op-ivanova"))
    assert status == 200, f"the region's operator cannot edit its returned ticket: {status} {body}" + picture(fed, ticket, tid)
    no_purge_waits(fed, ticket, tid)
    assert all(fed[x].ticket(ticket) is None for x in FUND), "a fund node keeps the returned ticket" + picture(fed, ticket, tid)


# --- timeline 3 --------------------------------------------------------------------------------

def test_the_funds_owner_writes_are_admitted_by_the_region_whatever_they_arrive_after(fed):
    """Timeline 3, "admission depends on arrival order".

    pension-2 cannot reach irk-main (both directions) from before the redirect, so it
    receives the ticket and the transfer from pension-1: its feed indexes the ticket for
    region 38 ahead of the transfer's later steps. irk-main redirects its ticket to the
    fund; then irk-main can no longer pull from pension-1, and pension-1 accepts the
    ticket and at once takes it into work (PATCH status IN_WORK and assignee). pension-2
    has all of it. Then irk-main pulls from pension-2 first: every entry is sent with the
    ticket's current authority registers, so the fund's owner write (pension-1's
    acceptance made it the owner) arrives on the ticket entry ahead of the acceptance
    step. Then everything heals.

    Expected: the region admits the fund's writes whatever they arrive after: no record or
    part refused as `not_authorised` on any link of region 38's nodes (GET
    /v1/replication: `rejected.byReason`), and after quiescence both region nodes show the
    fund's writes: owner pension-1, TRANSFERRED_OUT, handlerStatus IN_WORK (and the
    assignee the fund set). Found: irk-main refuses `registers[owner]: organisation
    pension of pension-1 does not write it` from pension-2.
    """
    region = fed["irk-main"]
    p1, p2 = fed["pension-1"], fed["pension-2"]
    cut_link(fed, "irk-main", "pension-2")
    cut_link(fed, "pension-2", "irk-main")
    ticket = citizen_ticket(region)["id"]
    tid = send(region, ticket)
    delivered_to_the_fund(fed, ticket, tid)
    settle(fed, "the region sees the delivery", lambda: state_of(region, tid) == "DELIVERED", ticket, tid)

    cut_link(fed, "irk-main", "pension-1")
    step(p1, tid, "accept")
    p1.patch(ticket, {"status": "IN_WORK", "assignee": "op-fund"}, actor="op-fund")
    settle(fed, "pension-2 holds the acceptance and the fund's edit",
           lambda: state_of(p2, tid) == "ACCEPTED" and p2.ticket(ticket)["assignee"] == "op-fund", ticket, tid)
    assert state_of(region, tid) == "DELIVERED", picture(fed, ticket, tid)

    heal_link(fed, "irk-main", "pension-2")
    settle(fed, "irk-main has the acceptance from pension-2", lambda: state_of(region, tid) == "ACCEPTED", ticket, tid)
    fed.heal("irk-main")
    fed.heal("pension-2")
    quiesce(fed, ticket, tid)

    refused = {x: rejections(fed, x, "not_authorised") for x in REGION}
    assert not any(refused.values()), \
        f"region 38 refused the fund's writes as not_authorised: {refused}" + picture(fed, ticket, tid)
    shown = {x: {k: fed[x].ticket(ticket)[k] for k in ("ownerNode", "status", "handlerStatus", "assignee")} for x in REGION}
    expected = {"ownerNode": "pension-1", "status": "TRANSFERRED_OUT", "handlerStatus": "IN_WORK", "assignee": "op-fund"}
    assert shown == dict.fromkeys(REGION, expected), \
        f"the region does not show the fund's writes: {shown}" + picture(fed, ticket, tid)
