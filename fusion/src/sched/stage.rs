//! Stages of a set's work, the executor's clock, per-stage execution-time statistics and
//! the admission test built on them.
use crate::{pipeline::StageTimes, StampNs};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{atomic::Ordering, Arc};

/// Stages of a set's work, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Preprocess,
    Detector,
    /// The detector at its reduced input (a degradation rung): timed apart.
    DetectorReduced,
    Clustering,
    Radar,
    Association,
    Tracking,
    Rules,
}

pub const STAGES: usize = 8;

impl Stage {
    pub const ALL: [Stage; STAGES] = [
        Stage::Preprocess,
        Stage::Detector,
        Stage::DetectorReduced,
        Stage::Clustering,
        Stage::Radar,
        Stage::Association,
        Stage::Tracking,
        Stage::Rules,
    ];
    /// The stages after perception, run on the fusion thread in stamp order.
    pub const FUSE: [Stage; 3] = [Stage::Association, Stage::Tracking, Stage::Rules];

    /// The stage's name in `/diagnostics` (`stage.<name>.p99_ms`), traces and
    /// `fusion_replay`'s timing.json: the one place stage names are written.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Preprocess => "preprocess",
            Stage::Detector => "detector",
            Stage::DetectorReduced => "detector_reduced",
            Stage::Clustering => "clustering",
            Stage::Radar => "radar",
            Stage::Association => "association",
            Stage::Tracking => "tracking",
            Stage::Rules => "rules",
        }
    }
}

/// Where a stage runs in the deadline scheduler: the stage graph as data. Perception
/// stages of a set run in parallel on the worker threads (each queue earliest deadline
/// first); the fusion stages run after all of them, on the fusion thread, in stamp order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageThread {
    /// The fusion thread: preprocessing on arrival, then association → tracking → rules.
    Fusion,
    /// The inference thread (the GPU's submitting thread on wgpu): the camera detector.
    Inference,
    /// The CPU worker(s): LiDAR clustering and radar.
    Cpu,
}

impl Stage {
    pub fn thread(self) -> StageThread {
        match self {
            Stage::Preprocess | Stage::Association | Stage::Tracking | Stage::Rules => StageThread::Fusion,
            Stage::Detector | Stage::DetectorReduced => StageThread::Inference,
            Stage::Clustering | Stage::Radar => StageThread::Cpu,
        }
    }
}

/// A set's measured stage times by stage (the detector's at whichever input size ran).
pub fn stage_times(t: &StageTimes) -> [(Stage, u64); 6] {
    [
        (Stage::Detector, t.camera_us),
        (Stage::Clustering, t.lidar_us),
        (Stage::Radar, t.radar_us),
        (Stage::Association, t.associate_us),
        (Stage::Tracking, t.track_us),
        (Stage::Rules, t.rules_us),
    ]
}

/// The time deadlines are measured on (ns, the stamps' time base: ROS time in a node, sim
/// time under `use_sim_time`, a manual clock in tests).
pub type Clock = Arc<dyn Fn() -> StampNs + Send + Sync>;

/// A clock that moves only when told to: deterministic tests.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    pub fn set(&self, t: StampNs) {
        self.0.store(t, Ordering::SeqCst)
    }
    pub fn advance(&self, d: i64) {
        self.0.fetch_add(d, Ordering::SeqCst);
    }
    pub fn now(&self) -> StampNs {
        self.0.load(Ordering::SeqCst)
    }
    pub fn clock(&self) -> Clock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

pub(crate) fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

// ---------------------------------------------------------------------------------------
// Execution-time statistics and admission

/// Per-stage execution times (µs) in HDR histograms over a sliding window (two halves of
/// `window` samples each, so the estimate follows a change of load or of degradation
/// level within a few hundred sets and memory stays fixed). Until a stage has
/// `min_samples` samples its prediction is the larger of its prior and its worst sample.
#[derive(Debug, Clone)]
pub struct ExecStats {
    /// The newer half of each stage's window.
    current: Vec<Histogram<u64>>,
    /// The whole window (the older half + `current`): what predictions read.
    window_hist: Vec<Histogram<u64>>,
    /// Each stage's prediction (ns), refreshed when its samples change: admission asks
    /// for several per set, each of which would otherwise scan a histogram.
    predicted_ns: [i64; STAGES],
    window: u64,
    min_samples: u64,
    prior_us: [u64; STAGES],
}

impl ExecStats {
    pub fn new(prior_us: [u64; STAGES], window: u64, min_samples: u64) -> Self {
        let histograms = || (0..STAGES).map(|_| micros_histogram()).collect::<Vec<_>>();
        Self {
            current: histograms(),
            window_hist: histograms(),
            predicted_ns: prior_us.map(|us| us as i64 * 1000),
            window: window.max(1),
            min_samples,
            prior_us,
        }
    }

    pub fn record(&mut self, stage: Stage, us: u64) {
        let i = stage as usize;
        if self.current[i].len() >= self.window {
            // The older half leaves the window; the newer one becomes the older.
            self.window_hist[i].clone_from(&self.current[i]);
            self.current[i].reset();
        }
        self.current[i].record(us.max(1)).ok();
        self.window_hist[i].record(us.max(1)).ok();
        self.refresh(i);
    }

    /// Forgets a stage's history (its load changed: the next samples decide).
    pub fn reset(&mut self, stage: Stage) {
        let i = stage as usize;
        self.current[i].reset();
        self.window_hist[i].reset();
        self.refresh(i);
    }

    fn refresh(&mut self, i: usize) {
        let h = &self.window_hist[i];
        let us = if h.len() >= self.min_samples && !h.is_empty() {
            h.value_at_quantile(0.99)
        } else {
            self.prior_us[i].max(if h.is_empty() { 0 } else { h.max() })
        };
        self.predicted_ns[i] = us as i64 * 1000;
    }

    pub fn samples(&self, stage: Stage) -> u64 {
        self.window_hist[stage as usize].len()
    }

    /// Predicted execution time of a stage: its p99 over the window (ns).
    pub fn predict_ns(&self, stage: Stage) -> i64 {
        self.predicted_ns[stage as usize]
    }

    pub fn predict_all_ns(&self, stages: &[Stage]) -> i64 {
        stages.iter().map(|s| self.predict_ns(*s)).sum()
    }
}

/// Why a set was not started (or not finished).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shed {
    /// Already past its hard deadline when the stage came up.
    PastDeadline(Stage),
    /// The p99 of this stage and the ones after it would take it past its hard deadline.
    PredictedMiss(Stage),
}

impl Shed {
    /// The counter name: `shed.past_deadline.detector`, `shed.predicted_miss.clustering`, ...
    pub fn reason(&self) -> String {
        match self {
            Shed::PastDeadline(s) => format!("shed.past_deadline.{}", s.name()),
            Shed::PredictedMiss(s) => format!("shed.predicted_miss.{}", s.name()),
        }
    }
}

/// Admission: may `stage` start at `now`, when `then_ns` (predicted) of work follows it
/// before the set can be published, given its hard deadline?
pub fn admit(now: StampNs, hard_deadline: StampNs, stage: Stage, stage_ns: i64, then_ns: i64) -> Result<(), Shed> {
    if now > hard_deadline {
        Err(Shed::PastDeadline(stage))
    } else if now + stage_ns + then_ns > hard_deadline {
        Err(Shed::PredictedMiss(stage))
    } else {
        Ok(())
    }
}
