#!/usr/bin/env python3
"""Seeded fault runs on real node processes: proof that nothing acknowledged is lost.

    python3 tests/faults/run.py --seed 1234            # one seed (make faults SEED=1234)
    python3 tests/faults/run.py --seeds 20             # seeds 1..20 (make faults SEEDS=20)
    python3 tests/faults/run.py --seeds 5 --base 700   # seeds 700..704
    options: --seconds 120 (FAULT_SECONDS), --keep (KEEP=1), --threads 10

A seed starts a federation (regions 38 with a remote office and 52, the pension fund
on a 64 MiB tmpfs of its own, the social insurance fund) over mutual TLS with a proxy on
every directed link; runs a seeded workload through the operator API while a seeded
nemesis partitions, blackholes, kills, stops, shifts clocks and fills the disk; heals
everything, waits until every link is caught up and quiet, and checks (checker.py).
Its schedule, op history, every node's log and the violations are kept in
tests/faults/runs/seed-N/ when it fails (or with --keep).
"""
import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import SPLITTABLE, FaultFederation  # noqa: E402
from nemesis import ALL_KINDS, UPGRADE_KIND, Nemesis, heal_everything, make_schedule, upgrade_schedule  # noqa: E402
from workload import History, Monitor, Workload, get_json, http  # noqa: E402
from checker import Checker  # noqa: E402
from upgrade import UPGRADED, previous_release_crash, release_of, upgrade_checks  # noqa: E402

RUNS = HERE / "runs"
CRASH_MARKERS = ("Fatal error", "Segmentation", "*** Signal", "Backtracing from", "SIGSEGV", "SIGILL", "SIGBUS",
                 "Illegal instruction")


def say(*a):
    print(*a, flush=True)


# A link behind with nothing moving for this long after every fault was healed has stopped
# for good (a pull link's reconnect backoff is at most 30 s).
STALL_SECONDS = 45.0


def wait_quiescent(fed, timeout=240.0, quiet=3.0, stall=STALL_SECONDS):
    """Until every link is connected and has applied its peer's last sequence, with no
    change for `quiet` seconds. Gives up early when links stay behind with nothing
    moving for `stall` seconds (a link that stopped for good: `link-stalled`).
    Returns (ok, seconds, detail, stalled links)."""
    t0 = time.time()
    stable_since, last_sig, detail = None, None, None
    moved = {}   # (node, peer) -> (applied sequence, when it last changed)
    behind = []
    while time.time() - t0 < timeout:
        try:
            reps = {n.node_id: get_json(n, "/v1/replication", timeout=5) for n in fed.all()}
        except Exception as e:
            detail = f"replication status unreadable: {e}"
            stable_since = last_sig = None
            moved = {}   # a node restarting is not a stall
            time.sleep(0.5)
            continue
        last = {nid: r["lastSequence"] for nid, r in reps.items()}
        # Each link behind, with its last error and the answers it refused: why it is behind.
        behind = [(nid, p["node"], p["connected"], p["appliedSequence"], last.get(p["node"]), p.get("lastError"),
                   p.get("rejected", {}).get("byReason"))
                  for nid, r in reps.items() for p in r["peers"]
                  if not p["connected"] or p["appliedSequence"] < last.get(p["node"], 0)]
        sig = json.dumps([last, {nid: [(p["node"], p["appliedSequence"]) for p in r["peers"]] for nid, r in reps.items()}],
                         sort_keys=True)
        now = time.time()
        for nid, r in reps.items():
            for p in r["peers"]:
                k = (nid, p["node"])
                if k not in moved or moved[k][0] != p["appliedSequence"]:
                    moved[k] = (p["appliedSequence"], now)
        detail = behind or "caught up"
        if behind:
            stable_since = last_sig = None
            # Every link behind has applied nothing new for `stall` seconds: stopped for good.
            if all(now - moved[(b[0], b[1])][1] >= stall for b in behind):
                return False, time.time() - t0, detail, behind
        elif sig != last_sig:
            stable_since, last_sig = time.time(), sig
        elif time.time() - stable_since >= quiet:
            return True, time.time() - t0, detail, []
        time.sleep(0.3)
    return False, time.time() - t0, detail, behind


def wait_purges(fed, timeout=30.0):
    """Until no node holds a purge waiting for the ticket's home (GET /v1/health,
    transfers.purgesWaiting). Returns {node: count} of those still waiting."""
    t0 = time.time()
    waiting = {}
    while time.time() - t0 < timeout:
        try:
            waiting = {n.node_id: w for n in fed.all()
                       if (w := get_json(n, "/v1/health", timeout=5)["transfers"]["purgesWaiting"])}
        except Exception as e:
            waiting = {"health unreadable": str(e)}
        if not waiting:
            return {}
        time.sleep(0.5)
    return waiting


def anti_entropy(fed, rounds=4):
    """Repair rounds on every link (POST /v1/digest/repair) until one repairs nothing.
    Returns {"rounds", "repaired", "differing", "failed"}."""
    total = {"rounds": 0, "repaired": 0, "differing": 0, "failed": 0}
    for _ in range(rounds):
        total["rounds"] += 1
        repaired = 0
        for n in fed.all():
            for peer in n.peers:
                try:
                    s, _, r = http(n, "POST", "/v1/digest/repair", {"peer": peer}, timeout=60)
                except Exception as e:
                    total["failed"] += 1
                    say(f"  anti-entropy {n.node_id} <- {peer}: {e!r}")
                    continue
                if s != 200:
                    total["failed"] += 1
                    say(f"  anti-entropy {n.node_id} <- {peer}: {s} {str(r)[:300]}")
                    continue
                repaired += r["repaired"]
                total["differing"] += r["differingRecords"]
                if r["repaired"] or r["refused"]:
                    say(f"  anti-entropy {n.node_id} <- {peer}: {r['differingRecords']} differed, {r['repaired']} repaired, "
                        f"{r['refused']} refused")
        total["repaired"] += repaired
        wait_quiescent(fed, timeout=60, stall=20)
        if repaired == 0:
            break
    say(f"  anti-entropy: {total['repaired']} records repaired in {total['rounds']} round(s)")
    return total


def crash_summary(log: str) -> str:
    """The fatal error line and the first frames of the crashed thread in a node's log."""
    lines = log.splitlines()
    fatal = next((l for l in reversed(lines) if "Fatal error" in l), None)
    out = [fatal.strip()] if fatal else []
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip().endswith("crashed:"):
            frames = [l.strip() for l in lines[i + 1:i + 12] if " in " in l and "libswiftCore" not in l][:4]
            out += [lines[i].strip()] + frames
            break
    return " | ".join(out)[:2500]


class Watcher:
    """Every node's process: an exit the nemesis did not cause is a crash (recorded, and
    the node started again so that the run goes on)."""

    def __init__(self, fed):
        self.fed = fed
        self.crashes = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def _run(self):
        while not self.stop_event.wait(0.3):
            for n in self.fed.all():
                with n.lock:
                    r = n.poll_exit()
                    if r is None or r[1]:
                        continue
                    self.crashes.append({"node": n.node_id, "exit": r[0], "at": time.time(), "log": n.tail(3000),
                                         "why": crash_summary(n.tail(200_000))})
                    say(f"  !!! {n.node_id} exited by itself with {r[0]}; starting it again")
                    try:
                        n.start(timeout=60)
                    except Exception as e:
                        say(f"  !!! {n.node_id} did not start again: {e}"[:1000])


def pin_binary(src=None):
    """A copy of the node binary for this run (`--bin PATH`, else $EKC_BIN, else
    .build/debug/ekc): a build in the shared tree may relink the binary while nodes are
    restarted, and one run must not mix two builds."""
    import federation
    import hashlib
    import tokens
    src = Path(src or federation.EKC)
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    pinned = RUNS / ".bin" / f"ekc-{digest}-{os.getpid()}"
    if not pinned.exists():
        pinned.parent.mkdir(parents=True, exist_ok=True)
        tmp = pinned.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        tmp.rename(pinned)
    federation.EKC = pinned
    tokens.EKC = pinned   # `ekc login` makes the organisations' signing keys
    say(f"node binary: {src} (sha256 {digest}..., built {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(src.stat().st_mtime))}),"
        f" pinned as {pinned}")
    return pinned


def run_seed(seed: int, seconds: float, threads: int, keep: bool, clock_ms: int = 600_000, previous=None,
             creates_per_second: float = 0):
    root = RUNS / f"seed-{seed}"
    if root.exists():
        _remove(root)
    root.mkdir(parents=True)
    say(f"=== seed {seed}: {seconds:.0f} s of workload and faults; files in {root}")
    fed = FaultFederation(root / "fed")
    links = sorted(fed.proxies)
    schedule = make_schedule(seed, seconds, sorted(fed.nodes), [list(l) for l in links],
                             disk_node=fed.tmpfs[0] if fed.tmpfs else None, clock_ms=clock_ms, splits=SPLITTABLE)
    if previous:
        # A rolling upgrade: the network faults as drawn, and instead of the process faults
        # the previous release's nodes upgraded one at a time under the workload.
        for nid in UPGRADED:
            fed.nodes[nid].binary = previous
        schedule = sorted([f for f in schedule if f["lane"] == "net"] + upgrade_schedule(seconds, UPGRADED),
                          key=lambda f: f["at"])
    (root / "schedule.json").write_text(json.dumps(schedule, indent=1))
    history = History(root / "history.jsonl")
    result = {"seed": seed, "violations": [], "faults": {}, "ops": {}, "seconds": 0}
    watcher = Watcher(fed)
    workload = monitor = nemesis = None
    t_start = time.time()
    try:
        fed.start()
        fed.wait_connected(timeout=60)
        workload = Workload(fed, seed, history, threads=threads, creates_per_second=creates_per_second)
        monitor = Monitor(fed)
        import federation
        nemesis = Nemesis(fed, workload, schedule, seed, log=say, new_binary=federation.EKC)
        watcher.thread.start()
        t_start = time.time()
        workload.start()
        monitor.start()
        nemesis.start()
        while time.time() - t_start < seconds or not nemesis.done():
            time.sleep(0.5)
            if time.time() - t_start > seconds + 300:
                say("  nemesis did not finish within 5 minutes of the end: stopping it")
                break
        workload.stop()
        nemesis.stop()
        result["seconds"] = round(time.time() - t_start, 1)
        totals = workload.totals()
        say(f"  workload: {sum(totals.values())} operations: {totals['ok']} acknowledged, {totals['info']} indeterminate, "
            f"{totals['fail']} refused" + (f", {totals['harness-error']} HARNESS ERRORS" if totals.get("harness-error") else "")
            + f"; steps {workload.step_totals()}; races {workload.races()}; retries {workload.retries()}")
        creates = workload.counts.get(("create", "ok"), 0)
        say(f"  creates acknowledged: {creates} ({creates / max(1.0, result['seconds']):.1f}/s)")
        heal_everything(fed, log=say)
        ok, waited, detail, stalled = wait_quiescent(fed)
        say(f"  quiescence: {'reached' if ok else 'NOT reached'} after {waited:.1f} s"
            + (f" (gave up: {len(stalled)} link(s) behind with nothing moving for {STALL_SECONDS:.0f} s)" if stalled and not ok else ""))
        if ok:
            # The feed delivers each change once; what it could not (a part refused because
            # the transfer entitling it had not arrived, a stamp beyond the skew bound then)
            # is anti-entropy's: every node compares digests with every peer and pulls what
            # differs, until a round repairs nothing. What it repaired is printed: each is a
            # gap the feed left.
            result["antiEntropy"] = anti_entropy(fed)
            ok, waited2, detail, stalled = wait_quiescent(fed)
            waited += waited2
        purges = wait_purges(fed) if ok else {}
        if purges:
            say(f"  purges still waiting 30 s after quiescence: {purges}")
        monitor.stop()
        monitor.sample_once()
        (root / "transfer-samples.json").write_text(json.dumps(
            [[nid, trid, seq] for (nid, trid), seq in monitor.samples.items()]))
        watcher.stop_event.set()
        violations = []
        if not ok and stalled:
            for nid, peer, connected, applied, peer_last, err, rejected in stalled:
                violations.append({"check": "link-stalled", "node": nid, "ops": [],
                                   "message": f"{nid} pulling from {peer} stopped: applied {applied} of the peer's "
                                   f"{peer_last}, connected={connected}, lastError {err!r}"
                                   + (f", refused by reason {rejected}" if rejected else "")
                                   + f" (nothing moved for {STALL_SECONDS:.0f} s after every fault was healed; the other "
                                     "violations were read without quiescence)"})
        elif not ok:
            violations.append({"check": "quiescence", "message": f"links not caught up within {waited:.0f} s: {detail}",
                               "ops": []})
        checker = Checker(fed, seed, history.ops, monitor.samples, log=say)
        try:
            violations += checker.run()
        finally:
            if getattr(checker, "final_state", None):
                (root / "final-state.json").write_text(json.dumps(checker.final_state, ensure_ascii=False, indent=0))
        say(f"  digests: {checker.digest_status}")
        if previous:
            violations += upgrade_checks(fed, previous, federation.EKC, say)
        for c in watcher.crashes:
            violations.append({"check": "crash", "node": c["node"], "message": f"exited with {c['exit']} though not killed: "
                               + (c["why"] or f"...{c['log'][-1500:]}"), "ops": []})
        for e in nemesis.errors:
            violations.append({"check": "nemesis", "message": e, "ops": []})
        result["faults"] = nemesis.counts()
        result["ops"] = totals
        result["digest"] = checker.digest_status
        result["violations"] = violations
    except Exception as e:
        import traceback
        result["violations"].append({"check": "harness", "message": traceback.format_exc(), "ops": []})
        say(f"  harness error: {e!r}")
    finally:
        watcher.stop_event.set()
        if workload:
            workload.stop_event.set()
        if nemesis:
            nemesis.stop_event.set()
        stop_codes = {}
        for n in fed.all():
            n.cont()
            try:
                n.expected_exit = True
                stop_codes[n.node_id] = n.stop(timeout=30)
            except Exception as e:
                stop_codes[n.node_id] = repr(e)
        if fed.tmpfs and (keep or result["violations"]):
            # The tmpfs goes with the unmount: keep a copy of the store for a failing seed.
            shutil.copytree(fed.tmpfs[1], root / f"data-{fed.tmpfs[0]}", ignore=shutil.ignore_patterns("ballast"),
                            dirs_exist_ok=True)
        try:
            fed.stop()
        except Exception:
            pass
        history.close()
    for nid, rc in stop_codes.items():
        if rc not in (0, None):
            result["violations"].append({"check": "crash", "node": nid, "message": f"a graceful stop (SIGTERM) exited {rc}",
                                         "ops": []})
    for n in fed.all():
        text = n.tail(10 ** 9)
        if previous and n.node_id in UPGRADED:
            text = previous_release_crash(n.node_id, text, CRASH_MARKERS, say)
        for marker in CRASH_MARKERS:
            if marker in text:
                i = text.index(marker)
                result["violations"].append({"check": "crash", "node": n.node_id,
                                             "message": f"log says {marker!r}: {text[max(0, i - 600):i + 900]}", "ops": []})
                break
        shutil.copy(n.log_path, root / f"{n.node_id}.log")
    if result.get("faults"):
        drawn = {f["kind"] for f in schedule}   # an upgrade run draws no process faults; a fault run no upgrades
        missing = [k for k, c in result["faults"].items()
                   if c == 0 and (k in drawn or k == UPGRADE_KIND and previous) and not (k == "disk" and fed.tmpfs_error)]
        if missing and seconds >= 60:
            say(f"  note: fault kinds that did not occur: {missing}")
    if fed.tmpfs_error:
        say(f"  !!! FULL-DISK FAULT SKIPPED: tmpfs could not be mounted ({fed.tmpfs_error})")
    attach_evidence(result["violations"], root)
    result["passed"] = not result["violations"]
    (root / "violations.json").write_text(json.dumps(result["violations"], indent=1, ensure_ascii=False))
    report(result, history, root, seed, seconds)
    if result["passed"] and not keep:
        _remove(root)
    return result


def attach_evidence(violations, root: Path):
    """To each violation about a ticket, the log lines where a node refused a record of
    that ticket from a peer (the usual reason a replica lacks something)."""
    refusals = {}
    for log in sorted(root.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "refused" in line and " id=" in line:
                tid = line.split(" id=", 1)[1].split()[0]
                refusals.setdefault(tid, []).append(f"{log.stem}: {line.strip()}")
    for v in violations:
        lines = refusals.get(v.get("ticket") or "", [])
        if lines:
            v["refusals"] = {"count": len(lines), "first": lines[:3]}


def _remove(root: Path):
    data = root / "fed" / "data"
    if data.exists():
        for d in data.iterdir():
            os.system(f"umount {d} 2>/dev/null")
    shutil.rmtree(root, ignore_errors=True)


def rerun_command(seed, seconds=None):
    extra_make = f" FAULT_SECONDS={seconds:g}" if seconds and seconds != 120 else ""
    extra_py = f" --seconds {seconds:g}" if seconds and seconds != 120 else ""
    return f"make faults SEED={seed}{extra_make}   (or: python3 tests/faults/run.py --seed {seed}{extra_py})"


# The order violations are printed in: what stops or skews everything else first.
CHECK_ORDER = ["harness", "crash", "nemesis", "quiescence", "link-stalled", "link", "held-purge", "owner",
               "sender-status", "transfer-diverged", "lost-step", "lost-transfer", "presence", "lost-write",
               "lost-note", "lost-after-transfer-ended", "conflict-hides-value", "field-value", "replica-diverged",
               "transfer-backwards", "out-of-scope", "unknown-ticket", "digest"]
PER_CHECK = 6


def report(result, history, root, seed, seconds=None):
    v = result["violations"]
    if not v:
        say(f"  seed {seed}: PASS")
        return
    import collections
    by_check = collections.OrderedDict()
    for x in sorted(v, key=lambda x: CHECK_ORDER.index(x["check"]) if x["check"] in CHECK_ORDER else len(CHECK_ORDER)):
        by_check.setdefault(x["check"], []).append(x)
    say(f"  seed {seed}: FAIL, {len(v)} violation(s): {dict((k, len(xs)) for k, xs in by_check.items())}")
    by_num = {o.get("op"): o for o in history.ops}
    for check, xs in by_check.items():
        say(f"  [{check}] {len(xs)}" + (f", the first {PER_CHECK}:" if len(xs) > PER_CHECK else ":"))
        for x in xs[:PER_CHECK]:
            say(f"   - [{x['check']}] {x.get('node') or ''} {x.get('ticket') or ''}: {x['message']}"[:3000])
            if x.get("refusals"):
                say(f"       {x['refusals']['count']} refusal(s) of this ticket in the logs, first: {x['refusals']['first'][0][:400]}")
            for n in x.get("ops", [])[:6]:
                o = by_num.get(n)
                if o:
                    brief = {k: o.get(k) for k in ("op", "kind", "node", "ticket", "field", "value", "action", "state",
                                                   "transfer", "visibility", "result", "status", "race", "t0", "t1",
                                                   "seen", "competing") if k in o}
                    say(f"       op {json.dumps(brief, ensure_ascii=False, default=str)[:600]}")
    say(f"  every violation: {root / 'violations.json'}")
    say(f"  rerun alone: {rerun_command(seed, seconds)}")
    say(f"  kept: {root}/schedule.json, history.jsonl, violations.json, <node>.log")


def recheck(root: Path):
    """The checks again on a kept run's files (after changing checker.py)."""
    from cluster import SPECS
    from types import SimpleNamespace
    nodes = [SimpleNamespace(node_id=s["id"], org=s["region"]) for s in SPECS]
    fed = SimpleNamespace(all=lambda: nodes, org_nodes=lambda org: [n for n in nodes if n.org == org],
                          org_of=lambda nid: next(n.org for n in nodes if n.node_id == nid))
    ops = [json.loads(line) for line in (root / "history.jsonl").read_text().splitlines() if line.strip()]
    samples = {}
    if (root / "transfer-samples.json").exists():
        samples = {(nid, trid): [tuple(x) for x in seq] for nid, trid, seq in json.loads((root / "transfer-samples.json").read_text())}
    seed = int(root.name.split("-")[-1])
    checker = Checker(fed, seed, ops, samples, log=say)
    v = checker.run(final_state=json.loads((root / "final-state.json").read_text()))
    attach_evidence(v, root)
    report({"violations": v}, SimpleNamespace(ops=ops), root, seed)
    import collections
    say(f"  by check: {dict(collections.Counter(x['check'] for x in v))}")
    return 1 if v else 0


REGRESSIONS = HERE / "regressions.txt"


def read_regressions(path: Path):
    """[(seed, seconds or None, what it found)] from lines `SEED [SECONDS] # what it found`."""
    out = []
    for line in path.read_text().splitlines():
        body, _, note = line.partition("#")
        parts = body.split()
        if not parts:
            continue
        out.append((int(parts[0]), float(parts[1]) if len(parts) > 1 else None, note.strip()))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, help="run this one seed")
    ap.add_argument("--seeds", type=int, default=None, help="run this many seeds")
    ap.add_argument("--base", default="1", help="first seed of --seeds (a number, or 'random')")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("FAULT_SECONDS", 120)))
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--keep", action="store_true", default=bool(os.environ.get("KEEP")))
    ap.add_argument("--clock-jump-ms", type=int, default=600_000,
                    help="size of the wall-clock jumps (default ±10 min; larger ones probe the skew bound)")
    ap.add_argument("--bin", metavar="PATH", default=os.environ.get("EKC_BIN"),
                    help="the node binary to pin (default $EKC_BIN, else .build/debug/ekc)")
    ap.add_argument("--regressions", metavar="FILE", nargs="?", const=str(REGRESSIONS),
                    help=f"run the seeds a file lists (default {REGRESSIONS.relative_to(HERE.parent.parent)}), "
                         "each for the seconds it names")
    ap.add_argument("--recheck", metavar="DIR", help="check a kept run's files again (no nodes)")
    ap.add_argument("--upgrade-from", metavar="PATH",
                    help="a rolling upgrade: start " + ", ".join(UPGRADED) + " on this binary (a previous release, "
                         "tests/upgrade/build-release.sh) and upgrade them one at a time to --bin under the workload")
    ap.add_argument("--creates-per-second", type=float, default=0,
                    help="paced creates beside the workload's mix, spread over both regions (0: none)")
    a = ap.parse_args()
    if a.recheck:
        return recheck(Path(a.recheck))
    notes = {}
    if a.regressions:
        listed = read_regressions(Path(a.regressions))
        seeds = [seed for seed, _, _ in listed]
        seconds = {seed: secs or a.seconds for seed, secs, _ in listed}
        notes = {seed: note for seed, _, note in listed}
        say(f"regression seeds from {a.regressions}: {len(seeds)}")
    elif a.seed is not None:
        seeds = [a.seed]
    else:
        base = int.from_bytes(os.urandom(2), "big") if a.base == "random" else int(a.base)
        seeds = list(range(base, base + (a.seeds or 20)))
    if not a.regressions:
        seconds = {seed: a.seconds for seed in seeds}
    say(f"fault runs: seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), "
        + ("the seconds listed" if a.regressions else f"{a.seconds:.0f} s each") + f", {a.threads} client threads")
    pinned = pin_binary(a.bin)
    previous = None
    if a.upgrade_from is not None:
        if not a.upgrade_from or not Path(a.upgrade_from).is_file():
            say(f"--upgrade-from {a.upgrade_from!r}: no such binary (tests/upgrade/build-release.sh builds the previous release)")
            return 2
        import federation
        new = federation.EKC
        previous = pin_binary(a.upgrade_from)
        federation.EKC = new   # the binary of every other node, and what an upgrade switches to
        import tokens
        tokens.EKC = new
        say(f"rolling upgrade: {', '.join(UPGRADED)} start on release {release_of(previous)}, "
            f"upgraded one at a time to {release_of(new)}")
    results = []
    t_all = time.time()
    for s in seeds:
        if notes.get(s):
            say(f"--- seed {s} is listed for: {notes[s]}")
        results.append(run_seed(s, seconds[s], a.threads, a.keep, a.clock_jump_ms, previous=previous,
                                creates_per_second=a.creates_per_second))
    say("\n seed | seconds |   ops | acked | indet. | refused | " + " ".join(f"{k[:9]:>9}" for k in ALL_KINDS) + " | result")
    for r in results:
        ops = r.get("ops") or {}
        f = r.get("faults") or {}
        say(f" {r['seed']:>4} | {r['seconds']:>7} | {sum(ops.values()):>5} | {ops.get('ok', 0):>5} | {ops.get('info', 0):>6} | "
            f"{ops.get('fail', 0):>7} | " + " ".join(f"{f.get(k, 0):>9}" for k in ALL_KINDS)
            + f" | {'PASS' if r['passed'] else 'FAIL (' + str(len(r['violations'])) + ')'}")
    for p in (pinned, previous):
        try:
            if p:
                p.unlink()
        except OSError:
            pass
    say(f"\n{len(results)} seed(s) in {time.time() - t_all:.0f} s")
    failed = [r["seed"] for r in results if not r["passed"]]
    if failed:
        say(f"\nFAILED seeds: {failed}; rerun one alone: {rerun_command(failed[0], seconds[failed[0]])}")
        return 1
    say(f"\nall {len(results)} seeds passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
