//! Summary benchmark: every burst of a corpus of replayed runs summarized by the model under
//! the summarizer's rules (deadline, claim verifier, best-of-N) for each N, JSON on stdout:
//!
//!   fusion_bench_summaries RUN_DIR... [--candidates 1,2,3,4] [--per-event on,off] [--deadline 2.0] [--window 1.0]
//!
//! A RUN_DIR holds a `fusion_replay` output (`events.jsonl`); its events are coalesced into
//! bursts by data time as the summarizer node does. Per N: the share of bursts published
//! model-written within the deadline, the reasons the others fell back (and the failing
//! claim kinds), words per summary, generation p50/p99, the model-written share and deadline
//! fallbacks by number of events in a burst, and the same for the template. Every
//! published text is re-checked by the verifier: `published_unverified` must be 0.
use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use models::llm::summary::{template_summary, Coalescer, EventInfo, Summarizer, SummarizerConfig};
use models::llm::verify::verify;
use models::llm::{Llm, LlmOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Summaries of replayed event bursts: model-written share, faithfulness, latency by best-of-N (JSON)")]
struct Args {
    /// fusion_replay output directories (each with events.jsonl).
    runs: Vec<PathBuf>,
    #[arg(long, default_value = ".cache/llm/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    #[arg(long, default_value = "1,2,3,4")]
    candidates: String,
    /// Write multi-event bursts one event at a time (`on`), in one answer (`off`), or both
    /// (`on,off`: every candidate count run each way).
    #[arg(long, default_value = "on")]
    per_event: String,
    #[arg(long, default_value_t = 2.0)]
    deadline: f64,
    #[arg(long, default_value_t = 1.0)]
    window: f64,
    #[arg(long, default_value_t = 8)]
    max_events: usize,
}

/// An `events.jsonl` line (fusion::anomaly::Event as JSON) as the summarizer sees it.
fn event_info(v: &Value) -> Option<EventInfo> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    Some(EventInfo {
        event_id: v["event_id"].as_u64()?,
        stamp_ns: v["stamp_ns"].as_i64()?,
        kind: s("kind")?,
        severity: v["severity"].as_u64()? as u8,
        rule: s("rule")?,
        measured_value: v["measured_value"].as_f64()?,
        threshold: v["threshold"].as_f64()?,
        sensors: v["sensors"].as_array()?.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        track_ids: v["track_ids"].as_array()?.iter().filter_map(|x| x.as_u64().map(|n| n as u32)).collect(),
        zone: s("zone").unwrap_or_default(),
        position: {
            let p = v["position"].as_array()?;
            [p.first()?.as_f64()?, p.get(1)?.as_f64()?, p.get(2)?.as_f64()?]
        },
        onset_ns: v["onset_ns"].as_i64()?,
        evidence: v["evidence"]
            .as_array()?
            .iter()
            .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), kv["value"].as_str()?.to_string())))
            .collect(),
    })
}

fn bursts(events: Vec<EventInfo>, window_ns: i64, max_events: usize) -> Vec<Vec<EventInfo>> {
    let mut c = Coalescer::new(window_ns, max_events);
    let mut out = vec![];
    for e in events {
        let t = e.stamp_ns;
        out.extend(c.poll(t));
        out.extend(c.push(e, t));
    }
    out.extend(c.flush());
    out
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut corpus = vec![];
    for dir in &args.runs {
        let path = dir.join("events.jsonl");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let events: Vec<EventInfo> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).ok().as_ref().and_then(event_info))
            .collect::<Option<_>>()
            .with_context(|| format!("{}: not a fusion_replay events file", path.display()))?;
        corpus.extend(bursts(events, (args.window * 1e9) as i64, args.max_events));
    }
    let llm = Llm::load(&args.model, &LlmOptions::default()).map_err(|e| e.to_string());
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for b in &corpus {
        for e in b {
            *kinds.entry(e.kind.clone()).or_default() += 1;
        }
    }
    let template_words: Vec<usize> = corpus.iter().map(|b| words(&template_summary(b))).collect();
    // The template must verify on every burst: it is what goes out whenever the model cannot.
    let template_failures: Vec<Value> = corpus
        .iter()
        .filter_map(|b| {
            let text = template_summary(b);
            verify(&text, b).err().map(|r| json!({"text": text, "rejected": r.to_string()}))
        })
        .collect();
    let template_unverified = template_failures.len();
    let mut rows = vec![];
    let mut summarizer = Summarizer::new(llm, SummarizerConfig::default());
    let mut settings = vec![];
    for per_event in args.per_event.split(',') {
        let per_event = match per_event {
            "on" => true,
            "off" => false,
            other => anyhow::bail!("--per-event takes on, off or on,off, not {other:?}"),
        };
        for n in args.candidates.split(',') {
            settings.push((per_event, n.parse::<usize>().context("--candidates")?));
        }
    }
    for (per_event, n) in settings {
        summarizer.config = SummarizerConfig {
            per_event,
            deadline: Duration::try_from_secs_f64(args.deadline).map_err(|_| {
                anyhow::anyhow!("--deadline must be a finite number of seconds >= 0, got {}", args.deadline)
            })?,
            candidates: n,
            ..SummarizerConfig::default()
        };
        let mut hist = Histogram::<u64>::new(3)?;
        let (mut by_model, mut unverified, mut word_sum, mut tried) = (0usize, 0usize, 0usize, 0u64);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut claims: BTreeMap<String, usize> = BTreeMap::new();
        let mut examples: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        // Per number of events in a burst: [bursts, model-written, deadline fallbacks].
        let mut by_size: BTreeMap<usize, [usize; 3]> = BTreeMap::new();
        for b in &corpus {
            let s = summarizer.summarize(b);
            let size = by_size.entry(b.len()).or_default();
            size[0] += 1;
            size[1] += !s.fallback as usize;
            size[2] += (s.fallback_reason == "deadline") as usize;
            hist.record((s.generation_time_s as f64 * 1000.0).round().max(1.0) as u64)?;
            tried += s.candidates as u64;
            word_sum += words(&s.text);
            unverified += verify(&s.text, b).is_err() as usize;
            if s.fallback {
                *reasons.entry(s.fallback_reason.clone()).or_default() += 1;
                if !s.rejected_claim.is_empty() {
                    *claims.entry(s.rejected_claim.clone()).or_default() += 1;
                }
            } else {
                by_model += 1;
            }
            let key = b.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>().join("+");
            let list = examples.entry(key).or_default();
            if list.len() < 5 {
                // The template beside what was published, so the two can be read side by side.
                let template = if s.fallback { String::new() } else { template_summary(b) };
                list.push(json!({"model": !s.fallback, "text": s.text, "template": template,
                                 "rejected": s.rejected_text, "rejected_claim": s.rejected_claim}));
            }
        }
        let total = corpus.len().max(1);
        rows.push(json!({
            "candidates": n,
            "per_event": per_event,
            "bursts": corpus.len(),
            "model_written_share": by_model as f64 / total as f64,
            "published_unverified": unverified,
            "fallback_reasons": reasons,
            "rejected_claims": claims,
            "candidates_per_burst": tried as f64 / total as f64,
            "words_per_summary": word_sum as f64 / total as f64,
            "generation_ms_p50": hist.value_at_quantile(0.5),
            "generation_ms_p99": hist.value_at_quantile(0.99),
            "by_burst_size": by_size.iter().map(|(k, [n, model, deadline])| {
                (k.to_string(), json!({"bursts": n, "model_written": model, "deadline": deadline}))
            }).collect::<BTreeMap<_, _>>(),
            "examples": examples,
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "benchmark": "summaries", "deadline_s": args.deadline, "runs": args.runs.len(), "bursts": corpus.len(),
            "events_by_kind": kinds,
            "template": {"words_per_summary": template_words.iter().sum::<usize>() as f64 / template_words.len().max(1) as f64,
                         "unverified": template_unverified, "unverified_examples": template_failures},
            "by_candidates": rows,
        }))?
    );
    Ok(())
}
