"""Bearer tokens for the test nodes, signed like the development identity provider.

Every node a test starts trusts the development provider in one directory for the
whole run (`DEV_IDP`): `ekc login` creates an organisation's key there the first
time, and tokens are then signed here with Python's `cryptography` (ES256), so a
test can also make the tokens a node must refuse: expired, foreign issuer, unknown
key, `alg: none`, HMAC with the public key.
"""
import atexit
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

REPO = Path(__file__).resolve().parents[2]
EKC = Path(os.environ.get("EKC_BIN", REPO / ".build" / "debug" / "ekc"))

DEV_IDP = Path(tempfile.mkdtemp(prefix="ekc-dev-idp-"))
# Tokens the CLI finds (EKC_TOKEN_DIR): one per organisation, supervisor + ops.
TOKEN_DIR = DEV_IDP / "tokens"
atexit.register(shutil.rmtree, DEV_IDP, True)

DEFAULT_ROLES = ("supervisor", "ops")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issuer(org: str) -> str:
    return f"https://idp.dev.ekc.invalid/realms/{org}"


def ensure_keys(org: str, idp_dir: Path = DEV_IDP):
    """The organisation's development key, created by the CLI (the code under test)."""
    key = Path(idp_dir) / org / "signing-key.pem"
    if not key.exists():
        r = subprocess.run([str(EKC), "login", "--dev-idp", str(idp_dir), "--org", org, "--user", "setup",
                            "--role", "operator", "--print"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    jwks = json.loads((Path(idp_dir) / org / "jwks.json").read_text())
    pem = key.read_bytes()
    return serialization.load_pem_private_key(pem, password=None), jwks["keys"][0]["kid"], jwks


def sign_es256(private_key, header: dict, payload: dict) -> str:
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(payload, separators=(",", ":")).encode())
    der = private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def claims(org: str, user: str, roles, lifetime: int = 3600, **over) -> dict:
    now = int(time.time())
    c = {"iss": issuer(org), "sub": user, "aud": "ekc", "iat": now, "nbf": now, "exp": now + lifetime,
         "preferred_username": user, "realm_access": {"roles": list(roles)}}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


_cache = {}


def token(org: str = "38", user: str = "op-test", roles=DEFAULT_ROLES, idp_dir: Path = DEV_IDP) -> str:
    """A valid token (remembered for the run: a node verifies it once)."""
    k = (org, user, tuple(roles), str(idp_dir))
    if k not in _cache:
        key, kid, _ = ensure_keys(org, idp_dir)
        _cache[k] = sign_es256(key, {"alg": "ES256", "typ": "JWT", "kid": kid}, claims(org, user, roles, 8 * 3600))
    return _cache[k]


def auth(user: str = "op-test", org: str = "38", roles=DEFAULT_ROLES) -> dict:
    return {"Authorization": "Bearer " + token(org, user, roles)}


def cli_env(*orgs) -> dict:
    """Environment for `ekc` commands: a token of every named organisation saved where
    the CLI looks for it."""
    TOKEN_DIR.mkdir(parents=True, exist_ok=True)
    for org in orgs or ("38",):
        (TOKEN_DIR / f"{org}.jwt").write_text(token(org, "op-cli") + "\n")
    return {"EKC_TOKEN_DIR": str(TOKEN_DIR)}
