//! Detector data from `fusion_sim`'s world: frames rendered by the same camera model that
//! writes the simulator's bags, labelled with each actor's visible 2D box.
//!
//! Seeds are partitioned so that evaluation never sees a training scene: training uses
//! [`TRAIN_SEEDS`], evaluation [`EVAL_SEEDS`], the end-to-end test [`TEST_SEEDS`].
use crate::detector::STRIDE;
use fusion::calib::Calibration;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sensor_sim::{self as sim, World};
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

/// Renders `scenario` at time `t` (camera noise from `seed`) and labels it, with the
/// calibration the bags use.
pub fn render(scenario: &sim::Scenario, t: f64, seed: u64) -> LabelledFrame {
    render_with(scenario, t, seed, Calibration::default())
}

/// The default calibration with the camera's intrinsics (focal ±4 %, principal point
/// ±10 px) and mounting (±6 cm, ±1.5° about each axis) jittered: no real camera is the
/// nominal one. The labels come from the render, so they stay exact.
pub fn jittered_calibration(r: &mut ChaCha8Rng) -> Calibration {
    let mut calib = Calibration::default();
    let cam = calib.sensors.get_mut("camera").expect("default camera");
    let mut k = cam.k.expect("default intrinsics");
    let f = r.gen_range(0.96..1.04);
    k[0] *= f * r.gen_range(0.995..1.005);
    k[4] *= f;
    k[2] += r.gen_range(-10.0..10.0);
    k[5] += r.gen_range(-10.0..10.0);
    cam.k = Some(k);
    for v in cam.translation.iter_mut() {
        *v += r.gen_range(-0.06..0.06);
    }
    let mut angle = || r.gen_range(-1.5f64..1.5).to_radians();
    let wobble = nalgebra::UnitQuaternion::from_euler_angles(angle(), angle(), angle());
    let q = cam.to_base().rotation * wobble;
    cam.rotation_xyzw = [q.i, q.j, q.k, q.w];
    calib
}

/// Renders `scenario` at `t` through `calib`'s camera and labels it.
pub fn render_with(scenario: &sim::Scenario, t: f64, seed: u64, calib: Calibration) -> LabelledFrame {
    let world = World::new(scenario, t + 0.5, calib);
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
/// (its world varied by the seed, outside its camera blackout window), at a time drawn
/// from the seed, through a jittered camera calibration; half of them among unlabelled
/// surroundings (road paint, sidewalks, buildings, walls, poles, trees:
/// [`sim::random_surroundings`]).
pub fn scene_frame(seeds: &Range<u64>, index: u64) -> LabelledFrame {
    let seed = seeds.start + index;
    assert!(seed < seeds.end, "seed range exhausted");
    let mut r = sim::rng(seed, 23);
    let calib = jittered_calibration(&mut sim::rng(seed, 29));
    // Half the frames among surroundings, half on the plain ground of the fusion_sim
    // scenarios (whose bags the pipeline is tested on): trained on surroundings alone, the
    // network lost vehicles on plain ground that it had found before.
    let surroundings = sim::rng(seed, 37).gen_bool(0.5);
    let dress = |look: &mut sim::SceneLook| {
        if surroundings {
            sim::random_surroundings(look, &mut sim::rng(seed, 31));
        }
    };
    if index % 5 == 4 {
        let names = &sim::SCENARIOS;
        let name = names[r.gen_range(0..names.len())];
        let mut scenario = sim::scenario_seeded(name, seed).expect("named scenario");
        dress(&mut scenario.look);
        let mut t = r.gen_range(0.0..20.0);
        if let Some((a, b)) = scenario.faults.camera_blackout {
            if t >= a && t < b {
                t = b + 0.5;
            }
        }
        render_with(&scenario, t, seed, calib)
    } else {
        let mut scenario = sim::random_scenario(seed);
        dress(&mut scenario.look);
        render_with(&scenario, r.gen_range(0.0..3.0), seed, calib)
    }
}

/// The paint each class had before domain randomisation (person red, vehicle blue,
/// obstacle orange): a detector that learned paint instead of shape is caught by
/// [`colour_swapped_frame`].
pub const OLD_CLASS_PAINT: [[f64; 3]; 3] = [[200.0, 60.0, 50.0], [40.0, 70.0, 190.0], [230.0, 150.0, 20.0]];

/// Frame `index` of a seed range with every actor painted, flat, in the old colour of
/// *another* class (person ← vehicle blue, vehicle ← obstacle orange, obstacle ← person
/// red), under the old sky and ground: only the shapes tell the classes apart.
pub fn colour_swapped_frame(seeds: &Range<u64>, index: u64) -> LabelledFrame {
    let seed = seeds.start + index;
    assert!(seed < seeds.end, "seed range exhausted");
    let mut scenario = sim::random_scenario(seed);
    scenario.look = sim::SceneLook::default();
    for a in scenario.actors.iter_mut() {
        let c = class_index(a.class);
        a.look = sim::Appearance::solid(OLD_CLASS_PAINT[(c + 1) % 3]);
    }
    let t = sim::rng(seed, 23).gen_range(0.0..3.0);
    render(&scenario, t, seed)
}

/// A training sample at the network input size.
pub struct Sample {
    pub rgb: Vec<u8>,
    pub boxes: Vec<GtBox>,
}

/// A training view of a frame at `input` size: either the whole frame resampled (objects at
/// the input's scale) or an input-sized crop at full resolution (objects at the frame's
/// scale, so a larger `input_size` at run time sees sizes it was trained on), mirrored
/// half of the time, then a camera's photometric faults ([`photometric`]).
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
    photometric(&mut rgb, iw, ih, rng);
    Sample { rgb, boxes }
}

/// What a real camera does to an image, each drawn at random: exposure and white-balance
/// gains, defocus / motion blur, sensor noise, and JPEG-like compression (8×8 block DCT of
/// the luma with a quantized spectrum, chroma at half resolution).
pub fn photometric(rgb: &mut [u8], w: usize, h: usize, rng: &mut ChaCha8Rng) {
    let gain: f32 = rng.gen_range(0.7..1.3);
    let balance: [f32; 3] = [rng.gen_range(0.85..1.15), rng.gen_range(0.9..1.1), rng.gen_range(0.85..1.15)];
    let mut img: Vec<f32> = rgb.iter().enumerate().map(|(i, &v)| v as f32 * gain * balance[i % 3]).collect();
    if rng.gen_bool(0.35) {
        // Box blur, horizontal (motion) or both directions (defocus), radius 1–2 px.
        let radius = rng.gen_range(1..=2);
        let both = rng.gen_bool(0.6);
        box_blur(&mut img, w, h, radius, true);
        if both {
            box_blur(&mut img, w, h, radius, false);
        }
    }
    if rng.gen_bool(0.5) {
        let sigma: f32 = rng.gen_range(1.0..6.0);
        let normal = rand_distr::Normal::new(0.0f32, sigma).expect("sigma > 0");
        for v in img.iter_mut() {
            *v += rand_distr::Distribution::sample(&normal, rng);
        }
    }
    if rng.gen_bool(0.4) {
        jpeg_like(&mut img, w, h, rng.gen_range(2.0..10.0));
    }
    for (o, v) in rgb.iter_mut().zip(&img) {
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
}

fn box_blur(img: &mut [f32], w: usize, h: usize, radius: usize, horizontal: bool) {
    let src = img.to_vec();
    let r = radius as i64;
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let (mut sum, mut n) = (0.0, 0.0);
                for d in -r..=r {
                    let (xx, yy) = if horizontal { (x as i64 + d, y as i64) } else { (x as i64, y as i64 + d) };
                    if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                        sum += src[(yy as usize * w + xx as usize) * 3 + c];
                        n += 1.0;
                    }
                }
                img[(y * w + x) * 3 + c] = sum / n;
            }
        }
    }
}

/// JPEG's visible artefacts: luma in 8×8 blocks through a DCT whose coefficients are
/// rounded to steps of `quality_step` × the JPEG luma table / 16 (blocking, ringing),
/// chroma averaged over 2×2 pixels (colour bleeding).
fn jpeg_like(img: &mut [f32], w: usize, h: usize, quality_step: f32) {
    const Q: [f32; 64] = [
        16., 11., 10., 16., 24., 40., 51., 61., 12., 12., 14., 19., 26., 58., 60., 55., 14., 13., 16., 24., 40., 57.,
        69., 56., 14., 17., 22., 29., 51., 87., 80., 62., 18., 22., 37., 56., 68., 109., 103., 77., 24., 35., 55., 64.,
        81., 104., 113., 92., 49., 64., 78., 87., 103., 121., 120., 101., 72., 92., 95., 98., 112., 100., 103., 99.,
    ];
    let mut basis = [[0f32; 8]; 8];
    for (k, row) in basis.iter_mut().enumerate() {
        for (n, v) in row.iter_mut().enumerate() {
            let a = if k == 0 { (1.0f32 / 8.0).sqrt() } else { (2.0f32 / 8.0).sqrt() };
            *v = a * ((std::f32::consts::PI * (2 * n + 1) as f32 * k as f32) / 16.0).cos();
        }
    }
    let n = w * h;
    let (mut y, mut cb, mut cr) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    for i in 0..n {
        let (r, g, b) = (img[i * 3], img[i * 3 + 1], img[i * 3 + 2]);
        y[i] = 0.299 * r + 0.587 * g + 0.114 * b;
        cb[i] = -0.1687 * r - 0.3313 * g + 0.5 * b;
        cr[i] = 0.5 * r - 0.4187 * g - 0.0813 * b;
    }
    for by in (0..h - h % 8).step_by(8) {
        for bx in (0..w - w % 8).step_by(8) {
            let mut block = [[0f32; 8]; 8];
            for (j, row) in block.iter_mut().enumerate() {
                for (i, v) in row.iter_mut().enumerate() {
                    *v = y[(by + j) * w + bx + i] - 128.0;
                }
            }
            // Forward DCT (rows then columns), quantize, inverse.
            let mut coef = [[0f32; 8]; 8];
            for u in 0..8 {
                for v in 0..8 {
                    let mut s = 0.0;
                    for j in 0..8 {
                        for i in 0..8 {
                            s += basis[u][j] * basis[v][i] * block[j][i];
                        }
                    }
                    let q = Q[u * 8 + v] * quality_step / 16.0;
                    coef[u][v] = (s / q).round() * q;
                }
            }
            for j in 0..8 {
                for i in 0..8 {
                    let mut s = 0.0;
                    for u in 0..8 {
                        for v in 0..8 {
                            s += basis[u][j] * basis[v][i] * coef[u][v];
                        }
                    }
                    y[(by + j) * w + bx + i] = s + 128.0;
                }
            }
        }
    }
    for py in (0..h - 1).step_by(2) {
        for px in (0..w - 1).step_by(2) {
            let idx = [py * w + px, py * w + px + 1, (py + 1) * w + px, (py + 1) * w + px + 1];
            let (mb, mr) =
                (idx.iter().map(|&i| cb[i]).sum::<f32>() / 4.0, idx.iter().map(|&i| cr[i]).sum::<f32>() / 4.0);
            for i in idx {
                cb[i] = mb;
                cr[i] = mr;
            }
        }
    }
    for i in 0..n {
        img[i * 3] = y[i] + 1.402 * cr[i];
        img[i * 3 + 1] = y[i] - 0.344_14 * cb[i] - 0.714_14 * cr[i];
        img[i * 3 + 2] = y[i] + 1.772 * cb[i];
    }
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
