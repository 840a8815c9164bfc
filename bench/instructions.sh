#!/usr/bin/env bash
# Instructions per relayed request, counted by callgrind: unlike times, these repeat
# exactly whatever else the machine is doing, so they compare builds on a busy machine.
#
#   bench/instructions.sh                 # otp-relay, then the floor, 2,000 requests each
#   bench/instructions.sh relay           # otp-relay only (floor: the floor only)
#   REQUESTS=5000 bench/instructions.sh   # more requests
#   RELAY_BIN=/path/to/otp-relay bench/instructions.sh relay   # another build
#   KEEP=1 bench/instructions.sh relay    # keep the callgrind output for callgrind_annotate
#
# The relay runs under callgrind with one worker; the mock (bench/mock-provider) runs
# natively. The load tool (`hey`, from Debian) sends WARMUP requests first, then the
# counters are zeroed, REQUESTS requests are sent over CONNECTIONS connections with the
# bench's QIAM body, and the counters are dumped: the dump's instructions (user space,
# every thread) divided by the requests are the figure. The release binaries are built
# as bench/run.sh builds them.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
REQUESTS="${REQUESTS:-2000}"
WARMUP="${WARMUP:-200}"
CONNECTIONS="${CONNECTIONS:-8}"
KINDS="${*:-relay floor}"

log() { printf '%s\n' "$*" >&2; }
die() { log "instructions.sh: $*"; exit 1; }

for tool in valgrind callgrind_control hey curl; do
  command -v "$tool" >/dev/null || die "$tool is required (apt-get install valgrind hey curl)"
done

if [ -z "${RELAY_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked -q -p otp-relay)
fi
(cd "$root" && cargo build --release --locked -q -p mock-provider -p floor-relay)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
relay_bin="${RELAY_BIN:-$target_dir/release/otp-relay}"
mock_bin="$target_dir/release/mock-provider"
floor_bin="$target_dir/release/floor-relay"

work="$(mktemp -d "${TMPDIR:-/tmp}/otp-relay-instructions.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then log "callgrind output kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

listening_port() { # log
  for _ in $(seq 1 600); do
    port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$1")"
    [ -n "$port" ] && { echo "$port"; return; }
    sleep 0.1
  done
}
wait_http() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

"$mock_bin" --addr 127.0.0.1:0 >"$work/mock.log" 2>&1 &
pids+=("$!")
mock_port="$(listening_port "$work/mock.log")"
[ -n "$mock_port" ] || die "the mock did not start"

body='{
  "mobile": "+5511966191717",
  "totp": "Your SMS code is 123456 and is valid for 5 minutes.",
  "used": false
}'

measure() { # kind
  local kind="$1" port pid out
  out="$work/callgrind.$kind.out"
  if [ "$kind" = floor ]; then
    valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" \
      "$floor_bin" --addr 127.0.0.1:0 --workers 1 \
      --provider "http://127.0.0.1:$mock_port" >"$work/$kind.log" 2>&1 &
    pid=$!; pids+=("$pid")
    port="$(listening_port "$work/$kind.log")"
  else
    port=$((20000 + RANDOM % 10000))
    env -i PATH="$PATH" BIND_ADDR="127.0.0.1:$port" WORKERS=1 PROVIDERS=twilio \
      AUTH_DISABLED=true TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef \
      TWILIO_AUTH_TOKEN=x TWILIO_FROM=+14155550100 \
      TWILIO_BASE_URL="http://127.0.0.1:$mock_port" MAX_IN_FLIGHT=100000 \
      RATE_LIMIT_PER_NUMBER=off DEDUPE_WINDOW=0s LOG_FORMAT=json RUST_LOG=warn \
      valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out" "$relay_bin" serve \
      >"$work/$kind.log" 2>&1 &
    pid=$!; pids+=("$pid")
  fi
  [ -n "$port" ] && wait_http "http://127.0.0.1:$port/health/ready" 120 || {
    tail -20 "$work/$kind.log" >&2; die "$kind did not start"; }
  local url="http://127.0.0.1:$port/api/sms"
  hey -n "$WARMUP" -c "$CONNECTIONS" -m POST -T application/json -d "$body" "$url" >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  hey -n "$REQUESTS" -c "$CONNECTIONS" -m POST -T application/json -d "$body" "$url" \
    >"$work/$kind.hey"
  callgrind_control --dump="$kind" "$pid" >/dev/null 2>&1
  grep -q "\[200\]	$REQUESTS responses" "$work/$kind.hey" || {
    cat "$work/$kind.hey" >&2; die "$kind: not every request was answered 200"; }
  local dump ir
  dump="$(ls -t "$out".* | head -1)"
  ir="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dump")"
  printf '%-6s %12d instructions for %d requests: %8d per request\n' \
    "$kind" "$ir" "$REQUESTS" "$((ir / REQUESTS))"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for kind in $KINDS; do
  case "$kind" in relay | floor) measure "$kind" ;; *) die "unknown kind $kind" ;; esac
done
