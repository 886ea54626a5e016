//! The ingest nodes' validation and preprocessing in one place, for pipelines that run
//! without DDS (`fusion_replay`, tests): raw sensor messages in, /sensors/* data out,
//! every rejection counted by sensor and reason exactly as the ingest nodes name it.
use crate::{
    anomaly::Sensor,
    calib::Calibration,
    camera::{check_intrinsics_size, fit_within, to_rgb8, CameraInfoRef, ImageRef, Intrinsics},
    cloud::{preprocess_lidar, preprocess_radar, CloudRef, LidarParams, NumberParams, RadarParams},
    imu::{ImuParams, ImuProcessor, ImuSample},
    ingest::{HeaderGuard, Reject},
    motion::ImuState,
    pipeline::Input,
    sensors::SensorId,
    StampNs,
};
use nalgebra::{Isometry3, Quaternion, UnitQuaternion, Vector3};
use std::{collections::BTreeMap, sync::Arc};

/// The ingest nodes' parameters that change what they publish (their params file,
/// `config/ingest.yaml`): a replay given the robot's file preprocesses as the robot does.
/// The defaults are the nodes' defaults (and the shipped file's values; a test checks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestParams {
    pub lidar: LidarParams,
    pub radar: RadarParams,
    pub imu: ImuParams,
    /// camera_ingest's `output_width`/`output_height` (scale to fit), when both are set.
    pub camera_output: Option<(u32, u32)>,
    /// The filter parameters of the further LiDARs' and radars' nodes, by sensor name (`**`:
    /// every one of them, applied first), as (name, value); a name of the other kind is
    /// ignored. A further sensor with none runs on its kind's defaults, as its node does.
    pub further: BTreeMap<String, Vec<(String, f64)>>,
}

/// The ingest of one sensor of each kind: the one named after its kind (the standard
/// robot's `camera`, `lidar`, `radar`, `imu`), else the first of its kind in the
/// calibration's set; and of every further camera, LiDAR and radar the calibration declares
/// ([`Frontend::further`], [`Frontend::cloud_of`], [`Frontend::camera_of`]), each with its
/// own mount, header check and counters under its name, as its own ingest node would.
/// Inputs carry the sensor's id.
pub struct Frontend {
    /// The cameras, LiDARs and radars beyond the one of each kind above.
    further: BTreeMap<SensorId, Further>,
    /// Per kind (camera, LiDAR, radar): the sensor this frontend ingests for it.
    ids: [SensorId; 3],
    /// Per kind, the IMU's last (unused on a robot without one).
    guards: [HeaderGuard; 4],
    lidar_to_base: Isometry3<f64>,
    radar_to_base: Isometry3<f64>,
    pub lidar_params: LidarParams,
    pub radar_params: RadarParams,
    camera: CameraIngest,
    /// The robot's IMU, when it has one.
    imu: Option<(SensorId, ImuProcessor)>,
    /// `<sensor>.accepted`, `<sensor>.rejected.<reason>`.
    pub counters: BTreeMap<String, u64>,
}

/// A further camera, LiDAR or radar: its name, kind, mount and header guard.
struct Further {
    name: &'static str,
    kind: Sensor,
    to_base: Isometry3<f64>,
    guard: HeaderGuard,
    lidar: LidarParams,
    radar: RadarParams,
    /// A camera's image and CameraInfo handling (None for the other kinds).
    camera: Option<CameraIngest>,
}

/// What camera_ingest keeps of one camera: the output size, the image size its intrinsics
/// are for, and its newest accepted CameraInfo (of the raw image) with that stream's header
/// guard.
struct CameraIngest {
    output: Option<(u32, u32)>,
    intrinsics_size: Option<(u32, u32)>,
    info: Option<Intrinsics>,
    info_guard: HeaderGuard,
}

impl CameraIngest {
    fn new(pose: &crate::calib::SensorPose, output: Option<(u32, u32)>) -> Self {
        Self {
            output,
            intrinsics_size: pose.width.zip(pose.height),
            info: None,
            info_guard: HeaderGuard::new(pose.frame_id.clone()),
        }
    }

    /// An image as its camera_ingest publishes it: rgb8, its size checked against the
    /// intrinsics', scaled to the output size with its intrinsics.
    fn image(&self, img: ImageRef<'_>) -> Result<(crate::camera::Rgb8, Option<Intrinsics>), Reject> {
        let rgb = to_rgb8(img)?;
        check_intrinsics_size(rgb.width, rgb.height, self.intrinsics_size)?;
        Ok(match self.output {
            Some((w, h)) => (fit_within(&rgb, w, h), self.info.map(|i| i.fitted(w, h))),
            None => (rgb, self.info),
        })
    }

    /// A CameraInfo: checked, then its size is what images must have and its K what the
    /// camera's next images carry. Returns whether the header guard resynchronized.
    fn info(&mut self, stamp: StampNs, frame_id: &str, info: CameraInfoRef<'_>) -> Result<bool, Reject> {
        let intrinsics = self.info_guard.check(stamp, frame_id).and_then(|_| Intrinsics::from_camera_info(info))?;
        self.intrinsics_size = Some((intrinsics.width, intrinsics.height));
        self.info = Some(intrinsics);
        Ok(self.info_guard.accept(stamp))
    }
}

/// A rejected message: which sensor, why, and (LiDAR) the sweep's NaN statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub sensor: Sensor,
    pub reason: Reject,
}

impl Frontend {
    /// The ingest nodes with their default parameters.
    pub fn new(calib: &Calibration) -> Self {
        Self::with_params(calib, IngestParams::default())
    }

    /// Panics on a calibration without a camera, a LiDAR and a radar (a checked one has
    /// them); the IMU is optional.
    pub fn with_params(calib: &Calibration, params: IngestParams) -> Self {
        let set = calib.sensor_set().expect("a checked calibration");
        // The sensor named after its kind where the robot has one (its driver topic is the
        // graph's `<kind>/...`), else the first of the kind.
        let find = |k: Sensor| set.find(k.as_str()).filter(|id| set.kind(*id) == k).or_else(|| set.first(k));
        let id = |k: Sensor| find(k).unwrap_or_else(|| panic!("the calibration declares no {k}"));
        let pose = |k: Sensor| calib.sensor(set.name(id(k)));
        let imu = find(Sensor::Imu).map(|i| (i, calib.sensor(set.name(i))));
        let guard = |k: Sensor| match (k, imu) {
            (Sensor::Imu, None) => HeaderGuard::new(String::new()),
            (Sensor::Imu, Some((_, p))) => HeaderGuard::new(p.frame_id.clone()),
            _ => HeaderGuard::new(pose(k).frame_id.clone()),
        };
        let ids = [Sensor::Camera, Sensor::Lidar, Sensor::Radar].map(id);
        let further = set
            .iter()
            .filter(|(i, d)| matches!(d.kind, Sensor::Camera | Sensor::Lidar | Sensor::Radar) && !ids.contains(i))
            .map(|(i, d)| {
                let pose = calib.sensor(d.name);
                let guard = HeaderGuard::new(pose.frame_id.clone());
                let (mut lidar, mut radar) = (LidarParams::default(), RadarParams::default());
                let given = ["**", d.name].into_iter().flat_map(|k| params.further.get(k)).flatten();
                for (name, value) in given {
                    // Checked when the file was read; a name of the other kind is not this node's.
                    let _ = match d.kind {
                        Sensor::Lidar => lidar.set(name, *value),
                        _ => radar.set(name, *value),
                    };
                }
                let camera = (d.kind == Sensor::Camera).then(|| CameraIngest::new(pose, params.camera_output));
                (i, Further { name: d.name, kind: d.kind, to_base: pose.to_base(), guard, lidar, radar, camera })
            })
            .collect();
        Self {
            further,
            ids,
            guards: Sensor::ALL.map(guard),
            lidar_to_base: pose(Sensor::Lidar).to_base(),
            radar_to_base: pose(Sensor::Radar).to_base(),
            lidar_params: params.lidar,
            radar_params: params.radar,
            camera: CameraIngest::new(pose(Sensor::Camera), params.camera_output),
            imu: imu.map(|(i, p)| (i, ImuProcessor::new(p.to_base().rotation, params.imu))),
            counters: BTreeMap::new(),
        }
    }

    /// The further cameras, LiDARs and radars, by id: (name, kind). A bag carries each
    /// LiDAR's and radar's driver topic as `/<name>/points`, each camera's as
    /// `/<name>/image_raw` and `/<name>/camera_info`.
    pub fn further(&self) -> impl Iterator<Item = (SensorId, &'static str, Sensor)> + '_ {
        self.further.iter().map(|(id, f)| (*id, f.name, f.kind))
    }

    /// A cloud of a further LiDAR or radar, as its ingest node takes it; counted under its
    /// name (`<name>.accepted`, `<name>.rejected.<reason>`). An id that is none of them is
    /// the LiDAR's or radar's of its kind.
    pub fn cloud_of(
        &mut self,
        sensor: SensorId,
        stamp: StampNs,
        frame_id: &str,
        cloud: CloudRef<'_>,
    ) -> Result<Input, Rejected> {
        let Some(f) = self.further.get_mut(&sensor) else {
            return match self.ids.iter().position(|i| *i == sensor) {
                Some(k) if k == Sensor::Radar.index() => self.radar(stamp, frame_id, cloud),
                _ => self.lidar(stamp, frame_id, cloud),
            };
        };
        let kind = f.kind;
        let r = f.guard.check(stamp, frame_id).and_then(|_| match kind {
            // A camera's stream holds images: no cloud field to read.
            Sensor::Camera | Sensor::Imu => Err(Reject::MissingField("x".into())),
            Sensor::Radar => {
                let (c, _) = preprocess_radar(cloud, &f.to_base, &f.radar)?;
                Ok(Input::Radar { sensor, stamp, targets: Arc::new(c.radar_targets()) })
            }
            _ => {
                let (c, counts) = preprocess_lidar(cloud, &f.to_base, &f.lidar)?;
                Ok(Input::Lidar {
                    sensor,
                    stamp,
                    points: Arc::new(c.lidar_points()),
                    non_finite: counts.non_finite,
                    total: counts.points_in,
                })
            }
        });
        self.finish_further(sensor, stamp, r)
    }

    /// Counts a further sensor's message under its name (`<name>.accepted`,
    /// `<name>.stamp_resync`, `<name>.rejected.<reason>`).
    fn finish_further(
        &mut self,
        sensor: SensorId,
        stamp: StampNs,
        r: Result<Input, Reject>,
    ) -> Result<Input, Rejected> {
        let f = self.further.get_mut(&sensor).expect("a further sensor");
        let (name, kind) = (f.name, f.kind);
        match r {
            Ok(input) => {
                if f.guard.accept(stamp) {
                    self.count(format!("{name}.stamp_resync"));
                }
                self.count(format!("{name}.accepted"));
                Ok(input)
            }
            Err(reason) => {
                self.count(format!("{name}.rejected.{}", reason.as_str()));
                Err(Rejected { sensor: kind, reason })
            }
        }
    }

    /// An image of any camera, as its camera_ingest takes it; a further camera's counted
    /// under its name. An id that is no further camera is the standard camera's.
    pub fn camera_of(
        &mut self,
        sensor: SensorId,
        stamp: StampNs,
        frame_id: &str,
        img: ImageRef<'_>,
    ) -> Result<Input, Rejected> {
        let Some(f) = self.further.get_mut(&sensor).filter(|f| f.camera.is_some()) else {
            return self.camera(stamp, frame_id, img);
        };
        let camera = f.camera.as_ref().expect("a further camera");
        let r = f.guard.check(stamp, frame_id).and_then(|_| camera.image(img)).map(|(rgb, intrinsics)| Input::Camera {
            sensor,
            stamp,
            image: Arc::new(rgb),
            intrinsics,
        });
        self.finish_further(sensor, stamp, r)
    }

    /// A CameraInfo of any camera, as [`Frontend::camera_info`] for the standard camera; a
    /// further camera's counted as `<name>.camera_info.accepted` / `.rejected.<reason>`.
    pub fn camera_info_of(
        &mut self,
        sensor: SensorId,
        stamp: StampNs,
        frame_id: &str,
        info: CameraInfoRef<'_>,
    ) -> Result<(), Reject> {
        let Some(f) = self.further.get_mut(&sensor).filter(|f| f.camera.is_some()) else {
            return self.camera_info(stamp, frame_id, info);
        };
        let name = f.name;
        let r = f.camera.as_mut().expect("a further camera").info(stamp, frame_id, info);
        let key = match &r {
            Ok(true) => vec![format!("{name}.camera_info.stamp_resync"), format!("{name}.camera_info.accepted")],
            Ok(false) => vec![format!("{name}.camera_info.accepted")],
            Err(reason) => vec![format!("{name}.camera_info.rejected.{}", reason.as_str())],
        };
        key.into_iter().for_each(|k| self.count(k));
        r.map(|_| ())
    }

    /// The sensor this frontend ingests for `kind`: camera, LiDAR or radar, which every robot
    /// declares (the IMU is optional: [`Frontend::imu_sensor`]).
    pub fn sensor(&self, kind: Sensor) -> SensorId {
        assert!(kind != Sensor::Imu, "an IMU is optional: Frontend::imu_sensor");
        self.ids[kind.index()]
    }

    /// The robot's IMU, if it declares one.
    pub fn imu_sensor(&self) -> Option<SensorId> {
        self.imu.as_ref().map(|(id, _)| *id)
    }

    fn count(&mut self, key: String) {
        *self.counters.entry(key).or_default() += 1;
    }

    fn finish(&mut self, sensor: Sensor, stamp: StampNs, r: Result<Input, Reject>) -> Result<Input, Rejected> {
        match r {
            Ok(input) => {
                if self.guards[sensor as usize].accept(stamp) {
                    self.count(format!("{}.stamp_resync", sensor.as_str()));
                }
                self.count(format!("{}.accepted", sensor.as_str()));
                Ok(input)
            }
            Err(reason) => {
                self.count(format!("{}.rejected.{}", sensor.as_str(), reason.as_str()));
                Err(Rejected { sensor, reason })
            }
        }
    }

    pub fn camera(&mut self, stamp: StampNs, frame_id: &str, img: ImageRef<'_>) -> Result<Input, Rejected> {
        let r = self.guards[0].check(stamp, frame_id).and_then(|_| {
            let (rgb, intrinsics) = self.camera.image(img)?;
            Ok(Input::Camera { sensor: self.ids[Sensor::Camera.index()], stamp, image: Arc::new(rgb), intrinsics })
        });
        self.finish(Sensor::Camera, stamp, r)
    }

    /// A CameraInfo, as camera_ingest takes it: checked, then its size is what images must
    /// have and its K what the camera's next images carry (scaled with them).
    /// Counted as `camera_info.accepted` / `camera_info.rejected.<reason>`.
    pub fn camera_info(&mut self, stamp: StampNs, frame_id: &str, info: CameraInfoRef<'_>) -> Result<(), Reject> {
        match self.camera.info(stamp, frame_id, info) {
            Ok(resync) => {
                if resync {
                    self.count("camera_info.stamp_resync".into());
                }
                self.count("camera_info.accepted".into());
                Ok(())
            }
            Err(reason) => {
                self.count(format!("camera_info.rejected.{}", reason.as_str()));
                Err(reason)
            }
        }
    }

    pub fn lidar(&mut self, stamp: StampNs, frame_id: &str, cloud: CloudRef<'_>) -> Result<Input, Rejected> {
        let r = self.guards[1].check(stamp, frame_id).and_then(|_| {
            let (c, counts) = preprocess_lidar(cloud, &self.lidar_to_base, &self.lidar_params)?;
            Ok(Input::Lidar {
                sensor: self.ids[Sensor::Lidar.index()],
                stamp,
                points: Arc::new(c.lidar_points()),
                non_finite: counts.non_finite,
                total: counts.points_in,
            })
        });
        self.finish(Sensor::Lidar, stamp, r)
    }

    pub fn radar(&mut self, stamp: StampNs, frame_id: &str, cloud: CloudRef<'_>) -> Result<Input, Rejected> {
        let r = self.guards[2].check(stamp, frame_id).and_then(|_| {
            let (c, _) = preprocess_radar(cloud, &self.radar_to_base, &self.radar_params)?;
            Ok(Input::Radar { sensor: self.ids[Sensor::Radar.index()], stamp, targets: Arc::new(c.radar_targets()) })
        });
        self.finish(Sensor::Radar, stamp, r)
    }

    pub fn imu(&mut self, frame_id: &str, s: &ImuSample) -> Result<Input, Rejected> {
        let stamp = s.stamp;
        // A robot without an IMU: a sample is counted, not fused (a bag can hold a topic the
        // calibration does not declare).
        let Some((id, processor)) = self.imu.as_mut() else {
            return self.finish(Sensor::Imu, stamp, Err(Reject::NotDeclared));
        };
        let r = self.guards[3].check(stamp, frame_id).and_then(|_| {
            let (o, saturated) = processor.process(s)?;
            if saturated {
                *self.counters.entry("imu.samples_saturated".into()).or_default() += 1;
            }
            Ok(Input::Imu(*id, imu_state(&o)))
        });
        self.finish(Sensor::Imu, stamp, r)
    }
}

/// A /sensors/imu sample (base_link, with orientation) as the IMU buffer keeps it.
pub fn imu_state(s: &ImuSample) -> ImuState {
    let [x, y, z, w] = s.orientation;
    ImuState {
        stamp: s.stamp,
        orientation: UnitQuaternion::from_quaternion(Quaternion::new(w, x, y, z)),
        angular_velocity: Vector3::from(s.angular_velocity),
        linear_acceleration: Vector3::from(s.linear_acceleration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(stamp: StampNs) -> ImuSample {
        let mut cov = [0.0; 9];
        cov[0] = -1.0; // no orientation (REP 145)
        ImuSample {
            stamp,
            orientation: [0.0, 0.0, 0.0, 1.0],
            orientation_covariance: cov,
            angular_velocity: [0.0, 0.0, 0.1],
            angular_velocity_covariance: [0.0; 9],
            linear_acceleration: [0.0, 0.0, 9.81],
            linear_acceleration_covariance: [0.0; 9],
        }
    }

    /// A robot without an IMU: a bag's IMU samples are counted as not declared, never fused;
    /// with one, the same sample is its IMU's input.
    #[test]
    fn a_robot_without_an_imu_counts_imu_samples_and_fuses_none() {
        let mut calib = Calibration::default();
        let mut with = Frontend::new(&calib);
        assert!(matches!(with.imu("imu_link", &sample(1_000)), Ok(Input::Imu(id, _)) if Some(id) == with.imu_sensor()));
        calib.sensors.remove("imu");
        let mut without = Frontend::new(&calib);
        assert_eq!(without.imu_sensor(), None);
        let err = without.imu("imu_link", &sample(1_000)).unwrap_err();
        assert_eq!((err.sensor, err.reason), (Sensor::Imu, Reject::NotDeclared));
        assert_eq!(without.counters.get("imu.rejected.not_declared"), Some(&1));
    }
}
