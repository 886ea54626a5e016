//! The calibration YAML (DESIGN.md §3): the pose of each sensor frame in base_link, the
//! camera intrinsics and the safety zones. Every node reads the same file.
use crate::Sensor;
use nalgebra::{Isometry3, Quaternion, Translation3, UnitQuaternion};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("cannot read calibration {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("calibration {path} is not valid YAML for the schema: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("calibration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorPose {
    pub frame_id: String,
    pub translation: [f64; 3],
    pub rotation_xyzw: [f64; 4],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Row-major 3×3 camera matrix, camera only.
    #[serde(default, rename = "K", skip_serializing_if = "Option::is_none")]
    pub k: Option<[f64; 9]>,
}

impl SensorPose {
    /// The transform that maps points in this sensor's frame into base_link.
    pub fn to_base(&self) -> Isometry3<f64> {
        let [x, y, z, w] = self.rotation_xyzw;
        let q = UnitQuaternion::from_quaternion(Quaternion::new(w, x, y, z));
        let [tx, ty, tz] = self.translation;
        Isometry3::from_parts(Translation3::new(tx, ty, tz), q)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SafetyZone {
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
}

impl SafetyZone {
    /// Whether (x, y) in base_link lies inside the zone (even-odd rule).
    pub fn contains(&self, x: f64, y: f64) -> bool {
        point_in_polygon(x, y, &self.polygon)
    }

    /// Distance from (x, y) to the zone's nearest edge: how far a point inside would have to
    /// move to leave the zone (the counterfactual an explanation of an intrusion gives).
    pub fn edge_distance(&self, x: f64, y: f64) -> f64 {
        let n = self.polygon.len();
        (0..n)
            .map(|i| {
                let (a, b) = (self.polygon[i], self.polygon[(i + 1) % n]);
                let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
                let len2 = dx * dx + dy * dy;
                let t = if len2 > 0.0 { (((x - a[0]) * dx + (y - a[1]) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                (x - a[0] - t * dx).hypot(y - a[1] - t * dy)
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// Even-odd point-in-polygon test.
pub fn point_in_polygon(x: f64, y: f64, poly: &[[f64; 2]]) -> bool {
    let mut inside = false;
    let n = poly.len();
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + n - 1) % n]);
        if (a[1] > y) != (b[1] > y) && x < (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0] {
            inside = !inside;
        }
    }
    inside
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub base_frame: String,
    pub sensors: BTreeMap<String, SensorPose>,
    #[serde(default)]
    pub safety_zones: Vec<SafetyZone>,
}

impl Default for Calibration {
    /// The defaults of DESIGN.md §3.
    fn default() -> Self {
        let pose = |frame: &str, t: [f64; 3], r: [f64; 4]| SensorPose {
            frame_id: frame.into(),
            translation: t,
            rotation_xyzw: r,
            width: None,
            height: None,
            k: None,
        };
        let mut camera = pose("camera_optical", [1.5, 0.0, 1.2], [-0.5, 0.5, -0.5, 0.5]);
        camera.width = Some(640);
        camera.height = Some(480);
        camera.k = Some([500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]);
        let sensors = BTreeMap::from([
            ("camera".to_string(), camera),
            ("lidar".into(), pose("lidar_link", [1.0, 0.0, 1.8], [0.0, 0.0, 0.0, 1.0])),
            ("radar".into(), pose("radar_link", [2.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0])),
            ("imu".into(), pose("imu_link", [0.0, 0.0, 0.3], [0.0, 0.0, 0.0, 1.0])),
        ]);
        Calibration {
            base_frame: "base_link".into(),
            sensors,
            safety_zones: vec![SafetyZone {
                name: "forward".into(),
                polygon: vec![[0.0, -1.5], [5.0, -1.5], [5.0, 1.5], [0.0, 1.5]],
            }],
        }
    }
}

impl Calibration {
    /// Reads and checks a calibration file; an empty path gives the defaults.
    pub fn load(path: &str) -> Result<Self, CalibError> {
        if path.is_empty() {
            return Ok(Self::default());
        }
        let text =
            std::fs::read_to_string(Path::new(path)).map_err(|source| CalibError::Io { path: path.into(), source })?;
        Self::from_yaml(&text).map_err(|e| match e {
            CalibError::Parse { source, .. } => CalibError::Parse { path: path.into(), source },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, CalibError> {
        let calib: Calibration =
            serde_yaml::from_str(text).map_err(|source| CalibError::Parse { path: "<string>".into(), source })?;
        calib.check()?;
        Ok(calib)
    }

    fn check(&self) -> Result<(), CalibError> {
        // Every sensor the node set knows must be calibrated.
        for name in Sensor::ALL.map(Sensor::as_str) {
            let s = self.sensors.get(name).ok_or_else(|| CalibError::Invalid(format!("sensors.{name} is missing")))?;
            let n = s.rotation_xyzw.iter().map(|v| v * v).sum::<f64>().sqrt();
            if !n.is_finite() || (n - 1.0).abs() > 1e-3 {
                return Err(CalibError::Invalid(format!(
                    "sensors.{name}.rotation_xyzw has norm {n}, expected a unit quaternion"
                )));
            }
            if s.frame_id.is_empty() {
                return Err(CalibError::Invalid(format!("sensors.{name}.frame_id is empty")));
            }
            if s.translation.iter().any(|v| !v.is_finite()) {
                return Err(CalibError::Invalid(format!("sensors.{name}.translation is not finite")));
            }
        }
        for z in &self.safety_zones {
            if z.polygon.len() < 3 {
                return Err(CalibError::Invalid(format!("safety zone {} has < 3 vertices", z.name)));
            }
        }
        Ok(())
    }

    pub fn sensor(&self, name: &str) -> &SensorPose {
        // `check` guarantees the four sensors exist.
        &self.sensors[name]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Point3, Vector3};

    #[test]
    fn a_zone_knows_what_is_inside_and_how_far_from_its_edge() {
        let z = SafetyZone { name: "forward".into(), polygon: vec![[0.0, -1.0], [4.0, -1.0], [4.0, 1.0], [0.0, 1.0]] };
        assert!(z.contains(1.0, 0.2) && !z.contains(5.0, 0.0) && !z.contains(1.0, -1.5));
        assert!((z.edge_distance(1.0, 0.2) - 0.8).abs() < 1e-12, "nearest edge is y = 1");
        assert!((z.edge_distance(3.5, 0.0) - 0.5).abs() < 1e-12, "nearest edge is x = 4");
        assert!((z.edge_distance(5.0, 2.0) - 2f64.sqrt()).abs() < 1e-12, "outside: distance to the corner");
    }

    #[test]
    fn default_round_trips_through_yaml() {
        let c = Calibration::default();
        let text = serde_yaml::to_string(&c).unwrap();
        assert_eq!(Calibration::from_yaml(&text).unwrap(), c);
    }

    #[test]
    fn camera_optical_axis_points_forward() {
        // Optical frame: z forward, x right, y down. In base_link forward is +x, right is -y.
        let t = Calibration::default().sensor("camera").to_base();
        let fwd = t.rotation * Vector3::z();
        let right = t.rotation * Vector3::x();
        let down = t.rotation * Vector3::y();
        assert!((fwd - Vector3::x()).norm() < 1e-9, "{fwd}");
        assert!((right + Vector3::y()).norm() < 1e-9, "{right}");
        assert!((down + Vector3::z()).norm() < 1e-9, "{down}");
        let origin = t * Point3::origin();
        assert!((origin.coords - Vector3::new(1.5, 0.0, 1.2)).norm() < 1e-12);
    }

    #[test]
    fn rejects_missing_sensor_and_bad_quaternion() {
        let mut c = Calibration::default();
        c.sensors.remove("radar");
        let err = Calibration::from_yaml(&serde_yaml::to_string(&c).unwrap()).unwrap_err();
        assert!(err.to_string().contains("sensors.radar is missing"), "{err}");
        let mut c = Calibration::default();
        c.sensors.get_mut("imu").unwrap().rotation_xyzw = [0.0, 0.0, 0.0, 2.0];
        let err = Calibration::from_yaml(&serde_yaml::to_string(&c).unwrap()).unwrap_err();
        assert!(err.to_string().contains("unit quaternion"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_not_silently_ignored() {
        let text = serde_yaml::to_string(&Calibration::default()).unwrap().replace("base_frame", "base_frme");
        assert!(Calibration::from_yaml(&text).is_err());
    }
}
