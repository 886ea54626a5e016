//! What the summarizer node and `fusion_replay --summaries` share: where the model is, its
//! known hash, loading it (a failure leaves a template-only summarizer, never an error), and
//! summaries of a finished replay's events.
use models::llm::summary::{Coalescer, EventInfo, Summarizer, SummarizerConfig, Summary};
use models::llm::{Llm, LlmOptions, WeightMode};
use models::Backend;
use std::path::PathBuf;
use std::time::Instant;

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
}

impl Default for ModelChoice {
    fn default() -> Self {
        ModelChoice { model: String::new(), sha256: "default".into(), backend: Backend::Flex, weights: None }
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
    let opts = LlmOptions { backend: choice.backend, weights: choice.weights, sha256, ..LlmOptions::default() };
    let t0 = Instant::now();
    let llm = Llm::load(&path, &opts).map_err(|e| e.to_string());
    match &llm {
        Ok(l) => tracing::info!(
            "language model '{}' loaded from {} in {:.0} ms ({} backend, {} weights)",
            l.name,
            path.display(),
            t0.elapsed().as_secs_f64() * 1e3,
            choice.backend.as_str(),
            l.model.mode.as_str()
        ),
        Err(e) => tracing::error!("no language model, every summary will be the template (fallback): {e}"),
    }
    Summarizer::new(llm, config)
}

/// Summaries of a replay's events: bursts are coalesced by data time (`window_ns` from the
/// first event of a burst), each burst summarized as the node would.
pub fn summarize_events(
    summarizer: &Summarizer,
    events: &[EventInfo],
    window_ns: i64,
    max_events: usize,
) -> Vec<Summary> {
    let mut c = Coalescer::new(window_ns, max_events);
    let mut out = Vec::new();
    for e in events {
        if let Some(b) = c.poll(e.stamp_ns) {
            out.push(summarizer.summarize(&b));
        }
        if let Some(b) = c.push(e.clone(), e.stamp_ns) {
            out.push(summarizer.summarize(&b));
        }
    }
    if let Some(b) = c.flush() {
        out.push(summarizer.summarize(&b));
    }
    out
}
