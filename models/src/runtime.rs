//! Running the detector: the backend chosen at run time, precision, verified weights, and
//! the `fusion::detect::CameraDetector` implementation the pipeline calls.
use crate::detector::{decode, normalize, resample, Detector, DetectorConfig, CLASSES, SIZE_MULTIPLE, STRIDE};
use burn::module::{Module, ModuleMapper, Param, ParamGroup, Quantizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::activation::sigmoid;
use burn::tensor::quantization::{Calibration, QuantValue};
use burn::tensor::{Bytes, DType, TensorData};
use fusion::camera::Rgb8;
use fusion::detect::{CameraDetector, DetectError, Detection2d};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad weights manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "weights {path} fail the integrity check: sha256 is {actual}, the manifest requires {expected}; refusing to load them"
    )]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("weights {path} do not fit the detector: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("backend '{0}' is not available: {1}")]
    Backend(String, String),
    #[error("{0}")]
    Option(String),
}

/// Where the network runs; chosen by a parameter at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn-flex, pure-Rust CPU.
    Flex,
    /// burn-wgpu: a real GPU, or Mesa's lavapipe Vulkan on CPU-only machines.
    Wgpu,
}

impl FromStr for Backend {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "flex" | "cpu" => Ok(Backend::Flex),
            "wgpu" | "gpu" => Ok(Backend::Wgpu),
            _ => Err(ModelError::Option(format!("unknown backend '{s}' (flex or wgpu)"))),
        }
    }
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Wgpu => "wgpu",
        }
    }

    /// The device, checked by running one small operation on it so that a missing GPU
    /// adapter is an error here rather than a panic on the first frame.
    pub fn device(self) -> Result<Device, ModelError> {
        let device = match self {
            Backend::Flex => Device::flex(),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => {
                return Err(ModelError::Backend(
                    "wgpu".into(),
                    "this build has no wgpu support (cargo feature `wgpu`)".into(),
                ))
            }
        };
        let probe = device.clone();
        std::panic::catch_unwind(move || Tensor::<1>::ones([4], &probe).sum().into_data()).map_err(|e| {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "device initialisation panicked".into());
            ModelError::Backend(self.as_str().into(), msg)
        })?;
        Ok(device)
    }
}

/// Numeric precision of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    /// 8-bit symmetric per-tensor weights of the 3×3 convolutions (burn post-training
    /// quantization, min-max calibration); activations stay f32.
    Int8,
}

impl FromStr for Precision {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "int8" => Ok(Precision::Int8),
            _ => Err(ModelError::Option(format!("unknown precision '{s}' (f32, f16 or int8)"))),
        }
    }
}

impl Precision {
    /// Activation dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 | Precision::Int8 => DType::F32,
            Precision::F16 => DType::F16,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }
}

/// Casts every float parameter (weights, biases, batch-norm statistics) to one dtype.
struct CastParams(DType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// The weights manifest committed beside the weights: integrity hash, the architecture, and
/// how the weights were made and scored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Weights file, relative to the manifest.
    pub weights: String,
    pub sha256: String,
    pub bytes: u64,
    #[serde(deserialize_with = "config_of_any_age")]
    pub config: DetectorConfig,
    /// Input size (width, height) the network was trained at.
    pub train_input: [usize; 2],
    pub training: serde_json::Value,
    #[serde(default)]
    pub evaluation: serde_json::Value,
    /// Input statistics of training-distribution frames, for run-time model monitoring
    /// (`fusion_eval_detector --record` writes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<fusion::monitor::ModelRanges>,
    /// Per-frame latency by backend and input (`fusion_bench_detector --record`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub latency: serde_json::Value,
    /// What the model card says the model is for, and where it is known to fail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub intended_use: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_limits: Vec<String>,
    /// Any other key a newer tool wrote: a `--record` must not drop what it does not know.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A network config as any manifest wrote it: those written before the backbone was a
/// choice name none, and theirs is the small one.
fn config_of_any_age<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DetectorConfig, D::Error> {
    let mut value = serde_json::Value::deserialize(deserializer)?;
    if let Some(config) = value.as_object_mut() {
        config.entry("backbone").or_insert_with(|| "small".into());
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}

/// The detector's intended use, as a newly trained manifest (and its model card) states it.
pub const DETECTOR_INTENDED_USE: &str = "Camera-side class evidence for fusion_node: boxes of person, vehicle and \
obstacle in a forward-looking 640x480 rgb8 road/yard camera, associated with LiDAR/radar objects whose 3D extent \
checks the label (fusion::classify). Not a stand-alone safety detector: a zone intrusion or collision risk is \
raised from LiDAR/radar geometry, and the camera only names and confirms objects.";

impl Manifest {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|e| ModelError::Manifest { path: path.into(), reason: e.to_string() })
    }

    pub fn weights_path(&self, manifest: &Path) -> PathBuf {
        manifest.parent().unwrap_or(Path::new(".")).join(&self.weights)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest shipped with this source tree (models/weights/detector.json).
pub fn default_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/detector.json")
}

/// Reads the weights the manifest names, verifies their sha256 and loads them into a
/// detector on `device`. A mismatch is refused with both hashes in the error.
pub fn load_verified(manifest_path: &Path, device: &Device) -> Result<(Detector, Manifest), ModelError> {
    let manifest = Manifest::read(manifest_path)?;
    let path = manifest.weights_path(manifest_path);
    let bytes = std::fs::read(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(ModelError::HashMismatch { path, expected: manifest.sha256.clone(), actual });
    }
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| ModelError::Record { path: path.clone(), reason: format!("{e:?}") })?;
    let model = manifest
        .config
        .init(device)
        .try_load_record(record)
        .map_err(|e| ModelError::Record { path: path.clone(), reason: format!("{e:?}") })?;
    Ok((model, manifest))
}

/// Serializes a detector's weights (burnpack) and returns the bytes and their sha256.
pub fn weights_bytes(model: &Detector) -> Result<(Vec<u8>, String), ModelError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| ModelError::Record { path: PathBuf::new(), reason: format!("{e:?}") })?;
    let bytes = bytes.to_vec();
    let hash = sha256_hex(&bytes);
    Ok((bytes, hash))
}

/// `WIDTHxHEIGHT` → [width, height] (the `input_size` parameter and the commands' sizes).
pub fn parse_size(s: &str) -> Result<[usize; 2], ModelError> {
    let bad = || ModelError::Option(format!("size '{s}' is not WIDTHxHEIGHT"));
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    Ok([w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?])
}

/// Run-time options (node / replay parameters).
#[derive(Debug, Clone)]
pub struct DetectorOptions {
    pub backend: Backend,
    pub precision: Precision,
    /// Network input (width, height), multiples of 16; the frame is resampled to it.
    pub input_size: [usize; 2],
    /// Minimum centre score of a reported detection.
    pub score_threshold: f32,
    pub max_detections: usize,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Flex,
            precision: Precision::F32,
            input_size: [320, 240],
            score_threshold: 0.3,
            max_detections: 50,
        }
    }
}

/// The Burn CenterNet detector, ready to run on frames.
pub struct CenterNet {
    model: Detector,
    device: Device,
    options: DetectorOptions,
    name: String,
    /// The configured input size (`options.input_size` is halved while reduced).
    full_size: [usize; 2],
    /// What the model saw in training (from the manifest), for monitoring.
    ranges: Option<fusion::monitor::ModelRanges>,
}

/// Half of a side, rounded to the network's size multiple (at least one multiple).
fn reduced_side(side: usize) -> usize {
    ((side / 2 + SIZE_MULTIPLE / 2) / SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE
}

impl CenterNet {
    /// Loads verified weights onto the backend the options name.
    pub fn load(manifest_path: &Path, options: DetectorOptions) -> Result<Self, ModelError> {
        let device = options.backend.device()?;
        let (model, manifest) = load_verified(manifest_path, &device)?;
        let mut detector = Self::new(model, device, options)?;
        detector.ranges = manifest.monitoring;
        Ok(detector)
    }

    pub fn new(model: Detector, device: Device, options: DetectorOptions) -> Result<Self, ModelError> {
        let [w, h] = options.input_size;
        if w == 0 || h == 0 || w % SIZE_MULTIPLE != 0 || h % SIZE_MULTIPLE != 0 {
            return Err(ModelError::Option(format!(
                "input_size {w}x{h}: both sides must be positive multiples of {SIZE_MULTIPLE}"
            )));
        }
        if options.precision == Precision::F16 && !device.supports_dtype(DType::F16) {
            return Err(ModelError::Option(format!(
                "precision f16 is not supported by the {} backend",
                options.backend.as_str()
            )));
        }
        if options.precision == Precision::Int8 && model.pretrained().is_some() {
            // Never measured quantized (and the conv-weight predicate below would leave its
            // stem and adapters in f32).
            return Err(ModelError::Option("precision int8 is only measured for the small backbone".into()));
        }
        let model = model.valid();
        let model = match options.precision {
            Precision::F32 => model,
            Precision::F16 => model.map(&mut CastParams(DType::F16)),
            Precision::Int8 => {
                let scheme = device.settings().quantization.scheme.with_value(QuantValue::Q8S);
                let mut quantizer = Quantizer::new(Calibration::MinMax, scheme);
                model.quantize_weights_group(&mut quantizer, ParamGroup::from_predicate("conv.weight"))
            }
        };
        let name = Self::name_for(&options);
        Ok(Self { model, device, full_size: options.input_size, options, name, ranges: None })
    }

    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// `centernet/<backend>/<precision>/<W>x<H>`, the input size being the one in force.
    fn name_for(options: &DetectorOptions) -> String {
        let [w, h] = options.input_size;
        format!("centernet/{}/{}/{w}x{h}", options.backend.as_str(), options.precision.as_str())
    }

    /// Raw maps for a batch of frames already at the input size (rgb8): heat (probabilities),
    /// offset, size, each channel-major per image.
    pub fn maps(&self, inputs: &[&[u8]]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let [w, h] = self.options.input_size;
        let mut planar = Vec::with_capacity(inputs.len() * 3 * w * h);
        for rgb in inputs {
            normalize(rgb, w, h, &mut planar);
        }
        let x = Tensor::<4>::from_data(TensorData::new(planar, [inputs.len(), 3, h, w]), &self.device);
        let x = match self.options.precision.dtype() {
            DType::F32 => x,
            dtype => x.cast(dtype),
        };
        let out = self.model.forward(x);
        let host = |t: Tensor<4>| t.cast(DType::F32).into_data().try_into_vec::<f32>().expect("f32 maps");
        (host(sigmoid(out.heatmap)), host(out.offset), host(out.size))
    }

    /// Detections for one rgb8 frame of any size, in that frame's pixels.
    pub fn detect_rgb(&self, rgb: &[u8], width: usize, height: usize) -> Vec<Detection2d> {
        self.detect_rgb_batch(&[(rgb, width, height)]).pop().expect("one frame in, one out")
    }

    /// Detections for several rgb8 frames (each of any size) with one forward over the batch:
    /// a set's cameras. Per frame, in its own pixels; the same as one [`Self::detect_rgb`]
    /// per frame.
    pub fn detect_rgb_batch(&self, frames: &[(&[u8], usize, usize)]) -> Vec<Vec<Detection2d>> {
        if frames.is_empty() {
            return vec![];
        }
        let [w, h] = self.options.input_size;
        let inputs: Vec<Vec<u8>> = frames.iter().map(|(rgb, fw, fh)| resample(rgb, *fw, *fh, w, h)).collect();
        let (heat, offset, size) = self.maps(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let (mw, mh) = (w / STRIDE, h / STRIDE);
        let (heat_len, box_len) = (CLASSES.len() * mw * mh, 2 * mw * mh);
        frames
            .iter()
            .enumerate()
            .map(|(i, (_, width, height))| {
                let (width, height) = (*width as f32, *height as f32);
                let (sx, sy) = (width / w as f32, height / h as f32);
                decode(
                    &heat[i * heat_len..(i + 1) * heat_len],
                    &offset[i * box_len..(i + 1) * box_len],
                    &size[i * box_len..(i + 1) * box_len],
                    CLASSES.len(),
                    mw,
                    mh,
                    self.options.score_threshold,
                    self.options.max_detections,
                )
                .into_iter()
                .map(|mut d| {
                    d.bbox = [
                        (d.bbox[0] * sx).clamp(0.0, width),
                        (d.bbox[1] * sy).clamp(0.0, height),
                        (d.bbox[2] * sx).clamp(0.0, width),
                        (d.bbox[3] * sy).clamp(0.0, height),
                    ];
                    d
                })
                .collect()
            })
            .collect()
    }
}

/// A frame the detector can read: rgb8 bytes for its size.
fn check_frame(image: &Rgb8) -> Result<(), DetectError> {
    let need = image.width as usize * image.height as usize * 3;
    if image.data.len() != need {
        return Err(DetectError::Failed(format!(
            "frame of {}x{} carries {} bytes, rgb8 needs {need}",
            image.width,
            image.height,
            image.data.len()
        )));
    }
    Ok(())
}

impl CameraDetector for CenterNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn detect(&mut self, _stamp: fusion::StampNs, image: &Rgb8) -> Result<Vec<Detection2d>, DetectError> {
        check_frame(image)?;
        Ok(self.detect_rgb(&image.data, image.width as usize, image.height as usize))
    }

    /// One forward over every readable frame (a set's cameras); a malformed frame gets its
    /// error and leaves the others' batch alone.
    fn detect_batch(&mut self, frames: &[(fusion::StampNs, &Rgb8)]) -> Vec<Result<Vec<Detection2d>, DetectError>> {
        let checked: Vec<Result<(), DetectError>> = frames.iter().map(|(_, image)| check_frame(image)).collect();
        let readable: Vec<(&[u8], usize, usize)> = frames
            .iter()
            .zip(&checked)
            .filter(|(_, ok)| ok.is_ok())
            .map(|((_, image), _)| (image.data.as_slice(), image.width as usize, image.height as usize))
            .collect();
        let mut detections = self.detect_rgb_batch(&readable).into_iter();
        checked.into_iter().map(|ok| ok.map(|()| detections.next().expect("one result per readable frame"))).collect()
    }

    fn training_ranges(&self) -> Option<fusion::monitor::ModelRanges> {
        self.ranges
    }

    /// Half the configured input on each side (320x240 -> 160x128): the network is fully
    /// convolutional, so the same weights run at the smaller size, ~4x cheaper.
    fn set_reduced_input(&mut self, reduced: bool) -> bool {
        let [w, h] = self.full_size;
        self.options.input_size = if reduced { [reduced_side(w), reduced_side(h)] } else { [w, h] };
        self.name = Self::name_for(&self.options);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fusion_eval_detector --record` and `fusion_bench_detector --record` rewrite the
    /// manifest through this type: every key of the shipped manifest (the model card's intended
    /// use and known limits included) must come back out, and any key a newer tool added too.
    #[test]
    fn a_manifest_rewrite_keeps_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/detector.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut original: serde_json::Value = serde_json::from_str(&text).unwrap();
        original["added_by_a_newer_tool"] = serde_json::json!({"x": 1});
        let manifest: Manifest = serde_json::from_value(original.clone()).unwrap();
        assert!(!manifest.known_limits.is_empty() && !manifest.intended_use.is_empty());
        assert_eq!(serde_json::to_value(&manifest).unwrap(), original);
        // A manifest from before the backbone was a choice reads as the small one.
        original["config"].as_object_mut().unwrap().remove("backbone");
        let old: Manifest = serde_json::from_value(original).unwrap();
        assert_eq!(old.config.backbone, crate::detector::Backbone::Small);
    }

    /// Both backbones' weights go through the burnpack file and the sha256 check and come back
    /// computing the same maps (the small network's fields became optional without moving).
    #[test]
    fn a_detector_of_either_backbone_saves_and_loads_back() {
        use crate::detector::Backbone;
        let dir = std::env::temp_dir().join(format!("detector-roundtrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let device = Device::flex();
        let x = Tensor::<4>::random([1, 3, 64, 64], burn::tensor::Distribution::Default, &device);
        for backbone in [Backbone::Small, Backbone::EfficientnetLite0] {
            let config = DetectorConfig::new().with_backbone(backbone);
            let model = config.init(&device);
            let (bytes, sha256) = weights_bytes(&model).unwrap();
            std::fs::write(dir.join("d.bpk"), &bytes).unwrap();
            let mut manifest: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/detector.json")).unwrap(),
            )
            .unwrap();
            manifest["weights"] = "d.bpk".into();
            manifest["sha256"] = sha256.into();
            manifest["config"] = serde_json::to_value(&config).unwrap();
            std::fs::write(dir.join("d.json"), manifest.to_string()).unwrap();
            let (loaded, read) = load_verified(&dir.join("d.json"), &device).unwrap();
            assert_eq!(read.config.backbone, backbone);
            assert_eq!(loaded.pretrained().is_some(), backbone == Backbone::EfficientnetLite0);
            // int8 was only ever measured on the small network.
            let int8 = DetectorOptions { precision: Precision::Int8, ..DetectorOptions::default() };
            assert_eq!(CenterNet::new(loaded.clone(), device.clone(), int8).is_ok(), backbone == Backbone::Small);
            let a = model.valid().forward(x.clone()).heatmap.into_data();
            let b = loaded.valid().forward(x.clone()).heatmap.into_data();
            a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::default());
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
