//! The node set's ROS graph, declared once: every topic and service a node uses, with its
//! type and QoS. The nodes take their names and QoS from here; the launch file's remaps, the
//! README's topic table and `fusion_msgs` are checked against it by the tests below, and an
//! rclpy test compares the README's table with the graph the launched nodes show over DDS.
//!
//! Names are relative, as in every ROS 2 package: they resolve in the node's namespace
//! (`namespace:=robot1` puts the node set's topics under `/robot1`), and a robot points the
//! ingest nodes at its own drivers by remapping the five raw inputs (the launch file's
//! `*_topic` arguments). `/diagnostics` stays absolute: diagnostic aggregators listen there.
use r2r::QosProfile;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reliability {
    BestEffort,
    Reliable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Volatile,
    /// A late subscriber is handed the last `depth` messages.
    TransientLocal,
}

/// Keep-last QoS; deadline, lifespan and liveliness stay at the system defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Qos {
    pub reliability: Reliability,
    pub durability: Durability,
    pub depth: usize,
}

impl Qos {
    /// What ROS 2 drivers publish raw sensor data with (`rclcpp::SensorDataQoS`).
    pub const SENSOR_DATA: Qos =
        Qos { reliability: Reliability::BestEffort, durability: Durability::Volatile, depth: 5 };
    /// rclcpp's default: reliable, volatile, depth 10.
    pub const DEFAULT: Qos = Qos { reliability: Reliability::Reliable, durability: Durability::Volatile, depth: 10 };
    /// Rare messages that must not be lost, handed to a subscriber that (re)starts late.
    pub const LATCHED: Qos =
        Qos { reliability: Reliability::Reliable, durability: Durability::TransientLocal, depth: 100 };

    pub const fn depth(self, depth: usize) -> Qos {
        Qos { depth, ..self }
    }

    pub fn profile(self) -> QosProfile {
        let p = QosProfile::default().keep_last(self.depth);
        let p = match self.reliability {
            Reliability::BestEffort => p.best_effort(),
            Reliability::Reliable => p.reliable(),
        };
        match self.durability {
            Durability::Volatile => p.volatile(),
            Durability::TransientLocal => p.transient_local(),
        }
    }

    /// As the README's table shows it.
    pub fn describe(self) -> String {
        let reliability = match self.reliability {
            Reliability::BestEffort => "best effort",
            Reliability::Reliable => "reliable",
        };
        let durability = match self.durability {
            Durability::Volatile => "",
            Durability::TransientLocal => ", transient local",
        };
        format!("{reliability}{durability}, depth {}", self.depth)
    }
}

/// A topic of the graph with the QoS its publisher offers (for a raw input: the QoS the
/// ingest node subscribes with by default; `input_reliability`/`input_depth` change it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: &'static str,
    pub msg_type: &'static str,
    pub qos: Qos,
    pub about: &'static str,
}

impl Topic {
    /// The name in the root namespace: what a bag recorded on a robot without a namespace
    /// (and every fusion_sim bag) holds.
    pub fn root_name(&self) -> String {
        if self.name.starts_with('/') {
            self.name.to_string()
        } else {
            format!("/{}", self.name)
        }
    }
}

/// A service of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: &'static str,
    pub srv_type: &'static str,
    pub about: &'static str,
}

// ---- raw inputs: what the robot's drivers (or a bag) publish -----------------------------
pub const CAMERA_IMAGE: Topic = Topic {
    name: "camera/image_raw",
    msg_type: "sensor_msgs/msg/Image",
    qos: Qos::SENSOR_DATA,
    about: "raw camera image",
};
/// The same images as image_transport's `compressed` plugin publishes them (a driver's
/// `image_raw/compressed`, or a republisher on a sensor box): read instead of the raw topic
/// when camera_ingest's `image_transport` is `compressed`. The launch file remaps it with the
/// raw topic; a remap of the raw topic alone does not move it (rcl remaps names, not prefixes).
pub const CAMERA_IMAGE_COMPRESSED: Topic = Topic {
    name: "camera/image_raw/compressed",
    msg_type: "sensor_msgs/msg/CompressedImage",
    qos: Qos::SENSOR_DATA,
    about: "the camera image as JPEG or PNG, read instead of the raw image (only with `image_transport: compressed`, launch `camera_transport:=compressed`)",
};
pub const CAMERA_INFO: Topic = Topic {
    name: "camera/camera_info",
    msg_type: "sensor_msgs/msg/CameraInfo",
    qos: Qos::SENSOR_DATA,
    about: "its intrinsics: the image size it states is checked, its K projects (both win over the calibration's)",
};
pub const LIDAR_POINTS: Topic = Topic {
    name: "lidar/points",
    msg_type: "sensor_msgs/msg/PointCloud2",
    qos: Qos::SENSOR_DATA,
    about: "raw LiDAR sweep",
};
pub const RADAR_POINTS: Topic = Topic {
    name: "radar/points",
    msg_type: "sensor_msgs/msg/PointCloud2",
    qos: Qos::SENSOR_DATA.depth(20),
    about: "radar targets (x, y, z, doppler, rcs)",
};
pub const IMU_DATA: Topic =
    Topic { name: "imu/data", msg_type: "sensor_msgs/msg/Imu", qos: Qos::SENSOR_DATA.depth(100), about: "raw IMU" };
/// The robot's odometry (wheel, visual or robot_localization's `odometry/filtered`), read by
/// fusion_node directly: it needs no preprocessing, only its frames checked. Optional: without
/// it the ego's speed comes from the radar's Doppler. Best effort, so any publisher matches.
pub const ODOMETRY: Topic = Topic {
    name: "odom",
    msg_type: "nav_msgs/msg/Odometry",
    qos: Qos::SENSOR_DATA.depth(50),
    about: "the ego's motion (optional; twist in base_link): velocities over the ground in the odometry frame, LiDAR deskew with translation",
};

// ---- validated streams in base_link: ingest nodes → fusion_node ---------------------------
/// The validated stream of a declared sensor: `sensors/<name>`, with its kind's type and QoS
/// (the constants below are the standard robot's, whose sensors are named after their kind).
pub fn sensor_stream(name: &str, kind: fusion::Sensor) -> (String, &'static Topic) {
    let topic = match kind {
        fusion::Sensor::Camera => &SENSORS_CAMERA,
        fusion::Sensor::Lidar => &SENSORS_LIDAR,
        fusion::Sensor::Radar => &SENSORS_RADAR,
        fusion::Sensor::Imu => &SENSORS_IMU,
    };
    (format!("sensors/{name}"), topic)
}

pub const SENSORS_CAMERA: Topic = Topic {
    name: "sensors/camera",
    msg_type: "sensor_msgs/msg/Image",
    qos: Qos::DEFAULT,
    about: "validated rgb8 image",
};
pub const SENSORS_CAMERA_INFO: Topic = Topic {
    name: "sensors/camera/camera_info",
    msg_type: "sensor_msgs/msg/CameraInfo",
    qos: Qos::DEFAULT,
    about: "the intrinsics of those images (scaled with them); they win over the calibration file's",
};
pub const SENSORS_LIDAR: Topic = Topic {
    name: "sensors/lidar",
    msg_type: "sensor_msgs/msg/PointCloud2",
    qos: Qos::DEFAULT,
    about: "validated, cropped, downsampled cloud in base_link",
};
pub const SENSORS_RADAR: Topic = Topic {
    name: "sensors/radar",
    msg_type: "sensor_msgs/msg/PointCloud2",
    qos: Qos::DEFAULT,
    about: "validated radar targets in base_link",
};
/// 100 deep (0.5 s at 200 Hz) on both sides: a reliable writer repairs a sample another host
/// lost only while it is in the writer's history, and a repair takes a heartbeat (0.25 s,
/// config/fastdds.xml) or more. With rclcpp's 10 (50 ms), 4 of 2400 samples were lost across
/// hosts at 1 % packet loss (tests/test_deployment.py); the other sensors' 10 cover ≥ 0.33 s.
pub const SENSORS_IMU: Topic = Topic {
    name: "sensors/imu",
    msg_type: "sensor_msgs/msg/Imu",
    qos: Qos::DEFAULT.depth(100),
    about: "validated IMU with orientation, in base_link",
};

// ---- outputs -------------------------------------------------------------------------------
pub const FUSED_OBJECTS: Topic = Topic {
    name: "fusion/objects",
    msg_type: "fusion_msgs/msg/FusedObjectArray",
    qos: Qos::DEFAULT,
    about: "tracked objects per synchronized set",
};
pub const MARKERS: Topic = Topic {
    name: "fusion/markers",
    msg_type: "visualization_msgs/msg/MarkerArray",
    qos: Qos::DEFAULT,
    about: "the objects (class colour; id, class, TTC label) and safety zones for RViz",
};
pub const CAMERA_BOXES: Topic = Topic {
    name: "fusion/camera_boxes",
    msg_type: "sensor_msgs/msg/Image",
    qos: Qos::DEFAULT.depth(2),
    about: "the camera frame of each set with the detector's boxes, the projected LiDAR clusters and the tracks drawn (for RViz; only with `annotated_image: true`)",
};
pub const ANOMALY_EVENTS: Topic = Topic {
    name: "anomaly/events",
    msg_type: "fusion_msgs/msg/AnomalyEvent",
    qos: Qos::LATCHED,
    about: "anomaly events",
};
pub const SUMMARY: Topic = Topic {
    name: "anomaly/summary",
    msg_type: "std_msgs/msg/String",
    qos: Qos::LATCHED,
    about: "each burst of events in plain English",
};
pub const SUMMARY_DETAILED: Topic = Topic {
    name: "anomaly/summary_detailed",
    msg_type: "fusion_msgs/msg/AnomalySummary",
    qos: Qos::LATCHED,
    about: "the summary with its events, source and verification",
};
pub const SUMMARY_AUDIO: Topic = Topic {
    name: "anomaly/summary_audio_path",
    msg_type: "std_msgs/msg/String",
    qos: Qos::LATCHED,
    about: "the spoken summary's WAV file (only with `speak: true`)",
};
pub const DIAGNOSTICS: Topic = Topic {
    name: "/diagnostics",
    msg_type: "diagnostic_msgs/msg/DiagnosticArray",
    qos: Qos::DEFAULT,
    about: "every node's health, rates, drops by reason, latencies",
};
pub const EXPLAIN: Service =
    Service { name: "anomaly/explain", srv_type: "fusion_msgs/srv/Explain", about: "why an event was raised" };

// ---- the transform tree (tf2): the sensors' mounts ----------------------------------------
/// The robot's fixed mounts, latched (what robot_state_publisher and
/// static_transform_publisher offer: reliable, transient local, depth 1 per publisher).
/// Relative, as Nav2's multi-robot launch remaps it (`/tf_static:=tf_static`): without a
/// namespace it is `/tf_static`; with `namespace:=robot1` it is robot1's own
/// `/robot1/tf_static`, so robots with different mounts share a compute host without one
/// robot's mounts placing the other's sensors. Bags hold the root name.
pub const TF_STATIC: Topic = Topic {
    name: "tf_static",
    msg_type: "tf2_msgs/msg/TFMessage",
    qos: Qos { reliability: Reliability::Reliable, durability: Durability::TransientLocal, depth: 1 },
    about: "fixed transforms: the sensor mounts your robot_state_publisher latches; each node latches the mounts it took from the calibration file instead",
};
/// The robot's moving transforms (joints, a pan-tilt head, odom → base_link), as tf2's
/// listener subscribes: reliable, volatile, depth 100. Relative for the reason `tf_static`
/// is. A sensor whose mount passes a link from here is looked up at each message's stamp.
pub const TF: Topic = Topic {
    name: "tf",
    msg_type: "tf2_msgs/msg/TFMessage",
    qos: Qos { reliability: Reliability::Reliable, durability: Durability::Volatile, depth: 100 },
    about: "moving transforms: a LiDAR or radar mount that moves is read here, at each cloud's stamp",
};
/// What the robot's drivers publish, each with the launch argument that remaps it.
pub const INPUTS: &[(&Topic, &str)] = &[
    (&CAMERA_IMAGE, "camera_topic"),
    (&CAMERA_INFO, "camera_info_topic"),
    (&LIDAR_POINTS, "lidar_topic"),
    (&RADAR_POINTS, "radar_topic"),
    (&IMU_DATA, "imu_topic"),
    (&ODOMETRY, "odom_topic"),
];

/// One node of the set and what it uses.
#[derive(Debug)]
pub struct Node {
    pub name: &'static str,
    /// An ingest node's first subscription is its raw input ([`Node::input`]).
    pub subscribes: &'static [&'static Topic],
    /// Subscribed only when a parameter asks for it (an input's other transport).
    pub subscribes_optionally: &'static [&'static Topic],
    /// An ingest node's first publication is its output ([`Node::output`]).
    pub publishes: &'static [&'static Topic],
    /// Published only when a parameter asks for it.
    pub publishes_optionally: &'static [&'static Topic],
    pub serves: &'static [&'static Service],
}

impl Node {
    /// An ingest node's raw input: its first subscription.
    pub const fn input(&self) -> &'static Topic {
        self.subscribes[0]
    }
    /// An ingest node's output: its first publication.
    pub const fn output(&self) -> &'static Topic {
        self.publishes[0]
    }
    /// Every topic the node may use, subscribed or published, optional ones included.
    pub fn topics(&self) -> impl Iterator<Item = &'static Topic> {
        self.subscribes
            .iter()
            .chain(self.subscribes_optionally)
            .chain(self.publishes)
            .chain(self.publishes_optionally)
            .copied()
    }
}

pub const CAMERA_INGEST: Node = Node {
    name: "camera_ingest",
    subscribes: &[&CAMERA_IMAGE, &CAMERA_INFO, &TF_STATIC, &TF],
    subscribes_optionally: &[&CAMERA_IMAGE_COMPRESSED],
    publishes: &[&SENSORS_CAMERA, &SENSORS_CAMERA_INFO, &TF_STATIC, &DIAGNOSTICS],
    publishes_optionally: &[],
    serves: &[],
};
pub const LIDAR_INGEST: Node = Node {
    name: "lidar_ingest",
    subscribes: &[&LIDAR_POINTS, &TF_STATIC, &TF],
    subscribes_optionally: &[],
    publishes: &[&SENSORS_LIDAR, &TF_STATIC, &DIAGNOSTICS],
    publishes_optionally: &[],
    serves: &[],
};
pub const RADAR_INGEST: Node = Node {
    name: "radar_ingest",
    subscribes: &[&RADAR_POINTS, &TF_STATIC, &TF],
    subscribes_optionally: &[],
    publishes: &[&SENSORS_RADAR, &TF_STATIC, &DIAGNOSTICS],
    publishes_optionally: &[],
    serves: &[],
};
pub const IMU_INGEST: Node = Node {
    name: "imu_ingest",
    subscribes: &[&IMU_DATA, &TF_STATIC, &TF],
    subscribes_optionally: &[],
    publishes: &[&SENSORS_IMU, &TF_STATIC, &DIAGNOSTICS],
    publishes_optionally: &[],
    serves: &[],
};
pub const FUSION_NODE: Node = Node {
    name: "fusion_node",
    subscribes: &[
        &SENSORS_CAMERA,
        &SENSORS_CAMERA_INFO,
        &SENSORS_LIDAR,
        &SENSORS_RADAR,
        &SENSORS_IMU,
        &ODOMETRY,
        &TF_STATIC,
        &TF,
    ],
    subscribes_optionally: &[],
    publishes: &[&FUSED_OBJECTS, &MARKERS, &ANOMALY_EVENTS, &TF_STATIC, &DIAGNOSTICS],
    publishes_optionally: &[&CAMERA_BOXES],
    serves: &[],
};
pub const SUMMARIZER: Node = Node {
    name: "summarizer",
    subscribes: &[&ANOMALY_EVENTS],
    subscribes_optionally: &[],
    publishes: &[&SUMMARY, &SUMMARY_DETAILED, &DIAGNOSTICS],
    publishes_optionally: &[&SUMMARY_AUDIO],
    serves: &[&EXPLAIN],
};

/// The node set, in the order data flows.
pub const NODES: &[&Node] = &[&CAMERA_INGEST, &LIDAR_INGEST, &RADAR_INGEST, &IMU_INGEST, &FUSION_NODE, &SUMMARIZER];

/// The README's topic table (between `<!-- graph:begin -->` and `<!-- graph:end -->`).
pub fn markdown_table() -> String {
    let mut rows = vec![
        "| topic | type | QoS | published by | subscribed by | what |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    let mut topics: Vec<&Topic> = vec![];
    for node in NODES {
        for t in node.topics() {
            if t.name != DIAGNOSTICS.name && !topics.iter().any(|x| x.name == t.name) {
                topics.push(t);
            }
        }
    }
    topics.push(&DIAGNOSTICS);
    // The nodes for which `uses` holds, or `outside` (who is outside the node set) when none.
    let names = |uses: &dyn Fn(&Node) -> bool, outside: &str| -> String {
        let v: Vec<String> = NODES.iter().filter(|n| uses(n)).map(|n| format!("`{}`", n.name)).collect();
        if v.is_empty() {
            outside.to_string()
        } else {
            v.join(", ")
        }
    };
    for t in topics {
        let publishers = if t.name == DIAGNOSTICS.name {
            "every node".to_string()
        } else if t.name == TF.name {
            "your robot_state_publisher / a bag".to_string()
        } else {
            names(&|n: &Node| n.publishes.contains(&t) || n.publishes_optionally.contains(&t), "your drivers / a bag")
        };
        let subscribers = names(&|n: &Node| n.subscribes.contains(&t) || n.subscribes_optionally.contains(&t), "you");
        rows.push(format!(
            "| `{}` | `{}` | {} | {} | {} | {} |",
            t.name,
            t.msg_type,
            t.qos.describe(),
            publishers,
            subscribers,
            t.about
        ));
    }
    for node in NODES {
        for s in node.serves {
            rows.push(format!("| `{}` (service) | `{}` | | `{}` | you | {} |", s.name, s.srv_type, node.name, s.about));
        }
    }
    rows.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn root() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    #[test]
    fn every_subscription_has_a_publisher_or_is_a_driver_input() {
        for node in NODES {
            for t in node.subscribes {
                let published = NODES.iter().any(|n| n.publishes.contains(t));
                // /tf is the robot's own tree: every node that places a sensor reads it, none
                // remaps it (tf2's convention), robot_state_publisher and the like send it.
                let input = INPUTS.iter().any(|(i, _)| i == t) || *t == &TF;
                assert!(published ^ input, "{}: {} is neither published in the set nor an input", node.name, t.name);
            }
        }
        // An optional input is another transport of a driver input, named under it as
        // image_transport names them, so remapping the input remaps it too (the launch file).
        for node in NODES {
            for t in node.subscribes_optionally {
                let base = INPUTS.iter().find(|(i, _)| t.name.starts_with(&format!("{}/", i.name)));
                assert!(base.is_some_and(|(i, _)| node.subscribes.contains(i)), "{}: {}", node.name, t.name);
            }
        }
        // Every input is read by exactly one node.
        for (t, _) in INPUTS {
            assert_eq!(NODES.iter().filter(|n| n.subscribes.contains(t)).count(), 1, "{}", t.name);
        }
        // A subscriber asks for no more than its publisher offers (else DDS never matches).
        for node in NODES {
            for t in node.subscribes {
                if let Some(p) = NODES.iter().find(|n| n.publishes.contains(t)) {
                    let offered = p.publishes.iter().find(|x| x.name == t.name).unwrap();
                    assert!(
                        offered.qos.reliability == Reliability::Reliable
                            || t.qos.reliability == Reliability::BestEffort,
                        "{} -> {}: {}",
                        p.name,
                        node.name,
                        t.name
                    );
                }
            }
        }
    }

    #[test]
    fn each_ingest_node_reads_a_driver_input_and_feeds_fusion_node() {
        // ingest::Spec takes an ingest node's input and output by position: keep them first.
        let ingest: Vec<_> = NODES.iter().filter(|n| n.name.ends_with("_ingest")).collect();
        assert_eq!(ingest.len(), 4);
        for node in ingest {
            assert!(INPUTS.iter().any(|(t, _)| *t == node.input()), "{}: {}", node.name, node.input().name);
            assert!(node.output().name.starts_with("sensors/"), "{}: {}", node.name, node.output().name);
            assert!(FUSION_NODE.subscribes.contains(&node.output()), "{}: {}", node.name, node.output().name);
            assert_eq!(node.input().msg_type, node.output().msg_type, "{}", node.name);
        }
    }

    #[test]
    fn message_types_exist() {
        let ours = |kind: &str, ty: &str| {
            let name = ty.rsplit('/').next().unwrap();
            let ext = if kind == "srv" { "srv" } else { "msg" };
            assert!(
                root().join(format!("nodes/fusion_msgs/{kind}/{name}.{ext}")).is_file(),
                "{ty} has no definition in nodes/fusion_msgs"
            );
        };
        for node in NODES {
            for t in node.topics() {
                let parts: Vec<&str> = t.msg_type.split('/').collect();
                assert_eq!((parts.len(), parts[1]), (3, "msg"), "{}", t.msg_type);
                if parts[0] == "fusion_msgs" {
                    ours("msg", t.msg_type);
                }
            }
            for s in node.serves {
                ours("srv", s.srv_type);
            }
        }
    }

    /// The README's topic table is generated from the graph: this fails when they drift, and
    /// `UPDATE_DOCS=1` rewrites it.
    #[test]
    fn the_readme_shows_the_declared_graph() {
        crate::check_generated(
            &root().join("README.md"),
            "<!-- graph:begin -->",
            "<!-- graph:end -->",
            &markdown_table(),
        );
    }
}
