//! The CPU decoder: one token through the quantized model in one pass, without Burn.
//!
//! Decoding a token is bound by memory bandwidth (every weight is read once) and, on a
//! 576-wide model, by overhead: through Burn a token was ~30 tensor ops per layer (copies for
//! reshapes, an allocation each) and 121 rayon fork/joins. Here every thread of a persistent
//! pool runs the whole token, each taking its share of the rows of each product (four rows per
//! activation load, `QMatrix::rows_dot`) and of the attention heads, with a spinning barrier
//! between steps; the small steps (norms, RoPE, the cache append) run on thread 0 while the
//! others wait. All buffers are allocated once, when the decoder is made.
//!
//! The arithmetic is ggml's for llama.cpp's CPU path: activations quantized to 8 bits per 32
//! values before each product (the same kernels as the prompt's `--prompt-int8` path), RMS
//! norm summed in f64, RoPE angles by repeated multiplication in f32, softmax sums in f64.
//! Prompts (many tokens at once, compute-bound) stay in Burn; both paths share the KV cache.
use super::llama::{KvCache, Llama};
use super::pool::{Barrier, Pool};
use super::quant::{quantize_q8_into, Q8Block, QK};
use super::LlmError;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Per-token working memory.
struct Scratch {
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
    /// Attention weights, `max_context` per query head.
    scores: Vec<f32>,
    /// cos, sin per rotated pair at the current position.
    rope: Vec<(f32, f32)>,
    logits: Vec<f32>,
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
}

/// Thread `t` of `threads`'s share of `0..n`, in multiples of `unit`.
fn share(n: usize, t: usize, threads: usize, unit: usize) -> Range<usize> {
    let chunk = n.div_ceil(threads).div_ceil(unit) * unit;
    let start = (t * chunk).min(n);
    start..(start + chunk).min(n)
}

impl CpuDecoder {
    /// A decoder for `model`, or None where this path does not apply (a matrix in a float
    /// format, heads not a multiple of 32 wide): those models decode through Burn.
    pub(crate) fn new(model: &Llama, threads: usize) -> Result<Option<Self>, LlmError> {
        let c = &model.config;
        let blocked = model.output_matrix().is_some_and(|m| m.is_blocked())
            && model.blocks.iter().all(|b| {
                [&b.wqkv, &b.wo, &b.w_gate_up, &b.w_down].iter().all(|l| l.quantized().is_some_and(|m| m.is_blocked()))
            });
        if !blocked || c.head_dim % QK != 0 || c.d_ff % QK != 0 || c.d_model % QK != 0 {
            return Ok(None);
        }
        let pool = Pool::new(threads).map_err(|e| LlmError::Backend(format!("decoder threads: {e}")))?;
        let (d, ff, kvd) = (c.d_model, c.d_ff, c.n_kv_heads * c.head_dim);
        let scratch = Scratch {
            x: vec![0.0; d],
            h: vec![0.0; d],
            act: vec![Q8Block::ZERO; d / QK],
            act_ff: vec![Q8Block::ZERO; ff / QK],
            qkv: vec![0.0; d + 2 * kvd],
            att: vec![0.0; d],
            gate_up: vec![0.0; 2 * ff],
            ffn: vec![0.0; ff],
            scores: vec![0.0; c.n_heads * model.max_context],
            rope: vec![(0.0, 0.0); c.head_dim / 2],
            logits: vec![0.0; c.vocab_size],
        };
        Ok(Some(CpuDecoder { pool, scratch: Mutex::new(scratch) }))
    }

    pub(crate) fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `token` at position `cache.len()`, appends its keys and values to `cache` (host
    /// layout), and returns its logits.
    pub(crate) fn decode(
        &self,
        model: &Llama,
        token: u32,
        cache: &mut KvCache,
        deadline: Option<Instant>,
    ) -> Result<Vec<f32>, LlmError> {
        let c = &model.config;
        let (d, hd, nh, nkv, ff) = (c.d_model, c.head_dim, c.n_heads, c.n_kv_heads, c.d_ff);
        let (kvd, group, p) = (nkv * hd, nh / nkv, cache.len());
        let total = p + 1;
        let eps = c.rms_eps;
        let f16_kv = model.kv_precision == super::llama::KvPrecision::F16;
        let output = model.output_matrix().expect("checked in new");
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        model.embedding.dequantize_rows_into(token as usize..token as usize + 1, &mut s.x);
        // ggml's rope cache: theta = p · base^(-2i/d), by repeated multiplication in f32.
        let theta_scale = c.rope_theta.powf(-2.0 / hd as f32);
        let mut theta = p as f32;
        for cs in s.rope.iter_mut() {
            *cs = (theta.cos(), theta.sin());
            theta *= theta_scale;
        }
        cache.reserve_host(1);
        let threads = self.pool.threads();
        let abort = AtomicBool::new(false);
        let (x, h, act, act_ff) =
            (Shared::of(&mut s.x), Shared::of(&mut s.h), Shared::of(&mut s.act), Shared::of(&mut s.act_ff));
        let (qkv, att, gate_up, ffn) =
            (Shared::of(&mut s.qkv), Shared::of(&mut s.att), Shared::of(&mut s.gate_up), Shared::of(&mut s.ffn));
        let (scores, logits, rope) = (Shared::of(&mut s.scores), Shared::of(&mut s.logits), &s.rope);
        let cache_ptr = Shared(cache as *mut KvCache);
        let scale = 1.0 / (hd as f32).sqrt();
        let round = |v: f32| if f16_kv { half::f16::from_f32(v).to_f32() } else { v };
        let job = |t: usize, barrier: &Barrier| {
            // SAFETY (every `slice` below): each step's ranges are disjoint between threads
            // or written by thread 0 alone, and barriers separate the steps.
            unsafe {
                for (l, blk) in model.blocks.iter().enumerate() {
                    if t == 0 {
                        if deadline.is_some_and(|dl| Instant::now() >= dl) {
                            abort.store(true, Ordering::Relaxed);
                        }
                        rms_norm(x.slice(0..d), &blk.attn_gamma, eps, h.slice(0..d));
                        quantize_q8_into(h.slice(0..d), act.slice(0..d / QK));
                    }
                    barrier.wait();
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let a = act.slice(0..d / QK);
                    let wqkv = blk.wqkv.quantized().expect("checked in new");
                    let rows = share(wqkv.rows, t, threads, 4);
                    wqkv.rows_dot(rows.clone(), a, qkv.slice(rows), false);
                    barrier.wait();
                    if t == 0 {
                        let qkv = qkv.slice(0..d + 2 * kvd);
                        for head in qkv[..d + kvd].chunks_exact_mut(hd) {
                            rotate(head, rope);
                        }
                        for v in qkv.iter_mut() {
                            *v = round(*v);
                        }
                        (*cache_ptr.ptr()).push_host(l, &qkv[d..d + kvd], &qkv[d + kvd..]);
                    }
                    barrier.wait();
                    let (keys, values) = (*cache_ptr.ptr()).host(l);
                    for head in (t..nh).step_by(threads) {
                        let q = &qkv.slice(head * hd..(head + 1) * hd)[..];
                        let w = scores.slice(head * model.max_context..head * model.max_context + total);
                        let kv_off = (head / group) * hd;
                        for (pos, w) in w.iter_mut().enumerate() {
                            *w = dot(q, &keys[pos * kvd + kv_off..pos * kvd + kv_off + hd]) * scale;
                        }
                        softmax(w);
                        let out = att.slice(head * hd..(head + 1) * hd);
                        out.fill(0.0);
                        for (pos, &w) in w.iter().enumerate() {
                            let w = round(w);
                            let v = &values[pos * kvd + kv_off..pos * kvd + kv_off + hd];
                            for (o, v) in out.iter_mut().zip(v) {
                                *o += w * v;
                            }
                        }
                        quantize_q8_into(out, act.slice(head * hd / QK..(head + 1) * hd / QK));
                    }
                    barrier.wait();
                    let wo = blk.wo.quantized().expect("checked in new");
                    let rows = share(d, t, threads, 4);
                    wo.rows_dot(rows.clone(), act.slice(0..d / QK), x.slice(rows), true);
                    barrier.wait();
                    if t == 0 {
                        rms_norm(x.slice(0..d), &blk.ffn_gamma, eps, h.slice(0..d));
                        quantize_q8_into(h.slice(0..d), act.slice(0..d / QK));
                    }
                    barrier.wait();
                    // Gate and up rows of the same range on one thread, so its SwiGLU and
                    // quantization of that range need no barrier.
                    let wgu = blk.w_gate_up.quantized().expect("checked in new");
                    let rows = share(ff, t, threads, QK);
                    let a = act.slice(0..d / QK);
                    wgu.rows_dot(rows.clone(), a, gate_up.slice(rows.clone()), false);
                    wgu.rows_dot(
                        ff + rows.start..ff + rows.end,
                        a,
                        gate_up.slice(ff + rows.start..ff + rows.end),
                        false,
                    );
                    let (g, u) = (gate_up.slice(rows.clone()), gate_up.slice(ff + rows.start..ff + rows.end));
                    let f = ffn.slice(rows.clone());
                    for ((f, &g), &u) in f.iter_mut().zip(g.iter()).zip(u.iter()) {
                        *f = g / (1.0 + (-g).exp()) * u;
                    }
                    quantize_q8_into(f, act_ff.slice(rows.start / QK..rows.end / QK));
                    barrier.wait();
                    let down = blk.w_down.quantized().expect("checked in new");
                    let rows = share(d, t, threads, 4);
                    down.rows_dot(rows.clone(), act_ff.slice(0..ff / QK), x.slice(rows), true);
                    barrier.wait();
                }
                if t == 0 {
                    rms_norm(x.slice(0..d), &model.norm_gamma, eps, h.slice(0..d));
                    quantize_q8_into(h.slice(0..d), act.slice(0..d / QK));
                }
                barrier.wait();
                let rows = share(output.rows, t, threads, 4);
                output.rows_dot(rows.clone(), act.slice(0..d / QK), logits.slice(rows), false);
            }
        };
        let ran = self.pool.run(&job);
        // A layer's keys may be in the cache without the rest: drop this position everywhere.
        if abort.load(Ordering::Relaxed) || ran.is_err() {
            cache.truncate_host(p);
        }
        ran.map_err(LlmError::Backend)?;
        if abort.load(Ordering::Relaxed) {
            return Err(LlmError::Deadline);
        }
        cache.advance(1);
        Ok(s.logits.clone())
    }
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

/// Eight partial sums (the compiler keeps them in vector registers).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a.chunks_exact(8).remainder().iter().zip(b.chunks_exact(8).remainder()).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// ggml's softmax: exponentials of the differences to the maximum, summed in f64.
fn softmax(w: &mut [f32]) {
    let max = w.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f64;
    for v in w.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in w.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
