#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer, nightly toolchain) of the parsers and
# checks every outside input goes through. One JSON line per target on stdout.
#   scripts/fuzz.sh [TARGET...]      FUZZ_SECONDS per target (default 60), FUZZ_RSS_MB (2048)
# The corpus grows in fuzz/corpus/TARGET; a crash or an out-of-memory leaves its input in
# fuzz/artifacts/TARGET and fails the run (copy it to fuzz/regressions/TARGET once fixed).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
rss=${FUZZ_RSS_MB:-2048}
# A pinned nightly (sanitizer flags need one) and cargo-fuzz: a new nightly must not turn
# CI red on its own.
toolchain=${FUZZ_TOOLCHAIN:-nightly-2026-10-29}
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$toolchain" --profile minimal >&2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version '^0.13' >&2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +"$toolchain" fuzz list)
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/last.log"
  set +e
  # Inputs that once crashed (fuzz/regressions/TARGET, committed) are run first, every time.
  extra=()
  [ -d "fuzz/regressions/$t" ] && extra=("fuzz/regressions/$t")
  cargo +"$toolchain" fuzz run "$t" "fuzz/corpus/$t" "${extra[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss" -malloc_limit_mb="$rss" -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  crashes=$(find "fuzz/artifacts/$t" -type f ! -name last.log | wc -l)
  echo "{\"target\": \"$t\", \"seconds\": $seconds, \"rss_limit_mb\": $rss, \"executions\": ${runs:-0}, \"coverage\": ${cov:-0}, \"corpus\": $corpus, \"crashes\": $crashes, \"exit\": $rc}"
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $t failed (exit $rc); see $log and fuzz/artifacts/$t" >&2
    tail -30 "$log" >&2
    status=1
  fi
done
exit $status
