//! The scheduler's decisions: EDF order and admission on synthetic jobs with a deterministic
//! clock, bounded latest-wins mailboxes, the degradation ladder's hysteresis (scripted
//! slack, and scripted detector load through the real executor), the real-time fallback.
use fusion::{
    anomaly::Event,
    calib::Calibration,
    camera::Rgb8,
    detect::{CameraDetector, DetectError, Detection2d, Label},
    pipeline::{Input, Pipeline, PipelineParams, SetOutput},
    sched::*,
    LidarPoint, RadarTarget, Sensor, SensorId, StampNs,
};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const MS: i64 = 1_000_000;

/// A synthetic job: released at 0, known execution time, hard deadline.
struct Job {
    name: &'static str,
    deadline: StampNs,
    exec: i64,
}

/// Runs jobs on one simulated processor with the scheduler's parts: EDF queue, execution
/// statistics seeded with the known times, admission before each start, a manual clock.
fn simulate(jobs: &[Job]) -> (Vec<&'static str>, Vec<(&'static str, Shed)>, Vec<StampNs>) {
    let clock = ManualClock::default();
    let mut stats = ExecStats::new([0; STAGES], 100, 1);
    let mut q = EdfQueue::new(16);
    for (i, j) in jobs.iter().enumerate() {
        stats.record(Stage::Detector, (j.exec / 1000) as u64);
        assert!(q.push(j.deadline, i).is_none());
    }
    let (mut ran, mut shed, mut finished) = (vec![], vec![], vec![]);
    while let Some((deadline, i)) = q.pop() {
        let j = &jobs[i];
        // Known execution time of this job (its own; the p99 of identical jobs).
        match admit(clock.now(), deadline, Stage::Detector, j.exec, 0) {
            Ok(()) => {
                clock.advance(j.exec);
                ran.push(j.name);
                finished.push(clock.now());
            }
            Err(s) => shed.push((j.name, s)),
        }
    }
    (ran, shed, finished)
}

#[test]
fn edf_runs_earliest_deadline_first_and_sheds_what_would_miss() {
    let jobs = [
        Job { name: "a", deadline: 100 * MS, exec: 30 * MS },
        Job { name: "b", deadline: 50 * MS, exec: 20 * MS },
        Job { name: "c", deadline: 60 * MS, exec: 30 * MS },
        Job { name: "d", deadline: 70 * MS, exec: 30 * MS },
    ];
    let (ran, shed, finished) = simulate(&jobs);
    // b (0–20), c (20–50); d would end at 80 > 70: shed, not started; a (50–80).
    assert_eq!(ran, ["b", "c", "a"]);
    assert_eq!(shed, [("d", Shed::PredictedMiss(Stage::Detector))]);
    assert_eq!(finished, [20 * MS, 50 * MS, 80 * MS]);
    assert!(finished
        .iter()
        .zip(["b", "c", "a"])
        .all(|(t, n)| *t <= jobs.iter().find(|j| j.name == n).unwrap().deadline));
    assert_eq!(shed[0].1.reason(), "shed.predicted_miss.detector");

    // In FIFO order the same set misses two deadlines (a 30, b 50 ok, c 80 > 60, d 110 > 70).
    let mut t = 0;
    let fifo_misses = jobs
        .iter()
        .filter(|j| {
            t += j.exec;
            t > j.deadline
        })
        .count();
    assert_eq!(fifo_misses, 2);
}

#[test]
fn admission_sheds_past_deadline_and_counts_remaining_stages() {
    assert_eq!(admit(101, 100, Stage::Clustering, 0, 0), Err(Shed::PastDeadline(Stage::Clustering)));
    assert_eq!(admit(0, 100, Stage::Detector, 60, 40), Ok(()));
    // The stages after this one count: 60 + 41 > 100.
    assert_eq!(admit(0, 100, Stage::Detector, 60, 41), Err(Shed::PredictedMiss(Stage::Detector)));
    // Ties in deadline keep queue order.
    let mut q = EdfQueue::new(8);
    for (d, n) in [(5, "x"), (3, "y"), (5, "z"), (3, "w")] {
        q.push(d, n);
    }
    let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, n)| n)).collect();
    assert_eq!(order, ["y", "w", "x", "z"]);
}

#[test]
fn exec_stats_predict_p99_and_follow_a_change() {
    let mut s = ExecStats::new([7_000; STAGES], 100, 20);
    // Unmeasured: the prior.
    assert_eq!(s.predict_ns(Stage::Tracking), 7 * MS);
    for i in 0..100 {
        s.record(Stage::Detector, if i == 99 { 40_000 } else { 10_000 });
    }
    let p = s.predict_ns(Stage::Detector);
    assert!((9_900_000..=10_100_000).contains(&p), "p99 of 99×10 ms + 1×40 ms: {p}");
    // A cheaper regime (reduced input) takes over within two windows.
    for _ in 0..200 {
        s.record(Stage::Detector, 2_500);
    }
    let p = s.predict_ns(Stage::Detector);
    assert!((2_400_000..=2_600_000).contains(&p), "{p}");
    assert_eq!(s.predict_all_ns(&Stage::FUSE), 3 * 7 * MS);
}

#[test]
fn edf_queue_is_bounded_and_evicts_the_stalest() {
    let mut q = EdfQueue::new(3);
    for d in [30, 10, 20] {
        assert!(q.push(d, d).is_none());
    }
    // Full: the earliest deadline goes.
    assert_eq!(q.push(40, 40), Some((10, 10)));
    assert_eq!(q.len(), 3);
    for d in 50..1000 {
        q.push(d, d);
        assert!(q.len() <= 3);
    }
    assert_eq!(q.pop(), Some((997, 997)));
}

#[test]
fn latest_wins_mailboxes_never_grow() {
    let mb = Arc::new(Mailbox::new(2));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mb = mb.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    mb.post((w, i));
                    assert!(mb.len() <= 2);
                }
            })
        })
        .collect();
    let mut taken = 0u64;
    let reader_mb = mb.clone();
    let reader = std::thread::spawn(move || {
        let mut last = [None::<u64>; 2];
        for _ in 0..5_000 {
            if let Some((w, i)) = reader_mb.try_take() {
                // Per writer, what comes out is in order (latest wins, never reordered).
                assert!(last[w as usize].is_none_or(|l| i > l));
                last[w as usize] = Some(i);
                taken += 1;
            }
            assert!(reader_mb.len() <= 2);
        }
        taken
    });
    for w in writers {
        w.join().unwrap();
    }
    let taken = reader.join().unwrap();
    assert!(mb.len() <= 2 && mb.capacity() == 2);
    // Everything posted was either taken, superseded (counted) or is still there.
    assert_eq!(taken + mb.superseded() + mb.len() as u64, 40_000);
    // A single writer's mailbox keeps exactly its last `depth` messages.
    let one = Mailbox::new(3);
    for i in 0..100 {
        one.post(i);
    }
    assert_eq!(std::iter::from_fn(|| one.try_take()).collect::<Vec<_>>(), [97, 98, 99]);
    assert_eq!(one.superseded(), 97);
}

#[test]
fn degradation_engages_and_recovers_with_hysteresis() {
    let cfg = DegradeConfig {
        window: 10,
        engage_slack_ns: 5 * MS,
        recover_slack_ns: 20 * MS,
        recover_windows: 3,
        ..DegradeConfig::default()
    };
    let mut d = Degradation::new(cfg);
    let mut levels = vec![];
    let mut run = |d: &mut Degradation, slack_ms: i64, sets: usize| {
        for _ in 0..sets {
            d.observe(slack_ms * MS);
        }
        levels.push(d.level());
    };
    run(&mut d, 30, 50); // comfortable: stays nominal
    run(&mut d, -5, 10); // one bad window: one rung
    run(&mut d, 2, 10); // slack below engage: next rung
    run(&mut d, 12, 100); // between the thresholds: holds (hysteresis)
    run(&mut d, 30, 20); // two good windows: not yet
    run(&mut d, 30, 10); // third: one rung back
    run(&mut d, 30, 30); // three more: nominal
    assert_eq!(levels, [0, 1, 2, 2, 2, 1, 0]);
    assert_eq!(d.max_level, 2);
    assert_eq!(d.changes, 4);
    // A shed set alone engages, whatever the slack of the others; the ladder tops out.
    for _ in 0..10 {
        for _ in 0..9 {
            d.observe(50 * MS);
        }
        d.observe_shed();
    }
    assert_eq!(d.level(), 4);
    assert_eq!(d.describe(), "coarse_lidar_clustering");
    assert!(d.active(Rung::SkipDetectorAlternate) && d.active(Rung::CoarseLidarClustering));
    assert_eq!(
        parse_ladder("skip_radar_association, reduce_detector_input").unwrap(),
        [Rung::SkipRadarAssociation, Rung::ReduceDetectorInput]
    );
    assert!(parse_ladder("faster_please").is_err());
}

// ---- real-time fallback ---------------------------------------------------------------

const CAP_SYS_NICE: u32 = 23;

/// Drops CAP_SYS_NICE from the calling thread's effective set (capabilities are per
/// thread on Linux; the raw syscall touches only this one).
fn drop_sys_nice_on_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0, "capget");
        d[0].effective &= !(1 << CAP_SYS_NICE);
        d[0].permitted &= !(1 << CAP_SYS_NICE);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0, "capset");
    }
}

#[test]
fn real_time_falls_back_to_normal_scheduling_without_the_capability() {
    std::thread::spawn(|| {
        drop_sys_nice_on_this_thread();
        // Without CAP_SYS_NICE only RLIMIT_RTPRIO allows RT priorities: ask above it.
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        unsafe { libc::getrlimit(libc::RLIMIT_RTPRIO, &mut lim) };
        if lim.rlim_cur < 99 {
            let cfg = RtConfig { policy: Policy::Fifo, priority: lim.rlim_cur as i32 + 1, ..RtConfig::default() };
            match apply_rt(&cfg, 0) {
                RtOutcome::Fallback(why) => assert!(why.contains("SCHED_FIFO"), "{why}"),
                other => panic!("expected a fallback, got {other:?}"),
            }
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER, "still normal scheduling");
        }
        // CPUs the machine does not have: the affinity falls back too, and the thread keeps running.
        let cfg = RtConfig { cpus: vec![1000], ..RtConfig::default() };
        assert!(matches!(apply_rt(&cfg, 0), RtOutcome::Fallback(w) if w.contains("affinity")));
        assert_eq!(apply_rt(&RtConfig::default(), 0), RtOutcome::NotRequested);
    })
    .join()
    .unwrap();
}

#[test]
fn real_time_applies_where_permitted() {
    std::thread::spawn(|| {
        let cfg = RtConfig { policy: Policy::RoundRobin, priority: 5, cpus: vec![0], mlockall: false };
        match apply_rt(&cfg, 0) {
            RtOutcome::Applied => {
                assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_RR);
                let mut p = libc::sched_param { sched_priority: 0 };
                unsafe { libc::sched_getparam(0, &mut p) };
                assert_eq!(p.sched_priority, 5);
            }
            // A container without CAP_SYS_NICE: the fallback path, still no failure.
            RtOutcome::Fallback(why) => assert!(why.contains("SCHED_RR"), "{why}"),
            RtOutcome::NotRequested => panic!("RR was requested"),
        }
    })
    .join()
    .unwrap();
    assert_eq!(parse_cpus("0, 2").unwrap(), [0, 2]);
    assert!(parse_cpus("x").is_err() && "deadline".parse::<Policy>().is_err());
}

// ---- the executor under scripted load ------------------------------------------------

/// A detector whose cost follows a script of (until this many runs, full ms, reduced ms).
struct ScriptedDetector {
    script: Vec<(usize, u64, u64)>,
    runs: usize,
    reduced: bool,
}

impl CameraDetector for ScriptedDetector {
    fn name(&self) -> &str {
        "scripted"
    }
    fn detect(&mut self, _: StampNs, _: &Rgb8) -> Result<Vec<Detection2d>, DetectError> {
        let (_, full, reduced) =
            *self.script.iter().find(|(n, _, _)| self.runs < *n).unwrap_or(self.script.last().unwrap());
        self.runs += 1;
        std::thread::sleep(Duration::from_millis(if self.reduced { reduced } else { full }));
        Ok(vec![Detection2d { label: Label::Person, score: 0.9, bbox: [10.0, 10.0, 20.0, 40.0] }])
    }
    fn set_reduced_input(&mut self, reduced: bool) -> bool {
        self.reduced = reduced;
        true
    }
}

struct Msg(Input);

/// A camera frame and a LiDAR sweep of the standard robot, both stamped `t`.
fn post_frame_and_sweep(exec: &Executor<Msg>, t: StampNs, image: &Arc<Rgb8>, points: &Arc<Vec<LidarPoint>>) {
    let camera = SensorId::standard(Sensor::Camera);
    exec.post(Msg(Input::Camera { sensor: camera, stamp: t, image: image.clone(), intrinsics: None }));
    let lidar = SensorId::standard(Sensor::Lidar);
    exec.post(Msg(Input::Lidar { sensor: lidar, stamp: t, points: points.clone(), non_finite: 0, total: 0 }));
}

impl Message for Msg {
    fn sensor(&self) -> SensorId {
        self.0.sensor()
    }
    fn stamp(&self) -> StampNs {
        self.0.stamp()
    }
}

#[derive(Default)]
struct Recorded {
    published: Vec<(StampNs, i64)>,
    partial: usize,
    events: usize,
}

struct Recorder(Arc<Mutex<Recorded>>);

impl Sink for Recorder {
    fn publish(&mut self, set: &SetOutput, latency_ns: i64) {
        let mut rec = self.0.lock().unwrap();
        rec.published.push((set.stamp, latency_ns));
        rec.partial += set.partial as usize;
    }
    fn events(&mut self, events: &[Event]) {
        self.0.lock().unwrap().events += events.len();
    }
}

#[test]
fn executor_degrades_under_scripted_overload_and_recovers_without_late_publications() {
    let origin = Instant::now();
    let clock: Clock = Arc::new(move || origin.elapsed().as_nanos() as i64);
    // 10 Hz sets with a camera frame each: 30 detector runs of 20 ms, 20 of 150 ms
    // (75 ms reduced: overload even degraded until rungs stack up), then 20 ms again.
    let detector =
        ScriptedDetector { script: vec![(30, 20, 10), (50, 150, 40), (usize::MAX, 20, 10)], runs: 0, reduced: false };
    let pipeline = Pipeline::new(PipelineParams::default(), &Calibration::default(), Some(Box::new(detector)));
    let cfg = SchedConfig {
        degrade: DegradeConfig { window: 5, recover_windows: 2, ..DegradeConfig::default() },
        prior_us: [500, 20_000, 5_000, 2_000, 500, 500, 500, 500],
        ..SchedConfig::default()
    };
    let rec = Arc::new(Mutex::new(Recorded::default()));
    let exec =
        Executor::spawn_edf(pipeline, Box::new(|m: Msg| Ok(m.0)), Recorder(rec.clone()), clock.clone(), cfg).unwrap();
    let stats = exec.stats();
    let image = Arc::new(Rgb8 { width: 64, height: 48, data: vec![90; 64 * 48 * 3] });
    let points: Arc<Vec<LidarPoint>> = Arc::new(
        (0..400).map(|i| [10.0 + (i % 20) as f32 * 0.05, (i / 20) as f32 * 0.05, 0.5, 1.0, 0.0].into()).collect(),
    );
    let targets: Arc<Vec<RadarTarget>> =
        Arc::new(vec![[10.2, 0.4, 0.5, -1.0, 5.0].into(), [10.3, 0.5, 0.5, -1.0, 5.0].into()]);
    let mut max_level = 0;
    for k in 0..160 {
        let t = clock();
        post_frame_and_sweep(&exec, t, &image, &points);
        exec.post(Msg(Input::Radar { sensor: SensorId::standard(Sensor::Radar), stamp: t, targets: targets.clone() }));
        std::thread::sleep(Duration::from_millis(100));
        max_level = max_level.max(stats.lock().unwrap().level);
        if k == 159 {
            break;
        }
    }
    let end_level = stats.lock().unwrap().level;
    let s = exec.shutdown();
    let rec = rec.lock().unwrap();
    assert!(rec.published.len() >= 100, "published {} of 160", rec.published.len());
    let late: Vec<_> = rec.published.iter().filter(|(_, l)| *l > 100 * MS).collect();
    assert!(late.is_empty(), "published past the hard deadline: {late:?}");
    assert!(max_level >= 2, "the overload moved the ladder to {max_level}");
    assert_eq!(end_level, 0, "recovered once the load was gone: {:?}", s.counters);
    assert!(s.count("degraded.detector_skipped") > 0, "{:?}", s.counters);
    assert!(s.count("degradation.changes") >= 4);
    // Every released set was published, shed (with a reason) or withheld at the deadline.
    assert_eq!(s.count("sets.published") as usize, rec.published.len());
    assert_eq!(
        s.count("sets.released"),
        s.count("sets.published") + s.count("sets.shed") + s.count("dropped.hard_deadline")
    );
    assert_eq!(s.count("sets.shed"), s.total("shed."), "every shed set has a reason: {:?}", s.counters);
    assert!(s.e2e_total.max() <= 100_000, "{}", s.e2e_total.max());
}

/// A detector that runs a data-parallel kernel on rayon's global pool, as burn-flex and gemm
/// do, and records the scheduling policy of its own thread and of every pool thread.
struct ParallelKernelDetector(Arc<Mutex<(Vec<i32>, Vec<i32>)>>);

impl CameraDetector for ParallelKernelDetector {
    fn name(&self) -> &str {
        "parallel-kernel"
    }
    fn detect(&mut self, _: StampNs, _: &Rgb8) -> Result<Vec<Detection2d>, DetectError> {
        // SAFETY (both): plain syscalls on the calling thread.
        let caller = unsafe { libc::sched_getscheduler(0) };
        let pool = rayon::broadcast(|_| unsafe { libc::sched_getscheduler(0) });
        let mut seen = self.0.lock().unwrap();
        seen.0.push(caller);
        seen.1.extend(pool);
        Ok(vec![])
    }
}

#[test]
fn the_detector_kernels_run_on_normal_scheduling_under_a_real_time_scheduler() {
    // rayon builds its pool at the first parallel kernel, and a thread inherits its creator's
    // policy: the SCHED_FIFO inference thread used to create it, so the network ran at
    // real-time priority on every core and a long inference starved the ingest nodes (2 s in
    // one CI run). The scheduler builds the pool on normal scheduling first.
    let origin = Instant::now();
    let clock: Clock = Arc::new(move || origin.elapsed().as_nanos() as i64);
    let seen = Arc::new(Mutex::new((vec![], vec![])));
    let detector = ParallelKernelDetector(seen.clone());
    let pipeline = Pipeline::new(PipelineParams::default(), &Calibration::default(), Some(Box::new(detector)));
    let cfg = SchedConfig {
        rt: RtConfig { policy: Policy::Fifo, priority: 5, ..RtConfig::default() },
        ..SchedConfig::default()
    };
    let rec = Arc::new(Mutex::new(Recorded::default()));
    let exec = Executor::spawn_edf(pipeline, Box::new(|m: Msg| Ok(m.0)), Recorder(rec), clock.clone(), cfg).unwrap();
    let image = Arc::new(Rgb8 { width: 64, height: 48, data: vec![90; 64 * 48 * 3] });
    let points: Arc<Vec<LidarPoint>> = Arc::new(vec![[10.0, 0.0, 0.5, 1.0, 0.0].into(); 50]);
    for _ in 0..10 {
        let t = clock();
        post_frame_and_sweep(&exec, t, &image, &points);
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = exec.shutdown();
    let (callers, pool) = &*seen.lock().unwrap();
    assert!(!callers.is_empty(), "the detector ran");
    assert_eq!(pool.len(), callers.len() * rayon::current_num_threads());
    assert!(pool.iter().all(|&p| p == libc::SCHED_OTHER), "kernel threads' policies: {pool:?}");
    // Where real-time is permitted (root, CAP_SYS_NICE), the inference thread itself is.
    if stats.rt.get("inference") == Some(&RtOutcome::Applied) {
        assert!(callers.iter().all(|&p| p == libc::SCHED_FIFO), "{callers:?}");
    }
}

#[test]
fn both_executors_count_the_partial_sets_they_publish() {
    // Camera and LiDAR at 10 Hz, the radar silent: every set goes out partial (missing
    // radar), in time, and /diagnostics' `sets.partial` says so under either scheduler.
    let origin = Instant::now();
    let clock: Clock = Arc::new(move || origin.elapsed().as_nanos() as i64);
    let image = Arc::new(Rgb8 { width: 64, height: 48, data: vec![90; 64 * 48 * 3] });
    let points: Arc<Vec<LidarPoint>> = Arc::new(
        (0..100).map(|i| [10.0 + (i % 10) as f32 * 0.05, (i / 10) as f32 * 0.05, 0.5, 1.0, 0.0].into()).collect(),
    );
    for fifo in [false, true] {
        let pipeline = Pipeline::new(PipelineParams::default(), &Calibration::default(), None);
        let rec = Arc::new(Mutex::new(Recorded::default()));
        let (preprocess, sink) = (Box::new(|m: Msg| Ok(m.0)), Recorder(rec.clone()));
        let exec = if fifo {
            Executor::spawn_fifo(pipeline, preprocess, sink, clock.clone(), SchedConfig::default())
        } else {
            Executor::spawn_edf(pipeline, preprocess, sink, clock.clone(), SchedConfig::default())
        }
        .unwrap();
        for k in 0..15 {
            let t = clock();
            post_frame_and_sweep(&exec, t, &image, &points);
            if k == 5 {
                // A live change reaches the thread that owns the pipeline; a start-up one and
                // an out-of-range one are refused at the call.
                exec.set_param("anomaly.ttc_threshold_s", 2.5).unwrap();
                assert!(exec.set_param("sync.wait_ms", 10.0).is_err());
                assert!(exec.set_param("anomaly.ttc_threshold_s", -1.0).is_err());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let s = exec.shutdown();
        let rec = rec.lock().unwrap();
        let name = if fifo { "fifo" } else { "edf" };
        assert!(rec.partial >= 10, "{name}: {} partial of {} published", rec.partial, rec.published.len());
        assert_eq!(s.count("sets.partial") as usize, rec.partial, "{name}: {:?}", s.counters);
        assert_eq!(s.count("sets.published") as usize, rec.published.len(), "{name}");
        // Released on the clock once the radar's wait is over, not when the next frame
        // comes 100 ms later: no set reaches the hard deadline.
        let late: Vec<_> = rec.published.iter().filter(|(_, l)| *l > 100 * MS).collect();
        assert!(late.is_empty() && s.count("deadline.hard_misses") == 0, "{name}: {late:?} {:?}", s.counters);
        assert_eq!((s.count("params.applied"), s.count("params.refused")), (1, 0), "{name}: {:?}", s.counters);
    }
}

#[test]
fn trace_keeps_the_newest_runs_in_a_bounded_ring_and_writes_chrome_json() {
    let t = TraceRecorder::new(3);
    let t0 = Instant::now();
    for i in 0..5i64 {
        let start = t0 + Duration::from_millis(i as u64 * 10);
        t.span(
            "detector",
            TID_INFERENCE,
            start,
            start + Duration::from_millis(4),
            i,
            if i == 4 { "reduced" } else { "" },
        );
    }
    assert_eq!((t.len(), t.dropped()), (3, 2));
    let path = std::env::temp_dir().join(format!("trace_{}.json", std::process::id()));
    t.write(&path).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).ok();
    let spans: Vec<_> = doc["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X").collect();
    // The newest three, in order, 4 ms long, on the inference row.
    assert_eq!(spans.iter().map(|e| e["args"]["set_stamp_ns"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3, 4]);
    assert!(spans.iter().all(|e| (e["dur"].as_f64().unwrap() - 4000.0).abs() < 1.0 && e["tid"] == TID_INFERENCE));
    assert_eq!(spans[2]["args"]["outcome"], "reduced");
    assert_eq!(doc["otherData"]["overwritten_events"], 2);
}
