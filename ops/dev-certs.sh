#!/usr/bin/env bash
# Development TLS material for running `ekc node start --tls-cert --tls-key` locally.
#
#   ops/dev-certs.sh [OUT_DIR]          (default: ./.ekc/dev-certs)
#
# Creates in OUT_DIR:
#   ca-key.pem, ca.pem          a development certificate authority (self-signed)
#   server-key.pem, server.pem  a server certificate for localhost / 127.0.0.1 / ::1,
#                               with subjectAltName, signed by that CA
#   server-chain.pem            server.pem followed by ca.pem
#
# Idempotent: files that already exist and are still valid are kept; the server
# certificate is re-issued only when it is missing, expired, or not signed by the CA.
# Clients trust the server with `curl --cacert OUT_DIR/ca.pem`.
# These keys are for development only: never use them in production.
set -euo pipefail

OUT="${1:-.ekc/dev-certs}"
DAYS_CA="${EKC_DEV_CA_DAYS:-3650}"
DAYS_SERVER="${EKC_DEV_SERVER_DAYS:-825}"

command -v openssl >/dev/null 2>&1 || { echo "dev-certs: openssl is required" >&2; exit 1; }
mkdir -p "$OUT"
cd "$OUT"
umask 077

made=()
kept=()

valid_cert() {  # $1 = cert: exists and does not expire within a day
  [[ -s "$1" ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

# --- the CA -----------------------------------------------------------------
if [[ -s ca-key.pem ]] && valid_cert ca.pem; then
  kept+=(ca-key.pem ca.pem)
else
  openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem.tmp 2>/dev/null
  mv ca-key.pem.tmp ca-key.pem
  openssl req -x509 -new -key ca-key.pem -sha256 -days "$DAYS_CA" \
    -subj "/O=EKC development/CN=EKC development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out ca.pem.tmp
  mv ca.pem.tmp ca.pem
  made+=(ca-key.pem ca.pem)
  rm -f server.pem  # a new CA invalidates the old server certificate
fi

# --- the server certificate ---------------------------------------------------
if [[ -s server-key.pem ]] && valid_cert server.pem \
   && openssl verify -CAfile ca.pem server.pem >/dev/null 2>&1; then
  kept+=(server-key.pem server.pem)
else
  if [[ ! -s server-key.pem ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out server-key.pem.tmp 2>/dev/null
    # PKCS#8 "BEGIN PRIVATE KEY", which every TLS stack reads
    openssl pkcs8 -topk8 -nocrypt -in server-key.pem.tmp -out server-key.pem
    rm -f server-key.pem.tmp
    made+=(server-key.pem)
  else
    kept+=(server-key.pem)
  fi
  ext="$(mktemp)"
  trap 'rm -f "$ext" server.csr' EXIT
  cat >"$ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
  openssl req -new -key server-key.pem -subj "/O=EKC development/CN=localhost" -out server.csr
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 \
    -days "$DAYS_SERVER" -extfile "$ext" -out server.pem.tmp 2>/dev/null
  mv server.pem.tmp server.pem
  rm -f server.csr ca.srl
  made+=(server.pem)
fi

cat server.pem ca.pem > server-chain.pem
chmod 600 ca-key.pem server-key.pem
chmod 644 ca.pem server.pem server-chain.pem

dir="$(pwd)"
for f in "${made[@]+"${made[@]}"}"; do echo "created $dir/$f"; done
for f in "${kept[@]+"${kept[@]}"}"; do echo "kept    $dir/$f"; done
echo "wrote   $dir/server-chain.pem"
echo "server: ekc node start --tls-cert $dir/server.pem --tls-key $dir/server-key.pem"
echo "client: curl --cacert $dir/ca.pem https://127.0.0.1:8400/v1/health"
