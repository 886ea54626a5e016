//! Explanations on request (`/anomaly/explain`): for one event, or every event of a time
//! window, the rule that fired, the value it measured against its threshold, the evidence,
//! and the nearest counterfactual — the smallest change that would have kept the rule quiet
//! ("would not have fired had the time to collision stayed above 2.0 s"). The deterministic
//! explanation is always built; the model may rewrite it in plain words, and its text is used
//! only when the claim verifier accepts it, as for summaries. No ROS: the summarizer node
//! serves it and the tests call it directly.
use super::summary::{EventInfo, Summarizer};
use super::{ChatMessage, GenerateOptions, StopReason};
use serde::Serialize;
use std::time::Instant;

/// Which events an explanation request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Query {
    /// One event by `event_id`.
    Event(u64),
    /// Every event stamped within `[start_ns, end_ns]` (data time).
    Window { start_ns: i64, end_ns: i64 },
}

/// The most events one request explains (a window over a long run is cut to its newest).
pub const MAX_EXPLAINED: usize = 32;

/// The events of `history` (oldest first) a query asks for, oldest first; an error saying why
/// when there are none.
pub fn select(history: &[EventInfo], query: Query) -> Result<Vec<EventInfo>, String> {
    match query {
        Query::Event(id) => history.iter().find(|e| e.event_id == id).map(|e| vec![e.clone()]).ok_or_else(|| {
            match (history.first(), history.last()) {
                (Some(a), Some(b)) => {
                    format!("no event {id}: this summarizer holds events {} to {}", a.event_id, b.event_id)
                }
                _ => format!("no event {id}: this summarizer has received no events yet"),
            }
        }),
        Query::Window { start_ns, end_ns } if end_ns < start_ns => {
            Err(format!("the window ends ({end_ns} ns) before it starts ({start_ns} ns)"))
        }
        Query::Window { start_ns, end_ns } => {
            let mut hits: Vec<EventInfo> =
                history.iter().filter(|e| (start_ns..=end_ns).contains(&e.stamp_ns)).cloned().collect();
            if hits.is_empty() {
                return Err(format!(
                    "no event stamped between {:.3} s and {:.3} s",
                    start_ns as f64 * 1e-9,
                    end_ns as f64 * 1e-9
                ));
            }
            let cut = hits.len().saturating_sub(MAX_EXPLAINED);
            hits.drain(..cut);
            Ok(hits)
        }
    }
}

/// One event explained without the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventExplanation {
    pub event_id: u64,
    pub kind: String,
    pub rule: String,
    pub measured_value: f64,
    pub threshold: f64,
    /// The nearest change that would not have fired the rule.
    pub counterfactual: String,
    /// What happened, the rule against its threshold, the evidence and the counterfactual.
    pub text: String,
}

/// The answer to one request.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub events: Vec<EventExplanation>,
    /// The model's verified text, else the deterministic paragraphs.
    pub text: String,
    /// Model name, or "template".
    pub model: String,
    pub fallback: bool,
    /// Why the model's text was not used (as for summaries; empty when it was).
    pub fallback_reason: String,
    pub generation_time_s: f32,
}

fn ev_f64(e: &EventInfo, key: &str) -> Option<f64> {
    e.ev(key).and_then(|v| v.parse().ok())
}

/// When the rule fires, and what it measured against its threshold ("fires when the time to
/// collision drops below 2.0 s; it was 1.50 s.").
fn rule_clause(e: &EventInfo) -> String {
    let (m, th) = (e.measured_value, e.threshold);
    let sensor = e.sensors.join(", ");
    match e.rule.as_str() {
        "track_inside_zone" => format!(
            "fires when a confirmed track measured by at least one sensor enters a safety zone; the track was {m:.2} m from the vehicle, {} m inside the '{}' zone's edge.",
            e.ev("zone_depth_m").unwrap_or("?"),
            e.zone
        ),
        "ttc_below_threshold" => format!(
            "fires when the time to collision drops below {th:.1} s; it was {m:.2} s."
        ),
        "stream_silent" => format!(
            "fires when a stream that has delivered goes silent for more than {th:.0} expected periods; the {sensor} stream was silent for {m:.1} periods."
        ),
        "image_blinded" => format!(
            "fires when the image is too dark or too bright and featureless; the mean brightness was {m:.1} against a limit of {th:.1}."
        ),
        "image_frozen" => format!(
            "fires after {th:.0} identical camera frames in a row; there were {m:.0}."
        ),
        "cloud_non_finite" => format!(
            "fires when more than {:.1} % of a LiDAR sweep's points are not finite; it was {:.1} %.",
            th * 100.0,
            m * 100.0
        ),
        "shock_above_threshold" => format!(
            "fires when the IMU's acceleration beyond gravity exceeds {th:.1} m/s²; it was {m:.1} m/s²."
        ),
        "imu_saturated" => format!(
            "fires when an accelerometer axis reaches {th:.1} m/s²; the peak was {m:.1} m/s²."
        ),
        "camera_misses_lidar_radar_object" => format!(
            "fires when the camera fails to see an object LiDAR and radar confirm in its view for {th:.0} frames in a row; it missed it for {m:.0}."
        ),
        "lidar_radar_miss_camera_object" => format!(
            "fires when a camera detection has no LiDAR or radar object behind it for {th:.0} frames in a row; it had none for {m:.0}."
        ),
        "hard_miss_ratio" => format!(
            "fires when more than {:.0} % of recent sets miss the 100 ms hard deadline; {:.0} % did.",
            th * 100.0,
            m * 100.0
        ),
        "camera_lidar_agreement_low" => format!(
            "fires when the detector finds fewer than {:.0} % of the objects LiDAR and radar see; it found {:.0} %.",
            th * 100.0,
            m * 100.0
        ),
        "input_outside_training_range" => format!(
            "fires when at least {:.0} % of recent frames lie outside the detector's training range; {:.0} % did.",
            th * 100.0,
            m * 100.0
        ),
        "stream_recovered" => format!(
            "fires when a stream reported silent delivers again; the {sensor} stream was silent for {m:.1} expected periods."
        ),
        "stream_never_started" => format!(
            "fires when a declared sensor has delivered nothing {th:.1} s after the other sensors started; the {sensor} stream had not started after {m:.1} s."
        ),
        "data_time_went_back" => format!(
            "fires when a stream's stamps go back by more than {th:.1} s; they went back {m:.3} s, so tracking and the rules restarted."
        ),
        "data_time_went_forward" => format!(
            "fires when data time leaps forward by more than {th:.1} s while every stream is live; it leapt {m:.3} s, so tracking and the rules restarted."
        ),
        "detector_unavailable" => {
            format!("fires when the camera detector cannot be loaded at start-up: {}.", e.ev("error").unwrap_or("no reason given"))
        }
        _ => format!("compared {m:.3} against a threshold of {th:.3}."),
    }
}

/// The nearest change that would not have fired the rule.
pub fn counterfactual(e: &EventInfo) -> String {
    let th = e.threshold;
    let sensor = e.sensors.join(", ");
    match e.rule.as_str() {
        "track_inside_zone" => match e.ev("zone_depth_m") {
            Some(d) => {
                format!("Would not have fired had the object stayed {d} m further out, outside the '{}' zone.", e.zone)
            }
            None => format!("Would not have fired had the object stayed outside the '{}' zone.", e.zone),
        },
        "ttc_below_threshold" => {
            // Same gap, slower approach: gap = ttc × closing speed.
            let slower = ev_f64(e, "closing_speed_mps")
                .filter(|v| *v > 0.0 && th > 0.0)
                .map(|v| {
                    format!(", that is a closing speed below {:.2} m/s at the same range", v * e.measured_value / th)
                })
                .unwrap_or_default();
            format!("Would not have fired had the time to collision stayed above {th:.1} s{slower}.")
        }
        "stream_silent" => match ev_f64(e, "expected_rate_hz").filter(|r| *r > 0.0) {
            Some(rate) => format!(
                "Would not have fired had a {sensor} message arrived within {th:.0} periods ({:.2} s) of the last one.",
                th / rate
            ),
            None => {
                format!("Would not have fired had a {sensor} message arrived within {th:.0} periods of the last one.")
            }
        },
        "image_blinded" if e.measured_value < th => {
            format!(
                "Would not have fired had the mean image brightness been above {th:.1}, or the image shown texture."
            )
        }
        "image_blinded" => {
            format!(
                "Would not have fired had the mean image brightness been below {th:.1}, or the image shown texture."
            )
        }
        "image_frozen" => format!("Would not have fired had the image changed within {th:.0} frames."),
        "cloud_non_finite" => {
            format!("Would not have fired with at most {:.1} % non-finite points in the sweep.", th * 100.0)
        }
        "shock_above_threshold" => format!(
            "Would not have fired had the shock stayed at or below {th:.1} m/s² ({:.2} times gravity).",
            th / 9.80665
        ),
        "imu_saturated" => format!("Would not have fired had every axis stayed below {th:.1} m/s²."),
        "camera_misses_lidar_radar_object" => {
            format!("Would not have fired had the camera seen the object within {th:.0} frames.")
        }
        "lidar_radar_miss_camera_object" => {
            format!("Would not have fired had LiDAR or radar confirmed the camera's object within {th:.0} frames.")
        }
        "hard_miss_ratio" => {
            format!("Would not have fired with at most {:.0} % of recent sets missing the hard deadline.", th * 100.0)
        }
        "camera_lidar_agreement_low" => {
            format!(
                "Would not have fired had the detector found at least {:.0} % of the LiDAR/radar objects.",
                th * 100.0
            )
        }
        "input_outside_training_range" => format!(
            "Would not have fired with fewer than {:.0} % of recent frames outside the training range.",
            th * 100.0
        ),
        "stream_recovered" => {
            format!("Would not have fired had the {sensor} stream never gone silent for more than {th:.0} periods.")
        }
        "stream_never_started" => {
            format!("Would not have fired had a {sensor} message arrived within {th:.1} s of the first message of any sensor.")
        }
        "data_time_went_back" => format!("Would not have fired had the stamps gone back by at most {th:.1} s."),
        "data_time_went_forward" => {
            format!("Would not have fired had data time moved forward by at most {th:.1} s in one step.")
        }
        "detector_unavailable" => {
            "Would not have fired with a readable model whose sha256 matches its manifest.".into()
        }
        _ => format!("Would not have fired on the other side of the threshold {th:.3}."),
    }
}

/// The deterministic explanation of one event.
pub fn explain_event(e: &EventInfo) -> EventExplanation {
    let evidence = if e.evidence.is_empty() {
        String::new()
    } else {
        format!(" Evidence: {}.", e.evidence.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))
    };
    let cf = counterfactual(e);
    EventExplanation {
        event_id: e.event_id,
        kind: e.kind.clone(),
        rule: e.rule.clone(),
        measured_value: e.measured_value,
        threshold: e.threshold,
        text: format!("Event {}: {} Rule {} {}{evidence} {cf}", e.event_id, e.fact_sentence(), e.rule, rule_clause(e)),
        counterfactual: cf,
    }
}

pub const EXPLAIN_SYSTEM_PROMPT: &str = "You are the safety monitor of an autonomous robot. The operator asks why an alert fired. Answer in one or two short, plain-English sentences, using only the facts you are given.";

impl Summarizer {
    /// The deterministic explanation of `events`, flagged as a fallback for `reason`.
    pub fn explain_template(events: &[EventInfo], reason: &str) -> Explanation {
        let per_event: Vec<EventExplanation> = events.iter().map(explain_event).collect();
        Explanation {
            text: per_event.iter().map(|x| x.text.as_str()).collect::<Vec<_>>().join("\n"),
            events: per_event,
            model: "template".into(),
            fallback: true,
            fallback_reason: reason.into(),
            generation_time_s: 0.0,
        }
    }

    /// Explains `events`: the deterministic paragraphs, and the model's answer in their place
    /// when it comes within `deadline` (an operator's question can wait longer than a
    /// summary) and the claim verifier accepts every claim in it.
    pub fn explain(&self, events: &[EventInfo], deadline: std::time::Duration) -> Explanation {
        let start = Instant::now();
        let template = |reason: &str| Explanation {
            generation_time_s: start.elapsed().as_secs_f32(),
            ..Self::explain_template(events, reason)
        };
        let Some(llm) = self.llm() else { return template("load_error") };
        let mut user = String::from("Alert facts:\n");
        for e in events {
            user.push_str(&format!("- {} This alert {}\n", e.fact_sentence(), rule_clause(e)));
        }
        user.push_str("Explain why these alerts fired.");
        let messages = [
            ChatMessage { role: "system", content: EXPLAIN_SYSTEM_PROMPT },
            ChatMessage { role: "user", content: &user },
        ];
        let opts = GenerateOptions {
            // An explanation says more than a summary: the rule and its threshold too.
            max_tokens: self.config.max_tokens * 2,
            sampling: self.config.sampling,
            deadline: Some(start + deadline),
            reuse_prompt: true,
        };
        let reason = match llm.chat(&messages, &opts) {
            Err(e) => {
                tracing::warn!("explanation generation failed: {e}");
                "model_error"
            }
            Ok(g) if g.stop == StopReason::Deadline || start.elapsed() > deadline => "deadline",
            Ok(g) => {
                let text = super::summary::trim_to_sentence(&g.text);
                // An explanation states what was measured: a text with no number in it
                // (every number it has is then checked by the verifier) explains nothing.
                let checked = super::summary::check_output(&text, events).and_then(|()| {
                    if super::summary::cut_mid_sentence(&text, g.stop) {
                        Err("truncated_output")
                    } else if !text.chars().any(|c| c.is_ascii_digit()) {
                        Err("no_measurement")
                    } else {
                        Ok(())
                    }
                });
                match checked {
                    Err(reason) => reason,
                    Ok(()) => match super::verify::verify(&text, events) {
                        Ok(()) => {
                            return Explanation {
                                text,
                                model: llm.name.clone(),
                                fallback: false,
                                fallback_reason: String::new(),
                                ..template("")
                            }
                        }
                        Err(rejection) => {
                            tracing::info!("model explanation rejected ({rejection}): {text}");
                            "unverified_claim"
                        }
                    },
                }
            }
        };
        template(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::summary::SummarizerConfig;

    fn event(
        id: u64,
        t: f64,
        kind: &str,
        rule: &str,
        measured: f64,
        threshold: f64,
        evidence: &[(&str, &str)],
    ) -> EventInfo {
        EventInfo {
            event_id: id,
            stamp_ns: (t * 1e9) as i64,
            kind: kind.into(),
            severity: 1,
            rule: rule.into(),
            measured_value: measured,
            threshold,
            sensors: vec!["lidar".into(), "radar".into()],
            track_ids: vec![4],
            zone: if kind == "zone_intrusion" { "forward".into() } else { String::new() },
            position: [6.0, 0.2, 0.8],
            onset_ns: (t * 1e9) as i64,
            evidence: evidence.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn risk(id: u64, t: f64) -> EventInfo {
        event(
            id,
            t,
            "collision_risk",
            "ttc_below_threshold",
            1.5,
            2.0,
            &[("label", "vehicle"), ("ttc_s", "1.50"), ("closing_speed_mps", "4.00")],
        )
    }

    #[test]
    fn an_explanation_names_the_rule_its_value_against_the_threshold_and_the_nearest_counterfactual() {
        let x = explain_event(&risk(9, 12.0));
        assert_eq!((x.event_id, x.rule.as_str(), x.measured_value, x.threshold), (9, "ttc_below_threshold", 1.5, 2.0));
        // gap = 1.5 s × 4 m/s = 6 m; at 2.0 s that is 3 m/s.
        assert_eq!(
            x.counterfactual,
            "Would not have fired had the time to collision stayed above 2.0 s, that is a closing speed below 3.00 m/s at the same range."
        );
        assert!(
            x.text.starts_with("Event 9: Warning at t=12.0 s: collision risk with a vehicle (track 4)"),
            "{}",
            x.text
        );
        assert!(x.text.contains("drops below 2.0 s; it was 1.50 s.") && x.text.contains("closing_speed_mps = 4.00"));

        let zone = event(
            3,
            5.0,
            "zone_intrusion",
            "track_inside_zone",
            6.0,
            0.0,
            &[("label", "person"), ("distance_m", "6.00"), ("zone_depth_m", "0.80")],
        );
        assert_eq!(
            counterfactual(&zone),
            "Would not have fired had the object stayed 0.80 m further out, outside the 'forward' zone."
        );
        let mut silent = event(5, 7.0, "sensor_dropout", "stream_silent", 7.5, 5.0, &[("expected_rate_hz", "10")]);
        silent.sensors = vec!["lidar".into()];
        assert_eq!(
            counterfactual(&silent),
            "Would not have fired had a lidar message arrived within 5 periods (0.50 s) of the last one."
        );
        let dark = event(6, 8.0, "sensor_degraded", "image_blinded", 3.0, 10.0, &[]);
        assert!(counterfactual(&dark).contains("above 10.0"));
        let bright = event(7, 8.0, "sensor_degraded", "image_blinded", 250.0, 245.0, &[]);
        assert!(counterfactual(&bright).contains("below 245.0"));
    }

    #[test]
    fn events_are_selected_by_id_or_by_window_with_a_reason_when_none_match() {
        let history: Vec<EventInfo> = (1..=5).map(|i| risk(i, i as f64)).collect();
        assert_eq!(select(&history, Query::Event(3)).unwrap()[0].event_id, 3);
        assert_eq!(select(&history, Query::Event(42)).unwrap_err(), "no event 42: this summarizer holds events 1 to 5");
        assert!(select(&[], Query::Event(1)).unwrap_err().contains("no events yet"));
        let w = select(&history, Query::Window { start_ns: 2_000_000_000, end_ns: 4_000_000_000 }).unwrap();
        assert_eq!(w.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(select(&history, Query::Window { start_ns: 9_000_000_000, end_ns: 10_000_000_000 })
            .unwrap_err()
            .starts_with("no event stamped between 9.000 s and 10.000 s"));
        assert!(select(&history, Query::Window { start_ns: 5, end_ns: 1 }).is_err());
        let long: Vec<EventInfo> = (1..=100).map(|i| risk(i, i as f64)).collect();
        let w = select(&long, Query::Window { start_ns: 0, end_ns: i64::MAX }).unwrap();
        assert_eq!((w.len(), w[0].event_id, w[MAX_EXPLAINED - 1].event_id), (MAX_EXPLAINED, 69, 100), "newest kept");
    }

    #[test]
    fn without_a_model_the_explanation_is_the_template() {
        let s = Summarizer::new(Err("no file".into()), SummarizerConfig::default());
        let x = s.explain(&[risk(1, 1.0), risk(2, 2.0)], std::time::Duration::from_secs(5));
        assert!(x.fallback && x.fallback_reason == "load_error" && x.model == "template");
        assert_eq!(x.text, format!("{}\n{}", explain_event(&risk(1, 1.0)).text, explain_event(&risk(2, 2.0)).text));
        assert_eq!(x.events.len(), 2);
    }
}
