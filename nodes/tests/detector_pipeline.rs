//! The shipped Burn detector (models/weights, sha256-verified) in the whole replay:
//! bag → ingest → sync → CenterNet on each set's camera frame → association → rules.
//! The camera gives the actors it sees their class, and the obstacle only LiDAR and
//! radar see (camera-invisible in the simulator) is a `sensor_disagreement`.
use fusion::track::SENSOR_CAMERA;
use sensor_fusion::detector::DetectorParams;
use sensor_fusion::replay::{run, ReplayOptions};
use std::process::Command;

fn simulate(scenario: &str, seed: u64, duration: u32, dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("bag");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_fusion_sim"))
        .args(["--scenario", scenario, "--seed", &seed.to_string(), "--duration", &duration.to_string(), "--out"])
        .arg(&out)
        .status()
        .expect("fusion_sim runs");
    assert!(status.success());
    out
}

#[test]
fn centernet_in_the_replay_labels_what_it_sees_and_flags_what_it_cannot() {
    let dir = std::env::temp_dir().join(format!("sf_test_{}_detector", std::process::id()));
    let bag = simulate("sensor_disagreement", 37, 12, &dir);
    let detector = DetectorParams { detector: "centernet".into(), ..DetectorParams::default() }.build().unwrap();
    let mut opts = ReplayOptions::new(&bag);
    opts.out = Some(dir.join("out"));
    let r = run(&opts, detector).unwrap();
    assert!(r.metrics["detector"].as_str().unwrap().starts_with("centernet/flex/f32/320x240"), "{}", r.metrics);

    let dis: Vec<_> = r.events.iter().filter(|e| e.kind == "sensor_disagreement").collect();
    assert_eq!(dis.len(), 1, "{dis:#?}");
    let t = (dis[0].stamp_ns - 1_700_000_000_000_000_000) as f64 * 1e-9;
    assert!((3.0..4.5).contains(&t), "fired at {t} s");
    assert_eq!(dis[0].rule, "camera_misses_lidar_radar_object");

    // The scenario's vehicle (y ≈ -3.5 m), obstacle (y ≈ -6 m) and person (y ≈ +5 m)
    // within 40 m carry the class the camera gave them, and most of them are
    // camera-confirmed in the set itself (the rest keep the class their track voted).
    let objects = std::fs::read_to_string(dir.join("out/objects.jsonl")).unwrap();
    let (mut seen, mut labelled, mut confirmed) = (0, 0, 0);
    for line in objects.lines().skip(10) {
        let set: serde_json::Value = serde_json::from_str(line).unwrap();
        for o in set["objects"].as_array().unwrap() {
            let (x, y) = (o["center"][0].as_f64().unwrap(), o["center"][1].as_f64().unwrap());
            let want = match y {
                y if y <= -4.8 => "obstacle",
                y if y < -2.0 => "vehicle",
                y if y > 3.0 => "person",
                _ => continue, // the camera-invisible obstacle, in the ego lane
            };
            if !(5.0..40.0).contains(&x) {
                continue;
            }
            seen += 1;
            labelled += (o["label"] == want) as usize;
            confirmed += (o["sensors"].as_u64().unwrap() as u8 & SENSOR_CAMERA != 0) as usize;
        }
    }
    assert!(seen >= 100, "{seen} objects");
    assert!(labelled as f64 >= 0.95 * seen as f64, "{labelled}/{seen} objects with the right class");
    assert!(confirmed as f64 >= 0.75 * seen as f64, "{confirmed}/{seen} objects camera-confirmed");
    let _ = std::fs::remove_dir_all(&dir);
}
