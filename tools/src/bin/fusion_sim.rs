//! fusion_sim: seeded multi-sensor scenarios with ground truth, written as rosbag2 MCAP bags
//! with the raw topics real drivers publish (DESIGN.md §3).
//!
//!     fusion_sim --scenario NAME --seed S --duration SECONDS --out DIR
//!
//! DIR becomes a rosbag2 directory; beside the MCAP file it gets `calibration.yaml` (the
//! extrinsics the nodes read) and `ground_truth.jsonl`. Same arguments → identical bytes.
use anyhow::{Context as _, Result};
use clap::Parser;
use sensor_fusion::graph;
use sensor_fusion_tools::{
    bag::BagWriter,
    msgdef,
    simrun::{self, START_NS},
};
use sensor_sim::{self as sim, World};
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
    /// Calibration YAML for the sensor poses (default: the scenario's own robot where it has
    /// one, `multi_sensor`'s config/calibration_multi_sensor.yaml, else the built-in one).
    #[arg(long, default_value = "")]
    calibration: String,
    /// Also write detector training data here: images/<stamp>.ppm (binary PPM, rgb8) and
    /// labels.jsonl (per image: class, actor id and visible 2D box of every actor).
    #[arg(long)]
    export: Option<String>,
    /// With --export: every Nth camera frame.
    #[arg(long, default_value_t = 1)]
    export_every: usize,
    /// Also write the ego's wheel odometry (nav_msgs/Odometry, 50 Hz, frame `odom`, twist in
    /// base_link) on /odom.
    #[arg(long)]
    odometry: bool,
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
    let scenario = simrun::scenario(&cli.scenario, cli.seed, cli.duration)?;
    let calib = simrun::calibration(Some(&cli.calibration), &cli.scenario)?;
    let world = World::new(&scenario, cli.duration + 0.2, calib.clone());
    let mut bag = BagWriter::create(&cli.out)?;
    let dir = std::path::PathBuf::from(&cli.out);
    let mut gt = simrun::beside(&dir, &calib)?;

    // Sensor-data QoS, as drivers publish (best effort, keep last 5).
    let qos: serde_norway::Value = serde_norway::from_str(
        "- {history: keep_last, depth: 5, reliability: best_effort, durability: volatile, deadline: {sec: 0, nsec: 0}, \
         lifespan: {sec: 0, nsec: 0}, liveliness: automatic, liveliness_lease_duration: {sec: 0, nsec: 0}, \
         avoid_ros_namespace_conventions: false}",
    )?;
    let mut ids = vec![];
    for (name, ty) in simrun::topics(cli.odometry, &calib) {
        let def = msgdef::definition(ty).with_context(|| format!("message definition of {ty} not installed"))?;
        ids.push(bag.add_topic(&name, ty, &def, qos.clone())?);
    }
    // The mounts on /tf_static, first, as `ros2 bag record` catches a robot's latched tf.
    let latched: serde_norway::Value = serde_norway::from_str(
        "- {history: keep_last, depth: 1, reliability: reliable, durability: transient_local, deadline: {sec: 0, nsec: 0}, \
         lifespan: {sec: 0, nsec: 0}, liveliness: automatic, liveliness_lease_duration: {sec: 0, nsec: 0}, \
         avoid_ros_namespace_conventions: false}",
    )?;
    let tf = graph::TF_STATIC;
    let def = msgdef::definition(tf.msg_type)
        .with_context(|| format!("message definition of {} not installed", tf.msg_type))?;
    let tf_topic = bag.add_topic(&tf.root_name(), tf.msg_type, &def, latched)?;
    bag.write(tf_topic, simrun::START_NS, &simrun::tf_static(&calib)?)?;
    let mut exporter = cli.export.as_deref().map(|d| Exporter::new(d, cli.export_every)).transpose()?;
    let hook: Option<simrun::FrameHook> =
        exporter.as_mut().map(|e| Box::new(move |w: &World, t_ns, f: &sim::Frame| e.frame(w, t_ns, f)) as _);
    let generated = simrun::generate(&world, cli.seed, cli.duration, cli.odometry, &mut gt, hook, |m| {
        bag.write(ids[m.topic], m.log_time_ns, &m.data)?;
        Ok(true)
    })?;
    if let Some(mut e) = exporter {
        e.labels.flush()?;
    }
    bag.finish()?;
    eprintln!(
        "fusion_sim: {} seed {}: {} messages, {} events → {}",
        scenario.name, cli.seed, generated.messages, generated.events, cli.out
    );
    Ok(())
}
