"""The nemesis: a schedule of faults drawn from the seed, played by two lanes at once.

* lane `net`: partitions of links (any set, both directions), one-way cuts (only the
  proxy X->Y: X cannot pull from Y, Y still pulls from X), blackholes (connections
  accepted and held, nothing forwarded: noticed only by timeouts), a split of one
  organisation's own two nodes from each other (`split-org`: pension-1 / pension-2,
  fss-1 / fss-2, irk-main / irk-office-1; each still reaches the other organisations);
* lane `proc`: kill -9 (any node; the receiver or sender of a transfer just sent, or
  the node that just acknowledged a transfer's step, a fund's node first; a node
  catching up right after a partition), SIGSTOP longer than the idle timeouts,
  a wall-clock jump of ±10 minutes, a full disk on the tmpfs node, SIGTERM + start.

Every fault ends by itself (the lane heals what it did), and `heal_everything` undoes
whatever is left. The schedule (JSON) is decided before the run from the seed alone;
what a fault picked at run time (the transfer in flight) is in the executed log.
"""
import json
import os
import random
import threading
import time

from cluster import FUNDS

LONGER_THAN_IDLE = (17.0, 21.0)   # the replication idle timeout is 15 s, the API's here 3 s
NET_KINDS = ["partition", "oneway", "blackhole", "split-org"]
PROC_KINDS = ["kill9", "kill9-inflight", "kill9-catchup", "sigstop", "clock", "disk", "restart"]
# A node of the previous release stopped (SIGTERM), and started on this build's binary
# on the same store: the rolling upgrade, one node at a time (run.py --upgrade-from).
UPGRADE_KIND = "upgrade"
ALL_KINDS = NET_KINDS + PROC_KINDS + [UPGRADE_KIND]


def upgrade_schedule(seconds: float, nodes):
    """The proc lane of an upgrade run: the nodes of the previous release upgraded one at a
    time, evenly from a quarter to three quarters of the run, so that the federation runs
    mixed before, during and after."""
    if not nodes:
        return []
    step = seconds * 0.5 / max(1, len(nodes) - 1) if len(nodes) > 1 else 0
    return [{"lane": "proc", "kind": UPGRADE_KIND, "node": n, "at": round(seconds * 0.25 + i * step, 2)}
            for i, n in enumerate(nodes)]


def make_schedule(seed: int, seconds: float, node_ids, links, disk_node=None, clock_ms: int = 600_000, splits=None):
    """[{lane, at, kind, ...}] for a run of `seconds`; every kind at least once.
    `splits`: {organisation: [node, node]}, the pairs `split-org` separates."""
    rng = random.Random(seed * 7919 + 1)
    splits = splits or {}
    inflight_seen = []
    undirected = sorted({tuple(sorted(l)) for l in links})
    plan = []

    def fault(kind):
        f = {"kind": kind}
        if kind == "partition":
            if rng.random() < 0.5:
                f["isolate"] = rng.choice(node_ids)
                f["links"] = [list(l) for l in links if f["isolate"] in l]
            else:
                chosen = rng.sample(undirected, rng.randint(1, min(3, len(undirected))))
                f["links"] = [[a, b] for a, b in chosen] + [[b, a] for a, b in chosen]
            f["hold"] = round(rng.uniform(4, 10), 2)
        elif kind == "oneway":
            f["links"] = [list(rng.choice(links))]
            f["hold"] = round(rng.uniform(5, 12), 2)
        elif kind == "blackhole":
            if rng.random() < 0.5:
                n = rng.choice(node_ids)
                f["links"] = [list(l) for l in links if n in l]
                f["node"] = n
            else:
                f["links"] = [list(l) for l in rng.sample(links, rng.randint(1, 3))]
            f["hold"] = round(rng.uniform(*LONGER_THAN_IDLE), 2)
        elif kind == "split-org":
            org = rng.choice(sorted(splits))
            a, b = splits[org]
            f["org"] = org
            f["links"] = [[a, b], [b, a]]
            f["hold"] = round(rng.uniform(4, 12), 2)
        elif kind == "kill9":
            f["node"] = rng.choice(node_ids)
            f["down"] = round(rng.uniform(0.5, 4), 2)
        elif kind == "kill9-inflight":
            # The first one of a seed follows a step a fund's node acknowledged.
            f["after"] = "step" if not inflight_seen else rng.choice(["send", "step"])
            inflight_seen.append(1)
            if f["after"] == "send":
                f["side"] = rng.choice(["receiver", "sender"])
            f["down"] = round(rng.uniform(0.5, 3), 2)
        elif kind == "kill9-catchup":
            f["node"] = rng.choice(node_ids)
            f["isolated"] = round(rng.uniform(3, 7), 2)
            f["after_heal"] = round(rng.uniform(0.1, 1.0), 2)
            f["down"] = round(rng.uniform(0.5, 3), 2)
        elif kind == "sigstop":
            f["node"] = rng.choice(node_ids)
            f["hold"] = round(rng.uniform(*LONGER_THAN_IDLE), 2)
        elif kind == "clock":
            f["node"] = rng.choice(node_ids)
            f["offset_ms"] = rng.choice([clock_ms, -clock_ms])
            f["hold"] = round(rng.uniform(8, 15), 2)
        elif kind == "disk":
            f["node"] = disk_node
            f["hold"] = round(rng.uniform(4, 9), 2)
        elif kind == "restart":
            f["node"] = rng.choice(node_ids)
        return f

    def length(f):
        return f.get("hold", 0) + f.get("down", 0) + f.get("isolated", 0) + f.get("after_heal", 0) + 2.0

    net_kinds = [k for k in NET_KINDS if k != "split-org" or splits]
    for lane, kinds in (("net", net_kinds), ("proc", [k for k in PROC_KINDS if k != "disk" or disk_node])):
        t = round(rng.uniform(2, 5), 2)   # let the workload create something first
        must = list(kinds)
        rng.shuffle(must)
        # Splits of an organisation's own nodes twice as often as the other network faults.
        fill = kinds + (["split-org"] if "split-org" in kinds else [])
        while must or t < seconds - 12:
            kind = must.pop() if must else rng.choice(fill)
            f = fault(kind)
            f.update({"lane": lane, "at": t})
            plan.append(f)
            t = round(t + length(f) + rng.uniform(0.5, 3), 2)
    return sorted(plan, key=lambda f: f["at"])


class Nemesis:
    def __init__(self, fed, workload, schedule, seed: int, log=print, new_binary=None):
        self.new_binary = new_binary   # what an upgrade switches a node to
        self.fed = fed
        self.workload = workload
        self.schedule = schedule
        self.rng = random.Random(seed * 31 + 7)
        self.executed = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.log = log
        self.errors = []
        self._threads = []
        self.start_time = None

    # --- primitives ---
    def _proxies(self, links):
        return [self.fed.proxies[(a, b)] for a, b in links if (a, b) in self.fed.proxies]

    def _sleep(self, s):
        # Faults hold their time even when the run is being stopped: the lane ends them.
        time.sleep(max(0.0, s))

    def _restart(self, node, what):
        deadline = time.time() + 90
        last = None
        while time.time() < deadline:
            try:
                node.start(timeout=45)
                return True
            except Exception as e:
                last = e
                try:
                    node.kill9()
                except Exception:
                    pass
                time.sleep(1)
        self.errors.append(f"{what}: {node.node_id} did not start again: {last}")
        return False

    def _record(self, f, t0, **detail):
        e = dict(f)
        e.update(detail)
        e["started"] = round(t0 - self.start_time, 2)
        e["ended"] = round(time.time() - self.start_time, 2)
        with self.lock:
            self.executed.append(e)
        self.log(f"  nemesis {e['kind']:<15} {e['started']:7.1f}-{e['ended']:7.1f}s "
                 + ", ".join(f"{k}={v}" for k, v in detail.items() if k != "links")
                 + (f" links={['->'.join(l) for l in e.get('links', [])]}" if e.get("links") else ""))

    # --- faults ---
    def do(self, f):
        t0 = time.time()
        kind = f["kind"]
        nodes = self.fed.nodes
        if kind == UPGRADE_KIND:
            n = nodes[f["node"]]
            was = n.binary
            rc = n.terminate()
            n.binary = self.new_binary
            self._restart(n, kind)
            self._record(f, t0, exit_code=rc, was=str(was))
        elif kind in ("partition", "oneway", "split-org"):
            ps = self._proxies(f["links"])
            for p in ps:
                p.cut()
            self._sleep(f["hold"])
            for p in ps:
                p.heal_cut()
            self._record(f, t0)
        elif kind == "blackhole":
            ps = self._proxies(f["links"])
            for p in ps:
                p.blackhole()
            self._sleep(f["hold"])
            for p in ps:
                p.heal_blackhole()
            self._record(f, t0)
        elif kind == "kill9":
            n = nodes[f["node"]]
            n.kill9()
            self._sleep(f["down"])
            self._restart(n, kind)
            self._record(f, t0)
        elif kind == "kill9-inflight" and f.get("after") == "step":
            # The node that acknowledged a transfer's step, right after the answer (before it
            # could have replicated it), a fund's node: the receiving side of most steps.
            last, waited = None, time.time()
            while time.time() - waited < 15:
                last = self.workload.last_step
                if last and time.time() - last[0] < 1.0 and self.fed.org_of(last[2]) in FUNDS:
                    break
                time.sleep(0.02)
            else:
                last = None
            if not last:
                self._record(f, t0, skipped="no step acknowledged by a fund's node within 15 s")
                return
            at, trid, nid, frm, to, action = last
            n = nodes[nid]
            n.kill9()
            self._sleep(f["down"])
            self._restart(n, kind)
            self._record(f, t0, node=nid, transfer=trid, step=action, age=round(t0 - at, 2))
        elif kind == "kill9-inflight":
            # The node of one side of the transfer sent last, right after its send.
            last, waited = None, time.time()
            while time.time() - waited < 15:
                last = self.workload.last_transfer
                if last and time.time() - last[0] < 1.5:
                    break
                time.sleep(0.05)
            if not last:
                self._record(f, t0, skipped="no transfer yet")
                return
            _, trid, frm, to = last
            org = to if f["side"] == "receiver" else frm
            candidates = self.fed.org_nodes(org)
            n = self.rng.choice(candidates)
            n.kill9()
            self._sleep(f["down"])
            self._restart(n, kind)
            self._record(f, t0, node=n.node_id, transfer=trid, age=round(t0 - last[0], 2))
        elif kind == "kill9-catchup":
            n = nodes[f["node"]]
            ps = self._proxies([l for l in self.fed.proxies if n.node_id in l])
            for p in ps:
                p.cut()
            self._sleep(f["isolated"])
            for p in ps:
                p.heal_cut()
            self._sleep(f["after_heal"])
            n.kill9()
            self._sleep(f["down"])
            self._restart(n, kind)
            self._record(f, t0)
        elif kind == "sigstop":
            n = nodes[f["node"]]
            n.sigstop()
            self._sleep(f["hold"])
            n.cont()
            self._record(f, t0)
        elif kind == "clock":
            n = nodes[f["node"]]
            n.set_clock_offset(f["offset_ms"])
            self._sleep(f["hold"])
            n.set_clock_offset(0)
            self._record(f, t0)
        elif kind == "disk":
            if not self.fed.tmpfs:
                self._record(f, t0, skipped="no tmpfs")
                return
            _, d = self.fed.tmpfs
            ballast = d / "ballast"
            filled = fill(ballast)
            self._sleep(f["hold"])
            try:
                ballast.unlink()
            except OSError:
                pass
            self._record(f, t0, filled_bytes=filled)
        elif kind == "restart":
            n = nodes[f["node"]]
            rc = n.terminate()
            self._restart(n, kind)
            self._record(f, t0, exit_code=rc)
        else:
            raise ValueError(kind)

    def _lane(self, lane):
        for f in (f for f in self.schedule if f["lane"] == lane):
            wait = self.start_time + f["at"] - time.time()
            if wait > 0 and self.stop_event.wait(wait):
                return
            if self.stop_event.is_set():
                return
            try:
                self.do(f)
            except Exception as e:
                self.errors.append(f"{f['kind']}: {e!r}")

    def start(self):
        self.start_time = time.time()
        for lane in ("net", "proc"):
            t = threading.Thread(target=self._lane, args=(lane,), name=f"nemesis-{lane}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout=None):
        for t in self._threads:
            t.join(timeout)

    def done(self):
        return all(not t.is_alive() for t in self._threads)

    def stop(self):
        self.stop_event.set()
        self.join(120)

    def counts(self):
        out = {k: 0 for k in ALL_KINDS}
        for e in self.executed:
            if not e.get("skipped"):
                out[e["kind"]] += 1
        return out


def fill(path) -> int:
    """Fills the file system holding `path` until it is full; returns the bytes written."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            if free > 0:
                os.posix_fallocate(fd, 0, free)
                written = free
                os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            pass
        chunk = b"\0" * 65536
        while written < 1 << 34:
            try:
                n = os.write(fd, chunk)
            except OSError:   # ENOSPC: full
                if len(chunk) <= 512:
                    break
                chunk = chunk[:len(chunk) // 8]
                continue
            written += n
    finally:
        os.close(fd)
    return written


def heal_everything(fed, log=print):
    """Every proxy forwarding, no process stopped, every clock right, no ballast,
    every node that is down started again."""
    for p in fed.proxies.values():
        p.heal_all()
    for n in fed.all():
        n.cont()
        n.set_clock_offset(0)
    if fed.tmpfs:
        try:
            (fed.tmpfs[1] / "ballast").unlink()
        except OSError:
            pass
    for n in fed.all():
        if not n.alive():
            n.poll_exit()
            log(f"  heal: starting {n.node_id} again")
            for attempt in range(3):
                try:
                    n.start(timeout=60)
                    break
                except Exception as e:
                    log(f"  heal: {n.node_id} did not start: {e}"[:2000])
                    time.sleep(2)


def schedule_json(schedule):
    return json.dumps(schedule, indent=1)
