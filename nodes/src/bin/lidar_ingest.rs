//! lidar_ingest: /lidar/points → validated, cropped, downsampled cloud in base_link on /sensors/lidar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_lidar, CloudRef, FloatCloud, LidarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
use sensor_fusion::config::LidarIngestConfig;
use sensor_fusion::ingest::{self, run, CloudIngest, Counters};

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
    // Every filter parameter comes from LidarParams (names, defaults, checks) and may be
    // changed on the running node with `ros2 param set`.
    run(ingest::LIDAR, |s, c: &LidarIngestConfig| CloudIngest::new(s, c.own.0.clone(), lidar))
}
