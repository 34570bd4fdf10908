#!/usr/bin/env bash
# The local development federation (cluster/dev-federation.json): region 38 (a centre and
# a remote office), region 52, the pension fund and the employment service, five real
# node processes replicating over HTTP/2 with mutual TLS. Makes the development CA and
# node certificates in .ekc/certs, then plays what the project exists for: region 38
# hands a citizen's request to the pension fund, the fund accepts, works and answers it,
# and the region's operator sees every step — while the fund holds only what the
# transfer's scope names. Ctrl-C stops the nodes. DEMO_EXIT=1 stops them after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
EKC=${EKC:-.build/debug/ekc}
TOPOLOGY=cluster/dev-federation.json
NODES=(irk-main irk-office-1 nn-main pension-1 employment-1)
PORTS=(8411 8412 8413 8414 8415)
REGION=http://127.0.0.1:8411
OFFICE=http://127.0.0.1:8412
FUND=http://127.0.0.1:8414
mkdir -p .ekc/federation
ops/dev-ca.sh .ekc/certs "${NODES[@]}" >/dev/null

# Operators sign in with their organisation's (here: the development) identity provider;
# the CLI keeps one token per organisation in EKC_TOKEN_DIR and picks it by the node.
export EKC_TOKEN_DIR=.ekc/tokens
login() { "$EKC" login --config "$TOPOLOGY" --org "$1" --user "$2" --role "$3" >/dev/null; }
bearer() { echo "Authorization: Bearer $(cat "$EKC_TOKEN_DIR/$1.jwt")"; }
login 38 op-ivanova operator
login pension op-fund-smirnov operator   # (creates the development keys the nodes trust)

. ops/lib/nodes.sh
start_nodes "$TOPOLOGY" .ekc/federation "${NODES[@]}"
wait_nodes "${PORTS[@]}" || { echo "a node did not start (ports 8411-8415, 9411-9415 in use?); see .ekc/federation/*.log" >&2; exit 1; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(curl -fs -H "$(bearer 38)" "$REGION/v1/changes?limit=1" | json '["lastSequence"]')" = 0 ]; then
  # a supervisor seeds: the demo tickets are assigned to operators
  EKC_TOKEN="$("$EKC" login --config "$TOPOLOGY" --org 38 --user sv-orlova --role supervisor --print)" "$EKC" demo seed --node "$REGION" --count 6 >/dev/null
fi

say "Region 38 (irk-main) registers a citizen's request about her pension"
NUMBER=$("$EKC" ticket create --node "$REGION" --json --channel phone --topic pension \
  --subject "Перерасчёт пенсии по стажу" --statement "Прошу пересчитать пенсию с учётом северного стажа" \
  --citizen-ref CIT-DEMO-$RANDOM --citizen-name "Петрова Анна Сергеевна" --citizen-phone +79140000001 | json '["number"]')
"$EKC" ticket status --node "$REGION" "$NUMBER" REGISTERED >/dev/null
"$EKC" ticket note --node "$REGION" "$NUMBER" "Звонила дважды, просила перезвонить вечером" >/dev/null
"$EKC" ticket note --node "$REGION" --shared "$NUMBER" "Справка о северном стаже приложена к обращению" >/dev/null
echo "ticket $NUMBER"

say "The operator hands it to the pension fund (REDIRECT; personal data in scope: reference and name)"
TRANSFER=$("$EKC" transfer send --node "$REGION" --json "$NUMBER" --to pension --kind REDIRECT \
  --reason-code pension-recalc --reason "Перерасчёт пенсии — компетенция фонда" --scope ref,name | json '["id"]')
echo "transfer $TRANSFER"
for _ in $(seq 1 100); do
  [ "$(curl -fs -H "$(bearer pension)" "$FUND/v1/transfers/$TRANSFER" 2>/dev/null | json '["state"]' 2>/dev/null)" = DELIVERED ] && break
  sleep 0.05
done

say "The pension fund's inbox (pension-1)"
"$EKC" transfer inbox --node "$FUND"
say "What the fund holds of the citizen: the reference and the name (shown masked) — no phone, no internal note"
curl -fs -H "$(bearer pension)" "$FUND/v1/tickets/$NUMBER" | python3 -c 'import json,sys; c=json.load(sys.stdin)["citizen"]; print("  citizen: " + ", ".join(k + " " + (v if v else "(not in scope)") for k, v in c.items()))'
curl -fs -H "$(bearer pension)" "$FUND/v1/tickets/$NUMBER/notes" | python3 -c 'import json,sys; [print("  " + n["visibility"] + " note: " + n["text"]) for n in json.load(sys.stdin)["items"]]'
say "The fund's operator needs the name to find the pension file: unmasked with a reason, and logged"
"$EKC" ticket show --node "$FUND" "$NUMBER" --unmask name,phone --reason "Поиск пенсионного дела по ФИО" --json \
  | python3 -c 'import json,sys; c=json.load(sys.stdin)["citizen"]; print("  name: " + c["name"] + ", phone: " + str(c["phone"]) + " (not in scope)")'
EKC_TOKEN_DIR=.ekc/tokens-audit "$EKC" login --config "$TOPOLOGY" --org pension --user aud-fund --role auditor >/dev/null
EKC_TOKEN_DIR=.ekc/tokens-audit "$EKC" audit list --node "$FUND" --ticket "$NUMBER" | tail -n 1 | sed 's/^/  /'

say "The fund accepts it, works on it and answers"
"$EKC" transfer accept --node "$FUND" "$TRANSFER" >/dev/null
"$EKC" ticket status --node "$FUND" "$NUMBER" IN_WORK >/dev/null
"$EKC" ticket note --node "$FUND" --shared "$NUMBER" "Северный стаж подтверждён архивной справкой" >/dev/null
"$EKC" ticket status --node "$FUND" "$NUMBER" ANSWERED >/dev/null
"$EKC" transfer complete --node "$FUND" "$TRANSFER" \
  --answer "Пенсия пересчитана с 1 декабря, письмо направлено заявителю" >/dev/null
sleep 1

say "Region 38's operator, answering the citizen's repeat call (irk-main), sees where the request is"
"$EKC" ticket show --node "$REGION" "$NUMBER" | sed -n '1,3p;/^owner node/,$p'
say "…and so does the remote office (irk-office-1), through its centre"
"$EKC" ticket show --node "$OFFICE" "$NUMBER" | sed -n '1,3p;/^TRANSFER/,/^$/p'

say "The federation, as operations staff see it (an ops token of each organisation: no personal data)"
for org in 38 52 pension employment; do
  EKC_TOKEN_DIR=.ekc/tokens-ops "$EKC" login --config "$TOPOLOGY" --org $org --user ops-duty --role ops >/dev/null
done
EKC_TOKEN_DIR=.ekc/tokens-ops "$EKC" cluster health --config "$TOPOLOGY" || true
cat <<EOT

Five nodes are running: APIs on 8411-8415 (irk-main, irk-office-1, nn-main, pension-1,
employment-1), replication with mutual TLS on 9411-9415. Region 52 and the employment
service received nothing of this request. Operators are signed in with development
tokens (export EKC_TOKEN_DIR=.ekc/tokens; "$EKC login --config $TOPOLOGY --org 38 --user
op-petrova --role supervisor" signs in someone else). Try:
  export EKC_TOKEN_DIR=.ekc/tokens
  $EKC transfer outbox --node $REGION
  $EKC transfer send --node $REGION <ticket> --to employment --kind INFO_REQUEST --reason-code jobs --reason "…"
  $EKC ticket show --node $FUND $NUMBER
EOT
if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo "Ctrl-C stops them."
wait
