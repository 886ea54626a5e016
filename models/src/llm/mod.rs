//! The on-device language model that writes anomaly summaries: a Llama-architecture decoder
//! in Burn loaded from a GGUF file (SmolLM2-135M-Instruct by default), its tokenizer from the
//! same file, and generation (greedy or temperature/top-p with a seed) under a deadline.
mod decode;
pub mod explain;
pub mod gguf;
pub mod llama;
mod pool;
pub mod quant;
pub mod summary;
pub mod tokenizer;
pub mod verify;

pub use gguf::GgufFile;
pub use llama::{KvCache, KvPrecision, Llama, LlamaConfig, WeightMode};
pub use tokenizer::{chat_prompt, ChatMessage, LlmTokenizer};

use crate::runtime::Backend;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad GGUF file {path}: {reason}")]
    Gguf { path: PathBuf, reason: String },
    #[error("model {path} fails the integrity check: sha256 is {actual}, expected {expected}; refusing to load it")]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the context is full: {needed} positions needed, this model instance holds {limit}")]
    ContextFull { needed: usize, limit: usize },
    #[error("the generation deadline passed")]
    Deadline,
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Option(String),
}

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (the first one on ties, as llama.cpp's greedy sampler).
    Greedy,
    /// Softmax at `temperature`, restricted to the smallest set of tokens whose probability
    /// reaches `top_p`, drawn with a ChaCha8 generator seeded by `seed`.
    TopP { temperature: f32, top_p: f32, seed: u64 },
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Give up (keeping what was generated) once this instant has passed.
    pub deadline: Option<Instant>,
    /// Start from the keys and values of the previous generation's longest common prefix
    /// with this prompt (llama.cpp's prompt cache): a second candidate for the same prompt
    /// runs only its answer, and prompts sharing a system message skip it. Off, every prompt
    /// is processed from its first token (what the comparisons with llama.cpp use).
    pub reuse_prompt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfTurn,
    MaxTokens,
    Deadline,
    ContextFull,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// Of those, how many came from the prompt cache (`GenerateOptions::reuse_prompt`), or
    /// from another prompt of the same batch that shares them.
    pub reused_prompt_tokens: usize,
    pub tokens: Vec<u32>,
    /// Logit of the chosen token minus the best other one, per generated token: how close
    /// each choice was (greedy decoding flips where this is within numerical noise).
    pub margins: Vec<f32>,
    pub text: String,
    pub stop: StopReason,
    /// Prompt processing, up to the first generated token's logits.
    pub first_token: Duration,
    /// Until this answer stopped (in a batch, each its own).
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct LlmOptions {
    pub backend: Backend,
    /// None: quantized on flex, dequantized on wgpu.
    pub weights: Option<WeightMode>,
    /// Positions one conversation may use (prompt + answer); caps the KV cache.
    pub max_context: usize,
    /// Refuse the file unless its sha256 is this (hex).
    pub sha256: Option<String>,
    /// Prompt processing through Burn in f32, each weight matrix dequantized at use; false
    /// (default) = llama.cpp's arithmetic (8-bit activations) for prompts as for decoding, in
    /// the CPU decoder where it applies (1.13–1.27× Burn's f32 prompt rate here,
    /// docs/measured.md), else through Burn's 8-bit kernel. Only matters with quantized weights.
    pub prompt_f32: bool,
    /// f32 (default) or f16 (llama.cpp's default cache type, emulated by rounding).
    pub kv_precision: KvPrecision,
    /// Decode with the CPU decoder (`decode.rs`: one pass per token, no Burn) where it
    /// applies (quantized weights on flex); false: every token through Burn, as prompts go.
    pub cpu_decode: bool,
    /// Threads of the CPU decoder (None: every core this process may use).
    pub threads: Option<usize>,
}

impl Default for LlmOptions {
    fn default() -> Self {
        LlmOptions {
            backend: Backend::Flex,
            weights: None,
            max_context: 2048,
            sha256: None,
            kv_precision: KvPrecision::F32,
            prompt_f32: false,
            cpu_decode: true,
            threads: None,
        }
    }
}

/// The tokens whose keys and values a cache holds, kept from one generation to the next.
#[derive(Clone)]
struct PromptCache {
    tokens: Vec<u32>,
    /// Of `tokens`, how many were the prompt (the rest were generated).
    prompt_len: usize,
    kv: KvCache,
    /// A prefix prompts share (`BatchPrompt::shared_prefix`), not a whole answer: evicted
    /// only when no answer is left to evict.
    shared: bool,
}

/// Positions of the prompt caches kept, all entries together (most recently used first; the
/// oldest go beyond it, whole answers before shared prefixes). The summarizer's prompts share
/// a system message and then differ by the worked example of the event's kind: the prefix of
/// each kind (~150–200 positions) is kept as its own entry, so a burst of eight answers
/// (~300 positions each) does not push every kind's example out. With SmolLM2-135M (30
/// layers, 3 KV heads of 64) a position's keys and values take 46 KB, so at most ~94 MB.
pub const PROMPT_CACHE_POSITIONS: usize = 2048;

/// The caches of the latest generations (`GenerateOptions::reuse_prompt`), most recently
/// used first, at most [`PROMPT_CACHE_POSITIONS`] positions together. A prompt continues
/// from the longest prefix it shares with one of them, as llama.cpp's prompt cache does.
#[derive(Default)]
struct PromptCaches(Vec<PromptCache>);

impl PromptCaches {
    /// A copy of the cache holding the longest prefix of `prompt` (at most all but its last
    /// token, whose logits are needed), cut back to that prefix; the entry becomes the most
    /// recent. Copied, not taken: another prompt of its kind may want it.
    fn longest_prefix(&mut self, prompt: &[u32]) -> Option<PromptCache> {
        let usable = |c: &PromptCache| {
            let common = c.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
            common.min(prompt.len().saturating_sub(1)).min(c.kv.len())
        };
        // The first (most recent) of the longest matches.
        let best = (0..self.0.len()).rev().max_by_key(|&i| usable(&self.0[i]))?;
        let keep = usable(&self.0[best]);
        if keep == 0 {
            return None;
        }
        let entry = self.0.remove(best);
        let c = PromptCache {
            tokens: entry.tokens[..keep].to_vec(),
            prompt_len: entry.prompt_len,
            kv: entry.kv.prefix(keep),
            shared: false,
        };
        self.0.insert(0, entry);
        Some(c)
    }

    /// Keeps a whole generation's cache as the most recent, then evicts beyond the position
    /// budget (this one is always kept).
    fn keep(&mut self, c: PromptCache) {
        // An answer whose whole prompt this one holds serves nothing this one does not (the
        // same prompt answered again: another candidate).
        self.0.retain(|e| {
            let common = e.tokens.iter().zip(&c.tokens).take_while(|(a, b)| a == b).count();
            e.shared || common + 1 < e.prompt_len
        });
        self.0.insert(0, c);
        self.evict();
    }

    /// Keeps `tokens`, a prefix prompts share, from `kv` (which holds at least them) as an
    /// entry of its own, or marks the one held as the most recent.
    fn keep_prefix(&mut self, tokens: &[u32], kv: &KvCache) {
        if let Some(i) = self.0.iter().position(|e| e.shared && e.tokens == tokens) {
            let e = self.0.remove(i);
            self.0.insert(0, e);
            return;
        }
        let kv = kv.prefix(tokens.len());
        self.0.insert(0, PromptCache { tokens: tokens.to_vec(), prompt_len: tokens.len(), kv, shared: true });
        self.evict();
    }

    /// Drops the oldest whole answers, then the oldest shared prefixes, until the entries fit
    /// the budget; the most recent entry always stays.
    fn evict(&mut self) {
        let positions = |v: &[PromptCache]| v.iter().map(|e| e.tokens.len()).sum::<usize>();
        while positions(&self.0) > PROMPT_CACHE_POSITIONS && self.0.len() > 1 {
            let oldest_answer = (1..self.0.len()).rev().find(|&i| !self.0[i].shared);
            self.0.remove(oldest_answer.unwrap_or(self.0.len() - 1));
        }
    }
}

/// One prompt of `Llm::generate_batch` and how its answer is sampled.
#[derive(Debug, Clone, Copy)]
pub struct BatchPrompt<'a> {
    pub prompt: &'a [u32],
    pub sampling: Sampling,
    /// Leading tokens that other prompts will share (the summarizer's system message and
    /// worked example): kept in the prompt cache as an entry of their own, which outlives
    /// whole answers there. 0: none.
    pub shared_prefix: usize,
}

/// One answer of a batch while it is generated.
struct Answer {
    cache: KvCache,
    /// The tokens whose keys and values `cache` holds.
    in_cache: Vec<u32>,
    reused_tokens: usize,
    /// False once a deadline gave up a token half way (the cache is not kept then).
    cache_whole: bool,
    rng: rand_chacha::ChaCha8Rng,
    tokens: Vec<u32>,
    margins: Vec<f32>,
    /// What runs next: the rest of the prompt, then each sampled token.
    next_input: Vec<u32>,
    /// The logits of the last input, until its token is sampled.
    logits: Option<Vec<f32>>,
    first_token: Duration,
    stop: Option<StopReason>,
    total: Duration,
}

impl Answer {
    fn finish(&mut self, stop: StopReason, start: Instant) {
        self.stop = Some(stop);
        self.total = start.elapsed();
    }
}

pub struct Llm {
    pub model: Llama,
    pub tokenizer: LlmTokenizer,
    /// `general.name` from the file, else its file name.
    pub name: String,
    pub path: PathBuf,
    pub backend: Backend,
    /// The caches of the latest generations (`GenerateOptions::reuse_prompt`).
    prompt_cache: std::sync::Mutex<PromptCaches>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Llm {
    pub fn load(path: &Path, opts: &LlmOptions) -> Result<Self, LlmError> {
        let bytes = std::fs::read(path).map_err(|source| LlmError::Io { path: path.to_path_buf(), source })?;
        if let Some(expected) = &opts.sha256 {
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(LlmError::HashMismatch { path: path.to_path_buf(), expected: expected.clone(), actual });
            }
        }
        let g = GgufFile::parse(path, bytes)?;
        let tokenizer = LlmTokenizer::from_gguf(&g)?;
        let device = opts.backend.device().map_err(|e| LlmError::Backend(e.to_string()))?;
        let mode = opts.weights.unwrap_or(match opts.backend {
            Backend::Flex => WeightMode::Quantized,
            Backend::Wgpu => WeightMode::Dequantized,
        });
        let mut model = Llama::load(&g, mode, opts.kv_precision, opts.max_context, &device)?;
        model.prompt_f32 = opts.prompt_f32;
        if opts.cpu_decode && opts.backend == Backend::Flex {
            let threads = opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            model.enable_cpu_decode(threads)?;
        }
        let name = g
            .get("general.name")
            .and_then(gguf::Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(Llm {
            model,
            tokenizer,
            name,
            path: path.to_path_buf(),
            backend: opts.backend,
            prompt_cache: std::sync::Mutex::default(),
        })
    }

    /// Tokens of `prompt` (BOS first when the model asks for one).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, LlmError> {
        let mut ids: Vec<u32> = self.tokenizer.bos.into_iter().collect();
        ids.extend(self.tokenizer.encode(prompt)?);
        Ok(ids)
    }

    /// Continues `prompt` (already tokenized).
    pub fn generate_ids(&self, prompt: &[u32], opts: &GenerateOptions) -> Result<Generation, LlmError> {
        let mut one =
            self.generate_batch(&[BatchPrompt { prompt, sampling: opts.sampling, shared_prefix: 0 }], opts)?;
        Ok(one.pop().expect("one prompt in, one generation out"))
    }

    /// Continues several prompts together, each sampled its own way (`opts.sampling` is
    /// not used): every step decodes the next token of each answer still running in one
    /// pass over the weights (`Llama::forward_batch`), and each stops on its own (end of
    /// turn, `max_tokens`, a full context). The deadline stops them all. Each answer is the
    /// one `generate_ids` gives for its prompt alone, token for token (with the CPU decoder
    /// and 8-bit prompts, the default, the logits are the same, bit for bit; tested); only
    /// the time differs.
    ///
    /// With `reuse_prompt`, each prompt starts from the longest cached prefix; a prefix
    /// that prompts of the batch share beyond that (the summarizer's system message and
    /// worked example, for two events of a kind) runs once and is copied; each answer's
    /// cache is kept, and so is each `shared_prefix`, as an entry of its own.
    pub fn generate_batch(&self, prompts: &[BatchPrompt], opts: &GenerateOptions) -> Result<Vec<Generation>, LlmError> {
        let start = Instant::now();
        let mut runs: Vec<Answer> = prompts
            .iter()
            .map(|p| {
                let reused = match opts.reuse_prompt {
                    false => None,
                    true => self.prompt_cache.lock().unwrap_or_else(|e| e.into_inner()).longest_prefix(p.prompt),
                };
                let (cache, in_cache) = match reused {
                    Some(c) => (c.kv, c.tokens),
                    None => (self.model.new_cache(), Vec::new()),
                };
                let seed = match p.sampling {
                    Sampling::TopP { seed, .. } => seed,
                    Sampling::Greedy => 0,
                };
                Answer {
                    reused_tokens: in_cache.len(),
                    next_input: p.prompt[in_cache.len()..].to_vec(),
                    cache,
                    in_cache,
                    cache_whole: true,
                    rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
                    tokens: Vec::new(),
                    margins: Vec::new(),
                    logits: None,
                    first_token: Duration::ZERO,
                    stop: None,
                    total: Duration::ZERO,
                }
            })
            .collect();
        if opts.max_tokens == 0 {
            runs.iter_mut().for_each(|r| r.finish(StopReason::MaxTokens, start));
        }
        // Prompts, in stages: a prompt waits while an earlier one still to run shares more
        // of it than it holds, then starts from a copy of that one's cache.
        let common = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let usable = |i: usize, j: usize| match opts.reuse_prompt {
            true => common(prompts[i].prompt, prompts[j].prompt).min(prompts[j].prompt.len().saturating_sub(1)),
            false => 0,
        };
        loop {
            let waiting = |runs: &[Answer], j: usize| runs[j].stop.is_none() && runs[j].logits.is_none();
            let ready: Vec<usize> = (0..runs.len())
                .filter(|&j| waiting(&runs, j))
                .filter(|&j| !(0..j).any(|i| waiting(&runs, i) && usable(i, j) > runs[j].in_cache.len()))
                .collect();
            if ready.is_empty() {
                break;
            }
            if !self.step(&mut runs, &ready, opts.deadline, start)? {
                break;
            }
            for j in 0..runs.len() {
                if !waiting(&runs, j) {
                    continue;
                }
                let donor = (0..runs.len())
                    .filter(|&i| runs[i].logits.is_some())
                    .max_by_key(|&i| (usable(i, j), std::cmp::Reverse(i)))
                    .filter(|&i| usable(i, j) > runs[j].in_cache.len());
                if let Some(i) = donor {
                    let keep = usable(i, j);
                    let cache = runs[i].cache.prefix(keep);
                    let r = &mut runs[j];
                    r.cache = cache;
                    r.reused_tokens = keep;
                    r.in_cache = prompts[j].prompt[..keep].to_vec();
                    r.next_input = prompts[j].prompt[keep..].to_vec();
                }
            }
        }
        // Answers: a token of each per step.
        loop {
            for (r, p) in runs.iter_mut().zip(prompts) {
                let Some(logits) = r.logits.take() else { continue };
                if r.stop.is_some() {
                    continue; // prompted before the deadline gave up a later stage
                }
                let t = sample(&logits, p.sampling, &mut r.rng);
                let runner_up = logits
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != t as usize)
                    .fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
                r.margins.push(logits[t as usize] - runner_up);
                if self.tokenizer.stop_ids.contains(&t) {
                    r.finish(StopReason::EndOfTurn, start);
                    continue;
                }
                r.tokens.push(t);
                r.next_input = vec![t];
                if opts.deadline.is_some_and(|dl| Instant::now() >= dl) {
                    r.finish(StopReason::Deadline, start);
                } else if r.tokens.len() >= opts.max_tokens {
                    r.finish(StopReason::MaxTokens, start);
                }
            }
            let running: Vec<usize> = (0..runs.len()).filter(|&j| runs[j].stop.is_none()).collect();
            if running.is_empty() || !self.step(&mut runs, &running, opts.deadline, start)? {
                break;
            }
        }
        let mut caches = self.prompt_cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(runs.len());
        for (r, p) in runs.into_iter().zip(prompts) {
            let text = self.tokenizer.decode(&r.tokens)?;
            if opts.reuse_prompt
                && r.cache_whole
                && p.shared_prefix > 0
                && p.shared_prefix < p.prompt.len()
                && r.cache.len() >= p.shared_prefix
            {
                caches.keep_prefix(&p.prompt[..p.shared_prefix], &r.cache);
            }
            if opts.reuse_prompt && r.cache_whole && r.cache.len() == r.in_cache.len() {
                caches.keep(PromptCache { tokens: r.in_cache, prompt_len: p.prompt.len(), kv: r.cache, shared: false });
            }
            out.push(Generation {
                prompt_tokens: p.prompt.len(),
                reused_prompt_tokens: r.reused_tokens,
                tokens: r.tokens,
                margins: r.margins,
                text,
                stop: r.stop.expect("every answer stopped"),
                first_token: r.first_token,
                total: r.total,
            });
        }
        Ok(out)
    }

    /// Runs the next input of `runs[which]` together, leaving each one's logits; a run
    /// whose input would overflow the context stops (`ContextFull`). Returns false when the
    /// deadline gave up the step (every running answer stopped: `Deadline`).
    fn step(
        &self,
        runs: &mut [Answer],
        which: &[usize],
        deadline: Option<Instant>,
        start: Instant,
    ) -> Result<bool, LlmError> {
        let mut fits = Vec::with_capacity(which.len());
        for &j in which {
            let r = &mut runs[j];
            if r.cache.len() + r.next_input.len() > self.model.max_context {
                r.finish(StopReason::ContextFull, start);
            } else {
                fits.push(j);
            }
        }
        if fits.is_empty() {
            return Ok(true);
        }
        let mut seqs: Vec<(&[u32], &mut KvCache)> = runs
            .iter_mut()
            .enumerate()
            .filter(|(j, _)| fits.contains(j))
            .map(|(_, r)| {
                let Answer { next_input, cache, .. } = r;
                (&next_input[..], cache)
            })
            .collect();
        match self.model.forward_batch(&mut seqs, deadline) {
            Ok(logits) => {
                for (&j, logits) in fits.iter().zip(logits) {
                    let r = &mut runs[j];
                    let input = std::mem::take(&mut r.next_input);
                    r.in_cache.extend_from_slice(&input);
                    if r.tokens.is_empty() {
                        r.first_token = start.elapsed();
                    }
                    r.logits = Some(logits);
                }
                Ok(true)
            }
            Err(LlmError::Deadline) => {
                for (j, r) in runs.iter_mut().enumerate().filter(|(_, r)| r.stop.is_none()) {
                    // A token given up between layers may have left keys in some of them
                    // (through Burn; the CPU decoder restores them).
                    r.cache_whole &= !fits.contains(&j);
                    r.finish(StopReason::Deadline, start);
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Answers a chat (SmolLM2/ChatML template).
    pub fn chat(&self, messages: &[ChatMessage], opts: &GenerateOptions) -> Result<Generation, LlmError> {
        let ids = self.encode_prompt(&chat_prompt(messages))?;
        self.generate_ids(&ids, opts)
    }
}

pub fn sample(logits: &[f32], sampling: Sampling, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    match sampling {
        Sampling::Greedy => argmax(),
        Sampling::TopP { temperature, top_p, .. } => {
            if temperature <= 0.0 {
                return argmax();
            }
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut probs: Vec<(u32, f32)> =
                logits.iter().enumerate().map(|(i, &v)| (i as u32, ((v - max) / temperature).exp())).collect();
            probs.sort_by(|a, b| b.1.total_cmp(&a.1));
            let total: f32 = probs.iter().map(|p| p.1).sum();
            let mut kept = 0.0;
            let mut n = 0;
            for p in &probs {
                kept += p.1 / total;
                n += 1;
                if kept >= top_p {
                    break;
                }
            }
            let probs = &probs[..n];
            let mass: f32 = probs.iter().map(|p| p.1).sum();
            let mut r = rng.gen::<f32>() * mass;
            for p in probs {
                r -= p.1;
                if r <= 0.0 {
                    return p.0;
                }
            }
            probs[n - 1].0
        }
    }
}
