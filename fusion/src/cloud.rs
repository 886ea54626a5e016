//! sensor_msgs/PointCloud2 without ROS: layout validation, decoding of named fields in
//! any numeric datatype and either byte order, and the LiDAR/radar preprocessing.
use crate::ingest::Reject;
use nalgebra::{Isometry3, Point3};
use std::collections::HashMap;

/// sensor_msgs/PointField datatypes.
pub mod datatype {
    pub const INT8: u8 = 1;
    pub const UINT8: u8 = 2;
    pub const INT16: u8 = 3;
    pub const UINT16: u8 = 4;
    pub const INT32: u8 = 5;
    pub const UINT32: u8 = 6;
    pub const FLOAT32: u8 = 7;
    pub const FLOAT64: u8 = 8;
}

fn datatype_size(dt: u8) -> Option<u32> {
    use datatype::*;
    Some(match dt {
        INT8 | UINT8 => 1,
        INT16 | UINT16 => 2,
        INT32 | UINT32 | FLOAT32 => 4,
        FLOAT64 => 8,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct PointField {
    pub name: String,
    pub offset: u32,
    pub datatype: u8,
    pub count: u32,
}

impl PointField {
    pub fn f32(name: &str, offset: u32) -> Self {
        Self { name: name.into(), offset, datatype: datatype::FLOAT32, count: 1 }
    }
}

/// A borrowed PointCloud2 body (the header is checked separately).
#[derive(Debug, Clone, Copy)]
pub struct CloudRef<'a> {
    pub height: u32,
    pub width: u32,
    pub fields: &'a [PointField],
    pub is_bigendian: bool,
    pub point_step: u32,
    pub row_step: u32,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
struct FieldReader {
    offset: usize,
    datatype: u8,
}

/// A validated cloud with readers for the requested fields, in request order.
pub struct Decoder<'a> {
    cloud: CloudRef<'a>,
    readers: Vec<Option<FieldReader>>,
}

/// Checks the layout against the data and prepares readers for `required` and `optional`
/// fields (optional ones read as `None` when absent).
pub fn decoder<'a>(cloud: CloudRef<'a>, required: &[&str], optional: &[&str]) -> Result<Decoder<'a>, Reject> {
    if cloud.point_step == 0 {
        return Err(Reject::BadPointStep);
    }
    let mut spans: Vec<(u32, u32, &str)> = Vec::with_capacity(cloud.fields.len());
    for f in cloud.fields {
        let size = datatype_size(f.datatype).filter(|_| f.count >= 1).ok_or_else(|| Reject::BadFieldDatatype {
            name: f.name.clone(),
            datatype: f.datatype,
            count: f.count,
        })?;
        let bytes = size as u64 * f.count as u64;
        if f.offset as u64 + bytes > cloud.point_step as u64 {
            return Err(Reject::FieldOutOfBounds {
                name: f.name.clone(),
                offset: f.offset,
                size: bytes as u32,
                point_step: cloud.point_step,
            });
        }
        spans.push((f.offset, f.offset + bytes as u32, &f.name));
    }
    spans.sort();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(Reject::FieldsOverlap(pair[0].2.into(), pair[1].2.into()));
        }
    }
    let min_row = cloud.width as u64 * cloud.point_step as u64;
    if (cloud.row_step as u64) < min_row {
        return Err(Reject::BadRowStep { row_step: cloud.row_step, width: cloud.width, point_step: cloud.point_step });
    }
    let expected = cloud.row_step as u64 * cloud.height as u64;
    if cloud.data.len() as u64 != expected {
        return Err(Reject::DataSizeMismatch { got: cloud.data.len(), expected });
    }
    let find = |name: &str| {
        cloud
            .fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| FieldReader { offset: f.offset as usize, datatype: f.datatype })
    };
    let mut readers = Vec::with_capacity(required.len() + optional.len());
    for name in required {
        readers.push(Some(find(name).ok_or_else(|| Reject::MissingField((*name).into()))?));
    }
    readers.extend(optional.iter().map(|n| find(n)));
    Ok(Decoder { cloud, readers })
}

impl<'a> Decoder<'a> {
    pub fn len(&self) -> usize {
        self.cloud.width as usize * self.cloud.height as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has(&self, i: usize) -> bool {
        self.readers[i].is_some()
    }

    /// Calls `f` with every point's requested fields (absent optional fields read as NaN).
    pub fn for_each(&self, mut f: impl FnMut(&[f64])) {
        let c = &self.cloud;
        let mut values = vec![0.0f64; self.readers.len()];
        for row in 0..c.height as usize {
            let row_base = row * c.row_step as usize;
            for col in 0..c.width as usize {
                let p = &c.data[row_base + col * c.point_step as usize..];
                for (v, r) in values.iter_mut().zip(&self.readers) {
                    *v = match r {
                        Some(r) => read_value(&p[r.offset..], r.datatype, c.is_bigendian),
                        None => f64::NAN,
                    };
                }
                f(&values);
            }
        }
    }
}

fn read_value(b: &[u8], dt: u8, be: bool) -> f64 {
    use datatype::*;
    macro_rules! rd {
        ($t:ty, $n:expr) => {{
            let a: [u8; $n] = b[..$n].try_into().expect("bounds checked by decoder()");
            (if be { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }) as f64
        }};
    }
    match dt {
        INT8 => b[0] as i8 as f64,
        UINT8 => b[0] as f64,
        INT16 => rd!(i16, 2),
        UINT16 => rd!(u16, 2),
        INT32 => rd!(i32, 4),
        UINT32 => rd!(u32, 4),
        FLOAT32 => rd!(f32, 4),
        FLOAT64 => rd!(f64, 8),
        _ => f64::NAN, // unreachable: datatypes are checked by decoder()
    }
}

/// One LiDAR return as the pipeline sees it: in the base frame, after the ingest filters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LidarPoint {
    pub x: f32,
    pub y: f32,
    pub z: f32,
    pub intensity: f32,
    /// Seconds from the cloud's stamp to this return (0 when the driver gives no per-point
    /// time); what deskew moves the point by.
    pub t: f32,
}

impl LidarPoint {
    pub fn xyz(&self) -> [f32; 3] {
        [self.x, self.y, self.z]
    }
}

/// The PointCloud2 field order `x y z intensity t`.
impl From<[f32; 5]> for LidarPoint {
    fn from([x, y, z, intensity, t]: [f32; 5]) -> Self {
        Self { x, y, z, intensity, t }
    }
}

impl From<LidarPoint> for [f32; 5] {
    fn from(p: LidarPoint) -> Self {
        [p.x, p.y, p.z, p.intensity, p.t]
    }
}

/// One radar detection as the pipeline sees it: position in the base frame, the radial
/// (Doppler) velocity in m/s as the sensor measured it (negative = closing), and the radar
/// cross-section in dBsm.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RadarTarget {
    pub x: f32,
    pub y: f32,
    pub z: f32,
    pub doppler: f32,
    pub rcs: f32,
}

/// The PointCloud2 field order `x y z doppler rcs`.
impl From<[f32; 5]> for RadarTarget {
    fn from([x, y, z, doppler, rcs]: [f32; 5]) -> Self {
        Self { x, y, z, doppler, rcs }
    }
}

impl From<RadarTarget> for [f32; 5] {
    fn from(t: RadarTarget) -> Self {
        [t.x, t.y, t.z, t.doppler, t.rcs]
    }
}

/// The LiDAR points of a cloud with `x y z intensity` and an optional `t` (an ingest node's
/// output, or any cloud with those fields).
pub fn decode_lidar_points(cloud: CloudRef<'_>) -> Result<Vec<LidarPoint>, Reject> {
    let d = decoder(cloud, &["x", "y", "z", "intensity"], &["t"])?;
    let has_t = d.has(4);
    let mut out = Vec::with_capacity(d.len());
    d.for_each(|v| {
        out.push(LidarPoint {
            x: v[0] as f32,
            y: v[1] as f32,
            z: v[2] as f32,
            intensity: v[3] as f32,
            t: if has_t { v[4] as f32 } else { 0.0 },
        })
    });
    Ok(out)
}

/// The radar targets of a cloud with `x y z doppler rcs` (radar_ingest's output).
pub fn decode_radar_targets(cloud: CloudRef<'_>) -> Result<Vec<RadarTarget>, Reject> {
    let d = decoder(cloud, &["x", "y", "z", "doppler", "rcs"], &[])?;
    let mut out = Vec::with_capacity(d.len());
    d.for_each(|v| {
        out.push(RadarTarget { x: v[0] as f32, y: v[1] as f32, z: v[2] as f32, doppler: v[3] as f32, rcs: v[4] as f32 })
    });
    Ok(out)
}

/// An unorganized little-endian float32 cloud: the output of every ingest node.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatCloud {
    pub field_names: Vec<&'static str>,
    /// Point-major values, `field_names.len()` per point.
    pub values: Vec<f32>,
}

impl FloatCloud {
    pub fn new(field_names: Vec<&'static str>) -> Self {
        Self { field_names, values: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.field_names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn point(&self, i: usize) -> &[f32] {
        let n = self.field_names.len();
        &self.values[i * n..(i + 1) * n]
    }

    pub fn fields(&self) -> Vec<PointField> {
        self.field_names.iter().enumerate().map(|(i, n)| PointField::f32(n, 4 * i as u32)).collect()
    }

    /// This cloud's points as LiDAR returns (`preprocess_lidar`'s layout: `t` optional).
    pub fn lidar_points(&self) -> Vec<LidarPoint> {
        let has_t = self.field_names.len() == 5;
        (0..self.len())
            .map(|i| {
                let p = self.point(i);
                LidarPoint { x: p[0], y: p[1], z: p[2], intensity: p[3], t: if has_t { p[4] } else { 0.0 } }
            })
            .collect()
    }

    /// This cloud's points as radar targets (`preprocess_radar`'s layout).
    pub fn radar_targets(&self) -> Vec<RadarTarget> {
        (0..self.len())
            .map(|i| {
                let p = self.point(i);
                RadarTarget { x: p[0], y: p[1], z: p[2], doppler: p[3], rcs: p[4] }
            })
            .collect()
    }

    pub fn point_step(&self) -> u32 {
        4 * self.field_names.len() as u32
    }

    /// The PointCloud2 `data` bytes (little endian, height 1, dense).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.values.len() * 4);
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// Rejects the cloud when too many points are NaN/Inf; fewer are dropped and counted.
fn check_non_finite(non_finite: usize, total: usize, max_ratio: f64) -> Result<(), Reject> {
    if total > 0 && non_finite as f64 > max_ratio * total as f64 {
        return Err(Reject::NonFinite { non_finite, total, limit: max_ratio * 100.0 });
    }
    Ok(())
}

/// A parameter struct of numbers, by name: the ingest node's typed config
/// (`sensor_fusion::config::Numbers`) declares its parameters from [`NumberParams::SCHEMA`]
/// and the struct's defaults, and `ros2 param set` on the running node and
/// `fusion_replay --ingest-params` go through [`NumberParams::set`], so names, defaults,
/// ranges and meanings live here once.
pub trait NumberParams: Default + Send + 'static {
    /// Name, range and meaning of each parameter, in declaration order.
    const SCHEMA: &'static [ParamSpec];
    fn get(&self, name: &str) -> Option<f64>;
    /// Refuses an unknown name or a value out of its range (the reason names both).
    fn set(&mut self, name: &str, value: f64) -> Result<(), String>;

    fn spec(name: &str) -> Option<&'static ParamSpec> {
        Self::SCHEMA.iter().find(|s| s.name == name)
    }
}

/// One number parameter: its name, the values it takes and what it means.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub range: Range,
    pub description: &'static str,
}

/// The values a number parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Finite,
    NonNegative,
    /// 0 ..= 1.
    Ratio,
}

impl Range {
    pub fn check(self, v: f64) -> Result<(), String> {
        let ok = match self {
            Range::Finite => v.is_finite(),
            Range::NonNegative => v >= 0.0,
            Range::Ratio => (0.0..=1.0).contains(&v),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("must be {}, got {v}", self.words()))
        }
    }

    fn words(self) -> &'static str {
        match self {
            Range::Finite => "a finite number",
            Range::NonNegative => ">= 0",
            Range::Ratio => "within [0, 1]",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Range::Finite => "any",
            Range::NonNegative => "≥ 0",
            Range::Ratio => "0 … 1",
        }
    }
}

macro_rules! number_params {
    ($ty:ty { $($name:literal => $field:ident: $range:ident, $description:literal),* $(,)? }) => {
        impl NumberParams for $ty {
            const SCHEMA: &'static [ParamSpec] =
                &[$(ParamSpec { name: $name, range: Range::$range, description: $description }),*];

            fn get(&self, name: &str) -> Option<f64> {
                match name {
                    $($name => Some(self.$field),)*
                    _ => None,
                }
            }

            fn set(&mut self, name: &str, value: f64) -> Result<(), String> {
                match name {
                    $($name => {
                        Range::$range.check(value).map_err(|why| format!("{name} {why}"))?;
                        self.$field = value;
                        Ok(())
                    })*
                    _ => Err(format!("unknown parameter '{name}'")),
                }
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LidarParams {
    /// Range limits in the sensor frame, metres.
    pub min_range: f64,
    pub max_range: f64,
    /// Height band kept in base_link (drops returns off the vehicle roof or far above it).
    pub min_z: f64,
    pub max_z: f64,
    /// Voxel edge for downsampling, metres; 0 keeps every point.
    pub voxel_size: f64,
    /// A cloud with more NaN/Inf points than this fraction is rejected.
    pub max_non_finite_ratio: f64,
}

impl Default for LidarParams {
    fn default() -> Self {
        Self { min_range: 0.5, max_range: 120.0, min_z: -3.0, max_z: 5.0, voxel_size: 0.0, max_non_finite_ratio: 0.5 }
    }
}

number_params!(LidarParams {
    "min_range" => min_range: NonNegative, "metres, sensor frame: nearer returns are cropped",
    "max_range" => max_range: NonNegative, "metres, sensor frame: farther returns are cropped",
    "min_z" => min_z: Finite, "metres, base_link: the bottom of the height band kept",
    "max_z" => max_z: Finite, "metres, base_link: the top of the height band kept",
    "voxel_size" => voxel_size: NonNegative, "metres: voxel downsampling edge (mean per voxel); 0 keeps every point",
    "max_non_finite_ratio" => max_non_finite_ratio: Ratio,
        "more NaN/Inf points than this fraction rejects the cloud; fewer are dropped and counted",
});

#[derive(Debug, Default, Clone, PartialEq)]
pub struct LidarCounts {
    pub points_in: u64,
    pub non_finite: u64,
    pub cropped: u64,
    pub points_out: u64,
}

/// LiDAR: decode x,y,z,intensity (+ per-point `t` when present), drop NaN/Inf points,
/// crop, transform into base_link, voxel-downsample. Output fields x,y,z,intensity[,t].
pub fn preprocess_lidar(
    cloud: CloudRef<'_>,
    sensor_to_base: &Isometry3<f64>,
    p: &LidarParams,
) -> Result<(FloatCloud, LidarCounts), Reject> {
    let dec = decoder(cloud, &["x", "y", "z", "intensity"], &["t"])?;
    if dec.is_empty() {
        return Err(Reject::Empty);
    }
    let has_t = dec.has(4);
    let mut out =
        FloatCloud::new(if has_t { vec!["x", "y", "z", "intensity", "t"] } else { vec!["x", "y", "z", "intensity"] });
    let mut counts = LidarCounts { points_in: dec.len() as u64, ..Default::default() };
    let (r2min, r2max) = (p.min_range * p.min_range, p.max_range * p.max_range);
    dec.for_each(|v| {
        if !(v[0].is_finite() && v[1].is_finite() && v[2].is_finite() && v[3].is_finite()) {
            counts.non_finite += 1;
            return;
        }
        let r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
        let b = sensor_to_base * Point3::new(v[0], v[1], v[2]);
        if r2 < r2min || r2 > r2max || b.z < p.min_z || b.z > p.max_z {
            counts.cropped += 1;
            return;
        }
        out.values.extend_from_slice(&[b.x as f32, b.y as f32, b.z as f32, v[3] as f32]);
        if has_t {
            out.values.push(if v[4].is_finite() { v[4] as f32 } else { 0.0 });
        }
    });
    check_non_finite(counts.non_finite as usize, dec.len(), p.max_non_finite_ratio)?;
    if p.voxel_size > 0.0 {
        out = voxel_downsample(&out, p.voxel_size);
    }
    counts.points_out = out.len() as u64;
    Ok((out, counts))
}

/// Mean of every field per occupied voxel, in the order voxels are first hit (so the
/// output is deterministic for a given input).
pub fn voxel_downsample(cloud: &FloatCloud, voxel: f64) -> FloatCloud {
    let n = cloud.field_names.len();
    let mut index: HashMap<(i32, i32, i32), usize> = HashMap::with_capacity(cloud.len() / 2);
    let mut sums: Vec<f64> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    let inv = 1.0 / voxel;
    for i in 0..cloud.len() {
        let p = cloud.point(i);
        let key = (
            (p[0] as f64 * inv).floor() as i32,
            (p[1] as f64 * inv).floor() as i32,
            (p[2] as f64 * inv).floor() as i32,
        );
        let slot = *index.entry(key).or_insert_with(|| {
            sums.extend(std::iter::repeat_n(0.0, n));
            counts.push(0);
            counts.len() - 1
        });
        for (s, v) in sums[slot * n..(slot + 1) * n].iter_mut().zip(p) {
            *s += *v as f64;
        }
        counts[slot] += 1;
    }
    let mut out = FloatCloud::new(cloud.field_names.clone());
    out.values.reserve(sums.len());
    for (slot, c) in counts.iter().enumerate() {
        out.values.extend(sums[slot * n..(slot + 1) * n].iter().map(|s| (s / *c as f64) as f32));
    }
    out
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RadarParams {
    pub min_rcs: f64,
    pub max_abs_doppler: f64,
    pub max_range: f64,
    pub max_non_finite_ratio: f64,
}

impl Default for RadarParams {
    fn default() -> Self {
        Self { min_rcs: -20.0, max_abs_doppler: 60.0, max_range: 200.0, max_non_finite_ratio: 0.5 }
    }
}

number_params!(RadarParams {
    "min_rcs" => min_rcs: Finite, "dBsm: weaker targets are filtered",
    "max_abs_doppler" => max_abs_doppler: NonNegative, "m/s: faster radial speeds are filtered",
    "max_range" => max_range: NonNegative, "metres: farther targets are filtered",
    "max_non_finite_ratio" => max_non_finite_ratio: Ratio,
        "more NaN/Inf targets than this fraction rejects the cloud; fewer are dropped and counted",
});

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RadarCounts {
    pub targets_in: u64,
    pub non_finite: u64,
    pub filtered: u64,
    pub targets_out: u64,
}

/// Radar: decode x,y,z,doppler,rcs, drop NaN/Inf targets, filter by RCS, |doppler| and
/// range, and move positions into base_link. `doppler` stays the radial velocity measured
/// by the sensor (its sign convention: positive = moving away).
pub fn preprocess_radar(
    cloud: CloudRef<'_>,
    sensor_to_base: &Isometry3<f64>,
    p: &RadarParams,
) -> Result<(FloatCloud, RadarCounts), Reject> {
    let dec = decoder(cloud, &["x", "y", "z", "doppler", "rcs"], &[])?;
    let mut out = FloatCloud::new(vec!["x", "y", "z", "doppler", "rcs"]);
    let mut counts = RadarCounts { targets_in: dec.len() as u64, ..Default::default() };
    dec.for_each(|v| {
        if v.iter().any(|x| !x.is_finite()) {
            counts.non_finite += 1;
            return;
        }
        let range = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if v[4] < p.min_rcs || v[3].abs() > p.max_abs_doppler || range > p.max_range {
            counts.filtered += 1;
            return;
        }
        let b = sensor_to_base * Point3::new(v[0], v[1], v[2]);
        out.values.extend_from_slice(&[b.x as f32, b.y as f32, b.z as f32, v[3] as f32, v[4] as f32]);
    });
    check_non_finite(counts.non_finite as usize, dec.len(), p.max_non_finite_ratio)?;
    counts.targets_out = out.len() as u64;
    Ok((out, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Translation3, UnitQuaternion, Vector3};

    fn xyzi_cloud(points: &[[f32; 4]], big_endian: bool) -> (Vec<PointField>, Vec<u8>) {
        let fields =
            ["x", "y", "z", "intensity"].iter().enumerate().map(|(i, n)| PointField::f32(n, 4 * i as u32)).collect();
        let mut data = Vec::new();
        for p in points {
            for v in p {
                data.extend_from_slice(&if big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
            }
        }
        (fields, data)
    }

    fn cref<'a>(fields: &'a [PointField], data: &'a [u8], n: u32, be: bool) -> CloudRef<'a> {
        CloudRef { height: 1, width: n, fields, is_bigendian: be, point_step: 16, row_step: 16 * n, data }
    }

    #[test]
    fn typed_points_read_the_fields_by_name_in_either_byte_order() {
        // A driver's cloud without per-point time: t is 0, not garbage.
        let (fields, data) = xyzi_cloud(&[[1.0, 2.0, 3.0, 40.0], [4.0, 5.0, 6.0, 70.0]], true);
        let points = decode_lidar_points(cref(&fields, &data, 2, true)).unwrap();
        assert_eq!(points[1], LidarPoint { x: 4.0, y: 5.0, z: 6.0, intensity: 70.0, t: 0.0 });
        // An ingest node's output read back: the same points and targets it holds.
        let mut lidar = FloatCloud::new(vec!["x", "y", "z", "intensity", "t"]);
        lidar.values = vec![1.0, 2.0, 3.0, 4.0, 0.05];
        let bytes = lidar.to_bytes();
        let fields = lidar.fields();
        let c = CloudRef { point_step: 20, row_step: 20, ..cref(&fields, &bytes, 1, false) };
        assert_eq!(decode_lidar_points(c).unwrap(), lidar.lidar_points());
        assert_eq!(lidar.lidar_points()[0].t, 0.05);
        let mut radar = FloatCloud::new(vec!["x", "y", "z", "doppler", "rcs"]);
        radar.values = vec![20.0, 1.0, 0.5, -3.0, 12.0];
        let (bytes, fields) = (radar.to_bytes(), radar.fields());
        let c = CloudRef { point_step: 20, row_step: 20, ..cref(&fields, &bytes, 1, false) };
        assert_eq!(
            decode_radar_targets(c).unwrap(),
            vec![RadarTarget { x: 20.0, y: 1.0, z: 0.5, doppler: -3.0, rcs: 12.0 }]
        );
        assert_eq!(radar.radar_targets(), decode_radar_targets(c).unwrap());
        // A LiDAR cloud is not a radar cloud.
        assert_eq!(
            decode_radar_targets(cref(&FloatCloud::new(vec!["x", "y", "z", "intensity"]).fields(), &[0; 16], 1, false))
                .err()
                .map(|r| r.as_str()),
            Some("missing_field")
        );
    }

    #[test]
    fn layout_errors_are_named() {
        let (fields, data) = xyzi_cloud(&[[1.0, 2.0, 0.0, 5.0]; 3], false);
        let ok = cref(&fields, &data, 3, false);
        assert!(decoder(ok, &["x"], &[]).is_ok());
        let reason = |c: CloudRef| decoder(c, &["x", "y", "z", "intensity"], &[]).err().unwrap().as_str();
        assert_eq!(reason(CloudRef { point_step: 0, ..ok }), "bad_point_step");
        assert_eq!(reason(CloudRef { point_step: 12, row_step: 36, ..ok }), "field_out_of_bounds");
        assert_eq!(reason(CloudRef { row_step: 40, ..ok }), "bad_row_step");
        assert_eq!(reason(CloudRef { data: &data[..40], ..ok }), "data_size_mismatch");
        assert_eq!(reason(CloudRef { width: 4, row_step: 64, ..ok }), "data_size_mismatch");
        let mut bad = fields.clone();
        bad[3].datatype = 9;
        assert_eq!(reason(CloudRef { fields: &bad, ..ok }), "bad_field_datatype");
        let mut bad = fields.clone();
        bad[3].offset = 6;
        assert_eq!(reason(CloudRef { fields: &bad, ..ok }), "fields_overlap");
        let bad: Vec<_> = fields[..3].to_vec();
        assert_eq!(reason(CloudRef { fields: &bad, ..ok }), "missing_field");
    }

    #[test]
    fn big_endian_and_padded_rows_decode_like_little_endian() {
        let pts = [[1.0, -2.0, 0.5, 7.0], [3.0, 4.0, -0.25, 9.0]];
        let (fields, le) = xyzi_cloud(&pts, false);
        let (_, be) = xyzi_cloud(&pts, true);
        let read = |c: CloudRef| {
            let mut v = vec![];
            decoder(c, &["x", "y", "z", "intensity"], &[]).unwrap().for_each(|p| v.push(p.to_vec()));
            v
        };
        assert_eq!(read(cref(&fields, &le, 2, false)), read(cref(&fields, &be, 2, true)));
        // An organized 2×1 cloud with 8 bytes of row padding.
        let mut padded = le[..16].to_vec();
        padded.extend_from_slice(&[0; 8]);
        padded.extend_from_slice(&le[16..]);
        padded.extend_from_slice(&[0; 8]);
        let org = CloudRef { height: 2, width: 1, row_step: 24, data: &padded, ..cref(&fields, &le, 2, false) };
        assert_eq!(read(org), read(cref(&fields, &le, 2, false)));
        assert_eq!(read(org)[1], vec![3.0, 4.0, -0.25, 9.0]);
    }

    #[test]
    fn lidar_transforms_crops_and_counts_non_finite() {
        let nan = f32::NAN;
        let pts = [[10.0, 0.0, 0.0, 1.0], [0.1, 0.0, 0.0, 1.0], [nan, 0.0, 0.0, 1.0], [5.0, 5.0, -1.0, 3.0]];
        let (fields, data) = xyzi_cloud(&pts, false);
        let t = Isometry3::from_parts(
            Translation3::new(1.0, 0.0, 1.8),
            UnitQuaternion::from_axis_angle(&Vector3::z_axis(), std::f64::consts::FRAC_PI_2),
        );
        let (out, counts) = preprocess_lidar(cref(&fields, &data, 4, false), &t, &LidarParams::default()).unwrap();
        assert_eq!(counts, LidarCounts { points_in: 4, non_finite: 1, cropped: 1, points_out: 2 });
        // (10,0,0) rotated +90° about z → (0,10,0), then translated.
        let p = out.point(0);
        assert!((p[0] - 1.0).abs() < 1e-5 && (p[1] - 10.0).abs() < 1e-5 && (p[2] - 1.8).abs() < 1e-5, "{p:?}");
        assert_eq!(out.field_names, vec!["x", "y", "z", "intensity"]);
        // Mostly NaN → rejected.
        let (fields, data) = xyzi_cloud(&[[nan, nan, nan, 0.0]; 4], false);
        let err = preprocess_lidar(cref(&fields, &data, 4, false), &t, &LidarParams::default()).unwrap_err();
        assert_eq!(err.as_str(), "non_finite");
    }

    #[test]
    fn voxel_downsample_averages_per_cell() {
        let mut c = FloatCloud::new(vec!["x", "y", "z", "intensity"]);
        c.values = vec![0.01, 0.01, 0.01, 2.0, 0.03, 0.03, 0.03, 4.0, 1.05, 0.0, 0.0, 1.0];
        let d = voxel_downsample(&c, 0.1);
        assert_eq!(d.len(), 2);
        assert!((d.point(0)[0] - 0.02).abs() < 1e-6 && (d.point(0)[3] - 3.0).abs() < 1e-6);
        assert_eq!(d.point(1), &[1.05, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn radar_filters_by_rcs_and_doppler() {
        let fields: Vec<_> = ["x", "y", "z", "doppler", "rcs"]
            .iter()
            .enumerate()
            .map(|(i, n)| PointField::f32(n, 4 * i as u32))
            .collect();
        let targets: [[f32; 5]; 3] =
            [[20.0, 1.0, 0.0, -3.0, 5.0], [30.0, 0.0, 0.0, 1.0, -40.0], [10.0, 0.0, 0.0, 200.0, 10.0]];
        let data: Vec<u8> = targets.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        let c = CloudRef {
            height: 1,
            width: 3,
            fields: &fields,
            is_bigendian: false,
            point_step: 20,
            row_step: 60,
            data: &data,
        };
        let (out, counts) =
            preprocess_radar(c, &Isometry3::translation(2.0, 0.0, 0.5), &RadarParams::default()).unwrap();
        assert_eq!(counts.filtered, 2);
        assert_eq!(out.point(0), &[22.0, 1.0, 0.5, -3.0, 5.0]);
    }
}
