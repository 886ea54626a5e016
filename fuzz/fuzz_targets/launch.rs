//! The ROS 2 XML launch parser with its substitutions and $(eval) expressions: any file is
//! a launch description or one error naming file:line, never a panic or a stack overflow.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

#[allow(dead_code)]
#[path = "../../tools/src/launch.rs"]
mod launch;

fuzz_target!(|data: &[u8]| {
    // The first line (up to 256 bytes) is also an $(eval) expression on its own.
    if let Some(line) = data.split(|&b| b == b'\n').next().filter(|l| l.len() <= 256) {
        if let Ok(expr) = std::str::from_utf8(line) {
            let _ = launch::evaluate_expression(expr);
        }
    }
    let dir = std::env::temp_dir().join(format!("fuzz-launch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fuzz.launch.xml");
    std::fs::write(&file, data).unwrap();
    let args: BTreeMap<String, String> = [("use_sim_time".to_string(), "true".to_string())].into();
    if let Ok(l) = launch::load(&file, &args) {
        for n in &l.nodes {
            let _ = n.command(&[]);
        }
    }
});
