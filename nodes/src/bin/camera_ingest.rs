//! camera_ingest: /camera/image_raw (+ /camera/camera_info) → validated rgb8 /sensors/camera
//! (+ /sensors/camera/camera_info: the intrinsics of the images it publishes, scaled with
//! them when `output_width`/`output_height` resize). With `image_transport: compressed` it
//! reads /camera/image_raw/compressed (JPEG or PNG, as image_transport's compressed plugin
//! sends it) instead, and decodes it here: on a link slower than the raw stream, the sensor
//! box sends a fifth of the bytes (docs/deployment.md).
use anyhow::Result;
use fusion::{
    camera::{check_intrinsics_size, decode_compressed, fit_within, to_rgb8, Intrinsics},
    ingest::{HeaderGuard, IngestStats, Reject},
    stamp_ns,
};
use futures::{stream::BoxStream, StreamExt};
use r2r::{
    sensor_msgs::msg::{CameraInfo, CompressedImage, Image},
    std_msgs::msg::Header,
};
use sensor_fusion::config::CameraIngestConfig;
use sensor_fusion::graph;
use sensor_fusion::ingest::{self, camera_info_ref, image_ref, run, subscribe_plain, Counters, Processor};
use std::sync::{Arc, Mutex};

struct Camera {
    /// Image size the intrinsics are for: from the latest valid CameraInfo, else the
    /// calibration's width/height.
    intrinsics_size: Arc<Mutex<Option<(u32, u32)>>>,
    output_size: Option<(u32, u32)>,
    /// Reads `camera/image_raw/compressed` instead of the raw image.
    compressed: bool,
}

/// One camera frame as it arrived: raw, or JPEG/PNG (decoded on the worker thread, never in
/// the spin loop that drains the subscriptions).
enum Frame {
    Raw(Image),
    Compressed(CompressedImage),
}

impl Processor for Camera {
    type In = Frame;
    type Out = Image;

    fn header(msg: &Frame) -> &Header {
        match msg {
            Frame::Raw(m) => &m.header,
            Frame::Compressed(m) => &m.header,
        }
    }

    fn subscribe(
        &self,
        node: &mut r2r::Node,
        declared: &'static graph::Topic,
        qos: r2r::QosProfile,
    ) -> Result<(&'static str, BoxStream<'static, Frame>)> {
        Ok(if self.compressed {
            let (name, s) = subscribe_plain::<CompressedImage>(node, &graph::CAMERA_IMAGE_COMPRESSED, qos)?;
            (name, s.map(Frame::Compressed).boxed())
        } else {
            let (name, s) = subscribe_plain::<Image>(node, declared, qos)?;
            (name, s.map(Frame::Raw).boxed())
        })
    }

    fn process(&mut self, msg: Frame, counters: &mut Counters) -> Result<Image, Reject> {
        let intrinsics_size = *self.intrinsics_size.lock().expect("lock");
        let (header, rgb) = match msg {
            Frame::Raw(m) => {
                let rgb = to_rgb8(image_ref(&m))?;
                (m.header, rgb)
            }
            Frame::Compressed(m) => {
                counters.push(("compressed.bytes", m.data.len() as u64));
                // The size is checked from the file's header, before decoding.
                (m.header, decode_compressed(&m.format, &m.data, intrinsics_size)?)
            }
        };
        check_intrinsics_size(rgb.width, rgb.height, intrinsics_size)?;
        let rgb = match self.output_size {
            Some((w, h)) => fit_within(&rgb, w, h),
            None => rgb,
        };
        Ok(Image {
            header,
            height: rgb.height,
            width: rgb.width,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: rgb.width * 3,
            data: rgb.data,
        })
    }
}

/// The CameraInfo of the images this node publishes: the input's, with its size, K and P
/// scaled as `fit_within` scales the image (distortion is in normalized coordinates: unchanged).
fn output_info(mut info: CameraInfo, intrinsics: Intrinsics, output_size: Option<(u32, u32)>) -> CameraInfo {
    let Some((w, h)) = output_size else { return info };
    let out = intrinsics.fitted(w, h);
    let (sx, sy) = (out.width as f64 / info.width as f64, out.height as f64 / info.height as f64);
    info.width = out.width;
    info.height = out.height;
    info.k = out.k.to_vec();
    if info.p.len() == 12 {
        // P = [fx' 0 cx' Tx; 0 fy' cy' Ty; 0 0 1 0]: rows 1 and 2 scale as K's do.
        let p = &mut info.p;
        for i in 0..4 {
            p[i] *= sx;
            p[4 + i] *= sy;
        }
        p[2] += 0.5 * sx - 0.5;
        p[6] += 0.5 * sy - 0.5;
    }
    info.binning_x = 0;
    info.binning_y = 0;
    info.roi = Default::default();
    info
}

fn main() -> Result<()> {
    run(ingest::CAMERA, |s, c: &CameraIngestConfig| {
        let cam = s.calibration.sensor(&s.sensor).clone();
        // Checked with the node's config (ranges and words).
        let (ow, oh) = (c.own.output_width as u32, c.own.output_height as u32);
        // image_transport's parameter name and values, as image_view and rqt take them.
        let compressed = c.own.image_transport == "compressed";
        let intrinsics_size = Arc::new(Mutex::new(cam.width.zip(cam.height)));
        let info_stats = Arc::new(Mutex::new(IngestStats::default()));
        s.extra_stats.push(("camera_info".into(), info_stats.clone()));

        let mut infos = s.node.subscribe::<CameraInfo>(graph::CAMERA_INFO.name, graph::CAMERA_INFO.qos.profile())?;
        // Beside the images: sensors/<name>/camera_info.
        let info_name = format!("{}/camera_info", graph::sensor_stream(&s.sensor, fusion::Sensor::Camera).0);
        let info_out = s.node.create_publisher::<CameraInfo>(&info_name, graph::SENSORS_CAMERA_INFO.qos.profile())?;
        let output_size = (ow > 0 && oh > 0).then_some((ow, oh));
        let size = intrinsics_size.clone();
        let mut guard = HeaderGuard::new(cam.frame_id.clone());
        s.tasks.push(Box::pin(async move {
            while let Some(info) = infos.next().await {
                let mut st = info_stats.lock().expect("stats");
                st.on_received();
                let stamp = stamp_ns(info.header.stamp.sec, info.header.stamp.nanosec);
                let checked = guard
                    .check(stamp, &info.header.frame_id)
                    .and_then(|()| Intrinsics::from_camera_info(camera_info_ref(&info)));
                match checked {
                    Ok(intrinsics) => {
                        if guard.accept(stamp) {
                            st.add_extra("stamp_resync", 1);
                        }
                        *size.lock().expect("lock") = Some((info.width, info.height));
                        st.on_accepted(1);
                        if let Err(e) = info_out.publish(&output_info(info, intrinsics, output_size)) {
                            tracing::warn!("cannot publish {info_name}: {e}");
                        }
                    }
                    Err(why) => st.on_rejected(&why),
                }
            }
        }));
        Ok(Camera { intrinsics_size, output_size, compressed })
    })
}
