//! ROS 2 adapters of the sensor_fusion node set: thin r2r nodes over the ROS-free
//! `fusion` crate, and the rosbag2 tooling (`bag`, used by `fusion_bag`).
pub mod bag;
pub mod detector;
pub mod ingest;
pub mod launch;
pub mod msgdef;
pub mod replay;
pub mod ros;
pub mod schedbench;
pub mod simrun;
pub mod summarizer;
