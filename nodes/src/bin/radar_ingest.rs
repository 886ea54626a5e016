//! radar_ingest: /radar/points → validated, filtered targets in base_link on /sensors/radar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_radar, CloudRef, FloatCloud, RadarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
use sensor_fusion::graph;
use sensor_fusion::ingest::{run, CloudIngest, Counters, Spec};

fn radar(
    cloud: CloudRef<'_>,
    to_base: &Isometry3<f64>,
    params: &RadarParams,
    counters: &mut Counters,
) -> Result<FloatCloud, Reject> {
    let (out, c) = preprocess_radar(cloud, to_base, params)?;
    counters.extend([
        ("targets.in", c.targets_in),
        ("targets.non_finite", c.non_finite),
        ("targets.filtered", c.filtered),
        ("targets.out", c.targets_out),
    ]);
    Ok(out)
}

fn main() -> Result<()> {
    let spec = Spec { node: &graph::RADAR_INGEST, sensor: fusion::Sensor::Radar, queue_size: 16 };
    // Every filter parameter is declared from RadarParams (names, defaults, checks) and may be
    // changed on the running node with `ros2 param set`.
    run(spec, |s| CloudIngest::declare(s, radar))
}
