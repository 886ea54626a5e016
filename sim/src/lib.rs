//! `fusion_sim`'s world and sensors (crate `sensor_sim`, apart from the `fusion` core it
//! feeds), ROS-free and deterministic in the seed: an ego platform
//! on a speed / yaw-rate profile over a ground plane, actors with boxes and trajectories,
//! and ray-cast camera, LiDAR and radar plus an IMU. Occlusion is real: every sensor sees
//! the nearest surface along each ray. The binary in `nodes/` turns the outputs into ROS
//! messages in a rosbag2 bag and writes the ground truth beside it.
pub mod dress;

pub use dress::{random_surroundings, Appearance, Material, Part, Pattern, Road, SceneLook, Scenery, Shape};
use fusion::calib::{point_in_polygon, Calibration};
use fusion::cloud::{LidarPoint, RadarTarget};
use nalgebra::{Isometry3, Point3, Translation3, UnitQuaternion, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};
use serde::Serialize;

pub const GRAVITY: f64 = 9.80665;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Person,
    Vehicle,
    Obstacle,
}

/// An actor: a body moving at constant velocity in the world frame between `t0` and `t1`.
/// Its bounding box (`size`) is the ground truth; the sensors see its `shape`'s parts.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: u32,
    pub class: Class,
    /// Length (along heading), width, height, metres.
    pub size: [f64; 3],
    pub shape: Shape,
    /// Paint, pattern, LiDAR intensity and radar RCS: drawn independently of the class.
    pub look: Appearance,
    /// Where in its stride a pedestrian starts, [0, 1).
    pub stride_phase: f64,
    /// World position of the box's ground centre at `t0`, and its velocity.
    pub p0: [f64; 2],
    pub velocity: [f64; 2],
    pub t0: f64,
    pub t1: f64,
    /// Seen by LiDAR and radar but not by the camera (for `sensor_disagreement`).
    pub camera_invisible: bool,
    /// The script's body and size stand: a seed dresses the actor's paint, not its shape
    /// (an object sized to hide below one LiDAR's beams must stay that small).
    pub body_fixed: bool,
}

impl Actor {
    pub fn present(&self, t: f64) -> bool {
        t >= self.t0 && t <= self.t1
    }
    pub fn position(&self, t: f64) -> [f64; 2] {
        let dt = t - self.t0;
        [self.p0[0] + self.velocity[0] * dt, self.p0[1] + self.velocity[1] * dt]
    }
    /// The parts of its body at t (a pedestrian's legs and arms swing as it walks).
    pub fn parts(&self, t: f64) -> Vec<Part> {
        let walked = self.velocity[0].hypot(self.velocity[1]) * (t - self.t0).max(0.0);
        dress::parts(self.shape, self.size, (self.stride_phase + walked / 1.4).fract())
    }
    pub fn yaw(&self) -> f64 {
        if self.velocity[0].hypot(self.velocity[1]) > 1e-6 {
            self.velocity[1].atan2(self.velocity[0])
        } else {
            0.0
        }
    }
}

/// What a scenario breaks, and when (seconds from the start).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub camera_blackout: Option<(f64, f64)>,
    pub lidar_dropout: Option<(f64, f64)>,
    /// Time of an IMU shock.
    pub imu_impact: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// Ego speed (m/s) and yaw rate (rad/s) as functions of time.
    pub speed: fn(f64) -> f64,
    pub yaw_rate: fn(f64) -> f64,
    pub actors: Vec<Actor>,
    /// Sky, ground, light and camera response.
    pub look: SceneLook,
    pub faults: Faults,
    /// Anomalies the scenario is built to contain (kind, sensor, window); the rest of the
    /// ground-truth events (zone intrusion, collision risk) are found from the geometry.
    pub declared_events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    pub actor_ids: Vec<u32>,
    pub onset: f64,
    pub offset: f64,
}

pub const SCENARIOS: [&str; 8] = [
    "nominal",
    "pedestrian_intrusion",
    "collision_course",
    "camera_blackout",
    "lidar_dropout",
    "imu_impact",
    "sensor_disagreement",
    "mixed",
];

/// Scenarios written for a robot of their own (not the standard one of DESIGN.md §3), kept
/// apart from [`SCENARIOS`] (which the detector's test frames draw from): each comes with
/// its calibration ([`scenario_robot`]), which fusion_sim and fusion_replay --sim use
/// unless given another.
pub const ROBOT_SCENARIOS: [&str; 1] = ["multi_sensor"];

/// The calibration (YAML) of a scenario's own robot, when it has one: `multi_sensor` is
/// config/calibration_multi_sensor.yaml (three cameras, two LiDARs, three radars, an IMU).
pub fn scenario_robot(name: &str) -> Option<&'static str> {
    match name {
        "multi_sensor" => Some(include_str!("../../config/calibration_multi_sensor.yaml")),
        _ => None,
    }
}

fn actor(id: u32, class: Class, p0: [f64; 2], velocity: [f64; 2]) -> Actor {
    let size = match class {
        Class::Person => [0.5, 0.6, 1.75],
        Class::Vehicle => [4.5, 1.9, 1.6],
        Class::Obstacle => [0.8, 0.8, 1.0],
    };
    Actor {
        id,
        class,
        size,
        shape: dress::default_body(class),
        look: Appearance::solid([128.0, 128.0, 128.0]),
        stride_phase: 0.0,
        p0,
        velocity,
        t0: 0.0,
        t1: f64::INFINITY,
        camera_invisible: false,
        body_fixed: false,
    }
}

/// Actors 1..=BASE_ACTORS are every named scenario's street scene; scenarios add theirs after.
const BASE_ACTORS: u32 = 3;

fn event(kind: &str, sensor: Option<&str>, onset: f64, offset: f64) -> Event {
    Event { kind: kind.into(), sensor: sensor.map(Into::into), actor_ids: vec![], onset, offset }
}

/// A named scenario as scripted, its world drawn from seed 0 (see [`scenario_seeded`]).
pub fn scenario(name: &str) -> Option<Scenario> {
    let mut s = scripted(name)?;
    dress_world(&mut s, 0);
    Some(s)
}

/// A named scenario whose seed varies its world, not only the sensor noise: every actor's
/// body, size, paint, pattern, LiDAR intensity and RCS, the sky, ground, light and
/// exposure, and the street scene's start positions (±1 m along, ±0.4 m across their path)
/// and speeds (±10 %). What the script stages stays: the crossing still crosses, the
/// oncoming vehicle still closes in the ego lane, faults keep their times.
pub fn scenario_seeded(name: &str, seed: u64) -> Option<Scenario> {
    let mut s = scripted(name)?;
    let mut r = rng(seed, 31);
    // The street scene around the script (ids 1–3) moves; the actors a scenario adds to
    // stage its event keep their timing (a crossing shifted by a metre may miss the zone).
    for a in s.actors.iter_mut().filter(|a| a.id <= BASE_ACTORS) {
        let (along, across) = (r.gen_range(-1.0..1.0), r.gen_range(-0.4..0.4));
        let speed = a.velocity[0].hypot(a.velocity[1]);
        let dir = if speed > 1e-3 { [a.velocity[0] / speed, a.velocity[1] / speed] } else { [1.0, 0.0] };
        if !a.camera_invisible {
            a.p0 = [a.p0[0] + along * dir[0] - across * dir[1], a.p0[1] + along * dir[1] + across * dir[0]];
        }
        let k = r.gen_range(0.9..1.1);
        a.velocity = [a.velocity[0] * k, a.velocity[1] * k];
    }
    dress_world(&mut s, seed);
    Some(s)
}

/// Draws the scene's look and every actor's body and appearance from `seed`. An actor's
/// draw depends on its id and the seed only, never on its class's colour.
fn dress_world(s: &mut Scenario, seed: u64) {
    s.look = dress::random_look(&mut rng(seed, 997));
    for a in s.actors.iter_mut() {
        let mut r = rng(seed, 1_000 + a.id as u64);
        let (shape, size) = dress::random_body(a.class, &mut r);
        if !a.body_fixed {
            a.shape = shape;
            a.size = size;
        }
        a.look = dress::random_appearance(&mut r);
        a.stride_phase = r.gen_range(0.0..1.0);
    }
}

/// The named scenarios' scripts. Ego starts at the world origin heading +x.
fn scripted(name: &str) -> Option<Scenario> {
    let gentle: fn(f64) -> f64 = |t| if (8.0..14.0).contains(&t) { 0.05 } else { 0.0 };
    let straight: fn(f64) -> f64 = |_| 0.0;
    let base = |name: &str| Scenario {
        name: name.into(),
        speed: |t| 6.0 + 2.0 * (t / 10.0).min(1.0),
        yaw_rate: gentle,
        actors: vec![
            actor(1, Class::Vehicle, [25.0, -3.5], [7.0, 0.0]),
            actor(2, Class::Person, [30.0, 5.0], [1.2, 0.0]),
            actor(3, Class::Obstacle, [45.0, -6.0], [0.0, 0.0]),
        ],
        look: SceneLook::default(),
        faults: Faults::default(),
        declared_events: vec![],
    };
    Some(match name {
        "nominal" => base(name),
        "pedestrian_intrusion" => {
            let mut s = base(name);
            s.speed = |_| 3.0;
            s.yaw_rate = straight;
            // Crosses the ego's path 12 m ahead of where the ego will be at t = 5 s.
            s.actors.push(Actor { t0: 0.0, ..actor(4, Class::Person, [3.0 * 5.0 + 3.0, 6.0], [0.0, -1.3]) });
            s
        }
        "collision_course" => {
            let mut s = base(name);
            s.yaw_rate = straight;
            s.speed = |_| 8.0;
            // Oncoming in the ego's lane: closing at 16 m/s from 120 m.
            s.actors.push(actor(4, Class::Vehicle, [120.0, 0.0], [-8.0, 0.0]));
            s
        }
        "camera_blackout" => {
            let mut s = base(name);
            s.faults.camera_blackout = Some((5.0, 8.0));
            s.declared_events.push(event("sensor_degraded", Some("camera"), 5.0, 8.0));
            s
        }
        "lidar_dropout" => {
            let mut s = base(name);
            s.faults.lidar_dropout = Some((5.0, 8.0));
            s.declared_events.push(event("sensor_dropout", Some("lidar"), 5.0, 8.0));
            s
        }
        "imu_impact" => {
            let mut s = base(name);
            s.faults.imu_impact = Some(6.0);
            s.declared_events.push(event("impact", Some("imu"), 6.0, 6.02));
            s
        }
        "sensor_disagreement" => {
            let mut s = base(name);
            s.speed = |_| 4.0;
            s.yaw_rate = straight;
            let mut ghost = actor(4, Class::Obstacle, [30.0, 0.8], [0.0, 0.0]);
            ghost.camera_invisible = true;
            ghost.t0 = 3.0;
            ghost.t1 = 9.0;
            s.actors.push(ghost);
            s.declared_events
                .push(Event { actor_ids: vec![4], ..event("sensor_disagreement", Some("camera"), 3.0, 9.0) });
            s
        }
        "mixed" => {
            // Everything in 20 s: crossing pedestrian, oncoming vehicle, a camera-invisible
            // obstacle, then camera blackout, LiDAR dropout and an IMU shock.
            let mut s = base(name);
            s.speed = |t| 5.0 + 1.5 * (t * 0.3).sin();
            s.yaw_rate = |t| 0.03 * (t * 0.4).sin();
            // Crosses the ego's path ~2 m ahead of the ego as it enters the lane (3.5 s).
            s.actors.push(actor(4, Class::Person, [22.0, 6.0], [0.0, -1.3]));
            s.actors.push(actor(5, Class::Vehicle, [150.0, 0.3], [-7.0, 0.0]));
            let mut ghost = actor(6, Class::Obstacle, [35.0, -0.5], [0.0, 0.0]);
            ghost.camera_invisible = true;
            ghost.t0 = 2.0;
            ghost.t1 = 6.0;
            s.actors.push(ghost);
            s.faults = Faults {
                camera_blackout: Some((9.0, 11.0)),
                lidar_dropout: Some((12.0, 14.0)),
                imu_impact: Some(15.0),
            };
            s.declared_events = vec![
                Event { actor_ids: vec![6], ..event("sensor_disagreement", Some("camera"), 2.0, 6.0) },
                event("sensor_degraded", Some("camera"), 9.0, 11.0),
                event("sensor_dropout", Some("lidar"), 12.0, 14.0),
                event("impact", Some("imu"), 15.0, 15.02),
            ];
            s
        }
        "multi_sensor" => {
            // For the multi-sensor robot (scenario_robot): what only one sensor sees. A
            // vehicle overtakes on the left (behind the robot only the LiDARs see it, beside
            // it only the left camera, then the front camera); a person stands on the right
            // of the road, which only the right camera sees as the robot passes. A dog runs
            // beside the right of the front bumper, keeping pace: 0.45 m tall and 3.5-4.7 m
            // from the roof LiDAR, it is under that LiDAR's lowest beam (-15°, 1.8 m up), and
            // outside every camera's field; only the bumper LiDAR (and the right radar) see it.
            // The road is straight: the dog keeps its place beside the bumper.
            let mut s = base(name);
            (s.speed, s.yaw_rate) = (|_| 7.0, straight);
            s.actors.push(actor(4, Class::Vehicle, [-18.0, 3.6], [10.0, 0.0]));
            s.actors.push(actor(5, Class::Person, [28.0, -5.0], [0.0, 0.0]));
            let dog = actor(6, Class::Obstacle, [4.4, -2.6], [7.0, 0.0]);
            s.actors.push(Actor { size: [0.7, 0.35, 0.45], body_fixed: true, ..dog });
            s
        }
        _ => return None,
    })
}

/// A random street scene for detector training and evaluation, deterministic in `seed`:
/// 2–10 actors of random class, body and size (several per class), appearance (drawn
/// independently of the class), position (4–70 m ahead, ±14 m to the side, some behind
/// the ego) and velocity, under a random sky and light, with one of a few ego motions.
/// Nothing camera-invisible, no faults: every actor the camera can see is a label.
pub fn random_scenario(seed: u64) -> Scenario {
    const SPEEDS: [fn(f64) -> f64; 4] = [|_| 0.0, |_| 4.0, |t| 6.0 + 2.0 * (t / 3.0).min(1.0), |_| 10.0];
    const YAW_RATES: [fn(f64) -> f64; 4] = [|_| 0.0, |_| 0.08, |_| -0.08, |t| 0.05 * (t * 0.8).sin()];
    let mut r = rng(seed, 17);
    let n = r.gen_range(2..=10);
    let actors = (0..n)
        .map(|i| {
            let class = match r.gen_range(0..10) {
                0..=3 => Class::Person,
                4..=6 => Class::Vehicle,
                _ => Class::Obstacle,
            };
            let x = if r.gen_bool(0.1) { r.gen_range(-20.0..0.0) } else { r.gen_range(4.0..70.0) };
            let y = r.gen_range(-14.0..14.0);
            let speed = match class {
                Class::Person => r.gen_range(0.0..2.0),
                Class::Vehicle => r.gen_range(0.0..12.0),
                Class::Obstacle => 0.0,
            };
            let heading: f64 = r.gen_range(-std::f64::consts::PI..std::f64::consts::PI);
            let mut a = actor(i + 1, class, [x, y], [speed * heading.cos(), speed * heading.sin()]);
            (a.shape, a.size) = dress::random_body(class, &mut r);
            a.look = dress::random_appearance(&mut r);
            a.stride_phase = r.gen_range(0.0..1.0);
            if speed == 0.0 {
                // A parked or standing actor still has a heading (its box is not axis-aligned).
                a.velocity = [1e-5 * heading.cos(), 1e-5 * heading.sin()];
            }
            a
        })
        .collect();
    Scenario {
        name: format!("random_{seed}"),
        speed: SPEEDS[r.gen_range(0..SPEEDS.len())],
        yaw_rate: YAW_RATES[r.gen_range(0..YAW_RATES.len())],
        actors,
        look: dress::random_look(&mut r),
        faults: Faults::default(),
        declared_events: vec![],
    }
}

/// Ego pose and motion at time t, integrated from the profiles at 1 kHz.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EgoState {
    pub t: f64,
    pub x: f64,
    pub y: f64,
    pub yaw: f64,
    pub speed: f64,
    pub yaw_rate: f64,
    /// Longitudinal acceleration, m/s².
    pub accel: f64,
}

impl EgoState {
    pub fn pose(&self) -> Isometry3<f64> {
        Isometry3::from_parts(
            Translation3::new(self.x, self.y, 0.0),
            UnitQuaternion::from_axis_angle(&Vector3::z_axis(), self.yaw),
        )
    }
    pub fn velocity(&self) -> Vector3<f64> {
        Vector3::new(self.speed * self.yaw.cos(), self.speed * self.yaw.sin(), 0.0)
    }
}

pub struct Trajectory {
    dt: f64,
    states: Vec<EgoState>,
}

impl Trajectory {
    pub fn new(s: &Scenario, duration: f64) -> Self {
        let dt = 1e-3;
        let n = (duration / dt).ceil() as usize + 2;
        let mut states = Vec::with_capacity(n);
        let (mut x, mut y, mut yaw) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let t = i as f64 * dt;
            let (v, w) = ((s.speed)(t), (s.yaw_rate)(t));
            let accel = ((s.speed)(t + dt) - (s.speed)((t - dt).max(0.0))) / if t >= dt { 2.0 * dt } else { dt };
            states.push(EgoState { t, x, y, yaw, speed: v, yaw_rate: w, accel });
            // Midpoint integration.
            let ym = yaw + 0.5 * w * dt;
            x += v * ym.cos() * dt;
            y += v * ym.sin() * dt;
            yaw += w * dt;
        }
        Self { dt, states }
    }

    pub fn at(&self, t: f64) -> EgoState {
        let i = ((t / self.dt).floor().max(0.0) as usize).min(self.states.len() - 2);
        let (a, b) = (&self.states[i], &self.states[i + 1]);
        let f = ((t - a.t) / self.dt).clamp(0.0, 1.0);
        let lerp = |p: f64, q: f64| p + (q - p) * f;
        EgoState {
            t,
            x: lerp(a.x, b.x),
            y: lerp(a.y, b.y),
            yaw: lerp(a.yaw, b.yaw),
            speed: lerp(a.speed, b.speed),
            yaw_rate: lerp(a.yaw_rate, b.yaw_rate),
            accel: lerp(a.accel, b.accel),
        }
    }
}

/// An actor's bounding box, or one part of its body, at one instant, in the world frame.
#[derive(Debug, Clone, Copy)]
struct BoxNow {
    index: usize,
    center: Point3<f64>,
    half: Vector3<f64>,
    rot: UnitQuaternion<f64>,
    material: Material,
}

/// Ray–oriented-box intersection (slab test in the box frame); the entry distance and the
/// hit face normal in world.
fn ray_box(o: &Point3<f64>, d: &Vector3<f64>, b: &BoxNow) -> Option<(f64, Vector3<f64>)> {
    let inv = b.rot.inverse();
    let lo = inv * (o - b.center);
    let ld = inv * d;
    let (mut tmin, mut tmax) = (0.0f64, f64::INFINITY);
    let mut axis = 0usize;
    let mut sign = 1.0;
    for k in 0..3 {
        if ld[k].abs() < 1e-12 {
            if lo[k].abs() > b.half[k] {
                return None;
            }
            continue;
        }
        let (mut t1, mut t2) = ((-b.half[k] - lo[k]) / ld[k], (b.half[k] - lo[k]) / ld[k]);
        let mut s = -1.0;
        if t1 > t2 {
            std::mem::swap(&mut t1, &mut t2);
            s = 1.0;
        }
        if t1 > tmin {
            tmin = t1;
            axis = k;
            sign = s;
        }
        tmax = tmax.min(t2);
        if tmin > tmax {
            return None;
        }
    }
    if tmin <= 1e-6 {
        return None;
    }
    let mut n = Vector3::zeros();
    n[axis] = sign;
    Some((tmin, b.rot * n))
}

pub enum Hit {
    Sky,
    Ground(Point3<f64>),
    Actor { index: usize, point: Point3<f64>, normal: Vector3<f64> },
}

pub struct World<'a> {
    pub scenario: &'a Scenario,
    pub traj: Trajectory,
    pub calib: Calibration,
}

impl<'a> World<'a> {
    pub fn new(scenario: &'a Scenario, duration: f64, calib: Calibration) -> Self {
        Self { scenario, traj: Trajectory::new(scenario, duration), calib }
    }

    /// Every present actor's bounding box (what a sensor could hit at all).
    fn boxes(&self, t: f64, for_camera: bool) -> Vec<BoxNow> {
        self.scenario
            .actors
            .iter()
            .enumerate()
            .filter(|(_, a)| a.present(t) && !(for_camera && a.camera_invisible))
            .map(|(index, a)| {
                let p = a.position(t);
                BoxNow {
                    index,
                    center: Point3::new(p[0], p[1], a.size[2] / 2.0),
                    half: Vector3::new(a.size[0] / 2.0, a.size[1] / 2.0, a.size[2] / 2.0),
                    rot: UnitQuaternion::from_axis_angle(&Vector3::z_axis(), a.yaw()),
                    material: Material::Paint,
                }
            })
            .collect()
    }

    /// The body parts of the actors whose bounding boxes are given: what rays really hit.
    fn parts(&self, t: f64, bounding: &[BoxNow]) -> Vec<BoxNow> {
        let mut out = Vec::with_capacity(bounding.len() * 8);
        for b in bounding {
            let a = &self.scenario.actors[b.index];
            let ground = b.center - Vector3::new(0.0, 0.0, b.half.z);
            for part in a.parts(t) {
                let c = Vector3::from(part.center);
                out.push(BoxNow {
                    index: b.index,
                    center: ground + b.rot * c,
                    half: Vector3::from(part.half),
                    rot: b.rot,
                    material: part.material,
                });
            }
        }
        out
    }

    fn cast(o: &Point3<f64>, d: &Vector3<f64>, boxes: &[BoxNow], max: f64) -> (f64, Hit) {
        let mut best = (f64::INFINITY, Hit::Sky);
        if d.z < -1e-9 {
            let t = -o.z / d.z;
            if t < max {
                best = (t, Hit::Ground(o + d * t));
            }
        }
        for b in boxes {
            if let Some((t, n)) = ray_box(o, d, b) {
                if t < best.0 && t < max {
                    best = (t, Hit::Actor { index: b.index, point: o + d * t, normal: n });
                }
            }
        }
        best
    }

    /// Pose of a sensor in the world at time t.
    pub fn sensor_pose(&self, sensor: &str, t: f64) -> Isometry3<f64> {
        self.traj.at(t).pose() * self.calib.sensor(sensor).to_base()
    }
}

// ---- camera -----------------------------------------------------------------------------

pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// Per actor index: visible pixel count and the visible part's box [x0, y0, x1, y1].
    pub visible: Vec<(usize, u32, [u32; 4])>,
}

/// Renders the camera image at time t: sky gradient, checkered ground fading with distance,
/// Lambert-shaded actor boxes, exposure gain, Gaussian pixel noise. Rows are rendered on
/// two threads; the result does not depend on the split (noise is indexed by pixel).
pub fn render_camera(w: &World, t: f64, rng: &mut ChaCha8Rng) -> Frame {
    render_camera_of(w, "camera", t, rng)
}

/// The image of the declared camera `sensor` (its mount and intrinsics in the calibration)
/// at time t, rendered as [`render_camera`] renders the standard one.
pub fn render_camera_of(w: &World, sensor: &str, t: f64, rng: &mut ChaCha8Rng) -> Frame {
    render_camera_culled(w, sensor, t, rng, true)
}

/// The image of `sensor` at t; `cull: false` tests every box at every pixel (the reference
/// the culling is tested against: the same bytes).
fn render_camera_culled(w: &World, sensor: &str, t: f64, rng: &mut ChaCha8Rng, cull: bool) -> Frame {
    let cam = w.calib.sensor(sensor);
    let fusion::camera::Intrinsics { k, width, height } = fusion::camera::Intrinsics::of(cam);
    let pose = w.sensor_pose(sensor, t);
    let mut boxes = w.parts(t, &w.boxes(t, true));
    // Scenery after the actors' parts: index = actors + its place in `look.scenery`.
    let actors = w.scenario.actors.len();
    boxes.extend(w.scenario.look.scenery.iter().enumerate().map(|(j, s)| BoxNow {
        index: actors + j,
        center: Point3::from(s.center),
        half: Vector3::from(s.half),
        rot: UnitQuaternion::from_axis_angle(&Vector3::z_axis(), s.yaw),
        material: Material::Paint,
    }));
    // Image-space bounds of every box, so that a pixel only tests the boxes that can cover it.
    let inv = pose.inverse();
    let bounds: Vec<Option<[f64; 4]>> = if cull {
        boxes.iter().map(|b| image_reach(b, &inv, &k, width, height)).collect()
    } else {
        vec![None; boxes.len()]
    };
    // The scenario's blackout is the standard camera's fault; other cameras see on.
    let blackout = sensor == "camera" && w.scenario.faults.camera_blackout.is_some_and(|(a, b)| t >= a && t < b);
    let look = &w.scenario.look;
    // Slow auto-exposure drift; a blackout is a lens covered (nearly no light).
    let gain = if blackout { 0.03 } else { look.exposure * (1.0 + 0.12 * (t * 0.7).sin()) };
    let noise = Normal::new(0.0, look.noise_sigma.max(0.01)).expect("sigma > 0");
    let table: Vec<i16> = (0..4096).map(|_| Distribution::<f64>::sample(&noise, rng).round() as i16).collect();
    let offset: usize = rng.gen_range(0..4096);
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    let half = (height / 2) as usize;
    let (top, bottom) = rgb.split_at_mut(half * width as usize * 3);
    let ctx = RenderCtx { w, k, pose, boxes: &boxes, bounds: &bounds, gain, table: &table, offset, width };
    let (mut visible, vis_b) = std::thread::scope(|sc| {
        let h = std::thread::Builder::new()
            .name("camera-rows".into())
            .spawn_scoped(sc, || ctx.rows(half as u32..height, bottom))
            .expect("spawn render thread");
        let a = ctx.rows(0..half as u32, top);
        (a, h.join().expect("render thread"))
    });
    for (index, n, b) in vis_b {
        match visible.iter_mut().find(|e| e.0 == index) {
            Some(e) => {
                e.1 += n;
                e.2 = [e.2[0].min(b[0]), e.2[1].min(b[1]), e.2[2].max(b[2]), e.2[3].max(b[3])];
            }
            None => visible.push((index, n, b)),
        }
    }
    visible.sort_by_key(|e| e.0);
    Frame { width, height, rgb, visible }
}

/// Where box `b` can appear in the image of a camera at `inv.inverse()` (intrinsics `k`):
/// its bounds `[u0, v0, u1, v1]` in pixels, an empty rectangle where no pixel's ray can hit
/// it, or None where it must be tested at every pixel.
///
/// A ray leaves the camera forwards (camera-frame z > 0 all along it), so a box wholly
/// behind the camera is hit by none. Of a box across the camera's plane only the part in
/// front of a near plane (z ≥ NEAR) is projected: that part is the convex hull of the
/// corners in front and of the edges' crossings of the plane, and a convex body's image is
/// the hull of its vertices' images. A hit nearer than NEAR inside the image lies within a
/// few NEARs of the camera, so a box that close is tested everywhere.
fn image_reach(b: &BoxNow, inv: &Isometry3<f64>, k: &[f64; 9], width: u32, height: u32) -> Option<[f64; 4]> {
    const NEAR: f64 = 0.05;
    let corners = corners_in(b, inv);
    let empty = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
    if corners.iter().all(|p| p.z < -1e-3) {
        return Some(empty);
    }
    if corners.iter().any(|p| p.z <= NEAR) {
        // The image's widest ray slopes (plus a pixel), then the radius within which a hit
        // nearer than NEAR could lie; twice that, for rounding.
        let tx = (k[2].max(width as f64 - k[2]) + 1.0) / k[0];
        let ty = (k[5].max(height as f64 - k[5]) + 1.0) / k[4];
        let reach = 2.0 * NEAR * (1.0 + tx * tx + ty * ty).sqrt();
        // The camera in the box's frame, and its distance to the box.
        let local = b.rot.inverse() * (inv.inverse() * Point3::origin() - b.center);
        let outside = Vector3::from_fn(|i, _| (local[i].abs() - b.half[i]).max(0.0));
        if outside.norm() <= reach {
            return None;
        }
    }
    let mut r = empty;
    let mut add = |p: &Point3<f64>| {
        let (u, v) = (k[0] * p.x / p.z + k[2], k[4] * p.y / p.z + k[5]);
        r = [r[0].min(u), r[1].min(v), r[2].max(u), r[3].max(v)];
    };
    for p in corners.iter().filter(|p| p.z >= NEAR) {
        add(p);
    }
    // The 12 edges join corners that differ in one bit.
    for a in 0..8 {
        for bit in [1, 2, 4] {
            let (p, q) = (&corners[a], &corners[a | bit]);
            if a & bit == 0 && (p.z - NEAR) * (q.z - NEAR) < 0.0 {
                let f = (NEAR - p.z) / (q.z - p.z);
                add(&(p + (q - p) * f));
            }
        }
    }
    Some(r)
}

/// The box's 8 corners in the frame `inv` maps the world into; corner c has bit k set where
/// it lies on the + side of axis k (so the 12 edges join corners one bit apart).
fn corners_in(b: &BoxNow, inv: &Isometry3<f64>) -> [Point3<f64>; 8] {
    std::array::from_fn(|c| {
        let corner = Vector3::new(
            if c & 1 == 0 { -b.half.x } else { b.half.x },
            if c & 2 == 0 { -b.half.y } else { b.half.y },
            if c & 4 == 0 { -b.half.z } else { b.half.z },
        );
        inv * (b.center + b.rot * corner)
    })
}

/// floor() without a libm call (x86-64 baseline has no SSE4.1 roundsd).
fn fast_floor(x: f64) -> i64 {
    let i = x as i64;
    if (i as f64) > x {
        i - 1
    } else {
        i
    }
}

struct RenderCtx<'a> {
    w: &'a World<'a>,
    k: [f64; 9],
    pose: Isometry3<f64>,
    boxes: &'a [BoxNow],
    bounds: &'a [Option<[f64; 4]>],
    gain: f64,
    table: &'a [i16],
    offset: usize,
    width: u32,
}

impl RenderCtx<'_> {
    fn rows(&self, rows: std::ops::Range<u32>, out: &mut [u8]) -> Vec<(usize, u32, [u32; 4])> {
        let look = &self.w.scenario.look;
        let sun = Vector3::from(look.sun).normalize();
        let o = Point3::from(self.pose.translation.vector);
        let (k, width) = (&self.k, self.width);
        let mut visible: Vec<(usize, u32, [u32; 4])> = vec![];
        let first = rows.start;
        // Box indices from here on are scenery (see render_camera).
        let actors = self.w.scenario.actors.len();
        let mut row_boxes: Vec<(BoxNow, f64, f64)> = Vec::with_capacity(self.boxes.len());
        for v in rows {
            let fv = v as f64 + 0.5;
            // Boxes whose image bounds cover this row, with their column range.
            row_boxes.clear();
            row_boxes.extend(self.boxes.iter().zip(self.bounds).filter_map(|(b, r)| match r {
                Some(r) if fv < r[1] - 1.0 || fv > r[3] + 1.0 => None,
                Some(r) => Some((*b, r[0] - 1.0, r[2] + 1.0)),
                None => Some((*b, f64::NEG_INFINITY, f64::INFINITY)),
            }));
            // The ray direction is linear in u: one add per pixel instead of a rotation.
            let d_row = self.pose.rotation * Vector3::new((0.5 - k[2]) / k[0], (fv - k[5]) / k[4], 1.0);
            let du = self.pose.rotation * Vector3::new(1.0 / k[0], 0.0, 0.0);
            let mut d = d_row;
            for u in 0..width {
                let fu = u as f64 + 0.5;
                // Ground (z = 0) first, then any part in front of it.
                let mut best_t = if d.z < -1e-9 { -o.z / d.z } else { f64::INFINITY };
                let mut best_box: Option<(&BoxNow, Vector3<f64>)> = None;
                for (b, lo, hi) in &row_boxes {
                    if fu < *lo || fu > *hi {
                        continue;
                    }
                    if let Some((t, n)) = ray_box(&o, &d, b) {
                        if t < best_t {
                            best_t = t;
                            best_box = Some((b, n));
                        }
                    }
                }
                let sky = |d: &Vector3<f64>| {
                    let up = (d.z / d.norm()).clamp(0.0, 1.0).sqrt();
                    let (h, z) = (look.sky_horizon, look.sky_zenith);
                    [h[0] + (z[0] - h[0]) * up, h[1] + (z[1] - h[1]) * up, h[2] + (z[2] - h[2]) * up]
                };
                let color = if let Some((b, normal)) = best_box.filter(|(b, _)| b.index >= actors) {
                    let shade = look.ambient + (1.0 - look.ambient) * normal.dot(&sun).max(0.0);
                    let c = scenery_color(&look.scenery[b.index - actors], b, &(o + d * best_t), &normal, sky(&d));
                    [c[0] * shade, c[1] * shade, c[2] * shade]
                } else if let Some((b, normal)) = best_box {
                    let index = b.index;
                    let shade = look.ambient + (1.0 - look.ambient) * normal.dot(&sun).max(0.0);
                    let hit = o + d * best_t;
                    let c = surface_color(&self.w.scenario.actors[index].look, b, &hit, &normal, sky(&d));
                    match visible.iter_mut().find(|e| e.0 == index) {
                        Some(e) => {
                            e.1 += 1;
                            e.2 = [e.2[0].min(u), e.2[1].min(v), e.2[2].max(u), e.2[3].max(v)];
                        }
                        None => visible.push((index, 1, [u, v, u, v])),
                    }
                    [c[0] * shade, c[1] * shade, c[2] * shade]
                } else if best_t.is_finite() && best_t * d.norm() < 300.0 {
                    let (px, py) = (o.x + d.x * best_t, o.y + d.y * best_t);
                    let size = look.checker_size;
                    let checker = (fast_floor(px / size) + fast_floor(py / size)).rem_euclid(2) == 0;
                    let grain = look.grain * (cell_noise(fast_floor(px / 0.3), fast_floor(py / 0.3), 7) - 0.5);
                    let f = 1.0 + if checker { -0.5 } else { 0.5 } * look.checker_contrast + grain;
                    let fade = (best_t * d.norm() / 150.0).min(1.0);
                    let haze = sky(&Vector3::new(d.x, d.y, 0.0));
                    let (g, f) = match &look.road {
                        Some(road) => road_color(road, look.ground, px, py, f),
                        None => (look.ground, f),
                    };
                    let light = look.ambient + (1.0 - look.ambient) * sun.z.max(0.0);
                    let mix = |ch: usize| g[ch] * f * light * (1.0 - fade) + haze[ch] * 0.9 * fade;
                    [mix(0), mix(1), mix(2)]
                } else {
                    sky(&d)
                };
                let pixel = (v * width + u) as usize;
                let i = ((v - first) * width + u) as usize * 3;
                // Integer noise from the per-frame table; (x + 0.5) as i32 rounds without a
                // libm call: this runs 28 M times per simulated second.
                let px = &mut out[i..i + 3];
                for ch in 0..3 {
                    let n = self.table[(self.offset + pixel * 3 + ch) & 4095] as i32;
                    px[ch] = ((color[ch] * self.gain + 0.5) as i32 + n).clamp(0, 255) as u8;
                }
                d += du;
            }
        }
        visible
    }
}

/// A deterministic value in [0, 1) for an integer cell (textures without a table).
fn cell_noise(x: i64, y: i64, z: i64) -> f64 {
    let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (z as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Where `a` lies within its period `p`, in [0, 1).
fn frac(a: f64, p: f64) -> f64 {
    a / p - fast_floor(a / p) as f64
}

/// The ground's colour and brightness factor at (x, y) on a road: sidewalk slabs beyond the
/// kerbs, lane and edge paint on the carriageway, else the ground's own.
fn road_color(road: &Road, ground: [f64; 3], x: f64, y: f64, f: f64) -> ([f64; 3], f64) {
    let lateral = y.abs();
    if lateral > road.half_width {
        let joint = |c: f64| frac(c, road.slab) < 0.06;
        let kerb = lateral < road.half_width + 0.25;
        let shade = if kerb {
            1.25
        } else if joint(x) || joint(y) {
            0.75
        } else {
            1.0
        };
        return (road.sidewalk, shade * (0.9 + 0.2 * cell_noise(fast_floor(x / 0.3), fast_floor(y / 0.3), 11)));
    }
    let dashed = road.lanes.iter().any(|&l| (y - l).abs() < 0.08) && frac(x, road.period) * road.period < road.dash;
    let edge = road.edge_lines && (lateral - (road.half_width - 0.3)).abs() < 0.08;
    if dashed || edge {
        (road.paint, 1.0)
    } else {
        (ground, f)
    }
}

/// The unlit colour of a piece of scenery: its colour, and a facade's windows (dark glass
/// with some sky in it) on the vertical faces.
fn scenery_color(s: &Scenery, part: &BoxNow, hit: &Point3<f64>, normal: &Vector3<f64>, sky: [f64; 3]) -> [f64; 3] {
    if let (Some([cell, storey]), true) = (s.windows, normal.z.abs() < 0.5) {
        let local = part.rot.inverse() * (hit - part.center);
        let along = if local.x.abs() * part.half.y > local.y.abs() * part.half.x { local.y } else { local.x };
        if hit.z > 0.8 && (0.2..0.8).contains(&frac(along, cell)) && (0.3..0.85).contains(&frac(hit.z, storey)) {
            return [25.0 + 0.3 * sky[0], 30.0 + 0.3 * sky[1], 38.0 + 0.3 * sky[2]];
        }
    }
    s.colour
}

/// The unlit colour of an actor's surface at a world point: its material, and for paint
/// the actor's pattern in the part's own coordinates.
fn surface_color(
    look: &Appearance,
    part: &BoxNow,
    hit: &Point3<f64>,
    normal: &Vector3<f64>,
    sky: [f64; 3],
) -> [f64; 3] {
    match part.material {
        // A cabin's roof is painted; its sides are windows that mirror some sky.
        Material::Glass if normal.z < 0.5 => [30.0 + 0.35 * sky[0], 38.0 + 0.35 * sky[1], 45.0 + 0.35 * sky[2]],
        Material::Tyre => [28.0, 28.0, 30.0],
        Material::Skin => look.skin,
        Material::Trim => look.trim,
        Material::Paint | Material::Glass => {
            let local = part.rot.inverse() * (hit - part.center);
            let along = local.x + local.y;
            let second = |on: bool| if on { look.trim } else { look.paint };
            match look.pattern {
                Pattern::Solid => look.paint,
                Pattern::Stripes { period, vertical } => {
                    let a = if vertical { along } else { hit.z };
                    second(fast_floor(a / period).rem_euclid(2) == 0)
                }
                Pattern::Checker { period } => {
                    second((fast_floor(along / period) + fast_floor(hit.z / period)).rem_euclid(2) == 0)
                }
                Pattern::Speckle { cell } => {
                    let n =
                        cell_noise(fast_floor(local.x / cell), fast_floor(local.y / cell), fast_floor(hit.z / cell));
                    let f = 0.7 + 0.6 * n;
                    [look.paint[0] * f, look.paint[1] * f, look.paint[2] * f]
                }
            }
        }
    }
}

// ---- LiDAR ------------------------------------------------------------------------------

pub const LIDAR_BEAMS: usize = 32;
pub const LIDAR_AZIMUTHS: usize = 1000;
pub const LIDAR_PERIOD: f64 = 0.1;

/// One sweep starting at t: x,y,z in the LiDAR frame *at each point's firing time* (so a
/// turning ego smears the sweep and deskew matters), intensity, time offset within the
/// sweep, and which actor (if any) the point hit.
pub struct Sweep {
    pub points: Vec<LidarPoint>,
    pub actor: Vec<Option<u32>>,
}

impl Sweep {
    /// The points moved by `tf` (e.g. LiDAR → base_link, as lidar_ingest publishes them);
    /// intensity and time offset kept.
    pub fn transformed(&self, tf: &Isometry3<f64>) -> Vec<LidarPoint> {
        self.points
            .iter()
            .map(|p| {
                let b = tf * Point3::new(p.x as f64, p.y as f64, p.z as f64);
                LidarPoint { x: b.x as f32, y: b.y as f32, z: b.z as f32, ..*p }
            })
            .collect()
    }
}

pub fn lidar_sweep(w: &World, t: f64, rng: &mut ChaCha8Rng) -> Sweep {
    lidar_sweep_of(w, "lidar", t, rng)
}

/// The sweep of the declared LiDAR `sensor` (its mount in the calibration), begun at `t`.
pub fn lidar_sweep_of(w: &World, sensor: &str, t: f64, rng: &mut ChaCha8Rng) -> Sweep {
    use std::f64::consts::PI;
    let range_noise = Normal::new(0.0, 0.02).expect("sigma > 0");
    // Beam directions in the sensor frame, per azimuth step, over the sensor's declared
    // field (DESIGN.md §3's LiDAR: elevations -25°..+15°, all around).
    let field = w.calib.sensor(sensor).lidar_field();
    let [lowest, highest] = field.vertical_deg;
    let beams: Vec<(f64, f64)> = (0..LIDAR_BEAMS)
        .map(|b| {
            let el = (lowest + (highest - lowest) * b as f64 / (LIDAR_BEAMS - 1) as f64).to_radians();
            (el.cos(), el.sin())
        })
        .collect();
    let mut points = Vec::with_capacity(LIDAR_BEAMS * LIDAR_AZIMUTHS);
    let mut actor = Vec::with_capacity(LIDAR_BEAMS * LIDAR_AZIMUTHS);
    for a in 0..LIDAR_AZIMUTHS {
        let az = -PI + 2.0 * PI * a as f64 / LIDAR_AZIMUTHS as f64;
        if !field.covers_azimuth(az) {
            continue;
        }
        let dt = a as f64 / LIDAR_AZIMUTHS as f64 * LIDAR_PERIOD;
        let pose = w.sensor_pose(sensor, t + dt);
        let inv = pose.inverse();
        let o = Point3::from(pose.translation.vector);
        let (ca, sa) = (az.cos(), az.sin());
        // Only the boxes whose footprint spans this azimuth (as seen from the sensor) can be
        // hit by any beam of it: most azimuths test none.
        let boxes: Vec<BoxNow> = w
            .boxes(t + dt, false)
            .into_iter()
            .filter(|b| {
                let mut lo = f64::INFINITY;
                let mut hi = f64::NEG_INFINITY;
                let c = inv * b.center;
                let ca0 = c.y.atan2(c.x);
                for k in 0..4 {
                    let corner = Vector3::new(
                        if k & 1 == 0 { -b.half.x } else { b.half.x },
                        if k & 2 == 0 { -b.half.y } else { b.half.y },
                        0.0,
                    );
                    let p = inv * (b.center + b.rot * corner);
                    // Angles relative to the centre's, so intervals never wrap.
                    let mut d = p.y.atan2(p.x) - ca0;
                    d = (d + PI).rem_euclid(2.0 * PI) - PI;
                    lo = lo.min(d);
                    hi = hi.max(d);
                }
                let mut rel = az - ca0;
                rel = (rel + PI).rem_euclid(2.0 * PI) - PI;
                // A sensor inside the footprint sees the box everywhere.
                let inside = c.x.abs() <= b.half.x.max(b.half.y) && c.y.abs() <= b.half.x.max(b.half.y);
                inside || (rel >= lo - 0.01 && rel <= hi + 0.01)
            })
            .collect();
        let boxes = w.parts(t + dt, &boxes);
        for &(ce, se) in &beams {
            let local = Vector3::new(ce * ca, ce * sa, se);
            let d = pose.rotation * local;
            let (dist, hit) = World::cast(&o, &d, &boxes, 100.0);
            // 1 % random dropouts (absorbing surfaces, missed returns).
            if matches!(hit, Hit::Sky) || rng.gen::<f64>() < 0.01 {
                continue;
            }
            let r = dist + range_noise.sample(rng);
            let (intensity, who) = match hit {
                Hit::Actor { index, .. } => {
                    let a = &w.scenario.actors[index];
                    (a.look.lidar_intensity, Some(a.id))
                }
                _ => (15.0, None),
            };
            let p = local * r;
            points.push(LidarPoint {
                x: p.x as f32,
                y: p.y as f32,
                z: p.z as f32,
                intensity: (intensity + rng.gen_range(-3.0..3.0)) as f32,
                t: dt as f32,
            });
            actor.push(who);
        }
    }
    Sweep { points, actor }
}

// ---- radar ------------------------------------------------------------------------------

/// Radar targets at t: per visible actor a few returns on its near surface with doppler =
/// radial velocity relative to the sensor (+ = receding), ground clutter and false alarms.
/// Returns x,y,z (radar frame), doppler, rcs, and the actor id.
pub fn radar_scan(w: &World, t: f64, rng: &mut ChaCha8Rng) -> Vec<(RadarTarget, Option<u32>)> {
    radar_scan_of(w, "radar", t, rng)
}

/// The scan of the declared radar `sensor` (its mount in the calibration) at `t`.
pub fn radar_scan_of(w: &World, sensor: &str, t: f64, rng: &mut ChaCha8Rng) -> Vec<(RadarTarget, Option<u32>)> {
    let pose = w.sensor_pose(sensor, t);
    let ego = w.traj.at(t);
    let o = Point3::from(pose.translation.vector);
    // Velocity of the radar in the world (rotation about z adds ω × r).
    let lever = ego.pose().rotation * w.calib.sensor(sensor).to_base().translation.vector;
    let v_sensor = ego.velocity() + Vector3::new(0.0, 0.0, ego.yaw_rate).cross(&lever);
    let boxes = w.boxes(t, false);
    let parts = w.parts(t, &boxes);
    let inv = pose.inverse();
    let mut out = vec![];
    let doppler_noise = Normal::new(0.0, 0.1).expect("sigma > 0");
    let fov = 60f64.to_radians();
    for b in &boxes {
        let a = &w.scenario.actors[b.index];
        let to = b.center - o;
        let local = inv.rotation * to;
        if local.x <= 0.5 || local.y.atan2(local.x).abs() > fov || to.norm() > 120.0 {
            continue;
        }
        // Occluded? Nothing else may come first along the line of sight (the ray may pass
        // between this actor's own parts: a barrier's legs, under a panel).
        if let (_, Hit::Actor { index, .. }) = World::cast(&o, &to.normalize(), &parts, 200.0) {
            if index != b.index {
                continue;
            }
        }
        let n = 1 + (a.size[0] * a.size[1]).sqrt().round() as usize;
        let va = Vector3::new(a.velocity[0], a.velocity[1], 0.0);
        let own: Vec<&BoxNow> = parts.iter().filter(|p| p.index == b.index).collect();
        for _ in 0..n {
            // A point on one of the actor's parts (a cone's tiers, a barrier's panel).
            let part = own[rng.gen_range(0..own.len())];
            let jitter = Vector3::new(
                rng.gen_range(-1.0..1.0) * part.half.x,
                rng.gen_range(-1.0..1.0) * part.half.y,
                rng.gen_range(-0.5..0.5) * part.half.z,
            );
            let target = part.center + part.rot * jitter;
            let (_, hit) = World::cast(&o, &(target - o).normalize(), &parts, 200.0);
            let Hit::Actor { point, index, .. } = hit else { continue };
            if index != b.index {
                continue;
            }
            let los = (point - o).normalize();
            let doppler = (va - v_sensor).dot(&los) + doppler_noise.sample(rng);
            let p = inv * point;
            let rcs = a.look.rcs + rng.gen_range(-2.0..2.0);
            out.push((
                RadarTarget { x: p.x as f32, y: p.y as f32, z: p.z as f32, doppler: doppler as f32, rcs: rcs as f32 },
                Some(a.id),
            ));
        }
    }
    // Ground clutter (static world: doppler = -v_sensor·los) and uniform false alarms.
    let clutter = Poisson::new(4.0).expect("lambda > 0").sample(rng) as usize;
    for i in 0..clutter {
        let r = rng.gen_range(5.0..80.0);
        let az: f64 = rng.gen_range(-fov..fov);
        let local = Point3::new(r * az.cos(), r * az.sin(), -0.4);
        let los = (pose * local - o).normalize();
        let false_alarm = i % 3 == 2;
        let doppler =
            if false_alarm { rng.gen_range(-20.0..20.0) } else { -v_sensor.dot(&los) + doppler_noise.sample(rng) };
        let rcs = rng.gen_range(-15.0..0.0);
        out.push((
            RadarTarget { x: local.x as f32, y: local.y as f32, z: local.z as f32, doppler: doppler as f32, rcs },
            None,
        ));
    }
    out
}

// ---- IMU --------------------------------------------------------------------------------

pub struct ImuModel {
    gyro_bias: Vector3<f64>,
    accel_bias: Vector3<f64>,
}

pub struct ImuReading {
    pub angular_velocity: [f64; 3],
    pub linear_acceleration: [f64; 3],
}

impl ImuModel {
    pub fn new(rng: &mut ChaCha8Rng) -> Self {
        let b = Normal::new(0.0, 0.003).expect("sigma > 0");
        let a = Normal::new(0.0, 0.02).expect("sigma > 0");
        Self {
            gyro_bias: Vector3::new(b.sample(rng), b.sample(rng), b.sample(rng)),
            accel_bias: Vector3::new(a.sample(rng), a.sample(rng), a.sample(rng)),
        }
    }

    /// Specific force and angular rate in the IMU frame at t (sample period dt), with white
    /// noise and slowly drifting (random-walk) bias.
    pub fn sample(&mut self, w: &World, t: f64, dt: f64, rng: &mut ChaCha8Rng) -> ImuReading {
        let s = w.traj.at(t);
        // base_link motion: longitudinal accel, centripetal v·ω, rotation about z.
        let a_base = Vector3::new(s.accel, s.speed * s.yaw_rate, 0.0);
        let omega_base = Vector3::new(0.0, 0.0, s.yaw_rate);
        let mount = w.calib.sensor("imu").to_base();
        let r = mount.translation.vector;
        // Lever arm of the mount (zero for a mount on the yaw axis).
        let alpha = Vector3::new(0.0, 0.0, ((w.scenario.yaw_rate)(t + 1e-3) - (w.scenario.yaw_rate)(t)) / 1e-3);
        let a_imu_base = a_base + alpha.cross(&r) + omega_base.cross(&omega_base.cross(&r));
        let f_base = a_imu_base + Vector3::new(0.0, 0.0, GRAVITY);
        let inv = mount.rotation.inverse();
        let walk_g = Normal::new(0.0, 2e-5 * dt.sqrt()).expect("sigma > 0");
        let walk_a = Normal::new(0.0, 2e-4 * dt.sqrt()).expect("sigma > 0");
        for k in 0..3 {
            self.gyro_bias[k] += walk_g.sample(rng);
            self.accel_bias[k] += walk_a.sample(rng);
        }
        let gn = Normal::new(0.0, 0.002).expect("sigma > 0");
        let an = Normal::new(0.0, 0.03).expect("sigma > 0");
        let mut f = inv * f_base + self.accel_bias + Vector3::new(an.sample(rng), an.sample(rng), an.sample(rng));
        let g = inv * omega_base + self.gyro_bias + Vector3::new(gn.sample(rng), gn.sample(rng), gn.sample(rng));
        if let Some(ti) = w.scenario.faults.imu_impact {
            if t >= ti && t < ti + 0.02 {
                // A 20 ms shock, mostly lateral: beyond an 8 g accelerometer's range.
                f += Vector3::new(30.0, -85.0, 20.0);
            }
        }
        ImuReading { angular_velocity: g.into(), linear_acceleration: f.into() }
    }
}

// ---- Odometry ---------------------------------------------------------------------------

/// What a wheel odometry reports: the base's pose in the odometry frame (the world here: the
/// ego starts at its origin heading +x) and its twist in base axes.
pub struct OdometryReading {
    pub position: [f64; 3],
    pub yaw: f64,
    pub linear: [f64; 3],
    pub yaw_rate: f64,
}

/// Odometry at t: the true pose, and the true twist with white noise (0.03 m/s on the speed,
/// 0.003 rad/s on the yaw rate: a wheel odometry on good tyres; no slip or scale error).
pub fn odometry(w: &World, t: f64, rng: &mut ChaCha8Rng) -> OdometryReading {
    let s = w.traj.at(t);
    let (speed_noise, rate_noise) =
        (Normal::new(0.0, 0.03).expect("sigma > 0"), Normal::new(0.0, 0.003).expect("sigma > 0"));
    OdometryReading {
        position: [s.x, s.y, 0.0],
        yaw: s.yaw,
        linear: [s.speed + speed_noise.sample(rng), 0.0, 0.0],
        yaw_rate: s.yaw_rate + rate_noise.sample(rng),
    }
}

pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

// ---- ground truth -----------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct ActorTruth {
    pub id: u32,
    pub class: Class,
    pub shape: Shape,
    /// The actor's material as the range sensors see it (mean intensity, RCS in dBsm).
    pub lidar_intensity: f64,
    pub rcs: f64,
    /// Box centre in base_link, size (l, w, h), yaw relative to base_link.
    pub center: [f64; 3],
    pub size: [f64; 3],
    pub yaw: f64,
    /// Velocity in base_link axes, relative to the ground (m/s).
    pub velocity: [f64; 2],
    /// Visible part in the image (pixels, inclusive), when any pixel is visible.
    pub box2d: Option<[u32; 4]>,
    pub visible_pixels: u32,
    pub camera_invisible: bool,
}

/// Actors in base_link at t, with their visible image boxes from a rendered frame.
pub fn truth(w: &World, t: f64, frame: Option<&Frame>) -> Vec<ActorTruth> {
    let ego = w.traj.at(t);
    let inv = ego.pose().inverse();
    w.scenario
        .actors
        .iter()
        .enumerate()
        .filter(|(_, a)| a.present(t))
        .map(|(i, a)| {
            let p = a.position(t);
            let c = inv * Point3::new(p[0], p[1], a.size[2] / 2.0);
            let v = inv.rotation * Vector3::new(a.velocity[0], a.velocity[1], 0.0);
            let vis = frame.and_then(|f| f.visible.iter().find(|e| e.0 == i));
            ActorTruth {
                id: a.id,
                class: a.class,
                shape: a.shape,
                lidar_intensity: a.look.lidar_intensity,
                rcs: a.look.rcs,
                center: [c.x, c.y, c.z],
                size: a.size,
                yaw: a.yaw() - ego.yaw,
                velocity: [v.x, v.y],
                box2d: vis.map(|e| e.2),
                visible_pixels: vis.map(|e| e.1).unwrap_or(0),
                camera_invisible: a.camera_invisible,
            }
        })
        .collect()
}

/// Events found from the geometry over [0, duration): `zone_intrusion` while an actor's
/// centre is inside a safety polygon, `collision_risk` while time-to-collision < `ttc_s`.
pub fn geometric_events(w: &World, duration: f64, ttc_s: f64) -> Vec<Event> {
    let step = 0.05;
    let mut out: Vec<Event> = vec![];
    let mut open: Vec<(String, u32, f64)> = vec![];
    let n = (duration / step).floor() as usize;
    for i in 0..=n {
        let t = i as f64 * step;
        let mut now: Vec<(String, u32)> = vec![];
        for a in truth(w, t, None) {
            for z in &w.calib.safety_zones {
                if point_in_polygon(a.center[0], a.center[1], &z.polygon) {
                    now.push((format!("zone_intrusion:{}", z.name), a.id));
                }
            }
            // Closing along the ego's axis, within a lane's width.
            let closing = -(a.velocity[0] - w.traj.at(t).speed);
            let gap = a.center[0] - a.size[0] / 2.0;
            if a.center[1].abs() < 1.8 && gap > 0.0 && closing > 0.1 && gap / closing < ttc_s {
                now.push(("collision_risk".into(), a.id));
            }
        }
        for (key, id) in &now {
            if !open.iter().any(|(k, i, _)| k == key && i == id) {
                open.push((key.clone(), *id, t));
            }
        }
        let (keep, done): (Vec<_>, Vec<_>) =
            open.into_iter().partition(|(k, i, _)| now.iter().any(|(nk, ni)| nk == k && ni == i) && t < duration);
        for (key, id, onset) in done {
            let kind = key.split(':').next().unwrap_or(&key).to_string();
            out.push(Event { kind, sensor: None, actor_ids: vec![id], onset, offset: t });
        }
        open = keep;
    }
    for (key, id, onset) in open {
        let kind = key.split(':').next().unwrap_or(&key).to_string();
        out.push(Event { kind, sensor: None, actor_ids: vec![id], onset, offset: duration });
    }
    out.sort_by(|a, b| a.onset.total_cmp(&b.onset));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ray_hits_box_front_face() {
        let b = BoxNow {
            index: 0,
            center: Point3::new(10.0, 0.0, 1.0),
            half: Vector3::new(1.0, 1.0, 1.0),
            rot: UnitQuaternion::identity(),
            material: Material::Paint,
        };
        let (t, n) = ray_box(&Point3::new(0.0, 0.0, 1.0), &Vector3::x(), &b).unwrap();
        assert!((t - 9.0).abs() < 1e-9 && (n + Vector3::x()).norm() < 1e-9);
        assert!(ray_box(&Point3::new(0.0, 3.0, 1.0), &Vector3::x(), &b).is_none());
    }

    #[test]
    fn every_scenario_exists_and_trajectory_integrates() {
        for name in SCENARIOS.iter().chain(&ROBOT_SCENARIOS) {
            assert!(scenario(name).is_some(), "{name}");
        }
        let robot = Calibration::from_yaml(scenario_robot("multi_sensor").unwrap()).unwrap();
        assert_eq!(robot.sensor_set().unwrap().len(), 9);
        let s = scenario("collision_course").unwrap();
        let tr = Trajectory::new(&s, 10.0);
        let e = tr.at(10.0);
        assert!((e.x - 80.0).abs() < 1e-6 && e.y.abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn geometric_events_find_intrusion_and_collision_risk() {
        let s = scenario("pedestrian_intrusion").unwrap();
        let w = World::new(&s, 12.0, Calibration::default());
        let ev = geometric_events(&w, 12.0, 3.0);
        assert!(ev.iter().any(|e| e.kind == "zone_intrusion" && e.actor_ids == [4]), "{ev:?}");
        let s = scenario("collision_course").unwrap();
        let w = World::new(&s, 12.0, Calibration::default());
        let ev = geometric_events(&w, 12.0, 3.0);
        assert!(ev.iter().any(|e| e.kind == "collision_risk" && e.actor_ids == [4]), "{ev:?}");
        assert!(!geometric_events(&World::new(&scenario("nominal").unwrap(), 12.0, Calibration::default()), 12.0, 3.0)
            .iter()
            .any(|e| e.kind == "collision_risk"));
    }

    /// A LiDAR renders over its declared field: spanning ±15° it returns nothing below -15°
    /// (the ground is first met 6.7 m out from 1.8 m up, not 3.9 m), and 180° wide nothing
    /// behind it; the default field keeps DESIGN.md §3's -25°..+15° all around.
    #[test]
    fn a_lidar_sees_only_its_declared_field() {
        let s = scenario("nominal").unwrap();
        let sweep_with = |vertical: Option<[f64; 2]>, horizontal: Option<f64>| {
            let mut calib = Calibration::default();
            let lidar = calib.sensors.get_mut("lidar").unwrap();
            (lidar.vertical_fov_deg, lidar.horizontal_fov_deg) = (vertical, horizontal);
            lidar_sweep(&World::new(&s, 2.0, calib), 1.0, &mut rng(1, 1))
        };
        let elevation = |p: &LidarPoint| (p.z as f64).atan2((p.x as f64).hypot(p.y as f64)).to_degrees();
        let nearest_ground = |sweep: &Sweep| {
            sweep
                .points
                .iter()
                .zip(&sweep.actor)
                .filter(|(_, a)| a.is_none())
                .map(|(p, _)| p.x.hypot(p.y))
                .fold(f32::MAX, f32::min)
        };
        let default = sweep_with(None, None);
        let lowest = default.points.iter().map(elevation).fold(f64::MAX, f64::min);
        assert!((lowest + 25.0).abs() < 0.5, "lowest beam {lowest:.1}°");
        assert!(default.points.iter().any(|p| p.x < -5.0), "a spinning LiDAR sees behind it");
        let narrow = sweep_with(Some([-15.0, 15.0]), Some(180.0));
        assert!(narrow.points.iter().all(|p| elevation(p) > -15.5), "nothing below the lowest beam");
        assert!(narrow.points.iter().all(|p| p.x > -0.5), "nothing behind a 180° LiDAR");
        assert!(
            nearest_ground(&narrow) > 6.0 && nearest_ground(&default) < 4.5,
            "{} {}",
            nearest_ground(&narrow),
            nearest_ground(&default)
        );
        assert!(narrow.points.len() > default.points.len() / 3, "{} returns", narrow.points.len());
    }

    #[test]
    fn culling_boxes_out_of_a_pixels_reach_renders_the_same_bytes() {
        // Through every scenario (the nominal world drives past its scenery, so boxes go
        // across the camera's plane and behind it), with the robot's second camera too: the
        // culled image equals the one that tests every box at every pixel.
        let robot = Calibration::from_yaml(scenario_robot("multi_sensor").unwrap()).unwrap();
        for name in SCENARIOS.iter().chain(&ROBOT_SCENARIOS) {
            let s = scenario_seeded(name, 31).unwrap();
            let calib = if ROBOT_SCENARIOS.contains(name) { robot.clone() } else { Calibration::default() };
            let set = calib.sensor_set().unwrap();
            let cameras: Vec<&str> = set.of_kind(fusion::Sensor::Camera).map(|id| set.name(id)).collect();
            let duration = 20.0;
            let w = World::new(&s, duration, calib);
            for (i, t) in [0.0, 3.3, 7.9, 12.1, 19.6].into_iter().enumerate() {
                for &cam in &cameras {
                    let culled = render_camera_culled(&w, cam, t, &mut rng(7, i as u64), true);
                    let every = render_camera_culled(&w, cam, t, &mut rng(7, i as u64), false);
                    assert!(culled.rgb == every.rgb, "{name} {cam} at {t} s: the images differ");
                    assert_eq!(culled.visible, every.visible, "{name} {cam} at {t} s");
                }
            }
        }
    }

    #[test]
    fn a_boxs_image_reach_holds_every_pixel_that_hits_it() {
        // Boxes all around the camera, near and far, across its plane and behind it: every
        // pixel whose ray hits one lies within its reach (the renderer's one-pixel margin).
        let calib = Calibration::default();
        let cam = calib.sensor("camera");
        let fusion::camera::Intrinsics { k, width, height } = fusion::camera::Intrinsics::of(cam);
        let pose = Isometry3::new(Vector3::new(1.0, -0.5, 1.4), Vector3::new(-1.2, 0.1, -1.4));
        let inv = pose.inverse();
        let o = Point3::from(pose.translation.vector);
        let mut r = rng(3, 0);
        let (mut hit_boxes, mut culled_boxes, mut everywhere, mut clipped_hit) = (0, 0, 0, 0);
        for _ in 0..300 {
            let b = BoxNow {
                index: 0,
                center: o + Vector3::new(r.gen_range(-6.0..6.0), r.gen_range(-6.0..6.0), r.gen_range(-2.0..2.0)),
                half: Vector3::new(r.gen_range(0.05..3.0), r.gen_range(0.05..3.0), r.gen_range(0.05..2.0)),
                rot: UnitQuaternion::from_axis_angle(&Vector3::z_axis(), r.gen_range(-3.2..3.2)),
                material: Material::Paint,
            };
            let reach = image_reach(&b, &inv, &k, width, height);
            let Some(bounds) = reach else {
                everywhere += 1;
                continue;
            };
            let mut hit = false;
            for v in (0..height).step_by(2) {
                for u in (0..width).step_by(2) {
                    let (fu, fv) = (u as f64 + 0.5, v as f64 + 0.5);
                    let d = pose.rotation * Vector3::new((fu - k[2]) / k[0], (fv - k[5]) / k[4], 1.0);
                    if ray_box(&o, &d, &b).is_some() {
                        hit = true;
                        assert!(
                            fu >= bounds[0] - 1.0
                                && fu <= bounds[2] + 1.0
                                && fv >= bounds[1] - 1.0
                                && fv <= bounds[3] + 1.0,
                            "pixel ({u}, {v}) hits {b:?} outside its reach {bounds:?}"
                        );
                    }
                }
            }
            hit_boxes += hit as usize;
            culled_boxes += (bounds[0] > bounds[2]) as usize;
            // Seen, and across the camera plane: bounded by its clipped part.
            let across = corners_in(&b, &inv).iter().any(|p| p.z < 0.05);
            clipped_hit += (hit && across) as usize;
        }
        // The draw has all three kinds, boxes clipped at the near plane among those seen, and
        // most boxes are bounded rather than tested everywhere.
        assert!(
            hit_boxes > 50 && culled_boxes > 50 && clipped_hit > 10 && everywhere > 0 && everywhere < 60,
            "{hit_boxes} seen, {culled_boxes} culled, {clipped_hit} clipped and seen, {everywhere} everywhere"
        );
    }

    #[test]
    fn camera_sees_the_vehicle_ahead_and_hides_the_ghost() {
        let s = scenario("sensor_disagreement").unwrap();
        let w = World::new(&s, 10.0, Calibration::default());
        let f = render_camera(&w, 5.0, &mut rng(1, 0));
        let ids: Vec<u32> = f.visible.iter().map(|e| s.actors[e.0].id).collect();
        assert!(ids.contains(&1) && !ids.contains(&4), "{ids:?}");
        let sweep = lidar_sweep(&w, 5.0, &mut rng(1, 1));
        assert!(sweep.actor.iter().filter(|a| **a == Some(4)).count() > 10, "LiDAR sees the ghost");
        // 32 000 rays; the upward beams mostly see sky.
        assert!(sweep.points.len() > 15_000, "{}", sweep.points.len());
    }
}
