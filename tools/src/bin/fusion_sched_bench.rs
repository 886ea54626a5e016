//! fusion_sched_bench: the fusion stage under the deadline scheduler and under a plain FIFO
//! queue, in the same run, on a bag played in real time at 1×, 2×, 4× its sensor rates.
//!
//!     fusion_sched_bench BAG [--rates 1,2,4] [--schedulers edf,fifo] [--loops N]
//!                        [--params FILE] [--detector none|centernet] [--backend flex|wgpu]
//!                        [--policy other|fifo|rr] [--priority P] [--cpus 0,1] [--trace FILE]
//!
//! Prints one JSON document: per run, end-to-end latency p50/p99/p99.9/max (newest member's
//! stamp → publication), target and hard misses per 1,000 sets, shed sets by reason,
//! degradation level reached, RSS over time; per rate, FIFO ÷ scheduler ratios.
use anyhow::Result;
use clap::Parser;
use fusion::sched::{parse_cpus, RtConfig, SchedConfig};
use sensor_fusion::detector::DetectorParams;
use sensor_fusion_tools::schedbench::{run, BenchOptions, Mode};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "fusion_sched_bench", about = "Deadline scheduler vs FIFO on a bag at 1x/2x/4x sensor rates (JSON)")]
struct Cli {
    /// rosbag2 directory (raw driver topics, e.g. from fusion_sim).
    bag: PathBuf,
    /// Speed factors: the sensor rates (and the scene) run this many times faster.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    rates: Vec<f64>,
    #[arg(long, default_value = "edf,fifo", value_delimiter = ',')]
    schedulers: Vec<String>,
    /// Plays of the bag per run (default: the rate, rounded up, so runs last equally long).
    #[arg(long, default_value_t = 0)]
    loops: usize,
    /// Parameter YAML (the fusion_node section), e.g. config/fusion.yaml.
    #[arg(long)]
    params: Option<PathBuf>,
    #[arg(long)]
    detector: Option<String>,
    #[arg(long)]
    backend: Option<String>,
    #[arg(long)]
    input_size: Option<String>,
    /// OS scheduling of the scheduler's threads (other, fifo, rr; falls back to other
    /// with a warning where not permitted).
    #[arg(long, default_value = RtConfig::NODE.policy.as_str())]
    policy: String,
    /// The fusion thread's priority (fusion_node's `sched.priority` default).
    #[arg(long, default_value_t = RtConfig::NODE.priority)]
    priority: i32,
    #[arg(long, default_value = "")]
    cpus: String,
    /// Chrome-trace / Perfetto JSON of the scheduler's run at the highest rate.
    #[arg(long)]
    trace: Option<PathBuf>,
}

fn main() {
    sensor_fusion::ros::init_logging();
    if let Err(e) = go(Cli::parse()) {
        eprintln!("fusion_sched_bench: error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn go(cli: Cli) -> Result<()> {
    let mut dp = DetectorParams::default();
    for (value, slot) in
        [(&cli.detector, &mut dp.detector), (&cli.backend, &mut dp.backend), (&cli.input_size, &mut dp.input_size)]
    {
        if let Some(v) = value {
            *slot = v.clone();
        }
    }
    let mut sched = SchedConfig::default();
    sched.rt.policy = cli.policy.parse().map_err(anyhow::Error::msg)?;
    sched.rt.priority = cli.priority;
    sched.rt.cpus = parse_cpus(&cli.cpus).map_err(anyhow::Error::msg)?;
    let modes: Vec<Mode> = cli.schedulers.iter().map(|s| s.parse()).collect::<Result<_>>()?;
    let top = cli.rates.iter().cloned().fold(0.0, f64::max);
    let mut runs: Vec<Value> = vec![];
    for &rate in &cli.rates {
        for &mode in &modes {
            let opts = BenchOptions {
                bag: cli.bag.clone(),
                rate,
                loops: cli.loops,
                mode,
                detector: dp.clone(),
                params_file: cli.params.clone(),
                sched: sched.clone(),
                trace: cli.trace.clone().filter(|_| mode == Mode::Edf && rate == top),
            };
            eprintln!("fusion_sched_bench: {} at {rate}x ...", mode.as_str());
            runs.push(run(&opts)?);
        }
    }
    let ratio = |a: &Value, b: &Value| -> Value {
        match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
            _ => Value::Null,
        }
    };
    let comparison: Vec<Value> = cli
        .rates
        .iter()
        .filter_map(|&rate| {
            let of = |m: &str| runs.iter().find(|r| r["rate"] == json!(rate) && r["scheduler"] == m);
            let (edf, fifo) = (of("edf")?, of("fifo")?);
            Some(json!({
                "rate": rate,
                "p99_fifo_over_edf": ratio(&fifo["end_to_end_ms"]["p99"], &edf["end_to_end_ms"]["p99"]),
                "max_fifo_over_edf": ratio(&fifo["end_to_end_ms"]["max"], &edf["end_to_end_ms"]["max"]),
                "hard_misses_per_1000": {"edf": edf["hard_misses_per_1000"], "fifo": fifo["hard_misses_per_1000"]},
                "published_past_hard_deadline": {"edf": edf["published_past_hard_deadline"], "fifo": fifo["published_past_hard_deadline"]},
            }))
        })
        .collect();
    let doc = json!({"bag": cli.bag.display().to_string(), "runs": runs, "fifo_vs_edf": comparison});
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
