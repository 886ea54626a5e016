//! fusion_replay: a rosbag2 bag through the whole fusion pipeline in one process, no DDS.
//!
//!     fusion_replay (BAG | --sim SCENARIO [--seed S] [--duration SECONDS]) [--out DIR] [--realtime [--rate R]] [--params FILE] [--calibration FILE] [--bench]
//!                   [--detector none|centernet] [--backend flex|wgpu] [--input-size WxH] [--precision f32|f16]
//!                   [--summaries [--summary-model GGUF] [--summary-deadline S] [--summary-window S]]
//!
//! Writes events.jsonl, objects.jsonl, metrics.json (deterministic) and timing.json
//! (measured) into DIR; `--bench` prints the timing JSON on stdout. With `--summaries` the
//! events are also summarized as the summarizer node would (bursts coalesced by data time)
//! into summaries.jsonl.
//!
//! `--sim` streams a `fusion_sim` scenario into the pipeline in process instead of reading a
//! bag: the same messages, so the same outputs, without writing the bag (ten minutes of
//! camera are 17 GB). Its `ground_truth.jsonl` and `calibration.yaml` go into DIR.
use anyhow::Result;
use clap::Parser;
use sensor_fusion::graph;
use sensor_fusion::{
    config::{FusionNodeConfig, NodeConfig},
    detector::DetectorParams,
};
use sensor_fusion_tools::replay::{run, ReplayOptions, SimSpec};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "fusion_replay", about = "Replay a rosbag2 bag through the fusion pipeline in one process (no DDS)")]
struct Cli {
    /// rosbag2 directory (or a single .mcap / .db3 file).
    #[arg(required_unless_present = "sim", conflicts_with = "sim")]
    bag: Option<PathBuf>,
    /// Stream this fusion_sim scenario (nominal, pedestrian_intrusion, ...) instead of a bag.
    #[arg(long)]
    sim: Option<String>,
    /// With --sim: the scenario's seed (varies the world and the sensor noise).
    #[arg(long, default_value_t = 1, requires = "sim")]
    seed: u64,
    /// With --sim: seconds of sensor data.
    #[arg(long, default_value_t = 20.0, requires = "sim")]
    duration: f64,
    /// With --sim: the run has the ego's wheel odometry on /odom (as `fusion_sim --odometry`).
    #[arg(long, requires = "sim")]
    odometry: bool,
    /// Output directory for events.jsonl, objects.jsonl, metrics.json, timing.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pace messages by their recorded times instead of running as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// With --realtime: speed factor.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Parameter YAML (the fusion_node section is used), e.g. config/fusion.yaml.
    #[arg(long)]
    params: Option<PathBuf>,
    /// The ingest nodes' parameter YAML (e.g. config/ingest.yaml, or your robot's copy): the
    /// replay filters LiDAR and radar, corrects the IMU and scales the camera as those
    /// nodes do with it (default: their defaults, which are the shipped file's values).
    #[arg(long)]
    ingest_params: Option<PathBuf>,
    /// Calibration YAML (default: BAG/calibration.yaml when present, else the built-in one).
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Ignore the bag's /tf_static: every extrinsic from the calibration file (by
    /// default tf places each sensor it knows, and the file fills the rest).
    #[arg(long)]
    no_tf: bool,
    /// Print the timing JSON (per-stage and end-to-end latency, throughput) on stdout.
    #[arg(long)]
    bench: bool,
    /// Camera detector: `none` or `centernet` (overrides the params file's `detector`).
    #[arg(long)]
    detector: Option<String>,
    /// Detector weights manifest (default: installed share/sensor_fusion/models, else models/weights).
    #[arg(long)]
    detector_weights: Option<String>,
    /// Detector backend: flex (CPU) or wgpu (GPU / lavapipe).
    #[arg(long)]
    backend: Option<String>,
    /// Detector input WIDTHxHEIGHT (multiples of 16).
    #[arg(long)]
    input_size: Option<String>,
    /// Detector precision: f32 or f16.
    #[arg(long)]
    precision: Option<String>,
    /// Write one self-contained HTML report of the run here (timeline, bird's-eye view,
    /// camera at each event, latency, counts, provenance; scored against fusion_sim's
    /// ground truth when the bag has one).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Summarize the events with the language model into DIR/summaries.jsonl.
    #[arg(long)]
    summaries: bool,
    /// GGUF model for --summaries (default: the shipped SmolLM2, sha256-checked).
    #[arg(long, default_value = "")]
    summary_model: String,
    /// Seconds the model may take per summary before the template is used.
    #[arg(long, default_value_t = 2.0)]
    summary_deadline: f64,
    /// Events within this many seconds (data time) of a burst's first share one summary.
    #[arg(long, default_value_t = 1.0)]
    summary_window: f64,
    /// Model answers tried per summary within the deadline until one verifies (default: the
    /// summarizer's).
    #[arg(long)]
    summary_candidates: Option<usize>,
    /// Language model backend: flex or wgpu.
    #[arg(long, default_value = "flex")]
    summary_backend: String,
    #[arg(long, default_value_t = graph::CAMERA_IMAGE.root_name())]
    camera_topic: String,
    #[arg(long, default_value_t = graph::LIDAR_POINTS.root_name())]
    lidar_topic: String,
    #[arg(long, default_value_t = graph::RADAR_POINTS.root_name())]
    radar_topic: String,
    #[arg(long, default_value_t = graph::IMU_DATA.root_name())]
    imu_topic: String,
    /// The camera's intrinsics (they win over the calibration file's, as in camera_ingest).
    #[arg(long, default_value_t = graph::CAMERA_INFO.root_name())]
    camera_info_topic: String,
    /// The robot's odometry (nav_msgs/Odometry), used where the bag has it; `/none` ignores it.
    #[arg(long, default_value_t = graph::ODOMETRY.root_name())]
    odom_topic: String,
}

fn main() {
    sensor_fusion::ros::init_logging();
    let cli = Cli::parse();
    if let Err(e) = go(cli) {
        eprintln!("fusion_replay: error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn go(cli: Cli) -> Result<()> {
    if !(cli.rate > 0.0 && cli.rate.is_finite()) {
        anyhow::bail!("--rate must be > 0");
    }
    if cli.summaries && !(cli.summary_deadline > 0.0) {
        anyhow::bail!("--summary-deadline must be > 0");
    }
    let summary_backend: models::Backend = cli.summary_backend.parse()?;
    let out_dir = cli.out.clone();
    let opts = ReplayOptions {
        bag: cli.bag.unwrap_or_default(),
        sim: cli.sim.map(|scenario| SimSpec {
            scenario,
            seed: cli.seed,
            duration: cli.duration,
            odometry: cli.odometry,
        }),
        out: cli.out,
        realtime: cli.realtime,
        rate: cli.rate,
        calibration: cli.calibration,
        use_tf: !cli.no_tf,
        params_file: cli.params,
        ingest_params: cli.ingest_params,
        topics: [
            cli.camera_topic,
            cli.lidar_topic,
            cli.radar_topic,
            cli.imu_topic,
            cli.camera_info_topic,
            cli.odom_topic,
        ],
        report: cli.report.is_some(),
    };
    let mut dp = match &opts.params_file {
        Some(p) => FusionNodeConfig::from_params_file(p)?.detector(),
        None => DetectorParams::default(),
    };
    for (value, slot) in [
        (cli.detector, &mut dp.detector),
        (cli.detector_weights, &mut dp.weights),
        (cli.backend, &mut dp.backend),
        (cli.input_size, &mut dp.input_size),
        (cli.precision, &mut dp.precision),
    ] {
        if let Some(v) = value {
            *slot = v;
        }
    }
    let mut r = run(&opts, dp.build()?)?;
    let mut summary_records: Vec<serde_json::Value> = vec![];
    let mut summary_model: Option<serde_json::Value> = None;
    eprintln!(
        "fusion_replay: {} sets, {} events, {} s wall ({}x real time), camera detector {}",
        r.sets,
        r.events.len(),
        r.timing["wall_s"],
        r.timing["speed_vs_realtime"],
        r.metrics["detector"].as_str().unwrap_or("none")
    );
    if cli.summaries {
        use models::llm::summary::{EventInfo, SummarizerConfig};
        use sensor_fusion::summarizer::{load_summarizer, summarize_events, ModelChoice};
        let choice = ModelChoice { model: cli.summary_model, backend: summary_backend, ..ModelChoice::default() };
        let path = sensor_fusion::summarizer::model_path(&choice.model);
        // The shipped model is sha256-checked at load; another is hashed here to name it.
        let sha256 = match choice.model.is_empty() {
            true => Some(sensor_fusion::summarizer::DEFAULT_MODEL_SHA256.to_string()),
            false => std::fs::read(&path).ok().map(|b| models::runtime::sha256_hex(&b)),
        };
        summary_model = Some(serde_json::json!({
            "model": path.display().to_string(), "sha256": sha256, "backend": cli.summary_backend}));
        let config = SummarizerConfig {
            deadline: sensor_fusion::seconds("--summary-deadline", cli.summary_deadline)?,
            candidates: cli.summary_candidates.unwrap_or(SummarizerConfig::default().candidates).max(1),
            ..SummarizerConfig::default()
        };
        let summarizer = load_summarizer(&choice, config);
        let events: Vec<EventInfo> = r.events.iter().map(EventInfo::from).collect();
        let summaries = summarize_events(summarizer, &events, (cli.summary_window * 1e9) as i64, 8);
        if let Some(dir) = &out_dir {
            let mut text = String::new();
            for s in &summaries {
                text.push_str(&serde_json::to_string(s)?);
                text.push('\n');
            }
            std::fs::write(dir.join("summaries.jsonl"), text)?;
        }
        summary_records = summaries.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
        let fallbacks = summaries.iter().filter(|s| s.fallback).count();
        eprintln!(
            "fusion_replay: {} summaries ({} by the model, {} template fallbacks)",
            summaries.len(),
            summaries.len() - fallbacks,
            fallbacks
        );
    }
    if let (Some(path), Some((collector, mut info))) = (&cli.report, r.report.take()) {
        let started = std::time::Instant::now();
        if dp.detector != "none" {
            info.models.insert("camera_detector_weights".into(), manifest_identity(&dp.manifest()));
        }
        if let Some(m) = summary_model {
            info.models.insert("summary_model".into(), m);
        }
        let data = sensor_fusion_tools::report::data(&collector, &info, &summary_records)?;
        sensor_fusion_tools::report::write(path, &data)?;
        eprintln!("fusion_replay: report written to {} in {:.2} s", path.display(), started.elapsed().as_secs_f64());
    }
    if cli.bench {
        println!("{}", serde_json::to_string_pretty(&r.timing)?);
    }
    Ok(())
}

/// A weights manifest's path and the sha256 it requires of the weights (the loader refuses
/// any other file, so this names the weights that ran).
fn manifest_identity(path: &std::path::Path) -> serde_json::Value {
    let sha = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["sha256"].as_str().map(str::to_owned));
    serde_json::json!({"manifest": path.display().to_string(), "sha256": sha})
}
