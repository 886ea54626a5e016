//! ggml block formats: dequantization of `F32`, `F16`, `BF16`, `Q4_0`, `Q4_1` and `Q8_0`, and
//! a quantized matrix product that keeps the weights in their blocks.
//!
//! The product follows ggml's CPU path on purpose, so that the decoder agrees with llama.cpp
//! token for token: activations are quantized per 32 values (to `Q8_1` for `Q4_1` weights, to
//! `Q8_0` otherwise; scales rounded to f16 as ggml stores them), each block's dot product is
//! taken in integers and scaled once. Decoding one token is bound by memory bandwidth, and a
//! `Q4_1` weight is 5 bits against 32 for f32, so this is also the fast path on a CPU.
use half::f16;
use rayon::prelude::*;

pub const QK: usize = 32;

/// Keeps the kernels to AVX2 (no AVX-512 VNNI) even where the CPU has more: the benchmark's
/// same-instruction-set comparison with a llama.cpp built for AVX2.
static AVX2_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn limit_kernels_to_avx2(on: bool) {
    AVX2_ONLY.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The instruction set the decoder's product kernels use on this CPU.
pub fn kernel_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return if avx2::vnni() { "avx512-vnni" } else { "avx2" };
        }
    }
    "portable"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }
    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => QK,
        }
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
        }
    }
    pub fn row_bytes(self, values: u64) -> u64 {
        (values / self.block_size() as u64).saturating_mul(self.block_bytes() as u64)
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes `bytes` (whole blocks of `ty`) into `out` (one f32 per value).
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len() as u64, ty.row_bytes(out.len() as u64));
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        // Block formats: one decoder, QMatrix's.
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => {
            QMatrix::new(ty, 1, out.len(), bytes).dequantize_rows_into(0..1, out);
        }
    }
}

pub fn dequantize(ty: GgmlType, bytes: &[u8], values: usize) -> Vec<f32> {
    let mut out = vec![0.0; values];
    dequantize_into(ty, bytes, &mut out);
    out
}

/// One block of quantized activations (ggml's `block_q8_1`; `s` unused for `Q8_0`).
#[derive(Clone, Copy)]
pub(crate) struct Q8Block {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

impl Q8Block {
    pub(crate) const ZERO: Q8Block = Q8Block { d: 0.0, s: 0.0, qs: [0; QK] };
}

/// ggml's `quantize_row_q8_1` / `quantize_row_q8_0`: scale = max|x| / 127, values rounded to
/// nearest (ties to even), scale (and, for Q8_1, scale × Σq) stored as f16.
fn quantize_q8(x: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    out.resize(x.len() / QK, Q8Block::ZERO);
    quantize_q8_into(x, out);
}

/// `quantize_q8` into a preallocated slice (`x.len() / 32` blocks): the decoder's path, with
/// ggml's AVX2 quantization where the CPU has it (same values as the scalar loop, which the
/// tests check; the scalar loop's `round_ties_even` is a libm call per value on x86-64).
pub(crate) fn quantize_q8_into(x: &[f32], out: &mut [Q8Block]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above); `out` holds one block per 32 values.
            unsafe { avx2::quantize_q8(x, out) };
            return;
        }
    }
    quantize_q8_scalar(x, out);
}

fn quantize_q8_scalar(x: &[f32], out: &mut [Q8Block]) {
    for (chunk, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        // As ggml's AVX2 path: multiplier 127/max, round half to even.
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in o.qs.iter_mut().zip(chunk) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        o.d = f16::from_f32(d).to_f32();
        o.s = f16::from_f32(sum as f32 * d).to_f32();
    }
}

/// A weight matrix kept quantized: `rows` outputs, each a row of `cols` inputs. The ggml
/// blocks are split at load into their scales (f16 → f32, exact) and their packed quants, so
/// the product's inner loop reads 16 (Q4) or 32 (Q8) bytes of quants and a scale per block.
/// Float formats (F32/F16/BF16) are held as f32.
#[derive(Clone)]
pub struct QMatrix {
    /// Q4_0, Q4_1, Q8_0, or F32 for every float format.
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Per block: `d` (Q4_0, Q8_0) or `d, m` (Q4_1).
    scales: Vec<f32>,
    /// Per block: 16 bytes of nibbles (Q4_x), 32 signed bytes (Q8_0), or nothing.
    quants: Vec<u8>,
    /// F32 rows (float formats only).
    dense: Vec<f32>,
    /// For F16/BF16 weights: ggml multiplies them with activations rounded to the same
    /// format, and so does `matmul` (the f32 values of the weights are exact).
    act_format: Option<GgmlType>,
}

impl QMatrix {
    /// From `rows × cols` values stored as `ty` blocks (as in a GGUF tensor).
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Self {
        assert_eq!(data.len() as u64, ty.row_bytes((rows * cols) as u64), "QMatrix size");
        let (mut scales, mut quants, mut dense) = (Vec::new(), Vec::new(), Vec::new());
        let act_format = matches!(ty, GgmlType::F16 | GgmlType::BF16).then_some(ty);
        let ty = match ty {
            GgmlType::Q4_0 | GgmlType::Q8_0 => {
                let (bb, qb) = if ty == GgmlType::Q4_0 { (18, 16) } else { (34, 32) };
                for b in data.chunks_exact(bb) {
                    scales.push(h(b, 0));
                    quants.extend_from_slice(&b[2..2 + qb]);
                }
                ty
            }
            GgmlType::Q4_1 => {
                for b in data.chunks_exact(20) {
                    scales.push(h(b, 0));
                    scales.push(h(b, 2));
                    quants.extend_from_slice(&b[4..20]);
                }
                ty
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                dense = dequantize(ty, data, rows * cols);
                GgmlType::F32
            }
        };
        QMatrix { ty, rows, cols, scales, quants, dense, act_format }
    }

    /// Bytes held (scales as f32).
    pub fn bytes(&self) -> usize {
        self.scales.len() * 4 + self.quants.len() + self.dense.len() * 4
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / QK
    }
    fn scales_per_block(&self) -> usize {
        if self.ty == GgmlType::Q4_1 {
            2
        } else {
            1
        }
    }
    fn quant_bytes_per_block(&self) -> usize {
        if self.ty == GgmlType::Q8_0 {
            32
        } else {
            16
        }
    }

    /// Rows `range` as f32, row-major.
    pub fn dequantize_rows(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let mut out = vec![0.0f32; range.len() * self.cols];
        self.dequantize_rows_into(range, &mut out);
        out
    }

    pub fn dequantize_rows_into(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
        if self.ty == GgmlType::F32 {
            out.copy_from_slice(&self.dense[range.start * self.cols..range.end * self.cols]);
            return;
        }
        let (nb, sb, qb) = (self.blocks_per_row(), self.scales_per_block(), self.quant_bytes_per_block());
        for (bi, o) in (range.start * nb..range.end * nb).zip(out.chunks_exact_mut(QK)) {
            let s = &self.scales[bi * sb..(bi + 1) * sb];
            let q = &self.quants[bi * qb..(bi + 1) * qb];
            match self.ty {
                GgmlType::Q4_1 => {
                    for j in 0..16 {
                        o[j] = (q[j] & 0x0F) as f32 * s[0] + s[1];
                        o[j + 16] = (q[j] >> 4) as f32 * s[0] + s[1];
                    }
                }
                GgmlType::Q4_0 => {
                    for j in 0..16 {
                        o[j] = ((q[j] & 0x0F) as i32 - 8) as f32 * s[0];
                        o[j + 16] = ((q[j] >> 4) as i32 - 8) as f32 * s[0];
                    }
                }
                _ => {
                    for j in 0..QK {
                        o[j] = (q[j] as i8) as f32 * s[0];
                    }
                }
            }
        }
    }

    pub fn dequantize(&self) -> Vec<f32> {
        self.dequantize_rows(0..self.rows)
    }

    /// `dequantize` over the rayon pool.
    pub fn dequantize_par(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        let rows_per_task = 64;
        out.par_chunks_mut(rows_per_task * self.cols).enumerate().for_each(|(i, chunk)| {
            let r0 = i * rows_per_task;
            self.dequantize_rows_into(r0..r0 + chunk.len() / self.cols, chunk);
        });
        out
    }

    /// Stacks matrices of the same width (rows appended); mixed formats are stacked as f32.
    pub fn stack(parts: &[QMatrix]) -> QMatrix {
        let cols = parts[0].cols;
        assert!(parts.iter().all(|m| m.cols == cols), "stacked matrices share their width");
        let rows = parts.iter().map(|m| m.rows).sum();
        if parts.iter().all(|m| m.ty == parts[0].ty) {
            QMatrix {
                ty: parts[0].ty,
                rows,
                cols,
                scales: parts.iter().flat_map(|m| m.scales.iter().copied()).collect(),
                quants: parts.iter().flat_map(|m| m.quants.iter().copied()).collect(),
                dense: parts.iter().flat_map(|m| m.dense.iter().copied()).collect(),
                act_format: parts[0].act_format.filter(|_| parts.iter().all(|m| m.act_format == parts[0].act_format)),
            }
        } else {
            let dense = parts.iter().flat_map(|m| m.dequantize()).collect();
            QMatrix { ty: GgmlType::F32, rows, cols, scales: vec![], quants: vec![], dense, act_format: None }
        }
    }

    /// `out[t][r] = Σ_c W[r][c] · x[t][c]` for `n` activation rows `x` (row-major, n × cols);
    /// `out` is n × rows. Output rows are split over the rayon pool; each weight row is read
    /// once for all `n` activation rows.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.cols);
        assert_eq!(out.len(), n * self.rows);
        let blocks = self.blocks_per_row();
        let rounded: Vec<f32>;
        let x = match self.act_format {
            Some(GgmlType::F16) => {
                rounded = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
                &rounded[..]
            }
            Some(GgmlType::BF16) => {
                rounded = x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
                &rounded[..]
            }
            _ => x,
        };
        let mut act = Vec::new();
        if self.ty != GgmlType::F32 {
            let mut row = Vec::with_capacity(blocks);
            for t in 0..n {
                quantize_q8(&x[t * self.cols..(t + 1) * self.cols], &mut row);
                act.extend_from_slice(&row);
            }
        }
        let rows_per_task = (16384 / n.max(1)).clamp(8, 256);
        // Row-major over weights (rows × n), transposed at the end: each task writes a
        // contiguous slice.
        let mut tmp = vec![0.0f32; self.rows * n];
        let (sb, qb) = (self.scales_per_block(), self.quant_bytes_per_block());
        tmp.par_chunks_mut(rows_per_task * n).enumerate().for_each(|(i, chunk)| {
            let r0 = i * rows_per_task;
            for (k, o) in chunk.chunks_exact_mut(n).enumerate() {
                let r = r0 + k;
                if self.ty == GgmlType::F32 {
                    let w = &self.dense[r * self.cols..(r + 1) * self.cols];
                    for (t, o) in o.iter_mut().enumerate() {
                        *o = w.iter().zip(&x[t * self.cols..(t + 1) * self.cols]).map(|(a, b)| a * b).sum();
                    }
                    continue;
                }
                let s = &self.scales[r * blocks * sb..(r + 1) * blocks * sb];
                let q = &self.quants[r * blocks * qb..(r + 1) * blocks * qb];
                // Four activation rows per pass over the weight row (prompt processing):
                // the weights are unpacked once for all four.
                let mut t = 0;
                while t + 4 <= n {
                    let rows4 = [0, 1, 2, 3].map(|k| &act[(t + k) * blocks..(t + k + 1) * blocks]);
                    o[t..t + 4].copy_from_slice(&dot_row4(self.ty, s, q, rows4));
                    t += 4;
                }
                for (t, o) in o.iter_mut().enumerate().skip(t) {
                    *o = dot_row(self.ty, s, q, &act[t * blocks..(t + 1) * blocks]);
                }
            }
        });
        transpose_into(&tmp, self.rows, n, out);
    }
}

impl QMatrix {
    /// The decoder's product for one token: `out[i] (+)= W[rows.start + i] · x` for the rows
    /// in `rows`. Block formats read `a`, the activations `x` already quantized by
    /// `quantize_q8_into`: four rows per pass share each activation block load, and each row
    /// sums in the same order as `matmul` (and ggml), so the two agree bit for bit. Float
    /// formats read `x` (rounded to F16/BF16 for such weights, as `matmul` does).
    /// `accumulate` adds into `out` (a residual connection) instead of overwriting it.
    pub(crate) fn rows_dot(
        &self,
        rows: std::ops::Range<usize>,
        a: &[Q8Block],
        x: &[f32],
        out: &mut [f32],
        accumulate: bool,
    ) {
        debug_assert!(rows.end <= self.rows && out.len() == rows.len() && x.len() == self.cols);
        let mut put = |i: usize, v: f32| {
            if accumulate {
                out[i] += v
            } else {
                out[i] = v
            }
        };
        if self.ty == GgmlType::F32 {
            let round = |v: f32| match self.act_format {
                Some(GgmlType::F16) => f16::from_f32(v).to_f32(),
                Some(GgmlType::BF16) => half::bf16::from_f32(v).to_f32(),
                _ => v,
            };
            for r in rows.clone() {
                let w = &self.dense[r * self.cols..(r + 1) * self.cols];
                put(r - rows.start, w.iter().zip(x).map(|(w, &x)| w * round(x)).sum());
            }
            return;
        }
        let blocks = self.blocks_per_row();
        debug_assert_eq!(a.len(), blocks);
        let (sb, qb) = (self.scales_per_block(), self.quant_bytes_per_block());
        let row = |r: usize| {
            (&self.scales[r * blocks * sb..(r + 1) * blocks * sb], &self.quants[r * blocks * qb..(r + 1) * blocks * qb])
        };
        let mut r = rows.start;
        #[cfg(target_arch = "x86_64")]
        {
            let kernel = avx2::rows4_kernel(self.ty);
            if let Some(kernel) = kernel {
                while r + 4 <= rows.end {
                    let rs = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                    // SAFETY: `rows4_kernel` returned a kernel only for a CPU with the
                    // features it needs; each row holds `blocks` blocks of this format.
                    let v = unsafe { kernel(rs.map(|x| x.0), rs.map(|x| x.1), a) };
                    for (k, v) in v.into_iter().enumerate() {
                        put(r - rows.start + k, v);
                    }
                    r += 4;
                }
            }
        }
        while r < rows.end {
            let (s, q) = row(r);
            put(r - rows.start, dot_row(self.ty, s, q, a));
            r += 1;
        }
    }

    /// `rows_dot` for two activation rows (`a[t]`, `x[t]` → `out[t]`): each weight block
    /// is read and unpacked once for both, where two `rows_dot` calls do it twice. The
    /// results are those of two `rows_dot` calls, bit for bit (tested).
    pub(crate) fn rows_dot2(
        &self,
        rows: std::ops::Range<usize>,
        a: [&[Q8Block]; 2],
        x: [&[f32]; 2],
        out: [&mut [f32]; 2],
        accumulate: bool,
    ) {
        let [out0, out1] = out;
        let mut r = rows.start;
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(kernel) = avx2::rows4x2_kernel(self.ty) {
                let blocks = self.blocks_per_row();
                // The kernels index scales and quants by the activation blocks, unchecked.
                assert!(a[0].len() == blocks && a[1].len() == blocks, "activation rows of {blocks} blocks");
                let (sb, qb) = (self.scales_per_block(), self.quant_bytes_per_block());
                let row = |r: usize| {
                    (
                        &self.scales[r * blocks * sb..(r + 1) * blocks * sb],
                        &self.quants[r * blocks * qb..(r + 1) * blocks * qb],
                    )
                };
                while r + 4 <= rows.end {
                    let rs = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                    // SAFETY: `rows4x2_kernel` returned a kernel only for a CPU with the
                    // features it needs; each row holds `blocks` blocks of this format, and
                    // so does each activation row.
                    let v = unsafe { kernel(rs.map(|x| x.0), rs.map(|x| x.1), a[0], a[1]) };
                    for (out, v) in [&mut *out0, &mut *out1].into_iter().zip(v) {
                        for (k, v) in v.into_iter().enumerate() {
                            let o = &mut out[r - rows.start + k];
                            *o = if accumulate { *o + v } else { v };
                        }
                    }
                    r += 4;
                }
            }
        }
        let done = r - rows.start;
        self.rows_dot(r..rows.end, a[0], x[0], &mut out0[done..], accumulate);
        self.rows_dot(r..rows.end, a[1], x[1], &mut out1[done..], accumulate);
    }
}

fn transpose_into(src: &[f32], rows: usize, n: usize, out: &mut [f32]) {
    if n == 1 {
        out.copy_from_slice(src);
        return;
    }
    for r in 0..rows {
        for t in 0..n {
            out[t * rows + r] = src[r * n + t];
        }
    }
}

/// One output: the dot product of a weight row (its block scales and quants) with the
/// quantized activations.
fn dot_row(ty: GgmlType, scales: &[f32], quants: &[u8], a: &[Q8Block]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            match ty {
                // SAFETY: the CPU has AVX2 and FMA (checked above); the slices hold one
                // scale pair / 16 quant bytes (Q4_1) or one scale / 32 bytes (Q8_0) per block
                // of `a`, as QMatrix lays them out.
                GgmlType::Q4_1 => return unsafe { avx2::dot_q4_1(scales, quants, a) },
                GgmlType::Q8_0 => return unsafe { avx2::dot_q8_0(scales, quants, a) },
                _ => {}
            }
        }
    }
    dot_row_generic(ty, scales, quants, a)
}

/// `dot_row` for four activation rows at once (same results as four `dot_row` calls).
fn dot_row4(ty: GgmlType, scales: &[f32], quants: &[u8], a: [&[Q8Block]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if ty == GgmlType::Q4_1 && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as in `dot_row`.
            return unsafe { avx2::dot_q4_1_x4(scales, quants, a) };
        }
    }
    a.map(|a| dot_row(ty, scales, quants, a))
}

fn dot_row_generic(ty: GgmlType, scales: &[f32], quants: &[u8], a: &[Q8Block]) -> f32 {
    let mut sum = 0.0f32;
    match ty {
        GgmlType::Q4_1 => {
            for ((s, qs), q) in scales.chunks_exact(2).zip(quants.chunks_exact(16)).zip(a) {
                let mut si = 0i32;
                for j in 0..16 {
                    si += (qs[j] & 0x0F) as i32 * q.qs[j] as i32 + (qs[j] >> 4) as i32 * q.qs[j + 16] as i32;
                }
                sum += s[0] * q.d * si as f32 + s[1] * q.s;
            }
        }
        GgmlType::Q4_0 => {
            for ((d, qs), q) in scales.iter().zip(quants.chunks_exact(16)).zip(a) {
                let mut si = 0i32;
                for j in 0..16 {
                    si +=
                        ((qs[j] & 0x0F) as i32 - 8) * q.qs[j] as i32 + ((qs[j] >> 4) as i32 - 8) * q.qs[j + 16] as i32;
                }
                sum += d * q.d * si as f32;
            }
        }
        GgmlType::Q8_0 => {
            for ((d, qs), q) in scales.iter().zip(quants.chunks_exact(32)).zip(a) {
                let mut si = 0i32;
                for j in 0..QK {
                    si += (qs[j] as i8) as i32 * q.qs[j] as i32;
                }
                sum += d * q.d * si as f32;
            }
        }
        _ => unreachable!("float formats take the f32 path"),
    }
    sum
}

/// ggml's AVX2 dot products, instruction for instruction (so the float sums round alike):
/// per block an integer dot product in 8 lanes, scaled into an f32 accumulator by fused
/// multiply-add, a horizontal sum at the end (and the Q4_1 min term summed apart).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::Q8Block;
    use std::arch::x86_64::*;

    /// The sum of 8 lanes, in ggml's order (`hsum_float_8`).
    #[inline(always)]
    pub(crate) unsafe fn hsum(x: __m256) -> f32 {
        let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(scales: &[f32], quants: &[u8], a: &[Q8Block]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for (i, q) in a.iter().enumerate() {
            summs += scales[2 * i + 1] * q.s;
            let d0d1 = _mm256_set1_ps(scales[2 * i] * q.d);
            let raw = _mm_loadu_si128(quants.as_ptr().add(16 * i) as *const __m128i);
            let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
            let qy = _mm256_loadu_si256(q.qs.as_ptr() as *const __m256i);
            let xy = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones));
            acc = _mm256_fmadd_ps(d0d1, xy, acc);
        }
        hsum(acc) + summs
    }

    /// `dot_q4_1` for four activation rows: each accumulates exactly as `dot_q4_1` does.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1_x4(scales: &[f32], quants: &[u8], a: [&[Q8Block]; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut summs = [0.0f32; 4];
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for i in 0..a[0].len() {
            let raw = _mm_loadu_si128(quants.as_ptr().add(16 * i) as *const __m128i);
            let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
            let (d0, m0) = (scales[2 * i], scales[2 * i + 1]);
            for t in 0..4 {
                let q = &a[t][i];
                summs[t] += m0 * q.s;
                let qy = _mm256_loadu_si256(q.qs.as_ptr() as *const __m256i);
                let xy = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * q.d), xy, acc[t]);
            }
        }
        [0, 1, 2, 3].map(|t| hsum(acc[t]) + summs[t])
    }

    pub fn vnni() -> bool {
        is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && !super::AVX2_ONLY.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A four-row kernel: rows' scales, rows' quants, the activation blocks.
    pub type Rows4 = unsafe fn([&[f32]; 4], [&[u8]; 4], &[Q8Block]) -> [f32; 4];

    /// The fastest four-row kernel this CPU runs for `ty`: AVX-512 VNNI's `vpdpbusd` where
    /// present (one instruction for ggml's `maddubs` + `madd`; no int16 saturation can occur
    /// with these operands, so the integer sums are the same), else AVX2.
    pub fn rows4_kernel(ty: super::GgmlType) -> Option<Rows4> {
        use super::GgmlType;
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        match (ty, vnni()) {
            (GgmlType::Q4_1, true) => Some(q4_1_rows4_vnni),
            (GgmlType::Q4_1, false) => Some(q4_1_rows4),
            (GgmlType::Q8_0, true) => Some(q8_0_rows4_vnni),
            (GgmlType::Q8_0, false) => Some(q8_0_rows4),
            _ => None,
        }
    }

    /// (unsigned x, signed y) → 8 lanes of i32 sums of four products.
    macro_rules! dot8 {
        (avx2, $x:expr, $y:expr) => {
            _mm256_madd_epi16(_mm256_maddubs_epi16($x, $y), _mm256_set1_epi16(1))
        };
        (vnni, $x:expr, $y:expr) => {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), $x, $y)
        };
    }

    /// The body of the four-row kernels, with `dot8!($isa, ..)` as the integer product.
    macro_rules! rows4 {
        (q4_1, $scales:ident, $quants:ident, $a:ident, $isa:tt) => {{
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summs = [0.0f32; 4];
            let low = _mm256_set1_epi8(0x0F);
            for (i, q) in $a.iter().enumerate() {
                let qy = _mm256_loadu_si256(q.qs.as_ptr() as *const __m256i);
                for k in 0..4 {
                    summs[k] += $scales[k][2 * i + 1] * q.s;
                    let raw = _mm_loadu_si128($quants[k].as_ptr().add(16 * i) as *const __m128i);
                    let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
                    let xy = _mm256_cvtepi32_ps(dot8!($isa, qx, qy));
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps($scales[k][2 * i] * q.d), xy, acc[k]);
                }
            }
            [hsum(acc[0]) + summs[0], hsum(acc[1]) + summs[1], hsum(acc[2]) + summs[2], hsum(acc[3]) + summs[3]]
        }};
        (q8_0, $scales:ident, $quants:ident, $a:ident, $isa:tt) => {{
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, q) in $a.iter().enumerate() {
                let qy = _mm256_loadu_si256(q.qs.as_ptr() as *const __m256i);
                for k in 0..4 {
                    let qx = _mm256_loadu_si256($quants[k].as_ptr().add(32 * i) as *const __m256i);
                    let ax = _mm256_sign_epi8(qx, qx);
                    let sy = _mm256_sign_epi8(qy, qx);
                    let xy = _mm256_cvtepi32_ps(dot8!($isa, ax, sy));
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps($scales[k][i] * q.d), xy, acc[k]);
                }
            }
            [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
        }};
    }

    /// Two activation rows through the four-row kernel at once: each weight block is loaded
    /// and unpacked once for both, and each (row, activation row) pair accumulates exactly
    /// as `rows4!` does, so the sums are the same, bit for bit.
    macro_rules! rows4x2 {
        (q4_1, $scales:ident, $quants:ident, $a:ident, $b:ident, $isa:tt) => {{
            // Two flat accumulator arrays, unrolled: kept in registers (a nested array with
            // closures over it was spilled to the stack on every block).
            let (mut acc_a, mut acc_b) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
            let (mut summs_a, mut summs_b) = ([0.0f32; 4], [0.0f32; 4]);
            let low = _mm256_set1_epi8(0x0F);
            for (qa, qb) in $a.iter().zip($b) {
                let i = (qa as *const Q8Block).offset_from($a.as_ptr()) as usize;
                let ya = _mm256_loadu_si256(qa.qs.as_ptr() as *const __m256i);
                let yb = _mm256_loadu_si256(qb.qs.as_ptr() as *const __m256i);
                for k in 0..4 {
                    let m = *$scales[k].get_unchecked(2 * i + 1);
                    summs_a[k] += m * qa.s;
                    summs_b[k] += m * qb.s;
                    let raw = _mm_loadu_si128($quants[k].as_ptr().add(16 * i) as *const __m128i);
                    let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
                    let d = *$scales[k].get_unchecked(2 * i);
                    let xa = _mm256_cvtepi32_ps(dot8!($isa, qx, ya));
                    acc_a[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * qa.d), xa, acc_a[k]);
                    let xb = _mm256_cvtepi32_ps(dot8!($isa, qx, yb));
                    acc_b[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * qb.d), xb, acc_b[k]);
                }
            }
            [
                [
                    hsum(acc_a[0]) + summs_a[0],
                    hsum(acc_a[1]) + summs_a[1],
                    hsum(acc_a[2]) + summs_a[2],
                    hsum(acc_a[3]) + summs_a[3],
                ],
                [
                    hsum(acc_b[0]) + summs_b[0],
                    hsum(acc_b[1]) + summs_b[1],
                    hsum(acc_b[2]) + summs_b[2],
                    hsum(acc_b[3]) + summs_b[3],
                ],
            ]
        }};
        (q8_0, $scales:ident, $quants:ident, $a:ident, $b:ident, $isa:tt) => {{
            let (mut acc_a, mut acc_b) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
            for (qa, qb) in $a.iter().zip($b) {
                let i = (qa as *const Q8Block).offset_from($a.as_ptr()) as usize;
                let ya = _mm256_loadu_si256(qa.qs.as_ptr() as *const __m256i);
                let yb = _mm256_loadu_si256(qb.qs.as_ptr() as *const __m256i);
                for k in 0..4 {
                    let qx = _mm256_loadu_si256($quants[k].as_ptr().add(32 * i) as *const __m256i);
                    let ax = _mm256_sign_epi8(qx, qx);
                    let d = *$scales[k].get_unchecked(i);
                    let xa = _mm256_cvtepi32_ps(dot8!($isa, ax, _mm256_sign_epi8(ya, qx)));
                    acc_a[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * qa.d), xa, acc_a[k]);
                    let xb = _mm256_cvtepi32_ps(dot8!($isa, ax, _mm256_sign_epi8(yb, qx)));
                    acc_b[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * qb.d), xb, acc_b[k]);
                }
            }
            [
                [hsum(acc_a[0]), hsum(acc_a[1]), hsum(acc_a[2]), hsum(acc_a[3])],
                [hsum(acc_b[0]), hsum(acc_b[1]), hsum(acc_b[2]), hsum(acc_b[3])],
            ]
        }};
    }

    /// A four-row kernel over two activation rows: rows' scales, rows' quants, the two
    /// rows' activation blocks; the sums per activation row.
    pub type Rows4x2 = unsafe fn([&[f32]; 4], [&[u8]; 4], &[Q8Block], &[Q8Block]) -> [[f32; 4]; 2];

    /// `rows4_kernel`'s choice, for two activation rows at once.
    pub fn rows4x2_kernel(ty: super::GgmlType) -> Option<Rows4x2> {
        use super::GgmlType;
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        match (ty, vnni()) {
            (GgmlType::Q4_1, true) => Some(q4_1_rows4x2_vnni),
            (GgmlType::Q4_1, false) => Some(q4_1_rows4x2),
            (GgmlType::Q8_0, true) => Some(q8_0_rows4x2_vnni),
            (GgmlType::Q8_0, false) => Some(q8_0_rows4x2),
            _ => None,
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_1_rows4x2(scales: [&[f32]; 4], quants: [&[u8]; 4], a: &[Q8Block], b: &[Q8Block]) -> [[f32; 4]; 2] {
        rows4x2!(q4_1, scales, quants, a, b, avx2)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0_rows4x2(scales: [&[f32]; 4], quants: [&[u8]; 4], a: &[Q8Block], b: &[Q8Block]) -> [[f32; 4]; 2] {
        rows4x2!(q8_0, scales, quants, a, b, avx2)
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    unsafe fn q4_1_rows4x2_vnni(
        scales: [&[f32]; 4],
        quants: [&[u8]; 4],
        a: &[Q8Block],
        b: &[Q8Block],
    ) -> [[f32; 4]; 2] {
        rows4x2!(q4_1, scales, quants, a, b, vnni)
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    unsafe fn q8_0_rows4x2_vnni(
        scales: [&[f32]; 4],
        quants: [&[u8]; 4],
        a: &[Q8Block],
        b: &[Q8Block],
    ) -> [[f32; 4]; 2] {
        rows4x2!(q8_0, scales, quants, a, b, vnni)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_1_rows4(scales: [&[f32]; 4], quants: [&[u8]; 4], a: &[Q8Block]) -> [f32; 4] {
        rows4!(q4_1, scales, quants, a, avx2)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0_rows4(scales: [&[f32]; 4], quants: [&[u8]; 4], a: &[Q8Block]) -> [f32; 4] {
        rows4!(q8_0, scales, quants, a, avx2)
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    unsafe fn q4_1_rows4_vnni(scales: [&[f32]; 4], quants: [&[u8]; 4], a: &[Q8Block]) -> [f32; 4] {
        rows4!(q4_1, scales, quants, a, vnni)
    }

    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    unsafe fn q8_0_rows4_vnni(scales: [&[f32]; 4], quants: [&[u8]; 4], a: &[Q8Block]) -> [f32; 4] {
        rows4!(q8_0, scales, quants, a, vnni)
    }

    /// ggml's AVX2 `quantize_row_q8_1`: the same maximum, multiplier, rounding (to nearest
    /// even) and sum as `quantize_q8_scalar`, eight values per instruction.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_q8(x: &[f32], out: &mut [Q8Block]) {
        let sign = _mm256_set1_ps(-0.0);
        for (chunk, o) in x.chunks_exact(super::QK).zip(out.iter_mut()) {
            let p = chunk.as_ptr();
            let v =
                [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
            let m = _mm256_max_ps(
                _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
            );
            let mut m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let i = [
                _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[0], id), NEAREST)),
                _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[1], id), NEAREST)),
                _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[2], id), NEAREST)),
                _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[3], id), NEAREST)),
            ];
            let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
            let mut s4 = _mm_add_epi32(_mm256_extracti128_si256(sum, 1), _mm256_castsi256_si128(sum));
            s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01));
            let total = _mm_cvtsi128_si32(s4);
            // Pack 4 × 8 i32 into 32 i8 (packs interleave 128-bit lanes; the permute undoes it).
            let p16a = _mm256_packs_epi32(i[0], i[1]);
            let p16b = _mm256_packs_epi32(i[2], i[3]);
            let p8 = _mm256_packs_epi16(p16a, p16b);
            let ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(o.qs.as_mut_ptr() as *mut __m256i, ordered);
            o.d = half::f16::from_f32(d).to_f32();
            o.s = half::f16::from_f32(total as f32 * d).to_f32();
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(scales: &[f32], quants: &[u8], a: &[Q8Block]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let ones = _mm256_set1_epi16(1);
        for (i, q) in a.iter().enumerate() {
            let d = _mm256_set1_ps(scales[i] * q.d);
            let qx = _mm256_loadu_si256(quants.as_ptr().add(32 * i) as *const __m256i);
            let qy = _mm256_loadu_si256(q.qs.as_ptr() as *const __m256i);
            // maddubs needs an unsigned operand: |x| and y carrying x's sign.
            let ax = _mm256_sign_epi8(qx, qx);
            let sy = _mm256_sign_epi8(qy, qx);
            let xy = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones));
            acc = _mm256_fmadd_ps(d, xy, acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_block_dequantizes_to_scale_times_nibble_plus_min() {
        // d = 0.5, m = -1; nibble j (low) = j, high nibble = 15 - j.
        let mut b = Vec::new();
        b.extend(f16b(0.5));
        b.extend(f16b(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let v = dequantize(GgmlType::Q4_1, &b, 32);
        for j in 0..16 {
            assert_eq!(v[j], j as f32 * 0.5 - 1.0);
            assert_eq!(v[16 + j], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q8_0_and_q4_0_blocks_dequantize() {
        let mut b = Vec::new();
        b.extend(f16b(0.25));
        for j in 0..32i8 {
            b.push((j - 16) as u8);
        }
        let v = dequantize(GgmlType::Q8_0, &b, 32);
        for j in 0..32 {
            assert_eq!(v[j], (j as f32 - 16.0) * 0.25);
        }
        let mut b = Vec::new();
        b.extend(f16b(2.0));
        b.extend([0x10u8; 16]); // low nibble 0 → -8, high nibble 1 → -7
        let v = dequantize(GgmlType::Q4_0, &b, 32);
        assert!(v[..16].iter().all(|&x| x == -16.0) && v[16..].iter().all(|&x| x == -14.0));
    }

    #[test]
    fn f16_and_bf16_dequantize() {
        let b: Vec<u8> = [1.5f32, -2.25].iter().flat_map(|&v| f16b(v)).collect();
        assert_eq!(dequantize(GgmlType::F16, &b, 2), vec![1.5, -2.25]);
        let b: Vec<u8> = [3.0f32, -0.5].iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::BF16, &b, 2), vec![3.0, -0.5]);
    }

    /// The quantized product agrees with the dequantized f32 product to within the error of
    /// The decoder's SIMD quantization gives the scalar loop's blocks exactly: ties to even,
    /// zeros, a block holding one large value, the sum term.
    #[test]
    fn simd_activation_quantization_equals_the_scalar_loop() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut x: Vec<f32> = (0..QK * 40).map(|_| rng.gen_range(-3.0..3.0)).collect();
        x[..QK].fill(0.0);
        x[QK..2 * QK].iter_mut().enumerate().for_each(|(i, v)| *v = (i as f32 - 16.0) * 0.5); // .5 ties
        x[2 * QK + 7] = 1e4;
        let (mut simd, mut scalar) = (vec![Q8Block::ZERO; 40], vec![Q8Block::ZERO; 40]);
        quantize_q8_into(&x, &mut simd);
        quantize_q8_scalar(&x, &mut scalar);
        for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
            assert_eq!((a.d.to_bits(), a.s.to_bits(), a.qs), (b.d.to_bits(), b.s.to_bits(), b.qs), "block {i}");
        }
    }

    /// The decoder's row-range product equals `matmul` bit for bit (four-row kernels, odd
    /// ranges, float formats, and accumulation into the output).
    #[test]
    fn row_range_products_equal_matmul_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (rows, cols) = (45, 128);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16, GgmlType::F32] {
            let bytes: Vec<u8> = (0..ty.row_bytes((rows * cols) as u64))
                // Small finite scales (and Q4_1 minimums), random payload.
                .map(|i| match (ty, i as usize % ty.block_bytes()) {
                    (GgmlType::F32, 3) => 0x3c,
                    (GgmlType::F16, 1) => 0x3c - (rng.gen::<u8>() % 8),
                    (GgmlType::F32 | GgmlType::F16, _) => rng.gen(),
                    (_, 1) => 0x20,
                    (GgmlType::Q4_1, 3) => 0xa0,
                    _ => rng.gen(),
                })
                .collect();
            let m = QMatrix::new(ty, rows, cols, &bytes);
            let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut reference = vec![0.0; rows];
            m.matmul(&x, 1, &mut reference);
            let mut act = vec![Q8Block::ZERO; cols / QK];
            quantize_q8_into(&x, &mut act);
            for range in [0..rows, 3..22, 40..45, 7..7] {
                let mut out = vec![0.0; range.len()];
                m.rows_dot(range.clone(), &act, &x, &mut out, false);
                assert_eq!(out, reference[range.clone()], "{ty:?} {range:?}");
                let mut acc = vec![1.5; range.len()];
                m.rows_dot(range.clone(), &act, &x, &mut acc, true);
                let expected: Vec<f32> = reference[range.clone()].iter().map(|v| 1.5 + v).collect();
                assert_eq!(acc, expected, "{ty:?} {range:?} accumulated");
            }
        }
    }

    /// 8-bit activations, for every block format and for several activation rows at once.
    #[test]
    fn two_activation_rows_at_once_equal_two_row_products_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let (rows, cols) = (45, 256);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F32] {
            let bytes: Vec<u8> = (0..ty.row_bytes((rows * cols) as u64))
                .map(|i| match (ty, i as usize % ty.block_bytes()) {
                    (GgmlType::F32, 3) => 0x3c,
                    (GgmlType::F32, _) => rng.gen(),
                    (_, 1) => 0x20,
                    (GgmlType::Q4_1, 3) => 0xa0,
                    _ => rng.gen(),
                })
                .collect();
            let m = QMatrix::new(ty, rows, cols, &bytes);
            let xs: Vec<Vec<f32>> = (0..2).map(|_| (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
            let acts: Vec<Vec<Q8Block>> = xs
                .iter()
                .map(|x| {
                    let mut a = vec![Q8Block::ZERO; cols / QK];
                    quantize_q8_into(x, &mut a);
                    a
                })
                .collect();
            for avx2_only in [false, true] {
                limit_kernels_to_avx2(avx2_only);
                for range in [0..rows, 3..22, 40..45, 7..7, 4..8] {
                    for accumulate in [false, true] {
                        let (mut one, mut two) = (vec![vec![0.5; range.len()]; 2], vec![vec![0.5; range.len()]; 2]);
                        for t in 0..2 {
                            m.rows_dot(range.clone(), &acts[t], &xs[t], &mut one[t], accumulate);
                        }
                        let [t0, t1] = &mut two[..] else { unreachable!() };
                        m.rows_dot2(range.clone(), [&acts[0], &acts[1]], [&xs[0], &xs[1]], [t0, t1], accumulate);
                        let bits = |v: &Vec<Vec<f32>>| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&one), bits(&two), "{ty:?} {range:?} accumulate {accumulate} avx2 {avx2_only}");
                    }
                }
            }
            limit_kernels_to_avx2(false);
        }
    }

    #[test]
    fn quantized_matmul_matches_dequantized_reference() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (rows, cols, n) = (37, 96, 6);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16, GgmlType::F32] {
            let bytes: Vec<u8> = (0..ty.row_bytes((rows * cols) as u64))
                .map(|i| {
                    let bb = ty.block_bytes();
                    // Keep scale fields small and finite; random payload.
                    let in_block = i as usize % bb;
                    match ty {
                        GgmlType::F32 if in_block == 3 => 0x3c,
                        GgmlType::F16 if in_block == 1 => 0x3c - (rng.gen::<u8>() % 8),
                        GgmlType::Q4_0 | GgmlType::Q8_0 if in_block == 1 => 0x20,
                        GgmlType::Q4_1 if in_block == 1 => 0x20,
                        GgmlType::Q4_1 if in_block == 3 => 0xa0,
                        _ => rng.gen(),
                    }
                })
                .collect();
            let m = QMatrix::new(ty, rows, cols, &bytes);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut out = vec![0.0; n * rows];
            m.matmul(&x, n, &mut out);
            // A batch gives bit for bit what one row at a time gives (prompt processing and
            // decoding agree).
            for t in 0..n {
                let mut one = vec![0.0; rows];
                m.matmul(&x[t * cols..(t + 1) * cols], 1, &mut one);
                assert_eq!(one, out[t * rows..(t + 1) * rows], "{ty:?} row {t}");
            }
            let w = m.dequantize();
            for t in 0..n {
                for r in 0..rows {
                    let exact: f32 = (0..cols).map(|c| w[r * cols + c] * x[t * cols + c]).sum();
                    let scale: f32 = (0..cols).map(|c| (w[r * cols + c] * x[t * cols + c]).abs()).sum();
                    let err = (out[t * rows + r] - exact).abs();
                    assert!(err <= 0.02 * scale + 1e-4, "{ty:?} t{t} r{r}: {} vs {exact}", out[t * rows + r]);
                }
            }
        }
    }
}
