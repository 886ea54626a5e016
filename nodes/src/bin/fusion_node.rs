//! fusion_node: /sensors/{camera,lidar,radar,imu} → synchronized sets → fused, tracked
//! objects on /fusion/objects (+ RViz markers on /fusion/markers), anomaly events on
//! /anomaly/events, and its health on /diagnostics. The pipeline is `fusion::pipeline`;
//! this file only converts messages and enforces deadlines against the ROS clock.
//!
//! ```text
//! r2r subscriptions --drain after spin_once--> one bounded queue (drop-oldest, counted)
//!    --worker thread--> Pipeline::push → sets → deadline check → publish
//! 1 Hz timer → /diagnostics (latency p50/p99/max, target/hard misses, drops by reason)
//! ```
use anyhow::{Context as _, Result};
use fusion::{
    anomaly::Event,
    calib::Calibration,
    camera::to_rgb8,
    cloud::decoder,
    frontend::imu_state,
    pipeline::{FusedObject as Fused, Input, Pipeline, PipelineParams, SetOutput},
    stamp_ns, StampNs,
};
use hdrhistogram::Histogram;
use r2r::{
    builtin_interfaces::msg::Duration as RosDuration,
    diagnostic_msgs::msg::{DiagnosticArray, KeyValue},
    fusion_msgs::msg::{AnomalyEvent, FusedObject, FusedObjectArray},
    geometry_msgs::msg::{Point, Pose, Quaternion, Vector3},
    sensor_msgs::msg::{Image, Imu, PointCloud2},
    std_msgs::msg::{ColorRGBA, Header},
    visualization_msgs::msg::{Marker, MarkerArray},
    QosProfile,
};
use sensor_fusion::{
    detector::DetectorParams,
    ingest::{cloud_fields, cloud_ref, image_ref, imu_sample},
    ros::{self, Params},
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

enum Msg {
    Camera(Image),
    Lidar(PointCloud2),
    Radar(PointCloud2),
    Imu(Imu),
}

impl Msg {
    fn sensor(&self) -> &'static str {
        match self {
            Msg::Camera(_) => "camera",
            Msg::Lidar(_) => "lidar",
            Msg::Radar(_) => "radar",
            Msg::Imu(_) => "imu",
        }
    }
}

/// What /diagnostics reports; reset per window where noted.
struct Stats {
    received: BTreeMap<&'static str, u64>,
    counters: BTreeMap<String, u64>,
    /// Newest member's stamp → publication, this window (µs).
    latency: Histogram<u64>,
    window_sets: u64,
    window_hard_misses: u64,
    events: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn add(&mut self, key: impl Into<String>, n: u64) {
        *self.counters.entry(key.into()).or_default() += n;
    }
}

fn convert(msg: Msg) -> Result<Input, String> {
    match msg {
        Msg::Camera(img) => {
            let stamp = stamp_ns(img.header.stamp.sec, img.header.stamp.nanosec);
            let rgb = to_rgb8(image_ref(&img)).map_err(|e| e.as_str().to_string())?;
            Ok(Input::Camera { stamp, image: Arc::new(rgb) })
        }
        Msg::Lidar(c) => {
            let stamp = stamp_ns(c.header.stamp.sec, c.header.stamp.nanosec);
            let f = cloud_fields(&c);
            let d = decoder(cloud_ref(&c, &f), &["x", "y", "z", "intensity"], &["t"])
                .map_err(|e| e.as_str().to_string())?;
            let has_t = d.has(4);
            let mut pts = Vec::with_capacity(d.len());
            d.for_each(|v| {
                pts.push([v[0] as f32, v[1] as f32, v[2] as f32, v[3] as f32, if has_t { v[4] as f32 } else { 0.0 }])
            });
            Ok(Input::Lidar { stamp, points: Arc::new(pts), non_finite: 0, total: 0 })
        }
        Msg::Radar(c) => {
            let stamp = stamp_ns(c.header.stamp.sec, c.header.stamp.nanosec);
            let f = cloud_fields(&c);
            let d = decoder(cloud_ref(&c, &f), &["x", "y", "z", "doppler", "rcs"], &[])
                .map_err(|e| e.as_str().to_string())?;
            let mut t = Vec::with_capacity(d.len());
            d.for_each(|v| t.push([v[0] as f32, v[1] as f32, v[2] as f32, v[3] as f32, v[4] as f32]));
            Ok(Input::Radar { stamp, targets: Arc::new(t) })
        }
        Msg::Imu(m) => {
            let s = imu_sample(&m);
            let n = s.orientation.iter().map(|v| v * v).sum::<f64>().sqrt();
            if !(n - 1.0).abs().lt(&0.01) {
                return Err("bad_orientation".into());
            }
            Ok(Input::Imu(imu_state(&s)))
        }
    }
}

fn object_msg(o: &Fused) -> FusedObject {
    let (s, c) = (o.yaw / 2.0).sin_cos();
    FusedObject {
        track_id: o.track_id,
        label: o.label.as_str().into(),
        confidence: o.confidence,
        pose: Pose {
            position: Point { x: o.center[0], y: o.center[1], z: o.center[2] },
            orientation: Quaternion { x: 0.0, y: 0.0, z: s, w: c },
        },
        dimensions: Vector3 { x: o.size[0], y: o.size[1], z: o.size[2] },
        velocity: Vector3 { x: o.velocity[0], y: o.velocity[1], z: 0.0 },
        sensors: o.sensors,
        age: o.age,
        time_to_collision: o.time_to_collision.map(|t| t as f32).unwrap_or(f32::INFINITY),
    }
}

fn markers(header: &Header, set: &SetOutput) -> MarkerArray {
    let mut out = vec![Marker { header: header.clone(), ns: "objects".into(), action: 3, ..Default::default() }];
    for o in &set.objects {
        let color = match o.label {
            fusion::detect::Label::Person => [0.9, 0.2, 0.2],
            fusion::detect::Label::Vehicle => [0.2, 0.4, 0.9],
            fusion::detect::Label::Obstacle => [0.95, 0.6, 0.1],
            fusion::detect::Label::Unknown => [0.7, 0.7, 0.7],
        };
        let m = object_msg(o);
        let lifetime = RosDuration { sec: 0, nanosec: 300_000_000 };
        out.push(Marker {
            header: header.clone(),
            ns: "objects".into(),
            id: o.track_id as i32,
            type_: 1, // CUBE
            action: 0,
            pose: m.pose.clone(),
            scale: m.dimensions.clone(),
            color: ColorRGBA { r: color[0], g: color[1], b: color[2], a: 0.6 },
            lifetime: lifetime.clone(),
            ..Default::default()
        });
        let mut label_pose = m.pose.clone();
        label_pose.position.z += o.size[2] / 2.0 + 0.5;
        out.push(Marker {
            header: header.clone(),
            ns: "labels".into(),
            id: o.track_id as i32,
            type_: 9, // TEXT_VIEW_FACING
            action: 0,
            pose: label_pose,
            scale: Vector3 { x: 0.0, y: 0.0, z: 0.6 },
            color: ColorRGBA { r: 1.0, g: 1.0, b: 1.0, a: 1.0 },
            text: format!("{} #{}", o.label.as_str(), o.track_id),
            lifetime,
            ..Default::default()
        });
    }
    MarkerArray { markers: out }
}

fn event_msg(e: &Event, base_frame: &str) -> AnomalyEvent {
    AnomalyEvent {
        header: Header { stamp: ros::to_time(e.stamp_ns), frame_id: base_frame.into() },
        event_id: e.event_id,
        kind: e.kind.into(),
        severity: e.severity,
        rule: e.rule.into(),
        measured_value: e.measured_value,
        threshold: e.threshold,
        sensors: e.sensors.iter().map(|s| s.to_string()).collect(),
        track_ids: e.track_ids.clone(),
        zone: e.zone.clone(),
        position: Point { x: e.position[0], y: e.position[1], z: e.position[2] },
        onset: ros::to_time(e.onset_ns),
        evidence: e.evidence.iter().map(|k| KeyValue { key: k.key.clone(), value: k.value.clone() }).collect(),
    }
}

fn main() -> Result<()> {
    ros::init_process();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let mut node = ros::create_node("fusion_node")?;
    let node_name = node.name()?;
    let params = Params::of(&node);
    params.bool("use_sim_time", false)?;
    let calibration_path = params.string("calibration", "")?;
    let calib = Calibration::load(&calibration_path).context("parameter 'calibration'")?;
    let queue_size = params.usize("queue_size", 64)?.max(4);
    let diagnostics_period = params.f64("diagnostics_period", 1.0)?;
    let mut dp = DetectorParams::default();
    dp.detector = params.string("detector", &dp.detector)?;
    dp.weights = params.string("detector_weights", &dp.weights)?;
    dp.backend = params.string("backend", &dp.backend)?;
    dp.input_size = params.string("input_size", &dp.input_size)?;
    dp.precision = params.string("precision", &dp.precision)?;
    dp.score_threshold = params.f64("detector_score_threshold", dp.score_threshold)?;
    // Loaded (and its weights verified) before any subscription: a bad model is a start-up
    // error, not a surprise on the first frame.
    let detector = dp.build()?;
    tracing::info!(
        "camera detector: {}",
        detector.as_ref().map(|d| d.name().to_string()).unwrap_or_else(|| "none".into())
    );
    let mut pp = PipelineParams::default();
    for name in PipelineParams::NAMES {
        let v = params.f64(name, pp.get(name).expect("named parameter"))?;
        pp.set(name, v).map_err(anyhow::Error::msg).with_context(|| format!("parameter {name}"))?;
    }
    let (target_ns, hard_ns) = (pp.target_deadline_ns, pp.hard_deadline_ns);
    let base_frame = calib.base_frame.clone();

    let input_qos = QosProfile::default().keep_last(10);
    let cam = node.subscribe::<Image>("/sensors/camera", input_qos.clone())?;
    let lidar = node.subscribe::<PointCloud2>("/sensors/lidar", input_qos.clone())?;
    let radar = node.subscribe::<PointCloud2>("/sensors/radar", input_qos.clone())?;
    let imu = node.subscribe::<Imu>("/sensors/imu", input_qos.keep_last(100))?;
    let objects_pub = node.create_publisher::<FusedObjectArray>("/fusion/objects", QosProfile::default())?;
    let markers_pub = node.create_publisher::<MarkerArray>("/fusion/markers", QosProfile::default())?;
    // Events are rare and must not be lost: reliable, deep history.
    let events_pub = node.create_publisher::<AnomalyEvent>("/anomaly/events", QosProfile::default().keep_last(100))?;
    let diagnostics = node.create_publisher::<DiagnosticArray>("/diagnostics", QosProfile::default())?;
    let (param_handler, _param_events) = node.make_parameter_handler()?;
    let clock = node.get_ros_clock();
    tracing::info!(node = %node_name, calibration = %if calibration_path.is_empty() { "<defaults>" } else { &calibration_path },
                   "fusion node up: deadlines {} / {} ms", target_ns / 1_000_000, hard_ns / 1_000_000);

    let stats = Arc::new(Mutex::new(Stats {
        received: BTreeMap::new(),
        counters: BTreeMap::new(),
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
        window_sets: 0,
        window_hard_misses: 0,
        events: BTreeMap::new(),
    }));
    let (tx, rx) = crossbeam_channel::bounded::<(Instant, Msg)>(queue_size);
    let mut drains = vec![];
    macro_rules! feed {
        ($stream:expr, $variant:ident) => {{
            let (tx, evict, stats) = (tx.clone(), rx.clone(), stats.clone());
            drains.push(ros::drain($stream, move |m| {
                let mut item = (Instant::now(), Msg::$variant(m));
                let mut s = stats.lock().expect("stats");
                *s.received.entry(item.1.sensor()).or_default() += 1;
                // Full: drop the oldest message (a stale input must not delay a fresh one).
                while let Err(crossbeam_channel::TrySendError::Full(back)) = tx.try_send(item) {
                    if let Ok((_, old)) = evict.try_recv() {
                        s.add(format!("dropped.queue_full.{}", old.sensor()), 1);
                    }
                    item = back;
                }
            }));
        }};
    }
    feed!(cam, Camera);
    feed!(lidar, Lidar);
    feed!(radar, Radar);
    feed!(imu, Imu);
    drop(tx);

    let now_ns = {
        let clock = clock.clone();
        move || {
            let t = ros::now(&clock);
            stamp_ns(t.sec, t.nanosec)
        }
    };
    let worker_stats = stats.clone();
    let worker_now = now_ns.clone();
    let worker = std::thread::Builder::new().name("fusion-worker".into()).spawn(move || {
        let mut pipeline = Pipeline::new(pp, &calib, detector);
        let mut newest_data: Option<StampNs> = None;
        let mut warned_clock = false;
        loop {
            let step = match rx.recv_timeout(Duration::from_millis(20)) {
                Ok((_, msg)) => {
                    let sensor = msg.sensor();
                    match convert(msg) {
                        Ok(input) => {
                            newest_data = Some(newest_data.unwrap_or(i64::MIN).max(input.stamp()));
                            pipeline.push(input)
                        }
                        Err(reason) => {
                            worker_stats.lock().expect("stats").add(format!("rejected.{sensor}.{reason}"), 1);
                            continue;
                        }
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    // Silence: release partial sets and notice dropouts on the node's clock,
                    // but only when that clock and the data share a time base.
                    let now = worker_now();
                    match newest_data {
                        Some(d) if (now - d).abs() < 5_000_000_000 => pipeline.tick(now),
                        _ => continue,
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let now = worker_now();
            let mut events = step.events;
            for set in &step.sets {
                let latency = now - set.newest_stamp;
                let hard_miss = latency > hard_ns;
                {
                    let mut s = worker_stats.lock().expect("stats");
                    s.window_sets += 1;
                    s.add("sets", 1);
                    if set.partial {
                        s.add("sets.partial", 1);
                    }
                    s.latency.record((latency.max(1) / 1000).max(1) as u64).ok();
                    if latency > target_ns {
                        s.add("deadline.target_misses", 1);
                    }
                    if hard_miss {
                        s.window_hard_misses += 1;
                        s.add("dropped.hard_deadline", 1);
                    }
                }
                if latency.abs() > 10_000_000_000 && !warned_clock {
                    warned_clock = true;
                    tracing::warn!(
                        "set stamps are {:.1} s from the node clock: every set misses its deadline. Playing a bag? \
                         Use `fusion_bag play --clock` and use_sim_time:=true",
                        latency as f64 * 1e-9
                    );
                }
                events.extend(pipeline.report_deadline(set.stamp, hard_miss));
                if hard_miss {
                    continue; // work past its hard deadline is not published
                }
                let header = Header { stamp: ros::to_time(set.stamp), frame_id: base_frame.clone() };
                let msg = FusedObjectArray {
                    header: header.clone(),
                    objects: set.objects.iter().map(object_msg).collect(),
                    partial: set.partial,
                    missing_sensors: set.missing.iter().map(|m| m.to_string()).collect(),
                    latency_ms: (worker_now() - set.newest_stamp) as f32 / 1e6,
                };
                if let Err(e) = objects_pub.publish(&msg) {
                    tracing::warn!("publish /fusion/objects failed: {e}");
                }
                if let Err(e) = markers_pub.publish(&markers(&header, set)) {
                    tracing::warn!("publish /fusion/markers failed: {e}");
                }
            }
            for e in &events {
                tracing::info!(kind = e.kind, rule = e.rule, id = e.event_id, "anomaly event");
                *worker_stats.lock().expect("stats").events.entry(e.kind).or_default() += 1;
                if let Err(err) = events_pub.publish(&event_msg(e, &base_frame)) {
                    tracing::warn!("publish /anomaly/events failed: {err}");
                }
            }
            if !pipeline.counters.is_empty() {
                let mut s = worker_stats.lock().expect("stats");
                for (k, v) in std::mem::take(&mut pipeline.counters) {
                    s.add(format!("pipeline.{k}"), v);
                }
            }
        }
    })?;

    let diag_stats = stats.clone();
    let diag_clock = clock.clone();
    let status_name = format!("{node_name}: fusion");
    let diag = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(diagnostics_period.max(0.05)));
        loop {
            tick.tick().await;
            let mut s = diag_stats.lock().expect("stats");
            let ms = |v: u64| format!("{:.3}", v as f64 / 1000.0);
            let mut kv: Vec<(String, String)> = vec![];
            for (k, v) in &s.received {
                kv.push((format!("received.{k}"), v.to_string()));
            }
            for (k, v) in &s.counters {
                kv.push((k.clone(), v.to_string()));
            }
            for (k, v) in &s.events {
                kv.push((format!("events.{k}"), v.to_string()));
            }
            let (sets, misses) = (s.window_sets, s.window_hard_misses);
            if !s.latency.is_empty() {
                kv.push(("latency_p50_ms".into(), ms(s.latency.value_at_quantile(0.5))));
                kv.push(("latency_p99_ms".into(), ms(s.latency.value_at_quantile(0.99))));
                kv.push(("latency_max_ms".into(), ms(s.latency.max())));
            }
            kv.push(("window.sets".into(), sets.to_string()));
            kv.push(("window.hard_misses".into(), misses.to_string()));
            let (level, message) = if misses > 0 {
                (1u8, format!("{misses} of {sets} sets missed the hard deadline"))
            } else if sets == 0 {
                (1u8, "no synchronized sets".to_string())
            } else {
                (0u8, format!("{sets} sets"))
            };
            s.latency.reset();
            s.window_sets = 0;
            s.window_hard_misses = 0;
            drop(s);
            let status = ros::status(status_name.clone(), "fusion", level, message, kv);
            let header = Header { stamp: ros::now(&diag_clock), frame_id: String::new() };
            if let Err(e) = diagnostics.publish(&DiagnosticArray { header, status: vec![status] }) {
                tracing::warn!("diagnostics publish failed: {e}");
            }
        }
    });
    tokio::spawn(param_handler);
    ros::spin_until_shutdown(node, drains, diag, worker).await;
    Ok(())
}
