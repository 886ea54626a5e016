# Source this file (bash/zsh) to get the project's ROS 2 Jazzy environment in a shell:
#   source scripts/ros-env.sh
# Our binaries, rclpy and the rosbags test tools then share one ROS graph.
# Runs scripts/setup.sh first if the environment has not been set up yet.
_sf_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
if [ ! -f "$_sf_root/.ros/env.sh" ]; then
  bash "$_sf_root/scripts/setup.sh" || return 1 2>/dev/null || exit 1
fi
. "$_sf_root/.ros/env.sh"
export PATH="$_sf_root/target/release:$PATH"
# Nothing leaves the device unless you say so: DDS discovery on this computer only (set
# ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, or ROS_STATIC_PEERS, before sourcing to reach others).
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
# The package's Fast DDS profile for that range (a profile you chose stays): in LOCALHOST
# mode rmw_fastrtps adds its own UDP transport, so that profile has none (config/fastdds_localhost.xml).
if [ "$ROS_AUTOMATIC_DISCOVERY_RANGE" = LOCALHOST ] && [ "${FASTRTPS_DEFAULT_PROFILES_FILE:-}" = "$_sf_root/config/fastdds.xml" ]; then
  export FASTRTPS_DEFAULT_PROFILES_FILE=$_sf_root/config/fastdds_localhost.xml
fi
unset _sf_root
