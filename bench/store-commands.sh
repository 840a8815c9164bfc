#!/usr/bin/env bash
# What one send costs the shared store: Redis commands and round trips per send, for
# the `redis` scenario of bench/run.sh (dedupe, per-number, per-client and global
# limits on, a different number on every request), counted by the server itself.
# Deterministic, unlike throughput: sends go one at a time.
#
#   bench/store-commands.sh              # 200 sends with a debug build
#   SENDS=1000 RELAY_BIN=target/release/otp-relay bench/store-commands.sh
#
# Round trips are the server's `total_reads_processed`: with one send at a time, each
# request the relay writes (one command, or one pipeline) arrives in one read.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
SENDS="${SENDS:-200}"

log() { printf '%s\n' "$*" >&2; }
die() { log "store-commands.sh: $*"; exit 1; }
for tool in curl redis-server redis-cli cargo; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# Two invocations, as in bench/run.sh: built together, the mock's features would change
# otp-relay's build.
if [ -z "${RELAY_BIN:-}" ]; then
  (cd "$root" && cargo build --locked -q -p otp-relay)
fi
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
relay_bin="${RELAY_BIN:-$target_dir/debug/otp-relay}"
mock_bin="$target_dir/debug/mock-provider"
(cd "$root" && cargo build --locked -q -p mock-provider)

work="$(mktemp -d "${TMPDIR:-/tmp}/otp-relay-commands.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  die "no free port found"
}
wait_for() { # command...
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return; sleep 0.05; done
  return 1
}

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  >"$work/redis.log" 2>&1 &
pids+=("$!")
wait_for redis-cli -p "$redis_port" ping || die "redis-server did not start"

"$mock_bin" --addr 127.0.0.1:0 >"$work/mock.log" 2>&1 &
pids+=("$!")
wait_for grep -q '^listening on' "$work/mock.log" || die "mock did not start"
mock_port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/mock.log")"

relay_port="$(free_port)"
env -i PATH="$PATH" BIND_ADDR="127.0.0.1:$relay_port" PROVIDERS=twilio AUTH_DISABLED=true \
  TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef TWILIO_AUTH_TOKEN=x \
  TWILIO_FROM=+14155550100 TWILIO_BASE_URL="http://127.0.0.1:$mock_port" \
  RATE_LIMIT_PER_NUMBER=5/10m DEDUPE_WINDOW=60s \
  RATE_LIMIT_PER_CLIENT=10000000/1d RATE_LIMIT_GLOBAL=10000000/1d \
  REDIS_URL="redis://127.0.0.1:$redis_port" RUST_LOG=warn \
  "$relay_bin" serve >"$work/relay.log" 2>&1 &
pids+=("$!")
wait_for curl -fsS "http://127.0.0.1:$relay_port/health/ready" \
  || { tail -20 "$work/relay.log" >&2; die "otp-relay did not become ready"; }

send() { # number text
  curl -sS -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' \
    -d "{\"mobile\": \"+5511$1\", \"totp\": \"$2\"}" \
    "http://127.0.0.1:$relay_port/api/sms"
}
stat() { redis-cli -p "$redis_port" info stats | tr -d '\r' | sed -n "s/^$1://p"; }

# Counts what `sends` (a function of the send's index) costs, over SENDS sends that
# must all answer `status`.
measure() { # title status sends
  local title="$1" status="$2" sends="$3" reads0 reads1 i
  redis-cli -p "$redis_port" config resetstat >/dev/null
  reads0="$(stat total_reads_processed)"
  for i in $(seq 1 "$SENDS"); do
    [ "$("$sends" "$i")" = "$status" ] || die "$title: send $i did not answer $status"
  done
  reads1="$(stat total_reads_processed)"
  printf '%s: %s sends, one at a time, each %s (%s)\n' "$title" "$SENDS" "$status" "$relay_bin"
  # Commands run by scripts count too. The counting commands (INFO, CONFIG RESETSTAT;
  # two reads) are not sends'.
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' \
    | sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),.*/\1 \2/p' | sort \
    | awk -v n="$SENDS" '$1 != "info" && $1 != "config|resetstat" {
        printf "  %-12s %8d  %6.2f per send\n", $1, $2, $2 / n; total += $2 }
      END { printf "  %-12s %8d  %6.2f per send\n", "commands", total, total / n }'
  awk -v n="$SENDS" -v r="$((reads1 - reads0 - 2))" \
    'BEGIN { printf "  %-12s %8d  %6.2f per send\n", "round trips", r, r / n }'
}

# Sent: a different number each time. Refused: one number past its limit (5 per 10
# minutes), a different text each time so that dedupe does not answer instead.
sent() { send "$((900000000 + $1))" "Your SMS code is 123456."; }
refused() { send 970000000 "Your SMS code is $((100000 + $1))."; }

# Sends first, so the scripts are loaded and the connection made before counting.
[ "$(sent 0)" = 200 ] || die "the first send failed"
for i in 1 2 3 4 5; do [ "$(refused "$((-i))")" = 200 ] || die "a send within the limit failed"; done
[ "$SENDS" -gt 0 ] || die "SENDS must be at least 1"
measure sent 200 sent
measure refused 429 refused
