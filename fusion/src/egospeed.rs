//! Ego speed from the radar's Doppler of the static world, for a robot without odometry.
//!
//! A static return at line of sight `l` (unit, from the radar) has Doppler `-v_radar · l`
//! (+ = receding), where `v_radar` is the radar's velocity over the ground. With the base
//! moving forward at `v` (no sideslip: a wheeled robot's base_link does not move sideways)
//! and turning at `ω` (from the IMU), the radar at `r` in base_link moves at
//! `(v - ω r_y, ω r_x)`, so every static return gives one candidate for `v`:
//!
//! `v = (-doppler - ω r_x l_y) / l_x + ω r_y`.
//!
//! Returns from moving objects give wrong candidates. They are told apart by where they
//! come from: the static world (ground clutter, parked cars, poles, walls) is spread over
//! the whole field of view, whereas a moving object's returns sit in one place. So the
//! estimate is the speed on which the most distinct places agree, within a short window of
//! sweeps, not the one most returns give.
use crate::{cloud::RadarTarget, StampNs};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EgoSpeedParams {
    /// Sweeps this recent (s) vote together.
    pub window_s: f64,
    /// Candidates within ± this (m/s) of a common speed agree.
    pub tolerance: f64,
    /// Places are cells of this size (m) in base_link.
    pub cell_m: f64,
    /// An estimate needs agreement from at least this many distinct cells.
    pub min_cells: usize,
    /// Returns whose line of sight is more than acos(this) off the forward axis are not
    /// used: the candidate divides by the forward component.
    pub min_forward_cosine: f64,
    /// An estimate is held this long (s) without a new one, then the ego speed is unknown.
    pub hold_s: f64,
    /// Candidates faster than this (m/s, either way) are not a ground vehicle's.
    pub max_speed: f64,
    /// Once an estimate is held, the next one is looked for only within this acceleration
    /// (m/s²) of it, so a burst of returns from a moving object cannot pull it away.
    pub max_accel: f64,
}

impl Default for EgoSpeedParams {
    fn default() -> Self {
        Self {
            window_s: 0.35,
            tolerance: 0.3,
            cell_m: 10.0,
            min_cells: 4,
            min_forward_cosine: 0.5,
            hold_s: 1.0,
            max_speed: 40.0,
            max_accel: 10.0,
        }
    }
}

/// One estimate of the base's forward speed over the ground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EgoSpeed {
    pub stamp: StampNs,
    /// m/s along base_link x (negative when reversing).
    pub speed: f64,
    /// Returns and distinct cells that agreed on it.
    pub returns: usize,
    pub cells: usize,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    speed: f64,
    cell: (i32, i32),
}

pub struct EgoSpeedEstimator {
    params: EgoSpeedParams,
    /// The radar's position in base_link (m).
    radar: [f64; 3],
    sweeps: VecDeque<(StampNs, Vec<Candidate>)>,
    latest: Option<EgoSpeed>,
}

impl EgoSpeedEstimator {
    pub fn new(params: EgoSpeedParams, radar_position: [f64; 3]) -> Self {
        Self { params, radar: radar_position, sweeps: VecDeque::new(), latest: None }
    }

    /// One radar sweep: targets in base_link (x, y, z, doppler, rcs) at `stamp`, with the
    /// base's yaw rate (rad/s) then. Returns the new estimate when the sweep gave one.
    pub fn update(&mut self, stamp: StampNs, targets: &[RadarTarget], yaw_rate: f64) -> Option<EgoSpeed> {
        let p = self.params;
        let [rx, ry, rz] = self.radar;
        let candidates: Vec<Candidate> = targets
            .iter()
            .filter_map(|t| {
                let (dx, dy, dz) = (t.x as f64 - rx, t.y as f64 - ry, t.z as f64 - rz);
                let range = (dx * dx + dy * dy + dz * dz).sqrt();
                if range.is_nan() || range <= 0.5 || !t.doppler.is_finite() {
                    return None;
                }
                let (lx, ly) = (dx / range, dy / range);
                if lx < p.min_forward_cosine {
                    return None;
                }
                let speed = (-(t.doppler as f64) - yaw_rate * rx * ly) / lx + yaw_rate * ry;
                let cell = ((t.x as f64 / p.cell_m).floor() as i32, (t.y as f64 / p.cell_m).floor() as i32);
                (speed.abs() <= p.max_speed).then_some(Candidate { speed, cell })
            })
            .collect();
        if self.sweeps.back().is_some_and(|(s, _)| *s == stamp) {
            // The same sweep again (one radar scan can join two sets): counted once.
            return None;
        }
        let window_ns = (p.window_s * 1e9) as i64;
        // A sweep older than the newest (a bag loop restarts the pipeline first) is not mixed in.
        self.sweeps.retain(|(s, _)| *s <= stamp && stamp - s < window_ns);
        self.sweeps.push_back((stamp, candidates));
        // Near the held estimate (when there is one), else anywhere.
        let gate = self.at(stamp).map(|e| {
            let reach = p.max_accel * (stamp - e.stamp).abs() as f64 * 1e-9 + p.tolerance;
            (e.speed - reach, e.speed + reach)
        });
        let found = self.consensus(gate).map(|(speed, returns, cells)| EgoSpeed { stamp, speed, returns, cells });
        if found.is_some() {
            self.latest = found;
        }
        found
    }

    /// The speed the most distinct cells agree on: (median speed, returns, cells).
    fn consensus(&self, gate: Option<(f64, f64)>) -> Option<(f64, usize, usize)> {
        let (lo, hi) = gate.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let mut all: Vec<Candidate> =
            self.sweeps.iter().flat_map(|(_, c)| c.iter().copied()).filter(|c| (lo..=hi).contains(&c.speed)).collect();
        all.sort_by(|a, b| a.speed.total_cmp(&b.speed));
        let width = 2.0 * self.params.tolerance;
        let mut best: Option<(usize, usize, usize, usize)> = None; // (cells, returns, start, end)
                                                                   // One pass with two pointers over the sorted speeds, counting returns per cell in the
                                                                   // window (a real radar gives hundreds of returns per sweep).
        let mut in_window: HashMap<(i32, i32), usize> = HashMap::new();
        let mut end = 0;
        for start in 0..all.len() {
            while end < all.len() && all[end].speed - all[start].speed <= width {
                *in_window.entry(all[end].cell).or_default() += 1;
                end += 1;
            }
            let score = (in_window.len(), end - start);
            if best.is_none_or(|(c, n, _, _)| score > (c, n)) {
                best = Some((score.0, score.1, start, end));
            }
            if let Some(n) = in_window.get_mut(&all[start].cell) {
                *n -= 1;
                if *n == 0 {
                    in_window.remove(&all[start].cell);
                }
            }
        }
        let (cells, returns, start, end) = best?;
        if cells < self.params.min_cells {
            return None;
        }
        let members = &all[start..end];
        let median = members[members.len() / 2].speed;
        Some((median, returns, cells))
    }

    /// The same estimator with nothing remembered (a new timeline).
    pub fn restarted(&self) -> Self {
        Self::new(self.params, self.radar)
    }

    /// The newest estimate when it is at most `hold_s` older than `stamp`.
    pub fn at(&self, stamp: StampNs) -> Option<EgoSpeed> {
        let hold_ns = (self.params.hold_s * 1e9) as i64;
        self.latest.filter(|e| (stamp - e.stamp).abs() <= hold_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Static returns of a base moving at `v` turning at `w`, and a moving car's returns.
    fn sweep(v: f64, w: f64, radar: [f64; 3], car_speed: f64) -> Vec<RadarTarget> {
        let vr = [v - w * radar[1], w * radar[0]];
        let mut out = vec![];
        for (x, y) in [(12.0, -6.0), (30.0, 9.0), (45.0, -20.0), (60.0, 3.0), (22.0, 14.0)] {
            let (dx, dy, dz) = (x - radar[0], y - radar[1], -0.4 - radar[2]);
            let r: f64 = (dx * dx + dy * dy + dz * dz).sqrt();
            let doppler = -(vr[0] * dx + vr[1] * dy) / r;
            out.push([x as f32, y as f32, -0.4, doppler as f32, -5.0].into());
        }
        // A car ahead driving away at `car_speed`: eight returns in one place.
        for k in 0..8 {
            let (x, y) = (20.0 + 0.2 * k as f64, 0.3 * k as f64 - 1.0);
            let (dx, dy) = (x - radar[0], y - radar[1]);
            let r = dx.hypot(dy);
            let doppler = ((car_speed - vr[0]) * dx - vr[1] * dy) / r;
            out.push([x as f32, y as f32, 0.5, doppler as f32, 10.0].into());
        }
        out
    }

    #[test]
    fn the_static_world_outvotes_a_car_with_more_returns() {
        let radar = [2.0, 0.3, 0.5];
        let mut e = EgoSpeedEstimator::new(EgoSpeedParams::default(), radar);
        let got = e.update(0, &sweep(7.0, 0.1, radar, 12.0), 0.1).expect("an estimate");
        assert!((got.speed - 7.0).abs() < 1e-3, "{got:?}");
        assert_eq!((got.cells, got.returns), (5, 5));
        // A speed 5 m/s away 0.1 s later is beyond any braking: not taken.
        let next = e.update(100_000_000, &sweep(2.0, 0.0, radar, 3.0), 0.0);
        assert!(next.is_none_or(|g| (g.speed - 7.0).abs() < 1e-3), "{next:?}");
        // Reversing works the same.
        let mut e = EgoSpeedEstimator::new(EgoSpeedParams::default(), radar);
        let got = e.update(0, &sweep(-2.0, 0.0, radar, 3.0), 0.0).unwrap();
        assert!((got.speed + 2.0).abs() < 1e-3, "{got:?}");
    }

    #[test]
    fn too_few_places_give_no_estimate_and_an_old_one_expires() {
        let radar = [2.0, 0.0, 0.5];
        let mut e = EgoSpeedEstimator::new(EgoSpeedParams::default(), radar);
        e.update(0, &sweep(5.0, 0.0, radar, 9.0), 0.0).unwrap();
        // Only the car: one place, however many returns.
        let car_only: Vec<RadarTarget> = sweep(5.0, 0.0, radar, 9.0)[5..].to_vec();
        assert_eq!(e.update(1_000_000_000, &car_only, 0.0), None);
        assert!(e.at(1_000_000_000).is_some(), "held for hold_s");
        assert_eq!(e.at(1_100_000_001), None);
    }
}
