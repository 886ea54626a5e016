//! PointCloud2 from LiDAR and radar through the front end (header guard, field layout,
//! decoding of every datatype and endianness, deskew, range and voxel filters).
#![no_main]
use fusion::calib::Calibration;
use fusion::cloud::{CloudRef, PointField};
use fusion::frontend::Frontend;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const NAMES: &[&str] = &["x", "y", "z", "intensity", "t", "time", "doppler", "rcs", "ring", "x"];

fuzz_target!(|data: &[u8]| {
    let mut b = common::Bytes(data);
    let mut front = Frontend::new(&Calibration::default());
    for _ in 0..(b.u8() % 4 + 1) {
        let fields: Vec<PointField> = (0..b.u8() % 8)
            .map(|_| PointField {
                name: b.pick(NAMES).to_string(),
                offset: b.small_u32(),
                datatype: b.u8() % 10,
                count: b.small_u32(),
            })
            .collect();
        let (height, width, point_step, row_step) = (b.small_u32(), b.small_u32(), b.small_u32(), b.small_u32());
        let is_bigendian = b.u8() & 1 == 1;
        let (stamp, radar) = (b.i64(), b.u8() & 1 == 1);
        let frame = if radar { "radar_link" } else { "lidar_link" };
        let len = b.small_u32() as usize;
        let body = b.take(len);
        let cloud = CloudRef { height, width, fields: &fields, is_bigendian, point_step, row_step, data: body };
        let _ = if radar { front.radar(stamp, frame, cloud) } else { front.lidar(stamp, frame, cloud) };
    }
    let _ = b.rest();
});
