//! The calibration YAML (DESIGN.md §3): the pose of each sensor frame in base_link, the
//! camera intrinsics and the safety zones. Every node reads the same file.
use crate::{Sensor, SensorSet};
use nalgebra::Isometry3;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("cannot read calibration {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("calibration {path} is not valid YAML for the schema: {source}")]
    Parse { path: String, source: serde_norway::Error },
    #[error("calibration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorPose {
    /// camera, lidar, radar or imu; may be left out when the sensor's name is its kind
    /// (`camera`, `lidar`, `radar`, `imu`: the standard robot's names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Sensor>,
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
    /// LiDAR only: the lowest and highest beam elevation, degrees (left out: -25..+15, the
    /// 32-beam LiDAR of DESIGN.md §3). A roof LiDAR with a narrow vertical field cannot see
    /// low objects close to the robot: that is what a bumper LiDAR is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical_fov_deg: Option<[f64; 2]>,
    /// LiDAR only: the horizontal field, degrees, centred on the sensor's x axis (left out:
    /// 360, a spinning LiDAR; a bumper LiDAR sees ahead of the bumper only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_fov_deg: Option<f64>,
    /// The rate the sensor publishes at, Hz (left out: its kind's, camera 30, lidar 10,
    /// radar 20, imu 200). A stream is in dropout after 3 of its own periods of silence
    /// (and at least 0.2 s): a 5 Hz rear camera must say so, or every frame gap is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_hz: Option<f64>,
}

/// What a LiDAR's beams span: elevations [lowest, highest] and a horizontal width centred
/// on its x axis, degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LidarField {
    pub vertical_deg: [f64; 2],
    pub horizontal_deg: f64,
}

impl LidarField {
    /// DESIGN.md §3's LiDAR: 32 beams from -25° to +15°, spinning.
    pub const DEFAULT: LidarField = LidarField { vertical_deg: [-25.0, 15.0], horizontal_deg: 360.0 };

    /// Whether an azimuth (radians from the sensor's x axis, -π..π) is inside the field.
    pub fn covers_azimuth(&self, azimuth: f64) -> bool {
        self.horizontal_deg >= 360.0 || azimuth.abs().to_degrees() <= self.horizontal_deg / 2.0
    }
}

impl SensorPose {
    /// The transform that maps points in this sensor's frame into base_link.
    pub fn to_base(&self) -> Isometry3<f64> {
        crate::tf::isometry(self.translation, self.rotation_xyzw)
    }

    /// A LiDAR's field of view: what it declares, [`LidarField::DEFAULT`] for the rest.
    pub fn lidar_field(&self) -> LidarField {
        LidarField {
            vertical_deg: self.vertical_fov_deg.unwrap_or(LidarField::DEFAULT.vertical_deg),
            horizontal_deg: self.horizontal_fov_deg.unwrap_or(LidarField::DEFAULT.horizontal_deg),
        }
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
            kind: None,
            frame_id: frame.into(),
            translation: t,
            rotation_xyzw: r,
            width: None,
            height: None,
            k: None,
            vertical_fov_deg: None,
            horizontal_fov_deg: None,
            rate_hz: None,
        };
        let mut camera = pose("camera_optical", [1.5, 0.0, 1.2], [-0.5, 0.5, -0.5, 0.5]);
        let intrinsics = crate::camera::Intrinsics::DEFAULT;
        camera.width = Some(intrinsics.width);
        camera.height = Some(intrinsics.height);
        camera.k = Some(intrinsics.k);
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
            serde_norway::from_str(text).map_err(|source| CalibError::Parse { path: "<string>".into(), source })?;
        calib.check()?;
        Ok(calib)
    }

    fn check(&self) -> Result<(), CalibError> {
        // The declared set must be one the fusion stage handles, and every sensor sound.
        self.sensor_set()?;
        for (name, s) in &self.sensors {
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
            let is_lidar = self.kind_of(name) == Some(Sensor::Lidar);
            if !is_lidar && (s.vertical_fov_deg.is_some() || s.horizontal_fov_deg.is_some()) {
                return Err(CalibError::Invalid(format!(
                    "sensors.{name}: vertical_fov_deg and horizontal_fov_deg describe a LiDAR's beams; \
                     {name} is not a lidar"
                )));
            }
            if let Some([lo, hi]) = s.vertical_fov_deg {
                if !(-90.0..=90.0).contains(&lo) || !(-90.0..=90.0).contains(&hi) || lo >= hi {
                    return Err(CalibError::Invalid(format!(
                        "sensors.{name}.vertical_fov_deg is [{lo}, {hi}]: expected [lowest, highest] elevation, \
                         lowest < highest, both within -90..90"
                    )));
                }
            }
            if let Some(h) = s.horizontal_fov_deg {
                if !(h > 0.0 && h <= 360.0) {
                    return Err(CalibError::Invalid(format!(
                        "sensors.{name}.horizontal_fov_deg is {h}: expected more than 0 and at most 360"
                    )));
                }
            }
            if let Some(hz) = s.rate_hz {
                if !(0.1..=2000.0).contains(&hz) {
                    return Err(CalibError::Invalid(format!(
                        "sensors.{name}.rate_hz is {hz}: expected the sensor's rate, 0.1 to 2000 Hz"
                    )));
                }
            }
        }
        for z in &self.safety_zones {
            if z.polygon.len() < 3 {
                return Err(CalibError::Invalid(format!("safety zone {} has < 3 vertices", z.name)));
            }
        }
        Ok(())
    }

    /// A declared sensor's pose. Panics on a name the calibration does not declare: take
    /// names from [`Calibration::sensor_set`].
    pub fn sensor(&self, name: &str) -> &SensorPose {
        &self.sensors[name]
    }

    /// The kind of a declared sensor: its `kind`, else its name when that is a kind.
    pub fn kind_of(&self, name: &str) -> Option<Sensor> {
        let pose = self.sensors.get(name)?;
        pose.kind.or_else(|| Sensor::ALL.into_iter().find(|k| k.as_str() == name))
    }

    /// The robot's sensor set as this calibration declares it.
    pub fn sensor_set(&self) -> Result<SensorSet, CalibError> {
        let declared = self
            .sensors
            .keys()
            .map(|name| {
                let kind = self.kind_of(name).ok_or_else(|| {
                    CalibError::Invalid(format!(
                        "sensors.{name}.kind is missing (camera, lidar, radar or imu; only a sensor named \
                         after its kind may leave it out)"
                    ))
                })?;
                Ok((name.clone(), kind))
            })
            .collect::<Result<Vec<_>, CalibError>>()?;
        SensorSet::new(declared).map_err(|e| CalibError::Invalid(e.to_string()))
    }

    /// The pose of the first declared sensor of a kind (the one camera, the IMU).
    pub fn first(&self, kind: Sensor) -> Option<&SensorPose> {
        let set = self.sensor_set().ok()?;
        Some(self.sensor(set.name(set.first(kind)?)))
    }
}

/// Where a sensor's pose in the base frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoseSource {
    /// The transform tree, fixed (`/tf_static` all the way).
    Tf,
    /// The transform tree through a link on `/tf` (a mount that moves: a pan-tilt head, a
    /// joint): the pose here is the newest; who transforms data looks it up at each stamp.
    TfMoving,
    /// The calibration file.
    File,
    /// The built-in defaults of DESIGN.md §3 (no file and no transforms at all).
    Defaults,
}

/// A sensor whose pose both tf and the calibration file give, with how far apart they are:
/// two copies of the extrinsics drift, and the user should hear of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoseDisagreement {
    pub sensor: String,
    pub translation_m: f64,
    pub rotation_deg: f64,
}

/// The calibration in effect, where each pose came from, and where tf and the file differ.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub calibration: Calibration,
    pub sources: BTreeMap<String, PoseSource>,
    pub disagreements: Vec<PoseDisagreement>,
    /// Sensors whose frame tf holds but cannot place in the base frame (another root, a
    /// loop, a dynamic link out of range), with tf's reason: the file's pose is used, and it
    /// is not latched, since that would re-parent the robot's frame.
    pub tf_errors: Vec<(String, String)>,
}

impl Resolved {
    /// One line for the start-up log: `camera=tf lidar=file …`.
    pub fn summary(&self) -> String {
        let name = |s: &PoseSource| match s {
            PoseSource::Tf => "tf",
            PoseSource::TfMoving => "tf_moving",
            PoseSource::File => "file",
            PoseSource::Defaults => "defaults",
        };
        self.sources.iter().map(|(k, v)| format!("{k}={}", name(v))).collect::<Vec<_>>().join(" ")
    }

    /// The poses taken from the calibration file, as transforms for `/tf_static`, so that
    /// RViz and every tf user sees the frames the node set works with. Never the built-in
    /// defaults: latched, they would count as the robot's tf for every node started later.
    pub fn for_tf_static(&self) -> Vec<crate::tf::Transform> {
        let latched = |name: &str| {
            self.sources.get(name) == Some(&PoseSource::File) && !self.tf_errors.iter().any(|(s, _)| s == name)
        };
        self.calibration.mounts().filter(|(name, _)| latched(name)).map(|(_, t)| t).collect()
    }
}

impl Calibration {
    /// Each sensor's mount as a transform base frame → sensor frame (stamp 0), by sensor name:
    /// what a robot's `/tf_static` holds for it.
    pub fn mounts(&self) -> impl Iterator<Item = (&str, crate::tf::Transform)> + '_ {
        self.sensors.iter().map(|(name, pose)| {
            let mount = crate::tf::Transform {
                parent: self.base_frame.clone(),
                child: pose.frame_id.clone(),
                stamp_ns: 0,
                translation: pose.translation,
                rotation_xyzw: pose.rotation_xyzw,
            };
            (name.as_str(), mount)
        })
    }

    /// The extrinsics in effect: each sensor's pose from tf when the buffer connects its
    /// frame to the base frame, else from `self`. `self` is the calibration file when
    /// `from_file`, else the built-in defaults, which name the frames, the intrinsics and the
    /// zones but are never taken as a robot's poses while tf holds any transform: then a
    /// sensor frame tf cannot place is an error that names the frame and why. With no file and
    /// an empty buffer the defaults stand (DESIGN.md §3), as before tf was read.
    pub fn with_tf(&self, buffer: &crate::tf::TransformBuffer, from_file: bool) -> Result<Resolved, CalibError> {
        let all: Vec<&str> = self.sensors.keys().map(String::as_str).collect();
        self.with_tf_for(buffer, from_file, &all)
    }

    /// [`Calibration::with_tf`] for the sensors a node uses: only those must be placed; the
    /// others keep this calibration's poses.
    pub fn with_tf_for(
        &self,
        buffer: &crate::tf::TransformBuffer,
        from_file: bool,
        used: &[&str],
    ) -> Result<Resolved, CalibError> {
        use crate::tf::At;
        // An odom → base_link on /tf is no tf of the robot's mounts: the defaults still stand.
        let tf_present = buffer.describes_below(&self.base_frame);
        let mut calibration = self.clone();
        let mut sources = BTreeMap::new();
        let mut disagreements = Vec::new();
        let mut tf_errors = Vec::new();
        let mut missing = Vec::new();
        for (name, pose) in calibration.sensors.iter_mut() {
            if !used.contains(&name.as_str()) {
                continue;
            }
            match buffer.lookup(&self.base_frame, &pose.frame_id, At::Latest) {
                Ok(t) => {
                    let before = pose.to_base();
                    let (translation, rotation_xyzw) = crate::tf::parts(&t);
                    pose.translation = translation;
                    pose.rotation_xyzw = rotation_xyzw;
                    // A mount on /tf has no one pose for a file to disagree with.
                    let moves = buffer.moves(&self.base_frame, &pose.frame_id).unwrap_or(false);
                    if from_file && !moves {
                        let translation_m = (t.translation.vector - before.translation.vector).norm();
                        let rotation_deg = t.rotation.angle_to(&before.rotation).to_degrees();
                        if translation_m > 0.01 || rotation_deg > 0.5 {
                            disagreements.push(PoseDisagreement { sensor: name.clone(), translation_m, rotation_deg });
                        }
                    }
                    sources.insert(name.clone(), if moves { PoseSource::TfMoving } else { PoseSource::Tf });
                }
                Err(e) if from_file => {
                    if buffer.has_frame(&pose.frame_id) {
                        tf_errors.push((name.clone(), e.to_string()));
                    }
                    sources.insert(name.clone(), PoseSource::File);
                }
                Err(_) if !tf_present => {
                    sources.insert(name.clone(), PoseSource::Defaults);
                }
                Err(e) => missing.push(format!("{name} ({}): {e}", pose.frame_id)),
            }
        }
        if !missing.is_empty() {
            return Err(CalibError::Invalid(format!(
                "no calibration file is given and tf cannot place {} in '{}': {}",
                if missing.len() == 1 { "this sensor" } else { "these sensors" },
                self.base_frame,
                missing.join("; ")
            )));
        }
        calibration.check()?;
        Ok(Resolved { calibration, sources, disagreements, tf_errors })
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
        let text = serde_norway::to_string(&c).unwrap();
        assert_eq!(Calibration::from_yaml(&text).unwrap(), c);
    }

    #[test]
    fn a_robot_declares_its_sensors_by_name_and_kind() {
        let yaml = r#"
base_frame: base_link
sensors:
  camera:       {frame_id: cam_front, translation: [1.5, 0.0, 1.2], rotation_xyzw: [-0.5, 0.5, -0.5, 0.5]}
  lidar:        {frame_id: roof, translation: [1.0, 0.0, 1.8], rotation_xyzw: [0.0, 0.0, 0.0, 1.0]}
  bumper_lidar: {kind: lidar, frame_id: bumper, translation: [3.0, 0.0, 0.4], rotation_xyzw: [0.0, 0.0, 0.0, 1.0]}
  radar:        {frame_id: radar_link, translation: [2.0, 0.0, 0.5], rotation_xyzw: [0.0, 0.0, 0.0, 1.0]}
  rear_radar:   {kind: radar, frame_id: rear, translation: [-0.5, 0.0, 0.5], rotation_xyzw: [0.0, 0.0, 1.0, 0.0]}
  imu:          {frame_id: imu_link, translation: [0.0, 0.0, 0.3], rotation_xyzw: [0.0, 0.0, 0.0, 1.0]}
"#;
        let c = Calibration::from_yaml(yaml).unwrap();
        let set = c.sensor_set().unwrap();
        let named: Vec<_> = set.iter().map(|(_, d)| (d.name, d.kind)).collect();
        assert_eq!(
            named,
            [
                ("camera", Sensor::Camera),
                ("bumper_lidar", Sensor::Lidar),
                ("lidar", Sensor::Lidar),
                ("radar", Sensor::Radar),
                ("rear_radar", Sensor::Radar),
                ("imu", Sensor::Imu)
            ],
            "a sensor named after its kind needs no kind"
        );
        assert_eq!(c.first(Sensor::Camera).unwrap().frame_id, "cam_front");
        let unnamed_kind = yaml.replace("{kind: lidar, frame_id: bumper", "{frame_id: bumper");
        let err = Calibration::from_yaml(&unnamed_kind).unwrap_err();
        assert!(err.to_string().contains("sensors.bumper_lidar.kind is missing"), "{err}");
        let typo = yaml.replace("kind: lidar, frame_id: bumper", "kind: lidr, frame_id: bumper");
        assert!(Calibration::from_yaml(&typo).is_err(), "an unknown kind is refused");
        let no_imu: String =
            yaml.lines().filter(|l| !l.trim_start().starts_with("imu:")).collect::<Vec<_>>().join("\n");
        let no_imu = Calibration::from_yaml(&no_imu).unwrap();
        assert!(!no_imu.sensors.contains_key("imu") && no_imu.sensor_set().unwrap().first(Sensor::Imu).is_none());
        let no_radar: String =
            yaml.lines().filter(|l| !l.trim_start().starts_with("radar:")).collect::<Vec<_>>().join("\n");
        let err = Calibration::from_yaml(&no_radar).unwrap_err();
        assert!(err.to_string().contains("the sensor 'radar' (of kind radar) must be declared"), "{err}");
    }

    #[test]
    fn a_lidar_declares_its_field_of_view_and_nothing_else_may() {
        let yaml = serde_norway::to_string(&Calibration::default()).unwrap();
        let c = Calibration::from_yaml(&yaml).unwrap();
        assert_eq!(c.sensor("lidar").lidar_field(), LidarField::DEFAULT, "left out: DESIGN.md §3's LiDAR");
        let mut c = Calibration::default();
        let lidar = c.sensors.get_mut("lidar").unwrap();
        lidar.vertical_fov_deg = Some([-15.0, 15.0]);
        lidar.horizontal_fov_deg = Some(120.0);
        let c = Calibration::from_yaml(&serde_norway::to_string(&c).unwrap()).unwrap();
        let field = c.sensor("lidar").lidar_field();
        assert_eq!(field, LidarField { vertical_deg: [-15.0, 15.0], horizontal_deg: 120.0 });
        assert!(field.covers_azimuth(59f64.to_radians()) && !field.covers_azimuth(-61f64.to_radians()));
        assert!(LidarField::DEFAULT.covers_azimuth(std::f64::consts::PI));
        for (sensor, field, value, expected) in [
            ("lidar", "vertical_fov_deg", "[15.0, -15.0]", "lowest < highest"),
            ("lidar", "vertical_fov_deg", "[-95.0, 10.0]", "within -90..90"),
            ("lidar", "horizontal_fov_deg", "0.0", "more than 0 and at most 360"),
            ("radar", "horizontal_fov_deg", "90.0", "radar is not a lidar"),
        ] {
            let mut c = Calibration::default();
            c.sensors.get_mut(sensor).unwrap().frame_id = "PLACE".into();
            let text = serde_norway::to_string(&c).unwrap().replace("PLACE", &format!("x\n    {field}: {value}"));
            let err = Calibration::from_yaml(&text).unwrap_err();
            assert!(err.to_string().contains(expected), "{sensor}.{field} = {value}: {err}");
        }
    }

    #[test]
    fn a_sensor_may_declare_its_own_rate_within_reason() {
        for (value, accepted) in [("5.0", true), ("0.05", false), ("0.0", false), (".nan", false), ("5000.0", false)] {
            let mut c = Calibration::default();
            c.sensors.get_mut("camera").unwrap().frame_id = "PLACE".into();
            let text =
                serde_norway::to_string(&c).unwrap().replace("PLACE", &format!("camera_optical\n    rate_hz: {value}"));
            match Calibration::from_yaml(&text) {
                Ok(c) => assert!(accepted && c.sensor("camera").rate_hz == Some(5.0), "{value}"),
                Err(e) => assert!(!accepted && e.to_string().contains("0.1 to 2000 Hz"), "{value}: {e}"),
            }
        }
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
        let err = Calibration::from_yaml(&serde_norway::to_string(&c).unwrap()).unwrap_err();
        assert!(err.to_string().contains("the sensor 'radar' (of kind radar) must be declared"), "{err}");
        let mut c = Calibration::default();
        c.sensors.get_mut("imu").unwrap().rotation_xyzw = [0.0, 0.0, 0.0, 2.0];
        let err = Calibration::from_yaml(&serde_norway::to_string(&c).unwrap()).unwrap_err();
        assert!(err.to_string().contains("unit quaternion"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_not_silently_ignored() {
        let text = serde_norway::to_string(&Calibration::default()).unwrap().replace("base_frame", "base_frme");
        assert!(Calibration::from_yaml(&text).is_err());
    }

    fn buffer_with(frames: &[(&str, [f64; 3], [f64; 4])]) -> crate::tf::TransformBuffer {
        let mut b = crate::tf::TransformBuffer::default();
        for (child, translation, rotation_xyzw) in frames {
            let t = crate::tf::Transform {
                parent: "base_link".into(),
                child: child.to_string(),
                stamp_ns: 0,
                translation: *translation,
                rotation_xyzw: *rotation_xyzw,
            };
            b.set(&t, true).unwrap();
        }
        b
    }

    #[test]
    fn tf_places_the_sensors_and_the_file_fills_in() {
        let file = Calibration::default();
        // tf has the LiDAR 10 cm further back than the file, and the camera as the file has it.
        let b = buffer_with(&[
            ("lidar_link", [0.9, 0.0, 1.8], [0.0, 0.0, 0.0, 1.0]),
            ("camera_optical", [1.5, 0.0, 1.2], [-0.5, 0.5, -0.5, 0.5]),
        ]);
        let r = file.with_tf(&b, true).unwrap();
        assert_eq!(r.calibration.sensor("lidar").translation, [0.9, 0.0, 1.8]);
        assert_eq!(r.sources["lidar"], PoseSource::Tf);
        assert_eq!(r.sources["radar"], PoseSource::File);
        assert_eq!(r.summary(), "camera=tf imu=file lidar=tf radar=file");
        assert_eq!(r.disagreements.len(), 1, "{:?}", r.disagreements);
        assert_eq!(r.disagreements[0].sensor, "lidar");
        assert!((r.disagreements[0].translation_m - 0.1).abs() < 1e-9);
        // What tf did not give goes out on /tf_static.
        let published: Vec<_> = r.for_tf_static().into_iter().map(|t| t.child).collect();
        assert_eq!(published, ["imu_link", "radar_link"]);
        // A camera turned 10° about its optical axis is a disagreement too.
        let turned = nalgebra::UnitQuaternion::from_euler_angles(0.0, 0.0, 10f64.to_radians())
            * file.sensor("camera").to_base().rotation;
        let q = turned.quaternion();
        let b = buffer_with(&[("camera_optical", [1.5, 0.0, 1.2], [q.i, q.j, q.k, q.w])]);
        let r = file.with_tf(&b, true).unwrap();
        assert_eq!(r.disagreements.len(), 1, "{:?}", r.disagreements);
        assert!((r.disagreements[0].rotation_deg - 10.0).abs() < 1e-6, "{:?}", r.disagreements);
    }

    #[test]
    fn a_frame_tf_holds_but_cannot_place_keeps_the_file_pose_unlatched() {
        // The URDF's tree is rooted at `chassis`, not base_link: tf knows lidar_link, but not
        // in base_link. The file's pose is used, the reason kept, and nothing is latched that
        // would re-parent the robot's frame.
        let mut b = crate::tf::TransformBuffer::default();
        let t = crate::tf::Transform {
            parent: "chassis".into(),
            child: "lidar_link".into(),
            stamp_ns: 0,
            translation: [1.0, 0.0, 1.8],
            rotation_xyzw: [0.0, 0.0, 0.0, 1.0],
        };
        b.set(&t, true).unwrap();
        let imu = crate::tf::Transform { parent: "base_link".into(), child: "imu_link".into(), ..t };
        b.set(&imu, true).unwrap();
        let r = Calibration::default().with_tf(&b, true).unwrap();
        assert_eq!(r.sources["lidar"], PoseSource::File);
        assert_eq!(r.sources["imu"], PoseSource::Tf);
        assert_eq!(r.tf_errors.len(), 1);
        assert!(r.tf_errors[0].1.contains("roots 'base_link' and 'chassis'"), "{:?}", r.tf_errors);
        let latched: Vec<_> = r.for_tf_static().into_iter().map(|t| t.child).collect();
        assert_eq!(latched, ["camera_optical", "radar_link"]);
    }

    #[test]
    fn a_mount_on_tf_is_a_moving_one_with_no_pose_to_disagree_with() {
        // A radar on a pan head (base_link → pan on /tf, pan → radar_link fixed), the rest
        // from the file: the radar is placed at the newest pan angle and marked as moving.
        let mut b = crate::tf::TransformBuffer::default();
        let pan = |stamp_ns, yaw: f64| crate::tf::Transform {
            parent: "base_link".into(),
            child: "pan".into(),
            stamp_ns,
            translation: [2.0, 0.0, 0.5],
            rotation_xyzw: [0.0, 0.0, (yaw / 2.0).sin(), (yaw / 2.0).cos()],
        };
        b.set(&pan(1_000, 0.0), false).unwrap();
        b.set(&pan(2_000, 0.4), false).unwrap();
        let mount = crate::tf::Transform { parent: "pan".into(), child: "radar_link".into(), ..pan(0, 0.0) };
        b.set(&crate::tf::Transform { translation: [0.1, 0.0, 0.0], ..mount }, true).unwrap();
        let r = Calibration::default().with_tf(&b, true).unwrap();
        assert_eq!(r.sources["radar"], PoseSource::TfMoving);
        assert_eq!(r.sources["lidar"], PoseSource::File);
        assert!(r.disagreements.is_empty(), "{:?}", r.disagreements);
        assert!(r.summary().contains("radar=tf_moving"), "{}", r.summary());
        let radar = r.calibration.sensor("radar").to_base();
        assert!(
            (radar.rotation.euler_angles().2 - 0.4).abs() < 1e-9
                && (radar.translation.x - (2.0 + 0.1 * 0.4f64.cos())).abs() < 1e-9
        );
    }

    #[test]
    fn without_a_file_tf_must_place_every_sensor() {
        let defaults = Calibration::default();
        let all = buffer_with(&[
            ("camera_optical", [1.5, 0.0, 1.2], [-0.5, 0.5, -0.5, 0.5]),
            ("lidar_link", [1.0, 0.0, 1.8], [0.0, 0.0, 0.0, 1.0]),
            ("radar_link", [2.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]),
            ("imu_link", [0.0, 0.0, 0.3], [0.0, 0.0, 0.0, 1.0]),
        ]);
        let r = defaults.with_tf(&all, false).unwrap();
        assert_eq!(r.sources.len(), 4);
        assert!(r.sources.values().all(|s| *s == PoseSource::Tf) && r.for_tf_static().is_empty());
        let part = buffer_with(&[("lidar_link", [1.0, 0.0, 1.8], [0.0, 0.0, 0.0, 1.0])]);
        let err = defaults.with_tf(&part, false).unwrap_err().to_string();
        for frame in ["camera_optical", "radar_link", "imu_link"] {
            assert!(err.contains(&format!("frame '{frame}' does not exist")), "{err}");
        }
        assert!(!err.contains("lidar"), "{err}");
        // A node that uses only the LiDAR needs only the LiDAR placed.
        let lidar_only = defaults.with_tf_for(&part, false, &["lidar"]).unwrap();
        assert_eq!(lidar_only.summary(), "lidar=tf");
        // Neither a file nor any transform: the documented defaults, said so.
        let r = defaults.with_tf(&crate::tf::TransformBuffer::default(), false).unwrap();
        assert_eq!(r.calibration, defaults);
        assert_eq!(r.sources.len(), 4);
        assert!(r.sources.values().all(|s| *s == PoseSource::Defaults));
        assert!(r.for_tf_static().is_empty(), "defaults are never latched as if the robot's tf");
    }
}
