//! A Llama-architecture decoder in Burn: token embedding (tied output unless the file has
//! `output.weight`), RMSNorm, rotary position embedding (ggml's adjacent-pair layout, the
//! model's theta), grouped-query attention, SwiGLU MLP, and a KV cache for incremental
//! decoding. Hyper-parameters come from the GGUF metadata.
//!
//! Weights are held one of two ways (`WeightMode`): dequantized to f32 Burn tensors at load
//! (any device), or kept in their ggml blocks with the matrix products done by
//! `quant::QMatrix` on the CPU (flex only; everything else stays in Burn).
use super::decode::{CpuDecoder, Sequence};
use super::gguf::{GgufFile, Value};
use super::quant::QMatrix;
use super::LlmError;
use burn::config::Config;
use burn::module::Param;
use burn::nn::{RmsNorm, RotaryEncoding, RotaryEncodingConfig};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Bool, DType, TensorData};
use std::str::FromStr;
use std::time::Instant;

#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    /// The context the model was trained for (`{arch}.context_length`).
    pub context_length: usize,
    pub vocab_size: usize,
}

impl LlamaConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, LlmError> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(LlmError::Gguf {
                path: g.path.clone(),
                reason: format!("general.architecture is '{arch}'; only 'llama' is supported"),
            });
        }
        let k = |s: &str| format!("{arch}.{s}");
        let d_model = g.u64(&k("embedding_length"))? as usize;
        let n_heads = g.u64(&k("attention.head_count"))? as usize;
        let n_kv_heads =
            g.get(&k("attention.head_count_kv")).and_then(Value::as_u64).unwrap_or(n_heads as u64) as usize;
        if n_heads == 0 || n_kv_heads == 0 || d_model % n_heads != 0 || n_heads % n_kv_heads != 0 {
            return Err(LlmError::Gguf {
                path: g.path.clone(),
                reason: format!("inconsistent attention shape: {d_model} wide, {n_heads} heads, {n_kv_heads} KV heads"),
            });
        }
        let head_dim = d_model / n_heads;
        let rope_dim = g.get(&k("rope.dimension_count")).and_then(Value::as_u64).unwrap_or(head_dim as u64) as usize;
        if rope_dim != head_dim {
            return Err(LlmError::Gguf {
                path: g.path.clone(),
                reason: format!("partial rotary embedding ({rope_dim} of {head_dim}) is not supported"),
            });
        }
        Ok(LlamaConfig {
            n_layers: g.u64(&k("block_count"))? as usize,
            d_model,
            d_ff: g.u64(&k("feed_forward_length"))? as usize,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_theta: g.get(&k("rope.freq_base")).and_then(Value::as_f64).unwrap_or(10000.0) as f32,
            rms_eps: g.get(&k("attention.layer_norm_rms_epsilon")).and_then(Value::as_f64).unwrap_or(1e-5),
            context_length: g.get(&k("context_length")).and_then(Value::as_u64).unwrap_or(2048) as usize,
            vocab_size: g.array("tokenizer.ggml.tokens")?.len(),
        })
    }
}

/// How the weight matrices are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightMode {
    /// Kept in their ggml blocks (5 bits per weight for Q4_1); products on the CPU with 8-bit
    /// activations, like llama.cpp. Default on flex.
    Quantized,
    /// Dequantized to f32 Burn tensors once at load; Burn matmuls on any device. Default on
    /// wgpu.
    Dequantized,
}

impl FromStr for WeightMode {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self, LlmError> {
        match s {
            "quantized" => Ok(WeightMode::Quantized),
            "dequantized" | "f32" => Ok(WeightMode::Dequantized),
            _ => Err(LlmError::Option(format!("unknown weight mode '{s}' (quantized or dequantized)"))),
        }
    }
}

impl WeightMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightMode::Quantized => "quantized",
            WeightMode::Dequantized => "dequantized",
        }
    }
}

/// Precision of the KV cache (and of the attention products that read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvPrecision {
    F16,
    F32,
}

impl FromStr for KvPrecision {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self, LlmError> {
        match s {
            "f16" => Ok(KvPrecision::F16),
            "f32" => Ok(KvPrecision::F32),
            _ => Err(LlmError::Option(format!("unknown KV cache precision '{s}' (f16 or f32)"))),
        }
    }
}

/// From this many tokens in one pass (a prompt), quantized matrices are dequantized per layer
/// at use and multiplied in f32; below it (decoding) the integer kernel is faster.
const PROMPT_ROWS_F32: usize = 32;

/// Tokens per pass of a prompt through the CPU decoder (its buffers grow to this many
/// tokens' rows, ~8 MB for SmolLM2-135M, not to the whole context).
const PREFILL_CHUNK: usize = 256;

/// A weight matrix `out × in` in either representation.
pub(crate) enum Linear {
    Quantized(QMatrix),
    /// `[in, out]`, so `x.matmul(w)`.
    Dense(Tensor<2>),
}

impl Linear {
    pub(crate) fn quantized(&self) -> Option<&QMatrix> {
        match self {
            Linear::Quantized(q) => Some(q),
            Linear::Dense(_) => None,
        }
    }

    fn new(m: QMatrix, mode: WeightMode, device: &Device) -> Self {
        match mode {
            WeightMode::Quantized => Linear::Quantized(m),
            WeightMode::Dequantized => {
                let w = Tensor::<2>::from_data(TensorData::new(m.dequantize(), [m.rows, m.cols]), device);
                Linear::Dense(w.transpose())
            }
        }
    }

    fn forward(&self, x: Tensor<2>, prompt_f32: bool) -> Tensor<2> {
        match self {
            Linear::Dense(w) => x.matmul(w.clone()),
            Linear::Quantized(q) if prompt_f32 && x.dims()[0] >= PROMPT_ROWS_F32 => {
                // Prompt processing is compute-bound: dequantize this matrix now (it is
                // dropped after the product) and let Burn's f32 matmul do the work.
                let w = Tensor::<2>::from_data(TensorData::new(q.dequantize_par(), [q.rows, q.cols]), &x.device());
                x.matmul(w.transpose())
            }
            Linear::Quantized(q) => {
                let device = x.device();
                let [n, _] = x.dims();
                let host = x.into_data().try_into_vec::<f32>().expect("f32 activations");
                let mut out = vec![0.0f32; n * q.rows];
                q.matmul(&host, n, &mut out);
                Tensor::from_data(TensorData::new(out, [n, q.rows]), &device)
            }
        }
    }
}

pub(crate) struct Block {
    attn_norm: RmsNorm,
    /// The norms' weights on the host, for the CPU decoder.
    pub(crate) attn_gamma: Vec<f32>,
    /// q, k and v stacked (one product instead of three).
    pub(crate) wqkv: Linear,
    pub(crate) wo: Linear,
    ffn_norm: RmsNorm,
    pub(crate) ffn_gamma: Vec<f32>,
    /// gate and up stacked.
    pub(crate) w_gate_up: Linear,
    pub(crate) w_down: Linear,
}

/// Keys and values of every layer for the positions decoded so far.
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    /// Values per position in a host layer (kv heads × head dim).
    row: usize,
}

#[derive(Clone)]
enum LayerKv {
    /// Burn tensors `[kv heads, positions, head dim]` (wgpu, or no CPU decoder).
    Tensors(Option<(Tensor<3>, Tensor<3>)>),
    /// Host rows `[positions][kv heads · head dim]`, which the CPU decoder reads and appends
    /// to in place, and which a prompt through Burn fills.
    Host { keys: Vec<f32>, values: Vec<f32> },
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for `positions` more in every host layer (no reallocation while a token runs).
    pub(crate) fn reserve_host(&mut self, positions: usize) {
        for layer in &mut self.layers {
            if let LayerKv::Host { keys, values } = layer {
                keys.reserve(positions * self.row);
                values.reserve(positions * self.row);
            }
        }
    }

    pub(crate) fn push_host(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        if let LayerKv::Host { keys, values } = &mut self.layers[layer] {
            keys.extend_from_slice(k);
            values.extend_from_slice(v);
        }
    }

    /// Keys and values of `layer` (host rows).
    pub(crate) fn host(&self, layer: usize) -> (&[f32], &[f32]) {
        match &self.layers[layer] {
            LayerKv::Host { keys, values } => (keys, values),
            LayerKv::Tensors(_) => (&[], &[]),
        }
    }

    /// Drops every host row past `positions` (a token given up half way).
    pub(crate) fn truncate_host(&mut self, positions: usize) {
        for layer in &mut self.layers {
            if let LayerKv::Host { keys, values } = layer {
                keys.truncate(positions * self.row);
                values.truncate(positions * self.row);
            }
        }
    }

    /// A copy of the first `positions` positions (all, if it holds fewer), holding no more
    /// memory than they need (a clone then `truncate` would keep the whole capacity).
    pub(crate) fn prefix(&self, positions: usize) -> KvCache {
        let positions = positions.min(self.len);
        let layers = self
            .layers
            .iter()
            .map(|layer| match layer {
                LayerKv::Host { keys, values } => {
                    let n = (positions * self.row).min(keys.len()).min(values.len());
                    LayerKv::Host { keys: keys[..n].to_vec(), values: values[..n].to_vec() }
                }
                LayerKv::Tensors(None) => LayerKv::Tensors(None),
                LayerKv::Tensors(Some(_)) if positions == 0 => LayerKv::Tensors(None),
                LayerKv::Tensors(Some((k, v))) => {
                    let [h, _, d] = k.dims();
                    let cut = |t: &Tensor<3>| t.clone().slice([0..h, 0..positions, 0..d]);
                    LayerKv::Tensors(Some((cut(k), cut(v))))
                }
            })
            .collect();
        KvCache { layers, len: positions, row: self.row }
    }

    /// Forgets every position from `positions` on, so that a prompt sharing the first
    /// `positions` tokens can continue from here (the prompt cache).
    pub fn truncate(&mut self, positions: usize) {
        if positions >= self.len {
            return;
        }
        self.truncate_host(positions);
        for layer in &mut self.layers {
            if let LayerKv::Tensors(kv) = layer {
                *kv = match kv.take() {
                    Some(_) if positions == 0 => None,
                    Some((k, v)) => {
                        let [h, _, d] = k.dims();
                        Some((k.slice([0..h, 0..positions, 0..d]), v.slice([0..h, 0..positions, 0..d])))
                    }
                    None => None,
                };
            }
        }
        self.len = positions;
    }

    pub(crate) fn advance(&mut self, positions: usize) {
        self.len += positions;
    }
}

pub struct Llama {
    pub config: LlamaConfig,
    pub mode: WeightMode,
    /// Maximum positions this instance will decode (≤ the trained context).
    pub max_context: usize,
    device: Device,
    pub(crate) embedding: QMatrix,
    pub(crate) blocks: Vec<Block>,
    norm: RmsNorm,
    pub(crate) norm_gamma: Vec<f32>,
    output: Linear,
    rope: RotaryEncoding,
    /// Bytes of weight data held (for the benchmark's report).
    pub weight_bytes: usize,
    pub kv_precision: KvPrecision,
    /// Prompts (≥ PROMPT_ROWS_F32 tokens at once) through Burn's f32 products of per-layer
    /// dequantized weights instead of 8-bit activations (llama.cpp's arithmetic; in the CPU
    /// decoder where there is one, which is faster here).
    pub prompt_f32: bool,
    /// One token at a time on the CPU without Burn (`decode.rs`); None: through Burn.
    cpu: Option<CpuDecoder>,
}

fn matrix(g: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<QMatrix, LlmError> {
    let t = g.tensor(name)?;
    if t.dims.len() != 2 || t.dims[0] as usize != cols || t.dims[1] as usize != rows {
        return Err(LlmError::Gguf {
            path: g.path.clone(),
            reason: format!("tensor '{name}' has shape {:?}, expected [{cols}, {rows}]", t.dims),
        });
    }
    Ok(QMatrix::new(t.ggml_type, rows, cols, g.tensor_bytes(t)))
}

fn vector(g: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, LlmError> {
    let t = g.tensor(name)?;
    if t.num_elements() as usize != len {
        return Err(LlmError::Gguf {
            path: g.path.clone(),
            reason: format!("tensor '{name}' has {} values, expected {len}", t.num_elements()),
        });
    }
    Ok(super::quant::dequantize(t.ggml_type, g.tensor_bytes(t), len))
}

fn rms_norm(gamma: &[f32], eps: f64, device: &Device) -> RmsNorm {
    let gamma = Tensor::from_data(TensorData::new(gamma.to_vec(), [gamma.len()]), device);
    RmsNorm { gamma: Param::from_tensor(gamma), epsilon: eps }
}

impl Llama {
    pub fn load(
        g: &GgufFile,
        mode: WeightMode,
        kv_precision: KvPrecision,
        max_context: usize,
        device: &Device,
    ) -> Result<Self, LlmError> {
        let c = LlamaConfig::from_gguf(g)?;
        let (d, ff, kvd) = (c.d_model, c.d_ff, c.n_kv_heads * c.head_dim);
        let embedding = matrix(g, "token_embd.weight", c.vocab_size, d)?;
        let mut weight_bytes = embedding.bytes();
        let mut blocks = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let p = |s: &str| format!("blk.{i}.{s}");
            let wqkv = QMatrix::stack(&[
                matrix(g, &p("attn_q.weight"), d, d)?,
                matrix(g, &p("attn_k.weight"), kvd, d)?,
                matrix(g, &p("attn_v.weight"), kvd, d)?,
            ]);
            let wo = matrix(g, &p("attn_output.weight"), d, d)?;
            let gate_up =
                QMatrix::stack(&[matrix(g, &p("ffn_gate.weight"), ff, d)?, matrix(g, &p("ffn_up.weight"), ff, d)?]);
            let down = matrix(g, &p("ffn_down.weight"), d, ff)?;
            weight_bytes += match mode {
                WeightMode::Quantized => wqkv.bytes() + wo.bytes() + gate_up.bytes() + down.bytes(),
                WeightMode::Dequantized => {
                    4 * [&wqkv, &wo, &gate_up, &down].iter().map(|m| m.rows * m.cols).sum::<usize>()
                }
            };
            let (attn_gamma, ffn_gamma) = (vector(g, &p("attn_norm.weight"), d)?, vector(g, &p("ffn_norm.weight"), d)?);
            blocks.push(Block {
                attn_norm: rms_norm(&attn_gamma, c.rms_eps, device),
                attn_gamma,
                wqkv: Linear::new(wqkv, mode, device),
                wo: Linear::new(wo, mode, device),
                ffn_norm: rms_norm(&ffn_gamma, c.rms_eps, device),
                ffn_gamma,
                w_gate_up: Linear::new(gate_up, mode, device),
                w_down: Linear::new(down, mode, device),
            });
        }
        let output = match g.tensor("output.weight") {
            Ok(_) => {
                let m = matrix(g, "output.weight", c.vocab_size, d)?;
                weight_bytes += m.bytes();
                m
            }
            Err(_) => embedding.clone(), // tied
        };
        if mode == WeightMode::Dequantized {
            weight_bytes += output.rows * output.cols * 4;
        }
        let max_context = max_context.min(c.context_length).max(1);
        let rope = RotaryEncodingConfig::new(max_context, c.head_dim).with_theta(c.rope_theta).init(device);
        let norm_gamma = vector(g, "output_norm.weight", d)?;
        Ok(Llama {
            norm: rms_norm(&norm_gamma, c.rms_eps, device),
            norm_gamma,
            output: Linear::new(output, mode, device),
            embedding,
            blocks,
            rope,
            config: c,
            mode,
            max_context,
            device: device.clone(),
            weight_bytes,
            kv_precision,
            prompt_f32: true,
            cpu: None,
        })
    }

    /// Decodes one token at a time with the CPU decoder on `threads` threads (quantized
    /// weights on flex only; the caller knows the backend). Returns whether this model can
    /// (every matrix in integer blocks, heads a multiple of 32 wide); if not, it decodes
    /// through Burn as before.
    pub fn enable_cpu_decode(&mut self, threads: usize) -> Result<bool, LlmError> {
        self.cpu = None;
        if self.mode != WeightMode::Quantized {
            return Ok(false);
        }
        self.cpu = CpuDecoder::new(self, threads)?;
        Ok(self.cpu.is_some())
    }

    /// Threads of the CPU decoder, None when tokens decode through Burn.
    pub fn cpu_decode_threads(&self) -> Option<usize> {
        self.cpu.as_ref().map(CpuDecoder::threads)
    }

    /// The output projection's quantized matrix (the embedding's when tied).
    pub(crate) fn output_matrix(&self) -> Option<&QMatrix> {
        self.output.quantized()
    }

    /// With an f16 KV cache, llama.cpp's default, keys and values are stored in f16 and the
    /// queries and attention weights meet them in f16: the same roundings here keep the
    /// decoder numerically on llama.cpp's path. Values are held as f32 tensors, as f16
    /// matmuls are slow on flex.
    fn kv_round<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        match self.kv_precision {
            KvPrecision::F16 => t.cast(DType::F16).cast(DType::F32),
            KvPrecision::F32 => t,
        }
    }

    pub fn new_cache(&self) -> KvCache {
        let layer = || match self.cpu {
            Some(_) => LayerKv::Host { keys: Vec::new(), values: Vec::new() },
            None => LayerKv::Tensors(None),
        };
        let row = self.config.n_kv_heads * self.config.head_dim;
        KvCache { layers: (0..self.config.n_layers).map(|_| layer()).collect(), len: 0, row }
    }

    /// Runs several sequences, each with its own cache, as `forward` runs one: `tokens` of
    /// each at its positions `cache.len()..`; returns each one's last-token logits, in
    /// order. With the CPU decoder they run together (one pass over the weights for all:
    /// the sentences of a burst decode for well under one step each), and each sequence's
    /// logits are, bit for bit, those of running it alone; on any error every cache is left
    /// as it was. Without it they run one after the other through Burn, as `forward` (whose
    /// tensor caches a deadline may leave part-written: not to be reused).
    pub fn forward_batch(
        &self,
        seqs: &mut [(&[u32], &mut KvCache)],
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        for (tokens, cache) in seqs.iter() {
            self.check_input(tokens, cache)?;
        }
        let prompt_rows = seqs.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        if let Some(cpu) = self.cpu_for(prompt_rows) {
            let mut batch: Vec<Sequence> =
                seqs.iter_mut().map(|(tokens, cache)| Sequence { tokens, cache: &mut **cache }).collect();
            return self.cpu_forward(cpu, &mut batch, deadline);
        }
        let starts: Vec<usize> = seqs.iter().map(|(_, c)| c.len()).collect();
        let mut out = Vec::with_capacity(seqs.len());
        for (tokens, cache) in seqs.iter_mut() {
            match self.forward(tokens, cache, deadline) {
                Ok(l) => out.push(l),
                Err(e) => {
                    for ((_, cache), &p) in seqs.iter_mut().zip(&starts) {
                        cache.truncate(p);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// The CPU decoder for a run of `rows` tokens at once, unless there is none or the run
    /// is a prompt long enough for Burn's f32 GEMM and `prompt_f32` asks for it.
    fn cpu_for(&self, rows: usize) -> Option<&CpuDecoder> {
        self.cpu.as_ref().filter(|_| rows < PROMPT_ROWS_F32 || !self.prompt_f32)
    }

    /// Refuses what no path can run: no tokens, a full context, an id outside the vocabulary.
    fn check_input(&self, tokens: &[u32], cache: &KvCache) -> Result<(), LlmError> {
        let (n, p) = (tokens.len(), cache.len);
        if n == 0 {
            return Err(LlmError::Option("no tokens to decode".into()));
        }
        if p + n > self.max_context {
            return Err(LlmError::ContextFull { needed: p + n, limit: self.max_context });
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(LlmError::Option(format!(
                "token id {t} is outside the vocabulary ({})",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// The CPU decoder over `seqs`, in chunks of at most `PREFILL_CHUNK` tokens together
    /// (shared evenly between the sequences still running), so the decoder's buffers stay
    /// small and the deadline is looked at between chunks (each token's arithmetic is the
    /// same whatever the chunk: the result does not change).
    fn cpu_forward(
        &self,
        cpu: &CpuDecoder,
        seqs: &mut [Sequence],
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let starts: Vec<usize> = seqs.iter().map(|s| s.cache.len()).collect();
        let mut done = vec![0; seqs.len()];
        let mut logits = vec![Vec::new(); seqs.len()];
        loop {
            let running: Vec<usize> = (0..seqs.len()).filter(|&j| done[j] < seqs[j].tokens.len()).collect();
            if running.is_empty() {
                return Ok(logits);
            }
            let per = (PREFILL_CHUNK / running.len()).max(1);
            let mut chunk: Vec<Sequence> = Vec::with_capacity(running.len());
            let mut ends = Vec::with_capacity(running.len());
            for (j, seq) in seqs.iter_mut().enumerate().filter(|(j, _)| running.contains(j)) {
                let end = (done[j] + per).min(seq.tokens.len());
                chunk.push(Sequence { tokens: &seq.tokens[done[j]..end], cache: &mut *seq.cache });
                ends.push(end);
            }
            match cpu.decode_batch(self, &mut chunk, deadline) {
                Ok(chunk_logits) => {
                    for ((&j, end), l) in running.iter().zip(ends).zip(chunk_logits) {
                        done[j] = end;
                        logits[j] = l;
                    }
                }
                Err(e) => {
                    // Earlier chunks are in the caches: none of these tokens stay.
                    drop(chunk);
                    for (seq, &p) in seqs.iter_mut().zip(&starts) {
                        seq.cache.truncate(p);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Runs `tokens` (positions `cache.len()..`) through the model, appends their keys and
    /// values to `cache`, and returns the logits of the last token (`vocab` values). Gives up
    /// with `LlmError::Deadline` between layers once `deadline` has passed.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        deadline: Option<Instant>,
    ) -> Result<Vec<f32>, LlmError> {
        self.check_input(tokens, cache)?;
        let c = &self.config;
        let (n, p) = (tokens.len(), cache.len);
        // One token: the CPU decoder. A prompt: the CPU decoder too when prompts take 8-bit
        // activations (llama.cpp's arithmetic), or when it is too short for Burn's f32 GEMM
        // (which would take the 8-bit kernel then anyway); else Burn's f32 GEMM. In chunks, so
        // the decoder's buffers stay small and the deadline is looked at between them (each
        // token's arithmetic is the same whatever the chunk: the result does not change).
        if let Some(cpu) = self.cpu_for(n) {
            let mut logits = self.cpu_forward(cpu, &mut [Sequence { tokens, cache }], deadline)?;
            return Ok(logits.pop().expect("one sequence in, one out"));
        }
        let (d, hd, nh, nkv, ff) = (c.d_model, c.head_dim, c.n_heads, c.n_kv_heads, c.d_ff);
        let (kvd, group, total) = (nkv * hd, nh / nkv, p + n);
        let mut rows = Vec::with_capacity(n * d);
        for &t in tokens {
            rows.extend(self.embedding.dequantize_rows(t as usize..t as usize + 1));
        }
        let mut x = Tensor::<2>::from_data(TensorData::new(rows, [n, d]), &self.device);
        // Causal mask over (query group, query position, key position), true = hidden.
        let mask = (n > 1).then(|| {
            let mut m = Vec::with_capacity(nkv * group * n * total);
            for _ in 0..nkv * group {
                for i in 0..n {
                    m.extend((0..total).map(|j| j > p + i));
                }
            }
            Tensor::<3, Bool>::from_data(TensorData::new(m, [nkv, group * n, total]), &self.device)
        });
        let scale = 1.0 / (hd as f32).sqrt();
        for (l, blk) in self.blocks.iter().enumerate() {
            if deadline.is_some_and(|dl| Instant::now() >= dl) {
                cache.truncate_host(p);
                return Err(LlmError::Deadline);
            }
            let h = blk.attn_norm.forward(x.clone());
            let qkv = blk.wqkv.forward(h, self.prompt_f32);
            let q = qkv.clone().slice([0..n, 0..d]).reshape([n, nh, hd]).swap_dims(0, 1);
            let k = qkv.clone().slice([0..n, d..d + kvd]).reshape([n, nkv, hd]).swap_dims(0, 1);
            let v = qkv.slice([0..n, d + kvd..d + 2 * kvd]).reshape([n, nkv, hd]).swap_dims(0, 1);
            let q = self.kv_round(self.rope.apply(q, p));
            let k = self.kv_round(self.rope.apply(k, p));
            let v = self.kv_round(v);
            let (k_all, v_all) = match &mut cache.layers[l] {
                LayerKv::Tensors(layer) => {
                    let (k_all, v_all) = match layer.take() {
                        Some((kc, vc)) => (Tensor::cat(vec![kc, k], 1), Tensor::cat(vec![vc, v], 1)),
                        None => (k, v),
                    };
                    *layer = Some((k_all.clone(), v_all.clone()));
                    (k_all, v_all)
                }
                LayerKv::Host { keys, values } => {
                    // [kv heads, n, hd] → rows [n][kv heads · hd], appended; then every
                    // position back as [kv heads, total, hd].
                    let rows = |t: Tensor<3>| t.swap_dims(0, 1).into_data().try_into_vec::<f32>();
                    keys.extend(rows(k).expect("f32 keys"));
                    values.extend(rows(v).expect("f32 values"));
                    let all = |h: &Vec<f32>| {
                        Tensor::<3>::from_data(TensorData::new(h.clone(), [total, nkv, hd]), &self.device)
                            .swap_dims(0, 1)
                    };
                    (all(keys), all(values))
                }
            };
            // Query head h reads KV head h / group: [nh, n, hd] → [nkv, group·n, hd].
            let q = q.reshape([nkv, group * n, hd]);
            let mut scores = q.matmul(k_all.swap_dims(1, 2)).mul_scalar(scale);
            if let Some(m) = &mask {
                scores = scores.mask_fill(m.clone(), f32::NEG_INFINITY);
            }
            let att = self.kv_round(softmax(scores, 2)).matmul(v_all);
            let att = att.reshape([nh, n, hd]).swap_dims(0, 1).reshape([n, d]);
            x = x + blk.wo.forward(att, self.prompt_f32);
            let h = blk.ffn_norm.forward(x.clone());
            let gu = blk.w_gate_up.forward(h, self.prompt_f32);
            let a = silu(gu.clone().slice([0..n, 0..ff])) * gu.slice([0..n, ff..2 * ff]);
            x = x + blk.w_down.forward(a, self.prompt_f32);
        }
        cache.len += n;
        let last = self.norm.forward(x.slice([n - 1..n, 0..d]));
        let logits = self.output.forward(last, self.prompt_f32);
        Ok(logits.into_data().try_into_vec::<f32>().expect("f32 logits"))
    }
}
