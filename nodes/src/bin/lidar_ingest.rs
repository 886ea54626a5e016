//! lidar_ingest: /lidar/points → validated, cropped, downsampled cloud in base_link on /sensors/lidar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_lidar, LidarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
use r2r::{sensor_msgs::msg::PointCloud2, std_msgs::msg::Header};
use sensor_fusion::ingest::{Counters, cloud_fields, cloud_msg, cloud_ref, run, Processor, Spec};

struct Lidar {
    to_base: Isometry3<f64>,
    base_frame: String,
    params: LidarParams,
}

impl Processor for Lidar {
    type In = PointCloud2;
    type Out = PointCloud2;

    fn header(msg: &PointCloud2) -> &Header {
        &msg.header
    }

    fn process(&mut self, msg: PointCloud2, counters: &mut Counters) -> Result<PointCloud2, Reject> {
        let fields = cloud_fields(&msg);
        let (cloud, counts) = preprocess_lidar(cloud_ref(&msg, &fields), &self.to_base, &self.params)?;
        counters.push(("points.in", counts.points_in));
        counters.push(("points.non_finite", counts.non_finite));
        counters.push(("points.cropped", counts.cropped));
        counters.push(("points.out", counts.points_out));
        Ok(cloud_msg(Header { stamp: msg.header.stamp, frame_id: self.base_frame.clone() }, &cloud))
    }
}

fn main() -> Result<()> {
    let spec = Spec { node_name: "lidar_ingest", sensor: "lidar", input_topic: "/lidar/points", output_topic: "/sensors/lidar", queue_size: 4, input_depth: 5 };
    run(spec, |s| {
        let d = LidarParams::default();
        let params = LidarParams {
            min_range: s.params.f64("min_range", d.min_range)?,
            max_range: s.params.f64("max_range", d.max_range)?,
            min_z: s.params.f64("min_z", d.min_z)?,
            max_z: s.params.f64("max_z", d.max_z)?,
            voxel_size: s.params.f64("voxel_size", d.voxel_size)?,
            max_non_finite_ratio: s.params.f64("max_non_finite_ratio", d.max_non_finite_ratio)?,
        };
        Ok(Lidar { to_base: s.calibration.sensor("lidar").to_base(), base_frame: s.calibration.base_frame.clone(), params })
    })
}
