//! The summarizer node's parameters: [`SummarizerNodeConfig`].
use super::{finite, NodeConfig};
use anyhow::{bail, Result};
use r2r::RosParams;
use serde::{Deserialize, Serialize};

/// The summarizer node's parameters (config/summarizer.yaml). Every one is read at start;
/// `ros2 param set` is refused with that reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
#[serde(deny_unknown_fields)]
pub struct SummarizerNodeConfig {
    /// GGUF file; "" = share/sensor_fusion/models/SmolLM2-135M-Instruct.Q4_1.gguf (else the source tree's .cache/llm/).
    pub model: String,
    /// default: the shipped file's sha256 when model is "", no check for another path; "": no check; else the required hex sha256.
    pub model_sha256: String,
    /// flex (CPU) or wgpu (GPU; Mesa lavapipe Vulkan without one).
    pub backend: String,
    /// "" = quantized on flex (ggml blocks, the CPU decoder), dequantized on wgpu (f32 Burn tensors); or quantized | dequantized.
    pub weights: String,
    /// Threads of the CPU decoder (quantized weights on flex); 0 = every core the process may use (its affinity / cgroup).
    pub threads: i64,
    /// Seconds per summary (prompt and answer); past it the template summary is published (fallback).
    pub deadline: f64,
    /// Generated tokens per summary (at least 1).
    pub max_tokens: i64,
    /// Seconds: events within this of a burst's first share one summary.
    pub coalesce_window: f64,
    /// Events one summary covers at most (at least 1); the rest of a burst starts the next.
    pub max_events_per_summary: i64,
    /// 0 = greedy; above 0 the first answer is a top-p sample at this temperature, seeded.
    pub temperature: f64,
    /// Top-p of the sampled first answer (temperature above 0).
    pub top_p: f64,
    /// Seed of the sampled first answer.
    pub seed: i64,
    /// Answers tried within the deadline until the claim verifier accepts one (1 … 16; per event with per_event): the first as sampled above, then top-p samples seeded by the event ids.
    pub candidates: i64,
    /// A burst of several events is written one sentence per event, decoded together, each verified against its event, instead of in one answer.
    pub per_event: bool,
    /// Events waiting for the model (at least 1); overflow gets template summaries (counted).
    pub queue_size: i64,
    /// SCHED_IDLE and nice 19 for the whole process.
    pub lowest_priority: bool,
    /// Seconds between /diagnostics messages.
    pub diagnostics_period: f64,
    /// Newest events /anomaly/explain can answer for (at least 1).
    pub explain_history: i64,
    /// Seconds the model may take to explain; past it the deterministic explanation.
    pub explain_deadline: f64,
    /// Speak each published summary with espeak-ng into a WAV file (its path on /anomaly/summary_audio_path).
    pub speak: bool,
    /// Where the WAV files go; "" = $ROS_HOME/sensor_fusion/speech (~/.ros/...). Created; a start-up error when it cannot be written.
    pub speak_dir: String,
    /// espeak-ng voice (espeak-ng --voices).
    pub speak_voice: String,
    /// Words per minute, 80 … 450.
    pub speak_rate: i64,
    /// Newest summary_*.wav files kept in speak_dir (at least 1); older ones are deleted.
    pub speak_keep_files: i64,
    /// Also play each file when the machine has an ALSA playback device and aplay/paplay.
    pub speak_play: bool,
    /// Journal accepted events until summarized, so a respawned summarizer still summarizes them.
    pub persist_pending: bool,
    /// Where the journal lives (one file per fully qualified node name); "" = $ROS_HOME/sensor_fusion/summarizer.
    pub state_dir: String,
}

impl Default for SummarizerNodeConfig {
    fn default() -> Self {
        let service = models::llm::summary::SummarizerConfig::default();
        Self {
            model: String::new(),
            model_sha256: "default".into(),
            backend: "flex".into(),
            weights: String::new(),
            threads: 0,
            deadline: service.deadline.as_secs_f64(),
            max_tokens: service.max_tokens as i64,
            coalesce_window: 1.0,
            max_events_per_summary: 8,
            temperature: 0.0,
            top_p: 0.9,
            seed: 0,
            candidates: service.candidates as i64,
            per_event: service.per_event,
            queue_size: 32,
            lowest_priority: true,
            diagnostics_period: 1.0,
            explain_history: 1000,
            explain_deadline: 5.0,
            speak: false,
            speak_dir: String::new(),
            speak_voice: "en".into(),
            speak_rate: 170,
            speak_keep_files: 200,
            speak_play: true,
            persist_pending: true,
            state_dir: String::new(),
        }
    }
}

impl NodeConfig for SummarizerNodeConfig {
    const NODE: &'static str = "summarizer";

    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl SummarizerNodeConfig {
    /// Everything the node checks before it starts, naming the parameter.
    pub fn check(&self) -> Result<()> {
        if !(self.deadline > 0.0) || !self.deadline.is_finite() {
            bail!("parameter deadline must be > 0 s, got {}", self.deadline);
        }
        for (name, v) in [
            ("coalesce_window", self.coalesce_window),
            ("diagnostics_period", self.diagnostics_period),
            ("temperature", self.temperature),
            ("top_p", self.top_p),
        ] {
            finite(name, v)?;
        }
        // Seconds the node turns into a Duration.
        crate::seconds("parameter explain_deadline", self.explain_deadline)?;
        for (name, v) in [
            ("threads", self.threads),
            ("max_tokens", self.max_tokens),
            ("max_events_per_summary", self.max_events_per_summary),
            ("queue_size", self.queue_size),
            ("explain_history", self.explain_history),
            ("speak_rate", self.speak_rate),
            ("speak_keep_files", self.speak_keep_files),
        ] {
            if v < 0 {
                bail!("parameter {name} must be >= 0, got {v}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// config/summarizer.yaml holds every summarizer parameter at its default, and
    /// docs/nodes/summarizer.md's table is generated from the struct.
    #[test]
    fn the_summarizers_file_and_page_hold_its_parameters() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let shipped = SummarizerNodeConfig::from_params_file(&root.join("config/summarizer.yaml")).expect("the file");
        assert_eq!(shipped, SummarizerNodeConfig::default());
        let text = std::fs::read_to_string(root.join("config/summarizer.yaml")).unwrap();
        for (name, _) in SummarizerNodeConfig::default().flat() {
            assert!(text.contains(&format!("\n    {name}:")), "config/summarizer.yaml does not name {name}");
        }
        SummarizerNodeConfig::default().check().expect("valid defaults");
        crate::check_generated(
            &root.join("docs/nodes/summarizer.md"),
            "<!-- generated from sensor_fusion::config::SummarizerNodeConfig",
            "<!-- end of generated table -->",
            &SummarizerNodeConfig::markdown_table(),
        );
    }
}
