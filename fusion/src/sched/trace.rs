//! Trace export: spans of every stage in Chrome's trace-event format (Perfetto).
use crate::StampNs;
use std::{
    collections::VecDeque,
    io::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

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
