//! A transform buffer in the manner of tf2's `BufferCore`, without ROS: a tree of frames fed
//! from `/tf_static` (valid at every time) and `/tf` (stamped samples, interpolated), and
//! lookups of one frame in another at a stamp.
//!
//! The semantics follow tf2 so that a ROS user's expectations hold:
//! - each frame has one parent; a transform names the parent frame and the child frame and
//!   maps points in the child into the parent (`geometry_msgs/TransformStamped`);
//! - `lookup(target, source, at)` gives the transform that maps points in `source` into
//!   `target`, through their nearest common ancestor;
//! - between two samples the translation is interpolated linearly and the rotation by slerp;
//!   a stamp before the oldest or after the newest sample is an extrapolation error, never
//!   a silent hold (a moving mount must not be read at a stale pose);
//! - [`At::Latest`] is tf2's "time 0": the newest stamp every dynamic link of the chain has;
//! - frame ids are taken as given; a leading '/' is refused, as tf2 refuses it.
//!
//! The nodes convert `tf2_msgs/TFMessage` into [`Transform`]s and nothing more.
use crate::StampNs;
use nalgebra::{Isometry3, Quaternion, Translation3, UnitQuaternion, Vector3};
use std::collections::{BTreeMap, VecDeque};

/// One `geometry_msgs/TransformStamped`, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub parent: String,
    pub child: String,
    pub stamp_ns: StampNs,
    pub translation: [f64; 3],
    pub rotation_xyzw: [f64; 4],
}

/// When to look a transform up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The newest stamp all dynamic links of the chain have (tf2's `Time(0)`).
    Latest,
    Stamp(StampNs),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TfError {
    #[error("transform {parent} -> {child} refused: {why}")]
    Invalid { parent: String, child: String, why: String },
    #[error("frame '{0}' does not exist in the transform tree")]
    UnknownFrame(String),
    #[error(
        "'{target}' and '{source_frame}' are not connected: their trees have roots '{target_root}' and '{source_root}'"
    )]
    NotConnected { target: String, source_frame: String, target_root: String, source_root: String },
    #[error(
        "lookup of '{child}' in '{parent}' at {stamp_ns} ns would extrapolate into the {direction}: \
         samples span {earliest_ns}..={latest_ns} ns"
    )]
    Extrapolation {
        parent: String,
        child: String,
        stamp_ns: StampNs,
        earliest_ns: StampNs,
        latest_ns: StampNs,
        direction: &'static str,
    },
    #[error("the frames above '{0}' form a loop")]
    Loop(String),
}

/// How a frame hangs from its parent.
#[derive(Debug, Clone)]
enum Link {
    Static(Isometry3<f64>),
    /// Samples in stamp order, newest last.
    Dynamic(VecDeque<(StampNs, Isometry3<f64>)>),
}

#[derive(Debug, Clone)]
struct Frame {
    parent: String,
    link: Link,
}

/// The frames and their transforms. Dynamic samples older than `cache_ns` before a link's
/// newest sample are forgotten (tf2 keeps 10 s by default).
#[derive(Debug, Clone)]
pub struct TransformBuffer {
    cache_ns: i64,
    frames: BTreeMap<String, Frame>,
}

impl Default for TransformBuffer {
    fn default() -> Self {
        Self::new(10_000_000_000)
    }
}

/// The longest chain followed before a loop is declared (tf2's limit).
const MAX_DEPTH: usize = 1000;

impl TransformBuffer {
    pub fn new(cache_ns: i64) -> Self {
        Self { cache_ns, frames: BTreeMap::new() }
    }

    /// Adds one transform (from `/tf_static` when `is_static`). A static transform replaces
    /// the frame's link; a dynamic sample is inserted in stamp order, and one at a stamp the
    /// frame already has is refused, the first kept (tf2's TF_REPEATED_DATA). Unlike tf2,
    /// which keeps the parent per sample, a frame that gets a new parent (or turns from
    /// static to dynamic) drops its old link and history: a re-mount, not a hand-over.
    pub fn set(&mut self, t: &Transform, is_static: bool) -> Result<(), TfError> {
        let invalid = |why: String| TfError::Invalid { parent: t.parent.clone(), child: t.child.clone(), why };
        for id in [&t.parent, &t.child] {
            if id.is_empty() {
                return Err(invalid("a frame id is empty".into()));
            }
            if id.starts_with('/') {
                return Err(invalid(format!("frame id '{id}' starts with '/', which tf2 does not allow")));
            }
        }
        if t.parent == t.child {
            return Err(invalid("a frame cannot be its own parent".into()));
        }
        if t.translation.iter().chain(&t.rotation_xyzw).any(|v| !v.is_finite()) {
            return Err(invalid("not finite".into()));
        }
        // tf2's tolerance (|q·q − 1| < 0.01); the quaternion is then normalized.
        let norm2 = t.rotation_xyzw.iter().map(|v| v * v).sum::<f64>();
        if (norm2 - 1.0).abs() >= 0.01 {
            return Err(invalid(format!("rotation has norm {:.4}, not a unit quaternion", norm2.sqrt())));
        }
        let iso = isometry(t.translation, t.rotation_xyzw);
        let frame = self.frames.entry(t.child.clone());
        let frame = match frame {
            std::collections::btree_map::Entry::Vacant(v) => v.insert(Frame {
                parent: t.parent.clone(),
                link: if is_static { Link::Static(iso) } else { Link::Dynamic(VecDeque::new()) },
            }),
            std::collections::btree_map::Entry::Occupied(o) => {
                let f = o.into_mut();
                if f.parent != t.parent || is_static != matches!(f.link, Link::Static(_)) {
                    f.parent = t.parent.clone();
                    f.link = if is_static { Link::Static(iso) } else { Link::Dynamic(VecDeque::new()) };
                }
                f
            }
        };
        match &mut frame.link {
            Link::Static(s) => *s = iso,
            Link::Dynamic(samples) => {
                let at = samples.partition_point(|(s, _)| *s < t.stamp_ns);
                if samples.get(at).is_some_and(|sample| sample.0 == t.stamp_ns) {
                    return Err(invalid(format!("repeated stamp {} ns: the first sample is kept", t.stamp_ns)));
                }
                samples.insert(at, (t.stamp_ns, iso));
                let newest = samples.back().map_or(t.stamp_ns, |s| s.0);
                let oldest_kept = newest.saturating_sub(self.cache_ns);
                while samples.len() > 1 && samples.front().is_some_and(|s| s.0 < oldest_kept) {
                    samples.pop_front();
                }
            }
        }
        Ok(())
    }

    /// Whether `frame` is known, as a child or as some frame's parent.
    pub fn has_frame(&self, frame: &str) -> bool {
        self.frames.contains_key(frame) || self.frames.values().any(|f| f.parent == frame)
    }

    /// Whether the tree describes a robot's body: a static link anywhere, or any link hanging
    /// from `frame` (its mounts). `odom → base_link` alone on `/tf` does not.
    pub fn describes_below(&self, frame: &str) -> bool {
        self.frames.values().any(|f| matches!(f.link, Link::Static(_)) || f.parent == frame)
    }

    /// The frames known, children and roots.
    pub fn frames(&self) -> Vec<String> {
        let mut all: Vec<String> = self.frames.keys().cloned().collect();
        all.extend(self.frames.values().map(|f| f.parent.clone()));
        all.sort();
        all.dedup();
        all
    }

    /// Whether the transform between `target` and `source` changes with time: some link on
    /// the path between them came from `/tf` (a moving mount, a joint), so a lookup must be
    /// made at each message's stamp, not once.
    pub fn moves(&self, target: &str, source: &str) -> Result<bool, TfError> {
        let (up_source, up_target) = self.path(target, source)?;
        Ok(up_source.iter().chain(&up_target).any(|f| matches!(self.frames[f].link, Link::Dynamic(_))))
    }

    /// The transform mapping points in `source` into `target` at `at`.
    pub fn lookup(&self, target: &str, source: &str, at: At) -> Result<Isometry3<f64>, TfError> {
        let (up_source, up_target) = self.path(target, source)?;
        let links = || up_source.iter().chain(&up_target);
        let stamp = match at {
            At::Stamp(s) => s,
            // The newest stamp every dynamic link of the chain has; all static: any stamp.
            At::Latest => links()
                .filter_map(|f| match &self.frames[f].link {
                    Link::Dynamic(samples) => samples.back().map(|s| s.0),
                    Link::Static(_) => None,
                })
                .min()
                .unwrap_or(0),
        };
        let to_ancestor = |chain: &[String]| -> Result<Isometry3<f64>, TfError> {
            let mut t = Isometry3::identity();
            for frame in chain {
                t = self.link_at(frame, stamp)? * t;
            }
            Ok(t)
        };
        let ancestor_from_source = to_ancestor(&up_source)?;
        let ancestor_from_target = to_ancestor(&up_target)?;
        Ok(ancestor_from_target.inverse() * ancestor_from_source)
    }

    /// The frames whose links lead from `source` and from `target` up to their nearest common
    /// ancestor (each list starts at the frame itself and stops below the ancestor).
    fn path(&self, target: &str, source: &str) -> Result<(Vec<String>, Vec<String>), TfError> {
        for frame in [target, source] {
            if !self.has_frame(frame) {
                return Err(TfError::UnknownFrame(frame.to_string()));
            }
        }
        if target == source {
            return Ok((vec![], vec![]));
        }
        let up_source = self.chain(source)?;
        let up_target = self.chain(target)?;
        // The nearest common ancestor: the first frame of the source's chain the target's
        // chain also passes (a chain lists the frame itself, then each parent up to the root).
        let Some((i_source, i_target)) =
            up_source.iter().enumerate().find_map(|(i, f)| up_target.iter().position(|g| g == f).map(|j| (i, j)))
        else {
            return Err(TfError::NotConnected {
                target: target.into(),
                source_frame: source.into(),
                target_root: up_target.last().cloned().unwrap_or_default(),
                source_root: up_source.last().cloned().unwrap_or_default(),
            });
        };
        Ok((up_source[..i_source].to_vec(), up_target[..i_target].to_vec()))
    }

    /// `frame`, its parent, its parent's parent, … up to a root.
    fn chain(&self, frame: &str) -> Result<Vec<String>, TfError> {
        let mut chain = vec![frame.to_string()];
        let mut at = frame;
        while let Some(f) = self.frames.get(at) {
            if chain.len() > MAX_DEPTH || chain.contains(&f.parent) {
                return Err(TfError::Loop(frame.to_string()));
            }
            chain.push(f.parent.clone());
            at = &f.parent;
        }
        Ok(chain)
    }

    /// The transform parent ← `child` at `stamp`.
    fn link_at(&self, child: &str, stamp: StampNs) -> Result<Isometry3<f64>, TfError> {
        let frame = &self.frames[child];
        let samples = match &frame.link {
            Link::Static(t) => return Ok(*t),
            Link::Dynamic(samples) => samples,
        };
        let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
            return Err(TfError::UnknownFrame(child.to_string()));
        };
        let extrapolation = |direction| TfError::Extrapolation {
            parent: frame.parent.clone(),
            child: child.to_string(),
            stamp_ns: stamp,
            earliest_ns: first.0,
            latest_ns: last.0,
            direction,
        };
        if stamp < first.0 {
            return Err(extrapolation("past"));
        }
        if stamp > last.0 {
            return Err(extrapolation("future"));
        }
        let after = samples.partition_point(|(s, _)| *s < stamp);
        let (t1, b) = samples[after];
        if t1 == stamp {
            return Ok(b);
        }
        let (t0, a) = samples[after - 1];
        let f = (stamp - t0) as f64 / (t1 - t0) as f64;
        let translation = a.translation.vector.lerp(&b.translation.vector, f);
        let rotation = a.rotation.slerp(&b.rotation, f);
        Ok(Isometry3::from_parts(Translation3::from(translation), rotation))
    }
}

/// A translation and an (x, y, z, w) unit quaternion as an isometry.
pub fn isometry(translation: [f64; 3], rotation_xyzw: [f64; 4]) -> Isometry3<f64> {
    let [x, y, z, w] = rotation_xyzw;
    Isometry3::from_parts(
        Translation3::from(Vector3::from(translation)),
        UnitQuaternion::from_quaternion(Quaternion::new(w, x, y, z)),
    )
}

/// An isometry as a translation and an (x, y, z, w) quaternion, for messages.
pub fn parts(t: &Isometry3<f64>) -> ([f64; 3], [f64; 4]) {
    let q = t.rotation.quaternion();
    (t.translation.vector.into(), [q.i, q.j, q.k, q.w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Point3;
    use std::f64::consts::FRAC_PI_2;

    fn tf(parent: &str, child: &str, stamp_ns: StampNs, translation: [f64; 3], yaw: f64) -> Transform {
        let q = UnitQuaternion::from_euler_angles(0.0, 0.0, yaw);
        Transform {
            parent: parent.into(),
            child: child.into(),
            stamp_ns,
            translation,
            rotation_xyzw: [q.i, q.j, q.k, q.w],
        }
    }

    fn close(a: Point3<f64>, b: [f64; 3]) -> bool {
        (a - Point3::from(b)).norm() < 1e-9
    }

    /// A robot as robot_state_publisher describes it: base_link → roof → lidar, base_link →
    /// camera; and a map → odom → base_link localization chain on /tf.
    fn robot() -> TransformBuffer {
        let mut b = TransformBuffer::default();
        b.set(&tf("base_link", "roof", 0, [0.5, 0.0, 1.5], 0.0), true).unwrap();
        b.set(&tf("roof", "lidar", 0, [0.2, 0.0, 0.3], FRAC_PI_2), true).unwrap();
        b.set(&tf("base_link", "camera", 0, [1.5, 0.0, 1.2], 0.0), true).unwrap();
        b
    }

    #[test]
    fn a_static_chain_composes_and_inverts() {
        let b = robot();
        let base_from_lidar = b.lookup("base_link", "lidar", At::Latest).unwrap();
        // A point 1 m along the lidar's x, which is yawed 90° left: base_link y.
        assert!(close(base_from_lidar * Point3::new(1.0, 0.0, 0.0), [0.7, 1.0, 1.8]));
        let lidar_from_base = b.lookup("lidar", "base_link", At::Stamp(123)).unwrap();
        assert!(close(lidar_from_base * Point3::new(0.7, 1.0, 1.8), [1.0, 0.0, 0.0]));
        // Across the tree: camera ← lidar passes through base_link, the common ancestor.
        let camera_from_lidar = b.lookup("camera", "lidar", At::Latest).unwrap();
        assert!(close(camera_from_lidar * Point3::origin(), [0.7 - 1.5, 0.0, 1.8 - 1.2]));
        assert_eq!(b.lookup("roof", "roof", At::Latest).unwrap(), Isometry3::identity());
    }

    #[test]
    fn dynamic_links_interpolate_and_refuse_to_extrapolate() {
        let mut b = robot();
        b.set(&tf("odom", "base_link", 1_000, [0.0, 0.0, 0.0], 0.0), false).unwrap();
        b.set(&tf("odom", "base_link", 3_000, [2.0, 0.0, 0.0], FRAC_PI_2), false).unwrap();
        let mid = b.lookup("odom", "base_link", At::Stamp(2_000)).unwrap();
        assert!(close(mid * Point3::origin(), [1.0, 0.0, 0.0]));
        let yaw = mid.rotation.euler_angles().2;
        assert!((yaw - FRAC_PI_2 / 2.0).abs() < 1e-9, "slerp halfway: {yaw}");
        // Static links below a dynamic one ride along: the lidar in odom at the end sample.
        let odom_from_lidar = b.lookup("odom", "lidar", At::Latest).unwrap();
        assert!(close(odom_from_lidar * Point3::origin(), [2.0, 0.7, 1.8]));
        match b.lookup("odom", "lidar", At::Stamp(3_001)) {
            Err(TfError::Extrapolation { direction: "future", latest_ns: 3_000, .. }) => {}
            other => panic!("{other:?}"),
        }
        match b.lookup("lidar", "odom", At::Stamp(999)) {
            Err(e @ TfError::Extrapolation { direction: "past", earliest_ns: 1_000, .. }) => {
                assert!(e.to_string().contains("'base_link' in 'odom'"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // The sensors' mounts are static: no stamp limits a lookup that stays below odom.
        assert!(b.lookup("base_link", "lidar", At::Stamp(-5)).is_ok());
        // Which paths move: any that crosses the /tf link, whichever way it is looked up.
        assert!(!b.moves("base_link", "lidar").unwrap() && !b.moves("camera", "lidar").unwrap());
        assert!(b.moves("odom", "lidar").unwrap() && b.moves("lidar", "odom").unwrap());
        assert!(!b.moves("roof", "roof").unwrap());
        assert!(matches!(b.moves("base_link", "radar"), Err(TfError::UnknownFrame(f)) if f == "radar"));
        // Localization alone says nothing of the robot's body; a mount does.
        let mut odom_only = TransformBuffer::default();
        odom_only.set(&tf("odom", "base_link", 1_000, [0.0; 3], 0.0), false).unwrap();
        assert!(!odom_only.describes_below("base_link") && b.describes_below("base_link"));
        odom_only.set(&tf("base_link", "pan", 1_000, [0.0; 3], 0.0), false).unwrap();
        assert!(odom_only.describes_below("base_link"));
    }

    #[test]
    fn latest_is_the_newest_time_the_whole_chain_has() {
        let mut b = TransformBuffer::default();
        b.set(&tf("map", "odom", 0, [0.0; 3], 0.0), false).unwrap();
        b.set(&tf("map", "odom", 5_000, [1.0, 0.0, 0.0], 0.0), false).unwrap();
        b.set(&tf("odom", "base_link", 0, [0.0; 3], 0.0), false).unwrap();
        b.set(&tf("odom", "base_link", 2_000, [0.0, 4.0, 0.0], 0.0), false).unwrap();
        // map has data to 5000, base_link only to 2000: Latest reads both at 2000.
        let t = b.lookup("map", "base_link", At::Latest).unwrap();
        assert!(close(t * Point3::origin(), [0.4, 4.0, 0.0]));
        // The same with the dynamic links on the target's side of the lookup.
        let inverse = b.lookup("base_link", "map", At::Latest).unwrap();
        assert!(close(inverse * Point3::new(0.4, 4.0, 0.0), [0.0, 0.0, 0.0]));
        // A quaternion typed by hand (|q|² = 1.004) is accepted as tf2 accepts it.
        let nearly = Transform { rotation_xyzw: [0.0, 0.0, 0.0, 1.002], ..tf("base_link", "imu", 0, [0.0; 3], 0.0) };
        b.set(&nearly, true).unwrap();
        assert!(close(b.lookup("base_link", "imu", At::Latest).unwrap() * Point3::new(1.0, 0.0, 0.0), [1.0, 0.0, 0.0]));
    }

    #[test]
    fn missing_and_disconnected_frames_are_named() {
        let mut b = robot();
        assert_eq!(b.lookup("base_link", "radar", At::Latest), Err(TfError::UnknownFrame("radar".into())));
        b.set(&tf("radar_mount", "radar", 0, [0.0; 3], 0.0), true).unwrap();
        let err = b.lookup("base_link", "radar", At::Latest).unwrap_err();
        assert_eq!(
            err,
            TfError::NotConnected {
                target: "base_link".into(),
                source_frame: "radar".into(),
                target_root: "base_link".into(),
                source_root: "radar_mount".into()
            }
        );
        assert!(err.to_string().contains("roots 'base_link' and 'radar_mount'"), "{err}");
        // Publishing the missing link connects the trees.
        b.set(&tf("base_link", "radar_mount", 0, [2.0, 0.0, 0.5], 0.0), true).unwrap();
        assert!(close(b.lookup("base_link", "radar", At::Latest).unwrap() * Point3::origin(), [2.0, 0.0, 0.5]));
    }

    #[test]
    fn bad_transforms_are_refused_and_loops_detected() {
        let mut b = TransformBuffer::default();
        for bad in [
            tf("base_link", "base_link", 0, [0.0; 3], 0.0),
            tf("/base_link", "lidar", 0, [0.0; 3], 0.0),
            tf("base_link", "", 0, [0.0; 3], 0.0),
            tf("base_link", "lidar", 0, [f64::NAN, 0.0, 0.0], 0.0),
            Transform { rotation_xyzw: [0.0, 0.0, 0.0, 2.0], ..tf("base_link", "lidar", 0, [0.0; 3], 0.0) },
        ] {
            assert!(matches!(b.set(&bad, true), Err(TfError::Invalid { .. })), "{bad:?} accepted");
        }
        assert!(b.frames().is_empty(), "nothing refused was kept");
        b.set(&tf("a", "b", 0, [0.0; 3], 0.0), true).unwrap();
        b.set(&tf("b", "a", 0, [0.0; 3], 0.0), true).unwrap();
        assert!(matches!(b.lookup("a", "c", At::Latest), Err(TfError::UnknownFrame(_))));
        b.set(&tf("b", "c", 0, [0.0; 3], 0.0), true).unwrap();
        assert!(matches!(b.lookup("c", "a", At::Latest), Err(TfError::Loop(_))));
    }

    #[test]
    fn a_reparented_frame_and_an_old_sample_are_forgotten() {
        let mut b = TransformBuffer::new(1_000);
        b.set(&tf("odom", "base_link", 0, [0.0; 3], 0.0), false).unwrap();
        b.set(&tf("odom", "base_link", 500, [1.0, 0.0, 0.0], 0.0), false).unwrap();
        b.set(&tf("odom", "base_link", 2_000, [4.0, 0.0, 0.0], 0.0), false).unwrap();
        // Older than 1000 ns before the newest: gone; 500 is still out of the window too.
        assert!(matches!(b.lookup("odom", "base_link", At::Stamp(700)), Err(TfError::Extrapolation { .. })));
        // A sample arriving out of order is put in its place; a twin of its stamp is refused
        // and the first kept (tf2's TF_REPEATED_DATA).
        b.set(&tf("odom", "base_link", 1_500, [3.0, 0.0, 0.0], 0.0), false).unwrap();
        assert!(matches!(
            b.set(&tf("odom", "base_link", 1_500, [2.0, 0.0, 0.0], 0.0), false),
            Err(TfError::Invalid { .. })
        ));
        assert!(close(b.lookup("odom", "base_link", At::Stamp(1_750)).unwrap() * Point3::origin(), [3.5, 0.0, 0.0]));
        // A sample exactly cache_ns older than the newest is still kept.
        b.set(&tf("odom", "base_link", 1_000, [1.0, 0.0, 0.0], 0.0), false).unwrap();
        assert!(close(b.lookup("odom", "base_link", At::Stamp(1_000)).unwrap() * Point3::origin(), [1.0, 0.0, 0.0]));
        // base_link moved under map (a static re-mount): odom, parent of nothing now, is gone.
        b.set(&tf("map", "base_link", 0, [0.0, 1.0, 0.0], 0.0), true).unwrap();
        assert_eq!(b.lookup("odom", "base_link", At::Latest), Err(TfError::UnknownFrame("odom".into())));
        assert!(close(b.lookup("map", "base_link", At::Stamp(9)).unwrap() * Point3::origin(), [0.0, 1.0, 0.0]));
    }

    #[test]
    fn parts_round_trip() {
        let t = tf("a", "b", 0, [1.0, -2.0, 0.5], 0.7);
        let (translation, rotation) = parts(&isometry(t.translation, t.rotation_xyzw));
        assert_eq!(translation, t.translation);
        for (a, b) in rotation.iter().zip(t.rotation_xyzw) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
