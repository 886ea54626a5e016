//! radar_ingest: /radar/points → validated, filtered targets in base_link on /sensors/radar.
use anyhow::Result;
use fusion::{
    cloud::{preprocess_radar, RadarParams},
    ingest::Reject,
};
use nalgebra::Isometry3;
use r2r::{sensor_msgs::msg::PointCloud2, std_msgs::msg::Header};
use sensor_fusion::ingest::{Counters, cloud_fields, cloud_msg, cloud_ref, run, Processor, Spec};

struct Radar {
    to_base: Isometry3<f64>,
    base_frame: String,
    params: RadarParams,
}

impl Processor for Radar {
    type In = PointCloud2;
    type Out = PointCloud2;

    fn header(msg: &PointCloud2) -> &Header {
        &msg.header
    }

    fn process(&mut self, msg: PointCloud2, counters: &mut Counters) -> Result<PointCloud2, Reject> {
        let fields = cloud_fields(&msg);
        let (cloud, counts) = preprocess_radar(cloud_ref(&msg, &fields), &self.to_base, &self.params)?;
        counters.push(("targets.in", counts.targets_in));
        counters.push(("targets.non_finite", counts.non_finite));
        counters.push(("targets.filtered", counts.filtered));
        counters.push(("targets.out", counts.targets_out));
        Ok(cloud_msg(Header { stamp: msg.header.stamp, frame_id: self.base_frame.clone() }, &cloud))
    }
}

fn main() -> Result<()> {
    let spec = Spec { node_name: "radar_ingest", sensor: "radar", input_topic: "/radar/points", output_topic: "/sensors/radar", queue_size: 16, input_depth: 20 };
    run(spec, |s| {
        let d = RadarParams::default();
        let params = RadarParams {
            min_rcs: s.params.f64("min_rcs", d.min_rcs)?,
            max_abs_doppler: s.params.f64("max_abs_doppler", d.max_abs_doppler)?,
            max_range: s.params.f64("max_range", d.max_range)?,
            max_non_finite_ratio: s.params.f64("max_non_finite_ratio", d.max_non_finite_ratio)?,
        };
        Ok(Radar { to_base: s.calibration.sensor("radar").to_base(), base_frame: s.calibration.base_frame.clone(), params })
    })
}
