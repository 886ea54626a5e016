//! ROS 2 adapters of the sensor_fusion node set: thin r2r nodes over the ROS-free
//! `fusion` crate, and the rosbag2 tooling (`bag`, used by `fusion_bag`).
pub mod bag;
pub mod detector;
pub mod graph;
pub mod ingest;
pub mod launch;
pub mod msgdef;
pub mod pending;
pub mod replay;
pub mod report;
pub mod ros;
pub mod rviz;
pub mod schedbench;
pub mod simrun;
pub mod speech;
pub mod summarizer;

/// A time span a user gave in seconds (a parameter, an option, a launch attribute) as a
/// `Duration`: a clear error for NaN, infinity, a negative value or one too large, where
/// `Duration::from_secs_f64` would panic.
pub fn seconds(what: &str, s: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{what} must be a finite number of seconds >= 0, got {s}"))
}
