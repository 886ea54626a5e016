//! `fusion_replay`'s engine: a rosbag2 bag through the whole pipeline (ingest validation
//! and preprocessing, synchronization, fusion, tracking, anomaly rules) in one process,
//! without DDS, in bag order. Output files:
//!
//! - `events.jsonl`: one anomaly event per line;
//! - `objects.jsonl`: one line per synchronized set (stamp, partial, missing, objects);
//! - `metrics.json`: message, rejection, set and event counts;
//! - `timing.json`: per-stage and end-to-end latency and throughput (wall clock).
//!
//! The first three depend only on the bag, the calibration and the parameters: the same
//! input gives byte-identical files at any replay speed. `timing.json` is measured.
use crate::{
    bag::{Bag, BagMessage},
    simrun,
};
use anyhow::{bail, Context as _, Result};
use fusion::{
    anomaly::Event,
    calib::{Calibration, Resolved},
    cloud::{LidarParams, NumberParams, RadarParams},
    detect::CameraDetector,
    frontend::{Frontend, IngestParams},
    ingest::Reject,
    pipeline::{Input, Pipeline, PipelineParams, SetOutput},
    sched::stage_times,
    stamp_ns, StampNs,
};
use hdrhistogram::Histogram;
use r2r::{
    nav_msgs::msg::Odometry,
    sensor_msgs::msg::{CameraInfo, Image, Imu, PointCloud2},
    tf2_msgs::msg::TFMessage,
    WrappedTypesupport,
};
use sensor_fusion::{
    config::{CameraIngestConfig, FusionNodeConfig, ImuIngestConfig, LidarIngestConfig, NodeConfig, RadarIngestConfig},
    graph,
    ingest::{camera_info_ref, cloud_fields, cloud_ref, image_ref, imu_sample},
};
use serde_json::json;
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub bag: PathBuf,
    pub out: Option<PathBuf>,
    /// Pace messages by their log times (× `rate`); otherwise as fast as possible.
    pub realtime: bool,
    pub rate: f64,
    pub calibration: Option<PathBuf>,
    /// Take the sensors' extrinsics from the bag's `/tf_static` where it gives them (the calibration file, or the built-in defaults, fill the rest).
    pub use_tf: bool,
    pub params_file: Option<PathBuf>,
    /// The ingest nodes' parameter file (`config/ingest.yaml`): preprocess as they do.
    pub ingest_params: Option<PathBuf>,
    /// camera, lidar, radar, imu, camera_info and odometry input topics (raw, as drivers
    /// publish them).
    pub topics: [String; 6],
    /// Instead of reading `bag`, stream this simulated scenario into the pipeline (no bag
    /// on disk); its ground truth and calibration are written into `out`.
    pub sim: Option<SimSpec>,
    /// Gather what `fusion_replay --report` draws ([`ReplayResult::report`]).
    pub report: bool,
}

/// A `fusion_sim` run streamed in process: the same messages `fusion_sim` would write.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub scenario: String,
    pub seed: u64,
    pub duration: f64,
    /// The run has the ego's wheel odometry (`fusion_sim --odometry`).
    pub odometry: bool,
}

impl ReplayOptions {
    pub fn new(bag: impl Into<PathBuf>) -> Self {
        Self {
            bag: bag.into(),
            out: None,
            realtime: false,
            rate: 1.0,
            calibration: None,
            use_tf: true,
            params_file: None,
            ingest_params: None,
            topics: [
                &graph::CAMERA_IMAGE,
                &graph::LIDAR_POINTS,
                &graph::RADAR_POINTS,
                &graph::IMU_DATA,
                &graph::CAMERA_INFO,
                &graph::ODOMETRY,
            ]
            .map(|t| t.root_name()),
            sim: None,
            report: false,
        }
    }
}

pub struct ReplayResult {
    pub events: Vec<Event>,
    pub sets: u64,
    pub metrics: serde_json::Value,
    pub timing: serde_json::Value,
    /// With [`ReplayOptions::report`]: what the report draws, and what the run was.
    pub report: Option<(crate::report::ReportCollector, crate::report::RunInfo)>,
}

/// The pipeline's parameters from a ROS 2 params file, read as fusion_node reads it
/// ([`FusionNodeConfig::from_params_file`]: its blocks in order over the defaults, a name
/// fusion_node does not have refused).
pub fn pipeline_params_from_file(path: &Path) -> Result<PipelineParams> {
    FusionNodeConfig::from_params_file(path)?.pipeline()
}

/// The ingest nodes' sections of a ROS 2 parameter file (`/**/lidar_ingest:` …
/// `ros__parameters:`), read into the four nodes' own typed configs as the nodes read them
/// (`sensor_fusion::config`: their filters, the IMU's biases, limits and filter gain, and
/// the camera's output size; a name a node does not have, in its own block, is an error),
/// and the filters of the further LiDARs' and radars' nodes (`<sensor>_ingest`, `/**` too).
/// What does not change what is published (queues, QoS, diagnostics) is checked, not used.
const INGEST_NODES: [&str; 4] = ["camera_ingest", "lidar_ingest", "radar_ingest", "imu_ingest"];

pub fn read_ingest_params(path: &Path) -> Result<IngestParams> {
    let camera = CameraIngestConfig::from_params_file(path)?;
    let side = |name: &str, v: i64| -> Result<u32> {
        u32::try_from(v).ok().filter(|&s| s <= fusion::camera::MAX_OUTPUT_SIDE).with_context(|| {
            format!("{}: camera_ingest.{name} must be 0 .. {}", path.display(), fusion::camera::MAX_OUTPUT_SIDE)
        })
    };
    let camera_output =
        (side("output_width", camera.own.output_width)?, side("output_height", camera.own.output_height)?);
    let mut p = IngestParams {
        lidar: LidarIngestConfig::from_params_file(path)?.own.0,
        radar: RadarIngestConfig::from_params_file(path)?.own.0,
        imu: ImuIngestConfig::from_params_file(path)?.own.params(),
        camera_output: (camera_output.0 > 0 && camera_output.1 > 0).then_some(camera_output),
        further: Default::default(),
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: serde_norway::Value =
        serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    let Some(map) = doc.as_mapping() else { bail!("{}: expected a mapping of node names", path.display()) };
    for (key, section) in map {
        let key = key.as_str().unwrap_or("");
        let node = key.trim_start_matches('/').rsplit('/').next().unwrap_or("");
        if INGEST_NODES.contains(&node) {
            continue;
        }
        let Some(params) = section.get("ros__parameters") else { continue };
        let mut flat = vec![];
        flatten("", params, &mut flat);
        for (name, v) in flat {
            // A further LiDAR's or radar's node (`<sensor>_ingest`): its filters, applied by
            // the frontend to the sensor of that name (`/**` to every one of them).
            let n = name.as_str();
            if LidarParams::spec(n).is_none() && RadarParams::spec(n).is_none() {
                continue;
            }
            let at = || format!("{}: {node}.{name}", path.display());
            let v = v.as_f64().with_context(|| format!("{} must be a number", at()))?;
            let sensor = node.strip_suffix("_ingest").unwrap_or(node);
            let checks = [
                LidarParams::spec(n).map(|_| LidarParams::default().set(n, v)),
                RadarParams::spec(n).map(|_| RadarParams::default().set(n, v)),
            ];
            if let Some(Err(e)) = checks.into_iter().flatten().find(Result::is_err) {
                return Err(anyhow::Error::msg(e).context(at()));
            }
            p.further.entry(sensor.to_string()).or_default().push((name.clone(), v));
        }
    }
    Ok(p)
}

use sensor_fusion::ros::flatten_params as flatten;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
    // total_s: the time the stage took over the whole run (what skipping it saves).
    json!({"count": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)), "p99_ms": ms(h.value_at_quantile(0.99)),
           "max_ms": ms(h.max()), "total_s": (h.mean() * h.len() as f64 / 1e3).round() / 1e3})
}

/// One set as an `objects.jsonl` line.
pub fn set_line(s: &SetOutput) -> String {
    let mut line = json!({"stamp_ns": s.stamp, "newest_stamp_ns": s.newest_stamp, "partial": s.partial,
                          "missing": s.missing, "ego_speed": s.ego_speed, "objects": s.objects});
    if let Some(frame) = &s.odom_frame {
        // Only with odometry: a run without it writes what it always wrote.
        line["odom_frame"] = json!(frame);
    }
    line.to_string()
}

/// Where the messages come from: a recorded bag, or a simulated run generated on the fly.
enum Source {
    Bag(Bag),
    Sim { scenario: sensor_sim::Scenario, spec: SimSpec },
}

impl Source {
    fn open(opts: &ReplayOptions) -> Result<Source> {
        let Some(spec) = &opts.sim else { return Ok(Source::Bag(Bag::open(&opts.bag)?)) };
        let scenario = simrun::scenario(&spec.scenario, spec.seed, spec.duration)?;
        Ok(Source::Sim { scenario, spec: spec.clone() })
    }

    /// The topics, by index; a simulated run's depend on the LiDARs `calib` declares.
    fn topic_names(&self, calib: &Calibration) -> Vec<String> {
        match self {
            Source::Bag(bag) => bag.topics.iter().map(|t| t.name.clone()).collect(),
            Source::Sim { spec, .. } => {
                simrun::topics(spec.odometry, calib).into_iter().map(|(name, _)| name).collect()
            }
        }
    }

    fn name(&self, opts: &ReplayOptions) -> Option<String> {
        match self {
            Source::Bag(_) => opts.bag.file_name().map(|n| n.to_string_lossy().to_string()),
            Source::Sim { spec, .. } => Some(format!("sim:{}:{}:{}", spec.scenario, spec.seed, spec.duration)),
        }
    }

    /// The calibration: `--calibration`, else the bag's calibration.yaml, else the built-in
    /// one; with each sensor's pose taken from the bag's transforms where they give it, as the
    /// nodes take it from tf ([`Calibration::with_tf`]).
    fn calibration(&self, opts: &ReplayOptions) -> Result<Resolved> {
        let beside = match self {
            Source::Bag(_) => Some(opts.bag.join("calibration.yaml")).filter(|p| p.is_file()),
            Source::Sim { .. } => None,
        };
        let file = opts.calibration.clone().or(beside);
        let base = match (&file, self) {
            (Some(p), _) => Calibration::load(&p.to_string_lossy())?,
            (None, Source::Sim { spec, .. }) => simrun::calibration(None, &spec.scenario)?,
            (None, Source::Bag(_)) => Calibration::default(),
        };
        let buffer = match self {
            Source::Bag(bag) if opts.use_tf => bag_transforms(bag)?,
            Source::Bag(_) => Default::default(),
            // A streamed run has the mounts fusion_sim would latch on /tf_static: its
            // calibration's, so that it equals the replay of the written bag.
            Source::Sim { .. } => {
                let mut buffer = fusion::tf::TransformBuffer::default();
                for (_, t) in base.mounts() {
                    buffer.set(&t, true)?;
                }
                buffer
            }
        };
        let resolved = base.with_tf(&buffer, file.is_some()).with_context(|| {
            format!("the sensors' extrinsics (transforms in the bag: {})", buffer.frames().join(", "))
        })?;
        Ok(resolved)
    }

    /// Feeds every message in log-time order to `f` (false stops); returns the duration.
    fn for_each_message(
        &self,
        calib: &Calibration,
        out: Option<&Path>,
        f: impl FnMut(BagMessage) -> bool,
    ) -> Result<i64> {
        match self {
            Source::Bag(bag) => {
                bag.for_each_message(f)?;
                Ok(bag.duration_ns)
            }
            Source::Sim { scenario, spec } => {
                let world = sensor_sim::World::new(scenario, spec.duration + 0.2, calib.clone());
                // The ground truth beside the outputs, as fusion_sim puts it beside the bag.
                let mut gt: Box<dyn Write> = match out {
                    Some(dir) => Box::new(simrun::beside(dir, calib)?),
                    None => Box::new(std::io::sink()),
                };
                let mut f = f;
                simrun::generate(&world, spec.seed, spec.duration, spec.odometry, &mut gt, None, |m| Ok(f(m)))?;
                Ok((spec.duration * 1e9).round() as i64)
            }
        }
    }
}

/// How much of a bag's start is read for its transforms: `ros2 bag record` catches the
/// latched `/tf_static` when it subscribes, so the mounts are at the start.
const TF_WINDOW_NS: i64 = 2_000_000_000;

/// The `/tf_static` messages of the bag's first [`TF_WINDOW_NS`] as a buffer, as the nodes
/// read `/tf_static` at start-up. A message that does not decode, or a transform tf2 would
/// refuse, is skipped with a warning: the sensors it should have placed then come from the
/// calibration file, or fail there.
fn bag_transforms(bag: &Bag) -> Result<fusion::tf::TransformBuffer> {
    let mut buffer = fusion::tf::TransformBuffer::default();
    let tf = graph::TF_STATIC;
    let Some(tf_static) = bag.topic_index(&tf.root_name()).filter(|&i| bag.topics[i].type_name == tf.msg_type) else {
        return Ok(buffer);
    };
    let mut first = None;
    let mut read = 0u64;
    bag.for_each_message(|m| {
        let start = *first.get_or_insert(m.log_time_ns);
        if m.log_time_ns > start + TF_WINDOW_NS {
            return false;
        }
        if m.topic != tf_static {
            return true;
        }
        read += 1;
        match TFMessage::from_serialized_bytes(&m.data) {
            Ok(msg) => {
                for t in sensor_fusion::ros::transforms_of(msg) {
                    if let Err(e) = buffer.set(&t, true) {
                        tracing::warn!("{}: {e}", tf.name);
                    }
                }
            }
            Err(e) => tracing::warn!("{}: message at {} ns does not decode: {e}", tf.name, m.log_time_ns),
        }
        true
    })?;
    let recorded = bag.topics[tf_static].message_count;
    if recorded > read {
        tracing::warn!(
            "{}: {} of the bag's {recorded} messages come after its first {} s and were not read; \
             the sensors they would place come from the calibration file",
            tf.name,
            recorded - read,
            TF_WINDOW_NS / 1_000_000_000
        );
    }
    Ok(buffer)
}

/// Where camera_info and odometry sit in [`ReplayOptions::topics`] (after the four sensors).
const CAMERA_INFO_INPUT: usize = 4;
const ODOMETRY_INPUT: usize = 5;

pub fn run(opts: &ReplayOptions, detector: Option<Box<dyn CameraDetector>>) -> Result<ReplayResult> {
    let source = Source::open(opts)?;
    let resolved = source.calibration(opts)?;
    tracing::info!("sensor extrinsics from: {}", resolved.summary());
    sensor_fusion::ros::warn_about(&resolved);
    let calib = resolved.calibration.clone();
    let params = match &opts.params_file {
        Some(p) => pipeline_params_from_file(p)?,
        None => PipelineParams::default(),
    };
    params.check_sensors(&calib.sensor_set()?).map_err(anyhow::Error::msg)?;
    let hard_ns = params.hard_deadline_ns;
    let target_ns = params.target_deadline_ns;
    let ingest = match &opts.ingest_params {
        Some(p) => read_ingest_params(p)?,
        None => IngestParams::default(),
    };
    let mut frontend = Frontend::with_params(&calib, ingest);
    let params_used = opts.report.then(|| params.clone());
    let mut pipeline = Pipeline::new(params, &calib, detector);
    pipeline.keep_camera_views(opts.report);
    let detector_name = pipeline.detector_name().unwrap_or("none").to_string();

    let topic_names = source.topic_names(&calib);
    let topic_of: Vec<Option<usize>> =
        topic_names.iter().map(|t| opts.topics.iter().position(|name| name == t)).collect();
    if topic_of.iter().all(Option::is_none) {
        bail!("{}: none of the input topics {:?} is in the bag", opts.bag.display(), opts.topics);
    }
    let mut files = match &opts.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let open = |name: &str| -> Result<std::io::BufWriter<std::fs::File>> {
                Ok(std::io::BufWriter::new(std::fs::File::create(dir.join(name))?))
            };
            Some((open("events.jsonl")?, open("objects.jsonl")?))
        }
        None => None,
    };

    let mut messages: BTreeMap<String, u64> = BTreeMap::new();
    let mut decode_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut events: Vec<Event> = vec![];
    let (mut sets, mut partial, mut objects_out) = (0u64, 0u64, 0u64);
    let mut stage: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    let mut e2e = histogram();
    let mut frontend_h: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    // Wall time each member message was fed, by (sensor, stamp): a set's latency counts from
    // its newest member's arrival, as in the node.
    let mut fed_at: std::collections::VecDeque<(StampNs, Instant)> = Default::default();
    let (mut target_misses, mut hard_misses) = (0u64, 0u64);
    let wall = Instant::now();
    let mut first_log: Option<i64> = None;
    let mut error: Option<anyhow::Error> = None;
    let mut report = opts.report.then(crate::report::ReportCollector::default);

    // The further cameras, LiDARs and radars the calibration declares: `/<name>/points`,
    // `/<name>/image_raw` and `/<name>/camera_info` (as fusion_sim writes them), with the
    // index of what they carry among the inputs (0 image, 1 LiDAR, 2 radar, 4 CameraInfo).
    let further_of: Vec<Option<(fusion::SensorId, usize)>> = topic_names
        .iter()
        .map(|t| {
            frontend.further().find_map(|(id, name, kind)| {
                let input = match kind {
                    fusion::Sensor::Camera if *t == format!("/{name}/image_raw") => 0,
                    fusion::Sensor::Camera if *t == format!("/{name}/camera_info") => CAMERA_INFO_INPUT,
                    fusion::Sensor::Lidar if *t == format!("/{name}/points") => 1,
                    fusion::Sensor::Radar if *t == format!("/{name}/points") => 2,
                    _ => return None,
                };
                Some((id, input))
            })
        })
        .collect();
    let duration_ns = source.for_each_message(&calib, opts.out.as_deref(), |m| {
        let further = further_of.get(m.topic).copied().flatten();
        let sensor = match further {
            Some((_, kind)) => kind,
            None => {
                let Some(Some(sensor)) = topic_of.get(m.topic).copied() else { return true };
                sensor
            }
        };
        let name = &topic_names[m.topic];
        *messages.entry(name.clone()).or_default() += 1;
        if opts.realtime {
            let t0 = *first_log.get_or_insert(m.log_time_ns);
            let due = Duration::from_nanos(((m.log_time_ns - t0).max(0) as f64 / opts.rate) as u64);
            if let Some(wait) = due.checked_sub(wall.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let arrived = Instant::now();
        if sensor == CAMERA_INFO_INPUT {
            // Intrinsics, not a set member: the frontend keeps them for the next frames.
            match CameraInfo::from_serialized_bytes(&m.data) {
                Ok(info) => {
                    let stamp = stamp_ns(info.header.stamp.sec, info.header.stamp.nanosec);
                    let camera = further.map_or(frontend.sensor(fusion::Sensor::Camera), |(id, _)| id);
                    let _counted =
                        frontend.camera_info_of(camera, stamp, &info.header.frame_id, camera_info_ref(&info));
                }
                Err(e) => {
                    *decode_errors.entry("camera_info.undecodable".into()).or_default() += 1;
                    tracing::warn!("{name}: message at {} ns does not decode: {e}", m.log_time_ns);
                }
            }
            return true;
        }
        if sensor == ODOMETRY_INPUT {
            // The ego's motion, not a set member: the pipeline's buffer keeps it for the sets.
            match Odometry::from_serialized_bytes(&m.data) {
                Ok(odom) => {
                    if let Err(why) = pipeline.push_odometry(&sensor_fusion::ros::odometry_sample(&odom)) {
                        tracing::debug!("{name}: {why}");
                    }
                }
                Err(e) => {
                    *decode_errors.entry("odometry.undecodable".into()).or_default() += 1;
                    tracing::warn!("{name}: message at {} ns does not decode: {e}", m.log_time_ns);
                }
            }
            return true;
        }
        let decoded: Result<Result<Input, fusion::frontend::Rejected>, String> = match sensor {
            0 => Image::from_serialized_bytes(&m.data).map_err(|e| e.to_string()).map(|img| {
                let stamp = stamp_ns(img.header.stamp.sec, img.header.stamp.nanosec);
                let camera = further.map_or(frontend.sensor(fusion::Sensor::Camera), |(id, _)| id);
                frontend.camera_of(camera, stamp, &img.header.frame_id, image_ref(&img))
            }),
            1 | 2 => PointCloud2::from_serialized_bytes(&m.data).map_err(|e| e.to_string()).map(|c| {
                let stamp = stamp_ns(c.header.stamp.sec, c.header.stamp.nanosec);
                let f = cloud_fields(&c);
                match further {
                    Some((id, _)) => frontend.cloud_of(id, stamp, &c.header.frame_id, cloud_ref(&c, &f)),
                    None if sensor == 1 => frontend.lidar(stamp, &c.header.frame_id, cloud_ref(&c, &f)),
                    None => frontend.radar(stamp, &c.header.frame_id, cloud_ref(&c, &f)),
                }
            }),
            _ => Imu::from_serialized_bytes(&m.data)
                .map_err(|e| e.to_string())
                .map(|i| frontend.imu(&i.header.frame_id, &imu_sample(&i))),
        };
        let kind = ["camera", "lidar", "radar", "imu"][sensor];
        frontend_h.entry(kind).or_insert_with(histogram).record(arrived.elapsed().as_micros().max(1) as u64).ok();
        let input = match decoded {
            Ok(Ok(input)) => input,
            Ok(Err(rejected)) => {
                // A NaN-ridden LiDAR sweep is rejected, and is also what sensor_degraded reports.
                let is_lidar = rejected.sensor == fusion::Sensor::Lidar;
                if let (Reject::NonFinite { non_finite, total, .. }, true) = (rejected.reason, is_lidar) {
                    let stamp = m.log_time_ns;
                    let lidar = further.map_or(frontend.sensor(fusion::Sensor::Lidar), |(id, _)| id);
                    let health = pipeline.anomaly.on_lidar_health(lidar, stamp, non_finite as u64, total as u64);
                    if let Some(r) = report.as_mut() {
                        health.iter().for_each(|e| r.on_event(e));
                    }
                    events.extend(health);
                }
                return true;
            }
            Err(e) => {
                *decode_errors.entry(format!("{kind}.undecodable")).or_default() += 1;
                tracing::warn!("{name}: message at {} ns does not decode: {e}", m.log_time_ns);
                return true;
            }
        };
        if sensor != 3 {
            fed_at.push_back((input.stamp(), arrived));
            if fed_at.len() > 64 {
                fed_at.pop_front();
            }
        }
        if let (Some(r), Input::Imu(_, imu)) = (report.as_mut(), &input) {
            r.on_imu(imu);
        }
        let step = pipeline.push(input);
        let done = Instant::now();
        for s in &step.sets {
            sets += 1;
            partial += s.partial as u64;
            objects_out += s.objects.len() as u64;
            // The scheduler's stage names (`stage.<name>` on /diagnostics), and the IMU
            // integration the replay also times.
            let named: Vec<(&'static str, u64)> = std::iter::once(("imu", s.times.imu_us))
                .chain(stage_times(&s.times).map(|(st, us)| (st.name(), us)))
                .collect();
            for &(k, v) in &named {
                stage.entry(k).or_insert_with(histogram).record(v.max(1)).ok();
            }
            let newest_arrival =
                fed_at.iter().rev().find(|(st, _)| *st == s.newest_stamp).map(|x| x.1).unwrap_or(arrived);
            let latency = done.duration_since(newest_arrival).as_nanos() as i64;
            e2e.record((latency / 1000).max(1) as u64).ok();
            target_misses += (latency > target_ns) as u64;
            hard_misses += (latency > hard_ns) as u64;
            if let Some(r) = report.as_mut() {
                r.on_set(s, latency as f64 * 1e-6, &named);
            }
            if let Some((_, objects)) = files.as_mut() {
                if let Err(e) = writeln!(objects, "{}", set_line(s)) {
                    error = Some(e.into());
                    return false;
                }
            }
        }
        if let Some(r) = report.as_mut() {
            step.events.iter().for_each(|e| r.on_event(e));
        }
        events.extend(step.events);
        true
    })?;
    if let Some(e) = error {
        return Err(e);
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &events {
        *by_kind.entry(e.kind.as_str()).or_default() += 1;
    }
    // Odometry is counted with the sensors' messages (`odometry.accepted`, `.rejected.<why>`).
    let mut frontend_counters = frontend.counters.clone();
    frontend_counters.extend(pipeline.odometry().lock().expect("odometry buffer").counters.clone());
    let metrics = json!({
        "bag": source.name(opts),
        "detector": detector_name,
        "extrinsics": resolved.sources,
        "messages": messages,
        "frontend": frontend_counters,
        "decode_errors": decode_errors,
        "pipeline": pipeline.counters,
        "sets": sets,
        "partial_sets": partial,
        "objects_published": objects_out,
        "events": events.len(),
        "events_by_kind": by_kind,
    });
    let total_messages: u64 = messages.values().sum();
    let timing = json!({
        "mode": if opts.realtime { format!("realtime x{}", opts.rate) } else { "as_fast_as_possible".to_string() },
        "wall_s": (elapsed * 1000.0).round() / 1000.0,
        "bag_duration_s": duration_ns as f64 * 1e-9,
        "speed_vs_realtime": ((duration_ns as f64 * 1e-9 / elapsed) * 100.0).round() / 100.0,
        "messages_per_s": (total_messages as f64 / elapsed).round(),
        "sets_per_s": ((sets as f64 / elapsed) * 10.0).round() / 10.0,
        "end_to_end": summary(&e2e),
        "target_deadline_misses": target_misses,
        "hard_deadline_misses": hard_misses,
        "stages": stage.iter().map(|(k, h)| (k.to_string(), summary(h))).collect::<BTreeMap<_, _>>(),
        "ingest": frontend_h.iter().map(|(k, h)| (k.to_string(), summary(h))).collect::<BTreeMap<_, _>>(),
    });
    if let (Some(dir), Some((mut ev, mut obj))) = (&opts.out, files) {
        for e in &events {
            writeln!(ev, "{}", serde_json::to_string(e)?)?;
        }
        ev.flush()?;
        obj.flush()?;
        std::fs::write(dir.join("metrics.json"), serde_json::to_string_pretty(&metrics)? + "\n")?;
        std::fs::write(dir.join("timing.json"), serde_json::to_string_pretty(&timing)? + "\n")?;
    }
    let report = report.map(|collector| {
        let ground_truth = match &source {
            Source::Bag(_) if opts.bag.is_dir() => Some(opts.bag.join("ground_truth.jsonl")),
            Source::Bag(_) => opts.bag.parent().map(|d| d.join("ground_truth.jsonl")),
            Source::Sim { .. } => opts.out.as_ref().map(|d| d.join("ground_truth.jsonl")),
        };
        let used = params_used.unwrap_or_default();
        let mut params: serde_json::Map<String, serde_json::Value> =
            PipelineParams::NAMES.iter().filter_map(|n| Some((n.to_string(), json!(used.get(n)?)))).collect();
        for n in PipelineParams::WORD_NAMES {
            params.insert(n.to_string(), json!(used.get_word(n)));
        }
        for (name, file) in [("params_file", &opts.params_file), ("ingest_params_file", &opts.ingest_params)] {
            params.insert(name.into(), json!(file.as_ref().map(|p| p.display().to_string())));
        }
        let info = crate::report::RunInfo {
            source: source.name(opts).unwrap_or_default(),
            calibration: calib.clone(),
            extrinsics: json!(resolved.sources),
            params: params.into(),
            models: [("camera_detector".to_string(), json!(detector_name))].into_iter().collect(),
            metrics: metrics.clone(),
            timing: timing.clone(),
            target_ms: target_ns as f64 * 1e-6,
            hard_ms: hard_ns as f64 * 1e-6,
            ground_truth: ground_truth.filter(|p| p.is_file()),
        };
        (collector, info)
    });
    Ok(ReplayResult { events, sets, metrics, timing, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults in one place: the shipped params file says what the nodes' structs say.
    #[test]
    fn the_shipped_ingest_file_holds_the_nodes_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ingest.yaml");
        assert_eq!(read_ingest_params(&shipped).expect("config/ingest.yaml"), IngestParams::default());
    }

    /// The same for fusion_node: config/fusion.yaml names every parameter of
    /// `FusionNodeConfig` (nothing more: an unknown name fails the read) and holds its
    /// default, which is the runtime structs' (`PipelineParams`, `SchedConfig`,
    /// `RtConfig::NODE`, `DegradeConfig`, `DetectorParams`).
    #[test]
    fn the_shipped_fusion_file_holds_the_nodes_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/fusion.yaml");
        let from_file = FusionNodeConfig::from_params_file(&shipped).expect("config/fusion.yaml");
        let text = std::fs::read_to_string(&shipped).expect("read");
        let doc: serde_norway::Value = serde_norway::from_str(&text).expect("yaml");
        let (_, section) = doc.as_mapping().expect("mapping").iter().next().expect("a node section");
        let mut named = vec![];
        flatten("", &section["ros__parameters"], &mut named);
        let defaults = FusionNodeConfig::default().flat();
        assert_eq!(named.len(), defaults.len(), "the file names every parameter once");
        for ((name, file), (_, code)) in from_file.flat().iter().zip(&defaults) {
            match (file.as_f64(), code.as_f64()) {
                // The file may round (29.42 for 3 g = 29.41995 m/s²), never differ.
                (Some(f), Some(c)) => {
                    assert!((f - c).abs() <= 1e-4 * c.abs().max(1.0), "{name}: config/fusion.yaml {f} vs code {c}")
                }
                _ => assert_eq!(file, code, "{name}"),
            }
        }
    }

    #[test]
    fn a_robots_ingest_file_is_read_as_the_nodes_read_it() {
        let dir = std::env::temp_dir().join(format!("ingest_params_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("ingest.yaml");
        std::fs::write(
            &file,
            "/**:\n  ros__parameters:\n    max_range: 30.0\n    queue_size: 3\n\
             /robot/radar_ingest:\n  ros__parameters:\n    min_rcs: 5.0\n\
             imu_ingest:\n  ros__parameters:\n    gyro_bias: [0.1, 0.0, -0.1]\n    filter_gain: 0.05\n\
             /**/camera_ingest:\n  ros__parameters:\n    output_width: 320\n    output_height: 240\n",
        )
        .expect("write");
        let p = read_ingest_params(&file).expect("a valid file");
        assert_eq!((p.lidar.max_range, p.radar.max_range, p.radar.min_rcs), (30.0, 30.0, 5.0));
        assert_eq!((p.imu.gyro_bias, p.imu.filter_gain), ([0.1, 0.0, -0.1], 0.05));
        assert_eq!(p.camera_output, Some((320, 240)));
        assert_eq!(p.lidar.min_range, LidarParams::default().min_range);

        std::fs::write(&file, "lidar_ingest:\n  ros__parameters:\n    max_non_finite_ratio: 2.0\n").expect("write");
        let e = format!("{:#}", read_ingest_params(&file).unwrap_err());
        assert!(e.contains("lidar_ingest: parameter max_non_finite_ratio") && e.contains("within [0, 1]"), "{e}");
        std::fs::write(&file, "imu_ingest:\n  ros__parameters:\n    accel_bias: [1.0, 2.0]\n").expect("write");
        assert!(format!("{:#}", read_ingest_params(&file).unwrap_err()).contains("must be 3 numbers"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
