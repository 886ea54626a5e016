//! What the executor measured (execution times, end-to-end latency, counters, gauges,
//! real-time outcomes), and its `/diagnostics` key-values.
use super::*;
use crate::{anomaly::StreamState, sensors::SensorSet, SensorId};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

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
    /// The declared sensors' names: the per-sensor vectors below follow the sensor set.
    pub sensors: Vec<&'static str>,
    pub received: Vec<u64>,
    pub window_sets: u64,
    pub window_hard_misses: u64,
    pub window_shed: u64,
    pub level: usize,
    pub level_name: &'static str,
    pub max_level: usize,
    /// Gauges: mailbox depths (per sensor), task queues, sets in flight.
    pub mailbox_len: Vec<usize>,
    pub inference_queue: usize,
    pub cpu_queue: usize,
    pub in_flight: usize,
    /// Real-time settings per thread role, as applied.
    pub rt: BTreeMap<&'static str, RtOutcome>,
    /// Each input stream for the dropout rule: never received (start-up), receiving, silent.
    pub streams: Vec<StreamState>,
    /// Model monitoring (`model.*`): input statistics against training, agreement, state.
    pub model: Vec<crate::anomaly::KeyValue>,
}

impl SchedStats {
    pub(crate) fn new(sensors: &SensorSet) -> Self {
        let n = sensors.len();
        Self {
            sensors: sensors.ids().map(|id| sensors.name(id)).collect(),
            stage: (0..STAGES).map(|_| micros_histogram()).collect(),
            e2e: micros_histogram(),
            e2e_total: micros_histogram(),
            counters: BTreeMap::new(),
            received: vec![0; n],
            window_sets: 0,
            window_hard_misses: 0,
            window_shed: 0,
            level: 0,
            level_name: "nominal",
            max_level: 0,
            mailbox_len: vec![0; n],
            inference_queue: 0,
            cpu_queue: 0,
            in_flight: 0,
            streams: vec![StreamState::NeverReceived; n],
            model: vec![],
            rt: BTreeMap::new(),
        }
    }

    /// A sensor's name, for keys (`undeclared` for an id outside the set).
    pub fn name(&self, sensor: SensorId) -> &'static str {
        self.sensors.get(sensor.index()).copied().unwrap_or("undeclared")
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
        for (k, v) in self.sensors.iter().zip(&self.received) {
            kv.push((format!("received.{k}"), v.to_string()));
        }
        for (k, v) in self.sensors.iter().zip(&self.streams) {
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
        for (k, v) in self.sensors.iter().zip(&self.mailbox_len) {
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
