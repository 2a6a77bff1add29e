# Sourced by the conformance scripts: start `keyhand serve` on a free port in the background and
# wait until it answers /healthz. Expects $work (a temp dir) and KEYHAND_HOME; takes extra
# arguments for `keyhand` (e.g. --config FILE) before `serve`, and `serve` options after `--`.
# Sets $pid and $url (http://127.0.0.1:PORT/mcp); exits 1 with keyhand's stderr if it does not start.
start_keyhand() {
  local before=() after=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do before+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  after=("$@")
  .venv/bin/keyhand "${before[@]}" serve --port 0 "${after[@]}" >"$work/out" 2>"$work/err" &
  pid=$!
  url=""
  for _ in $(seq 1 300); do
    url=$(grep -o 'http://127.0.0.1:[0-9]*/mcp' "$work/out" | head -1 || true)
    [ -n "$url" ] && curl -sf "${url%/mcp}/healthz" >/dev/null && return 0
    url=""
    sleep 0.1
  done
  echo "keyhand did not start:" >&2
  cat "$work/err" >&2
  exit 1
}
