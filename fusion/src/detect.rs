//! Camera object detection behind a trait, so the fusion stage does not care what produces
//! the 2D boxes: the Burn detector (`models/`) implements it; tests may plug in a
//! non-ML source of their own. The shipped pipeline runs without one until a model is
//! configured (then camera-only rules such as `sensor_disagreement` stay silent).
use crate::camera::Rgb8;
use serde::Serialize;

/// Object classes the pipeline reports (FusedObject.label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Person,
    Vehicle,
    Obstacle,
    Unknown,
}

impl Label {
    pub const ALL: [Label; 4] = [Label::Person, Label::Vehicle, Label::Obstacle, Label::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Person => "person",
            Label::Vehicle => "vehicle",
            Label::Obstacle => "obstacle",
            Label::Unknown => "unknown",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One detection in image pixels of the frame given to the detector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection2d {
    pub label: Label,
    pub score: f32,
    /// x0, y0, x1, y1 (pixels, x1/y1 exclusive).
    pub bbox: [f32; 4],
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("detector input {got_w}x{got_h} does not match the calibrated camera {want_w}x{want_h}")]
    InputSize { got_w: u32, got_h: u32, want_w: u32, want_h: u32 },
    #[error("detector failed: {0}")]
    Failed(String),
}

/// A camera object detector: one rgb8 frame in, boxes out. `Send` so a pipeline can run
/// on a worker thread.
pub trait CameraDetector: Send {
    /// A short name for logs, diagnostics and event evidence.
    fn name(&self) -> &str;
    /// Detections in `image`, taken at `stamp` (a detector may use time, e.g. to track).
    fn detect(&mut self, stamp: crate::StampNs, image: &Rgb8) -> Result<Vec<Detection2d>, DetectError>;
    /// Detections in several frames at once (a set's cameras), in order: one batched
    /// forward where the backend gains by it. By default, one [`CameraDetector::detect`]
    /// after another.
    fn detect_batch(&mut self, frames: &[(crate::StampNs, &Rgb8)]) -> Vec<Result<Vec<Detection2d>, DetectError>> {
        frames.iter().map(|(stamp, image)| self.detect(*stamp, image)).collect()
    }
    /// Degradation under load: switch to (or back from) a smaller, cheaper input. Returns
    /// whether the detector has such a mode.
    fn set_reduced_input(&mut self, _reduced: bool) -> bool {
        false
    }
    /// The input statistics the model saw in training, for run-time monitoring
    /// (`fusion::monitor`); None when unknown (nothing is judged then).
    fn training_ranges(&self) -> Option<crate::monitor::ModelRanges> {
        None
    }
}

/// Intersection over union of two boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[20.0, 0.0, 30.0, 10.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
