//! Detection scoring: average precision per class at an IoU threshold (PASCAL VOC
//! all-point interpolation), with "difficult" ground truth ignored, and recall at a score.
use crate::data::GtBox;
use crate::detector::CLASSES;
use fusion::detect::{iou, Detection2d};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ClassAp {
    pub class: &'static str,
    pub ap: f64,
    /// Scored ground-truth boxes (not difficult).
    pub gt: usize,
    pub detections: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub map: f64,
    pub iou: f32,
    pub frames: usize,
    pub per_class: Vec<ClassAp>,
}

/// Accumulates detections and ground truth over frames.
pub struct ApAccumulator {
    /// Per class: (score, is true positive) for every detection that was not ignored.
    hits: Vec<Vec<(f32, bool)>>,
    gt: Vec<usize>,
    frames: usize,
}

impl Default for ApAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl ApAccumulator {
    pub fn new() -> Self {
        Self { hits: vec![Vec::new(); CLASSES.len()], gt: vec![0; CLASSES.len()], frames: 0 }
    }

    /// One frame: greedy matching by descending score, as in VOC. A detection matching an
    /// already-matched box is a false positive; one whose best match is difficult is ignored.
    pub fn add(&mut self, detections: &[Detection2d], truth: &[GtBox], iou_threshold: f32) {
        self.frames += 1;
        for (c, label) in CLASSES.iter().enumerate() {
            let gts: Vec<&GtBox> = truth.iter().filter(|g| g.class == c).collect();
            self.gt[c] += gts.iter().filter(|g| !g.difficult).count();
            let mut dets: Vec<&Detection2d> = detections.iter().filter(|d| d.label == *label).collect();
            dets.sort_by(|a, b| b.score.total_cmp(&a.score));
            let mut used = vec![false; gts.len()];
            for d in dets {
                let best =
                    gts.iter().enumerate().map(|(i, g)| (i, iou(&d.bbox, &g.bbox))).max_by(|a, b| a.1.total_cmp(&b.1));
                match best {
                    Some((i, o)) if o >= iou_threshold => {
                        if gts[i].difficult {
                            continue;
                        }
                        let tp = !used[i];
                        used[i] = true;
                        self.hits[c].push((d.score, tp));
                    }
                    _ => self.hits[c].push((d.score, false)),
                }
            }
        }
    }

    pub fn score(&self, iou_threshold: f32) -> Score {
        let per_class: Vec<ClassAp> = CLASSES
            .iter()
            .enumerate()
            .map(|(c, label)| ClassAp {
                class: label.as_str(),
                ap: average_precision(&self.hits[c], self.gt[c]),
                gt: self.gt[c],
                detections: self.hits[c].len(),
            })
            .collect();
        let scored: Vec<&ClassAp> = per_class.iter().filter(|c| c.gt > 0).collect();
        let map = scored.iter().map(|c| c.ap).sum::<f64>() / scored.len().max(1) as f64;
        Score { map, iou: iou_threshold, frames: self.frames, per_class }
    }
}

/// All-point interpolated AP (area under the monotone precision envelope).
pub fn average_precision(hits: &[(f32, bool)], gt: usize) -> f64 {
    if gt == 0 {
        return 0.0;
    }
    let mut sorted = hits.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::with_capacity(sorted.len());
    for (_, hit) in sorted {
        if hit {
            tp += 1
        } else {
            fp += 1
        }
        curve.push((tp as f64 / gt as f64, tp as f64 / (tp + fp) as f64));
    }
    // Precision envelope from the right, then sum over recall steps.
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    let mut envelope = vec![0.0; curve.len()];
    let mut best: f64 = 0.0;
    for i in (0..curve.len()).rev() {
        best = best.max(curve[i].1);
        envelope[i] = best;
    }
    for (i, (r, _)) in curve.iter().enumerate() {
        if *r > prev_recall {
            ap += (r - prev_recall) * envelope[i];
            prev_recall = *r;
        }
    }
    ap
}

/// Per class, how often the detector names the class of an object it found: for every
/// scored ground-truth box, the highest-scoring detection of any class overlapping it by
/// IoU ≥ `iou_threshold`; `correct[c]` of `found[c]` carry the right label.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Classification {
    pub found: [usize; 3],
    pub correct: [usize; 3],
}

impl Classification {
    pub fn add(&mut self, detections: &[Detection2d], truth: &[GtBox], iou_threshold: f32) {
        for g in truth.iter().filter(|g| !g.difficult) {
            let best = detections
                .iter()
                .filter(|d| iou(&d.bbox, &g.bbox) >= iou_threshold)
                .max_by(|a, b| a.score.total_cmp(&b.score));
            if let Some(d) = best {
                self.found[g.class] += 1;
                self.correct[g.class] += (d.label == CLASSES[g.class]) as usize;
            }
        }
    }

    /// Accuracy per class (None where nothing of the class was found).
    pub fn accuracy(&self) -> [Option<f64>; 3] {
        std::array::from_fn(|c| (self.found[c] > 0).then(|| self.correct[c] as f64 / self.found[c] as f64))
    }
}

/// Fraction of scored ground-truth boxes matched (IoU ≥ threshold, same class) by a
/// detection.
pub fn recall(detections: &[Detection2d], truth: &[GtBox], iou_threshold: f32) -> (usize, usize) {
    let scored: Vec<&GtBox> = truth.iter().filter(|g| !g.difficult).collect();
    let found = scored
        .iter()
        .filter(|g| detections.iter().any(|d| d.label == CLASSES[g.class] && iou(&d.bbox, &g.bbox) >= iou_threshold))
        .count();
    (found, scored.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion::detect::Label;

    fn det(label: Label, score: f32, bbox: [f32; 4]) -> Detection2d {
        Detection2d { label, score, bbox }
    }

    #[test]
    fn ap_of_perfect_and_of_ranked_mistakes() {
        assert_eq!(average_precision(&[(0.9, true), (0.8, true)], 2), 1.0);
        // TP, FP, TP over 2 GT: recall 0.5 at precision 1, recall 1 at precision 2/3.
        let ap = average_precision(&[(0.9, true), (0.8, false), (0.7, true)], 2);
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-9, "{ap}");
        // Half the ground truth never found.
        assert_eq!(average_precision(&[(0.9, true)], 2), 0.5);
    }

    #[test]
    fn duplicates_are_false_positives_and_difficult_boxes_are_ignored() {
        let gt = vec![
            GtBox { class: 0, bbox: [10.0, 10.0, 20.0, 40.0], difficult: false },
            GtBox { class: 1, bbox: [100.0, 100.0, 104.0, 103.0], difficult: true },
        ];
        let mut acc = ApAccumulator::new();
        acc.add(
            &[
                det(Label::Person, 0.9, [10.0, 10.0, 20.0, 40.0]),
                det(Label::Person, 0.8, [10.0, 11.0, 20.0, 40.0]),
                det(Label::Vehicle, 0.7, [100.0, 100.0, 104.0, 103.0]),
            ],
            &gt,
            0.5,
        );
        let s = acc.score(0.5);
        assert_eq!(s.per_class[0].detections, 2);
        assert_eq!(s.per_class[0].ap, 1.0); // the duplicate ranks below the hit
        assert_eq!(s.per_class[1].gt, 0);
        assert_eq!(s.per_class[1].detections, 0); // matched a difficult box: ignored
        assert_eq!(s.map, 1.0); // classes without scored ground truth do not count
        assert_eq!(recall(&[det(Label::Vehicle, 0.9, [10.0, 10.0, 20.0, 40.0])], &gt, 0.5), (0, 1));
    }
}
