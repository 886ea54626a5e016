//! The camera detector from node / replay parameters: `detector` (`none` or `centernet`),
//! `detector_weights` (manifest path; default: the installed share/sensor_fusion/models,
//! then the source tree's models/weights), `backend` (`flex` or `wgpu`), `input_size`
//! (`WIDTHxHEIGHT`, multiples of 16), `precision` (`f32`, `f16`), `detector_score_threshold`.
use anyhow::{bail, Context, Result};
use fusion::detect::CameraDetector;
use models::{CenterNet, DetectorOptions};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct DetectorParams {
    pub detector: String,
    pub weights: String,
    pub backend: String,
    pub input_size: String,
    pub precision: String,
    pub score_threshold: f64,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            detector: "centernet".into(),
            weights: String::new(),
            backend: "flex".into(),
            input_size: "320x240".into(),
            precision: "f32".into(),
            score_threshold: 0.3,
        }
    }
}

impl DetectorParams {
    pub fn options(&self) -> Result<DetectorOptions> {
        Ok(DetectorOptions {
            backend: self.backend.parse().context("parameter backend")?,
            precision: self.precision.parse().context("parameter precision")?,
            input_size: models::runtime::parse_size(&self.input_size).context("parameter input_size")?,
            score_threshold: self.score_threshold as f32,
            ..DetectorOptions::default()
        })
    }

    /// The weights manifest: the parameter, else the installed copy, else the source tree's.
    pub fn manifest(&self) -> PathBuf {
        if !self.weights.is_empty() {
            return PathBuf::from(&self.weights);
        }
        crate::ros::installed_share_file("models/detector.json").unwrap_or_else(models::runtime::default_manifest)
    }

    /// The detector these parameters name (None for `none`), loaded and verified.
    pub fn build(&self) -> Result<Option<Box<dyn CameraDetector>>> {
        match self.detector.as_str() {
            "none" | "" => Ok(None),
            "centernet" => {
                let manifest = self.manifest();
                let d = CenterNet::load(&manifest, self.options()?)
                    .with_context(|| format!("camera detector from {}", manifest.display()))?;
                tracing::debug!(
                    "camera detector {} ({})",
                    fusion::detect::CameraDetector::name(&d),
                    manifest.display()
                );
                Ok(Some(Box::new(d)))
            }
            other => bail!("parameter detector: '{other}' is not a detector (none or centernet)"),
        }
    }
}
