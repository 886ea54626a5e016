//! The camera object detector: a CenterNet-style, anchor-free network on a small strided
//! convolutional backbone with a two-level top-down neck, chosen for edge latency.
//!
//! Output at stride 4: a per-class centre heat map (person, vehicle, obstacle), a sub-cell
//! offset of the centre and the box size as ln(pixels / stride). Decoding is a 3×3 local
//! maximum over the heat map (the "NMS" of CenterNet) — no anchors, no box NMS.
use crate::efficientnet::{self, EfficientNetLite0};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use fusion::detect::{Detection2d, Label};

/// Classes in heat-map channel order.
pub const CLASSES: [Label; 3] = [Label::Person, Label::Vehicle, Label::Obstacle];
/// Output stride of the heat map and regression maps.
pub const STRIDE: usize = 4;
/// Input sides must be multiples of this (the deepest level is 1/16).
pub const SIZE_MULTIPLE: usize = 16;

/// The feature extractor under the neck and head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Backbone {
    /// Four strided conv levels trained from scratch on our frames (`widths`).
    Small,
    /// EfficientNet-Lite0 blocks 0–10 with ImageNet weights, kept frozen in training
    /// (see [`crate::efficientnet`]); `widths[1..]` are the neck's level widths.
    EfficientnetLite0,
}

#[derive(Config, Debug)]
pub struct DetectorConfig {
    #[config(default = "Backbone::Small")]
    pub backbone: Backbone,
    /// Channels of the four backbone levels (1/2, 1/4, 1/8, 1/16).
    #[config(default = "[16, 32, 64, 96]")]
    pub widths: [usize; 4],
    /// Channels of the shared head convolution.
    #[config(default = 32)]
    pub head_width: usize,
    #[config(default = 3)]
    pub num_classes: usize,
}

/// 3×3 (or 1×1) convolution, batch norm, ReLU.
#[derive(Module, Debug)]
pub struct ConvBnRelu {
    conv: Conv2d,
    norm: BatchNorm,
    activation: Relu,
}

impl ConvBnRelu {
    fn new(device: &Device, channels: [usize; 2], kernel: usize, stride: usize) -> Self {
        let pad = kernel / 2;
        Self {
            conv: Conv2dConfig::new(channels, [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(channels[1]).init(device),
            activation: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.activation.forward(self.norm.forward(self.conv.forward(x)))
    }
}

#[derive(Module, Debug)]
pub struct Detector {
    /// The small backbone (absent with a pretrained one). Separate fields, not a struct, so
    /// weights saved before there was a choice load unchanged.
    stem: Option<ConvBnRelu>,
    down4: Option<ConvBnRelu>,
    level4: Option<ConvBnRelu>,
    down8: Option<ConvBnRelu>,
    level8: Option<ConvBnRelu>,
    down16: Option<ConvBnRelu>,
    level16: Option<ConvBnRelu>,
    /// A pretrained backbone and the 1×1 adapters of its levels to the neck's widths.
    pretrained: Option<EfficientNetLite0>,
    adapt4: Option<Conv2d>,
    adapt8: Option<Conv2d>,
    adapt16: Option<Conv2d>,
    /// Top-down neck: 1×1 lateral projections, then a 3×3 merge per level.
    lateral16: Conv2d,
    merge8: ConvBnRelu,
    lateral8: Conv2d,
    merge4: ConvBnRelu,
    head: ConvBnRelu,
    heatmap: Conv2d,
    offset: Conv2d,
    size: Conv2d,
}

/// Raw network outputs at stride 4.
pub struct DetectorOutput {
    /// [batch, classes, h/4, w/4] logits.
    pub heatmap: Tensor<4>,
    /// [batch, 2, h/4, w/4]: centre offset within the cell (x, y), in cells.
    pub offset: Tensor<4>,
    /// [batch, 2, h/4, w/4]: ln(width / 4), ln(height / 4).
    pub size: Tensor<4>,
}

impl DetectorConfig {
    pub fn init(&self, device: &Device) -> Detector {
        let [c1, c2, c4, c8] = self.widths;
        let h = self.head_width;
        let conv1 = |i: usize, o: usize| Conv2dConfig::new([i, o], [1, 1]).init(device);
        let mut heatmap = conv1(h, self.num_classes);
        // Focal-loss prior: start every location at p = 0.1 so early training is not
        // swamped by the background (CenterNet's -2.19 bias).
        heatmap.bias = heatmap.bias.map(|b| b.map(|t| t.ones_like().mul_scalar(-2.19)));
        let small = self.backbone == Backbone::Small;
        let pretrained = self.backbone == Backbone::EfficientnetLite0;
        let [e4, e8, e16] = efficientnet::LEVEL_CHANNELS;
        Detector {
            stem: small.then(|| ConvBnRelu::new(device, [3, c1], 3, 2)),
            down4: small.then(|| ConvBnRelu::new(device, [c1, c2], 3, 2)),
            level4: small.then(|| ConvBnRelu::new(device, [c2, c2], 3, 1)),
            down8: small.then(|| ConvBnRelu::new(device, [c2, c4], 3, 2)),
            level8: small.then(|| ConvBnRelu::new(device, [c4, c4], 3, 1)),
            down16: small.then(|| ConvBnRelu::new(device, [c4, c8], 3, 2)),
            level16: small.then(|| ConvBnRelu::new(device, [c8, c8], 3, 1)),
            pretrained: pretrained.then(|| EfficientNetLite0::new(device)),
            adapt4: pretrained.then(|| conv1(e4, c2)),
            adapt8: pretrained.then(|| conv1(e8, c4)),
            adapt16: pretrained.then(|| conv1(e16, c8)),
            lateral16: conv1(c8, c4),
            merge8: ConvBnRelu::new(device, [c4, c4], 3, 1),
            lateral8: conv1(c4, c2),
            merge4: ConvBnRelu::new(device, [c2, h], 3, 1),
            head: ConvBnRelu::new(device, [h, h], 3, 1),
            heatmap,
            offset: conv1(h, 2),
            size: conv1(h, 2),
        }
    }
}

fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h * 2, w * 2]))
}

impl Detector {
    /// `input`: [batch, 3, h, w], normalized (see [`normalize`]); h and w multiples of 16.
    pub fn forward(&self, input: Tensor<4>) -> DetectorOutput {
        let levels = match &self.pretrained {
            Some(net) => net.levels(input, MEAN, STD),
            None => self.small_levels(input),
        };
        self.forward_levels(levels)
    }

    /// The pretrained backbone, if any (training keeps it frozen and runs it outside autodiff).
    pub fn pretrained(&self) -> Option<&EfficientNetLite0> {
        self.pretrained.as_ref()
    }

    /// Puts ImageNet weights into the pretrained backbone (before training); `None` for a
    /// network without one.
    pub fn with_pretrained(mut self, net: EfficientNetLite0) -> Option<Self> {
        self.pretrained.as_mut().map(|slot| *slot = net)?;
        Some(self)
    }

    fn small_levels(&self, input: Tensor<4>) -> [Tensor<4>; 3] {
        let layer = |l: &Option<ConvBnRelu>, x: Tensor<4>| l.as_ref().expect("small backbone").forward(x);
        let x2 = layer(&self.stem, input);
        let x4 = layer(&self.level4, layer(&self.down4, x2));
        let x8 = layer(&self.level8, layer(&self.down8, x4.clone()));
        let x16 = layer(&self.level16, layer(&self.down16, x8.clone()));
        [x4, x8, x16]
    }

    /// Neck and head over backbone levels at strides 4, 8, 16 (a pretrained backbone's
    /// levels pass its 1×1 adapters first).
    pub fn forward_levels(&self, [x4, x8, x16]: [Tensor<4>; 3]) -> DetectorOutput {
        let adapt = |a: &Option<Conv2d>, x: Tensor<4>| match a {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let (x4, x8, x16) = (adapt(&self.adapt4, x4), adapt(&self.adapt8, x8), adapt(&self.adapt16, x16));
        let p8 = self.merge8.forward(upsample2(self.lateral16.forward(x16)) + x8);
        let p4 = self.merge4.forward(upsample2(self.lateral8.forward(p8)) + x4);
        let features = self.head.forward(p4);
        DetectorOutput {
            heatmap: self.heatmap.forward(features.clone()),
            offset: self.offset.forward(features.clone()),
            size: self.size.forward(features),
        }
    }
}

/// Pixel normalization the network was trained with.
pub const MEAN: f32 = 0.45;
pub const STD: f32 = 0.25;

/// rgb8 (interleaved, `width`×`height`) → planar normalized f32, appended to `out`.
pub fn normalize(rgb: &[u8], width: usize, height: usize, out: &mut Vec<f32>) {
    let plane = width * height;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let dst = &mut out[start..];
    static LUT: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    let lut = LUT.get_or_init(|| std::array::from_fn(|v| (v as f32 / 255.0 - MEAN) / STD));
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        dst[i] = lut[px[0] as usize];
        dst[plane + i] = lut[px[1] as usize];
        dst[2 * plane + i] = lut[px[2] as usize];
    }
}

/// Area-average resample of an rgb8 image (each output pixel averages the source pixels
/// it covers; exact 2×2 averaging at half size, nearest when enlarging).
pub fn resample(rgb: &[u8], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    if out_w == width && out_h == height {
        return rgb.to_vec();
    }
    let span = |o: usize, n_out: usize, n_in: usize| {
        let a = o * n_in / n_out;
        let b = ((o + 1) * n_in).div_ceil(n_out).max(a + 1).min(n_in);
        (a, b)
    };
    let mut out = vec![0u8; out_w * out_h * 3];
    let cols: Vec<(usize, usize)> = (0..out_w).map(|x| span(x, out_w, width)).collect();
    for y in 0..out_h {
        let (y0, y1) = span(y, out_h, height);
        for (x, &(x0, x1)) in cols.iter().enumerate() {
            let mut acc = [0u32; 3];
            for sy in y0..y1 {
                let row = &rgb[(sy * width + x0) * 3..(sy * width + x1) * 3];
                for px in row.chunks_exact(3) {
                    acc[0] += px[0] as u32;
                    acc[1] += px[1] as u32;
                    acc[2] += px[2] as u32;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let o = (y * out_w + x) * 3;
            for c in 0..3 {
                out[o + c] = ((acc[c] + n / 2) / n) as u8;
            }
        }
    }
    out
}

/// Detections from one image's maps (host copies, channel-major), in input pixels.
/// `heat` holds probabilities (after the sigmoid).
pub fn decode(
    heat: &[f32],
    offset: &[f32],
    size: &[f32],
    classes: usize,
    map_w: usize,
    map_h: usize,
    threshold: f32,
    max_detections: usize,
) -> Vec<Detection2d> {
    let plane = map_w * map_h;
    let mut found = Vec::new();
    for c in 0..classes {
        let h = &heat[c * plane..(c + 1) * plane];
        for y in 0..map_h {
            for x in 0..map_w {
                let p = h[y * map_w + x];
                if p < threshold {
                    continue;
                }
                // A peak: no neighbour higher (ties go to the first in raster order).
                let mut peak = true;
                'n: for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if (dx, dy) == (0, 0) || nx < 0 || ny < 0 || nx >= map_w as i64 || ny >= map_h as i64 {
                            continue;
                        }
                        let q = h[ny as usize * map_w + nx as usize];
                        let before = (ny, nx) < (y as i64, x as i64);
                        if q > p || (q == p && before) {
                            peak = false;
                            break 'n;
                        }
                    }
                }
                if !peak {
                    continue;
                }
                let i = y * map_w + x;
                let s = STRIDE as f32;
                let cx = (x as f32 + offset[i]) * s;
                let cy = (y as f32 + offset[plane + i]) * s;
                let w = size[i].clamp(-4.0, 6.0).exp() * s;
                let hh = size[plane + i].clamp(-4.0, 6.0).exp() * s;
                found.push(Detection2d {
                    label: CLASSES[c],
                    score: p,
                    bbox: [cx - w / 2.0, cy - hh / 2.0, cx + w / 2.0, cy + hh / 2.0],
                });
            }
        }
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    found.truncate(max_detections);
    found
}
