//! Model monitoring: the camera detector checks itself at run time. Every camera frame's
//! input statistics (brightness, contrast, saturation, sharpness) are held against the
//! ranges seen on the detector's training distribution (from its manifest), and over a
//! window of frames the camera/LiDAR agreement rate (LiDAR+radar objects in view that the
//! camera also found) against a floor. A sustained departure raises one `model_degraded`
//! event with the evidence; the statistics are on `/diagnostics` (`model.*`).
//!
//! A blinded or frozen camera is `sensor_degraded` (anomaly rules); this is for a camera
//! that still delivers pictures the model was not trained on (night, fog, glare, a dirty
//! or defocused lens, another camera altogether), so a user learns when the camera model
//! is out of its depth.
use crate::{anomaly::Event, anomaly::EventKind, anomaly::KeyValue, camera::Rgb8, StampNs};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Per-frame statistics of the detector's input, on a 2-pixel grid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageStats {
    /// Mean luma (0–255).
    pub brightness: f64,
    /// Standard deviation of luma.
    pub contrast: f64,
    /// Mean of (max − min) / max over the channels (0–1).
    pub saturation: f64,
    /// Mean absolute Laplacian of luma (a defocused or fogged image has little).
    pub sharpness: f64,
}

pub const STAT_NAMES: [&str; 4] = ["brightness", "contrast", "saturation", "sharpness"];

impl ImageStats {
    pub fn of(img: &Rgb8) -> Self {
        let (w, h) = (img.width as usize, img.height as usize);
        if w < 6 || h < 6 || img.data.len() < w * h * 3 {
            return Self::default();
        }
        // Luma on the even-pixel grid, one grid row at a time: every sample and the four
        // neighbours of its Laplacian are grid points, so each luma is computed once, not
        // five times (this runs on the fusion thread after the detector, on the set's
        // critical path). Same expressions, same order: the same bits as per-sample luma.
        let luma = |p: &[u8]| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
        let luma_row = |y: usize, out: &mut Vec<f64>| {
            out.clear();
            out.extend(img.data[y * w * 3..(y + 1) * w * 3].chunks_exact(6).map(luma));
            // An odd width leaves its last pixel (even x) out of chunks of two pixels.
            if w % 2 == 1 {
                out.push(luma(&img.data[(y * w + w - 1) * 3..(y * w + w) * 3]));
            }
        };
        let (mut above, mut row, mut below) = (Vec::new(), Vec::new(), Vec::new());
        luma_row(0, &mut above);
        luma_row(2, &mut row);
        let (mut n, mut sum, mut sum2, mut sat, mut lap) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for y in (2..h - 2).step_by(2) {
            luma_row(y + 2, &mut below);
            for x in (2..w - 2).step_by(2) {
                let i = (y * w + x) * 3;
                let px = &img.data[i..i + 3];
                let (mx, mn) = (*px.iter().max().unwrap_or(&0) as f64, *px.iter().min().unwrap_or(&0) as f64);
                let g = x / 2;
                let l = row[g];
                n += 1.0;
                sum += l;
                sum2 += l * l;
                sat += if mx > 0.0 { (mx - mn) / mx } else { 0.0 };
                lap += (4.0 * l - row[g - 1] - row[g + 1] - above[g] - below[g]).abs();
            }
            std::mem::swap(&mut above, &mut row);
            std::mem::swap(&mut row, &mut below);
        }
        let mean = sum / n;
        Self {
            brightness: mean,
            contrast: (sum2 / n - mean * mean).max(0.0).sqrt(),
            saturation: sat / n,
            sharpness: lap / n,
        }
    }

    fn values(&self) -> [f64; 4] {
        [self.brightness, self.contrast, self.saturation, self.sharpness]
    }
}

/// What the detector saw in training: per input statistic a range over training-
/// distribution frames (the detector's manifest, `monitoring`; see [`Self::from_samples`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelRanges {
    pub brightness: [f64; 2],
    pub contrast: [f64; 2],
    pub saturation: [f64; 2],
    pub sharpness: [f64; 2],
    /// Mean per-frame detections and mean score on those frames (reported, not judged:
    /// scenes differ too much in how many objects they hold).
    pub detections_per_frame: f64,
    pub mean_score: f64,
}

impl ModelRanges {
    fn ranges(&self) -> [[f64; 2]; 4] {
        [self.brightness, self.contrast, self.saturation, self.sharpness]
    }

    /// Ranges from per-frame statistics: p0.5 × 0.75 to p99.5 × 1.25 of each. A scene's
    /// look holds for all its frames, so a scene at the tail of the training distribution
    /// must not read as out of it: only frames clearly beyond what training saw count.
    pub fn from_samples(stats: &[ImageStats], detections_per_frame: f64, mean_score: f64) -> Self {
        let range = |k: usize| {
            let mut v: Vec<f64> = stats.iter().map(|s| s.values()[k]).collect();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            if v.is_empty() {
                [0.0, f64::INFINITY]
            } else {
                [at(0.005) * 0.75, at(0.995) * 1.25]
            }
        };
        Self {
            brightness: range(0),
            contrast: range(1),
            saturation: range(2),
            sharpness: range(3),
            detections_per_frame,
            mean_score,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorParams {
    /// Camera frames the judgement looks back over.
    pub window_frames: usize,
    /// model_degraded when at least this share of the window's frames has an input
    /// statistic outside the training range...
    pub out_of_range_share: f64,
    /// ...or the camera found fewer than this share of the LiDAR+radar objects in its view
    /// (with at least `min_checks` such objects in the window).
    pub min_agreement: f64,
    pub min_checks: usize,
}

impl Default for MonitorParams {
    fn default() -> Self {
        Self { window_frames: 30, out_of_range_share: 0.8, min_agreement: 0.5, min_checks: 20 }
    }
}

struct FrameRecord {
    stats: ImageStats,
    out_of_range: Option<usize>,
    detections: usize,
    score_sum: f64,
    checks: usize,
    agreed: usize,
}

pub struct ModelMonitor {
    pub params: MonitorParams,
    reference: Option<ModelRanges>,
    window: VecDeque<FrameRecord>,
    active: bool,
    onset: Option<StampNs>,
    pub events: u64,
    /// The cameras whose frames the detector runs on (one model serves them all, one window
    /// judges it), named by its events.
    pub cameras: Vec<&'static str>,
}

impl ModelMonitor {
    pub fn new(params: MonitorParams, reference: Option<ModelRanges>) -> Self {
        let cameras = vec![crate::Sensor::Camera.as_str()];
        Self { params, reference, window: VecDeque::new(), active: false, onset: None, events: 0, cameras }
    }

    /// One camera frame the detector ran on: its input, the scores of its detections, and
    /// how many LiDAR+radar objects in view it was checked against / found. Returns a
    /// `model_degraded` event (event_id 0: the anomaly detector numbers it) when the
    /// departure has become sustained.
    pub fn on_frame(
        &mut self,
        stamp: StampNs,
        img: &Rgb8,
        scores: &[f32],
        checks: usize,
        agreed: usize,
    ) -> Option<Event> {
        let stats = ImageStats::of(img);
        let out_of_range = self
            .reference
            .and_then(|r| stats.values().iter().zip(r.ranges()).position(|(v, [lo, hi])| *v < lo || *v > hi));
        self.window.push_back(FrameRecord {
            stats,
            out_of_range,
            detections: scores.len(),
            score_sum: scores.iter().map(|s| *s as f64).sum(),
            checks,
            agreed,
        });
        while self.window.len() > self.params.window_frames.max(1) {
            self.window.pop_front();
        }
        let full = self.window.len() >= self.params.window_frames.max(1);
        let out_share = self.out_share();
        let (checked, found) = self.agreement_counts();
        let agreement = (checked > 0).then(|| found as f64 / checked as f64);
        let low_agreement =
            checked >= self.params.min_checks && agreement.is_some_and(|a| a < self.params.min_agreement);
        let departed =
            full && self.reference.is_some() && (out_share >= self.params.out_of_range_share || low_agreement);
        if !departed {
            if out_share < self.params.out_of_range_share / 4.0 && !low_agreement {
                self.active = false;
                self.onset = None;
            }
            return None;
        }
        self.onset.get_or_insert(stamp);
        if self.active {
            return None;
        }
        self.active = true;
        self.events += 1;
        let (rule, measured, threshold) = if out_share >= self.params.out_of_range_share {
            ("input_outside_training_range", out_share, self.params.out_of_range_share)
        } else {
            ("camera_lidar_agreement_low", agreement.unwrap_or(0.0), self.params.min_agreement)
        };
        let mut evidence = self.key_values();
        evidence.retain(|kv| kv.key != "state");
        Some(Event {
            event_id: 0,
            stamp_ns: stamp,
            kind: EventKind::ModelDegraded,
            severity: crate::anomaly::WARN,
            rule,
            measured_value: measured,
            threshold,
            sensors: self.cameras.clone(),
            track_ids: vec![],
            zone: String::new(),
            position: [0.0; 3],
            onset_ns: self.onset.unwrap_or(stamp),
            evidence,
        })
    }

    fn out_share(&self) -> f64 {
        let n = self.window.len().max(1) as f64;
        self.window.iter().filter(|f| f.out_of_range.is_some()).count() as f64 / n
    }

    fn agreement_counts(&self) -> (usize, usize) {
        self.window.iter().fold((0, 0), |(c, a), f| (c + f.checks, a + f.agreed))
    }

    /// The window's statistics, the training ranges and the verdict, as /diagnostics
    /// key-values (`model.` is prefixed by the caller).
    pub fn key_values(&self) -> Vec<KeyValue> {
        let kv = |key: &str, value: String| KeyValue { key: key.into(), value };
        let mut out = vec![];
        let n = self.window.len();
        let state = match (&self.reference, n, self.active) {
            (None, _, _) => "no_reference",
            (_, 0, _) => "no_frames",
            (_, _, true) => "degraded",
            _ => "in_range",
        };
        out.push(kv("state", state.into()));
        if n == 0 {
            return out;
        }
        for (k, name) in STAT_NAMES.iter().enumerate() {
            let mean = self.window.iter().map(|f| f.stats.values()[k]).sum::<f64>() / n as f64;
            out.push(kv(name, format!("{mean:.3}")));
            if let Some(r) = &self.reference {
                let [lo, hi] = r.ranges()[k];
                out.push(kv(&format!("{name}_training_range"), format!("{lo:.3}..{hi:.3}")));
            }
        }
        let dets: usize = self.window.iter().map(|f| f.detections).sum();
        let score: f64 = self.window.iter().map(|f| f.score_sum).sum();
        out.push(kv("detections_per_frame", format!("{:.2}", dets as f64 / n as f64)));
        out.push(kv("mean_score", format!("{:.3}", if dets > 0 { score / dets as f64 } else { 0.0 })));
        out.push(kv("frames_out_of_range", format!("{:.2}", self.out_share())));
        if let Some(first) = self.window.iter().rev().find_map(|f| f.out_of_range) {
            out.push(kv("last_out_of_range_stat", STAT_NAMES[first].into()));
        }
        let (checked, found) = self.agreement_counts();
        if checked > 0 {
            out.push(kv("camera_lidar_agreement", format!("{:.2}", found as f64 / checked as f64)));
        }
        out.push(kv("camera_lidar_checks", checked.to_string()));
        out.push(kv("window_frames", n.to_string()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics as first written: luma computed per sample and per neighbour.
    fn stats_per_sample(img: &Rgb8) -> ImageStats {
        let (w, h) = (img.width as usize, img.height as usize);
        let luma = |x: usize, y: usize| {
            let i = (y * w + x) * 3;
            0.299 * img.data[i] as f64 + 0.587 * img.data[i + 1] as f64 + 0.114 * img.data[i + 2] as f64
        };
        let (mut n, mut sum, mut sum2, mut sat, mut lap) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for y in (2..h - 2).step_by(2) {
            for x in (2..w - 2).step_by(2) {
                let i = (y * w + x) * 3;
                let px = &img.data[i..i + 3];
                let (mx, mn) = (*px.iter().max().unwrap() as f64, *px.iter().min().unwrap() as f64);
                let l = luma(x, y);
                n += 1.0;
                sum += l;
                sum2 += l * l;
                sat += if mx > 0.0 { (mx - mn) / mx } else { 0.0 };
                lap += (4.0 * l - luma(x - 2, y) - luma(x + 2, y) - luma(x, y - 2) - luma(x, y + 2)).abs();
            }
        }
        let mean = sum / n;
        ImageStats {
            brightness: mean,
            contrast: (sum2 / n - mean * mean).max(0.0).sqrt(),
            saturation: sat / n,
            sharpness: lap / n,
        }
    }

    #[test]
    fn grid_row_statistics_equal_per_sample_luma_bit_for_bit() {
        // Noise (every luma differs), odd and even sizes, the smallest size measured.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for (w, h) in [(640, 480), (641, 479), (7, 6), (6, 7), (33, 20)] {
            let data = (0..w * h * 3)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            let img = Rgb8 { width: w as u32, height: h as u32, data };
            let (fast, reference) = (ImageStats::of(&img), stats_per_sample(&img));
            for (a, b) in fast.values().iter().zip(reference.values()) {
                assert_eq!(a.to_bits(), b.to_bits(), "{w}x{h}: {fast:?} vs {reference:?}");
            }
        }
    }

    fn textured(level: u8, amplitude: u8, w: u32, h: u32) -> Rgb8 {
        let data = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                let v = level.saturating_add(if (x / 3 + y / 3) % 2 == 0 { amplitude } else { 0 });
                [v, v / 2, v / 3]
            })
            .collect();
        Rgb8 { width: w, height: h, data }
    }

    #[test]
    fn statistics_of_a_flat_and_a_textured_image() {
        let flat = ImageStats::of(&Rgb8 { width: 32, height: 32, data: vec![100; 32 * 32 * 3] });
        assert!((flat.brightness - 100.0).abs() < 1e-9 && flat.contrast < 1e-9 && flat.sharpness < 1e-9);
        assert_eq!(flat.saturation, 0.0);
        let t = ImageStats::of(&textured(60, 80, 64, 48));
        assert!(t.contrast > 20.0 && t.sharpness > 10.0 && t.saturation > 0.5, "{t:?}");
    }

    #[test]
    fn a_sustained_departure_raises_one_model_degraded_event_and_clears() {
        let normal: Vec<ImageStats> = (0..50).map(|k| ImageStats::of(&textured(60 + k as u8, 80, 64, 48))).collect();
        let reference = ModelRanges::from_samples(&normal, 3.0, 0.7);
        let mut m = ModelMonitor::new(MonitorParams::default(), Some(reference));
        // In range: nothing, whatever happens to agreement with few checks.
        for k in 0..40 {
            assert!(m.on_frame(k, &textured(80, 80, 64, 48), &[0.8], 1, 1).is_none());
        }
        assert_eq!(m.key_values()[0].value, "in_range");
        // Fog: low contrast and sharpness. The window fills with it: one event.
        let fog = textured(150, 6, 64, 48);
        let events: Vec<Event> = (40..100).filter_map(|k| m.on_frame(k, &fog, &[], 0, 0)).collect();
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(
            (e.kind, e.rule, e.sensors.clone()),
            (EventKind::ModelDegraded, "input_outside_training_range", vec!["camera"])
        );
        assert!(e.evidence.iter().any(|kv| kv.key == "contrast_training_range"), "{:?}", e.evidence);
        assert_eq!(m.key_values()[0].value, "degraded");
        // Back to normal frames: the state clears and a new departure may fire again.
        for k in 100..140 {
            assert!(m.on_frame(k, &textured(80, 80, 64, 48), &[0.8], 1, 1).is_none());
        }
        assert_eq!(m.key_values()[0].value, "in_range");
        // Pictures in range, but the camera finds few of the objects LiDAR and radar see.
        let low: Vec<Event> = (140..200).filter_map(|k| m.on_frame(k, &textured(80, 80, 64, 48), &[], 2, 0)).collect();
        assert_eq!(low.iter().map(|e| e.rule).collect::<Vec<_>>(), vec!["camera_lidar_agreement_low"]);
        // Without a reference nothing is judged.
        let mut blind = ModelMonitor::new(MonitorParams::default(), None);
        assert!((0..60).all(|k| blind.on_frame(k, &fog, &[], 2, 0).is_none()));
        assert_eq!(blind.key_values()[0].value, "no_reference");
    }
}
