//! The shared shape of the four ingest nodes (r2r + tokio):
//!
//! ```text
//! r2r subscription (10 slots) --drain task--> bounded queue (drop-oldest, counted)
//!     --worker thread--> header checks + Processor --> /sensors/<sensor>
//! 1 Hz timer --> /diagnostics (rates, accepted, rejected by reason, latency p50/p99, drops)
//! ```
//!
//! r2r's subscription channel drops silently when full, so a dedicated task drains it at
//! once into our own bounded queue, where an overflow is counted. Validation and
//! preprocessing run on a worker thread so they never stall the drain.
use crate::config::IngestConfig;
use crate::graph;
use crate::ros::{self, Params};
use anyhow::{Context as _, Result};
use fusion::{
    calib::Calibration,
    cloud::NumberParams,
    ingest::{HeaderGuard, IngestStats, Reject},
    stamp_ns,
};
use futures::{future::BoxFuture, stream::BoxStream};
use r2r::{diagnostic_msgs::msg::DiagnosticArray, std_msgs::msg::Header, WrappedTypesupport};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One sensor's validation and preprocessing, ROS types in and out.
pub trait Processor: Send + 'static {
    /// One message of the raw input (camera_ingest: of whichever transport it reads).
    type In: Send + 'static;
    type Out: WrappedTypesupport + Send + 'static;
    fn header(msg: &Self::In) -> &Header;

    /// Subscribes to the raw input: the node's declared input topic (`graph.rs`), unless the
    /// processor reads another form of it. Returns the topic name it subscribed to.
    fn subscribe(
        &self,
        node: &mut r2r::Node,
        declared: &'static graph::Topic,
        qos: r2r::QosProfile,
    ) -> Result<(&'static str, BoxStream<'static, Self::In>)>;
    /// Called after the header checks passed; the output keeps the input's stamp.
    /// Per-message counters (points filtered, ...) go into `counters`.
    fn process(&mut self, msg: Self::In, counters: &mut Counters) -> Result<Self::Out, Reject>;

    /// Number parameters this processor takes while running (`ros2 param set`), each with
    /// the check of a new value; every other parameter is read once at start.
    fn live_params(&self) -> Vec<(&'static str, ros::LiveCheck)> {
        Vec::new()
    }

    /// A checked new value of one of [`Self::live_params`], from the next message on.
    fn set_live(&mut self, _name: &str, _value: f64) {}
}

/// Defaults of one ingest node. Its topics are the declared graph's (`graph.rs`: the node's
/// first subscription is the raw input, whose QoS depth is the default of the `input_depth`
/// parameter; its first publication the output), each remappable with `-r from:=to`.
pub struct Spec {
    pub node: &'static graph::Node,
    /// The sensor kind; the node's `sensor` parameter names which declared sensor of this
    /// kind it serves (default: the kind's name, the standard robot's).
    pub sensor: fusion::Sensor,
    /// Default of the `queue_size` parameter: messages waiting for the worker. Small for
    /// frames (a stale frame is worth less than a fresh one), larger for IMU samples.
    pub queue_size: usize,
}

/// The four ingest nodes.
pub const CAMERA: Spec = Spec { node: &graph::CAMERA_INGEST, sensor: fusion::Sensor::Camera, queue_size: 4 };
pub const LIDAR: Spec = Spec { node: &graph::LIDAR_INGEST, sensor: fusion::Sensor::Lidar, queue_size: 4 };
pub const RADAR: Spec = Spec { node: &graph::RADAR_INGEST, sensor: fusion::Sensor::Radar, queue_size: 16 };
pub const IMU: Spec = Spec { node: &graph::IMU_INGEST, sensor: fusion::Sensor::Imu, queue_size: 200 };

/// What a processor's constructor can use: the node (for extra subscriptions), its
/// calibration, and places to put extra tasks and statistics.
pub struct Setup<'a> {
    pub node: &'a mut r2r::Node,
    /// The declared sensor this node serves (its `sensor` parameter): its key in the
    /// calibration, its frame, its `sensors/<name>` topic and its /diagnostics names.
    pub sensor: String,
    pub calibration: Calibration,
    pub calibration_path: String,
    /// How this sensor's data reaches the base frame; a processor that transforms the data
    /// takes it.
    pub mount: Option<Mount>,
    pub tasks: Vec<BoxFuture<'static, ()>>,
    /// Extra statistics reported as their own DiagnosticStatus (e.g. camera_info).
    pub extra_stats: Vec<(String, Arc<Mutex<IngestStats>>)>,
}

type Item<T> = (Instant, T);

/// How long a cloud on a moving mount waits for the `/tf` sample after its stamp: two
/// periods of a 20 Hz joint-state publisher. The worker waits (its queue drops the oldest
/// cloud if the next comes meanwhile), so a mount whose `/tf` has stopped costs each cloud
/// this long before it is rejected.
pub const MOUNT_WAIT: Duration = Duration::from_millis(100);

/// How a sensor's data reaches the base frame: through one transform fixed at start-up
/// (the calibration file, or `/tf_static`), or through the transform tree at each message's
/// stamp, when tf places the sensor through a link on `/tf` (a pan-tilt head, a joint):
/// tf2's `lookupTransform(base, frame, stamp)`, interpolated between the samples around it.
pub enum Mount {
    Fixed(nalgebra::Isometry3<f64>),
    Moving { tf: ros::SharedTf, base_frame: String, frame: String },
}

impl Mount {
    pub fn of(
        calibration: &Calibration,
        sensor: &str,
        source: Option<&fusion::calib::PoseSource>,
        tf: &ros::SharedTf,
    ) -> Self {
        let pose = calibration.sensor(sensor);
        match source {
            Some(fusion::calib::PoseSource::TfMoving) => Mount::Moving {
                tf: tf.clone(),
                base_frame: calibration.base_frame.clone(),
                frame: pose.frame_id.clone(),
            },
            _ => Mount::Fixed(pose.to_base()),
        }
    }

    /// Base frame ← sensor frame at `stamp`. A cloud usually arrives before the joint state
    /// of its instant (both are stamped at capture; `/tf` comes at 20-50 Hz), so a stamp past
    /// the newest sample waits up to [`MOUNT_WAIT`] for `/tf` to catch up, as tf2's message
    /// filter holds a message until its transform can be computed. A stamp still outside
    /// the samples then is refused (never held at a stale pose): rejected and counted.
    pub fn to_base_at(&self, stamp: fusion::StampNs) -> Result<nalgebra::Isometry3<f64>, Reject> {
        let (tf, base_frame, frame) = match self {
            Mount::Fixed(t) => return Ok(*t),
            Mount::Moving { tf, base_frame, frame } => (tf, base_frame, frame),
        };
        let deadline = Instant::now() + MOUNT_WAIT;
        loop {
            // The lock is held for the lookup only: the spin thread's tf drain needs it to
            // add the samples waited for.
            let found = tf.lock().expect("tf buffer").lookup(base_frame, frame, fusion::tf::At::Stamp(stamp));
            match found {
                Err(fusion::tf::TfError::Extrapolation { direction: "future", .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => return other.map_err(|e| Reject::MountLookup(e.to_string())),
            }
        }
    }
}

/// A subscription to `topic` as a stream of `T`, the input of most processors.
pub fn subscribe_plain<T: WrappedTypesupport + Send + 'static>(
    node: &mut r2r::Node,
    topic: &'static graph::Topic,
    qos: r2r::QosProfile,
) -> Result<(&'static str, BoxStream<'static, T>)> {
    Ok((topic.name, Box::pin(node.subscribe::<T>(topic.name, qos)?)))
}

/// Named per-message counters a processor reports; added to the stream's `/diagnostics`.
pub type Counters = Vec<(&'static str, u64)>;

/// Runs the ingest node `spec` describes: its typed parameters (`C`, declared on the node,
/// the common ones read here and its own handed to `build`), then one worker over a bounded
/// queue.
pub fn run<C, P, F>(spec: Spec, build: F) -> Result<()>
where
    C: IngestConfig + Clone + Send + 'static,
    P: Processor,
    F: FnOnce(&mut Setup, &C) -> Result<P>,
{
    ros::init_process();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run_async(spec, build))
}

async fn run_async<C, P, F>(spec: Spec, build: F) -> Result<()>
where
    C: IngestConfig + Clone + Send + 'static,
    P: Processor,
    F: FnOnce(&mut Setup, &C) -> Result<P>,
{
    let mut node = ros::create_node(spec.node.name)?;
    let node_name = ros::node_label(&node)?;
    let mut config = C::default();
    ros::declare_config(&node, &mut config)?;
    let common = config.common().clone();
    let params = Params::of(&node);
    params.bool("use_sim_time", false)?;
    // Which declared sensor this node serves: one ingest node runs per sensor of the robot.
    let sensor = common.sensor.clone();
    // The mount from /tf_static where the robot publishes it, else from the calibration file.
    let ros::Extrinsics { resolved, path: calibration_path, watch: tf_watch, tf, latched: _tf_static } =
        ros::extrinsics(&mut node, &params, Some(&[sensor.as_str()]))?;
    let mount = Mount::of(&resolved.calibration, &sensor, resolved.sources.get(&sensor), &tf);
    let kind = resolved.calibration.kind_of(&sensor);
    if kind != Some(spec.sensor) {
        anyhow::bail!(
            "parameter sensor: '{sensor}' is declared as a {} in the calibration; {} serves a {}",
            kind.map_or("sensor of no known kind".to_string(), |k| k.to_string()),
            spec.node.name,
            spec.sensor
        );
    }
    let extrinsics_source = resolved.summary();
    let calibration = resolved.calibration;
    let queue_size = (common.queue_size as usize).max(1);
    let diagnostics_period = common.diagnostics_period;
    let expected_frame = calibration.sensor(&sensor).frame_id.clone();

    let mut setup = Setup {
        sensor: sensor.clone(),
        node: &mut node,
        calibration,
        calibration_path: calibration_path.clone(),
        mount: Some(mount),
        tasks: vec![],
        extra_stats: vec![],
    };
    let mut processor = build(&mut setup, &config)?;
    let Setup { tasks, extra_stats, mount, .. } = setup;
    if matches!(mount, Some(Mount::Moving { .. })) {
        // Only clouds are transformed at each stamp; what else holds a mount holds it once.
        tracing::warn!("the {sensor} mount moves on /tf; {} uses its pose at start-up", spec.node.name);
    }

    // Sensor-data QoS (best effort) by default, like every ROS 2 sensor pipeline; with
    // `input_reliability: reliable` DDS repairs losses, but only reliable publishers match.
    let input_topic = spec.node.input();
    let (output_name, output_topic) = graph::sensor_stream(&sensor, spec.sensor);
    let depth = (common.input_depth as usize).max(1);
    let input_qos = match common.input_reliability.as_str() {
        "reliable" => input_topic.qos.depth(depth).profile().reliable(),
        _ => input_topic.qos.depth(depth).profile(),
    };
    let (input_name, input) = processor.subscribe(&mut node, input_topic, input_qos)?;
    // Reliable publishers are compatible with both reliable and best-effort subscribers.
    let output = node.create_publisher::<P::Out>(&output_name, output_topic.qos.profile())?;
    let diagnostics =
        node.create_publisher::<DiagnosticArray>(graph::DIAGNOSTICS.name, graph::DIAGNOSTICS.qos.profile())?;
    // `ros2 param set` reaches the processor's live parameters (its filters); every other
    // parameter is read once at start and a set is refused, with why.
    let mut gate = ros::ParamGate::new(&node).with_config(config.clone());
    for (name, check) in processor.live_params() {
        gate = gate.live(name, check);
    }
    let (param_handler, param_events) = gate.serve(&mut node)?;
    // Handed to the worker, which owns the processor; a set is a human act, so 16 waiting
    // is plenty, and one beyond is counted, not queued.
    let (param_tx, param_rx) = crossbeam_channel::bounded::<(String, f64)>(16);
    let stats = Arc::new(Mutex::new(IngestStats::default()));
    let param_stats = stats.clone();
    let param_drain = ros::drain(param_events, move |(name, value): (String, r2r::ParameterValue)| {
        let Some(v) = ros::number(&value) else { return };
        if param_tx.try_send((name, v)).is_err() {
            param_stats.lock().expect("stats").add_extra("params.dropped", 1);
        }
    });
    let clock = node.get_ros_clock();
    tracing::info!(
        node = %node_name, input = input_name, output = %output_name, frame = %expected_frame,
        calibration = %if calibration_path.is_empty() { "<defaults>" } else { &calibration_path },
        extrinsics = %extrinsics_source,
        "ingest node up"
    );

    let (tx, rx) = crossbeam_channel::bounded::<Item<P::In>>(queue_size);
    let evict = rx.clone();

    // On overflow of our queue, drop the oldest (a stale frame must never delay a fresh
    // one) and count it.
    let drain_stats = stats.clone();
    let input_drain = ros::drain(input, move |msg: P::In| {
        let mut item = (Instant::now(), msg);
        drain_stats.lock().expect("stats").on_received();
        while let Err(crossbeam_channel::TrySendError::Full(back)) = tx.try_send(item) {
            if evict.try_recv().is_ok() {
                drain_stats.lock().expect("stats").dropped_queue_full += 1;
            }
            item = back;
        }
    });

    let worker_stats = stats.clone();
    let worker = std::thread::Builder::new().name(format!("{sensor}-worker")).spawn(move || {
        let mut guard = HeaderGuard::new(expected_frame);
        for (arrived, msg) in rx {
            for (name, value) in param_rx.try_iter() {
                processor.set_live(&name, value);
                tracing::info!("parameter {name} = {value} from this message on");
                worker_stats.lock().expect("stats").add_extra("params.applied", 1);
            }
            let h = P::header(&msg);
            let stamp = stamp_ns(h.stamp.sec, h.stamp.nanosec);
            // Process into a scratch record so the shared statistics are not locked while
            // a frame is converted (the drain in the spin thread locks them too).
            let mut counters = Counters::new();
            let result = guard.check(stamp, &h.frame_id).and_then(|()| processor.process(msg, &mut counters));
            if !counters.is_empty() {
                let mut s = worker_stats.lock().expect("stats");
                for (k, n) in counters {
                    s.add_extra(k, n);
                }
            }
            match result {
                Ok(out) => {
                    if guard.accept(stamp) {
                        tracing::warn!("stamps went back for good; following the new timeline");
                        worker_stats.lock().expect("stats").add_extra("stamp_resync", 1);
                    }
                    if let Err(e) = output.publish(&out) {
                        tracing::warn!("publish failed: {e}");
                    }
                    worker_stats.lock().expect("stats").on_accepted(arrived.elapsed().as_micros() as u64);
                }
                Err(why) => {
                    tracing::debug!("rejected: {why}");
                    worker_stats.lock().expect("stats").on_rejected(&why);
                }
            }
        }
    })?;

    let diag_stats = stats.clone();
    let status_name = format!("{node_name}: {sensor} ingest");
    let hardware_id = sensor;
    let diag = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(diagnostics_period.clamp(0.05, 3600.0)));
        let mut last = Instant::now();
        let mut cpu = ros::ProcessCpu::default();
        loop {
            tick.tick().await;
            let window = last.elapsed().as_secs_f64();
            last = Instant::now();
            let mut statuses =
                vec![stream_status(status_name.clone(), &hardware_id, &mut diag_stats.lock().expect("stats"), window)];
            statuses[0].values.extend(ros::key_values(cpu.key_values()));
            for (name, s) in &extra_stats {
                statuses.push(stream_status(
                    format!("{node_name}: {name}"),
                    &hardware_id,
                    &mut s.lock().expect("stats"),
                    window,
                ));
            }
            let header = Header { stamp: ros::now(&clock), frame_id: String::new() };
            if let Err(e) = diagnostics.publish(&DiagnosticArray { header, status: statuses }) {
                tracing::warn!("diagnostics publish failed: {e}");
            }
        }
    });

    for t in tasks {
        tokio::spawn(t);
    }
    tokio::spawn(param_handler);
    ros::spin_until_shutdown(node, vec![input_drain, param_drain, tf_watch], diag, worker).await;
    Ok(())
}

fn stream_status(
    name: String,
    hardware_id: &str,
    s: &mut IngestStats,
    window_s: f64,
) -> r2r::diagnostic_msgs::msg::DiagnosticStatus {
    let (health, message, kv) = s.report(window_s);
    ros::status(name, hardware_id, health as u8, message, kv)
}

/// LiDAR and radar ingest: a PointCloud2 in the sensor frame → a float32 cloud in the
/// base frame, through a ROS-free preprocessing function from `fusion::cloud`.
/// Its filter parameters are declared by name from `P` (defaults from `P::default()`), and
/// every one of them may change while the node runs.
pub struct CloudIngest<P> {
    pub mount: Mount,
    pub base_frame: String,
    pub params: P,
    pub preprocess: CloudFn<P>,
}

impl<P: NumberParams> CloudIngest<P> {
    /// With the node's filter parameters (declared and checked with its config).
    pub fn new(setup: &mut Setup, params: P, preprocess: CloudFn<P>) -> Result<Self> {
        Ok(Self {
            mount: setup.mount.take().context("the sensor's mount was already taken")?,
            base_frame: setup.calibration.base_frame.clone(),
            params,
            preprocess,
        })
    }
}

/// A cloud preprocessing step: sensor-frame cloud → base-frame float32 cloud.
pub type CloudFn<P> = fn(
    fusion::cloud::CloudRef<'_>,
    &nalgebra::Isometry3<f64>,
    &P,
    &mut Counters,
) -> Result<fusion::cloud::FloatCloud, Reject>;

impl<P: NumberParams> Processor for CloudIngest<P> {
    type In = r2r::sensor_msgs::msg::PointCloud2;
    type Out = r2r::sensor_msgs::msg::PointCloud2;

    fn header(msg: &Self::In) -> &Header {
        &msg.header
    }

    fn subscribe(
        &self,
        node: &mut r2r::Node,
        declared: &'static graph::Topic,
        qos: r2r::QosProfile,
    ) -> Result<(&'static str, BoxStream<'static, Self::In>)> {
        subscribe_plain(node, declared, qos)
    }

    fn process(&mut self, msg: Self::In, counters: &mut Counters) -> Result<Self::Out, Reject> {
        let fields = cloud_fields(&msg);
        let to_base = self.mount.to_base_at(stamp_ns(msg.header.stamp.sec, msg.header.stamp.nanosec))?;
        let cloud = (self.preprocess)(cloud_ref(&msg, &fields), &to_base, &self.params, counters)?;
        Ok(cloud_msg(Header { stamp: msg.header.stamp, frame_id: self.base_frame.clone() }, &cloud))
    }

    fn live_params(&self) -> Vec<(&'static str, ros::LiveCheck)> {
        P::SCHEMA.iter().map(|s| (s.name, ros::live_number(move |v| P::default().set(s.name, v)))).collect()
    }

    fn set_live(&mut self, name: &str, value: f64) {
        if let Err(e) = self.params.set(name, value) {
            tracing::warn!("parameter {name} not applied: {e}");
        }
    }
}

/// Plain-type view of a sensor_msgs/Image (data borrowed).
pub fn image_ref(msg: &r2r::sensor_msgs::msg::Image) -> fusion::camera::ImageRef<'_> {
    fusion::camera::ImageRef {
        width: msg.width,
        height: msg.height,
        encoding: &msg.encoding,
        step: msg.step,
        data: &msg.data,
    }
}

/// sensor_msgs/CameraInfo → what the ROS-free checks read.
pub fn camera_info_ref(msg: &r2r::sensor_msgs::msg::CameraInfo) -> fusion::camera::CameraInfoRef<'_> {
    fusion::camera::CameraInfoRef {
        width: msg.width,
        height: msg.height,
        distortion_model: &msg.distortion_model,
        d: &msg.d,
        k: &msg.k,
    }
}

/// sensor_msgs/Imu → the plain IMU sample (covariances padded/truncated to 9 entries).
pub fn imu_sample(m: &r2r::sensor_msgs::msg::Imu) -> fusion::imu::ImuSample {
    fn arr9(v: &[f64]) -> [f64; 9] {
        let mut a = [0.0; 9];
        for (d, s) in a.iter_mut().zip(v) {
            *d = *s;
        }
        a
    }
    fusion::imu::ImuSample {
        stamp: stamp_ns(m.header.stamp.sec, m.header.stamp.nanosec),
        orientation: [m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w],
        orientation_covariance: arr9(&m.orientation_covariance),
        angular_velocity: [m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z],
        angular_velocity_covariance: arr9(&m.angular_velocity_covariance),
        linear_acceleration: [m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z],
        linear_acceleration_covariance: arr9(&m.linear_acceleration_covariance),
    }
}

/// Plain-type view of a PointCloud2 (the field list is converted, the data borrowed).
pub fn cloud_fields(msg: &r2r::sensor_msgs::msg::PointCloud2) -> Vec<fusion::cloud::PointField> {
    msg.fields
        .iter()
        .map(|f| fusion::cloud::PointField {
            name: f.name.clone(),
            offset: f.offset,
            datatype: f.datatype,
            count: f.count,
        })
        .collect()
}

pub fn cloud_ref<'a>(
    msg: &'a r2r::sensor_msgs::msg::PointCloud2,
    fields: &'a [fusion::cloud::PointField],
) -> fusion::cloud::CloudRef<'a> {
    fusion::cloud::CloudRef {
        height: msg.height,
        width: msg.width,
        fields,
        is_bigendian: msg.is_bigendian,
        point_step: msg.point_step,
        row_step: msg.row_step,
        data: &msg.data,
    }
}

/// An unorganized, dense, little-endian float32 PointCloud2.
pub fn cloud_msg(header: Header, cloud: &fusion::cloud::FloatCloud) -> r2r::sensor_msgs::msg::PointCloud2 {
    let n = cloud.len() as u32;
    r2r::sensor_msgs::msg::PointCloud2 {
        header,
        height: 1,
        width: n,
        fields: cloud
            .fields()
            .into_iter()
            .map(|f| r2r::sensor_msgs::msg::PointField {
                name: f.name,
                offset: f.offset,
                datatype: f.datatype,
                count: f.count,
            })
            .collect(),
        is_bigendian: false,
        point_step: cloud.point_step(),
        row_step: cloud.point_step() * n,
        data: cloud.to_bytes(),
        is_dense: true,
    }
}
