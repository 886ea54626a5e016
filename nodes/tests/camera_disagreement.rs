//! sensor_disagreement needs a camera detector, and the shipped pipeline has none until
//! the Burn detector lands. Here a clearly non-ML stand-in — the simulator's own visible
//! 2D boxes, looked up by stamp (`GroundTruthBoxes`, test code only) — plugs into the
//! same `CameraDetector` trait, and the whole replay (bag → ingest → fusion → rules) must
//! report the obstacle that LiDAR and radar see but the camera cannot.
use fusion::{
    camera::Rgb8,
    detect::{CameraDetector, DetectError, Detection2d, Label},
    StampNs,
};
use sensor_fusion::replay::{run, ReplayOptions};
use std::{collections::BTreeMap, path::Path, process::Command};

struct GroundTruthBoxes {
    frames: BTreeMap<StampNs, Vec<Detection2d>>,
}

impl GroundTruthBoxes {
    fn load(bag: &Path) -> Self {
        let mut frames = BTreeMap::new();
        for line in std::fs::read_to_string(bag.join("ground_truth.jsonl")).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["type"] != "frame" {
                continue;
            }
            let dets = v["actors"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["visible_pixels"].as_u64().unwrap_or(0) >= 20)
                .filter_map(|a| {
                    let b = a["box2d"].as_array()?;
                    let f = |i: usize| b[i].as_f64().unwrap() as f32;
                    let label = match a["class"].as_str()? {
                        "person" => Label::Person,
                        "vehicle" => Label::Vehicle,
                        _ => Label::Obstacle,
                    };
                    Some(Detection2d { label, score: 0.9, bbox: [f(0), f(1), f(2) + 1.0, f(3) + 1.0] })
                })
                .collect();
            frames.insert(v["stamp_ns"].as_i64().unwrap(), dets);
        }
        Self { frames }
    }
}

impl CameraDetector for GroundTruthBoxes {
    fn name(&self) -> &str {
        "ground_truth_boxes (test only, not a model)"
    }
    fn detect(&mut self, stamp: StampNs, _image: &Rgb8) -> Result<Vec<Detection2d>, DetectError> {
        Ok(self.frames.get(&stamp).cloned().unwrap_or_default())
    }
}

fn simulate(scenario: &str, seed: u64, duration: u32) -> tempfile_dir::Dir {
    let dir = tempfile_dir::Dir::new(&format!("{scenario}_{seed}"));
    let out = dir.path.join("bag");
    let status = Command::new(env!("CARGO_BIN_EXE_fusion_sim"))
        .args(["--scenario", scenario, "--seed", &seed.to_string(), "--duration", &duration.to_string(), "--out"])
        .arg(&out)
        .status()
        .expect("fusion_sim runs");
    assert!(status.success());
    dir
}

/// A scratch directory removed on drop (no extra dev-dependency for one helper).
mod tempfile_dir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("sf_test_{}_{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[test]
fn camera_blind_to_a_lidar_radar_object_is_reported_and_seen_objects_are_not() {
    let dir = simulate("sensor_disagreement", 29, 12);
    let bag = dir.path.join("bag");
    let r = run(&ReplayOptions::new(&bag), Some(Box::new(GroundTruthBoxes::load(&bag)))).unwrap();
    let dis: Vec<_> = r.events.iter().filter(|e| e.kind == "sensor_disagreement").collect();
    // The ghost obstacle exists from 3 s to 9 s; one event, soon after it appears.
    assert_eq!(dis.len(), 1, "{dis:#?}");
    let e = dis[0];
    let t = (e.stamp_ns - 1_700_000_000_000_000_000) as f64 * 1e-9;
    assert!((3.0..4.5).contains(&t), "fired at {t} s");
    assert_eq!(e.rule, "camera_misses_lidar_radar_object");
    assert!((e.position[0] - 18.0).abs() < 10.0 && e.position[1].abs() < 2.0, "{:?}", e.position);
    assert_eq!(r.metrics["detector"], "ground_truth_boxes (test only, not a model)");
    // The camera-visible actors got their class from the camera.
    let objects = std::fs::read_to_string(bag.join("ground_truth.jsonl")).unwrap();
    assert!(objects.contains("\"vehicle\""));
}

#[test]
fn mixed_scenario_reports_its_ghost_once() {
    let dir = simulate("mixed", 31, 20);
    let bag = dir.path.join("bag");
    let r = run(&ReplayOptions::new(&bag), Some(Box::new(GroundTruthBoxes::load(&bag)))).unwrap();
    let times: Vec<f64> = r
        .events
        .iter()
        .filter(|e| e.kind == "sensor_disagreement")
        .map(|e| (e.stamp_ns - 1_700_000_000_000_000_000) as f64 * 1e-9)
        .collect();
    // The camera-invisible obstacle stands from 2 s to 6 s (the camera blackout at 9–11 s
    // is sensor_degraded, not a disagreement: blinded frames are not compared).
    let detail: Vec<_> = r.events.iter().filter(|e| e.kind == "sensor_disagreement").collect();
    assert_eq!(times.len(), 1, "{times:?} {detail:#?}");
    assert!((2.0..6.0).contains(&times[0]), "{times:?}");
}
