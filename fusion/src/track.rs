//! Multi-object tracker: constant-velocity Kalman filters (nalgebra) in base_link with
//! ego-motion compensation, global-nearest-neighbour assignment inside a gate, and track
//! birth (confirmed after `confirm_hits`) and death (after `max_misses`).
use crate::{detect::Label, Sensor};
use nalgebra::{Matrix2, Matrix2x4, Matrix4, Matrix4x2, Vector2, Vector4};

#[derive(Debug, Clone)]
pub struct TrackerParams {
    /// Association gate on the position distance, metres.
    pub gate: f64,
    /// Process noise: acceleration standard deviation, m/s².
    pub accel_sigma: f64,
    /// Measurement noise: position standard deviation, metres.
    pub meas_sigma: f64,
    pub confirm_hits: u32,
    pub max_misses: u32,
}

impl Default for TrackerParams {
    fn default() -> Self {
        Self { gate: 2.5, accel_sigma: 2.0, meas_sigma: 0.3, confirm_hits: 3, max_misses: 5 }
    }
}

/// A detection to track: a position in base_link, its box, and what the sensors say it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub position: [f64; 2],
    pub size: [f64; 3],
    /// Box centre height and heading (from the LiDAR box; 0 when unknown).
    pub z: f64,
    pub yaw: f64,
    pub label: Label,
    /// Confidence of `label`, [0, 1].
    pub confidence: f32,
    /// FusedObject.SENSOR_* bits of the sensors behind this detection.
    pub sensors: u8,
}

impl Detection {
    /// A LiDAR-only detection of unknown class (for tests and simple callers).
    pub fn at(position: [f64; 2], size: [f64; 3]) -> Self {
        Self {
            position,
            size,
            z: size[2] / 2.0,
            yaw: 0.0,
            label: Label::Unknown,
            confidence: 0.0,
            sensors: SENSOR_LIDAR,
        }
    }
}

pub const SENSOR_CAMERA: u8 = Sensor::Camera.bit();
pub const SENSOR_LIDAR: u8 = Sensor::Lidar.bit();
pub const SENSOR_RADAR: u8 = Sensor::Radar.bit();

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u32,
    /// x, y, vx, vy in base_link; the velocity is relative to the ego (the pipeline gives the
    /// tracker the IMU's yaw but no translation: there is no odometry), in base axes.
    pub state: Vector4<f64>,
    pub covariance: Matrix4<f64>,
    pub size: [f64; 3],
    pub z: f64,
    pub yaw: f64,
    pub hits: u32,
    pub misses: u32,
    pub age: u32,
    /// Accumulated confidence per [`Label`] (index = Label::index); the label is the argmax
    /// of what the motion allows (`ClassPriors::track_label`).
    pub votes: [f32; 4],
    /// The part of `votes` the camera cast (matched camera boxes): how much the camera has
    /// said about this track, which event-driven perception asks for before it stops looking.
    pub camera_votes: f32,
    /// Sensors that observed the track in the latest step (0 when it was not updated).
    pub sensors: u8,
    /// Velocity over the ground (base axes, m/s), averaged over about a second once the
    /// filter's velocity has settled; None until then, or while the ego's own velocity is
    /// unknown. What the labels weigh motion by: a thing that moves is no obstacle.
    pub ground_velocity: Option<[f64; 2]>,
}

impl Track {
    pub fn confirmed(&self, p: &TrackerParams) -> bool {
        self.hits >= p.confirm_hits
    }
    pub fn position(&self) -> [f64; 2] {
        [self.state[0], self.state[1]]
    }
    pub fn velocity(&self) -> [f64; 2] {
        [self.state[2], self.state[3]]
    }
    /// The filter's velocity over the ground now (not averaged), given the ego's.
    pub fn ground_velocity_now(&self, ego_velocity: [f64; 2]) -> [f64; 2] {
        [self.state[2] + ego_velocity[0], self.state[3] + ego_velocity[1]]
    }
    /// Speed over the ground, when known (see `ground_velocity`).
    pub fn ground_speed(&self) -> Option<f64> {
        self.ground_velocity.map(|v| v[0].hypot(v[1]))
    }
    /// Standard deviation of the filter's velocity (m/s, the worse axis).
    pub fn velocity_sigma(&self) -> f64 {
        self.covariance[(2, 2)].max(self.covariance[(3, 3)]).sqrt()
    }
}

fn vote(votes: &mut [f32; 4], camera_votes: &mut f32, d: &Detection) {
    if d.label != Label::Unknown {
        votes[d.label.index()] += d.confidence.max(0.05);
        if d.sensors & SENSOR_CAMERA != 0 {
            *camera_votes += d.confidence.max(0.05);
        }
    }
}

/// The base frame's motion between two updates, expressed in the earlier base frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct EgoMotion {
    pub dx: f64,
    pub dy: f64,
    pub dyaw: f64,
    /// The base's velocity over the ground now (base axes, m/s), when known (odometry, or
    /// the radar's Doppler): track velocities stay relative, this gives their ground motion.
    /// Meant for dx = dy = 0 (velocities relative to the ego, the pipeline's case).
    pub velocity: Option<[f64; 2]>,
    /// Where `velocity` came from: a change of source is no change of speed (odometry and
    /// the radar's estimate differ by their biases, and the radar's has no sideways part).
    pub velocity_source: EgoSource,
}

/// The source of the ego's velocity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EgoSource {
    #[default]
    Odometry,
    /// The ego speed from the radar's Doppler of static returns.
    Radar,
}

/// The ego's last known velocity, in the axes of the tracker's last step.
#[derive(Debug, Clone, Copy)]
struct LastEgo {
    velocity: Vector2<f64>,
    source: EgoSource,
    /// Steps since it was known (carried through sets that had no ego velocity).
    gap: u32,
}

/// How many steps without an ego velocity the last one is carried (0.5 s at 10 Hz): a
/// speed change across a short gap is still applied when the velocity returns.
const MAX_EGO_GAP_STEPS: u32 = 5;

/// Tracks' ground velocities are averaged with this weight per update (~1 s at 10 Hz), and
/// only from a filter velocity this settled (m/s): a fresh track's velocity is a guess.
const GROUND_VELOCITY_WEIGHT: f64 = 0.1;
const GROUND_VELOCITY_MAX_SIGMA: f64 = 0.7;

pub struct Tracker {
    pub params: TrackerParams,
    tracks: Vec<Track>,
    next_id: u32,
    /// The ego's last known velocity, carried through a short gap.
    last_ego: Option<LastEgo>,
}

impl Tracker {
    pub fn new(params: TrackerParams) -> Self {
        Self { params, tracks: vec![], next_id: 1, last_ego: None }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Predicts every track `dt` seconds ahead, moves them into the new base frame, then
    /// associates the detections and updates, creates and deletes tracks.
    pub fn step(&mut self, dt: f64, ego: EgoMotion, detections: &[Detection]) {
        let (c, s) = (ego.dyaw.cos(), ego.dyaw.sin());
        // p_new = R(-dyaw) (p_old - d); velocities rotate with the frame.
        let rot = Matrix2::new(c, s, -s, c);
        let f = Matrix4::new(1.0, 0.0, dt, 0.0, 0.0, 1.0, 0.0, dt, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0);
        let q = {
            let (a2, dt2, dt3, dt4) = (self.params.accel_sigma.powi(2), dt * dt, dt.powi(3) / 2.0, dt.powi(4) / 4.0);
            Matrix4::new(dt4, 0.0, dt3, 0.0, 0.0, dt4, 0.0, dt3, dt3, 0.0, dt2, 0.0, 0.0, dt3, 0.0, dt2) * a2
        };
        let mut frame = Matrix4::zeros();
        frame.fixed_view_mut::<2, 2>(0, 0).copy_from(&rot);
        frame.fixed_view_mut::<2, 2>(2, 2).copy_from(&rot);
        // Relative velocities are ground velocity minus the ego's: v_rel' = R (v_rel + e_prev)
        // - e_now. When the frame turns, the ground part turns with it but the ego's does not
        // (it still moves along its own x): rotating the whole relative velocity would make
        // static things seem to drift sideways by ~v·dyaw per step while turning. When the
        // ego brakes or speeds up, every relative velocity changes by its velocity change:
        // left to the constant-velocity filter, a parked car would seem to move at 1-2 m/s
        // over the ground while the robot brakes at 3 m/s² (it lags the change by ~1 s).
        // Across a gap (sets without an ego velocity) the last one is carried, turned with
        // the frame, so the change over the gap is applied when the velocity returns; after
        // a change of source, or a longer gap, the speed is taken as unchanged.
        let now = ego.velocity.map(|v| Vector2::new(v[0], v[1]));
        let prev = self.last_ego.filter(|l| l.source == ego.velocity_source).map(|l| l.velocity);
        let turn_correction = match (now, prev) {
            (Some(now), Some(prev)) => rot * prev - now,
            (Some(now), None) => rot * now - now,
            (None, _) => Vector2::zeros(),
        };
        self.last_ego = match (now, self.last_ego) {
            (Some(velocity), _) => Some(LastEgo { velocity, source: ego.velocity_source, gap: 0 }),
            (None, Some(l)) if l.gap < MAX_EGO_GAP_STEPS => {
                Some(LastEgo { velocity: rot * l.velocity, gap: l.gap + 1, ..l })
            }
            (None, _) => None,
        };
        for t in &mut self.tracks {
            let predicted = f * t.state;
            let shifted = Vector4::new(predicted[0] - ego.dx, predicted[1] - ego.dy, predicted[2], predicted[3]);
            t.state = frame * shifted;
            t.state[2] += turn_correction[0];
            t.state[3] += turn_correction[1];
            if ego.velocity.is_none() {
                // Without the ego's speed there is no ground motion to speak of.
                t.ground_velocity = None;
            }
            t.covariance = frame * (f * t.covariance * f.transpose() + q) * frame.transpose();
            t.ground_velocity = t.ground_velocity.map(|g| (rot * Vector2::new(g[0], g[1])).into());
            t.age += 1;
        }
        // Global nearest neighbour: all pairs inside the gate, cheapest first.
        let mut pairs: Vec<(f64, usize, usize)> = vec![];
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                let dist = (t.state[0] - d.position[0]).hypot(t.state[1] - d.position[1]);
                if dist <= self.params.gate {
                    pairs.push((dist, ti, di));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut track_used = vec![false; self.tracks.len()];
        let mut det_used = vec![false; detections.len()];
        let h = Matrix2x4::new(1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0);
        let r = Matrix2::identity() * self.params.meas_sigma.powi(2);
        for (_, ti, di) in pairs {
            if track_used[ti] || det_used[di] {
                continue;
            }
            track_used[ti] = true;
            det_used[di] = true;
            let t = &mut self.tracks[ti];
            let d = &detections[di];
            let z = Vector2::new(d.position[0], d.position[1]);
            let s = h * t.covariance * h.transpose() + r;
            let Some(s_inv) = s.try_inverse() else { continue };
            let k: Matrix4x2<f64> = t.covariance * h.transpose() * s_inv;
            t.state += k * (z - h * t.state);
            t.covariance = (Matrix4::identity() - k * h) * t.covariance;
            for (a, b) in t.size.iter_mut().zip(d.size) {
                *a = 0.7 * *a + 0.3 * b;
            }
            t.z = 0.7 * t.z + 0.3 * d.z;
            t.yaw = d.yaw;
            vote(&mut t.votes, &mut t.camera_votes, d);
            t.sensors = d.sensors;
            t.hits += 1;
            t.misses = 0;
            if let Some(ego) = ego.velocity.filter(|_| t.velocity_sigma() <= GROUND_VELOCITY_MAX_SIGMA) {
                let now = t.ground_velocity_now(ego);
                let w = GROUND_VELOCITY_WEIGHT;
                t.ground_velocity = Some(match t.ground_velocity {
                    Some(g) => [g[0] + w * (now[0] - g[0]), g[1] + w * (now[1] - g[1])],
                    None => now,
                });
            }
        }
        for (ti, used) in track_used.iter().enumerate() {
            if !used {
                self.tracks[ti].misses += 1;
                self.tracks[ti].sensors = 0;
            }
        }
        let max_misses = self.params.max_misses;
        self.tracks.retain(|t| t.misses <= max_misses);
        for (di, d) in detections.iter().enumerate() {
            if !det_used[di] {
                let mut cov = Matrix4::identity() * self.params.meas_sigma.powi(2);
                cov[(2, 2)] = 25.0; // unknown velocity: ±5 m/s
                cov[(3, 3)] = 25.0;
                let (mut votes, mut camera_votes) = ([0.0; 4], 0.0);
                vote(&mut votes, &mut camera_votes, d);
                self.tracks.push(Track {
                    id: self.next_id,
                    state: Vector4::new(d.position[0], d.position[1], 0.0, 0.0),
                    covariance: cov,
                    size: d.size,
                    z: d.z,
                    yaw: d.yaw,
                    hits: 1,
                    misses: 0,
                    age: 0,
                    votes,
                    camera_votes,
                    sensors: d.sensors,
                    ground_velocity: None,
                });
                self.next_id += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ego drives a 20 m circle (6 m/s, 0.3 rad/s) past a post and a walker: the post
    /// stays still over the ground and the walker walks, although relative to the turning
    /// ego both sweep sideways.
    #[test]
    fn ground_velocity_while_turning_is_the_world_s() {
        let (v, w, dt) = (6.0, 0.3, 0.1);
        let mut tr = Tracker::new(TrackerParams::default());
        let world = |k: usize, walker: bool| {
            let t = k as f64 * dt;
            if walker {
                [25.0, -5.0 + 1.2 * t]
            } else {
                [30.0, 20.0]
            }
        };
        for k in 0..25 {
            let psi = w * k as f64 * dt;
            let ego = [v / w * psi.sin(), v / w * (1.0 - psi.cos())];
            let dets: Vec<Detection> = [false, true]
                .iter()
                .map(|&walker| {
                    let p = world(k, walker);
                    let (dx, dy) = (p[0] - ego[0], p[1] - ego[1]);
                    Detection::at([psi.cos() * dx + psi.sin() * dy, -psi.sin() * dx + psi.cos() * dy], [0.5; 3])
                })
                .collect();
            let motion =
                EgoMotion { dyaw: if k == 0 { 0.0 } else { w * dt }, velocity: Some([v, 0.0]), ..EgoMotion::default() };
            tr.step(dt, motion, &dets);
        }
        let speeds: Vec<f64> = tr.tracks().iter().map(|t| t.ground_speed().expect("settled")).collect();
        assert_eq!(speeds.len(), 2);
        assert!(speeds[0] < 0.3, "the post moves at {:.2} m/s", speeds[0]);
        assert!((speeds[1] - 1.2).abs() < 0.3, "the walker moves at {:.2} m/s", speeds[1]);
    }

    /// The ego brakes from 7 m/s to a stop at 3 m/s² past a parked car and a walker: over
    /// the ground the car stays parked and the walker keeps walking, through the braking and
    /// after it (a filter left to track the ego's deceleration as the objects' own would lag
    /// it by ~1 s: 1-2 m/s of made-up ground motion), also when the ego's velocity is unknown
    /// for two sets in the middle of the braking.
    #[test]
    fn ground_velocity_while_the_ego_brakes_is_the_world_s() {
        for gap in [None, Some(20..22)] {
            braking_past_a_parked_car_and_a_walker(gap);
        }
    }

    fn braking_past_a_parked_car_and_a_walker(gap: Option<std::ops::Range<usize>>) {
        let dt = 0.1;
        let speed = |t: f64| (7.0 - 3.0 * (t - 1.0).max(0.0)).max(0.0);
        let mut tr = Tracker::new(TrackerParams::default());
        let (mut ego_x, mut worst) = (0.0, [0.0f64; 2]);
        for k in 0..50 {
            let t = k as f64 * dt;
            let objects = [[40.0, -4.0], [30.0, 3.0 - 1.2 * t]];
            let dets: Vec<Detection> = objects.iter().map(|p| Detection::at([p[0] - ego_x, p[1]], [0.5; 3])).collect();
            let known = !gap.as_ref().is_some_and(|g| g.contains(&k));
            tr.step(dt, EgoMotion { velocity: known.then(|| [speed(t), 0.0]), ..EgoMotion::default() }, &dets);
            ego_x += 0.5 * (speed(t) + speed(t + dt)) * dt;
            if k >= 15 && !gap.as_ref().is_some_and(|g| k < g.end + 1) {
                for (i, truth) in [[0.0, 0.0], [0.0, -1.2]].iter().enumerate() {
                    let track = tr.tracks().iter().min_by(|a, b| {
                        let d = |t: &Track| (t.position()[0] - (objects[i][0] - ego_x)).abs();
                        d(a).total_cmp(&d(b))
                    });
                    let g = track.unwrap().ground_velocity_now([speed(t), 0.0]);
                    worst[i] = worst[i].max((g[0] - truth[0]).hypot(g[1] - truth[1]));
                }
            }
        }
        assert!(worst[0] < 0.3, "gap {gap:?}: the parked car moves at up to {:.2} m/s over the ground", worst[0]);
        assert!(worst[1] < 0.3, "gap {gap:?}: the walker's ground velocity is off by up to {:.2} m/s", worst[1]);
    }

    #[test]
    fn constant_velocity_target_gets_one_track_and_its_velocity() {
        let mut tr = Tracker::new(TrackerParams::default());
        for k in 0..30 {
            let t = k as f64 * 0.1;
            tr.step(0.1, EgoMotion::default(), &[Detection::at([10.0 + 2.0 * t, -1.0 + 0.5 * t], [1.0; 3])]);
        }
        assert_eq!(tr.tracks().len(), 1);
        let v = tr.tracks()[0].velocity();
        assert!((v[0] - 2.0).abs() < 0.05 && (v[1] - 0.5).abs() < 0.05, "{v:?}");
        // Without detections the track dies after max_misses.
        for _ in 0..6 {
            tr.step(0.1, EgoMotion::default(), &[]);
        }
        assert!(tr.tracks().is_empty());
    }
}
