//! sensor_msgs/Imu sequences through the front end: validation, bias, the mount rotation
//! and the complementary filter, whose orientation must stay a finite unit quaternion.
#![no_main]
use fusion::calib::Calibration;
use fusion::frontend::Frontend;
use fusion::imu::ImuSample;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut b = common::Bytes(data);
    let mut front = Frontend::new(&Calibration::default());
    while !b.0.is_empty() {
        let mut v = |n: usize| -> Vec<f64> { (0..n).map(|_| b.f64()).collect() };
        let (o, oc, w, a) = (v(4), v(9), v(3), v(3));
        let stamp = b.i64();
        let s = ImuSample {
            stamp,
            orientation: o.try_into().unwrap(),
            orientation_covariance: oc.try_into().unwrap(),
            angular_velocity: w.try_into().unwrap(),
            angular_velocity_covariance: [0.0; 9],
            linear_acceleration: a.try_into().unwrap(),
            linear_acceleration_covariance: [0.0; 9],
        };
        if let Ok(fusion::pipeline::Input::Imu(_, state)) = front.imu("imu_link", &s) {
            let q = state.orientation;
            assert!(q.coords.iter().all(|c| c.is_finite()), "orientation {q:?} from {s:?}");
        }
    }
});
