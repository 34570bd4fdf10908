#!/usr/bin/env bash
# Development federation CA and node certificates for mutual TLS between nodes
# (DESIGN principle 7: a node's identity is the certificate the federation CA gave it).
#
#   ops/dev-ca.sh OUT_DIR NODE_ID [NODE_ID ...]
#
# Creates in OUT_DIR:
#   ca.pem                    the federation development CA's certificate (EC P-256,
#                             self-signed), which every node needs to trust its peers.
#                             Its private key is NOT in OUT_DIR, where node keys are handed
#                             out from, but in the CA directory (EKC_DEV_CA_DIR, default
#                             OUT_DIR/../dev-ca: ca.key 0600, with ca.pem, directory 0700).
#                             The CA is reused when its key exists and its certificate is
#                             still valid: running the script again for another node id, or
#                             for another OUT_DIR beside this one, issues under the same CA.
#                             A ca.key left in OUT_DIR by an older version of this script is
#                             moved to the CA directory (when that has none), so certificates
#                             already issued stay valid.
#   NODE_ID.key, NODE_ID.pem  for each node id: a key (PKCS#8) and a certificate signed by
#                             the CA, for both serverAuth and clientAuth (a node listens for
#                             its peers and connects to them with the same identity), with
#                               subject          CN=NODE_ID (informational only)
#                               subjectAltName   DNS:localhost, IP:127.0.0.1,
#                                                URI:urn:ekc:node:NODE_ID
#                             The node id used for authorisation is the one in the
#                             urn:ekc:node: URI SAN, never the CN and never the request.
#
# A node certificate that exists, is valid for more than a day, is signed by the CA and
# names the same node is kept; otherwise it is (re)issued, reusing an existing key.
# Node keys are 0600.
# A node id is 1-63 lower-case letters, digits and hyphens, not starting with a hyphen
# (CaseModel.NodeID).  These keys are for development only.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR NODE_ID [NODE_ID ...]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
OUT="$1"; shift
DAYS_CA="${EKC_DEV_CA_DAYS:-3650}"
DAYS_NODE="${EKC_DEV_NODE_DAYS:-825}"

command -v openssl >/dev/null 2>&1 || { echo "dev-ca: openssl is required" >&2; exit 1; }
for id in "$@"; do
  if ! [[ "$id" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]]; then
    echo "dev-ca: invalid node id '$id' (1-63 lower-case letters, digits, hyphens; not starting with a hyphen)" >&2
    exit 2
  fi
  if [[ "$id" == ca ]]; then
    echo "dev-ca: node id 'ca' would overwrite the CA's files; choose another" >&2
    exit 2
  fi
done

mkdir -p "$OUT"
cd "$OUT"
dir="$(pwd)"
umask 077
CA_DIR="${EKC_DEV_CA_DIR:-$dir/../dev-ca}"
mkdir -p "$CA_DIR"
CA_DIR="$(cd "$CA_DIR" && pwd)"
if [[ "$CA_DIR" == "$dir" ]]; then
  echo "dev-ca: the CA directory must not be OUT_DIR ($dir): the CA key would sit beside node keys" >&2
  exit 2
fi
chmod 700 "$CA_DIR"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

made=()
kept=()

valid_cert() {  # $1 = cert: exists and does not expire within a day
  [[ -s "$1" ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

new_key() {  # $1 = output: an EC P-256 key as PKCS#8 ("BEGIN PRIVATE KEY")
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.tmp" 2>/dev/null
  mv "$1.tmp" "$1"
}

# --- the CA -----------------------------------------------------------------
CA_KEY="$CA_DIR/ca.key"
CA_PEM="$CA_DIR/ca.pem"
# An older layout kept the CA key in OUT_DIR: move it out, with its certificate.
if [[ -s ca.key && ! -s "$CA_KEY" ]]; then
  mv ca.key "$CA_KEY"
  if [[ -s ca.pem ]]; then cp ca.pem "$CA_PEM"; fi
  echo "moved   $dir/ca.key to $CA_KEY"
elif [[ -e ca.key ]]; then
  if ! cmp -s ca.key "$CA_KEY"; then
    echo "dev-ca: $dir/ca.key is another CA's key than $CA_KEY; move it out of $dir (or name its directory with EKC_DEV_CA_DIR) and run again" >&2
    exit 1
  fi
  rm -f ca.key  # a copy of the CA key: never beside the node keys
fi
if [[ -s "$CA_KEY" ]] && valid_cert "$CA_PEM"; then
  kept+=("$CA_KEY" "$CA_PEM")
else
  new_key "$CA_KEY"
  openssl req -x509 -new -key "$CA_KEY" -sha256 -days "$DAYS_CA" \
    -subj "/O=EKC federation (development)/CN=EKC development federation CA $(date -u +%Y%m%dT%H%M%SZ)-$RANDOM" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$CA_PEM.tmp"
  mv "$CA_PEM.tmp" "$CA_PEM"
  made+=("$CA_KEY" "$CA_PEM")
fi
chmod 600 "$CA_KEY"
chmod 644 "$CA_PEM"
# OUT_DIR's copy is what nodes trust; refreshed when the CA changed.
if ! cmp -s "$CA_PEM" ca.pem; then
  cp "$CA_PEM" ca.pem.tmp
  mv ca.pem.tmp ca.pem
  made+=("$dir/ca.pem")
else
  kept+=("$dir/ca.pem")
fi
chmod 644 ca.pem

# --- node certificates --------------------------------------------------------
for id in "$@"; do
  uri="urn:ekc:node:$id"
  if [[ -s "$id.key" ]] && valid_cert "$id.pem" \
     && openssl verify -CAfile ca.pem -purpose sslclient "$id.pem" >/dev/null 2>&1 \
     && openssl verify -CAfile ca.pem -purpose sslserver "$id.pem" >/dev/null 2>&1 \
     && openssl x509 -in "$id.pem" -noout -ext subjectAltName 2>/dev/null | grep -q "URI:$uri\$\|URI:$uri,"; then
    kept+=("$id.key" "$id.pem")
    continue
  fi
  if [[ ! -s "$id.key" ]]; then
    new_key "$id.key"
    made+=("$id.key")
  else
    kept+=("$id.key")
  fi
  cat >"$work/$id.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,URI:$uri
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
  openssl req -new -key "$id.key" -subj "/O=EKC federation (development)/CN=$id" -out "$work/$id.csr"
  # A random serial (not a ca.srl file): concurrent or repeated runs never reuse one.
  openssl x509 -req -in "$work/$id.csr" -CA "$CA_PEM" -CAkey "$CA_KEY" -set_serial "0x$(openssl rand -hex 16)" \
    -sha256 -days "$DAYS_NODE" -extfile "$work/$id.ext" -out "$id.pem.tmp" 2>/dev/null
  mv "$id.pem.tmp" "$id.pem"
  chmod 600 "$id.key"
  chmod 644 "$id.pem"
  made+=("$id.pem")
done

for id in "$@"; do chmod 600 "$id.key"; done

for f in "${made[@]+"${made[@]}"}"; do [[ "$f" == /* ]] || f="$dir/$f"; echo "created $f"; done
for f in "${kept[@]+"${kept[@]}"}"; do [[ "$f" == /* ]] || f="$dir/$f"; echo "kept    $f"; done
for id in "$@"; do
  echo "node $id: cert $dir/$id.pem key $dir/$id.key ca $dir/ca.pem (identity URI:urn:ekc:node:$id)"
done
echo "CA key: $CA_KEY (keep it away from the nodes)"
