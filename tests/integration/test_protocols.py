"""One port, several protocols: HTTP/1.1 (keep-alive, pipelining), HTTP/2 with prior
knowledge (curl, nghttp, h2load), and TLS with ALPN choosing h2 or http/1.1."""
import http.client
import json
import re
import socket
from pathlib import Path

import pytest

from conftest import REPO, Node, curl, run
from tokens import token

# nghttp and h2load as op-test of organisation 38.
H2_AUTH = ["-H", "authorization: Bearer " + token("38")]

DEV_CERTS = REPO / "ops" / "dev-certs.sh"
BODY = {"channel": "phone", "topic": "child-benefits", "subject": "Единое пособие",
        "statement": "Когда будет решение по заявлению?"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("protocols") / "data").start()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def ticket(srv):
    return srv.create(citizen={"ref": "CIT-PROTO-1"})


def curl_json(*args):
    """curl that appends the HTTP version and status: returns (json, version, status)."""
    r = curl("-w", "\n%{http_version} %{http_code}", *args)
    assert r.returncode == 0, r.stderr
    out, meta = r.stdout.rsplit("\n", 1)
    version, status = meta.split()
    return json.loads(out), version, int(status)


def test_same_ticket_over_http1_h2_and_nghttp(srv, ticket):
    url = f"{srv.url}/v1/tickets/{ticket['id']}"
    via11, v11, s11 = curl_json("--http1.1", url)
    assert (v11, s11) == ("1.1", 200)
    via2, v2, s2 = curl_json("--http2-prior-knowledge", url)
    assert (v2, s2) == ("2", 200), "curl did not speak HTTP/2"
    r = run(["nghttp", *H2_AUTH, url], timeout=20)
    assert r.returncode == 0, r.stderr
    via_ng = json.loads(r.stdout)
    rv = run(["nghttp", "-v", *H2_AUTH, url], timeout=20)
    assert rv.returncode == 0
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", rv.stdout), rv.stdout[-2000:]
    assert "HEADERS frame" in rv.stdout and "SETTINGS frame" in rv.stdout  # really h2 frames
    assert via11 == via2 == via_ng == ticket
    # and by number, h2
    by_number, v, s = curl_json("--http2-prior-knowledge", f"{srv.url}/v1/tickets/{ticket['number']}")
    assert (v, s) == ("2", 200) and by_number == ticket


def test_post_over_h2_prior_knowledge(srv, tmp_path):
    body = dict(BODY, subject="Создано по HTTP/2")
    r = curl("--http2-prior-knowledge", "-i", "-w", "\n%{http_version} %{http_code}",
             "-H", "Content-Type: application/json", "-H", "Authorization: Bearer " + token("38", "op-h2"),
             "--data-binary", json.dumps(body), f"{srv.url}/v1/tickets")
    assert r.returncode == 0, r.stderr
    text, meta = r.stdout.rsplit("\n", 1)
    assert meta == "2 201", r.stdout
    head, _, payload = text.partition("\n\n")
    assert head.startswith("HTTP/2 201")
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:] if ": " in line)
    t = json.loads(payload)
    assert t["subject"] == "Создано по HTTP/2" and t["version"] == 1
    assert headers["location"] == f"/v1/tickets/{t['id']}"
    assert headers["etag"] == '"1"'
    s, _, got = srv.request("GET", f"/v1/tickets/{t['id']}")
    assert s == 200 and got == t
    s, _, hist = srv.request("GET", f"/v1/tickets/{t['id']}/history")
    assert hist["items"][0]["actor"] == "op-h2"
    # PATCH over h2 as well, with If-Match
    p, v, s = curl_json("--http2-prior-knowledge", "-X", "PATCH", "-H", "Content-Type: application/json",
                        "-H", 'If-Match: "1"', "--data-binary", '{"status":"IN_WORK"}', f"{srv.url}/v1/tickets/{t['id']}")
    assert (v, s) == ("2", 200) and p["version"] == 2 and p["status"] == "IN_WORK"


def test_many_concurrent_streams_on_one_connection(srv):
    r = run(["nghttp", "-s", "-m", "20", f"{srv.url}/v1/health"], timeout=30)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\d+\s+/v1/health$", r.stdout, re.M)
    assert rows == ["200"] * 20, r.stdout

    r = run(["h2load", "-n", "200", "-c", "1", "-m", "20", f"{srv.url}/v1/health"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx$", r.stdout, re.M), r.stdout
    assert re.search(r"^requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored", r.stdout,
                     re.M), r.stdout
    assert "h2" in r.stdout  # "Application protocol: h2c"


def test_concurrent_creates_over_one_h2_connection(srv, tmp_path):
    s, _, h = srv.request("GET", "/v1/health")
    before = h["store"]["tickets"]
    data = tmp_path / "create.json"
    data.write_text(json.dumps(dict(BODY, subject="h2load")))
    r = run(["h2load", "-n", "100", "-c", "1", "-m", "20", *H2_AUTH, "-d", data, "-H", "content-type: application/json",
             f"{srv.url}/v1/tickets"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx$", r.stdout, re.M), r.stdout
    s, _, h = srv.request("GET", "/v1/health")
    assert h["store"]["tickets"] == before + 100
    s, _, page = srv.request("GET", "/v1/tickets?limit=500")
    numbers = [t["number"] for t in page["items"]]
    assert len(numbers) == len(set(numbers)) == before + 100


def test_h2_error_stream_does_not_break_the_connection(srv, ticket):
    good = f"{srv.url}/v1/tickets/{ticket['id']}"
    bad = f"{srv.url}/v1/tickets/38-2000-999999"
    good2 = f"{srv.url}/v1/tickets/{ticket['number']}"
    r = run(["nghttp", "-v", *H2_AUTH, good, bad, f"{srv.url}/v1/nope", good2], timeout=20)
    statuses = re.findall(r":status: (\d{3})", r.stdout)
    assert sorted(statuses) == ["200", "200", "404", "404"], r.stdout[-3000:]
    assert r.stdout.count("recv SETTINGS frame") >= 1
    assert len(re.findall(r"\[\s*\d+\.\d+\] Connected", r.stdout)) == 1, "nghttp used more than one connection"


def test_http11_keep_alive_two_requests_one_connection(srv, ticket):
    u1, u2 = f"{srv.url}/v1/tickets/{ticket['id']}", f"{srv.url}/v1/health"
    r = curl("--http1.1", "-v", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n", u1, u2)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["200 1", "200 0"], r.stdout  # the second request made no new connection
    assert "Re-using existing connection" in r.stderr
    assert r.stderr.count("Connected to") == 1

    # the same with http.client: one socket, three requests
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", f"/v1/tickets/{ticket['id']}", headers=srv.auth())
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read()) == ticket
        sock = conn.sock
        conn.request("POST", "/v1/tickets", body=json.dumps(BODY), headers={"Content-Type": "application/json", **srv.auth()})
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()
        resp.read()
        conn.request("GET", "/v1/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        assert conn.sock is sock, "the node closed a keep-alive connection"
    finally:
        conn.close()


def test_http11_pipelining_answers_in_order(srv, ticket):
    auth = f"Host: 127.0.0.1\r\nAuthorization: Bearer {token('38')}\r\n"
    reqs = (f"GET /v1/tickets/{ticket['id']} HTTP/1.1\r\n{auth}\r\n"
            f"GET /v1/nope HTTP/1.1\r\n{auth}\r\n"
            f"GET /v1/health HTTP/1.1\r\n{auth}Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(reqs)
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", data)
    assert statuses == [b"200", b"404", b"200"], data[:1000]


def test_http10_request_is_answered_and_closed(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    assert json.loads(payload)["status"] == "ok"


# --- TLS -------------------------------------------------------------------------------------

def make_certs(out: Path):
    r = run(["bash", DEV_CERTS, out], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_dev_certs_script(tmp_path):
    out = tmp_path / "certs"
    r1 = make_certs(out)
    for f in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem"):
        assert (out / f).stat().st_size > 0
        assert str(out / f) in r1.stdout, r1.stdout
    assert "created" in r1.stdout
    # signed by the CA, for localhost and 127.0.0.1
    v = run(["openssl", "verify", "-CAfile", out / "ca.pem", out / "server.pem"])
    assert v.returncode == 0 and ": OK" in v.stdout, v.stdout + v.stderr
    text = run(["openssl", "x509", "-in", out / "server.pem", "-noout", "-text"]).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text
    ca_text = run(["openssl", "x509", "-in", out / "ca.pem", "-noout", "-text"]).stdout
    assert "CA:TRUE" in ca_text
    # the key matches the certificate
    pub_cert = run(["openssl", "x509", "-in", out / "server.pem", "-noout", "-pubkey"]).stdout
    pub_key = run(["openssl", "pkey", "-in", out / "server-key.pem", "-pubout"]).stdout
    assert pub_cert == pub_key and pub_cert
    # idempotent: a second run keeps everything
    before = {f: (out / f).read_bytes() for f in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem")}
    r2 = make_certs(out)
    assert "created" not in r2.stdout and "kept" in r2.stdout, r2.stdout
    assert {f: (out / f).read_bytes() for f in before} == before
    # a lost server certificate is re-issued by the same CA
    (out / "server.pem").unlink()
    r3 = make_certs(out)
    assert "created" in r3.stdout and (out / "ca.pem").read_bytes() == before["ca.pem"]
    assert run(["openssl", "verify", "-CAfile", out / "ca.pem", out / "server.pem"]).returncode == 0


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    base = tmp_path_factory.mktemp("tls")
    certs = base / "certs"
    make_certs(certs)
    n = Node(base / "data", extra=["--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server-key.pem")])
    assert n.scheme == "https"
    n.start()
    yield n, certs
    n.stop()


def test_tls_alpn_h2_and_http11(tls_node):
    n, certs = tls_node
    ca = str(certs / "ca.pem")
    h, v, s = curl_json("--cacert", ca, f"{n.url}/v1/health")
    assert (v, s) == ("2", 200), "ALPN did not pick h2"
    assert h["status"] == "ok"
    h11, v, s = curl_json("--http1.1", "--cacert", ca, f"{n.url}/v1/health")
    assert (v, s) == ("1.1", 200)
    # the certificate is for localhost too
    _, v, s = curl_json("--cacert", ca, f"https://localhost:{n.port}/v1/health")
    assert (v, s) == ("2", 200)
    # and it is really verified: without the CA curl refuses
    r = curl(f"{n.url}/v1/health")
    assert r.returncode == 60, (r.returncode, r.stderr)


def test_tls_create_and_read_over_h2(tls_node):
    n, certs = tls_node
    ca = str(certs / "ca.pem")
    t, v, s = curl_json("--cacert", ca, "-H", "Content-Type: application/json", "--data-binary", json.dumps(BODY),
                        f"{n.url}/v1/tickets")
    assert (v, s) == ("2", 201) and t["version"] == 1
    got, v, s = curl_json("--http1.1", "--cacert", ca, f"{n.url}/v1/tickets/{t['number']}")
    assert (v, s) == ("1.1", 200) and got == t
    r = run(["h2load", "-n", "50", "-c", "1", "-m", "10", *H2_AUTH, f"{n.url}/v1/tickets/{t['id']}"], timeout=60)
    assert re.search(r"^status codes: 50 2xx", r.stdout, re.M), r.stdout
    assert "Application protocol: h2" in r.stdout


@pytest.mark.parametrize("alpn,expected", [("h2", "h2"), ("http/1.1", "http/1.1"), ("h2,http/1.1", "h2")])
def test_openssl_s_client_alpn(tls_node, alpn, expected):
    n, certs = tls_node
    r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{n.port}", "-alpn", alpn, "-CAfile", certs / "ca.pem",
             "-servername", "localhost"], input="", timeout=20)
    assert f"ALPN protocol: {expected}" in r.stdout, r.stdout[-2000:] + r.stderr
    assert "Verify return code: 0 (ok)" in r.stdout


def test_tls_port_refuses_cleartext(tls_node):
    n, _ = tls_node
    r = curl("--http1.1", f"http://127.0.0.1:{n.port}/v1/health")
    assert r.returncode != 0 or not r.stdout.startswith("{")
    # the node survives it
    _, v, s = curl_json("--cacert", str(tls_node[1] / "ca.pem"), f"{n.url}/v1/health")
    assert s == 200


def test_chunked_upload_under_the_limit(srv):
    t, v, s = curl_json("--http1.1", "-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", json.dumps(dict(BODY, statement="я" * 20000)), f"{srv.url}/v1/tickets")
    assert (v, s) == ("1.1", 201)
    assert t["statement"] == "я" * 20000


def test_expect_100_continue_is_answered(srv):
    """RFC 9110 §10.1.1: a server that receives `Expect: 100-continue` MUST send either a
    final status or an immediate 100 (Continue). Without it, clients such as curl stall
    for their expect-timeout (1 s) before sending the body."""
    payload = json.dumps(dict(BODY, subject="Expect")).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"POST /v1/tickets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {token('38')}\r\n".encode() +
                  b"Expect: 100-continue\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n")
        s.settimeout(0.5)
        try:
            interim = s.recv(4096)
        except socket.timeout:
            interim = b""
        s.settimeout(5)
        s.sendall(payload)  # finish the exchange either way
        rest = b""
        while b"\r\n\r\n" not in rest:
            c = s.recv(65536)
            if not c:
                break
            rest += c
    assert interim.startswith(b"HTTP/1.1 100"), \
        f"no 100 Continue within 0.5 s (got {interim[:60]!r}); final answer: {rest[:40]!r}"
    assert b"HTTP/1.1 201" in interim + rest


def test_garbage_on_h2_connection_does_not_hurt_the_node(srv):
    """After the h2 preface, a frame that is not SETTINGS is a connection error: the node
    answers GOAWAY and closes that connection, and keeps serving others."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    closed = False
    data = b""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=2) as s:
        s.sendall(preface + b"\x00\x00\x04\x09\x00\x00\x00\x00\x00garbagegarbage" * 10)
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    closed = True
                    break
                data += c
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
    assert closed, f"the node kept a broken h2 connection open for 2 s; received {data[:100]!r}"
    # frames: 3-byte length, 1-byte type; find a GOAWAY (type 7) on stream 0
    i, types = 0, []
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        types.append(data[i + 3])
        i += 9 + length
    assert 7 in types, f"no GOAWAY frame among {types}"
    _, v, st = curl_json("--http2-prior-knowledge", f"{srv.url}/v1/health")
    assert (v, st) == ("2", 200)


def test_garbage_http1_request_gets_400_and_node_survives(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = b""
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    _, v, st = curl_json("--http1.1", f"{srv.url}/v1/health")
    assert (v, st) == ("1.1", 200)
