#!/usr/bin/env bash
# The demo: a 10 s fusion_sim scenario (DEMO_SCENARIO, default mixed: a pedestrian, a
# collision course, sensor faults; generated once and cached in .cache/demo, never committed)
# is played over DDS, with /clock, into the node set started by launch/fusion.launch.xml
# (from the `make install` prefix, sim time) with fusion_launch; the outputs and
# /diagnostics are recorded with fusion_bag, and the report prints what each node accepted,
# rejected and dropped, with its processing latency, then the anomaly summaries; finally
# fusion_replay writes the run's HTML report (report.html beside the recording).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/ros-env.sh
DURATION=${DEMO_DURATION:-10}
DIR=.cache/demo
SCENARIO=${DEMO_SCENARIO:-mixed}
BAG=$DIR/${SCENARIO}_seed1_${DURATION}s
OUT=$DIR/run_$(date +%Y%m%d_%H%M%S)
mkdir -p "$DIR"
if [ ! -f "$BAG/metadata.yaml" ]; then
  rm -rf "$BAG"
  fusion_sim --scenario "$SCENARIO" --seed 1 --duration "$DURATION" --out "$BAG"
fi

PREFIX=${PREFIX:-$ROOT/install}
source "$PREFIX/local_setup.bash"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The node set starts through the real ROS 2 launch file, as `ros2 launch` would run it.
fusion_launch sensor_fusion fusion.launch.xml use_sim_time:=true &
launcher=$!
pids+=($launcher)
# The live view (loopback only) for as long as the run lasts.
VIEW_PORT=${DEMO_VIEW_PORT:-8765}
fusion_view --port "$VIEW_PORT" &
pids+=($!)
echo "live view: http://127.0.0.1:$VIEW_PORT/ (while the demo runs)"
fusion_bag record -o "$OUT" /sensors/camera /sensors/lidar /sensors/radar /sensors/imu /fusion/objects \
  /anomaly/events /anomaly/summary /diagnostics &
rec=$!
fusion_bag play "$BAG" --wait-for-subscribers --delay 0.5 --clock
sleep 5   # the last frames, the last summaries and one more /diagnostics period
kill -INT "$rec"; wait "$rec"
kill -INT "$launcher"; wait "$launcher" || true
echo
python scripts/diag_report.py "$BAG" "$OUT"
echo "recorded: $OUT (fusion_bag info $OUT)"
# The same bag through the same pipeline in one process, with the shipped parameters, into a
# report to look at: timeline, bird's-eye view, the camera at each event, latency, counts,
# scored against the scenario's ground truth.
fusion_replay "$BAG" --params "$PREFIX/share/sensor_fusion/config/fusion.yaml" --out "$OUT/replay" \
  --summaries --report "$OUT/report.html"
echo "report: $ROOT/$OUT/report.html (open it in a browser; it needs no network)"
