"""Capabilities and versions per link (issue 19, item 2; proto/README.md §8, §8.1).

Both ends of a pull advertise the capabilities their builds support (PullRequest field 4,
StreamHeader field 7); the link speaks the intersection, shown per link in
/v1/replication and by `ekc cluster health`. What a stranger can send is checked the
same way at both edges: a puller's request to a real node (refused 400 BAD_REQUEST naming
the field and the rule) and a source's header answering a real node's pull (a protocol
violation on the link). A puller two majors behind is told which release to install.
"""
import json

from conftest import ekc
from fake_peer import PullClient, client_context, split_delimited
from federation import wait_until
from test_hostile_answers import FAKE, MAIN, OFFICE, ON_DEMAND, world  # noqa: F401 (fixture)

RULE = "a capability name is lower-case ASCII letters, digits, '-' and '.', starting with a letter"


def own_capabilities() -> list:
    r = ekc("version", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["capabilities"]


def pull(pb2, port: int, certs, client: str, request) -> tuple:
    """One pull to a real node's replication port: (status, first frame)."""
    with PullClient(port, client_context(certs, client)) as c:
        sid = c.post(request.SerializeToString())
        c.read(5.0, until=lambda: c.streams[sid].ended or len(split_delimited(c.streams[sid].data)[0]) >= 1)
        status = c.streams[sid].headers.get(":status")
        frames = c.frames(sid, pb2)
        assert frames, (status, c.streams[sid].data)
        return status, frames[0]


def test_each_link_speaks_what_both_ends_support_and_says_so(world, pb2):
    fed, fake = world(ON_DEMAND)
    main = fed[MAIN]
    mine = own_capabilities()
    assert main.get("/v1/health")["release"]["capabilities"] == mine
    # The fake source advertises a capability no build has yet (a newer release): left out.
    fake.header_capabilities = ["zz-from-a-later-release"] + mine
    fake.disconnect_all()
    wait_until(lambda: main.link(FAKE)["connected"] and main.link(FAKE)["capabilities"] == mine, 20,
               "the link's capabilities after the new header", interval=0.1)
    assert main.link(OFFICE)["capabilities"] == mine and main.link(OFFICE)["protocolVersion"] == 2
    # The fake source is told what the puller supports, in its request.
    wanted = [r for r in fake.requests if r.path == "/replication/v2/pull"]
    request = pb2.PullRequest()
    request.ParseFromString(wanted[-1].body)
    assert list(request.capabilities) == mine, request
    h = ekc("cluster", "health", "--config", fed.cluster_file, timeout=30)
    shown = "v2" if not mine else "v2 +" + ",".join(mine)
    links = [r for r in h.stdout.splitlines() if r.startswith(MAIN + " ") and f" {OFFICE} " in r and " connected " in r]
    assert links and all(f" {shown} " in r for r in links), h.stdout


def test_a_source_header_with_capabilities_that_break_a_rule_is_a_protocol_violation(world, pb2):
    fed, fake = world(ON_DEMAND)
    main = fed[MAIN]
    cases = [(["retention", "retention"], "stream header capabilities[1]: retention is advertised twice"),
             (["Retention"], f"stream header capabilities[0]: {RULE}"),
             ([f"c{i}" for i in range(65)], "stream header capabilities: at most 64 capabilities, not 65"),
             (["x" * 49], "stream header capabilities[0]: a capability name has 1–48 bytes, not 49")]
    for n, (advertised, why) in enumerate(cases, start=1):
        fake.header_capabilities = advertised
        fake.disconnect_all()
        wait_until(lambda: main.link(FAKE)["rejected"]["byReason"].get("protocol_violation", 0) >= n, 30,
                   f"the header {advertised[:2]} refused", interval=0.1)
        assert any(why in r["detail"] for r in main.link(FAKE)["rejected"]["recent"]), main.link(FAKE)
        assert main.alive()
    # An honest header again: the link comes up and speaks the base protocol at least.
    fake.header_capabilities = []
    fake.disconnect_all()
    wait_until(lambda: main.link(FAKE)["connected"] and main.link(FAKE)["capabilities"] == [], 30, "the link back",
               interval=0.1)


def test_a_pull_request_is_checked_and_a_puller_too_old_is_told_what_to_install(world, pb2):
    fed, fake = world(ON_DEMAND)
    main = fed[MAIN]
    certs = fed.root / "certs"
    port = main.repl_port
    bad = [(["retention", "retention"], "capabilities[1]: retention is advertised twice"),
           (["a b"], f"capabilities[0]: {RULE}"),
           ([""], "capabilities[0]: a capability name has 1–48 bytes, not 0"),
           (["ретеншн"], f"capabilities[0]: {RULE}"),
           ([f"c{i}" for i in range(65)], "capabilities: at most 64 capabilities, not 65")]
    for advertised, why in bad:
        status, frame = pull(pb2, port, certs, OFFICE, pb2.PullRequest(protocol_version=2, capabilities=advertised))
        assert status == "400" and frame.error.code == pb2.StreamError.BAD_REQUEST, (advertised, frame)
        assert why in frame.error.message, frame.error.message
    # What a checkpoint says it was reached with gets the same rule.
    for names, why in [(["x y"], f"checkpoint.capabilities[0]: {RULE}"),
                       (["a", "a"], "checkpoint.capabilities[1]: a is advertised twice")]:
        request = pb2.PullRequest(protocol_version=2)
        request.checkpoint.source_store_id = b"\x01" * 16
        request.checkpoint.sequence = 1
        request.checkpoint.capabilities.extend(names)
        status, frame = pull(pb2, port, certs, OFFICE, request)
        assert status == "400" and why in frame.error.message, (names, frame)
    # Names of a later release are no error: the stream begins and the header lists this build's.
    status, frame = pull(pb2, port, certs, OFFICE, pb2.PullRequest(protocol_version=2, capabilities=["zz-later"]))
    assert status == "200" and frame.WhichOneof("kind") == "header", frame
    assert list(frame.header.capabilities) == own_capabilities()
    # A version-1 puller (a build before issue 7): refused with the range and what to install.
    status, frame = pull(pb2, port, certs, OFFICE, pb2.PullRequest(protocol_version=1))
    assert status == "400" and frame.error.code == pb2.StreamError.PROTOCOL_VERSION_MISMATCH, frame
    assert (frame.error.min_protocol_version, frame.error.max_protocol_version) == (2, 2)
    assert "upgrade the pulling node to release 0.18.0 or later" in frame.error.message, frame.error.message
    status, frame = pull(pb2, port, certs, OFFICE, pb2.PullRequest(protocol_version=3))
    assert status == "400" and "retries in a version both speak" in frame.error.message, frame.error.message
    assert main.alive() and main.link(OFFICE)["connected"]
