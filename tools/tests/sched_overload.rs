//! The deadline scheduler end to end at 4× the nominal sensor rates: a fusion_sim bag played
//! in real time (stamps compressed 4×, looped) into the fusion stage with the shipped Burn
//! detector in the loop at 640×480 input — far more work than two CPU cores do at 40 sets/s
//! (the detector alone costs ~60 ms a frame there). The scheduler must shed and degrade
//! instead of publishing late: no set may be published past its 100 ms hard deadline, and
//! memory must stay flat.
use fusion::sched::SchedConfig;
use sensor_fusion::detector::DetectorParams;
use sensor_fusion_tools::schedbench::{run, BenchOptions, Mode};
use std::process::Command;

#[test]
fn at_4x_nothing_is_published_past_the_hard_deadline() {
    let dir = std::env::temp_dir().join(format!("sched_overload_{}", std::process::id()));
    let bag = dir.join("nominal");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_fusion_sim"))
        .args(["--scenario", "nominal", "--seed", "11", "--duration", "6", "--out"])
        .arg(&bag)
        .status()
        .expect("fusion_sim runs");
    assert!(status.success());
    let detector = DetectorParams { input_size: "640x480".into(), ..DetectorParams::default() };
    let opts = BenchOptions {
        bag: bag.clone(),
        rate: 4.0,
        loops: 3, // 4.5 s of 40 Hz sets
        mode: Mode::Edf,
        detector,
        params_file: None,
        sched: SchedConfig::default(),
        trace: Some(dir.join("trace.json")),
    };
    let r = run(&opts).expect("bench run");
    let _ = std::fs::remove_dir_all(&bag);
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    let sets = r["sets"].as_u64().unwrap();
    let published = r["published"].as_u64().unwrap();
    assert!(sets >= 120, "{sets} sets released");
    // The promise: late work is shed or withheld, never published.
    assert_eq!(r["published_past_hard_deadline"], 0, "{r}");
    assert!(r["end_to_end_ms"]["max"].as_f64().unwrap() <= 100.0, "{r}");
    // And it was an overload: the scheduler had to act (shed sets, leave the detector out, degrade).
    let acted = r["shed"].as_u64().unwrap()
        + r["detector_left_out"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>()
        + r["degradation_max_level"].as_u64().unwrap();
    assert!(acted > 0, "{r}");
    assert!(r["degradation_max_level"].as_u64().unwrap() >= 1, "{r}");
    // Still useful: most sets published.
    assert!(published * 2 >= sets, "{published} of {sets} published: {r}");
    // Memory flat: the mailboxes and queues are bounded.
    assert!(r["rss_anon_mib"]["growth_first_to_last_quarter"].as_f64().unwrap() < 30.0, "{r}");
    // The trace a user opens in Perfetto: stage spans on the scheduler's threads.
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let names: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.is_superset(&["detector", "clustering", "fuse", "preprocess", "thread_name"].into()), "{names:?}");
    assert!(events
        .iter()
        .filter(|e| e["ph"] == "X")
        .all(|e| e["dur"].as_f64().unwrap() >= 0.0 && e["tid"].as_u64().is_some()));
    let _ = std::fs::remove_dir_all(&dir);
}
