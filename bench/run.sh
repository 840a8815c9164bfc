#!/usr/bin/env bash
# otp-relay benchmark: the load tool straight at a mock Twilio (direct), then the same
# load through otp-relay with the QIAM body (relay), side by side in each run.
#
#   bench/run.sh                       # every scenario, 3 runs each, 8 s per phase
#   RUNS=5 DURATION=10 bench/run.sh    # more and longer runs
#   SCENARIOS="c64 c64-delay" bench/run.sh
#   RELAY_LOG=info bench/run.sh c64    # what logging at info costs
#   RELAY_BIN=/path/to/otp-relay bench/run.sh   # another build (e.g. a baseline) instead
#
# Scenarios (SCENARIOS or arguments):
#   c64          64 connections, provider answers at once
#   c64-delay    64 connections, provider answers after 200 ms
#   c1000-delay  1000 connections, provider answers after 200 ms
#   guards       64 connections, no delay, dedupe + rate limits (per number, per client,
#                global) on, a different number on every request, memory store
#   redis        the same guards with REDIS_URL (a redis-server of its own)
#   floor        like c64, through bench/floor-relay instead of otp-relay: the same two
#                exchanges on the same libraries (actix-web, reqwest) and nothing else,
#                so otp-relay's cost above it is its own work
#   rate2000     a fixed offered load below saturation: RATE req/s (2,000) for
#                RATE_SECONDS (20) over 32 connections, with `hey`'s rate option (wrk has
#                none), provider answering at once; latency is what to compare here
#   rate2000-floor  the same fixed load through bench/floor-relay: the latency the
#                mandated stack alone adds at that rate
#   first-send   a fresh otp-relay, and one send as soon as its port accepts a
#                connection: the time to that first answer, end to end (no load phases)
#
# Everything listens on 127.0.0.1 only. Each run starts a fresh otp-relay (so its peak
# RSS belongs to that run) and a fresh mock; a trap stops everything on exit, and a
# watchdog ends the script after MAX_SECONDS. Results: a table of medians on stdout and
# bench/results/<timestamp>.json with every run.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

RUNS="${RUNS:-3}"
DURATION="${DURATION:-8}"          # seconds per phase (direct, then relay)
THREADS="${THREADS:-2}"            # load tool threads
MOCK_THREADS="${MOCK_THREADS:-1}"  # mock runtime threads
RELAY_LOG="${RELAY_LOG:-warn}"     # RUST_LOG of otp-relay
DELAY_MS="${DELAY_MS:-200}"        # provider delay of the *-delay scenarios
MAX_SECONDS="${MAX_SECONDS:-1200}" # the whole script, builds excluded
RESULTS_DIR="${RESULTS_DIR:-$here/results}"
RATE="${RATE:-2000}"               # req/s offered in rate2000
RATE_SECONDS="${RATE_SECONDS:-20}" # seconds per phase of rate2000
if [ "$#" -gt 0 ]; then SCENARIOS="$*"; fi
SCENARIOS="${SCENARIOS:-c64 floor rate2000 rate2000-floor c64-delay c1000-delay guards redis first-send}"

log() { printf '%s\n' "$*" >&2; }
die() { log "run.sh: $*"; exit 1; }

# --- tools --------------------------------------------------------------------------
for tool in curl awk cargo; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
# wrk drives the load (hey the fixed-rate one), jq assembles the results: installed from
# Debian when missing.
missing=()
for tool in wrk hey jq; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} from Debian"
  [ "$(id -u)" = 0 ] || die "${missing[*]} missing; apt-get install ${missing[*]}, or run as root"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
case " $SCENARIOS " in
  *" redis "*) command -v redis-server >/dev/null || die "the redis scenario needs redis-server" ;;
esac

# --- build --------------------------------------------------------------------------
log "building release binaries (otp-relay, mock-provider, floor-relay)"
# Two invocations: built together, the mock's hyper features would be unified into
# otp-relay's build, which would then differ from a plain `cargo build --release`.
if [ -z "${RELAY_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked -q -p otp-relay)
fi
(cd "$root" && cargo build --release --locked -q -p mock-provider -p floor-relay)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
relay_bin="${RELAY_BIN:-$target_dir/release/otp-relay}"
mock_bin="$target_dir/release/mock-provider"
floor_bin="$target_dir/release/floor-relay"
[ -x "$relay_bin" ] && [ -x "$mock_bin" ] && [ -x "$floor_bin" ] \
  || die "release binaries not found in $target_dir"

# --- process bookkeeping ------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/otp-relay-bench.XXXXXX")"
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  [ -n "${watchdog:-}" ] && kill "$watchdog" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'log "run.sh: interrupted"; exit 130' INT TERM
main_pid=$$
(
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  sleep "$MAX_SECONDS" & nap=$!
  wait "$nap" && { log "run.sh: over ${MAX_SECONDS}s, stopping"; kill -TERM "$main_pid"; }
) 2>/dev/null &
watchdog=$!

# Many connections: the relay holds one per client plus one per provider exchange.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# A free port on 127.0.0.1, below the kernel's ephemeral range (a port in that range
# may be some connection's source port: nothing answers there, yet bind fails).
ephemeral_low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
free_port() {
  local port span=$((ephemeral_low - 10000))
  for _ in $(seq 1 100); do
    port=$((10000 + (RANDOM * 32768 + RANDOM) % span))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  die "no free port found"
}

wait_http() { # url, seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }     # utime + stime
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
stat_of() { curl -fsS --max-time 2 "http://127.0.0.1:$1/stats" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"; }
mock_stat() { stat_of "$mock_port" "$1"; }
relay_metrics() { curl -fsS --max-time 2 "http://127.0.0.1:$relay_port/metrics"; }
# 2xx answers the relay gave on /api/sms, by its own counter (the floor's: its /stats).
relay_ok() {
  if [ "$relay_kind" = floor ]; then stat_of "$relay_port" ok; return; fi
  relay_metrics | awk '/^otp_relay_http_requests_total\{/ && /route="\/api\/sms"/ && /status="2[0-9][0-9]"/ {n += $NF} END {printf "%d\n", n}'
}
relay_in_flight() {
  if [ "$relay_kind" = floor ]; then stat_of "$relay_port" in_flight; return; fi
  relay_metrics | awk '/^otp_relay_sends_in_flight/ {printf "%d\n", $NF}'
}

# Runs wrk, prints its WRK_JSON object.
load() { # mode url connections
  local out="$work/wrk.out"
  BENCH_MODE="$1" timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$3" -d"${DURATION}s" \
    --timeout 10s -s "$here/wrk/bench.lua" "$2" >"$out" 2>&1 || {
    cat "$out" >&2; die "wrk failed"; }
  sed -n 's/^WRK_JSON //p' "$out"
}
jget() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

# Runs hey at a fixed rate (RATE req/s over `connections`, RATE_SECONDS), prints the
# same JSON object as `load`. hey's CSV has one line per answer (status and seconds);
# requests that got no answer at all are not in it, so its transport error counts are
# 0 here: the count check (each 2xx matched by one provider request) still holds.
load_rate() { # mode url connections
  local mode="$1" url="$2" conns="$3" out="$work/hey.csv" body="$work/hey.body"
  local -a args=(-z "${RATE_SECONDS}s" -c "$conns" -m POST -t 10 -o csv
                 -q "$(awk -v r="$RATE" -v c="$conns" 'BEGIN {printf "%.3f", r / c}')")
  if [ "$mode" = direct ]; then
    printf '%s' 'To=%2B5511966191717&Body=Your+SMS+code+is+123456+and+is+valid+for+5+minutes.&From=%2B14155550100' >"$body"
    # base64("AC0123456789abcdef0123456789abcdef:x"); hey's -a wants a longer password.
    args+=(-T application/x-www-form-urlencoded
           -H "Authorization: Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp4"
           -D "$body" "$url/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json")
  else
    printf '{\n  "mobile": "+5511966191717",\n  "totp": "Your SMS code is 123456 and is valid for 5 minutes.",\n  "used": false\n}' >"$body"
    args+=(-T application/json -A application/json -D "$body" "$url/api/sms")
  fi
  timeout $((RATE_SECONDS + 60)) hey "${args[@]}" >"$out" 2>&1 || {
    tail -20 "$out" >&2; die "hey failed"; }
  # Columns: response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,
  # status-code,offset (seconds since the start).
  local bad
  bad="$(awk -F, 'NR > 1 && $7 ~ /^[0-9]+$/ && ($7 < 200 || $7 > 299) {n++} END {print n + 0}' "$out")"
  awk -F, 'NR > 1 && $7 ~ /^[0-9]+$/ {printf "%d\n", $1 * 1e6}' "$out" | sort -n |
    awk -v secs="$RATE_SECONDS" -v bad="$bad" '
      function at(q,   i) { i = int(NR * q); return lat[i > 0 ? i : 1] }
      { lat[NR] = $1 }
      END {
        if (NR == 0) { print "{}"; exit }
        printf "{\"requests\":%d,\"duration_us\":%d,\"connect_errors\":0,\"read_errors\":0,\"write_errors\":0,\"status_errors\":%d,\"timeouts\":0,\"p50_us\":%d,\"p99_us\":%d,\"p999_us\":%d,\"max_us\":%d}\n", NR, secs * 1e6, bad, at(0.50), at(0.99), at(0.999), lat[NR]
      }'
}

# The port a program started on port 0 printed as `listening on 127.0.0.1:PORT`.
listening_port() { # log
  local port=""
  for _ in $(seq 1 100); do
    port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$1")"
    [ -n "$port" ] && break
    sleep 0.05
  done
  echo "$port"
}

start_mock() { # delay_ms
  # Port 0: the mock picks a free port and prints it.
  "$mock_bin" --addr 127.0.0.1:0 --delay-ms "$1" --threads "$MOCK_THREADS" \
    >"$work/mock.log" 2>&1 &
  mock_pid=$!; pids+=("$mock_pid")
  mock_port="$(listening_port "$work/mock.log")"
  [ -n "$mock_port" ] && wait_http "http://127.0.0.1:$mock_port/stats" 10 || {
    cat "$work/mock.log" >&2; die "mock did not start"; }
}

start_floor() {
  "$floor_bin" --addr 127.0.0.1:0 --provider "http://127.0.0.1:$mock_port" \
    >"$work/relay.log" 2>&1 &
  relay_pid=$!; pids+=("$relay_pid")
  relay_port="$(listening_port "$work/relay.log")"
  [ -n "$relay_port" ] && wait_http "http://127.0.0.1:$relay_port/health/ready" 15 || {
    tail -20 "$work/relay.log" >&2; die "floor-relay did not start"; }
}

start_redis() {
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --protected-mode yes >"$work/redis.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && return
    sleep 0.05
  done
  cat "$work/redis.log" >&2; die "redis-server did not start"
}

start_relay() { # guards(0/1) redis_url
  relay_port="$(free_port)"
  local -a env=(
    BIND_ADDR="127.0.0.1:$relay_port" PROVIDERS=twilio AUTH_DISABLED=true
    TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef TWILIO_AUTH_TOKEN=x
    TWILIO_FROM=+14155550100 TWILIO_BASE_URL="http://127.0.0.1:$mock_port"
    MAX_IN_FLIGHT=100000 LOG_FORMAT=json RUST_LOG="$RELAY_LOG"
  )
  if [ "$1" = 1 ]; then
    # Every guard on; the block, country, client and global limits are high enough
    # never to refuse here, but each request still counts against them. A new number
    # every request keeps a per-number counter live for 2 minutes (5/10m): the default
    # 8 MiB store holds some 45,000, then refuses sends (503 overloaded, by design);
    # 64 MiB holds the ~250,000 numbers of an 8 s phase.
    env+=(RATE_LIMIT_PER_NUMBER=5/10m DEDUPE_WINDOW=60s
          RATE_LIMIT_PER_PREFIX=10000000/1d RATE_LIMIT_PER_COUNTRY='*=10000000/1d'
          RATE_LIMIT_PER_CLIENT=10000000/1d RATE_LIMIT_GLOBAL=10000000/1d
          MEMORY_STORE_MIB=64)
  else
    env+=(RATE_LIMIT_PER_NUMBER=off DEDUPE_WINDOW=0s)
  fi
  [ -n "$2" ] && env+=(REDIS_URL="$2")
  env -i PATH="$PATH" "${env[@]}" "$relay_bin" serve >"$work/relay.log" 2>&1 &
  relay_pid=$!; pids+=("$relay_pid")
  wait_http "http://127.0.0.1:$relay_port/health/ready" 15 || {
    tail -20 "$work/relay.log" >&2; die "otp-relay did not become ready"; }
}

# --- one run of one scenario --------------------------------------------------------
# Appends one JSON line to $runs_file. Runs in the main shell (not a subshell), so the
# trap knows every process it starts.
run_once() { # scenario run
  local scenario="$1" run="$2" conns=64 delay=0 guards=0 redis="" mode=qiam loader=load
  relay_kind=otp-relay
  case "$scenario" in
    c64) ;;
    rate2000) conns=32; loader=load_rate ;;
    rate2000-floor) conns=32; loader=load_rate; relay_kind=floor ;;
    floor) relay_kind=floor ;;
    c64-delay) delay="$DELAY_MS" ;;
    c1000-delay) conns=1000; delay="$DELAY_MS" ;;
    guards) guards=1; mode=distinct ;;
    redis) guards=1; mode=distinct ;;
    *) die "unknown scenario $scenario" ;;
  esac
  start_mock "$delay"
  if [ "$scenario" = redis ]; then start_redis; redis="redis://127.0.0.1:$redis_port"; fi

  # (a) direct: the load tool at the mock. The mock's own CPU per request is the
  # reference for what one HTTP exchange costs on this machine.
  local direct mock_cpu0 mock_cpu1 loadavg
  loadavg="$(cut -d' ' -f1 /proc/loadavg)"
  mock_cpu0="$(cpu_ticks "$mock_pid")"
  direct="$("$loader" direct "http://127.0.0.1:$mock_port" "$conns")"
  mock_cpu1="$(cpu_ticks "$mock_pid")"

  # (b) relay: the same load through otp-relay (or the floor).
  if [ "$relay_kind" = floor ]; then start_floor; else start_relay "$guards" "$redis"; fi
  sleep 0.5
  local idle_rss_kib cpu0 ok0 msg0 conn0 relay cpu1 ok1 msg1 conn1 peak_kib
  idle_rss_kib="$(status_kib "$relay_pid" VmRSS)"
  cpu0="$(cpu_ticks "$relay_pid")"
  ok0="$(relay_ok)"; msg0="$(mock_stat messages)"; conn0="$(mock_stat connections)"
  relay="$("$loader" "$mode" "http://127.0.0.1:$relay_port" "$conns")"
  # Sends the load tool stopped waiting for still finish: let them, then count.
  for _ in $(seq 1 150); do [ "$(relay_in_flight)" = 0 ] && break; sleep 0.1; done
  cpu1="$(cpu_ticks "$relay_pid")"
  ok1="$(relay_ok)"; msg1="$(mock_stat messages)"; conn1="$(mock_stat connections)"
  peak_kib="$(status_kib "$relay_pid" VmHWM)"
  stop_all

  local tck; tck="$(getconf CLK_TCK)"
  [ -n "$direct" ] && [ -n "$relay" ] || die "no result from wrk"
  awk -v s="$scenario" -v r="$run" -v c="$conns" -v d="$delay" -v direct="$direct" -v relay="$relay" \
      -v idle="$idle_rss_kib" -v peak="$peak_kib" -v cpu="$((cpu1 - cpu0))" -v tck="$tck" \
      -v ok="$((ok1 - ok0))" -v msgs="$((msg1 - msg0))" -v conns_opened="$((conn1 - conn0))" \
      -v mock_cpu="$((mock_cpu1 - mock_cpu0))" -v loadavg="$loadavg" '
    function get(json, key,   m) { return match(json, "\"" key "\":[0-9.]+") ? substr(json, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0 : -1 }
    function rate(json) { return get(json, "requests") / (get(json, "duration_us") / 1e6) }
    function non2xx(json) { return get(json, "status_errors") + get(json, "connect_errors") + get(json, "read_errors") + get(json, "write_errors") + get(json, "timeouts") }
    BEGIN {
      dr = rate(direct); rr = rate(relay)
      wrk2xx = get(relay, "requests") - get(relay, "status_errors")
      cpu_us = ok > 0 ? cpu / tck * 1e6 / ok : -1
      mock_cpu_us = get(direct, "requests") > 0 ? mock_cpu / tck * 1e6 / get(direct, "requests") : -1
      match_ok = (ok == msgs && wrk2xx <= ok && ok - wrk2xx <= c) ? "true" : "false"
      printf "{\"scenario\":\"%s\",\"run\":%d,\"connections\":%d,\"provider_delay_ms\":%d,\"loadavg_1m\":%s,", s, r, c, d, loadavg
      printf "\"direct\":{\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"non_2xx\":%d,\"mock_cpu_us_per_request\":%.1f},", dr, get(direct,"p50_us")/1e3, get(direct,"p99_us")/1e3, get(direct,"p999_us")/1e3, non2xx(direct), mock_cpu_us
      printf "\"relay\":{\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"non_2xx\":%d,", rr, get(relay,"p50_us")/1e3, get(relay,"p99_us")/1e3, get(relay,"p999_us")/1e3, non2xx(relay)
      printf "\"idle_rss_mib\":%.1f,\"peak_rss_mib\":%.1f,\"cpu_us_per_request\":%.1f,", idle/1024, peak/1024, cpu_us
      printf "\"provider_connections\":%d,\"relay_2xx\":%d,\"load_tool_2xx\":%d,\"mock_messages\":%d,\"counts_match\":%s},", conns_opened, ok, wrk2xx, msgs, match_ok
      printf "\"ratio_rps\":%.3f,\"added_p99_ms\":%.3f}\n", rr / dr, (get(relay,"p99_us") - get(direct,"p99_us"))/1e3
    }' >>"$runs_file"
  log "   $(tail -1 "$runs_file")"
}

# One start of otp-relay, and one send as soon as its port accepts a connection (a
# loop of TCP connects, 1 ms apart): the time curl took to get that send's answer,
# which includes whatever the relay still loads after it starts accepting. Appends
# one JSON line to $first_file.
first_send_once() { # run
  start_mock 0
  relay_port="$(free_port)"
  env -i PATH="$PATH" BIND_ADDR="127.0.0.1:$relay_port" PROVIDERS=twilio AUTH_DISABLED=true \
    TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef TWILIO_AUTH_TOKEN=x \
    TWILIO_FROM=+14155550100 TWILIO_BASE_URL="http://127.0.0.1:$mock_port" \
    LOG_FORMAT=json RUST_LOG="$RELAY_LOG" "$relay_bin" serve >"$work/relay.log" 2>&1 &
  relay_pid=$!; pids+=("$relay_pid")
  local started=$SECONDS answer
  until (exec 3<>"/dev/tcp/127.0.0.1/$relay_port") 2>/dev/null; do
    [ $((SECONDS - started)) -lt 15 ] || { tail -20 "$work/relay.log" >&2; die "otp-relay did not listen"; }
    sleep 0.001
  done
  answer="$(curl -sS -o /dev/null --max-time 10 -w '%{http_code} %{time_total}' \
    -H 'Content-Type: application/json' \
    --data-binary '{"mobile": "+5511966191717", "totp": "Your SMS code is 123456 and is valid for 5 minutes.", "used": false}' \
    "http://127.0.0.1:$relay_port/api/sms")" || die "the first send failed"
  stop_all
  [ "${answer%% *}" = 200 ] || die "the first send was answered ${answer%% *}"
  jq -cn --argjson run "$1" --argjson seconds "${answer#* }" \
    '{scenario: "first-send", run: $run, first_send_ms: ($seconds * 1000)}' >>"$first_file"
  log "   $(tail -1 "$first_file")"
}

# --- all runs, then medians ---------------------------------------------------------
mkdir -p "$RESULTS_DIR"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
runs_file="$work/runs.jsonl"
first_file="$work/first.jsonl"
: >"$runs_file"; : >"$first_file"
# Runs outer, scenarios inner: the scenarios compared with each other (c64 and floor,
# rate2000 and rate2000-floor, guards and redis) run minutes apart at most, and each
# comparison is made within one run (see `paired` below), so a host that drifts between
# runs moves both sides of it.
load_scenarios=""
for scenario in $SCENARIOS; do
  [ "$scenario" = first-send ] || load_scenarios="$load_scenarios $scenario"
done
for run in $(seq 1 "$RUNS"); do
  for scenario in $SCENARIOS; do
    case "$scenario" in
      first-send)
        log "== first-send, run $run/$RUNS"
        first_send_once "$run"
        continue ;;
      rate2000*) log "== $scenario, run $run/$RUNS (${RATE} req/s, ${RATE_SECONDS}s direct + ${RATE_SECONDS}s relay)" ;;
      *) log "== $scenario, run $run/$RUNS (${DURATION}s direct + ${DURATION}s relay)" ;;
    esac
    run_once "$scenario" "$run"
  done
done

# Median of a field over one scenario's runs.
median() { # scenario jq-path
  jq -s --arg s "$1" "[.[] | select(.scenario == \$s) | $2] | sort | if length == 0 then null else (if length % 2 == 1 then .[length/2|floor] else (.[length/2 - 1] + .[length/2]) / 2 end) end" "$runs_file"
}

summary="$work/summary.jsonl"; : >"$summary"
for scenario in $load_scenarios; do
  jq -cn --arg s "$scenario" \
    --argjson direct_rps "$(median "$scenario" .direct.rps)" \
    --argjson relay_rps "$(median "$scenario" .relay.rps)" \
    --argjson ratio "$(median "$scenario" .ratio_rps)" \
    --argjson d_p50 "$(median "$scenario" .direct.p50_ms)" --argjson d_p99 "$(median "$scenario" .direct.p99_ms)" \
    --argjson d_p999 "$(median "$scenario" .direct.p999_ms)" \
    --argjson r_p50 "$(median "$scenario" .relay.p50_ms)" --argjson r_p99 "$(median "$scenario" .relay.p99_ms)" \
    --argjson r_p999 "$(median "$scenario" .relay.p999_ms)" \
    --argjson added_p99 "$(median "$scenario" .added_p99_ms)" \
    --argjson non2xx "$(median "$scenario" .relay.non_2xx)" \
    --argjson cpu "$(median "$scenario" .relay.cpu_us_per_request)" \
    --argjson mock_cpu "$(median "$scenario" .direct.mock_cpu_us_per_request)" \
    --argjson loadavg "$(median "$scenario" .loadavg_1m)" \
    --argjson idle "$(median "$scenario" .relay.idle_rss_mib)" \
    --argjson peak "$(median "$scenario" .relay.peak_rss_mib)" \
    --argjson conns "$(median "$scenario" .relay.provider_connections)" \
    --argjson all_match "$(jq -s --arg s "$scenario" '[.[] | select(.scenario == $s) | .relay.counts_match] | all' "$runs_file")" \
    '{scenario: $s, direct_rps: $direct_rps, relay_rps: $relay_rps, ratio_rps: $ratio,
      direct_p50_ms: $d_p50, direct_p99_ms: $d_p99, direct_p999_ms: $d_p999,
      relay_p50_ms: $r_p50, relay_p99_ms: $r_p99, relay_p999_ms: $r_p999,
      added_p99_ms: $added_p99, relay_non_2xx: $non2xx, cpu_us_per_request: $cpu,
      mock_cpu_us_per_request: $mock_cpu, loadavg_1m: $loadavg,
      idle_rss_mib: $idle, peak_rss_mib: $peak, provider_connections: $conns,
      counts_match_every_run: $all_match}' >>"$summary"
done
# One scenario against another, run by run: the median over runs of relay rps, CPU per
# request (ratios) and relay p99 (difference) of `a` against `b` in the same run.
paired() { # a b
  jq -s --arg a "$1" --arg b "$2" '
    def median: sort | if length == 0 then null else (if length % 2 == 1 then .[length/2|floor] else (.[length/2 - 1] + .[length/2]) / 2 end) end;
    (map(select(.scenario == $a)) | INDEX(.run)) as $A | (map(select(.scenario == $b)) | INDEX(.run)) as $B
    | [$A | keys[] | select($B[.]) | {a: $A[.].relay, b: $B[.].relay}] as $pairs
    | if ($pairs | length) == 0 then empty else
      {scenario: $a, against: $b, runs: ($pairs | length),
       rps_ratio: ($pairs | map(.a.rps / .b.rps) | median),
       cpu_ratio: ($pairs | map(.a.cpu_us_per_request / .b.cpu_us_per_request) | median),
       added_p99_ms: ($pairs | map(.a.p99_ms - .b.p99_ms) | median)} end' "$runs_file"
}
pairs_file="$work/pairs.jsonl"; : >"$pairs_file"
paired c64 floor >>"$pairs_file"
paired rate2000 rate2000-floor >>"$pairs_file"
paired redis guards >>"$pairs_file"

out="$RESULTS_DIR/$stamp.json"
first_send_ms="$(jq -s 'map(.first_send_ms) | sort | if length == 0 then null else (if length % 2 == 1 then .[length/2|floor] else (.[length/2 - 1] + .[length/2]) / 2 end) end' "$first_file")"
jq -n --slurpfile runs "$runs_file" --slurpfile medians "$summary" --slurpfile paired "$pairs_file" \
  --slurpfile first_sends "$first_file" --argjson first_send_ms "$first_send_ms" \
  --arg when "$stamp" --arg nproc "$(nproc)" --arg cpu "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)" \
  --arg commit "$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --argjson runs_per_scenario "$RUNS" --argjson duration_s "$DURATION" --arg relay_log "$RELAY_LOG" \
  '{when: $when, commit: $commit, machine: {nproc: ($nproc | tonumber), cpu: $cpu},
    settings: {runs_per_scenario: $runs_per_scenario, seconds_per_phase: $duration_s,
               relay_log: $relay_log, load_tool: "wrk", rate_load_tool: "hey"},
    medians: $medians, paired: $paired, runs: $runs,
    first_send: {median_ms: $first_send_ms, runs: $first_sends}}' >"$out"

printf '\nMedians of %s runs, %ss per phase, RUST_LOG=%s, %s CPUs (%s)\n' "$RUNS" "$DURATION" "$RELAY_LOG" "$(nproc)" "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
printf '%-12s %9s %9s %6s %8s %8s %8s %8s %8s %6s %7s %7s %6s %6s %6s %6s\n' \
  scenario direct/s relay/s ratio d.p99ms r.p50ms r.p99ms r.p999 +p99ms non2xx cpu_us mock_us idleMi peakMi conns match
jq -r '[.scenario, (.direct_rps|floor), (.relay_rps|floor), .ratio_rps, .direct_p99_ms, .relay_p50_ms,
        .relay_p99_ms, .relay_p999_ms, .added_p99_ms, .relay_non_2xx, .cpu_us_per_request,
        .mock_cpu_us_per_request, .idle_rss_mib, .peak_rss_mib, .provider_connections,
        .counts_match_every_run] | @tsv' "$summary" |
  awk -F'\t' '{printf "%-12s %9d %9d %6.3f %8.2f %8.2f %8.2f %8.2f %8.2f %6d %7.1f %7.1f %6.1f %6.1f %6d %6s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16}'
if [ -s "$pairs_file" ]; then
  printf '\nWithin each run, then the median over runs:\n'
  jq -r '"\(.scenario) against \(.against) (\(.runs) runs): req/s \(.rps_ratio * 1000 | round / 1000), CPU per request \(.cpu_ratio * 100 | round / 100)x, p99 \(.added_p99_ms * 100 | round / 100) ms more"' "$pairs_file"
fi
if [ "$first_send_ms" != null ]; then
  printf '\nfirst send after start (median of %s): %.1f ms\n' "$RUNS" "$first_send_ms"
fi
printf '\nresult: %s\n' "$out"
if jq -se 'all(.counts_match_every_run)' "$summary" >/dev/null; then :; else
  log "run.sh: COUNT CHECK FAILED: some run's 2xx at the relay did not match requests at the mock"
  exit 1
fi
