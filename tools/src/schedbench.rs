//! The scheduler benchmark's in-process engine (`fusion_sched_bench`): a rosbag2 bag played
//! in real time at `rate`× its sensor rates (stamps compressed by the same factor, the bag
//! looped to fill the run) into the fusion stage under the deadline scheduler or the plain
//! FIFO baseline. The player thread stands for the drivers: it deserializes each message
//! and stamps it with the time it is handed over, so latency counts from "acquisition"
//! (the newest member's stamp) to publication, as on the robot.
use crate::{bag::Bag, replay::pipeline_params_from_file};
use anyhow::{bail, Context as _, Result};
use fusion::{
    anomaly::Event,
    calib::Calibration,
    frontend::Frontend,
    pipeline::{Input, Pipeline, PipelineParams, SetOutput},
    sched::{Clock, Executor, Message, SchedConfig, SchedStats, Sink, Stage},
    Sensor, StampNs,
};
use hdrhistogram::Histogram;
use r2r::{
    sensor_msgs::msg::{Image, Imu, PointCloud2},
    WrappedTypesupport,
};
use sensor_fusion::{
    detector::DetectorParams,
    graph,
    ingest::{cloud_fields, cloud_ref, image_ref, imu_sample},
    ros,
};
use serde_json::{json, Value};
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Edf,
    Fifo,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Edf => "edf",
            Mode::Fifo => "fifo",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "edf" => Ok(Mode::Edf),
            "fifo" => Ok(Mode::Fifo),
            _ => bail!("'{s}' is not a scheduler (edf or fifo)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub bag: PathBuf,
    pub rate: f64,
    /// Plays of the bag (0: as many as the rate, so every run lasts the bag's duration).
    pub loops: usize,
    pub mode: Mode,
    pub detector: DetectorParams,
    pub params_file: Option<PathBuf>,
    pub sched: SchedConfig,
    pub trace: Option<PathBuf>,
}

/// A raw driver message, already deserialized (what DDS hands a subscriber).
pub enum Raw {
    Camera(Image),
    Lidar(PointCloud2),
    Radar(PointCloud2),
    Imu(Imu),
}

pub struct RawMsg {
    /// The declared sensor it came from (the bag's calibration's set).
    sensor: fusion::SensorId,
    stamp: StampNs,
    msg: Raw,
}

impl Message for RawMsg {
    fn sensor(&self) -> fusion::SensorId {
        self.sensor
    }
    fn stamp(&self) -> StampNs {
        self.stamp
    }
}

/// The ingest nodes' preprocessing (validation, transform to base_link) as the scheduler's
/// `preprocess` stage.
pub fn preprocess(calib: &Calibration) -> Box<dyn FnMut(RawMsg) -> Result<Input, String> + Send> {
    let mut frontend = Frontend::new(calib);
    Box::new(move |m: RawMsg| {
        let r = match &m.msg {
            Raw::Camera(img) => frontend.camera_of(m.sensor, m.stamp, &img.header.frame_id, image_ref(img)),
            Raw::Lidar(c) | Raw::Radar(c) => {
                frontend.cloud_of(m.sensor, m.stamp, &c.header.frame_id, cloud_ref(c, &cloud_fields(c)))
            }
            Raw::Imu(i) => frontend.imu(&i.header.frame_id, &imu_sample(i)),
        };
        r.map_err(|rej| rej.reason.as_str().to_string())
    })
}

#[derive(Default)]
struct Published {
    latency_us: Option<Histogram<u64>>,
    past_hard: u64,
    events: u64,
}

struct BenchSink {
    hard_ns: i64,
    out: Arc<Mutex<Published>>,
}

impl Sink for BenchSink {
    fn publish(&mut self, _set: &SetOutput, latency_ns: i64) {
        let mut o = self.out.lock().expect("sink");
        let h = o.latency_us.get_or_insert_with(empty_latencies);
        h.record((latency_ns / 1000).max(1) as u64).ok();
        if latency_ns > self.hard_ns {
            o.past_hard += 1;
        }
    }
    fn events(&mut self, events: &[Event]) {
        self.out.lock().expect("sink").events += events.len() as u64;
    }
}

/// End-to-end latencies in µs, 1 µs to 60 s, 3 significant digits.
pub fn empty_latencies() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

/// Anonymous resident memory of this process (heap, stacks), MiB: what a leak or an
/// unbounded queue would grow. File-backed pages (the memory-mapped bag being read) come
/// and go with the page cache and are left out.
pub fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// µs → ms, to 0.01 ms (the reports' precision).
pub fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

/// One run: returns its JSON report.
pub fn run(opts: &BenchOptions) -> Result<Value> {
    run_with_latencies(opts).map(|(report, _)| report)
}

/// One run: its JSON report and every published set's end-to-end latency (µs), for pooling
/// the latencies of repeated runs.
pub fn run_with_latencies(opts: &BenchOptions) -> Result<(Value, Histogram<u64>)> {
    if !(opts.rate > 0.0 && opts.rate.is_finite()) {
        bail!("rate must be > 0");
    }
    let bag = Bag::open(&opts.bag)?;
    let calib_path = opts.bag.join("calibration.yaml");
    let calib =
        if calib_path.is_file() { Calibration::load(&calib_path.to_string_lossy())? } else { Calibration::default() };
    // The detector's parameters come from the caller (the file's, then its flags).
    let params = match &opts.params_file {
        Some(p) => pipeline_params_from_file(p)?,
        None => PipelineParams::default(),
    };
    let dp = opts.detector.clone();
    params.check_sensors(&calib.sensor_set()?).map_err(anyhow::Error::msg)?;
    let hard_ns = params.hard_deadline_ns;
    let mut detector = dp.build()?;
    // First inferences allocate and pick kernels: not what the run should measure.
    if let Some(d) = detector.as_mut() {
        let blank = fusion::camera::Rgb8 { width: 640, height: 480, data: vec![100; 640 * 480 * 3] };
        for _ in 0..3 {
            d.detect(0, &blank).ok();
        }
        d.set_reduced_input(true);
        d.detect(0, &blank).ok();
        d.set_reduced_input(false);
    }
    let detector_name = detector.as_ref().map(|d| d.name().to_string()).unwrap_or_else(|| "none".into());
    let pipeline = Pipeline::new(params, &calib, detector);

    let origin = Instant::now();
    // Stamps and deadlines on one monotonic time line (offset: positive, ~1000 s).
    const BASE: i64 = 1_000_000_000_000;
    let clock: Clock = Arc::new(move || BASE + origin.elapsed().as_nanos() as i64);
    let published = Arc::new(Mutex::new(Published::default()));
    let sink = BenchSink { hard_ns, out: published.clone() };
    let mut sched = opts.sched.clone();
    if opts.trace.is_some() && sched.trace_capacity == 0 {
        sched.trace_capacity = 200_000;
    }
    let pre = preprocess(&calib);
    let exec = match opts.mode {
        Mode::Edf => Executor::spawn_edf(pipeline, pre, sink, clock.clone(), sched)?,
        Mode::Fifo => Executor::spawn_fifo(pipeline, pre, sink, clock.clone(), sched)?,
    };
    let live = exec.stats();

    // Memory and degradation level over time.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, live) = (sampling.clone(), live.clone());
        std::thread::spawn(move || {
            let mut rss = vec![];
            let mut levels = vec![];
            while sampling.load(Ordering::Acquire) {
                rss.push((origin.elapsed().as_secs_f64(), rss_mib()));
                levels.push(live.lock().expect("stats").level);
                std::thread::sleep(Duration::from_millis(250));
            }
            (rss, levels)
        })
    };

    // The drivers' topics of a fusion_sim bag, by sensor: the graph's for the standard four,
    // `/<name>/image_raw` and `/<name>/points` for every further camera, LiDAR and radar.
    let driver_topic = |s: Sensor| match s {
        Sensor::Camera => graph::CAMERA_IMAGE.root_name(),
        Sensor::Lidar => graph::LIDAR_POINTS.root_name(),
        Sensor::Radar => graph::RADAR_POINTS.root_name(),
        Sensor::Imu => graph::IMU_DATA.root_name(),
    };
    let ids = Frontend::new(&calib);
    let mut drivers: Vec<(String, fusion::SensorId, Sensor)> = [Sensor::Camera, Sensor::Lidar, Sensor::Radar]
        .into_iter()
        .map(|s| (driver_topic(s), ids.sensor(s), s))
        .chain(ids.imu_sensor().map(|id| (driver_topic(Sensor::Imu), id, Sensor::Imu)))
        .collect();
    for (id, name, kind) in ids.further() {
        let topic = if kind == Sensor::Camera { format!("/{name}/image_raw") } else { format!("/{name}/points") };
        drivers.push((topic, id, kind));
    }
    let sensor_of: Vec<Option<(fusion::SensorId, Sensor)>> = bag
        .topics
        .iter()
        .map(|t| drivers.iter().find(|(topic, _, _)| *topic == t.name).map(|(_, id, kind)| (*id, *kind)))
        .collect();
    let loops = if opts.loops == 0 { opts.rate.ceil().max(1.0) as usize } else { opts.loops };
    let period = bag.duration_ns + 100_000_000;
    let mut first_log: Option<i64> = None;
    let mut undecodable = 0u64;
    let start = clock();
    for lap in 0..loops {
        let lap_offset = lap as i64 * period;
        bag.for_each_message(|m| {
            let Some(Some((id, sensor))) = sensor_of.get(m.topic).copied() else { return true };
            let t0 = *first_log.get_or_insert(m.log_time_ns);
            let bag_t = lap_offset + m.log_time_ns - t0;
            let due = start + (bag_t as f64 / opts.rate) as i64;
            let wait = due - clock();
            if wait > 0 {
                std::thread::sleep(Duration::from_nanos(wait as u64));
            }
            // The "driver" stamps the message as it hands it over.
            let stamp = clock();
            let raw = match sensor {
                Sensor::Camera => Image::from_serialized_bytes(&m.data).map(|mut i| {
                    i.header.stamp = ros::to_time(stamp);
                    Raw::Camera(i)
                }),
                Sensor::Lidar | Sensor::Radar => PointCloud2::from_serialized_bytes(&m.data).map(|mut c| {
                    c.header.stamp = ros::to_time(stamp);
                    if sensor == Sensor::Lidar {
                        Raw::Lidar(c)
                    } else {
                        Raw::Radar(c)
                    }
                }),
                Sensor::Imu => Imu::from_serialized_bytes(&m.data).map(|mut i| {
                    i.header.stamp = ros::to_time(stamp);
                    Raw::Imu(i)
                }),
            };
            match raw {
                Ok(msg) => exec.post(RawMsg { sensor: id, stamp, msg }),
                Err(_) => undecodable += 1,
            }
            true
        })?;
    }
    let wall = (clock() - start) as f64 * 1e-9;
    // Let the last sets finish (or be shed).
    std::thread::sleep(Duration::from_millis(300));
    let trace = exec.trace();
    let stats = exec.shutdown();
    sampling.store(false, Ordering::Release);
    let (rss, levels) = sampler.join().expect("sampler");
    if let (Some(path), Some(t)) = (&opts.trace, trace) {
        t.write(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let p = published.lock().expect("sink");
    let latencies = p.latency_us.clone().unwrap_or_else(empty_latencies);
    Ok((report(opts, &stats, &p, &rss, &levels, wall, loops, &detector_name, undecodable), latencies))
}

#[allow(clippy::too_many_arguments)]
fn report(
    opts: &BenchOptions,
    s: &SchedStats,
    p: &Published,
    rss: &[(f64, f64)],
    levels: &[usize],
    wall: f64,
    loops: usize,
    detector: &str,
    undecodable: u64,
) -> Value {
    let published = s.count("sets.published");
    // FIFO releases and publishes every set it gets to; the scheduler counts releases.
    let sets = s.count("sets.released").max(published);
    let per_1000 = |n: u64| if sets == 0 { 0.0 } else { (n as f64 * 1000.0 / sets as f64 * 100.0).round() / 100.0 };
    let e2e = p.latency_us.clone().unwrap_or_else(|| Histogram::new(3).expect("histogram"));
    let q = |x: f64| if e2e.is_empty() { 0.0 } else { ms(e2e.value_at_quantile(x)) };
    // Memory: after the first second (allocator and model warm-up), first vs last quarter.
    let steady: Vec<f64> = rss.iter().filter(|(t, _)| *t >= 1.0).map(|(_, m)| *m).collect();
    let quarter = (steady.len() / 4).max(1);
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let growth =
        if steady.len() >= 4 { mean(&steady[steady.len() - quarter..]) - mean(&steady[..quarter]) } else { 0.0 };
    let counters_with = |prefix: &str| -> serde_json::Map<String, Value> {
        s.counters.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), json!(v))).collect()
    };
    let stage_p99: serde_json::Map<String, Value> = Stage::ALL
        .iter()
        .filter(|st| !s.stage[**st as usize].is_empty())
        .map(|st| {
            let h = &s.stage[*st as usize];
            (st.name().to_string(), json!({"p50_ms": ms(h.value_at_quantile(0.5)), "p99_ms": ms(h.value_at_quantile(0.99)), "runs": h.len()}))
        })
        .collect();
    // Sets that finished past the hard deadline: published late (FIFO) or withheld (EDF).
    let hard_misses = s.count("deadline.hard_misses");
    json!({
        "scheduler": opts.mode.as_str(),
        "rate": opts.rate,
        "bag_plays": loops,
        "wall_s": (wall * 100.0).round() / 100.0,
        "detector": detector,
        "sets": sets,
        "published": published,
        "end_to_end_ms": {"p50": q(0.5), "p99": q(0.99), "p99_9": q(0.999), "max": if e2e.is_empty() { 0.0 } else { ms(e2e.max()) }},
        "target_misses_per_1000": per_1000(s.count("deadline.target_misses")),
        "hard_misses_per_1000": per_1000(hard_misses),
        "published_past_hard_deadline": p.past_hard,
        "shed": s.count("sets.shed"),
        "shed_per_1000": per_1000(s.count("sets.shed")),
        "shed_by_reason": counters_with("shed."),
        "detector_left_out": counters_with("shed_stage."),
        "dropped": counters_with("dropped."),
        "degraded": counters_with("degraded."),
        "degradation_max_level": s.max_level,
        "degradation_levels_over_time": levels,
        "stages": stage_p99,
        "events": p.events,
        "undecodable": undecodable,
        "rss_anon_mib": {
            "peak": rss.iter().map(|x| x.1).fold(0.0, f64::max),
            "growth_first_to_last_quarter": (growth * 10.0).round() / 10.0,
            "samples_every_250ms": rss.iter().map(|x| (x.1 * 10.0).round() / 10.0).collect::<Vec<_>>(),
        },
    })
}
