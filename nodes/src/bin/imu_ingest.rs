//! imu_ingest: /imu/data → validated, bias-corrected Imu in base_link with orientation on /sensors/imu.
use anyhow::Result;
use fusion::{imu::ImuProcessor, ingest::Reject};
use futures::stream::BoxStream;
use r2r::{
    geometry_msgs::msg::{Quaternion, Vector3},
    sensor_msgs::msg::Imu,
    std_msgs::msg::Header,
};
use sensor_fusion::config::ImuIngestConfig;
use sensor_fusion::graph;
use sensor_fusion::ingest::{self, imu_sample, run, subscribe_plain, Counters, Processor};

struct ImuIngest {
    filter: ImuProcessor,
    base_frame: String,
}

impl Processor for ImuIngest {
    type In = Imu;
    type Out = Imu;

    fn header(msg: &Imu) -> &Header {
        &msg.header
    }

    fn subscribe(
        &self,
        node: &mut r2r::Node,
        declared: &'static graph::Topic,
        qos: r2r::QosProfile,
    ) -> Result<(&'static str, BoxStream<'static, Imu>)> {
        subscribe_plain(node, declared, qos)
    }

    fn process(&mut self, m: Imu, counters: &mut Counters) -> Result<Imu, Reject> {
        let sample = imu_sample(&m);
        let (o, saturated) = self.filter.process(&sample)?;
        if saturated {
            counters.push(("samples.saturated", 1));
        }
        let v3 = |v: [f64; 3]| Vector3 { x: v[0], y: v[1], z: v[2] };
        Ok(Imu {
            header: Header { stamp: m.header.stamp, frame_id: self.base_frame.clone() },
            orientation: Quaternion {
                x: o.orientation[0],
                y: o.orientation[1],
                z: o.orientation[2],
                w: o.orientation[3],
            },
            orientation_covariance: o.orientation_covariance.to_vec(),
            angular_velocity: v3(o.angular_velocity),
            angular_velocity_covariance: o.angular_velocity_covariance.to_vec(),
            linear_acceleration: v3(o.linear_acceleration),
            linear_acceleration_covariance: o.linear_acceleration_covariance.to_vec(),
        })
    }
}

fn main() -> Result<()> {
    run(ingest::IMU, |s, c: &ImuIngestConfig| {
        let params = c.own.params();
        let mount = s.calibration.sensor(&s.sensor).to_base().rotation;
        Ok(ImuIngest { filter: ImuProcessor::new(mount, params), base_frame: s.calibration.base_frame.clone() })
    })
}
