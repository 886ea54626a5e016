//! fusion_node's parameters: [`FusionNodeConfig`], nested as config/fusion.yaml nests them.
use super::{check_tf_wait, finite, measure, put, NodeConfig, TF_WAIT_S};
use crate::detector::DetectorParams;
use anyhow::{bail, Context as _, Result};
use fusion::{
    pipeline::PipelineParams,
    sched::{parse_cpus, parse_ladder, RtConfig, SchedConfig},
};
use r2r::RosParams;
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};

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
}
