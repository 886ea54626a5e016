//! fusion_node: /sensors/{camera,lidar,radar,imu} → synchronized sets → fused, tracked
//! objects on /fusion/objects (+ RViz markers on /fusion/markers), anomaly events on
//! /anomaly/events, and its health on /diagnostics. The pipeline is `fusion::pipeline`, run
//! by the deadline scheduler `fusion::sched` against the ROS clock; this file only converts
//! messages and publishes.
//!
//! ```text
//! r2r subscriptions --drain--> latest-wins mailboxes per sensor (bounded, superseded counted)
//!    --fusion thread--> preprocess → sync → admission → EDF: inference thread (detector),
//!                       CPU worker (clustering, radar) → fuse in stamp order → hard-deadline check → publish
//! 1 Hz timer → /diagnostics (per-stage and end-to-end p50/p99/max, target/hard misses,
//!              shed/dropped by reason, degradation level, queue depths, RT status)
//! ```
//! `scheduler:=fifo` swaps in the plain FIFO baseline (one thread, one queue) for comparison.
use anyhow::Result;
use fusion::{
    anomaly::Event,
    camera::Intrinsics,
    pipeline::{Pipeline, PipelineParams, SetOutput},
    sched::{Executor, Message, Sink},
};
use r2r::{
    diagnostic_msgs::msg::DiagnosticArray,
    fusion_msgs::msg::{AnomalyEvent, FusedObjectArray},
    nav_msgs::msg::Odometry,
    sensor_msgs::msg::{CameraInfo, Image, Imu, PointCloud2},
    std_msgs::msg::Header,
    visualization_msgs::msg::MarkerArray,
};
use sensor_fusion::{
    config::FusionNodeConfig,
    graph,
    ingest::camera_info_ref,
    messages::{event_msg, to_input, CameraIntrinsics, SensorMsg},
    ros::{self, Params},
    rviz,
};
use std::{sync::Arc, time::Duration};

/// Publishes what the scheduler finishes (on its fusion thread).
struct Publishers {
    objects: r2r::Publisher<FusedObjectArray>,
    markers: r2r::Publisher<MarkerArray>,
    events: r2r::Publisher<AnomalyEvent>,
    base_frame: String,
    /// Drawn on /fusion/markers with the objects, so RViz shows what the rules test against.
    zones: Vec<fusion::calib::SafetyZone>,
    /// `annotated_image: true`: each set's camera frame with its boxes drawn.
    camera_boxes: Option<r2r::Publisher<Image>>,
    camera_frame: String,
}

impl Sink for Publishers {
    fn publish(&mut self, set: &SetOutput, latency_ns: i64) {
        let header = Header { stamp: ros::to_time(set.stamp), frame_id: self.base_frame.clone() };
        let msg = FusedObjectArray {
            header: header.clone(),
            objects: set.objects.iter().map(rviz::object_msg).collect(),
            partial: set.partial,
            missing_sensors: set.missing.iter().map(|m| m.to_string()).collect(),
            latency_ms: latency_ns as f32 / 1e6,
            odom_frame_id: set.odom_frame.clone().unwrap_or_default(),
        };
        if let Err(e) = self.objects.publish(&msg) {
            tracing::warn!("publish /fusion/objects failed: {e}");
        }
        if let Err(e) = self.markers.publish(&rviz::markers(&header, set, &self.zones)) {
            tracing::warn!("publish /fusion/markers failed: {e}");
        }
        if let (Some(publisher), Some(view)) = (&self.camera_boxes, set.camera_view(fusion::Sensor::Camera.as_str())) {
            let header = Header { stamp: ros::to_time(view.stamp), frame_id: self.camera_frame.clone() };
            if let Err(e) = publisher.publish(&rviz::annotated_image(header, view)) {
                tracing::warn!("publish {} failed: {e}", graph::CAMERA_BOXES.name);
            }
        }
    }

    fn events(&mut self, events: &[Event]) {
        for e in events {
            tracing::info!(kind = e.kind.as_str(), rule = e.rule, id = e.event_id, "anomaly event");
            if let Err(err) = self.events.publish(&event_msg(e, &self.base_frame)) {
                tracing::warn!("publish /anomaly/events failed: {err}");
            }
        }
    }
}

fn main() -> Result<()> {
    ros::init_process();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let mut node = ros::create_node("fusion_node")?;
    let node_name = ros::node_label(&node)?;
    // Every parameter of this node, typed, with the params files' and `-p` values; checked
    // before anything loads, so a bad value fails at once (and under respawn, not once per
    // model load).
    let mut config = FusionNodeConfig::default();
    ros::declare_config(&node, &mut config)?;
    let params = Params::of(&node);
    let use_sim_time = params.bool("use_sim_time", false)?;
    let diagnostics_period = config.diagnostics_period;
    let dp = config.detector();
    // Loaded (and its weights verified) before any subscription, never on the first frame.
    // A missing or corrupted model is not a reason to leave the robot without perception:
    // the node starts degraded (LiDAR and radar objects, no camera classes), says so on
    // /diagnostics (ERROR) and in one model_degraded event — unless detector_required.
    let detector_required = config.detector_required;
    // The model loads (seconds on a cold disk) while the node waits for the mounts on
    // /tf_static, so that waiting for tf adds nothing to a (re)start.
    let loading = std::thread::Builder::new().name("detector-load".into()).spawn(move || dp.build())?;
    let ros::Extrinsics { resolved, path: calibration_path, watch: tf_watch, latched: _tf_static, tf: _ } =
        ros::extrinsics(&mut node, &params, None)?;
    // LiDAR and radar clouds reach fusion_node already in the base frame (their ingest nodes
    // look a moving mount up at each stamp); what fusion_node itself takes from a mount is
    // taken once: a camera's projection, the first radar's lever arm for the ego speed.
    for (name, _) in resolved.sources.iter().filter(|(_, s)| **s == fusion::calib::PoseSource::TfMoving) {
        match resolved.calibration.kind_of(name) {
            Some(fusion::Sensor::Camera) => {
                tracing::warn!("the {name} mount moves on /tf; fusion_node projects into it at its pose at start-up")
            }
            Some(fusion::Sensor::Radar) => tracing::warn!(
                "the {name} mount moves on /tf; its targets are placed at each stamp, but the ego speed from its \
                 Doppler (when it is the first radar) uses its mount at start-up"
            ),
            _ => {}
        }
    }
    let calib = resolved.calibration.clone();
    // Every sensor the calibration declares is fused: one `sensors/<name>` stream each.
    let sensors = calib.sensor_set()?;
    let pp = config.pipeline()?;
    pp.check_sensors(&sensors).map_err(anyhow::Error::msg)?;
    let built = loading.join().map_err(|_| anyhow::anyhow!("the detector's loading thread panicked"))?;
    let (detector, detector_error) = match built {
        Ok(d) => (d, None),
        Err(e) if !detector_required => {
            tracing::error!("camera detector unavailable, running on LiDAR and radar alone: {e:#}");
            (None, Some(format!("{e:#}")))
        }
        Err(e) => return Err(e.context("parameter detector_required is true")),
    };
    tracing::info!(
        "camera detector: {}",
        detector.as_ref().map(|d| d.name().to_string()).unwrap_or_else(|| "none".into())
    );
    let (target_ns, hard_ns) = (pp.target_deadline_ns, pp.hard_deadline_ns);
    let base_frame = calib.base_frame.clone();
    let (mode, sched) = config.sched()?;
    let trace_file = config.trace_file.clone();

    // Topics and QoS from the declared graph (graph.rs): `sensors/<name>` per declared sensor
    // with its kind's QoS. The IMU comes at 100+ Hz: its history is deeper than the frames'
    // there, so a burst (or a repair from another host) is not lost.
    // Each camera's CameraInfo, as its camera_ingest republishes it for the images it sends.
    let mut camera_infos = vec![];
    for camera in sensors.of_kind(fusion::Sensor::Camera) {
        let topic = format!("{}/camera_info", graph::sensor_stream(sensors.name(camera), fusion::Sensor::Camera).0);
        camera_infos.push((camera, node.subscribe::<CameraInfo>(&topic, graph::SENSORS_CAMERA_INFO.qos.profile())?));
    }
    let odom = node.subscribe::<Odometry>(graph::ODOMETRY.name, graph::ODOMETRY.qos.profile())?;
    let objects_pub =
        node.create_publisher::<FusedObjectArray>(graph::FUSED_OBJECTS.name, graph::FUSED_OBJECTS.qos.profile())?;
    let markers_pub = node.create_publisher::<MarkerArray>(graph::MARKERS.name, graph::MARKERS.qos.profile())?;
    // Events are rare and must not be lost: reliable, deep history, transient-local so a
    // subscriber that (re)starts late (a respawned summarizer) is handed the last 100.
    let events_pub =
        node.create_publisher::<AnomalyEvent>(graph::ANOMALY_EVENTS.name, graph::ANOMALY_EVENTS.qos.profile())?;
    let diagnostics =
        node.create_publisher::<DiagnosticArray>(graph::DIAGNOSTICS.name, graph::DIAGNOSTICS.qos.profile())?;
    // `ros2 param set` changes the anomaly thresholds of the running pipeline; every other
    // parameter is refused with the reason (it shapes state built at start).
    let mut gate = ros::ParamGate::new(&node).with_config(config.clone());
    for &name in PipelineParams::NAMES.iter().filter(|n| Pipeline::is_live_param(n)) {
        gate = gate.live(name, ros::live_number(move |v| PipelineParams::default().set(name, v)));
    }
    let (param_handler, param_events) = gate.serve(&mut node)?;
    let clock = node.get_ros_clock();
    tracing::info!(node = %node_name, calibration = %if calibration_path.is_empty() { "<defaults>" } else { &calibration_path },
                   extrinsics = %resolved.summary(),
                   "fusion node up: deadlines {} / {} ms", target_ns / 1_000_000, hard_ns / 1_000_000);

    // Under use_sim_time the node clock reads 0 until the first /clock message: a set's
    // latency (clock − stamp) would be −1.7e12 ms and its deadlines meaningless. Messages
    // that arrive before it are dropped, counted as dropped.no_clock_yet.<sensor>.
    let node_clock = Arc::new(ros::NodeClock::new(clock.clone(), use_sim_time));
    let now_ns: fusion::sched::Clock = {
        let node_clock = node_clock.clone();
        Arc::new(move || node_clock.now_ns())
    };
    let annotated_image = config.annotated_image;
    let mut pipeline = Pipeline::new(pp, &calib, detector);
    pipeline.keep_camera_views(annotated_image);
    let odometry = pipeline.odometry();
    if let Some(why) = &detector_error {
        pipeline.set_detector_unavailable(why.clone());
    }
    let zones = calib.safety_zones.clone();
    let camera_boxes = match annotated_image {
        true => Some(node.create_publisher::<Image>(graph::CAMERA_BOXES.name, graph::CAMERA_BOXES.qos.profile())?),
        false => None,
    };
    // The annotated image is the standard `camera`'s (one topic, as before).
    let camera_frame = calib.sensor(fusion::Sensor::Camera.as_str()).frame_id.clone();
    let sink = Publishers {
        objects: objects_pub,
        markers: markers_pub,
        events: events_pub,
        base_frame,
        zones,
        camera_boxes,
        camera_frame,
    };
    let intrinsics: Arc<CameraIntrinsics> = Arc::default();
    let preprocess = {
        let intrinsics = intrinsics.clone();
        Box::new(move |m| to_input(m, &intrinsics))
    };
    let executor = Arc::new(if mode == "fifo" {
        Executor::spawn_fifo(pipeline, preprocess, sink, now_ns, sched)?
    } else {
        Executor::spawn_edf(pipeline, preprocess, sink, now_ns, sched)?
    });
    tracing::info!("scheduler: {mode}");
    let stats = executor.stats();
    let mut drains = vec![];
    macro_rules! feed {
        ($msg:ty, $variant:ident, $id:expr, $name:expr, $topic_name:expr, $topic:expr) => {{
            let (executor, node_clock, stats) = (executor.clone(), node_clock.clone(), stats.clone());
            let (id, name) = ($id, $name);
            let stream = node.subscribe::<$msg>(&$topic_name, $topic.qos.profile())?;
            drains.push(ros::drain(stream, move |m| {
                let msg = SensorMsg::$variant(id, m);
                if !node_clock.has_started() {
                    stats.lock().expect("stats").add(format!("dropped.no_clock_yet.{name}"), 1);
                    return;
                }
                node_clock.saw_stamp(msg.stamp());
                executor.post(msg)
            }));
        }};
    }
    for (id, declared) in sensors.iter() {
        let (topic_name, topic) = graph::sensor_stream(declared.name, declared.kind);
        let name = declared.name;
        match declared.kind {
            fusion::Sensor::Camera => feed!(Image, Camera, id, name, topic_name, topic),
            fusion::Sensor::Lidar => feed!(PointCloud2, Lidar, id, name, topic_name, topic),
            fusion::Sensor::Radar => feed!(PointCloud2, Radar, id, name, topic_name, topic),
            fusion::Sensor::Imu => feed!(Imu, Imu, id, name, topic_name, topic),
        }
    }
    for (camera, cam_info) in camera_infos {
        let (stats, intrinsics) = (stats.clone(), intrinsics.clone());
        // The standard camera's counters keep their names; another camera's carry its own.
        let key = match sensors.name(camera) {
            "camera" => "camera_info".to_string(),
            name => format!("camera_info.{name}"),
        };
        drains.push(ros::drain(cam_info, move |info: CameraInfo| {
            let outcome = match Intrinsics::from_camera_info(camera_info_ref(&info)) {
                Ok(k) => {
                    intrinsics.lock().expect("intrinsics").insert(camera, k);
                    format!("{key}.accepted")
                }
                Err(why) => format!("{key}.rejected.{}", why.as_str()),
            };
            stats.lock().expect("stats").add(outcome, 1);
        }));
    }
    {
        // Odometry goes straight into the pipeline's buffer (as tf2's listener fills its
        // buffer): the sets read it at their stamps.
        let stats = stats.clone();
        let mut warned = std::collections::BTreeSet::new();
        drains.push(ros::drain(odom, move |msg: Odometry| {
            let outcome = match odometry.lock().expect("odometry").push(&ros::odometry_sample(&msg)) {
                Ok(new_timeline) => {
                    if new_timeline {
                        stats.lock().expect("stats").add("odometry.timeline_restarted", 1);
                    }
                    "odometry.accepted".to_string()
                }
                Err(why) => {
                    if warned.insert(why.reason()) {
                        tracing::warn!(
                            "{}: {why} (counted as odometry.rejected.{})",
                            graph::ODOMETRY.name,
                            why.reason()
                        );
                    }
                    format!("odometry.rejected.{}", why.reason())
                }
            };
            stats.lock().expect("stats").add(outcome, 1);
        }));
    }
    {
        let executor = executor.clone();
        drains.push(ros::drain(param_events, move |(name, value): (String, r2r::ParameterValue)| {
            let applied = ros::number(&value).ok_or_else(|| format!("not a number: {value:?}"));
            if let Err(e) = applied.and_then(|v| executor.set_param(&name, v)) {
                tracing::warn!("parameter {name} accepted by the gate but not applied: {e}");
            }
        }));
    }
    // Joined by spin_until_shutdown after the drains stop: finishes the sets in flight,
    // writes the trace.
    let worker = {
        let executor = executor.clone();
        std::thread::Builder::new().name("fusion-shutdown".into()).spawn(move || {
            while Arc::strong_count(&executor) > 1 {
                std::thread::sleep(Duration::from_millis(50));
            }
            let Ok(executor) = Arc::try_unwrap(executor) else { return };
            let trace = executor.trace();
            executor.shutdown();
            if let (Some(t), false) = (trace, trace_file.is_empty()) {
                match t.write(std::path::Path::new(&trace_file)) {
                    Ok(()) => tracing::info!("trace of {} stage runs written to {trace_file}", t.len()),
                    Err(e) => tracing::warn!("cannot write trace {trace_file}: {e}"),
                }
            }
        })?
    };
    drop(executor);

    let diag_stats = stats.clone();
    let diag_clock = clock.clone();
    let status_name = format!("{node_name}: fusion");
    let diag = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(diagnostics_period.clamp(0.05, 3600.0)));
        let mut cpu = ros::ProcessCpu::default();
        loop {
            tick.tick().await;
            let mut s = diag_stats.lock().expect("stats");
            let mut kv = s.key_values();
            kv.extend(cpu.key_values());
            let (sets, misses, shed) = (s.window_sets, s.window_hard_misses, s.window_shed);
            if let Some(why) = &detector_error {
                kv.push(("detector".into(), format!("unavailable: {why}")));
            }
            let (level, message) = if let Some(why) = &detector_error {
                (2u8, format!("camera detector unavailable (LiDAR and radar only): {why}"))
            } else if misses > 0 {
                (1u8, format!("{misses} of {sets} sets missed the hard deadline"))
            } else if sets == 0 && shed == 0 {
                (1u8, "no synchronized sets".to_string())
            } else if shed > 0 {
                (1u8, format!("{sets} sets, {shed} shed to hold the deadline; degradation: {}", s.level_name))
            } else if s.level > 0 {
                (1u8, format!("{sets} sets; degraded: {}", s.level_name))
            } else {
                (0u8, format!("{sets} sets"))
            };
            s.reset_window();
            drop(s);
            let status = ros::status(status_name.clone(), "fusion", level, message, kv);
            let header = Header { stamp: ros::now(&diag_clock), frame_id: String::new() };
            if let Err(e) = diagnostics.publish(&DiagnosticArray { header, status: vec![status] }) {
                tracing::warn!("diagnostics publish failed: {e}");
            }
        }
    });
    tokio::spawn(param_handler);
    drains.push(tf_watch);
    ros::spin_until_shutdown(node, drains, diag, worker).await;
    Ok(())
}
