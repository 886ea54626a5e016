//! The ingest nodes' validation and preprocessing in one place, for pipelines that run
//! without DDS (`fusion_replay`, tests): raw sensor messages in, /sensors/* data out,
//! every rejection counted by sensor and reason exactly as the ingest nodes name it.
use crate::{
    anomaly::Sensor,
    calib::Calibration,
    camera::{check_intrinsics_size, fit_within, to_rgb8, CameraInfoRef, ImageRef, Intrinsics},
    cloud::{preprocess_lidar, preprocess_radar, CloudRef, LidarParams, RadarParams},
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
}

/// The ingest of one sensor of each kind: the one named after its kind (the standard
/// robot's `camera`, `lidar`, `radar`, `imu`), else the first of its kind in the
/// calibration's set. Inputs carry that sensor's id. Further LiDARs and radars of a robot are
/// not replayed yet (the nodes fuse them: `fusion_node` subscribes to every declared sensor).
pub struct Frontend {
    /// Per kind: the sensor this frontend ingests for it.
    ids: [SensorId; 4],
    guards: [HeaderGuard; 4],
    lidar_to_base: Isometry3<f64>,
    radar_to_base: Isometry3<f64>,
    pub lidar_params: LidarParams,
    pub radar_params: RadarParams,
    camera_output: Option<(u32, u32)>,
    imu: ImuProcessor,
    intrinsics_size: Option<(u32, u32)>,
    /// The newest accepted CameraInfo's intrinsics (of the raw image) and its header guard.
    camera_info: Option<Intrinsics>,
    camera_info_guard: HeaderGuard,
    /// `<sensor>.accepted`, `<sensor>.rejected.<reason>`.
    pub counters: BTreeMap<String, u64>,
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

    /// Panics on a calibration without one sensor of each kind: this frontend ingests the
    /// standard robot's four streams.
    pub fn with_params(calib: &Calibration, params: IngestParams) -> Self {
        let set = calib.sensor_set().expect("a checked calibration");
        // The sensor named after its kind where the robot has one (its driver topic is the
        // graph's `<kind>/...`), else the first of the kind.
        let id = |k: Sensor| {
            set.find(k.as_str())
                .filter(|id| set.kind(*id) == k)
                .or_else(|| set.first(k))
                .unwrap_or_else(|| panic!("the calibration declares no {k}"))
        };
        let pose = |k: Sensor| calib.sensor(set.name(id(k)));
        let guard = |k: Sensor| HeaderGuard::new(pose(k).frame_id.clone());
        let cam = pose(Sensor::Camera);
        Self {
            ids: Sensor::ALL.map(id),
            guards: Sensor::ALL.map(guard),
            lidar_to_base: pose(Sensor::Lidar).to_base(),
            radar_to_base: pose(Sensor::Radar).to_base(),
            lidar_params: params.lidar,
            radar_params: params.radar,
            camera_output: params.camera_output,
            imu: ImuProcessor::new(pose(Sensor::Imu).to_base().rotation, params.imu),
            intrinsics_size: cam.width.zip(cam.height),
            camera_info: None,
            camera_info_guard: guard(Sensor::Camera),
            counters: BTreeMap::new(),
        }
    }

    /// The sensor this frontend ingests for `kind`.
    pub fn sensor(&self, kind: Sensor) -> SensorId {
        self.ids[kind.index()]
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
            let rgb = to_rgb8(img)?;
            check_intrinsics_size(rgb.width, rgb.height, self.intrinsics_size)?;
            let (rgb, intrinsics) = match self.camera_output {
                Some((w, h)) => (fit_within(&rgb, w, h), self.camera_info.map(|i| i.fitted(w, h))),
                None => (rgb, self.camera_info),
            };
            Ok(Input::Camera { sensor: self.ids[Sensor::Camera.index()], stamp, image: Arc::new(rgb), intrinsics })
        });
        self.finish(Sensor::Camera, stamp, r)
    }

    /// A CameraInfo, as camera_ingest takes it: checked, then its size is what images must
    /// have and its K what the camera's next images carry (scaled with them).
    /// Counted as `camera_info.accepted` / `camera_info.rejected.<reason>`.
    pub fn camera_info(&mut self, stamp: StampNs, frame_id: &str, info: CameraInfoRef<'_>) -> Result<(), Reject> {
        let r = self.camera_info_guard.check(stamp, frame_id).and_then(|_| Intrinsics::from_camera_info(info));
        match r {
            Ok(intrinsics) => {
                if self.camera_info_guard.accept(stamp) {
                    self.count("camera_info.stamp_resync".into());
                }
                self.count("camera_info.accepted".into());
                self.intrinsics_size = Some((intrinsics.width, intrinsics.height));
                self.camera_info = Some(intrinsics);
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
        let r = self.guards[3].check(stamp, frame_id).and_then(|_| {
            let (o, saturated) = self.imu.process(s)?;
            if saturated {
                *self.counters.entry("imu.samples_saturated".into()).or_default() += 1;
            }
            Ok(Input::Imu(self.ids[Sensor::Imu.index()], imu_state(&o)))
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
