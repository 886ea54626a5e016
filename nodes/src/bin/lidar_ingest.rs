//! lidar_ingest: /lidar/points → validated, cropped, downsampled cloud in base_link on /sensors/lidar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_lidar, CloudRef, FloatCloud, LidarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
use sensor_fusion::graph;
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
    let spec = Spec { node: &graph::LIDAR_INGEST, sensor: fusion::Sensor::Lidar, queue_size: 4 };
    // Every filter parameter is declared from LidarParams (names, defaults, checks) and may be
    // changed on the running node with `ros2 param set`.
    run(spec, |s| CloudIngest::declare(s, lidar))
}
