//! sensor_msgs/Image and CameraInfo without ROS: validation, conversion to rgb8 and the
//! letterbox resize the detector wants.
use crate::ingest::Reject;

#[derive(Debug, Clone, Copy)]
pub struct ImageRef<'a> {
    pub width: u32,
    pub height: u32,
    pub encoding: &'a str,
    pub step: u32,
    pub data: &'a [u8],
}

/// A packed rgb8 image (step = 3 × width).
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

fn channels(encoding: &str) -> Option<u32> {
    match encoding {
        "rgb8" | "bgr8" => Some(3),
        "mono8" => Some(1),
        _ => None,
    }
}

/// Checks the image layout and converts it to packed rgb8 (row padding removed).
pub fn to_rgb8(img: ImageRef<'_>) -> Result<Rgb8, Reject> {
    let ch = channels(img.encoding).ok_or_else(|| Reject::UnsupportedEncoding(img.encoding.into()))?;
    if img.width == 0 || img.height == 0 {
        return Err(Reject::Empty);
    }
    let row = img.width as u64 * ch as u64;
    if (img.step as u64) < row {
        return Err(Reject::BadStep { step: img.step, width: img.width, channels: ch });
    }
    let expected = img.step as u64 * img.height as u64;
    if img.data.len() as u64 != expected {
        return Err(Reject::DataSizeMismatch { got: img.data.len(), expected });
    }
    let (w, h, step) = (img.width as usize, img.height as usize, img.step as usize);
    let mut out = Vec::with_capacity(w * h * 3);
    for r in 0..h {
        let src = &img.data[r * step..r * step + w * ch as usize];
        match img.encoding {
            "rgb8" => out.extend_from_slice(src),
            "bgr8" => src.chunks_exact(3).for_each(|p| out.extend_from_slice(&[p[2], p[1], p[0]])),
            _ => src.iter().for_each(|&g| out.extend_from_slice(&[g, g, g])),
        }
    }
    Ok(Rgb8 { width: img.width, height: img.height, data: out })
}

/// An image must have the size the intrinsics were calibrated for (when they name one).
pub fn check_intrinsics_size(width: u32, height: u32, intrinsics: Option<(u32, u32)>) -> Result<(), Reject> {
    match intrinsics {
        Some((w, h)) if (w, h) != (width, height) => {
            Err(Reject::SizeMismatchIntrinsics { got_w: width, got_h: height, want_w: w, want_h: h })
        }
        _ => Ok(()),
    }
}

/// The largest output side `letterbox` is asked for by configuration (a 16k × 16k rgb8
/// frame is 768 MB): a larger `output_width`/`output_height` is refused at start-up.
pub const MAX_OUTPUT_SIDE: u32 = 16_384;

/// Scales `img` to fit `width`×`height` keeping its aspect ratio (bilinear), centred on a
/// grey (114) canvas, as YOLO/CenterNet-style detectors expect.
pub fn letterbox(img: &Rgb8, width: u32, height: u32) -> Rgb8 {
    if img.width == width && img.height == height {
        return img.clone();
    }
    let scale = (width as f64 / img.width as f64).min(height as f64 / img.height as f64);
    let (nw, nh) =
        (((img.width as f64 * scale).round() as u32).max(1), ((img.height as f64 * scale).round() as u32).max(1));
    let (ox, oy) = ((width - nw) / 2, (height - nh) / 2);
    let mut data = vec![114u8; width as usize * height as usize * 3];
    let (sw, sh) = (img.width as usize, img.height as usize);
    for y in 0..nh as usize {
        let fy = ((y as f64 + 0.5) / scale - 0.5).clamp(0.0, (sh - 1) as f64);
        let (y0, wy) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(sh - 1);
        for x in 0..nw as usize {
            let fx = ((x as f64 + 0.5) / scale - 0.5).clamp(0.0, (sw - 1) as f64);
            let (x0, wx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(sw - 1);
            let dst = ((oy as usize + y) * width as usize + ox as usize + x) * 3;
            for c in 0..3 {
                let px = |xx: usize, yy: usize| img.data[(yy * sw + xx) * 3 + c] as f64;
                let v = (px(x0, y0) * (1.0 - wx) + px(x1, y0) * wx) * (1.0 - wy)
                    + (px(x0, y1) * (1.0 - wx) + px(x1, y1) * wx) * wy;
                data[dst + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb8 { width, height, data }
}

#[derive(Debug, Clone, Copy)]
pub struct CameraInfoRef<'a> {
    pub width: u32,
    pub height: u32,
    pub distortion_model: &'a str,
    pub d: &'a [f64],
    pub k: &'a [f64],
}

/// Checks CameraInfo: K a 3×3 camera matrix with positive focal lengths, D sized for its
/// distortion model.
pub fn check_camera_info(info: CameraInfoRef<'_>) -> Result<(), Reject> {
    if info.width == 0 || info.height == 0 {
        return Err(Reject::Empty);
    }
    if info.k.len() != 9 {
        return Err(Reject::BadIntrinsics(format!("K has {} values, expected 9", info.k.len())));
    }
    if info.k.iter().chain(info.d).any(|v| !v.is_finite()) {
        return Err(Reject::NonFiniteValue("camera_info K/D"));
    }
    let k = info.k;
    if k[0] <= 0.0 || k[4] <= 0.0 || k[8] != 1.0 || k[3] != 0.0 || k[6] != 0.0 || k[7] != 0.0 {
        return Err(Reject::BadIntrinsics(format!("fx={} fy={} K[8]={}", k[0], k[4], k[8])));
    }
    let ok: &[usize] = match info.distortion_model {
        "plumb_bob" => &[5],
        "rational_polynomial" => &[8],
        "equidistant" => &[4],
        // No model given: an empty D is the only consistent case.
        "" => &[0],
        _ => &[],
    };
    if !ok.is_empty() && !ok.contains(&info.d.len()) {
        return Err(Reject::BadDistortion {
            model: info.distortion_model.into(),
            expected: format!("{ok:?}"),
            got: info.d.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_bgr_and_mono_and_strips_padding() {
        // 2×1 bgr8 with 2 bytes of row padding.
        let data = [1, 2, 3, 4, 5, 6, 0, 0];
        let img = ImageRef { width: 2, height: 1, encoding: "bgr8", step: 8, data: &data };
        assert_eq!(to_rgb8(img).unwrap().data, vec![3, 2, 1, 6, 5, 4]);
        let img = ImageRef { width: 2, height: 1, encoding: "mono8", step: 2, data: &[7, 9] };
        assert_eq!(to_rgb8(img).unwrap().data, vec![7, 7, 7, 9, 9, 9]);
    }

    #[test]
    fn layout_errors_are_named() {
        let data = vec![0u8; 12];
        let ok = ImageRef { width: 2, height: 2, encoding: "rgb8", step: 6, data: &data };
        assert!(to_rgb8(ok).is_ok());
        let r = |i: ImageRef| to_rgb8(i).unwrap_err().as_str();
        assert_eq!(r(ImageRef { encoding: "yuv422", ..ok }), "unsupported_encoding");
        assert_eq!(r(ImageRef { step: 5, ..ok }), "bad_step");
        assert_eq!(r(ImageRef { data: &data[..11], ..ok }), "data_size_mismatch");
        assert_eq!(r(ImageRef { height: 3, ..ok }), "data_size_mismatch");
        assert_eq!(r(ImageRef { width: 0, ..ok }), "empty");
    }

    #[test]
    fn letterbox_keeps_aspect_and_pads_grey() {
        let img = Rgb8 { width: 4, height: 2, data: vec![200; 24] };
        let out = letterbox(&img, 4, 4);
        assert_eq!((out.width, out.height), (4, 4));
        // Rows 0 and 3 are padding; rows 1-2 are the image.
        assert!(out.data[..12].iter().all(|&v| v == 114));
        assert!(out.data[12..36].iter().all(|&v| v == 200));
        assert!(out.data[36..].iter().all(|&v| v == 114));
    }

    #[test]
    fn camera_info_checks() {
        let k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0];
        let d = [0.0; 5];
        let ok = CameraInfoRef { width: 640, height: 480, distortion_model: "plumb_bob", d: &d, k: &k };
        assert!(check_camera_info(ok).is_ok());
        assert_eq!(check_camera_info(CameraInfoRef { d: &d[..4], ..ok }).unwrap_err().as_str(), "bad_distortion");
        let bad_k = [0.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0];
        assert_eq!(check_camera_info(CameraInfoRef { k: &bad_k, ..ok }).unwrap_err().as_str(), "bad_intrinsics");
        assert_eq!(check_camera_info(CameraInfoRef { k: &k[..8], ..ok }).unwrap_err().as_str(), "bad_intrinsics");
        let nan_d = [f64::NAN, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(check_camera_info(CameraInfoRef { d: &nan_d, ..ok }).unwrap_err().as_str(), "non_finite");
    }
}
