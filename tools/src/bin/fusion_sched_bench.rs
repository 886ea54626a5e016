//! fusion_sched_bench: the fusion stage under the deadline scheduler and under a plain FIFO
//! queue, in the same run, on a bag played in real time at 1×, 2×, 4× its sensor rates.
//!
//!     fusion_sched_bench BAG [--rates 1,2,4] [--schedulers edf,fifo] [--loops N]
//!                        [--params FILE] [--detector none|centernet] [--backend flex|wgpu]
//!                        [--policy other|fifo|rr] [--priority P] [--cpus 0,1] [--trace FILE]
//!                        [--ladder RUNGS] [--repeats N]
//!
//! Prints one JSON document: per run, end-to-end latency p50/p99/p99.9/max (newest member's
//! stamp → publication), target and hard misses per 1,000 sets, shed sets by reason,
//! degradation level reached, RSS over time; per rate, FIFO ÷ scheduler ratios.
//!
//! With `--repeats N` each rate runs N rounds, the executors' order alternating from round
//! to round (edf, fifo, then fifo, edf, ...), and the comparison pools every round's sets:
//! the detector's own time drifts by several ms over a run on a shared CPU, which a single
//! edf-then-fifo pair reads as a difference between the executors.
use anyhow::Result;
use clap::Parser;
use fusion::sched::{parse_cpus, parse_ladder, RtConfig, SchedConfig};
use hdrhistogram::Histogram;
use sensor_fusion::detector::DetectorParams;
use sensor_fusion_tools::schedbench::{empty_latencies, ms, run_with_latencies, BenchOptions, Mode};
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
    /// Parameter YAML (the fusion_node section), e.g. config/fusion.yaml: its pipeline and
    /// detector parameters (the detector flags below override the file's). The scheduler's
    /// come from the flags.
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
    /// The degradation ladder, rungs in order ("" = none: the scheduler may shed sets and
    /// leave the detector out by admission, but never degrades on slack). Default: the
    /// node's ladder.
    #[arg(long)]
    ladder: Option<String>,
    /// Rounds per rate, the executors' order alternating; the comparison pools them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
}

fn main() {
    sensor_fusion::ros::init_logging();
    if let Err(e) = go(Cli::parse()) {
        eprintln!("fusion_sched_bench: error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn go(cli: Cli) -> Result<()> {
    // The file's detector parameters (as fusion_node reads them), then the flags.
    let mut dp = match &cli.params {
        Some(p) => <sensor_fusion::config::FusionNodeConfig as sensor_fusion::config::NodeConfig>::from_params_file(p)?
            .detector(),
        None => DetectorParams::default(),
    };
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
    if let Some(ladder) = &cli.ladder {
        sched.degrade.ladder = parse_ladder(ladder).map_err(anyhow::Error::msg)?;
    }
    let modes: Vec<Mode> = cli.schedulers.iter().map(|s| s.parse()).collect::<Result<_>>()?;
    let top = cli.rates.iter().cloned().fold(0.0, f64::max);
    let mut runs: Vec<Value> = vec![];
    // Per rate and executor: every round's latencies pooled, and each round's p99.
    let mut pooled: Vec<(f64, Mode, Histogram<u64>, Vec<f64>)> = vec![];
    for &rate in &cli.rates {
        for round in 0..cli.repeats {
            let mut order = modes.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for &mode in &order {
                let opts = BenchOptions {
                    bag: cli.bag.clone(),
                    rate,
                    loops: cli.loops,
                    mode,
                    detector: dp.clone(),
                    params_file: cli.params.clone(),
                    sched: sched.clone(),
                    trace: cli.trace.clone().filter(|_| mode == Mode::Edf && rate == top && round == 0),
                };
                eprintln!("fusion_sched_bench: {} at {rate}x (round {}/{}) ...", mode.as_str(), round + 1, cli.repeats);
                let (mut report, latencies) = run_with_latencies(&opts)?;
                report["round"] = json!(round + 1);
                let slot = match pooled.iter().position(|(r, m, _, _)| *r == rate && *m == mode) {
                    Some(i) => i,
                    None => {
                        pooled.push((rate, mode, empty_latencies(), vec![]));
                        pooled.len() - 1
                    }
                };
                pooled[slot].2.add(&latencies).ok();
                pooled[slot].3.push(report["end_to_end_ms"]["p99"].as_f64().unwrap_or(f64::NAN));
                runs.push(report);
            }
        }
    }
    let ratio = |a: f64, b: f64| -> Value {
        if b > 0.0 && a.is_finite() {
            json!((a / b * 100.0).round() / 100.0)
        } else {
            Value::Null
        }
    };
    let comparison: Vec<Value> = cli
        .rates
        .iter()
        .filter_map(|&rate| {
            let of = |m: Mode| pooled.iter().find(|(r, mode, _, _)| *r == rate && *mode == m);
            let (edf, fifo) = (of(Mode::Edf)?, of(Mode::Fifo)?);
            let sum = |m: &str, key: &str| -> f64 {
                runs.iter()
                    .filter(|r| r["rate"] == json!(rate) && r["scheduler"] == m)
                    .map(|r| r[key].as_f64().unwrap_or(0.0))
                    .sum()
            };
            // Each round's rate weighted by its sets: the pooled rate.
            let per_1000 = |m: &str| {
                let (misses, sets) = runs
                    .iter()
                    .filter(|r| r["rate"] == json!(rate) && r["scheduler"] == m)
                    .map(|r| {
                        let sets = r["sets"].as_f64().unwrap_or(0.0);
                        (r["hard_misses_per_1000"].as_f64().unwrap_or(0.0) * sets, sets)
                    })
                    .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
                if sets > 0.0 {
                    json!((misses / sets * 100.0).round() / 100.0)
                } else {
                    Value::Null
                }
            };
            let p = |h: &Histogram<u64>, q: f64| ms(h.value_at_quantile(q));
            Some(json!({
                "rate": rate,
                "rounds": cli.repeats,
                "published": {"edf": edf.2.len(), "fifo": fifo.2.len()},
                "pooled_p50_ms": {"edf": p(&edf.2, 0.5), "fifo": p(&fifo.2, 0.5)},
                "pooled_p99_ms": {"edf": p(&edf.2, 0.99), "fifo": p(&fifo.2, 0.99)},
                "round_p99_ms": {"edf": edf.3, "fifo": fifo.3},
                "p99_fifo_over_edf": ratio(p(&fifo.2, 0.99), p(&edf.2, 0.99)),
                "max_fifo_over_edf": ratio(ms(fifo.2.max()), ms(edf.2.max())),
                "hard_misses_per_1000": {"edf": per_1000("edf"), "fifo": per_1000("fifo")},
                "published_past_hard_deadline": {"edf": sum("edf", "published_past_hard_deadline"), "fifo": sum("fifo", "published_past_hard_deadline")},
            }))
        })
        .collect();
    let doc = json!({"bag": cli.bag.display().to_string(), "runs": runs, "fifo_vs_edf": comparison});
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
