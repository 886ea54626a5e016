//! The CPU decoder: tokens through the quantized model in one pass, without Burn — one token
//! when decoding, a whole prompt when prefilling.
//!
//! Decoding a token reads every weight once and, on a 576-wide model, was bound by
//! overhead: through Burn a token was ~30 tensor ops per layer (copies for
//! reshapes, an allocation each) and 121 rayon fork/joins. Here every thread of a persistent
//! pool runs the whole token, each taking its share of the rows of each product (four rows per
//! activation load, `QMatrix::rows_dot`) and of the attention heads, with a spinning barrier
//! between steps; the small steps (RoPE, the cache append; a single token's norms) run on
//! thread 0 while the others wait. Buffers are allocated once, for the largest batch yet.
//! A prompt runs each step for all its tokens, 64 weight rows at a time for every token,
//! so the rows stay in cache while the activations stream by: prompts are compute-bound, and
//! this beats Burn's f32 GEMM on dequantized weights here (1.1–1.3×, docs/measured.md).
//!
//! The arithmetic is ggml's for llama.cpp's CPU path: activations quantized to 8 bits per 32
//! values before each product (the kernels of `QMatrix::matmul`, Burn's 8-bit prompt path),
//! RMS norm summed in f64, RoPE angles by repeated multiplication in f32, softmax sums in f64.
//! Burn keeps the f32 prompt path (`prompt_f32`) and wgpu; all paths share the KV cache.
use super::llama::{KvCache, Llama};
use super::pool::{Barrier, Pool};
use super::quant::{quantize_q8_into, Q8Block, QMatrix, QK};
use super::LlmError;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Working memory for a batch of tokens (one token when decoding, a prompt when
/// prefilling): each per-token buffer holds `capacity` tokens' rows, one after the other.
struct Scratch {
    /// Tokens the buffers hold (grown, never shrunk, by `ensure`).
    capacity: usize,
    /// The residual stream.
    x: Vec<f32>,
    /// A normed copy of `x`.
    h: Vec<f32>,
    /// `h` (or the attention output) quantized, the input of the next product.
    act: Vec<Q8Block>,
    /// The SwiGLU output quantized (its own buffer: thread 1 may still read `act` while
    /// thread 0 writes this).
    act_ff: Vec<Q8Block>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    /// gate (first `d_ff`) and up (second `d_ff`) products.
    gate_up: Vec<f32>,
    ffn: Vec<f32>,
    /// Attention weights, `max_context` per thread (each thread runs its heads one by one).
    scores: Vec<f32>,
    /// cos, sin per rotated pair, per token (its position).
    rope: Vec<(f32, f32)>,
    /// The last token's logits of each sequence, one after the other.
    logits: Vec<f32>,
    /// Sequences `logits` holds room for.
    sequences: usize,
}

impl Scratch {
    /// Room for `n` tokens of `k` sequences (allocates only for a larger batch than any
    /// before).
    fn ensure(&mut self, n: usize, k: usize, c: &super::llama::LlamaConfig) {
        if k > self.sequences {
            self.logits.resize(k * c.vocab_size, 0.0);
            self.sequences = k;
        }
        if n <= self.capacity {
            return;
        }
        let (d, ff, kvd) = (c.d_model, c.d_ff, c.n_kv_heads * c.head_dim);
        self.x.resize(n * d, 0.0);
        self.h.resize(n * d, 0.0);
        self.act.resize(n * d / QK, Q8Block::ZERO);
        self.act_ff.resize(n * ff / QK, Q8Block::ZERO);
        self.qkv.resize(n * (d + 2 * kvd), 0.0);
        self.att.resize(n * d, 0.0);
        self.gate_up.resize(n * 2 * ff, 0.0);
        self.ffn.resize(n * ff, 0.0);
        self.rope.resize(n * c.head_dim / 2, (0.0, 0.0));
        self.capacity = n;
    }
}

pub(crate) struct CpuDecoder {
    pool: Pool,
    scratch: Mutex<Scratch>,
}

/// A raw pointer the threads of one token share. Each step writes disjoint parts, and a
/// barrier (acquire/release) separates a step's writes from the next step's reads.
struct Shared<T>(*mut T);
// Copy whatever T is (a derive would ask T: Copy).
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: see the type's comment; the pointers outlive the token (`Pool::run` returns only
// when every thread has finished it).
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn of(v: &mut [T]) -> Self {
        Shared(v.as_mut_ptr())
    }
    /// The pointer (a method, so closures capture the `Sync` wrapper, not its field).
    fn ptr(self) -> *mut T {
        self.0
    }
    /// SAFETY: `range` is inside the buffer, and no other thread touches it in this step.
    unsafe fn slice<'a>(self, range: Range<usize>) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(range.start), range.len())
    }
    /// SAFETY: `range` is inside the buffer, and no thread writes it in this step.
    unsafe fn read<'a>(self, range: Range<usize>) -> &'a [T] {
        std::slice::from_raw_parts(self.0.add(range.start), range.len())
    }
}

/// Thread `t` of `threads`'s share of `0..n`, in multiples of `unit`.
fn share(n: usize, t: usize, threads: usize, unit: usize) -> Range<usize> {
    let chunk = n.div_ceil(threads).div_ceil(unit) * unit;
    let start = (t * chunk).min(n);
    start..(start + chunk).min(n)
}

/// Weight rows per pass over a batch's tokens: the pass keeps them in cache while every
/// token's activations stream by (64 rows of the shipped Q4_1 model: 23 KB of a 576-wide
/// matrix, in L1; 61 KB of the 1536-wide down projection, in L2). A multiple of 4, so a
/// single token's rows group as before.
const ROWS_PER_PASS: usize = 64;

impl CpuDecoder {
    /// A decoder for `model`, or None where this path does not apply (weights dequantized
    /// to Burn tensors; widths or heads not a multiple of 32, which the per-32 activation
    /// quantization needs): those models decode through Burn.
    pub(crate) fn new(model: &Llama, threads: usize) -> Result<Option<Self>, LlmError> {
        let c = &model.config;
        let held = model.output_matrix().is_some()
            && model
                .blocks
                .iter()
                .all(|b| [&b.wqkv, &b.wo, &b.w_gate_up, &b.w_down].iter().all(|l| l.quantized().is_some()));
        if !held || c.head_dim % QK != 0 || c.d_ff % QK != 0 || c.d_model % QK != 0 {
            return Ok(None);
        }
        let pool = Pool::new(threads).map_err(|e| LlmError::Backend(format!("decoder threads: {e}")))?;
        let mut scratch = Scratch {
            capacity: 0,
            x: vec![],
            h: vec![],
            act: vec![],
            act_ff: vec![],
            qkv: vec![],
            att: vec![],
            gate_up: vec![],
            ffn: vec![],
            scores: vec![0.0; pool.threads() * model.max_context],
            rope: vec![],
            logits: vec![],
            sequences: 0,
        };
        scratch.ensure(1, 1, c);
        Ok(Some(CpuDecoder { pool, scratch: Mutex::new(scratch) }))
    }

    pub(crate) fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs several sequences together, each with its own cache: `tokens` of each at its
    /// positions `cache.len()..` (one when decoding, a whole prompt when prefilling), its
    /// keys and values appended to its cache (host layout); returns each sequence's
    /// last-token logits, in order. Every sequence has at least one token.
    ///
    /// A batch runs each step for all its tokens before the next (each weight row read once
    /// for the batch, from L1 for all but the first token), and every token's arithmetic is
    /// the one-token path's: a prompt prefilled here gives, bit for bit, the logits and cache
    /// of the same tokens decoded one at a time (tested).
    ///
    /// Decoding K sequences at once (one token each: the K event sentences of a burst, or K
    /// candidates) reads every weight row once for all K, where K one-token passes read the
    /// whole model K times, and products take two tokens per weight block (`rows_dot2`). On
    /// two cores this model is compute-bound, so K tokens cost more than one step but well
    /// under K (4 sequences: 13.6 ms against 6.2 ms for one; docs/models.md). The
    /// tokens are laid out sequence after sequence; each attends only to its own cache, and
    /// its arithmetic is the one-token path's, so each sequence's logits equal, bit for bit,
    /// those of running it alone (tested). Given up at the deadline, every cache is left
    /// as it was.
    pub(crate) fn decode_batch(
        &self,
        model: &Llama,
        seqs: &mut [Sequence<'_>],
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let c = &model.config;
        let (d, hd, nh, nkv, ff) = (c.d_model, c.head_dim, c.n_heads, c.n_kv_heads, c.d_ff);
        let (kvd, group, k) = (nkv * hd, nh / nkv, seqs.len());
        let qkv_w = d + 2 * kvd;
        let eps = c.rms_eps;
        let mc = model.max_context;
        let f16_kv = model.kv_precision == super::llama::KvPrecision::F16;
        let vocab = c.vocab_size;
        let output = model.output_matrix().expect("checked in new");
        assert!(k > 0 && seqs.iter().all(|s| !s.tokens.is_empty()), "every sequence brings a token");
        // Per token: its sequence and its position there; per sequence: where its cache
        // started and which token is its last.
        let starts: Vec<usize> = seqs.iter().map(|s| s.cache.len()).collect();
        let (mut owner, mut position, mut last) = (Vec::new(), Vec::new(), Vec::with_capacity(k));
        for (j, s) in seqs.iter().enumerate() {
            owner.extend(std::iter::repeat(j).take(s.tokens.len()));
            position.extend(starts[j]..starts[j] + s.tokens.len());
            last.push(owner.len() - 1);
        }
        let n = owner.len();
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        s.ensure(n, k, c);
        for (i, &token) in seqs.iter().flat_map(|s| s.tokens).enumerate() {
            model.embedding.dequantize_rows_into(token as usize..token as usize + 1, &mut s.x[i * d..(i + 1) * d]);
            // ggml's rope cache: theta = p · base^(-2i/d), by repeated multiplication in f32.
            let theta_scale = c.rope_theta.powf(-2.0 / hd as f32);
            let mut theta = position[i] as f32;
            for cs in s.rope[i * hd / 2..(i + 1) * hd / 2].iter_mut() {
                *cs = (theta.cos(), theta.sin());
                theta *= theta_scale;
            }
        }
        for seq in seqs.iter_mut() {
            seq.cache.reserve_host(seq.tokens.len());
        }
        let threads = self.pool.threads();
        let abort = AtomicBool::new(false);
        let (x, h, act, act_ff) =
            (Shared::of(&mut s.x), Shared::of(&mut s.h), Shared::of(&mut s.act), Shared::of(&mut s.act_ff));
        let (qkv, att, gate_up, ffn) =
            (Shared::of(&mut s.qkv), Shared::of(&mut s.att), Shared::of(&mut s.gate_up), Shared::of(&mut s.ffn));
        let (scores, logits, rope) = (Shared::of(&mut s.scores), Shared::of(&mut s.logits), &s.rope);
        let caches: Vec<Shared<KvCache>> = seqs.iter_mut().map(|s| Shared(&mut *s.cache as *mut KvCache)).collect();
        // (input row, output row) of each product: every token to its own row; for the
        // logits, each sequence's last token to the sequence's row.
        let every_token: Vec<(usize, usize)> = (0..n).map(|i| (i, i)).collect();
        let last_tokens: Vec<(usize, usize)> = last.iter().enumerate().map(|(j, &i)| (i, j)).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let job = |t: usize, barrier: &Barrier| {
            // SAFETY (every `slice`/`read` below): each step's ranges are disjoint between
            // threads (rows of a product, tokens, token × head pairs) or written by thread 0
            // alone, and barriers separate the steps.
            // `h` = the normed residual stream of token i, `act` = `h` quantized.
            let norm_and_quantize = |i: usize, gamma: &[f32]| unsafe {
                rms_norm(x.read(i * d..(i + 1) * d), gamma, eps, h.slice(i * d..(i + 1) * d));
                quantize_q8_into(h.read(i * d..(i + 1) * d), act.slice(i * d / QK..(i + 1) * d / QK));
            };
            // This thread's tokens for per-token steps: all of a single token on thread 0.
            let my_tokens = share(n, t, threads, 1);
            // This thread's rows of `m · input_i` for every (i, o) of `pairs`: token i's
            // activations at `i · a_w` blocks / `i · in_w` values, its output row at
            // `o · out_w`; a pass of rows at a time.
            let product = |m: &QMatrix,
                           rows: Range<usize>,
                           pairs: &[(usize, usize)],
                           a: Shared<Q8Block>,
                           a_w: usize,
                           input: Shared<f32>,
                           in_w: usize,
                           out: Shared<f32>,
                           out_w: usize,
                           accumulate: bool| unsafe {
                let mut r0 = rows.start;
                while r0 < rows.end {
                    let r1 = (r0 + ROWS_PER_PASS).min(rows.end);
                    // Two tokens at a time: each weight block unpacked once for both.
                    let mut twos = pairs.chunks_exact(2);
                    for two in &mut twos {
                        let [(i, o), (j, p)] = [two[0], two[1]];
                        debug_assert_ne!(o, p, "two tokens writing one output row");
                        m.rows_dot2(
                            r0..r1,
                            [a.read(i * a_w..(i + 1) * a_w), a.read(j * a_w..(j + 1) * a_w)],
                            [input.read(i * in_w..(i + 1) * in_w), input.read(j * in_w..(j + 1) * in_w)],
                            [out.slice(o * out_w + r0..o * out_w + r1), out.slice(p * out_w + r0..p * out_w + r1)],
                            accumulate,
                        );
                    }
                    for &(i, o) in twos.remainder() {
                        m.rows_dot(
                            r0..r1,
                            a.read(i * a_w..(i + 1) * a_w),
                            input.read(i * in_w..(i + 1) * in_w),
                            out.slice(o * out_w + r0..o * out_w + r1),
                            accumulate,
                        );
                    }
                    r0 = r1;
                }
            };
            let tokens = &every_token[..];
            unsafe {
                for (l, blk) in model.blocks.iter().enumerate() {
                    if t == 0 && deadline.is_some_and(|dl| Instant::now() >= dl) {
                        abort.store(true, Ordering::Relaxed);
                    }
                    for i in my_tokens.clone() {
                        norm_and_quantize(i, &blk.attn_gamma);
                    }
                    barrier.wait();
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let wqkv = blk.wqkv.quantized().expect("checked in new");
                    product(wqkv, share(wqkv.rows, t, threads, 4), tokens, act, d / QK, h, d, qkv, qkv_w, false);
                    barrier.wait();
                    if t == 0 {
                        for i in 0..n {
                            let qkv = qkv.slice(i * qkv_w..(i + 1) * qkv_w);
                            let rope = &rope[i * hd / 2..(i + 1) * hd / 2];
                            for head in qkv[..d + kvd].chunks_exact_mut(hd) {
                                rotate(head, rope);
                            }
                            if f16_kv {
                                qkv.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
                            }
                            (*caches[owner[i]].ptr()).push_host(l, &qkv[d..d + kvd], &qkv[d + kvd..]);
                        }
                    }
                    barrier.wait();
                    // Token i sees its own sequence's positions 0..=position[i] (causal);
                    // pairs (token, head) shared out.
                    let w = scores.slice(t * mc..(t + 1) * mc);
                    for pair in (t..n * nh).step_by(threads) {
                        let (i, head) = (pair / nh, pair % nh);
                        let (keys, values) = (*caches[owner[i]].ptr()).host(l);
                        let q = qkv.read(i * qkv_w + head * hd..i * qkv_w + (head + 1) * hd);
                        let kv_off = (head / group) * hd;
                        let out = att.slice(i * d + head * hd..i * d + (head + 1) * hd);
                        let seen = &mut w[..position[i] + 1];
                        attend(q, &keys[kv_off..], &values[kv_off..], kvd, scale, f16_kv, seen, out);
                        let a0 = (i * d + head * hd) / QK;
                        quantize_q8_into(out, act.slice(a0..a0 + hd / QK));
                    }
                    barrier.wait();
                    let wo = blk.wo.quantized().expect("checked in new");
                    product(wo, share(d, t, threads, 4), tokens, act, d / QK, att, d, x, d, true);
                    barrier.wait();
                    for i in my_tokens.clone() {
                        norm_and_quantize(i, &blk.ffn_gamma);
                    }
                    barrier.wait();
                    // Gate and up rows of the same range on one thread, so its SwiGLU and
                    // quantization of that range need no barrier.
                    let wgu = blk.w_gate_up.quantized().expect("checked in new");
                    let rows = share(ff, t, threads, QK);
                    product(wgu, rows.clone(), tokens, act, d / QK, h, d, gate_up, 2 * ff, false);
                    let up_rows = ff + rows.start..ff + rows.end;
                    product(wgu, up_rows, tokens, act, d / QK, h, d, gate_up, 2 * ff, false);
                    for i in 0..n {
                        let base = i * 2 * ff;
                        let g = gate_up.slice(base + rows.start..base + rows.end);
                        let u = gate_up.slice(base + ff + rows.start..base + ff + rows.end);
                        let f = ffn.slice(i * ff + rows.start..i * ff + rows.end);
                        swiglu(g, u, f);
                        quantize_q8_into(f, act_ff.slice((i * ff + rows.start) / QK..(i * ff + rows.end) / QK));
                    }
                    barrier.wait();
                    let wd = blk.w_down.quantized().expect("checked in new");
                    product(wd, share(d, t, threads, 4), tokens, act_ff, ff / QK, ffn, ff, x, d, true);
                    barrier.wait();
                }
                // Only each sequence's last token's logits are asked for.
                for j in share(k, t, threads, 1) {
                    norm_and_quantize(last[j], &model.norm_gamma);
                }
                barrier.wait();
                let rows = share(output.rows, t, threads, 4);
                product(output, rows, &last_tokens, act, d / QK, h, d, logits, vocab, false);
            }
        };
        let ran = self.pool.run(&job);
        // A layer's keys may be in a cache without the rest: drop these positions everywhere.
        if abort.load(Ordering::Relaxed) || ran.is_err() {
            for (seq, &p) in seqs.iter_mut().zip(&starts) {
                seq.cache.truncate_host(p);
            }
        }
        ran.map_err(LlmError::Backend)?;
        if abort.load(Ordering::Relaxed) {
            return Err(LlmError::Deadline);
        }
        for seq in seqs.iter_mut() {
            seq.cache.advance(seq.tokens.len());
        }
        Ok((0..k).map(|j| s.logits[j * vocab..(j + 1) * vocab].to_vec()).collect())
    }
}

/// One sequence of a batch: its new tokens and its own cache.
pub(crate) struct Sequence<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// ggml's `rms_norm` then `mul`: the mean square summed in f64, `x · (1/√(ms + ε)) · γ`.
fn rms_norm(x: &[f32], gamma: &[f32], eps: f64, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps as f32).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(gamma) {
        *o = v * scale * g;
    }
}

/// RoPE on one head, ggml's "normal" mode: adjacent pairs rotated.
fn rotate(head: &mut [f32], rope: &[(f32, f32)]) {
    for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(rope) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * cos - b * sin;
        pair[1] = a * sin + b * cos;
    }
}

/// One query head's attention over `w.len()` positions: `keys`/`values` start at this head's
/// KV head, one position every `stride` values. Scores → softmax (→ f16 with an f16 cache, as
/// `Llama::kv_round`) → the weighted sum of values in `out`.
#[allow(clippy::too_many_arguments)]
fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    scale: f32,
    f16_kv: bool,
    w: &mut [f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && q.len() % 8 == 0 {
            // SAFETY: the CPU has AVX2 and FMA; every position's key and value rows hold
            // `q.len()` values from `pos * stride` (the cache's layout).
            unsafe { simd::attend(q, keys, values, stride, scale, f16_kv, w, out) };
            return;
        }
    }
    attend_portable(q, keys, values, stride, scale, f16_kv, w, out)
}

#[allow(clippy::too_many_arguments)]
fn attend_portable(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    scale: f32,
    f16_kv: bool,
    w: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    for (pos, w) in w.iter_mut().enumerate() {
        *w = q.iter().zip(&keys[pos * stride..pos * stride + hd]).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
    let max = w.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f64;
    for v in w.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    w.iter_mut().for_each(|v| *v *= inv);
    if f16_kv {
        w.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    }
    out.fill(0.0);
    for (pos, &w) in w.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(&values[pos * stride..pos * stride + hd]) {
            *o += w * v;
        }
    }
}

/// SwiGLU: `out = silu(gate) · up`.
fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA; the three slices have the same length.
            unsafe { simd::swiglu(gate, up, out) };
            return;
        }
    }
    swiglu_portable(gate, up, out)
}

fn swiglu_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// AVX2 attention and SwiGLU, with ggml's vectorized `expf` (`ggml_v_expf`, ported: the
/// exponentials llama.cpp's softmax and SiLU use; a libm call per value cost more here than
/// the attention's products).
#[cfg(target_arch = "x86_64")]
mod simd {
    use crate::llm::quant::avx2::hsum;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn c(bits: u32) -> __m256 {
        _mm256_set1_ps(f32::from_bits(bits))
    }

    /// ggml's `ggml_v_expf` (AVX2 + FMA), constant for constant.
    #[inline(always)]
    unsafe fn exp(x: __m256) -> __m256 {
        let r = c(0x4b40_0000); // 0x1.8p23
        let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0))));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let cm = _mm256_castps_si256(_mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0), _CMP_GT_OQ));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
                u,
                _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
            ),
            u,
            _mm256_mul_ps(c(0x3f7f_fff6), b),
        );
        if _mm256_movemask_ps(_mm256_castsi256_ps(cm)) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_castps_si256(_mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0), _CMP_GT_OQ));
        let (cm, d) = (_mm256_castsi256_ps(cm), _mm256_castsi256_ps(d));
        _mm256_or_ps(
            _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                d,
                _mm256_or_ps(
                    _mm256_and_ps(cm, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                    _mm256_andnot_ps(cm, _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        stride: usize,
        scale: f32,
        f16_kv: bool,
        w: &mut [f32],
        out: &mut [f32],
    ) {
        let hd = q.len();
        let total = w.len();
        assert!(total == 0 || ((total - 1) * stride + hd <= keys.len().min(values.len())), "cache rows");
        let (qp, kp, vp) = (q.as_ptr(), keys.as_ptr(), values.as_ptr());
        let mut max = f32::NEG_INFINITY;
        for (pos, w) in w.iter_mut().enumerate() {
            let row = kp.add(pos * stride);
            // One 8-lane accumulator over the head, then a horizontal sum: the order of
            // llama.cpp's f32 products here (llamafile's tinyBLAS), so the scores round alike.
            let mut acc = _mm256_setzero_ps();
            let mut c = 0;
            while c < hd {
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(row.add(c)), acc);
                c += 8;
            }
            *w = hsum(acc) * scale;
            max = max.max(*w);
        }
        // Softmax: exponentials eight at a time, the sum in f64 (as ggml).
        let mut sum = 0.0f64;
        let wp = w.as_mut_ptr();
        let vmax = _mm256_set1_ps(max);
        let mut i = 0;
        while i + 8 <= total {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(wp.add(i)), vmax));
            _mm256_storeu_ps(wp.add(i), e);
            sum += hsum(e) as f64;
            i += 8;
        }
        for v in &mut w[i..] {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        for v in w.iter_mut() {
            *v *= inv;
            if f16_kv {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        // The weighted sum of values, eight output lanes at a time in registers.
        let op = out.as_mut_ptr();
        let mut c = 0;
        while c < hd {
            let mut acc = _mm256_setzero_ps();
            for (pos, &w) in w.iter().enumerate() {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(vp.add(pos * stride + c)), acc);
            }
            _mm256_storeu_ps(op.add(c), acc);
            c += 8;
        }
    }

    /// ggml's `ggml_vec_swiglu_f32`: x / (1 + e^-x) · up, eight at a time.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = out.len().min(gate.len()).min(up.len());
        let (gp, up_, op) = (gate.as_ptr(), up.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(gp.add(i));
            let silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
            _mm256_storeu_ps(op.add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(up_.add(i))));
            i += 8;
        }
        for j in i..n {
            let g = gate[j];
            out[j] = g / (1.0 + (-g).exp()) * up[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The AVX2 attention and SwiGLU (ggml's vectorized exp) against the portable loops
    /// (libm's exp): within a few float roundings, positions not a multiple of 8 included.
    #[test]
    fn simd_attention_and_swiglu_match_the_portable_loops() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (hd, stride) = (64, 192);
        for total in [1, 7, 8, 29, 300] {
            let q: Vec<f32> = (0..hd).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let keys: Vec<f32> = (0..total * stride).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let values: Vec<f32> = (0..total * stride).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for f16_kv in [false, true] {
                let (mut w1, mut w2) = (vec![0.0; total], vec![0.0; total]);
                let (mut o1, mut o2) = (vec![0.0; hd], vec![0.0; hd]);
                attend(&q, &keys[64..], &values[64..], stride, 0.125, f16_kv, &mut w1, &mut o1);
                attend_portable(&q, &keys[64..], &values[64..], stride, 0.125, f16_kv, &mut w2, &mut o2);
                for (a, b) in w1.iter().zip(&w2).chain(o1.iter().zip(&o2)) {
                    assert!((a - b).abs() <= 2e-3 * b.abs().max(1e-3), "{total} {f16_kv}: {a} vs {b}");
                }
            }
        }
        let gate: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.2).collect(); // ±100: both tails
        let up: Vec<f32> = (0..1000).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let (mut a, mut b) = (vec![0.0; 1000], vec![0.0; 1000]);
        swiglu(&gate, &up, &mut a);
        swiglu_portable(&gate, &up, &mut b);
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-6), "{i}: {a} vs {b}");
        }
    }

    #[test]
    fn shares_cover_the_range_once_in_whole_units() {
        for (n, threads, unit) in [(576, 2, 4), (1536, 2, 32), (49152, 3, 4), (10, 4, 4), (3, 2, 4)] {
            let mut seen = vec![0; n];
            for t in 0..threads {
                let r = share(n, t, threads, unit);
                assert!(r.is_empty() || r.start % unit == 0, "{n} {threads} {unit}: {r:?}");
                for i in r {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{n} {threads} {unit}");
        }
    }
}
