//! `fusion_replay --report FILE.html`: one self-contained HTML page that shows a run — the
//! timeline of events, sensor health and summaries, a scrubbable bird's-eye view, camera
//! thumbnails with the detector's and LiDAR's boxes at each event, latency against the
//! deadlines, message and rejection counts, what produced the run, and, when the bag
//! carries fusion_sim's ground truth, recall, false alarms and detection delay per kind.
//!
//! [`ReportCollector`] watches the replay (inputs, sets, events) and keeps what the page
//! draws, downsampled so that a long run stays a page a browser opens at once; [`write`]
//! puts its JSON into `report.html` (the page's own script draws it as SVG: no network,
//! no plotting library).
use anyhow::{Context as _, Result};
use base64::Engine as _;
use fusion::{
    anomaly::Event,
    calib::Calibration,
    camera::Rgb8,
    motion::ImuState,
    pipeline::{CameraView, SetOutput},
    StampNs,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::{collections::BTreeMap, io::BufRead as _, path::Path};

/// The page: its HTML, style and drawing script; `__REPORT_DATA__` becomes the run's JSON.
const TEMPLATE: &str = include_str!("report.html");

/// A bird's-eye frame at most every this many ns: ten minutes stay ~6000 frames (under
/// 100 ms, so 10 Hz sets with jitter are all kept).
const FRAME_SPACING_NS: i64 = 90_000_000;
/// Camera thumbnails kept (one per event, shared by events of the same frame).
const MAX_THUMBNAILS: usize = 48;
const THUMBNAIL_WIDTH: u32 = 320;
/// Latency histogram bin edges, ms (log-spaced; the last bin is open).
const LATENCY_EDGES_MS: [f64; 14] = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 200.0];
/// Sensors drawn as health lanes, in order.
const LANES: [&str; 4] = ["camera", "lidar", "radar", "imu"];

#[derive(Serialize)]
struct Frame {
    t: f64,
    /// Ego pose in the run's odometry frame (x, y, yaw), dead-reckoned.
    ego: [f64; 3],
    /// Per object: track id, label, x, y, yaw, length, width, vx, vy (relative, base_link),
    /// time to collision (s, or null).
    objects: Vec<(u32, &'static str, f64, f64, f64, f64, f64, f64, f64, Option<f64>)>,
}

#[derive(Serialize)]
struct Thumbnail {
    t: f64,
    png_base64: String,
    /// Thumbnail pixels per image pixel.
    scale: f64,
    width: u32,
    height: u32,
    /// Detector boxes (label, score, x0, y0, x1, y1 in image pixels); null when it did not run.
    detections: Option<Vec<(&'static str, f32, [f32; 4])>>,
    lidar_boxes: Vec<[f32; 4]>,
    tracks: Vec<(u32, [f32; 4])>,
}

#[derive(Serialize)]
struct EventMark {
    #[serde(flatten)]
    event: Value,
    t: f64,
    onset_t: f64,
    /// Position in the odometry frame of the bird's-eye view.
    world: [f64; 2],
    thumbnail: Option<usize>,
}

/// Everything a report needs, gathered while the replay runs.
#[derive(Default)]
pub struct ReportCollector {
    start: Option<StampNs>,
    last_frame: Option<StampNs>,
    /// Dead-reckoned ego pose (x, y) and the stamp it is for; yaw from the IMU's orientation.
    position: [f64; 2],
    pose_stamp: Option<StampNs>,
    yaw: f64,
    speed: f64,
    frames: Vec<Frame>,
    // One entry per set.
    set_t: Vec<f64>,
    set_latency_ms: Vec<f64>,
    set_missing: Vec<Vec<&'static str>>,
    stage_us: BTreeMap<&'static str, Vec<u64>>,
    latest_view: Option<CameraView>,
    thumbnails: Vec<Thumbnail>,
    thumbnail_of_stamp: Option<(StampNs, usize)>,
    events: Vec<EventMark>,
}

impl ReportCollector {
    fn seconds(&mut self, stamp: StampNs) -> f64 {
        (stamp - *self.start.get_or_insert(stamp)) as f64 * 1e-9
    }

    pub fn on_imu(&mut self, imu: &ImuState) {
        self.yaw = imu.orientation.euler_angles().2;
    }

    /// One released set, with its end-to-end latency (ms) and named stage times (µs).
    pub fn on_set(&mut self, set: &SetOutput, latency_ms: f64, stages: &[(&'static str, u64)]) {
        let t = self.seconds(set.stamp);
        if let Some(prev) = self.pose_stamp.filter(|&p| set.stamp > p) {
            let dt = (set.stamp - prev) as f64 * 1e-9;
            self.position[0] += self.speed * dt * self.yaw.cos();
            self.position[1] += self.speed * dt * self.yaw.sin();
        }
        self.pose_stamp = Some(set.stamp);
        if let Some(v) = set.ego_speed {
            self.speed = v;
        }
        self.set_t.push(round3(t));
        self.set_latency_ms.push(round3(latency_ms));
        self.set_missing.push(set.missing.clone());
        for (name, us) in stages {
            self.stage_us.entry(name).or_default().push(*us);
        }
        if let Some(view) = set.camera_view(fusion::Sensor::Camera.as_str()) {
            self.latest_view = Some(view.clone());
        }
        // A set behind the last frame is a new timeline (a looped bag): frames start again.
        if self.last_frame.is_some_and(|l| (0..FRAME_SPACING_NS).contains(&(set.stamp - l))) {
            return;
        }
        self.last_frame = Some(set.stamp);
        let objects = set
            .objects
            .iter()
            .map(|o| {
                let r = |x: f64| (x * 100.0).round() / 100.0;
                (
                    o.track_id,
                    o.label.as_str(),
                    r(o.center[0]),
                    r(o.center[1]),
                    r(o.yaw),
                    r(o.size[0]),
                    r(o.size[1]),
                    r(o.velocity[0]),
                    r(o.velocity[1]),
                    o.time_to_collision.map(r),
                )
            })
            .collect();
        let ego = [round3(self.position[0]), round3(self.position[1]), round3(self.yaw)];
        self.frames.push(Frame { t: round3(t), ego, objects });
    }

    pub fn on_event(&mut self, e: &Event) {
        let t = self.seconds(e.stamp_ns);
        let onset_t = self.seconds(e.onset_ns.min(e.stamp_ns));
        let (c, s) = (self.yaw.cos(), self.yaw.sin());
        let [x, y, _] = e.position;
        let world = [round3(self.position[0] + c * x - s * y), round3(self.position[1] + s * x + c * y)];
        let thumbnail = self.thumbnail_for();
        let event = serde_json::to_value(e).unwrap_or(Value::Null);
        self.events.push(EventMark { event, t: round3(t), onset_t: round3(onset_t), world, thumbnail });
    }

    /// The newest camera frame's thumbnail (made once per frame), while there is room.
    fn thumbnail_for(&mut self) -> Option<usize> {
        let view = self.latest_view.as_ref()?;
        if let Some((_, i)) = self.thumbnail_of_stamp.filter(|(s, _)| *s == view.stamp) {
            return Some(i);
        }
        if self.thumbnails.len() >= MAX_THUMBNAILS {
            return None;
        }
        let view = view.clone();
        let t = round3(self.seconds(view.stamp));
        let (png, scale, width, height) = match thumbnail_png(&view.image) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("report: camera frame at {} ns not encoded: {e}", view.stamp);
                return None;
            }
        };
        self.thumbnails.push(Thumbnail {
            t,
            png_base64: base64::engine::general_purpose::STANDARD.encode(png),
            scale,
            width,
            height,
            detections: view.detections.map(|d| d.iter().map(|d| (d.label.as_str(), d.score, d.bbox)).collect()),
            lidar_boxes: view.lidar_boxes,
            tracks: view.tracks,
        });
        let i = self.thumbnails.len() - 1;
        self.thumbnail_of_stamp = Some((view.stamp, i));
        Some(i)
    }
}

/// What the run was, beyond what the collector saw: written into the page as given.
pub struct RunInfo {
    pub source: String,
    pub calibration: Calibration,
    pub extrinsics: Value,
    pub params: Value,
    /// Model names and the sha256 of their weights, by role.
    pub models: serde_json::Map<String, Value>,
    pub metrics: Value,
    pub timing: Value,
    pub target_ms: f64,
    pub hard_ms: f64,
    /// fusion_sim's ground_truth.jsonl, when the run has one.
    pub ground_truth: Option<std::path::PathBuf>,
}

/// The report's JSON (what the page draws); `summaries` are `fusion_replay --summaries`'s
/// records (stamp_ns, text, fallback, event_ids).
pub fn data(c: &ReportCollector, run: &RunInfo, summaries: &[Value]) -> Result<Value> {
    let start = c.start.unwrap_or(0);
    let summaries: Vec<Value> = summaries
        .iter()
        .map(|s| {
            let t = s["stamp_ns"].as_i64().map(|ns| round3((ns - start) as f64 * 1e-9));
            json!({"t": t, "text": s["text"], "fallback": s["fallback"], "event_ids": s["event_ids"],
                   "model": s["model"], "fallback_reason": s["fallback_reason"]})
        })
        .collect();
    let histogram = |values: &mut dyn Iterator<Item = f64>| {
        let mut counts = vec![0u64; LATENCY_EDGES_MS.len() + 1];
        for v in values {
            counts[LATENCY_EDGES_MS.iter().position(|&e| v <= e).unwrap_or(LATENCY_EDGES_MS.len())] += 1;
        }
        counts
    };
    let stages: BTreeMap<&str, Vec<u64>> =
        c.stage_us.iter().map(|(name, us)| (*name, histogram(&mut us.iter().map(|&u| u as f64 / 1000.0)))).collect();
    let truth = match &run.ground_truth {
        Some(path) => Some(score_against_truth(path, &c.events.iter().map(|e| &e.event).collect::<Vec<_>>(), start)?),
        None => None,
    };
    Ok(json!({
        "source": run.source,
        "start_ns": start,
        "duration_s": c.set_t.last().copied().unwrap_or(0.0),
        "lanes": LANES,
        "deadlines_ms": [run.target_ms, run.hard_ms],
        "sets": {"t": c.set_t, "latency_ms": c.set_latency_ms, "missing": c.set_missing},
        "frames": c.frames,
        "events": c.events,
        "thumbnails": c.thumbnails,
        "summaries": summaries,
        "zones": run.calibration.safety_zones,
        "latency": {"edges_ms": LATENCY_EDGES_MS, "end_to_end": histogram(&mut c.set_latency_ms.iter().copied()),
                    "stages": stages},
        "metrics": run.metrics,
        "timing": run.timing,
        "produced_by": {
            "tool": format!("fusion_replay {}", env!("CARGO_PKG_VERSION")),
            "command": std::env::args().collect::<Vec<_>>(),
            "executable_sha256": executable_sha256(),
            "ros_distro": std::env::var("ROS_DISTRO").unwrap_or_default(),
            "rmw": std::env::var("RMW_IMPLEMENTATION").unwrap_or_default(),
            "models": run.models,
            "extrinsics": run.extrinsics,
            "params": run.params,
            "calibration": serde_norway::to_string(&run.calibration)?,
        },
        "truth": truth,
    }))
}

/// Writes the page: the template with the run's JSON in it, every `<` written as `\u003c`
/// (valid JSON, only ever inside strings) so no text in the data can end or confuse the
/// script element.
pub fn write(path: &Path, data: &Value) -> Result<()> {
    let json = serde_json::to_string(data)?.replace('<', "\\u003c");
    let html = TEMPLATE.replacen("__REPORT_DATA__", &json, 1);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn executable_sha256() -> String {
    std::env::current_exe().and_then(std::fs::read).map(|bytes| models::runtime::sha256_hex(&bytes)).unwrap_or_default()
}

/// The frame shrunk to [`THUMBNAIL_WIDTH`] (box average) as PNG: bytes, scale, size.
fn thumbnail_png(img: &Rgb8) -> Result<(Vec<u8>, f64, u32, u32)> {
    anyhow::ensure!(img.width > 0 && img.height > 0, "empty image");
    anyhow::ensure!(img.data.len() >= (img.width * img.height * 3) as usize, "image data shorter than its size");
    let step = img.width.div_ceil(THUMBNAIL_WIDTH).max(1);
    let (w, h) = (img.width / step, img.height / step);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let mut sum = 0u32;
                for dy in 0..step {
                    for dx in 0..step {
                        let i = (((y * step + dy) * img.width + x * step + dx) * 3 + ch) as usize;
                        sum += img.data[i] as u32;
                    }
                }
                rgb.push((sum / (step * step)) as u8);
            }
        }
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&rgb)?;
    }
    Ok((png, 1.0 / step as f64, w, h))
}

/// Ground truth against the run's events, as `scripts/evaluate_replay.py` scores them: a
/// true event is detected by an event of its kind (naming its sensor, for sensor events)
/// from 0.5 s before its onset to 1 s after its end; an event near no true window of its
/// kind (±1 s) is a false alarm. Per kind: true events, detected, delays, false alarms.
fn score_against_truth(path: &Path, events: &[&Value], start: StampNs) -> Result<Value> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut truth = vec![];
    for line in std::io::BufReader::new(file).lines() {
        let r: Value = serde_json::from_str(&line?).with_context(|| format!("{} is not JSON lines", path.display()))?;
        if r["type"] == "event" {
            truth.push(r);
        }
    }
    let stamp = |e: &Value| e["stamp_ns"].as_i64().unwrap_or(0);
    let mut matched = vec![false; events.len()];
    let mut per_kind: BTreeMap<String, Value> = BTreeMap::new();
    let mut windows = vec![];
    for g in &truth {
        let kind = g["kind"].as_str().unwrap_or("").to_string();
        let (onset, offset) = (g["onset_ns"].as_i64().unwrap_or(0), g["offset_ns"].as_i64().unwrap_or(0));
        let sensor = g["sensor"].as_str();
        let hits: Vec<usize> = (0..events.len())
            .filter(|&i| {
                let e = events[i];
                e["kind"] == kind.as_str()
                    && (onset - 500_000_000..=offset + 1_000_000_000).contains(&stamp(e))
                    && sensor.is_none_or(|s| e["sensors"].as_array().is_some_and(|a| a.iter().any(|x| x == s)))
            })
            .collect();
        for &i in &hits {
            matched[i] = true;
        }
        let delay = hits.iter().map(|&i| stamp(events[i])).min().map(|first| round3((first - onset) as f64 * 1e-9));
        windows.push((kind.clone(), onset, offset));
        let k = per_kind
            .entry(kind)
            .or_insert_with(|| json!({"truth": 0, "detected": 0, "delays_s": [], "false_alarms": 0, "missed": []}));
        k["truth"] = json!(k["truth"].as_u64().unwrap_or(0) + 1);
        match delay {
            Some(d) => {
                k["detected"] = json!(k["detected"].as_u64().unwrap_or(0) + 1);
                k["delays_s"].as_array_mut().expect("array").push(json!(d));
            }
            None => k["missed"].as_array_mut().expect("array").push(json!({
                "onset_t": round3((onset - start) as f64 * 1e-9), "sensor": sensor})),
        }
    }
    let mut false_alarms = vec![];
    for (i, e) in events.iter().enumerate() {
        let kind = e["kind"].as_str().unwrap_or("");
        let near = windows
            .iter()
            .any(|(k, on, off)| k == kind && (on - 1_000_000_000..=off + 1_000_000_000).contains(&stamp(e)));
        if matched[i] || near {
            continue;
        }
        false_alarms.push(e["event_id"].clone());
        let k = per_kind
            .entry(kind.to_string())
            .or_insert_with(|| json!({"truth": 0, "detected": 0, "delays_s": [], "false_alarms": 0, "missed": []}));
        k["false_alarms"] = json!(k["false_alarms"].as_u64().unwrap_or(0) + 1);
    }
    Ok(json!({"per_kind": per_kind, "false_alarm_event_ids": false_alarms, "truth_events": truth.len()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbnail_is_a_png_of_the_frame_shrunk() {
        let (w, h) = (640u32, 480u32);
        let mut data = vec![0u8; (w * h * 3) as usize];
        // Left half red, right half blue: the shrunk image keeps the split.
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 3) as usize;
                if x < w / 2 {
                    data[i] = 255
                } else {
                    data[i + 2] = 255
                }
            }
        }
        let (png_bytes, scale, tw, th) = thumbnail_png(&Rgb8 { width: w, height: h, data }).expect("encodes");
        assert_eq!((scale, tw, th), (0.5, 320, 240));
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("frame");
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(&buf[..3], &[255, 0, 0]);
        let last = buf.len() - 3;
        assert_eq!(&buf[last..], &[0, 0, 255]);
    }

    #[test]
    fn truth_is_scored_as_evaluate_replay_scores_it() {
        let dir = std::env::temp_dir().join(format!("report_truth_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ground_truth.jsonl");
        std::fs::write(
            &path,
            "{\"type\":\"event\",\"kind\":\"zone_intrusion\",\"onset_ns\":2000000000,\"offset_ns\":4000000000}\n\
             {\"type\":\"event\",\"kind\":\"sensor_dropout\",\"sensor\":\"lidar\",\"onset_ns\":6000000000,\"offset_ns\":7000000000}\n\
             {\"type\":\"frame\",\"stamp_ns\":0,\"actors\":[]}\n",
        )
        .expect("write");
        let ev = |id: u64, kind: &str, stamp: i64, sensors: &[&str]| json!({"event_id": id, "kind": kind, "stamp_ns": stamp, "sensors": sensors});
        let events = [
            ev(1, "zone_intrusion", 2_300_000_000, &[]),
            // The wrong sensor: no detection, but near its window, so no false alarm either.
            ev(2, "sensor_dropout", 6_200_000_000, &["radar"]),
            ev(3, "collision_risk", 9_000_000_000, &[]),
        ];
        let refs: Vec<&Value> = events.iter().collect();
        let s = score_against_truth(&path, &refs, 0).expect("scores");
        assert_eq!(s["per_kind"]["zone_intrusion"]["detected"], 1);
        assert_eq!(s["per_kind"]["zone_intrusion"]["delays_s"][0], 0.3);
        assert_eq!(s["per_kind"]["sensor_dropout"]["detected"], 0);
        assert_eq!(s["per_kind"]["sensor_dropout"]["false_alarms"], 0);
        assert_eq!(s["per_kind"]["collision_risk"]["false_alarms"], 1);
        assert_eq!(s["false_alarm_event_ids"], json!([3]));
        std::fs::remove_dir_all(&dir).ok();
    }
}
