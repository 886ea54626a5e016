//! The executors: the deadline scheduler (mailboxes, fusion thread, EDF workers) and the
//! FIFO baseline it is measured against.
use super::*;
use crate::{
    anomaly::{Event, Sensor},
    cloud::{LidarPoint, RadarTarget},
    detect::CameraDetector,
    pipeline::{lidar_stage, radar_stage, Input, Perception, Pipeline, PipelineParams, SetJob, SetOutput},
    sensors::SensorId,
    StampNs,
};
use crossbeam_channel::{Receiver, Select, Sender};
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

/// A message the executor can route: which sensor and its stamp, both readable without
/// preprocessing it.
pub trait Message: Send + 'static {
    /// The declared sensor it came from (the pipeline's sensor set).
    fn sensor(&self) -> SensorId;
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

enum TaskKind {
    /// The detector over the set's camera frames, one batch.
    Detector {
        frames: Vec<crate::pipeline::DetectorFrame>,
        reduced: bool,
    },
    Lidar {
        points: Arc<Vec<LidarPoint>>,
        omega: nalgebra::Vector3<f64>,
        velocity: nalgebra::Vector3<f64>,
        coarse: bool,
    },
    Radar {
        targets: Arc<Vec<RadarTarget>>,
    },
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
    /// Per camera frame: its camera, and the boxes or why the detector failed.
    Camera(Vec<(usize, Result<Vec<crate::detect::Detection2d>, String>)>, u64),
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
            TaskKind::Detector { frames, reduced } => {
                let det = detector.as_mut().expect("detector tasks go to the inference thread");
                if reduced != reduced_now {
                    det.set_reduced_input(reduced);
                    reduced_now = reduced;
                }
                let r = crate::pipeline::detector_stage(det.as_mut(), &frames);
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
            TaskKind::Lidar { points, omega, velocity, coarse } => {
                let boxes = lidar_stage(&params, omega, velocity, &points, coarse);
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
    /// One per declared sensor, indexed by its id.
    mailboxes: Arc<[Mailbox<M>]>,
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
                Err(reason) => {
                    let mut st = self.shared.stats.lock().expect("stats");
                    let key = format!("rejected.{}.{reason}", st.name(sensor));
                    st.add(key, 1);
                }
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

    /// Admission and dispatch of a released set's perception stages: `plan` decides,
    /// `enqueue` queues.
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
        let f = Flight {
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
        let plan = self.plan(now, &f);
        self.enqueue(f, plan);
    }

    /// The policy half of dispatch: which of the set's stages run (the detector gate, the
    /// degradation rungs) and whether the set is admitted, without queueing anything. It
    /// moves only the policy's own state (the alternate-frame count, the detector's
    /// left-out streak) and counts what it decided.
    fn plan(&mut self, now: StampNs, f: &Flight) -> DispatchPlan {
        // A frame the detector gate passes over (event_driven) carries the tracks' labels.
        let has_camera = self.has_detector && f.job.wants_detector();
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
        let coarse = self.degrade.active(Rung::CoarseLidarClustering);
        let (mut shed, mut stage_shed, mut probe) = (None, false, false);
        if self.cfg.admission {
            match self.admit_set(now, f, run_detector, run_radar, reduced) {
                Admitted::All => self.detector_left_out[reduced as usize] = 0,
                Admitted::Shed(s) => shed = Some(s),
                Admitted::WithoutDetector(s) => {
                    run_detector = false;
                    stage_shed = true;
                    self.shared.add(format!("shed_stage.{}", s.reason().trim_start_matches("shed.")), 1);
                    let streak = &mut self.detector_left_out[reduced as usize];
                    *streak += 1;
                    // Kept out this often, the p99 may be stale (the load went away, but a
                    // stage that never runs is never re-measured): run it on this frame as a
                    // probe nobody waits for, when the inference thread has nothing queued.
                    if *streak > self.cfg.probe_after && self.inference.len() == 0 {
                        *streak = 0;
                        probe = true;
                    }
                }
            }
        }
        DispatchPlan { shed, stage_shed, probe, run_detector, run_radar, reduced, coarse }
    }

    /// The mechanism half of dispatch: queue the planned stages (a probe first), and track
    /// the set in flight; the oldest set in flight is shed when there are too many.
    fn enqueue(&mut self, mut f: Flight, plan: DispatchPlan) {
        f.shed = plan.shed;
        f.stage_shed = plan.stage_shed;
        if plan.probe {
            let probe = Task {
                set: f.id,
                stamp: f.job.stamp,
                hard: f.hard,
                shed: Arc::new(AtomicBool::new(false)),
                probe: true,
                kind: TaskKind::Detector { frames: f.job.detector_frames(), reduced: plan.reduced },
            };
            if let Some(evicted) = self.inference.push(probe) {
                self.evicted(evicted, &mut f);
            }
        }
        if f.shed.is_none() {
            let task =
                |kind| Task { set: f.id, stamp: f.job.stamp, hard: f.hard, shed: f.flag.clone(), probe: false, kind };
            let mut tasks = vec![];
            if plan.run_detector {
                tasks.push(task(TaskKind::Detector { frames: f.job.detector_frames(), reduced: plan.reduced }));
            }
            if let Some(points) = f.job.lidar() {
                tasks.push(task(TaskKind::Lidar {
                    points,
                    omega: f.job.omega(),
                    velocity: f.job.velocity(),
                    coarse: plan.coarse,
                }));
            }
            if plan.run_radar {
                tasks.push(task(TaskKind::Radar { targets: f.job.radar().expect("radar member") }));
            }
            f.pending = tasks.len();
            for t in tasks {
                // Perception stages only: none of them runs on the fusion thread.
                let queue = if t.kind.stage().thread() == StageThread::Inference { &self.inference } else { &self.cpu };
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
        let cpu_work = if f.job.has_lidar() { clu } else { 0 } + if run_radar { rad } else { 0 };
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
                    f.perception.cameras = c;
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
        for (i, m) in self.mailboxes.iter().enumerate() {
            st.mailbox_len[i] = m.len();
            let key = format!("dropped.superseded.{}", st.sensors[i]);
            st.counters.insert(key, m.superseded());
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

/// What dispatch decided for a set (see `Coordinator::plan`).
struct DispatchPlan {
    /// The whole set is shed (it would miss its hard deadline).
    shed: Option<Shed>,
    /// The detector was left out so the rest could make the deadline.
    stage_shed: bool,
    /// Run the detector on this frame anyway, as a probe nobody waits for.
    probe: bool,
    run_detector: bool,
    run_radar: bool,
    /// The detector at its reduced input (a degradation rung).
    reduced: bool,
    /// Coarse LiDAR clustering (a degradation rung).
    coarse: bool,
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
    PerSensor(Arc<[Mailbox<M>]>),
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
        let stats = Arc::new(Mutex::new(SchedStats::new(pipeline.sensors())));
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
        let sensors = pipeline.sensors().clone();
        let mailboxes: Arc<[Mailbox<M>]> = sensors
            .ids()
            .map(|id| match sensors.kind(id) {
                Sensor::Imu => Mailbox::new(cfg.imu_mailbox_depth),
                _ => Mailbox::new(cfg.mailbox_depth),
            })
            .collect();
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
        let stats = Arc::new(Mutex::new(SchedStats::new(pipeline.sensors())));
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
                            let mut st = st.lock().expect("stats");
                            let key = format!("rejected.{}.{reason}", st.name(sensor));
                            st.add(key, 1);
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
        {
            let mut st = self.stats.lock().expect("stats");
            let Some(received) = st.received.get_mut(sensor.index()) else {
                // Not a sensor of the set this executor was built for: counted, not routed.
                st.add("dropped.undeclared_sensor", 1);
                return;
            };
            *received += 1;
        }
        match &self.inbox {
            Inbox::PerSensor(mailboxes) => {
                mailboxes[sensor.index()].post(msg);
            }
            Inbox::Fifo(queue) => {
                queue.post_evicting(msg, |old| {
                    let mut st = self.stats.lock().expect("stats");
                    let reason = format!("dropped.queue_full.{}", st.name(old.sensor()));
                    st.add(reason, 1);
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
