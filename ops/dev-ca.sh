#!/usr/bin/env bash
# Development federation CA and node certificates for mutual TLS between nodes
# (DESIGN principle 7: a node's identity is the certificate the federation CA gave it).
#
#   ops/dev-ca.sh OUT_DIR NODE_ID [NODE_ID ...]
#
# Creates in OUT_DIR:
#   ca.key, ca.pem            the federation development CA (EC P-256, self-signed).
#                             Reused when it exists and is still valid: running the script
#                             again for another node id issues under the same CA.
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
if [[ -s ca.key ]] && valid_cert ca.pem; then
  kept+=(ca.key ca.pem)
else
  new_key ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$DAYS_CA" \
    -subj "/O=EKC federation (development)/CN=EKC development federation CA $(date -u +%Y%m%dT%H%M%SZ)-$RANDOM" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out ca.pem.tmp
  mv ca.pem.tmp ca.pem
  chmod 600 ca.key
  chmod 644 ca.pem
  made+=(ca.key ca.pem)
fi

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
  openssl x509 -req -in "$work/$id.csr" -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
    -sha256 -days "$DAYS_NODE" -extfile "$work/$id.ext" -out "$id.pem.tmp" 2>/dev/null
  mv "$id.pem.tmp" "$id.pem"
  chmod 600 "$id.key"
  chmod 644 "$id.pem"
  made+=("$id.pem")
done

for f in "${made[@]+"${made[@]}"}"; do echo "created $dir/$f"; done
for f in "${kept[@]+"${kept[@]}"}"; do echo "kept    $dir/$f"; done
for id in "$@"; do
  echo "node $id: cert $dir/$id.pem key $dir/$id.key ca $dir/ca.pem (identity URI:urn:ekc:node:$id)"
done
