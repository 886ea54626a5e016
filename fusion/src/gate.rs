//! Event-driven perception: whether the camera detector runs on a set's frame.
//!
//! The detector is the costliest stage of a set (~12 ms of the 2-core budget at 320×240
//! against ~1 ms for the rest). Most frames add nothing to what the tracks already know: a
//! labelled object that LiDAR and radar keep tracking keeps its class (the votes live on the
//! track). `event_driven` runs the model only when the scene asks for it, and says why:
//!
//! - `object_entered_view`: a track is in the camera's view that was not on the previous frame;
//! - `object_moving`: a track in view has moved `camera.detector_moved_m` over the ground
//!   since the last run (its ground speed times the time since): a car at 10 m/s is looked
//!   at every frame, a walking person about every 0.7 s;
//! - `object_unanswered`: a track in view the camera missed at its last run, or one whose
//!   class votes are not settled yet (`camera.detector_settled_votes`). This keeps the
//!   detector on, frame after frame, while LiDAR and radar see something the camera misses,
//!   so `sensor_disagreement` is neither missed nor delayed, and a new object gets a few
//!   looks before it is carried on one;
//! - `camera_unexplained`: the last run found a box no LiDAR/radar object explains (the other
//!   half of sensor_disagreement), so the next frame runs too;
//! - `image_changed`: the frame's coarse luma differs from the last run's by more than
//!   `camera.detector_image_change` levels (what LiDAR and radar cannot see: a new object
//!   beyond their range, a camera knocked askew);
//! - `keep_alive`: `camera.detector_keep_alive_ms` passed since the last run (model
//!   monitoring and slow changes still get frames).
//!
//! `every_frame` (the default) runs it on every frame, as before. No ROS here.
use crate::{camera::Rgb8, StampNs};
use std::str::FromStr;

/// Which frames the camera detector runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetectorMode {
    #[default]
    EveryFrame,
    EventDriven,
}

impl FromStr for DetectorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "every_frame" => Ok(Self::EveryFrame),
            "event_driven" => Ok(Self::EventDriven),
            _ => Err(format!("unknown detector mode '{s}' (every_frame or event_driven)")),
        }
    }
}

impl DetectorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EveryFrame => "every_frame",
            Self::EventDriven => "event_driven",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateParams {
    pub mode: DetectorMode,
    /// The detector runs at least this often (event_driven).
    pub keep_alive_ns: i64,
    /// Mean absolute difference of the coarse luma grid (0–255 levels) that counts as a new
    /// scene (event_driven).
    pub image_change: f64,
    /// A track in view that moved this far over the ground (m) since the last run is looked
    /// at again (event_driven).
    pub moved_m: f64,
    /// A track is looked at every frame until the camera's own class votes for it
    /// (`Track::camera_votes`, confidence-weighted matches) add up to this: one early look at
    /// a distant object is not a label (event_driven).
    pub settled_votes: f32,
}

impl Default for GateParams {
    fn default() -> Self {
        Self {
            mode: DetectorMode::EveryFrame,
            keep_alive_ns: 500_000_000,
            image_change: 12.0,
            moved_m: 1.0,
            settled_votes: 2.0,
        }
    }
}

/// Why the detector ran on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunReason {
    EveryFrame,
    FirstFrame,
    ObjectEnteredView,
    ObjectMoving,
    ObjectUnanswered,
    CameraUnexplained,
    ImageChanged,
    KeepAlive,
}

impl RunReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EveryFrame => "every_frame",
            Self::FirstFrame => "first_frame",
            Self::ObjectEnteredView => "object_entered_view",
            Self::ObjectMoving => "object_moving",
            Self::ObjectUnanswered => "object_unanswered",
            Self::CameraUnexplained => "camera_unexplained",
            Self::ImageChanged => "image_changed",
            Self::KeepAlive => "keep_alive",
        }
    }
}

/// A track whose projection lies in the camera's image, as the gate sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackInView {
    pub id: u32,
    /// Speed over the ground (m/s; 0 when unknown), not relative to the moving ego.
    pub ground_speed: f64,
    /// Missed by the camera at its last run, or not labelled by it with settled votes yet.
    pub unanswered: bool,
}

/// Coarse luma grid the frames are compared on: cheap (one pixel sampled per 4×4 block of
/// each cell) and blind to sensor noise.
const GRID_W: usize = 32;
const GRID_H: usize = 24;

fn luma_grid(img: &Rgb8) -> Vec<f32> {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut grid = vec![0f32; GRID_W * GRID_H];
    if w == 0 || h == 0 || img.data.len() < w * h * 3 {
        return grid;
    }
    for (gy, row) in grid.chunks_mut(GRID_W).enumerate() {
        let (y0, y1) = (gy * h / GRID_H, ((gy + 1) * h / GRID_H).max(gy * h / GRID_H + 1));
        for (gx, cell) in row.iter_mut().enumerate() {
            let (x0, x1) = (gx * w / GRID_W, ((gx + 1) * w / GRID_W).max(gx * w / GRID_W + 1));
            let (mut sum, mut n) = (0f32, 0f32);
            for y in (y0..y1.min(h)).step_by(4) {
                for x in (x0..x1.min(w)).step_by(4) {
                    let p = &img.data[(y * w + x) * 3..(y * w + x) * 3 + 3];
                    sum += 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                    n += 1.0;
                }
            }
            *cell = if n > 0.0 { sum / n } else { 0.0 };
        }
    }
    grid
}

/// Decides, frame by frame, whether the detector runs (see the module's doc).
#[derive(Debug, Clone, Default)]
pub struct DetectorGate {
    pub params: GateParams,
    last_run: Option<StampNs>,
    /// Luma grid of the last frame the detector ran on.
    last_grid: Vec<f32>,
    /// Tracks in view on the previous frame.
    in_view_before: Vec<u32>,
}

impl DetectorGate {
    pub fn new(params: GateParams) -> Self {
        Self { params, ..Self::default() }
    }

    /// Whether the detector runs on this frame (`Some(why)`), or the tracks carry their
    /// labels over it (`None`). `camera_open`: the last run left a box nothing else
    /// explains. A frame becomes the reference for the next once the detector has actually
    /// run on it ([`DetectorGate::ran`]): a scheduler may still leave it out.
    pub fn decide(
        &mut self,
        stamp: StampNs,
        image: &Rgb8,
        in_view: &[TrackInView],
        camera_open: bool,
    ) -> Option<RunReason> {
        if self.params.mode == DetectorMode::EveryFrame {
            return Some(RunReason::EveryFrame);
        }
        let reason = match self.last_run {
            // A frame older than the last run (a time jump): start over.
            None => Some(RunReason::FirstFrame),
            Some(last) if stamp < last => Some(RunReason::FirstFrame),
            Some(last) => {
                if in_view.iter().any(|t| !self.in_view_before.contains(&t.id)) {
                    Some(RunReason::ObjectEnteredView)
                } else if in_view.iter().any(|t| t.unanswered) {
                    Some(RunReason::ObjectUnanswered)
                } else if camera_open {
                    Some(RunReason::CameraUnexplained)
                } else if in_view.iter().any(|t| t.ground_speed * (stamp - last) as f64 * 1e-9 >= self.params.moved_m) {
                    Some(RunReason::ObjectMoving)
                } else if mean_abs_diff(&luma_grid(image), &self.last_grid) > self.params.image_change {
                    Some(RunReason::ImageChanged)
                } else if stamp - last >= self.params.keep_alive_ns {
                    Some(RunReason::KeepAlive)
                } else {
                    None
                }
            }
        };
        self.in_view_before = in_view.iter().map(|t| t.id).collect();
        reason
    }

    /// The detector ran on this frame: later frames are compared with it.
    pub fn ran(&mut self, stamp: StampNs, image: &Rgb8) {
        self.last_run = Some(stamp);
        self.last_grid = luma_grid(image);
    }

    /// Forget the history (a time jump restarted the pipeline).
    pub fn reset(&mut self) {
        *self = Self::new(self.params.clone());
    }
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn frame(level: u8) -> Rgb8 {
        Rgb8 { width: 64, height: 48, data: vec![level; 64 * 48 * 3] }
    }

    fn gate() -> DetectorGate {
        DetectorGate::new(GateParams { mode: DetectorMode::EventDriven, ..GateParams::default() })
    }

    /// One frame as the pipeline handles it: ask, and when told to, run.
    trait Step {
        fn step(&mut self, stamp: StampNs, image: &Rgb8, in_view: &[TrackInView], open: bool) -> Option<RunReason>;
    }
    impl Step for DetectorGate {
        fn step(&mut self, stamp: StampNs, image: &Rgb8, in_view: &[TrackInView], open: bool) -> Option<RunReason> {
            let r = self.decide(stamp, image, in_view, open);
            if r.is_some() {
                self.ran(stamp, image);
            }
            r
        }
    }

    fn track(id: u32) -> TrackInView {
        TrackInView { id, ground_speed: 0.0, unanswered: false }
    }

    #[test]
    fn every_frame_mode_always_runs() {
        let mut g = DetectorGate::new(GateParams::default());
        for i in 0..5 {
            assert_eq!(g.step(i * 100 * MS, &frame(100), &[], false), Some(RunReason::EveryFrame));
        }
    }

    #[test]
    fn a_still_scene_runs_only_on_keep_alive() {
        let mut g = gate();
        let runs: Vec<_> = (0..20).map(|i| g.step(i * 100 * MS, &frame(100), &[track(1)], false)).collect();
        assert_eq!(runs[0], Some(RunReason::FirstFrame));
        let ran: Vec<usize> = runs.iter().enumerate().filter(|(_, r)| r.is_some()).map(|(i, _)| i).collect();
        // 500 ms keep-alive at 10 Hz: frames 0, 5, 10, 15.
        assert_eq!(ran, [0, 5, 10, 15]);
        assert!(runs[5..].iter().flatten().all(|r| *r == RunReason::KeepAlive));
    }

    #[test]
    fn each_cue_makes_it_run_on_that_frame() {
        let mut g = gate();
        g.step(0, &frame(100), &[track(1)], false);
        assert_eq!(g.step(100 * MS, &frame(100), &[track(1)], false), None);
        // A new track in view.
        assert_eq!(g.step(200 * MS, &frame(100), &[track(1), track(2)], false), Some(RunReason::ObjectEnteredView));
        assert_eq!(g.step(300 * MS, &frame(100), &[track(1), track(2)], false), None);
        // One that moves: looked at again once it has gone 1 m (at 5 m/s, every other frame).
        let moving = TrackInView { ground_speed: 5.0, ..track(2) };
        assert_eq!(g.step(400 * MS, &frame(100), &[track(1), moving], false), Some(RunReason::ObjectMoving));
        assert_eq!(g.step(500 * MS, &frame(100), &[track(1), moving], false), None);
        assert_eq!(g.step(600 * MS, &frame(100), &[track(1), moving], false), Some(RunReason::ObjectMoving));
        // One the camera has not answered for: every frame while it lasts.
        let open = TrackInView { unanswered: true, ..track(1) };
        assert_eq!(g.step(650 * MS, &frame(100), &[open], false), Some(RunReason::ObjectUnanswered));
        assert_eq!(g.step(700 * MS, &frame(100), &[open], false), Some(RunReason::ObjectUnanswered));
        // The camera saw what nothing else explains: the next frame runs too.
        assert_eq!(g.step(750 * MS, &frame(100), &[track(1)], true), Some(RunReason::CameraUnexplained));
        // The image changes (a camera going dark), nothing else does.
        assert_eq!(g.step(800 * MS, &frame(100), &[track(1)], false), None);
        assert_eq!(g.step(900 * MS, &frame(10), &[track(1)], false), Some(RunReason::ImageChanged));
        assert_eq!(g.step(1000 * MS, &frame(12), &[track(1)], false), None);
        // A track that left and came back is entering again.
        assert_eq!(g.step(1100 * MS, &frame(12), &[], false), None);
        assert_eq!(g.step(1200 * MS, &frame(12), &[], false), None);
        assert_eq!(g.step(1250 * MS, &frame(12), &[], false), None);
        assert_eq!(g.step(1300 * MS, &frame(12), &[track(1)], false), Some(RunReason::ObjectEnteredView));
        // Time going back (a looped bag) starts over.
        assert_eq!(g.step(50 * MS, &frame(12), &[track(1)], false), Some(RunReason::FirstFrame));
    }

    #[test]
    fn a_small_change_in_a_corner_is_not_a_new_scene_but_a_big_one_is() {
        let mut g = gate();
        let base = frame(100);
        g.step(0, &base, &[], false);
        let mut small = base.clone();
        for y in 0..8 {
            for x in 0..8 {
                let i = (y * 64 + x) * 3;
                small.data[i..i + 3].fill(255);
            }
        }
        assert_eq!(g.step(100 * MS, &small, &[], false), None);
        let mut big = base.clone();
        for px in big.data.chunks_mut(3).take(64 * 24) {
            px.fill(200);
        }
        assert_eq!(g.step(200 * MS, &big, &[], false), Some(RunReason::ImageChanged));
    }

    #[test]
    fn a_frame_the_detector_did_not_run_on_is_no_reference() {
        let mut g = gate();
        g.step(0, &frame(100), &[], false);
        // Asked to run on a new scene, but the scheduler left the detector out: the next
        // frame of that scene is still new.
        assert_eq!(g.decide(100 * MS, &frame(10), &[], false), Some(RunReason::ImageChanged));
        assert_eq!(g.step(200 * MS, &frame(10), &[], false), Some(RunReason::ImageChanged));
        assert_eq!(g.step(300 * MS, &frame(10), &[], false), None);
    }

    #[test]
    fn modes_parse_and_name_themselves() {
        for m in [DetectorMode::EveryFrame, DetectorMode::EventDriven] {
            assert_eq!(m.as_str().parse::<DetectorMode>(), Ok(m));
        }
        assert!("sometimes".parse::<DetectorMode>().is_err());
    }
}
