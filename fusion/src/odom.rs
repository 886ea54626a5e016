//! The ego's own motion from odometry (`nav_msgs/Odometry`), ROS-free: a short, bounded
//! history of samples, and the ego's velocity and heading at a set's stamp.
//!
//! nav_msgs' conventions hold: the pose is the base's in `frame_id` (the odometry frame,
//! usually `odom`); the twist is in `child_frame_id`'s axes, which must be the base frame the
//! pipeline works in (a twist in another frame would need that frame's motion too).
//!
//! Between two samples the velocity is interpolated linearly and the heading by slerp; a
//! stamp after the newest sample holds its velocity (and turns the heading at its yaw rate)
//! for at most `max_age_s`, since odometry and the sensors arrive on separate streams and the
//! newest sample is usually a few milliseconds older than a set. A stamp before the history,
//! or inside a gap longer than `max_gap_s`, has no odometry: the pipeline then falls back to
//! the radar's estimate of the ego's speed.
use crate::StampNs;
use nalgebra::{Quaternion, UnitQuaternion, Vector3};
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

/// One `nav_msgs/Odometry`, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct OdometrySample {
    pub stamp: StampNs,
    /// The odometry frame (the pose's parent), e.g. `odom`.
    pub frame_id: String,
    /// The base frame the twist is expressed in, e.g. `base_link`.
    pub child_frame_id: String,
    pub position: [f64; 3],
    pub orientation_xyzw: [f64; 4],
    /// Linear velocity in `child_frame_id`'s axes, m/s.
    pub linear: [f64; 3],
    /// Angular velocity in `child_frame_id`'s axes, rad/s.
    pub angular: [f64; 3],
}

/// Why an odometry message was not taken (`odometry.rejected.<reason>`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OdometryError {
    #[error("odometry holds a NaN or infinite value")]
    NonFinite,
    #[error("odometry orientation is not a unit quaternion (norm {0:.3})")]
    NotUnitQuaternion(f64),
    #[error("odometry has an empty frame_id or child_frame_id")]
    EmptyFrame,
    #[error("odometry's child_frame_id '{got}' is not the base frame '{base}': its twist would be in the wrong axes")]
    ChildFrame { got: String, base: String },
    #[error("odometry's frame_id changed from '{was}' to '{now}'")]
    FrameChanged { was: String, now: String },
    #[error("odometry stamp {stamp} ns is not after the previous one ({previous} ns)")]
    OutOfOrder { stamp: StampNs, previous: StampNs },
}

impl OdometryError {
    /// The counter suffix.
    pub fn reason(&self) -> &'static str {
        match self {
            OdometryError::NonFinite => "non_finite",
            OdometryError::NotUnitQuaternion(_) => "not_unit_quaternion",
            OdometryError::EmptyFrame => "empty_frame",
            OdometryError::ChildFrame { .. } => "child_frame",
            OdometryError::FrameChanged { .. } => "frame_changed",
            OdometryError::OutOfOrder { .. } => "out_of_order",
        }
    }
}

/// How far odometry is trusted from its samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OdometryParams {
    /// A stamp this far (s) after the newest sample still takes its velocity.
    pub max_age_s: f64,
    /// Two samples further apart than this (s) are not interpolated between.
    pub max_gap_s: f64,
    /// History kept (s) behind the newest sample.
    pub keep_s: f64,
}

impl Default for OdometryParams {
    fn default() -> Self {
        // Wheel and visual odometry run at 20–100 Hz; a set is 100 ms and a set's members can
        // be up to its sync tolerance apart, so 2 s of history covers any set still pending.
        Self { max_age_s: 0.2, max_gap_s: 0.25, keep_s: 2.0 }
    }
}

/// The ego's motion at one stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct EgoOdometry {
    /// The odometry frame the heading is in.
    pub frame_id: String,
    /// Velocity over the ground in base axes, m/s.
    pub velocity: Vector3<f64>,
    /// Angular velocity in base axes, rad/s.
    pub angular: Vector3<f64>,
    /// The base's orientation in the odometry frame.
    pub orientation: UnitQuaternion<f64>,
}

impl EgoOdometry {
    /// The base's heading in the odometry frame (yaw about its z axis), rad.
    pub fn heading(&self) -> f64 {
        self.orientation.euler_angles().2
    }

    /// A horizontal vector in base axes, in the odometry frame's axes: turned by the heading
    /// alone, so a velocity over the ground keeps its length on a slope (roll and pitch tilt
    /// the base, not the object's motion over the ground).
    pub fn to_odom(&self, v: [f64; 2]) -> [f64; 2] {
        let (s, c) = self.heading().sin_cos();
        [c * v[0] - s * v[1], s * v[0] + c * v[1]]
    }
}

/// The odometry history. Bounded: samples older than `keep_s` behind the newest go, and at
/// most [`OdometryBuffer::MAX_SAMPLES`] are kept whatever the rate.
#[derive(Debug)]
pub struct OdometryBuffer {
    base_frame: String,
    params: OdometryParams,
    samples: VecDeque<(StampNs, EgoOdometry)>,
    /// `odometry.accepted`, `odometry.rejected.<reason>`.
    pub counters: BTreeMap<String, u64>,
}

/// Odometry fills the buffer on its own stream (a subscription) while the pipeline reads it,
/// as a tf2 buffer is shared between its listener and its users.
pub type SharedOdometry = Arc<Mutex<OdometryBuffer>>;

impl OdometryBuffer {
    pub const MAX_SAMPLES: usize = 1024;

    pub fn new(base_frame: &str, params: OdometryParams) -> Self {
        Self { base_frame: base_frame.to_string(), params, samples: VecDeque::new(), counters: BTreeMap::new() }
    }

    pub fn shared(base_frame: &str, params: OdometryParams) -> SharedOdometry {
        Arc::new(Mutex::new(Self::new(base_frame, params)))
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The odometry frame, once a sample was taken.
    pub fn frame_id(&self) -> Option<&str> {
        self.samples.back().map(|(_, s)| s.frame_id.as_str())
    }

    /// Takes a sample, or says why not; either way counted. `Ok(true)`: the sample started a
    /// new timeline (counted `odometry.timeline_restarted`).
    pub fn push(&mut self, s: &OdometrySample) -> Result<bool, OdometryError> {
        let r = self.check_content(s);
        // Only a sound message may start a new timeline: a NaN or a driver's zero stamp must
        // not wipe the history it is then refused from.
        let restart = r.is_ok()
            && self.samples.back().is_some_and(|(newest, _)| s.stamp < newest - crate::pipeline::TIME_JUMP_NS);
        if restart {
            // A new timeline (a bag played with --loop, a clock reset), as the pipeline's
            // streams take it: the old history says nothing about the new one.
            self.samples.clear();
            *self.counters.entry("odometry.timeline_restarted".into()).or_default() += 1;
        }
        let r = r.and_then(|q| self.check_sequence(s).map(|()| q));
        let key = match &r {
            Ok(_) => "odometry.accepted".to_string(),
            Err(e) => format!("odometry.rejected.{}", e.reason()),
        };
        *self.counters.entry(key).or_default() += 1;
        let q = r?;
        self.samples.push_back((
            s.stamp,
            EgoOdometry {
                frame_id: s.frame_id.clone(),
                velocity: Vector3::from(s.linear),
                angular: Vector3::from(s.angular),
                orientation: q,
            },
        ));
        let oldest = s.stamp - (self.params.keep_s * 1e9) as i64;
        while self.samples.len() > Self::MAX_SAMPLES || self.samples.front().is_some_and(|(t, _)| *t < oldest) {
            self.samples.pop_front();
        }
        Ok(restart)
    }

    /// What a message must be on its own: finite, a unit orientation, the base frame's twist.
    fn check_content(&self, s: &OdometrySample) -> Result<UnitQuaternion<f64>, OdometryError> {
        let values = s.position.iter().chain(&s.orientation_xyzw).chain(&s.linear).chain(&s.angular);
        if values.clone().any(|v| !v.is_finite()) {
            return Err(OdometryError::NonFinite);
        }
        let [x, y, z, w] = s.orientation_xyzw;
        let norm = (x * x + y * y + z * z + w * w).sqrt();
        if (norm - 1.0).abs() > 1e-3 {
            return Err(OdometryError::NotUnitQuaternion(norm));
        }
        if s.frame_id.is_empty() || s.child_frame_id.is_empty() {
            return Err(OdometryError::EmptyFrame);
        }
        if s.child_frame_id != self.base_frame {
            return Err(OdometryError::ChildFrame { got: s.child_frame_id.clone(), base: self.base_frame.clone() });
        }
        Ok(s.rotation())
    }

    /// What a message must be after the history's newest: in the same frame, later.
    fn check_sequence(&self, s: &OdometrySample) -> Result<(), OdometryError> {
        if let Some((previous, last)) = self.samples.back() {
            if last.frame_id != s.frame_id {
                return Err(OdometryError::FrameChanged { was: last.frame_id.clone(), now: s.frame_id.clone() });
            }
            if s.stamp <= *previous {
                return Err(OdometryError::OutOfOrder { stamp: s.stamp, previous: *previous });
            }
        }
        Ok(())
    }

    /// The ego's motion at `stamp`, when odometry covers it (see the module's rules).
    pub fn at(&self, stamp: StampNs) -> Option<EgoOdometry> {
        let (newest_t, newest) = self.samples.back()?;
        if stamp >= *newest_t {
            let age = (stamp - newest_t) as f64 * 1e-9;
            if age > self.params.max_age_s {
                return None;
            }
            let turned = UnitQuaternion::from_scaled_axis(newest.angular * age);
            return Some(EgoOdometry { orientation: newest.orientation * turned, ..newest.clone() });
        }
        // The first sample after the stamp, and the one before it.
        let after = self.samples.partition_point(|(t, _)| *t <= stamp);
        if after == 0 {
            return None;
        }
        let ((t0, a), (t1, b)) = (&self.samples[after - 1], &self.samples[after]);
        if (t1 - t0) as f64 * 1e-9 > self.params.max_gap_s {
            return None;
        }
        let f = (stamp - t0) as f64 / (t1 - t0) as f64;
        Some(EgoOdometry {
            frame_id: a.frame_id.clone(),
            velocity: a.velocity.lerp(&b.velocity, f),
            angular: a.angular.lerp(&b.angular, f),
            // try_slerp refuses only two orientations half a turn apart (50 Hz odometry never
            // turns that far between samples): the nearer one then holds.
            orientation: a.orientation.try_slerp(&b.orientation, f, 1e-9).unwrap_or(if f < 0.5 {
                a.orientation
            } else {
                b.orientation
            }),
        })
    }
}

impl OdometrySample {
    /// The orientation as nalgebra's unit quaternion (after [`OdometryBuffer::push`] checked it).
    fn rotation(&self) -> UnitQuaternion<f64> {
        let [x, y, z, w] = self.orientation_xyzw;
        UnitQuaternion::from_quaternion(Quaternion::new(w, x, y, z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, yaw: f64, v: [f64; 3], w: f64) -> OdometrySample {
        let q = UnitQuaternion::from_euler_angles(0.0, 0.0, yaw);
        OdometrySample {
            stamp: (t_s * 1e9) as i64,
            frame_id: "odom".into(),
            child_frame_id: "base_link".into(),
            position: [0.0; 3],
            orientation_xyzw: [q.i, q.j, q.k, q.w],
            linear: v,
            angular: [0.0, 0.0, w],
        }
    }

    #[test]
    fn between_samples_velocity_and_heading_interpolate() {
        let mut b = OdometryBuffer::new("base_link", OdometryParams::default());
        b.push(&sample(1.0, 0.0, [2.0, 0.0, 0.0], 0.2)).unwrap();
        b.push(&sample(1.1, 0.02, [4.0, 0.0, 0.0], 0.2)).unwrap();
        let m = b.at(1_050_000_000).unwrap();
        assert!((m.velocity.x - 3.0).abs() < 1e-9, "{m:?}");
        assert!((m.orientation.euler_angles().2 - 0.01).abs() < 1e-9);
        // In the odometry frame, a forward velocity turns with the heading.
        let v = m.to_odom([1.0, 0.0]);
        assert!((v[1] - 0.01f64.sin()).abs() < 1e-9 && v[1] > 0.0, "a left turn turns it left");
    }

    #[test]
    fn after_the_newest_sample_it_holds_for_max_age_then_stops() {
        let mut b = OdometryBuffer::new("base_link", OdometryParams::default());
        b.push(&sample(1.0, 0.0, [5.0, 0.0, 0.0], 0.5)).unwrap();
        let held = b.at(1_100_000_000).unwrap();
        assert_eq!(held.velocity.x, 5.0);
        assert!((held.orientation.euler_angles().2 - 0.05).abs() < 1e-9, "turned at the yaw rate");
        assert!(b.at(1_300_000_000).is_none(), "0.3 s old is stale");
        assert!(b.at(900_000_000).is_none(), "before the history");
    }

    #[test]
    fn no_interpolation_across_a_gap() {
        let mut b = OdometryBuffer::new("base_link", OdometryParams::default());
        b.push(&sample(1.0, 0.0, [1.0, 0.0, 0.0], 0.0)).unwrap();
        b.push(&sample(2.0, 0.0, [1.0, 0.0, 0.0], 0.0)).unwrap();
        assert!(b.at(1_500_000_000).is_none());
        assert!(b.at(2_000_000_000).is_some());
    }

    #[test]
    fn bad_samples_are_refused_counted_and_lose_nothing() {
        let mut b = OdometryBuffer::new("base_link", OdometryParams::default());
        b.push(&sample(1.0, 0.0, [1.0, 0.0, 0.0], 0.0)).unwrap();
        let mut nan = sample(1.1, 0.0, [f64::NAN, 0.0, 0.0], 0.0);
        assert_eq!(b.push(&nan), Err(OdometryError::NonFinite));
        nan.linear[0] = 1.0;
        nan.orientation_xyzw = [0.0, 0.0, 0.0, 2.0];
        assert_eq!(b.push(&nan).unwrap_err().reason(), "not_unit_quaternion");
        let mut other = sample(1.1, 0.0, [1.0, 0.0, 0.0], 0.0);
        other.child_frame_id = "imu_link".into();
        let e = b.push(&other).unwrap_err();
        assert!(e.to_string().contains("'imu_link' is not the base frame 'base_link'"), "{e}");
        other.child_frame_id = "base_link".into();
        other.frame_id = "map".into();
        assert_eq!(b.push(&other).unwrap_err().reason(), "frame_changed");
        assert_eq!(b.push(&sample(0.5, 0.0, [1.0, 0.0, 0.0], 0.0)).unwrap_err().reason(), "out_of_order");
        assert_eq!(b.at(1_000_000_000).unwrap().velocity.x, 1.0, "the accepted sample stays");
        // A refused message stamped far back (a driver's zero stamp) starts no new timeline.
        let mut zero = sample(0.0, 0.0, [1.0, 0.0, 0.0], 0.0);
        zero.child_frame_id = "imu_link".into();
        assert!(b.push(&zero).is_err());
        assert!(b.at(1_000_000_000).is_some(), "the history is still there");
        // More than a second back is a new timeline, not a late sample.
        assert!(!b.push(&sample(1.15, 0.0, [1.0, 0.0, 0.0], 0.0)).unwrap());
        assert!(b.push(&sample(0.1, 0.0, [3.0, 0.0, 0.0], 0.0)).unwrap(), "a new timeline");
        assert_eq!(b.at(100_000_000).unwrap().velocity.x, 3.0);
        assert!(b.at(1_100_000_000).is_none(), "the old timeline is gone");
        let c = &b.counters;
        assert_eq!(c["odometry.accepted"], 3);
        assert_eq!(c["odometry.timeline_restarted"], 1);
        for (r, n) in [
            ("non_finite", 1),
            ("not_unit_quaternion", 1),
            ("child_frame", 2),
            ("frame_changed", 1),
            ("out_of_order", 1),
        ] {
            assert_eq!(c[&format!("odometry.rejected.{r}")], n, "{r}");
        }
    }

    #[test]
    fn the_history_is_bounded() {
        let mut b = OdometryBuffer::new("base_link", OdometryParams::default());
        for i in 0..5000 {
            b.push(&sample(i as f64 * 1e-3, 0.0, [1.0, 0.0, 0.0], 0.0)).unwrap();
        }
        assert!(b.samples.len() <= OdometryBuffer::MAX_SAMPLES);
        assert!(b.at(4_999_000_000).is_some());
    }
}
