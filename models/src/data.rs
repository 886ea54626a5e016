//! Detector data from `fusion_sim`'s world: frames rendered by the same camera model that
//! writes the simulator's bags, labelled with each actor's visible 2D box.
//!
//! Seeds are partitioned so that evaluation never sees a training scene: training uses
//! [`TRAIN_SEEDS`], evaluation [`EVAL_SEEDS`], the end-to-end test [`TEST_SEEDS`].
use crate::detector::STRIDE;
use fusion::calib::Calibration;
use fusion::sim::{self, World};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::ops::Range;

pub const TRAIN_SEEDS: Range<u64> = 1_000_000..2_000_000;
pub const EVAL_SEEDS: Range<u64> = 9_000_000..9_100_000;
pub const TEST_SEEDS: Range<u64> = 5_000_000..5_100_000;

/// A ground-truth box is scored only when the camera sees enough of it: at least this
/// many visible pixels and this box height (full-resolution pixels). Smaller ones are
/// "difficult" (PASCAL VOC's term): a detection of one is neither a hit nor a false alarm.
pub const MIN_VISIBLE_PIXELS: u32 = 50;
pub const MIN_BOX_HEIGHT: f32 = 10.0;

#[derive(Debug, Clone, Serialize)]
pub struct GtBox {
    /// Index into `detector::CLASSES`.
    pub class: usize,
    /// x0, y0, x1, y1, exclusive, pixels.
    pub bbox: [f32; 4],
    pub difficult: bool,
}

/// One rendered camera frame with its labels.
#[derive(Clone)]
pub struct LabelledFrame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub boxes: Vec<GtBox>,
    /// Where it came from, for logs: scenario name and time.
    pub scene: String,
    pub t: f64,
}

fn class_index(c: sim::Class) -> usize {
    match c {
        sim::Class::Person => 0,
        sim::Class::Vehicle => 1,
        sim::Class::Obstacle => 2,
    }
}

/// Renders `scenario` at time `t` (camera noise from `seed`) and labels it.
pub fn render(scenario: &sim::Scenario, t: f64, seed: u64) -> LabelledFrame {
    let world = World::new(scenario, t + 0.5, Calibration::default());
    let mut rng = sim::rng(seed, 1);
    let frame = sim::render_camera(&world, t, &mut rng);
    let boxes = sim::truth(&world, t, Some(&frame))
        .into_iter()
        .filter(|a| !a.camera_invisible)
        .filter_map(|a| {
            let b = a.box2d?;
            let bbox = [b[0] as f32, b[1] as f32, b[2] as f32 + 1.0, b[3] as f32 + 1.0];
            let difficult = a.visible_pixels < MIN_VISIBLE_PIXELS || bbox[3] - bbox[1] < MIN_BOX_HEIGHT;
            Some(GtBox { class: class_index(a.class), bbox, difficult })
        })
        .collect();
    LabelledFrame {
        width: frame.width as usize,
        height: frame.height as usize,
        rgb: frame.rgb,
        boxes,
        scene: scenario.name.clone(),
        t,
    }
}

/// Frame `index` of a seed range: mostly random scenes, every fifth one a named scenario
/// (without its camera blackout window), at a time drawn from the seed.
pub fn scene_frame(seeds: &Range<u64>, index: u64) -> LabelledFrame {
    let seed = seeds.start + index;
    assert!(seed < seeds.end, "seed range exhausted");
    let mut r = sim::rng(seed, 23);
    if index % 5 == 4 {
        let names = &sim::SCENARIOS;
        let name = names[r.gen_range(0..names.len())];
        let scenario = sim::scenario(name).expect("named scenario");
        let mut t = r.gen_range(0.0..20.0);
        if let Some((a, b)) = scenario.faults.camera_blackout {
            if t >= a && t < b {
                t = b + 0.5;
            }
        }
        render(&scenario, t, seed)
    } else {
        let scenario = sim::random_scenario(seed);
        render(&scenario, r.gen_range(0.0..3.0), seed)
    }
}

/// A training sample at the network input size.
pub struct Sample {
    pub rgb: Vec<u8>,
    pub boxes: Vec<GtBox>,
}

/// A training view of a frame at `input` size: either the whole frame resampled (objects at
/// the input's scale) or an input-sized crop at full resolution (objects at the frame's
/// scale, so a larger `input_size` at run time sees sizes it was trained on), mirrored
/// half of the time, with an exposure change.
pub fn augment(frame: &LabelledFrame, input: [usize; 2], rng: &mut ChaCha8Rng) -> Sample {
    let [iw, ih] = input;
    let (mut rgb, mut boxes) = if rng.gen_bool(0.6) || frame.width < iw || frame.height < ih {
        let rgb = crate::detector::resample(&frame.rgb, frame.width, frame.height, iw, ih);
        let (sx, sy) = (iw as f32 / frame.width as f32, ih as f32 / frame.height as f32);
        let boxes: Vec<GtBox> = frame
            .boxes
            .iter()
            .map(|b| GtBox { bbox: [b.bbox[0] * sx, b.bbox[1] * sy, b.bbox[2] * sx, b.bbox[3] * sy], ..b.clone() })
            .collect();
        (rgb, boxes)
    } else {
        let x0 = rng.gen_range(0..=frame.width - iw);
        let y0 = rng.gen_range(0..=frame.height - ih);
        let mut rgb = Vec::with_capacity(iw * ih * 3);
        for y in y0..y0 + ih {
            rgb.extend_from_slice(&frame.rgb[(y * frame.width + x0) * 3..(y * frame.width + x0 + iw) * 3]);
        }
        let boxes = frame
            .boxes
            .iter()
            .filter_map(|b| {
                let c = [
                    (b.bbox[0] - x0 as f32).max(0.0),
                    (b.bbox[1] - y0 as f32).max(0.0),
                    (b.bbox[2] - x0 as f32).min(iw as f32),
                    (b.bbox[3] - y0 as f32).min(ih as f32),
                ];
                let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
                let kept = area(&c) / area(&b.bbox).max(1e-6);
                // Mostly outside the crop: not a label (too little of it is left to see).
                (kept > 0.0).then(|| GtBox { bbox: c, difficult: b.difficult || kept < 0.5, ..b.clone() })
            })
            .collect();
        (rgb, boxes)
    };
    if rng.gen_bool(0.5) {
        for row in rgb.chunks_exact_mut(iw * 3) {
            for x in 0..iw / 2 {
                for c in 0..3 {
                    row.swap(x * 3 + c, (iw - 1 - x) * 3 + c);
                }
            }
        }
        for b in boxes.iter_mut() {
            b.bbox = [iw as f32 - b.bbox[2], b.bbox[1], iw as f32 - b.bbox[0], b.bbox[3]];
        }
    }
    let gain: f32 = rng.gen_range(0.75..1.25);
    for v in rgb.iter_mut() {
        *v = (*v as f32 * gain).round().clamp(0.0, 255.0) as u8;
    }
    Sample { rgb, boxes }
}

/// CenterNet targets for a batch, at stride 4, channel-major:
/// `heat` [B, classes, h, w] Gaussian peaks (1 at each centre cell), `reg` [B, 4, h, w]
/// (offset x, offset y, ln w/4, ln h/4 at centre cells), `mask` [B, 4, h, w] (1 where `reg`
/// is a target), `weight` [B, classes, h, w] (0 over difficult boxes: no background loss
/// there), and the number of centres.
pub struct Targets {
    pub heat: Vec<f32>,
    pub reg: Vec<f32>,
    pub mask: Vec<f32>,
    pub weight: Vec<f32>,
    pub centres: usize,
}

pub fn targets(samples: &[Sample], input: [usize; 2], classes: usize) -> Targets {
    let (mw, mh) = (input[0] / STRIDE, input[1] / STRIDE);
    let plane = mw * mh;
    let n = samples.len();
    let mut t = Targets {
        heat: vec![0.0; n * classes * plane],
        reg: vec![0.0; n * 4 * plane],
        mask: vec![0.0; n * 4 * plane],
        weight: vec![1.0; n * classes * plane],
        centres: 0,
    };
    let s = STRIDE as f32;
    for (i, sample) in samples.iter().enumerate() {
        for b in &sample.boxes {
            let (w, h) = ((b.bbox[2] - b.bbox[0]) / s, (b.bbox[3] - b.bbox[1]) / s);
            if w <= 0.0 || h <= 0.0 {
                continue;
            }
            let (cx, cy) = ((b.bbox[0] + b.bbox[2]) / 2.0 / s, (b.bbox[1] + b.bbox[3]) / 2.0 / s);
            let (ix, iy) = ((cx.floor() as usize).min(mw - 1), (cy.floor() as usize).min(mh - 1));
            let heat = &mut t.heat[(i * classes + b.class) * plane..(i * classes + b.class + 1) * plane];
            if b.difficult {
                // Neither positive nor negative: zero weight over the box.
                let w8 = &mut t.weight[(i * classes + b.class) * plane..(i * classes + b.class + 1) * plane];
                let (x0, x1) = ((b.bbox[0] / s).floor() as usize, ((b.bbox[2] / s).ceil() as usize).min(mw));
                let (y0, y1) = ((b.bbox[1] / s).floor() as usize, ((b.bbox[3] / s).ceil() as usize).min(mh));
                for y in y0..y1 {
                    for x in x0..x1 {
                        w8[y * mw + x] = 0.0;
                    }
                }
                continue;
            }
            let (sx, sy) = ((w / 6.0).max(0.5), (h / 6.0).max(0.5));
            let (rx, ry) = ((3.0 * sx).ceil() as i64, (3.0 * sy).ceil() as i64);
            for y in (iy as i64 - ry).max(0)..=(iy as i64 + ry).min(mh as i64 - 1) {
                for x in (ix as i64 - rx).max(0)..=(ix as i64 + rx).min(mw as i64 - 1) {
                    let (dx, dy) = ((x - ix as i64) as f32, (y - iy as i64) as f32);
                    let g = (-(dx * dx) / (2.0 * sx * sx) - (dy * dy) / (2.0 * sy * sy)).exp();
                    let cell = &mut heat[y as usize * mw + x as usize];
                    *cell = cell.max(g);
                }
            }
            heat[iy * mw + ix] = 1.0;
            let values = [cx - ix as f32, cy - iy as f32, w.ln(), h.ln()];
            for (k, v) in values.into_iter().enumerate() {
                let at = (i * 4 + k) * plane + iy * mw + ix;
                t.reg[at] = v;
                t.mask[at] = 1.0;
            }
            t.centres += 1;
        }
    }
    t
}
