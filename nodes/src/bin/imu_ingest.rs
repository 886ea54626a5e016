//! imu_ingest: /imu/data → validated, bias-corrected Imu in base_link with orientation on /sensors/imu.
use anyhow::Result;
use fusion::{
    imu::{ImuParams, ImuProcessor},
    ingest::Reject,
};
use futures::stream::BoxStream;
use r2r::{
    geometry_msgs::msg::{Quaternion, Vector3},
    sensor_msgs::msg::Imu,
    std_msgs::msg::Header,
};
use sensor_fusion::graph;
use sensor_fusion::ingest::{imu_sample, run, subscribe_plain, Counters, Processor, Spec};

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
    let spec = Spec { node: &graph::IMU_INGEST, sensor: fusion::Sensor::Imu, queue_size: 200 };
    run(spec, |s| {
        let d = ImuParams::default();
        let params = ImuParams {
            gyro_bias: s.params.vec3("gyro_bias", d.gyro_bias)?,
            accel_bias: s.params.vec3("accel_bias", d.accel_bias)?,
            accel_saturation: s.params.f64("accel_saturation", d.accel_saturation)?,
            gyro_saturation: s.params.f64("gyro_saturation", d.gyro_saturation)?,
            filter_gain: s.params.f64("filter_gain", d.filter_gain)?,
        };
        let mount = s.calibration.sensor(&s.sensor).to_base().rotation;
        Ok(ImuIngest { filter: ImuProcessor::new(mount, params), base_frame: s.calibration.base_frame.clone() })
    })
}
