//! fusion_sim: seeded multi-sensor scenarios with ground truth, written as rosbag2 MCAP bags
//! with the raw topics real drivers publish (DESIGN.md §3).
//!
//!     fusion_sim --scenario NAME --seed S --duration SECONDS --out DIR
//!
//! DIR becomes a rosbag2 directory; beside the MCAP file it gets `calibration.yaml` (the
//! extrinsics the nodes read) and `ground_truth.jsonl`. Same arguments → identical bytes.
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use fusion::{
    calib::Calibration,
    sim::{self, World},
};
use r2r::{
    builtin_interfaces::msg::Time,
    geometry_msgs::msg::{Quaternion, Vector3},
    sensor_msgs::msg::{CameraInfo, Image, Imu, PointCloud2, PointField, RegionOfInterest},
    std_msgs::msg::Header,
    WrappedTypesupport,
};
use sensor_fusion::{bag::BagWriter, msgdef};
use std::io::Write;

#[derive(Parser)]
#[command(
    name = "fusion_sim",
    about = "Write a simulated multi-sensor scenario as a rosbag2 (MCAP) bag with ground truth"
)]
struct Cli {
    /// nominal, pedestrian_intrusion, collision_course, camera_blackout, lidar_dropout,
    /// imu_impact, sensor_disagreement, mixed
    #[arg(long)]
    scenario: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of sensor data.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Output rosbag2 directory (must not exist).
    #[arg(long)]
    out: String,
    /// Calibration YAML for the sensor poses (default: the built-in calibration).
    #[arg(long, default_value = "")]
    calibration: String,
    /// Also write detector training data here: images/<stamp>.ppm (binary PPM, rgb8) and
    /// labels.jsonl (per image: class, actor id and visible 2D box of every actor).
    #[arg(long)]
    export: Option<String>,
    /// With --export: every Nth camera frame.
    #[arg(long, default_value_t = 1)]
    export_every: usize,
}

/// Training export: one PPM per exported frame and one labels line for it. Actors the
/// camera cannot see (camera-invisible, fewer than 20 visible pixels) and frames in a
/// camera blackout are left out: there is nothing in the image to learn from.
struct Exporter {
    dir: std::path::PathBuf,
    labels: std::io::BufWriter<std::fs::File>,
    every: usize,
    seen: usize,
}

impl Exporter {
    fn new(dir: &str, every: usize) -> Result<Self> {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(dir.join("images")).with_context(|| format!("cannot create {}", dir.display()))?;
        let labels = std::io::BufWriter::new(std::fs::File::create(dir.join("labels.jsonl"))?);
        Ok(Self { dir, labels, every: every.max(1), seen: 0 })
    }

    fn frame(&mut self, world: &World, t_ns: i64, frame: &sim::Frame) -> Result<()> {
        self.seen += 1;
        let t = t_ns as f64 * 1e-9;
        if !(self.seen - 1).is_multiple_of(self.every)
            || world.scenario.faults.camera_blackout.is_some_and(|(a, b)| t >= a && t < b)
        {
            return Ok(());
        }
        let name = format!("images/{}.ppm", START_NS + t_ns);
        let mut f = std::io::BufWriter::new(std::fs::File::create(self.dir.join(&name))?);
        write!(f, "P6\n{} {}\n255\n", frame.width, frame.height)?;
        f.write_all(&frame.rgb)?;
        let boxes: Vec<_> = sim::truth(world, t, Some(frame))
            .into_iter()
            .filter(|a| !a.camera_invisible && a.visible_pixels >= 20)
            .map(|a| {
                serde_json::json!({"class": a.class, "shape": a.shape, "id": a.id, "box": a.box2d,
                                   "visible_pixels": a.visible_pixels})
            })
            .collect();
        writeln!(
            self.labels,
            "{}",
            serde_json::json!({"image": name, "stamp_ns": START_NS + t_ns, "width": frame.width, "height": frame.height,
                               "boxes": boxes})
        )?;
        Ok(())
    }
}

/// Bag time of the scenario's t = 0 (fixed, so that bags are reproducible).
const START_NS: i64 = 1_700_000_000_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sensor {
    Imu,
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

fn main() {
    let cli = Cli::parse();
    // Every frame allocates and frees ~1 MB buffers (image, CDR, MCAP record). With glibc's
    // default each one is a fresh mmap whose pages fault in again; keep them on the heap.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
    if let Err(e) = run(cli) {
        eprintln!("fusion_sim: error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    // The seed varies the world (bodies, sizes, paint, light, start positions), not only
    // the sensor noise.
    let Some(scenario) = sim::scenario_seeded(&cli.scenario, cli.seed) else {
        bail!("unknown scenario '{}' (one of: {})", cli.scenario, sim::SCENARIOS.join(", "));
    };
    if !(cli.duration > 0.0 && cli.duration.is_finite()) {
        bail!("--duration must be > 0");
    }
    let calib = Calibration::load(&cli.calibration)?;
    let world = World::new(&scenario, cli.duration + 0.2, calib.clone());
    let mut bag = BagWriter::create(&cli.out)?;
    let dir = std::path::PathBuf::from(&cli.out);
    std::fs::write(dir.join("calibration.yaml"), serde_yaml::to_string(&calib)?)?;
    let mut gt = std::io::BufWriter::new(std::fs::File::create(dir.join("ground_truth.jsonl"))?);

    let topics = [
        ("/camera/image_raw", "sensor_msgs/msg/Image"),
        ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
        ("/lidar/points", "sensor_msgs/msg/PointCloud2"),
        ("/radar/points", "sensor_msgs/msg/PointCloud2"),
        ("/imu/data", "sensor_msgs/msg/Imu"),
    ];
    // Sensor-data QoS, as drivers publish (best effort, keep last 5).
    let qos: serde_yaml::Value = serde_yaml::from_str(
        "- {history: keep_last, depth: 5, reliability: best_effort, durability: volatile, deadline: {sec: 0, nsec: 0}, \
         lifespan: {sec: 0, nsec: 0}, liveliness: automatic, liveliness_lease_duration: {sec: 0, nsec: 0}, \
         avoid_ros_namespace_conventions: false}",
    )?;
    let mut ids = vec![];
    for (name, ty) in topics {
        let def = msgdef::definition(ty).with_context(|| format!("message definition of {ty} not installed"))?;
        ids.push(bag.add_topic(name, ty, &def, qos.clone())?);
    }
    let [cam_id, info_id, lidar_id, radar_id, imu_id] = ids[..] else { unreachable!() };

    writeln!(
        gt,
        "{}",
        serde_json::json!({"type": "scenario", "name": scenario.name, "seed": cli.seed, "duration": cli.duration,
                           "start_ns": START_NS, "base_frame": calib.base_frame, "look": scenario.look})
    )?;

    // Every sensor's sample times in integer nanoseconds, merged in time order.
    let dur_ns = (cli.duration * 1e9).round() as i64;
    let mut schedule: Vec<(i64, Sensor)> = vec![];
    for (hz, s) in [(200, Sensor::Imu), (10, Sensor::Lidar), (20, Sensor::Radar), (30, Sensor::Camera)] {
        let mut i = 0i64;
        loop {
            let t = i * 1_000_000_000 / hz;
            if t >= dur_ns {
                break;
            }
            schedule.push((t, s));
            i += 1;
        }
    }
    schedule.sort();

    let mut rng_cam = sim::rng(cli.seed, 1);
    let rng_lidar = sim::rng(cli.seed, 2);
    let rng_radar = sim::rng(cli.seed, 3);
    let mut rng_imu = sim::rng(cli.seed, 4);
    let imu = sim::ImuModel::new(&mut rng_imu);
    // Camera frames are the expensive part: render them (in order, from their own seeded
    // stream) on a producer thread while this one serializes and writes everything else.
    let camera_times: Vec<i64> = schedule.iter().filter(|(_, s)| *s == Sensor::Camera).map(|(t, _)| *t).collect();
    let (frame_tx, frame_rx) = std::sync::mpsc::sync_channel::<(sim::Frame, String)>(3);
    let world = &world;
    let mut exporter = cli.export.as_deref().map(|d| Exporter::new(d, cli.export_every)).transpose()?;
    std::thread::scope(|scope| -> Result<()> {
        let camera = std::thread::Builder::new().name("camera".into()).spawn_scoped(scope, move || -> Result<()> {
            for t_ns in camera_times {
                let t = t_ns as f64 * 1e-9;
                let frame = sim::render_camera(world, t, &mut rng_cam);
                if let Some(e) = exporter.as_mut() {
                    e.frame(world, t_ns, &frame)?;
                }
                let truth = serde_json::json!({"type": "frame", "stamp_ns": START_NS + t_ns, "t": t,
                                               "ego": world.traj.at(t), "actors": sim::truth(world, t, Some(&frame))});
                if frame_tx.send((frame, truth.to_string())).is_err() {
                    break;
                }
            }
            if let Some(mut e) = exporter {
                e.labels.flush()?;
            }
            Ok(())
        })?;
        let ids = [cam_id, info_id, lidar_id, radar_id, imu_id];
        let rngs = (rng_lidar, rng_radar, rng_imu, imu);
        let written = write_all(&cli, &scenario, world, &mut bag, &mut gt, schedule, frame_rx, ids, rngs);
        camera.join().map_err(|_| anyhow::anyhow!("camera thread panicked"))??;
        written
    })?;

    let mut events = sim::geometric_events(world, cli.duration, 3.0);
    events.extend(scenario.declared_events.iter().filter(|e| e.onset < cli.duration).cloned());
    events.sort_by(|a, b| a.onset.total_cmp(&b.onset).then(a.kind.cmp(&b.kind)));
    for e in &events {
        writeln!(
            gt,
            "{}",
            serde_json::json!({"type": "event", "kind": e.kind, "sensor": e.sensor, "actor_ids": e.actor_ids,
                               "onset_ns": START_NS + (e.onset * 1e9).round() as i64,
                               "offset_ns": START_NS + (e.offset.min(cli.duration) * 1e9).round() as i64})
        )?;
    }
    gt.flush()?;
    let count = bag.message_count();
    bag.finish()?;
    eprintln!(
        "fusion_sim: {} seed {}: {count} messages, {} events → {}",
        scenario.name,
        cli.seed,
        events.len(),
        cli.out
    );
    Ok(())
}

/// Returns per actor in one LiDAR sweep or radar scan: the ground truth of what that
/// sensor could possibly detect (evaluations count only actors some range sensor saw).
fn hits_record(kind: &str, stamp_ns: i64, owners: impl Iterator<Item = Option<u32>>) -> serde_json::Value {
    let mut hits: std::collections::BTreeMap<String, u32> = Default::default();
    for id in owners.flatten() {
        *hits.entry(id.to_string()).or_default() += 1;
    }
    serde_json::json!({"type": kind, "stamp_ns": stamp_ns, "hits": hits})
}

#[allow(clippy::too_many_arguments)]
fn write_all(
    cli: &Cli,
    scenario: &sim::Scenario,
    world: &World,
    bag: &mut BagWriter,
    gt: &mut impl Write,
    schedule: Vec<(i64, Sensor)>,
    frames: std::sync::mpsc::Receiver<(sim::Frame, String)>,
    ids: [usize; 5],
    rngs: (rand_chacha::ChaCha8Rng, rand_chacha::ChaCha8Rng, rand_chacha::ChaCha8Rng, sim::ImuModel),
) -> Result<()> {
    let [cam_id, info_id, lidar_id, radar_id, imu_id] = ids;
    let (mut rng_lidar, mut rng_radar, mut rng_imu, mut imu) = rngs;
    let calib = &world.calib;
    let cam = calib.sensor("camera").clone();
    let k = cam.k.unwrap_or([500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]);
    let dur_ns = (cli.duration * 1e9).round() as i64;
    let progress = indicatif::ProgressBar::new(dur_ns as u64 / 1_000_000);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ms sim time ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(format!("fusion_sim {}", scenario.name));
    for (t_ns, sensor) in schedule {
        let t = t_ns as f64 * 1e-9;
        let log_time = START_NS + t_ns;
        match sensor {
            Sensor::Camera => {
                let (frame, truth) = frames.recv().context("camera renderer stopped")?;
                let img = Image {
                    header: header(t_ns, &cam.frame_id),
                    height: frame.height,
                    width: frame.width,
                    encoding: "rgb8".into(),
                    is_bigendian: 0,
                    step: frame.width * 3,
                    data: frame.rgb,
                };
                bag.write(cam_id, log_time, &img.to_serialized_bytes()?)?;
                let info = CameraInfo {
                    header: header(t_ns, &cam.frame_id),
                    height: frame.height,
                    width: frame.width,
                    distortion_model: "plumb_bob".into(),
                    d: vec![0.0; 5],
                    k: k.to_vec(),
                    r: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                    p: vec![k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0],
                    binning_x: 0,
                    binning_y: 0,
                    roi: RegionOfInterest::default(),
                };
                bag.write(info_id, log_time, &info.to_serialized_bytes()?)?;
                writeln!(gt, "{truth}")?;
            }
            Sensor::Lidar => {
                if scenario.faults.lidar_dropout.is_some_and(|(a, b)| t >= a && t < b) {
                    continue;
                }
                let sweep = sim::lidar_sweep(world, t, &mut rng_lidar);
                writeln!(gt, "{}", hits_record("lidar_hits", log_time, sweep.actor.iter().copied()))?;
                let n = sweep.points.len();
                let msg = cloud(
                    t_ns,
                    &calib.sensor("lidar").frame_id,
                    &["x", "y", "z", "intensity", "t"],
                    sweep.points.iter().flatten().copied(),
                    n,
                );
                bag.write(lidar_id, log_time, &msg.to_serialized_bytes()?)?;
            }
            Sensor::Radar => {
                let targets = sim::radar_scan(world, t, &mut rng_radar);
                writeln!(gt, "{}", hits_record("radar_hits", log_time, targets.iter().map(|(_, a)| *a)))?;
                let n = targets.len();
                let msg = cloud(
                    t_ns,
                    &calib.sensor("radar").frame_id,
                    &["x", "y", "z", "doppler", "rcs"],
                    targets.iter().flat_map(|(p, _)| p.iter().copied()),
                    n,
                );
                bag.write(radar_id, log_time, &msg.to_serialized_bytes()?)?;
            }
            Sensor::Imu => {
                let r = imu.sample(world, t, 0.005, &mut rng_imu);
                let v3 = |v: [f64; 3]| Vector3 { x: v[0], y: v[1], z: v[2] };
                let mut ocov = vec![0.0; 9];
                ocov[0] = -1.0; // no orientation (REP 145)
                let msg = Imu {
                    header: header(t_ns, &calib.sensor("imu").frame_id),
                    orientation: Quaternion { x: 0.0, y: 0.0, z: 0.0, w: 1.0 },
                    orientation_covariance: ocov,
                    angular_velocity: v3(r.angular_velocity),
                    angular_velocity_covariance: vec![4e-6, 0.0, 0.0, 0.0, 4e-6, 0.0, 0.0, 0.0, 4e-6],
                    linear_acceleration: v3(r.linear_acceleration),
                    linear_acceleration_covariance: vec![9e-4, 0.0, 0.0, 0.0, 9e-4, 0.0, 0.0, 0.0, 9e-4],
                };
                bag.write(imu_id, log_time, &msg.to_serialized_bytes()?)?;
            }
        }
        progress.set_position(t_ns as u64 / 1_000_000);
    }
    progress.finish_and_clear();
    Ok(())
}
