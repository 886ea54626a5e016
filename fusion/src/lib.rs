//! ROS-free core of the sensor_fusion node set.
//!
//! Everything here builds and tests without a ROS environment; the r2r nodes in `nodes/`
//! convert messages to these plain types and back, and nothing more.

pub mod anomaly;
pub use anomaly::{EventKind, Sensor};
pub use sensors::{SensorId, SensorSet};
pub mod calib;
pub mod camera;
pub mod classify;
pub mod cloud;
pub use cloud::{LidarPoint, RadarTarget};
pub mod cluster;
pub mod detect;
pub mod egospeed;
pub mod frontend;
pub mod gate;
pub mod imu;
pub mod ingest;
pub mod monitor;
pub mod motion;
pub mod odom;
pub mod pipeline;
pub mod sched;
pub mod sensors;
pub mod sync;
pub mod tf;
pub mod track;

/// A ROS time stamp in nanoseconds since the epoch (or since simulation start).
pub type StampNs = i64;

/// `builtin_interfaces/Time` → nanoseconds.
pub fn stamp_ns(sec: i32, nanosec: u32) -> StampNs {
    sec as i64 * 1_000_000_000 + nanosec as i64
}
