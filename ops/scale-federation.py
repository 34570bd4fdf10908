#!/usr/bin/env python3
"""A federation at scale on loopback: N regional centres and two pension-fund nodes as
real `ekc node start` processes, started K times from empty stores, measuring how long
each pull link takes to connect and, optionally, counting anti-entropy rounds and the
rounds whose calls got no answer.

    ops/scale-federation.py                          # 32 centres + 2 fund nodes, 10 starts
    ops/scale-federation.py --centres 8 --starts 3
    ops/scale-federation.py --starts 1 --anti-entropy 20 --duration 180 --load 1

Links are derived from the topology (cluster/README.md): every centre pulls from every
other centre and from both fund nodes, each fund node from every centre and from the
other fund node: (N + 2) x (N + 1) links, 1,122 at N = 32.

For every link the figure is the time from the dialling node's process start to the
link's first `connected` in `GET /v1/replication` (ops token): the node's own
`lastSuccess` of the first poll that shows it connected (the stream header of an empty
store sets it), else the poll's time. A link that is not connected within
`--connect-deadline` seconds (3) is listed with the errors it reported meanwhile
(`nothing heard for 15.0 seconds` is the stall this harness was written for; a link that
only had its connection refused was dialled before its peer listened and waited out the
reconnect backoff). The same times are also given from when both ends were up (a node
answers its API once its replication listener is bound, and starts pulling right after).

With `--anti-entropy SECONDS` every node compares digests with each peer at that
interval (`--anti-entropy-interval`); after `--duration` seconds the harness reads
`ekc_anti_entropy_rounds_total{result}` from every node's /metrics and counts the
`anti-entropy round failed` lines of the node logs by error (`no answer in time` is the
other symptom). `--load R` creates R tickets per second in every region meanwhile.

Every process started here is stopped at the end (SIGTERM, then SIGKILL), and dies with
the harness if the harness is killed (PR_SET_PDEATHSIG). 34 debug-build nodes on 2 cores
use about 2-3 GB of memory; the temporary directory is removed unless --keep.
"""
import argparse
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUND = "pension"


# --- processes ---------------------------------------------------------------------------

def _die_with_parent():
    """In the child before exec: SIGKILL when the harness goes, however it goes."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Ports:
    """Loopback ports outside the ephemeral range (a node's outgoing connections take
    their local ports from there), never handed out twice."""

    def __init__(self):
        try:
            lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        except (OSError, ValueError):
            lo, hi = 32768, 60999
        self.range = (10000, lo - 1) if lo > 11000 else (hi + 1, 65535)
        self.given = set()
        self.rng = random.Random(os.getpid() ^ time.monotonic_ns())

    def take(self) -> int:
        for _ in range(100000):
            p = self.rng.randint(*self.range)
            if p in self.given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    continue
            self.given.add(p)
            return p
        raise RuntimeError("no free loopback port")


def http(method, url, token=None, body=None, timeout=10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


# --- the federation ----------------------------------------------------------------------

class Scale:
    def __init__(self, args):
        self.args = args
        self.ekc = Path(args.ekc).resolve()
        self.root = Path(tempfile.mkdtemp(prefix="ekc-scale-"))
        self.ports = Ports()
        self.centres = [f"r{i:02d}-main" for i in range(1, args.centres + 1)]
        self.funds = [f"{FUND}-{k}" for k in range(1, args.fund_nodes + 1)]
        self.ids = self.centres + self.funds
        self.org = {n: n[1:3] for n in self.centres} | {n: FUND for n in self.funds}
        self.procs = {}
        self.started_at = {}
        self.tokens = {}

    def peers_of(self, node):
        if node in self.centres:
            return [c for c in self.centres if c != node] + self.funds
        return self.centres + [f for f in self.funds if f != node]

    def links(self):
        return [(x, y) for x in self.ids for y in self.peers_of(x)]

    def prepare(self):
        certs = self.root / "certs"
        env = dict(os.environ, EKC_DEV_CA_DIR=str(self.root / "certs.ca"))
        r = subprocess.run([str(REPO / "ops" / "dev-ca.sh"), str(certs), *self.ids],
                           capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("dev-ca.sh failed: " + r.stderr[-2000:])
        self.idp = self.root / "dev-idp"
        for org in sorted(set(self.org.values())):
            r = subprocess.run([str(self.ekc), "login", "--dev-idp", str(self.idp), "--org", org, "--user", "scale-harness",
                                "--role", "ops", "--role", "operator", "--hours", "24", "--print"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"ekc login --org {org} failed: {r.stderr[-1000:]}")
            self.tokens[org] = r.stdout.strip().splitlines()[-1]

    def write_topology(self, run_dir: Path):
        self.api = {n: self.ports.take() for n in self.ids}
        self.repl = {n: self.ports.take() for n in self.ids}
        certs = self.root / "certs"
        orgs = [{"id": self.org[c], "kind": "region", "identityProvider": {"development": str(self.idp)}} for c in self.centres]
        orgs.append({"id": FUND, "kind": "fund", "numbering": "pf", "identityProvider": {"development": str(self.idp)}})
        nodes = []
        for i, n in enumerate(self.ids):
            nodes.append({
                "id": n, "organisation": self.org[n], "role": "regional-centre" if n in self.centres else "fund",
                "utcOffsetMinutes": 180, "numberSeries": 0 if n in self.centres else self.funds.index(n),
                "listen": f"127.0.0.1:{self.api[n]}", "replication": f"127.0.0.1:{self.repl[n]}",
                "data": str(run_dir / "data" / n),
                "identity": {"cert": str(certs / f"{n}.pem"), "key": str(certs / f"{n}.key"), "ca": str(certs / "ca.pem")},
            })
        topology = run_dir / "topology.json"
        topology.write_text(json.dumps({"federation": "scale", "organisations": orgs, "nodes": nodes}, indent=1))
        return topology

    def start_nodes(self, run_dir: Path, topology: Path):
        flags = ["--log-level", self.args.log_level]
        flags += ["--anti-entropy-interval", str(self.args.anti_entropy or 0)]
        order = list(self.ids)
        random.shuffle(order)
        for n in order:
            log = open(run_dir / f"{n}.log", "wb")
            self.started_at[n] = time.time()
            self.procs[n] = subprocess.Popen([str(self.ekc), "node", "start", "--config", str(topology), "--node-id", n, *flags],
                                             stdout=log, stderr=subprocess.STDOUT, cwd=str(run_dir),
                                             preexec_fn=_die_with_parent)
            log.close()

    def stop_nodes(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 20
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}

    def replication(self, n):
        _, body = http("GET", f"http://127.0.0.1:{self.api[n]}/v1/replication", self.tokens[self.org[n]], timeout=5)
        return json.loads(body)

    # --- one start ---
    def measure_start(self, k: int):
        run_dir = self.root / f"start-{k}"
        run_dir.mkdir()
        topology = self.write_topology(run_dir)
        self.start_nodes(run_dir, topology)
        up = {}        # node -> seconds from its start to its first answer on the API
        first = {}     # (x, y) -> seconds from x's start to its first connected
        errors = {}    # (x, y) -> errors seen before it connected
        pending = set(self.links())
        lock = threading.Lock()

        def poll(n):
            try:
                rep = self.replication(n)
            except (OSError, urllib.error.URLError, ValueError):
                return
            seen = time.time()
            with lock:
                up.setdefault(n, seen - self.started_at[n])
                for p in rep.get("peers", []):
                    key = (n, p["node"])
                    if key not in pending:
                        continue
                    if p.get("connected"):
                        at = seen
                        ls = p.get("lastSuccess")
                        if ls:
                            ls = _parse_time(ls)
                            if ls and self.started_at[n] <= ls <= seen:
                                at = ls
                        first[key] = at - self.started_at[n]
                        pending.discard(key)
                    elif p.get("lastError"):
                        errs = errors.setdefault(key, [])
                        if not errs or errs[-1] != p["lastError"]:
                            errs.append(p["lastError"])

        deadline = time.time() + self.args.start_timeout
        with ThreadPoolExecutor(max_workers=self.args.pollers) as pool:
            while pending and time.time() < deadline:
                t = time.time()
                nodes = sorted({x for x, _ in pending})
                list(pool.map(poll, nodes))
                for n, p in self.procs.items():
                    if p.poll() is not None:
                        raise RuntimeError(f"{n} exited with {p.returncode}; see {run_dir / (n + '.log')}")
                time.sleep(max(0.0, self.args.poll_interval - (time.time() - t)))
        return run_dir, up, first, errors, pending

    # --- anti-entropy and load, after a start ---
    def run_for(self, run_dir: Path, seconds: float):
        stop = threading.Event()
        created, failed = [0], [0]

        def load(regions):
            period = 1.0 / self.args.load
            nxt = time.monotonic()
            while not stop.is_set():
                for c in regions:
                    try:
                        http("POST", f"http://127.0.0.1:{self.api[c]}/v1/tickets", self.tokens[self.org[c]],
                             {"channel": "phone", "topic": "child-benefits", "subject": "Единое пособие",
                              "statement": "Когда будет решение по заявлению?"}, timeout=10)
                        created[0] += 1
                    except (OSError, urllib.error.URLError):
                        failed[0] += 1
                nxt += period
                stop.wait(max(0.0, nxt - time.monotonic()))

        threads = []
        if self.args.load:
            groups = [self.centres[i::4] for i in range(4)]
            threads = [threading.Thread(target=load, args=(g,), daemon=True) for g in groups if g]
            for t in threads:
                t.start()
        end = time.time() + seconds
        last_report = time.time()
        while time.time() < end:
            time.sleep(1)
            for n, p in self.procs.items():
                if p.poll() is not None:
                    stop.set()
                    raise RuntimeError(f"{n} exited with {p.returncode}; see {run_dir / (n + '.log')}")
            if time.time() - last_report >= 60:
                last_report = time.time()
                print(f"  ... {int(end - time.time())} s to go", flush=True)
        stop.set()
        for t in threads:
            t.join(15)
        rounds = {}
        for n in self.ids:
            try:
                _, body = http("GET", f"http://127.0.0.1:{self.api[n]}/metrics", self.tokens[self.org[n]], timeout=10)
            except (OSError, urllib.error.URLError) as e:
                print(f"  /metrics of {n}: {e}")
                continue
            for m in re.finditer(r'^ekc_anti_entropy_rounds_total\{result="([a-z_]+)"\} (\d+)', body.decode(), re.M):
                rounds[m.group(1)] = rounds.get(m.group(1), 0) + int(m.group(2))
        return rounds, created[0], failed[0]


def _parse_time(s):
    """An RFC 3339 time of the API (UTC, milliseconds) as epoch seconds."""
    from datetime import datetime
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def failed_rounds(run_dir: Path):
    """`anti-entropy round failed` log lines by error, with the error's variable parts blurred."""
    kinds = {}
    for log in run_dir.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "anti-entropy round failed" not in line:
                continue
            m = re.search(r"error=(.*?)(?: node=| peer=|$)", line)
            what = m.group(1) if m else line[-200:]
            what = re.sub(r"\d+", "N", what)[:160]
            kinds[what] = kinds.get(what, 0) + 1
    return kinds


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--centres", type=int, default=32, help="regional centres (1-89; default 32)")
    ap.add_argument("--fund-nodes", type=int, default=2, help="nodes of the pension fund (default 2)")
    ap.add_argument("--starts", type=int, default=10, help="starts from empty stores (default 10)")
    ap.add_argument("--connect-deadline", type=float, default=3.0, help="seconds a link may take to connect (default 3)")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for every link (default 60)")
    ap.add_argument("--anti-entropy", type=int, default=0, metavar="SECONDS",
                    help="--anti-entropy-interval of every node (default 0: none)")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds to run after each start's links connected (default 0)")
    ap.add_argument("--load", type=float, default=0.0, help="tickets created per second in every region during --duration")
    ap.add_argument("--poll-interval", type=float, default=0.25, help="seconds between polls of /v1/replication (default 0.25)")
    ap.add_argument("--pollers", type=int, default=8, help="threads polling the nodes (default 8)")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between starts (default 3)")
    ap.add_argument("--log-level", default="warning", help="nodes' --log-level (default warning: failed rounds are warnings)")
    ap.add_argument("--ekc", default=os.environ.get("EKC_BIN", str(REPO / ".build" / "debug" / "ekc")))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, stores)")
    args = ap.parse_args()
    if not 1 <= args.centres <= 89:
        ap.error("--centres: 1 to 89")
    if not Path(args.ekc).exists():
        ap.error(f"{args.ekc} does not exist: build it (swift build --product ekc) or pass --ekc / EKC_BIN")

    def on_signal(signum, _):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    s = Scale(args)
    n_links = len(s.links())
    print(f"{args.centres} centres + {args.fund_nodes} fund nodes, {n_links} pull links, {args.starts} starts; "
          f"ekc {args.ekc}; in {s.root}", flush=True)
    all_times, all_after_up, late_starts, stalls, late_refused, late_other, timeouts = [], [], 0, 0, 0, 0, 0
    totals = {"rounds": {}, "failed": {}, "created": 0, "create_failed": 0}
    try:
        s.prepare()
        for k in range(1, args.starts + 1):
            load_before = os.getloadavg()[0]
            run_dir, up, first, errors, pending = s.measure_start(k)
            times = list(first.values())
            all_times += times
            # From when both ends were up (each answers its API only after its replication
            # listener is bound; its pulls start right after): what is left is connecting.
            # Approximate (up is the first poll that was answered), so never below 0.
            after_up = [max(0.0, s.started_at[x] + t - max(s.started_at[x] + up.get(x, 0), s.started_at[y] + up.get(y, 0)))
                        for (x, y), t in first.items()]
            all_after_up += after_up
            slowest_after_up = max(after_up) if after_up else float("nan")
            timeouts += sum(1 for t in times if t >= 15.0)
            late = sorted(((t, l) for l, t in first.items() if t > args.connect_deadline), reverse=True)
            print(f"start {k} (load average {load_before:.1f} before): {len(first)}/{n_links} links connected; median {statistics.median(times) if times else float('nan'):.2f} s, "
                  f"p99 {pct(times, 99):.2f} s, max {max(times) if times else float('nan'):.2f} s; "
                  f"later than {args.connect_deadline:g} s: {len(late) + len(pending)}; after both ends were up: "
                  f"p99 {pct(after_up, 99):.2f} s, max {slowest_after_up:.2f} s; nodes answering their API after "
                  f"median {statistics.median(up.values()) if up else float('nan'):.2f} s, max {max(up.values()) if up else float('nan'):.2f} s", flush=True)
            for t, (x, y) in late[:20]:
                print(f"    {x} -> {y}: {t:.2f} s; errors before: {errors.get((x, y), [])}")
            for x, y in sorted(pending)[:20]:
                print(f"    {x} -> {y}: not connected within {args.start_timeout:g} s; errors: {errors.get((x, y), [])}")
            stalls += sum(1 for l in list(first) + list(pending) if any("nothing heard" in e for e in errors.get(l, [])))
            refused_only = sum(1 for t, l in late
                               if t < 15.0 and errors.get(l) and all("Connection refused" in e for e in errors[l]))
            late_refused += refused_only
            late_other += len(late) - refused_only + len(pending)
            if late or pending:
                print(f"    of the {len(late) + len(pending)} late links, {refused_only} only ever had their connection refused "
                      f"(the peer was not listening yet; they waited out the reconnect backoff)")
                late_starts += 1
            if args.duration > 0:
                rounds, created, create_failed = s.run_for(run_dir, args.duration)
                kinds = failed_rounds(run_dir)
                print(f"  anti-entropy over {args.duration:g} s: rounds {sum(rounds.values())} {rounds}; "
                      f"failed rounds by error: {kinds or 'none'}", flush=True)
                if args.load:
                    print(f"  load: {created} tickets created, {create_failed} failed requests")
                for r, v in rounds.items():
                    totals["rounds"][r] = totals["rounds"].get(r, 0) + v
                for e, v in kinds.items():
                    totals["failed"][e] = totals["failed"].get(e, 0) + v
                totals["created"] += created
                totals["create_failed"] += create_failed
            s.stop_nodes()
            if k < args.starts:
                time.sleep(args.pause)
        print()
        print(f"SUMMARY {args.centres} centres + {args.fund_nodes} fund nodes, {args.starts} starts, {n_links} links each:")
        print(f"  starts with every link connected within {args.connect_deadline:g} s: {args.starts - late_starts} of {args.starts}")
        print(f"  link connect times over all starts: median {statistics.median(all_times) if all_times else float('nan'):.2f} s, "
              f"p99 {pct(all_times, 99):.2f} s, max {max(all_times) if all_times else float('nan'):.2f} s; "
              f"links that reported 'nothing heard' before connecting: {stalls}")
        print(f"  the same counted from when both ends of the link were up: median {statistics.median(all_after_up) if all_after_up else float('nan'):.2f} s, "
              f"p99 {pct(all_after_up, 99):.2f} s, max {max(all_after_up) if all_after_up else float('nan'):.2f} s")
        print(f"  links that took 15 s or more (waited out an idle timeout): {timeouts}")
        print(f"  links later than {args.connect_deadline:g} s: {late_refused + late_other}; of them only refused while the peer "
              f"was starting: {late_refused}; late for any other reason (or never connected): {late_other}")
        if args.duration > 0:
            no_answer = sum(v for e, v in totals["failed"].items() if "no answer" in e)
            print(f"  anti-entropy rounds: {sum(totals['rounds'].values())} {totals['rounds']}; failed: "
                  f"{sum(totals['failed'].values())}; without an answer (\"no answer in time\"): {no_answer}")
            for e, v in sorted(totals["failed"].items(), key=lambda kv: -kv[1]):
                print(f"    {v} x {e}")
        return 0 if late_starts == 0 and (args.duration <= 0 or not totals["failed"]) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        s.stop_nodes()
        if args.keep:
            print(f"kept {s.root}")
        else:
            shutil.rmtree(s.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
