//! summarizer: /anomaly/events → one plain-English summary per burst of events, on
//! /anomaly/summary (std_msgs/String) and /anomaly/summary_detailed (fusion_msgs/AnomalySummary).
//!
//! The language model (models::llm, Burn; SmolLM2-135M-Instruct GGUF by default) runs on a
//! worker thread of this process; at start every thread of the process is lowered to the
//! lowest CPU priority (SCHED_IDLE, nice 19) so it can never take CPU from perception. Each summary has its own
//! deadline; when the model misses it, could not be loaded, or answers with empty, garbage or
//! ungrounded text, the deterministic template summary is published instead, flagged
//! `fallback` with the reason. A summary is never lost. How events become summaries (bursts,
//! queue overflow, shutdown) and the worker thread are the ROS-free service in
//! sensor_fusion::summarizer, which `fusion_replay --summaries` runs too; this file is ROS.
//!
//! It also answers `/anomaly/explain` (fusion_msgs/Explain) for the events it has received:
//! the rule, the measured value against its threshold, the evidence and the nearest
//! counterfactual (models::llm::explain); and with `speak` on, it speaks each summary into a
//! WAV file named on `/anomaly/summary_audio_path` (sensor_fusion::speech).
//!
//! Every accepted event is journaled (sensor_fusion::pending) until its summary is published,
//! so a summarizer killed and respawned still summarizes what it had accepted; fusion_node
//! publishes `/anomaly/events` transient-local, so the events sent while it was down are
//! handed to the new process too, and the journal keeps any event from being summarized
//! twice.
use anyhow::{Context as _, Result};
use models::llm::explain::{self, Explanation, Query};
use models::llm::summary::{EventInfo, Summarizer, SummarizerConfig, Summary};
use models::llm::Sampling;
use r2r::{
    diagnostic_msgs::msg::DiagnosticArray,
    fusion_msgs::msg::{AnomalyEvent, AnomalySummary},
    fusion_msgs::srv::Explain,
    std_msgs::msg::{Header, String as StringMsg},
    QosProfile,
};
use sensor_fusion::config::SummarizerNodeConfig;
use sensor_fusion::graph;
use sensor_fusion::messages::event_info;
use sensor_fusion::pending::PendingStore;
use sensor_fusion::ros::{self, Params};
use sensor_fusion::speech::{Speaker, SpeechConfig};
use sensor_fusion::summarizer::{
    load_summarizer, spawn_worker, Accepted, BurstSummarizer, Intaken, ModelChoice, Stats, Written,
};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Events parked when the worker's queue is full; they get template summaries.
const OVERFLOW_LIMIT: usize = 1024;
/// Explanation requests waiting for the model; beyond this they are answered with the
/// template at once.
const EXPLAIN_QUEUE: usize = 4;
/// Summaries waiting to be spoken; beyond this one is not spoken (counted).
const SPEECH_QUEUE: usize = 16;

type ExplainRequest = r2r::ServiceRequest<Explain::Service>;

/// Lowest CPU priority for every thread of the process (rcl/DDS and tokio threads exist
/// already; threads created later inherit it from their creator).
fn lower_priority() -> Result<usize, String> {
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut n = 0;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: plain libc calls on a thread of this process with valid arguments.
        unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
                return Err(format!("SCHED_IDLE: {}", std::io::Error::last_os_error()));
            }
            if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) != 0 {
                return Err(format!("nice 19: {}", std::io::Error::last_os_error()));
            }
        }
        n += 1;
    }
    Ok(n)
}

fn summary_msg(s: &Summary, frame_id: &str) -> AnomalySummary {
    AnomalySummary {
        header: Header { stamp: ros::to_time(s.stamp_ns), frame_id: frame_id.into() },
        event_ids: s.event_ids.clone(),
        kinds: s.kinds.clone(),
        text: s.text.clone(),
        model: s.model.clone(),
        generation_time_s: s.generation_time_s,
        tokens_generated: s.tokens_generated,
        fallback: s.fallback,
        fallback_reason: s.fallback_reason.clone(),
    }
}

fn explain_response(x: &Explanation) -> Explain::Response {
    Explain::Response {
        success: true,
        message: format!("{} event(s) explained", x.events.len()),
        event_ids: x.events.iter().map(|e| e.event_id).collect(),
        kinds: x.events.iter().map(|e| e.kind.clone()).collect(),
        rules: x.events.iter().map(|e| e.rule.clone()).collect(),
        measured_values: x.events.iter().map(|e| e.measured_value).collect(),
        thresholds: x.events.iter().map(|e| e.threshold).collect(),
        counterfactuals: x.events.iter().map(|e| e.counterfactual.clone()).collect(),
        text: x.text.clone(),
        model: x.model.clone(),
        fallback: x.fallback,
        fallback_reason: x.fallback_reason.clone(),
    }
}

/// `$ROS_HOME/sensor_fusion/<sub>`, ROS_HOME defaulting to `~/.ros` as ROS 2 does.
fn ros_home_dir(sub: &str) -> String {
    let ros_home = std::env::var("ROS_HOME")
        .unwrap_or_else(|_| format!("{}/.ros", std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())));
    format!("{ros_home}/sensor_fusion/{sub}")
}

/// The journal of this node: one file per fully qualified node name, so namespaced
/// summarizers (one per robot) keep theirs apart.
fn journal_path(state_dir: &str, fully_qualified_name: &str) -> std::path::PathBuf {
    let dir = if state_dir.is_empty() { ros_home_dir("summarizer") } else { state_dir.to_string() };
    let name = fully_qualified_name.trim_start_matches('/').replace('/', "__");
    std::path::Path::new(&dir).join(format!("{name}.pending.jsonl"))
}

/// The journal of accepted, not yet summarized events (`None`: persist_pending is off), and
/// the events an earlier process accepted and did not summarize. Without a journal (disabled,
/// or it cannot be opened) summaries go on; only a kill would lose the pending ones.
fn open_journal(
    path: Option<std::path::PathBuf>,
    stats: &Mutex<Stats>,
) -> (Option<PendingStore>, Vec<(EventInfo, String)>) {
    let Some(path) = path else { return (None, Vec::new()) };
    stats.lock().expect("stats").journal_path = path.display().to_string();
    match PendingStore::open(&path, true) {
        Ok((store, restored)) => {
            if !restored.pending.is_empty() || restored.unreadable_lines > 0 {
                tracing::warn!(
                    "{}: {} event(s) accepted before a restart and not yet summarized; summarizing them now{}",
                    path.display(),
                    restored.pending.len(),
                    match restored.unreadable_lines {
                        0 => String::new(),
                        n => format!(" ({n} unreadable line(s) skipped)"),
                    }
                );
            }
            (Some(store), restored.pending)
        }
        Err(e) => {
            tracing::error!("pending events will not survive a restart: {e:#}");
            stats.lock().expect("stats").journal_failed(format!("{e:#}"));
            (None, Vec::new())
        }
    }
}

/// Speech (`speak`): a thread of its own, so writing a WAV never holds up the next summary;
/// each file's path goes out on /anomaly/summary_audio_path. Returns the bounded queue to it.
fn spawn_speech(
    node: &mut r2r::Node,
    speech: SpeechConfig,
    stats: Arc<Mutex<Stats>>,
) -> Result<crossbeam_channel::Sender<(u64, String)>> {
    let mut speaker = Speaker::new(speech)?;
    tracing::info!("speak: summaries spoken into {}", speaker.dir().display());
    let audio_pub =
        node.create_publisher::<StringMsg>(graph::SUMMARY_AUDIO.name, graph::SUMMARY_AUDIO.qos.profile())?;
    let (tx, rx) = crossbeam_channel::bounded::<(u64, String)>(SPEECH_QUEUE);
    std::thread::Builder::new().name("summarizer-speech".into()).spawn(move || {
        for (first_event, text) in rx {
            match speaker.speak(first_event, &text) {
                Ok(path) => {
                    stats.lock().expect("stats").speech_files += 1;
                    let data = path.display().to_string();
                    if let Err(e) = audio_pub.publish(&StringMsg { data }) {
                        tracing::warn!("publish /anomaly/summary_audio_path failed: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!("speak: {e:#}");
                    let mut st = stats.lock().expect("stats");
                    st.speech_failed += 1;
                    st.speech_error = format!("{e:#}");
                }
            }
        }
    })?;
    Ok(tx)
}

fn main() -> Result<()> {
    ros::init_process();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let mut node = ros::create_node("summarizer")?;
    let node_name = ros::node_label(&node)?;
    // Every parameter, typed, with the params files' and `-p` values, checked at once.
    let mut config = SummarizerNodeConfig::default();
    ros::declare_config(&node, &mut config)?;
    let c = &config;
    Params::of(&node).bool("use_sim_time", false)?;
    let lowest_priority = c.lowest_priority;
    let backend: models::Backend = c.backend.parse().context("parameter backend")?;
    let weights = match c.weights.as_str() {
        "" => None,
        w => Some(w.parse().context("parameter weights")?),
    };
    let threads = match c.threads {
        0 => None,
        n => Some(n as usize),
    };
    let deadline_s = c.deadline;
    let max_tokens = (c.max_tokens as usize).max(1);
    let window_s = c.coalesce_window;
    let max_events = (c.max_events_per_summary as usize).max(1);
    let temperature = c.temperature as f32;
    let top_p = c.top_p as f32;
    let seed = c.seed as u64;
    let candidates = c.candidates.clamp(1, 16) as usize;
    let per_event = c.per_event;
    let queue_size = (c.queue_size as usize).max(1);
    let diagnostics_period = c.diagnostics_period;
    let explain_history = (c.explain_history as usize).max(1);
    let explain_deadline = sensor_fusion::seconds("parameter explain_deadline", c.explain_deadline)?;
    let persist_pending = c.persist_pending;
    let state_dir = c.state_dir.clone();
    let speak = c.speak;
    let speech = SpeechConfig {
        dir: match c.speak_dir.as_str() {
            "" => ros_home_dir("speech"),
            d => d.to_string(),
        }
        .into(),
        voice: c.speak_voice.clone(),
        words_per_minute: c.speak_rate.clamp(80, 450) as u32,
        keep_files: (c.speak_keep_files as usize).max(1),
        play: c.speak_play,
    };
    if lowest_priority {
        match lower_priority() {
            Ok(n) => tracing::info!("running at the lowest CPU priority (SCHED_IDLE, nice 19; {n} threads)"),
            Err(e) => tracing::warn!("could not lower the CPU priority: {e}"),
        }
    }

    let choice =
        ModelChoice { model: config.model.clone(), sha256: config.model_sha256.clone(), backend, weights, threads };
    let sampling = if temperature > 0.0 { Sampling::TopP { temperature, top_p, seed } } else { Sampling::Greedy };
    let summarizer = load_summarizer(
        &choice,
        SummarizerConfig {
            deadline: sensor_fusion::seconds("parameter deadline", deadline_s)?,
            max_tokens,
            sampling,
            candidates,
            per_event,
        },
    );
    let stats = Arc::new(Mutex::new(Stats::new(
        summarizer.model_name().unwrap_or_default(),
        summarizer.load_error().unwrap_or_default(),
        speak,
    )));
    let journal_file = match persist_pending {
        true => Some(journal_path(&state_dir, &node.fully_qualified_name()?)),
        false => None,
    };
    let (journal, restored) = open_journal(journal_file, &stats);
    let journal = Arc::new(Mutex::new(journal));

    // Events are rare and must not be lost: reliable, deep history, transient-local as
    // fusion_node publishes them, so a respawned summarizer gets what it missed.
    let events = node.subscribe::<AnomalyEvent>(graph::ANOMALY_EVENTS.name, graph::ANOMALY_EVENTS.qos.profile())?;
    // Summaries are transient-local too: a restarted summarizer publishes the summaries of
    // its restored events at once, usually before the subscribers' DDS participants have
    // discovered the new process (measured: 1-3 s here); a transient-local subscriber (an
    // operator display, rosbag2 record) is handed them when it matches instead of losing them.
    let summary_pub = node.create_publisher::<StringMsg>(graph::SUMMARY.name, graph::SUMMARY.qos.profile())?;
    let detailed_pub =
        node.create_publisher::<AnomalySummary>(graph::SUMMARY_DETAILED.name, graph::SUMMARY_DETAILED.qos.profile())?;
    let diagnostics =
        node.create_publisher::<DiagnosticArray>(graph::DIAGNOSTICS.name, graph::DIAGNOSTICS.qos.profile())?;
    let explain_service = node.create_service::<Explain::Service>(graph::EXPLAIN.name, QosProfile::default())?;
    let speech_tx = match speak {
        true => Some(spawn_speech(&mut node, speech, stats.clone())?),
        false => None,
    };
    // Every parameter here is read once at start: `ros2 param set` is refused, with why.
    let (param_handler, _param_events) = ros::ParamGate::new(&node).with_config(config.clone()).serve(&mut node)?;
    let clock = node.get_ros_clock();
    tracing::info!(node = %node_name, "summarizer up: deadline {deadline_s} s, window {window_s} s, up to {max_events} events per summary");

    // The events /anomaly/explain can answer for: the newest `explain_history`.
    let history: Arc<Mutex<VecDeque<EventInfo>>> = Arc::default();
    // Explanation requests: answered at once when no event matches or the model is busy with
    // EXPLAIN_QUEUE requests already; otherwise the worker answers between summaries.
    let (explain_tx, explain_rx) = crossbeam_channel::bounded::<(ExplainRequest, Vec<EventInfo>)>(EXPLAIN_QUEUE);
    let explain_stats = stats.clone();
    let answer = move |summarizer: &Summarizer, (req, events): (ExplainRequest, Vec<EventInfo>)| {
        let x = summarizer.explain(&events, explain_deadline);
        if !x.fallback {
            explain_stats.lock().expect("stats").explain_model_written += 1;
        }
        if let Err(e) = req.respond(explain_response(&x)) {
            tracing::warn!("/anomaly/explain response failed: {e}");
        }
    };
    // Every summary the worker writes: published, its events marked done in the journal, counted.
    let (publish_stats, publish_journal) = (stats.clone(), journal.clone());
    let publish = move |w: Written| {
        let s = &w.summary;
        if let Err(e) = summary_pub.publish(&StringMsg { data: s.text.clone() }) {
            tracing::warn!("publish /anomaly/summary failed: {e}");
        }
        if let Err(e) = detailed_pub.publish(&summary_msg(s, &w.frame_id)) {
            tracing::warn!("publish /anomaly/summary_detailed failed: {e}");
        }
        let journaled = match publish_journal.lock().expect("journal").as_mut() {
            Some(store) => store.done(&w.events).map_err(|e| format!("{e:#}")),
            None => Ok(()),
        };
        let mut st = publish_stats.lock().expect("stats");
        if let Err(e) = journaled {
            st.journal_failed(e);
        }
        st.published(s);
        tracing::info!(events = ?s.event_ids, fallback = s.fallback, reason = %s.fallback_reason, "summary: {}", s.text);
        if let Some(tx) = &speech_tx {
            if tx.try_send((s.event_ids.first().copied().unwrap_or(0), s.text.clone())).is_err() {
                st.speech_dropped += 1;
            }
        }
    };
    let bursts = BurstSummarizer::new(summarizer, (window_s * 1e9) as i64, max_events);
    let (intake, worker) = spawn_worker(bursts, queue_size, OVERFLOW_LIMIT, explain_rx, answer, publish)?;

    // An accepted event: remembered for /anomaly/explain, offered to the worker (parked for a
    // template summary when its queue is full).
    let enqueue = {
        let (stats, history) = (stats.clone(), history.clone());
        move |item: Accepted| {
            {
                let mut h = history.lock().expect("history");
                if h.len() >= explain_history {
                    h.pop_front();
                }
                h.push_back(item.event.clone());
            }
            let id = item.event.event_id;
            let mut s = stats.lock().expect("stats");
            match intake.offer(item) {
                Intaken::Queued => {}
                Intaken::Parked => s.events_overflowed += 1,
                Intaken::Dropped => {
                    s.events_dropped += 1;
                    tracing::error!("event {id} dropped: queue and overflow full");
                }
            }
        }
    };
    stats.lock().expect("stats").events_restored = restored.len() as u64;
    for (event, frame_id) in restored {
        enqueue(Accepted { event, frame_id });
    }
    let (drain_stats, drain_journal) = (stats.clone(), journal.clone());
    let drain = ros::drain(events, move |m: AnomalyEvent| {
        let item = Accepted { event: event_info(&m), frame_id: m.header.frame_id.clone() };
        if let Some(store) = drain_journal.lock().expect("journal").as_mut() {
            if store.seen(&item.event) {
                drain_stats.lock().expect("stats").events_duplicate += 1;
                return;
            }
            if let Err(e) = store.accept(&item.event, &item.frame_id) {
                drain_stats.lock().expect("stats").journal_failed(format!("{e:#}"));
            }
        }
        drain_stats.lock().expect("stats").events_received += 1;
        enqueue(item);
    });

    let explain_stats = stats.clone();
    let explain_drain = ros::drain(explain_service, move |req: ExplainRequest| {
        let q = &req.message;
        let query = if q.event_id != 0 {
            Query::Event(q.event_id)
        } else {
            Query::Window { start_ns: ros::time_ns(&q.window_start), end_ns: ros::time_ns(&q.window_end) }
        };
        let selected = {
            let mut h = history.lock().expect("history");
            explain::select(h.make_contiguous(), query)
        };
        explain_stats.lock().expect("stats").explain_requests += 1;
        match selected {
            Err(why) => {
                explain_stats.lock().expect("stats").explain_not_found += 1;
                let resp = Explain::Response { success: false, message: why, ..Default::default() };
                if let Err(e) = req.respond(resp) {
                    tracing::warn!("/anomaly/explain response failed: {e}");
                }
            }
            Ok(events) => {
                if let Err(crossbeam_channel::TrySendError::Full((req, events))) = explain_tx.try_send((req, events)) {
                    let x = Summarizer::explain_template(&events, "busy");
                    if let Err(e) = req.respond(explain_response(&x)) {
                        tracing::warn!("/anomaly/explain response failed: {e}");
                    }
                }
            }
        }
    });

    let (diag_stats, diag_journal) = (stats.clone(), journal.clone());
    let status_name = format!("{node_name}: summaries");
    let diag = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(diagnostics_period.clamp(0.05, 3600.0)));
        let mut cpu = ros::ProcessCpu::default();
        loop {
            tick.tick().await;
            // The journal's lock is taken before (never inside) the stats lock, as the drain does.
            let persisted = diag_journal.lock().expect("journal").as_ref().map(|store| store.pending_len());
            let health = diag_stats.lock().expect("stats").diagnostics(persisted);
            let header = Header { stamp: ros::now(&clock), frame_id: String::new() };
            let mut status =
                vec![ros::status(status_name.clone(), "summarizer", health.level, health.message, health.values)];
            status[0].values.extend(ros::key_values(cpu.key_values()));
            if let Err(e) = diagnostics.publish(&DiagnosticArray { header, status }) {
                tracing::warn!("diagnostics publish failed: {e}");
            }
        }
    });

    tokio::spawn(param_handler);
    ros::spin_until_shutdown(node, vec![drain, explain_drain], diag, worker).await;
    Ok(())
}
