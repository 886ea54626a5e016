//! Runs the summarizer's language model from the command line, printing JSON:
//!
//!   fusion_llm generate --prompt "Why is the sky blue?"            (chat template applied)
//!   fusion_llm generate --prompts-json prompts.json --raw --max-tokens 32
//!   fusion_llm tokenize --texts-json texts.json
//!
//! `--model` defaults to the file `scripts/fetch-weights.sh` puts in `.cache/llm/`.
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use models::llm::{ChatMessage, GenerateOptions, Llm, LlmOptions, Sampling};
use models::Backend;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Run the LLM summarizer's model (GGUF, Llama architecture) and print JSON")]
struct Args {
    /// GGUF model file.
    #[arg(long, global = true, default_value = ".cache/llm/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// flex (CPU) or wgpu.
    #[arg(long, global = true, default_value = "flex")]
    backend: Backend,
    /// quantized or dequantized (default: quantized on flex, dequantized on wgpu).
    #[arg(long, global = true)]
    weights: Option<models::llm::WeightMode>,
    /// KV cache precision: f32, or f16 (llama.cpp's default cache type, emulated).
    #[arg(long, global = true, default_value = "f32")]
    kv: models::llm::KvPrecision,
    /// Prompts through Burn's f32 products of per-layer dequantized weights instead of the
    /// 8-bit path (llama.cpp's arithmetic; in the CPU decoder by default).
    #[arg(long, global = true, conflicts_with = "prompt_int8")]
    prompt_f32: bool,
    /// Prompts in 8 bits (the default; kept so older command lines still run).
    #[arg(long, global = true)]
    prompt_int8: bool,
    /// Decode every token through Burn (as prompts go) instead of the CPU decoder.
    #[arg(long, global = true)]
    burn_decode: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate from one prompt or a JSON array of prompts.
    Generate {
        #[arg(long, conflicts_with = "prompts_json")]
        prompt: Option<String>,
        /// A JSON file holding an array of prompt strings.
        #[arg(long)]
        prompts_json: Option<PathBuf>,
        /// Feed the prompt as is (no chat template).
        #[arg(long)]
        raw: bool,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0.9)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Milliseconds allowed per prompt.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Continue each prompt from the previous one's longest common prefix (the prompt
        /// cache the summarizer uses); off, every prompt starts from an empty cache.
        #[arg(long)]
        reuse_prompt: bool,
    },
    /// The next-token logits after each prompt of a JSON array (raw text), for comparisons.
    Logits {
        #[arg(long)]
        prompts_json: PathBuf,
        /// Feed the last N tokens of each prompt one at a time after the rest (the decoding
        /// path: the CPU decoder where it applies) instead of all in one pass.
        #[arg(long, default_value_t = 0)]
        decode_last: usize,
    },
    /// Token ids of each string of a JSON array (special tokens recognised, no BOS).
    Tokenize {
        #[arg(long)]
        texts_json: PathBuf,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let opts = LlmOptions {
        backend: args.backend,
        weights: args.weights,
        kv_precision: args.kv,
        prompt_f32: args.prompt_f32,
        cpu_decode: !args.burn_decode,
        ..LlmOptions::default()
    };
    let t0 = Instant::now();
    let llm = Llm::load(&args.model, &opts).with_context(|| format!("loading {}", args.model.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    match args.cmd {
        Cmd::Tokenize { texts_json } => {
            let texts: Vec<String> = serde_json::from_slice(
                &std::fs::read(&texts_json).with_context(|| format!("reading {}", texts_json.display()))?,
            )
            .context("texts JSON must be an array of strings")?;
            let ids = texts.iter().map(|t| llm.tokenizer.encode(t)).collect::<Result<Vec<_>, _>>()?;
            println!("{}", json!({ "model": llm.name, "ids": ids }));
        }
        Cmd::Logits { prompts_json, decode_last } => {
            let prompts: Vec<String> = serde_json::from_slice(&std::fs::read(&prompts_json)?)?;
            let mut all = Vec::new();
            for p in &prompts {
                let ids = llm.encode_prompt(p)?;
                let mut cache = llm.model.new_cache();
                let split = ids.len().saturating_sub(decode_last).max(1);
                let mut logits = llm.model.forward(&ids[..split], &mut cache, None)?;
                for &t in &ids[split..] {
                    logits = llm.model.forward(&[t], &mut cache, None)?;
                }
                all.push(logits);
            }
            let decode = match llm.model.cpu_decode_threads() {
                Some(_) => "cpu decoder",
                None => "burn",
            };
            println!("{}", json!({ "logits": all, "decode": decode, "kernels": models::llm::quant::kernel_isa() }));
        }
        Cmd::Generate {
            prompt,
            prompts_json,
            raw,
            max_tokens,
            temperature,
            top_p,
            seed,
            deadline_ms,
            reuse_prompt,
        } => {
            let prompts: Vec<String> = match (prompt, prompts_json) {
                (Some(p), _) => vec![p],
                (None, Some(f)) => {
                    serde_json::from_slice(&std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?)
                        .context("prompts JSON must be an array of strings")?
                }
                (None, None) => anyhow::bail!("give --prompt or --prompts-json"),
            };
            let sampling =
                if temperature > 0.0 { Sampling::TopP { temperature, top_p, seed } } else { Sampling::Greedy };
            let mut results = Vec::new();
            for p in &prompts {
                let opts = GenerateOptions {
                    max_tokens,
                    sampling,
                    deadline: deadline_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
                    reuse_prompt,
                };
                let g = if raw {
                    llm.generate_ids(&llm.encode_prompt(p)?, &opts)?
                } else {
                    llm.chat(&[ChatMessage { role: "user", content: p }], &opts)?
                };
                results.push(json!({
                    "prompt": p,
                    "prompt_tokens": g.prompt_tokens,
                    "reused_prompt_tokens": g.reused_prompt_tokens,
                    "tokens": g.tokens,
                    "margins": g.margins,
                    "text": g.text,
                    "stop": g.stop,
                    "first_token_ms": g.first_token.as_secs_f64() * 1e3,
                    "total_ms": g.total.as_secs_f64() * 1e3,
                }));
            }
            println!(
                "{}",
                json!({
                    "model": llm.name,
                    "backend": llm.backend.as_str(),
                    "weights": llm.model.mode.as_str(),
                    "load_ms": load_ms,
                    "results": results,
                })
            );
        }
    }
    Ok(())
}
