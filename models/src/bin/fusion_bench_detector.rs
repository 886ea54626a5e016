//! fusion_bench_detector: per-frame detector latency (frame resample + network + decode,
//! from a 640×480 rgb8 frame to boxes) at each input size on each backend, as JSON.
//!
//!     fusion_bench_detector [--backends flex,wgpu] [--sizes 320x240,640x480] [--frames 100] [--record]
//!     fusion_bench_detector --cameras 3      # per set of 3 camera frames: batched vs one by one
//!
//! `--record` writes the figures into the manifest's `latency` (the model card shows them).
use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use models::runtime::{default_manifest, parse_size, Manifest};
use models::{data, CenterNet, DetectorOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Detector latency per frame (p50/p99) by backend and input size, JSON")]
struct Cli {
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value = "flex,wgpu")]
    backends: String,
    #[arg(long, default_value = "320x240,640x480")]
    sizes: String,
    #[arg(long, default_value = "f32")]
    precision: String,
    #[arg(long, default_value_t = 100)]
    frames: usize,
    /// Untimed frames first (allocators, kernel compilation and autotuning on wgpu).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Write the figures into the manifest's `latency` (rows keyed backend/input; one camera
    /// only).
    #[arg(long)]
    record: bool,
    /// Frames per set (a robot's cameras): with more than one, each set is timed both as one
    /// batched forward and as one forward per frame (`mode`: batched | sequential), and the
    /// figures are per set.
    #[arg(long, default_value_t = 1)]
    cameras: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let manifest = cli.weights.clone().unwrap_or_else(default_manifest);
    let frames: Vec<_> = (0..8).map(|i| data::scene_frame(&data::TEST_SEEDS, 50_000 + i)).collect();
    let mut results = Vec::new();
    for backend in cli.backends.split(',').filter(|s| !s.is_empty()) {
        for size in cli.sizes.split(',').filter(|s| !s.is_empty()) {
            let options = DetectorOptions {
                backend: backend.parse()?,
                precision: cli.precision.parse()?,
                input_size: parse_size(size).context("--sizes")?,
                ..DetectorOptions::default()
            };
            let detector = match CenterNet::load(&manifest, options) {
                Ok(d) => d,
                Err(e) => {
                    results.push(serde_json::json!({"backend": backend, "input": size, "error": e.to_string()}));
                    continue;
                }
            };
            let cameras = cli.cameras.max(1);
            let modes: &[bool] = if cameras > 1 { &[true, false] } else { &[false] };
            for &batched in modes {
                let mut hist = Histogram::<u64>::new(3)?;
                for i in 0..cli.warmup + cli.frames {
                    let set: Vec<(&[u8], usize, usize)> = (0..cameras)
                        .map(|c| &frames[(i * cameras + c) % frames.len()])
                        .map(|f| (f.rgb.as_slice(), f.width, f.height))
                        .collect();
                    let t = Instant::now();
                    let dets = if batched {
                        detector.detect_rgb_batch(&set)
                    } else {
                        set.iter().map(|(rgb, w, h)| detector.detect_rgb(rgb, *w, *h)).collect()
                    };
                    let us = t.elapsed().as_micros() as u64;
                    std::hint::black_box(dets);
                    if i >= cli.warmup {
                        hist.record(us.max(1))?;
                    }
                }
                let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
                let mut row = serde_json::json!({
                    "backend": backend, "precision": cli.precision, "input": size, "frame": "640x480 rgb8",
                    "frames": cli.frames, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0,
                    "mean_ms": hist.mean() / 1000.0,
                });
                if cameras > 1 {
                    row["cameras"] = cameras.into();
                    row["mode"] = if batched { "batched" } else { "sequential" }.into();
                    row["per"] = "set".into();
                }
                results.push(row);
            }
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "benchmark": "detector_latency", "cpu": cpu, "threads": threads, "results": results,
        }))?
    );
    if cli.record && cli.cameras <= 1 {
        let mut m = Manifest::read(&manifest)?;
        let rows: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .filter(|r| r.get("p50_ms").is_some())
            .map(|r| {
                let key = format!(
                    "{}/{}/{}",
                    r["backend"].as_str().unwrap_or(""),
                    cli.precision,
                    r["input"].as_str().unwrap_or("")
                );
                (key, serde_json::json!({"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "frames": r["frames"]}))
            })
            .collect();
        m.latency = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "machine": format!("{}, {threads} threads", cpu.as_deref().unwrap_or("unknown CPU")),
            "rows": rows,
        });
        std::fs::write(&manifest, serde_json::to_string_pretty(&m)? + "\n")?;
    }
    Ok(())
}
