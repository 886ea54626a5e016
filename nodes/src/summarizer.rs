//! The summarizer as a service, ROS-free, shared by the summarizer node and
//! `fusion_replay --summaries`: where the model is, its known hash, loading it (a failure
//! leaves a template-only summarizer, never an error), how events become summaries
//! ([`BurstSummarizer`]: bursts, queue overflow, shutdown), and the worker thread the node
//! runs it on ([`spawn_worker`], with its bounded [`Intake`]). The node adds only ROS: the
//! subscription, the journal, the publishers and /diagnostics.
use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use models::llm::summary::{Coalescer, EventInfo, Summarizer, SummarizerConfig, Summary};
use models::llm::{Llm, LlmOptions, WeightMode};
use models::Backend;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The model the package ships (scripts/fetch-weights.sh) and its sha256.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The `model` parameter, else the installed copy (share/sensor_fusion/models), else the
/// source tree's `.cache/llm/`.
pub fn model_path(param: &str) -> PathBuf {
    if !param.is_empty() {
        return PathBuf::from(param);
    }
    crate::ros::installed_share_file(&format!("models/{DEFAULT_MODEL}"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/llm").join(DEFAULT_MODEL))
}

/// How the model is chosen and run (node parameters / replay options).
#[derive(Debug, Clone)]
pub struct ModelChoice {
    /// Path; "" = the shipped model.
    pub model: String,
    /// "default" = the shipped model's hash when `model` is "", no check otherwise; "" = no
    /// check; anything else = this sha256.
    pub sha256: String,
    pub backend: Backend,
    pub weights: Option<WeightMode>,
    /// Threads of the CPU decoder (quantized weights on flex); None = every core the process
    /// may use.
    pub threads: Option<usize>,
}

impl Default for ModelChoice {
    fn default() -> Self {
        ModelChoice {
            model: String::new(),
            sha256: "default".into(),
            backend: Backend::Flex,
            weights: None,
            threads: None,
        }
    }
}

/// Loads the model; a failure is logged and gives a summarizer that publishes templates.
pub fn load_summarizer(choice: &ModelChoice, config: SummarizerConfig) -> Summarizer {
    let path = model_path(&choice.model);
    let sha256 = match choice.sha256.as_str() {
        "default" if choice.model.is_empty() => Some(DEFAULT_MODEL_SHA256.to_string()),
        "default" | "" => None,
        h => Some(h.to_string()),
    };
    let opts = LlmOptions {
        backend: choice.backend,
        weights: choice.weights,
        sha256,
        threads: choice.threads,
        ..LlmOptions::default()
    };
    let t0 = Instant::now();
    let llm = Llm::load(&path, &opts).map_err(|e| e.to_string());
    match &llm {
        Ok(l) => tracing::info!(
            "language model '{}' loaded from {} in {:.0} ms ({} backend, {} weights, {})",
            l.name,
            path.display(),
            t0.elapsed().as_secs_f64() * 1e3,
            choice.backend.as_str(),
            l.model.mode.as_str(),
            match l.model.cpu_decode_threads() {
                Some(n) => format!("CPU decoder on {n} threads, {} kernels", models::llm::quant::kernel_isa()),
                None => "decoding through Burn".into(),
            }
        ),
        Err(e) => tracing::error!("no language model, every summary will be the template (fallback): {e}"),
    }
    Summarizer::new(llm, config)
}

/// One event the summarizer accepted, with the frame its message was stamped in.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event: EventInfo,
    pub frame_id: String,
}

/// A summary ready to publish: the events it covers (the node's journal marks them done)
/// and the frame of the newest of them.
#[derive(Debug, Clone)]
pub struct Written {
    pub summary: Summary,
    pub events: Vec<EventInfo>,
    pub frame_id: String,
}

/// How accepted events become summaries, apart from threads and ROS: events are grouped into
/// bursts (a burst closes `window_ns` after its first event, or at `max_events`), and each
/// burst is summarized by the model, or by the template when the model fails. Time is the
/// caller's: wall time in the node, data time in a replay.
pub struct BurstSummarizer {
    summarizer: Summarizer,
    coalescer: Coalescer,
    /// The frame of the newest event of the open burst.
    frame_id: String,
}

impl BurstSummarizer {
    pub fn new(summarizer: Summarizer, window_ns: i64, max_events: usize) -> Self {
        BurstSummarizer { summarizer, coalescer: Coalescer::new(window_ns, max_events), frame_id: "base_link".into() }
    }

    pub fn summarizer(&self) -> &Summarizer {
        &self.summarizer
    }

    pub fn max_events(&self) -> usize {
        self.coalescer.max_events
    }

    /// An event accepted at `now_ns`: the summaries of the burst whose window passed before
    /// it came, and of the burst it fills.
    pub fn accept(&mut self, item: Accepted, now_ns: i64) -> Vec<Written> {
        let mut out: Vec<Written> = self.poll(now_ns).into_iter().collect();
        self.frame_id = item.frame_id;
        if let Some(burst) = self.coalescer.push(item.event, now_ns) {
            out.push(self.write(burst));
        }
        out
    }

    /// The open burst's summary, when its window has closed at `now_ns`.
    pub fn poll(&mut self, now_ns: i64) -> Option<Written> {
        let burst = self.coalescer.poll(now_ns)?;
        Some(self.write(burst))
    }

    /// When the open burst's window closes, if one is open.
    pub fn closes_at(&self) -> Option<i64> {
        self.coalescer.closes_at()
    }

    /// The end of the data (a replay): the open burst summarized as any other.
    pub fn end_of_data(&mut self) -> Option<Written> {
        let burst = self.coalescer.flush()?;
        Some(self.write(burst))
    }

    /// Shutting down: the open burst gets the template at once (reason `shutdown`), not a
    /// model run the process may not live to finish.
    pub fn shutdown(&mut self) -> Option<Written> {
        let burst = self.coalescer.flush()?;
        Some(self.template(burst, "shutdown", self.frame_id.clone()))
    }

    /// Events that found the queue full: template summaries (reason `queue_full`) at once,
    /// `max_events` per summary, so that a flood costs no model time and loses nothing.
    pub fn overflowed(&self, parked: Vec<Accepted>) -> Vec<Written> {
        parked
            .chunks(self.max_events())
            .map(|chunk| {
                let frame_id = chunk.last().map(|a| a.frame_id.clone()).unwrap_or_default();
                self.template(chunk.iter().map(|a| a.event.clone()).collect(), "queue_full", frame_id)
            })
            .collect()
    }

    fn write(&self, events: Vec<EventInfo>) -> Written {
        Written { summary: self.summarizer.summarize(&events), events, frame_id: self.frame_id.clone() }
    }

    fn template(&self, events: Vec<EventInfo>, reason: &str, frame_id: String) -> Written {
        Written { summary: Summarizer::fallback(&events, reason, Duration::ZERO, 0), events, frame_id }
    }
}

/// What became of an event offered to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intaken {
    /// In the worker's queue: it joins a burst.
    Queued,
    /// The queue was full: parked for a template summary (`queue_full`) at the worker's next turn.
    Parked,
    /// Queue and parking both full: lost, and the caller counts it.
    Dropped,
}

/// The accepting end of the worker: never blocks the caller (a ROS callback). Dropping every
/// clone of it stops the worker, which then summarizes what it holds by template.
#[derive(Clone)]
pub struct Intake {
    tx: Sender<Accepted>,
    parked: Arc<Mutex<Vec<Accepted>>>,
    park_limit: usize,
}

impl Intake {
    pub fn offer(&self, item: Accepted) -> Intaken {
        match self.tx.try_send(item) {
            Ok(()) => Intaken::Queued,
            // The worker has stopped: nothing will summarize this event.
            Err(TrySendError::Disconnected(_)) => Intaken::Dropped,
            Err(TrySendError::Full(item)) => {
                let mut parked = self.parked.lock().expect("parked events");
                if parked.len() < self.park_limit {
                    parked.push(item);
                    Intaken::Parked
                } else {
                    Intaken::Dropped
                }
            }
        }
    }
}

/// The summarizer's worker thread: takes events from a queue of `queue_size` (overflow parked,
/// up to `park_limit`), groups them into bursts by wall time and hands every summary to
/// `publish`, in order. Between summaries it runs the `jobs` (requests that need the model,
/// such as an explanation) through `on_job`. It stops when every [`Intake`] is dropped.
pub fn spawn_worker<J: Send + 'static>(
    mut bursts: BurstSummarizer,
    queue_size: usize,
    park_limit: usize,
    mut jobs: Receiver<J>,
    mut on_job: impl FnMut(&Summarizer, J) + Send + 'static,
    mut publish: impl FnMut(Written) + Send + 'static,
) -> std::io::Result<(Intake, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded::<Accepted>(queue_size.max(1));
    let parked: Arc<Mutex<Vec<Accepted>>> = Arc::default();
    let intake = Intake { tx, parked: parked.clone(), park_limit };
    let worker = std::thread::Builder::new().name("summarizer-llm".into()).spawn(move || {
        let start = Instant::now();
        let now_ns = || start.elapsed().as_nanos() as i64;
        loop {
            // Parked overflow first: template summaries, immediately.
            let overflow = std::mem::take(&mut *parked.lock().expect("parked events"));
            for w in bursts.overflowed(overflow) {
                publish(w);
            }
            let wait = match bursts.closes_at() {
                Some(t) => Duration::from_nanos((t - now_ns()).max(0) as u64),
                None => Duration::from_millis(100),
            };
            let written: Vec<Written> = crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(item) => bursts.accept(item, now_ns()),
                    Err(_) => break,
                },
                recv(jobs) -> job => {
                    match job {
                        Ok(job) => on_job(bursts.summarizer(), job),
                        // No more jobs can come: stop watching for them (a closed channel is
                        // always ready and would spin this loop).
                        Err(_) => jobs = crossbeam_channel::never(),
                    }
                    bursts.poll(now_ns()).into_iter().collect()
                },
                default(wait) => bursts.poll(now_ns()).into_iter().collect(),
            };
            for w in written {
                publish(w);
            }
        }
        let overflow = std::mem::take(&mut *parked.lock().expect("parked events"));
        for w in bursts.overflowed(overflow).into_iter().chain(bursts.shutdown()) {
            publish(w);
        }
    })?;
    Ok((intake, worker))
}

/// What the summarizer node counts, and how that reads on /diagnostics.
#[derive(Default)]
pub struct Stats {
    pub events_received: u64,
    pub events_overflowed: u64,
    pub events_dropped: u64,
    pub summaries_llm: u64,
    pub fallbacks: BTreeMap<String, u64>,
    /// Model answers the claim verifier refused, by the kind of the failing claim.
    pub rejected_claims: BTreeMap<String, u64>,
    pub generation_ms: Option<Histogram<u64>>,
    pub model: String,
    pub model_error: String,
    pub explain_requests: u64,
    pub explain_model_written: u64,
    /// Requests that named no event we hold.
    pub explain_not_found: u64,
    /// Speech counters are reported only when the node speaks.
    pub speak: bool,
    pub speech_files: u64,
    pub speech_failed: u64,
    pub speech_dropped: u64,
    pub speech_error: String,
    /// Pending events read back from the journal at start (accepted by an earlier process).
    pub events_restored: u64,
    /// Events delivered again (transient-local history after a restart): not summarized twice.
    pub events_duplicate: u64,
    pub journal_errors: u64,
    pub journal_error: String,
    pub journal_path: String,
}

/// A diagnostic status, ROS-free: level (0 OK, 1 WARN, 2 ERROR), message, key/values.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub level: u8,
    pub message: String,
    pub values: Vec<(String, String)>,
}

impl Stats {
    pub fn new(model: &str, model_error: &str, speak: bool) -> Self {
        Stats {
            generation_ms: Histogram::new_with_bounds(1, 600_000, 3).ok(),
            model: model.into(),
            model_error: model_error.into(),
            speak,
            ..Stats::default()
        }
    }

    /// A journal write that failed: counted and kept for /diagnostics; summaries go on.
    pub fn journal_failed(&mut self, error: impl std::fmt::Display) {
        self.journal_errors += 1;
        self.journal_error = error.to_string();
    }

    /// A summary went out: by the model, or by the template for its reason.
    pub fn published(&mut self, s: &Summary) {
        if s.fallback {
            *self.fallbacks.entry(s.fallback_reason.clone()).or_default() += 1;
            if !s.rejected_claim.is_empty() {
                *self.rejected_claims.entry(s.rejected_claim.clone()).or_default() += 1;
            }
        } else {
            self.summaries_llm += 1;
        }
        if let Some(h) = self.generation_ms.as_mut() {
            let _ = h.record((s.generation_time_s as f64 * 1e3).round().max(1.0) as u64);
        }
    }

    /// The node's status: ERROR when an event was lost, WARN without a model (every summary
    /// is the template) or when pending events may not survive a restart; `persisted` is how
    /// many events the journal holds, when there is one.
    pub fn diagnostics(&self, persisted: Option<usize>) -> Health {
        let fallbacks: u64 = self.fallbacks.values().sum();
        let mut kv: Vec<(String, String)> = vec![
            ("events_received".into(), self.events_received.to_string()),
            ("summaries_llm".into(), self.summaries_llm.to_string()),
            ("summaries_fallback".into(), fallbacks.to_string()),
            ("events_overflowed".into(), self.events_overflowed.to_string()),
            ("events_dropped".into(), self.events_dropped.to_string()),
            ("model".into(), if self.model.is_empty() { "none".into() } else { self.model.clone() }),
        ];
        for (reason, n) in &self.fallbacks {
            kv.push((format!("fallback.{reason}"), n.to_string()));
        }
        for (claim, n) in &self.rejected_claims {
            kv.push((format!("rejected.claim.{claim}"), n.to_string()));
        }
        kv.push(("events_restored".into(), self.events_restored.to_string()));
        kv.push(("events_duplicate".into(), self.events_duplicate.to_string()));
        if let Some(n) = persisted {
            kv.push(("events_pending_persisted".into(), n.to_string()));
        }
        if !self.journal_path.is_empty() {
            kv.push(("journal".into(), self.journal_path.clone()));
            kv.push(("journal_errors".into(), self.journal_errors.to_string()));
        }
        if !self.journal_error.is_empty() {
            kv.push(("journal_last_error".into(), self.journal_error.clone()));
        }
        kv.push(("explain_requests".into(), self.explain_requests.to_string()));
        kv.push(("explain_model_written".into(), self.explain_model_written.to_string()));
        kv.push(("explain_not_found".into(), self.explain_not_found.to_string()));
        if self.speak {
            kv.push(("speech_files".into(), self.speech_files.to_string()));
            kv.push(("speech_failed".into(), self.speech_failed.to_string()));
            kv.push(("speech_dropped".into(), self.speech_dropped.to_string()));
            if !self.speech_error.is_empty() {
                kv.push(("speech_last_error".into(), self.speech_error.clone()));
            }
        }
        if let Some(h) = self.generation_ms.as_ref().filter(|h| !h.is_empty()) {
            kv.push(("generation_ms_p50".into(), h.value_at_quantile(0.5).to_string()));
            kv.push(("generation_ms_p99".into(), h.value_at_quantile(0.99).to_string()));
        }
        // A lost event outranks everything: it is the one failure a summary cannot make up for.
        let (level, message) = if self.events_dropped > 0 {
            (2, format!("{} events dropped", self.events_dropped))
        } else if !self.model_error.is_empty() {
            (1, format!("no language model (template summaries): {}", self.model_error))
        } else if !self.journal_error.is_empty() {
            (1, format!("pending events may not survive a restart: {}", self.journal_error))
        } else {
            (0, "ok".to_string())
        };
        Health { level, message, values: kv }
    }
}

/// Summaries of a replay's events, as the node would write them: bursts by data time (the
/// events' stamps stand in for the node's wall clock), each summarized by the model.
pub fn summarize_events(
    summarizer: Summarizer,
    events: &[EventInfo],
    window_ns: i64,
    max_events: usize,
) -> Vec<Summary> {
    let mut bursts = BurstSummarizer::new(summarizer, window_ns, max_events);
    let mut out = Vec::new();
    for e in events {
        out.extend(bursts.accept(Accepted { event: e.clone(), frame_id: String::new() }, e.stamp_ns));
    }
    out.extend(bursts.end_of_data());
    out.into_iter().map(|w| w.summary).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summarizer without a model: every summary is the template, so the tests see the
    /// service's grouping and queueing, not the model's words.
    fn template_only() -> Summarizer {
        Summarizer::new(Err("no model in this test".into()), SummarizerConfig::default())
    }

    fn event(id: u64, t_s: f64) -> EventInfo {
        EventInfo {
            event_id: id,
            stamp_ns: (t_s * 1e9) as i64,
            kind: "sensor_dropout".into(),
            severity: 2,
            rule: "stream_silent".into(),
            measured_value: 0.3,
            threshold: 0.2,
            sensors: vec!["radar".into()],
            track_ids: vec![],
            zone: String::new(),
            position: [0.0; 3],
            onset_ns: (t_s * 1e9) as i64,
            evidence: vec![],
        }
    }

    fn accepted(id: u64, t_s: f64, frame: &str) -> Accepted {
        Accepted { event: event(id, t_s), frame_id: frame.into() }
    }

    fn ids(w: &Written) -> Vec<u64> {
        w.summary.event_ids.clone()
    }

    #[test]
    fn bursts_close_by_window_or_size_each_in_the_frame_of_its_newest_event() {
        let mut b = BurstSummarizer::new(template_only(), 1_000_000_000, 3);
        let at = |t: f64| (t * 1e9) as i64;
        assert!(b.accept(accepted(1, 0.0, "a"), at(0.0)).is_empty());
        assert!(b.accept(accepted(2, 0.5, "a"), at(0.5)).is_empty());
        assert_eq!(b.closes_at(), Some(at(1.0)));
        // Event 3 comes after the window closed: the first burst is written, in its own frame.
        let closed = b.accept(accepted(3, 2.0, "b"), at(2.0));
        assert_eq!(closed.iter().map(|w| (ids(w), w.frame_id.as_str())).collect::<Vec<_>>(), [(vec![1, 2], "a")]);
        assert_eq!(closed[0].events.len(), 2, "the journal is told which events are done");
        assert!(b.poll(at(2.9)).is_none(), "window open until 3.0 s");
        // Three events fill a burst before its window ends.
        assert!(b.accept(accepted(4, 2.1, "b"), at(2.1)).is_empty());
        let full = b.accept(accepted(5, 2.2, "c"), at(2.2));
        assert_eq!(full.iter().map(|w| (ids(w), w.frame_id.as_str())).collect::<Vec<_>>(), [(vec![3, 4, 5], "c")]);
        assert!(b.accept(accepted(6, 5.0, "c"), at(5.0)).is_empty());
        let last = b.end_of_data().expect("the open burst at the end of the data");
        assert_eq!((ids(&last), last.summary.fallback_reason.as_str()), (vec![6], "load_error"));
        assert!(b.end_of_data().is_none() && b.shutdown().is_none());
    }

    #[test]
    fn the_replay_groups_events_as_the_node_does() {
        let events: Vec<EventInfo> =
            [(1, 0.0), (2, 0.4), (3, 1.5), (4, 1.6), (5, 1.7), (6, 1.8)].iter().map(|&(i, t)| event(i, t)).collect();
        let out = summarize_events(template_only(), &events, 1_000_000_000, 3);
        let groups: Vec<Vec<u64>> = out.iter().map(|s| s.event_ids.clone()).collect();
        assert_eq!(groups, [vec![1, 2], vec![3, 4, 5], vec![6]]);
    }

    #[test]
    fn a_full_queue_parks_events_for_templates_counts_what_it_cannot_park_and_shutdown_loses_nothing() {
        let (published_tx, published) = crossbeam_channel::unbounded::<Written>();
        let (jobs_tx, jobs) = crossbeam_channel::bounded::<(Sender<()>, Receiver<()>)>(1);
        // A job that holds the worker (as a long explanation would) until the test releases it.
        let hold = |_: &Summarizer, (started, release): (Sender<()>, Receiver<()>)| {
            let _ = started.send(());
            let _ = release.recv();
        };
        let window_ns = 60_000_000_000; // no burst closes by time in this test
        let bursts = BurstSummarizer::new(template_only(), window_ns, 8);
        let (intake, worker) =
            spawn_worker(bursts, 1, 2, jobs, hold, move |w| published_tx.send(w).expect("test receiver")).unwrap();
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let (release, release_rx) = crossbeam_channel::bounded(1);
        jobs_tx.send((started_tx, release_rx)).unwrap();
        started.recv_timeout(Duration::from_secs(10)).expect("the worker took the job");

        let offered: Vec<Intaken> = (1..=5).map(|id| intake.offer(accepted(id, id as f64, "base_link"))).collect();
        use Intaken::*;
        assert_eq!(offered, [Queued, Parked, Parked, Dropped, Dropped]);
        release.send(()).unwrap();
        // The parked events are written at once, by template, before the queued one is taken.
        let parked = published.recv_timeout(Duration::from_secs(10)).expect("the parked events' summary");
        assert_eq!((ids(&parked), parked.summary.fallback_reason.as_str()), (vec![2, 3], "queue_full"));
        assert!(published.recv_timeout(Duration::from_millis(300)).is_err(), "event 1 waits in its open burst");
        // Stopping the worker writes the open burst by template: an accepted event is never lost.
        drop(intake);
        worker.join().unwrap();
        let rest: Vec<Written> = published.try_iter().collect();
        assert_eq!(
            rest.iter().map(|w| (ids(w), w.summary.fallback_reason.as_str())).collect::<Vec<_>>(),
            [(vec![1], "shutdown")]
        );
    }

    #[test]
    fn diagnostics_say_what_was_lost_before_what_was_degraded() {
        let value = |h: &Health, k: &str| h.values.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let mut st = Stats::new("", "model file missing", false);
        let h = st.diagnostics(None);
        assert_eq!((h.level, h.message.as_str()), (1, "no language model (template summaries): model file missing"));
        assert_eq!(value(&h, "model").as_deref(), Some("none"));
        assert_eq!(value(&h, "speech_files"), None, "speech is reported only when the node speaks");
        assert_eq!(value(&h, "generation_ms_p50"), None, "no summary yet");

        let no_model = Summarizer::fallback(&[event(1, 0.0)], "load_error", Duration::from_millis(3), 0);
        st.published(&no_model);
        st.published(&no_model);
        let h = st.diagnostics(Some(4));
        assert_eq!(value(&h, "summaries_fallback").as_deref(), Some("2"));
        assert_eq!(value(&h, "fallback.load_error").as_deref(), Some("2"));
        assert_eq!(value(&h, "generation_ms_p50").as_deref(), Some("3"));
        assert_eq!(value(&h, "events_pending_persisted").as_deref(), Some("4"));

        st.events_dropped = 1;
        let h = st.diagnostics(None);
        assert_eq!((h.level, h.message.as_str()), (2, "1 events dropped"), "a lost event is an ERROR, model or not");

        let mut st = Stats::new("SmolLM2", "", true);
        assert_eq!(st.diagnostics(None).level, 0);
        st.journal_path = "/state/summarizer.pending.jsonl".into();
        st.journal_failed("No space left on device");
        let h = st.diagnostics(None);
        assert_eq!(h.level, 1);
        assert!(h.message.contains("No space left on device"), "{}", h.message);
        assert_eq!(value(&h, "journal_errors").as_deref(), Some("1"));
        assert_eq!(value(&h, "speech_files").as_deref(), Some("0"));
    }
}
