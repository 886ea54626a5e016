//! Message definitions for MCAP schemas, found the way rosbag2 finds them: the `.msg` files
//! under `<prefix>/share/<pkg>/msg/` of every AMENT_PREFIX_PATH entry, with each nested
//! type appended after a `====…` separator and a `MSG: pkg/Type` line. The RIHS01 type hash
//! comes from the `.json` type description installed beside the `.msg`.
use std::path::PathBuf;

const SEPARATOR: &str = "================================================================================";

const BUILTIN: &[&str] = &[
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
    "uint64", "string", "wstring",
];

fn find(pkg: &str, name: &str, ext: &str) -> Option<PathBuf> {
    std::env::var("AMENT_PREFIX_PATH")
        .ok()?
        .split(':')
        .map(|p| PathBuf::from(p).join("share").join(pkg).join("msg").join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
}

/// "sensor_msgs/msg/Image" or "sensor_msgs/Image" → ("sensor_msgs", "Image").
fn split(type_name: &str) -> Option<(&str, &str)> {
    let mut parts = type_name.split('/');
    let pkg = parts.next()?;
    let last = parts.next_back()?;
    Some((pkg, last))
}

/// Nested message types a .msg text refers to, as pkg/Type.
fn dependencies(text: &str, own_pkg: &str) -> Vec<String> {
    let mut out = vec![];
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(ty) = line.split_whitespace().next() else { continue };
        // Constants are "TYPE NAME=VALUE": the name token carries the '='.
        if line.split_whitespace().nth(1).is_some_and(|n| n.contains('=')) {
            continue;
        }
        let base = ty.split('[').next().unwrap_or(ty);
        let base = base.split("<=").next().unwrap_or(base);
        if BUILTIN.contains(&base) {
            continue;
        }
        let full = if base.contains('/') { base.to_string() } else { format!("{own_pkg}/{base}") };
        if !out.contains(&full) {
            out.push(full);
        }
    }
    out
}

/// The full ros2msg definition of `type_name`, nested types included; None when a .msg
/// file is not installed.
pub fn definition(type_name: &str) -> Option<String> {
    let (pkg, name) = split(type_name)?;
    let main = std::fs::read_to_string(find(pkg, name, "msg")?).ok()?;
    let mut text = main.trim_end().to_string();
    let mut seen: Vec<String> = vec![format!("{pkg}/{name}")];
    let mut queue = dependencies(&main, pkg);
    while let Some(dep) = (!queue.is_empty()).then(|| queue.remove(0)) {
        if seen.contains(&dep) {
            continue;
        }
        let (dpkg, dname) = split(&dep)?;
        let body = std::fs::read_to_string(find(dpkg, dname, "msg")?).ok()?;
        text.push_str(&format!("\n{SEPARATOR}\nMSG: {dep}\n{}", body.trim_end()));
        queue.extend(dependencies(&body, dpkg));
        seen.push(dep);
    }
    text.push('\n');
    Some(text)
}

/// The RIHS01 type hash from the installed type description, or "" when absent.
pub fn type_hash(type_name: &str) -> String {
    let Some((pkg, name)) = split(type_name) else { return String::new() };
    let Some(text) = find(pkg, name, "json").and_then(|p| std::fs::read_to_string(p).ok()) else {
        return String::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return String::new() };
    json["type_hashes"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["type_name"] == format!("{pkg}/msg/{name}")))
        .and_then(|h| h["hash_string"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `AnomalyEvent`'s `KIND_*` constants and the core's `EventKind` are one list, in one
    /// order, so a subscriber that switches on the constants meets every kind fusion_node
    /// publishes; its severity constants are the core's too.
    #[test]
    fn anomaly_event_constants_are_the_core_vocabulary() {
        use fusion::anomaly::{EventKind, ERROR, INFO, WARN};
        let msg = include_str!("../../nodes/fusion_msgs/msg/AnomalyEvent.msg");
        let constants = |prefix: &str| -> Vec<(String, String)> {
            msg.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(|c| c.split('#').next().unwrap_or_default())
                .filter_map(|c| c.split_once('='))
                .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                .collect()
        };
        let core: Vec<(String, String)> =
            EventKind::ALL.iter().map(|k| (format!("KIND_{}", k.as_str().to_uppercase()), k.to_string())).collect();
        assert_eq!(constants("string "), core);
        let levels = [("INFO", INFO), ("WARN", WARN), ("ERROR", ERROR)].map(|(n, v)| (n.to_string(), v.to_string()));
        assert_eq!(constants("byte "), levels);
    }

    /// `FusedObject.SENSOR_*` are the core's sensor bits (`fusion::Sensor::bit`), for every
    /// sensor that observes objects.
    #[test]
    fn fused_object_sensor_bits_are_the_core_sensors() {
        use fusion::Sensor;
        let msg = include_str!("../../nodes/fusion_msgs/msg/FusedObject.msg");
        let bits: Vec<(String, u8)> = msg
            .lines()
            .filter_map(|l| l.strip_prefix("uint8 SENSOR_"))
            .filter_map(|c| c.split('#').next()?.split_once('='))
            .map(|(name, value)| (name.trim().to_lowercase(), value.trim().parse().expect("a number")))
            .collect();
        let core: Vec<(String, u8)> =
            [Sensor::Camera, Sensor::Lidar, Sensor::Radar].map(|s| (s.to_string(), s.bit())).to_vec();
        assert_eq!(bits, core);
    }

    #[test]
    fn dependencies_skip_builtins_constants_and_resolve_own_package() {
        let text = "uint8 A=1\nstring KIND=x\nstd_msgs/Header header # c\nPointField[] fields\nfloat64[9] k\nstring<=8 s\nbuiltin_interfaces/Time[<=3] t\n";
        assert_eq!(
            dependencies(text, "sensor_msgs"),
            vec!["std_msgs/Header", "sensor_msgs/PointField", "builtin_interfaces/Time"]
        );
    }
}
