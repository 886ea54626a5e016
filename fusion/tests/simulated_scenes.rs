//! The core's algorithms on simulated scenes (crate `sensor_sim`): clustering finds the
//! actors, the tracker keeps their ids and velocities, deskew undoes the ego's motion, the
//! radar gives the ego's speed. Integration tests, because the simulator depends on `fusion`
//! (a unit test would see two copies of its types).
use fusion::{
    calib::Calibration,
    cluster::{euclidean_clusters, object_box, remove_ground, ClusterParams, ObjectBox},
    egospeed::{EgoSpeedEstimator, EgoSpeedParams},
    motion::{deskew, ImuBuffer, ImuState},
    track::{Detection, EgoMotion, Tracker, TrackerParams},
    LidarPoint, RadarTarget, StampNs,
};
use nalgebra::{UnitQuaternion, Vector3};
use sensor_sim::{self as sim, World};

/// An IMU sample turned `yaw` about z (the deskew test's heading track).
fn state(stamp: StampNs, yaw: f64) -> ImuState {
    ImuState {
        stamp,
        orientation: UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw),
        angular_velocity: Vector3::new(0.0, 0.0, yaw),
        linear_acceleration: Vector3::zeros(),
    }
}

/// On a simulated sweep, ground removal plus clustering finds one box per actor, where
/// the actor is, and nothing else within 40 m.
#[test]
fn clusters_are_the_actors() {
    let s = sim::scenario("nominal").unwrap();
    let calib = Calibration::default();
    let w = World::new(&s, 3.0, calib.clone());
    let t = 2.0;
    let sweep = sim::lidar_sweep(&w, t, &mut sim::rng(3, 2));
    let lidar = calib.sensor("lidar").to_base();
    let pts: Vec<[f32; 3]> = sweep
        .transformed(&lidar)
        .into_iter()
        .map(|p| p.xyz())
        .filter(|p| (p[0] * p[0] + p[1] * p[1]).sqrt() < 40.0)
        .collect();
    let p = ClusterParams::default();
    let kept = remove_ground(&pts, &p);
    let objects: Vec<[f32; 3]> = kept.iter().map(|&i| pts[i]).collect();
    let boxes: Vec<ObjectBox> = euclidean_clusters(&objects, &p).iter().map(|c| object_box(&objects, c)).collect();
    // Actors the sweep really saw (the vehicle can hide the obstacle behind it; a far,
    // low or thin obstacle gets a handful of returns, maybe below the cluster minimum).
    let hits = |id: u32| sweep.actor.iter().filter(|a| **a == Some(id)).count();
    let near = |b: &ObjectBox, a: &sim::ActorTruth| {
        // The sweep sees the near faces: the box centre is within half a size of the truth.
        (b.center[0] - a.center[0]).hypot(b.center[1] - a.center[1]) < a.size[0].max(a.size[1]) / 2.0 + 0.3
    };
    let truth: Vec<_> = sim::truth(&w, t, None).into_iter().filter(|a| a.center[0].hypot(a.center[1]) < 38.0).collect();
    let well_seen: Vec<_> = truth.iter().filter(|a| hits(a.id) >= 15).collect();
    assert!(!well_seen.is_empty());
    for a in &well_seen {
        assert_eq!(boxes.iter().filter(|b| near(b, a)).count(), 1, "actor {} at {:?}: {boxes:?}", a.id, a.center);
    }
    // Nothing else: every box is on an actor the sweep returned from.
    for b in &boxes {
        assert!(truth.iter().any(|a| hits(a.id) > 0 && near(b, a)), "{b:?} is on no actor");
    }
}

/// LiDAR sweeps of the simulated nominal scenario → clusters → tracker with the ego
/// motion: every actor the LiDAR sees keeps one confirmed track with its ground velocity.
#[test]
fn tracks_simulated_actors_with_stable_ids() {
    let s = sim::scenario("nominal").unwrap();
    let calib = Calibration::default();
    let w = World::new(&s, 5.0, calib.clone());
    let lidar = calib.sensor("lidar").to_base();
    let p = ClusterParams::default();
    let mut tr = Tracker::new(TrackerParams::default());
    let mut ids_seen: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for k in 0..40 {
        let t = 0.5 + k as f64 * 0.1;
        let sweep = sim::lidar_sweep(&w, t, &mut sim::rng(11, k));
        let pts: Vec<[f32; 3]> =
            sweep.transformed(&lidar).into_iter().map(|q| q.xyz()).filter(|q| q[0].hypot(q[1]) < 40.0).collect();
        let kept: Vec<[f32; 3]> = remove_ground(&pts, &p).into_iter().map(|i| pts[i]).collect();
        let dets: Vec<Detection> = euclidean_clusters(&kept, &p)
            .iter()
            .map(|c| object_box(&kept, c))
            .map(|b| Detection::at([b.center[0], b.center[1]], b.size))
            .collect();
        let (e0, e1) = (w.traj.at(t - 0.1), w.traj.at(t));
        let (c, s) = (e0.yaw.cos(), e0.yaw.sin());
        let (wx, wy) = (e1.x - e0.x, e1.y - e0.y);
        let ego =
            EgoMotion { dx: c * wx + s * wy, dy: -s * wx + c * wy, dyaw: e1.yaw - e0.yaw, ..EgoMotion::default() };
        tr.step(0.1, ego, &dets);
        if k >= 20 {
            // Match confirmed tracks to the truth by position.
            for a in sim::truth(&w, t, None) {
                if let Some(track) = tr.tracks().iter().filter(|x| x.confirmed(&tr.params)).find(|x| {
                    (x.state[0] - a.center[0]).hypot(x.state[1] - a.center[1]) < a.size[0].max(a.size[1]) / 2.0 + 0.5
                }) {
                    ids_seen.entry(a.id).or_default().push(track.id);
                    if k == 39 {
                        let v = track.velocity();
                        let err = (v[0] - a.velocity[0]).hypot(v[1] - a.velocity[1]);
                        assert!(err < 1.0, "actor {}: track v {v:?} vs truth {:?}", a.id, a.velocity);
                    }
                }
            }
        }
    }
    // The vehicle and the person are tracked in (nearly) every frame, each by one id.
    for id in [1, 2] {
        let seen = &ids_seen[&id];
        assert!(seen.len() >= 18, "actor {id} tracked in {} of 20 frames", seen.len());
        assert!(seen.iter().all(|x| *x == seen[0]), "actor {id} changed track id: {seen:?}");
    }
}

/// A sweep taken while the ego turns and drives: after deskew, the returns from a
/// static obstacle lie on its box as seen from the base at the sweep's stamp.
#[test]
fn deskew_puts_a_static_obstacle_back_in_place() {
    let mut s = sim::scenario("nominal").unwrap();
    s.speed = |_| 10.0;
    s.yaw_rate = |_| 0.6;
    s.actors.retain(|a| a.id == 3);
    s.actors[0].p0 = [8.0, 6.0]; // ahead-left, inside the turn
    let calib = Calibration::default();
    let w = World::new(&s, 2.0, calib.clone());
    let t0 = 1.0;
    let sweep = sim::lidar_sweep(&w, t0, &mut sim::rng(9, 2));
    let lidar = calib.sensor("lidar").to_base();
    // As lidar_ingest publishes them: base_link at each firing time, t kept.
    let mut pts: Vec<LidarPoint> = sweep
        .transformed(&lidar)
        .into_iter()
        .zip(&sweep.actor)
        .filter(|(_, a)| **a == Some(3))
        .map(|(p, _)| p)
        .collect();
    assert!(pts.len() > 20, "{}", pts.len());
    let mut imu = ImuBuffer::new(100);
    for k in 0..60 {
        let t = t0 - 0.1 + k as f64 * 0.005;
        imu.push(state((t * 1e9).round() as i64, w.traj.at(t).yaw)).unwrap();
    }
    let stamp = (t0 * 1e9).round() as i64;
    let ego = w.traj.at(t0);
    let box_error = |pts: &[LidarPoint]| {
        let obstacle = sim::truth(&w, t0, None).into_iter().find(|a| a.id == 3).unwrap();
        pts.iter()
            .map(|p| {
                // Distance outside the obstacle's footprint (axis-aligned in base at t0 up to its yaw).
                let (c, s) = (obstacle.yaw.cos(), obstacle.yaw.sin());
                let (dx, dy) = (p.x as f64 - obstacle.center[0], p.y as f64 - obstacle.center[1]);
                let (lx, ly) = (c * dx + s * dy, -s * dx + c * dy);
                let ex = (lx.abs() - obstacle.size[0] / 2.0).max(0.0);
                let ey = (ly.abs() - obstacle.size[1] / 2.0).max(0.0);
                ex.hypot(ey)
            })
            .fold(0.0f64, f64::max)
    };
    let before = box_error(&pts);
    deskew(&mut pts, stamp, &imu, &Vector3::new(ego.speed, 0.0, 0.0)).unwrap();
    let after = box_error(&pts);
    assert!(before > 0.3, "the raw sweep is smeared: {before}");
    assert!(after < 0.1, "deskewed points within 10 cm of the box: {after}");
}

/// The simulator's radar (clutter, false alarms, moving and parked actors, noise) on
/// the turning nominal scenario: the estimate follows the true speed.
#[test]
fn simulated_radar_gives_the_ego_speed_within_a_few_decimetres_per_second() {
    let s = sim::scenario("nominal").unwrap();
    let calib = Calibration::default();
    let w = World::new(&s, 5.0, calib.clone());
    let radar = calib.sensor("radar").to_base();
    let mut e = EgoSpeedEstimator::new(EgoSpeedParams::default(), radar.translation.vector.into());
    let (mut errors, mut sweeps) = (vec![], 0);
    for k in 0..150 {
        let t = 0.5 + k as f64 * 0.1;
        let targets: Vec<RadarTarget> = sim::radar_scan(&w, t, &mut sim::rng(5, k))
            .into_iter()
            .map(|(p, _)| {
                let q = radar * nalgebra::Point3::new(p.x as f64, p.y as f64, p.z as f64);
                RadarTarget { x: q.x as f32, y: q.y as f32, z: q.z as f32, ..p }
            })
            .collect();
        let truth = w.traj.at(t);
        sweeps += 1;
        if let Some(got) = e.update((t * 1e9) as i64, &targets, truth.yaw_rate) {
            errors.push((got.speed - truth.speed).abs());
        }
    }
    errors.sort_by(f64::total_cmp);
    let p95 = errors[errors.len() * 95 / 100];
    assert!(errors.len() * 10 >= sweeps * 8, "estimates in {} of {sweeps} sweeps", errors.len());
    assert!(p95 < 0.15, "p95 error {p95:.3} m/s");
    // Not once pulled onto the vehicle driving alongside (7 m/s: a candidate near 0).
    assert!(errors[errors.len() - 1] < 0.3, "max error {:.3} m/s", errors[errors.len() - 1]);
}
