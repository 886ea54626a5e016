//! Deadline-driven execution of the fusion stage (no ROS).
//!
//! ```text
//! post(msg) ─▶ latest-wins mailboxes (camera, lidar, radar, imu; bounded, superseded counted)
//!                 │
//!   fusion thread: preprocess ─▶ Pipeline::push_jobs (sync) ─▶ admission ─┬─▶ inference thread (EDF): detector
//!                 ▲                                                        └─▶ CPU worker(s) (EDF): clustering, radar
//!                 └── completions ◀────────────────────────────────────────────┘
//!   fusion thread, in stamp order: association → tracking → rules ─▶ hard-deadline check ─▶ Sink::publish
//! ```
//!
//! Every set carries its deadlines (newest member's stamp + target / hard). Work is taken
//! earliest deadline first; a stage is not started when the measured p99 of it and of the
//! stages after it says the set would finish past its hard deadline: the set is *shed*
//! (counted with the stage that would have missed). Measured slack drives a degradation
//! ladder with hysteresis. The detector runs on one thread of its own (the GPU's submitting
//! thread on wgpu) with its own deadline accounting. [`Executor::spawn_fifo`] is the plain
//! FIFO baseline the benchmark compares against.
use crate::{
    anomaly::{Event, Sensor, StreamState},
    cloud::{LidarPoint, RadarTarget},
    detect::CameraDetector,
    pipeline::{lidar_stage, radar_stage, Input, Perception, Pipeline, PipelineParams, SetJob, SetOutput, StageTimes},
    StampNs,
};
use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::{
    collections::{BTreeMap, BinaryHeap, VecDeque},
    io::Write as _,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, Once,
    },
    time::{Duration, Instant},
};

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

fn micros_histogram() -> Histogram<u64> {
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

// ---------------------------------------------------------------------------------------
// Queues

struct EdfEntry<T> {
    deadline: StampNs,
    seq: u64,
    item: T,
}

impl<T> PartialEq for EdfEntry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.deadline, self.seq) == (o.deadline, o.seq)
    }
}
impl<T> Eq for EdfEntry<T> {}
impl<T> PartialOrd for EdfEntry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for EdfEntry<T> {
    // Reversed: BinaryHeap is a max-heap, the earliest deadline (then the first queued) wins.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.deadline, o.seq).cmp(&(self.deadline, self.seq))
    }
}

/// A bounded earliest-deadline-first queue. Ties keep queue order. When full, the entry
/// with the earliest deadline, the stalest, is evicted and returned: a fresh set must not
/// wait behind one that is about to miss anyway.
pub struct EdfQueue<T> {
    heap: BinaryHeap<EdfEntry<T>>,
    seq: u64,
    capacity: usize,
}

impl<T> EdfQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self { heap: BinaryHeap::new(), seq: 0, capacity: capacity.max(1) }
    }

    pub fn push(&mut self, deadline: StampNs, item: T) -> Option<(StampNs, T)> {
        self.seq += 1;
        self.heap.push(EdfEntry { deadline, seq: self.seq, item });
        (self.heap.len() > self.capacity).then(|| self.pop().expect("non-empty"))
    }

    pub fn pop(&mut self) -> Option<(StampNs, T)> {
        self.heap.pop().map(|e| (e.deadline, e.item))
    }

    pub fn peek_deadline(&self) -> Option<StampNs> {
        self.heap.peek().map(|e| e.deadline)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A bounded latest-wins mailbox on a crossbeam channel: posting to a full mailbox evicts
/// the oldest message (counted as superseded), so a stale frame never delays a fresh one
/// and the mailbox never grows past its depth.
pub struct Mailbox<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    superseded: AtomicU64,
}

impl<T> Mailbox<T> {
    pub fn new(depth: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(depth.max(1));
        Self { tx, rx, superseded: AtomicU64::new(0) }
    }

    /// Posts a message; returns the one it superseded, if any (the last one, should other
    /// threads be posting at the same time).
    pub fn post(&self, item: T) -> Option<T> {
        let mut last = None;
        self.post_evicting(item, |old| last = Some(old));
        last
    }

    /// Posts a message, handing every message it superseded to `evicted`.
    pub fn post_evicting(&self, mut item: T, mut evicted: impl FnMut(T)) {
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    if let Ok(old) = self.rx.try_recv() {
                        self.superseded.fetch_add(1, Ordering::Relaxed);
                        evicted(old);
                    }
                }
                Err(TrySendError::Disconnected(_)) => unreachable!("the mailbox holds its own receiver"),
            }
        }
    }

    pub fn receiver(&self) -> &Receiver<T> {
        &self.rx
    }

    pub fn try_take(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(usize::MAX)
    }

    pub fn superseded(&self) -> u64 {
        self.superseded.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------
// Degradation ladder

/// One rung of the degradation ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    /// Run the detector on every other camera set only.
    SkipDetectorAlternate,
    /// Halve the detector's input size.
    ReduceDetectorInput,
    /// Leave radar out of the association.
    SkipRadarAssociation,
    /// Cluster every other LiDAR return on coarser voxels.
    CoarseLidarClustering,
}

impl Rung {
    pub fn name(self) -> &'static str {
        match self {
            Rung::SkipDetectorAlternate => "skip_detector_alternate",
            Rung::ReduceDetectorInput => "reduce_detector_input",
            Rung::SkipRadarAssociation => "skip_radar_association",
            Rung::CoarseLidarClustering => "coarse_lidar_clustering",
        }
    }
}

impl FromStr for Rung {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Rung::SkipDetectorAlternate,
            Rung::ReduceDetectorInput,
            Rung::SkipRadarAssociation,
            Rung::CoarseLidarClustering,
        ]
        .into_iter()
        .find(|r| r.name() == s.trim())
        .ok_or_else(|| {
            format!(
                "'{s}' is not a degradation rung (skip_detector_alternate, reduce_detector_input, \
                     skip_radar_association, coarse_lidar_clustering)"
            )
        })
    }
}

/// Parses a comma-separated ladder ("" = no degradation).
pub fn parse_ladder(s: &str) -> Result<Vec<Rung>, String> {
    s.split(',').filter(|r| !r.trim().is_empty()).map(str::parse).collect()
}

#[derive(Debug, Clone)]
pub struct DegradeConfig {
    /// Rungs in the order they engage.
    pub ladder: Vec<Rung>,
    /// Decisions are taken once per window of this many finished (published or shed) sets.
    pub window: u32,
    /// Step down when the window's worst slack to the target deadline was below this (ns),
    /// or any set of it was shed.
    pub engage_slack_ns: i64,
    /// Step back up when the worst slack stayed above this (ns) for `recover_windows`
    /// windows in a row: engage < recover is the hysteresis.
    pub recover_slack_ns: i64,
    pub recover_windows: u32,
}

impl Default for DegradeConfig {
    fn default() -> Self {
        Self {
            ladder: vec![
                Rung::SkipDetectorAlternate,
                Rung::ReduceDetectorInput,
                Rung::SkipRadarAssociation,
                Rung::CoarseLidarClustering,
            ],
            window: 10,
            engage_slack_ns: 5_000_000,
            recover_slack_ns: 20_000_000,
            recover_windows: 3,
        }
    }
}

/// The degradation level (0 = full quality; n = the first n rungs in force), moved by the
/// measured slack of finished sets.
#[derive(Debug, Clone)]
pub struct Degradation {
    cfg: DegradeConfig,
    level: usize,
    seen: u32,
    worst_slack: i64,
    shed: bool,
    good_windows: u32,
    pub max_level: usize,
    pub changes: u64,
}

impl Degradation {
    pub fn new(cfg: DegradeConfig) -> Self {
        Self { cfg, level: 0, seen: 0, worst_slack: i64::MAX, shed: false, good_windows: 0, max_level: 0, changes: 0 }
    }

    pub fn level(&self) -> usize {
        self.level
    }

    /// The rungs in force.
    pub fn rungs(&self) -> &[Rung] {
        &self.cfg.ladder[..self.level]
    }

    pub fn active(&self, rung: Rung) -> bool {
        self.rungs().contains(&rung)
    }

    /// "nominal" or the last rung in force.
    pub fn describe(&self) -> &'static str {
        self.rungs().last().map_or("nominal", |r| r.name())
    }

    /// A set was published with this slack to its target deadline (ns, negative = late).
    /// Returns the new level when it changed.
    pub fn observe(&mut self, slack_ns: i64) -> Option<usize> {
        self.worst_slack = self.worst_slack.min(slack_ns);
        self.finish_one()
    }

    /// A set was shed.
    pub fn observe_shed(&mut self) -> Option<usize> {
        self.shed = true;
        self.finish_one()
    }

    fn finish_one(&mut self) -> Option<usize> {
        self.seen += 1;
        if self.seen < self.cfg.window.max(1) {
            return None;
        }
        let before = self.level;
        if self.shed || self.worst_slack < self.cfg.engage_slack_ns {
            self.good_windows = 0;
            self.level = (self.level + 1).min(self.cfg.ladder.len());
        } else if self.worst_slack > self.cfg.recover_slack_ns {
            self.good_windows += 1;
            if self.good_windows >= self.cfg.recover_windows && self.level > 0 {
                self.level -= 1;
                self.good_windows = 0;
            }
        } else {
            self.good_windows = 0;
        }
        self.seen = 0;
        self.worst_slack = i64::MAX;
        self.shed = false;
        self.max_level = self.max_level.max(self.level);
        (self.level != before).then(|| {
            self.changes += 1;
            self.level
        })
    }
}

// ---------------------------------------------------------------------------------------
// OS real-time scheduling

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Other,
    Fifo,
    RoundRobin,
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "other" | "" => Ok(Policy::Other),
            "fifo" => Ok(Policy::Fifo),
            "rr" => Ok(Policy::RoundRobin),
            _ => Err(format!("'{s}' is not a scheduling policy (other, fifo, rr)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RtConfig {
    pub policy: Policy,
    /// 1..99 for fifo/rr. The fusion thread gets this, the inference and CPU workers one less
    /// (a set's sequential end must not wait behind the next set's perception).
    pub priority: i32,
    /// CPUs the scheduler's threads may run on (empty = all).
    pub cpus: Vec<usize>,
    /// Lock the process's memory (no page faults on the deadline path).
    pub mlockall: bool,
}

impl Default for RtConfig {
    fn default() -> Self {
        Self { policy: Policy::Other, priority: 10, cpus: vec![], mlockall: false }
    }
}

/// Parses "0,1,3" or "" into CPU indices.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().parse::<usize>().map_err(|_| format!("'{c}' is not a CPU index")))
        .collect()
}

/// What applying the real-time settings to a thread did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtOutcome {
    /// Normal scheduling was asked for.
    NotRequested,
    Applied,
    /// Not permitted (no CAP_SYS_NICE / RLIMIT_RTPRIO, CPUs not in the allowed set, ...):
    /// the thread runs with normal scheduling.
    Fallback(String),
}

static RT_WARNING: Once = Once::new();

/// Applies policy, priority (`cfg.priority - lower`) and affinity to the calling thread.
/// Never fails: what could not be applied is returned as a fallback, and the first
/// fallback in the process logs one warning.
pub fn apply_rt(cfg: &RtConfig, lower: i32) -> RtOutcome {
    let mut problems = vec![];
    if !cfg.cpus.is_empty() {
        // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &cfg.cpus {
                if c < libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(c, &mut set);
                }
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                problems.push(format!("CPU affinity {:?}: {}", cfg.cpus, std::io::Error::last_os_error()));
            }
        }
    }
    let policy = match cfg.policy {
        Policy::Other => None,
        Policy::Fifo => Some((libc::SCHED_FIFO, "SCHED_FIFO")),
        Policy::RoundRobin => Some((libc::SCHED_RR, "SCHED_RR")),
    };
    if let Some((p, name)) = policy {
        let prio = (cfg.priority - lower).clamp(1, 99);
        let param = libc::sched_param { sched_priority: prio };
        // SAFETY: pid 0 is the calling thread; param is a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, p, &param) } != 0 {
            problems.push(format!("{name} priority {prio}: {}", std::io::Error::last_os_error()));
        }
    }
    if problems.is_empty() {
        return if policy.is_some() || !cfg.cpus.is_empty() { RtOutcome::Applied } else { RtOutcome::NotRequested };
    }
    let why = problems.join("; ");
    RT_WARNING.call_once(|| {
        tracing::warn!(
            "real-time scheduling not permitted ({why}): running with normal scheduling. Grant CAP_SYS_NICE \
             (or an RLIMIT_RTPRIO, e.g. `ulimit -r 99`) for SCHED_FIFO/RR"
        )
    });
    RtOutcome::Fallback(why)
}

/// Builds rayon's global pool, on which the detector's data-parallel kernels run (burn-flex,
/// gemm), with every thread on normal scheduling (SCHED_OTHER), before any scheduler thread
/// turns real-time.
///
/// Why: a pool thread inherits the policy of the thread that creates it, and rayon creates
/// its pool lazily, at the first parallel kernel: in the inference thread (SCHED_FIFO). The
/// whole network then ran at real-time priority on every core, and a long inference (the
/// first after a respawn) left no CPU for anything else: the ingest nodes and the drivers
/// feeding them paused for up to 2 s (a CI run, `test_each_node_killed_with_sigkill_...`).
/// Real-time priority orders our own stages; the kernels share the cores with the rest of
/// the robot, and the degradation ladder answers a slow frame.
pub fn build_compute_pool() {
    // Fails only when the pool exists already (a kernel ran before, e.g. a detector's
    // self-check at load): its threads are moved to normal scheduling below either way.
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("fusion-compute-{i}"))
        .start_handler(|_| normal_scheduling())
        .build_global();
    rayon::broadcast(|_| normal_scheduling());
}

/// The calling thread to SCHED_OTHER (a no-op when it is already).
fn normal_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param. Lowering one's own
    // policy needs no privilege, so this cannot fail with a valid policy.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

/// mlockall(MCL_CURRENT | MCL_FUTURE); a fallback (with its warning) when not permitted.
pub fn lock_memory() -> RtOutcome {
    // SAFETY: plain syscall.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
        RtOutcome::Applied
    } else {
        let why = format!("mlockall: {}", std::io::Error::last_os_error());
        tracing::warn!("{why}: memory not locked (needs CAP_IPC_LOCK or RLIMIT_MEMLOCK)");
        RtOutcome::Fallback(why)
    }
}

// ---------------------------------------------------------------------------------------
// Trace export

/// One stage run (Chrome trace "complete" event), kept lean: JSON is built at write time.
#[derive(Debug, Clone)]
struct TraceEvent {
    name: &'static str,
    tid: u32,
    ts_us: f64,
    dur_us: f64,
    set: StampNs,
    outcome: String,
}

/// Chrome-trace / Perfetto JSON of stage runs: a ring of the newest `capacity` events (a
/// long-running node keeps the last minutes, not an ever-growing log; the overwritten ones
/// are counted). Open the file at ui.perfetto.dev or chrome://tracing.
pub struct TraceRecorder {
    origin: Instant,
    events: Mutex<VecDeque<TraceEvent>>,
    capacity: usize,
    dropped: AtomicU64,
}

/// Trace rows: one per scheduler thread.
pub const TID_FUSION: u32 = 1;
pub const TID_INFERENCE: u32 = 2;
pub const TID_WORKER: u32 = 3;

impl TraceRecorder {
    pub fn new(capacity: usize) -> Self {
        Self {
            origin: Instant::now(),
            events: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn span(&self, name: &'static str, tid: u32, start: Instant, end: Instant, set: StampNs, outcome: &str) {
        let us = |t: Instant| t.saturating_duration_since(self.origin).as_nanos() as f64 / 1000.0;
        let ev =
            TraceEvent { name, tid, ts_us: us(start), dur_us: us(end) - us(start), set, outcome: outcome.to_string() };
        let mut events = self.events.lock().expect("trace");
        if events.len() >= self.capacity {
            events.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        events.push_back(ev);
    }

    pub fn len(&self) -> usize {
        self.events.lock().expect("trace").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events overwritten because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let events = self.events.lock().expect("trace");
        let mut all: Vec<serde_json::Value> =
            [(TID_FUSION, "fusion"), (TID_INFERENCE, "inference"), (TID_WORKER, "cpu worker")]
                .iter()
                .map(|(tid, name)| {
                    serde_json::json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}})
                })
                .collect();
        all.extend(events.iter().map(|e| {
            let mut args = serde_json::json!({"set_stamp_ns": e.set});
            if !e.outcome.is_empty() {
                args["outcome"] = serde_json::json!(e.outcome);
            }
            serde_json::json!({"name": e.name, "cat": "stage", "ph": "X", "ts": e.ts_us, "dur": e.dur_us, "pid": 1,
                               "tid": e.tid, "args": args})
        }));
        let doc = serde_json::json!({"traceEvents": all, "displayTimeUnit": "ms",
                                     "otherData": {"overwritten_events": self.dropped()}});
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        serde_json::to_writer(&mut f, &doc)?;
        f.flush()
    }
}

// ---------------------------------------------------------------------------------------
// The executor

/// A message the executor can route: which sensor and its stamp, both readable without
/// preprocessing it.
pub trait Message: Send + 'static {
    fn sensor(&self) -> Sensor;
    fn stamp(&self) -> StampNs;
}

/// Where results go (a node's publishers, a benchmark's recorder). Called on the fusion
/// thread.
pub trait Sink: Send + 'static {
    /// A set that met its hard deadline; `latency_ns` = now − newest member's stamp.
    fn publish(&mut self, set: &SetOutput, latency_ns: i64);
    fn events(&mut self, events: &[Event]);
}

/// Turns a routed message into pipeline input (decode, validate); the `preprocess` stage.
pub type Preprocess<M> = Box<dyn FnMut(M) -> Result<Input, String> + Send>;

#[derive(Debug, Clone)]
pub struct SchedConfig {
    /// Latest-wins depth of the camera, LiDAR and radar mailboxes.
    pub mailbox_depth: usize,
    /// IMU mailbox depth (every sample matters to the motion buffer: deep).
    pub imu_mailbox_depth: usize,
    /// CPU worker threads for clustering and radar (the detector has its own thread).
    pub cpu_workers: usize,
    /// Depth of the CPU workers' EDF task queue.
    pub task_queue_depth: usize,
    /// Detector tasks waiting for the inference thread: 1 = a fresher camera set
    /// supersedes one still waiting (that set goes on without camera boxes).
    pub inference_queue_depth: usize,
    /// Sets in flight (released, not yet published or shed); beyond, the oldest is shed.
    pub max_in_flight: usize,
    /// Admission control on (off: every set runs to the end; the hard deadline still
    /// withholds late publications).
    pub admission: bool,
    /// Execution-time window (samples per half) and samples before p99 is trusted.
    pub stats_window: u64,
    pub min_samples: u64,
    /// Execution-time guesses (µs) until measured.
    pub prior_us: [u64; STAGES],
    pub degrade: DegradeConfig,
    pub rt: RtConfig,
    /// Wake-up period without input (partial sets, dropouts on the clock).
    pub tick: Duration,
    /// Keep up to this many trace events (0 = no trace).
    pub trace_capacity: usize,
    /// FIFO baseline only: queue depth (drop-oldest).
    pub fifo_depth: usize,
    /// After the detector was left out of this many sets in a row because its p99 said it
    /// would miss (or at once after a step back up the ladder), run it once on the side: a
    /// probe nobody waits for, that re-measures a load that may be gone (a probe faster
    /// than the prediction restarts that stage's statistics).
    pub probe_after: u32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            mailbox_depth: 2,
            imu_mailbox_depth: 400,
            cpu_workers: 1,
            task_queue_depth: 8,
            inference_queue_depth: 1,
            max_in_flight: 8,
            admission: true,
            stats_window: 200,
            min_samples: 20,
            // preprocess, detector, detector_reduced, clustering, radar, association, tracking, rules
            prior_us: [2_000, 30_000, 10_000, 10_000, 1_000, 1_000, 1_000, 1_000],
            probe_after: 5,
            degrade: DegradeConfig::default(),
            rt: RtConfig::default(),
            tick: Duration::from_millis(20),
            trace_capacity: 0,
            fifo_depth: 64,
        }
    }
}

/// What the executor measured: read (and windows reset) by /diagnostics, or at the end of
/// a benchmark.
#[derive(Debug, Clone)]
pub struct SchedStats {
    /// Per-stage execution times (µs) since the last window reset.
    pub stage: Vec<Histogram<u64>>,
    /// Newest member's stamp → publication (µs): this window, and the whole run.
    pub e2e: Histogram<u64>,
    pub e2e_total: Histogram<u64>,
    /// sets.published, deadline.target_misses, deadline.hard_misses, shed.<reason>,
    /// dropped.<reason>, rejected.<sensor>.<reason>, pipeline.<counter>, ...
    pub counters: BTreeMap<String, u64>,
    pub received: [u64; 4],
    pub window_sets: u64,
    pub window_hard_misses: u64,
    pub window_shed: u64,
    pub level: usize,
    pub level_name: &'static str,
    pub max_level: usize,
    /// Gauges: mailbox depths (camera, lidar, radar, imu), task queues, sets in flight.
    pub mailbox_len: [usize; 4],
    pub inference_queue: usize,
    pub cpu_queue: usize,
    pub in_flight: usize,
    /// Real-time settings per thread role, as applied.
    pub rt: BTreeMap<&'static str, RtOutcome>,
    /// Each input stream for the dropout rule: never received (start-up), receiving, silent.
    pub streams: [StreamState; 4],
    /// Model monitoring (`model.*`): input statistics against training, agreement, state.
    pub model: Vec<crate::anomaly::KeyValue>,
}

impl SchedStats {
    fn new() -> Self {
        Self {
            stage: (0..STAGES).map(|_| micros_histogram()).collect(),
            e2e: micros_histogram(),
            e2e_total: micros_histogram(),
            counters: BTreeMap::new(),
            received: [0; 4],
            window_sets: 0,
            window_hard_misses: 0,
            window_shed: 0,
            level: 0,
            level_name: "nominal",
            max_level: 0,
            mailbox_len: [0; 4],
            inference_queue: 0,
            cpu_queue: 0,
            in_flight: 0,
            streams: [StreamState::NeverReceived; 4],
            model: vec![],
            rt: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, key: impl Into<String>, n: u64) {
        *self.counters.entry(key.into()).or_default() += n;
    }

    pub fn count(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    /// Sum of the counters under a prefix (e.g. "shed.").
    pub fn total(&self, prefix: &str) -> u64 {
        self.counters.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
    }

    /// Starts a new window (the per-window histograms and counts).
    pub fn reset_window(&mut self) {
        for h in &mut self.stage {
            h.reset();
        }
        self.e2e.reset();
        self.window_sets = 0;
        self.window_hard_misses = 0;
        self.window_shed = 0;
    }

    /// Key/values for /diagnostics: per-stage and end-to-end p50/p99/max, misses, shed and
    /// dropped by reason, degradation level, queue depths.
    pub fn key_values(&self) -> Vec<(String, String)> {
        let ms = |v: u64| format!("{:.3}", v as f64 / 1000.0);
        let mut kv = vec![];
        for (k, v) in Sensor::ALL.iter().zip(self.received) {
            kv.push((format!("received.{k}"), v.to_string()));
        }
        for (k, v) in Sensor::ALL.iter().zip(self.streams) {
            kv.push((format!("stream.{k}"), v.as_str().to_string()));
        }
        for e in &self.model {
            kv.push((format!("model.{}", e.key), e.value.clone()));
        }
        for (k, v) in &self.counters {
            kv.push((k.clone(), v.to_string()));
        }
        if !self.e2e.is_empty() {
            kv.push(("latency_p50_ms".into(), ms(self.e2e.value_at_quantile(0.5))));
            kv.push(("latency_p99_ms".into(), ms(self.e2e.value_at_quantile(0.99))));
            kv.push(("latency_max_ms".into(), ms(self.e2e.max())));
        }
        for s in Stage::ALL {
            let h = &self.stage[s as usize];
            if !h.is_empty() {
                kv.push((format!("stage.{}.p50_ms", s.name()), ms(h.value_at_quantile(0.5))));
                kv.push((format!("stage.{}.p99_ms", s.name()), ms(h.value_at_quantile(0.99))));
                kv.push((format!("stage.{}.max_ms", s.name()), ms(h.max())));
            }
        }
        kv.push(("window.sets".into(), self.window_sets.to_string()));
        kv.push(("window.hard_misses".into(), self.window_hard_misses.to_string()));
        kv.push(("window.shed".into(), self.window_shed.to_string()));
        kv.push(("degradation.level".into(), self.level.to_string()));
        kv.push(("degradation.rung".into(), self.level_name.to_string()));
        kv.push(("degradation.max_level".into(), self.max_level.to_string()));
        for (k, v) in Sensor::ALL.iter().zip(self.mailbox_len) {
            kv.push((format!("queue.mailbox.{k}"), v.to_string()));
        }
        kv.push(("queue.inference".into(), self.inference_queue.to_string()));
        kv.push(("queue.cpu".into(), self.cpu_queue.to_string()));
        kv.push(("queue.in_flight".into(), self.in_flight.to_string()));
        for (role, o) in &self.rt {
            let v = match o {
                RtOutcome::NotRequested => "normal".to_string(),
                RtOutcome::Applied => "applied".to_string(),
                RtOutcome::Fallback(why) => format!("fallback: {why}"),
            };
            kv.push((format!("rt.{role}"), v));
        }
        kv
    }
}

enum TaskKind {
    Detector { stamp: StampNs, image: Arc<crate::camera::Rgb8>, reduced: bool },
    Lidar { points: Arc<Vec<LidarPoint>>, omega: nalgebra::Vector3<f64>, coarse: bool },
    Radar { targets: Arc<Vec<RadarTarget>> },
}

impl TaskKind {
    fn stage(&self) -> Stage {
        match self {
            TaskKind::Detector { reduced: false, .. } => Stage::Detector,
            TaskKind::Detector { reduced: true, .. } => Stage::DetectorReduced,
            TaskKind::Lidar { .. } => Stage::Clustering,
            TaskKind::Radar { .. } => Stage::Radar,
        }
    }
}

struct Task {
    set: u64,
    stamp: StampNs,
    hard: StampNs,
    /// Set by whoever sheds the set: its other tasks are then skipped.
    shed: Arc<AtomicBool>,
    /// Runs without admission (re-measures a stage its statistics keep out).
    probe: bool,
    kind: TaskKind,
}

enum Outcome {
    Lidar(Vec<crate::cluster::ObjectBox>, u64),
    Radar(Vec<crate::cluster::RadarObject>, u64),
    Camera(Result<Vec<crate::detect::Detection2d>, String>, u64),
    Shed(Shed),
    /// The detector was left out (the set goes on without camera boxes).
    StageShed(Shed),
    Skipped,
    /// A probe finished (it only re-measured the detector).
    Probe,
}

struct Done {
    set: u64,
    outcome: Outcome,
}

/// A shared EDF task queue (Mutex + Condvar): workers block on it.
struct TaskQueue {
    q: Mutex<(EdfQueue<Task>, bool)>,
    ready: Condvar,
}

impl TaskQueue {
    fn new(depth: usize) -> Self {
        Self { q: Mutex::new((EdfQueue::new(depth), false)), ready: Condvar::new() }
    }
    fn push(&self, task: Task) -> Option<Task> {
        let mut g = self.q.lock().expect("queue");
        let evicted = g.0.push(task.hard, task).map(|(_, t)| t);
        self.ready.notify_one();
        evicted
    }
    fn pop(&self) -> Option<Task> {
        let mut g = self.q.lock().expect("queue");
        loop {
            if let Some((_, t)) = g.0.pop() {
                return Some(t);
            }
            if g.1 {
                return None;
            }
            g = self.ready.wait(g).expect("queue");
        }
    }
    fn len(&self) -> usize {
        self.q.lock().expect("queue").0.len()
    }
    fn close(&self) {
        self.q.lock().expect("queue").1 = true;
        self.ready.notify_all();
    }
}

struct Shared {
    clock: Clock,
    exec: Mutex<ExecStats>,
    stats: Arc<Mutex<SchedStats>>,
    trace: Option<Arc<TraceRecorder>>,
}

impl Shared {
    fn predict(&self, stage: Stage) -> i64 {
        self.exec.lock().expect("exec").predict_ns(stage)
    }
    fn predict_fuse(&self) -> i64 {
        self.exec.lock().expect("exec").predict_all_ns(&Stage::FUSE)
    }
    fn record(&self, stage: Stage, start: Instant, end: Instant, tid: u32, set: StampNs, outcome: &str) -> u64 {
        let us = end.duration_since(start).as_micros() as u64;
        self.exec.lock().expect("exec").record(stage, us);
        self.stats.lock().expect("stats").stage[stage as usize].record(us.max(1)).ok();
        if let Some(t) = &self.trace {
            t.span(stage.name(), tid, start, end, set, outcome);
        }
        us
    }
    fn add(&self, key: impl Into<String>, n: u64) {
        self.stats.lock().expect("stats").add(key, n);
    }
}

/// One worker: pops tasks earliest deadline first, admits, runs, reports.
fn worker_loop(
    shared: Arc<Shared>,
    queue: Arc<TaskQueue>,
    done: Sender<Done>,
    mut detector: Option<Box<dyn CameraDetector>>,
    params: PipelineParams,
    tid: u32,
) {
    let mut reduced_now = false;
    while let Some(task) = queue.pop() {
        let stage = task.kind.stage();
        if task.shed.load(Ordering::Acquire) {
            done.send(Done { set: task.set, outcome: Outcome::Skipped }).ok();
            continue;
        }
        let now = (shared.clock)();
        let predicted = shared.predict(stage);
        // A probe serves no set (nobody waits for it): never refused.
        let admitted = if task.probe { Ok(()) } else { admit(now, task.hard, stage, predicted, shared.predict_fuse()) };
        if let Err(shed) = admitted {
            if matches!(task.kind, TaskKind::Detector { .. }) {
                // Optional stage: the set goes on without it.
                done.send(Done { set: task.set, outcome: Outcome::StageShed(shed) }).ok();
            } else {
                task.shed.store(true, Ordering::Release);
                done.send(Done { set: task.set, outcome: Outcome::Shed(shed) }).ok();
            }
            continue;
        }
        let _span = tracing::debug_span!("stage", stage = stage.name(), set = task.stamp).entered();
        let start = Instant::now();
        let outcome = match task.kind {
            TaskKind::Detector { stamp, image, reduced } => {
                let det = detector.as_mut().expect("detector tasks go to the inference thread");
                if reduced != reduced_now {
                    det.set_reduced_input(reduced);
                    reduced_now = reduced;
                }
                let r = det.detect(stamp, &image).map_err(|e| e.to_string());
                let end = Instant::now();
                if task.probe {
                    // Faster than predicted: the load that kept this stage out is gone.
                    if (end.duration_since(start).as_nanos() as i64) < predicted {
                        shared.exec.lock().expect("exec").reset(stage);
                    }
                    shared.record(stage, start, end, tid, task.stamp, "probe");
                    shared.add("inference.probes", 1);
                    done.send(Done { set: task.set, outcome: Outcome::Probe }).ok();
                    continue;
                }
                let us = shared.record(stage, start, end, tid, task.stamp, if reduced { "reduced" } else { "" });
                // The inference thread's own deadline: done in time for the fusion stages.
                let stage_deadline = task.hard - shared.predict_fuse();
                if (shared.clock)() > stage_deadline {
                    shared.add("inference.deadline_misses", 1);
                }
                shared.add("inference.runs", 1);
                Outcome::Camera(r, us)
            }
            TaskKind::Lidar { points, omega, coarse } => {
                let boxes = lidar_stage(&params, omega, &points, coarse);
                let us =
                    shared.record(stage, start, Instant::now(), tid, task.stamp, if coarse { "coarse" } else { "" });
                Outcome::Lidar(boxes, us)
            }
            TaskKind::Radar { targets } => {
                let objects = radar_stage(&params, &targets);
                let us = shared.record(stage, start, Instant::now(), tid, task.stamp, "");
                Outcome::Radar(objects, us)
            }
        };
        if done.send(Done { set: task.set, outcome }).is_err() {
            break;
        }
    }
}

struct Flight {
    id: u64,
    job: SetJob,
    hard: StampNs,
    target: StampNs,
    pending: usize,
    perception: Perception,
    shed: Option<Shed>,
    /// The detector was left out of this set (admission): published, but degraded.
    stage_shed: bool,
    flag: Arc<AtomicBool>,
}

/// The fusion thread of the deadline scheduler: takes inputs from the mailboxes, releases
/// sets, admits and dispatches their perception stages, collects what the workers finish,
/// and finishes sets in stamp order (fuse, hard-deadline check, publish).
struct Coordinator<M: Message, S: Sink> {
    cfg: SchedConfig,
    shared: Arc<Shared>,
    clock: Clock,
    pipeline: Pipeline,
    preprocess: Preprocess<M>,
    sink: S,
    mailboxes: Arc<[Mailbox<M>; 4]>,
    done: Receiver<Done>,
    inference: Arc<TaskQueue>,
    cpu: Arc<TaskQueue>,
    has_detector: bool,
    target_ns: i64,
    hard_ns: i64,
    degrade: Degradation,
    /// Released sets not yet finished, in stamp order.
    in_flight: VecDeque<Flight>,
    next_id: u64,
    camera_sets: u64,
    /// Sets in a row the detector was left out of (full, reduced input).
    detector_left_out: [u32; 2],
    newest_data: Option<StampNs>,
    warned_clock: bool,
    /// The degradation level in force.
    level: usize,
    /// Events of this round, handed to the sink together.
    events: Vec<Event>,
    live: LiveParams,
}

impl<M: Message, S: Sink> Coordinator<M, S> {
    fn run(mut self, closed: Arc<AtomicBool>) {
        let o = apply_rt(&self.cfg.rt, 0);
        self.shared.stats.lock().expect("stats").rt.insert("fusion", o);
        loop {
            let woke = self.wait();
            self.live.apply(&mut self.pipeline, &self.shared.stats);
            for job in self.take_inputs(woke) {
                self.dispatch(job);
            }
            self.collect();
            self.finish_ready();
            self.report();
            let idle = self.mailboxes.iter().all(|m| m.is_empty()) && self.in_flight.is_empty();
            if closed.load(Ordering::Acquire) && idle {
                break;
            }
        }
        self.inference.close();
        self.cpu.close();
    }

    /// Sleeps until a message or a completion arrives; false after a quiet tick.
    fn wait(&self) -> bool {
        let mut sel = Select::new();
        for m in self.mailboxes.iter() {
            sel.recv(m.receiver());
        }
        sel.recv(&self.done);
        sel.ready_timeout(self.cfg.tick).is_ok()
    }

    /// Everything waiting in the mailboxes, in stamp order, through preprocessing and the
    /// synchronizer: the sets released.
    fn take_inputs(&mut self, woke: bool) -> Vec<SetJob> {
        let mut batch: Vec<M> = vec![];
        for m in self.mailboxes.iter() {
            while let Some(msg) = m.try_take() {
                batch.push(msg);
            }
        }
        // Arrival order across sensors is lost in separate mailboxes: stamps restore it.
        batch.sort_by_key(|m| m.stamp());
        let mut released = vec![];
        for msg in batch {
            let (sensor, stamp) = (msg.sensor(), msg.stamp());
            let start = Instant::now();
            let input = (self.preprocess)(msg);
            self.shared.record(Stage::Preprocess, start, Instant::now(), TID_FUSION, stamp, "");
            match input {
                Ok(input) => {
                    self.newest_data = self.newest_data.max(Some(input.stamp()));
                    let (jobs, events) = self.pipeline.push_jobs(input);
                    released.extend(jobs);
                    self.events.extend(events);
                }
                Err(reason) => self.shared.add(format!("rejected.{}.{reason}", sensor.as_str()), 1),
            }
        }
        // Silence: release partial sets and notice dropouts on the clock, when the clock
        // and the data share a time base.
        let now = (self.clock)();
        if !woke && clock_follows_data(self.newest_data, now) {
            let (jobs, events) = self.pipeline.tick_jobs(now);
            released.extend(jobs);
            self.events.extend(events);
        }
        released
    }

    /// Admission and dispatch of a released set's perception stages.
    fn dispatch(&mut self, job: SetJob) {
        self.next_id += 1;
        self.shared.add("sets.released", 1);
        let now = (self.clock)();
        if (now - job.newest_stamp).abs() > 10_000_000_000 && !self.warned_clock {
            self.warned_clock = true;
            tracing::warn!(
                "set stamps are {:.1} s from the node clock: every set misses its deadline. Playing a bag? Use \
                 `fusion_bag play --clock` and use_sim_time:=true (or `--restamp`)",
                (now - job.newest_stamp) as f64 * 1e-9
            );
        }
        let mut f = Flight {
            id: self.next_id,
            hard: job.newest_stamp + self.hard_ns,
            target: job.newest_stamp + self.target_ns,
            pending: 0,
            perception: Perception::default(),
            shed: None,
            stage_shed: false,
            flag: Arc::new(AtomicBool::new(false)),
            job,
        };
        // A frame the detector gate passes over (event_driven) carries the tracks' labels.
        let has_camera = self.has_detector && f.job.camera().is_some() && f.job.run_detector;
        let mut run_detector = has_camera
            && !(self.degrade.active(Rung::SkipDetectorAlternate) && {
                self.camera_sets += 1;
                self.camera_sets.is_multiple_of(2)
            });
        if has_camera && !run_detector {
            self.shared.add("degraded.detector_skipped", 1);
        }
        let run_radar = f.job.radar().is_some() && !self.degrade.active(Rung::SkipRadarAssociation);
        if f.job.radar().is_some() && !run_radar {
            self.shared.add("degraded.radar_skipped", 1);
        }
        let reduced = self.degrade.active(Rung::ReduceDetectorInput);
        if self.cfg.admission {
            match self.admit_set(now, &f, run_detector, run_radar, reduced) {
                Admitted::All => self.detector_left_out[reduced as usize] = 0,
                Admitted::Shed(s) => f.shed = Some(s),
                Admitted::WithoutDetector(s) => {
                    run_detector = false;
                    f.stage_shed = true;
                    self.shared.add(format!("shed_stage.{}", s.reason().trim_start_matches("shed.")), 1);
                    let streak = &mut self.detector_left_out[reduced as usize];
                    *streak += 1;
                    // Kept out this often, the p99 may be stale (the load went away, but a
                    // stage that never runs is never re-measured): run it on this frame as a
                    // probe nobody waits for, when the inference thread has nothing queued.
                    if *streak > self.cfg.probe_after && self.inference.len() == 0 {
                        *streak = 0;
                        let (stamp, image) = f.job.camera().expect("camera member");
                        let probe = Task {
                            set: f.id,
                            stamp: f.job.stamp,
                            hard: f.hard,
                            shed: Arc::new(AtomicBool::new(false)),
                            probe: true,
                            kind: TaskKind::Detector { stamp, image, reduced },
                        };
                        if let Some(evicted) = self.inference.push(probe) {
                            self.evicted(evicted, &mut f);
                        }
                    }
                }
            }
        }
        if f.shed.is_none() {
            let task =
                |kind| Task { set: f.id, stamp: f.job.stamp, hard: f.hard, shed: f.flag.clone(), probe: false, kind };
            let mut tasks = vec![];
            if run_detector {
                let (stamp, image) = f.job.camera().expect("camera member");
                tasks.push((true, task(TaskKind::Detector { stamp, image, reduced })));
            }
            if let Some(points) = f.job.lidar() {
                let coarse = self.degrade.active(Rung::CoarseLidarClustering);
                tasks.push((false, task(TaskKind::Lidar { points, omega: f.job.omega(), coarse })));
            }
            if run_radar {
                tasks.push((false, task(TaskKind::Radar { targets: f.job.radar().expect("radar member") })));
            }
            f.pending = tasks.len();
            for (to_inference, t) in tasks {
                let queue = if to_inference { &self.inference } else { &self.cpu };
                if let Some(evicted) = queue.push(t) {
                    self.evicted(evicted, &mut f);
                }
            }
        }
        self.in_flight.push_back(f);
        if self.in_flight.len() > self.cfg.max_in_flight.max(1) {
            let oldest = self.in_flight.front_mut().expect("non-empty");
            oldest.flag.store(true, Ordering::Release);
            oldest.shed.get_or_insert(Shed::PastDeadline(Stage::Association));
            self.shared.add("dropped.in_flight_full", 1);
        }
    }

    /// Can the set make its hard deadline? The CPU path (clustering, radar) is what a set
    /// cannot do without: when it would miss, the set is shed. The detector runs in
    /// parallel on its own thread, behind what its queue holds; when only it would miss,
    /// the set goes on without camera boxes.
    fn admit_set(&self, now: StampNs, f: &Flight, run_detector: bool, run_radar: bool, reduced: bool) -> Admitted {
        let det_stage = if reduced { Stage::DetectorReduced } else { Stage::Detector };
        let (det, clu, rad, fuse) = {
            let e = self.shared.exec.lock().expect("exec");
            (
                e.predict_ns(det_stage),
                e.predict_ns(Stage::Clustering),
                e.predict_ns(Stage::Radar),
                e.predict_all_ns(&Stage::FUSE),
            )
        };
        let cpu_work = if f.job.lidar().is_some() { clu } else { 0 } + if run_radar { rad } else { 0 };
        let cpu_path = cpu_work * (self.cpu.len() as i64 / self.cfg.cpu_workers.max(1) as i64 + 1);
        if let Err(s) = admit(now, f.hard, Stage::Clustering, cpu_path, fuse) {
            return Admitted::Shed(s);
        }
        if run_detector {
            if let Err(s) = admit(now, f.hard, det_stage, det * (self.inference.len() as i64 + 1), fuse) {
                return Admitted::WithoutDetector(s);
            }
        }
        Admitted::All
    }

    /// A task pushed out of a full queue (its stalest). A detector task superseded by a
    /// fresher frame leaves its set without camera boxes; a lost CPU task sheds its set.
    fn evicted(&mut self, evicted: Task, current: &mut Flight) {
        if evicted.probe {
            return;
        }
        let optional = matches!(evicted.kind, TaskKind::Detector { .. });
        if !optional {
            evicted.shed.store(true, Ordering::Release);
        }
        self.shared.add(if optional { "shed_stage.superseded.detector" } else { "dropped.task_queue_full" }, 1);
        let owner = if evicted.set == current.id {
            Some(current)
        } else {
            self.in_flight.iter_mut().find(|x| x.id == evicted.set)
        };
        if let Some(f) = owner {
            f.pending -= 1;
            if optional {
                f.stage_shed = true;
            } else {
                f.shed.get_or_insert(Shed::PastDeadline(evicted.kind.stage()));
            }
        }
    }

    /// What the workers finished.
    fn collect(&mut self) {
        while let Ok(d) = self.done.try_recv() {
            if matches!(d.outcome, Outcome::Probe) {
                continue;
            }
            let Some(f) = self.in_flight.iter_mut().find(|f| f.id == d.set) else { continue };
            f.pending = f.pending.saturating_sub(1);
            match d.outcome {
                Outcome::Lidar(b, us) => {
                    f.perception.lidar = Some(b);
                    f.perception.times.lidar_us = us;
                }
                Outcome::Radar(r, us) => {
                    f.perception.radar = Some(r);
                    f.perception.times.radar_us = us;
                }
                Outcome::Camera(c, us) => {
                    f.perception.camera = Some(c);
                    f.perception.times.camera_us = us;
                }
                Outcome::Shed(s) => {
                    f.shed.get_or_insert(s);
                }
                Outcome::StageShed(s) => {
                    f.stage_shed = true;
                    self.shared.add(format!("shed_stage.{}", s.reason().trim_start_matches("shed.")), 1);
                }
                Outcome::Skipped | Outcome::Probe => {}
            }
        }
    }

    /// Finishes sets in stamp order: shed ones at once, the others once their perception
    /// is complete.
    fn finish_ready(&mut self) {
        while self.in_flight.front().is_some_and(|f| f.pending == 0 || f.shed.is_some()) {
            let f = self.in_flight.pop_front().expect("front");
            f.flag.store(true, Ordering::Release);
            let now = (self.clock)();
            let mut shed = f.shed.clone();
            if shed.is_none() && self.cfg.admission {
                shed = admit(now, f.hard, Stage::Association, self.shared.predict_fuse(), 0).err();
            }
            match shed {
                Some(s) => self.shed(f.job.stamp, s),
                None => self.fuse_and_publish(f),
            }
        }
    }

    fn shed(&mut self, stamp: StampNs, s: Shed) {
        {
            let mut st = self.shared.stats.lock().expect("stats");
            st.add(s.reason(), 1);
            st.add("sets.shed", 1);
            st.window_shed += 1;
        }
        if let Some(t) = &self.shared.trace {
            let i = Instant::now();
            t.span("shed", TID_FUSION, i, i, stamp, &s.reason());
        }
        self.events.extend(self.pipeline.report_deadline(stamp, true));
        let changed = self.degrade.observe_shed();
        self.log_level(changed);
    }

    fn fuse_and_publish(&mut self, f: Flight) {
        let stamp = f.job.stamp;
        let start = Instant::now();
        let step = {
            let _span = tracing::debug_span!("stage", stage = "fuse", set = stamp).entered();
            self.pipeline.fuse(f.job, f.perception)
        };
        let end = Instant::now();
        if let Some(tr) = &self.shared.trace {
            tr.span("fuse", TID_FUSION, start, end, stamp, "");
        }
        for set in &step.sets {
            let t = &set.times;
            for (stage, us) in
                [(Stage::Association, t.associate_us), (Stage::Tracking, t.track_us), (Stage::Rules, t.rules_us)]
            {
                self.shared.exec.lock().expect("exec").record(stage, us);
                self.shared.stats.lock().expect("stats").stage[stage as usize].record(us.max(1)).ok();
            }
            let now = (self.clock)();
            let latency = now - set.newest_stamp;
            // A stage overran after admission: withheld, never published late.
            let late = now > f.hard;
            {
                let mut st = self.shared.stats.lock().expect("stats");
                st.window_sets += 1;
                st.add("sets", 1);
                if late {
                    st.window_hard_misses += 1;
                    st.add("deadline.hard_misses", 1);
                    st.add("dropped.hard_deadline", 1);
                } else {
                    st.add("sets.published", 1);
                    st.e2e.record((latency / 1000).max(1) as u64).ok();
                    st.e2e_total.record((latency / 1000).max(1) as u64).ok();
                    if now > f.target {
                        st.add("deadline.target_misses", 1);
                    }
                    if set.partial {
                        st.add("sets.partial", 1);
                    }
                }
            }
            self.events.extend(self.pipeline.report_deadline(stamp, late));
            if !late {
                self.sink.publish(set, latency);
            }
            let changed =
                if late || f.stage_shed { self.degrade.observe_shed() } else { self.degrade.observe(f.target - now) };
            self.log_level(changed);
        }
        self.events.extend(step.events);
    }

    fn log_level(&mut self, changed: Option<usize>) {
        let Some(level) = changed else { return };
        tracing::info!("degradation level {level} ({})", self.degrade.describe());
        if level < self.level {
            // Back up a rung: the next time the detector would be kept out, probe it at once.
            self.detector_left_out = [self.cfg.probe_after; 2];
        }
        self.level = level;
    }

    /// Events to the sink; counters and gauges to the statistics.
    fn report(&mut self) {
        let events = std::mem::take(&mut self.events);
        if !events.is_empty() {
            self.sink.events(&events);
        }
        let mut st = self.shared.stats.lock().expect("stats");
        for e in &events {
            st.add(format!("events.{}", e.kind), 1);
        }
        for (k, v) in std::mem::take(&mut self.pipeline.counters) {
            st.add(format!("pipeline.{k}"), v);
        }
        st.streams = self.pipeline.anomaly.stream_states();
        st.model = self.pipeline.monitor.key_values();
        for (sensor, m) in Sensor::ALL.into_iter().zip(self.mailboxes.iter()) {
            st.mailbox_len[sensor.index()] = m.len();
            st.counters.insert(format!("dropped.superseded.{}", sensor.as_str()), m.superseded());
        }
        st.inference_queue = self.inference.len();
        st.cpu_queue = self.cpu.len();
        st.in_flight = self.in_flight.len();
        st.level = self.degrade.level();
        st.level_name = self.degrade.describe();
        st.max_level = self.degrade.max_level;
        st.counters.insert("degradation.changes".into(), self.degrade.changes);
    }
}

/// A set's admission verdict.
enum Admitted {
    All,
    WithoutDetector(Shed),
    Shed(Shed),
}

/// Whether the executor's clock and the data's stamps share a time base (the newest
/// stamp within 5 s of now): only then may silence release sets or declare dropouts on
/// the clock (a bag played without `--clock` must not look like every sensor died).
fn clock_follows_data(newest_data: Option<StampNs>, now: StampNs) -> bool {
    newest_data.is_some_and(|d| (now - d).abs() < 5_000_000_000)
}

/// Parameter changes waiting for the thread that owns the pipeline: the latest value per
/// name, so it holds at most one entry per parameter. `apply` runs on every wake of the
/// fusion thread; the flag lets it skip the lock when nothing is waiting (nearly always).
#[derive(Clone, Default)]
struct LiveParams(Arc<PendingParams>);

#[derive(Default)]
struct PendingParams {
    any: AtomicBool,
    values: Mutex<BTreeMap<String, f64>>,
}

impl LiveParams {
    fn set(&self, name: &str, value: f64) {
        self.0.values.lock().expect("live params").insert(name.to_string(), value);
        // After the insert: an `apply` that sees the flag finds the value.
        self.0.any.store(true, Ordering::Release);
    }

    fn apply(&self, pipeline: &mut Pipeline, stats: &Mutex<SchedStats>) {
        if !self.0.any.swap(false, Ordering::Acquire) {
            return;
        }
        let pending = std::mem::take(&mut *self.0.values.lock().expect("live params"));
        for (name, value) in pending {
            let outcome = pipeline.set_live_param(&name, value);
            let key = match &outcome {
                Ok(()) => "params.applied",
                Err(_) => "params.refused",
            };
            stats.lock().expect("stats").add(key, 1);
            match outcome {
                Ok(()) => tracing::info!("parameter {name} = {value} from the next set on"),
                Err(e) => tracing::warn!("parameter {name} not applied: {e}"),
            }
        }
    }
}

/// Where posted messages wait: one latest-wins mailbox per sensor (scheduler), or one
/// drop-oldest queue for everything (baseline).
enum Inbox<M> {
    PerSensor(Arc<[Mailbox<M>; 4]>),
    Fifo(Arc<Mailbox<M>>),
}

/// The running scheduler (or FIFO baseline): post messages to it; `shutdown` drains it.
pub struct Executor<M: Message> {
    inbox: Inbox<M>,
    closed: Arc<AtomicBool>,
    stats: Arc<Mutex<SchedStats>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    trace: Option<Arc<TraceRecorder>>,
    live: LiveParams,
}

impl<M: Message> Executor<M> {
    /// The deadline scheduler: fusion thread, inference thread (when there is a detector),
    /// `cfg.cpu_workers` CPU workers.
    pub fn spawn_edf(
        mut pipeline: Pipeline,
        preprocess: Preprocess<M>,
        sink: impl Sink,
        clock: Clock,
        cfg: SchedConfig,
    ) -> std::io::Result<Self> {
        let stats = Arc::new(Mutex::new(SchedStats::new()));
        let trace = (cfg.trace_capacity > 0).then(|| Arc::new(TraceRecorder::new(cfg.trace_capacity)));
        let params = pipeline.params.clone();
        let (target_ns, hard_ns) = (params.target_deadline_ns, params.hard_deadline_ns);
        let shared = Arc::new(Shared {
            clock: clock.clone(),
            exec: Mutex::new(ExecStats::new(cfg.prior_us, cfg.stats_window, cfg.min_samples)),
            stats: stats.clone(),
            trace: trace.clone(),
        });
        if cfg.rt.mlockall {
            let o = lock_memory();
            stats.lock().expect("stats").rt.insert("mlockall", o);
        }
        if cfg.rt.policy != Policy::Other {
            build_compute_pool();
        }
        let live = LiveParams::default();
        let mailboxes = Arc::new([
            Mailbox::new(cfg.mailbox_depth),
            Mailbox::new(cfg.mailbox_depth),
            Mailbox::new(cfg.mailbox_depth),
            Mailbox::new(cfg.imu_mailbox_depth),
        ]);
        let closed = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
        let mut threads = vec![];
        let detector = pipeline.take_detector();
        let has_detector = detector.is_some();
        let inference = Arc::new(TaskQueue::new(cfg.inference_queue_depth));
        let cpu = Arc::new(TaskQueue::new(cfg.task_queue_depth));
        let spawn_worker = |name: String,
                            queue: Arc<TaskQueue>,
                            det: Option<Box<dyn CameraDetector>>,
                            tid: u32,
                            role: &'static str| {
            let (shared, done, params, rt) = (shared.clone(), done_tx.clone(), params.clone(), cfg.rt.clone());
            std::thread::Builder::new().name(name).spawn(move || {
                let o = apply_rt(&rt, 1);
                shared.stats.lock().expect("stats").rt.insert(role, o);
                worker_loop(shared, queue, done, det, params, tid)
            })
        };
        if has_detector {
            threads.push(spawn_worker(
                "fusion-inference".into(),
                inference.clone(),
                detector,
                TID_INFERENCE,
                "inference",
            )?);
        }
        for i in 0..cfg.cpu_workers.max(1) {
            threads.push(spawn_worker(
                format!("fusion-cpu-{i}"),
                cpu.clone(),
                None,
                TID_WORKER + i as u32,
                "cpu_worker",
            )?);
        }
        drop(done_tx);

        let coordinator = Coordinator {
            degrade: Degradation::new(cfg.degrade.clone()),
            cfg,
            shared,
            clock,
            pipeline,
            preprocess,
            sink,
            mailboxes: mailboxes.clone(),
            done: done_rx,
            inference,
            cpu,
            has_detector,
            target_ns,
            hard_ns,
            in_flight: VecDeque::new(),
            next_id: 0,
            camera_sets: 0,
            detector_left_out: [0; 2],
            newest_data: None,
            warned_clock: false,
            level: 0,
            events: vec![],
            live: live.clone(),
        };
        let cl = closed.clone();
        let fusion = std::thread::Builder::new().name("fusion-sched".into()).spawn(move || coordinator.run(cl))?;
        threads.push(fusion);
        Ok(Self { inbox: Inbox::PerSensor(mailboxes), closed, stats, threads, trace, live })
    }

    /// The baseline: one thread, one bounded FIFO queue (drop-oldest when full, counted),
    /// every stage of every set in arrival order, nothing shed, every set published.
    pub fn spawn_fifo(
        mut pipeline: Pipeline,
        mut preprocess: Preprocess<M>,
        mut sink: impl Sink,
        clock: Clock,
        cfg: SchedConfig,
    ) -> std::io::Result<Self> {
        let stats = Arc::new(Mutex::new(SchedStats::new()));
        let queue = Arc::new(Mailbox::<M>::new(cfg.fifo_depth));
        let closed = Arc::new(AtomicBool::new(false));
        let (st, cl, q) = (stats.clone(), closed.clone(), queue.clone());
        let (target_ns, hard_ns) = (pipeline.params.target_deadline_ns, pipeline.params.hard_deadline_ns);
        let mut newest_data: Option<StampNs> = None;
        let live = LiveParams::default();
        let fifo_live = live.clone();
        let thread = std::thread::Builder::new().name("fusion-fifo".into()).spawn(move || loop {
            let received = q.receiver().recv_timeout(cfg.tick);
            fifo_live.apply(&mut pipeline, &st);
            let step = match received {
                Ok(msg) => {
                    let sensor = msg.sensor();
                    let start = Instant::now();
                    let input = preprocess(msg);
                    st.lock().expect("stats").stage[Stage::Preprocess as usize]
                        .record(start.elapsed().as_micros().max(1) as u64)
                        .ok();
                    match input {
                        Ok(input) => {
                            newest_data = newest_data.max(Some(input.stamp()));
                            pipeline.push(input)
                        }
                        Err(reason) => {
                            st.lock().expect("stats").add(format!("rejected.{}.{reason}", sensor.as_str()), 1);
                            continue;
                        }
                    }
                }
                Err(_) if cl.load(Ordering::Acquire) => break,
                Err(_) => {
                    // Silence: as the scheduler does, release partial sets and notice
                    // dropouts on the clock (when the clock and the data share a time base),
                    // or a set missing a silent sensor would wait for the next message.
                    let now = (clock)();
                    if !clock_follows_data(newest_data, now) {
                        continue;
                    }
                    pipeline.tick(now)
                }
            };
            let mut events = step.events;
            for set in &step.sets {
                let now = (clock)();
                let latency = now - set.newest_stamp;
                {
                    let mut s = st.lock().expect("stats");
                    for (stage, us) in stage_times(&set.times) {
                        s.stage[stage as usize].record(us.max(1)).ok();
                    }
                    s.window_sets += 1;
                    s.add("sets", 1);
                    s.add("sets.published", 1);
                    if set.partial {
                        s.add("sets.partial", 1);
                    }
                    s.e2e.record((latency / 1000).max(1) as u64).ok();
                    s.e2e_total.record((latency / 1000).max(1) as u64).ok();
                    if latency > target_ns {
                        s.add("deadline.target_misses", 1);
                    }
                    if latency > hard_ns {
                        s.window_hard_misses += 1;
                        s.add("deadline.hard_misses", 1);
                    }
                }
                events.extend(pipeline.report_deadline(set.stamp, latency > hard_ns));
                sink.publish(set, latency);
            }
            if !events.is_empty() {
                sink.events(&events);
            }
            let mut s = st.lock().expect("stats");
            s.streams = pipeline.anomaly.stream_states();
            s.model = pipeline.monitor.key_values();
            for (k, v) in std::mem::take(&mut pipeline.counters) {
                s.add(format!("pipeline.{k}"), v);
            }
            s.counters.insert("queue.fifo".into(), q.len() as u64);
        })?;
        Ok(Self { inbox: Inbox::Fifo(queue), closed, stats, threads: vec![thread], trace: None, live })
    }

    /// Hands a message to the executor: into its sensor's latest-wins mailbox (scheduler),
    /// or the FIFO queue (baseline; full → the oldest is dropped). Never blocks.
    pub fn post(&self, msg: M) {
        let sensor = msg.sensor();
        self.stats.lock().expect("stats").received[sensor.index()] += 1;
        match &self.inbox {
            Inbox::PerSensor(mailboxes) => {
                mailboxes[sensor.index()].post(msg);
            }
            Inbox::Fifo(queue) => {
                queue.post_evicting(msg, |old| {
                    let reason = format!("dropped.queue_full.{}", old.sensor().as_str());
                    self.stats.lock().expect("stats").add(reason, 1);
                });
            }
        }
    }

    pub fn stats(&self) -> Arc<Mutex<SchedStats>> {
        self.stats.clone()
    }

    /// A new value for a live pipeline parameter ([`Pipeline::is_live_param`]), taken by the
    /// thread that owns the pipeline before its next step (within one tick). Counted on
    /// /diagnostics as `params.applied` (or `params.refused`).
    pub fn set_param(&self, name: &str, value: f64) -> Result<(), String> {
        if !Pipeline::is_live_param(name) {
            return Err(format!("{name} is read at start-up only"));
        }
        PipelineParams::default().set(name, value)?;
        self.live.set(name, value);
        Ok(())
    }

    pub fn trace(&self) -> Option<Arc<TraceRecorder>> {
        self.trace.clone()
    }

    /// Finishes what was posted (sets still in flight complete or are shed), stops the
    /// threads and returns the final statistics.
    pub fn shutdown(mut self) -> SchedStats {
        self.closed.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            t.join().ok();
        }
        self.stats.lock().expect("stats").clone()
    }
}

impl<M: Message> Drop for Executor<M> {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}
