//! camera_ingest: /camera/image_raw (+ /camera/camera_info) → validated rgb8 /sensors/camera.
use anyhow::Result;
use fusion::{
    camera::{check_camera_info, check_intrinsics_size, letterbox, to_rgb8, CameraInfoRef},
    ingest::{HeaderGuard, IngestStats, Reject},
    stamp_ns,
};
use futures::StreamExt;
use r2r::{
    sensor_msgs::msg::{CameraInfo, Image},
    std_msgs::msg::Header,
};
use sensor_fusion::graph;
use sensor_fusion::ingest::{image_ref, run, Counters, Processor, Spec};
use std::sync::{Arc, Mutex};

struct Camera {
    /// Image size the intrinsics are for: from the latest valid CameraInfo, else the
    /// calibration's width/height.
    intrinsics_size: Arc<Mutex<Option<(u32, u32)>>>,
    output_size: Option<(u32, u32)>,
}

impl Processor for Camera {
    type In = Image;
    type Out = Image;

    fn header(msg: &Image) -> &Header {
        &msg.header
    }

    fn process(&mut self, msg: Image, _counters: &mut Counters) -> Result<Image, Reject> {
        let rgb = to_rgb8(image_ref(&msg))?;
        check_intrinsics_size(msg.width, msg.height, *self.intrinsics_size.lock().expect("lock"))?;
        let rgb = match self.output_size {
            Some((w, h)) => letterbox(&rgb, w, h),
            None => rgb,
        };
        Ok(Image {
            header: msg.header,
            height: rgb.height,
            width: rgb.width,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: rgb.width * 3,
            data: rgb.data,
        })
    }
}

fn main() -> Result<()> {
    let spec = Spec { node: &graph::CAMERA_INGEST, sensor: fusion::Sensor::Camera, queue_size: 4 };
    run(spec, |s| {
        let cam = s.calibration.sensor("camera").clone();
        let side = |name: &str| -> anyhow::Result<u32> {
            let v = s.params.usize(name, 0)?;
            u32::try_from(v).ok().filter(|&v| v <= fusion::camera::MAX_OUTPUT_SIDE).ok_or_else(|| {
                anyhow::anyhow!(
                    "parameter {name} must be 0 (keep the input size) .. {}, got {v}",
                    fusion::camera::MAX_OUTPUT_SIDE
                )
            })
        };
        let (ow, oh) = (side("output_width")?, side("output_height")?);
        let intrinsics_size = Arc::new(Mutex::new(cam.width.zip(cam.height)));
        let info_stats = Arc::new(Mutex::new(IngestStats::default()));
        s.extra_stats.push(("camera_info".into(), info_stats.clone()));

        let mut infos = s.node.subscribe::<CameraInfo>(graph::CAMERA_INFO.name, graph::CAMERA_INFO.qos.profile())?;
        let size = intrinsics_size.clone();
        let mut guard = HeaderGuard::new(cam.frame_id.clone());
        s.tasks.push(Box::pin(async move {
            while let Some(info) = infos.next().await {
                let mut st = info_stats.lock().expect("stats");
                st.on_received();
                let stamp = stamp_ns(info.header.stamp.sec, info.header.stamp.nanosec);
                let checked = guard.check(stamp, &info.header.frame_id).and_then(|()| {
                    check_camera_info(CameraInfoRef {
                        width: info.width,
                        height: info.height,
                        distortion_model: &info.distortion_model,
                        d: &info.d,
                        k: &info.k,
                    })
                });
                match checked {
                    Ok(()) => {
                        if guard.accept(stamp) {
                            st.add_extra("stamp_resync", 1);
                        }
                        *size.lock().expect("lock") = Some((info.width, info.height));
                        st.on_accepted(1);
                    }
                    Err(why) => st.on_rejected(&why),
                }
            }
        }));
        Ok(Camera { intrinsics_size, output_size: (ow > 0 && oh > 0).then_some((ow, oh)) })
    })
}
