#!/usr/bin/env bash
# Installs the package the way colcon/ament lay it out, so that `ros2 launch sensor_fusion
# fusion.launch.xml` (and fusion_launch) find it once <prefix> is on AMENT_PREFIX_PATH:
#   <prefix>/lib/sensor_fusion/<the six nodes>   (what `ros2 run` and launch files start)
#   <prefix>/bin/<tools>                         (on PATH once local_setup.bash is sourced)
#   <prefix>/share/sensor_fusion/{package.xml, launch/, config/, models/}
#   <prefix>/share/ament_index/resource_index/packages/sensor_fusion
#   <prefix>/local_setup.bash
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${1:?usage: install.sh PREFIX}
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
# What runs on the robot (crate sensor_fusion, nodes/).
NODES="camera_ingest lidar_ingest radar_ingest imu_ingest fusion_node summarizer"
# The tools a user runs (crate sensor_fusion_tools, tools/; fusion_eval_detector and fusion_llm
# from models/). Training and benchmarks stay in target/release: they are for development.
TOOLS="fusion_bag fusion_launch fusion_replay fusion_sim fusion_view fusion_eval_detector fusion_llm"
install -d "$PREFIX/lib/sensor_fusion" "$PREFIX/bin" "$PREFIX/share/sensor_fusion/launch" "$PREFIX/share/sensor_fusion/config" \
  "$PREFIX/share/ament_index/resource_index/packages" "$PREFIX/share/sensor_fusion/models"
for e in $NODES; do
  install -m 755 "$ROOT/target/release/$e" "$PREFIX/lib/sensor_fusion/$e"
done
for e in $TOOLS; do
  install -m 755 "$ROOT/target/release/$e" "$PREFIX/bin/$e"
done
# An install made before the tools moved to bin/ kept them here: remove those copies, so an
# old binary never shadows the new one on PATH.
for e in $TOOLS fusion_sync fusion_train_detector fusion_bench_detector fusion_bench_llm fusion_sched_bench; do
  rm -f "$PREFIX/lib/sensor_fusion/$e"
done
install -m 644 "$ROOT"/launch/*.launch.xml "$PREFIX/share/sensor_fusion/launch/"
install -m 644 "$ROOT"/config/* "$PREFIX/share/sensor_fusion/config/"
# The detector's weights and their manifest (the nodes verify the sha256 before loading).
install -m 644 "$ROOT/models/weights/detector.json" "$ROOT/models/weights/detector.bpk" "$PREFIX/share/sensor_fusion/models/"
# The summarizer's language model (fetched by scripts/fetch-weights.sh, sha256-checked again at
# load by the summarizer).
install -m 644 "$ROOT/.cache/llm/SmolLM2-135M-Instruct.Q4_1.gguf" "$PREFIX/share/sensor_fusion/models/"
install -m 644 "$ROOT/nodes/package.xml" "$PREFIX/share/sensor_fusion/package.xml"
: > "$PREFIX/share/ament_index/resource_index/packages/sensor_fusion"
cat > "$PREFIX/local_setup.bash" <<'SH'
# Adds this install prefix to the environment (as colcon's local_setup.bash does).
_sf_prefix="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$_sf_prefix:"*) ;;
  *) export AMENT_PREFIX_PATH="$_sf_prefix${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
case ":$PATH:" in
  *":$_sf_prefix/bin:"*) ;;
  *) export PATH="$_sf_prefix/bin:$PATH" ;;
esac
case ":$PATH:" in
  *":$_sf_prefix/lib/sensor_fusion:"*) ;;
  *) export PATH="$_sf_prefix/lib/sensor_fusion:$PATH" ;;
esac
unset _sf_prefix
SH
echo "installed sensor_fusion into $PREFIX (source $PREFIX/local_setup.bash)"
