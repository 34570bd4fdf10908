"""A federation of real `ekc node` processes replicating over mutual TLS on loopback,
with a TCP proxy the test controls on every replication link.

Topology and proxies
--------------------
A node LISTENS for replication on its own topology entry's `replication` address and
DIALS each peer at the `replication` address the topology gives for that peer. To cut
links, the dialled address must be a proxy, while the listen address must stay the
node's real port. One shared topology file cannot say both, so every node gets its own
topology file (`topology-<id>.json`), identical except for the `replication` fields:

* in node X's file, X's own `replication` is X's real listen address;
* every peer Y of X has `replication` = the proxy for the directed link X -> Y, which
  forwards to Y's real replication port.

There is one proxy per directed link (not one per target), so cutting a node off is
exactly: cut every proxy whose dialler or target is that node, and the other nodes keep
replicating with each other. The proxies forward raw TCP: TLS (and the mutual
certificate check) runs end to end between the two nodes, so the proxy changes nothing
but reachability. `cluster.json` (real addresses everywhere) is for `ekc cluster health`.

Every node process and every proxy is stopped by `Federation.stop()`, which the test
fixtures call in a `finally`, even when the test fails.
"""
import json
import os
import select
import socket
import subprocess
import threading
import time
import urllib.error
from pathlib import Path

from conftest import EKC, REPO, Node, free_port

DEV_CA = REPO / "ops" / "dev-ca.sh"


# --- polling ---------------------------------------------------------------------------

def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Polls `predicate()` until it returns a truthy value (which is returned) or the
    deadline passes (AssertionError naming `what` and the last value or exception)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except (AssertionError, OSError, urllib.error.URLError, KeyError, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}; last: {last!r}"[:4000])
        time.sleep(interval)


# --- the link proxy --------------------------------------------------------------------

class LinkProxy:
    """A loopback TCP forwarder for one directed replication link.

    `cut()` closes every open connection and refuses new ones (accepts and closes them at
    once, so the dialler sees the connection fail, never hangs); `heal()` forwards again.
    """

    def __init__(self, name: str, target_port: int):
        self.name = name
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns = set()  # sockets of open client/upstream pairs
        self._cut = False
        self._stopped = False
        self.accepted = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

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
            if self._cut or self._stopped:
                self.refused += 1
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                _abort(client)  # the node behind is down: the dialler sees a failed connection
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._cut or self._stopped:
                    _abort(client)
                    _abort(upstream)
                    continue
                self._conns.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the pair (a half-closed TLS/HTTP2 link is of no use).
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)
        _abort(src)
        _abort(dst)

    def _close_all(self):
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            _abort(s)

    def cut(self):
        self._cut = True
        self._close_all()

    def heal(self):
        self._cut = False

    def stop(self):
        self._stopped = True
        self._cut = True
        self._close_all()
        try:
            self._listener.close()
        except OSError:
            pass
        self._thread.join(2)


def _abort(s: socket.socket):
    """Closes a socket at once (shutdown wakes a thread blocked in recv on it)."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# --- nodes -------------------------------------------------------------------------------

class FedNode(Node):
    """A node started from its own topology file (`--config FILE --node-id ID`)."""

    def __init__(self, fed: "Federation", spec: dict):
        super().__init__(fed.root / "data" / spec["id"], node_id=spec["id"])
        self.fed = fed
        self.spec = spec
        self.region = spec.get("region", "38")
        self.org = spec.get("organisation", self.region)
        self.repl_port = free_port()
        self.config = fed.root / f"topology-{self.node_id}.json"
        self.log_path = fed.root / f"{self.node_id}.log"
        self.starts = 0
        # The binary this node runs: None for this build's (EKC); the upgrade runs start some
        # nodes on a previous release's and switch them one at a time (tests/faults/run.py).
        self.binary = spec.get("bin")

    @property
    def peers(self):
        return self.fed.peers_of(self.node_id)

    def start(self, timeout: float = 30.0):
        self.starts += 1
        self.log = open(self.log_path, "ab")
        self.log.write(f"\n===== start #{self.starts} at {time.time():.3f} =====\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(
            [str(self.binary or EKC), "node", "start", "--config", str(self.config), "--node-id", self.node_id,
             "--log-level", "info", *self._idp_flags(), *self.spec.get("flags", [])],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=str(self.fed.root),
            # Every commit of a test federation is held to the store's invariants (StoreVerify.swift).
            env=dict(os.environ, EKC_VERIFY_EACH_COMMIT="1"))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited with {self.proc.returncode}: {self.tail()}")
            if _listening(self.port) and _listening(self.repl_port):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.node_id} did not listen within {timeout}s: {self.tail()}")

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- API shortcuts ---
    def get(self, path: str):
        status, _, body = self.request("GET", path)
        assert status == 200, (self.node_id, path, status, body)
        return body

    def ticket(self, ref: str):
        """The ticket or None (404)."""
        status, _, body = self.request("GET", f"/v1/tickets/{ref}")
        if status == 404:
            return None
        assert status == 200, (self.node_id, ref, status, body)
        return body

    def patch(self, ticket_id: str, body: dict, actor: str = "op-test"):
        status, _, t = self.request("PATCH", f"/v1/tickets/{ticket_id}", body, headers=self.auth(actor))
        assert status == 200, (self.node_id, body, status, t)
        return t

    def add_note(self, ticket_id: str, text: str, actor: str = "op-test", visibility: str = None):
        body = {"text": text} if visibility is None else {"text": text, "visibility": visibility}
        status, _, n = self.request("POST", f"/v1/tickets/{ticket_id}/notes", body,
                                    headers=self.auth(actor))
        assert status == 201, (self.node_id, status, n)
        return n

    def replication(self):
        return self.get("/v1/replication")

    def link(self, peer: str):
        return next(p for p in self.replication()["peers"] if p["node"] == peer)

    def conflicts(self):
        return self.get("/v1/conflicts?limit=500")["items"]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- the federation ------------------------------------------------------------------------

class Federation:
    """Nodes described by specs `{"id", "region"="38", "peers"=None, "numberSeries"}`.

    `peers` absent means every other node of the same region (the topology's default)."""

    def __init__(self, root: Path, specs, cert_ids=()):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.certs = self.root / "certs"
        self.specs = [dict(s) for s in specs]
        ids = [s["id"] for s in self.specs]
        make_certs(self.certs, *ids, *cert_ids)
        for i, s in enumerate(self.specs):
            s.setdefault("region", "38")
            s.setdefault("numberSeries", i)
        self.nodes = {s["id"]: FedNode(self, s) for s in self.specs}
        # One proxy per directed link dialler -> target.
        self.proxies = {}
        try:
            for x in ids:
                for y in self.peers_of(x):
                    self.proxies[(x, y)] = LinkProxy(f"{x}->{y}", self.nodes[y].repl_port)
            for x in ids:
                self._write_topology(self.nodes[x].config, dialler=x)
            self.cluster_file = self.root / "cluster.json"
            self._write_topology(self.cluster_file, dialler=None)
        except BaseException:
            for p in self.proxies.values():
                p.stop()
            raise

    def peers_of(self, node_id: str):
        spec = next(s for s in self.specs if s["id"] == node_id)
        if spec.get("peers") is not None:
            return list(spec["peers"])
        return [s["id"] for s in self.specs if s["id"] != node_id and s["region"] == spec["region"]]

    def _write_topology(self, path: Path, dialler):
        entries = []
        for s in self.specs:
            n = self.nodes[s["id"]]
            if dialler is not None and (dialler, n.node_id) in self.proxies:
                replication = self.proxies[(dialler, n.node_id)].address  # X dials Y through the proxy
            else:
                replication = f"127.0.0.1:{n.repl_port}"  # X's own listen address (or not a peer of X)
            e = {
                "id": n.node_id, "region": s["region"], "role": s.get("role", "test"), "utcOffsetMinutes": 480,
                "numberSeries": s["numberSeries"], "listen": f"127.0.0.1:{n.port}", "replication": replication,
                "data": str(n.data_dir),
                "identity": {"cert": str(self.certs / f"{n.node_id}.pem"), "key": str(self.certs / f"{n.node_id}.key"),
                             "ca": str(self.certs / "ca.pem")},
            }
            if s.get("peers") is not None:
                e["peers"] = list(s["peers"])
            entries.append(e)
        path.write_text(json.dumps({"federation": "test", "nodes": entries}, indent=2))

    def __getitem__(self, node_id: str) -> FedNode:
        return self.nodes[node_id]

    def all(self):
        return list(self.nodes.values())

    def start(self):
        for n in self.nodes.values():
            n.start()
        return self

    def stop(self):
        errors = []
        for n in self.nodes.values():
            try:
                n.stop()
            except Exception as e:  # keep stopping the others
                errors.append(e)
        for p in self.proxies.values():
            p.stop()
        for n in self.nodes.values():
            if getattr(n, "log", None):
                n.log.close()
        if errors:
            raise errors[0]

    # --- links ---
    def links_of(self, node_id: str):
        return [p for (x, y), p in self.proxies.items() if node_id in (x, y)]

    def cut(self, node_id: str):
        """Cuts `node_id` off from every peer, both directions."""
        for p in self.links_of(node_id):
            p.cut()

    def heal(self, node_id: str):
        for p in self.links_of(node_id):
            p.heal()

    def wait_connected(self, timeout: float = 20.0, nodes=None):
        """Until every link (each node's view of each of its peers) reports connected."""
        nodes = nodes or list(self.nodes)

        def ok():
            for x in nodes:
                links = {p["node"]: p for p in self.nodes[x].replication()["peers"]}
                for y in self.peers_of(x):
                    if y in nodes and not links.get(y, {}).get("connected"):
                        return False
            return True
        wait_until(ok, timeout, f"all links of {nodes} connected")

    def logs(self) -> str:
        return "\n".join(f"--- {n.node_id} ---\n{n.tail(2000)}" for n in self.nodes.values())


def make_certs(directory: Path, *ids: str):
    """Node certificates in `directory` under a CA of their own: its key in a sibling
    directory (dev-ca.sh keeps CA keys out of the node keys' directory), one per
    `directory`, since tests make "another CA" with another directory beside it."""
    import os
    directory = Path(directory)
    env = dict(os.environ, EKC_DEV_CA_DIR=str(directory.parent / f"{directory.name}.ca"))
    r = subprocess.run([str(DEV_CA), str(directory), *ids], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return directory


# --- comparing replicas --------------------------------------------------------------------

def view(node: FedNode, ref: str):
    """A ticket as the operator API shows it, without the local edit counter `version`."""
    t = node.ticket(ref)
    if t is None:
        return None
    t = dict(t)
    t.pop("version", None)
    return t


def snapshot(node: FedNode, ticket_id: str):
    """(view, notes, history) of one ticket on one node; None if absent."""
    v = view(node, ticket_id)
    if v is None:
        return None
    notes = node.get(f"/v1/tickets/{ticket_id}/notes")["items"]
    history = node.get(f"/v1/tickets/{ticket_id}/history")["items"]
    return v, notes, history


def identical_everywhere(nodes, ticket_id: str):
    """The common snapshot when every node holds the same one, else False."""
    snaps = [snapshot(n, ticket_id) for n in nodes]
    if snaps[0] is None or any(s != snaps[0] for s in snaps[1:]):
        return False
    return snaps[0]


def ticket_ids(node: FedNode):
    from conftest import list_all
    return {t["id"] for t in list_all(node)}


def running(root, specs):
    """A started federation whose links are all connected, for a fixture to yield; its
    logs are printed when the test fails, and it is stopped in any case."""
    f = Federation(root, specs)
    try:
        f.start()
        f.wait_connected()
        yield f
    except BaseException:
        print(f.logs())
        raise
    finally:
        f.stop()


# --- operator steps shared by the transfer tests ---------------------------------------------

CITIZEN_SNILS, CITIZEN_PHONE = "11223344595", "+79001234567"   # synthetic; the SNILS checksum holds
CITIZEN_NAME = "Иванова Мария Петровна"


def post(node, path, body=None, actor="op-test"):
    return node.request("POST", path, body if body is not None else {}, headers=node.auth(actor))


def citizen_ticket(node, subject="Перерасчёт пенсии"):
    """A REGISTERED ticket with every citizen detail, ready to hand over."""
    t = node.create(subject=subject, citizen={"ref": "CIT-7F3K2", "name": CITIZEN_NAME, "snils": CITIZEN_SNILS,
                                              "phone": CITIZEN_PHONE})
    return node.patch(t["id"], {"status": "REGISTERED"})
