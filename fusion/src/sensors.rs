//! The robot's sensor set as data: every sensor the calibration declares, with its name and
//! kind, and the index ([`SensorId`]) that per-sensor state (the anomaly rules' streams, the
//! scheduler's mailboxes, the synchronizer's members, `/diagnostics` keys) is kept under.
//!
//! The order is fixed by kind (camera, LiDAR, radar, IMU), then by name, so the standard set
//! of DESIGN.md §3 (`camera`, `lidar`, `radar`, `imu`) has the ids 0..4 the single-sensor node
//! set always used, and its outputs stay byte-identical.
use crate::Sensor;
use std::sync::Arc;

/// A declared sensor's place in its [`SensorSet`]: the index of its per-sensor state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SensorId(pub u16);

impl SensorId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The id of the sensor of this kind in [`SensorSet::standard`] (for the tools and tests
    /// that work with the standard robot only).
    pub const fn standard(kind: Sensor) -> SensorId {
        SensorId(kind.index() as u16)
    }
}

/// One declared sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Its key in the calibration, the `/sensors/<name>` topic and the name events use.
    /// Interned for the process's life (a set is declared once at start-up), so events can
    /// keep naming sensors by `&'static str` as the standard names always did.
    pub name: &'static str,
    pub kind: Sensor,
}

/// Every sensor of the robot, ordered by kind then name. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorSet {
    sensors: Arc<[Declared]>,
}

/// Why a declared sensor set cannot be fused (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sensor set: {0}")]
pub struct SensorSetError(pub String);

fn intern(name: &str) -> &'static str {
    // The standard names need no allocation; others are leaked once per distinct name for the
    // process (a set is built a few times at start-up, never per message).
    static INTERNED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    if let Some(standard) = Sensor::ALL.into_iter().map(Sensor::as_str).find(|s| *s == name) {
        return standard;
    }
    let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = interned.iter().find(|s| **s == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into());
    interned.push(leaked);
    leaked
}

impl SensorSet {
    /// The single-sensor robot of DESIGN.md §3: `camera`, `lidar`, `radar`, `imu`.
    pub fn standard() -> Self {
        Self::new(Sensor::ALL.iter().map(|k| (k.as_str().to_string(), *k))).expect("the standard set is valid")
    }

    /// A set from (name, kind) declarations. What the node set handles: the standard robot's
    /// `camera`, `lidar` and `radar` (each of its kind), any number more cameras, LiDARs and
    /// radars, and at most one IMU, which may be left out (the base's rotation then comes from
    /// odometry, and the IMU's rules have nothing to judge). Every tool and the launch file
    /// start from the three (the replay's frontend, the simulator, `fusion.launch.xml`).
    pub fn new(declared: impl IntoIterator<Item = (String, Sensor)>) -> Result<Self, SensorSetError> {
        let mut sensors: Vec<Declared> =
            declared.into_iter().map(|(name, kind)| Declared { name: intern(&name), kind }).collect();
        sensors.sort_by(|a, b| (a.kind, a.name).cmp(&(b.kind, b.name)));
        if let Some(w) = sensors.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(SensorSetError(format!("sensor '{}' is declared twice", w[0].name)));
        }
        let valid = |n: &str| n.starts_with(|c: char| c.is_ascii_alphabetic()) && n.chars().all(valid_name_char);
        if let Some(d) = sensors.iter().find(|d| !valid(d.name)) {
            return Err(SensorSetError(format!(
                "sensor name '{}' must start with a letter and hold letters, digits and '_' (it becomes the topic sensors/{} and the node {}_ingest)",
                d.name, d.name, d.name
            )));
        }
        for kind in [Sensor::Camera, Sensor::Lidar, Sensor::Radar] {
            if !sensors.iter().any(|d| d.name == kind.as_str() && d.kind == kind) {
                return Err(SensorSetError(format!(
                    "the sensor '{kind}' (of kind {kind}) must be declared: the node set starts from the standard camera, lidar and radar, fuses any number more of each, and takes at most one imu"
                )));
            }
        }
        let count = |k: Sensor| sensors.iter().filter(|d| d.kind == k).count();
        if count(Sensor::Imu) > 1 {
            return Err(SensorSetError(format!("at most one imu; {} declared of kind imu", count(Sensor::Imu))));
        }
        Ok(Self { sensors: sensors.into() })
    }

    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = SensorId> + '_ {
        (0..self.sensors.len()).map(|i| SensorId(i as u16))
    }

    pub fn get(&self, id: SensorId) -> &Declared {
        &self.sensors[id.index()]
    }

    pub fn name(&self, id: SensorId) -> &'static str {
        self.sensors[id.index()].name
    }

    pub fn kind(&self, id: SensorId) -> Sensor {
        self.sensors[id.index()].kind
    }

    /// The sensors of one kind, in the set's order.
    pub fn of_kind(&self, kind: Sensor) -> impl Iterator<Item = SensorId> + '_ {
        self.ids().filter(move |id| self.kind(*id) == kind)
    }

    /// The first sensor of a kind by name (the IMU; the radar the ego speed comes from).
    pub fn first(&self, kind: Sensor) -> Option<SensorId> {
        self.of_kind(kind).next()
    }

    pub fn find(&self, name: &str) -> Option<SensorId> {
        self.ids().find(|id| self.name(*id) == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (SensorId, &Declared)> + '_ {
        self.ids().zip(self.sensors.iter())
    }
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(decls: &[(&str, Sensor)]) -> Result<SensorSet, SensorSetError> {
        SensorSet::new(decls.iter().map(|(n, k)| (n.to_string(), *k)))
    }

    #[test]
    fn the_standard_set_keeps_the_single_sensor_indices() {
        let s = SensorSet::standard();
        for kind in Sensor::ALL {
            let id = s.first(kind).unwrap();
            assert_eq!(id.index(), kind.index());
            assert_eq!(s.name(id), kind.as_str());
        }
    }

    #[test]
    fn sensors_are_ordered_by_kind_then_name() {
        let s = set(&[
            ("lidar", Sensor::Lidar),
            ("rear_radar", Sensor::Radar),
            ("imu", Sensor::Imu),
            ("bumper_lidar", Sensor::Lidar),
            ("camera", Sensor::Camera),
            ("radar", Sensor::Radar),
        ])
        .unwrap();
        let names: Vec<_> = s.ids().map(|id| s.name(id)).collect();
        assert_eq!(names, ["camera", "bumper_lidar", "lidar", "radar", "rear_radar", "imu"]);
        assert_eq!(s.of_kind(Sensor::Lidar).count(), 2);
        assert_eq!(s.find("rear_radar"), Some(SensorId(4)));
        assert!(std::ptr::eq(intern("bumper_lidar"), intern("bumper_lidar")), "a name is leaked once");
    }

    #[test]
    fn a_set_the_node_set_cannot_handle_is_refused_with_the_rule() {
        let base = [("camera", Sensor::Camera), ("radar", Sensor::Radar), ("imu", Sensor::Imu)];
        let with = |more: &[(&'static str, Sensor)]| set(&[&base[..], more].concat());
        let e = with(&[]).unwrap_err();
        assert!(e.to_string().contains("the sensor 'lidar' (of kind lidar) must be declared"), "{e}");
        let e = with(&[("roof_lidar", Sensor::Lidar)]).unwrap_err();
        assert!(e.to_string().contains("'lidar' (of kind lidar) must be declared"), "{e}");
        let e = with(&[("lidar", Sensor::Lidar), ("rear_imu", Sensor::Imu)]).unwrap_err();
        assert!(e.to_string().contains("at most one imu"), "{e}");
        let e = with(&[("lidar", Sensor::Lidar), ("lidar", Sensor::Radar)]).unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
        for bad in ["roof lidar", "2nd_lidar", ""] {
            let e = with(&[("lidar", Sensor::Lidar), (bad, Sensor::Lidar)]).unwrap_err();
            assert!(e.to_string().contains("must start with a letter"), "{bad}: {e}");
        }
        assert!(with(&[
            ("lidar", Sensor::Lidar),
            ("bumper_lidar", Sensor::Lidar),
            ("rear_radar", Sensor::Radar),
            ("rear_camera", Sensor::Camera)
        ])
        .is_ok());
        // A robot without an IMU, or with one under its own name.
        let no_imu = set(&[("camera", Sensor::Camera), ("lidar", Sensor::Lidar), ("radar", Sensor::Radar)]).unwrap();
        assert_eq!((no_imu.len(), no_imu.first(Sensor::Imu)), (3, None));
        let named = set(&[
            ("camera", Sensor::Camera),
            ("lidar", Sensor::Lidar),
            ("radar", Sensor::Radar),
            ("xsens", Sensor::Imu),
        ]);
        assert_eq!(named.unwrap().first(Sensor::Imu), Some(SensorId(3)));
    }
}
