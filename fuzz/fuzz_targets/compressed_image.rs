//! sensor_msgs/CompressedImage data: JPEG and PNG decoding with its size limit. Seeded with the
//! Pillow-written files in fusion/testdata (scripts/fuzz.sh), so mutations start from real files.
#![no_main]
use fusion::camera::{decode_compressed, MAX_DECODED_PIXELS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_compressed("", data, None) {
        assert!(img.width > 0 && img.height > 0);
        assert!(img.width as u64 * img.height as u64 <= MAX_DECODED_PIXELS);
        assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
    }
});
