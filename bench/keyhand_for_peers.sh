#!/usr/bin/env bash
# Start keyhand in front of one upstream, for ../shared/peer-bench/run_peers.py --start:
#   run_peers.py --start "keyhand=bash $PWD/bench/keyhand_for_peers.sh {port} {upstream}" -- --tool keyhand=echo__echo
# A fresh home, --no-auth (the peers run unauthenticated too), the upstream's tools allowed, and a
# vault credential injected into every upstream call so the whole pipeline is measured.
set -euo pipefail
port=$1 upstream=$2
root=$(cd "$(dirname "$0")/.." && pwd)
home=$(mktemp -d)
cat >"$home/config.yaml" <<YAML
upstreams: [{name: echo, url: "$upstream", credential: echo-token}]
agents: {default: {tools: {"echo__*": allow}}}
YAML
export KEYHAND_HOME="$home/home"
head -c 24 /dev/urandom | base64 | "$root/.venv/bin/keyhand" --config "$home/config.yaml" vault add echo-token --kind bearer >/dev/null
exec "$root/.venv/bin/keyhand" --config "$home/config.yaml" --log-level WARNING serve --no-auth --port "$port"
