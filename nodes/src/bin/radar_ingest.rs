//! radar_ingest: /radar/points → validated, filtered targets in base_link on /sensors/radar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_radar, CloudRef, FloatCloud, RadarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
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
    let spec = Spec {
        node_name: "radar_ingest",
        sensor: "radar",
        input_topic: "/radar/points",
        output_topic: "/sensors/radar",
        queue_size: 16,
        input_depth: 20,
    };
    run(spec, |s| {
        let d = RadarParams::default();
        let params = RadarParams {
            min_rcs: s.params.f64("min_rcs", d.min_rcs)?,
            max_abs_doppler: s.params.f64("max_abs_doppler", d.max_abs_doppler)?,
            max_range: s.params.f64("max_range", d.max_range)?,
            max_non_finite_ratio: s.params.f64("max_non_finite_ratio", d.max_non_finite_ratio)?,
        };
        Ok(CloudIngest {
            to_base: s.calibration.sensor("radar").to_base(),
            base_frame: s.calibration.base_frame.clone(),
            params,
            preprocess: radar,
        })
    })
}
