//! fusion_sync: the ApproximateTime synchronizer on text streams, for comparisons with the
//! C++ message_filters implementation.
//!
//!     fusion_sync --topics N --queue-size Q --age-penalty A --max-interval-ns M [--lower-bound-ns NS]×N
//!
//! Reads `topic_index stamp_ns` lines (arrival order) on stdin; prints one line per emitted
//! set: the members' stamps in topic order, in decimal nanoseconds. M = 0 means no limit.
//! `--batch` reads many streams in the oracle's format instead (see tests/oracle).
use clap::Parser;
use fusion::sync::{ApproximateTime, ApproximateTimeConfig};
use std::io::{BufRead, BufWriter, Write};

#[derive(Parser)]
#[command(name = "fusion_sync")]
struct Cli {
    #[arg(long, default_value_t = 2)]
    topics: usize,
    #[arg(long, default_value_t = 10)]
    queue_size: usize,
    #[arg(long, default_value_t = 0.1)]
    age_penalty: f64,
    #[arg(long, default_value_t = 0)]
    max_interval_ns: i64,
    /// Per-topic inter-message lower bound, in topic order (all or none).
    #[arg(long = "lower-bound-ns")]
    lower_bounds: Vec<i64>,
    /// Many streams: `stream N Q A M LB…` header lines, `topic stamp` lines, `end`.
    #[arg(long)]
    batch: bool,
    /// Benchmark the deadline policy's release latency at nominal rates; prints JSON.
    #[arg(long)]
    bench: bool,
}

/// Release latency of the deadline policy: the time `add()` takes for the message that
/// completes a set (so the set goes out), over 10 simulated minutes of nominal streams
/// (LiDAR 10 Hz reference, camera 30 Hz, radar 20 Hz, IMU 200 Hz, with jitter).
fn bench() {
    use fusion::sync::{DeadlineConfig, DeadlineSync};
    let mut sync: DeadlineSync<u64> = DeadlineSync::new(DeadlineConfig {
        topics: 4,
        reference: 0,
        tolerance_ns: 25_000_000,
        deadline_ns: 100_000_000,
        buffer: 64,
    });
    let mut events: Vec<(i64, usize)> = vec![];
    let minutes = 10i64;
    for (topic, hz) in [(0usize, 10i64), (1, 30), (2, 20), (3, 200)] {
        for k in 0..minutes * 60 * hz {
            // Deterministic jitter up to ±2 ms.
            let jitter = ((k * 7919 + topic as i64 * 104729) % 4001 - 2000) * 1000;
            events.push((k * 1_000_000_000 / hz + jitter + 1_000_000_000, topic));
        }
    }
    events.sort();
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("bounds");
    let (mut complete, mut partial) = (0u64, 0u64);
    for (i, (stamp, topic)) in events.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let out = sync.add(*topic, *stamp, i as u64);
        let dt = t0.elapsed().as_nanos() as u64;
        for set in &out {
            if set.partial {
                partial += 1;
            } else {
                complete += 1;
                hist.saturating_record(dt.max(1));
            }
        }
    }
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "deadline_sync_release_latency",
            "simulated_minutes": minutes, "messages": events.len(), "sets_complete": complete, "sets_partial": partial,
            "release_latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": hist.max() as f64 / 1e6},
            "target_p99_ms": 1.0
        })
    );
}

fn config(topics: usize, queue: usize, age: f64, max: i64, lb: Vec<i64>) -> Result<ApproximateTimeConfig, String> {
    if !(2..=9).contains(&topics) {
        return Err(format!("--topics must be 2..9, got {topics}"));
    }
    if queue == 0 {
        return Err("--queue-size must be > 0".into());
    }
    if age.is_nan() || age < 0.0 {
        return Err("--age-penalty must be >= 0".into());
    }
    if max < 0 || lb.iter().any(|b| *b < 0) {
        return Err("durations must be >= 0".into());
    }
    let lower_bounds_ns = match lb.len() {
        0 => vec![0; topics],
        n if n == topics => lb,
        n => return Err(format!("give all {topics} lower bounds or none, got {n}")),
    };
    Ok(ApproximateTimeConfig {
        topics,
        queue_size: queue,
        age_penalty: age,
        max_interval_ns: (max > 0).then_some(max),
        lower_bounds_ns,
    })
}

fn parse_msg(line: &str, topics: usize) -> Result<(usize, i64), String> {
    let mut it = line.split_whitespace();
    let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
        return Err(format!("expected 'topic_index stamp_ns', got '{line}'"));
    };
    let topic: usize = a.parse().map_err(|_| format!("bad topic index '{a}'"))?;
    let stamp: i64 = b.parse().map_err(|_| format!("bad stamp '{b}'"))?;
    if topic >= topics || stamp < 0 {
        return Err(format!("topic {topic} / stamp {stamp} out of range"));
    }
    Ok((topic, stamp))
}

fn emit(out: &mut impl Write, sets: Vec<Vec<(i64, ())>>) -> std::io::Result<()> {
    for set in sets {
        let line: Vec<String> = set.iter().map(|(t, _)| t.to_string()).collect();
        writeln!(out, "{}", line.join(" "))?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let io = |e: std::io::Error| e.to_string();
    if !cli.batch {
        let cfg = config(cli.topics, cli.queue_size, cli.age_penalty, cli.max_interval_ns, cli.lower_bounds)?;
        let mut sync = ApproximateTime::new(cfg);
        for line in stdin.lock().lines() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let (topic, stamp) = parse_msg(&line, cli.topics)?;
            emit(&mut out, sync.add(topic, stamp, ())).map_err(io)?;
        }
        return out.flush().map_err(io);
    }
    let mut lines = stdin.lock().lines();
    while let Some(header) = lines.next() {
        let header = header.map_err(io)?;
        let f: Vec<&str> = header.split_whitespace().collect();
        if f.len() < 5 || f[0] != "stream" {
            return Err(format!("expected a 'stream' header, got '{header}'"));
        }
        let num = |s: &str| s.parse::<i64>().map_err(|_| format!("bad number '{s}'"));
        let n = num(f[1])? as usize;
        let age: f64 = f[3].parse().map_err(|_| format!("bad age penalty '{}'", f[3]))?;
        let lb = f[5..].iter().map(|s| num(s)).collect::<Result<Vec<_>, _>>()?;
        let mut sync = ApproximateTime::new(config(n, num(f[2])? as usize, age, num(f[4])?, lb)?);
        for line in lines.by_ref() {
            let line = line.map_err(io)?;
            if line.trim() == "end" {
                break;
            }
            let (topic, stamp) = parse_msg(&line, n)?;
            emit(&mut out, sync.add(topic, stamp, ())).map_err(io)?;
        }
        writeln!(out, "end").map_err(io)?;
    }
    out.flush().map_err(io)
}

fn main() {
    let cli = Cli::parse();
    if cli.bench {
        bench();
        return;
    }
    if let Err(e) = run(cli) {
        eprintln!("fusion_sync: error: {e}");
        std::process::exit(1);
    }
}
