#!/usr/bin/env bash
# make bench: one JSON document on stdout.
#  - sync: DeadlineSync release latency (fusion_sync --bench);
#  - pipeline_realtime: a fusion_sim `nominal` bag (camera 640x480 30 Hz, LiDAR ~19k
#    returns 10 Hz, radar 20 Hz, IMU 200 Hz) replayed at its recorded rate through the
#    whole in-process pipeline (ingest preprocessing → sync → fusion → rules): per-stage
#    and end-to-end latency, deadline misses, throughput (fusion_replay --realtime --bench);
#  - pipeline_max_throughput: the same bag as fast as possible;
#  both with the shipped camera detector (CenterNet, flex CPU backend, 320x240) in the loop;
#  - detector: per-frame detector latency at 320x240 and 640x480 on flex (CPU) and wgpu
#    (the machine's GPU, or Mesa lavapipe on a CPU-only machine) (fusion_bench_detector).
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
detector=$(target/release/fusion_bench_detector --backends flex,wgpu --sizes 320x240,640x480 --frames 100)
# The summarizer's LLM next to llama.cpp (same GGUF, same prompt, same run).
llm=$(python scripts/bench_llm.py)
printf '{"machine": "%s, %s cores", "sync": %s, "pipeline_realtime": %s, "pipeline_max_throughput": %s, "detector": %s, "llm": %s}\n' \
  "$(uname -m)" "$(nproc)" "$sync" "$rt" "$fast" "$detector" "$llm" | python3 -m json.tool
