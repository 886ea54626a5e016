//! Labelled frames from a COCO-format folder (`annotations.json` + the images it names,
//! PNG or JPEG), so the detector can be scored on frames we did not render: a user's own
//! labelled camera images, or `scripts/cross_renderer.py`'s independent scenes.
//!
//! Categories map onto the detector's classes by name (person/pedestrian → person;
//! car/truck/bus/van/vehicle/motorcycle → vehicle; obstacle/cone/traffic_cone/barrel/
//! barrier → obstacle). Boxes of any other category, `iscrowd: 1` boxes and boxes smaller
//! than `data`'s difficult rule are "difficult": neither a hit nor a false alarm.
use crate::data::{GtBox, LabelledFrame, MIN_BOX_HEIGHT, MIN_VISIBLE_PIXELS};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not COCO annotations JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("image {path}: {why}")]
    Image { path: PathBuf, why: String },
}

#[derive(Deserialize)]
struct Annotations {
    images: Vec<Image>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Image {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct Annotation {
    image_id: u64,
    category_id: u64,
    /// x, y, width, height (pixels).
    bbox: [f32; 4],
    #[serde(default)]
    iscrowd: u8,
    #[serde(default)]
    area: Option<f32>,
}

#[derive(Deserialize)]
struct Category {
    id: u64,
    name: String,
}

/// The detector class index a category name stands for, if any.
pub fn class_of(name: &str) -> Option<usize> {
    match name.to_ascii_lowercase().replace([' ', '-'], "_").as_str() {
        "person" | "pedestrian" | "people" => Some(0),
        "vehicle" | "car" | "truck" | "bus" | "van" | "motorcycle" => Some(1),
        "obstacle" | "cone" | "traffic_cone" | "barrel" | "barrier" | "crate" => Some(2),
        _ => None,
    }
}

/// Decodes a PNG (8/16-bit gray, gray+alpha, RGB, RGBA, palette) or JPEG file to rgb8.
pub fn read_rgb(path: &Path) -> Result<(usize, usize, Vec<u8>), CocoError> {
    let bytes = std::fs::read(path).map_err(|source| CocoError::Io { path: path.into(), source })?;
    let bad = |why: String| CocoError::Image { path: path.into(), why };
    if bytes.starts_with(b"\x89PNG") {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
        let mut buf = vec![0; reader.output_buffer_size().ok_or_else(|| bad("image too large".into()))?];
        let info = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
        let (w, h) = (info.width as usize, info.height as usize);
        let px = &buf[..info.buffer_size()];
        let rgb = match info.color_type {
            png::ColorType::Rgb => px.to_vec(),
            png::ColorType::Rgba => px.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
            png::ColorType::Grayscale => px.iter().flat_map(|&g| [g, g, g]).collect(),
            png::ColorType::GrayscaleAlpha => px.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
            other => return Err(bad(format!("unsupported PNG colour type {other:?}"))),
        };
        Ok((w, h, rgb))
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let options = zune_jpeg::zune_core::options::DecoderOptions::default()
            .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB);
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(&bytes), options);
        let rgb = decoder.decode().map_err(|e| bad(format!("{e:?}")))?;
        let (w, h) = decoder.dimensions().ok_or_else(|| bad("no dimensions".into()))?;
        Ok((w, h, rgb))
    } else {
        Err(bad("neither PNG nor JPEG".into()))
    }
}

/// Every image of a COCO annotations file with its boxes (images are read from the
/// directory the file is in, or `file_name` as given when absolute).
pub fn load(annotations: &Path) -> Result<Vec<LabelledFrame>, CocoError> {
    let path = annotations.to_path_buf();
    let text = std::fs::read_to_string(&path).map_err(|source| CocoError::Io { path: path.clone(), source })?;
    let coco: Annotations =
        serde_json::from_str(&text).map_err(|source| CocoError::Json { path: path.clone(), source })?;
    let dir = annotations.parent().unwrap_or(Path::new("."));
    let classes: std::collections::BTreeMap<u64, Option<usize>> =
        coco.categories.iter().map(|c| (c.id, class_of(&c.name))).collect();
    let mut frames = Vec::with_capacity(coco.images.len());
    for image in &coco.images {
        let file = dir.join(&image.file_name);
        let (width, height, rgb) = read_rgb(&file)?;
        let boxes = coco
            .annotations
            .iter()
            .filter(|a| a.image_id == image.id)
            .flat_map(|a| {
                let [x, y, w, h] = a.bbox;
                let bbox = [x, y, x + w, y + h];
                let small = h < MIN_BOX_HEIGHT || a.area.unwrap_or(w * h) < MIN_VISIBLE_PIXELS as f32;
                let difficult = a.iscrowd != 0 || small;
                match classes.get(&a.category_id).copied().flatten() {
                    Some(class) => vec![GtBox { class, bbox, difficult }],
                    // A category the detector has no class for: ignored for every class.
                    None => (0..crate::detector::CLASSES.len())
                        .map(|class| GtBox { class, bbox, difficult: true })
                        .collect(),
                }
            })
            .collect();
        frames.push(LabelledFrame { width, height, rgb, boxes, scene: image.file_name.clone(), t: 0.0 });
    }
    Ok(frames)
}

/// Writes frames as a COCO folder that [`load`] reads back: `DIR/images/NNNNN.png` and
/// `DIR/annotations.json` (difficult boxes as `iscrowd: 1`), so a set we render can be
/// looked at, or scored by another tool.
pub fn save(frames: &[LabelledFrame], dir: &Path) -> Result<(), CocoError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CocoError::Io { path, source }
    };
    std::fs::create_dir_all(dir.join("images")).map_err(io(&dir.join("images")))?;
    let (mut images, mut annotations) = (vec![], vec![]);
    for (i, f) in frames.iter().enumerate() {
        let name = format!("images/{i:05}.png");
        let path = dir.join(&name);
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), f.width as u32, f.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder
            .write_header()
            .and_then(|mut w| w.write_image_data(&f.rgb))
            .map_err(|e| CocoError::Image { path: path.clone(), why: e.to_string() })?;
        images.push(serde_json::json!({"id": i + 1, "file_name": name, "width": f.width, "height": f.height,
                                        "scene": f.scene, "t": f.t}));
        for b in &f.boxes {
            let [x0, y0, x1, y1] = b.bbox;
            annotations.push(serde_json::json!({
                "id": annotations.len() + 1, "image_id": i + 1, "category_id": b.class + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": b.difficult as u8,
            }));
        }
    }
    let categories: Vec<_> = crate::detector::CLASSES
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({"id": i + 1, "name": c.as_str()}))
        .collect();
    let json = serde_json::json!({"images": images, "annotations": annotations, "categories": categories});
    let path = dir.join("annotations.json");
    std::fs::write(&path, json.to_string()).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_set_loads_back_with_the_same_pixels_and_boxes() {
        let dir = std::env::temp_dir().join(format!("coco_save_{}", std::process::id()));
        let frames: Vec<LabelledFrame> =
            (0..2u64).map(|i| crate::data::scene_frame(&crate::data::EVAL_SEEDS, i)).collect();
        save(&frames, &dir).unwrap();
        let back = load(&dir.join("annotations.json")).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in frames.iter().zip(&back) {
            assert_eq!((a.width, a.height), (b.width, b.height));
            assert!(a.rgb == b.rgb, "pixels differ");
            let key = |g: &GtBox| (g.class, g.bbox.map(|v| v.round() as i32), g.difficult);
            assert_eq!(a.boxes.iter().map(key).collect::<Vec<_>>(), b.boxes.iter().map(key).collect::<Vec<_>>());
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn category_names_map_to_classes() {
        assert_eq!(class_of("Person"), Some(0));
        assert_eq!(class_of("truck"), Some(1));
        assert_eq!(class_of("traffic cone"), Some(2));
        assert_eq!(class_of("dog"), None);
    }

    #[test]
    fn a_coco_folder_loads_with_png_and_reports_bad_files() {
        let dir = std::env::temp_dir().join(format!("coco-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A 4x2 RGB PNG written with the png crate's encoder.
        let px: Vec<u8> = (0..4 * 2 * 3).map(|i| (i * 10) as u8).collect();
        {
            let f = std::fs::File::create(dir.join("a.png")).unwrap();
            let mut e = png::Encoder::new(f, 4, 2);
            e.set_color(png::ColorType::Rgb);
            e.set_depth(png::BitDepth::Eight);
            e.write_header().unwrap().write_image_data(&px).unwrap();
        }
        std::fs::write(
            dir.join("annotations.json"),
            r#"{"images": [{"id": 7, "file_name": "a.png", "width": 4, "height": 2}],
                "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [0, 0, 40, 20]},
                                {"id": 2, "image_id": 7, "category_id": 9, "bbox": [1, 1, 30, 30]},
                                {"id": 3, "image_id": 7, "category_id": 3, "bbox": [1, 1, 30, 30], "iscrowd": 1}],
                "categories": [{"id": 3, "name": "car"}, {"id": 9, "name": "dog"}]}"#,
        )
        .unwrap();
        let frames = load(&dir.join("annotations.json")).unwrap();
        assert_eq!((frames.len(), frames[0].width, frames[0].height), (1, 4, 2));
        assert_eq!(frames[0].rgb, px);
        let b = &frames[0].boxes;
        assert_eq!((b[0].class, b[0].bbox, b[0].difficult), (1, [0.0, 0.0, 40.0, 20.0], false));
        assert_eq!(b.len(), 1 + 3 + 1, "a dog is ignored for every class");
        assert!(b[1..].iter().all(|g| g.difficult));
        std::fs::write(dir.join("a.png"), b"\x89PNG garbage").unwrap();
        assert!(matches!(load(&dir.join("annotations.json")), Err(CocoError::Image { .. })));
        std::fs::write(dir.join("annotations.json"), "{").unwrap();
        assert!(matches!(load(&dir.join("annotations.json")), Err(CocoError::Json { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}
