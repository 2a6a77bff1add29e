#!/usr/bin/env bash
# Run the public MCP conformance suite's server scenarios that apply to any server
# against a real `keyhand serve --no-auth` on 127.0.0.1. Fails if any scenario fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/node-tools.sh
export PATH="$PWD/.tools/node_modules/.bin:$PATH"   # node 22 and `conformance`, pinned

SCENARIOS=(server-initialize ping tools-list dns-rebinding-protection server-sse-multiple-streams server-sse-polling)

work=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

export KEYHAND_HOME="$work/home"
source scripts/start-keyhand.sh
start_keyhand -- --no-auth

failed=0
for scenario in "${SCENARIOS[@]}"; do
  if out=$(timeout 180 conformance server --url "$url" --scenario "$scenario" 2>&1) && grep -q ' 0 failed' <<<"$out"; then
    echo "conformance: $scenario passed"
  else
    echo "conformance: $scenario FAILED"; echo "$out" | tail -20; failed=$((failed + 1))
  fi
done
total=${#SCENARIOS[@]}
echo "$((total - failed)) passed, $failed failed"
[ "$failed" = 0 ]
