//! What runs on the robot: the ROS 2 glue of the six nodes (thin r2r adapters over the
//! ROS-free `fusion` and `models` crates) and the ROS-free services they share with the
//! tools (`summarizer`). The tools around the node set (bags, launcher, replay, simulator
//! writer, viewer, benchmarks) are the `sensor_fusion_tools` crate in `tools/`.
pub mod config;
pub mod detector;
pub mod graph;
pub mod ingest;
pub mod messages;
pub mod pending;
pub mod ros;
pub mod rviz;
pub mod speech;
pub mod summarizer;

/// A time span a user gave in seconds (a parameter, an option, a launch attribute) as a
/// `Duration`: a clear error for NaN, infinity, a negative value or one too large, where
/// `Duration::from_secs_f64` would panic.
pub fn seconds(what: &str, s: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{what} must be a finite number of seconds >= 0, got {s}"))
}

/// A generated table in a document, between `begin` (a marker line) and `end`: equal to
/// `table`, or with `UPDATE_DOCS=1` rewritten to it. A test per table calls this, so a page
/// cannot drift from the code it documents.
#[cfg(test)]
pub(crate) fn check_generated(path: &std::path::Path, begin: &str, end: &str, table: &str) {
    let text = std::fs::read_to_string(path).expect("document");
    let start = text.find(begin).expect("generated-table marker");
    let body = start + text[start..].find('\n').expect("marker line") + 1;
    let stop = body + text[body..].find(end).expect("end marker");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, format!("{}{table}{}", &text[..body], &text[stop..])).expect("write document");
    } else {
        assert_eq!(&text[body..stop], table, "{} drifted from the code: UPDATE_DOCS=1 rewrites it", path.display());
    }
}
