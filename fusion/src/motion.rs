//! Ego motion over short horizons: an IMU buffer interpolated at any stamp (SLERP for the
//! orientation, linear for rates and accelerations) and LiDAR deskew from per-point times.
use crate::{cloud::LidarPoint, StampNs};
use nalgebra::{Point3, UnitQuaternion, Vector3};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImuState {
    pub stamp: StampNs,
    /// Orientation of base_link in the world (as imu_ingest publishes it).
    pub orientation: UnitQuaternion<f64>,
    pub angular_velocity: Vector3<f64>,
    pub linear_acceleration: Vector3<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MotionError {
    #[error("IMU sample at {got} ns is not after the newest buffered one at {newest} ns")]
    OutOfOrder { got: StampNs, newest: StampNs },
    #[error("no IMU data around {0} ns")]
    NoData(StampNs),
}

/// The newest IMU samples, oldest first.
pub struct ImuBuffer {
    samples: VecDeque<ImuState>,
    capacity: usize,
}

impl ImuBuffer {
    pub fn new(capacity: usize) -> Self {
        Self { samples: VecDeque::with_capacity(capacity), capacity: capacity.max(2) }
    }

    pub fn push(&mut self, s: ImuState) -> Result<(), MotionError> {
        if let Some(newest) = self.samples.back() {
            if s.stamp <= newest.stamp {
                return Err(MotionError::OutOfOrder { got: s.stamp, newest: newest.stamp });
            }
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn newest(&self) -> Option<ImuState> {
        self.samples.back().copied()
    }

    /// The state at `t`, interpolated between the samples around it; None outside the
    /// buffered span (no extrapolation).
    pub fn at(&self, t: StampNs) -> Option<ImuState> {
        let first = self.samples.front()?;
        let last = self.samples.back()?;
        if t < first.stamp || t > last.stamp {
            return None;
        }
        // First sample at or after t.
        let i = self.samples.partition_point(|s| s.stamp < t);
        let b = self.samples[i];
        if b.stamp == t || i == 0 {
            return Some(ImuState { stamp: t, ..b });
        }
        let a = self.samples[i - 1];
        let f = (t - a.stamp) as f64 / (b.stamp - a.stamp) as f64;
        Some(ImuState {
            stamp: t,
            orientation: a.orientation.slerp(&b.orientation, f),
            angular_velocity: a.angular_velocity.lerp(&b.angular_velocity, f),
            linear_acceleration: a.linear_acceleration.lerp(&b.linear_acceleration, f),
        })
    }

    /// Rotation of base_link from time `t0` to `t1`, expressed in the base frame at `t0`.
    pub fn rotation_between(&self, t0: StampNs, t1: StampNs) -> Result<UnitQuaternion<f64>, MotionError> {
        let a = self.at(t0).ok_or(MotionError::NoData(t0))?;
        let b = self.at(t1).ok_or(MotionError::NoData(t1))?;
        Ok(a.orientation.inverse() * b.orientation)
    }
}

/// Moves every point of a sweep into the base frame at the sweep's stamp. Points are in
/// base_link at their own firing time (`stamp + t`); the base rotated (IMU) and moved
/// (`velocity`, base frame, constant over the sweep) since the stamp.
pub fn deskew(
    points: &mut [LidarPoint],
    stamp: StampNs,
    imu: &ImuBuffer,
    velocity: &Vector3<f64>,
) -> Result<(), MotionError> {
    // The sweep's time offsets are monotonic in practice; cache the rotation per distinct
    // 0.1 ms step instead of interpolating per point.
    let mut cache: Option<(i64, UnitQuaternion<f64>)> = None;
    for p in points.iter_mut() {
        let dt_ns = (p.t as f64 * 1e9) as i64;
        let key = dt_ns / 100_000;
        let rot = match cache {
            Some((k, r)) if k == key => r,
            _ => {
                let r = imu.rotation_between(stamp, stamp + dt_ns)?;
                cache = Some((key, r));
                r
            }
        };
        let dt = dt_ns as f64 * 1e-9;
        let q = rot * Point3::new(p.x as f64, p.y as f64, p.z as f64) + velocity * dt;
        p.x = q.x as f32;
        p.y = q.y as f32;
        p.z = q.z as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(stamp: StampNs, yaw: f64) -> ImuState {
        ImuState {
            stamp,
            orientation: UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw),
            angular_velocity: Vector3::new(0.0, 0.0, yaw),
            linear_acceleration: Vector3::zeros(),
        }
    }

    #[test]
    fn interpolates_with_slerp_and_refuses_extrapolation_and_disorder() {
        let mut b = ImuBuffer::new(10);
        b.push(state(1_000, 0.0)).unwrap();
        b.push(state(2_000, 1.0)).unwrap();
        assert!(matches!(b.push(state(2_000, 1.0)), Err(MotionError::OutOfOrder { .. })));
        let m = b.at(1_250).unwrap();
        assert!((m.orientation.angle() - 0.25).abs() < 1e-12);
        assert!((m.angular_velocity.z - 0.25).abs() < 1e-12);
        assert!(b.at(999).is_none() && b.at(2_001).is_none());
        assert!((b.rotation_between(1_000, 2_000).unwrap().angle() - 1.0).abs() < 1e-12);
    }
}
