#!/usr/bin/env bash
# Set up everything Keyhand needs on a fresh Debian/Ubuntu machine:
#   - apt packages (bubblewrap; chromium for `web_fetch render`), installed when we are root,
#     otherwise a clear message saying how to install them;
#   - .venv with the project and its dev dependencies;
#   - with KEYHAND_WITH_NODE=1 (make test): Node 22 and the pinned npm test tools under .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(bubblewrap chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${missing[*]}" >&2
    echo "bootstrap: install them with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'

if [ "${KEYHAND_WITH_NODE:-0}" = 1 ]; then
  bash scripts/node-tools.sh
fi
