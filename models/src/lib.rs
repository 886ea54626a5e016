//! Burn models of the sensor_fusion node set, free of ROS: the camera object detector
//! (architecture, training data from `fusion_sim`'s world, training, evaluation, verified
//! weight loading, and the `fusion::detect::CameraDetector` the pipeline calls), and the
//! language model that writes anomaly summaries (`llm`: GGUF, tokenizer, Llama decoder).
//! The backend is chosen at run time: `flex` (CPU) or `wgpu` (GPU; lavapipe on CPU-only
//! machines) when built with the `wgpu` feature.
pub mod coco;
pub mod data;
pub mod detector;
pub mod efficientnet;
pub mod eval;
pub mod llm;
pub mod runtime;
pub mod train;

pub use runtime::{Backend, CenterNet, DetectorOptions, ModelError, Precision};
