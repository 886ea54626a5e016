//! The tools around the sensor_fusion node set, apart from what runs on the robot (crate
//! `sensor_fusion`): rosbag2 bags (`bag`, `msgdef`; `fusion_bag`), the ROS 2 XML launcher
//! (`launch`; `fusion_launch`), the in-process replay and its HTML report (`replay`,
//! `report`; `fusion_replay`), the simulated sensor streams (`simrun`; `fusion_sim`), and the
//! scheduler benchmark (`schedbench`).
pub mod bag;
pub mod launch;
pub mod msgdef;
pub mod replay;
pub mod report;
pub mod schedbench;
pub mod simrun;
