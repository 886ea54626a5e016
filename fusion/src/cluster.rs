//! LiDAR ground removal and Euclidean clustering on a voxel grid, and radar target
//! clustering: the object hypotheses the association and tracking stages consume.
use crate::cloud::RadarTarget;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct ClusterParams {
    /// Ground: points within this height above their cell's lowest return.
    pub ground_threshold: f64,
    /// Cell size of the ground-height grid, metres.
    pub ground_cell: f64,
    /// A cell whose lowest return is higher than this has no ground (an object covers it).
    pub max_ground_height: f64,
    /// Voxel edge for connectivity, metres: voxels touching (26-neighbourhood) join. A
    /// 32-beam sweep leaves gaps of a metre between a car's rear face and its roof at 25 m:
    /// 0.8 m keeps one car one cluster (0.4 m split them in two).
    pub voxel: f64,
    /// Vertical voxel edge: larger, because a spinning LiDAR's rings are far apart
    /// vertically (1.3° at 20 m is 0.45 m) while horizontally dense.
    pub voxel_z: f64,
    pub min_points: usize,
    pub max_points: usize,
}

impl Default for ClusterParams {
    fn default() -> Self {
        Self {
            ground_threshold: 0.25,
            ground_cell: 2.0,
            max_ground_height: 0.3,
            voxel: 0.8,
            voxel_z: 1.0,
            min_points: 5,
            max_points: 50_000,
        }
    }
}

/// A cluster's box: oriented by the principal axis of its footprint.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectBox {
    pub center: [f64; 3],
    /// Length (along `yaw`), width, height.
    pub size: [f64; 3],
    pub yaw: f64,
    pub points: usize,
}

fn cell(x: f64, y: f64, size: f64) -> (i64, i64) {
    ((x / size).floor() as i64, (y / size).floor() as i64)
}

/// Indices of the points that are not ground.
pub fn remove_ground(points: &[[f32; 3]], p: &ClusterParams) -> Vec<usize> {
    let mut lowest: HashMap<(i64, i64), f64> = HashMap::new();
    for q in points {
        let e = lowest.entry(cell(q[0] as f64, q[1] as f64, p.ground_cell)).or_insert(f64::INFINITY);
        *e = e.min(q[2] as f64);
    }
    (0..points.len())
        .filter(|&i| {
            let q = points[i];
            let low = lowest[&cell(q[0] as f64, q[1] as f64, p.ground_cell)];
            let ground = if low <= p.max_ground_height { low } else { 0.0 };
            q[2] as f64 > ground + p.ground_threshold
        })
        .collect()
}

/// Euclidean clusters of the given points: connected components of occupied voxels.
/// Deterministic: clusters are ordered by their first point's index.
pub fn euclidean_clusters(points: &[[f32; 3]], p: &ClusterParams) -> Vec<Vec<usize>> {
    let key = |q: &[f32; 3]| {
        (
            (q[0] as f64 / p.voxel).floor() as i64,
            (q[1] as f64 / p.voxel).floor() as i64,
            (q[2] as f64 / p.voxel_z).floor() as i64,
        )
    };
    let mut voxels: HashMap<(i64, i64, i64), Vec<usize>> = HashMap::new();
    let mut order: Vec<(i64, i64, i64)> = vec![];
    for (i, q) in points.iter().enumerate() {
        let k = key(q);
        let v = voxels.entry(k).or_insert_with(|| {
            order.push(k);
            vec![]
        });
        v.push(i);
    }
    let mut label: HashMap<(i64, i64, i64), usize> = HashMap::new();
    let mut clusters: Vec<Vec<usize>> = vec![];
    for start in order {
        if label.contains_key(&start) {
            continue;
        }
        let id = clusters.len();
        let mut members = vec![];
        let mut stack = vec![start];
        label.insert(start, id);
        while let Some(v) = stack.pop() {
            members.extend_from_slice(&voxels[&v]);
            for dx in -1..=1 {
                for dy in -1..=1 {
                    for dz in -1..=1 {
                        let n = (v.0 + dx, v.1 + dy, v.2 + dz);
                        if voxels.contains_key(&n) && !label.contains_key(&n) {
                            label.insert(n, id);
                            stack.push(n);
                        }
                    }
                }
            }
        }
        members.sort_unstable();
        clusters.push(members);
    }
    clusters.retain(|c| c.len() >= p.min_points && c.len() <= p.max_points);
    clusters
}

/// The oriented box of a cluster (principal axis of the x-y spread).
pub fn object_box(points: &[[f32; 3]], members: &[usize]) -> ObjectBox {
    let n = members.len() as f64;
    let (mut mx, mut my) = (0.0, 0.0);
    let (mut zmin, mut zmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for &i in members {
        mx += points[i][0] as f64 / n;
        my += points[i][1] as f64 / n;
        zmin = zmin.min(points[i][2] as f64);
        zmax = zmax.max(points[i][2] as f64);
    }
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for &i in members {
        let (dx, dy) = (points[i][0] as f64 - mx, points[i][1] as f64 - my);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    let yaw = 0.5 * (2.0 * sxy).atan2(sxx - syy);
    let (c, s) = (yaw.cos(), yaw.sin());
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for &i in members {
        let (dx, dy) = (points[i][0] as f64 - mx, points[i][1] as f64 - my);
        let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
        lo = [lo[0].min(u), lo[1].min(v)];
        hi = [hi[0].max(u), hi[1].max(v)];
    }
    let (cu, cv) = ((lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0);
    ObjectBox {
        center: [mx + c * cu - s * cv, my + s * cu + c * cv, (zmin + zmax) / 2.0],
        size: [hi[0] - lo[0], hi[1] - lo[1], zmax - zmin],
        yaw,
        points: members.len(),
    }
}

/// A radar object: targets close in position and in doppler.
#[derive(Debug, Clone, PartialEq)]
pub struct RadarObject {
    pub center: [f64; 3],
    pub doppler: f64,
    pub rcs: f64,
    pub targets: usize,
}

/// Groups radar targets (x, y, z, doppler, rcs) whose positions are within `eps` metres and
/// dopplers within `eps_doppler` m/s, transitively. Single targets stay objects of their own.
pub fn radar_objects(targets: &[RadarTarget], eps: f64, eps_doppler: f64) -> Vec<RadarObject> {
    let n = targets.len();
    let mut label = vec![usize::MAX; n];
    let mut out = vec![];
    for s in 0..n {
        if label[s] != usize::MAX {
            continue;
        }
        let id = out.len();
        label[s] = id;
        let mut stack = vec![s];
        let mut members = vec![];
        while let Some(i) = stack.pop() {
            members.push(i);
            for j in 0..n {
                if label[j] == usize::MAX {
                    let (a, b) = (targets[i], targets[j]);
                    let d = ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt() as f64;
                    if d <= eps && ((a.doppler - b.doppler).abs() as f64) <= eps_doppler {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        let k = members.len() as f64;
        let mean = |f: fn(&RadarTarget) -> f32| members.iter().map(|&i| f(&targets[i]) as f64).sum::<f64>() / k;
        out.push(RadarObject {
            center: [mean(|t| t.x), mean(|t| t.y), mean(|t| t.z)],
            doppler: mean(|t| t.doppler),
            rcs: members.iter().map(|&i| targets[i].rcs as f64).fold(f64::NEG_INFINITY, f64::max),
            targets: members.len(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radar_targets_group_by_position_and_doppler() {
        let t = [
            [20.0, 1.0, 0.5, -3.0, 10.0],
            [20.5, 1.3, 0.5, -3.2, 12.0],
            [20.3, 1.1, 0.5, 5.0, 0.0], // same place, different motion: separate
            [50.0, -4.0, 0.5, -8.0, 1.0],
        ]
        .map(RadarTarget::from);
        let o = radar_objects(&t, 1.5, 1.0);
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].targets, 2);
        assert!((o[0].doppler + 3.1).abs() < 1e-6 && o[0].rcs == 12.0);
    }
}
