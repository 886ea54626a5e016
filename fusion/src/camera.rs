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

/// The most pixels a compressed image may decode to (8192 × 8192: 201 MB of rgb8). A few
/// hundred bytes of JPEG or PNG header can claim 65 535² pixels; this is checked before any
/// pixel buffer is allocated.
pub const MAX_DECODED_PIXELS: u64 = 8192 * 8192;

/// A sensor_msgs/CompressedImage's data → packed rgb8.
///
/// image_transport's `compressed` plugin writes `format` as "<raw encoding>; jpeg compressed
/// <encoding>" (older drivers: just "jpeg" or "png"), and its own subscriber ignores it and
/// decodes by content (cv::imdecode): so do we, JPEG or PNG by their magic bytes. Both file
/// formats store RGB (or grey), whatever the camera's raw encoding was: a "bgr8" source comes
/// back as rgb8 here. Depth images (`compressedDepth`) are not camera images and are refused.
/// A truncated or corrupt file is refused, never half-decoded (strict JPEG: a file OpenCV
/// would decode with a warning, e.g. stray bytes between markers, is refused too).
///
/// With `expected` (the size the intrinsics are for) a file of another size is refused from
/// its header, before a pixel is decoded: a few kB claiming 8192 × 8192 would otherwise cost
/// hundreds of MB and a decode per message. A panic inside the third-party decoders is
/// refused as `undecodable` rather than taking the node's worker down.
pub fn decode_compressed(format: &str, data: &[u8], expected: Option<(u32, u32)>) -> Result<Rgb8, Reject> {
    if format.contains("compressedDepth") {
        return Err(Reject::UnsupportedCompression(format.into()));
    }
    let (codec, decode): (&'static str, fn(&[u8], Option<(u32, u32)>) -> Result<Rgb8, Reject>) =
        if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            ("JPEG", decode_jpeg)
        } else if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            ("PNG", decode_png)
        } else if data.is_empty() {
            return Err(Reject::Empty);
        } else {
            return Err(Reject::UnsupportedCompression(format.into()));
        };
    std::panic::catch_unwind(|| decode(data, expected))
        .unwrap_or_else(|_| Err(Reject::Undecodable { codec, why: "the decoder panicked".into() }))
}

/// The header's size against the pixel limit and the expected size, before decoding.
fn check_decoded_size(width: u64, height: u64, expected: Option<(u32, u32)>) -> Result<(), Reject> {
    if width == 0 || height == 0 {
        return Err(Reject::Empty);
    }
    if width * height > MAX_DECODED_PIXELS {
        return Err(Reject::TooLarge { width, height, limit: MAX_DECODED_PIXELS });
    }
    check_intrinsics_size(width as u32, height as u32, expected)
}

fn decode_jpeg(data: &[u8], expected: Option<(u32, u32)>) -> Result<Rgb8, Reject> {
    use zune_jpeg::zune_core::{colorspace::ColorSpace, options::DecoderOptions};
    let bad = |why: String| Reject::Undecodable { codec: "JPEG", why };
    // Strict: zune-jpeg otherwise fills a truncated scan with grey and calls it a frame.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true)
        .set_max_width(u16::MAX as usize)
        .set_max_height(u16::MAX as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(data), options);
    decoder.decode_headers().map_err(|e| bad(e.to_string()))?;
    let info = decoder.info().ok_or_else(|| bad("no frame header".into()))?;
    let (width, height) = (info.width as u64, info.height as u64);
    check_decoded_size(width, height, expected)?;
    let pixels = decoder.decode().map_err(|e| bad(e.to_string()))?;
    if pixels.len() as u64 != width * height * 3 {
        return Err(bad(format!("{} bytes decoded for {width}×{height} rgb", pixels.len())));
    }
    Ok(Rgb8 { width: width as u32, height: height as u32, data: pixels })
}

fn decode_png(data: &[u8], expected: Option<(u32, u32)>) -> Result<Rgb8, Reject> {
    use png::{BitDepth, ColorType, Transformations};
    let bad = |why: String| Reject::Undecodable { codec: "PNG", why };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(data));
    let (width, height) = {
        let info = decoder.read_header_info().map_err(|e| bad(e.to_string()))?;
        (info.width as u64, info.height as u64)
    };
    check_decoded_size(width, height, expected)?;
    // Room for the 16-bit RGBA a PNG may hold before the transformations below shrink it.
    decoder.set_limits(png::Limits { bytes: (MAX_DECODED_PIXELS * 8) as usize });
    // Palette and low-bit grey to 8 bits, 16-bit samples to their high byte (mono16 and
    // rgb16 cameras: the 8 bits that matter for a detector).
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    // The spec allows a palette of 1 to 256 three-byte entries; png 0.18.1 takes any PLTE
    // length and then panics expanding one that is not a multiple of 3 or is longer (found
    // by fuzzing: fuzz/regressions/compressed_image). Refused here, before it is expanded.
    if let Some(palette) = reader.info().palette.as_deref() {
        if palette.len() % 3 != 0 || palette.len() > 3 * 256 {
            return Err(bad(format!("palette of {} bytes: not 1 to 256 RGB entries", palette.len())));
        }
    }
    let size = reader.output_buffer_size().ok_or_else(|| bad("image too large for memory".into()))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    if frame.bit_depth != BitDepth::Eight {
        return Err(bad(format!("{:?} bit samples after expansion", frame.bit_depth)));
    }
    let channels = match frame.color_type {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => return Err(bad("palette left unexpanded".into())),
    };
    let (w, h, line) = (frame.width as usize, frame.height as usize, frame.line_size);
    if line < w * channels || buf.len() < line * h {
        return Err(bad(format!("{} bytes for {w}×{h}×{channels}", buf.len())));
    }
    let mut out = Vec::with_capacity(w * h * 3);
    for row in buf.chunks_exact(line).take(h) {
        for px in row[..w * channels].chunks_exact(channels) {
            // Alpha is dropped: a camera has no transparency to keep.
            match channels {
                1 | 2 => out.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => out.extend_from_slice(&px[..3]),
            }
        }
    }
    Ok(Rgb8 { width: frame.width, height: frame.height, data: out })
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

    /// The blocks the fixtures hold (fusion/testdata, written by Pillow 12.3, an encoder we did
    /// not write; its README says how): 8-pixel columns of red, green, blue and white, the lower half of each
    /// at half brightness.
    fn blocks(x: u32, y: u32) -> [u8; 3] {
        let c = [[220, 30, 30], [30, 200, 40], [20, 40, 210], [240, 240, 240]][(x / 8) as usize];
        if y < 8 {
            c
        } else {
            c.map(|v| v / 2)
        }
    }

    fn max_error(img: &Rgb8, want: impl Fn(u32, u32) -> [u8; 3]) -> u8 {
        let mut worst = 0;
        for y in 0..img.height {
            for x in 0..img.width {
                let i = ((y * img.width + x) * 3) as usize;
                for (c, w) in img.data[i..i + 3].iter().zip(want(x, y)) {
                    worst = worst.max(c.abs_diff(w));
                }
            }
        }
        worst
    }

    #[test]
    fn decodes_jpeg_and_png_files_another_encoder_wrote() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let grey = |x, y| {
            let [r, g, b] = blocks(x, y).map(f64::from);
            [(0.299 * r + 0.587 * g + 0.114 * b).round() as u8; 3]
        };
        let cases: [(&str, &dyn Fn(u32, u32) -> [u8; 3], u8); 6] = [
            ("blocks_32x16.jpg", &blocks, 6),
            ("blocks_32x16_progressive.jpg", &blocks, 6),
            ("blocks_32x16_grey.jpg", &grey, 6),
            ("blocks_32x16_cmyk.jpg", &blocks, 12),
            ("blocks_32x16.png", &blocks, 0),
            ("blocks_32x16_palette.png", &blocks, 0),
        ];
        for (file, want, tolerance) in cases {
            let data = std::fs::read(dir.join(file)).unwrap();
            let img = decode_compressed("rgb8; jpeg compressed bgr8", &data, Some((32, 16)))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!((img.width, img.height, img.data.len()), (32, 16, 32 * 16 * 3), "{file}");
            let err = max_error(&img, want);
            assert!(err <= tolerance, "{file}: a pixel is {err} off");
        }
    }

    fn png_bytes(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == png::ColorType::Indexed {
            enc.set_palette(vec![0, 0, 0, 250, 10, 20]);
        }
        enc.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    /// A palette PNG from the encoder with its PLTE chunk replaced by `palette` (CRC fixed):
    /// what the fuzzer found (fuzz/regressions/compressed_image: an 88-byte PLTE), with a
    /// valid CRC, as a crafted or corrupted-then-recomputed file would have.
    fn png_with_palette(palette: &[u8]) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= b as u32;
                for _ in 0..8 {
                    crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                }
            }
            !crc
        }
        let good = png_bytes(2, 1, png::ColorType::Indexed, png::BitDepth::Eight, &[0, 1]);
        let (mut out, mut at) = (good[..8].to_vec(), 8);
        while at + 12 <= good.len() {
            let len = u32::from_be_bytes(good[at..at + 4].try_into().unwrap()) as usize;
            let (kind, data) = (&good[at + 4..at + 8], &good[at + 8..at + 8 + len]);
            let data = if kind == b"PLTE" { palette } else { data };
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc32(&[kind, data].concat()).to_be_bytes());
            at += 12 + len;
        }
        out
    }

    #[test]
    fn a_png_whose_palette_is_not_whole_rgb_entries_is_refused_not_a_panic() {
        // The decoder's own chunk check refuses some lengths (over 256 entries); the rest
        // reached the palette expansion, which panicked on them.
        for bytes in [88, 4, 3 * 257] {
            match decode_compressed("png", &png_with_palette(&vec![7; bytes]), None) {
                Err(Reject::Undecodable { codec: "PNG", why }) => {
                    assert!(why.contains(&format!("palette of {bytes} bytes")) || bytes > 768, "{bytes}: {why}")
                }
                other => panic!("{bytes}: {other:?}"),
            }
        }
        // The same file with a whole palette decodes.
        assert!(decode_compressed("png", &png_with_palette(&[0, 0, 0, 250, 10, 20]), None).is_ok());
    }

    #[test]
    fn decodes_png_of_every_colour_type_to_rgb8() {
        use png::{BitDepth::*, ColorType::*};
        let rgb = decode_compressed("png", &png_bytes(2, 1, Rgb, Eight, &[1, 2, 3, 4, 5, 6]), None).unwrap();
        assert_eq!(rgb, Rgb8 { width: 2, height: 1, data: vec![1, 2, 3, 4, 5, 6] });
        let rgba = decode_compressed("png", &png_bytes(2, 1, Rgba, Eight, &[1, 2, 3, 0, 4, 5, 6, 255]), None).unwrap();
        assert_eq!(rgba.data, vec![1, 2, 3, 4, 5, 6]);
        let grey = decode_compressed("mono8; png compressed mono8", &png_bytes(2, 1, Grayscale, Eight, &[7, 9]), None)
            .unwrap();
        assert_eq!(grey.data, vec![7, 7, 7, 9, 9, 9]);
        // mono16 keeps its high byte; a palette is expanded.
        let grey16 =
            decode_compressed("png", &png_bytes(2, 1, Grayscale, Sixteen, &[0x12, 0x34, 0xAB, 0xCD]), None).unwrap();
        assert_eq!(grey16.data, vec![0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB]);
        let indexed = decode_compressed("png", &png_bytes(2, 1, Indexed, Eight, &[1, 0]), None).unwrap();
        assert_eq!(indexed.data, vec![250, 10, 20, 0, 0, 0]);
        // Rows of odd length (3 × 3 grey) come out packed.
        let odd =
            decode_compressed("png", &png_bytes(3, 3, Grayscale, Eight, &[1, 2, 3, 4, 5, 6, 7, 8, 9]), None).unwrap();
        assert_eq!(odd.data.iter().step_by(3).copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn corrupt_truncated_and_oversized_compressed_images_are_refused_by_name() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let jpeg = std::fs::read(dir.join("blocks_32x16.jpg")).unwrap();
        let png = png_bytes(2, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[1, 2, 3, 4, 5, 6]);
        let why = |format: &str, data: &[u8]| decode_compressed(format, data, None).unwrap_err().as_str();
        assert_eq!(why("jpeg", &jpeg[..jpeg.len() / 2]), "undecodable");
        // Cut inside the entropy-coded scan: a tolerant decoder fills the rest with grey.
        assert_eq!(why("jpeg", &jpeg[..jpeg.len() - 40]), "undecodable");
        assert_eq!(why("png", &png[..png.len() - 20]), "undecodable");
        let mut flipped = png.clone();
        let n = flipped.len();
        flipped[n - 20] ^= 0xFF; // inside the image data: its CRC no longer holds
        assert_eq!(why("png", &flipped), "undecodable");
        assert_eq!(why("tiff", b"II*\0garbage"), "unsupported_compression");
        assert_eq!(why("jpeg", b""), "empty");
        assert_eq!(why("16UC1; compressedDepth png", &png), "unsupported_compression");
        // A header claiming 60000 × 60000 pixels is refused before any buffer is made.
        let mut huge = png.clone();
        huge[16..24].copy_from_slice(&[0, 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60]);
        let crc = png_crc(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(why("png", &huge), "too_large");
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline SOF0");
        let mut huge = jpeg.clone();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        assert_eq!(why("jpeg", &huge), "too_large");
        // A file of another size than the intrinsics' is refused from its header.
        let other = |data: &[u8]| decode_compressed("", data, Some((640, 480))).unwrap_err().as_str();
        assert_eq!(other(&jpeg), "size_mismatch_intrinsics");
        assert_eq!(other(&png), "size_mismatch_intrinsics");
    }

    /// PNG's chunk CRC (ISO 3309), so a test can write a valid header of its own.
    fn png_crc(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
            }
        }
        !crc
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
