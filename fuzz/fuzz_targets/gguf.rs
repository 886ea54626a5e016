//! The GGUF reader (header, metadata, tensor table, bounds) and the ggml block decoders on
//! every tensor it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

// The part of models::llm the reader uses (`super::LlmError`, `super::quant`), with the
// reader and the block formats compiled from their own sources.
#[allow(dead_code)]
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{path}: {reason}")]
    Gguf { path: std::path::PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

#[allow(dead_code)]
#[path = "../../models/src/llm/gguf.rs"]
mod gguf;
#[allow(dead_code)]
#[path = "../../models/src/llm/quant.rs"]
mod quant;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = gguf::GgufFile::parse(Path::new("fuzz.gguf"), data.to_vec()) else { return };
    for t in &g.tensors {
        let n = t.num_elements();
        // Every accepted tensor lies inside the file; decode the small ones.
        let bytes = g.tensor_bytes(t);
        if n <= 1 << 20 {
            let mut out = vec![0f32; n as usize];
            quant::dequantize_into(t.ggml_type, bytes, &mut out);
        }
    }
});
