#!/usr/bin/env bash
# make bench: one JSON document on stdout.
#  - sync: DeadlineSync release latency (fusion_sync --bench);
#  - pipeline_realtime: a fusion_sim `nominal` bag (camera 640x480 30 Hz, LiDAR ~19k
#    returns 10 Hz, radar 20 Hz, IMU 200 Hz) replayed at its recorded rate through the
#    whole in-process pipeline (ingest preprocessing → sync → fusion → rules): per-stage
#    and end-to-end latency, deadline misses, throughput (fusion_replay --realtime --bench);
#  - pipeline_max_throughput: the same bag as fast as possible.
# The camera detector is not in the loop yet (none is configured).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/ros-env.sh
BAG=.cache/bench/nominal_seed5_20s
if [ ! -f "$BAG/metadata.yaml" ]; then
  rm -rf "$BAG"; mkdir -p .cache/bench
  target/release/fusion_sim --scenario nominal --seed 5 --duration 20 --out "$BAG" >&2
fi
sync=$(target/release/fusion_sync --bench)
rt=$(target/release/fusion_replay "$BAG" --realtime --bench)
fast=$(target/release/fusion_replay "$BAG" --bench)
printf '{"machine": "%s, %s cores", "sync": %s, "pipeline_realtime": %s, "pipeline_max_throughput": %s}\n' \
  "$(uname -m)" "$(nproc)" "$sync" "$rt" "$fast" | python3 -m json.tool
