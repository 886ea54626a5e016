//! A `sensor_sim` scenario as the raw messages real drivers publish (DESIGN.md §3), in log
//! time order, with its ground truth. One generator, two consumers:
//!
//! - `fusion_sim` writes the messages into a rosbag2 MCAP bag;
//! - `fusion_replay --sim` streams them straight into the pipeline, so a long run needs no
//!   bag on disk (ten minutes of 640×480 camera are a 17 GB MCAP file).
//!
//! Both see the same bytes: a streamed run's outputs equal a replay of the written bag's.
use crate::bag::BagMessage;
use anyhow::{Context as _, Result};
use r2r::{
    builtin_interfaces::msg::Time,
    geometry_msgs::msg::{Point, Quaternion, Vector3},
    nav_msgs::msg::Odometry,
    sensor_msgs::msg::{CameraInfo, Image, Imu, PointCloud2, PointField, RegionOfInterest},
    std_msgs::msg::Header,
};
use sensor_sim::{self as sim, World};
use std::io::Write;

/// Bag time of the scenario's t = 0 (fixed, so that bags are reproducible).
pub const START_NS: i64 = 1_700_000_000_000_000_000;

/// The raw topics of a simulated run, as (name, type): the graph's driver inputs, in the
/// root namespace; `/odom` only when the run has odometry; then `/<name>/points` for each
/// LiDAR the calibration declares beyond the standard `lidar` ([`extra_lidars`]), then for
/// each radar beyond the standard `radar` ([`extra_radars`]); then `/<name>/image_raw` and
/// `/<name>/camera_info` for each camera beyond the standard `camera` ([`extra_cameras`]).
/// `BagMessage::topic` indexes this.
pub fn topics(odometry: bool, calib: &fusion::calib::Calibration) -> Vec<(String, &'static str)> {
    let graph = &sensor_fusion::graph::ODOMETRY;
    let mut topics: Vec<(String, &'static str)> = sensor_fusion::graph::INPUTS
        .iter()
        .filter(|(t, _)| odometry || *t != graph)
        .map(|(t, _)| (t.root_name(), t.msg_type))
        .collect();
    let points = sensor_fusion::graph::LIDAR_POINTS.msg_type;
    topics.extend(extra_lidars(calib).into_iter().map(|name| (format!("/{name}/points"), points)));
    topics.extend(extra_radars(calib).into_iter().map(|name| (format!("/{name}/points"), points)));
    let (image, info) = (sensor_fusion::graph::CAMERA_IMAGE.msg_type, sensor_fusion::graph::CAMERA_INFO.msg_type);
    for name in extra_cameras(calib) {
        topics.extend([(format!("/{name}/image_raw"), image), (format!("/{name}/camera_info"), info)]);
    }
    topics
}

/// The cameras the calibration declares besides `camera`, in the sensor set's order: each is
/// rendered from its own mount with the standard camera's frames (same stamps).
pub fn extra_cameras(calib: &fusion::calib::Calibration) -> Vec<&'static str> {
    extra_of(calib, fusion::Sensor::Camera)
}

/// The LiDARs the calibration declares besides `lidar`, in the sensor set's order: a robot
/// with a second LiDAR gets a sweep of each one, rendered from its own mount.
pub fn extra_lidars(calib: &fusion::calib::Calibration) -> Vec<&'static str> {
    extra_of(calib, fusion::Sensor::Lidar)
}

/// The radars the calibration declares besides `radar`: each scans with the standard one,
/// from its own mount.
pub fn extra_radars(calib: &fusion::calib::Calibration) -> Vec<&'static str> {
    extra_of(calib, fusion::Sensor::Radar)
}

/// The sensors of `kind` besides the one named after it, in the sensor set's order.
fn extra_of(calib: &fusion::calib::Calibration, kind: fusion::Sensor) -> Vec<&'static str> {
    let Ok(set) = calib.sensor_set() else { return vec![] };
    set.of_kind(kind).map(|id| set.name(id)).filter(|n| *n != kind.as_str()).collect()
}
const CAMERA: usize = 0;
const CAMERA_INFO: usize = 1;
const LIDAR: usize = 2;
const RADAR: usize = 3;
const IMU: usize = 4;
const ODOMETRY: usize = 5;

/// The seeded scenario `name` for a run of `duration` seconds, or a one-line error.
pub fn scenario(name: &str, seed: u64, duration: f64) -> Result<sim::Scenario> {
    let Some(scenario) = sim::scenario_seeded(name, seed) else {
        let all: Vec<&str> = sim::SCENARIOS.iter().chain(&sim::ROBOT_SCENARIOS).copied().collect();
        anyhow::bail!("unknown scenario '{name}' (one of: {})", all.join(", "));
    };
    if !(duration > 0.0 && duration.is_finite()) {
        anyhow::bail!("--duration must be > 0");
    }
    Ok(scenario)
}

/// The calibration of a simulated run: `file` when given (a path), else the scenario's own
/// robot's ([`sim::scenario_robot`]), else the built-in one.
pub fn calibration(file: Option<&str>, scenario: &str) -> Result<fusion::calib::Calibration> {
    Ok(match (file, sim::scenario_robot(scenario)) {
        (Some(path), _) if !path.is_empty() => fusion::calib::Calibration::load(path)?,
        (_, Some(robot)) => fusion::calib::Calibration::from_yaml(robot)?,
        _ => fusion::calib::Calibration::default(),
    })
}

/// The sensors' mounts in `calib` as one `/tf_static` message, as robot_state_publisher
/// latches a robot's fixed joints: base frame → each sensor frame, stamped at the run's start.
/// A bag carrying it needs no calibration file for its extrinsics (`fusion_replay` and the
/// nodes read tf first).
pub fn tf_static(calib: &fusion::calib::Calibration) -> Result<Vec<u8>> {
    let mounts: Vec<fusion::tf::Transform> = calib.mounts().map(|(_, t)| t).collect();
    sensor_fusion::ros::serialize(&sensor_fusion::ros::tf_message(&mounts, stamp(0)))
}

/// What a run leaves beside its messages in `dir`: `calibration.yaml` (written now) and the
/// `ground_truth.jsonl` writer for [`generate`].
pub fn beside(dir: &std::path::Path, calib: &fusion::calib::Calibration) -> Result<std::io::BufWriter<std::fs::File>> {
    std::fs::write(dir.join("calibration.yaml"), serde_norway::to_string(calib)?)?;
    Ok(std::io::BufWriter::new(std::fs::File::create(dir.join("ground_truth.jsonl"))?))
}

/// A camera frame handed to a training exporter: the world, its time and the rendering.
pub type FrameHook<'h> = Box<dyn FnMut(&World, i64, &sim::Frame) -> Result<()> + Send + 'h>;

/// What [`generate`] produced.
pub struct Generated {
    pub messages: u64,
    /// Ground-truth events of the run.
    pub events: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sensor {
    Imu,
    // Ahead of the sensors at the same stamp: odometry is small and quick, so a set finds it.
    Odometry,
    Lidar,
    Radar,
    Camera,
}

fn stamp(t_ns: i64) -> Time {
    let ns = START_NS + t_ns;
    Time { sec: (ns / 1_000_000_000) as i32, nanosec: (ns % 1_000_000_000) as u32 }
}

fn header(t_ns: i64, frame: &str) -> Header {
    Header { stamp: stamp(t_ns), frame_id: frame.into() }
}

fn cloud(t_ns: i64, frame: &str, names: &[&str], values: impl Iterator<Item = f32>, n: usize) -> PointCloud2 {
    let step = 4 * names.len() as u32;
    let mut data = Vec::with_capacity(n * step as usize);
    for v in values {
        data.extend_from_slice(&v.to_le_bytes());
    }
    PointCloud2 {
        header: header(t_ns, frame),
        height: 1,
        width: n as u32,
        fields: names
            .iter()
            .enumerate()
            .map(|(i, name)| PointField { name: (*name).into(), offset: 4 * i as u32, datatype: 7, count: 1 })
            .collect(),
        is_bigendian: false,
        point_step: step,
        row_step: step * n as u32,
        data,
        is_dense: true,
    }
}

/// Returns per actor in one LiDAR sweep or radar scan: the ground truth of what that
/// sensor could possibly detect (evaluations count only actors some range sensor saw).
fn hits_record(
    kind: &str,
    sensor: &str,
    stamp_ns: i64,
    owners: impl Iterator<Item = Option<u32>>,
) -> serde_json::Value {
    let mut hits: std::collections::BTreeMap<String, u32> = Default::default();
    for id in owners.flatten() {
        *hits.entry(id.to_string()).or_default() += 1;
    }
    serde_json::json!({"type": kind, "sensor": sensor, "stamp_ns": stamp_ns, "hits": hits})
}

/// One rendered frame as its driver publishes it: (CameraInfo, Image), serialized.
fn camera_messages(t_ns: i64, frame_id: &str, k: &[f64; 9], frame: sim::Frame) -> Result<(Vec<u8>, Vec<u8>)> {
    let (width, height) = (frame.width, frame.height);
    let img = Image {
        header: header(t_ns, frame_id),
        height,
        width,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: width * 3,
        data: frame.rgb,
    };
    let info = CameraInfo {
        header: header(t_ns, frame_id),
        height,
        width,
        distortion_model: "plumb_bob".into(),
        d: vec![0.0; 5],
        k: k.to_vec(),
        r: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p: vec![k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0],
        binning_x: 0,
        binning_y: 0,
        roi: RegionOfInterest::default(),
    };
    Ok((sensor_fusion::ros::serialize(&info)?, sensor_fusion::ros::serialize(&img)?))
}

/// Every sensor's sample times in integer nanoseconds over `[0, duration)`, merged in time
/// order: IMU 200 Hz (when the robot has one), LiDAR 10 Hz, radar 20 Hz, camera 30 Hz,
/// odometry (when asked) 50 Hz.
fn schedule(duration_ns: i64, odometry: bool, imu: bool) -> Vec<(i64, Sensor)> {
    let mut schedule = vec![];
    let mut rates = vec![(10, Sensor::Lidar), (20, Sensor::Radar), (30, Sensor::Camera)];
    if imu {
        rates.insert(0, (200, Sensor::Imu));
    }
    if odometry {
        rates.push((50, Sensor::Odometry));
    }
    for (hz, s) in rates {
        let mut i = 0i64;
        loop {
            let t = i * 1_000_000_000 / hz;
            if t >= duration_ns {
                break;
            }
            schedule.push((t, s));
            i += 1;
        }
    }
    schedule.sort();
    schedule
}

/// Generates `duration` seconds of `world`'s sensor data (seeded by `seed`) in log-time
/// order into `sink` (which returns false to stop early), and the ground truth into `gt`:
/// the scenario line, one line per camera frame, the LiDAR/radar hit records and the
/// events. `on_frame` sees every rendered camera frame (the training exporter). `odometry`
/// adds the ego's wheel odometry on `/odom` ([`topics`] with the same flag).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    world: &World,
    seed: u64,
    duration: f64,
    odometry: bool,
    gt: &mut dyn Write,
    on_frame: Option<FrameHook<'_>>,
    mut sink: impl FnMut(BagMessage) -> Result<bool>,
) -> Result<Generated> {
    let scenario = world.scenario;
    let calib = &world.calib;
    writeln!(
        gt,
        "{}",
        serde_json::json!({"type": "scenario", "name": scenario.name, "seed": seed, "duration": duration,
                           "start_ns": START_NS, "base_frame": calib.base_frame, "look": scenario.look})
    )?;
    let dur_ns = (duration * 1e9).round() as i64;
    // A robot without an IMU (none declared) records no IMU samples; its topic stays empty.
    let imu_frame = calib.first(fusion::Sensor::Imu).map(|p| p.frame_id.clone());
    let schedule = schedule(dur_ns, odometry, imu_frame.is_some());
    let mut rng_cam = sim::rng(seed, 1);
    let mut rng_lidar = sim::rng(seed, 2);
    let mut rng_radar = sim::rng(seed, 3);
    let mut rng_imu = sim::rng(seed, 4);
    let mut rng_odometry = sim::rng(seed, 5);
    let mut imu = sim::ImuModel::new(&mut rng_imu);
    let cam = calib.sensor("camera").clone();
    let k = fusion::camera::Intrinsics::of(&cam).k;
    // Every extra LiDAR sweeps with the standard one, from its own mount and random stream,
    // onto the topics after the graph's inputs.
    let extra_cameras = extra_cameras(calib);
    let extra_radars = extra_radars(calib);
    let first_extra_topic =
        topics(odometry, calib).len() - extra_lidars(calib).len() - extra_radars.len() - 2 * extra_cameras.len();
    let mut extra: Vec<(&str, usize, String, _)> = extra_lidars(calib)
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            (name, first_extra_topic + i, calib.sensor(name).frame_id.clone(), sim::rng(seed, 100 + i as u64))
        })
        .collect();
    let (lidar_frame, radar_frame) = (calib.sensor("lidar").frame_id.clone(), calib.sensor("radar").frame_id.clone());

    // Camera frames are the expensive part: render them (in order, from their own seeded
    // stream) on a producer thread while this one serializes and hands on everything else.
    // Each further camera's frames come with the standard one's, from its own random stream,
    // onto the topics after the further LiDARs' and radars'; their truth is a `camera_frame` line naming
    // the camera (a `frame` line is the standard camera's, as the tools read it).
    // Every extra radar scans with the standard one, from its own mount and random stream.
    let mut radars: Vec<(&str, usize, String, _)> = extra_radars
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                *name,
                first_extra_topic + extra.len() + i,
                calib.sensor(name).frame_id.clone(),
                sim::rng(seed, 300 + i as u64),
            )
        })
        .collect();
    let first_camera_topic = first_extra_topic + extra.len() + radars.len();
    let camera_topics: Vec<(&str, usize, String, [f64; 9])> = extra_cameras
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let pose = calib.sensor(name);
            (*name, first_camera_topic + 2 * i, pose.frame_id.clone(), fusion::camera::Intrinsics::of(pose).k)
        })
        .collect();
    let mut camera_rngs: Vec<_> = (0..extra_cameras.len()).map(|i| sim::rng(seed, 200 + i as u64)).collect();
    let camera_times: Vec<i64> = schedule.iter().filter(|(_, s)| *s == Sensor::Camera).map(|(t, _)| *t).collect();
    type Rendered = (sim::Frame, String, Vec<(sim::Frame, String)>);
    let (frame_tx, frame_rx) = std::sync::mpsc::sync_channel::<Rendered>(3);
    let progress = indicatif::ProgressBar::new(dur_ns as u64 / 1_000_000);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ms sim time ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(format!("fusion_sim {}", scenario.name));
    let mut count = 0u64;
    std::thread::scope(|scope| -> Result<()> {
        let camera = std::thread::Builder::new().name("camera".into()).spawn_scoped(scope, move || -> Result<()> {
            let mut on_frame = on_frame;
            for t_ns in camera_times {
                let t = t_ns as f64 * 1e-9;
                let frame = sim::render_camera(world, t, &mut rng_cam);
                if let Some(hook) = on_frame.as_mut() {
                    hook(world, t_ns, &frame)?;
                }
                let truth = serde_json::json!({"type": "frame", "stamp_ns": START_NS + t_ns, "t": t,
                                               "ego": world.traj.at(t), "actors": sim::truth(world, t, Some(&frame))});
                let further = extra_cameras
                    .iter()
                    .zip(camera_rngs.iter_mut())
                    .map(|(name, rng)| {
                        let frame = sim::render_camera_of(world, name, t, rng);
                        let truth = serde_json::json!({"type": "camera_frame", "sensor": name, "stamp_ns": START_NS + t_ns,
                                                       "t": t, "actors": sim::truth(world, t, Some(&frame))});
                        (frame, truth.to_string())
                    })
                    .collect();
                if frame_tx.send((frame, truth.to_string(), further)).is_err() {
                    break;
                }
            }
            Ok(())
        })?;
        let mut emit = |topic: usize, t_ns: i64, data: Vec<u8>| -> Result<bool> {
            count += 1;
            sink(BagMessage { topic, log_time_ns: START_NS + t_ns, data })
        };
        let produced = (|| -> Result<()> {
            for (t_ns, sensor) in schedule {
                let t = t_ns as f64 * 1e-9;
                let log_time = START_NS + t_ns;
                let go_on = match sensor {
                    Sensor::Camera => {
                        let (frame, truth, further) = frame_rx.recv().context("camera renderer stopped")?;
                        writeln!(gt, "{truth}")?;
                        let (info, img) = camera_messages(t_ns, &cam.frame_id, &k, frame)?;
                        // The intrinsics first, so that a replay projects even the first
                        // frame with them (a node has them from the camera's earlier frames).
                        let mut go_on = emit(CAMERA_INFO, t_ns, info)? && emit(CAMERA, t_ns, img)?;
                        for ((frame, truth), (_, topic, frame_id, k)) in further.into_iter().zip(&camera_topics) {
                            writeln!(gt, "{truth}")?;
                            let (info, img) = camera_messages(t_ns, frame_id, k, frame)?;
                            go_on = go_on && emit(*topic + 1, t_ns, info)? && emit(*topic, t_ns, img)?;
                        }
                        go_on
                    }
                    Sensor::Lidar => {
                        if scenario.faults.lidar_dropout.is_some_and(|(a, b)| t >= a && t < b) {
                            continue;
                        }
                        let sweep = sim::lidar_sweep(world, t, &mut rng_lidar);
                        writeln!(gt, "{}", hits_record("lidar_hits", "lidar", log_time, sweep.actor.iter().copied()))?;
                        let n = sweep.points.len();
                        let names = ["x", "y", "z", "intensity", "t"];
                        let msg = cloud(
                            t_ns,
                            &lidar_frame,
                            &names,
                            sweep.points.iter().flat_map(|&p| <[f32; 5]>::from(p)),
                            n,
                        );
                        let mut go_on = emit(LIDAR, t_ns, sensor_fusion::ros::serialize(&msg)?)?;
                        for (name, topic, frame, rng) in extra.iter_mut() {
                            let sweep = sim::lidar_sweep_of(world, name, t, rng);
                            writeln!(gt, "{}", hits_record("lidar_hits", name, log_time, sweep.actor.iter().copied()))?;
                            let n = sweep.points.len();
                            let values = sweep.points.iter().flat_map(|&p| <[f32; 5]>::from(p));
                            let msg = cloud(t_ns, frame, &names, values, n);
                            go_on = go_on && emit(*topic, t_ns, sensor_fusion::ros::serialize(&msg)?)?;
                        }
                        go_on
                    }
                    Sensor::Radar => {
                        let targets = sim::radar_scan(world, t, &mut rng_radar);
                        writeln!(
                            gt,
                            "{}",
                            hits_record("radar_hits", "radar", log_time, targets.iter().map(|(_, a)| *a))
                        )?;
                        let n = targets.len();
                        let names = ["x", "y", "z", "doppler", "rcs"];
                        let msg = cloud(
                            t_ns,
                            &radar_frame,
                            &names,
                            targets.iter().flat_map(|&(p, _)| <[f32; 5]>::from(p)),
                            n,
                        );
                        let mut go_on = emit(RADAR, t_ns, sensor_fusion::ros::serialize(&msg)?)?;
                        for (name, topic, frame, rng) in radars.iter_mut() {
                            let targets = sim::radar_scan_of(world, name, t, rng);
                            writeln!(
                                gt,
                                "{}",
                                hits_record("radar_hits", name, log_time, targets.iter().map(|(_, a)| *a))
                            )?;
                            let values = targets.iter().flat_map(|&(p, _)| <[f32; 5]>::from(p));
                            let msg = cloud(t_ns, frame, &names, values, targets.len());
                            go_on = go_on && emit(*topic, t_ns, sensor_fusion::ros::serialize(&msg)?)?;
                        }
                        go_on
                    }
                    Sensor::Imu => {
                        let r = imu.sample(world, t, 0.005, &mut rng_imu);
                        let v3 = |v: [f64; 3]| Vector3 { x: v[0], y: v[1], z: v[2] };
                        let mut ocov = vec![0.0; 9];
                        ocov[0] = -1.0; // no orientation (REP 145)
                        let msg = Imu {
                            header: header(t_ns, imu_frame.as_deref().expect("scheduled only with an imu")),
                            orientation: Quaternion { x: 0.0, y: 0.0, z: 0.0, w: 1.0 },
                            orientation_covariance: ocov,
                            angular_velocity: v3(r.angular_velocity),
                            angular_velocity_covariance: vec![4e-6, 0.0, 0.0, 0.0, 4e-6, 0.0, 0.0, 0.0, 4e-6],
                            linear_acceleration: v3(r.linear_acceleration),
                            linear_acceleration_covariance: vec![9e-4, 0.0, 0.0, 0.0, 9e-4, 0.0, 0.0, 0.0, 9e-4],
                        };
                        emit(IMU, t_ns, sensor_fusion::ros::serialize(&msg)?)?
                    }
                    Sensor::Odometry => {
                        let r = sim::odometry(world, t, &mut rng_odometry);
                        let (qz, qw) = (r.yaw / 2.0).sin_cos();
                        let mut msg = Odometry {
                            header: header(t_ns, "odom"),
                            child_frame_id: calib.base_frame.clone(),
                            ..Default::default()
                        };
                        let [x, y, z] = r.position;
                        msg.pose.pose.position = Point { x, y, z };
                        msg.pose.pose.orientation = Quaternion { x: 0.0, y: 0.0, z: qz, w: qw };
                        let [vx, vy, vz] = r.linear;
                        msg.twist.twist.linear = Vector3 { x: vx, y: vy, z: vz };
                        msg.twist.twist.angular = Vector3 { x: 0.0, y: 0.0, z: r.yaw_rate };
                        // Diagonal covariances of the noise the model adds (x, y, z, roll, pitch, yaw).
                        let mut covariance = vec![0.0; 36];
                        (covariance[0], covariance[35]) = (0.03 * 0.03, 0.003 * 0.003);
                        msg.twist.covariance = covariance;
                        msg.pose.covariance = vec![0.0; 36];
                        emit(ODOMETRY, t_ns, sensor_fusion::ros::serialize(&msg)?)?
                    }
                };
                progress.set_position(t_ns as u64 / 1_000_000);
                if !go_on {
                    break;
                }
            }
            Ok(())
        })();
        // Dropping the receiver stops the renderer at its next frame when we stopped early.
        drop(frame_rx);
        progress.finish_and_clear();
        let rendered = camera.join().map_err(|_| anyhow::anyhow!("camera thread panicked"))?;
        produced.and(rendered)
    })?;

    let mut events = sim::geometric_events(world, duration, 3.0);
    events.extend(scenario.declared_events.iter().filter(|e| e.onset < duration).cloned());
    events.sort_by(|a, b| a.onset.total_cmp(&b.onset).then(a.kind.cmp(&b.kind)));
    for e in &events {
        writeln!(
            gt,
            "{}",
            serde_json::json!({"type": "event", "kind": e.kind, "sensor": e.sensor, "actor_ids": e.actor_ids,
                               "onset_ns": START_NS + (e.onset * 1e9).round() as i64,
                               "offset_ns": START_NS + (e.offset.min(duration) * 1e9).round() as i64})
        )?;
    }
    gt.flush()?;
    Ok(Generated { messages: count, events: events.len() })
}
