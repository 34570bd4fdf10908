"""Fixtures that run real `ekc node` processes on loopback.

Every process started here is stopped by the fixture (SIGTERM, then SIGKILL), so a
test run never leaves a node behind.
"""
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tokens import DEV_IDP, auth, cli_env, token

REPO = Path(__file__).resolve().parents[2]
EKC = Path(os.environ.get("EKC_BIN", REPO / ".build" / "debug" / "ekc"))


# A ticket's registers by name (proto/ekc/replication/v2/ticket.proto).
TICKET_REGISTERS = {"header", "statement", "citizen", "progress", "assignee", "priority", "topic", "owner",
                    "citizenName", "citizenSnils", "citizenPhone"}

_ports_handed_out = set()


def _ephemeral_range():
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port nothing listens on, never the same one twice in a test run, and
    outside the kernel's ephemeral range: a port asked of the kernel with bind(0) comes
    from that range, and before the node bound it another node's outgoing connection
    could take it as its local port (seen in CI: "Address already in use")."""
    lo, hi = _ephemeral_range()
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    candidates = [(10000, lo - 1)] if lo > 11000 else [(hi + 1, 65535)]
    for _ in range(10000):
        first, last = candidates[0]
        port = rng.randint(first, last)
        if port in _ports_handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


class Node:
    """One node process. `url` is its API base URL."""

    def __init__(self, data_dir: Path, node_id: str = "irk-test", extra=None):
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self.port = free_port()
        self.extra = list(extra or [])
        # A node without a topology is an organisation of its numbering code.
        self.org = self.extra[self.extra.index("--region") + 1] if "--region" in self.extra else "38"
        self.proc = None
        self.scheme = "https" if "--tls-cert" in self.extra else "http"
        self.log_path = self.data_dir.parent / f"{node_id}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(EKC), "node", "start", "--node-id", self.node_id, "--data", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port}", *self._idp_flags(), *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node did not listen within {timeout}s: {self.log_path.read_text()[-2000:]}")

    def _idp_flags(self):
        return [] if ("--dev-idp" in self.extra or "--idp-jwks" in self.extra) else ["--dev-idp", str(DEV_IDP)]

    def auth(self, user: str = "op-test", roles=("supervisor", "ops")) -> dict:
        """`Authorization` for `user` of this node's organisation."""
        return {"Authorization": "Bearer " + token(self.org, user, roles)}

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    # --- a tiny HTTP/1.1 client (urllib) for assertions ---
    def request(self, method: str, path: str, body=None, headers=None, raw: bytes = None, authorize: bool = True):
        """As op-test (supervisor and ops of the node's organisation) unless `headers`
        name another Authorization or `authorize` is False."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        if authorize:
            h.update(self.auth())
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                payload = r.read()
                return r.status, dict(r.headers), (json.loads(payload) if payload and r.headers.get("content-type", "").startswith("application/json") else payload)
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = payload
            return e.code, dict(e.headers), parsed

    def create(self, **fields):
        body = {"channel": "phone", "topic": "child-benefits", "subject": "Единое пособие",
                "statement": "Когда будет решение по заявлению?"}
        body.update(fields)
        status, _, t = self.request("POST", "/v1/tickets", body)
        assert status == 201, t
        return t


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "data").start()
    yield n
    n.stop()


@pytest.fixture
def make_node(tmp_path):
    """Factory for tests that need several nodes or custom flags."""
    nodes = []

    def make(node_id="irk-test", extra=None, data_dir=None):
        n = Node(data_dir or (tmp_path / f"data-{node_id}-{len(nodes)}"), node_id=node_id, extra=extra)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.stop()


# --- helpers added for the protocol / error / CLI / durability suites -------------------

def run(args, timeout: float = 30.0, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Runs a command (list of str) and captures text output; never leaves it running."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=check, **kw)


def curl(*args, timeout: float = 30.0, authorize: bool = True) -> subprocess.CompletedProcess:
    """`curl -sS ARGS...` with captured output, as op-test of organisation 38 unless the
    arguments name another Authorization or `authorize` is False."""
    auth_args = []
    if authorize and not any(str(a).lower().startswith("authorization:") for a in args):
        auth_args = ["-H", "Authorization: Bearer " + token("38")]
    return run(["curl", "-sS", "--max-time", str(int(timeout)), *auth_args, *args], timeout=timeout + 5)


def ekc(*args, timeout: float = 30.0, env=None) -> subprocess.CompletedProcess:
    """Runs the `ekc` CLI binary, signed in (op-cli, supervisor and ops) to the test organisations."""
    e = dict(os.environ)
    e.update(cli_env("38", "52", "pension", "employment", "sfr", "employ", "99"))
    e.update(env or {})
    return run([EKC, *args], timeout=timeout, env=e)


def list_all(node: "Node", query: str = "", limit: int = 500):
    """Every ticket of a listing, following `next` cursors."""
    items, cursor = [], None
    for _ in range(10_000):
        q = f"limit={limit}" + (f"&{query}" if query else "") + (f"&cursor={cursor}" if cursor else "")
        status, _, page = node.request("GET", f"/v1/tickets?{q}")
        assert status == 200, page
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            return items
    raise AssertionError("listing did not end")


def all_changes(node: "Node"):
    """The whole change feed, following `next`."""
    out, since = [], 0
    while True:
        status, _, page = node.request("GET", f"/v1/changes?since={since}&limit=10000")
        assert status == 200, page
        out.extend(page["changes"])
        if not page["changes"]:
            return out, page["lastSequence"]
        since = page["next"]


def compile_v2_protos(out: Path):
    """`protoc --python_out` for proto/ekc/replication/v2/*.proto into `out`; one namespace
    holding the classes and enum values of both files (replication.proto: the envelope and
    RecordDelta; ticket.proto: the ticket's registers and value messages), plus
    `.replication` and `.ticket`, the two modules."""
    import types
    protos = sorted((REPO / "proto" / "ekc" / "replication" / "v2").glob("*.proto"))
    Path(out).mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["protoc", f"--proto_path={REPO / 'proto'}", f"--python_out={out}", *map(str, protos)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"protoc failed on {[p.name for p in protos]}: {r.stderr}"
    # Imported as the package protoc laid out (ekc.replication.v2.*_pb2), so that a file
    # importing another (`from ekc.replication.v2 import ticket_pb2`) finds it.
    import sys
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    modules = {proto.stem: importlib.import_module(f"ekc.replication.v2.{proto.stem}_pb2") for proto in protos}
    ns = types.SimpleNamespace()
    for module in modules.values():
        for name, value in vars(module).items():
            if not name.startswith("_") and name != "DESCRIPTOR":
                assert not hasattr(ns, name) or getattr(ns, name) is value, f"{name} defined twice in v2 protos"
                setattr(ns, name, value)
    ns.replication = modules["replication"]
    ns.ticket = modules["ticket"]
    return ns


@pytest.fixture(scope="session")
def pb2(tmp_path_factory):
    """Python classes for proto/ekc/replication/v2 (replication.proto and ticket.proto),
    made by `protoc --python_out`, in one namespace: `pb2.RecordDelta`, `pb2.TicketHeader`,
    `pb2.RECORD_KIND_TICKET`, `pb2.TICKET_REGISTER_HEADER`, ..."""
    assert shutil.which("protoc"), "protoc not found: apt-get install protobuf-compiler"
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        pytest.fail("Python's protobuf package is missing: python3 -m pip install protobuf")
    return compile_v2_protos(tmp_path_factory.mktemp("pb2"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a minute on a debug build (deselect with -m 'not slow')")
