//! What runs on the robot: the ROS 2 glue of the six nodes (thin r2r adapters over the
//! ROS-free `fusion` and `models` crates) and the ROS-free services they share with the
//! tools (`summarizer`). The tools around the node set (bags, launcher, replay, simulator
//! writer, viewer, benchmarks) are the `sensor_fusion_tools` crate in `tools/`.
pub mod detector;
pub mod graph;
pub mod ingest;
pub mod messages;
pub mod pending;
pub mod ros;
pub mod rviz;
pub mod speech;
pub mod summarizer;

/// A time span a user gave in seconds (a parameter, an option, a launch attribute) as a
/// `Duration`: a clear error for NaN, infinity, a negative value or one too large, where
/// `Duration::from_secs_f64` would panic.
pub fn seconds(what: &str, s: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{what} must be a finite number of seconds >= 0, got {s}"))
}
