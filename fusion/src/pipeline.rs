//! The fusion stage as one ROS-free state machine: preprocessed sensor data in (base_link,
//! as the ingest nodes publish it on /sensors/*), fused objects and anomaly events out.
//!
//! ```text
//! camera ─┐                       ┌─ IMU buffer: yaw between sets, deskew rates
//! lidar  ─┼─ DeadlineSync (ref. LiDAR) ─ set ─ deskew → ground removal → clusters
//! radar  ─┘  (radar leads when the     │       radar objects ──┐
//!             LiDAR is lost)           │       camera detector ─┼─ association → tracker → rules
//! imu ───────── rules (impact, ...) ───┘                       ┘
//! ```
//!
//! Everything is driven by message stamps, never by a wall clock, so the same input
//! sequence gives the same output at any speed; callers measure latency around it.
use crate::classify::{ClassPriors, Fit};
use crate::egospeed::{EgoSpeedEstimator, EgoSpeedParams};
use crate::monitor::{ModelMonitor, MonitorParams};
use crate::odom::{EgoOdometry, OdometryBuffer, OdometryError, OdometryParams, OdometrySample, SharedOdometry};
use crate::{
    anomaly::{AnomalyDetector, AnomalyParams, CameraCheck, Event, Sensor, StreamState, TrackView},
    calib::Calibration,
    camera::{Intrinsics, Rgb8},
    cloud::{LidarPoint, RadarTarget},
    cluster::{euclidean_clusters, object_box, radar_objects, remove_ground, ClusterParams, ObjectBox, RadarObject},
    detect::{iou, CameraDetector, Detection2d, Label},
    gate::{DetectorGate, DetectorMode, GateParams, RunReason, TrackInView},
    motion::{ImuBuffer, ImuState},
    sensors::{SensorId, SensorSet},
    sync::{DeadlineConfig, DeadlineSync, SyncSet},
    track::{Detection, EgoMotion, EgoSource, Tracker, TrackerParams, SENSOR_CAMERA, SENSOR_LIDAR, SENSOR_RADAR},
    StampNs,
};
use nalgebra::{Isometry3, Point3, UnitQuaternion, Vector3};
use serde::Serialize;
use std::{collections::BTreeMap, sync::Arc, time::Instant};

const MS: i64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct PipelineParams {
    /// A camera frame or radar scan joins a LiDAR set when within this of its stamp.
    pub sync_tolerance_ns: i64,
    /// A set still incomplete when data this much newer than its stamp arrived is released
    /// partial (listing what is missing).
    pub sync_wait_ns: i64,
    /// Deadlines of a set: newest member's stamp + these.
    pub target_deadline_ns: i64,
    pub hard_deadline_ns: i64,
    /// The LiDAR (by its declared name) that leads sets while it delivers; empty: the first
    /// LiDAR in the sensor set's order (kind, then name: `front_bumper_lidar` before
    /// `lidar`). When it is silent the next delivering LiDAR leads.
    pub sync_reference: String,
    /// The radar leads sets once the LiDAR has been silent this long.
    pub reference_lost_ns: i64,
    /// Period of radar-led sets.
    pub set_period_ns: i64,
    pub cluster: ClusterParams,
    /// LiDAR returns farther than this (m, horizontal) are not clustered.
    pub cluster_range: f64,
    pub tracker: TrackerParams,
    /// Radar targets within these distances (m) and doppler differences (m/s) form one object.
    pub radar_eps: f64,
    pub radar_eps_doppler: f64,
    /// A radar object confirms a LiDAR box when its centre is within the box's half
    /// extent plus this margin (m).
    pub radar_margin: f64,
    /// With no LiDAR in a set, radar objects of at least this many targets become detections.
    pub radar_min_targets: usize,
    /// A camera box confirms a LiDAR box when their image boxes overlap by this IoU.
    pub camera_min_iou: f32,
    /// Camera detections below this score are ignored.
    pub camera_min_score: f32,
    /// sensor_disagreement looks only at objects within this range (m), and at camera boxes
    /// at least this tall (px): smaller ones are beyond where LiDAR is expected to see.
    pub disagreement_range: f64,
    pub disagreement_min_box_px: f32,
    /// Confirmed tracks are published while missed in at most this many consecutive sets.
    pub publish_max_misses: u32,
    /// What sizes (and ground speeds) each class can have: camera votes the geometry rules
    /// out are dropped.
    pub class_priors: ClassPriors,
    /// The ego's speed from the radar's Doppler of static returns (no odometry input).
    pub ego_speed: EgoSpeedParams,
    /// Model monitoring: when the detector's input or its agreement with LiDAR departs
    /// from training (`model_degraded`).
    pub monitor: MonitorParams,
    /// A camera box at least this share of whose area lies inside the image projection of a
    /// known LiDAR/radar object or track is part of that object, not a missed one.
    pub camera_explained_overlap: f32,
    /// Which frames the camera detector runs on (`camera.detector_mode`): every frame, or
    /// when the scene asks for it (crate::gate).
    pub detector_gate: GateParams,
    pub anomaly: AnomalyParams,
}

impl Default for PipelineParams {
    fn default() -> Self {
        Self {
            sync_tolerance_ns: 25 * MS,
            sync_wait_ns: 50 * MS,
            target_deadline_ns: 50 * MS,
            hard_deadline_ns: 100 * MS,
            sync_reference: String::new(),
            reference_lost_ns: 250 * MS,
            set_period_ns: 100 * MS,
            cluster: ClusterParams::default(),
            cluster_range: 50.0,
            tracker: TrackerParams::default(),
            radar_eps: 1.5,
            radar_eps_doppler: 1.0,
            radar_margin: 1.5,
            radar_min_targets: 2,
            camera_min_iou: 0.2,
            camera_min_score: 0.3,
            disagreement_range: 40.0,
            disagreement_min_box_px: 25.0,
            publish_max_misses: 2,
            class_priors: ClassPriors::default(),
            ego_speed: EgoSpeedParams::default(),
            monitor: MonitorParams::default(),
            camera_explained_overlap: 0.5,
            detector_gate: GateParams::default(),
            anomaly: AnomalyParams::default(),
        }
    }
}

/// Preprocessed data as on /sensors/<name> (base_link), each from one declared sensor.
#[derive(Debug, Clone)]
pub enum Input {
    Camera {
        sensor: SensorId,
        stamp: StampNs,
        image: Arc<Rgb8>,
        /// This image's intrinsics, from the camera's CameraInfo (scaled with the image);
        /// None until one arrives: the calibration's hold meanwhile.
        intrinsics: Option<Intrinsics>,
    },
    /// x, y, z, intensity, t (t = firing time after the stamp, s; 0 when the driver gives none).
    /// `non_finite`/`total`: the raw sweep's NaN/Inf count, when known (0/0 otherwise).
    Lidar {
        sensor: SensorId,
        stamp: StampNs,
        points: Arc<Vec<LidarPoint>>,
        non_finite: u64,
        total: u64,
    },
    /// x, y, z, doppler, rcs.
    Radar {
        sensor: SensorId,
        stamp: StampNs,
        targets: Arc<Vec<RadarTarget>>,
    },
    Imu(SensorId, ImuState),
}

impl Input {
    pub fn sensor(&self) -> SensorId {
        match self {
            Input::Camera { sensor, .. } | Input::Lidar { sensor, .. } | Input::Radar { sensor, .. } => *sensor,
            Input::Imu(sensor, _) => *sensor,
        }
    }

    pub fn stamp(&self) -> StampNs {
        match self {
            Input::Camera { stamp, .. } | Input::Lidar { stamp, .. } | Input::Radar { stamp, .. } => *stamp,
            Input::Imu(_, s) => s.stamp,
        }
    }
}

/// The synchronizer's members (one topic each): every LiDAR, then the camera, then every
/// radar, each kind in the sensor set's order (IMU samples feed the motion buffer, not sets).
/// The first LiDAR is the reference that opens sets, the first radar leads sets while it is
/// silent. The standard robot's members are lidar, camera, radar, as they always were.
#[derive(Debug, Clone)]
struct Members {
    /// Per topic: the sensor, its kind, its name.
    sensors: Vec<SensorId>,
    kinds: Arc<[Sensor]>,
    names: Arc<[&'static str]>,
    /// Per sensor id: its topic (None for the IMU).
    topic_of: Vec<Option<usize>>,
    /// The LiDARs' topics in the order they lead sets: `sync.reference` first (a declared
    /// LiDAR's name, see [`PipelineParams::check_sensors`]), then the rest in the set's order.
    lead_order: Vec<usize>,
}

impl Members {
    fn new(set: &SensorSet, reference: &str) -> Self {
        let sensors: Vec<SensorId> =
            [Sensor::Lidar, Sensor::Camera, Sensor::Radar].into_iter().flat_map(|k| set.of_kind(k)).collect();
        let mut topic_of = vec![None; set.len()];
        for (topic, id) in sensors.iter().enumerate() {
            topic_of[id.index()] = Some(topic);
        }
        let mut lead_order: Vec<usize> =
            (0..sensors.len()).filter(|t| set.kind(sensors[*t]) == Sensor::Lidar).collect();
        lead_order.sort_by_key(|t| set.name(sensors[*t]) != reference);
        Self {
            kinds: sensors.iter().map(|id| set.kind(*id)).collect(),
            names: sensors.iter().map(|id| set.name(*id)).collect(),
            sensors,
            topic_of,
            lead_order,
        }
    }

    fn first(&self, kind: Sensor) -> Option<usize> {
        self.kinds.iter().position(|k| *k == kind)
    }

    /// The topic of `sensor` when it is a member of `kind` (an input that claims another
    /// kind's sensor, or one the set lacks, is none).
    fn topic(&self, sensor: SensorId, kind: Sensor) -> Option<usize> {
        let topic = (*self.topic_of.get(sensor.index())?)?;
        (self.kinds[topic] == kind).then_some(topic)
    }
}

#[derive(Debug, Clone)]
enum Member {
    /// The frame and, when a CameraInfo came with the camera, the intrinsics of this image.
    Camera(Arc<Rgb8>, Option<Intrinsics>),
    Lidar(Arc<Vec<LidarPoint>>),
    Radar(Arc<Vec<RadarTarget>>),
}

/// One fused, tracked object (fusion_msgs/FusedObject without ROS).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FusedObject {
    pub track_id: u32,
    pub label: Label,
    pub confidence: f32,
    pub center: [f64; 3],
    pub yaw: f64,
    pub size: [f64; 3],
    /// Relative to the ego (base_link axes), m/s.
    pub velocity: [f64; 2],
    /// Over the ground (base_link axes), m/s: `velocity` plus the ego's own; None while the
    /// ego's speed is unknown.
    pub ground_velocity: Option<[f64; 2]>,
    /// Over the ground in the odometry frame's axes (the set's `odom_frame`), m/s; None
    /// without odometry at the set's stamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odom_velocity: Option<[f64; 2]>,
    pub sensors: u8,
    pub age: u32,
    /// Seconds; None when not closing in (+inf on the wire).
    pub time_to_collision: Option<f64>,
}

/// Wall time spent per stage of one set, microseconds (not part of the deterministic output).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    pub imu_us: u64,
    pub lidar_us: u64,
    pub radar_us: u64,
    pub camera_us: u64,
    pub associate_us: u64,
    pub track_us: u64,
    pub rules_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetOutput {
    pub stamp: StampNs,
    /// Newest member's stamp: the deadlines count from here.
    pub newest_stamp: StampNs,
    pub partial: bool,
    pub missing: Vec<&'static str>,
    /// The ego's forward speed over the ground (m/s) the set was fused with, when known.
    pub ego_speed: Option<f64>,
    /// The odometry frame the objects' `odom_velocity` is in; None without odometry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odom_frame: Option<String>,
    pub objects: Vec<FusedObject>,
    #[serde(skip)]
    pub times: StageTimes,
    /// What each camera saw in this set, for a report or an annotated image to draw (not
    /// published): one per camera frame of the set, in the sensor set's order; empty unless
    /// [`Pipeline::keep_camera_views`] asked for them.
    #[serde(skip)]
    pub camera_views: Vec<CameraView>,
}

impl SetOutput {
    /// The view of the camera named `camera`, when the set had its frame.
    pub fn camera_view(&self, camera: &str) -> Option<&CameraView> {
        self.camera_views.iter().find(|v| v.camera == camera)
    }
}

/// A set's camera frame with the detector's boxes (those above `camera_min_score`) and where
/// the set's LiDAR clusters and published tracks land in it, in the frame's pixels.
#[derive(Debug, Clone)]
pub struct CameraView {
    /// The camera's configured name.
    pub camera: &'static str,
    pub stamp: StampNs,
    pub image: Arc<Rgb8>,
    /// None when the detector did not run on this frame (none configured, or shed).
    pub detections: Option<Vec<Detection2d>>,
    pub lidar_boxes: Vec<[f32; 4]>,
    /// (track id, rectangle) of the published objects in view.
    pub tracks: Vec<(u32, [f32; 4])>,
}

impl SetOutput {
    pub fn target_deadline(&self, p: &PipelineParams) -> StampNs {
        self.newest_stamp + p.target_deadline_ns
    }
    pub fn hard_deadline(&self, p: &PipelineParams) -> StampNs {
        self.newest_stamp + p.hard_deadline_ns
    }
}

/// What one input produced.
#[derive(Debug, Default)]
pub struct Step {
    pub sets: Vec<SetOutput>,
    pub events: Vec<Event>,
}

impl Step {
    fn extend(&mut self, o: Step) {
        self.sets.extend(o.sets);
        self.events.extend(o.events);
    }
}

/// A released synchronized set with what its stages need, detached from the pipeline's
/// state so that its perception stages can run on any thread. Cheap to clone (the sensor
/// data is shared).
#[derive(Debug, Clone)]
pub struct SetJob {
    pub stamp: StampNs,
    /// Newest member's stamp: the set's deadlines count from here.
    pub newest_stamp: StampNs,
    set: SyncSet<Member>,
    /// Per member topic: its kind and its sensor's name.
    kinds: Arc<[Sensor]>,
    names: Arc<[&'static str]>,
    /// IMU angular velocity at the stamp (rad/s), for deskewing the sweep.
    omega: Vector3<f64>,
    /// The ego's velocity over the ground at the LiDAR's stamp (base axes, m/s), from
    /// odometry: the sweep's translation. Zero without odometry.
    velocity: Vector3<f64>,
    /// The set's camera frames, one per camera present, in the sensor set's order.
    cameras: Vec<CameraFrame>,
}

/// One camera's frame in a set, with the detector gate's answer for it.
#[derive(Debug, Clone)]
pub struct CameraFrame {
    /// The camera: its place among the robot's cameras (the sensor set's order).
    pub camera: usize,
    pub sensor: SensorId,
    pub stamp: StampNs,
    pub image: Arc<Rgb8>,
    /// The intrinsics the frame came with (None: no CameraInfo yet).
    pub intrinsics: Option<Intrinsics>,
    /// Whether the detector should run on it (every_frame: always; event_driven: the gate's
    /// answer).
    pub run_detector: bool,
    /// Why the gate asked for it (event_driven only).
    gate_reason: Option<RunReason>,
}

impl SetJob {
    /// The set's members of one kind that are present, in topic order.
    fn present(&self, kind: Sensor) -> impl Iterator<Item = &(StampNs, Member)> + '_ {
        self.set.members.iter().zip(self.kinds.iter()).filter(move |(_, k)| **k == kind).filter_map(|(m, _)| m.as_ref())
    }

    /// Every LiDAR's sweep of the set as one cloud (all are in base_link already). A sweep
    /// stamped apart from the set's stamp has its points' firing times moved by the
    /// difference, so the deskew takes every point to the set's stamp. One LiDAR (the
    /// reference): its sweep as is.
    pub fn lidar(&self) -> Option<Arc<Vec<LidarPoint>>> {
        let sweeps: Vec<(StampNs, &Arc<Vec<LidarPoint>>)> = self
            .present(Sensor::Lidar)
            .filter_map(|(s, m)| match m {
                Member::Lidar(p) => Some((*s, p)),
                _ => None,
            })
            .collect();
        let (first_stamp, first) = *sweeps.first()?;
        if sweeps.len() == 1 && first_stamp == self.stamp {
            return Some(first.clone());
        }
        let mut merged = Vec::with_capacity(sweeps.iter().map(|(_, p)| p.len()).sum());
        for (stamp, points) in sweeps {
            let offset = ((stamp - self.stamp) as f64 * 1e-9) as f32;
            merged.extend(points.iter().map(|p| LidarPoint { t: p.t + offset, ..*p }));
        }
        Some(Arc::new(merged))
    }

    /// Whether any LiDAR is in the set.
    pub fn has_lidar(&self) -> bool {
        self.present(Sensor::Lidar).next().is_some()
    }

    /// The first declared radar's scan with its stamp, when it is in the set: the ego speed
    /// is estimated from that radar alone (its Doppler is measured at its mount, which the
    /// estimator corrects for).
    pub fn radar_stamped(&self) -> Option<(StampNs, Arc<Vec<RadarTarget>>)> {
        let first = self.kinds.iter().position(|k| *k == Sensor::Radar)?;
        match &self.set.members[first] {
            Some((s, Member::Radar(t))) => Some((*s, t.clone())),
            _ => None,
        }
    }

    /// Every radar's targets of the set (base_link), one list: targets of one object seen by
    /// two radars cluster into one radar object.
    pub fn radar(&self) -> Option<Arc<Vec<RadarTarget>>> {
        let scans: Vec<&Arc<Vec<RadarTarget>>> = self
            .present(Sensor::Radar)
            .filter_map(|(_, m)| match m {
                Member::Radar(t) => Some(t),
                _ => None,
            })
            .collect();
        match scans.as_slice() {
            [] => None,
            [one] => Some((*one).clone()),
            many => Some(Arc::new(many.iter().flat_map(|t| t.iter().copied()).collect())),
        }
    }

    /// Every camera frame of the set, in the sensor set's order.
    pub fn cameras(&self) -> &[CameraFrame] {
        &self.cameras
    }

    /// The frames the detector is to run on (the gate's choice), as one batch.
    pub fn detector_frames(&self) -> Vec<DetectorFrame> {
        self.cameras
            .iter()
            .filter(|f| f.run_detector)
            .map(|f| DetectorFrame { camera: f.camera, stamp: f.stamp, image: f.image.clone() })
            .collect()
    }

    /// Whether the detector is to run on any of the set's frames.
    pub fn wants_detector(&self) -> bool {
        self.cameras.iter().any(|f| f.run_detector)
    }
    pub fn omega(&self) -> Vector3<f64> {
        self.omega
    }
    pub fn velocity(&self) -> Vector3<f64> {
        self.velocity
    }
    pub fn partial(&self) -> bool {
        self.set.partial
    }
    /// The sensors the set went out without, by their configured names.
    pub fn missing(&self) -> Vec<&'static str> {
        self.set.missing.iter().map(|m| self.names[*m]).collect()
    }
}

/// A frame for the detector: which camera took it, when, and the image.
#[derive(Debug, Clone)]
pub struct DetectorFrame {
    pub camera: usize,
    pub stamp: StampNs,
    pub image: Arc<Rgb8>,
}

/// The detector over a set's frames in one call ([`CameraDetector::detect_batch`]: one
/// batched forward where the backend has one): per frame, its camera and the boxes (all
/// scores) or why it failed.
pub fn detector_stage(
    detector: &mut dyn CameraDetector,
    frames: &[DetectorFrame],
) -> Vec<(usize, Result<Vec<Detection2d>, String>)> {
    let batch: Vec<(StampNs, &Rgb8)> = frames.iter().map(|f| (f.stamp, &*f.image)).collect();
    let results = detector.detect_batch(&batch);
    frames.iter().zip(results).map(|(f, r)| (f.camera, r.map_err(|e| e.to_string()))).collect()
}

/// What the perception stages made of a set; `None` where a stage did not run (no such
/// member, or skipped under load).
#[derive(Debug, Default)]
pub struct Perception {
    pub lidar: Option<Vec<ObjectBox>>,
    pub radar: Option<Vec<RadarObject>>,
    /// Per camera frame the detector ran on: its camera, and the boxes (all scores) or why
    /// it failed. Empty when the detector did not run.
    pub cameras: Vec<(usize, Result<Vec<Detection2d>, String>)>,
    pub times: StageTimes,
}

/// LiDAR stage: deskew (rotation from the IMU's angular velocity, translation from the
/// odometry's `velocity`; zero without odometry, since radar Doppler alone is too coarse to
/// move points by), ground removal, clustering to boxes. `coarse` (a degradation rung)
/// clusters every other return on voxels half again as large.
pub fn lidar_stage(
    params: &PipelineParams,
    omega: Vector3<f64>,
    velocity: Vector3<f64>,
    points: &[LidarPoint],
    coarse: bool,
) -> Vec<ObjectBox> {
    let r2 = params.cluster_range * params.cluster_range;
    let stride = if coarse { 2 } else { 1 };
    let mut cached: Option<(i64, UnitQuaternion<f64>)> = None;
    // Not even a zero added without odometry: a -0.0 must stay what it was.
    let moving = velocity != Vector3::zeros();
    let mut pts: Vec<[f32; 3]> = Vec::with_capacity(points.len() / stride);
    for p in points.iter().step_by(stride) {
        let (x, y) = (p.x as f64, p.y as f64);
        if x * x + y * y > r2 {
            continue;
        }
        let key = (p.t as f64 * 1e4) as i64; // 0.1 ms steps
        let rot = match cached {
            Some((k, r)) if k == key => r,
            _ => {
                let r = UnitQuaternion::from_scaled_axis(omega * (key as f64 * 1e-4));
                cached = Some((key, r));
                r
            }
        };
        let mut q = rot * Point3::new(x, y, p.z as f64);
        if moving {
            q += velocity * p.t as f64;
        }
        pts.push([q.x as f32, q.y as f32, q.z as f32]);
    }
    let mut cp = params.cluster.clone();
    if coarse {
        cp.voxel *= 1.5;
        cp.voxel_z *= 1.5;
        cp.min_points = (cp.min_points / 2).max(2);
    }
    let kept: Vec<[f32; 3]> = remove_ground(&pts, &cp).into_iter().map(|i| pts[i]).collect();
    euclidean_clusters(&kept, &cp)
        .iter()
        .map(|c| object_box(&kept, c))
        .filter(|b| b.size[0].max(b.size[1]) < 15.0)
        .collect()
}

/// Radar stage: targets clustered into objects.
pub fn radar_stage(params: &PipelineParams, targets: &[RadarTarget]) -> Vec<RadarObject> {
    radar_objects(targets, params.radar_eps, params.radar_eps_doppler)
}

/// Where a box of base_link lands in the camera image.
struct CameraModel {
    base_to_cam: Isometry3<f64>,
    k: [f64; 9],
    width: f64,
    height: f64,
}

impl CameraModel {
    fn new(cam: &crate::calib::SensorPose) -> Self {
        let mut model = Self { base_to_cam: cam.to_base().inverse(), k: [0.0; 9], width: 0.0, height: 0.0 };
        model.set_intrinsics(&Intrinsics::of(cam));
        model
    }

    /// The camera's intrinsics from now on (a CameraInfo's, which win over the file's).
    fn set_intrinsics(&mut self, intrinsics: &Intrinsics) {
        self.k = intrinsics.k;
        self.width = intrinsics.width as f64;
        self.height = intrinsics.height as f64;
    }

    /// The image rectangle of an object standing on the ground: LiDAR boxes start above the
    /// ground-removal band, but the camera sees the object down to its feet.
    fn project_standing(&self, center: [f64; 3], size: [f64; 3], yaw: f64) -> Option<[f32; 4]> {
        let top = (center[2] + size[2] / 2.0).max(0.3);
        self.project([center[0], center[1], top / 2.0], [size[0], size[1], top], yaw)
    }

    /// The image rectangle of a 3D box (centre, size, yaw), clipped to the image; None when
    /// the box is behind the camera or outside the image.
    fn project(&self, center: [f64; 3], size: [f64; 3], yaw: f64) -> Option<[f32; 4]> {
        let (c, s) = (yaw.cos(), yaw.sin());
        let (mut x0, mut y0, mut x1, mut y1) = (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for sx in [-0.5, 0.5] {
            for sy in [-0.5, 0.5] {
                for sz in [-0.5, 0.5] {
                    let (lx, ly) = (sx * size[0], sy * size[1]);
                    let p =
                        Point3::new(center[0] + c * lx - s * ly, center[1] + s * lx + c * ly, center[2] + sz * size[2]);
                    let q = self.base_to_cam * p;
                    if q.z < 0.5 {
                        return None;
                    }
                    let (u, v) = (self.k[0] * q.x / q.z + self.k[2], self.k[4] * q.y / q.z + self.k[5]);
                    x0 = x0.min(u);
                    y0 = y0.min(v);
                    x1 = x1.max(u);
                    y1 = y1.max(v);
                }
            }
        }
        let r = [x0.max(0.0), y0.max(0.0), x1.min(self.width), y1.min(self.height)];
        (r[2] - r[0] >= 2.0 && r[3] - r[1] >= 2.0).then_some([r[0] as f32, r[1] as f32, r[2] as f32, r[3] as f32])
    }
}

/// One of the robot's cameras, as the pipeline keeps it: where boxes land in its image, its
/// own detector gate, and what its detector's last run left open.
struct CameraLane {
    sensor: SensorId,
    /// Its synchronizer member.
    topic: usize,
    model: CameraModel,
    gate: DetectorGate,
    /// Its newest frame, for a radar-led set.
    recent: Option<(StampNs, Arc<Rgb8>, Option<Intrinsics>)>,
    /// The detector's last run left a box no LiDAR/radar object explains: an open question
    /// the next frame must answer (event_driven), or sensor_disagreement would be late.
    open: bool,
    /// Tracks this camera was checked against and missed at its last run: open questions too
    /// (a sensor_disagreement building up must get every frame).
    missed: Vec<u32>,
}

impl CameraLane {
    fn restart(&mut self) {
        self.recent = None;
        self.gate.reset();
        self.open = false;
        self.missed.clear();
    }

    /// Fully inside the image with a margin: a box cut by the border may be legitimately
    /// missed.
    fn fully_inside(&self, r: &[f32; 4]) -> bool {
        r[0] > 4.0 && r[1] > 4.0 && (r[2] as f64) < self.model.width - 4.0 && (r[3] as f64) < self.model.height - 4.0
    }
}

/// The share of `inner`'s area that lies inside `outer`.
fn covered_share(inner: &[f32; 4], outer: &[f32; 4]) -> f32 {
    let w = (inner[2].min(outer[2]) - inner[0].max(outer[0])).max(0.0);
    let h = (inner[3].min(outer[3]) - inner[1].max(outer[1])).max(0.0);
    let area = (inner[2] - inner[0]).max(0.0) * (inner[3] - inner[1]).max(0.0);
    if area > 0.0 {
        w * h / area
    } else {
        0.0
    }
}

/// What association made of one set.
struct Association {
    detections: Vec<Detection>,
    /// Per camera: its boxes no known object explains.
    unexplained: Vec<Vec<[f32; 4]>>,
    /// Camera class votes the LiDAR box's extent contradicts: (label, "ruled_out" | "undersized").
    inconsistent: Vec<(Label, &'static str)>,
}

/// A camera box and a projected 3D box show the same object: they overlap by `min_iou`, or
/// the camera box's centre lies inside the projection (small, far objects, where a few
/// decimetres of range error move the projection by a box width).
fn same_object(camera: &[f32; 4], projected: &[f32; 4], min_iou: f32) -> bool {
    let (cx, cy) = ((camera[0] + camera[2]) / 2.0, (camera[1] + camera[3]) / 2.0);
    let (mx, my) = ((projected[2] - projected[0]) * 0.25, (projected[3] - projected[1]) * 0.25);
    iou(camera, projected) >= min_iou
        || (cx >= projected[0] - mx && cx <= projected[2] + mx && cy >= projected[1] - my && cy <= projected[3] + my)
}

/// The class a LiDAR box's shape suggests (before any camera evidence): low confidence.
pub fn geometric_label(b: &ObjectBox) -> Label {
    let footprint = b.size[0].max(b.size[1]);
    if footprint >= 1.6 && b.size[2] >= 0.8 {
        Label::Vehicle
    } else if b.size[2] >= 0.95 && footprint < 1.2 {
        Label::Person
    } else if b.size[2] >= 0.3 {
        Label::Obstacle
    } else {
        Label::Unknown
    }
}

/// Typical length and width of a class (m): what a box seen from one side is completed to.
fn class_prior(label: Label) -> Option<[f64; 2]> {
    match label {
        Label::Vehicle => Some([4.5, 1.9]),
        Label::Person => Some([0.5, 0.6]),
        Label::Obstacle => Some([0.8, 0.8]),
        Label::Unknown => None,
    }
}

/// Amodal completion: a LiDAR box covers only the faces the sensor saw, so its centre sits
/// short of the object's. With a class prior, push the centre away from the sensor (along
/// the line of sight from the base origin) by half the missing depth, and grow the box to
/// the prior. A face narrower than the prior's length is taken as the front or rear.
pub fn complete_box(b: &ObjectBox, label: Label) -> ObjectBox {
    let Some([len, wid]) = class_prior(label) else { return b.clone() };
    let los = b.center[1].atan2(b.center[0]);
    let rel = b.yaw - los;
    let (c, s) = (rel.cos().abs(), rel.sin().abs());
    let depth = b.size[0] * c + b.size[1] * s;
    let lateral = b.size[0] * s + b.size[1] * c;
    let (depth_prior, yaw, size) = if lateral < 0.5 * (len + wid) {
        // Seeing the narrow face: the object's length runs along the line of sight.
        (len, los, [len.max(depth), wid.max(lateral), b.size[2]])
    } else {
        let along_yaw = b.size[0] >= b.size[1];
        let (l, w) = if along_yaw { (b.size[0], b.size[1]) } else { (b.size[1], b.size[0]) };
        let yaw = if along_yaw { b.yaw } else { b.yaw + std::f64::consts::FRAC_PI_2 };
        (wid, yaw, [len.max(l), wid.max(w), b.size[2]])
    };
    let shift = (depth_prior - depth).max(0.0) / 2.0;
    ObjectBox {
        center: [b.center[0] + shift * los.cos(), b.center[1] + shift * los.sin(), b.center[2]],
        size,
        yaw,
        points: b.points,
    }
}

pub struct Pipeline {
    pub params: PipelineParams,
    /// The robot's declared sensors, and which of them the synchronizer's members are.
    sensors: SensorSet,
    members: Members,
    sync: DeadlineSync<Member>,
    imu: ImuBuffer,
    /// Every camera, in the sensor set's order (a [`CameraFrame::camera`] indexes this).
    cameras: Vec<CameraLane>,
    detector: Option<Box<dyn CameraDetector>>,
    tracker: Tracker,
    ego_speed: EgoSpeedEstimator,
    /// The ego's motion from odometry, filled by whoever reads the odometry stream.
    odometry: SharedOdometry,
    pub anomaly: AnomalyDetector,
    /// The camera detector checking itself against its training ranges.
    pub monitor: ModelMonitor,
    last_set: Option<StampNs>,
    last_lidar: Option<StampNs>,
    now: StampNs,
    /// Named counters (sets, partial sets by missing sensor, detector errors, ...).
    pub counters: BTreeMap<String, u64>,
    /// Why the camera detector could not be loaded, until the event that says so is out.
    detector_unavailable: Option<String>,
    /// Fill [`SetOutput::camera_views`] (a report or an annotated image asked for them).
    camera_views: bool,
}

/// Data time going back by more than this, on one stream, is a new timeline (a bag played
/// with --loop, a clock reset), not a late message.
pub const TIME_JUMP_NS: StampNs = 1_000_000_000;

/// IMU samples kept for interpolation at set stamps (2 s at 200 Hz).
const IMU_BUFFER: usize = 400;

fn sync_config(params: &PipelineParams, members: &Members) -> DeadlineConfig {
    DeadlineConfig {
        topics: members.sensors.len(),
        reference: *members.lead_order.first().expect("a sensor set has a LiDAR"),
        tolerance_ns: params.sync_tolerance_ns,
        deadline_ns: params.sync_wait_ns,
        buffer: 8,
    }
}

impl Pipeline {
    /// A pipeline for the sensors `calib` declares; a calibration that passed
    /// [`Calibration::load`] declares a set the pipeline handles, else this panics: check
    /// hand-built ones with [`Calibration::sensor_set`] first.
    pub fn new(params: PipelineParams, calib: &Calibration, detector: Option<Box<dyn CameraDetector>>) -> Self {
        let sensors = calib.sensor_set().expect("a checked calibration declares a sensor set the pipeline handles");
        params.check_sensors(&sensors).expect("parameters checked with PipelineParams::check_sensors");
        let members = Members::new(&sensors, &params.sync_reference);
        let sync = DeadlineSync::new(sync_config(&params, &members));
        let mut monitor = ModelMonitor::new(params.monitor, detector.as_ref().and_then(|d| d.training_ranges()));
        monitor.cameras = sensors.of_kind(Sensor::Camera).map(|id| sensors.name(id)).collect();
        let pose = |kind| calib.first(kind).expect("a checked set has one of each kind");
        let cameras = sensors
            .of_kind(Sensor::Camera)
            .map(|id| CameraLane {
                sensor: id,
                topic: members.topic(id, Sensor::Camera).expect("a camera is a member"),
                model: CameraModel::new(calib.sensor(sensors.name(id))),
                gate: DetectorGate::new(params.detector_gate.clone()),
                recent: None,
                open: false,
                missed: Vec::new(),
            })
            .collect();
        Self {
            sync,
            monitor,
            imu: ImuBuffer::new(IMU_BUFFER),
            cameras,
            detector,
            tracker: Tracker::new(params.tracker.clone()),
            // The first radar's Doppler, measured at its mount, gives the ego speed.
            ego_speed: EgoSpeedEstimator::new(params.ego_speed, pose(Sensor::Radar).translation),
            odometry: OdometryBuffer::shared(&calib.base_frame, OdometryParams::default()),
            anomaly: {
                let mut rules =
                    AnomalyDetector::with_sensors(params.anomaly, calib.safety_zones.clone(), sensors.clone());
                // A sensor that declares its own rate is judged silent by its own period.
                for id in sensors.ids() {
                    if let Some(hz) = calib.sensors.get(sensors.name(id)).and_then(|p| p.rate_hz) {
                        rules.set_expected_rate_hz(id, hz).expect("Calibration::check bounds rate_hz");
                    }
                }
                rules
            },
            sensors,
            members,
            last_set: None,
            last_lidar: None,
            now: i64::MIN,
            counters: BTreeMap::new(),
            detector_unavailable: None,
            camera_views: false,
            params,
        }
    }

    /// The robot's declared sensors, whose ids [`Input`]s carry.
    pub fn sensors(&self) -> &SensorSet {
        &self.sensors
    }

    /// Whether each set carries its [`CameraView`]s (off by default: only a report or an
    /// annotated image reads it, and the projections cost time on the fusion thread).
    pub fn keep_camera_views(&mut self, on: bool) {
        self.camera_views = on;
    }

    /// The odometry buffer, for a subscriber on another thread to fill (it is shared, as a
    /// tf2 buffer is between its listener and its users).
    pub fn odometry(&self) -> SharedOdometry {
        self.odometry.clone()
    }

    /// One odometry message, in arrival order with the sensors' (a replay); counted in the
    /// buffer's counters.
    pub fn push_odometry(&mut self, sample: &OdometrySample) -> Result<bool, OdometryError> {
        self.odometry.lock().expect("odometry buffer").push(sample)
    }

    fn odometry_at(&self, stamp: StampNs) -> Option<EgoOdometry> {
        self.odometry.lock().expect("odometry buffer").at(stamp)
    }

    /// A new timeline: `stamp` takes its stream back by more than [`TIME_JUMP_NS`] (and
    /// behind the pipeline's time: a bag played with --loop, a clock reset), or takes data
    /// time forward by more than that in one step while every stream was live (a seek in the
    /// bag, a recording cut, a node that was stopped). The synchronizer, IMU buffer, tracker
    /// and rules start over, and one `time_jump` event (INFO) says so. A late message of a
    /// stalled stream is newer than its own stream's last one, so it never restarts
    /// anything; a stream coming back from a dropout is a recovery, not a jump.
    fn follow_timeline(&mut self, sensor: SensorId, stamp: StampNs) -> Option<Event> {
        if self.now == StampNs::MIN {
            return None;
        }
        let back = self.anomaly.last_seen(sensor).is_some_and(|newest| {
            stamp < newest.saturating_sub(TIME_JUMP_NS) && stamp < self.now.saturating_sub(TIME_JUMP_NS)
        });
        let forward = stamp > self.now.saturating_add(TIME_JUMP_NS) && !self.anomaly.any_dropout_active();
        if !back && !forward {
            return None;
        }
        let previous = self.now;
        self.sync = DeadlineSync::new(sync_config(&self.params, &self.members));
        self.imu = ImuBuffer::new(IMU_BUFFER);
        self.tracker = Tracker::new(self.params.tracker.clone());
        self.ego_speed = self.ego_speed.restarted();
        self.last_set = None;
        self.last_lidar = None;
        self.cameras.iter_mut().for_each(CameraLane::restart);
        self.now = stamp;
        self.count("time_jumps");
        Some(self.anomaly.restart_timeline(sensor, stamp, previous, TIME_JUMP_NS))
    }

    /// Time advanced by the clock without data. A leap of more than [`TIME_JUMP_NS`] (a /clock
    /// seek; the node's own ticks come every few milliseconds) is not taken: the data after
    /// it decides whether this is a new timeline, instead of every stream being declared
    /// silent for time that was skipped.
    fn advance_clock(&mut self, now: StampNs) -> bool {
        if self.now != StampNs::MIN && now > self.now.saturating_add(TIME_JUMP_NS) {
            self.count("clock_leaps_waited_out");
            return false;
        }
        self.now = self.now.max(now);
        true
    }

    /// The node started without its camera detector (missing or corrupted model): objects
    /// come from LiDAR and radar alone, and the first processed set raises one
    /// `model_degraded` event (`detector_unavailable`, ERROR) with `why` as evidence, so
    /// whoever reads the events knows the classes are missing and why.
    pub fn set_detector_unavailable(&mut self, why: String) {
        self.detector_unavailable = Some(why);
    }

    pub fn detector_name(&self) -> Option<&str> {
        self.detector.as_deref().map(|d| d.name())
    }

    fn count(&mut self, key: &str) {
        *self.counters.entry(key.to_string()).or_default() += 1;
    }

    /// The dropout rule at the pipeline's time, and the synchronizer told what it found:
    /// sets do not wait for a sensor in dropout (without this, while the camera (say) is dead
    /// every set would wait for it until `sync.wait_ms` and miss the 50 ms target). A stream
    /// that has not started yet is still waited for (a bag's first instants).
    fn check_dropouts(&mut self) -> Vec<Event> {
        let events = self.anomaly.check_dropouts(self.now);
        let states = self.anomaly.stream_states();
        for (topic, sensor) in self.members.sensors.iter().enumerate() {
            self.sync.set_awaited(topic, states[sensor.index()] != StreamState::Silent);
        }
        // The reference is the first LiDAR that is delivering, else the first not in dropout:
        // a robot with a second LiDAR keeps LiDAR-led sets when one goes silent or never
        // starts (a declared LiDAR that is unplugged must not stop every set), and radar
        // leads only when no LiDAR delivers at all.
        let lidars = self.members.lead_order.iter().copied();
        let state = |t: &usize| states[self.members.sensors[*t].index()];
        let delivering = lidars.clone().find(|t| matches!(state(t), StreamState::Receiving | StreamState::Recovering));
        let live = delivering.or_else(|| lidars.clone().find(|t| state(t) != StreamState::Silent));
        if let Some(reference) = live.or_else(|| lidars.clone().next()) {
            if reference != self.sync.reference() {
                self.sync.set_reference(reference);
                self.count(&format!("sync.reference.{}", self.members.names[reference]));
            }
        }
        events
    }

    /// Feeds one message (in arrival order); returns the sets it released, fully processed
    /// on the calling thread, and the events.
    pub fn push(&mut self, input: Input) -> Step {
        let mut events = vec![];
        let jobs = self.release(input, &mut events);
        let mut step = self.run_jobs(jobs, events);
        step.events.extend(self.check_dropouts());
        step
    }

    /// Advances time without data (a node's timer): partial sets and dropouts at `now`.
    pub fn tick(&mut self, now: StampNs) -> Step {
        if !self.advance_clock(now) {
            return Step { sets: vec![], events: vec![] };
        }
        let jobs: Vec<SetJob> = self.sync.poll(self.now).into_iter().map(|set| self.job(set)).collect();
        let mut step = self.run_jobs(jobs, vec![]);
        step.events.extend(self.check_dropouts());
        step
    }

    fn run_jobs(&mut self, jobs: Vec<SetJob>, events: Vec<Event>) -> Step {
        let mut step = Step { sets: vec![], events };
        for job in jobs {
            step.extend(self.process(job));
        }
        step
    }

    /// As [`Pipeline::push`], but the released sets come back as jobs for a scheduler, which
    /// runs their perception stages where it likes and hands each to [`Pipeline::fuse`] in
    /// stamp order (or sheds it). Message-level rules run here; their events come back.
    pub fn push_jobs(&mut self, input: Input) -> (Vec<SetJob>, Vec<Event>) {
        let mut events = vec![];
        let jobs = self.release(input, &mut events);
        events.extend(self.check_dropouts());
        (jobs, events)
    }

    /// Message-level work (rules on single messages, IMU buffer, synchronizer): the sets
    /// this message released, as jobs.
    fn release(&mut self, input: Input, events: &mut Vec<Event>) -> Vec<SetJob> {
        let (sensor, stamp) = (input.sensor(), input.stamp());
        // An input must come from a declared sensor of its own kind (a node wired to the
        // wrong id would otherwise corrupt another sensor's state).
        let kind = match &input {
            Input::Camera { .. } => Sensor::Camera,
            Input::Lidar { .. } => Sensor::Lidar,
            Input::Radar { .. } => Sensor::Radar,
            Input::Imu(..) => Sensor::Imu,
        };
        if sensor.index() >= self.sensors.len() || self.sensors.kind(sensor) != kind {
            self.count(&format!("input.rejected.undeclared_{kind}"));
            return vec![];
        }
        events.extend(self.follow_timeline(sensor, stamp));
        self.now = self.now.max(stamp);
        let topic = self.members.topic(sensor, kind);
        let released = match input {
            Input::Imu(_, s) => {
                events.extend(self.anomaly.on_message(sensor, s.stamp));
                if self.imu.push(s).is_err() {
                    self.count("imu.out_of_order");
                }
                events.extend(self.anomaly.on_imu(s.stamp, s.linear_acceleration.into()));
                self.sync.poll(self.now)
            }
            Input::Camera { stamp, image, intrinsics, .. } => {
                events.extend(self.anomaly.on_message(sensor, stamp));
                events.extend(self.anomaly.on_camera_frame(sensor, stamp, &image));
                let topic = topic.expect("a camera is a member");
                if let Some(lane) = self.cameras.iter_mut().find(|c| c.topic == topic) {
                    lane.recent = Some((stamp, image.clone(), intrinsics));
                }
                self.sync.add(topic, stamp, Member::Camera(image, intrinsics))
            }
            Input::Lidar { stamp, points, non_finite, total, .. } => {
                events.extend(self.anomaly.on_message(sensor, stamp));
                events.extend(self.anomaly.on_lidar_health(sensor, stamp, non_finite, total));
                // Radar leads sets only when no LiDAR at all has come for a while.
                self.last_lidar = Some(stamp);
                self.sync.add(topic.expect("a LiDAR is a member"), stamp, Member::Lidar(points))
            }
            Input::Radar { stamp, targets, .. } => {
                events.extend(self.anomaly.on_message(sensor, stamp));
                let topic = topic.expect("a radar is a member");
                let leads = Some(topic) == self.members.first(Sensor::Radar);
                let lidar_lost = self.last_lidar.is_none_or(|l| stamp - l > self.params.reference_lost_ns);
                let due = self
                    .last_set
                    .is_none_or(|l| stamp - l >= self.params.set_period_ns - self.params.sync_tolerance_ns);
                let mut out = self.sync.add(topic, stamp, Member::Radar(targets.clone()));
                if leads && lidar_lost && due && self.sync.pending() == 0 {
                    // The reference is gone: keep tracking on radar (and camera) alone.
                    out.push(self.radar_led_set(topic, stamp, targets));
                    self.count("sets.radar_led");
                }
                out
            }
        };
        released.into_iter().map(|set| self.job(set)).collect()
    }

    /// A set led by the first radar's scan while the reference LiDAR is silent: the scan,
    /// each camera's recent frame when it is within tolerance, every other member missing.
    fn radar_led_set(&self, topic: usize, stamp: StampNs, targets: Arc<Vec<RadarTarget>>) -> SyncSet<Member> {
        let mut members: Vec<Option<(StampNs, Member)>> = vec![None; self.members.sensors.len()];
        members[topic] = Some((stamp, Member::Radar(targets)));
        for lane in &self.cameras {
            members[lane.topic] = lane
                .recent
                .as_ref()
                .filter(|(t, _, _)| (t - stamp).abs() <= self.params.sync_tolerance_ns)
                .map(|(t, img, intrinsics)| (*t, Member::Camera(img.clone(), *intrinsics)));
        }
        let missing = (0..members.len()).filter(|k| members[*k].is_none()).collect();
        SyncSet { stamp, members, partial: true, missing }
    }

    /// As [`Pipeline::tick`], returning jobs.
    pub fn tick_jobs(&mut self, now: StampNs) -> (Vec<SetJob>, Vec<Event>) {
        if !self.advance_clock(now) {
            return (vec![], vec![]);
        }
        let released = self.sync.poll(self.now);
        let jobs = released.into_iter().map(|set| self.job(set)).collect();
        (jobs, self.check_dropouts())
    }

    /// Whether a running pipeline takes a new value of this parameter (`ros2 param set`):
    /// the anomaly rules read their thresholds at every set. Everything else shapes state
    /// built at start (synchronizer, tracker, clustering, the workers' copies) and takes a
    /// restart.
    pub fn is_live_param(name: &str) -> bool {
        name.starts_with("anomaly.") && PipelineParams::NAMES.contains(&name)
    }

    /// A new value for a live parameter, from the next set on; the rules' state (an event
    /// already raised, a run being counted) is kept.
    pub fn set_live_param(&mut self, name: &str, value: f64) -> Result<(), String> {
        if !Self::is_live_param(name) {
            return Err(format!("{name} is read at start-up only"));
        }
        self.params.set(name, value)?;
        self.anomaly.params = self.params.anomaly;
        Ok(())
    }

    /// The camera detector, for a scheduler that runs it on its own thread.
    pub fn take_detector(&mut self) -> Option<Box<dyn CameraDetector>> {
        self.detector.take()
    }

    /// Hard-deadline bookkeeping for deadline_overrun: the caller says whether a set's
    /// work missed its hard deadline (a node measures this against its clock).
    pub fn report_deadline(&mut self, stamp: StampNs, missed_hard: bool) -> Vec<Event> {
        self.anomaly.on_deadline(stamp, missed_hard, self.params.hard_deadline_ns)
    }

    fn yaw_rate_at(&self, t: StampNs) -> f64 {
        self.angular_velocity_at(t).z
    }

    /// The base's angular velocity at `t`: the IMU's, else (a robot without one, or before its
    /// first sample) the odometry's, else none.
    fn angular_velocity_at(&self, t: StampNs) -> Vector3<f64> {
        match self.imu.at(t).or_else(|| self.imu_latest()) {
            Some(s) => s.angular_velocity,
            None => self.odometry_at(t).map(|o| o.angular).unwrap_or_default(),
        }
    }

    fn imu_latest(&self) -> Option<ImuState> {
        self.imu.newest()
    }

    /// A released set as a job for its stages: the IMU's angular velocity at its stamp is
    /// read now, while the buffer covers it, so the stages need nothing of the pipeline.
    fn job(&mut self, set: SyncSet<Member>) -> SetJob {
        let t = set.stamp;
        let newest = set.members.iter().flatten().map(|(s, _)| *s).max().unwrap_or(t);
        let omega = self.angular_velocity_at(t);
        let mut job = SetJob {
            stamp: t,
            newest_stamp: newest,
            set,
            kinds: self.members.kinds.clone(),
            names: self.members.names.clone(),
            omega,
            velocity: Vector3::zeros(),
            cameras: vec![],
        };
        // The sweep is deskewed to the set's stamp (a LiDAR-led set's is its reference sweep's).
        job.velocity = self.odometry_at(t).map(|o| o.velocity).unwrap_or_default();
        for camera in 0..self.cameras.len() {
            let Some((stamp, Member::Camera(image, intrinsics))) = &job.set.members[self.cameras[camera].topic] else {
                continue;
            };
            let (stamp, image, intrinsics) = (*stamp, image.clone(), *intrinsics);
            let (run_detector, gate_reason) = self.gate_frame(camera, stamp, &image);
            let sensor = self.cameras[camera].sensor;
            job.cameras.push(CameraFrame { camera, sensor, stamp, image, intrinsics, run_detector, gate_reason });
        }
        job
    }

    /// Asks the detector gate about a set's frame, from the tracks as of the last fused set
    /// (under the EDF scheduler that may be a set or two behind). A skip is counted here; a
    /// run when the detector's answer comes back (`fuse_set`), since the scheduler may still
    /// leave the detector out. every_frame counts nothing, as before.
    fn gate_frame(&mut self, camera: usize, stamp: StampNs, image: &Rgb8) -> (bool, Option<RunReason>) {
        if self.params.detector_gate.mode == DetectorMode::EveryFrame {
            return (true, None);
        }
        let in_view = self.tracks_in_view(&self.cameras[camera]);
        let lane = &mut self.cameras[camera];
        let reason = lane.gate.decide(stamp, image, &in_view, lane.open);
        if reason.is_none() {
            self.count("detector_gate.skipped");
        }
        (reason.is_some(), reason)
    }

    /// Confirmed tracks whose image projection falls in one camera's frame, with what the
    /// detector gate weighs: ground motion, and whether the camera still owes them a label.
    fn tracks_in_view(&self, lane: &CameraLane) -> Vec<TrackInView> {
        let (w, h) = (lane.model.width, lane.model.height);
        self.tracker
            .tracks()
            .iter()
            .filter(|tr| tr.confirmed(&self.params.tracker))
            .filter_map(|tr| {
                let r = lane.model.project_standing([tr.state[0], tr.state[1], tr.z], tr.size, tr.yaw)?;
                let visible = r[2] > 0.0 && r[3] > 0.0 && (r[0] as f64) < w && (r[1] as f64) < h;
                visible.then(|| TrackInView {
                    id: tr.id,
                    ground_speed: tr.ground_speed().unwrap_or(0.0),
                    unanswered: lane.missed.contains(&tr.id)
                        || (tr.camera_votes < self.params.detector_gate.settled_votes
                            && tr.sensors & SENSOR_LIDAR != 0),
                })
            })
            .collect()
    }

    /// All stages of one set on the calling thread, in order (replay, tests, FIFO baseline).
    fn process(&mut self, job: SetJob) -> Step {
        let mut perception = Perception::default();
        let lap = Instant::now();
        perception.lidar = job.lidar().map(|points| lidar_stage(&self.params, job.omega, job.velocity, &points, false));
        perception.times.lidar_us = lap.elapsed().as_micros() as u64;
        let lap = Instant::now();
        perception.radar = job.radar().map(|targets| radar_stage(&self.params, &targets));
        perception.times.radar_us = lap.elapsed().as_micros() as u64;
        let lap = Instant::now();
        if let Some(det) = self.detector.as_mut().filter(|_| job.wants_detector()) {
            perception.cameras = detector_stage(det.as_mut(), &job.detector_frames());
        }
        perception.times.camera_us = lap.elapsed().as_micros() as u64;
        self.fuse(job, perception)
    }

    /// The sequential end of a set's work, in stamp order: association, tracking, anomaly
    /// rules. `perception` holds what the (possibly parallel, possibly skipped) perception
    /// stages made of the set.
    pub fn fuse(&mut self, job: SetJob, perception: Perception) -> Step {
        let unavailable = self.detector_unavailable.take().map(|why| self.anomaly.detector_unavailable(job.stamp, why));
        let mut step = self.fuse_set(job, perception);
        step.events.splice(0..0, unavailable);
        step
    }

    fn fuse_set(&mut self, job: SetJob, perception: Perception) -> Step {
        let mut times = StageTimes {
            lidar_us: perception.times.lidar_us,
            radar_us: perception.times.radar_us,
            camera_us: perception.times.camera_us,
            ..StageTimes::default()
        };
        let clock = Instant::now();
        let t = job.stamp;
        self.count("sets");
        for frame in &job.cameras {
            if let Some(intrinsics) = &frame.intrinsics {
                self.cameras[frame.camera].model.set_intrinsics(intrinsics);
            }
        }
        for name in job.missing() {
            self.count(&format!("sets.partial.missing_{name}"));
        }
        let dt = self.last_set.map(|l| (t - l) as f64 * 1e-9).unwrap_or(0.1).clamp(1e-3, 1.0);
        // Heading change since the last set: from the IMU orientation when it covers both
        // stamps, else its yaw rate times dt; a robot without an IMU (none has come yet) turns
        // its tracks by the odometry's headings, as [`Pipeline::angular_velocity_at`] rules.
        // The odometry at the set's stamp, looked up once for the heading and the ego's motion.
        let odometry = self.odometry_at(t);
        let odometry_turn = |l| {
            let (from, to) = (self.odometry_at(l)?, odometry.as_ref()?);
            Some((from.orientation.inverse() * to.orientation).euler_angles().2)
        };
        let dyaw = match self.last_set.map(|l| (l, self.imu.rotation_between(l, t))) {
            Some((_, Ok(r))) => r.euler_angles().2,
            Some((l, Err(_))) if self.imu_latest().is_none() => {
                odometry_turn(l).unwrap_or_else(|| self.yaw_rate_at(t) * dt)
            }
            _ => self.yaw_rate_at(t) * dt,
        };
        self.last_set = Some(t);
        if let Some((radar_stamp, targets)) = job.radar_stamped() {
            let yaw_rate = self.yaw_rate_at(radar_stamp);
            self.ego_speed.update(radar_stamp, &targets, yaw_rate);
        }
        // The ego's motion: odometry where it covers the set, else the radar's Doppler
        // (forward speed only).
        let (ego_velocity, velocity_source) = match &odometry {
            Some(o) => {
                self.count("ego_speed.from_odometry");
                (Some([o.velocity.x, o.velocity.y]), EgoSource::Odometry)
            }
            None => (self.ego_speed.at(t).map(|e| [e.speed, 0.0]), EgoSource::Radar),
        };
        let ego_speed = ego_velocity.map(|v| v[0]);
        if ego_speed.is_none() {
            // Labels then go without motion: too few static radar returns agreed (or no radar).
            self.count("ego_speed.unknown");
        }
        times.imu_us = clock.elapsed().as_micros() as u64;

        let mut lap = Instant::now();
        let lidar_boxes = perception.lidar.unwrap_or_default();
        let radar = perception.radar.unwrap_or_default();
        // The cameras whose frame the gate passed over: the tracks in their view carry the
        // camera's labels, and the LiDAR boxes there cast no shape vote that the camera would
        // have replaced (boxes no such camera sees keep their shape vote).
        let gated_out: Vec<usize> = job.cameras.iter().filter(|f| !f.run_detector).map(|f| f.camera).collect();
        // Per camera: the detector's boxes above the score floor, None where it did not run
        // on a frame of that camera (no frame, gated out, shed, failed).
        let mut cameras: Vec<Option<Vec<Detection2d>>> = vec![None; self.cameras.len()];
        for (camera, result) in perception.cameras {
            match result {
                Ok(d) => {
                    let frame = job.cameras.iter().find(|f| f.camera == camera);
                    if let Some((frame, reason)) = frame.and_then(|f| Some((f, f.gate_reason?))) {
                        self.cameras[camera].gate.ran(frame.stamp, &frame.image);
                        self.count(&format!("detector_gate.ran.{}", reason.as_str()));
                    }
                    let min = self.params.camera_min_score;
                    cameras[camera] = Some(d.into_iter().filter(|d| d.score >= min).collect());
                }
                Err(e) => {
                    tracing::warn!("camera detector failed on {}: {e}", self.sensors.name(self.cameras[camera].sensor));
                    self.count("camera.detector_errors");
                }
            }
        }
        let Association { detections, mut unexplained, inconsistent } =
            self.associate(&lidar_boxes, &radar, &cameras, job.has_lidar(), &gated_out);
        for (label, why) in inconsistent {
            self.count(&format!("label.camera_{why}.{}", label.as_str()));
        }
        times.associate_us = lap.elapsed().as_micros() as u64;
        lap = Instant::now();
        self.tracker.step(
            dt,
            EgoMotion { dyaw, velocity: ego_velocity, velocity_source, ..EgoMotion::default() },
            &detections,
        );
        times.track_us = lap.elapsed().as_micros() as u64;
        lap = Instant::now();

        let mut objects = vec![];
        let mut views = vec![];
        for tr in self.tracker.tracks() {
            if !tr.confirmed(&self.params.tracker) || tr.misses > self.params.publish_max_misses {
                continue;
            }
            let (label, confidence) = self.params.class_priors.track_label(&tr.votes, tr.ground_speed(), tr.size);
            let view = TrackView {
                id: tr.id,
                label,
                position: tr.position(),
                z: tr.z,
                size: tr.size,
                rel_velocity: tr.velocity(),
                sensors: tr.sensors,
            };
            let ttc = crate::anomaly::time_to_collision(&view, &self.params.anomaly);
            objects.push(FusedObject {
                track_id: tr.id,
                label,
                confidence,
                center: [tr.state[0], tr.state[1], tr.z],
                yaw: tr.yaw,
                size: tr.size,
                velocity: tr.velocity(),
                ground_velocity: ego_velocity.map(|e| tr.ground_velocity_now(e)),
                odom_velocity: odometry.as_ref().zip(ego_velocity).map(|(o, e)| o.to_odom(tr.ground_velocity_now(e))),
                sensors: tr.sensors,
                age: tr.age,
                time_to_collision: ttc.is_finite().then_some(ttc),
            });
            views.push(view);
        }
        let mut step = Step::default();
        step.events.extend(self.anomaly.on_tracks(t, &views));
        let mut camera_views = vec![];
        for frame in &job.cameras {
            let camera = frame.camera;
            let dets = cameras[camera].take();
            let lane_unexplained = std::mem::take(&mut unexplained[camera]);
            let (checks_events, view) =
                self.camera_checks(t, camera, frame, dets, lane_unexplained, &views, &objects, &lidar_boxes);
            step.events.extend(checks_events);
            camera_views.extend(view);
        }
        times.rules_us = lap.elapsed().as_micros() as u64;
        step.sets.push(SetOutput {
            stamp: t,
            newest_stamp: job.newest_stamp,
            partial: job.set.partial,
            missing: job.missing(),
            ego_speed,
            odom_frame: odometry.map(|o| o.frame_id),
            objects,
            times,
            camera_views,
        });
        step
    }

    /// One camera's share of a set's rules: its detections weighed against every track
    /// (sensor_disagreement in its field of view), the gate's open questions, the model
    /// monitor, and the frame's view for a report.
    #[allow(clippy::too_many_arguments)]
    fn camera_checks(
        &mut self,
        t: StampNs,
        camera: usize,
        frame: &CameraFrame,
        dets: Option<Vec<Detection2d>>,
        mut unexplained: Vec<[f32; 4]>,
        views: &[TrackView],
        objects: &[FusedObject],
        lidar_boxes: &[ObjectBox],
    ) -> (Vec<Event>, Option<CameraView>) {
        // A frame the detector did not run on (gated out, shed, failed) has nothing to weigh:
        // without a view to draw, no track needs projecting into it.
        if dets.is_none() && !self.camera_views {
            return (vec![], None);
        }
        let mut events = vec![];
        let lane = &self.cameras[camera];
        // Where every track (confirmed or not, seen this set or coasting) lands in the image,
        // with its range: the objects the camera's evidence is weighed against.
        let track_rects: Vec<(u32, f64, [f32; 4])> = self
            .tracker
            .tracks()
            .iter()
            .filter_map(|tr| {
                let center = [tr.state[0], tr.state[1], tr.z];
                let rect = lane.model.project_standing(center, tr.size, tr.yaw)?;
                Some((tr.id, tr.state[0].hypot(tr.state[1]), rect))
            })
            .collect();
        let explained = self.params.camera_explained_overlap;
        unexplained.retain(|b| !track_rects.iter().any(|(_, _, r)| covered_share(b, r) >= explained));
        if dets.is_some() {
            let min_px = self.params.disagreement_min_box_px;
            let lane = &mut self.cameras[camera];
            lane.open = unexplained.iter().any(|b| b[3] - b[1] >= min_px);
            lane.missed.clear();
        }
        let lane = &self.cameras[camera];
        // A blinded or frozen camera is already reported as degraded: not compared.
        if let Some(dets) = dets.as_ref().filter(|_| !self.anomaly.camera_degraded(lane.sensor)) {
            let checks: Vec<CameraCheck> = views
                .iter()
                .filter(|v| v.sensors & (SENSOR_LIDAR | SENSOR_RADAR) == SENSOR_LIDAR | SENSOR_RADAR)
                .filter(|v| v.position[0].hypot(v.position[1]) <= self.params.disagreement_range)
                .filter_map(|v| {
                    let range = v.position[0].hypot(v.position[1]);
                    let (_, _, r) = *track_rects.iter().find(|(id, _, _)| *id == v.id)?;
                    // Hidden behind a nearer known object: the camera cannot see it.
                    let occluded = track_rects
                        .iter()
                        .any(|(id, d, o)| *id != v.id && *d < range - 0.5 && covered_share(&r, o) >= 0.5);
                    if occluded {
                        return None;
                    }
                    lane.fully_inside(&r).then(|| CameraCheck {
                        track_id: v.id,
                        position: v.position,
                        // Seen by this camera now, or given its class by any camera: a track
                        // labelled by another camera is not this one's miss.
                        seen_by_camera: v.sensors & SENSOR_CAMERA != 0
                            || dets.iter().any(|d| same_object(&d.bbox, &r, self.params.camera_min_iou)),
                    })
                })
                .collect();
            let sensor = lane.sensor;
            events.extend(self.anomaly.on_camera_checks(sensor, t, &checks, &unexplained));
            self.cameras[camera].missed = checks.iter().filter(|c| !c.seen_by_camera).map(|c| c.track_id).collect();
            let scores: Vec<f32> = dets.iter().map(|d| d.score).collect();
            let agreed = checks.iter().filter(|c| c.seen_by_camera).count();
            if let Some(e) = self.monitor.on_frame(t, &frame.image, &scores, checks.len(), agreed) {
                events.push(self.anomaly.number(e));
            }
        }
        let lane = &self.cameras[camera];
        let view = self.camera_views.then(|| CameraView {
            camera: self.sensors.name(lane.sensor),
            stamp: frame.stamp,
            image: frame.image.clone(),
            detections: dets,
            lidar_boxes: lidar_boxes
                .iter()
                .filter_map(|b| lane.model.project_standing(b.center, b.size, b.yaw))
                .collect(),
            tracks: track_rects
                .iter()
                .filter(|(id, _, _)| objects.iter().any(|o| o.track_id == *id))
                .map(|(id, _, r)| (*id, *r))
                .collect(),
        });
        (events, view)
    }

    /// Camera↔LiDAR↔radar association through the calibration. LiDAR boxes are the
    /// primary hypotheses: a radar object inside one confirms it; a camera box overlapping
    /// its projection in that camera's image names its class (the first camera in the set's
    /// order whose detections match; cameras whose views overlap agree or the first wins).
    /// Without LiDAR, radar objects stand alone. Returns the detections for the tracker and,
    /// per camera, the boxes nothing else explains.
    fn associate(
        &self,
        boxes: &[ObjectBox],
        radar: &[RadarObject],
        cameras: &[Option<Vec<Detection2d>>],
        have_lidar: bool,
        gated_out: &[usize],
    ) -> Association {
        let p = &self.params;
        let mut radar_used = vec![false; radar.len()];
        let mut camera_used: Vec<Vec<bool>> =
            cameras.iter().map(|c| vec![false; c.as_ref().map_or(0, |c| c.len())]).collect();
        let mut out = vec![];
        let mut inconsistent = vec![];
        // Per camera: where every LiDAR box (completed) and radar object lands in its image:
        // a camera box inside one is part of a known object even when another box was
        // matched to it.
        let mut known_rects: Vec<Vec<[f32; 4]>> = vec![vec![]; cameras.len()];
        for seen in boxes {
            let b = &complete_box(seen, geometric_label(seen));
            for (lane, known) in self.cameras.iter().zip(known_rects.iter_mut()) {
                known.extend(lane.model.project_standing(b.center, b.size, b.yaw));
            }
            let gated_out =
                gated_out.iter().any(|c| self.cameras[*c].model.project_standing(b.center, b.size, b.yaw).is_some());
            let mut d = Detection {
                position: [b.center[0], b.center[1]],
                size: b.size,
                z: b.center[2],
                yaw: b.yaw,
                label: if gated_out { Label::Unknown } else { geometric_label(seen) },
                confidence: 0.3,
                sensors: SENSOR_LIDAR,
            };
            let reach = b.size[0].max(b.size[1]) / 2.0 + p.radar_margin;
            for (i, r) in radar.iter().enumerate() {
                if (r.center[0] - b.center[0]).hypot(r.center[1] - b.center[1]) <= reach {
                    radar_used[i] = true;
                    d.sensors |= SENSOR_RADAR;
                }
            }
            for ((lane, cam), used) in self.cameras.iter().zip(cameras).zip(camera_used.iter_mut()) {
                let (Some(cam), Some(rect)) = (cam, lane.model.project_standing(b.center, b.size, b.yaw)) else {
                    continue;
                };
                let best = cam
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| !used[*i] && same_object(&c.bbox, &rect, p.camera_min_iou))
                    .map(|(i, c)| (i, iou(&c.bbox, &rect)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                let Some((i, _)) = best else { continue };
                used[i] = true;
                d.sensors |= SENSOR_CAMERA;
                // The camera names the class unless the box's extent rules it out.
                match p.class_priors.fit(cam[i].label, seen) {
                    Fit::RuledOut => inconsistent.push((cam[i].label, "ruled_out")),
                    fit => {
                        if fit == Fit::Undersized {
                            inconsistent.push((cam[i].label, "undersized"));
                        }
                        d.label = cam[i].label;
                        d.confidence = cam[i].score * p.class_priors.camera_weight(cam[i].label, seen);
                    }
                }
                break;
            }
            out.push(d);
        }
        for (i, r) in radar.iter().enumerate() {
            if radar_used[i] || have_lidar || r.targets < p.radar_min_targets {
                continue;
            }
            let size = [1.0, 1.0, 1.5];
            let mut d = Detection {
                position: [r.center[0], r.center[1]],
                size,
                z: 0.75,
                yaw: 0.0,
                label: Label::Unknown,
                confidence: 0.2,
                sensors: SENSOR_RADAR,
            };
            for ((lane, cam), used) in self.cameras.iter().zip(cameras).zip(camera_used.iter_mut()) {
                let (Some(cam), Some(rect)) = (cam, lane.model.project([r.center[0], r.center[1], 0.75], size, 0.0))
                else {
                    continue;
                };
                if let Some(i) = (0..cam.len()).find(|&i| !used[i] && iou(&cam[i].bbox, &rect) >= p.camera_min_iou) {
                    used[i] = true;
                    d.sensors |= SENSOR_CAMERA;
                    d.label = cam[i].label;
                    d.confidence = cam[i].score;
                    break;
                }
            }
            out.push(d);
        }
        // Camera boxes no LiDAR box or radar object explains (only meaningful with LiDAR).
        let mut unexplained = vec![vec![]; cameras.len()];
        for (camera, (lane, cam)) in self.cameras.iter().zip(cameras).enumerate() {
            let (Some(cam), true) = (cam, have_lidar) else { continue };
            let known = &mut known_rects[camera];
            known.extend(
                radar.iter().filter_map(|r| lane.model.project([r.center[0], r.center[1], 0.75], [1.0, 1.0, 1.5], 0.0)),
            );
            for (i, c) in cam.iter().enumerate() {
                if camera_used[camera][i] || c.bbox[3] - c.bbox[1] < p.disagreement_min_box_px {
                    continue;
                }
                if !known.iter().any(|rect| covered_share(&c.bbox, rect) >= p.camera_explained_overlap) {
                    unexplained[camera].push(c.bbox);
                }
            }
        }
        Association { detections: out, unexplained, inconsistent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::EventKind;

    /// A wall 10 m ahead (y -2..2 m, z 0.3..2 m) swept over 0.1 s while the base drives at
    /// 10 m/s: each return is where the wall was from where the base was at its firing time,
    /// so the sweep smears it over a metre. Deskewed with the odometry's velocity it is one
    /// plane again; with none (no odometry) the smear stays.
    #[test]
    fn the_sweep_is_deskewed_by_the_ego_s_translation() {
        let v = 10.0f32;
        let mut points: Vec<LidarPoint> = vec![];
        for step in 0..100 {
            let t = step as f32 * 1e-3;
            for (iy, iz) in (0..20).flat_map(|y| (0..6).map(move |z| (y, z))) {
                let (y, z) = (-2.0 + iy as f32 * 0.2, 0.3 + iz as f32 * 0.3);
                points.push([10.0 - v * t, y, z, 40.0, t].into());
            }
        }
        let depth = |velocity: Vector3<f64>| {
            let boxes = lidar_stage(&PipelineParams::default(), Vector3::zeros(), velocity, &points, false);
            assert_eq!(boxes.len(), 1, "{boxes:?}");
            let b = &boxes[0];
            // The box's extent along x (its yaw may turn it: take the smaller footprint side).
            (b.center[0], b.size[0].min(b.size[1]))
        };
        let (smeared_x, smeared) = depth(Vector3::zeros());
        let (x, sharp) = depth(Vector3::new(v as f64, 0.0, 0.0));
        assert!(smeared > 0.8, "{smeared}");
        assert!(sharp < 0.3 && (x - 10.0).abs() < 0.2, "{sharp} at {x}");
        assert!(smeared_x < 9.7, "{smeared_x}");
    }

    /// The standard robot plus `bumper_lidar`, mounted as the roof's `lidar`.
    fn with_bumper_lidar() -> Calibration {
        let mut calib = Calibration::default();
        let mut bumper = calib.sensor("lidar").clone();
        (bumper.kind, bumper.frame_id) = (Some(Sensor::Lidar), "bumper_lidar_link".into());
        calib.sensors.insert("bumper_lidar".into(), bumper);
        calib
    }

    /// The standard robot plus `rear_camera`: the front camera's optics and height, mounted
    /// at the rear bumper looking back (turned half a turn about base_link's z).
    fn with_rear_camera() -> Calibration {
        let mut calib = Calibration::default();
        let mut rear = calib.sensor("camera").clone();
        let [x, y, z, w] = rear.rotation_xyzw;
        let front = UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(w, x, y, z));
        let turned = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), std::f64::consts::PI) * front;
        let q = turned.quaternion();
        rear.rotation_xyzw = [q.i, q.j, q.k, q.w];
        rear.translation = [-1.0, 0.0, rear.translation[2]];
        (rear.kind, rear.frame_id) = (Some(Sensor::Camera), "rear_camera_optical".into());
        calib.sensors.insert("rear_camera".into(), rear);
        calib
    }

    /// A test detector (not a model) that sees one vehicle in the rear camera's frames
    /// (marked by their second byte) where a pinhole camera puts it, and nothing in the
    /// front camera's; `blind` sees nothing anywhere. It records each batch's size.
    struct RearVehicle {
        bbox: [f32; 4],
        blind: bool,
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl CameraDetector for RearVehicle {
        fn name(&self) -> &str {
            "rear_vehicle (test only)"
        }
        fn detect(&mut self, _: StampNs, image: &Rgb8) -> Result<Vec<Detection2d>, crate::detect::DetectError> {
            let rear = image.data[1] == 1;
            Ok(if rear && !self.blind {
                vec![Detection2d { label: Label::Vehicle, score: 0.9, bbox: self.bbox }]
            } else {
                vec![]
            })
        }
        fn detect_batch(
            &mut self,
            frames: &[(StampNs, &Rgb8)],
        ) -> Vec<Result<Vec<Detection2d>, crate::detect::DetectError>> {
            self.batches.lock().unwrap().push(frames.len());
            frames.iter().map(|(s, img)| self.detect(*s, img)).collect()
        }
    }

    /// A vehicle 8 to 10 m behind the robot, seen by the roof LiDAR and the radar: only the
    /// rear camera can see it. Its class comes from the rear camera's detection through the
    /// rear camera's own calibration, both cameras' frames go to the detector in one batch,
    /// and the front camera, which cannot see it, raises nothing. When the rear camera misses
    /// it, sensor_disagreement names the rear camera.
    #[test]
    fn an_object_only_the_rear_camera_sees_gets_its_class_from_it() {
        let calib = with_rear_camera();
        // Where the vehicle (x -10..-8 m, |y| <= 0.9 m, up to 1.6 m) stands in the rear
        // camera's image: straight behind it, so centred on the principal point; its height
        // and width by the pinhole model at the near face's depth (7 m from the camera).
        let k = Intrinsics::of(calib.sensor("rear_camera")).k;
        let (fx, cx, fy, cy) = (k[0], k[2], k[4], k[5]);
        let (depth, cam_z) = (7.0, calib.sensor("rear_camera").translation[2]);
        let (half_w, top, bottom) = (0.9 * fx / depth, cy - (1.6 - cam_z) * fy / depth, cy + cam_z * fy / depth);
        let bbox = [(cx - half_w) as f32, top as f32, (cx + half_w) as f32, bottom as f32];
        let points: Vec<LidarPoint> = (0..9 * 7 * 8)
            .map(|i| {
                let (ix, iy, iz) = (i % 9, i / 9 % 7, i / 63);
                [-10.0 + ix as f32 * 0.25, -0.9 + iy as f32 * 0.3, 0.2 + iz as f32 * 0.2, 40.0, 0.0].into()
            })
            .collect();
        let run = |blind: bool| {
            let batches = Arc::new(std::sync::Mutex::new(vec![]));
            let detector = RearVehicle { bbox, blind, batches: batches.clone() };
            let mut p = Pipeline::new(PipelineParams::default(), &calib, Some(Box::new(detector)));
            let set = p.sensors().clone();
            let id = |name| set.find(name).unwrap();
            let mut out = Step::default();
            for n in 0..15i64 {
                let t = n * 100_000_000;
                let frame = |marker: u8| {
                    let mut data: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 37 % 251) as u8).collect();
                    (data[0], data[1]) = (n as u8, marker);
                    Arc::new(Rgb8 { width: 64, height: 48, data })
                };
                let lidar = id("lidar");
                out.extend(p.push(Input::Lidar {
                    sensor: lidar,
                    stamp: t,
                    points: Arc::new(points.clone()),
                    non_finite: 0,
                    total: 504,
                }));
                let targets = Arc::new(vec![[-9.0, 0.0, 0.5, 0.0, 10.0].into()]);
                out.extend(p.push(Input::Radar { sensor: id("radar"), stamp: t + 1_000_000, targets }));
                let (front, rear) = (id("camera"), id("rear_camera"));
                out.extend(p.push(Input::Camera {
                    sensor: front,
                    stamp: t + 2_000_000,
                    image: frame(0),
                    intrinsics: None,
                }));
                out.extend(p.push(Input::Camera {
                    sensor: rear,
                    stamp: t + 3_000_000,
                    image: frame(1),
                    intrinsics: None,
                }));
            }
            let batches = batches.lock().unwrap().clone();
            (out, batches)
        };
        let (seen, batches) = run(false);
        assert!(batches.len() >= 10 && batches.iter().all(|b| *b == 2), "{batches:?}");
        let last = seen.sets.last().expect("sets");
        let vehicle = last.objects.iter().find(|o| o.center[0] < -7.0).expect("the vehicle behind is tracked");
        assert_eq!(vehicle.label, Label::Vehicle);
        assert!(vehicle.sensors & SENSOR_CAMERA != 0, "the rear camera confirmed it: {vehicle:?}");
        assert!(vehicle.confidence > 0.5, "the camera's score, not the shape's 0.3: {vehicle:?}");
        let disagreements: Vec<_> = seen.events.iter().filter(|e| e.kind == EventKind::SensorDisagreement).collect();
        assert!(disagreements.is_empty(), "{disagreements:#?}");

        let (missed, _) = run(true);
        let vehicle = missed.sets.last().unwrap().objects.iter().find(|o| o.center[0] < -7.0).cloned().unwrap();
        assert_eq!(vehicle.sensors & SENSOR_CAMERA, 0);
        let disagreements: Vec<_> = missed.events.iter().filter(|e| e.kind == EventKind::SensorDisagreement).collect();
        assert_eq!(disagreements.len(), 1, "{disagreements:#?}");
        assert_eq!(disagreements[0].rule, "camera_misses_lidar_radar_object");
        assert_eq!(disagreements[0].sensors[0], "rear_camera");
    }

    /// LiDAR (a 1 m box 8 m ahead) and radar at 10 Hz, camera frames (textured) at 10 Hz,
    /// from `t0` for `n` periods. No IMU: its never starting (`stream_never_started`) is
    /// switched off on `p`, as it is not what the tests that feed this are about.
    fn feed(p: &mut Pipeline, t0: StampNs, n: i64) -> Step {
        p.anomaly.params.never_started_s = 0.0;
        let points: Vec<LidarPoint> = (0..200)
            .map(|i| {
                [8.0 + (i % 5) as f32 * 0.2, -0.5 + (i / 5 % 5) as f32 * 0.25, 0.2 + (i / 25) as f32 * 0.15, 40.0, 0.0]
                    .into()
            })
            .collect();
        let image =
            Arc::new(Rgb8 { width: 64, height: 48, data: (0..64 * 48 * 3).map(|i| (i * 37 % 251) as u8).collect() });
        let mut out = Step::default();
        for k in 0..n {
            let t = t0 + k * 100_000_000;
            let mut img = (*image).clone();
            img.data[0] = k as u8; // not a frozen image
            out.extend(p.push(Input::Lidar {
                sensor: SensorId::standard(Sensor::Lidar),
                stamp: t,
                points: Arc::new(points.clone()),
                non_finite: 0,
                total: 200,
            }));
            out.extend(p.push(Input::Radar {
                sensor: SensorId::standard(Sensor::Radar),
                stamp: t + 1_000_000,
                targets: Arc::new(vec![[8.5, 0.0, 0.5, 0.0, 10.0].into()]),
            }));
            out.extend(p.push(Input::Camera {
                sensor: SensorId::standard(Sensor::Camera),
                stamp: t + 2_000_000,
                image: Arc::new(img),
                intrinsics: None,
            }));
        }
        out
    }

    /// A robot with a roof LiDAR (`lidar`) and a bumper LiDAR: each sweep is fused, what only
    /// the bumper sees is an object too, and a silent bumper is a dropout under its own name
    /// while sets go on, led by the roof LiDAR, without waiting for it.
    #[test]
    fn a_second_lidar_adds_what_only_it_sees_and_is_named_when_it_goes_silent() {
        let calib = with_bumper_lidar();
        let mut p = Pipeline::new(PipelineParams::default(), &calib, None);
        let set = p.sensors().clone();
        let id = |name| set.find(name).unwrap();
        // The roof's view: a box 8 m ahead; the bumper's: a box 5 m ahead, 3 m to the left,
        // fired 20 ms after the roof's sweep began, with 10 ms of firing times.
        let cube = |x: f32, y: f32, t: f32| -> Vec<LidarPoint> {
            (0..125)
                .map(|i| {
                    [x + (i % 5) as f32 * 0.2, y + (i / 5 % 5) as f32 * 0.2, 0.2 + (i / 25) as f32 * 0.2, 40.0, t]
                        .into()
                })
                .collect()
        };
        let objects_near = |step: &Step, x: f64, y: f64| {
            step.sets.last().is_some_and(|s| {
                s.objects.iter().any(|o| (o.center[0] - x).abs() < 1.0 && (o.center[1] - y).abs() < 1.0)
            })
        };
        let period = |p: &mut Pipeline, k: i64, with_bumper: bool| {
            let t = k * 100_000_000;
            let mut out = Step::default();
            let roof = Input::Lidar {
                sensor: id("lidar"),
                stamp: t,
                points: Arc::new(cube(8.0, 0.0, 0.0)),
                non_finite: 0,
                total: 125,
            };
            out.extend(p.push(roof));
            if with_bumper {
                let points = Arc::new(cube(5.0, 3.0, 0.01));
                out.extend(p.push(Input::Lidar {
                    sensor: id("bumper_lidar"),
                    stamp: t + 20_000_000,
                    points,
                    non_finite: 0,
                    total: 125,
                }));
            }
            let targets = Arc::new(vec![[8.5, 0.0, 0.5, 0.0, 10.0].into()]);
            out.extend(p.push(Input::Radar { sensor: id("radar"), stamp: t + 1_000_000, targets }));
            out.extend(p.tick(t + 60_000_000));
            out
        };
        // A declared LiDAR that never starts (unplugged, its node not launched) does not stop
        // the sets: the roof LiDAR leads them, partial, naming the bumper.
        let mut unplugged = Pipeline::new(PipelineParams::default(), &calib, None);
        let mut alone = Step::default();
        for k in 1..=8 {
            alone.extend(period(&mut unplugged, k, false));
        }
        assert!(alone.sets.len() >= 6, "{} sets", alone.sets.len());
        assert!(alone.sets.iter().all(|s| s.missing.contains(&"bumper_lidar")));
        assert!(objects_near(&alone, 8.4, 0.4));

        let mut step = Step::default();
        for k in 1..=8 {
            step.extend(period(&mut p, k, true));
        }
        let first = step.sets.first().unwrap();
        assert!(first.missing.iter().all(|m| *m == "camera"), "both LiDARs in every set: {:?}", first.missing);
        assert!(objects_near(&step, 8.4, 0.4), "the roof LiDAR's object");
        assert!(objects_near(&step, 5.4, 3.4), "the object only the bumper LiDAR sees");

        // The bumper goes silent: one dropout naming it, and the roof LiDAR's sets go on
        // without waiting for it.
        let mut silent = Step::default();
        for k in 9..=20 {
            silent.extend(period(&mut p, k, false));
        }
        let dropouts: Vec<_> = silent.events.iter().filter(|e| e.kind == EventKind::SensorDropout).collect();
        assert_eq!(dropouts.len(), 1, "{dropouts:?}");
        assert_eq!(dropouts[0].sensors, ["bumper_lidar"]);
        let late = &silent.sets[silent.sets.len() - 3..];
        assert!(late.iter().all(|s| s.missing.contains(&"bumper_lidar") && s.stamp % 100_000_000 == 0), "roof-led");
        assert!(objects_near(&silent, 8.4, 0.4));
        assert!(p.counters.get("sets.radar_led").is_none(), "a live LiDAR still leads");
    }

    /// `sync.reference` names the LiDAR that leads the sets: left empty, the first in the set's
    /// order (`bumper_lidar`, by name); set to the roof's `lidar`, the roof. While the named
    /// one is silent the other leads. A name that is no declared LiDAR is refused, saying
    /// which LiDARs there are.
    #[test]
    fn the_configured_lidar_leads_the_sets() {
        let calib = with_bumper_lidar();
        let sensors = calib.sensor_set().unwrap();
        let box_at = |x: f32, y: f32| -> Arc<Vec<LidarPoint>> {
            Arc::new(
                (0..125)
                    .map(|i| {
                        [x + (i % 5) as f32 * 0.2, y + (i / 5 % 5) as f32 * 0.2, 0.2 + (i / 25) as f32 * 0.2, 40.0, 0.0]
                    })
                    .map(LidarPoint::from)
                    .collect(),
            )
        };
        // Set stamps (ms past the period) over 2 s; the roof sweeps at the period, the bumper
        // 20 ms later, the roof only up to `roof_periods`.
        let lead = |reference: &str, roof_periods: i64| -> Vec<i64> {
            let params = PipelineParams { sync_reference: reference.into(), ..PipelineParams::default() };
            params.check_sensors(&sensors).unwrap();
            let mut p = Pipeline::new(params, &calib, None);
            let (roof, bumper, radar) =
                (sensors.find("lidar").unwrap(), sensors.find("bumper_lidar").unwrap(), sensors.find("radar").unwrap());
            let mut step = Step::default();
            for k in 1..=20 {
                let t = k * 100_000_000;
                if k <= roof_periods {
                    let sweep =
                        Input::Lidar { sensor: roof, stamp: t, points: box_at(8.0, 0.0), non_finite: 0, total: 125 };
                    step.extend(p.push(sweep));
                }
                let sweep = Input::Lidar {
                    sensor: bumper,
                    stamp: t + 20 * MS,
                    points: box_at(5.0, 3.0),
                    non_finite: 0,
                    total: 125,
                };
                step.extend(p.push(sweep));
                let targets = Arc::new(vec![[8.5, 0.0, 0.5, 0.0, 10.0].into()]);
                step.extend(p.push(Input::Radar { sensor: radar, stamp: t + 10 * MS, targets }));
                step.extend(p.tick(t + 60 * MS));
            }
            assert!(step.sets.len() >= 15, "{reference}: {} sets", step.sets.len());
            step.sets.iter().map(|s| s.stamp % 100_000_000 / MS).collect()
        };
        assert!(lead("", 20).iter().all(|ms| *ms == 20), "the bumper leads by name: {:?}", lead("", 20));
        assert!(lead("lidar", 20).iter().all(|ms| *ms == 0), "the roof leads: {:?}", lead("lidar", 20));
        let failover = lead("lidar", 8);
        assert!(failover[..6].iter().all(|ms| *ms == 0), "{failover:?}");
        assert!(
            failover[failover.len() - 3..].iter().all(|ms| *ms == 20),
            "the bumper leads the silent roof's sets: {failover:?}"
        );
        for (reference, says) in [("radar", "'radar' is a radar"), ("roof", "'roof' is not a declared sensor")] {
            let params = PipelineParams { sync_reference: reference.into(), ..PipelineParams::default() };
            let err = params.check_sensors(&sensors).unwrap_err();
            assert!(err.contains(says) && err.contains("declared: bumper_lidar, lidar"), "{err}");
        }
    }

    /// The calibration's `rate_hz` reaches the dropout rule: a radar that scans at 3.3 Hz and
    /// says so is not silent between its scans; judged by the kind's 20 Hz, every gap is one.
    #[test]
    fn a_sensor_s_declared_rate_sets_its_dropout_limit() {
        let radar_dropouts = |rate_hz: Option<f64>| {
            let mut calib = Calibration::default();
            calib.sensors.get_mut("radar").unwrap().rate_hz = rate_hz;
            let mut p = Pipeline::new(PipelineParams::default(), &calib, None);
            let sensors = calib.sensor_set().unwrap();
            let (lidar, radar) = (sensors.find("lidar").unwrap(), sensors.find("radar").unwrap());
            let mut step = Step::default();
            for k in 1..=30 {
                let t = k * 100_000_000;
                let points = Arc::new(vec![LidarPoint::from([8.0, 0.0, 0.5, 40.0, 0.0]); 20]);
                step.extend(p.push(Input::Lidar { sensor: lidar, stamp: t, points, non_finite: 0, total: 20 }));
                if k % 3 == 0 {
                    let targets = Arc::new(vec![[8.5, 0.0, 0.5, 0.0, 10.0].into()]);
                    step.extend(p.push(Input::Radar { sensor: radar, stamp: t + 10 * MS, targets }));
                }
                step.extend(p.tick(t + 60 * MS));
            }
            step.events.iter().filter(|e| e.rule == "stream_silent" && e.sensors == ["radar"]).count()
        };
        assert!(radar_dropouts(None) >= 1, "a 3.3 Hz radar judged as a 20 Hz one");
        assert_eq!(radar_dropouts(Some(10.0 / 3.0)), 0);
    }

    /// Two LiDARs on a base driving at 10 m/s, `bumper_lidar` sweeping 20 ms after `lidar`: a
    /// wall 10 m ahead of the roof's sweep is 0.2 m nearer in the bumper's. The bumper leads
    /// (first by name), so the roof's points are deskewed by -20 ms to the set's stamp: one
    /// wall at 9.8 m, not two (undeskewed, or shifted the wrong way, the box is 0.2-0.4 m deep).
    #[test]
    fn a_second_lidar_s_sweep_is_deskewed_to_the_set_s_stamp() {
        let calib = with_bumper_lidar();
        let mut p = Pipeline::new(PipelineParams::default(), &calib, None);
        let (roof, bumper) = (p.sensors().find("lidar").unwrap(), p.sensors().find("bumper_lidar").unwrap());
        for k in 0..40 {
            let t = k as f64 * 0.02;
            let odometry = OdometrySample {
                stamp: (t * 1e9) as StampNs,
                frame_id: "odom".into(),
                child_frame_id: "base_link".into(),
                position: [10.0 * t, 0.0, 0.0],
                orientation_xyzw: [0.0, 0.0, 0.0, 1.0],
                linear: [10.0, 0.0, 0.0],
                angular: [0.0; 3],
            };
            p.push_odometry(&odometry).unwrap();
        }
        let wall = |x: f32| -> Arc<Vec<LidarPoint>> {
            let grid = (0..20).flat_map(|iy| (0..6).map(move |iz| (iy, iz)));
            Arc::new(
                grid.map(|(iy, iz)| [x, -2.0 + iy as f32 * 0.2, 0.3 + iz as f32 * 0.3, 40.0, 0.0].into()).collect(),
            )
        };
        let mut jobs = vec![];
        for t in [200_000_000, 300_000_000] {
            jobs =
                p.push_jobs(Input::Lidar { sensor: roof, stamp: t, points: wall(10.0), non_finite: 0, total: 120 }).0;
            let bumper_sweep =
                Input::Lidar { sensor: bumper, stamp: t + 20_000_000, points: wall(9.8), non_finite: 0, total: 120 };
            jobs.extend(p.push_jobs(bumper_sweep).0);
        }
        // No camera or radar here: the set goes out partial once its wait is over.
        jobs.extend(p.tick_jobs(400_000_000).0);
        let [job] = &jobs[..] else { panic!("one set from the second period: {}", jobs.len()) };
        assert_eq!(job.stamp, 320_000_000, "led by the bumper's sweep");
        let boxes = lidar_stage(&PipelineParams::default(), job.omega(), job.velocity(), &job.lidar().unwrap(), false);
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let depth = boxes[0].size[0].min(boxes[0].size[1]);
        assert!(depth < 0.1 && (boxes[0].center[0] - 9.8).abs() < 0.1, "{:?}", boxes[0]);
    }

    #[test]
    fn a_bag_loop_restarts_the_timeline_with_one_event_and_sets_keep_coming() {
        let mut p = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
        let first = feed(&mut p, 5_000_000_000, 30);
        assert!(first.sets.len() >= 28, "{} sets", first.sets.len());
        assert!(first.events.iter().all(|e| e.kind != EventKind::TimeJump));
        let last_id = first.events.iter().map(|e| e.event_id).max().unwrap_or(0);
        // The bag starts again, 3 s back.
        let second = feed(&mut p, 5_000_000_000, 30);
        let jumps: Vec<&Event> = second.events.iter().filter(|e| e.kind == EventKind::TimeJump).collect();
        assert_eq!(jumps.len(), 1, "{:?}", second.events);
        let j = jumps[0];
        assert_eq!(
            (j.rule, j.severity, j.sensors.as_slice()),
            ("data_time_went_back", crate::anomaly::INFO, &["lidar"][..])
        );
        assert!((j.measured_value - 2.902).abs() < 0.01, "jumped back {} s", j.measured_value);
        assert!(j.event_id > last_id, "event ids keep counting");
        assert!(second.sets.len() >= 28, "sets go on in the new timeline: {}", second.sets.len());
        assert!(second.sets.iter().all(|s| s.stamp < 8_000_000_000));
        // No dropout was raised for streams that simply started over.
        assert!(second.events.iter().all(|e| e.kind != EventKind::SensorDropout), "{:?}", second.events);
        assert_eq!(p.counters.get("time_jumps"), Some(&1));
    }

    #[test]
    fn a_seek_forward_restarts_the_timeline_with_one_event_and_no_dropouts() {
        let mut p = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
        let first = feed(&mut p, 5_000_000_000, 30);
        let last_id = first.events.iter().map(|e| e.event_id).max().unwrap_or(0);
        // The /clock leaps 22 s ahead before any data of the new position: not taken.
        let idle = p.tick(30_000_000_000);
        assert!(idle.events.is_empty() && idle.sets.is_empty(), "{:?}", idle.events);
        let second = feed(&mut p, 30_000_000_000, 30);
        let jumps: Vec<&Event> = second.events.iter().filter(|e| e.kind == EventKind::TimeJump).collect();
        assert_eq!(jumps.len(), 1, "{:?}", second.events);
        assert_eq!(jumps[0].rule, "data_time_went_forward");
        assert!((jumps[0].measured_value - 22.098).abs() < 0.01, "jumped {} s", jumps[0].measured_value);
        assert!(jumps[0].evidence.iter().any(|kv| kv.key == "jump_forward_s"));
        assert!(jumps[0].event_id > last_id);
        assert!(second.events.iter().all(|e| e.kind != EventKind::SensorDropout), "{:?}", second.events);
        assert!(second.sets.len() >= 28, "sets go on after the seek: {}", second.sets.len());
        assert_eq!(p.counters.get("time_jumps"), Some(&1));
    }

    #[test]
    fn streams_back_from_a_real_outage_recover_and_are_not_a_time_jump() {
        let mut p = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
        feed(&mut p, 5_000_000_000, 30);
        // Every sensor silent for 2 s of a live clock (the node ticks every 20 ms).
        let mut outage = vec![];
        for k in 1..=100 {
            outage.extend(p.tick(7_902_000_000 + k * 20_000_000).events);
        }
        assert!(outage.iter().filter(|e| e.kind == EventKind::SensorDropout).count() >= 3, "{outage:?}");
        // They come back 2.1 s after the last tick (the executor stops ticking on the clock
        // once the data is 5 s old): more than a jump's worth, but the outage explains it.
        // Fed for 1.1 s: steady for longer than dropout_recovery_s (1 s), so back.
        let back = feed(&mut p, 12_000_000_000, 12);
        assert!(back.events.iter().all(|e| e.kind != EventKind::TimeJump), "{:?}", back.events);
        assert!(back.events.iter().any(|e| e.rule == "stream_recovered"), "{:?}", back.events);
        assert_eq!(p.counters.get("time_jumps"), None);
    }

    #[test]
    fn sets_do_not_wait_for_a_camera_in_dropout() {
        let mut p = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
        feed(&mut p, 5_000_000_000, 30);
        let points = Arc::new(vec![LidarPoint::from([8.0, 0.0, 0.5, 40.0, 0.0]); 50]);
        let radar = Arc::new(vec![RadarTarget::from([8.5, 0.0, 0.5, 0.0, 10.0])]);
        let mut dropout_seen = false;
        for k in 0..10 {
            // The camera is dead from 8 s on: LiDAR, then radar 1 ms later.
            let t = 8_000_000_000 + k * 100_000_000;
            let on_lidar = p.push(Input::Lidar {
                sensor: SensorId::standard(Sensor::Lidar),
                stamp: t,
                points: points.clone(),
                non_finite: 0,
                total: 50,
            });
            dropout_seen |= on_lidar.events.iter().any(|e| e.rule == "stream_silent" && e.sensors == ["camera"]);
            let on_radar = p.push(Input::Radar {
                sensor: SensorId::standard(Sensor::Radar),
                stamp: t + 1_000_000,
                targets: radar.clone(),
            });
            dropout_seen |= on_radar.events.iter().any(|e| e.rule == "stream_silent" && e.sensors == ["camera"]);
            if k >= 3 {
                // Once the camera is known to be gone, the set goes out with its last awaited
                // member (the radar), not when a later message passes its deadline.
                assert!(dropout_seen, "the camera's dropout is declared by now");
                let set = on_radar.sets.iter().find(|s| s.stamp == t).unwrap_or_else(|| panic!("set {t} out at once"));
                assert!(set.partial && set.missing == ["camera"], "{:?}", set.missing);
            }
        }
    }

    #[test]
    fn a_live_threshold_takes_effect_on_a_running_pipeline_and_start_up_parameters_are_refused() {
        // The camera goes silent for 1 s at 8 s; with the silence floor raised to 5 s while
        // running, that is no longer a dropout.
        let camera_dropout = |silence_floor_s: Option<f64>| {
            let mut p = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
            feed(&mut p, 5_000_000_000, 30);
            if let Some(v) = silence_floor_s {
                p.set_live_param("anomaly.dropout_min_silence_s", v).expect("a live parameter");
                assert_eq!(p.anomaly.params.dropout_min_silence_s, v);
            }
            let points = Arc::new(vec![LidarPoint::from([8.0, 0.0, 0.5, 40.0, 0.0]); 50]);
            let radar = Arc::new(vec![RadarTarget::from([8.5, 0.0, 0.5, 0.0, 10.0])]);
            (0..10).any(|k| {
                let t = 8_000_000_000 + k * 100_000_000;
                let mut events = p
                    .push(Input::Lidar {
                        sensor: SensorId::standard(Sensor::Lidar),
                        stamp: t,
                        points: points.clone(),
                        non_finite: 0,
                        total: 50,
                    })
                    .events;
                events.extend(
                    p.push(Input::Radar {
                        sensor: SensorId::standard(Sensor::Radar),
                        stamp: t + 1_000_000,
                        targets: radar.clone(),
                    })
                    .events,
                );
                events.iter().any(|e| e.rule == "stream_silent" && e.sensors == ["camera"])
            })
        };
        assert!(camera_dropout(None));
        assert!(!camera_dropout(Some(5.0)));

        let mut p = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
        let before = p.params.sync_wait_ns;
        assert!(p.set_live_param("sync.wait_ms", 10.0).unwrap_err().contains("start-up"));
        assert_eq!(p.params.sync_wait_ns, before);
        let ttc = p.anomaly.params.ttc_threshold_s;
        assert!(p.set_live_param("anomaly.ttc_threshold_s", -1.0).is_err());
        assert_eq!(p.anomaly.params.ttc_threshold_s, ttc);
        p.set_live_param("anomaly.disagreement_range", 12.0).expect("a live parameter");
        assert_eq!(p.params.disagreement_range, 12.0);
    }

    #[test]
    fn a_late_message_of_a_stalled_stream_is_not_a_time_jump() {
        let mut p = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
        feed(&mut p, 5_000_000_000, 30);
        // A camera frame 0.4 s older than the camera's last one: out of order, not a new
        // timeline (only a stream going back by more than TIME_JUMP_NS is one).
        let img = Arc::new(Rgb8 { width: 8, height: 8, data: vec![90; 192] });
        let step = p.push(Input::Camera {
            sensor: SensorId::standard(Sensor::Camera),
            stamp: 7_500_000_000,
            image: img,
            intrinsics: None,
        });
        assert!(step.events.iter().all(|e| e.kind != EventKind::TimeJump));
        assert_eq!(p.counters.get("time_jumps"), None);
    }

    #[test]
    fn projection_of_a_box_ahead_is_centred() {
        let m = CameraModel::new(Calibration::default().sensor("camera"));
        // 10 m ahead on the camera's axis height: centred horizontally.
        let r = m.project([11.5, 0.0, 1.2], [1.0, 1.0, 1.0], 0.0).unwrap();
        assert!(((r[0] + r[2]) / 2.0 - 320.0).abs() < 1.0 && ((r[1] + r[3]) / 2.0 - 240.0).abs() < 1.0, "{r:?}");
        assert!(m.project([-5.0, 0.0, 1.0], [1.0, 1.0, 1.0], 0.0).is_none(), "behind");
    }

    #[test]
    fn shapes_suggest_classes() {
        let b = |l, w, h| ObjectBox { center: [0.0; 3], size: [l, w, h], yaw: 0.0, points: 10 };
        assert_eq!(geometric_label(&b(0.4, 1.9, 1.3)), Label::Vehicle, "a car's rear face");
        assert_eq!(geometric_label(&b(0.4, 0.5, 1.5)), Label::Person);
        assert_eq!(geometric_label(&b(0.7, 0.7, 0.8)), Label::Obstacle);
    }

    #[test]
    fn a_cars_rear_face_completes_to_the_whole_car() {
        // Rear face 20 m ahead: 1.9 m wide, 0.2 m deep.
        let rear = ObjectBox { center: [20.0, 0.0, 0.8], size: [0.2, 1.9, 1.4], yaw: 0.0, points: 50 };
        let car = complete_box(&rear, Label::Vehicle);
        assert!((car.center[0] - 22.15).abs() < 1e-9 && car.center[1].abs() < 1e-9, "{car:?}");
        assert_eq!(car.size, [4.5, 1.9, 1.4]);
        // Its side seen from the left, 10 m away: the centre moves away by half the width.
        let side = ObjectBox { center: [0.0, 10.0, 0.8], size: [4.4, 0.1, 1.4], yaw: 0.0, points: 50 };
        let car = complete_box(&side, Label::Vehicle);
        assert!((car.center[1] - 10.9).abs() < 1e-9 && car.center[0].abs() < 1e-9, "{car:?}");
    }
}

/// The tunable numbers of the pipeline (kinds: f = f64, r = f32, n = integer, ms = a
/// duration held in ns) by their ROS parameter names (`fusion_node`
/// parameters, also read from a parameter YAML by `fusion_replay`): one table so that the
/// node, the replay tool and the README cannot disagree.
macro_rules! param_table {
    ($($name:literal => $kind:ident $($field:ident).+),* $(,)?) => {
        impl PipelineParams {
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// Whether `name` holds a count (an integer parameter) rather than a measure.
            pub fn is_integer(name: &str) -> bool {
                match name {
                    $($name => param_table!(@integer $kind),)*
                    _ => false,
                }
            }

            pub fn get(&self, name: &str) -> Option<f64> {
                match name {
                    $($name => Some(param_table!(@get $kind self.$($field).+)),)*
                    _ => None,
                }
            }

            pub fn set(&mut self, name: &str, value: f64) -> Result<(), String> {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!("parameter {name} must be a finite number >= 0, got {value}"));
                }
                match name {
                    $($name => { param_table!(@set $kind self.$($field).+, value); Ok(()) })*
                    _ => Err(format!("unknown parameter '{name}'")),
                }
            }
        }
    };
    (@integer n) => { true };
    (@integer $other:ident) => { false };
    (@get f $e:expr) => { $e };
    (@get ms $e:expr) => { $e as f64 / 1e6 };
    (@get n $e:expr) => { $e as f64 };
    (@get r $e:expr) => { $e as f64 };
    (@set f $e:expr, $v:expr) => { $e = $v };
    (@set ms $e:expr, $v:expr) => { $e = ($v * 1e6).round() as i64 };
    (@set n $e:expr, $v:expr) => { $e = $v.round() as _ };
    (@set r $e:expr, $v:expr) => { $e = $v as f32 };
}

param_table! {
    "sync.tolerance_ms" => ms sync_tolerance_ns,
    "sync.wait_ms" => ms sync_wait_ns,
    "deadline.target_ms" => ms target_deadline_ns,
    "deadline.hard_ms" => ms hard_deadline_ns,
    "sync.reference_lost_ms" => ms reference_lost_ns,
    "sync.set_period_ms" => ms set_period_ns,
    "lidar.cluster_range" => f cluster_range,
    "lidar.voxel" => f cluster.voxel,
    "lidar.voxel_z" => f cluster.voxel_z,
    "lidar.min_points" => n cluster.min_points,
    "lidar.ground_threshold" => f cluster.ground_threshold,
    "tracker.gate" => f tracker.gate,
    "tracker.accel_sigma" => f tracker.accel_sigma,
    "tracker.meas_sigma" => f tracker.meas_sigma,
    "tracker.confirm_hits" => n tracker.confirm_hits,
    "tracker.max_misses" => n tracker.max_misses,
    "tracker.publish_max_misses" => n publish_max_misses,
    "radar.eps" => f radar_eps,
    "radar.eps_doppler" => f radar_eps_doppler,
    "radar.margin" => f radar_margin,
    "radar.min_targets" => n radar_min_targets,
    "camera.min_iou" => r camera_min_iou,
    "camera.min_score" => r camera_min_score,
    "camera.explained_overlap" => r camera_explained_overlap,
    "camera.detector_keep_alive_ms" => ms detector_gate.keep_alive_ns,
    "camera.detector_image_change" => f detector_gate.image_change,
    "camera.detector_moved_m" => f detector_gate.moved_m,
    "camera.detector_settled_votes" => r detector_gate.settled_votes,
    "label.person_max_footprint" => f class_priors.person.max_footprint,
    "label.person_max_height" => f class_priors.person.max_height,
    "label.person_min_height" => f class_priors.person.min_height,
    "label.vehicle_min_footprint" => f class_priors.vehicle.min_footprint,
    "label.vehicle_max_height" => f class_priors.vehicle.max_height,
    "label.obstacle_max_footprint" => f class_priors.obstacle.max_footprint,
    "label.obstacle_max_height" => f class_priors.obstacle.max_height,
    "label.size_margin" => f class_priors.margin,
    "label.min_points" => n class_priors.min_points,
    "label.undersized_weight" => r class_priors.undersized_weight,
    "label.moving_speed" => f class_priors.moving_speed,
    "label.person_max_speed" => f class_priors.person_max_speed,
    "ego_speed.window_s" => f ego_speed.window_s,
    "ego_speed.tolerance" => f ego_speed.tolerance,
    "ego_speed.cell_m" => f ego_speed.cell_m,
    "ego_speed.min_cells" => n ego_speed.min_cells,
    "ego_speed.hold_s" => f ego_speed.hold_s,
    "ego_speed.max_accel" => f ego_speed.max_accel,
    "monitor.window_frames" => n monitor.window_frames,
    "monitor.out_of_range_share" => f monitor.out_of_range_share,
    "monitor.min_agreement" => f monitor.min_agreement,
    "monitor.min_checks" => n monitor.min_checks,
    "anomaly.ttc_threshold_s" => f anomaly.ttc_threshold_s,
    "anomaly.lane_half_width" => f anomaly.lane_half_width,
    "anomaly.min_closing_speed" => f anomaly.min_closing_speed,
    "anomaly.ttc_clear_margin_s" => f anomaly.ttc_clear_margin_s,
    "anomaly.dropout_periods" => f anomaly.dropout_periods,
    "anomaly.dropout_min_silence_s" => f anomaly.dropout_min_silence_s,
    "anomaly.dropout_recovery_s" => f anomaly.dropout_recovery_s,
    "anomaly.never_started_s" => f anomaly.never_started_s,
    "anomaly.blind_dark" => f anomaly.blind_dark,
    "anomaly.blind_bright" => f anomaly.blind_bright,
    "anomaly.blind_max_std" => f anomaly.blind_max_std,
    "anomaly.degraded_frames" => n anomaly.degraded_frames,
    "anomaly.frozen_frames" => n anomaly.frozen_frames,
    "anomaly.lidar_max_non_finite_ratio" => f anomaly.lidar_max_non_finite_ratio,
    "anomaly.imu_saturation_accel" => f anomaly.imu_saturation_accel,
    "anomaly.impact_accel" => f anomaly.impact_accel,
    "anomaly.impact_refractory_s" => f anomaly.impact_refractory_s,
    "anomaly.disagreement_frames" => n anomaly.disagreement_frames,
    "anomaly.disagreement_range" => f disagreement_range,
    "anomaly.disagreement_min_box_px" => r disagreement_min_box_px,
    "anomaly.deadline_miss_ratio" => f anomaly.deadline_miss_ratio,
    "anomaly.deadline_window" => n anomaly.deadline_window,
}

impl PipelineParams {
    /// Parameters that take a word rather than a number.
    pub const WORD_NAMES: [&'static str; 2] = ["camera.detector_mode", "sync.reference"];

    pub fn get_word(&self, name: &str) -> Option<String> {
        match name {
            "camera.detector_mode" => Some(self.detector_gate.mode.as_str().to_string()),
            "sync.reference" => Some(self.sync_reference.clone()),
            _ => None,
        }
    }

    pub fn set_word(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "camera.detector_mode" => self.detector_gate.mode = value.parse()?,
            "sync.reference" => self.sync_reference = value.trim().to_string(),
            _ => return Err(format!("unknown parameter {name}")),
        }
        Ok(())
    }

    /// What can only be checked against the robot's sensors: `sync.reference` must name one
    /// of its LiDARs. A node calls this before [`Pipeline::new`] (which panics instead).
    pub fn check_sensors(&self, sensors: &SensorSet) -> Result<(), String> {
        let reference = &self.sync_reference;
        if reference.is_empty() {
            return Ok(());
        }
        let what = match sensors.find(reference).map(|id| sensors.kind(id)) {
            Some(Sensor::Lidar) => return Ok(()),
            Some(Sensor::Imu) => "an imu".to_string(),
            Some(kind) => format!("a {}", kind.as_str()),
            None => "not a declared sensor".to_string(),
        };
        let lidars: Vec<&str> = sensors.of_kind(Sensor::Lidar).map(|id| sensors.name(id)).collect();
        Err(format!(
            "parameter sync.reference: '{reference}' is {what}; sets are led by a LiDAR (declared: {}), or \"\" for the first",
            lidars.join(", ")
        ))
    }
}

#[cfg(test)]
mod param_tests {
    use super::*;

    #[test]
    fn every_named_parameter_round_trips() {
        let mut p = PipelineParams::default();
        for name in PipelineParams::NAMES {
            let v = p.get(name).unwrap();
            p.set(name, v + 1.0).unwrap();
            assert!((p.get(name).unwrap() - (v + 1.0)).abs() < 1e-6, "{name}");
        }
        assert!(p.set("nope", 1.0).is_err() && p.set("sync.wait_ms", f64::NAN).is_err());
        for name in PipelineParams::WORD_NAMES {
            let v = p.get_word(name).unwrap();
            p.set_word(name, &v).unwrap();
        }
        p.set_word("sync.reference", "lidar").unwrap();
        assert_eq!(p.sync_reference, "lidar");
        p.set_word("camera.detector_mode", "event_driven").unwrap();
        assert_eq!(p.detector_gate.mode, DetectorMode::EventDriven);
        assert!(p.set_word("camera.detector_mode", "sometimes").is_err());
    }
}
