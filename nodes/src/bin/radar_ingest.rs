//! radar_ingest: /radar/points → validated, filtered targets in base_link on /sensors/radar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_radar, CloudRef, FloatCloud, RadarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
use sensor_fusion::config::RadarIngestConfig;
use sensor_fusion::ingest::{self, run, CloudIngest, Counters};

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
    // Every filter parameter comes from RadarParams (names, defaults, checks) and may be
    // changed on the running node with `ros2 param set`.
    run(ingest::RADAR, |s, c: &RadarIngestConfig| CloudIngest::new(s, c.own.0.clone(), radar))
}
