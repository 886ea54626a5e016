//! lidar_ingest: /lidar/points → validated, cropped, downsampled cloud in base_link on /sensors/lidar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_lidar, CloudRef, FloatCloud, LidarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
use sensor_fusion::ingest::{run, CloudIngest, Counters, Spec};

fn lidar(
    cloud: CloudRef<'_>,
    to_base: &Isometry3<f64>,
    params: &LidarParams,
    counters: &mut Counters,
) -> Result<FloatCloud, Reject> {
    let (out, c) = preprocess_lidar(cloud, to_base, params)?;
    counters.extend([
        ("points.in", c.points_in),
        ("points.non_finite", c.non_finite),
        ("points.cropped", c.cropped),
        ("points.out", c.points_out),
    ]);
    Ok(out)
}

fn main() -> Result<()> {
    let spec = Spec {
        node_name: "lidar_ingest",
        sensor: "lidar",
        input_topic: "/lidar/points",
        output_topic: "/sensors/lidar",
        queue_size: 4,
        input_depth: 5,
    };
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
        Ok(CloudIngest {
            to_base: s.calibration.sensor("lidar").to_base(),
            base_frame: s.calibration.base_frame.clone(),
            params,
            preprocess: lidar,
        })
    })
}
