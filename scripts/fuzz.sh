#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer, nightly toolchain) of the parsers and
# checks every outside input goes through. One JSON line per target on stdout.
#   scripts/fuzz.sh [TARGET...]      FUZZ_SECONDS per target (default 60), FUZZ_RSS_MB (2048),
#                                    FUZZ_JOBS targets at once (default: the core count)
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
# FUZZ_JOBS targets at a time (default: one per core). Each libFuzzer process is one thread,
# so two on two cores give each target its full FUZZ_SECONDS in half the wall time.
jobs=${FUZZ_JOBS:-$(nproc)}
# Every target built once, up front, in one cargo invocation (the shared crates compile once,
# the binaries link in parallel); `cargo fuzz run` below then finds them built. Built with
# run's defaults (release, debug assertions, AddressSanitizer).
(cd fuzz && cargo +"$toolchain" fuzz build >&2)

# One target: its JSON line to fuzz/artifacts/TARGET/result.json, its exit status as ours.
fuzz_one() {
  local t=$1 log="fuzz/artifacts/$1/last.log" rc extra=()
  # Inputs that once crashed (fuzz/regressions/TARGET, committed) are run first, every time.
  [ -d "fuzz/regressions/$t" ] && extra=("fuzz/regressions/$t")
  # Real files to start from (read, never written: new inputs go to the first corpus).
  [ "$t" = compressed_image ] && extra+=(fusion/testdata)
  set +e
  cargo +"$toolchain" fuzz run "$t" "fuzz/corpus/$t" "${extra[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss" -malloc_limit_mb="$rss" -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  local runs cov corpus crashes
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  crashes=$(find "fuzz/artifacts/$t" -type f ! -name last.log ! -name result.json | wc -l)
  echo "{\"target\": \"$t\", \"seconds\": $seconds, \"rss_limit_mb\": $rss, \"executions\": ${runs:-0}, \"coverage\": ${cov:-0}, \"corpus\": $corpus, \"crashes\": $crashes, \"exit\": $rc}" \
    >"fuzz/artifacts/$t/result.json"
  return "$rc"
}

for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  rm -f "fuzz/artifacts/$t/result.json"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  fuzz_one "$t" &
done
wait || true
# The lines in the targets' order; the exit status each run recorded.
status=0
for t in "${targets[@]}"; do
  result=$(cat "fuzz/artifacts/$t/result.json" 2>/dev/null || echo "{\"target\": \"$t\", \"exit\": -1}")
  echo "$result"
  if ! grep -q '"exit": 0}' <<<"$result"; then
    echo "fuzz: $t failed; see fuzz/artifacts/$t/last.log and fuzz/artifacts/$t" >&2
    tail -30 "fuzz/artifacts/$t/last.log" >&2 || true
    status=1
  fi
done
exit $status
