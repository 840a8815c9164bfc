#!/usr/bin/env bash
# Runs each fuzz target for a bounded time and prints how many inputs it tried.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 20 s each, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). No nightly toolchain is
# needed: RUSTC_BOOTSTRAP=1 lets stable rustc take the sanitizer-coverage flags. Targets
# are built without a sanitizer (`--sanitizer none`): the code under test is safe Rust,
# and the build and the runs are about twice as fast. New inputs go to corpus/<target>
# (ignored by git); the committed seeds in seeds/<target> (see seeds.py) are read too.
# A crash stops the script with the input saved in artifacts/<target>/.
# FUZZ_TARGET_DIR, when set, is the build directory (CI keeps one across runs).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(send_body phone provider_reply webhook)
fi

export RUSTC_BOOTSTRAP=1
args=(--sanitizer none)
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
  args+=(--target-dir "$FUZZ_TARGET_DIR")
fi

cargo fuzz build "${args[@]}"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if ! cargo fuzz run "${args[@]}" "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz target $target FAILED; the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz target $target: $runs inputs in ${seconds} s, no crash"
  rm -f "$log"
done
