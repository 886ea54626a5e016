//! What every ingest node shares: why a message was rejected, the header checks (stamp and
//! frame), and the counters and latency histogram that `/diagnostics` reports.
use crate::StampNs;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Why an input message was rejected. `as_str` is the stable name used as the
/// `rejected.<reason>` key on `/diagnostics`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("zero stamp")]
    ZeroStamp,
    #[error("stamp {stamp} ns is not after the last accepted {last} ns")]
    StampBackwards { stamp: StampNs, last: StampNs },
    #[error("frame_id '{got}' is not the calibrated '{expected}'")]
    UnknownFrameId { got: String, expected: String },
    // PointCloud2
    #[error("required field '{0}' is missing")]
    MissingField(String),
    #[error("field '{name}' has unsupported datatype {datatype} (or count {count})")]
    BadFieldDatatype { name: String, datatype: u8, count: u32 },
    #[error("field '{name}' at offset {offset} size {size} exceeds point_step {point_step}")]
    FieldOutOfBounds { name: String, offset: u32, size: u32, point_step: u32 },
    #[error("fields '{0}' and '{1}' overlap")]
    FieldsOverlap(String, String),
    #[error("point_step is 0")]
    BadPointStep,
    #[error("row_step {row_step} < width {width} × point_step {point_step}")]
    BadRowStep { row_step: u32, width: u32, point_step: u32 },
    #[error("data is {got} bytes, header says {expected}")]
    DataSizeMismatch { got: usize, expected: u64 },
    #[error("{non_finite} of {total} points are NaN/Inf (limit {limit:.0}%)")]
    NonFinite { non_finite: usize, total: usize, limit: f64 },
    #[error("message holds no data (width or height 0)")]
    Empty,
    // Image / CameraInfo
    #[error("unsupported encoding '{0}' (rgb8, bgr8, mono8)")]
    UnsupportedEncoding(String),
    #[error("step {step} < width {width} × {channels} channels")]
    BadStep { step: u32, width: u32, channels: u32 },
    #[error("image is {got_w}×{got_h}, intrinsics say {want_w}×{want_h}")]
    SizeMismatchIntrinsics { got_w: u32, got_h: u32, want_w: u32, want_h: u32 },
    #[error("distortion model '{model}' needs {expected} coefficients, D has {got}")]
    BadDistortion { model: String, expected: String, got: usize },
    #[error("intrinsics K are not a valid camera matrix: {0}")]
    BadIntrinsics(String),
    // CompressedImage
    #[error("compressed image is not JPEG or PNG (format '{0}')")]
    UnsupportedCompression(String),
    #[error("{codec} image does not decode: {why}")]
    Undecodable { codec: &'static str, why: String },
    #[error("compressed image decodes to {width}×{height}, more than {limit} pixels")]
    TooLarge { width: u64, height: u64, limit: u64 },
    // Imu
    #[error("non-finite value in {0}")]
    NonFiniteValue(&'static str),
    #[error("orientation quaternion has norm {0:.3}")]
    BadOrientation(f64),
    #[error("{field} of magnitude {value:.3e} is beyond any sensor (limit {limit:.1})")]
    ImpossibleValue { field: &'static str, value: f64, limit: f64 },
    // A stream of a kind the robot does not declare (a bag's /imu/data, no IMU in the calibration)
    #[error("the calibration declares no sensor of this kind")]
    NotDeclared,
    // A mount that moves (on /tf)
    #[error("the mount cannot be placed at the message's stamp: {0}")]
    MountLookup(String),
}

impl Reject {
    pub fn as_str(&self) -> &'static str {
        use Reject::*;
        match self {
            ZeroStamp => "zero_stamp",
            StampBackwards { .. } => "stamp_backwards",
            UnknownFrameId { .. } => "unknown_frame_id",
            MissingField(_) => "missing_field",
            BadFieldDatatype { .. } => "bad_field_datatype",
            FieldOutOfBounds { .. } => "field_out_of_bounds",
            FieldsOverlap(..) => "fields_overlap",
            BadPointStep => "bad_point_step",
            BadRowStep { .. } => "bad_row_step",
            DataSizeMismatch { .. } => "data_size_mismatch",
            NonFinite { .. } => "non_finite",
            Empty => "empty",
            UnsupportedEncoding(_) => "unsupported_encoding",
            BadStep { .. } => "bad_step",
            SizeMismatchIntrinsics { .. } => "size_mismatch_intrinsics",
            BadDistortion { .. } => "bad_distortion",
            BadIntrinsics(_) => "bad_intrinsics",
            UnsupportedCompression(_) => "unsupported_compression",
            Undecodable { .. } => "undecodable",
            TooLarge { .. } => "too_large",
            NonFiniteValue(_) => "non_finite",
            ImpossibleValue { .. } => "impossible_value",
            BadOrientation(_) => "bad_orientation",
            MountLookup(_) => "mount_lookup",
            NotDeclared => "not_declared",
        }
    }
}

/// Header checks shared by every stream: non-zero stamps that strictly increase, and the
/// frame id the calibration names for this sensor.
///
/// A stream whose time goes back for good (a bag played with `--loop`, a sensor clock
/// reset, or one stray stamp far in the future that would otherwise lock the stream out
/// for the node's lifetime) is followed again after [`RESYNC_AFTER`] consecutive messages
/// whose stamps increase among themselves: the next one is accepted and counted as a
/// resync, so the user sees it on /diagnostics.
#[derive(Debug, Clone)]
pub struct HeaderGuard {
    expected_frame: String,
    last_accepted: Option<StampNs>,
    /// The consecutive run of messages refused as going backwards: its length and last stamp.
    backwards_run: (u32, StampNs),
    resyncs: u64,
}

/// Consecutive, mutually increasing messages stamped before the last accepted one after
/// which the stream's new timeline is taken.
pub const RESYNC_AFTER: u32 = 5;

impl HeaderGuard {
    pub fn new(expected_frame: impl Into<String>) -> Self {
        Self { expected_frame: expected_frame.into(), last_accepted: None, backwards_run: (0, 0), resyncs: 0 }
    }

    /// Checks without committing: call `accept` once the whole message passed.
    pub fn check(&mut self, stamp: StampNs, frame_id: &str) -> Result<(), Reject> {
        if stamp == 0 {
            return Err(Reject::ZeroStamp);
        }
        if frame_id != self.expected_frame {
            return Err(Reject::UnknownFrameId { got: frame_id.into(), expected: self.expected_frame.clone() });
        }
        if let Some(last) = self.last_accepted {
            if stamp <= last {
                let (run, run_last) = self.backwards_run;
                let run = if run > 0 && stamp > run_last { run + 1 } else { 1 };
                self.backwards_run = (run, stamp);
                if run <= RESYNC_AFTER {
                    return Err(Reject::StampBackwards { stamp, last });
                }
            }
        }
        Ok(())
    }

    /// Commits a checked stamp; true when it starts a new timeline (a resync to count).
    pub fn accept(&mut self, stamp: StampNs) -> bool {
        let resync = self.last_accepted.is_some_and(|last| stamp <= last);
        self.resyncs += resync as u64;
        self.last_accepted = Some(stamp);
        self.backwards_run = (0, 0);
        resync
    }

    /// How often the stream's time went back for good and was followed again.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    pub fn expected_frame(&self) -> &str {
        &self.expected_frame
    }
}

/// Counters and processing latency of one input stream. The node reports `key_values`
/// on `/diagnostics` every second.
#[derive(Debug)]
pub struct IngestStats {
    pub received: u64,
    pub accepted: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    /// Messages lost because the processing queue was full (r2r's own channel is drained
    /// by a dedicated task, so this is where back-pressure shows).
    pub dropped_queue_full: u64,
    /// Free-form per-stream counters (points filtered, saturated samples, ...).
    pub extra: BTreeMap<&'static str, u64>,
    /// Processing latency, receive → publish, microseconds.
    latency_us: Histogram<u64>,
    last_error: Option<String>,
    window_received: u64,
    /// Totals at the previous report, to tell what happened within the last period.
    reported_rejected: u64,
    reported_dropped: u64,
}

/// Health of a stream over the last reporting period, diagnostic_msgs levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok = 0,
    Warn = 1,
}

impl Default for IngestStats {
    fn default() -> Self {
        Self {
            received: 0,
            accepted: 0,
            rejected: BTreeMap::new(),
            dropped_queue_full: 0,
            extra: BTreeMap::new(),
            // 1 µs .. 60 s at 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds"),
            last_error: None,
            window_received: 0,
            reported_rejected: 0,
            reported_dropped: 0,
        }
    }
}

impl IngestStats {
    pub fn on_received(&mut self) {
        self.received += 1;
        self.window_received += 1;
    }

    pub fn on_accepted(&mut self, latency_us: u64) {
        self.accepted += 1;
        self.latency_us.saturating_record(latency_us.max(1));
    }

    pub fn on_rejected(&mut self, why: &Reject) {
        *self.rejected.entry(why.as_str()).or_default() += 1;
        self.last_error = Some(why.to_string());
    }

    pub fn add_extra(&mut self, key: &'static str, n: u64) {
        *self.extra.entry(key).or_default() += n;
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The report for `/diagnostics`: health over the period since the previous call
    /// (`window_s` long), a one-line message, and the values. Counters and latencies are
    /// since start; the input rate is over the period.
    pub fn report(&mut self, window_s: f64) -> (Health, String, Vec<(String, String)>) {
        let received_now = self.window_received;
        let rate = if window_s > 0.0 { received_now as f64 / window_s } else { 0.0 };
        self.window_received = 0;
        let new_rejected = self.rejected_total() - self.reported_rejected;
        let new_dropped = self.dropped_queue_full - self.reported_dropped;
        self.reported_rejected = self.rejected_total();
        self.reported_dropped = self.dropped_queue_full;
        let (health, message) = if self.received == 0 {
            (Health::Warn, "no input yet".to_string())
        } else if received_now == 0 {
            (Health::Warn, format!("no input for {window_s:.1} s"))
        } else if new_rejected > 0 {
            (Health::Warn, format!("{new_rejected} rejected, last: {}", self.last_error.as_deref().unwrap_or("")))
        } else if new_dropped > 0 {
            (Health::Warn, format!("{new_dropped} dropped (queue full)"))
        } else {
            (Health::Ok, "ok".to_string())
        };
        let mut kv = vec![
            ("input_rate_hz".to_string(), format!("{rate:.2}")),
            ("received".into(), self.received.to_string()),
            ("accepted".into(), self.accepted.to_string()),
            ("rejected".into(), self.rejected_total().to_string()),
            ("dropped.queue_full".into(), self.dropped_queue_full.to_string()),
            ("latency_p50_ms".into(), format!("{:.3}", self.latency_ms(0.50))),
            ("latency_p99_ms".into(), format!("{:.3}", self.latency_ms(0.99))),
            ("latency_max_ms".into(), format!("{:.3}", self.latency_us.max() as f64 / 1000.0)),
        ];
        for (reason, n) in &self.rejected {
            kv.push((format!("rejected.{reason}"), n.to_string()));
        }
        for (key, n) in &self.extra {
            kv.push(((*key).to_string(), n.to_string()));
        }
        (health, message, kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_guard_rejects_zero_backwards_equal_and_wrong_frame() {
        let mut g = HeaderGuard::new("lidar_link");
        assert_eq!(g.check(0, "lidar_link"), Err(Reject::ZeroStamp));
        assert!(g.check(100, "lidar_link").is_ok());
        g.accept(100);
        assert_eq!(g.check(100, "lidar_link").unwrap_err().as_str(), "stamp_backwards");
        assert_eq!(g.check(99, "lidar_link").unwrap_err().as_str(), "stamp_backwards");
        assert_eq!(g.check(101, "velodyne").unwrap_err().as_str(), "unknown_frame_id");
        // A rejected message does not move the reference stamp.
        assert!(g.check(101, "lidar_link").is_ok());
    }

    #[test]
    fn one_far_future_stamp_does_not_lock_the_stream_out() {
        let mut g = HeaderGuard::new("imu_link");
        let period = 10_000_000; // 100 Hz
        let mut t = 1_000_000_000;
        g.check(t, "imu_link").unwrap();
        g.accept(t);
        // One stamp a century ahead is accepted (nothing tells it from a real jump yet)…
        let future = t + 100 * 365 * 86_400 * 1_000_000_000;
        g.check(future, "imu_link").unwrap();
        g.accept(future);
        // …the stream's own time is refused RESYNC_AFTER times, then followed again.
        let mut refused = 0;
        for _ in 0..20 {
            t += period;
            match g.check(t, "imu_link") {
                Ok(()) => {
                    g.accept(t);
                }
                Err(e) => {
                    assert_eq!(e.as_str(), "stamp_backwards");
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, RESYNC_AFTER);
        assert_eq!(g.resyncs(), 1);
        // A bag loop (time back to the start) is followed the same way.
        let mut t = 1_000_000_000;
        let mut accepted = 0;
        for _ in 0..10 {
            t += period;
            if g.check(t, "imu_link").is_ok() {
                g.accept(t);
                accepted += 1;
            }
        }
        assert_eq!((accepted, g.resyncs()), (10 - RESYNC_AFTER as usize, 2));
    }

    #[test]
    fn a_few_reordered_or_repeated_stamps_never_resync() {
        let mut g = HeaderGuard::new("imu_link");
        g.check(1_000, "imu_link").unwrap();
        g.accept(1_000);
        // The same old stamp over and over is not a new timeline (it does not increase).
        for _ in 0..50 {
            assert!(g.check(900, "imu_link").is_err());
        }
        // Stragglers between good messages never add up to a resync.
        for k in 1..50 {
            let good = 1_000 + 10 * k;
            g.check(good, "imu_link").unwrap();
            g.accept(good);
            assert!(g.check(good - 5, "imu_link").is_err());
        }
        assert_eq!(g.resyncs(), 0);
    }

    #[test]
    fn stats_report_reasons_and_latency() {
        let mut s = IngestStats::default();
        for i in 1..=100u64 {
            s.on_received();
            s.on_accepted(i * 1000);
        }
        s.on_received();
        s.on_rejected(&Reject::ZeroStamp);
        let (health, message, kv) = s.report(2.0);
        assert_eq!(health, Health::Warn);
        assert!(message.starts_with("1 rejected, last: zero stamp"), "{message}");
        let kv: BTreeMap<_, _> = kv.into_iter().collect();
        assert_eq!(kv["received"], "101");
        assert_eq!(kv["accepted"], "100");
        assert_eq!(kv["rejected"], "1");
        assert_eq!(kv["rejected.zero_stamp"], "1");
        assert_eq!(kv["input_rate_hz"], "50.50");
        let p50: f64 = kv["latency_p50_ms"].parse().unwrap();
        let p99: f64 = kv["latency_p99_ms"].parse().unwrap();
        assert!((p50 - 50.0).abs() < 0.1 && (p99 - 99.0).abs() < 0.1, "{p50} {p99}");
        // The rate window restarts; nothing arrived, so the stream is stale, not "rejecting".
        let (health, message, kv) = s.report(1.0);
        let kv: BTreeMap<_, _> = kv.into_iter().collect();
        assert_eq!(kv["input_rate_hz"], "0.00");
        assert_eq!((health, message.as_str()), (Health::Warn, "no input for 1.0 s"));
        // Healthy again once valid input flows without rejections.
        s.on_received();
        s.on_accepted(10);
        assert_eq!(s.report(1.0).0, Health::Ok);
    }
}
