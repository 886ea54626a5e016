//! Anomaly rules: each turns fused tracks or a sensor's own stream into events, once per
//! occurrence (a rule re-arms only after its condition has cleared), and every event
//! carries the evidence that fired it — the rule, the measured value and its threshold,
//! the sensors and tracks involved — so a summary can explain itself.
//!
//! Time is the data's own (message stamps), so a replay gives the same events at any speed.
use crate::{
    calib::SafetyZone,
    camera::Rgb8,
    detect::Label,
    sensors::{SensorId, SensorSet},
    StampNs,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The sensor kinds, in the order a [`SensorSet`] sorts them by. Each declared sensor has a
/// kind and a name ([`crate::sensors`]); the standard set names each sensor by its kind.
/// [`Sensor::bit`] is the `FusedObject.SENSOR_*` bit (a test in `nodes` ties them to the
/// message): objects record which kinds saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensor {
    Camera,
    Lidar,
    Radar,
    Imu,
}

impl Sensor {
    pub const ALL: [Sensor; 4] = [Sensor::Camera, Sensor::Lidar, Sensor::Radar, Sensor::Imu];

    /// Its place in per-sensor arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its bit in a set of sensors that observed an object (`FusedObject.sensors`); the IMU
    /// observes none.
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sensor::Camera => "camera",
            Sensor::Lidar => "lidar",
            Sensor::Radar => "radar",
            Sensor::Imu => "imu",
        }
    }
}

impl std::fmt::Display for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const INFO: u8 = 0;
pub const WARN: u8 = 1;
pub const ERROR: u8 = 2;

/// Rule thresholds; every one is a `fusion_node` parameter (`anomaly.<name>`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct AnomalyParams {
    /// collision_risk: time-to-collision below this (s) for an object in the ego lane.
    pub ttc_threshold_s: f64,
    /// Half width of the ego lane (m): objects with |y| beyond it are not on a collision course.
    pub lane_half_width: f64,
    /// Closing speeds below this (m/s) are noise, not a collision course.
    pub min_closing_speed: f64,
    /// The rule re-arms for a track once its TTC is above threshold + this (s).
    pub ttc_clear_margin_s: f64,
    /// sensor_dropout: silent for more than this many expected periods, ...
    pub dropout_periods: f64,
    /// ... and for more than this (s). A fast stream's few periods are shorter than the
    /// scheduling jitter of a loaded host: the 200 Hz IMU's 3 periods are 15 ms, while its
    /// messages reached fusion_node in 40-60 ms clumps under nominal load (30-minute soak:
    /// 922 false IMU dropouts without this floor).
    pub dropout_min_silence_s: f64,
    /// A stream in dropout is back once it has delivered for this long (s) without another
    /// silence beyond its limit; the silences until then are the same outage. Over a lossy
    /// link (1 % packet loss between two hosts), repaired samples came in clumps a heartbeat
    /// apart and the IMU and LiDAR streams flapped: 122 dropout/recovery events in 6 s,
    /// each one summarized, without this. 0 = back at the first message.
    pub dropout_recovery_s: f64,
    /// A declared sensor that has delivered nothing this long (s) after the first message of
    /// any stream is in dropout (`stream_never_started`): a node not launched, a driver on
    /// another topic. Until then it is `never_received`, not a dropout (start-up, a bag's
    /// first instants); after, the sets stop waiting for it. 0 = never.
    pub never_started_s: f64,
    /// Expected rates (Hz) of camera, lidar, radar, imu.
    pub expected_rate_hz: [f64; 4],
    /// sensor_degraded (camera): blinded = mean luma below `blind_dark` or above
    /// `blind_bright` with a standard deviation under `blind_max_std`, for `degraded_frames`.
    pub blind_dark: f64,
    pub blind_bright: f64,
    pub blind_max_std: f64,
    pub degraded_frames: u32,
    /// Frozen image: this many consecutive identical frames.
    pub frozen_frames: u32,
    /// sensor_degraded (lidar): fraction of NaN/Inf returns in a sweep.
    pub lidar_max_non_finite_ratio: f64,
    /// sensor_degraded (imu): an axis at or beyond this (m/s²) is saturated.
    pub imu_saturation_accel: f64,
    /// impact: specific force minus gravity above this (m/s²); one event per shock.
    pub impact_accel: f64,
    pub impact_refractory_s: f64,
    /// sensor_disagreement: an object confirmed by LiDAR and radar in the camera's view
    /// that the camera misses for this many consecutive frames (and the reverse).
    pub disagreement_frames: u32,
    /// deadline_overrun: hard-deadline misses over the last `deadline_window` sets above this ratio.
    pub deadline_miss_ratio: f64,
    pub deadline_window: usize,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        Self {
            ttc_threshold_s: 3.0,
            lane_half_width: 1.8,
            min_closing_speed: 0.5,
            ttc_clear_margin_s: 0.5,
            dropout_periods: 3.0,
            dropout_min_silence_s: 0.2,
            dropout_recovery_s: 1.0,
            never_started_s: 3.0,
            expected_rate_hz: [30.0, 10.0, 20.0, 200.0],
            blind_dark: 15.0,
            blind_bright: 240.0,
            blind_max_std: 8.0,
            degraded_frames: 3,
            frozen_frames: 5,
            lidar_max_non_finite_ratio: 0.2,
            imu_saturation_accel: 156.9,
            impact_accel: 3.0 * 9.80665,
            impact_refractory_s: 1.0,
            disagreement_frames: 5,
            deadline_miss_ratio: 0.05,
            deadline_window: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// An anomaly event (fusion_msgs/AnomalyEvent without ROS).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub event_id: u64,
    /// When the rule fired (data time).
    pub stamp_ns: StampNs,
    pub kind: EventKind,
    pub severity: u8,
    pub rule: &'static str,
    pub measured_value: f64,
    pub threshold: f64,
    pub sensors: Vec<&'static str>,
    pub track_ids: Vec<u32>,
    pub zone: String,
    pub position: [f64; 3],
    /// When the condition started to hold.
    pub onset_ns: StampNs,
    pub evidence: Vec<KeyValue>,
}

/// What an event is about: `fusion_msgs/AnomalyEvent`'s `kind`, one value per `KIND_*`
/// constant of that message (a test in `nodes` reads the .msg file and fails when the two
/// drift), so a subscriber can switch on the constants and meet every kind we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ZoneIntrusion,
    CollisionRisk,
    SensorDropout,
    SensorDegraded,
    SensorDisagreement,
    Impact,
    DeadlineOverrun,
    /// The camera model out of its depth (inputs or outputs outside the training ranges,
    /// or no detector at all).
    ModelDegraded,
    /// Data time leapt (a bag loop, a seek); INFO, so a reader knows why gaps follow.
    TimeJump,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::ZoneIntrusion,
        EventKind::CollisionRisk,
        EventKind::SensorDropout,
        EventKind::SensorDegraded,
        EventKind::SensorDisagreement,
        EventKind::Impact,
        EventKind::DeadlineOverrun,
        EventKind::ModelDegraded,
        EventKind::TimeJump,
    ];

    /// The wire string (`AnomalyEvent.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ZoneIntrusion => "zone_intrusion",
            EventKind::CollisionRisk => "collision_risk",
            EventKind::SensorDropout => "sensor_dropout",
            EventKind::SensorDegraded => "sensor_degraded",
            EventKind::SensorDisagreement => "sensor_disagreement",
            EventKind::Impact => "impact",
            EventKind::DeadlineOverrun => "deadline_overrun",
            EventKind::ModelDegraded => "model_degraded",
            EventKind::TimeJump => "time_jump",
        }
    }

    /// The kind a wire string names; `None` for one we never publish.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A confirmed track as the rules see it (base_link, velocity relative to the ego).
#[derive(Debug, Clone)]
pub struct TrackView {
    pub id: u32,
    pub label: Label,
    pub position: [f64; 2],
    pub z: f64,
    pub size: [f64; 3],
    pub rel_velocity: [f64; 2],
    pub sensors: u8,
}

/// Time to collision for an object in the ego lane closing in, else +inf.
pub fn time_to_collision(t: &TrackView, p: &AnomalyParams) -> f64 {
    let closing = -t.rel_velocity[0];
    let gap = t.position[0] - t.size[0] / 2.0;
    if t.position[1].abs() < p.lane_half_width && gap > 0.0 && closing > p.min_closing_speed {
        gap / closing
    } else {
        f64::INFINITY
    }
}

/// A stream as the dropout rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Nothing accepted yet: not a dropout (start-up), reported on /diagnostics.
    NeverReceived,
    Receiving,
    /// Reported as `sensor_dropout`, not back yet.
    Silent,
    /// In dropout, delivering again, but not yet for `dropout_recovery_s`.
    Recovering,
}

impl StreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::NeverReceived => "never_received",
            StreamState::Receiving => "receiving",
            StreamState::Silent => "silent",
            StreamState::Recovering => "recovering",
        }
    }
}

/// A stream's outage, from its first silence beyond the dropout limit until it is back.
#[derive(Debug, Clone, Copy)]
struct Outage {
    /// The last message before the outage.
    last_before: StampNs,
    /// Silences beyond the limit in this outage (a flapping stream has several).
    gaps: u32,
    /// Their total length (ns), counted as each one ends.
    silent_ns: i64,
    /// Delivering again since this stamp; None while silent.
    back_since: Option<StampNs>,
    /// The stream never delivered: `last_before` is when the other streams started.
    never_started: bool,
}

/// Per camera-checked track: did the camera see it?
#[derive(Debug, Clone)]
pub struct CameraCheck {
    pub track_id: u32,
    pub position: [f64; 2],
    pub seen_by_camera: bool,
}

fn kv(key: &str, value: impl std::fmt::Display) -> KeyValue {
    KeyValue { key: key.into(), value: value.to_string() }
}

fn secs(ns: i64) -> f64 {
    ns as f64 * 1e-9
}

/// Consecutive frames a disagreement has held, since when, and whether it was reported.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    frames: u32,
    onset: StampNs,
    reported: bool,
}

impl Run {
    /// One more frame at `stamp`; true when this frame reaches `k` (reported once).
    fn advance(self, stamp: StampNs, k: u32) -> (Run, bool) {
        let onset = if self.frames == 0 { stamp } else { self.onset };
        let frames = self.frames + 1;
        let fire = frames >= k && !self.reported;
        (Run { frames, onset, reported: self.reported || fire }, fire)
    }
}

/// One camera's rule state.
#[derive(Default, Clone)]
struct CameraRules {
    health: CameraState,
    /// Tracks this camera missed, and their runs.
    misses: BTreeMap<u32, Run>,
    /// This camera's detections nothing else supports, and their runs.
    phantoms: Vec<([f32; 4], Run)>,
}

#[derive(Default, Clone)]
struct CameraState {
    blind_run: u32,
    frozen_run: u32,
    good_run: u32,
    last_hash: Option<u64>,
    onset: Option<StampNs>,
    active: bool,
}

pub struct AnomalyDetector {
    pub params: AnomalyParams,
    zones: Vec<SafetyZone>,
    next_id: u64,
    /// The robot's sensors: per-sensor state below is indexed by [`SensorId`].
    sensors: SensorSet,
    /// Each stream's expected rate (Hz): its kind's `expected_rate_hz` unless the robot
    /// declares the sensor's own (`rate_hz` in the calibration).
    rates_hz: Vec<f64>,
    last_seen: Vec<Option<StampNs>>,
    /// The first message of any stream in this timeline.
    started: Option<StampNs>,
    /// Each stream's outage, from its `sensor_dropout` until it is back.
    outage: Vec<Option<Outage>>,
    /// Per camera (indexed by sensor; unused for other kinds): its health and its
    /// sensor_disagreement runs, each camera judged in its own field of view.
    cameras: Vec<CameraRules>,
    /// Per LiDAR (indexed by sensor): its last sweep had too many NaN/Inf returns.
    lidar_degraded: Vec<bool>,
    imu_saturated_until: StampNs,
    impact_until: StampNs,
    in_zone: BTreeSet<(u32, usize)>,
    ttc_active: BTreeSet<u32>,
    deadline: std::collections::VecDeque<bool>,
    deadline_active: bool,
}

impl AnomalyDetector {
    /// Data time jumped from `previous` to `stamp` on `sensor`'s stream — back (a bag loop, a
    /// clock reset) or forward (a seek, a recording cut): every stream's, track's and rule's
    /// state starts over — the same intrusion may fire again in the new timeline, and no
    /// stream is declared silent for the time skipped — while event ids keep counting, so
    /// they stay unique for the run. Returns the `time_jump` event (INFO) that says so.
    pub fn restart_timeline(
        &mut self,
        sensor: SensorId,
        stamp: StampNs,
        previous: StampNs,
        threshold_ns: i64,
    ) -> Event {
        let (next_id, rates_hz) = (self.next_id, std::mem::take(&mut self.rates_hz));
        *self = AnomalyDetector::with_sensors(self.params, std::mem::take(&mut self.zones), self.sensors.clone());
        (self.next_id, self.rates_hz) = (next_id, rates_hz);
        let (rule, evidence_key, jump) = if stamp < previous {
            ("data_time_went_back", "jump_back_s", previous.saturating_sub(stamp))
        } else {
            ("data_time_went_forward", "jump_forward_s", stamp.saturating_sub(previous))
        };
        let mut e = self.event(
            stamp,
            EventKind::TimeJump,
            INFO,
            rule,
            secs(jump),
            secs(threshold_ns),
            vec![self.sensors.name(sensor)],
            stamp,
        );
        e.evidence = vec![
            kv(evidence_key, format!("{:.3}", secs(jump))),
            kv("previous_time_s", format!("{:.3}", secs(previous))),
            kv("new_time_s", format!("{:.3}", secs(stamp))),
        ];
        e
    }

    /// Whether any stream is in dropout now: then a gap in data time is that outage, not a
    /// jump of the clock.
    pub fn any_dropout_active(&self) -> bool {
        // A stream that never started is no gap in the data time of the others: a seek in the
        // bag must still restart the timeline on a robot with an unplugged sensor.
        self.outage.iter().flatten().any(|o| !o.never_started)
    }

    /// The camera detector could not be loaded at start-up: one `model_degraded` event
    /// (`detector_unavailable`, ERROR) with the reason as evidence.
    pub fn detector_unavailable(&mut self, stamp: StampNs, why: String) -> Event {
        let mut e =
            self.event(stamp, EventKind::ModelDegraded, ERROR, "detector_unavailable", 0.0, 0.0, self.cameras(), stamp);
        e.evidence = vec![kv("error", why)];
        e
    }

    /// The newest stamp accepted from `sensor` in this timeline.
    pub fn last_seen(&self, sensor: SensorId) -> Option<StampNs> {
        self.last_seen[sensor.index()]
    }

    /// The rules for the standard sensor set (DESIGN.md §3).
    pub fn new(params: AnomalyParams, zones: Vec<SafetyZone>) -> Self {
        Self::with_sensors(params, zones, SensorSet::standard())
    }

    /// The rules for a robot's declared sensors.
    pub fn with_sensors(params: AnomalyParams, zones: Vec<SafetyZone>, sensors: SensorSet) -> Self {
        Self {
            rates_hz: sensors.ids().map(|s| params.expected_rate_hz[sensors.kind(s).index()]).collect(),
            params,
            zones,
            next_id: 1,
            last_seen: vec![None; sensors.len()],
            started: None,
            outage: vec![None; sensors.len()],
            lidar_degraded: vec![false; sensors.len()],
            cameras: vec![CameraRules::default(); sensors.len()],
            sensors,
            imu_saturated_until: i64::MIN,
            impact_until: i64::MIN,
            in_zone: BTreeSet::new(),
            ttc_active: BTreeSet::new(),
            deadline: Default::default(),
            deadline_active: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        stamp: StampNs,
        kind: EventKind,
        severity: u8,
        rule: &'static str,
        measured: f64,
        threshold: f64,
        sensors: Vec<&'static str>,
        onset: StampNs,
    ) -> Event {
        let e = Event {
            event_id: self.next_id,
            stamp_ns: stamp,
            kind,
            severity,
            rule,
            measured_value: measured,
            threshold,
            sensors,
            track_ids: vec![],
            zone: String::new(),
            position: [0.0; 3],
            onset_ns: onset,
            evidence: vec![],
        };
        self.next_id += 1;
        e
    }

    /// Gives an event raised elsewhere (model monitoring) the next event id.
    pub fn number(&mut self, mut e: Event) -> Event {
        e.event_id = self.next_id;
        self.next_id += 1;
        e
    }

    /// The sensor set the rules keep state for.
    pub fn sensors(&self) -> &SensorSet {
        &self.sensors
    }

    /// Every camera's configured name, as events name them.
    fn cameras(&self) -> Vec<&'static str> {
        self.sensors.of_kind(Sensor::Camera).map(|id| self.sensors.name(id)).collect()
    }

    fn imu(&self) -> Vec<&'static str> {
        self.sensors.first(Sensor::Imu).map(|id| self.sensors.name(id)).into_iter().collect()
    }

    /// One camera and the sensors whose fused view it is compared with.
    fn camera_and_ranging(&self, camera: SensorId) -> Vec<&'static str> {
        let ranging = [Sensor::Lidar, Sensor::Radar].into_iter().flat_map(|k| self.sensors.of_kind(k));
        std::iter::once(self.sensors.name(camera)).chain(ranging.map(|id| self.sensors.name(id))).collect()
    }

    /// Every sensor whose data a set fuses: the cameras, LiDARs and radars.
    fn fused_sensors(&self) -> Vec<&'static str> {
        let kinds = [Sensor::Camera, Sensor::Lidar, Sensor::Radar];
        kinds.into_iter().flat_map(|k| self.sensors.of_kind(k)).map(|id| self.sensors.name(id)).collect()
    }

    /// Declares the rate `sensor` runs at (a 5 Hz rear camera, a 20 Hz LiDAR): its dropout
    /// limit is `dropout_periods` of its own period. Not finite or not positive: refused.
    pub fn set_expected_rate_hz(&mut self, sensor: SensorId, hz: f64) -> Result<(), String> {
        if !(hz.is_finite() && hz > 0.0) {
            return Err(format!("{}: an expected rate must be above 0 Hz, got {hz}", self.sensors.name(sensor)));
        }
        self.rates_hz[sensor.index()] = hz;
        Ok(())
    }

    /// A stream's expected period, from its expected rate.
    fn period_ns(&self, s: SensorId) -> i64 {
        (1e9 / self.rates_hz[s.index()]).round() as i64
    }

    /// A message of `sensor` was accepted. A stream in dropout is back once it has delivered
    /// for `dropout_recovery_s` with no silence beyond its limit: its dropout rule re-arms and
    /// one `sensor_dropout` event with rule `stream_recovered` (INFO) says how long it was gone
    /// in all and in how many silences, so whoever saw the dropout also sees its end, and a
    /// flapping stream is one outage, not an event pair per gap.
    pub fn on_message(&mut self, sensor: SensorId, stamp: StampNs) -> Option<Event> {
        let i = sensor.index();
        let previous = self.last_seen[i];
        if previous.is_none_or(|l| stamp > l) {
            self.last_seen[i] = Some(stamp);
        }
        self.started.get_or_insert(stamp);
        let limit = self.dropout_limit_ns(sensor);
        let hold = (self.params.dropout_recovery_s.max(0.0) * 1e9) as i64;
        let o = self.outage[i].as_mut()?;
        // A stream that never started has been silent since the others started.
        let gap = previous.map_or(stamp.saturating_sub(o.last_before), |p| stamp.saturating_sub(p));
        match o.back_since {
            None => {
                o.silent_ns += gap;
                o.back_since = Some(stamp);
            }
            // Silent again beyond the limit between two ticks: the same outage.
            Some(_) if gap > limit => {
                o.gaps += 1;
                o.silent_ns += gap;
                o.back_since = Some(stamp);
            }
            Some(_) => {}
        }
        if stamp - o.back_since.unwrap_or(stamp) < hold {
            return None;
        }
        let o = self.outage[i].take()?;
        let period = self.period_ns(sensor) as f64;
        let mut e = self.event(
            stamp,
            EventKind::SensorDropout,
            INFO,
            "stream_recovered",
            o.silent_ns as f64 / period,
            limit as f64 / period,
            vec![self.sensors.name(sensor)],
            o.last_before,
        );
        let before = if o.never_started { "waited_since_s" } else { "last_message_stamp_s" };
        e.evidence = vec![
            kv("silent_s", format!("{:.3}", secs(o.silent_ns))),
            kv(before, format!("{:.3}", secs(o.last_before))),
            kv("silences", o.gaps),
        ];
        Some(e)
    }

    /// Where each stream stands for the dropout rule, in the sensor set's order.
    pub fn stream_states(&self) -> Vec<StreamState> {
        self.sensors
            .ids()
            .map(|s| match self.last_seen[s.index()] {
                // Past `never_started_s`, a stream that never delivered is reported silent.
                None if self.outage[s.index()].is_some() => StreamState::Silent,
                None => StreamState::NeverReceived,
                Some(_) => match self.outage[s.index()] {
                    None => StreamState::Receiving,
                    Some(Outage { back_since: Some(_), .. }) => StreamState::Recovering,
                    Some(_) => StreamState::Silent,
                },
            })
            .collect()
    }

    /// The silence (ns) after which `sensor` is in dropout: `dropout_periods` of its expected
    /// periods, never less than `dropout_min_silence_s`.
    fn dropout_limit_ns(&self, sensor: SensorId) -> i64 {
        let periods = self.params.dropout_periods * self.period_ns(sensor) as f64;
        periods.max(self.params.dropout_min_silence_s * 1e9) as i64
    }

    /// sensor_dropout: every stream that has delivered at least once and has then been
    /// silent for longer than its `dropout_limit_ns` at `now`. A stream that has not
    /// started (node start-up, a bag's first instants, a respawned node) is not a dropout:
    /// it is `never_received` in [`Self::stream_states`], until `never_started_s` after the
    /// first message of any stream (`stream_never_started`: a declared sensor whose node is
    /// not running or whose driver publishes elsewhere).
    pub fn check_dropouts(&mut self, now: StampNs) -> Vec<Event> {
        let mut out = vec![];
        for s in self.sensors.clone().ids() {
            let period = self.period_ns(s);
            let Some(last) = self.last_seen[s.index()] else {
                out.extend(self.check_never_started(s, now));
                continue;
            };
            let silent = now - last;
            let limit = self.dropout_limit_ns(s);
            if silent <= limit {
                continue;
            }
            if let Some(o) = self.outage[s.index()].as_mut() {
                // Silent again while coming back: the same outage, no second event.
                if o.back_since.take().is_some() {
                    o.gaps += 1;
                }
                continue;
            }
            self.outage[s.index()] =
                Some(Outage { last_before: last, gaps: 1, silent_ns: 0, back_since: None, never_started: false });
            let periods = silent as f64 / period as f64;
            let mut e = self.event(
                now,
                EventKind::SensorDropout,
                ERROR,
                "stream_silent",
                periods,
                limit as f64 / period as f64,
                vec![self.sensors.name(s)],
                last + period,
            );
            e.evidence = vec![
                kv("silent_s", format!("{:.3}", secs(silent))),
                kv("expected_rate_hz", self.rates_hz[s.index()]),
                kv("last_message_stamp_s", format!("{:.3}", secs(last))),
            ];
            out.push(e);
        }
        out
    }

    /// `stream_never_started` for `s`, once, when it has delivered nothing `never_started_s`
    /// after the first message of any stream.
    fn check_never_started(&mut self, s: SensorId, now: StampNs) -> Option<Event> {
        let (started, wait) = (self.started?, (self.params.never_started_s * 1e9) as i64);
        if wait <= 0 || now - started <= wait || self.outage[s.index()].is_some() {
            return None;
        }
        self.outage[s.index()] =
            Some(Outage { last_before: started, gaps: 1, silent_ns: 0, back_since: None, never_started: true });
        let mut e = self.event(
            now,
            EventKind::SensorDropout,
            ERROR,
            "stream_never_started",
            secs(now - started),
            self.params.never_started_s,
            vec![self.sensors.name(s)],
            started,
        );
        e.evidence = vec![
            kv("waited_s", format!("{:.3}", secs(now - started))),
            kv("expected_rate_hz", self.rates_hz[s.index()]),
            kv("topic", format!("sensors/{}", self.sensors.name(s))),
        ];
        Some(e)
    }

    /// sensor_degraded (one camera): blinded (dark or saturated, featureless) or frozen frames.
    pub fn on_camera_frame(&mut self, camera: SensorId, stamp: StampNs, img: &Rgb8) -> Vec<Event> {
        // Luma statistics on every 4th pixel of every 4th row: enough for a mean and spread.
        let (w, h) = (img.width as usize, img.height as usize);
        let (mut n, mut sum, mut sum2) = (0.0f64, 0.0f64, 0.0f64);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for y in (0..h).step_by(4) {
            for x in (0..w).step_by(4) {
                let i = (y * w + x) * 3;
                let (r, g, b) = (img.data[i] as f64, img.data[i + 1] as f64, img.data[i + 2] as f64);
                let l = 0.299 * r + 0.587 * g + 0.114 * b;
                n += 1.0;
                sum += l;
                sum2 += l * l;
                for v in &img.data[i..i + 3] {
                    hash = (hash ^ *v as u64).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        if n == 0.0 {
            return vec![];
        }
        let mean = sum / n;
        let std = (sum2 / n - mean * mean).max(0.0).sqrt();
        let p = &self.params;
        let blinded = (mean < p.blind_dark || mean > p.blind_bright) && std < p.blind_max_std;
        let c = &mut self.cameras[camera.index()].health;
        let frozen = c.last_hash == Some(hash);
        c.last_hash = Some(hash);
        c.blind_run = if blinded { c.blind_run + 1 } else { 0 };
        c.frozen_run = if frozen { c.frozen_run + 1 } else { 0 };
        if blinded || frozen {
            c.onset.get_or_insert(stamp);
            c.good_run = 0;
        } else {
            c.good_run += 1;
            if c.good_run >= p.degraded_frames {
                c.active = false;
                c.onset = None;
            }
        }
        let fire_blind = c.blind_run >= p.degraded_frames;
        // frozen_run counts repeats: N identical frames = N-1 repeats.
        let fire_frozen = c.frozen_run + 1 >= p.frozen_frames;
        if c.active || !(fire_blind || fire_frozen) {
            return vec![];
        }
        c.active = true;
        let onset = c.onset.unwrap_or(stamp);
        let (rule, measured, threshold) = if fire_blind {
            ("image_blinded", mean, if mean < p.blind_dark { p.blind_dark } else { p.blind_bright })
        } else {
            ("image_frozen", (c.frozen_run + 1) as f64, p.frozen_frames as f64)
        };
        let (identical, blinded) = (c.frozen_run + 1, c.blind_run);
        let name = vec![self.sensors.name(camera)];
        let mut e = self.event(stamp, EventKind::SensorDegraded, ERROR, rule, measured, threshold, name, onset);
        e.evidence = vec![
            kv("mean_luma", format!("{mean:.1}")),
            kv("luma_std", format!("{std:.1}")),
            kv("identical_frames", identical),
            kv("blinded_frames", blinded),
        ];
        vec![e]
    }

    /// The camera is currently reported blinded or frozen.
    pub fn camera_degraded(&self, camera: SensorId) -> bool {
        self.cameras[camera.index()].health.active
    }

    /// sensor_degraded (lidar): a sweep of `lidar` with too many NaN/Inf returns.
    pub fn on_lidar_health(&mut self, lidar: SensorId, stamp: StampNs, non_finite: u64, total: u64) -> Vec<Event> {
        let ratio = if total > 0 { non_finite as f64 / total as f64 } else { 0.0 };
        let bad = ratio > self.params.lidar_max_non_finite_ratio;
        let degraded = &mut self.lidar_degraded[lidar.index()];
        if !bad {
            *degraded = false;
            return vec![];
        }
        if *degraded {
            return vec![];
        }
        *degraded = true;
        let th = self.params.lidar_max_non_finite_ratio;
        let name = vec![self.sensors.name(lidar)];
        let mut e = self.event(stamp, EventKind::SensorDegraded, WARN, "cloud_non_finite", ratio, th, name, stamp);
        e.evidence = vec![kv("non_finite_points", non_finite), kv("points", total)];
        vec![e]
    }

    /// impact (shock above threshold) and sensor_degraded (accelerometer saturation) from
    /// one IMU sample in base_link (specific force, m/s²).
    pub fn on_imu(&mut self, stamp: StampNs, accel: [f64; 3]) -> Vec<Event> {
        let mut out = vec![];
        let p = self.params;
        let shock = (accel[0].powi(2) + accel[1].powi(2) + (accel[2] - 9.80665).powi(2)).sqrt();
        let refractory = (p.impact_refractory_s * 1e9) as i64;
        if shock > p.impact_accel && stamp >= self.impact_until {
            self.impact_until = stamp + refractory;
            let mut e = self.event(
                stamp,
                EventKind::Impact,
                ERROR,
                "shock_above_threshold",
                shock,
                p.impact_accel,
                self.imu(),
                stamp,
            );
            e.evidence = vec![
                kv("shock_g", format!("{:.2}", shock / 9.80665)),
                kv("accel_x", format!("{:.2}", accel[0])),
                kv("accel_y", format!("{:.2}", accel[1])),
                kv("accel_z", format!("{:.2}", accel[2])),
                kv("direction_deg", format!("{:.0}", accel[1].atan2(accel[0]).to_degrees())),
            ];
            out.push(e);
        }
        let peak = accel.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if peak >= p.imu_saturation_accel && stamp >= self.imu_saturated_until {
            self.imu_saturated_until = stamp + refractory;
            let th = p.imu_saturation_accel;
            let imu = self.imu();
            let mut e = self.event(stamp, EventKind::SensorDegraded, WARN, "imu_saturated", peak, th, imu, stamp);
            e.evidence = vec![kv("peak_axis_accel", format!("{peak:.1}"))];
            out.push(e);
        }
        out
    }

    /// zone_intrusion and collision_risk over the confirmed tracks of one set.
    pub fn on_tracks(&mut self, stamp: StampNs, tracks: &[TrackView]) -> Vec<Event> {
        let mut out = vec![];
        let p = self.params;
        let mut inside_now = BTreeSet::new();
        for t in tracks {
            if t.sensors == 0 {
                // Coasting (no sensor measured it in this set): a prediction alone neither
                // raises an event ("seen by no sensor") nor ends one, so the same intrusion
                // or risk does not fire again when a measurement comes back.
                inside_now.extend(self.in_zone.iter().filter(|(id, _)| *id == t.id).copied());
                continue;
            }
            for zi in 0..self.zones.len() {
                if self.zones[zi].contains(t.position[0], t.position[1]) {
                    inside_now.insert((t.id, zi));
                    if !self.in_zone.contains(&(t.id, zi)) {
                        let dist = t.position[0].hypot(t.position[1]);
                        let mut e = self.event(
                            stamp,
                            EventKind::ZoneIntrusion,
                            WARN,
                            "track_inside_zone",
                            dist,
                            0.0,
                            sensors(t.sensors),
                            stamp,
                        );
                        e.track_ids = vec![t.id];
                        e.zone = self.zones[zi].name.clone();
                        e.position = [t.position[0], t.position[1], t.z];
                        e.evidence = track_evidence(t);
                        e.evidence.push(kv("distance_m", format!("{dist:.2}")));
                        // How far inside: the explanation's counterfactual ("would not have
                        // fired had it stayed 0.8 m further out").
                        let depth = self.zones[zi].edge_distance(t.position[0], t.position[1]);
                        e.evidence.push(kv("zone_depth_m", format!("{depth:.2}")));
                        out.push(e);
                    }
                }
            }
            let ttc = time_to_collision(t, &p);
            if ttc < p.ttc_threshold_s {
                if self.ttc_active.insert(t.id) {
                    let sev = if ttc < p.ttc_threshold_s / 2.0 { ERROR } else { WARN };
                    let mut e = self.event(
                        stamp,
                        EventKind::CollisionRisk,
                        sev,
                        "ttc_below_threshold",
                        ttc,
                        p.ttc_threshold_s,
                        sensors(t.sensors),
                        stamp,
                    );
                    e.track_ids = vec![t.id];
                    e.position = [t.position[0], t.position[1], t.z];
                    e.evidence = track_evidence(t);
                    e.evidence.push(kv("ttc_s", format!("{ttc:.2}")));
                    e.evidence.push(kv("closing_speed_mps", format!("{:.2}", -t.rel_velocity[0])));
                    out.push(e);
                }
            } else if ttc > p.ttc_threshold_s + p.ttc_clear_margin_s {
                self.ttc_active.remove(&t.id);
            }
        }
        let live: BTreeSet<u32> = tracks.iter().map(|t| t.id).collect();
        self.ttc_active.retain(|id| live.contains(id));
        self.in_zone = inside_now;
        out
    }

    /// sensor_disagreement from one camera frame's checks: tracks LiDAR and radar confirm in
    /// that camera's view (seen or missed by it), and its detections that no LiDAR/radar
    /// object explains. Each camera keeps its own runs: an object leaving one camera's view
    /// for another's starts over there.
    pub fn on_camera_checks(
        &mut self,
        camera: SensorId,
        stamp: StampNs,
        checks: &[CameraCheck],
        unexplained: &[[f32; 4]],
    ) -> Vec<Event> {
        let k = self.params.disagreement_frames;
        let mut out = vec![];
        let mut next = BTreeMap::new();
        for c in checks.iter().filter(|c| !c.seen_by_camera) {
            let previous = self.cameras[camera.index()].misses.get(&c.track_id).copied();
            let (run, fire) = previous.unwrap_or_default().advance(stamp, k);
            if fire {
                let mut e = self.disagreement(camera, stamp, "camera_misses_lidar_radar_object", run);
                e.track_ids = vec![c.track_id];
                e.position = [c.position[0], c.position[1], 0.0];
                e.evidence = vec![
                    kv("missed_camera_frames", run.frames),
                    kv("range_m", format!("{:.1}", c.position[0].hypot(c.position[1]))),
                ];
                out.push(e);
            }
            next.insert(c.track_id, run);
        }
        self.cameras[camera.index()].misses = next;
        // The reverse: a camera box with no LiDAR/radar object behind it, frame after frame.
        let mut phantoms = vec![];
        for b in unexplained {
            let known = &self.cameras[camera.index()].phantoms;
            let prev = known.iter().find(|p| crate::detect::iou(&p.0, b) > 0.3).map(|p| p.1);
            let (run, fire) = prev.unwrap_or_default().advance(stamp, k);
            if fire {
                let mut e = self.disagreement(camera, stamp, "lidar_radar_miss_camera_object", run);
                e.evidence = vec![
                    kv("unconfirmed_camera_frames", run.frames),
                    kv("image_box", format!("{:.0},{:.0},{:.0},{:.0}", b[0], b[1], b[2], b[3])),
                ];
                out.push(e);
            }
            phantoms.push((*b, run));
        }
        self.cameras[camera.index()].phantoms = phantoms;
        out
    }

    fn disagreement(&mut self, camera: SensorId, stamp: StampNs, rule: &'static str, run: Run) -> Event {
        let k = self.params.disagreement_frames as f64;
        let sensors = self.camera_and_ranging(camera);
        self.event(stamp, EventKind::SensorDisagreement, WARN, rule, run.frames as f64, k, sensors, run.onset)
    }

    /// deadline_overrun: the share of sets that missed their hard deadline over the last
    /// `deadline_window` sets. `hard_deadline_ns` (configured, live) goes into the evidence:
    /// a summary that says "its 100 ms deadline" must be able to know it.
    pub fn on_deadline(&mut self, stamp: StampNs, missed_hard: bool, hard_deadline_ns: i64) -> Vec<Event> {
        let win = self.params.deadline_window.max(1);
        self.deadline.push_back(missed_hard);
        if self.deadline.len() > win {
            self.deadline.pop_front();
        }
        let misses = self.deadline.iter().filter(|m| **m).count();
        let ratio = misses as f64 / self.deadline.len() as f64;
        let th = self.params.deadline_miss_ratio;
        if self.deadline_active {
            if ratio < th / 2.0 {
                self.deadline_active = false;
            }
            return vec![];
        }
        if self.deadline.len() * 2 < win || ratio <= th {
            return vec![];
        }
        self.deadline_active = true;
        let mut e = self.event(
            stamp,
            EventKind::DeadlineOverrun,
            WARN,
            "hard_miss_ratio",
            ratio,
            th,
            self.fused_sensors(),
            stamp,
        );
        e.evidence = vec![
            kv("hard_misses", misses),
            kv("window_sets", self.deadline.len()),
            // To 0.1 ms, as configured: "66.7", not "66.666667".
            kv("hard_deadline_ms", (hard_deadline_ns as f64 / 1e5).round() / 10.0),
        ];
        vec![e]
    }
}

fn sensors(mask: u8) -> Vec<&'static str> {
    let mut v = vec![];
    for (bit, name) in [(1u8, "camera"), (2, "lidar"), (4, "radar")] {
        if mask & bit != 0 {
            v.push(name);
        }
    }
    v
}

fn track_evidence(t: &TrackView) -> Vec<KeyValue> {
    vec![
        kv("label", t.label.as_str()),
        kv("x_m", format!("{:.2}", t.position[0])),
        kv("y_m", format!("{:.2}", t.position[1])),
        kv("rel_vx_mps", format!("{:.2}", t.rel_velocity[0])),
        kv("rel_vy_mps", format!("{:.2}", t.rel_velocity[1])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::Calibration;

    const MS: i64 = 1_000_000;

    fn det() -> AnomalyDetector {
        AnomalyDetector::new(AnomalyParams::default(), Calibration::default().safety_zones)
    }

    fn track(id: u32, x: f64, y: f64, vx: f64) -> TrackView {
        TrackView {
            id,
            label: Label::Person,
            position: [x, y],
            z: 0.9,
            size: [0.5, 0.6, 1.8],
            rel_velocity: [vx, 0.0],
            sensors: 2,
        }
    }

    #[test]
    fn zone_intrusion_fires_once_per_entry_with_evidence() {
        let mut d = det();
        assert!(d.on_tracks(0, &[track(7, 8.0, 0.0, 0.0)]).is_empty());
        let e = d.on_tracks(100 * MS, &[track(7, 4.0, 0.5, 0.0)]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].kind, e[0].zone.as_str(), e[0].track_ids.clone()),
            (EventKind::ZoneIntrusion, "forward", vec![7])
        );
        assert!(e[0].evidence.iter().any(|k| k.key == "label" && k.value == "person"));
        assert!(d.on_tracks(200 * MS, &[track(7, 3.5, 0.5, 0.0)]).is_empty(), "still inside: no new event");
        assert!(d.on_tracks(300 * MS, &[track(7, 3.5, 4.0, 0.0)]).is_empty());
        assert_eq!(d.on_tracks(400 * MS, &[track(7, 3.5, 0.5, 0.0)]).len(), 1, "re-entry fires again");
    }

    #[test]
    fn a_coasting_track_neither_raises_nor_repeats_an_event() {
        let mut d = det();
        let coasting = |mut t: TrackView| {
            t.sensors = 0;
            t
        };
        // Predicted into the zone with no measurement: nothing (it would say "seen by no sensor").
        assert!(d.on_tracks(0, &[coasting(track(7, 4.0, 0.5, 0.0))]).is_empty());
        assert!(d.on_tracks(0, &[coasting(track(8, 20.0, 0.0, -10.0))]).is_empty(), "no collision_risk either");
        // Measured inside: one event, naming the sensor.
        let e = d.on_tracks(100 * MS, &[track(7, 4.0, 0.5, 0.0)]);
        assert_eq!(e.len(), 1);
        assert!(!e[0].sensors.is_empty());
        // A coasting set, even one predicted outside, then measured inside again: no repeat.
        assert!(d.on_tracks(200 * MS, &[coasting(track(7, 4.0, 4.0, 0.0))]).is_empty());
        assert!(d.on_tracks(300 * MS, &[track(7, 3.8, 0.5, 0.0)]).is_empty(), "the same intrusion fired twice");
    }

    #[test]
    fn collision_risk_uses_ttc_with_hysteresis() {
        let mut d = det();
        // 40 m ahead closing at 10 m/s: TTC ≈ 4 s, above 3 s.
        assert!(d.on_tracks(0, &[track(1, 40.0, 0.0, -10.0)]).is_empty());
        let e = d.on_tracks(MS, &[track(1, 25.0, 0.0, -10.0)]);
        assert_eq!(e[0].kind, EventKind::CollisionRisk);
        assert!((e[0].measured_value - 2.475).abs() < 1e-9 && e[0].threshold == 3.0);
        assert!(d.on_tracks(2 * MS, &[track(1, 31.0, 0.0, -10.0)]).is_empty(), "3.1 s: inside the margin");
        assert!(d.on_tracks(3 * MS, &[track(1, 40.0, 0.0, -10.0)]).is_empty());
        assert_eq!(d.on_tracks(4 * MS, &[track(1, 20.0, 0.0, -10.0)]).len(), 1, "re-armed above 3.5 s");
        // Adjacent lane or receding: never.
        assert!(d.on_tracks(5 * MS, &[track(2, 10.0, 3.5, -10.0), track(3, 10.0, 0.0, 2.0)]).is_empty());
    }

    #[test]
    fn dropout_after_three_periods_and_rearms_when_back() {
        let mut d = det();
        for k in 0..10 {
            d.on_message(SensorId::standard(Sensor::Lidar), k * 100 * MS);
            for s in [Sensor::Camera, Sensor::Radar, Sensor::Imu] {
                d.on_message(SensorId::standard(s), k * 100 * MS);
            }
        }
        for t in [1_200, 1_250] {
            for s in [Sensor::Camera, Sensor::Radar, Sensor::Imu] {
                d.on_message(SensorId::standard(s), t * MS);
            }
            if t == 1_200 {
                assert!(d.check_dropouts(t * MS).is_empty(), "LiDAR 300 ms silent: at the limit");
            }
        }
        let e = d.check_dropouts(1_250 * MS);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].kind, e[0].sensors.clone(), e[0].onset_ns),
            (EventKind::SensorDropout, vec!["lidar"], 1_000 * MS)
        );
        assert!(d.check_dropouts(1_260 * MS).iter().all(|e| e.sensors != ["lidar"]), "once");
        // Back at 1.3 s, and steady: one recovery event once it has delivered for
        // dropout_recovery_s (1 s), saying how long it was gone; then the rule re-arms.
        let mut back = vec![];
        for t in (1_300..=2_300).step_by(100) {
            for s in Sensor::ALL {
                back.extend(d.on_message(SensorId::standard(s), t * MS));
            }
            assert!(d.check_dropouts(t * MS).is_empty());
            if t < 2_300 {
                assert!(back.is_empty(), "not before 1 s of steady messages ({t} ms)");
                assert_eq!(d.stream_states()[Sensor::Lidar as usize], StreamState::Recovering);
            }
        }
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!(
            (back[0].kind, back[0].rule, back[0].severity, back[0].sensors.clone()),
            (EventKind::SensorDropout, "stream_recovered", INFO, vec!["lidar"])
        );
        assert_eq!((back[0].onset_ns, back[0].measured_value), (900 * MS, 4.0));
        assert_eq!((back[0].evidence[0].value.as_str(), back[0].evidence[2].value.as_str()), ("0.400", "1"));
        assert_eq!(d.stream_states()[Sensor::Lidar as usize], StreamState::Receiving);
        assert!(d.on_message(SensorId::standard(Sensor::Lidar), 2_400 * MS).is_none(), "once");
        assert_eq!(d.check_dropouts(2_900 * MS).len(), 4, "everything silent for 500 ms");
    }

    #[test]
    fn a_slow_camera_that_declares_its_rate_is_not_a_dropout_at_every_frame() {
        // A 5 Hz camera (frames 200-230 ms apart, as a loaded host delivers them) beside the
        // other streams at their rates. Judged by the kind's 30 Hz it is silent past its
        // limit (max(3 periods, 0.2 s) = 0.2 s) at almost every frame; declared at 5 Hz its
        // limit is 0.6 s, and only a real gap (0.7 s) is a dropout.
        let run = |declared_hz: Option<f64>| {
            let mut d = det();
            if let Some(hz) = declared_hz {
                d.set_expected_rate_hz(SensorId::standard(Sensor::Camera), hz).unwrap();
            }
            let mut events = vec![];
            let mut camera_at = 0;
            for t in (0..=4_000).step_by(10) {
                for s in [Sensor::Lidar, Sensor::Radar, Sensor::Imu] {
                    d.on_message(SensorId::standard(s), t * MS);
                }
                // Frames every 200 ms with 30 ms late ones, then nothing from 3.0 s to 3.7 s.
                let due = camera_at + if (camera_at / 200) % 3 == 1 { 230 } else { 200 };
                if t >= due && !(3_000..3_700).contains(&t) {
                    d.on_message(SensorId::standard(Sensor::Camera), t * MS);
                    camera_at = t;
                }
                events.extend(d.check_dropouts(t * MS).into_iter().filter(|e| e.rule == "stream_silent"));
            }
            events
        };
        assert!(run(None).len() >= 1, "judged as a 30 Hz camera, its frame gaps are silences");
        let declared = run(Some(5.0));
        assert_eq!(declared.len(), 1, "{declared:?}");
        assert_eq!(declared[0].sensors, vec!["camera"]);
        assert_eq!(declared[0].evidence[1].value, "5");
        // Once silent for 3 of its own periods, inside the gap.
        let silent_s: f64 = declared[0].evidence[0].value.parse().unwrap();
        assert!((0.6..0.62).contains(&silent_s) && declared[0].stamp_ns < 3_700 * MS, "{declared:?}");
        assert!(det().set_expected_rate_hz(SensorId::standard(Sensor::Camera), 0.0).is_err());
    }

    #[test]
    fn a_flapping_stream_is_one_outage_not_an_event_pair_per_gap() {
        // The IMU over a lossy link: samples arrive in clumps, 350 ms of silence between them
        // (beyond the 0.2 s floor), for 3 s; then steady.
        // Only the IMU is fed here: the others' never starting is another rule's.
        let mut d = det();
        d.params.never_started_s = 0.0;
        let mut events = vec![];
        let mut t = 0;
        let step = |d: &mut AnomalyDetector, t: i64, events: &mut Vec<Event>| {
            events.extend(d.on_message(SensorId::standard(Sensor::Imu), t));
            events.extend(d.check_dropouts(t));
        };
        while t < 1_000 * MS {
            step(&mut d, t, &mut events);
            t += 5 * MS;
        }
        let mut silences = 0;
        while t < 4_000 * MS {
            for k in 0..10 {
                step(&mut d, t + k * 5 * MS, &mut events);
            }
            silences += 1;
            t += 400 * MS;
            // The node ticks during the silence too.
            events.extend(d.check_dropouts(t - 10 * MS));
        }
        while t < 6_000 * MS {
            step(&mut d, t, &mut events);
            t += 5 * MS;
        }
        let rules: Vec<_> = events.iter().map(|e| (e.rule, e.severity)).collect();
        assert_eq!(rules, [("stream_silent", ERROR), ("stream_recovered", INFO)], "{events:?}");
        let evidence: BTreeMap<_, _> =
            events[1].evidence.iter().map(|kv| (kv.key.as_str(), kv.value.clone())).collect();
        assert_eq!(evidence["silences"], silences.to_string());
        // 8 silences of 355 ms: the total it was gone, not the last gap.
        assert!(evidence["silent_s"].parse::<f64>().unwrap() > 2.0, "{evidence:?}");
    }

    #[test]
    fn with_no_recovery_time_a_stream_is_back_at_its_first_message() {
        let mut d = det();
        d.params.dropout_recovery_s = 0.0;
        d.on_message(SensorId::standard(Sensor::Radar), 0);
        assert_eq!(d.check_dropouts(400 * MS).len(), 1);
        let back = d.on_message(SensorId::standard(Sensor::Radar), 500 * MS).expect("back at once");
        assert_eq!((back.rule, back.evidence[0].value.as_str()), ("stream_recovered", "0.500"));
    }

    #[test]
    fn a_fast_stream_in_clumps_is_not_a_dropout_until_the_silence_floor() {
        let mut d = det();
        // The 200 Hz IMU delivered in 60 ms clumps (a loaded host): 12 periods of silence
        // between clumps, far beyond 3 periods (15 ms) but under the 0.2 s floor.
        let mut t = 0;
        for _clump in 0..20 {
            for k in 0..12 {
                d.on_message(SensorId::standard(Sensor::Imu), t + k * 5 * MS);
            }
            t += 60 * MS;
            assert!(d.check_dropouts(t + 55 * MS).is_empty(), "a 60 ms clump at {} ms", t / MS);
        }
        // Silent for longer than the floor: a dropout, its threshold given in periods (0.2 s / 5 ms).
        let last = t - 5 * MS;
        assert!(d.check_dropouts(last + 200 * MS).is_empty(), "at the floor");
        let e = d.check_dropouts(last + 205 * MS);
        assert_eq!((e.len(), e[0].sensors.clone(), e[0].threshold), (1, vec!["imu"], 40.0), "{e:?}");
    }

    #[test]
    fn a_stream_that_never_started_is_not_a_dropout() {
        let mut d = det();
        // Start-up: the IMU delivers at once, the camera after 0.4 s, LiDAR and radar never.
        for k in 0..400 {
            d.on_message(SensorId::standard(Sensor::Imu), k * 5 * MS);
            if k >= 80 && k % 7 == 0 {
                d.on_message(SensorId::standard(Sensor::Camera), k * 5 * MS);
            }
            assert!(d.check_dropouts(k * 5 * MS).is_empty(), "at {} ms", k * 5);
        }
        assert_eq!(
            d.stream_states().into_iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["receiving", "never_received", "never_received", "receiving"]
        );
        // Once started, the same silence is a dropout.
        d.on_message(SensorId::standard(Sensor::Lidar), 2_000 * MS);
        let e = d.check_dropouts(2_400 * MS);
        assert_eq!(
            e.iter().map(|e| e.sensors.clone()).collect::<Vec<_>>(),
            vec![vec!["camera"], vec!["lidar"], vec!["imu"]]
        );
        assert_eq!(
            d.stream_states().into_iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["silent", "silent", "never_received", "silent"]
        );
    }

    /// A declared sensor that never delivers (its node not launched, its driver on another
    /// topic) is one `stream_never_started` event `never_started_s` after the others
    /// started, not before (start-up is not a dropout); when it comes at last, it recovers.
    #[test]
    fn a_sensor_that_never_starts_is_reported_once_after_the_grace() {
        let mut d = det();
        let mut events = vec![];
        for k in 0..=40 {
            let t = k * 100 * MS;
            for s in [Sensor::Camera, Sensor::Lidar, Sensor::Imu] {
                events.extend(d.on_message(SensorId::standard(s), t));
            }
            events.extend(d.check_dropouts(t));
        }
        let e: Vec<_> = events.iter().map(|e| (e.rule, e.sensors.clone(), e.stamp_ns)).collect();
        assert_eq!(e, [("stream_never_started", vec!["radar"], 3_100 * MS)]);
        assert_eq!(d.stream_states()[SensorId::standard(Sensor::Radar).index()], StreamState::Silent);
        // Not a gap in the others' data time: a seek in the bag is still a new timeline.
        assert!(!d.any_dropout_active());
        let mut back = vec![];
        for k in 41..=60 {
            back.extend(d.on_message(SensorId::standard(Sensor::Radar), k * 100 * MS));
        }
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].rule, "stream_recovered");
        assert!(
            back[0].evidence.iter().any(|e| e.key == "waited_since_s" && e.value == "0.000"),
            "{:?}",
            back[0].evidence
        );
    }

    const CAMERA: SensorId = SensorId::standard(Sensor::Camera);

    fn frame(level: u8, noise: bool) -> Rgb8 {
        let data = (0..64 * 48 * 3).map(|i| if noise { ((i * 37) % 200) as u8 } else { level }).collect();
        Rgb8 { width: 64, height: 48, data }
    }

    #[test]
    fn camera_blinded_and_frozen() {
        let mut d = det();
        let mut events = vec![];
        for k in 0..4 {
            events.extend(d.on_camera_frame(CAMERA, k * 33 * MS, &frame(3, false)));
        }
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].rule, events[0].onset_ns), ("image_blinded", 0));
        // A textured but frozen image: five identical frames.
        let mut d = det();
        let mut events = vec![];
        for k in 0..6 {
            events.extend(d.on_camera_frame(CAMERA, k * 33 * MS, &frame(0, true)));
        }
        assert_eq!(events.iter().map(|e| e.rule).collect::<Vec<_>>(), vec!["image_frozen"]);
    }

    #[test]
    fn impact_once_per_shock_and_saturation() {
        let mut d = det();
        assert!(d.on_imu(0, [0.5, 0.1, 9.8]).is_empty());
        let e = d.on_imu(5 * MS, [30.0, -85.0, 29.8]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, EventKind::Impact);
        assert!((e[0].measured_value - (30f64.powi(2) + 85f64.powi(2) + 19.99335f64.powi(2)).sqrt()).abs() < 1e-6);
        assert!(d.on_imu(10 * MS, [30.0, -85.0, 29.8]).is_empty(), "same shock");
        let e = d.on_imu(2_000 * MS, [160.0, 0.0, 9.8]);
        assert_eq!(
            e.iter().map(|e| (e.kind, e.rule)).collect::<Vec<_>>(),
            vec![(EventKind::Impact, "shock_above_threshold"), (EventKind::SensorDegraded, "imu_saturated")]
        );
    }

    #[test]
    fn disagreement_after_k_missed_frames_and_reverse() {
        let mut d = det();
        let miss = [CameraCheck { track_id: 4, position: [20.0, 0.5], seen_by_camera: false }];
        let mut events = vec![];
        for k in 0..7 {
            events.extend(d.on_camera_checks(CAMERA, k * 33 * MS, &miss, &[]));
        }
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].rule, events[0].track_ids.clone(), events[0].onset_ns),
            ("camera_misses_lidar_radar_object", vec![4], 0)
        );
        // A hit resets the run.
        let mut d = det();
        for k in 0..10 {
            let seen = k % 4 == 3;
            let c = [CameraCheck { track_id: 4, position: [20.0, 0.5], seen_by_camera: seen }];
            assert!(d.on_camera_checks(CAMERA, k * 33 * MS, &c, &[]).is_empty());
        }
        let mut d = det();
        let mut events = vec![];
        for k in 0..5 {
            let x = k as f32;
            events.extend(d.on_camera_checks(CAMERA, k * 33 * MS, &[], &[[100.0 + x, 100.0, 150.0 + x, 200.0]]));
        }
        assert_eq!(events.iter().map(|e| e.rule).collect::<Vec<_>>(), vec!["lidar_radar_miss_camera_object"]);
    }

    /// Each camera is judged in its own view: a track missed by one camera, then by another
    /// (it moved from the front camera's view into the rear camera's), starts a new run
    /// there, and the event names the camera that missed it; one camera blinded leaves the
    /// other undegraded.
    #[test]
    fn each_camera_keeps_its_own_disagreement_runs_and_health() {
        let sensors = SensorSet::new(
            [("camera", Sensor::Camera), ("rear_camera", Sensor::Camera)]
                .into_iter()
                .chain([("lidar", Sensor::Lidar), ("radar", Sensor::Radar), ("imu", Sensor::Imu)])
                .map(|(n, k)| (n.to_string(), k)),
        )
        .unwrap();
        let rear = sensors.find("rear_camera").unwrap();
        let mut d = AnomalyDetector::with_sensors(AnomalyParams::default(), vec![], sensors.clone());
        let miss = [CameraCheck { track_id: 4, position: [20.0, 0.5], seen_by_camera: false }];
        let mut events = vec![];
        // Four frames missed by the front camera, four by the rear one: neither reaches 5.
        for k in 0..4 {
            events.extend(d.on_camera_checks(CAMERA, k * 33 * MS, &miss, &[]));
            events.extend(d.on_camera_checks(rear, k * 33 * MS, &[], &[]));
        }
        for k in 4..8 {
            events.extend(d.on_camera_checks(CAMERA, k * 33 * MS, &[], &[]));
            events.extend(d.on_camera_checks(rear, k * 33 * MS, &miss, &[]));
        }
        assert!(events.is_empty(), "{events:#?}");
        for k in 8..12 {
            events.extend(d.on_camera_checks(rear, k * 33 * MS, &miss, &[]));
        }
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0].sensors, ["rear_camera", "lidar", "radar"]);
        assert_eq!(events[0].onset_ns, 4 * 33 * MS);
        for k in 0..4 {
            events.extend(d.on_camera_frame(rear, k * 33 * MS, &frame(3, false)));
            events.extend(d.on_camera_frame(CAMERA, k * 33 * MS, &frame(0, true)));
        }
        assert_eq!(events[1].sensors, ["rear_camera"]);
        assert!(d.camera_degraded(rear) && !d.camera_degraded(CAMERA));
    }

    #[test]
    fn deadline_overrun_on_miss_ratio() {
        let mut d = det();
        let mut events = vec![];
        for k in 0..200 {
            events.extend(d.on_deadline(k, k >= 100 && k % 10 == 0, 66_666_667));
        }
        assert_eq!(events.len(), 1);
        assert!(events[0].measured_value > 0.05);
        assert!(events[0].evidence.iter().any(|k| k.key == "hard_deadline_ms" && k.value == "66.7"));
    }
}
