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
/// calibration's set; and of every further LiDAR and radar the calibration declares
/// ([`Frontend::further`], [`Frontend::cloud_of`]), each with its own mount, header check and
/// counters under its name, as its own ingest node would. Inputs carry the sensor's id.
pub struct Frontend {
    /// The LiDARs and radars beyond the one of each kind above.
    further: BTreeMap<SensorId, Further>,
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

/// A further LiDAR or radar: its name, kind, mount and header guard.
struct Further {
    name: &'static str,
    kind: Sensor,
    to_base: Isometry3<f64>,
    guard: HeaderGuard,
    lidar: LidarParams,
    radar: RadarParams,
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
        let ids = Sensor::ALL.map(id);
        let further = set
            .iter()
            .filter(|(i, d)| matches!(d.kind, Sensor::Lidar | Sensor::Radar) && !ids.contains(i))
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
                (i, Further { name: d.name, kind: d.kind, to_base: pose.to_base(), guard, lidar, radar })
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
            camera_output: params.camera_output,
            imu: ImuProcessor::new(pose(Sensor::Imu).to_base().rotation, params.imu),
            intrinsics_size: cam.width.zip(cam.height),
            camera_info: None,
            camera_info_guard: guard(Sensor::Camera),
            counters: BTreeMap::new(),
        }
    }

    /// The further LiDARs and radars, by id: (name, kind). A bag carries each one's driver
    /// topic as `/<name>/points`.
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
                Some(k) if Sensor::ALL[k] == Sensor::Radar => self.radar(stamp, frame_id, cloud),
                _ => self.lidar(stamp, frame_id, cloud),
            };
        };
        let (name, kind) = (f.name, f.kind);
        let r = f.guard.check(stamp, frame_id).and_then(|_| match kind {
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
