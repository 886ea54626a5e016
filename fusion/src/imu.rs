//! sensor_msgs/Imu without ROS: validation, bias removal, rotation into base_link, and a
//! complementary orientation filter for IMUs that publish no orientation.
use crate::{ingest::Reject, StampNs};
use nalgebra::{Matrix3, Quaternion, UnitQuaternion, Vector3};

#[derive(Debug, Clone, PartialEq)]
pub struct ImuSample {
    pub stamp: StampNs,
    /// x, y, z, w. Ignored when `orientation_covariance[0] == -1` (REP 145: no orientation).
    pub orientation: [f64; 4],
    pub orientation_covariance: [f64; 9],
    pub angular_velocity: [f64; 3],
    pub angular_velocity_covariance: [f64; 9],
    pub linear_acceleration: [f64; 3],
    pub linear_acceleration_covariance: [f64; 9],
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImuParams {
    /// Subtracted from the raw readings (sensor frame).
    pub gyro_bias: [f64; 3],
    pub accel_bias: [f64; 3],
    /// Readings at or beyond these magnitudes count as saturated (evidence for a later
    /// `impact`/`sensor_degraded` decision; the sample is still published).
    pub accel_saturation: f64,
    pub gyro_saturation: f64,
    /// Weight of the accelerometer tilt in the complementary filter, per sample.
    pub filter_gain: f64,
}

impl Default for ImuParams {
    fn default() -> Self {
        Self {
            gyro_bias: [0.0; 3],
            accel_bias: [0.0; 3],
            accel_saturation: 156.9,
            gyro_saturation: 34.9,
            filter_gain: 0.02,
        }
    }
}

const GRAVITY: f64 = 9.80665;

/// A reading this many times its saturation level cannot come from the sensor.
const IMPOSSIBLE_FACTOR: f64 = 10.0;

/// Per-stream state: the mount rotation and the filter's orientation estimate.
pub struct ImuProcessor {
    imu_to_base: UnitQuaternion<f64>,
    params: ImuParams,
    estimate: Option<(StampNs, UnitQuaternion<f64>)>,
}

fn rotate_cov(r: &Matrix3<f64>, c: &[f64; 9]) -> [f64; 9] {
    if c[0] == -1.0 {
        return *c;
    }
    let m = Matrix3::from_row_slice(c);
    let out = r * m * r.transpose();
    let mut o = [0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            o[i * 3 + j] = out[(i, j)];
        }
    }
    o
}

impl ImuProcessor {
    pub fn new(imu_to_base: UnitQuaternion<f64>, params: ImuParams) -> Self {
        Self { imu_to_base, params, estimate: None }
    }

    /// Returns the sample in base_link, and whether it was saturated.
    pub fn process(&mut self, s: &ImuSample) -> Result<(ImuSample, bool), Reject> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !finite(&s.angular_velocity) {
            return Err(Reject::NonFiniteValue("angular_velocity"));
        }
        if !finite(&s.linear_acceleration) {
            return Err(Reject::NonFiniteValue("linear_acceleration"));
        }
        // Finite but physically impossible: far beyond any sensor's range (10x the
        // saturation level). Integrated, one such sample would ruin the orientation for good.
        let p = &self.params;
        for (field, v, limit) in [
            ("angular_velocity", &s.angular_velocity, IMPOSSIBLE_FACTOR * p.gyro_saturation),
            ("linear_acceleration", &s.linear_acceleration, IMPOSSIBLE_FACTOR * p.accel_saturation),
        ] {
            let magnitude = Vector3::from(*v).norm();
            if magnitude > limit {
                return Err(Reject::ImpossibleValue { field, value: magnitude, limit });
            }
        }
        let has_orientation = s.orientation_covariance[0] != -1.0;
        if has_orientation {
            if !finite(&s.orientation) {
                return Err(Reject::NonFiniteValue("orientation"));
            }
            let n = s.orientation.iter().map(|v| v * v).sum::<f64>().sqrt();
            if (n - 1.0).abs() > 0.01 {
                return Err(Reject::BadOrientation(n));
            }
        }
        let w_s = Vector3::from(s.angular_velocity) - Vector3::from(p.gyro_bias);
        let a_s = Vector3::from(s.linear_acceleration) - Vector3::from(p.accel_bias);
        let saturated = s.linear_acceleration.iter().any(|v| v.abs() >= p.accel_saturation)
            || s.angular_velocity.iter().any(|v| v.abs() >= p.gyro_saturation);
        let r = self.imu_to_base.to_rotation_matrix().into_inner();
        let (w, a) = (r * w_s, r * a_s);

        let (q, q_cov) = if has_orientation {
            let [x, y, z, qw] = s.orientation;
            let q_world_imu = UnitQuaternion::from_quaternion(Quaternion::new(qw, x, y, z));
            (q_world_imu * self.imu_to_base.inverse(), rotate_cov(&r, &s.orientation_covariance))
        } else {
            (self.filter(s.stamp, &w, &a), [0.01, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 1e3])
        };
        let out = ImuSample {
            stamp: s.stamp,
            orientation: [q.i, q.j, q.k, q.w],
            orientation_covariance: q_cov,
            angular_velocity: w.into(),
            angular_velocity_covariance: rotate_cov(&r, &s.angular_velocity_covariance),
            linear_acceleration: a.into(),
            linear_acceleration_covariance: rotate_cov(&r, &s.linear_acceleration_covariance),
        };
        Ok((out, saturated))
    }

    /// Gyro integration corrected towards the accelerometer's gravity direction while the
    /// specific force is close to 1 g (yaw is unobservable and drifts).
    fn filter(&mut self, stamp: StampNs, w: &Vector3<f64>, a: &Vector3<f64>) -> UnitQuaternion<f64> {
        let tilt = || {
            // The rotation taking the measured "up" (specific force) to world +z.
            UnitQuaternion::rotation_between(a, &Vector3::z()).unwrap_or_else(UnitQuaternion::identity)
        };
        let q = match self.estimate {
            None => tilt(),
            Some((t0, q0)) => {
                // Saturating: stamps at both ends of i64 (found by fuzz/imu) must not overflow.
                let dt = stamp.saturating_sub(t0) as f64 * 1e-9;
                let mut q = if dt > 0.0 && dt < 0.5 { q0 * UnitQuaternion::from_scaled_axis(w * dt) } else { q0 };
                let g = a.norm();
                if (g - GRAVITY).abs() < 0.1 * GRAVITY {
                    // Rotate the estimate a fraction of the way so that its "up" matches.
                    let up_est = q * a;
                    if let Some(corr) = UnitQuaternion::rotation_between(&up_est, &Vector3::z()) {
                        q = UnitQuaternion::identity().slerp(&corr, self.params.filter_gain) * q;
                    }
                }
                q
            }
        };
        // Never keep a non-finite estimate (it would stay so): start over from the tilt.
        let q = if q.coords.iter().all(|c| c.is_finite()) { q } else { tilt() };
        self.estimate = Some((stamp, q));
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(stamp: StampNs, a: [f64; 3], w: [f64; 3]) -> ImuSample {
        let mut c = [0.0; 9];
        c[0] = -1.0;
        ImuSample {
            stamp,
            orientation: [0.0, 0.0, 0.0, 1.0],
            orientation_covariance: c,
            angular_velocity: w,
            angular_velocity_covariance: [0.0; 9],
            linear_acceleration: a,
            linear_acceleration_covariance: [0.0; 9],
        }
    }

    #[test]
    fn rotates_into_base_and_removes_bias() {
        // IMU mounted yawed +90°: its x axis is base_link's y.
        let mount = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), std::f64::consts::FRAC_PI_2);
        let params = ImuParams { gyro_bias: [0.0, 0.0, 0.1], ..Default::default() };
        let mut p = ImuProcessor::new(mount, params);
        let (out, sat) = p.process(&sample(1, [1.0, 0.0, GRAVITY], [0.0, 0.0, 0.6])).unwrap();
        assert!(!sat);
        assert!((out.linear_acceleration[1] - 1.0).abs() < 1e-9 && out.linear_acceleration[0].abs() < 1e-9);
        assert!((out.angular_velocity[2] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn an_absurd_but_finite_reading_is_refused_and_leaves_the_orientation_intact() {
        let mut p = ImuProcessor::new(UnitQuaternion::identity(), ImuParams::default());
        let t0 = 1_000_000_000;
        p.process(&sample(t0, [0.0, 0.0, GRAVITY], [0.0, 0.0, 0.1])).unwrap();
        for (a, w) in
            [([0.0, 0.0, GRAVITY], [0.0, 0.0, 1e30]), ([1e30, 0.0, 0.0], [0.0; 3]), ([0.0; 3], [1e155, 1e155, 0.0])]
        {
            let e = p.process(&sample(t0 + 5_000_000, a, w)).unwrap_err();
            assert_eq!(e.as_str(), "impossible_value", "{e}");
        }
        // Saturated but possible readings still pass (and say so).
        let (_, saturated) = p.process(&sample(t0 + 5_000_000, [0.0, 0.0, GRAVITY], [0.0, 0.0, 40.0])).unwrap();
        assert!(saturated);
        let (out, _) = p.process(&sample(t0 + 10_000_000, [0.0, 0.0, GRAVITY], [0.0, 0.0, 0.1])).unwrap();
        assert!(out.orientation.iter().all(|c| c.is_finite()), "{:?}", out.orientation);
    }

    #[test]
    fn stamps_at_both_ends_of_i64_do_not_overflow_the_filter() {
        // Found by fuzz/imu: a sample stamped near i64::MAX after one near i64::MIN.
        let mut p = ImuProcessor::new(UnitQuaternion::identity(), ImuParams::default());
        p.process(&sample(i64::MIN + 1, [0.0, 0.0, GRAVITY], [0.0; 3])).unwrap();
        let (out, _) = p.process(&sample(i64::MAX, [0.0, 0.0, GRAVITY], [0.0, 0.0, 0.1])).unwrap();
        assert!(out.orientation.iter().all(|c| c.is_finite()));
    }

    #[test]
    fn filter_levels_out_and_integrates_yaw() {
        let mut p = ImuProcessor::new(UnitQuaternion::identity(), ImuParams::default());
        // 1 s at 200 Hz turning at 0.5 rad/s about z, level.
        let mut last = None;
        for i in 0..=200 {
            let (out, _) =
                p.process(&sample(1_000_000_000 + i * 5_000_000, [0.0, 0.0, GRAVITY], [0.0, 0.0, 0.5])).unwrap();
            last = Some(out);
        }
        let o = last.unwrap().orientation;
        let q = UnitQuaternion::from_quaternion(Quaternion::new(o[3], o[0], o[1], o[2]));
        let (roll, pitch, yaw) = q.euler_angles();
        assert!(roll.abs() < 1e-6 && pitch.abs() < 1e-6, "{roll} {pitch}");
        assert!((yaw - 0.5).abs() < 1e-3, "{yaw}");
    }

    #[test]
    fn rejects_nan_and_bad_quaternion_and_flags_saturation() {
        let mut p = ImuProcessor::new(UnitQuaternion::identity(), ImuParams::default());
        let e = p.process(&sample(1, [f64::NAN, 0.0, 9.8], [0.0; 3])).unwrap_err();
        assert_eq!(e.as_str(), "non_finite");
        let mut s = sample(2, [0.0, 0.0, 9.8], [0.0; 3]);
        s.orientation_covariance[0] = 0.01;
        s.orientation = [0.0, 0.0, 0.0, 0.5];
        assert_eq!(p.process(&s).unwrap_err().as_str(), "bad_orientation");
        let (_, sat) = p.process(&sample(3, [200.0, 0.0, 9.8], [0.0; 3])).unwrap();
        assert!(sat);
    }
}
