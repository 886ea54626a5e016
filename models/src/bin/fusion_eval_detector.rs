//! fusion_eval_detector: mAP@0.5 (PASCAL VOC all-point AP, difficult boxes ignored) of the
//! detector, per-class AP and per-class classification accuracy, as JSON, on one of:
//! * held-out `fusion_sim` frames (seeds 9000000.., never used in training; default);
//! * `--coco DIR/annotations.json`: any folder of PNG/JPEG frames with COCO-format boxes
//!   (your own labelled camera frames, or `scripts/cross_renderer.py`'s independent scenes);
//! * `--colour-swap`: held-out scenes with every actor painted in another class's old
//!   colour (a detector that learned paint instead of shape fails here).
//!
//!     fusion_eval_detector [--weights models/weights/detector.json] [--frames 500]
//!                          [--coco FILE | --colour-swap] [--name NAME]
//!                          [--backend flex|wgpu] [--precision f32|f16] [--input 320x240] [--record]
use anyhow::{Context, Result};
use clap::Parser;
use models::runtime::{default_manifest, parse_size, Manifest};
use models::{data, train, CenterNet, DetectorOptions};
use std::path::PathBuf;

/// Seed of the photometric draws applied to the evaluation frames for the monitoring reference.
const MONITORING_SEED: u64 = 7;

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
    /// Score a COCO-format folder instead: its annotations.json (images beside it).
    #[arg(long, conflicts_with = "colour_swap")]
    coco: Option<PathBuf>,
    /// Score held-out scenes painted in swapped class colours instead.
    #[arg(long)]
    colour_swap: bool,
    /// Name of the set in the result and the manifest (default: sim, colour_swap, or the
    /// COCO folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Store the result in the manifest's `evaluation` section (the weights hash is unchanged).
    #[arg(long)]
    record: bool,
    /// Also write every frame's detections and ground truth as JSON lines to this file
    /// (`{"frame", "detections": [{label, score, bbox}], "truth": [{class, bbox, difficult}]}`),
    /// to look at what the detector does on your frames.
    #[arg(long)]
    detections: Option<PathBuf>,
    /// Also write the scored frames as a COCO folder (PNG + annotations.json) to this
    /// directory: to look at our rendered sets, or to score them with another tool.
    #[arg(long)]
    export_coco: Option<PathBuf>,
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
    let (set, source, frames) = match (&cli.coco, cli.colour_swap) {
        (Some(file), _) => {
            let frames = models::coco::load(file)?;
            let dir = file.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned());
            (dir.unwrap_or_else(|| "coco".into()), file.display().to_string(), frames)
        }
        (None, true) => {
            let seeds = data::EVAL_SEEDS;
            let frames: Vec<_> = (0..cli.frames as u64).map(|i| data::colour_swapped_frame(&seeds, i)).collect();
            ("colour_swap".to_string(), format!("seeds {}..{}", seeds.start, seeds.start + cli.frames as u64), frames)
        }
        (None, false) => {
            let frames = train::render_frames(&data::EVAL_SEEDS, cli.frames, &bar);
            let seeds = format!("seeds {}..{}", data::EVAL_SEEDS.start, data::EVAL_SEEDS.start + cli.frames as u64);
            ("sim".to_string(), seeds, frames)
        }
    };
    let set = cli.name.clone().unwrap_or(set);
    if let Some(dir) = &cli.export_coco {
        models::coco::save(&frames, dir)?;
    }
    let started = std::time::Instant::now();
    let (score, classification) = train::evaluate_with_classes(&detector, &frames, cli.iou);
    if let Some(path) = &cli.detections {
        write_detections(path, &detector, &frames).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let accuracy: std::collections::BTreeMap<&str, Option<f64>> =
        models::detector::CLASSES.iter().map(|c| c.as_str()).zip(classification.accuracy()).collect();
    let key = if set == "sim" {
        format!("{}/{}/{}", cli.backend, cli.precision, cli.input)
    } else {
        format!("{set}:{}/{}/{}", cli.backend, cli.precision, cli.input)
    };
    let result = serde_json::json!({
        "weights": manifest_path, "set": set, "config": key, "source": source,
        "map50": score.map, "per_class": score.per_class, "frames": score.frames,
        "class_accuracy": accuracy, "classification": classification,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if cli.record {
        let mut manifest = Manifest::read(&manifest_path)?;
        if set == "sim" {
            // The training distribution's input statistics: the reference run-time model
            // monitoring holds camera frames against. Training saw every frame through
            // data::photometric (exposure, white balance, blur, noise, JPEG-like compression),
            // so the reference holds each rendered frame and one such copy of it: a JPEG
            // camera or a slightly soft lens is inside what the detector learnt (from the
            // renders alone, a JPEG q90 camera read as out of range on sharpness).
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(MONITORING_SEED);
            let mut stats = Vec::with_capacity(frames.len() * 2);
            for f in &frames {
                let (width, height) = (f.width as u32, f.height as u32);
                stats.push(fusion::monitor::ImageStats::of(&fusion::camera::Rgb8 {
                    width,
                    height,
                    data: f.rgb.clone(),
                }));
                let mut seen = f.rgb.clone();
                data::photometric(&mut seen, f.width, f.height, &mut rng);
                stats.push(fusion::monitor::ImageStats::of(&fusion::camera::Rgb8 { width, height, data: seen }));
            }
            let (mut n, mut score) = (0usize, 0.0f64);
            for f in &frames {
                for d in detector.detect_rgb(&f.rgb, f.width, f.height).iter().filter(|d| d.score >= 0.3) {
                    n += 1;
                    score += d.score as f64;
                }
            }
            let per_frame = n as f64 / frames.len().max(1) as f64;
            manifest.monitoring =
                Some(fusion::monitor::ModelRanges::from_samples(&stats, per_frame, score / n.max(1) as f64));
        }
        if !manifest.evaluation.is_object() {
            manifest.evaluation = serde_json::json!({});
        }
        manifest.evaluation[key] = serde_json::json!({
            "map50": score.map, "frames": score.frames, "source": result["source"], "class_accuracy": accuracy,
            "per_class_ap50": score.per_class.iter().map(|c| (c.class, c.ap)).collect::<std::collections::BTreeMap<_, _>>(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        });
        std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)? + "\n")?;
    }
    Ok(())
}

fn write_detections(path: &std::path::Path, detector: &CenterNet, frames: &[data::LabelledFrame]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (i, f) in frames.iter().enumerate() {
        let dets: Vec<_> = detector
            .detect_rgb(&f.rgb, f.width, f.height)
            .iter()
            .map(|d| serde_json::json!({"label": d.label.as_str(), "score": d.score, "bbox": d.bbox}))
            .collect();
        let truth: Vec<_> = f
            .boxes
            .iter()
            .map(|g| {
                serde_json::json!({"class": models::detector::CLASSES[g.class].as_str(), "bbox": g.bbox, "difficult": g.difficult})
            })
            .collect();
        writeln!(out, "{}", serde_json::json!({"frame": i, "detections": dets, "truth": truth}))?;
    }
    out.flush()?;
    Ok(())
}
