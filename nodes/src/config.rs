//! fusion_node's parameters as one typed struct, [`FusionNodeConfig`]: what the node reads
//! through r2r's derived parameters (its doc comments are what `ros2 param describe`
//! says), what `fusion_replay` and `fusion_sched_bench` read from the same params file
//! (serde, unknown names refused), and what the parameter table of
//! docs/nodes/fusion_node.md is generated from.
//!
//! Defaults live once, in the ROS-free structs the parameters end up in
//! (`PipelineParams`, `SchedConfig`, `RtConfig::NODE`, `DegradeConfig`, `DetectorParams`):
//! [`FusionNodeConfig::default`] is built from them by name, and a test holds every
//! pipeline parameter name to a field here and back.
use crate::detector::DetectorParams;
use anyhow::{bail, Context as _, Result};
use fusion::{
    pipeline::PipelineParams,
    sched::{parse_cpus, parse_ladder, RtConfig, SchedConfig},
};
use r2r::RosParams;
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use std::path::Path;

/// Seconds a node waits at start for `/tf_static` to place its sensors (`tf_wait`).
pub const TF_WAIT_S: f64 = 1.0;

/// Parameters every ROS 2 node has, which a params file may hold for any node: not ours to
/// refuse when a tool reads the file.
const ROS_WIDE: [&str; 3] = ["use_sim_time", "qos_overrides", "start_type_description_service"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct FusionNodeConfig {
    /// Calibration YAML (sensors, mounts, intrinsics, safety zones); "" = the built-in standard robot.
    pub calibration: String,
    /// Seconds at start for /tf_static to place the sensors (0 = do not wait); the rest is latched back on /tf_static.
    pub tf_wait: f64,
    /// edf (the deadline scheduler, fusion::sched) or fifo (one queue, one thread: the baseline).
    pub scheduler: String,
    /// fifo only: messages waiting; overflow drops the oldest (counted). At least 4.
    pub queue_size: i64,
    /// Chrome-trace/Perfetto JSON of every stage run, written at shutdown ("" = off).
    pub trace_file: String,
    /// Also publish fusion/camera_boxes: each set's camera frame with its boxes drawn (RViz; rviz:=true sets it).
    pub annotated_image: bool,
    /// Seconds between /diagnostics messages.
    pub diagnostics_period: f64,
    /// Camera detector: centernet (Burn, models/) or none.
    pub detector: String,
    /// Weights manifest; "" = share/sensor_fusion/models/detector.json (sha256-verified).
    pub detector_weights: String,
    /// false: a missing or corrupted model starts the node degraded (LiDAR and radar, an ERROR event); true: refuse to start.
    pub detector_required: bool,
    /// flex (CPU) or wgpu (GPU; Mesa lavapipe Vulkan without one).
    pub backend: String,
    /// Network input WIDTHxHEIGHT, multiples of 16 (the frame is resampled to it).
    pub input_size: String,
    /// f32, f16 (where the backend supports it) or int8 (3x3 conv weights).
    pub precision: String,
    /// Camera detections scoring below this are not reported by the detector.
    pub detector_score_threshold: f64,
    pub sync: SyncConfig,
    pub deadline: DeadlineConfig,
    pub sched: SchedParams,
    pub degrade: DegradeParams,
    pub lidar: LidarConfig,
    pub tracker: TrackerConfig,
    pub radar: RadarConfig,
    pub camera: CameraConfig,
    pub label: LabelConfig,
    pub ego_speed: EgoSpeedConfig,
    pub monitor: MonitorConfig,
    pub anomaly: AnomalyConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// ms: a camera frame or radar scan joins a LiDAR set within this of its stamp.
    pub tolerance_ms: f64,
    /// ms: an incomplete set is released partial once data this much newer has arrived.
    pub wait_ms: f64,
    /// The LiDAR (calibration key) that leads sets while it delivers ("" = the first by name).
    pub reference: String,
    /// ms: the radar leads sets once the LiDAR has been silent this long.
    pub reference_lost_ms: f64,
    /// ms: period of radar-led sets.
    pub set_period_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// ms after a set's newest member's stamp: the target (misses counted).
    pub target_ms: f64,
    /// ms after a set's newest member's stamp: the hard deadline (never published later: shed before, or withheld, counted).
    pub hard_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct SchedParams {
    /// Latest-wins depth per camera/LiDAR/radar mailbox (superseded messages counted). At least 1.
    pub mailbox_depth: i64,
    /// IMU mailbox depth (every sample feeds the motion buffer). At least 1.
    pub imu_mailbox_depth: i64,
    /// Threads for clustering and radar; the detector has its own thread. At least 1.
    pub cpu_workers: i64,
    /// Shed sets (and leave out the detector) when measured p99s say the hard deadline would be missed.
    pub admission: bool,
    /// OS scheduling of the scheduler's threads: other, fifo or rr (falls back to other, one warning, without CAP_SYS_NICE).
    pub policy: String,
    /// Real-time priority of the fusion thread (1 … 99); inference and CPU workers get one less.
    pub priority: i64,
    /// CPU affinity of the scheduler's threads, e.g. "2,3" ("" = any).
    pub cpus: String,
    /// Lock the process's memory (needs CAP_IPC_LOCK).
    pub mlockall: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct DegradeParams {
    /// Comma-separated rungs in the order they engage ("" = never degrade).
    pub ladder: String,
    /// Decisions once per this many finished sets. At least 1.
    pub window: i64,
    /// ms: one rung down when the window's worst slack to the target deadline is below this, or a set was shed.
    pub engage_slack_ms: f64,
    /// ms: one rung up after recover_windows windows with worst slack above this (above engage_slack_ms).
    pub recover_slack_ms: f64,
    /// Windows above recover_slack_ms before a rung up. At least 1.
    pub recover_windows: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct LidarConfig {
    /// m: returns beyond this (horizontal) are not clustered.
    pub cluster_range: f64,
    /// m: horizontal connectivity voxel.
    pub voxel: f64,
    /// m: vertical connectivity voxel.
    pub voxel_z: f64,
    /// Returns a cluster needs.
    pub min_points: i64,
    /// m above the lowest return of a 2 m cell: below is ground.
    pub ground_threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// Association gate (Mahalanobis).
    pub gate: f64,
    /// Process noise, m/s².
    pub accel_sigma: f64,
    /// Measurement noise, m.
    pub meas_sigma: f64,
    /// Hits before a track is confirmed.
    pub confirm_hits: i64,
    /// Misses before a track is dropped.
    pub max_misses: i64,
    /// Confirmed tracks coast this many sets on /fusion/objects.
    pub publish_max_misses: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct RadarConfig {
    /// m: targets closer than this join one object ...
    pub eps: f64,
    /// m/s: ... and with Doppler closer than this.
    pub eps_doppler: f64,
    /// m: a radar object confirms a LiDAR box within its half extent + this.
    pub margin: f64,
    /// Without LiDAR, radar objects of this many targets are tracked.
    pub min_targets: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// IoU of a camera box and a projected LiDAR box for the camera to name its class.
    pub min_iou: f64,
    /// Camera boxes scoring below this are ignored.
    pub min_score: f64,
    /// A camera box this much inside a known object's projection is part of it (not a disagreement).
    pub explained_overlap: f64,
    /// every_frame, or event_driven: the detector runs when an object enters or moves in view, the camera owes a label, the image changes, or keep-alive passed.
    pub detector_mode: String,
    /// ms, event_driven: run at least this often.
    pub detector_keep_alive_ms: f64,
    /// event_driven: mean change of the coarse luma grid (0-255) that counts as a new scene.
    pub detector_image_change: f64,
    /// m, event_driven: an object in view that moved this far over the ground since the last run is looked at again.
    pub detector_moved_m: f64,
    /// event_driven: an object is looked at every frame until the camera's own class votes for it add up to this.
    pub detector_settled_votes: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    /// m: a box with a longer horizontal side is no person.
    pub person_max_footprint: f64,
    /// m: a box whose top is higher above the ground is no person.
    pub person_max_height: f64,
    /// m: a lower box's person vote counts undersized_weight.
    pub person_min_height: f64,
    /// m: a smaller box's vehicle vote counts undersized_weight.
    pub vehicle_min_footprint: f64,
    /// m: a taller box is no vehicle.
    pub vehicle_max_height: f64,
    /// m: a box with a longer horizontal side is no obstacle.
    pub obstacle_max_footprint: f64,
    /// m: a taller box is no obstacle.
    pub obstacle_max_height: f64,
    /// m: slack on the upper bounds.
    pub size_margin: f64,
    /// Boxes of fewer returns are not judged undersized.
    pub min_points: i64,
    /// Weight of a camera vote for a class the box is too small for (it may be partly hidden).
    pub undersized_weight: f64,
    /// m/s: a track this fast over the ground is no obstacle.
    pub moving_speed: f64,
    /// m/s: a track faster than this over the ground is no person.
    pub person_max_speed: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct EgoSpeedConfig {
    /// s: radar sweeps this recent vote together for the ego's speed (without odometry).
    pub window_s: f64,
    /// m/s: returns within ± this of a common speed ...
    pub tolerance: f64,
    /// m: ... from at least min_cells distinct cells of this size (the static world is everywhere, a moving car in one place).
    pub cell_m: f64,
    /// Distinct cells an estimate needs.
    pub min_cells: i64,
    /// s: an estimate is kept this long without a new one.
    pub hold_s: f64,
    /// m/s²: the next estimate is looked for within this acceleration of the held one.
    pub max_accel: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Camera frames judged together (model monitoring).
    pub window_frames: i64,
    /// model_degraded when this share of the window is outside the manifest's training ranges ...
    pub out_of_range_share: f64,
    /// ... or the camera finds fewer than this share of the LiDAR and radar objects in view ...
    pub min_agreement: f64,
    /// ... with at least this many such objects in the window.
    pub min_checks: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// s: collision_risk below this time to collision.
    pub ttc_threshold_s: f64,
    /// m: half width of the ego lane collision_risk looks in.
    pub lane_half_width: f64,
    /// m/s: collision_risk only for objects closing faster than this.
    pub min_closing_speed: f64,
    /// s: collision_risk re-arms above the threshold + this.
    pub ttc_clear_margin_s: f64,
    /// sensor_dropout after this many expected periods of silence ...
    pub dropout_periods: f64,
    /// s: ... and never under this (a 200 Hz IMU's 15 ms is scheduling jitter).
    pub dropout_min_silence_s: f64,
    /// s: back once steady this long; silences until then are one outage (a flapping link).
    pub dropout_recovery_s: f64,
    /// s: a declared sensor silent this long after the others started is in dropout (0 = never).
    pub never_started_s: f64,
    /// sensor_degraded: mean luma below this (0-255), ...
    pub blind_dark: f64,
    /// ... or above this, ...
    pub blind_bright: f64,
    /// ... with less spread than this.
    pub blind_max_std: f64,
    /// Blinded camera frames in a row for sensor_degraded.
    pub degraded_frames: i64,
    /// Identical camera frames in a row for sensor_degraded (frozen).
    pub frozen_frames: i64,
    /// sensor_degraded when a LiDAR sweep holds more than this share of NaN/Inf points.
    pub lidar_max_non_finite_ratio: f64,
    /// m/s²: sensor_degraded when an IMU axis reads this much (saturated).
    pub imu_saturation_accel: f64,
    /// m/s²: impact when the specific force beyond gravity exceeds this (3 g).
    pub impact_accel: f64,
    /// s: no second impact event within this.
    pub impact_refractory_s: f64,
    /// sensor_disagreement after this many camera frames.
    pub disagreement_frames: i64,
    /// m: sensor_disagreement looks at objects within this range ...
    pub disagreement_range: f64,
    /// px: ... and at camera boxes at least this tall (smaller ones are beyond LiDAR's reach).
    pub disagreement_min_box_px: f64,
    /// deadline_overrun above this share of hard misses ...
    pub deadline_miss_ratio: f64,
    /// ... over this many sets.
    pub deadline_window: i64,
}

/// A node's parameters as one typed struct: serde reads and writes it (params files, the
/// tools), r2r's derived parameters declare it on the node, and its doc comments are what
/// `ros2 param describe` and the node's page say.
pub trait NodeConfig: Default + Clone + Serialize + serde::de::DeserializeOwned + RosParams {
    /// The node's name, as params-file blocks name it.
    const NODE: &'static str;

    /// Whether `ros2 param set` changes `name` on the running node.
    fn is_live(_name: &str) -> bool {
        false
    }

    /// Whether a number given for the count `name` is taken rounded (the node always took
    /// `tracker.confirm_hits: 3.0` as 3); other counts refuse a non-integer.
    fn rounds(_name: &str) -> bool {
        false
    }

    /// Whether `name`, given to this node but not one of its parameters, is expected there
    /// (the launch file hands every ingest node the same arguments) rather than a mistake.
    fn tolerated(_name: &str) -> bool {
        false
    }

    /// This config's parameters, as r2r registers them (names, values, descriptions).
    fn clone_registered(&self, into: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>) {
        self.clone().register_parameters("", None, into).expect("a config registers");
    }
    /// Every parameter by its dotted name with its value, in declaration order.
    fn flat(&self) -> Vec<(String, Value)> {
        let mut out = vec![];
        crate::ros::flatten_params("", &serde_norway::to_value(self).expect("a plain struct"), &mut out);
        out
    }

    /// The node's blocks of a ROS 2 params file (`/**`, `/**/NODE`, `NODE`, each
    /// `ros__parameters`), applied in order over the defaults, as the node applies them. A
    /// name this node does not have is an error in a block for this node (a typo would
    /// otherwise pass unnoticed) and is passed over in a `/**` block (meant for every node);
    /// so are the parameters every ROS node has (`use_sim_time` …). A value of the wrong
    /// type is an error naming the parameter.
    fn from_params_file(path: &Path) -> Result<Self> {
        let node = Self::NODE;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let doc: Value = serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
        let Some(blocks) = doc.as_mapping() else { bail!("{}: expected a mapping of node names", path.display()) };
        let defaults = Self::default().flat();
        let mut tree = match serde_norway::to_value(Self::default()) {
            Ok(Value::Mapping(m)) => m,
            _ => unreachable!("a struct serializes to a mapping"),
        };
        for (key, block) in blocks {
            let key = key.as_str().unwrap_or("");
            let for_every_node = key == "/**" || key == "**";
            if !for_every_node && key.trim_start_matches('/').rsplit('/').next() != Some(node) {
                continue;
            }
            let Some(p) = block.get("ros__parameters") else { continue };
            let mut flat = vec![];
            crate::ros::flatten_params("", p, &mut flat);
            for (name, v) in flat {
                let Some((_, default)) = defaults.iter().find(|(n, _)| *n == name) else {
                    if for_every_node || is_ros_wide(&name) {
                        continue;
                    }
                    bail!("{}: '{name}' is not a {node} parameter", path.display());
                };
                let v = typed_like(default, v, Self::rounds(&name))
                    .map_err(|why| anyhow::anyhow!("{}: parameter {name} {why}", path.display()))?;
                put(&mut tree, &name, v);
            }
        }
        let config: Self =
            serde_norway::from_value(Value::Mapping(tree)).with_context(|| format!("{}", path.display()))?;
        config.validate().with_context(|| format!("{}: {node}", path.display()))?;
        Ok(config)
    }

    /// The checks the node makes before it starts (ranges, words, consistency), naming the
    /// parameter: the same for the node and for a tool reading its params file.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// The parameter table of the node's page (docs/nodes/NODE.md): every parameter, its
    /// type, default, whether it is live, and its meaning (the field's doc comment, as
    /// `ros2 param describe` says it).
    fn markdown_table() -> String {
        Self::markdown_table_where(|_| true)
    }

    /// The values `name` takes beyond its type, as the node checks them ("" when its
    /// meaning says it).
    fn range(_name: &str) -> &'static str {
        ""
    }

    /// [`Self::markdown_table`] of the parameters `keep` names.
    fn markdown_table_where(keep: impl Fn(&str) -> bool) -> String {
        let mut registered = r2r::indexmap::IndexMap::new();
        Self::default().register_parameters("", None, &mut registered).expect("the defaults register");
        let mut t =
            String::from("| parameter | type | default | range | live | meaning |\n|---|---|---|---|---|---|\n");
        for (name, p) in registered.iter().filter(|(name, _)| keep(name)) {
            let (ty, default) = match &p.value {
                r2r::ParameterValue::Bool(b) => ("bool", b.to_string()),
                r2r::ParameterValue::Integer(i) => ("integer", i.to_string()),
                r2r::ParameterValue::Double(x) => ("double", format!("{x:?}")),
                r2r::ParameterValue::String(s) => ("string", format!("\"{s}\"")),
                r2r::ParameterValue::DoubleArray(v) => ("double array", format!("{v:?}")),
                other => ("other", format!("{other:?}")),
            };
            let live = if Self::is_live(name) { "yes" } else { "" };
            let range = Self::range(name);
            let meaning = p.description.trim().replace('|', "\\|");
            t += &format!("| `{name}` | {ty} | `{default}` | {range} | {live} | {meaning} |\n");
        }
        t
    }
}

/// `tf_wait`, checked where every node reads it.
pub fn check_tf_wait(v: f64) -> Result<()> {
    if !(0.0..=60.0).contains(&v) {
        bail!("parameter tf_wait must be 0 .. 60 seconds, got {v}");
    }
    Ok(())
}

/// A double parameter must be finite (a NaN or infinity means nothing in any of ours).
fn finite(name: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        bail!("parameter {name} must be a finite number, got {v}");
    }
    Ok(())
}

/// Whether `name` is a parameter every ROS 2 node has (`use_sim_time`, `qos_overrides.…`).
pub fn is_ros_wide(name: &str) -> bool {
    ROS_WIDE.iter().any(|w| name == *w || name.starts_with(&format!("{w}.")))
}

/// Sets `name` (dotted) in a nested mapping.
fn put(tree: &mut Mapping, name: &str, value: Value) {
    match name.split_once('.') {
        None => {
            tree.insert(name.into(), value);
        }
        Some((section, rest)) => {
            let entry = tree.entry(section.into()).or_insert_with(|| Value::Mapping(Mapping::new()));
            if let Value::Mapping(m) = entry {
                put(m, rest, value);
            }
        }
    }
}

/// A measure as the file would write it: an f32-held value (`camera.min_iou` 0.2) reads
/// 0.2, not 0.20000000298.
fn measure(v: f64) -> Value {
    let single = v as f32;
    let v = if single as f64 == v { single.to_string().parse().unwrap_or(v) } else { v };
    Value::from(v)
}

impl Default for FusionNodeConfig {
    fn default() -> Self {
        Self::from_runtime(&PipelineParams::default(), &DetectorParams::default(), &SchedConfig::default())
    }
}

impl FusionNodeConfig {
    /// The parameters that give these runtime settings (the defaults: from each one's
    /// `Default`, the scheduler's OS policy and priority from `RtConfig::NODE`).
    fn from_runtime(p: &PipelineParams, d: &DetectorParams, s: &SchedConfig) -> Self {
        let mut tree = Mapping::new();
        put(&mut tree, "calibration", "".into());
        put(&mut tree, "tf_wait", TF_WAIT_S.into());
        put(&mut tree, "scheduler", "edf".into());
        put(&mut tree, "queue_size", (s.fifo_depth as i64).into());
        put(&mut tree, "trace_file", "".into());
        put(&mut tree, "annotated_image", false.into());
        put(&mut tree, "diagnostics_period", 1.0.into());
        put(&mut tree, "detector", d.detector.clone().into());
        put(&mut tree, "detector_weights", d.weights.clone().into());
        put(&mut tree, "detector_required", false.into());
        put(&mut tree, "backend", d.backend.clone().into());
        put(&mut tree, "input_size", d.input_size.clone().into());
        put(&mut tree, "precision", d.precision.clone().into());
        put(&mut tree, "detector_score_threshold", d.score_threshold.into());
        put(&mut tree, "sched.mailbox_depth", (s.mailbox_depth as i64).into());
        put(&mut tree, "sched.imu_mailbox_depth", (s.imu_mailbox_depth as i64).into());
        put(&mut tree, "sched.cpu_workers", (s.cpu_workers as i64).into());
        put(&mut tree, "sched.admission", s.admission.into());
        let node = RtConfig::NODE;
        put(&mut tree, "sched.policy", node.policy.as_str().into());
        put(&mut tree, "sched.priority", (node.priority as i64).into());
        put(&mut tree, "sched.cpus", "".into());
        put(&mut tree, "sched.mlockall", s.rt.mlockall.into());
        let ladder: Vec<&str> = s.degrade.ladder.iter().map(|r| r.name()).collect();
        put(&mut tree, "degrade.ladder", ladder.join(",").into());
        put(&mut tree, "degrade.window", (s.degrade.window as i64).into());
        put(&mut tree, "degrade.engage_slack_ms", measure(s.degrade.engage_slack_ns as f64 / 1e6));
        put(&mut tree, "degrade.recover_slack_ms", measure(s.degrade.recover_slack_ns as f64 / 1e6));
        put(&mut tree, "degrade.recover_windows", (s.degrade.recover_windows as i64).into());
        for &name in PipelineParams::NAMES {
            let v = p.get(name).expect("a named parameter");
            let v = if PipelineParams::is_integer(name) { Value::from(v as i64) } else { measure(v) };
            put(&mut tree, name, v);
        }
        for name in PipelineParams::WORD_NAMES {
            put(&mut tree, name, p.get_word(name).expect("a named parameter").into());
        }
        serde_norway::from_value(Value::Mapping(tree)).expect("every fusion_node parameter has a runtime default")
    }

    /// The pipeline's parameters (every `sync.*`, `deadline.*`, `lidar.*` … `anomaly.*`),
    /// checked as `PipelineParams::set` checks them.
    pub fn pipeline(&self) -> Result<PipelineParams> {
        let mut p = PipelineParams::default();
        for (name, v) in self.flat() {
            if PipelineParams::NAMES.contains(&name.as_str()) {
                let x = v.as_f64().with_context(|| format!("parameter {name} must be a number"))?;
                p.set(&name, x).map_err(anyhow::Error::msg).with_context(|| format!("parameter {name}"))?;
            } else if PipelineParams::WORD_NAMES.contains(&name.as_str()) {
                let word = v.as_str().with_context(|| format!("parameter {name} must be a string"))?;
                p.set_word(&name, word).map_err(anyhow::Error::msg).with_context(|| format!("parameter {name}"))?;
            }
        }
        Ok(p)
    }

    /// The camera detector's parameters.
    pub fn detector(&self) -> DetectorParams {
        DetectorParams {
            detector: self.detector.clone(),
            weights: self.detector_weights.clone(),
            backend: self.backend.clone(),
            input_size: self.input_size.clone(),
            precision: self.precision.clone(),
            score_threshold: self.detector_score_threshold,
        }
    }

    /// The scheduler: `scheduler` (edf or fifo) and its configuration (`queue_size`,
    /// `sched.*`, `degrade.*`; `trace_file` sizes the trace).
    pub fn sched(&self) -> Result<(String, SchedConfig)> {
        let mut c = SchedConfig::default();
        let mode = self.scheduler.clone();
        if mode != "edf" && mode != "fifo" {
            bail!("parameter scheduler: '{mode}' is not a scheduler (edf or fifo)");
        }
        let count = |name: &str, v: i64| -> Result<usize> {
            usize::try_from(v).map_err(|_| anyhow::anyhow!("parameter {name} must be >= 0, got {v}"))
        };
        let s = &self.sched;
        c.fifo_depth = count("queue_size", self.queue_size)?.max(4);
        c.mailbox_depth = count("sched.mailbox_depth", s.mailbox_depth)?.max(1);
        c.imu_mailbox_depth = count("sched.imu_mailbox_depth", s.imu_mailbox_depth)?.max(1);
        c.cpu_workers = count("sched.cpu_workers", s.cpu_workers)?.max(1);
        c.admission = s.admission;
        c.rt.policy = s.policy.parse().map_err(anyhow::Error::msg).context("parameter sched.policy")?;
        c.rt.priority = count("sched.priority", s.priority)?.clamp(1, 99) as i32;
        c.rt.cpus = parse_cpus(&s.cpus).map_err(anyhow::Error::msg).context("parameter sched.cpus")?;
        c.rt.mlockall = s.mlockall;
        let d = &self.degrade;
        c.degrade.ladder = parse_ladder(&d.ladder).map_err(anyhow::Error::msg).context("parameter degrade.ladder")?;
        c.degrade.window = count("degrade.window", d.window)?.max(1) as u32;
        for (name, v) in
            [("degrade.engage_slack_ms", d.engage_slack_ms), ("degrade.recover_slack_ms", d.recover_slack_ms)]
        {
            if !v.is_finite() {
                bail!("parameter {name} must be a finite number, got {v}");
            }
        }
        c.degrade.engage_slack_ns = (d.engage_slack_ms * 1e6) as i64;
        c.degrade.recover_slack_ns = (d.recover_slack_ms * 1e6) as i64;
        c.degrade.recover_windows = count("degrade.recover_windows", d.recover_windows)?.max(1) as u32;
        if c.degrade.recover_slack_ns <= c.degrade.engage_slack_ns {
            bail!("parameter degrade.recover_slack_ms must be above degrade.engage_slack_ms (hysteresis)");
        }
        if !self.trace_file.is_empty() {
            // The newest ~10 minutes of stage runs at nominal rates (~80 B each).
            c.trace_capacity = 200_000;
        }
        Ok((mode, c))
    }

    /// Everything the node checks before it starts, so that a bad value fails at once.
    pub fn check(&self) -> Result<()> {
        // The detector's own parameters are checked when it loads: a bad one with
        // `detector_required` false starts the node degraded, as before.
        self.pipeline()?;
        self.sched()?;
        check_tf_wait(self.tf_wait)?;
        finite("diagnostics_period", self.diagnostics_period)
    }
}

impl NodeConfig for FusionNodeConfig {
    const NODE: &'static str = "fusion_node";

    fn validate(&self) -> Result<()> {
        self.check()
    }

    fn is_live(name: &str) -> bool {
        fusion::pipeline::Pipeline::is_live_param(name)
    }

    fn rounds(name: &str) -> bool {
        PipelineParams::is_integer(name)
    }

    fn range(name: &str) -> &'static str {
        // PipelineParams::set's check.
        match PipelineParams::NAMES.contains(&name) {
            true => "≥ 0",
            false => "",
        }
    }
}

/// The summarizer node's parameters (config/summarizer.yaml). Every one is read at start;
/// `ros2 param set` is refused with that reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct SummarizerNodeConfig {
    /// GGUF file; "" = share/sensor_fusion/models/SmolLM2-135M-Instruct.Q4_1.gguf (else the source tree's .cache/llm/).
    pub model: String,
    /// default: the shipped file's sha256 when model is "", no check for another path; "": no check; else the required hex sha256.
    pub model_sha256: String,
    /// flex (CPU) or wgpu (GPU; Mesa lavapipe Vulkan without one).
    pub backend: String,
    /// "" = quantized on flex (ggml blocks, the CPU decoder), dequantized on wgpu (f32 Burn tensors); or quantized | dequantized.
    pub weights: String,
    /// Threads of the CPU decoder (quantized weights on flex); 0 = every core the process may use (its affinity / cgroup).
    pub threads: i64,
    /// Seconds per summary (prompt and answer); past it the template summary is published (fallback).
    pub deadline: f64,
    /// Generated tokens per summary (at least 1).
    pub max_tokens: i64,
    /// Seconds: events within this of a burst's first share one summary.
    pub coalesce_window: f64,
    /// Events one summary covers at most (at least 1); the rest of a burst starts the next.
    pub max_events_per_summary: i64,
    /// 0 = greedy; above 0 the first answer is a top-p sample at this temperature, seeded.
    pub temperature: f64,
    /// Top-p of the sampled first answer (temperature above 0).
    pub top_p: f64,
    /// Seed of the sampled first answer.
    pub seed: i64,
    /// Answers tried within the deadline until the claim verifier accepts one (1 … 16; per event with per_event): the first as sampled above, then top-p samples seeded by the event ids.
    pub candidates: i64,
    /// A burst of several events is written one sentence per event, decoded together, each verified against its event, instead of in one answer.
    pub per_event: bool,
    /// Events waiting for the model (at least 1); overflow gets template summaries (counted).
    pub queue_size: i64,
    /// SCHED_IDLE and nice 19 for the whole process.
    pub lowest_priority: bool,
    /// Seconds between /diagnostics messages.
    pub diagnostics_period: f64,
    /// Newest events /anomaly/explain can answer for (at least 1).
    pub explain_history: i64,
    /// Seconds the model may take to explain; past it the deterministic explanation.
    pub explain_deadline: f64,
    /// Speak each published summary with espeak-ng into a WAV file (its path on /anomaly/summary_audio_path).
    pub speak: bool,
    /// Where the WAV files go; "" = $ROS_HOME/sensor_fusion/speech (~/.ros/...). Created; a start-up error when it cannot be written.
    pub speak_dir: String,
    /// espeak-ng voice (espeak-ng --voices).
    pub speak_voice: String,
    /// Words per minute, 80 … 450.
    pub speak_rate: i64,
    /// Newest summary_*.wav files kept in speak_dir (at least 1); older ones are deleted.
    pub speak_keep_files: i64,
    /// Also play each file when the machine has an ALSA playback device and aplay/paplay.
    pub speak_play: bool,
    /// Journal accepted events until summarized, so a respawned summarizer still summarizes them.
    pub persist_pending: bool,
    /// Where the journal lives (one file per fully qualified node name); "" = $ROS_HOME/sensor_fusion/summarizer.
    pub state_dir: String,
}

impl Default for SummarizerNodeConfig {
    fn default() -> Self {
        let service = models::llm::summary::SummarizerConfig::default();
        Self {
            model: String::new(),
            model_sha256: "default".into(),
            backend: "flex".into(),
            weights: String::new(),
            threads: 0,
            deadline: 2.0,
            max_tokens: 48,
            coalesce_window: 1.0,
            max_events_per_summary: 8,
            temperature: 0.0,
            top_p: 0.9,
            seed: 0,
            candidates: service.candidates as i64,
            per_event: service.per_event,
            queue_size: 32,
            lowest_priority: true,
            diagnostics_period: 1.0,
            explain_history: 1000,
            explain_deadline: 5.0,
            speak: false,
            speak_dir: String::new(),
            speak_voice: "en".into(),
            speak_rate: 170,
            speak_keep_files: 200,
            speak_play: true,
            persist_pending: true,
            state_dir: String::new(),
        }
    }
}

impl NodeConfig for SummarizerNodeConfig {
    const NODE: &'static str = "summarizer";

    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl SummarizerNodeConfig {
    /// Everything the node checks before it starts, naming the parameter.
    pub fn check(&self) -> Result<()> {
        if !(self.deadline > 0.0) || !self.deadline.is_finite() {
            bail!("parameter deadline must be > 0 s, got {}", self.deadline);
        }
        for (name, v) in [
            ("coalesce_window", self.coalesce_window),
            ("diagnostics_period", self.diagnostics_period),
            ("temperature", self.temperature),
            ("top_p", self.top_p),
        ] {
            finite(name, v)?;
        }
        // Seconds the node turns into a Duration.
        crate::seconds("parameter explain_deadline", self.explain_deadline)?;
        for (name, v) in [
            ("threads", self.threads),
            ("max_tokens", self.max_tokens),
            ("max_events_per_summary", self.max_events_per_summary),
            ("queue_size", self.queue_size),
            ("explain_history", self.explain_history),
            ("speak_rate", self.speak_rate),
            ("speak_keep_files", self.speak_keep_files),
        ] {
            if v < 0 {
                bail!("parameter {name} must be >= 0, got {v}");
            }
        }
        Ok(())
    }
}

/// The parameters every ingest node has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
pub struct IngestCommon {
    /// The declared sensor this node serves: its calibration key and its sensors/<name> topic (default: the node's kind).
    pub sensor: String,
    /// Calibration YAML (docs/calibration.md); "" = the built-in standard robot.
    pub calibration: String,
    /// Seconds at start for /tf_static and /tf to place this node's sensor (0 … 60; 0 = do not wait); else the calibration's mount.
    pub tf_wait: f64,
    /// Messages waiting for the worker (at least 1); on overflow the oldest is dropped and counted.
    pub queue_size: i64,
    /// Seconds between /diagnostics messages.
    pub diagnostics_period: f64,
    /// DDS history depth of the input subscription (at least 1).
    pub input_depth: i64,
    /// Input QoS: best_effort (sensor-data QoS; every publisher matches) or reliable (DDS repairs losses; only reliable publishers match).
    pub input_reliability: String,
}

impl IngestCommon {
    /// The defaults of the node `spec` describes.
    pub fn of(spec: &crate::ingest::Spec) -> Self {
        Self {
            sensor: spec.sensor.as_str().into(),
            calibration: String::new(),
            tf_wait: TF_WAIT_S,
            queue_size: spec.queue_size as i64,
            diagnostics_period: 1.0,
            input_depth: spec.node.input().qos.depth as i64,
            input_reliability: "best_effort".into(),
        }
    }
}

/// An ingest node's parameters: the common ones and its own, side by side (one flat
/// namespace, as config/ingest.yaml writes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestNodeConfig<S> {
    #[serde(flatten)]
    pub common: IngestCommon,
    #[serde(flatten)]
    pub own: S,
}

impl<S: RosParams> RosParams for IngestNodeConfig<S> {
    fn register_parameters(
        &mut self,
        prefix: &str,
        param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        // The flat namespace has no parent parameter to describe.
        let _ = param;
        self.common.register_parameters(prefix, None, params)?;
        self.own.register_parameters(prefix, None, params)
    }
    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        self.common.get_parameter(name).or_else(|_| self.own.get_parameter(name))
    }
    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        match self.common.get_parameter(name) {
            Ok(_) => self.common.set_parameter(name, value),
            Err(_) => self.own.set_parameter(name, value),
        }
    }
    fn check_parameter(&self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        match self.common.check_parameter(name, value) {
            Err(r2r::Error::InvalidParameterName { .. }) => self.own.check_parameter(name, value),
            other => other,
        }
    }
}

/// A ROS-free number-parameter struct (`fusion::cloud::NumberParams`: the LiDAR and radar
/// filters) as r2r parameters: its schema's names, meanings and ranges.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Numbers<P>(pub P);

impl<P: fusion::cloud::NumberParams + Clone> RosParams for Numbers<P> {
    fn register_parameters(
        &mut self,
        prefix: &str,
        _param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        let dot = if prefix.is_empty() { String::new() } else { format!("{prefix}.") };
        for spec in P::SCHEMA {
            let name = format!("{dot}{}", spec.name);
            if let Some(given) = params.shift_remove(&name) {
                self.set_parameter(spec.name, &given.value).map_err(|e| e.update_param_name(&name))?;
            }
            let value = r2r::ParameterValue::Double(self.0.get(spec.name).expect("a named parameter"));
            params.insert(name, r2r::Parameter { value, description: spec.description });
        }
        Ok(())
    }
    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        self.0
            .get(name)
            .map(r2r::ParameterValue::Double)
            .ok_or_else(|| r2r::Error::InvalidParameterName { name: name.into() })
    }
    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        let mut checked = self.0.clone();
        Self::apply(&mut checked, name, value)?;
        self.0 = checked;
        Ok(())
    }
    fn check_parameter(&self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        Self::apply(&mut self.0.clone(), name, value)
    }
}

impl<P: fusion::cloud::NumberParams> Numbers<P> {
    fn apply(p: &mut P, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        if p.get(name).is_none() {
            return Err(r2r::Error::InvalidParameterName { name: name.into() });
        }
        let v = crate::ros::number(value)
            .ok_or_else(|| r2r::Error::InvalidParameterType { name: name.into(), ty: "Double" })?;
        p.set(name, v).map_err(|msg| r2r::Error::ParameterValueConv { name: name.into(), msg })
    }
}

/// Three numbers (an IMU bias) as one double-array parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Vec3(pub [f64; 3]);

impl Vec3 {
    fn from_value(name: &str, value: &r2r::ParameterValue) -> r2r::Result<Self> {
        let v: Vec<f64> = match value {
            r2r::ParameterValue::DoubleArray(v) => v.clone(),
            r2r::ParameterValue::IntegerArray(v) => v.iter().map(|&x| x as f64).collect(),
            _ => return Err(r2r::Error::InvalidParameterType { name: name.into(), ty: "DoubleArray" }),
        };
        match <[f64; 3]>::try_from(v) {
            Ok(a) if a.iter().all(|x| x.is_finite()) => Ok(Vec3(a)),
            _ => Err(r2r::Error::ParameterValueConv { name: name.into(), msg: "must be 3 finite numbers".into() }),
        }
    }
}

impl RosParams for Vec3 {
    fn register_parameters(
        &mut self,
        prefix: &str,
        param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        if let Some(given) = params.shift_remove(prefix) {
            *self = Self::from_value(prefix, &given.value)?;
        }
        let mut p = param.unwrap_or_else(|| r2r::Parameter::new(r2r::ParameterValue::NotSet));
        p.value = r2r::ParameterValue::DoubleArray(self.0.to_vec());
        params.insert(prefix.to_string(), p);
        Ok(())
    }
    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        match name {
            "" => Ok(r2r::ParameterValue::DoubleArray(self.0.to_vec())),
            _ => Err(r2r::Error::InvalidParameterName { name: name.into() }),
        }
    }
    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        self.check_parameter(name, value)?;
        *self = Self::from_value(name, value)?;
        Ok(())
    }
    fn check_parameter(&self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        if !name.is_empty() {
            return Err(r2r::Error::InvalidParameterName { name: name.into() });
        }
        Self::from_value(name, value).map(|_| ())
    }
}

/// camera_ingest's own parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
pub struct CameraOptions {
    /// raw reads image_raw; compressed reads image_raw/compressed (JPEG or PNG) instead, as image_transport names it.
    pub image_transport: String,
    /// Scale the image (bilinear, aspect kept) to fit within this width; 0 = keep the input size. The published CameraInfo is scaled alike.
    pub output_width: i64,
    /// Scale the image to fit within this height; 0 = keep the input size.
    pub output_height: i64,
}

/// imu_ingest's own parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
pub struct ImuOptions {
    /// rad/s, subtracted from the readings (sensor frame).
    pub gyro_bias: Vec3,
    /// m/s², subtracted from the readings (sensor frame).
    pub accel_bias: Vec3,
    /// m/s²: readings at or beyond count as samples.saturated (still published).
    pub accel_saturation: f64,
    /// rad/s: readings at or beyond count as samples.saturated (still published).
    pub gyro_saturation: f64,
    /// Accelerometer weight per sample in the complementary filter.
    pub filter_gain: f64,
}

impl ImuOptions {
    pub fn params(&self) -> fusion::imu::ImuParams {
        fusion::imu::ImuParams {
            gyro_bias: self.gyro_bias.0,
            accel_bias: self.accel_bias.0,
            accel_saturation: self.accel_saturation,
            gyro_saturation: self.gyro_saturation,
            filter_gain: self.filter_gain,
        }
    }
}

pub type LidarIngestConfig = IngestNodeConfig<Numbers<fusion::cloud::LidarParams>>;
pub type RadarIngestConfig = IngestNodeConfig<Numbers<fusion::cloud::RadarParams>>;
pub type CameraIngestConfig = IngestNodeConfig<CameraOptions>;
pub type ImuIngestConfig = IngestNodeConfig<ImuOptions>;

macro_rules! ingest_node_config {
    ($config:ty, $spec:expr, $own:expr) => {
        impl Default for $config {
            fn default() -> Self {
                Self { common: IngestCommon::of(&$spec), own: $own }
            }
        }
        impl NodeConfig for $config {
            const NODE: &'static str = $spec.node.name;
            fn is_live(name: &str) -> bool {
                <$config as IngestLive>::live(name)
            }
            fn range(name: &str) -> &'static str {
                <$config as IngestLive>::range(name)
            }
            fn validate(&self) -> Result<()> {
                self.common.check()?;
                <$config as IngestLive>::check_own(self)
            }
            fn tolerated(name: &str) -> bool {
                is_an_ingest_parameter(name)
            }
        }
        impl IngestConfig for $config {
            fn common(&self) -> &IngestCommon {
                &self.common
            }
        }
    };
}

/// Whether any of the four ingest nodes has `name` (the launch file's sensor include hands
/// each the arguments of every kind, `image_transport` to a LiDAR's node too).
fn is_an_ingest_parameter(name: &str) -> bool {
    let has = |flat: Vec<(String, Value)>| flat.into_iter().any(|(n, _)| n == name);
    has(CameraIngestConfig::default().flat())
        || has(LidarIngestConfig::default().flat())
        || has(RadarIngestConfig::default().flat())
        || has(ImuIngestConfig::default().flat())
}

/// An ingest node's config: the common parameters and its own.
pub trait IngestConfig: NodeConfig {
    fn common(&self) -> &IngestCommon;
}

/// Which of an ingest node's parameters `ros2 param set` changes while it runs: the LiDAR
/// and radar filters.
trait IngestLive {
    fn live(_name: &str) -> bool {
        false
    }
    fn range(_name: &str) -> &'static str {
        ""
    }
    /// The node's own parameters' checks.
    fn check_own(&self) -> Result<()>;
}
impl<P: fusion::cloud::NumberParams> IngestLive for IngestNodeConfig<Numbers<P>> {
    fn live(name: &str) -> bool {
        P::spec(name).is_some()
    }
    fn range(name: &str) -> &'static str {
        P::spec(name).map_or("", |s| s.range.text())
    }
    fn check_own(&self) -> Result<()> {
        for spec in P::SCHEMA {
            let v = self.own.0.get(spec.name).expect("a named parameter");
            P::default()
                .set(spec.name, v)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("parameter {}", spec.name))?;
        }
        Ok(())
    }
}
impl IngestLive for CameraIngestConfig {
    fn check_own(&self) -> Result<()> {
        for (name, v) in [("output_width", self.own.output_width), ("output_height", self.own.output_height)] {
            if !(0..=fusion::camera::MAX_OUTPUT_SIDE as i64).contains(&v) {
                bail!(
                    "parameter {name} must be 0 (keep the input size) .. {}, got {v}",
                    fusion::camera::MAX_OUTPUT_SIDE
                );
            }
        }
        match self.own.image_transport.as_str() {
            "raw" | "compressed" => Ok(()),
            other => bail!("parameter image_transport must be raw or compressed, got '{other}'"),
        }
    }
}
impl IngestLive for ImuIngestConfig {
    fn check_own(&self) -> Result<()> {
        let o = &self.own;
        for (name, v) in [
            ("accel_saturation", o.accel_saturation),
            ("gyro_saturation", o.gyro_saturation),
            ("filter_gain", o.filter_gain),
        ] {
            finite(name, v)?;
        }
        Ok(())
    }
}

ingest_node_config!(LidarIngestConfig, crate::ingest::LIDAR, Numbers(Default::default()));
ingest_node_config!(RadarIngestConfig, crate::ingest::RADAR, Numbers(Default::default()));
ingest_node_config!(
    CameraIngestConfig,
    crate::ingest::CAMERA,
    CameraOptions { image_transport: "raw".into(), output_width: 0, output_height: 0 }
);
ingest_node_config!(ImuIngestConfig, crate::ingest::IMU, {
    let d = fusion::imu::ImuParams::default();
    ImuOptions {
        gyro_bias: Vec3(d.gyro_bias),
        accel_bias: Vec3(d.accel_bias),
        accel_saturation: d.accel_saturation,
        gyro_saturation: d.gyro_saturation,
        filter_gain: d.filter_gain,
    }
});

impl IngestCommon {
    /// The parameters' names, in declaration order.
    pub fn names(&self) -> Vec<String> {
        let mut registered = r2r::indexmap::IndexMap::new();
        self.clone().register_parameters("", None, &mut registered).expect("registers");
        registered.keys().cloned().collect()
    }

    /// What the node checks before it starts, naming the parameter.
    pub fn check(&self) -> Result<()> {
        check_tf_wait(self.tf_wait)?;
        finite("diagnostics_period", self.diagnostics_period)?;
        for (name, v) in [("queue_size", self.queue_size), ("input_depth", self.input_depth)] {
            if v < 0 {
                bail!("parameter {name} must be >= 0, got {v}");
            }
        }
        match self.input_reliability.as_str() {
            "best_effort" | "reliable" => Ok(()),
            other => bail!("parameter input_reliability must be best_effort or reliable, got '{other}'"),
        }
    }
}

/// `v` as a value of `default`'s type (an integer is a number; a number is no integer
/// unless whole), or why not.
fn typed_like(default: &Value, v: Value, rounds: bool) -> Result<Value, String> {
    match default {
        Value::Number(n) if n.is_i64() => match (v.as_i64(), v.as_f64()) {
            (Some(_), _) => Ok(v),
            (None, Some(x)) if rounds && x.is_finite() => Ok(Value::from(x.round() as i64)),
            _ => Err(format!("must be an integer, got {}", show(&v))),
        },
        Value::Number(_) => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Value::from(x)),
            _ => Err(format!("must be a finite number, got {}", show(&v))),
        },
        Value::Bool(_) => match v {
            Value::Bool(_) => Ok(v),
            _ => Err(format!("must be true or false, got {}", show(&v))),
        },
        Value::String(_) => match v {
            Value::String(_) => Ok(v),
            // A bare word YAML reads as a number (`input_size: 320`) is still the word.
            Value::Number(n) => Ok(Value::from(n.to_string())),
            _ => Err(format!("must be a string, got {}", show(&v))),
        },
        Value::Sequence(d) => match v.as_sequence() {
            Some(items) if items.len() == d.len() && items.iter().all(|x| x.as_f64().is_some()) => {
                Ok(Value::Sequence(items.iter().map(|x| Value::from(x.as_f64().expect("a number"))).collect()))
            }
            _ => Err(format!("must be {} numbers, got {}", d.len(), show(&v))),
        },
        _ => Ok(v),
    }
}

fn show(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_string()).unwrap_or_else(|_| format!("{v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_parameter_is_a_field_and_every_field_a_parameter() {
        let names: Vec<String> = FusionNodeConfig::default().flat().into_iter().map(|(n, _)| n).collect();
        for name in PipelineParams::NAMES.iter().chain(PipelineParams::WORD_NAMES.iter()) {
            assert!(names.iter().any(|n| n == name), "pipeline parameter {name} has no field");
        }
        let node_level = [
            "calibration",
            "tf_wait",
            "scheduler",
            "queue_size",
            "trace_file",
            "annotated_image",
            "diagnostics_period",
            "detector",
            "detector_weights",
            "detector_required",
            "backend",
            "input_size",
            "precision",
            "detector_score_threshold",
        ];
        for name in &names {
            let known = PipelineParams::NAMES.contains(&name.as_str())
                || PipelineParams::WORD_NAMES.contains(&name.as_str())
                || node_level.contains(&name.as_str())
                || name.starts_with("sched.")
                || name.starts_with("degrade.");
            assert!(known, "field {name} reaches no runtime setting");
        }
    }

    #[test]
    fn the_defaults_are_the_runtime_defaults() {
        let c = FusionNodeConfig::default();
        let p = c.pipeline().expect("valid defaults");
        let d = PipelineParams::default();
        for name in PipelineParams::NAMES {
            assert_eq!(p.get(name), d.get(name), "{name}");
        }
        for name in PipelineParams::WORD_NAMES {
            assert_eq!(p.get_word(name), d.get_word(name), "{name}");
        }
        let (mode, s) = c.sched().expect("valid defaults");
        let (s0, node) = (SchedConfig::default(), RtConfig::NODE);
        assert_eq!(mode, "edf");
        assert_eq!(
            (s.mailbox_depth, s.imu_mailbox_depth, s.cpu_workers),
            (s0.mailbox_depth, s0.imu_mailbox_depth, s0.cpu_workers)
        );
        assert_eq!((s.rt.policy, s.rt.priority), (node.policy, node.priority));
        assert_eq!(s.degrade.ladder, s0.degrade.ladder);
        assert_eq!((s.admission, s.rt.mlockall, s.fifo_depth), (s0.admission, s0.rt.mlockall, s0.fifo_depth));
        assert_eq!(
            (s.rt.cpus.clone(), s.degrade.window, s.degrade.recover_windows),
            (vec![], s0.degrade.window, s0.degrade.recover_windows)
        );
        assert_eq!(
            (s.degrade.engage_slack_ns, s.degrade.recover_slack_ns),
            (s0.degrade.engage_slack_ns, s0.degrade.recover_slack_ns)
        );
        assert_eq!(c.camera.min_iou, 0.2, "f32-held values read as written");
        c.check().expect("the defaults pass the start-up checks");
    }

    #[test]
    fn a_params_file_is_applied_block_by_block_and_typos_are_named() {
        let dir = std::env::temp_dir().join(format!("fusion_config_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.yaml");
        let write = |text: &str| std::fs::write(&file, text).unwrap();
        write(
            "/**:\n  ros__parameters:\n    use_sim_time: true\n    max_range: 12.0\n    sync: {wait_ms: 40}\n\
             /**/fusion_node:\n  ros__parameters:\n    sync: {wait_ms: 30.0}\n    anomaly: {deadline_window: 50}\n    input_size: 640x480\n\
             /**/lidar_ingest:\n  ros__parameters:\n    nonsense: 1\n",
        );
        let c = FusionNodeConfig::from_params_file(&file).expect("a valid file");
        assert_eq!(c.sync.wait_ms, 30.0, "the node's block comes after /** and wins");
        assert_eq!(c.anomaly.deadline_window, 50);
        assert_eq!(c.input_size, "640x480");
        assert_eq!(c.lidar, FusionNodeConfig::default().lidar);
        write("/**/fusion_node:\n  ros__parameters:\n    sync: {wiat_ms: 30.0}\n");
        let e = format!("{:#}", FusionNodeConfig::from_params_file(&file).unwrap_err());
        assert!(e.contains("'sync.wiat_ms' is not a fusion_node parameter"), "{e}");
        // The pipeline's counts were always read as numbers and rounded; the scheduler's never.
        write("/**/fusion_node:\n  ros__parameters:\n    anomaly: {deadline_window: 49.6}\n");
        assert_eq!(FusionNodeConfig::from_params_file(&file).expect("rounded").anomaly.deadline_window, 50);
        write("/**/fusion_node:\n  ros__parameters:\n    sched: {cpu_workers: 2.5}\n");
        let e = format!("{:#}", FusionNodeConfig::from_params_file(&file).unwrap_err());
        assert!(e.contains("parameter sched.cpu_workers must be an integer, got 2.5"), "{e}");
        write("/**/fusion_node:\n  ros__parameters:\n    detector_score_threshold: .nan\n");
        let e = format!("{:#}", FusionNodeConfig::from_params_file(&file).unwrap_err());
        assert!(e.contains("detector_score_threshold must be a finite number"), "{e}");
        write("/**/fusion_node:\n  ros__parameters:\n    sync: {wait_ms: fast}\n");
        let e = format!("{:#}", FusionNodeConfig::from_params_file(&file).unwrap_err());
        assert!(e.contains("parameter sync.wait_ms must be a finite number, got fast"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_values_fail_the_start_up_check_with_the_parameter_named() {
        let mut c = FusionNodeConfig::default();
        c.sync.wait_ms = -5.0;
        assert!(format!("{:#}", c.check().unwrap_err()).contains("sync.wait_ms"));
        let mut c = FusionNodeConfig::default();
        c.degrade.recover_slack_ms = 1.0;
        assert!(format!("{:#}", c.check().unwrap_err()).contains("hysteresis"));
        let mut c = FusionNodeConfig::default();
        c.sched.policy = "realtime".into();
        assert!(format!("{:#}", c.check().unwrap_err()).contains("sched.policy"));
        let mut c = FusionNodeConfig::default();
        c.tf_wait = 100.0;
        assert!(format!("{:#}", c.check().unwrap_err()).contains("tf_wait"));
    }

    /// docs/nodes/fusion_node.md's parameter table is generated from this struct (names,
    /// types, defaults, which are live, the doc comments): this fails when the page drifts.
    #[test]
    fn the_node_page_shows_the_parameters_the_node_declares() {
        let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/nodes/fusion_node.md");
        crate::check_generated(
            &page,
            "<!-- generated from sensor_fusion::config::FusionNodeConfig",
            "<!-- end of generated table -->",
            &FusionNodeConfig::markdown_table(),
        );
    }

    /// config/summarizer.yaml holds every summarizer parameter at its default, and
    /// docs/nodes/summarizer.md's table is generated from the struct.
    #[test]
    fn the_summarizers_file_and_page_hold_its_parameters() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let shipped = SummarizerNodeConfig::from_params_file(&root.join("config/summarizer.yaml")).expect("the file");
        assert_eq!(shipped, SummarizerNodeConfig::default());
        let text = std::fs::read_to_string(root.join("config/summarizer.yaml")).unwrap();
        for (name, _) in SummarizerNodeConfig::default().flat() {
            assert!(text.contains(&format!("\n    {name}:")), "config/summarizer.yaml does not name {name}");
        }
        SummarizerNodeConfig::default().check().expect("valid defaults");
        crate::check_generated(
            &root.join("docs/nodes/summarizer.md"),
            "<!-- generated from sensor_fusion::config::SummarizerNodeConfig",
            "<!-- end of generated table -->",
            &SummarizerNodeConfig::markdown_table(),
        );
    }

    /// config/ingest.yaml's block of each ingest node reads into its config, at the
    /// defaults; each node's page shows its own parameters (generated), and the common table
    /// of ingest_common.md names exactly the common ones.
    #[test]
    fn the_ingest_nodes_file_and_pages_hold_their_parameters() {
        fn check<C: NodeConfig + PartialEq + std::fmt::Debug>(root: &Path) {
            let shipped = C::from_params_file(&root.join("config/ingest.yaml")).expect("config/ingest.yaml");
            assert_eq!(shipped, C::default(), "{}", C::NODE);
            let common: Vec<String> = IngestCommon::of(&crate::ingest::LIDAR).names();
            crate::check_generated(
                &root.join(format!("docs/nodes/{}.md", C::NODE)),
                "<!-- generated from sensor_fusion::config",
                "<!-- end of generated table -->",
                &C::markdown_table_where(|name| !common.iter().any(|c| c == name)),
            );
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        check::<LidarIngestConfig>(&root);
        check::<RadarIngestConfig>(&root);
        check::<CameraIngestConfig>(&root);
        check::<ImuIngestConfig>(&root);
        let page = std::fs::read_to_string(root.join("docs/nodes/ingest_common.md")).unwrap();
        let table = page.lines().skip_while(|l| !l.starts_with("| parameter |")).take_while(|l| !l.is_empty());
        let mut named: Vec<String> =
            table.filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(String::from)).collect();
        named.retain(|n| n != "use_sim_time");
        assert_eq!(named, IngestCommon::of(&crate::ingest::LIDAR).names(), "ingest_common.md's table");
    }

    #[test]
    fn an_ingest_filter_is_refused_out_of_its_range_and_a_bias_needs_three_numbers() {
        let mut c = LidarIngestConfig::default();
        let e = c.set_parameter("max_non_finite_ratio", &r2r::ParameterValue::Double(2.0)).unwrap_err();
        assert!(e.to_string().contains("within [0, 1]"), "{e}");
        c.set_parameter("max_range", &r2r::ParameterValue::Integer(30)).expect("a whole number is a double");
        assert_eq!(c.own.0.max_range, 30.0);
        c.set_parameter("queue_size", &r2r::ParameterValue::Integer(8)).expect("a common parameter");
        assert_eq!(c.common.queue_size, 8);
        let mut imu = ImuIngestConfig::default();
        let e = imu.set_parameter("gyro_bias", &r2r::ParameterValue::DoubleArray(vec![0.1, 0.2])).unwrap_err();
        assert!(e.to_string().contains("3 finite numbers"), "{e}");
        imu.set_parameter("gyro_bias", &r2r::ParameterValue::DoubleArray(vec![0.1, 0.2, 0.3])).unwrap();
        assert_eq!(imu.own.params().gyro_bias, [0.1, 0.2, 0.3]);
    }
}
