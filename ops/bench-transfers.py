#!/usr/bin/env python3
"""Transfer benchmarks against real `ekc node` processes on loopback (127.0.0.1 only),
replicating over HTTP/2 with mutual TLS, every commit fsync'd. Python 3 standard library
only. Prints figures, asserts nothing.

    python3 ops/bench-transfers.py --bin .build-release/release [--skip fanin,scoping] [--seconds 60] ...

Each phase starts its own nodes from a topology file it writes (same shape as
cluster/dev-federation.json: organisations, nodes with role, listen and replication
addresses on free ports in 20000-31999, data directories, development certificates from
ops/dev-ca.sh) in a temporary directory, prints its figures as soon as it is done and
stops its nodes (SIGTERM, then SIGKILL after 15 s). Every node is stopped on Ctrl-C,
SIGTERM or an error too (and gets SIGTERM from the kernel if this script is killed).
The temporary directory with the node logs is removed, unless --keep or a phase failed.
Operator API requests use HTTP/1.1 keep-alive connections (http.client), one per thread
and node. Latencies are nearest-rank percentiles. Lines that start with two spaces are
context for the figure above them; `  ! ...` lines report what went wrong (refused
requests, transfers that never arrived, a node that exited, anything in a node's log).

transfer.roundtrip   p50 / p99 / max ms (n at R/s)
    One regional centre (irk-main, organisation 38) and one pension fund node
    (pension-1). Before the timed phase: both nodes up and linked, the REGISTERED
    tickets created (phone tickets are REGISTERED at once), 10 warm-up transfers sent
    and accepted. Timed phase: a sender thread POSTs a REDIRECT to `pension` for one
    ticket every 1/R s (--rate R, default 20/s, for --seconds, default 30; on a fixed
    schedule: after a slow POST the next ones go at once until it is caught up). An acceptor thread polls the fund's inbox
    (`GET /v1/transfers?direction=in&state=DELIVERED&limit=100`), POSTs
    `/v1/transfers/{id}/accept` for each transfer it lists, and sleeps
    --accept-poll-ms (default 10 ms) after a poll that found nothing. A watcher thread
    polls the region's outbox (`GET /v1/transfers?direction=out&state=ACCEPTED`, from a
    cursor a few transfers behind the oldest one not yet seen accepted) every
    --watch-poll-ms (default 5 ms). Each figure is the time from the region's 201 to
    the SENT->DELIVERED (replication region->fund, the fund's acknowledgement),
    acceptance and ACCEPTED (replication fund->region) round trip becoming visible at the
    region. It INCLUDES both polling intervals: up to ~10 ms waiting for the acceptor's
    next poll and up to ~5 ms for the watcher's, plus the time of their requests.
    Context: the POST's own latency, and both processes' CPU while sending (utime+stime
    from /proc/PID/stat over the sending time, as % of one core; serving the polls
    included).

fanin.lag            p50 / p99 / max ms (n from K regions at R/s in all)
fanin.delivered      p50 / p99 / max ms
    K region organisations (--regions, default 20; codes 01..K, one regional-centre
    node each, r01-main...) and one pension fund node. Every centre links with the fund
    and with every other centre (those links carry nothing here). Timed phase: the
    regions send REDIRECTs to `pension` at --fanin-rate R in all (default 40/s: 2/s
    each), interleaved so the aggregate rate is steady, for --seconds. `fanin.lag` is
    the time from a region's 201 to the transfer being readable on the fund's node: a
    poller thread GETs `/v1/transfers/{id}` on the fund for every transfer sent and not
    yet seen there, every --fanin-poll-ms (default 10 ms), so the figure includes up to
    that interval and the time of the GETs. (The fund's inbox is ordered by due time
    and arrivals from K regions interleave, so tailing the list would re-read a wide
    window every poll; the pending transfers are usually a few tiny GETs per poll, most
    of them 404.) A transfer counts as arrived when the fund shows it past SENT: the
    fund writes its DELIVERED step, and so lists it in its inbox as DELIVERED, in the
    commit that gives it both the transfer and its ticket. `fanin.delivered` is the
    fund's own DELIVERED stamp (`deliveredAt`, ms, taken while applying the batch,
    before its commit's fsync) minus the region's 201: the same path without polling
    or the fund's fsync, on the same clock (it can be slightly negative: the region's
    feed may reach the fund before the 201 reaches this script).
fanin.fund.cpu       % of one core
    The fund process's utime+stime (/proc/PID/stat) over the timed phase divided by its
    wall time. It includes serving the lag poller's GETs.
fanin.fund.rss       max MiB
    The fund's VmRSS (/proc/PID/status) sampled every 0.5 s during the timed phase and
    the drain after it: the maximum (and the value before the phase). It includes the
    store's mapped pages the process touched.
fanin.regions.rss    MiB in all
    The K region processes' VmRSS summed (maximum of the sums sampled), for context,
    with their CPU over the timed phase together.
    Context: the POST's latency at the regions, and the store commits (write
    transactions, each fsync'd; `ekc_store_commit_group_size_count` in /metrics) the
    region nodes and the fund made during the timed phase. A node commits not only its
    own edits and the records it merges but also a checkpoint whenever a linked peer's
    feed moves past entries outside its scope, so a commit at one centre makes the
    other K-1 centres (and the fund) commit too: the commits per transfer grow with K.

scoping.office       tickets/s
scoping.fund         tickets/s
scoping.ratio        fund/office
    Cost of scoping: the catch-up of a fund node against that of a node of the same
    organisation, over the same tickets. Topology: irk-main (regional-centre of 38),
    irk-office-1 (remote-office of 38) and pension-1 (fund). With only irk-main
    running, N tickets (--tickets, default 5,000; REGISTERED) are created and each is
    sent a REDIRECT to `pension` (so every ticket is in the fund's scope), by several
    threads. Then the office and the fund, both with empty data directories, are
    started in the same instant, and each node's `GET /v1/health` `store.tickets` is
    polled every 10 ms until it holds all N. tickets/s = N / seconds from process start
    (the start-up, a second or less, is included for both). The office receives every
    ticket whole (every register, note and history event: it is the same organisation),
    while the fund receives what the transfers put in scope (the transfer, its ticket
    with the scoped citizen fields, the history a partner needs) and additionally
    writes, for each transfer, a DELIVERED acknowledgement step on the transfer (in the
    commit that merges it; it then replicates back to the centre, and on to the office). Both catch up at once on
    this 2-core machine, from the same centre, so they compete for CPU and the disk:
    the ratio, not the absolute rates, is the figure. The fund's inbox is checked
    afterwards: all N should be DELIVERED.

Options scale every phase (--seconds, --rate, --fanin-rate, --regions, --tickets);
--skip roundtrip,fanin,scoping leaves phases out.
"""
import argparse
import ctypes
import http.client
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEV_CA = HERE / "dev-ca.sh"
ACTOR = "op-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

STOP = threading.Event()  # set on the way out: every worker thread ends


class BenchError(Exception):
    pass


def log(msg: str):
    print(msg, flush=True)


def note(msg: str):
    """Progress, on stderr so that stdout keeps the figures."""
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- statistics ------------------------------------------------------------------------

def pct(values, q):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def lat(values_s):
    """'p50 x ms  p99 y ms  max z ms' of latencies given in seconds."""
    if not values_s:
        return "no samples"
    ms = [v * 1000 for v in values_s]
    return f"p50 {pct(ms, .5):.1f} ms  p99 {pct(ms, .99):.1f} ms  max {max(ms):.1f} ms"


# --- HTTP ----------------------------------------------------------------------------------

class Api:
    """The operator API of one node over keep-alive HTTP/1.1, one connection per thread."""

    _local = threading.local()

    def __init__(self, port: int, name: str):
        self.port = port
        self.name = name
        self.token = None  # a supervisor+ops token of the node's organisation, set when the cluster is written

    def _conn(self):
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get(self.port)
        if c is None:
            c = conns[self.port] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return c

    def _drop(self):
        c = self._local.conns.pop(self.port, None)
        if c is not None:
            c.close()

    def call(self, method: str, path: str, body=None):
        """(status, decoded JSON or None). Reconnects once when a kept-alive connection
        turns out closed."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": "Bearer " + self.token}
        if data is not None:
            headers["content-type"] = "application/json"
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, OSError):
                self._drop()
                if attempt == 1 or STOP.is_set():
                    raise
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        return r.status, decoded

    def get(self, path: str):
        status, body = self.call("GET", path)
        if status != 200:
            raise BenchError(f"{self.name}: GET {path} -> {status} {body}")
        return body


def commits(api: Api) -> int:
    """The store's commits so far (write transactions, each fsync'd): the count of the
    `ekc_store_commit_group_size` summary in /metrics."""
    status, text = api.call("GET", "/metrics")
    if status != 200 or not isinstance(text, str):
        return 0
    for line in text.splitlines():
        if line.startswith("ekc_store_commit_group_size_count"):
            return int(float(line.split()[-1]))
    return 0


def error_code(body):
    try:
        return body["error"]["code"]
    except (TypeError, KeyError):
        return str(body)[:80]


def parallel(tasks, threads: int, what: str):
    """Runs callables on `threads` threads; returns their results in order; the first
    exception is raised once all threads ended."""
    results = [None] * len(tasks)
    errors = []
    nxt = [0]
    lock = threading.Lock()

    def work():
        while not STOP.is_set() and not errors:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(tasks):
                return
            try:
                results[i] = tasks[i]()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    ts = [threading.Thread(target=work, name=f"{what}-{k}", daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        while t.is_alive():
            t.join(0.2)
    if errors:
        raise errors[0]
    if STOP.is_set():
        raise KeyboardInterrupt
    return results


# --- tickets and transfers -------------------------------------------------------------------

TICKET = {"channel": "phone", "topic": "pensions", "subject": "Перерасчёт пенсии",
          "statement": "Прошу пересчитать пенсию с учётом стажа, подтверждённого архивной справкой.",
          "legalRegime": "consultation"}
REDIRECT = {"to": "pension", "kind": "REDIRECT",
            "reason": {"code": "pension-recalc", "text": "Перерасчёт пенсии — вопрос фонда"}, "scope": ["ref", "name"]}


def create_registered(api: Api, n: int) -> str:
    """Creates one REGISTERED ticket (a phone ticket is REGISTERED at once; others are
    registered with a PATCH); returns its id."""
    body = dict(TICKET, citizen={"ref": f"CIT-B{n}", "name": "Иванов Иван Иванович"})
    status, t = api.call("POST", "/v1/tickets", body)
    if status != 201:
        raise BenchError(f"{api.name}: POST /v1/tickets -> {status} {t}")
    if t["status"] != "REGISTERED":
        status, t = api.call("PATCH", f"/v1/tickets/{t['id']}", {"status": "REGISTERED"})
        if status != 200:
            raise BenchError(f"{api.name}: PATCH status REGISTERED -> {status} {t}")
    return t["id"]


def send_redirect(api: Api, ticket_id: str):
    """(status, body) of POST /v1/tickets/{id}/transfers."""
    return api.call("POST", f"/v1/tickets/{ticket_id}/transfers", REDIRECT)


def tickets(api_: Api, count: int, threads: int, base: int = 0):
    return parallel([lambda k=k: create_registered(api_, base + k) for k in range(count)], threads, "create")


# --- processes ---------------------------------------------------------------------------------

def _die_with_parent():
    """In the child: SIGTERM when the bench process dies, however it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Ports:
    """Free loopback ports in 20000-31999 (below the kernel's ephemeral range), none twice."""

    def __init__(self):
        self.used = set()
        self.rng = random.Random()

    def take(self) -> int:
        for _ in range(5000):
            p = self.rng.randrange(20000, 32000)
            if p in self.used:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            finally:
                s.close()
            self.used.add(p)
            return p
        raise BenchError("no free port in 20000-31999")


class Node:
    def __init__(self, spec: dict, api_port: int, repl_port: int, data: Path, log_path: Path):
        self.id = spec["id"]
        self.spec = spec
        self.api_port = api_port
        self.repl_port = repl_port
        self.data = data
        self.log_path = log_path
        self.proc = None
        self.api = Api(api_port, self.id)
        self.started_at = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=1500):
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class Cluster:
    """One phase's nodes: its topology file, its processes, their logs."""

    def __init__(self, bench: "Bench", name: str, organisations, specs):
        self.bench = bench
        self.root = bench.root / name
        self.root.mkdir(parents=True)
        self.nodes = {}
        for s in specs:
            self.nodes[s["id"]] = Node(s, bench.ports.take(), bench.ports.take(), self.root / "data" / s["id"],
                                       self.root / f"{s['id']}.log")
        certs = bench.certs
        # Operators sign in with a development identity provider per organisation.
        idp = bench.root / "dev-idp"
        organisations = [dict(o, identityProvider={"development": str(idp)}) for o in organisations]
        topology = {
            "federation": f"bench-transfers-{name}",
            "organisations": organisations,
            "nodes": [{
                "id": n.id, "organisation": n.spec["organisation"], "role": n.spec["role"],
                "utcOffsetMinutes": n.spec.get("utcOffsetMinutes", 180), "numberSeries": n.spec.get("numberSeries", 0),
                "listen": f"127.0.0.1:{n.api_port}", "replication": f"127.0.0.1:{n.repl_port}", "data": str(n.data),
                "identity": {"cert": str(certs / f"{n.id}.pem"), "key": str(certs / f"{n.id}.key"),
                             "ca": str(certs / "ca.pem")},
            } for n in self.nodes.values()],
        }
        self.config = self.root / "topology.json"
        self.config.write_text(json.dumps(topology, ensure_ascii=False, indent=1))
        tokens = {}
        for n in self.nodes.values():
            org = n.spec["organisation"]
            if org not in tokens:
                r = subprocess.run([str(bench.ekc), "login", "--config", str(self.config), "--org", org, "--user", ACTOR,
                                    "--role", "supervisor", "--role", "ops", "--print"],
                                   capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    raise BenchError(f"ekc login for {org} failed: {r.stderr}")
                tokens[org] = r.stdout.strip()
            n.api.token = tokens[org]
        bench.clusters.append(self)

    def __getitem__(self, node_id) -> Node:
        return self.nodes[node_id]

    def launch(self, node: Node):
        """Starts the process (from the main thread: the parent-death signal is tied to
        the thread that forks)."""
        logf = open(node.log_path, "ab")
        try:
            node.proc = subprocess.Popen(
                [str(self.bench.ekc), "node", "start", "--config", str(self.config), "--node-id", node.id,
                 "--log-level", self.bench.args.log_level],
                cwd=str(self.root), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            logf.close()
        node.started_at = time.monotonic()

    def wait_healthy(self, nodes, timeout=60.0):
        deadline = time.monotonic() + timeout
        for n in nodes:
            while True:
                if not n.alive():
                    raise BenchError(f"{n.id} exited with {n.proc.returncode}:\n{n.tail()}")
                try:
                    status, _ = n.api.call("GET", "/v1/health")
                    if status == 200:
                        break
                except (OSError, http.client.HTTPException):
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"{n.id} not healthy within {timeout:.0f} s:\n{n.tail()}")
                time.sleep(0.05)

    def start(self, ids=None, timeout=60.0):
        nodes = [self.nodes[i] for i in (ids or list(self.nodes))]
        for n in nodes:
            self.launch(n)
        self.wait_healthy(nodes, timeout)
        return nodes

    def wait_linked(self, ids, timeout=60.0, peers_of=None):
        """Until every link of each node in `ids` (to the nodes `peers_of(id)` names, or
        to every peer it lists) reports connected. Returns the links still down after
        `timeout` (then the phase goes on and says so)."""
        deadline = time.monotonic() + timeout
        while True:
            down = []
            for i in ids:
                want = peers_of(i) if peers_of else None
                for p in self.nodes[i].api.get("/v1/replication")["peers"]:
                    if (want is None or p["node"] in want) and not p["connected"]:
                        down.append(f"{i}->{p['node']}")
            if not down or time.monotonic() > deadline:
                return down
            self.check_alive()
            time.sleep(0.1)

    def check_alive(self):
        for n in self.nodes.values():
            if n.proc is not None and n.proc.poll() is not None:
                raise BenchError(f"{n.id} exited with {n.proc.returncode}:\n{n.tail()}")

    def stop(self):
        procs = [n for n in self.nodes.values() if n.alive()]
        for n in procs:
            try:
                n.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 15
        for n in procs:
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                note(f"{n.id} did not stop within 15 s of SIGTERM: SIGKILL")
                n.proc.kill()
                n.proc.wait()

    def log_report(self):
        """A context line per node whose log has anything (the nodes log at warning)."""
        for n in self.nodes.values():
            if n.proc is None:
                continue
            lines = [line for line in n.tail(10_000_000).splitlines()
                     if line.strip() and not line.startswith(f"ekc node {n.id} listening on ")]
            rc = n.proc.returncode
            if rc not in (None, 0, -signal.SIGTERM):
                log(f"  ! {n.id} exited with {rc}")
            if lines:
                log(f"  ! {n.id} log: {len(lines)} lines; last: {lines[-1][:300]}")


# --- the bench -----------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        b = Path(args.bin)
        self.ekc = (b / "ekc") if b.is_dir() else b
        if not os.access(self.ekc, os.X_OK):
            raise BenchError(f"no ekc executable at {self.ekc} (--bin is the build directory, e.g. .build-release/release)")
        self.ekc = self.ekc.resolve()
        self.root = Path(args.workdir or tempfile.mkdtemp(prefix="ekc-bench-transfers.", dir="/tmp")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.certs = self.root / "certs"
        self.ports = Ports()
        self.clusters = []

    def make_certs(self, ids):
        r = subprocess.run([str(DEV_CA), str(self.certs), *ids], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise BenchError(f"dev-ca.sh failed: {r.stderr}")

    def stop_all(self):
        for c in self.clusters:
            c.stop()


def run_threads(threads):
    for t in threads:
        t.start()


def join_threads(threads, timeout=10):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def sleep_until(t: float):
    while not STOP.is_set():
        d = t - time.monotonic()
        if d <= 0:
            return
        time.sleep(min(d, 0.2))


# --- 1. round trip -----------------------------------------------------------------------------

def phase_roundtrip(bench: Bench):
    a = bench.args
    c = Cluster(bench, "roundtrip",
                [{"id": "38", "kind": "region", "name": "Иркутская область"},
                 {"id": "pension", "kind": "fund", "name": "Социальный фонд России: пенсии", "numbering": "pf"}],
                [{"id": "irk-main", "organisation": "38", "role": "regional-centre", "utcOffsetMinutes": 480},
                 {"id": "pension-1", "organisation": "pension", "role": "fund"}])
    try:
        c.start()
        down = c.wait_linked(["irk-main", "pension-1"])
        if down:
            log(f"  ! links still down after 60 s: {', '.join(down)}")
        region, fund = c["irk-main"].api, c["pension-1"].api
        n = max(1, round(a.rate * a.seconds))
        warm = 10
        t0 = time.monotonic()
        ids = tickets(region, n + warm, a.threads)
        note(f"roundtrip: {n + warm} REGISTERED tickets in {time.monotonic() - t0:.1f} s")

        lock = threading.Lock()
        posted = []          # (transfer id, monotonic time of the 201), in sending order
        index = {}           # transfer id -> position in `posted`
        seen = {}            # transfer id -> round trip (s)
        late = [0]           # found by the fallback GET, not the outbox listing
        accepted = [0]
        accept_errors = {}
        polls = {"accept": 0, "watch": 0}
        failures = []

        def acceptor():
            try:
                while not STOP.is_set() and not done.is_set():
                    page = fund.get("/v1/transfers?direction=in&state=DELIVERED&limit=100")
                    polls["accept"] += 1
                    for t in page["items"]:
                        status, body = fund.call("POST", f"/v1/transfers/{t['id']}/accept", {})
                        if status == 200:
                            accepted[0] += 1
                        else:
                            k = f"{status} {error_code(body)}"
                            accept_errors[k] = accept_errors.get(k, 0) + 1
                    if not page["items"]:
                        time.sleep(a.accept_poll_ms / 1000)
            except BaseException as e:  # noqa: BLE001
                failures.append(e)

        def watcher():
            try:
                prefix = 0
                last_fallback = time.monotonic()
                while not STOP.is_set() and not done.is_set():
                    with lock:
                        while prefix < len(posted) and posted[prefix][0] in seen:
                            prefix += 1
                        cursor = posted[prefix - 4][0] if prefix >= 4 else None
                        pending = len(posted) - prefix
                    if pending:
                        path = "/v1/transfers?direction=out&state=ACCEPTED&limit=500"
                        q = path + (f"&cursor={cursor}" if cursor else "")
                        while q:
                            page = region.get(q)
                            now = time.monotonic()
                            polls["watch"] += 1
                            with lock:
                                for t in page["items"]:
                                    i = index.get(t["id"])
                                    if i is not None and t["id"] not in seen:
                                        seen[t["id"]] = now - posted[i][1]
                            q = path + f"&cursor={page['next']}" if page["next"] else None
                        # A transfer the listing should have shown but did not: asked for alone.
                        if now - last_fallback > 1.0:
                            last_fallback = now
                            with lock:
                                old = [(tid, t) for tid, t in posted[prefix:] if tid not in seen and now - t > 2.0]
                            for tid, t_post in old:
                                tr = region.get(f"/v1/transfers/{tid}")
                                if tr["state"] == "ACCEPTED":
                                    with lock:
                                        seen[tid] = time.monotonic() - t_post
                                        late[0] += 1
                    time.sleep(a.watch_poll_ms / 1000)
            except BaseException as e:  # noqa: BLE001
                failures.append(e)

        done = threading.Event()
        threads = [threading.Thread(target=acceptor, name="acceptor", daemon=True),
                   threading.Thread(target=watcher, name="watcher", daemon=True)]
        run_threads(threads)

        post_times = []
        send_errors = {}

        def send(ticket_id, timed):
            t1 = time.monotonic()
            status, body = send_redirect(region, ticket_id)
            t2 = time.monotonic()
            if status != 201:
                k = f"{status} {error_code(body)}"
                send_errors[k] = send_errors.get(k, 0) + 1
                return
            if timed:
                post_times.append(t2 - t1)
            with lock:
                index[body["id"]] = len(posted)
                posted.append((body["id"], t2))

        # Warm-up: 10 transfers, accepted and seen, not counted.
        for tid in ids[:warm]:
            send(tid, False)
        deadline = time.monotonic() + 30
        while len(seen) < warm and time.monotonic() < deadline and not failures:
            time.sleep(0.05)
        if len(seen) < warm:
            raise BenchError(f"warm-up: {len(seen)} of {warm} transfers seen ACCEPTED at the region within 30 s "
                             f"(accepted at the fund: {accepted[0]}, errors: {accept_errors or send_errors or failures})")
        base = len(posted)

        def timed_left():
            with lock:
                return sum(1 for tid, _ in posted[base:] if tid not in seen)

        note(f"roundtrip: {n} REDIRECTs at {a.rate:g}/s")
        cpu0 = {x: proc_cpu_seconds(c[x].proc.pid) for x in ("irk-main", "pension-1")}
        start = time.monotonic()
        for k, tid in enumerate(ids[warm:]):
            if failures:
                break
            sleep_until(start + k / a.rate)
            send(tid, True)
        sent_for = time.monotonic() - start
        cpu = {x: 100 * (proc_cpu_seconds(c[x].proc.pid) - cpu0[x]) / sent_for for x in cpu0}
        deadline = time.monotonic() + a.drain
        while time.monotonic() < deadline and not failures and timed_left():
            time.sleep(0.05)
        done.set()
        join_threads(threads)
        if failures:
            raise failures[0]
        c.check_alive()
        with lock:
            rt = [seen[tid] for tid, _ in posted[base:] if tid in seen]
            missing = [tid for tid, _ in posted[base:] if tid not in seen]
        log(f"transfer.roundtrip   {lat(rt)}  (n={len(rt)} at {a.rate:g}/s)")
        log(f"  POST of a REDIRECT at the region: {lat(post_times)}; sent {len(posted) - base} in {sent_for:.1f} s "
            f"({(len(posted) - base) / sent_for:.1f}/s); acceptor polls {polls['accept']}, watcher polls {polls['watch']}")
        log(f"  CPU while sending: irk-main {cpu['irk-main']:.1f} %, pension-1 {cpu['pension-1']:.1f} % of one core "
            f"(their polling included)")
        if send_errors:
            log(f"  ! refused REDIRECTs: {send_errors}")
        if accept_errors:
            log(f"  ! refused accepts: {accept_errors}")
        if late[0]:
            log(f"  ! {late[0]} found ACCEPTED by GET /v1/transfers/{{id}} but not by the outbox listing")
        if missing:
            waited = time.monotonic() - start - sent_for
            states = {}
            for tid in missing[:50]:
                s = region.get(f"/v1/transfers/{tid}")["state"]
                states[s] = states.get(s, 0) + 1
            log(f"  ! {len(missing)} not ACCEPTED at the region {waited:.0f} s after the last was sent; "
                f"states of up to 50 of them at the region: {states}; e.g. {missing[0]}")
    finally:
        c.stop()
        c.log_report()


# --- 2. fan-in -----------------------------------------------------------------------------------

def region_code(i):
    return f"{i:02d}"


def phase_fanin(bench: Bench):
    a = bench.args
    codes = [region_code(i) for i in range(1, a.regions + 1)]
    orgs = [{"id": code, "kind": "region"} for code in codes]
    orgs.append({"id": "pension", "kind": "fund", "name": "Социальный фонд России: пенсии", "numbering": "pf"})
    specs = [{"id": "pension-1", "organisation": "pension", "role": "fund"}]
    specs += [{"id": f"r{code}-main", "organisation": code, "role": "regional-centre"} for code in codes]
    c = Cluster(bench, "fanin", orgs, specs)
    try:
        t0 = time.monotonic()
        c.start()
        regions = [c[f"r{code}-main"] for code in codes]
        fund_node = c["pension-1"]
        fund = fund_node.api
        region_ids = [r.id for r in regions]
        down = c.wait_linked(["pension-1"] + region_ids, timeout=90)
        note(f"fanin: {len(c.nodes)} nodes up in {time.monotonic() - t0:.1f} s")
        if down:
            log(f"  ! {len(down)} links still down after 90 s: {', '.join(down[:10])}")

        total = max(1, round(a.fanin_rate * a.seconds))
        per_region = [len(range(k, total, len(regions))) for k in range(len(regions))]
        t0 = time.monotonic()
        tasks = []
        for k, r in enumerate(regions):
            for j in range(per_region[k] + 1):  # + 1 for the warm-up
                tasks.append(lambda api=r.api, j=j, k=k: create_registered(api, k * 100_000 + j))
        ids = parallel(tasks, a.threads, "create")
        pool = {}
        p = 0
        for k, r in enumerate(regions):
            pool[k] = ids[p:p + per_region[k] + 1]
            p += per_region[k] + 1
        note(f"fanin: {len(ids)} REGISTERED tickets on {len(regions)} regions in {time.monotonic() - t0:.1f} s")

        lock = threading.Lock()
        pending = {}    # transfer id -> monotonic time of the region's 201, not yet seen at the fund
        sent_wall = {}  # transfer id -> wall time (ms) of the region's 201
        lag = {}        # transfer id -> seen at the fund (s after the 201)
        stamped = {}    # transfer id -> deliveredAt - 201 (s)
        counted = set()
        failures = []
        poll_count = [0]
        done = threading.Event()

        def poller():
            try:
                while not STOP.is_set() and not done.is_set():
                    with lock:
                        todo = list(pending.items())
                    for tid, t_post in todo:
                        status, body = fund.call("GET", f"/v1/transfers/{tid}")
                        poll_count[0] += 1
                        now = time.monotonic()
                        if status == 200 and body["state"] != "SENT":
                            with lock:
                                pending.pop(tid, None)
                                lag[tid] = now - t_post
                                if body.get("deliveredAt"):
                                    stamped[tid] = (iso_ms(body["deliveredAt"]) - sent_wall[tid]) / 1000
                        elif status not in (200, 404):
                            raise BenchError(f"pension-1: GET /v1/transfers/{tid} -> {status} {body}")
                    time.sleep(a.fanin_poll_ms / 1000)
            except BaseException as e:  # noqa: BLE001
                failures.append(e)

        rss = {"fund_max": 0.0, "regions_max": 0.0, "fund_before": proc_rss_mib(fund_node.proc.pid)}

        def sampler():
            try:
                while not STOP.is_set() and not done.is_set():
                    rss["fund_max"] = max(rss["fund_max"], proc_rss_mib(fund_node.proc.pid))
                    rss["regions_max"] = max(rss["regions_max"], sum(proc_rss_mib(r.proc.pid) for r in regions))
                    done.wait(0.5)
            except BaseException as e:  # noqa: BLE001
                failures.append(e)

        send_errors = {}
        post_times = []

        def send(api, ticket_id, timed):
            t1 = time.monotonic()
            status, body = send_redirect(api, ticket_id)
            t2 = time.monotonic()
            wall = time.time() * 1000
            if status != 201:
                k = f"{status} {error_code(body)}"
                with lock:
                    send_errors[k] = send_errors.get(k, 0) + 1
                return
            with lock:
                if timed:
                    post_times.append(t2 - t1)
                    counted.add(body["id"])
                pending[body["id"]] = t2
                sent_wall[body["id"]] = wall

        poll_thread = threading.Thread(target=poller, name="poller", daemon=True)
        poll_thread.start()
        # Warm-up: one transfer from each region, seen at the fund.
        parallel([lambda k=k, r=r: send(r.api, pool[k][0], False) for k, r in enumerate(regions)], a.threads, "warm")
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline and not failures:
            time.sleep(0.05)
        if pending:
            raise BenchError(f"warm-up: {len(pending)} of {len(regions)} transfers not at the fund within 60 s "
                             f"(e.g. {next(iter(pending))}; refused: {send_errors})")
        if failures:
            raise failures[0]
        with lock:
            lag.clear()
            stamped.clear()

        note(f"fanin: {total} REDIRECTs from {len(regions)} regions at {a.fanin_rate:g}/s in all")
        sample_thread = threading.Thread(target=sampler, name="sampler", daemon=True)
        sample_thread.start()
        fc0, rc0 = commits(fund), sum(commits(r.api) for r in regions)
        start = time.monotonic()
        cpu0 = proc_cpu_seconds(fund_node.proc.pid)
        rcpu0 = sum(proc_cpu_seconds(r.proc.pid) for r in regions)

        def region_sender(k, r):
            try:
                for j, i in enumerate(range(k, total, len(regions))):
                    if STOP.is_set() or failures:
                        return
                    sleep_until(start + i / a.fanin_rate)
                    send(r.api, pool[k][1 + j], True)
            except BaseException as e:  # noqa: BLE001
                failures.append(e)

        senders = [threading.Thread(target=region_sender, args=(k, r), name=f"send-{r.id}", daemon=True)
                   for k, r in enumerate(regions)]
        run_threads(senders)
        for t in senders:
            while t.is_alive():
                t.join(0.2)
        elapsed = time.monotonic() - start
        cpu = proc_cpu_seconds(fund_node.proc.pid) - cpu0
        rcpu = sum(proc_cpu_seconds(r.proc.pid) for r in regions) - rcpu0
        fc, rc = commits(fund) - fc0, sum(commits(r.api) for r in regions) - rc0
        deadline = time.monotonic() + a.drain
        while pending and time.monotonic() < deadline and not failures:
            time.sleep(0.05)
        done.set()
        join_threads([poll_thread, sample_thread])
        if failures:
            raise failures[0]
        c.check_alive()
        with lock:
            lags = [lag[t] for t in counted if t in lag]
            stamps = [stamped[t] for t in counted if t in stamped]
            missing = [t for t in counted if t in pending]
        log(f"fanin.lag            {lat(lags)}  (n={len(lags)} from {len(regions)} regions at {a.fanin_rate:g}/s in all; "
            f"a region's 201 -> readable on the fund, polled every {a.fanin_poll_ms:g} ms)")
        log(f"fanin.delivered      {lat(stamps)}  (the fund's deliveredAt stamp - the region's 201, no polling)")
        log(f"fanin.fund.cpu       {100 * cpu / elapsed:5.1f} % of one core   ({cpu:.1f} s CPU over {elapsed:.1f} s)")
        log(f"fanin.fund.rss       max {rss['fund_max']:.0f} MiB   ({rss['fund_before']:.0f} MiB before the timed phase)")
        log(f"fanin.regions.rss    {rss['regions_max']:.0f} MiB in all   ({len(regions)} processes, "
            f"{rss['regions_max'] / len(regions):.0f} MiB each on average; their CPU {100 * rcpu / elapsed:.1f} % of one core together)")
        log(f"  POST of a REDIRECT at a region: {lat(post_times)}; sent {len(counted)} in {elapsed:.1f} s "
            f"({len(counted) / elapsed:.1f}/s); {poll_count[0]} GETs by the poller")
        log(f"  store commits in the timed phase (each fsync'd): the regions {rc} in all, "
            f"{rc / max(1, len(counted)):.1f} per transfer sent; the fund {fc}")
        if send_errors:
            log(f"  ! refused REDIRECTs: {send_errors}")
        if missing:
            waited = time.monotonic() - start - elapsed
            log(f"  ! {len(missing)} not at the fund {waited:.0f} s after the last was sent; e.g. {missing[0]}")
    finally:
        c.stop()
        c.log_report()


def iso_ms(s: str) -> float:
    """Epoch milliseconds of '2026-11-21T23:51:13.123Z'."""
    import datetime
    d = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return d.timestamp() * 1000


# --- 3. scoping --------------------------------------------------------------------------------

def phase_scoping(bench: Bench):
    a = bench.args
    n = a.tickets
    c = Cluster(bench, "scoping",
                [{"id": "38", "kind": "region", "name": "Иркутская область"},
                 {"id": "pension", "kind": "fund", "name": "Социальный фонд России: пенсии", "numbering": "pf"}],
                [{"id": "irk-main", "organisation": "38", "role": "regional-centre", "utcOffsetMinutes": 480,
                  "numberSeries": 0},
                 {"id": "irk-office-1", "organisation": "38", "role": "remote-office", "utcOffsetMinutes": 480,
                  "numberSeries": 1},
                 {"id": "pension-1", "organisation": "pension", "role": "fund"}])
    try:
        c.start(["irk-main"])
        centre = c["irk-main"].api

        def make(k):
            tid = create_registered(centre, k)
            status, body = send_redirect(centre, tid)
            if status != 201:
                raise BenchError(f"irk-main: REDIRECT of {tid} -> {status} {body}")

        t0 = time.monotonic()
        parallel([lambda k=k: make(k) for k in range(n)], a.threads, "make")
        prep = time.monotonic() - t0
        h = centre.get("/v1/health")["store"]
        note(f"scoping: {n} tickets + {n} REDIRECTs on irk-main in {prep:.1f} s; its last sequence {h['lastSequence']}")
        if h["tickets"] != n:
            raise BenchError(f"irk-main holds {h['tickets']} tickets, expected {n}")

        office, fund = c["irk-office-1"], c["pension-1"]
        t0 = time.monotonic()
        c.launch(fund)
        c.launch(office)
        ready = {}
        held = {}
        done_at = {}
        deadline = t0 + a.catchup_timeout
        while len(done_at) < 2 and time.monotonic() < deadline:
            for node in (office, fund):
                if node.id in done_at:
                    continue
                if not node.alive():
                    raise BenchError(f"{node.id} exited with {node.proc.returncode}:\n{node.tail()}")
                try:
                    status, body = node.api.call("GET", "/v1/health")
                except (OSError, http.client.HTTPException):
                    continue
                if status != 200:
                    continue
                now = time.monotonic()
                ready.setdefault(node.id, now - t0)
                held[node.id] = body["store"]["tickets"]
                if held[node.id] >= n:
                    done_at[node.id] = now - t0
            time.sleep(0.01)
        for node in (office, fund):
            if node.id not in done_at:
                log(f"  ! {node.id} holds {held.get(node.id)} of {n} tickets {a.catchup_timeout:g} s after its start")
        if office.id in done_at:
            log(f"scoping.office       {n / done_at[office.id]:9.0f} tickets/s   ({n} tickets whole, same organisation, "
                f"in {done_at[office.id]:.2f} s from process start; API up after {ready[office.id]:.2f} s)")
        if fund.id in done_at:
            log(f"scoping.fund         {n / done_at[fund.id]:9.0f} tickets/s   ({n} tickets in scope of {n} REDIRECTs, "
                f"in {done_at[fund.id]:.2f} s from process start; API up after {ready[fund.id]:.2f} s)")
        if len(done_at) == 2:
            ratio = done_at[office.id] / done_at[fund.id]
            log(f"scoping.ratio        fund/office {ratio:.2f}   (of tickets/s; the fund also writes a DELIVERED step per transfer)")
        log(f"  prepared on irk-main before: {n} tickets + {n} REDIRECTs in {prep:.1f} s ({2 * n / prep:.0f} writes/s, "
            f"{a.threads} threads)")
        # The fund's inbox afterwards: every transfer DELIVERED?
        if fund.id in done_at:
            deadline = time.monotonic() + 30
            while True:
                delivered, states = 0, {}
                q = "/v1/transfers?direction=in&limit=500"
                while q:
                    page = fund.api.get(q)
                    for t in page["items"]:
                        states[t["state"]] = states.get(t["state"], 0) + 1
                    q = f"/v1/transfers?direction=in&limit=500&cursor={page['next']}" if page["next"] else None
                delivered = states.get("DELIVERED", 0)
                if delivered >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            at = time.monotonic() - t0
            if delivered >= n:
                log(f"  the fund's inbox: {delivered} DELIVERED ({at:.1f} s after the start, checked after the tickets)")
            else:
                log(f"  ! the fund's inbox after {at:.1f} s: {states} (expected {n} DELIVERED)")
        c.check_alive()
    finally:
        c.stop()
        c.log_report()


# --- main --------------------------------------------------------------------------------------

PHASES = {"roundtrip": phase_roundtrip, "fanin": phase_fanin, "scoping": phase_scoping}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=".build-release/release", help="directory holding ekc (or the ekc executable)")
    p.add_argument("--seconds", type=float, default=30, help="timed phase of roundtrip and fanin (s)")
    p.add_argument("--rate", type=float, default=20, help="roundtrip: REDIRECTs per second")
    p.add_argument("--fanin-rate", type=float, default=40, help="fanin: REDIRECTs per second from all regions together")
    p.add_argument("--regions", type=int, default=20, help="fanin: region nodes (at most 99)")
    p.add_argument("--tickets", type=int, default=5000, help="scoping: tickets sent to the fund")
    p.add_argument("--skip", default="", help="comma-separated phases to leave out: roundtrip,fanin,scoping")
    p.add_argument("--threads", type=int, default=16, help="threads creating tickets before a timed phase")
    p.add_argument("--accept-poll-ms", type=float, default=10, help="roundtrip: the acceptor's sleep after an empty poll")
    p.add_argument("--watch-poll-ms", type=float, default=5, help="roundtrip: the region-side watcher's polling interval")
    p.add_argument("--fanin-poll-ms", type=float, default=10, help="fanin: the fund-side poller's interval")
    p.add_argument("--drain", type=float, default=30, help="seconds to wait for the last transfers after sending")
    p.add_argument("--catchup-timeout", type=float, default=300, help="scoping: seconds to wait for each catch-up")
    p.add_argument("--log-level", default="warning", help="the nodes' --log-level")
    p.add_argument("--workdir", help="directory for topology, certificates, data and logs (default: a new one in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args()
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    unknown = skip - set(PHASES)
    if unknown:
        p.error(f"--skip: unknown phase(s) {', '.join(sorted(unknown))}; phases: {', '.join(PHASES)}")
    if not 1 <= a.regions <= 99:
        p.error("--regions must be 1..99")
    if a.rate <= 0 or a.fanin_rate <= 0 or a.seconds <= 0 or a.tickets < 1:
        p.error("--rate, --fanin-rate, --seconds and --tickets must be positive")

    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    # SIGINT too: a shell starts a background job with SIGINT ignored, and Python keeps that.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, terminate)

    try:
        bench = Bench(a)
    except BenchError as e:
        print(f"bench-transfers: {e}", file=sys.stderr)
        return 2
    ok = interrupted = False
    try:
        phases = [name for name in PHASES if name not in skip]
        ids = set()
        if "roundtrip" in phases or "scoping" in phases:
            ids |= {"irk-main", "pension-1"}
        if "scoping" in phases:
            ids.add("irk-office-1")
        if "fanin" in phases:
            ids |= {"pension-1"} | {f"r{region_code(i)}-main" for i in range(1, a.regions + 1)}
        if ids:
            t0 = time.monotonic()
            bench.make_certs(sorted(ids))
            note(f"{len(ids)} development certificates in {time.monotonic() - t0:.1f} s ({bench.root})")
        failed = []
        for name in phases:
            t0 = time.monotonic()
            log(f"-- {name} --")
            try:
                PHASES[name](bench)
            except BenchError as e:  # the phase's nodes are stopped; the next phase runs
                failed.append(name)
                log(f"  ! {name} failed: {e}")
            except Exception as e:  # noqa: BLE001 - the same, with where it happened
                failed.append(name)
                log(f"  ! {name} failed: {type(e).__name__}: {e}")
                traceback.print_exc()
            note(f"{name} took {time.monotonic() - t0:.0f} s")
        ok = not failed
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping the nodes")
    except BenchError as e:
        log(f"bench-transfers: {e}")
    finally:
        STOP.set()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C leaves no node behind
            signal.signal(sig, signal.SIG_IGN)
        bench.stop_all()
        if (ok or interrupted) and not a.keep and not a.workdir:
            shutil.rmtree(bench.root, ignore_errors=True)
        elif bench.root.exists():
            log(f"work directory kept: {bench.root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
