#!/usr/bin/env bash
# make bench: one JSON document on stdout.
#  - sync: DeadlineSync release latency (fusion_sync --bench);
#  - pipeline_realtime: a fusion_sim `nominal` bag (camera 640x480 30 Hz, LiDAR ~19k
#    returns 10 Hz, radar 20 Hz, IMU 200 Hz) replayed at its recorded rate through the
#    whole in-process pipeline (ingest preprocessing → sync → fusion → rules): per-stage
#    and end-to-end latency, deadline misses, throughput (fusion_replay --realtime --bench);
#  - pipeline_max_throughput: the same bag as fast as possible;
#  both with the shipped camera detector (CenterNet, flex CPU backend, 320x240) in the loop;
#  - scheduler: fusion_sched_bench, the same bag played in real time at 1x, 2x, 4x the sensor
#    rates into the deadline scheduler and into the plain FIFO baseline, in the same run
#    (three rounds per rate, alternating order, pooled):
#    end-to-end p50/p99/p99.9/max (newest member's stamp -> publication), misses and shed per
#    1,000 sets, degradation level, anonymous RSS over time, FIFO/EDF ratios; then an
#    overload (640x480 detector input at 4x); then over real DDS through the launched nodes
#    at 1x (scripts/bench_dds.py, fusion_bag play --restamp). The 4x scheduler run's
#    timeline is written to .cache/bench/trace_4x.json (open in ui.perfetto.dev);
#  - detector: per-frame detector latency at 320x240 and 640x480 on flex (CPU) and wgpu
#    (the machine's GPU, or Mesa lavapipe on a CPU-only machine) (fusion_bench_detector);
#  - transport: DDS cost per topic class (image, JPEG image, cloud, IMU, events) on one host
#    (shared memory), across hosts (UDP over a veth LAN of network namespaces) and across a
#    100 Mbit/s link: latency, CPU per message on each side, bytes on the link
#    (scripts/bench_transport.py; needs root for the namespaces, else reported as skipped);
#  - summaries: the summarizer's model on every burst of 120 replayed scenario runs and 45
#    hand-made edge-case bursts, by number of candidates (fusion_bench_summaries);
#    summaries_random: the same on 60 random bursts off our generators.
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
# Three rounds per rate, the executors' order alternating, latencies pooled: one
# edf-then-fifo pair is within the detector's own run-to-run drift (docs/measured.md).
sched=$(target/release/fusion_sched_bench "$BAG" --rates 1,2,4 --repeats 3 --trace .cache/bench/trace_4x.json)
overload=$(target/release/fusion_sched_bench "$BAG" --rates 4 --input-size 640x480)
dds=$(source install/local_setup.bash && python scripts/bench_dds.py "$BAG")
transport=$(source install/local_setup.bash && python scripts/bench_transport.py 2>/dev/null || echo '{"skipped": "needs root (network namespaces)"}')
detector=$(target/release/fusion_bench_detector --backends flex,wgpu --sizes 320x240,640x480 --frames 100)
# The summarizer's LLM next to llama.cpp (same GGUF, same prompt, same run).
llm=$(python scripts/bench_llm.py)
# Summaries: every fusion_sim scenario over 15 seeds streamed through the pipeline (events
# only, kept in .cache/bench/summaries), plus the hand-made edge cases
# (models/bench/summary_edge_cases, from scripts/summary_edge_cases.py), then every burst
# summarized under the summarizer's rules for 1..4 candidates: model-written share, verified
# rate, reasons, latency.
CORPUS=.cache/bench/summaries
for scenario in nominal pedestrian_intrusion collision_course camera_blackout lidar_dropout imu_impact \
                sensor_disagreement mixed; do
  for seed in $(seq 201 215); do
    [ -f "$CORPUS/${scenario}_$seed/events.jsonl" ] || \
      target/release/fusion_replay --sim "$scenario" --seed "$seed" --duration 16 --out "$CORPUS/${scenario}_$seed" >&2
  done
done
summaries=$(target/release/fusion_bench_summaries "$CORPUS"/*_* models/bench/summary_edge_cases --candidates 1,2,3,4)
# The same on 60 random bursts drawn apart from the simulator and the edge cases
# (scripts/summary_random_bursts.py): what the figures above are worth off our own data.
summaries_random=$(target/release/fusion_bench_summaries models/bench/summary_random_bursts --candidates 1,3)
printf '{"machine": "%s, %s cores", "sync": %s, "pipeline_realtime": %s, "pipeline_max_throughput": %s, "scheduler": %s, "scheduler_overload_640x480": %s, "scheduler_dds": %s, "transport": %s, "detector": %s, "llm": %s, "summaries": %s, "summaries_random": %s}\n' \
  "$(uname -m)" "$(nproc)" "$sync" "$rt" "$fast" "$sched" "$overload" "$dds" "$transport" "$detector" "$llm" "$summaries" "$summaries_random" | python3 -m json.tool
