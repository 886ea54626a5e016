//! fusion_replay: a rosbag2 bag through the whole fusion pipeline in one process, no DDS.
//!
//!     fusion_replay BAG [--out DIR] [--realtime [--rate R]] [--params FILE] [--calibration FILE] [--bench]
//!
//! Writes events.jsonl, objects.jsonl, metrics.json (deterministic) and timing.json
//! (measured) into DIR; `--bench` prints the timing JSON on stdout.
use anyhow::Result;
use clap::Parser;
use sensor_fusion::replay::{run, ReplayOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "fusion_replay", about = "Replay a rosbag2 bag through the fusion pipeline in one process (no DDS)")]
struct Cli {
    /// rosbag2 directory (or a single .mcap / .db3 file).
    bag: PathBuf,
    /// Output directory for events.jsonl, objects.jsonl, metrics.json, timing.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pace messages by their recorded times instead of running as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// With --realtime: speed factor.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Parameter YAML (the fusion_node section is used), e.g. launch/fusion.yaml.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Calibration YAML (default: BAG/calibration.yaml when present, else the built-in one).
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Print the timing JSON (per-stage and end-to-end latency, throughput) on stdout.
    #[arg(long)]
    bench: bool,
    #[arg(long, default_value = "/camera/image_raw")]
    camera_topic: String,
    #[arg(long, default_value = "/lidar/points")]
    lidar_topic: String,
    #[arg(long, default_value = "/radar/points")]
    radar_topic: String,
    #[arg(long, default_value = "/imu/data")]
    imu_topic: String,
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
    let opts = ReplayOptions {
        bag: cli.bag,
        out: cli.out,
        realtime: cli.realtime,
        rate: cli.rate,
        calibration: cli.calibration,
        params_file: cli.params,
        topics: [cli.camera_topic, cli.lidar_topic, cli.radar_topic, cli.imu_topic],
    };
    let r = run(&opts, None)?;
    eprintln!(
        "fusion_replay: {} sets, {} events, {} s wall ({}x real time)",
        r.sets,
        r.events.len(),
        r.timing["wall_s"],
        r.timing["speed_vs_realtime"]
    );
    if cli.bench {
        println!("{}", serde_json::to_string_pretty(&r.timing)?);
    }
    Ok(())
}
