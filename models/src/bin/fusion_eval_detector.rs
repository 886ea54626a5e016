//! fusion_eval_detector: mAP@0.5 (PASCAL VOC all-point AP, difficult boxes ignored) of the
//! detector on held-out `fusion_sim` frames (seeds 9000000.., never used in training),
//! per-class AP printed, as JSON.
//!
//!     fusion_eval_detector [--weights models/weights/detector.json] [--frames 500]
//!                          [--backend flex|wgpu] [--precision f32|f16] [--input 320x240] [--record]
use anyhow::{Context, Result};
use clap::Parser;
use models::runtime::{default_manifest, parse_size, Manifest};
use models::{data, train, CenterNet, DetectorOptions};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Score the camera detector (mAP@0.5) on held-out fusion_sim frames")]
struct Cli {
    /// Weights manifest (detector.json); the weights file it names is verified by sha256.
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    frames: usize,
    #[arg(long, default_value = "flex")]
    backend: String,
    #[arg(long, default_value = "f32")]
    precision: String,
    #[arg(long, default_value = "320x240")]
    input: String,
    #[arg(long, default_value_t = 0.5)]
    iou: f32,
    /// Store the result in the manifest's `evaluation` section (the weights hash is unchanged).
    #[arg(long)]
    record: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let manifest_path = cli.weights.clone().unwrap_or_else(default_manifest);
    let options = DetectorOptions {
        backend: cli.backend.parse()?,
        precision: cli.precision.parse()?,
        input_size: parse_size(&cli.input).context("--input")?,
        score_threshold: 0.05,
        ..DetectorOptions::default()
    };
    let detector = CenterNet::load(&manifest_path, options)?;
    let bar = indicatif::ProgressBar::hidden();
    let frames = train::render_frames(&data::EVAL_SEEDS, cli.frames, &bar);
    let started = std::time::Instant::now();
    let score = train::evaluate(&detector, &frames, cli.iou);
    let key = format!("{}/{}/{}", cli.backend, cli.precision, cli.input);
    let result = serde_json::json!({
        "weights": manifest_path, "config": key, "seeds": format!("{}..{}", data::EVAL_SEEDS.start, data::EVAL_SEEDS.start + cli.frames as u64),
        "map50": score.map, "per_class": score.per_class, "frames": score.frames,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if cli.record {
        let mut manifest = Manifest::read(&manifest_path)?;
        if !manifest.evaluation.is_object() {
            manifest.evaluation = serde_json::json!({});
        }
        manifest.evaluation[key] = serde_json::json!({
            "map50": score.map, "frames": score.frames, "seeds": result["seeds"],
            "per_class_ap50": score.per_class.iter().map(|c| (c.class, c.ap)).collect::<std::collections::BTreeMap<_, _>>(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        });
        std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)? + "\n")?;
    }
    Ok(())
}
