//! Benchmark of the summarizer's language model, one configuration per run (so the peak RSS
//! is this configuration's), JSON on stdout:
//!
//!   fusion_bench_llm --backend flex --weights quantized --prompt-file P.txt --gen 64
//!
//! Prompt processing (the whole prompt in one forward pass) and generation (a fixed number of
//! greedy steps, no early stop) are timed separately; the best of `--repeats` runs is kept.
//! `scripts/bench_llm.py` runs every configuration and llama.cpp on the same prompt.
use anyhow::{Context, Result};
use clap::Parser;
use models::llm::{sample, Llm, LlmOptions, Sampling, WeightMode};
use models::Backend;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Time the LLM: prompt tokens/s, generated tokens/s, first-token latency, peak RSS (JSON)")]
struct Args {
    #[arg(long, default_value = ".cache/llm/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    #[arg(long, default_value = "flex")]
    backend: Backend,
    /// quantized or dequantized (default: quantized on flex, dequantized on wgpu).
    #[arg(long)]
    weights: Option<WeightMode>,
    /// The prompt, raw (chat template included), special tokens recognised.
    #[arg(long)]
    prompt_file: PathBuf,
    #[arg(long, default_value_t = 64)]
    gen: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Prompts through Burn's f32 products of per-layer dequantized weights instead of the
    /// 8-bit path (llama.cpp's arithmetic; in the CPU decoder by default).
    #[arg(long, conflicts_with = "prompt_int8")]
    prompt_f32: bool,
    /// Prompts in 8 bits (the default; kept so older command lines still run).
    #[arg(long)]
    prompt_int8: bool,
    /// Decode every token through Burn too (the path before the CPU decoder), for comparison.
    #[arg(long)]
    burn_decode: bool,
    /// Threads of the CPU decoder (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep the integer kernels to AVX2 where the CPU has AVX-512 VNNI (to compare with a
    /// llama.cpp built for AVX2 on the same instruction set).
    #[arg(long)]
    avx2_only: bool,
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let prompt = std::fs::read_to_string(&args.prompt_file)
        .with_context(|| format!("reading {}", args.prompt_file.display()))?;
    models::llm::quant::limit_kernels_to_avx2(args.avx2_only);
    let t0 = Instant::now();
    let llm = Llm::load(
        &args.model,
        &LlmOptions {
            backend: args.backend,
            weights: args.weights,
            prompt_f32: args.prompt_f32,
            cpu_decode: !args.burn_decode,
            threads: args.threads,
            ..LlmOptions::default()
        },
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let ids = llm.encode_prompt(&prompt)?;
    let mut rng = rand::thread_rng();
    let mut runs = Vec::new();
    for _ in 0..args.repeats.max(1) {
        let mut cache = llm.model.new_cache();
        let t = Instant::now();
        let logits = llm.model.forward(&ids, &mut cache, None)?;
        let mut tok = sample(&logits, Sampling::Greedy, &mut rng);
        let first = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..args.gen {
            let logits = llm.model.forward(&[tok], &mut cache, None)?;
            tok = sample(&logits, Sampling::Greedy, &mut rng);
        }
        let gen_s = t.elapsed().as_secs_f64();
        runs.push(json!({ "prompt_s": first, "first_token_s": first, "gen_s": gen_s }));
    }
    let best = runs
        .iter()
        .min_by(|a, b| {
            let k = |r: &serde_json::Value| r["prompt_s"].as_f64().unwrap() + r["gen_s"].as_f64().unwrap();
            k(a).total_cmp(&k(b))
        })
        .unwrap()
        .clone();
    let prompt_s = best["prompt_s"].as_f64().unwrap();
    let gen_s = best["gen_s"].as_f64().unwrap();
    println!(
        "{}",
        json!({
            "engine": "sensor_fusion (Burn)",
            "model": llm.name,
            "backend": args.backend.as_str(),
            "weights": llm.model.mode.as_str(),
            "prompt_matmul": match (llm.model.mode, args.prompt_f32, llm.model.cpu_decode_threads()) {
                (WeightMode::Quantized, true, _) => "f32 (per-layer dequantized)",
                (WeightMode::Quantized, false, Some(_)) => "int8 (CPU decoder, whole prompt per pass)",
                (WeightMode::Quantized, false, None) => "int8 kernel (Burn)",
                _ => "f32",
            },
            "weight_mb": llm.model.weight_bytes as f64 / 1048576.0,
            "decode": match llm.model.cpu_decode_threads() { Some(_) => "cpu decoder", None => "burn" },
            "kernels": models::llm::quant::kernel_isa(),
            "threads": llm.model.cpu_decode_threads().unwrap_or_else(rayon::current_num_threads),
            "load_s": load_s,
            "prompt_tokens": ids.len(),
            "generated_tokens": args.gen,
            "prompt_tokens_per_s": ids.len() as f64 / prompt_s,
            "generated_tokens_per_s": args.gen as f64 / gen_s,
            "first_token_ms": prompt_s * 1e3,
            "peak_rss_mb": peak_rss_mb(),
            "runs": runs,
        })
    );
    Ok(())
}
