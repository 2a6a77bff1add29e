#!/usr/bin/env bash
# Run the MCP conformance suite's client authorization scenarios (every `auth/*` scenario that is
# not draft or extension) against Keyhand's MCP-authorization client: a real `keyhand serve` on
# 127.0.0.1 in a temporary home, and `keyhand vault connect <server-url> --follow` as the client.
# Fails if a scenario fails that tests/conformance-auth-baseline.yaml does not list (or passes one
# that it does: the baseline must stay true).
#
#   bash scripts/conformance-auth.sh             all scenarios
#   bash scripts/conformance-auth.sh auth/X ...  only these
#
# The conformance runner calls `scripts/conformance-auth.sh client <server-url>` for each scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "${1:-}" = "client" ]; then
  url="${*: -1}"
  name="conf-${MCP_CONFORMANCE_SCENARIO//\//-}"
  args=(vault connect "$url" --follow --timeout 20 --name "$name" --url "$KEYHAND_CONFORMANCE_GATEWAY")
  context="${MCP_CONFORMANCE_CONTEXT:-}"
  if [ -n "$context" ]; then  # pre-registration: the scenario hands us a client id and secret
    client_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("client_id", ""))' "$context")
    secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("client_secret", ""))' "$context")
    if [ -n "$client_id" ]; then
      exec "$ROOT/.venv/bin/keyhand" "${args[@]}" --client-id "$client_id" --client-secret-stdin <<<"$secret"
    fi
  fi
  exec "$ROOT/.venv/bin/keyhand" "${args[@]}"
fi

bash scripts/node-tools.sh
export PATH="$ROOT/.tools/node_modules/.bin:$PATH"   # node 22 and `conformance`, pinned
BASELINE="$ROOT/tests/conformance-auth-baseline.yaml"
if [ "$#" -gt 0 ]; then
  SCENARIOS=("$@")
else
  mapfile -t SCENARIOS < <(conformance list | grep -o 'auth/[^ ]*' | while read -r s; do
    conformance list | grep -F -- "- $s " | grep -qE '\[(draft|extension)\]' || echo "$s"
  done)
fi

work=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The suite's authorization servers expect this client ID metadata document URL (they never fetch it).
printf 'oauth:\n  client_metadata_url: https://conformance-test.local/client-metadata.json\n' >"$work/config.yaml"
export KEYHAND_HOME="$work/home"
source scripts/start-keyhand.sh
start_keyhand --config "$work/config.yaml"
export KEYHAND_CONFORMANCE_GATEWAY="${url%/mcp}"

failed=0
for scenario in "${SCENARIOS[@]}"; do
  if out=$(timeout 120 conformance client --command "bash $ROOT/scripts/conformance-auth.sh client" \
      --scenario "$scenario" --expected-failures "$BASELINE" --timeout 30000 2>&1); then
    if grep -qF -- "$scenario" "$BASELINE"; then
      echo "conformance-auth: $scenario failed as the baseline expects"
    else
      echo "conformance-auth: $scenario passed"
    fi
  else
    echo "conformance-auth: $scenario FAILED (or passes and is still in the baseline)"
    echo "$out" | tail -40
    failed=$((failed + 1))
  fi
done
total=${#SCENARIOS[@]}
echo "conformance-auth: $((total - failed)) of $total as expected, $failed not"
[ "$failed" = 0 ]
