"""Crash and shutdown behaviour: an acknowledged create survives kill -9; SIGTERM
stops cleanly; a store refuses to open under another node's id."""
import http.client
import json
import signal
import threading
import time


from conftest import EKC, TICKET_REGISTERS, Node, all_changes, list_all, run
from tokens import DEV_IDP, auth

BODY = {"channel": "phone", "topic": "child-benefits", "subject": "Нагрузка",
        "statement": "Проверка сохранности подтверждённых записей"}


class Hammer:
    """`threads` clients, each POSTing creates over one keep-alive connection until stopped
    or the connection breaks. Records every id whose 201 arrived."""

    def __init__(self, node: Node, threads: int = 8):
        self.node = node
        self.acked = []
        self.failed_in_flight = 0
        self.unexpected = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.work, args=(i,), daemon=True) for i in range(threads)]

    def work(self, i):
        conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=10)
        n = 0
        try:
            while not self.stop.is_set():
                body = json.dumps(dict(BODY, subject=f"Нагрузка {i}-{n}"))
                try:
                    conn.request("POST", "/v1/tickets", body=body,
                                 headers={"Content-Type": "application/json", **auth(f"load-{i}")})
                    resp = conn.getresponse()
                    payload = resp.read()
                except (OSError, http.client.HTTPException):
                    with self.lock:
                        self.failed_in_flight += 1
                    return
                if resp.status == 201:
                    with self.lock:
                        self.acked.append(json.loads(payload)["id"])
                elif resp.status != 503:  # 503 shutting_down is allowed during SIGTERM
                    with self.lock:
                        self.unexpected.append((resp.status, payload[:200]))
                    return
                n += 1
        finally:
            conn.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout=15):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"


def wait_for_acks(h: Hammer, at_least: int, timeout: float = 10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with h.lock:
            if len(h.acked) >= at_least:
                return
        time.sleep(0.02)
    raise AssertionError(f"only {len(h.acked)} creates acknowledged in {timeout}s")


def verify_store(node: Node, acked):
    """Every acknowledged ticket is there, once, with a unique number; the feed lists each
    ticket exactly once in increasing sequence."""
    listed = list_all(node)
    ids = [t["id"] for t in listed]
    assert len(ids) == len(set(ids)), "a ticket is listed twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged tickets lost, e.g. {sorted(missing)[:3]}"
    assert len(ids) >= len(set(acked))
    numbers = [t["number"] for t in listed]
    assert len(numbers) == len(set(numbers)), "duplicate ticket numbers"
    seqs = sorted(int(n.rsplit("-", 1)[1]) for n in numbers)
    assert seqs == list(range(1, len(seqs) + 1)), "ticket numbers have gaps or do not start at 1"

    changes, last = all_changes(node)
    feed_ids = [c["id"] for c in changes]
    # Each register of each ticket sits in the feed once, at its latest change.
    registers = {}
    for c in changes:
        for r in c["registers"]:
            assert (c["id"], r) not in registers, f"register {r} of {c['id']} appears twice in /v1/changes"
            registers[(c["id"], r)] = c["seq"]
    assert len(registers) == len(TICKET_REGISTERS) * len(set(feed_ids)), "a ticket's register is missing from /v1/changes"
    assert set(feed_ids) == set(ids)
    feed_seqs = [c["seq"] for c in changes]
    assert all(a < b for a, b in zip(feed_seqs, feed_seqs[1:])), "feed sequence not strictly increasing"
    assert not feed_seqs or feed_seqs[-1] == last

    s, _, h = node.request("GET", "/v1/health")
    assert s == 200
    assert h["store"]["tickets"] == len(ids)
    assert h["store"]["lastSequence"] == last

    # spot-check individual reads, including the last acknowledged ones
    sample = list(acked[:20]) + list(acked[-20:])
    for tid in sample:
        s, _, t = node.request("GET", f"/v1/tickets/{tid}")
        assert s == 200 and t["id"] == tid and t["version"] >= 1
    return listed


def test_kill9_keeps_every_acknowledged_create(make_node, tmp_path):
    data = tmp_path / "crash-data"
    all_acked = []
    for round_ in range(2):
        n = make_node(node_id="irk-crash", data_dir=data).start()
        if round_ > 0:
            verify_store(n, all_acked)
        h = Hammer(n).start()
        wait_for_acks(h, 50)
        time.sleep(1.5)
        n.kill9()
        h.join()
        assert n.proc.returncode == -signal.SIGKILL
        assert not h.unexpected, h.unexpected
        assert len(h.acked) >= 50
        assert h.failed_in_flight >= 1, "the kill did not interrupt any request"
        all_acked.extend(h.acked)

        n2 = make_node(node_id="irk-crash", data_dir=data).start()
        listed = verify_store(n2, all_acked)
        # numbering continues after the crash: no number is reused
        t = n2.create()
        assert int(t["number"].rsplit("-", 1)[1]) == len(listed) + 1
        all_acked.append(t["id"])
        n2.stop()
        assert n2.proc.returncode == 0


def test_sigterm_exits_zero_and_keeps_data(make_node, tmp_path):
    data = tmp_path / "term-data"
    n = make_node(node_id="irk-term", data_dir=data).start()
    made = [n.create(subject=f"До остановки {i}") for i in range(5)]
    s, _, _ = n.request("PATCH", f"/v1/tickets/{made[0]['id']}", {"status": "IN_WORK", "assignee": "op-a"})
    assert s == 200
    s, _, _ = n.request("POST", f"/v1/tickets/{made[1]['id']}/notes", {"text": "заметка"})
    assert s == 201
    snapshot = {t["id"]: n.request("GET", f"/v1/tickets/{t['id']}")[2] for t in made}
    n.proc.send_signal(signal.SIGTERM)
    assert n.proc.wait(15) == 0
    log = n.log_path.read_text(errors="replace")
    assert "shutting down" in log and "stopped" in log

    n2 = make_node(node_id="irk-term", data_dir=data).start()
    for tid, t in snapshot.items():
        assert n2.request("GET", f"/v1/tickets/{tid}")[2] == t
    assert len(n2.request("GET", f"/v1/tickets/{made[1]['id']}/notes")[2]["items"]) == 1
    verify_store(n2, list(snapshot))
    assert n2.stop() == 0


def test_sigterm_under_load_exits_zero_and_keeps_acknowledged(make_node, tmp_path):
    data = tmp_path / "term-load-data"
    n = make_node(node_id="irk-term", data_dir=data).start()
    h = Hammer(n).start()
    wait_for_acks(h, 50)
    n.proc.send_signal(signal.SIGTERM)
    rc = n.proc.wait(15)
    h.join()
    assert rc == 0
    assert not h.unexpected, h.unexpected
    n2 = make_node(node_id="irk-term", data_dir=data).start()
    verify_store(n2, h.acked)


def test_refuses_data_dir_of_another_node(make_node, tmp_path):
    data = tmp_path / "owned"
    a = make_node(node_id="irk-alpha", data_dir=data).start()
    a.create()
    assert a.stop() == 0
    port = Node(data, node_id="irk-beta").port
    r = run([EKC, "node", "start", "--node-id", "irk-beta", "--data", data, "--listen", f"127.0.0.1:{port}",
             "--dev-idp", DEV_IDP], timeout=20)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "irk-alpha" in out and "irk-beta" in out, out
    # and the store is untouched: the right node still opens it
    a2 = make_node(node_id="irk-alpha", data_dir=data).start()
    s, _, h = a2.request("GET", "/v1/health")
    assert h["node"] == "irk-alpha" and h["store"]["tickets"] == 1
