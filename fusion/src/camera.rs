//! sensor_msgs/Image and CameraInfo without ROS: validation, conversion to rgb8 and the
//! resize that `output_width`/`output_height` ask for.
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

/// The largest output side [`fit_within`] is asked for by configuration (a 16k × 16k rgb8
/// frame is 768 MB): a larger `output_width`/`output_height` is refused at start-up.
pub const MAX_OUTPUT_SIDE: u32 = 16_384;

/// The size [`fit_within`] gives a `width`×`height` image: the largest that fits
/// `max_width`×`max_height` with the same aspect ratio (each side at least 1).
pub fn fitted_size(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    if width == 0 || height == 0 {
        return (width, height);
    }
    let scale = (max_width as f64 / width as f64).min(max_height as f64 / height as f64);
    let side = |n: u32, max: u32| ((n as f64 * scale).round() as u32).clamp(1, max.max(1));
    (side(width, max_width), side(height, max_height))
}

/// Scales `img` (bilinear) to the largest size that fits `max_width`×`max_height` keeping its
/// aspect ratio. No padding: every pixel still shows the scene, so the camera's health
/// checks (mean brightness of a blinded camera) hold, and the detector letterboxes to its
/// own input size anyway. [`Intrinsics::fitted`] gives the intrinsics of the result.
pub fn fit_within(img: &Rgb8, max_width: u32, max_height: u32) -> Rgb8 {
    let (width, height) = fitted_size(img.width, img.height, max_width, max_height);
    if (width, height) == (img.width, img.height) {
        return img.clone();
    }
    let (sx, sy) = (width as f64 / img.width as f64, height as f64 / img.height as f64);
    let mut data = vec![0u8; width as usize * height as usize * 3];
    let (sw, sh) = (img.width as usize, img.height as usize);
    for y in 0..height as usize {
        // Output pixel centre y + 0.5 samples input (y + 0.5) / sy: pixel centres map onto
        // pixel centres, as `Intrinsics::fitted` assumes.
        let fy = ((y as f64 + 0.5) / sy - 0.5).clamp(0.0, (sh - 1) as f64);
        let (y0, wy) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(sh - 1);
        for x in 0..width as usize {
            let fx = ((x as f64 + 0.5) / sx - 0.5).clamp(0.0, (sw - 1) as f64);
            let (x0, wx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(sw - 1);
            let dst = (y * width as usize + x) * 3;
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

/// A pinhole camera's intrinsics for images of one size: CameraInfo's K, width and height.
/// The pipeline projects 3D boxes into the image with them, so they must describe the image
/// the detector sees (after [`fit_within`]: see [`Intrinsics::fitted`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    /// Row-major 3×3 camera matrix.
    pub k: [f64; 9],
    pub width: u32,
    pub height: u32,
}

impl Intrinsics {
    /// What a calibration that names no intrinsics gets (and what fusion_sim renders with).
    pub const DEFAULT: Intrinsics =
        Intrinsics { k: [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0], width: 640, height: 480 };

    /// The calibration file's camera intrinsics, each value it leaves out from [`Self::DEFAULT`].
    pub fn of(camera: &crate::calib::SensorPose) -> Intrinsics {
        Intrinsics {
            k: camera.k.unwrap_or(Self::DEFAULT.k),
            width: camera.width.unwrap_or(Self::DEFAULT.width),
            height: camera.height.unwrap_or(Self::DEFAULT.height),
        }
    }

    /// A CameraInfo's intrinsics, when [`check_camera_info`] accepts it.
    pub fn from_camera_info(info: CameraInfoRef<'_>) -> Result<Intrinsics, Reject> {
        check_camera_info(info)?;
        let mut k = [0.0; 9];
        k.copy_from_slice(info.k);
        Ok(Intrinsics { k, width: info.width, height: info.height })
    }

    /// The intrinsics of this camera's image after [`fit_within`]`(_, max_width, max_height)`:
    /// focal lengths and principal point scale with the image, with the pixel-centre mapping
    /// `fit_within` samples with (what image_proc's resize does to K).
    pub fn fitted(&self, max_width: u32, max_height: u32) -> Intrinsics {
        let (width, height) = fitted_size(self.width, self.height, max_width, max_height);
        if (width, height) == (self.width, self.height) {
            return *self;
        }
        let (sx, sy) = (width as f64 / self.width as f64, height as f64 / self.height as f64);
        // Input pixel u lands at (u + 0.5) * s - 0.5.
        let k = self.k;
        Intrinsics {
            k: [k[0] * sx, k[1] * sx, (k[2] + 0.5) * sx - 0.5, 0.0, k[4] * sy, (k[5] + 0.5) * sy - 0.5, 0.0, 0.0, 1.0],
            width,
            height,
        }
    }
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
    fn fit_within_keeps_aspect_without_padding() {
        let img = Rgb8 { width: 4, height: 2, data: vec![200; 24] };
        let out = fit_within(&img, 4, 4);
        assert_eq!((out.width, out.height), (4, 2));
        let out = fit_within(&img, 2, 4);
        assert_eq!((out.width, out.height), (2, 1));
        assert!(out.data.iter().all(|&v| v == 200));
        assert_eq!(fitted_size(640, 480, 416, 416), (416, 312));
        assert_eq!(fitted_size(1920, 1080, 640, 640), (640, 360));
    }

    #[test]
    fn fitted_intrinsics_project_where_fit_within_puts_the_pixel() {
        // A bright block at (u, v) of a 640×480 image: fitted into 416×416 (→ 416×312) it
        // must sit where the fitted intrinsics project the same ray.
        let k = Intrinsics { k: [500.0, 0.0, 330.0, 0.0, 480.0, 230.0, 0.0, 0.0, 1.0], width: 640, height: 480 };
        let (u, v) = (500u32, 100u32);
        let mut img = Rgb8 { width: 640, height: 480, data: vec![0; 640 * 480 * 3] };
        for dy in 0..4 {
            for dx in 0..4 {
                let i = (((v + dy) * 640 + u + dx) * 3) as usize;
                img.data[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let out = fit_within(&img, 416, 416);
        let fk = k.fitted(416, 416);
        assert_eq!((fk.width, fk.height), (out.width, out.height));
        // The ray through the centre of the 4×4 block, in normalized coordinates.
        let (x, y) = ((u as f64 + 1.5 - k.k[2]) / k.k[0], (v as f64 + 1.5 - k.k[5]) / k.k[4]);
        let (pu, pv) = (fk.k[0] * x + fk.k[2], fk.k[4] * y + fk.k[5]);
        // The brightness-weighted centre of the block in the fitted image.
        let (mut sum, mut su, mut sv) = (0.0, 0.0, 0.0);
        for yy in 0..out.height {
            for xx in 0..out.width {
                let b = out.data[((yy * out.width + xx) * 3) as usize] as f64;
                sum += b;
                su += b * xx as f64;
                sv += b * yy as f64;
            }
        }
        let (cu, cv) = (su / sum, sv / sum);
        assert!(
            (cu - pu).abs() < 0.3 && (cv - pv).abs() < 0.3,
            "fit_within put it at ({cu}, {cv}), K' says ({pu}, {pv})"
        );
        assert_eq!(k.fitted(640, 480), k);
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
