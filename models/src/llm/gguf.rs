//! A reader for GGUF (versions 2 and 3): header, metadata key/values, tensor table and the
//! aligned data section. The whole file is read into memory once; tensors are views into it.
//! Every structural problem (bad magic, truncation, an offset past the end, an unknown value
//! type) is an error naming the file and what was wrong, never a panic.
use super::quant::GgmlType;
use super::LlmError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Any integer type as u64 (GGUF writers differ in which width they use).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table. `dims[0]` is the innermost (contiguous) dimension, as in
/// ggml: a weight matrix with `dims = [in, out]` is stored as `out` rows of `in` values.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the first byte relative to the start of the data section.
    pub offset: u64,
}

/// The longest metadata array accepted: a tokenizer's vocabulary or merges are < 1 M items;
/// 16 M u8 items would already decode to 512 MB of values.
const MAX_ARRAY_ITEMS: usize = 1 << 24;

impl TensorInfo {
    /// Saturates instead of wrapping: a garbage shape then fails the bounds check at parse
    /// time instead of passing it with a wrapped small number.
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
    pub fn num_bytes(&self) -> u64 {
        self.ggml_type.row_bytes(self.num_elements())
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl Into<String>) -> LlmError {
        LlmError::Gguf { path: self.path.to_path_buf(), reason: format!("{} (at byte {})", what.into(), self.pos) }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], LlmError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            self.err(format!("truncated: needs {n} more bytes, the file has {}", self.bytes.len() - self.pos))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, LlmError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, LlmError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, LlmError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, LlmError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len(&mut self, what: &str) -> Result<usize, LlmError> {
        let n = self.u64()?;
        // A length can never exceed the bytes left: this rejects garbage before allocating.
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(self.err(format!("{what} length {n} exceeds the file")));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String, LlmError> {
        let n = self.len("string")?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, LlmError> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::String(self.string()?),
            9 if depth == 0 => {
                let item_ty = self.u32()?;
                let n = self.len("array")?;
                // Every item takes at least this many bytes of the file: a length the rest of
                // the file cannot hold is refused before anything is reserved (a decoded
                // Value is ~32 bytes, so trusting `n` could reserve 32x the file size).
                let smallest = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                if n.saturating_mul(smallest) > self.bytes.len() - self.pos {
                    return Err(self.err(format!("array of {n} items of type {item_ty} exceeds the file")));
                }
                if n > MAX_ARRAY_ITEMS {
                    return Err(self.err(format!("array of {n} items exceeds the {MAX_ARRAY_ITEMS} we accept")));
                }
                let mut items = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            _ => return Err(self.err(format!("unknown metadata value type {ty}"))),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, LlmError> {
        let bytes = std::fs::read(path).map_err(|source| LlmError::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, bytes)
    }

    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, LlmError> {
        let mut c = Cursor { bytes: &bytes, pos: 0, path };
        if c.take(4).map_err(|_| c.err("not a GGUF file: shorter than its magic"))? != b"GGUF" {
            return Err(LlmError::Gguf {
                path: path.to_path_buf(),
                reason: "not a GGUF file (magic is not 'GGUF')".into(),
            });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!("GGUF version {version} is not supported (2 or 3)")));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c.value(ty, 0).map_err(|e| match e {
                LlmError::Gguf { path, reason } => {
                    LlmError::Gguf { path, reason: format!("metadata '{key}': {reason}") }
                }
                e => e,
            })?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.err(format!("tensor '{name}' has {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?;
            let ty = c.u32()?;
            let ggml_type = GgmlType::from_id(ty)
                .ok_or_else(|| c.err(format!("tensor '{name}' has unsupported ggml type {ty}")))?;
            let offset = c.u64()?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32) as usize;
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(c.err(format!("general.alignment {alignment} is not a power of two")));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.dims[0] % t.ggml_type.block_size() as u64 != 0 {
                return Err(c.err(format!(
                    "tensor '{}' row of {} values is not a whole number of {:?} blocks",
                    t.name, t.dims[0], t.ggml_type
                )));
            }
            let end = (data_start as u64).checked_add(t.offset).and_then(|s| s.checked_add(t.num_bytes()));
            if end.is_none_or(|e| e > bytes.len() as u64) {
                return Err(LlmError::Gguf {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor '{}' ({} bytes at data offset {}) lies past the end of the file ({} bytes): truncated?",
                        t.name,
                        t.num_bytes(),
                        t.offset,
                        bytes.len()
                    ),
                });
            }
        }
        Ok(GgufFile { path: path.to_path_buf(), version, metadata, tensors, bytes, data_start })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn missing(&self, key: &str, what: &str) -> LlmError {
        LlmError::Gguf { path: self.path.clone(), reason: format!("metadata '{key}' is missing or not {what}") }
    }
    pub fn u64(&self, key: &str) -> Result<u64, LlmError> {
        self.get(key).and_then(Value::as_u64).ok_or_else(|| self.missing(key, "an integer"))
    }
    pub fn f64(&self, key: &str) -> Result<f64, LlmError> {
        self.get(key).and_then(Value::as_f64).ok_or_else(|| self.missing(key, "a number"))
    }
    pub fn str(&self, key: &str) -> Result<&str, LlmError> {
        self.get(key).and_then(Value::as_str).ok_or_else(|| self.missing(key, "a string"))
    }
    pub fn array(&self, key: &str) -> Result<&[Value], LlmError> {
        self.get(key).and_then(Value::as_array).ok_or_else(|| self.missing(key, "an array"))
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, LlmError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| LlmError::Gguf { path: self.path.clone(), reason: format!("tensor '{name}' is missing") })
    }

    /// The raw bytes of a tensor (bounds were checked when the file was parsed).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_start + t.offset as usize;
        &self.bytes[start..start + t.num_bytes() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 header with no metadata and the given tensor table entries
    /// (name, dims, ggml type id, offset), followed by `data` bytes.
    fn file(tensors: &[(&str, &[u64], u32, u64)], kv: &[u8], n_kv: u64, data: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend(kv);
        for (name, dims, ty, offset) in tensors {
            b.extend((name.len() as u64).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        b.resize(b.len().div_ceil(32) * 32 + data, 0);
        b
    }

    fn parse(bytes: Vec<u8>) -> Result<GgufFile, LlmError> {
        GgufFile::parse(Path::new("test.gguf"), bytes)
    }

    #[test]
    fn a_well_formed_table_parses() {
        let g = parse(file(&[("w", &[32, 2], 8, 0)], &[], 0, 68)).unwrap();
        assert_eq!(g.tensors[0].num_bytes(), 68);
        assert_eq!(g.tensor_bytes(&g.tensors[0]).len(), 68);
    }

    #[test]
    fn a_shape_whose_size_overflows_is_refused_not_wrapped() {
        // 32 x 2^59 Q8_0 values: 2^64 / 32 * 34 bytes wraps to a small number in u64.
        let e = parse(file(&[("w", &[32, 1 << 59], 8, 0)], &[], 0, 64)).err().expect("refused");
        assert!(e.to_string().contains("past the end of the file"), "{e}");
        let e = parse(file(&[("w", &[u64::MAX, u64::MAX], 0, 0)], &[], 0, 64)).err().expect("refused");
        assert!(e.to_string().contains("past the end of the file"), "{e}");
    }

    #[test]
    fn a_garbage_array_length_is_refused_before_allocating() {
        // One metadata key: an array of 2^24 + 1 u8 items (the file holds them, but they
        // would decode to 512 MB), and one of 1000 strings the rest of the file cannot hold.
        for (item_ty, n, data) in [(0u32, (1u64 << 24) + 1, (1 << 24) + 64), (8, 1000, 4000)] {
            let mut kv = Vec::new();
            kv.extend(1u64.to_le_bytes());
            kv.push(b'k');
            kv.extend(9u32.to_le_bytes());
            kv.extend(item_ty.to_le_bytes());
            kv.extend(n.to_le_bytes());
            let e = parse(file(&[], &kv, 1, data)).err().expect("refused");
            assert!(e.to_string().contains("array of"), "{e}");
        }
    }
}
