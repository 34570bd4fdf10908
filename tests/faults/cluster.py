"""The federation the fault harness runs: real `ekc node` processes over mutual TLS,
every directed replication link through a proxy the nemesis controls.

It reuses tests/integration/federation.py (topology files per node, certificates, the
node class) and adds what faults need:

* `FaultProxy`: besides cut (refuse, close), a blackhole (accept and hold connections,
  forward nothing, so a node notices only by its timeouts); cuts and blackholes are
  counted, so overlapping faults on one link heal only when the last one ends;
* `FaultNode`: short operator-port timeouts, a wall-clock offset file
  (`--wall-clock-offset-file`), kill -9 / SIGSTOP / SIGCONT / SIGTERM, and a record of
  every exit (expected or not);
* a tmpfs of its own for one node's data directory (the full-disk fault).
"""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from federation import FedNode, Federation, make_certs, _abort  # noqa: E402

# Regions 38 (a centre and a remote office) and 52, the pension fund and the social
# insurance fund, each fund on two nodes. The office reaches other organisations only
# through its centre; the two nodes of a fund peer with each other and with the regions'
# centres (as a fund's two data centres would).
SPECS = [
    {"id": "irk-main", "region": "38",
     "peers": ["irk-office-1", "nn-main", "pension-1", "pension-2", "fss-1", "fss-2"]},
    {"id": "irk-office-1", "region": "38", "peers": ["irk-main"]},
    {"id": "nn-main", "region": "52", "peers": ["irk-main", "pension-1", "pension-2", "fss-1", "fss-2"]},
    {"id": "pension-1", "region": "pension", "peers": ["pension-2", "irk-main", "nn-main"]},
    {"id": "pension-2", "region": "pension", "peers": ["pension-1", "irk-main", "nn-main"]},
    {"id": "fss-1", "region": "fss", "peers": ["fss-2", "irk-main", "nn-main"]},
    {"id": "fss-2", "region": "fss", "peers": ["fss-1", "irk-main", "nn-main"]},
]
REGIONS = ("38", "52")
FUNDS = ("pension", "fss")
ORGS = REGIONS + FUNDS


def org_nodes_of(org: str):
    return [s["id"] for s in SPECS if s["region"] == org]


# The organisations with two nodes, and the pair the `split-org` fault separates.
SPLITTABLE = {org: org_nodes_of(org) for org in ORGS if len(org_nodes_of(org)) == 2}
TMPFS_NODE = "pension-1"
TMPFS_SIZE = "64m"


class FaultProxy:
    """A loopback TCP forwarder for one directed link X -> Y (X dials Y through it).

    `cut()`: open connections are closed, new ones accepted and closed at once.
    `blackhole()`: connections stay open but nothing is forwarded either way (new ones
    are accepted and held without dialling Y). Both are counted; `heal_cut()` /
    `heal_blackhole()` undo one each."""

    def __init__(self, name: str, target_port: int):
        self.name = name
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns = set()
        self._held = set()
        self.cuts = 0
        self.holes = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self):
        while not self._stopped:
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            if self._stopped or self.cuts > 0:
                _abort(client)
                continue
            if self.holes > 0:
                with self._lock:
                    self._held.add(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self.cuts > 0 or self._stopped:
                    _abort(client)
                    _abort(upstream)
                    continue
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _swallow(self, s):
        """A held connection: read and drop whatever comes, until it ends."""
        try:
            while True:
                if not s.recv(65536):
                    break
        except OSError:
            pass
        with self._lock:
            self._held.discard(s)
        _abort(s)

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.holes > 0:
                    continue  # blackholed: dropped on the floor, the connection stays open
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)
        _abort(src)
        _abort(dst)

    def _close_all(self):
        with self._lock:
            conns = list(self._conns) + list(self._held)
            self._conns, self._held = set(), set()
        for s in conns:
            _abort(s)

    def cut(self):
        with self._lock:
            self.cuts += 1
        self._close_all()

    def heal_cut(self):
        with self._lock:
            self.cuts = max(0, self.cuts - 1)

    def blackhole(self):
        with self._lock:
            self.holes += 1

    def heal_blackhole(self):
        with self._lock:
            self.holes = max(0, self.holes - 1)
            healed = self.holes == 0
        if healed:
            # Held connections never reached the target: end them, the dialler redials.
            with self._lock:
                held, self._held = list(self._held), set()
            for s in held:
                _abort(s)

    def heal_all(self):
        with self._lock:
            self.cuts = 0
        self.holes = 1
        self.heal_blackhole()

    @property
    def healthy(self) -> bool:
        return self.cuts == 0 and self.holes == 0

    def stop(self):
        self._stopped = True
        self.cuts += 1
        self._close_all()
        try:
            self._listener.close()
        except OSError:
            pass
        self._thread.join(2)


class FaultNode(FedNode):
    """A federation node with short operator-port timeouts and a wall-clock offset file;
    every exit is recorded with whether the harness caused it."""

    API_IDLE_TIMEOUT = 3
    API_HEADER_TIMEOUT = 3
    API_BODY_TIMEOUT = 3

    def __init__(self, fed, spec):
        super().__init__(fed, spec)
        self.clock_file = fed.root / f"clock-{self.node_id}.ms"
        self.clock_file.write_text("0\n")
        self.lock = threading.RLock()
        self.expected_exit = False
        self.stopped = False  # SIGSTOPped
        self.exits = []  # (time, returncode, expected)
        self.down_since = None

    ANTI_ENTROPY_INTERVAL = 10

    def _idp_flags(self):
        return super()._idp_flags() + [
            "--wall-clock-offset-file", str(self.clock_file),
            "--api-idle-timeout", str(self.API_IDLE_TIMEOUT),
            "--api-header-timeout", str(self.API_HEADER_TIMEOUT),
            "--api-body-timeout", str(self.API_BODY_TIMEOUT),
            # Anti-entropy every few seconds, so that it also runs during the faults.
            "--anti-entropy-interval", str(self.ANTI_ENTROPY_INTERVAL),
        ]

    def start(self, timeout: float = 60.0):
        with self.lock:
            self.expected_exit = False
            self.stopped = False
            r = super().start(timeout)
            self.down_since = None
            return r

    def poll_exit(self):
        """Records an exit once; returns (returncode, expected) or None if running."""
        with self.lock:
            if self.proc is None or self.proc.poll() is None:
                return None
            if getattr(self.proc, "_fault_recorded", False):
                return None
            self.proc._fault_recorded = True
            rc = self.proc.returncode
            self.exits.append((time.time(), rc, self.expected_exit))
            if self.down_since is None:
                self.down_since = time.time()
            return rc, self.expected_exit

    def kill9(self):
        with self.lock:
            self.expected_exit = True
            if self.stopped:
                self.cont()
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
            self.poll_exit()

    def terminate(self, timeout: float = 20.0):
        with self.lock:
            self.expected_exit = True
            if self.stopped:
                self.cont()
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.poll_exit()
            return self.proc.returncode if self.proc else 0

    def sigstop(self):
        with self.lock:
            if self.alive():
                self.proc.send_signal(signal.SIGSTOP)
                self.stopped = True

    def cont(self):
        with self.lock:
            if self.stopped and self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
            self.stopped = False

    def set_clock_offset(self, millis: int):
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(f"{int(millis)}\n")
        os.replace(tmp, self.clock_file)

    def available(self) -> bool:
        return self.alive() and not self.stopped


class FaultFederation(Federation):
    def __init__(self, root: Path, specs=SPECS, tmpfs_node: str = TMPFS_NODE):
        # Federation.__init__, with FaultNode and FaultProxy.
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.certs = self.root / "certs"
        self.specs = [dict(s) for s in specs]
        ids = [s["id"] for s in self.specs]
        make_certs(self.certs, *ids)
        for i, s in enumerate(self.specs):
            s.setdefault("region", "38")
            s.setdefault("numberSeries", i)
        self.nodes = {s["id"]: FaultNode(self, s) for s in self.specs}
        self.proxies = {}
        self.tmpfs = None
        self.tmpfs_error = None
        try:
            for x in ids:
                for y in self.peers_of(x):
                    self.proxies[(x, y)] = FaultProxy(f"{x}->{y}", self.nodes[y].repl_port)
            for x in ids:
                self._write_topology(self.nodes[x].config, dialler=x)
            self.cluster_file = self.root / "cluster.json"
            self._write_topology(self.cluster_file, dialler=None)
            if tmpfs_node:
                self._mount_tmpfs(self.nodes[tmpfs_node])
        except BaseException:
            for p in self.proxies.values():
                p.stop()
            raise

    def _mount_tmpfs(self, node):
        d = node.data_dir
        d.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.tmpfs_error = (r.stderr or r.stdout).strip() or f"mount exited {r.returncode}"
            print("!" * 78 + f"\n!!! could not mount a tmpfs for {node.node_id} ({self.tmpfs_error}):"
                  f"\n!!! the FULL-DISK fault is SKIPPED in this run\n" + "!" * 78, flush=True)
            return
        self.tmpfs = (node.node_id, d)

    def unmount(self):
        if self.tmpfs:
            _, d = self.tmpfs
            for _ in range(20):
                r = subprocess.run(["umount", str(d)], capture_output=True, text=True)
                if r.returncode == 0:
                    break
                time.sleep(0.25)
            else:
                subprocess.run(["umount", "-l", str(d)], capture_output=True)
            self.tmpfs = None

    def org_nodes(self, org: str):
        return [n for n in self.nodes.values() if n.org == org]

    def org_of(self, node_id: str) -> str:
        return self.nodes[node_id].org

    def stop(self):
        for n in self.nodes.values():
            n.cont()
        try:
            super().stop()
        finally:
            self.unmount()
