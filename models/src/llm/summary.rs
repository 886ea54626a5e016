//! Plain-English summaries of anomaly events: the prompt built from each event and its
//! evidence, the deterministic template used whenever the model cannot be trusted to answer
//! (deadline missed, model unavailable, empty or garbage output), output checks, and the
//! coalescing window that turns a burst of events into one summary. No ROS: the summarizer
//! node and `fusion_replay` both use this.
use super::{chat_prompt, BatchPrompt, ChatMessage, GenerateOptions, Llm, Sampling, StopReason};
use fusion::anomaly::EventKind;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// An anomaly event as the summarizer sees it (fusion_msgs/AnomalyEvent, owned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInfo {
    pub event_id: u64,
    pub stamp_ns: i64,
    pub kind: String,
    /// 0 INFO, 1 WARN, 2 ERROR.
    pub severity: u8,
    pub rule: String,
    pub measured_value: f64,
    pub threshold: f64,
    pub sensors: Vec<String>,
    pub track_ids: Vec<u32>,
    pub zone: String,
    pub position: [f64; 3],
    pub onset_ns: i64,
    pub evidence: Vec<(String, String)>,
}

impl From<&fusion::anomaly::Event> for EventInfo {
    fn from(e: &fusion::anomaly::Event) -> Self {
        EventInfo {
            event_id: e.event_id,
            stamp_ns: e.stamp_ns,
            kind: e.kind.to_string(),
            severity: e.severity,
            rule: e.rule.to_string(),
            measured_value: e.measured_value,
            threshold: e.threshold,
            sensors: e.sensors.iter().map(|s| s.to_string()).collect(),
            track_ids: e.track_ids.clone(),
            zone: e.zone.clone(),
            position: e.position,
            onset_ns: e.onset_ns,
            evidence: e.evidence.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect(),
        }
    }
}

impl EventInfo {
    /// The evidence value named `key`.
    pub(super) fn ev(&self, key: &str) -> Option<&str> {
        self.evidence.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn severity_word(&self) -> &'static str {
        match self.severity {
            0 => "Info",
            1 => "Warning",
            _ => "Error",
        }
    }
    fn track(&self) -> String {
        match self.track_ids.as_slice() {
            [] => String::new(),
            [id] => format!("track {id}"),
            ids => format!("tracks {}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")),
        }
    }
    fn sensors_text(&self) -> String {
        match self.sensors.len() {
            0 => "no sensor".into(),
            _ => self.sensors.join(", "),
        }
    }

    /// Which side, for a spatial event off the vehicle's axis: ", 9° to the left" (bearing
    /// from base_link's x axis; within 5° of it there is no side to name).
    fn bearing_text(&self) -> Option<String> {
        let [x, y, _] = self.position;
        let bearing = y.atan2(x).to_degrees();
        ((x != 0.0 || y != 0.0) && bearing.abs() >= 5.0)
            .then(|| format!(", {:.0}° to the {}", bearing.abs(), if bearing > 0.0 { "left" } else { "right" }))
    }

    /// One deterministic sentence with the facts of this event.
    pub fn fact_sentence(&self) -> String {
        let t = When(self.stamp_ns);
        let label = self.ev("label").unwrap_or("object");
        let label = format!("{} {label}", if label.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" });
        let sev = self.severity_word();
        // Exhaustive over the kinds we publish: a new `EventKind` does not compile without
        // its sentence. A kind from another publisher gets the generic one.
        match EventKind::parse(&self.kind) {
            Some(EventKind::ZoneIntrusion) => format!(
                "{sev} at {t}: {label} ({}) entered the '{}' safety zone {} m from the vehicle{} (x {:.1} m, y {:.1} m), seen by {}.",
                self.track(),
                self.zone,
                self.ev("distance_m").map(str::to_string).unwrap_or_else(|| format!("{:.1}", self.measured_value)),
                self.bearing_text().unwrap_or_else(|| ", straight ahead".into()),
                self.position[0],
                self.position[1],
                self.sensors_text()
            ),
            Some(EventKind::CollisionRisk) => format!(
                "{sev} at {t}: collision risk with {label} ({}) {:.1} m ahead{}; time to collision {} s (threshold {:.1} s){}.",
                self.track(),
                self.position[0],
                self.bearing_text().unwrap_or_default(),
                self.ev("ttc_s").map(str::to_string).unwrap_or_else(|| format!("{:.2}", self.measured_value)),
                self.threshold,
                self.ev("closing_speed_mps").map(|v| format!(", closing at {v} m/s")).unwrap_or_default(),
            ),
            Some(EventKind::SensorDropout) if self.rule == "stream_recovered" => format!(
                "{sev} at {t}: the {} stream is back after {}.",
                self.sensors_text(),
                match self.ev("silent_s") {
                    Some(s) => format!("{s} s of silence"),
                    None => format!("a silence of {:.0} expected periods", self.measured_value),
                }
            ),
            Some(EventKind::SensorDropout) if self.rule == "stream_never_started" => format!(
                "{sev} at {t}: the {} stream is silent, never started: {} s after the other sensors (limit {:.1} s){}.",
                self.sensors_text(),
                self.ev("waited_s").map(str::to_string).unwrap_or_else(|| format!("{:.1}", self.measured_value)),
                self.threshold,
                self.ev("topic").map(|t| format!("; nothing on {t}")).unwrap_or_default(),
            ),
            Some(EventKind::SensorDropout) => format!(
                "{sev} at {t}: the {} stream has been silent{} ({:.0} expected periods, limit {:.0}).",
                self.sensors_text(),
                self.ev("silent_s").map(|s| format!(" for {s} s")).unwrap_or_default(),
                self.measured_value,
                self.threshold
            ),
            Some(EventKind::SensorDegraded) => {
                let (m, th) = (self.measured_value, self.threshold);
                let what = match self.rule.as_str() {
                    "image_blinded" if m < th => format!("blinded, too dark: mean brightness {m:.1} (limit {th:.1})"),
                    "image_blinded" => format!("blinded, too bright: mean brightness {m:.1} (limit {th:.1})"),
                    "image_frozen" => format!("frozen: {m:.0} identical frames in a row (limit {th:.0})"),
                    "cloud_non_finite" => format!(
                        "degraded: {:.1} % of a sweep's points are not finite (limit {:.1} %)",
                        m * 100.0,
                        th * 100.0
                    ),
                    "imu_saturated" => format!("degraded, saturated: an axis read {m:.1} m/s² (limit {th:.1} m/s²)"),
                    rule => format!("degraded ({}): measured {m:.2} against a threshold of {th:.2}", rule.replace('_', " ")),
                };
                format!("{sev} at {t}: the {} is {what}.", self.sensors_text())
            }
            Some(EventKind::SensorDisagreement) => format!(
                "{sev} at {t}: the sensors disagree about {} ({}) for {:.0} frames{}.",
                if self.track_ids.is_empty() { "an object".to_string() } else { self.track() },
                self.rule.replace('_', " "),
                self.measured_value,
                self.ev("range_m").map(|r| format!(", {r} m away")).unwrap_or_default()
            ),
            Some(EventKind::Impact) => format!(
                "{sev} at {t}: the IMU measured an impact of {} (threshold {:.1} m/s²).",
                match self.ev("shock_g") {
                    Some(g) => format!("{g} times gravity"),
                    None => format!("{:.1} m/s²", self.measured_value),
                },
                self.threshold
            ),
            Some(EventKind::DeadlineOverrun) => format!(
                "{sev} at {t}: perception missed its {}hard deadline {}.",
                self.ev("hard_deadline_ms").map(|ms| format!("{ms} ms ")).unwrap_or_default(),
                match (self.ev("hard_misses"), self.ev("window_sets")) {
                    (Some(n), Some(w)) => format!("{n} times in the last {w} frames"),
                    _ => format!(
                        "in {:.0} % of recent frames (limit {:.0} %)",
                        self.measured_value * 100.0,
                        self.threshold * 100.0
                    ),
                }
            ),
            Some(EventKind::TimeJump) if self.rule == "data_time_went_forward" => format!(
                "{sev} at {t}: data time jumped forward {} s (a seek in a bag, or a gap in the recording); tracking and the anomaly rules started over.",
                self.ev("jump_forward_s").map(str::to_string).unwrap_or_else(|| format!("{:.1}", self.measured_value))
            ),
            Some(EventKind::TimeJump) => format!(
                "{sev} at {t}: data time jumped back {} s (a bag played in a loop, or a clock reset); tracking and the anomaly rules started over.",
                self.ev("jump_back_s").map(str::to_string).unwrap_or_else(|| format!("{:.1}", self.measured_value))
            ),
            Some(EventKind::ModelDegraded) if self.rule == "detector_unavailable" => format!(
                "{sev} at {t}: the camera detector could not be loaded at start-up; objects are found without camera classes until it is fixed."
            ),
            Some(EventKind::ModelDegraded) => format!(
                "{sev} at {t}: the camera detector is outside what it was trained on: {}; detections may be unreliable.",
                match self.rule.as_str() {
                    "camera_lidar_agreement_low" => format!(
                        "it found {} of the objects the range sensors see (floor {:.2})",
                        self.ev("camera_lidar_agreement")
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{:.2}", self.measured_value)),
                        self.threshold
                    ),
                    _ => format!(
                        "{:.0} % of recent frames have {} outside the training range",
                        self.measured_value * 100.0,
                        self.ev("last_out_of_range_stat").unwrap_or("an input statistic")
                    ),
                }
            ),
            None => format!(
                "{sev} at {t}: {} ({}), measured {:.2} against {:.2}, sensors {}.",
                self.kind.replace('_', " "),
                self.rule.replace('_', " "),
                self.measured_value,
                self.threshold,
                self.sensors_text()
            ),
        }
    }

    /// Words a faithful summary of this event would contain (any one suffices).
    fn salient_words(&self) -> Vec<String> {
        let mut w: Vec<String> = self.kind.split('_').map(str::to_string).collect();
        w.extend(self.sensors.iter().cloned());
        if !self.zone.is_empty() {
            w.push(self.zone.to_lowercase());
        }
        if let Some(l) = self.ev("label") {
            w.push(l.to_lowercase());
        }
        w.extend(self.track_ids.iter().map(u32::to_string));
        w.extend(
            ["collision", "impact", "sensor", "zone", "deadline"]
                .map(String::from)
                .into_iter()
                .filter(|s| self.kind.contains(s.as_str())),
        );
        w
    }
}

/// One day in ns: a stamp below it counts from a run's start (simulation, tests), one above
/// it is wall-clock (epoch) time. Summaries, examples and the verifier read times this way.
pub(crate) const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// An event time: `t=12.4 s` for stamps counted from a run's start (simulation, tests),
/// the UTC time of day `14:03:07.2 UTC` for wall-clock (epoch) stamps.
struct When(i64);

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 < DAY_NS {
            write!(f, "t={:.1} s", self.0 as f64 * 1e-9)
        } else {
            let tenths = self.0.rem_euclid(DAY_NS) / 100_000_000;
            let (s, tenth) = (tenths / 10, tenths % 10);
            write!(f, "{:02}:{:02}:{:02}.{tenth} UTC", s / 3600, s / 60 % 60, s % 60)
        }
    }
}

/// The deterministic summary: one fact sentence per event.
pub fn template_summary(events: &[EventInfo]) -> String {
    let mut s = String::new();
    if events.len() > 1 {
        s.push_str(&format!("{} anomaly events. ", events.len()));
    }
    s.push_str(&events.iter().map(EventInfo::fact_sentence).collect::<Vec<_>>().join(" "));
    s
}

pub const SYSTEM_PROMPT: &str = "You are the safety monitor of an autonomous robot. You tell the operator what happened in one or two short, plain-English sentences, using only the facts you are given.";

/// A worked example per kind of event, shown to the model as an earlier turn of the chat
/// before facts of that kind: without them it called a disagreement "a malfunction in the
/// camera system", a dropout "an error in the radar system", and a collision risk a
/// collision (the summary benchmark's rejected texts). One example of the event's own kind,
/// not several of every kind: the model copies the shape of the last answer it saw ("time to
/// collision" ended dropout summaries). Numbers, tracks and times are in no real event, so an
/// answer that copies them fails the verifier. `{t}` is the example's time, written as the
/// event's own time is (run time or UTC time of day): with run times in the examples the
/// model wrote "t=22:13:35.0 UTC" for a wall-clock event.
const EXAMPLES: &[(&str, &str, &str, &str)] = &[
    (
        "zone_intrusion",
        "",
        "Critical at {t}: a person (track 21) entered the 'forward' safety zone 2.40 m from the vehicle, 12° to the left (x 2.3 m, y 0.5 m), seen by lidar, camera.",
        "A person (track 21) entered the forward safety zone 2.40 m from the vehicle, 12° to the left, seen by lidar and camera.",
    ),
    (
        "collision_risk",
        "",
        "Warning at {t}: collision risk with a person (track 14) 11.0 m ahead; time to collision 1.20 s (threshold 2.0 s), closing at 9.2 m/s.",
        "Collision risk: a person (track 14) is 11.0 m ahead, time to collision 1.20 s, closing at 9.2 m/s.",
    ),
    (
        "impact",
        "",
        "Error at {t}: the IMU measured an impact of 6.50 times gravity (threshold 29.4 m/s²).",
        "The IMU measured an impact of 6.50 times gravity at {t}, above its threshold of 29.4 m/s².",
    ),
    (
        "sensor_disagreement",
        "",
        "Warning at {t}: the sensors disagree about track 12 (camera misses lidar radar object) for 9 frames, 41.0 m away.",
        "The sensors disagree about track 12: for 9 frames the lidar and radar saw an object 41.0 m away that the camera missed.",
    ),
    (
        "time_jump",
        "data_time_went_forward",
        "Info at {t}: data time jumped forward 8.4 s (a seek in a bag, or a gap in the recording); tracking and the anomaly rules started over.",
        "Data time jumped forward 8.4 s at {t}, a seek or a gap in the recording, so tracking and the anomaly rules started over.",
    ),
    (
        "time_jump",
        "",
        "Info at {t}: data time jumped back 20.5 s (a bag played in a loop, or a clock reset); tracking and the anomaly rules started over.",
        "Data time jumped back 20.5 s at {t}, a bag loop or a clock reset, so tracking and the anomaly rules started over.",
    ),
    (
        "deadline_overrun",
        "",
        "Warning at {t}: perception missed its 120 ms hard deadline 9 times in the last 60 frames.",
        "Perception missed its 120 ms hard deadline 9 times in the last 60 frames, at {t}.",
    ),
    (
        "sensor_dropout",
        "stream_recovered",
        "Info at {t}: the radar stream is back after 1.30 s of silence.",
        "The radar stream is back after 1.30 s of silence.",
    ),
    (
        "sensor_dropout",
        "",
        "Error at {t}: the radar stream has been silent for 0.90 s (9 expected periods, limit 5).",
        "The radar stream has been silent for 0.90 s at {t}, 9 expected periods against a limit of 5.",
    ),
    (
        "model_degraded",
        "detector_unavailable",
        "Error at {t}: the camera detector could not be loaded at start-up; objects are found without camera classes until it is fixed.",
        "The camera detector could not be loaded at start-up, so objects have no camera classes until it is fixed.",
    ),
    (
        "model_degraded",
        "",
        "Warning at {t}: the camera detector is outside what it was trained on: 71 % of recent frames have mean_contrast outside the training range; detections may be unreliable.",
        "The camera detector sees images unlike its training data (71 % of recent frames), so its detections may be unreliable.",
    ),
    (
        "sensor_degraded",
        "",
        "Warning at {t}: the camera is blinded, too bright: mean brightness 251.3 (limit 240.0).",
        "The camera is blinded, too bright: its mean brightness is 251.3 against a limit of 240.0.",
    ),
];

/// The worked example for an event of this kind and rule (the first whose rule matches or is
/// empty), as (facts, answer).
fn example_for(e: &EventInfo) -> Option<(&'static str, &'static str)> {
    EXAMPLES
        .iter()
        .find(|(kind, rule, _, _)| *kind == e.kind && (rule.is_empty() || *rule == e.rule))
        .map(|(_, _, facts, answer)| (*facts, *answer))
}

/// The whole chat for a batch of events: the system message, one worked example for each
/// kind in the batch (in order of first appearance), then the facts.
pub fn chat_messages<'a>(events: &[EventInfo], user: &'a str, examples: &'a mut Vec<String>) -> Vec<ChatMessage<'a>> {
    examples.clear();
    for e in events {
        if let Some((facts, answer)) = example_for(e) {
            // 37.5 s after the start of the run (or 01:00 of the event's day): no event's time.
            const EXAMPLE_OFFSET_NS: i64 = 37_500_000_000;
            let at = match e.stamp_ns < DAY_NS {
                true => EXAMPLE_OFFSET_NS,
                false => e.stamp_ns - e.stamp_ns.rem_euclid(DAY_NS) + 3_600_000_000_000 + EXAMPLE_OFFSET_NS,
            };
            let t = When(at).to_string();
            let question =
                format!("Alert facts:\n- {}\nSummarize these alerts for the operator.", facts.replace("{t}", &t));
            let answer = answer.replace("{t}", &t);
            if !examples.contains(&question) {
                examples.push(question);
                examples.push(answer);
            }
        }
    }
    let mut m = vec![ChatMessage { role: "system", content: SYSTEM_PROMPT }];
    for pair in examples.chunks(2) {
        m.push(ChatMessage { role: "user", content: &pair[0] });
        m.push(ChatMessage { role: "assistant", content: &pair[1] });
    }
    m.push(ChatMessage { role: "user", content: user });
    m
}

/// The chat the model answers for a batch of events.
pub fn prompt_messages(events: &[EventInfo]) -> String {
    let mut facts = String::from("Alert facts:\n");
    for e in events {
        facts.push_str("- ");
        facts.push_str(&e.fact_sentence());
        facts.push('\n');
    }
    facts.push_str("Summarize these alerts for the operator.");
    facts
}

/// Why a model answer was not used.
pub fn check_output(text: &str, events: &[EventInfo]) -> Result<(), &'static str> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty_output");
    }
    let bad = t.chars().filter(|c| *c == '\u{FFFD}' || (c.is_control() && *c != '\n')).count();
    let words: Vec<&str> = t.split_whitespace().collect();
    if bad > 0 || words.len() < 3 {
        return Err("garbage_output");
    }
    // A word repeated six times in a row is a decoding loop, not a summary.
    if words.windows(6).any(|w| w.iter().all(|x| x.eq_ignore_ascii_case(w[0]))) {
        return Err("garbage_output");
    }
    // The same sentence twice is a loop too ("…critical safety feature. The alert is … feature.").
    let mut sentences: Vec<String> = t
        .split(['.', '!', '?', '\n'])
        .map(|x| x.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase())
        .filter(|x| x.split(' ').count() >= 4)
        .collect();
    let n = sentences.len();
    sentences.sort();
    sentences.dedup();
    if sentences.len() < n {
        return Err("garbage_output");
    }
    let lower = t.to_lowercase();
    if !events.iter().flat_map(EventInfo::salient_words).any(|w| !w.is_empty() && lower.contains(&w)) {
        return Err("ungrounded_output");
    }
    Ok(())
}

/// Cuts a length-limited answer back to its last complete sentence, when it has one. A
/// sentence ends at `.`, `!` or `?` followed by a space or the end, and a `.` right after a
/// digit ends one only when a space follows: "y 0." at the end of a cut answer is half a
/// number ("y 0.4 m"), not a sentence.
pub(super) fn trim_to_sentence(text: &str) -> String {
    let t = text.trim();
    let chars: Vec<(usize, char)> = t.char_indices().collect();
    let ends = |k: usize| {
        let (_, c) = chars[k];
        let next = chars.get(k + 1).map(|x| x.1);
        let after_digit = k > 0 && chars[k - 1].1.is_ascii_digit();
        matches!(c, '.' | '!' | '?')
            && match next {
                None => !(c == '.' && after_digit),
                Some(n) => n.is_whitespace(),
            }
    };
    match (0..chars.len()).rev().find(|&k| ends(k)) {
        Some(k) if k + 1 == chars.len() => t.to_string(),
        Some(k) if chars[k].0 > 20 => t[..=chars[k].0].to_string(),
        _ => t.to_string(),
    }
}

/// An answer the token limit cut before its first sentence ended ("…and rule track
/// track_inside"): broken text, never published, however true its words.
pub(super) fn cut_mid_sentence(text: &str, stop: StopReason) -> bool {
    stop == StopReason::MaxTokens && !text.trim_end().ends_with(['.', '!', '?'])
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub event_ids: Vec<u64>,
    pub kinds: Vec<String>,
    /// Data time of the newest event summarized.
    pub stamp_ns: i64,
    pub text: String,
    /// Model name, or "template".
    pub model: String,
    pub generation_time_s: f32,
    pub tokens_generated: u32,
    pub fallback: bool,
    /// deadline | load_error | empty_output | garbage_output | ungrounded_output |
    /// truncated_output | unverified_claim | model_error | queue_full; empty when the model's
    /// answer was used.
    pub fallback_reason: String,
    /// With `unverified_claim`: the kind of the first claim the events do not support
    /// (`verify::Rejection::kind`). With it, and with an answer the output checks refused
    /// (`ungrounded_output`, `garbage_output`, `truncated_output`…): the model's rejected text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rejected_claim: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rejected_text: String,
    /// Model answers generated for this summary (0 for a template without a model).
    pub candidates: u32,
}

#[derive(Debug, Clone)]
pub struct SummarizerConfig {
    /// Time the model may take per summary (prompt + answer).
    pub deadline: Duration,
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Answers tried within the deadline until one verifies (best-of-N, first verified
    /// wins), per event with `per_event`.
    pub candidates: usize,
    /// Write a burst of several events one sentence per event (one prompt per event, all
    /// decoded together, the sentences joined) instead of in one answer.
    pub per_event: bool,
}

impl Default for SummarizerConfig {
    fn default() -> Self {
        SummarizerConfig {
            deadline: Duration::from_secs(2),
            max_tokens: 48,
            sampling: Sampling::Greedy,
            candidates: 3,
            per_event: true,
        }
    }
}

/// The model (or why there is none) and the rules for when to fall back.
pub struct Summarizer {
    llm: Result<Llm, String>,
    pub config: SummarizerConfig,
}

impl Summarizer {
    pub fn new(llm: Result<Llm, String>, config: SummarizerConfig) -> Self {
        Summarizer { llm, config }
    }
    pub fn model_name(&self) -> Option<&str> {
        self.llm.as_ref().ok().map(|l| l.name.as_str())
    }
    pub fn load_error(&self) -> Option<&str> {
        self.llm.as_ref().err().map(String::as_str)
    }
    pub(super) fn llm(&self) -> Option<&Llm> {
        self.llm.as_ref().ok()
    }

    /// The template summary, flagged as a fallback for `reason`.
    pub fn fallback(events: &[EventInfo], reason: &str, elapsed: Duration, tokens: u32) -> Summary {
        Summary {
            event_ids: events.iter().map(|e| e.event_id).collect(),
            kinds: events.iter().map(|e| e.kind.clone()).collect(),
            stamp_ns: events.iter().map(|e| e.stamp_ns).max().unwrap_or(0),
            text: template_summary(events),
            model: "template".into(),
            generation_time_s: elapsed.as_secs_f32(),
            tokens_generated: tokens,
            fallback: true,
            fallback_reason: reason.into(),
            rejected_claim: String::new(),
            rejected_text: String::new(),
            candidates: 0,
        }
    }

    /// A summary of `events`: the model's answer when it comes within the deadline and
    /// passes the checks and the claim verifier, else the template. Never fails.
    ///
    /// Test-time compute: the deadline is spent on up to `config.candidates` answers — the
    /// configured sampling first, then seeded top-p samples — and the first one the verifier
    /// accepts is published. With `config.per_event`, a burst of several events is written
    /// one sentence per event, the events' prompts decoded together (each sentence verified
    /// against its own event, then the whole text against the burst): a small model asked
    /// for several events at once leaves one out or merges them. Every answer continues
    /// from the prompt cache, so a second candidate costs only its answer and each event
    /// only its own fact line. The fallback carries the first failure.
    pub fn summarize(&self, events: &[EventInfo]) -> Summary {
        let start = Instant::now();
        let llm = match &self.llm {
            Ok(l) => l,
            Err(_) => return Self::fallback(events, "load_error", start.elapsed(), 0),
        };
        let mut run = Attempts { tokens: 0, tried: 0 };
        let written = if self.config.per_event && events.len() > 1 {
            // Every event's sentence is written at once (one batch per round of candidates);
            // the burst fails with the first event, in order, that found no verified sentence.
            let groups: Vec<&[EventInfo]> = events.iter().map(std::slice::from_ref).collect();
            match self.answer(llm, &groups, start, &mut run).into_iter().collect::<Result<Vec<_>, _>>() {
                Err(f) => Err(f),
                Ok(sentences) => {
                    let text = format!("{} anomaly events. {}", events.len(), sentences.join(" "));
                    // Each sentence holds for its own event; the whole must hold for the burst.
                    match super::verify::verify(&text, events) {
                        Ok(()) => Ok(text),
                        Err(rejection) => Err(Failure::Claim(rejection.kind.to_string(), text)),
                    }
                }
            }
        } else {
            self.answer(llm, &[events], start, &mut run).pop().expect("one group in, one answer out")
        };
        let elapsed = start.elapsed();
        match written {
            Ok(text) => Summary {
                event_ids: events.iter().map(|e| e.event_id).collect(),
                kinds: events.iter().map(|e| e.kind.clone()).collect(),
                stamp_ns: events.iter().map(|e| e.stamp_ns).max().unwrap_or(0),
                text,
                model: llm.name.clone(),
                generation_time_s: elapsed.as_secs_f32(),
                tokens_generated: run.tokens,
                fallback: false,
                fallback_reason: String::new(),
                rejected_claim: String::new(),
                rejected_text: String::new(),
                candidates: run.tried,
            },
            Err(failure) => {
                let mut s = Self::fallback(events, failure.reason(), elapsed, run.tokens);
                match failure {
                    Failure::Claim(kind, text) => {
                        s.rejected_claim = kind;
                        s.rejected_text = text;
                    }
                    Failure::Output(_, text) => s.rejected_text = text,
                    Failure::Reason(_) => {}
                }
                s.candidates = run.tried;
                s
            }
        }
    }

    /// For each group of events (the whole burst, or one event each), the first of up to
    /// `config.candidates` answers that passes the checks and the verifier, or that group's
    /// first failure (or the deadline, or a model error). The groups still without an
    /// answer are generated together, one round per candidate (`Llm::generate_batch`): a
    /// burst's sentences cost well under one step each, where one after the other a burst
    /// of four or more missed the deadline.
    fn answer(
        &self,
        llm: &Llm,
        groups: &[&[EventInfo]],
        start: Instant,
        run: &mut Attempts,
    ) -> Vec<Result<String, Failure>> {
        // Each prompt, and how much of it (the system message and the worked examples)
        // other prompts of the same kinds share: kept in the prompt cache on its own.
        let mut prompts = Vec::with_capacity(groups.len());
        for events in groups {
            let user = prompt_messages(events);
            let mut examples = Vec::new();
            let messages = chat_messages(events, &user, &mut examples);
            let encoded = llm.encode_prompt(&chat_prompt(&messages)).and_then(|ids| {
                let head = llm.encode_prompt(&chat_prompt(&messages[..messages.len() - 1]))?;
                let shared = ids.iter().zip(&head).take_while(|(a, b)| a == b).count();
                Ok((ids, shared))
            });
            match encoded {
                Ok(p) => prompts.push(p),
                Err(e) => {
                    tracing::warn!("summary prompt failed: {e}");
                    return groups.iter().map(|_| Err(Failure::Reason("model_error"))).collect();
                }
            }
        }
        // Seeds follow the events, so a replay gives the same summaries.
        let seeds: Vec<u64> = groups
            .iter()
            .map(|events| events.iter().fold(0u64, |h, e| h.wrapping_mul(1_000_003).wrapping_add(e.event_id)))
            .collect();
        let mut answers: Vec<Option<String>> = vec![None; groups.len()];
        let mut first_failure: Vec<Option<Failure>> = groups.iter().map(|_| None).collect();
        for candidate in 0..self.config.candidates.max(1) {
            let waiting: Vec<usize> = (0..groups.len()).filter(|&g| answers[g].is_none()).collect();
            if waiting.is_empty() {
                break;
            }
            let batch: Vec<BatchPrompt> = waiting
                .iter()
                .map(|&g| BatchPrompt {
                    prompt: &prompts[g].0,
                    shared_prefix: prompts[g].1,
                    sampling: match candidate {
                        0 => self.config.sampling,
                        k => Sampling::TopP { temperature: 0.7, top_p: 0.9, seed: seeds[g].wrapping_add(k as u64) },
                    },
                })
                .collect();
            let opts = GenerateOptions {
                max_tokens: self.config.max_tokens,
                sampling: self.config.sampling,
                deadline: Some(start + self.config.deadline),
                reuse_prompt: true,
            };
            let began = Instant::now();
            let generations = match llm.generate_batch(&batch, &opts) {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("summary generation failed: {e}");
                    for &g in &waiting {
                        first_failure[g].get_or_insert(Failure::Reason("model_error"));
                    }
                    break;
                }
            };
            let mut out_of_time = false;
            for (&g, gen) in waiting.iter().zip(generations) {
                run.tokens += gen.tokens.len() as u32;
                run.tried += 1;
                // Cut by the deadline, or ended just past it (the decoder looks at the clock
                // between layers): too late either way.
                if gen.stop == StopReason::Deadline || began + gen.total > start + self.config.deadline {
                    out_of_time = true;
                    continue;
                }
                let events = groups[g];
                let text = trim_to_sentence(&gen.text);
                let checked = check_output(&text, events).and_then(|()| {
                    if cut_mid_sentence(&text, gen.stop) {
                        Err("truncated_output")
                    } else {
                        Ok(())
                    }
                });
                let failure = match checked {
                    Err(reason) => Failure::Output(reason, text),
                    Ok(()) => match super::verify::verify(&text, events) {
                        Ok(()) => {
                            answers[g] = Some(text);
                            continue;
                        }
                        Err(rejection) => {
                            tracing::info!("model summary candidate {candidate} rejected ({rejection}): {text}");
                            Failure::Claim(rejection.kind.to_string(), text)
                        }
                    },
                };
                first_failure[g].get_or_insert(failure);
            }
            if out_of_time || start.elapsed() > self.config.deadline {
                break;
            }
        }
        answers
            .into_iter()
            .zip(first_failure)
            .map(|(answer, failure)| answer.ok_or_else(|| failure.unwrap_or(Failure::Reason("deadline"))))
            .collect()
    }
}

/// Model answers spent on one summary so far.
struct Attempts {
    tokens: u32,
    tried: u32,
}

/// Why a model answer was not used.
enum Failure {
    /// `deadline` or `model_error`: no answer to show.
    Reason(&'static str),
    /// A `check_output` reason or `truncated_output`, and the rejected text.
    Output(&'static str, String),
    /// The verifier's first unsupported claim kind, and the rejected text.
    Claim(String, String),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Reason(r) | Failure::Output(r, _) => r,
            Failure::Claim(..) => "unverified_claim",
        }
    }
}

/// Groups events that arrive close together: the first event opens a window of `window_ns`;
/// everything arriving before it closes (or until `max_events`) is summarized together.
#[derive(Debug, Clone)]
pub struct Coalescer {
    pub window_ns: i64,
    pub max_events: usize,
    pending: Vec<EventInfo>,
    opened_ns: i64,
}

impl Coalescer {
    pub fn new(window_ns: i64, max_events: usize) -> Self {
        Coalescer { window_ns, max_events: max_events.max(1), pending: Vec::new(), opened_ns: 0 }
    }
    /// Adds an event arriving at `now_ns`; returns a batch when this fills it.
    pub fn push(&mut self, e: EventInfo, now_ns: i64) -> Option<Vec<EventInfo>> {
        if self.pending.is_empty() {
            self.opened_ns = now_ns;
        }
        self.pending.push(e);
        (self.pending.len() >= self.max_events || self.window_ns <= 0).then(|| std::mem::take(&mut self.pending))
    }
    /// The pending batch, when its window has closed at `now_ns`.
    pub fn poll(&mut self, now_ns: i64) -> Option<Vec<EventInfo>> {
        (!self.pending.is_empty() && now_ns - self.opened_ns >= self.window_ns)
            .then(|| std::mem::take(&mut self.pending))
    }
    /// When the open window closes, if one is open.
    pub fn closes_at(&self) -> Option<i64> {
        (!self.pending.is_empty()).then_some(self.opened_ns + self.window_ns)
    }
    /// Whatever is pending (end of stream).
    pub fn flush(&mut self) -> Option<Vec<EventInfo>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone_event(id: u64, t: f64) -> EventInfo {
        EventInfo {
            event_id: id,
            stamp_ns: (t * 1e9) as i64,
            kind: "zone_intrusion".into(),
            severity: 1,
            rule: "track_inside_zone".into(),
            measured_value: 3.2,
            threshold: 0.0,
            sensors: vec!["lidar".into(), "radar".into()],
            track_ids: vec![7],
            zone: "forward".into(),
            position: [3.1, 0.5, 0.9],
            onset_ns: (t * 1e9) as i64,
            evidence: vec![("label".into(), "person".into()), ("distance_m".into(), "3.14".into())],
        }
    }

    #[test]
    fn template_states_the_facts_of_each_event() {
        let s = template_summary(&[zone_event(1, 12.0)]);
        assert_eq!(
            s,
            "Warning at t=12.0 s: a person (track 7) entered the 'forward' safety zone 3.14 m from the vehicle, 9° to the left (x 3.1 m, y 0.5 m), seen by lidar, radar."
        );
        let wall = template_summary(&[zone_event(1, 1_700_000_002.65)]);
        assert!(wall.starts_with("Warning at 22:13:22.6 UTC: a person"), "{wall}");
        let two = template_summary(&[zone_event(1, 12.0), zone_event(2, 12.4)]);
        assert!(two.starts_with("2 anomaly events. Warning at t=12.0 s") && two.contains("t=12.4 s"));
    }

    /// An event whose evidence is missing (another publisher, an older node) still gets a
    /// sentence with numbers the verifier supports, never a "?".
    #[test]
    fn template_without_evidence_says_what_the_event_measured() {
        let bare = |kind: &str, rule: &str, measured: f64, threshold: f64, sensor: &str| EventInfo {
            kind: kind.into(),
            rule: rule.into(),
            measured_value: measured,
            threshold,
            sensors: vec![sensor.into()],
            track_ids: vec![],
            zone: String::new(),
            position: [0.0; 3],
            evidence: vec![],
            ..zone_event(1, 12.0)
        };
        let cases = [
            (bare("collision_risk", "ttc_below_threshold", 1.2, 2.0, "radar"), "time to collision 1.20 s"),
            (bare("sensor_dropout", "stream_silent", 9.0, 5.0, "lidar"), "silent (9 expected periods, limit 5)"),
            (bare("sensor_dropout", "stream_recovered", 24.0, 5.0, "lidar"), "a silence of 24 expected periods"),
            (bare("impact", "shock_above_threshold", 47.1, 29.4, "imu"), "an impact of 47.1 m/s²"),
            (bare("deadline_overrun", "hard_miss_ratio", 0.12, 0.05, "camera"), "in 12 % of recent frames (limit 5 %)"),
            (bare("model_degraded", "camera_lidar_agreement_low", 0.31, 0.5, "camera"), "it found 0.31 of the objects"),
        ];
        for (e, says) in cases {
            let s = template_summary(std::slice::from_ref(&e));
            assert!(s.contains(says) && !s.contains('?'), "{s}");
            assert_eq!(crate::llm::verify::verify(&s, std::slice::from_ref(&e)), Ok(()), "{s}");
        }
    }

    #[test]
    fn output_checks_reject_empty_garbage_and_ungrounded_text() {
        let ev = [zone_event(1, 1.0)];
        assert_eq!(check_output("  ", &ev), Err("empty_output"));
        assert_eq!(check_output("ok", &ev), Err("garbage_output"));
        assert_eq!(check_output("the the the the the the the", &ev), Err("garbage_output"));
        assert_eq!(check_output("Have a wonderful day with friends.", &ev), Err("ungrounded_output"));
        assert_eq!(check_output("A person entered the forward zone.", &ev), Ok(()));
        let looped =
            "The alert fires when a track enters a safety zone. The alert fires when a track enters a safety zone.";
        assert_eq!(check_output(looped, &ev), Err("garbage_output"));
    }

    #[test]
    fn a_cut_answer_is_trimmed_to_its_last_sentence_not_into_a_number() {
        let cut = "A person entered the forward zone 3.1 m ahead. It is at (x 4.9 m, y 0.";
        assert_eq!(trim_to_sentence(cut), "A person entered the forward zone 3.1 m ahead.");
        let cut = "A person entered the forward zone at a distance of 3.";
        assert_eq!(trim_to_sentence(cut), cut, "no complete sentence to fall back to: left to the checks");
        assert_eq!(trim_to_sentence("The closing speed is 2.5 m/s. Range 3"), "The closing speed is 2.5 m/s.");
        assert_eq!(trim_to_sentence("The lidar stopped at t=4.2 s."), "The lidar stopped at t=4.2 s.");
        // What the trimmer cannot save, the caller refuses when the token limit cut it.
        assert!(cut_mid_sentence(
            "The alert fired when a person was seen by lidar, and rule track",
            StopReason::MaxTokens
        ));
        assert!(!cut_mid_sentence("A person entered the forward zone.", StopReason::MaxTokens));
        assert!(!cut_mid_sentence("A person entered the forward zone", StopReason::EndOfTurn), "the model ended it");
    }

    #[test]
    fn coalescer_groups_a_burst_and_caps_its_size() {
        let mut c = Coalescer::new(1_000_000_000, 3);
        assert!(c.push(zone_event(1, 0.0), 0).is_none());
        assert!(c.poll(500_000_000).is_none());
        assert!(c.push(zone_event(2, 0.6), 600_000_000).is_none());
        assert_eq!(c.closes_at(), Some(1_000_000_000));
        let b = c.poll(1_000_000_000).unwrap();
        assert_eq!(b.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(c.poll(5_000_000_000).is_none());
        c.push(zone_event(3, 2.0), 2_000_000_000);
        c.push(zone_event(4, 2.0), 2_000_000_000);
        assert_eq!(c.push(zone_event(5, 2.0), 2_000_000_000).unwrap().len(), 3);
        assert!(c.flush().is_none());
    }

    #[test]
    fn a_summarizer_without_a_model_publishes_the_template() {
        let s = Summarizer::new(Err("no file".into()), SummarizerConfig::default());
        let out = s.summarize(&[zone_event(4, 3.0)]);
        assert!(out.fallback && out.fallback_reason == "load_error" && out.model == "template");
        assert_eq!(out.event_ids, vec![4]);
        assert_eq!(out.text, template_summary(&[zone_event(4, 3.0)]));
    }
}
