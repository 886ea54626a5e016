//! sensor_msgs/Image and CameraInfo: layout checks, conversion to rgb8, the intrinsics
//! checks and the fit-within resize to a (small) configured size.
#![no_main]
use fusion::calib::Calibration;
use fusion::camera::{check_camera_info, fit_within, fitted_size, to_rgb8, CameraInfoRef, ImageRef};
use fusion::frontend::Frontend;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut b = common::Bytes(data);
    let mut front = Frontend::new(&Calibration::default());
    let (width, height, step) = (b.small_u32(), b.small_u32(), b.small_u32());
    let encoding = b.pick(&["rgb8", "bgr8", "mono8", "yuv422", "rgba8", ""]);
    let stamp = b.i64();
    let (ow, oh) = (b.u8() as u32, b.u8() as u32);
    let k: Vec<f64> = (0..b.u8() % 11).map(|_| b.f64()).collect();
    let d: Vec<f64> = (0..b.u8() % 9).map(|_| b.f64()).collect();
    let model = b.pick(&["plumb_bob", "rational_polynomial", "equidistant", "", "fisheye"]);
    let body = b.rest();
    let img = ImageRef { width, height, encoding, step, data: body };
    let _ = front.camera(stamp, "camera_optical", img);
    if let Ok(rgb) = to_rgb8(img) {
        assert_eq!(rgb.data.len(), rgb.width as usize * rgb.height as usize * 3);
        if ow > 0 && oh > 0 {
            let out = fit_within(&rgb, ow, oh);
            assert!(out.width <= ow && out.height <= oh);
            assert_eq!((out.width, out.height), fitted_size(rgb.width, rgb.height, ow, oh));
            assert_eq!(out.data.len(), out.width as usize * out.height as usize * 3);
        }
    }
    let _ = check_camera_info(CameraInfoRef { width, height, distortion_model: model, d: &d, k: &k });
});
