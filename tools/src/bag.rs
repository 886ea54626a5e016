//! rosbag2 directories without ROS: `metadata.yaml` as rosbag2 writes it, MCAP storage
//! (read and write) and sqlite3 storage (read). Used by `fusion_bag`, and later by
//! `fusion_replay`, with no DDS involved.
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum BagError {
    #[error("{0}: no such bag (neither a rosbag2 directory nor a .mcap/.db3 file)")]
    NotFound(PathBuf),
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: metadata.yaml is not valid rosbag2 metadata: {msg}")]
    Metadata { path: PathBuf, msg: String },
    #[error("{path}: not a readable MCAP file ({msg})")]
    Mcap { path: PathBuf, msg: String },
    /// Writing a recording failed (the disk full, the device gone).
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write the MCAP file ({msg})")]
    McapWrite { path: PathBuf, msg: String },
    #[error("{path}: not a readable rosbag2 sqlite3 file ({msg})")]
    Sqlite { path: PathBuf, msg: String },
    #[error("{path}: unsupported storage '{storage}' (mcap and sqlite3 are supported)")]
    UnsupportedStorage { path: PathBuf, storage: String },
    #[error("{path}: compression '{mode}/{format}' is not supported")]
    UnsupportedCompression { path: PathBuf, mode: String, format: String },
}

pub type Result<T> = std::result::Result<T, BagError>;

// ---- metadata.yaml --------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Nanoseconds {
    pub nanoseconds: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SinceEpoch {
    pub nanoseconds_since_epoch: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMetadata {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub serialization_format: String,
    /// A YAML string up to version 8, a list of QoS maps from version 9: kept as read.
    #[serde(default = "empty_qos")]
    pub offered_qos_profiles: serde_norway::Value,
    #[serde(default)]
    pub type_description_hash: String,
}

fn empty_qos() -> serde_norway::Value {
    serde_norway::Value::Sequence(vec![])
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicWithCount {
    pub topic_metadata: TopicMetadata,
    pub message_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileInfo {
    pub path: String,
    pub starting_time: SinceEpoch,
    pub duration: Nanoseconds,
    pub message_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BagfileInformation {
    pub version: u32,
    pub storage_identifier: String,
    #[serde(default)]
    pub relative_file_paths: Vec<String>,
    pub duration: Nanoseconds,
    pub starting_time: SinceEpoch,
    pub message_count: u64,
    #[serde(default)]
    pub topics_with_message_count: Vec<TopicWithCount>,
    #[serde(default)]
    pub compression_format: String,
    #[serde(default)]
    pub compression_mode: String,
    #[serde(default)]
    pub files: Vec<FileInfo>,
    #[serde(default)]
    pub custom_data: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ros_distro: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub rosbag2_bagfile_information: BagfileInformation,
}

/// One topic of a bag: name, type, and how many messages it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub name: String,
    pub type_name: String,
    pub serialization_format: String,
    pub offered_qos_profiles: serde_norway::Value,
    pub type_description_hash: String,
    /// Message definition (ros2msg) when the storage carries it.
    pub message_definition: Option<String>,
    pub message_count: u64,
}

/// A serialized message as stored: topic index into `Bag::topics`, receive time, CDR bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct BagMessage {
    pub topic: usize,
    pub log_time_ns: i64,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    Mcap,
    Sqlite3,
}

/// An opened rosbag2 bag (a directory with metadata.yaml, or a single storage file).
#[derive(Debug)]
pub struct Bag {
    pub path: PathBuf,
    pub storage_identifier: String,
    pub ros_distro: String,
    pub files: Vec<PathBuf>,
    pub topics: Vec<Topic>,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub message_count: u64,
    pub metadata: Option<BagfileInformation>,
    storage: Storage,
}

/// The order of a split bag's storage files: the name without its trailing number, then
/// that number (`bag_2.mcap` before `bag_10.mcap`), then the whole name.
fn split_order(path: &Path) -> (String, u64, String) {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (prefix, number) = stem.split_at(stem.len() - digits);
    (prefix.to_string(), number.parse().unwrap_or(0), path.to_string_lossy().into_owned())
}

fn storage_of(path: &Path, declared: Option<&str>) -> Result<Storage> {
    match declared {
        Some("mcap") => return Ok(Storage::Mcap),
        Some("sqlite3") => return Ok(Storage::Sqlite3),
        Some(other) if !other.is_empty() => {
            return Err(BagError::UnsupportedStorage { path: path.into(), storage: other.into() })
        }
        _ => {}
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("mcap") => Ok(Storage::Mcap),
        Some("db3") => Ok(Storage::Sqlite3),
        _ => Err(BagError::UnsupportedStorage { path: path.into(), storage: "unknown".into() }),
    }
}

/// A storage file, memory-mapped: a bag of many gigabytes is played or replayed through
/// the page cache instead of being copied onto the heap. (Mapping a file that another
/// process truncates while it is read would fault; rosbag2 files are not rewritten in place.)
fn read_file(path: &Path) -> Result<memmap2::Mmap> {
    let io = |source| BagError::Io { path: path.into(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only mapping of a file nobody writes while it is open (see above).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

impl Bag {
    /// Opens a bag directory (following `relative_file_paths`) or a single .mcap/.db3 file,
    /// and reads each storage file's index so that a truncated or corrupt file fails here.
    pub fn open(path: impl AsRef<Path>) -> Result<Bag> {
        let path = path.as_ref();
        if path.is_dir() {
            let meta_path = path.join("metadata.yaml");
            if meta_path.is_file() {
                let text = std::fs::read_to_string(&meta_path)
                    .map_err(|source| BagError::Io { path: meta_path.clone(), source })?;
                let meta: Metadata = serde_norway::from_str(&text)
                    .map_err(|e| BagError::Metadata { path: meta_path.clone(), msg: e.to_string() })?;
                return Self::from_metadata(path, meta.rosbag2_bagfile_information);
            }
            // No metadata (a bag whose recorder was killed): use the storage files alone.
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| BagError::Io { path: path.into(), source })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("mcap" | "db3")))
                .collect();
            // rosbag2 numbers split files name_0 … name_10: by number, not as strings.
            files.sort_by_cached_key(|p| split_order(p));
            if files.is_empty() {
                return Err(BagError::NotFound(path.into()));
            }
            let storage = storage_of(&files[0], None)?;
            return Self::from_files(path, files, storage, None);
        }
        if path.is_file() {
            let storage = storage_of(path, None)?;
            return Self::from_files(path, vec![path.into()], storage, None);
        }
        Err(BagError::NotFound(path.into()))
    }

    fn from_metadata(dir: &Path, info: BagfileInformation) -> Result<Bag> {
        if !info.compression_mode.is_empty() || !info.compression_format.is_empty() {
            return Err(BagError::UnsupportedCompression {
                path: dir.into(),
                mode: info.compression_mode.clone(),
                format: info.compression_format.clone(),
            });
        }
        let names: Vec<String> = if info.relative_file_paths.is_empty() {
            info.files.iter().map(|f| f.path.clone()).collect()
        } else {
            info.relative_file_paths.clone()
        };
        let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        if files.is_empty() {
            return Err(BagError::Metadata { path: dir.join("metadata.yaml"), msg: "no storage files listed".into() });
        }
        let storage = storage_of(&files[0], Some(info.storage_identifier.as_str()))?;
        Self::from_files(dir, files, storage, Some(info))
    }

    fn from_files(path: &Path, files: Vec<PathBuf>, storage: Storage, meta: Option<BagfileInformation>) -> Result<Bag> {
        let mut topics: Vec<Topic> = Vec::new();
        let (mut start, mut end, mut count) = (i64::MAX, i64::MIN, 0u64);
        for f in &files {
            if !f.is_file() {
                return Err(BagError::Io {
                    path: f.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
            let scan = match storage {
                Storage::Mcap => scan_mcap(f)?,
                Storage::Sqlite3 => scan_sqlite(f)?,
            };
            for t in scan.topics {
                match topics.iter_mut().find(|x| x.name == t.name) {
                    Some(x) => x.message_count += t.message_count,
                    None => topics.push(t),
                }
            }
            if scan.count > 0 {
                start = start.min(scan.start);
                end = end.max(scan.end);
            }
            count += scan.count;
        }
        // metadata.yaml carries the QoS and hashes rosbag2 recorded; prefer them.
        if let Some(m) = &meta {
            for tw in &m.topics_with_message_count {
                let tm = &tw.topic_metadata;
                match topics.iter_mut().find(|t| t.name == tm.name) {
                    Some(t) => {
                        t.offered_qos_profiles = tm.offered_qos_profiles.clone();
                        if !tm.type_description_hash.is_empty() {
                            t.type_description_hash = tm.type_description_hash.clone();
                        }
                    }
                    None => topics.push(Topic {
                        name: tm.name.clone(),
                        type_name: tm.type_name.clone(),
                        serialization_format: tm.serialization_format.clone(),
                        offered_qos_profiles: tm.offered_qos_profiles.clone(),
                        type_description_hash: tm.type_description_hash.clone(),
                        message_definition: None,
                        message_count: 0,
                    }),
                }
            }
        }
        // Saturating and never negative: a damaged or pre-1970 log time must not overflow.
        let (start_ns, duration_ns) = if count > 0 { (start, end.saturating_sub(start).max(0)) } else { (0, 0) };
        Ok(Bag {
            path: path.into(),
            storage_identifier: match storage {
                Storage::Mcap => "mcap".into(),
                Storage::Sqlite3 => "sqlite3".into(),
            },
            ros_distro: meta.as_ref().map(|m| m.ros_distro.clone()).unwrap_or_default(),
            files,
            topics,
            start_ns,
            duration_ns,
            message_count: count,
            metadata: meta,
            storage,
        })
    }

    pub fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == name)
    }

    /// Total size of the storage files, bytes.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
    }

    /// Every message of every file, in storage order (rosbag2 writes in receive order),
    /// passed to `f`; `f` returns false to stop early.
    pub fn for_each_message(&self, mut f: impl FnMut(BagMessage) -> bool) -> Result<()> {
        for file in &self.files {
            let go_on = match self.storage {
                Storage::Mcap => {
                    let buf = read_file(file)?;
                    let stream = mcap::MessageStream::new_with_options(&buf, CHECKED_CHUNKS.into())
                        .map_err(|e| mcap_err(file, e))?;
                    let mut go_on = true;
                    for m in stream {
                        let m = m.map_err(|e| mcap_err(file, e))?;
                        let Some(topic) = self.topic_index(&m.channel.topic) else { continue };
                        if !f(BagMessage { topic, log_time_ns: m.log_time as i64, data: m.data.into_owned() }) {
                            go_on = false;
                            break;
                        }
                    }
                    go_on
                }
                Storage::Sqlite3 => {
                    let conn = open_sqlite(file)?;
                    let mut stmt = conn
                        .prepare("SELECT t.name, m.timestamp, m.data FROM messages m JOIN topics t ON m.topic_id = t.id ORDER BY m.timestamp, m.id")
                        .map_err(|e| sqlite_err(file, e))?;
                    let mut rows = stmt.query([]).map_err(|e| sqlite_err(file, e))?;
                    let mut go_on = true;
                    while let Some(row) = rows.next().map_err(|e| sqlite_err(file, e))? {
                        let name: String = row.get(0).map_err(|e| sqlite_err(file, e))?;
                        let Some(topic) = self.topic_index(&name) else { continue };
                        let msg = BagMessage {
                            topic,
                            log_time_ns: row.get(1).map_err(|e| sqlite_err(file, e))?,
                            data: row.get(2).map_err(|e| sqlite_err(file, e))?,
                        };
                        if !f(msg) {
                            go_on = false;
                            break;
                        }
                    }
                    go_on
                }
            };
            if !go_on {
                break;
            }
        }
        Ok(())
    }
}

struct Scan {
    topics: Vec<Topic>,
    start: i64,
    end: i64,
    count: u64,
}

/// Every chunk carries a CRC of its records: check it, so that a damaged file is named
/// instead of played (the mcap crate skips the check unless asked).
const CHECKED_CHUNKS: mcap::read::Options = mcap::read::Options::ValidateChunkCrcs;

fn mcap_err(path: &Path, e: mcap::McapError) -> BagError {
    BagError::Mcap { path: path.into(), msg: e.to_string() }
}

/// An error of the MCAP writer: the OS error itself when there is one ("No space left on
/// device"), which the mcap crate's own message hides.
fn mcap_write_err(path: &Path, e: mcap::McapError) -> BagError {
    match e {
        mcap::McapError::Io(source) => BagError::Write { path: path.into(), source },
        other => BagError::McapWrite { path: path.into(), msg: other.to_string() },
    }
}

fn sqlite_err(path: &Path, e: rusqlite::Error) -> BagError {
    BagError::Sqlite { path: path.into(), msg: e.to_string() }
}

fn topic_from_channel(c: &mcap::Channel) -> Topic {
    let qos = c
        .metadata
        .get("offered_qos_profiles")
        .map(|s| serde_norway::from_str(s).unwrap_or(serde_norway::Value::String(s.clone())))
        .unwrap_or_else(empty_qos);
    Topic {
        name: c.topic.clone(),
        type_name: c.schema.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        serialization_format: c.message_encoding.clone(),
        offered_qos_profiles: qos,
        type_description_hash: c.metadata.get("topic_type_hash").cloned().unwrap_or_default(),
        message_definition: c
            .schema
            .as_ref()
            .filter(|s| s.encoding == "ros2msg")
            .map(|s| String::from_utf8_lossy(&s.data).into_owned()),
        message_count: 0,
    }
}

/// Reads the MCAP summary (statistics, channels); a file without one (a recorder that was
/// killed) is scanned message by message instead. Either way, truncation is an error.
fn scan_mcap(path: &Path) -> Result<Scan> {
    let buf = read_file(path)?;
    let summary = mcap::Summary::read(&buf).map_err(|e| mcap_err(path, e))?;
    if let Some(s) = summary.as_ref().filter(|s| s.stats.is_some()) {
        let stats = s.stats.as_ref().expect("filtered");
        let mut ids: Vec<_> = s.channels.keys().copied().collect();
        ids.sort();
        let topics = ids
            .iter()
            .map(|id| {
                let mut t = topic_from_channel(&s.channels[id]);
                t.message_count = stats.channel_message_counts.get(id).copied().unwrap_or(0);
                t
            })
            .collect();
        return Ok(Scan {
            topics,
            start: stats.message_start_time as i64,
            end: stats.message_end_time as i64,
            count: stats.message_count,
        });
    }
    let mut scan = Scan { topics: vec![], start: i64::MAX, end: i64::MIN, count: 0 };
    for m in mcap::MessageStream::new_with_options(&buf, CHECKED_CHUNKS.into()).map_err(|e| mcap_err(path, e))? {
        let m = m.map_err(|e| mcap_err(path, e))?;
        let i = match scan.topics.iter().position(|t| t.name == m.channel.topic) {
            Some(i) => i,
            None => {
                scan.topics.push(topic_from_channel(&m.channel));
                scan.topics.len() - 1
            }
        };
        scan.topics[i].message_count += 1;
        scan.start = scan.start.min(m.log_time as i64);
        scan.end = scan.end.max(m.log_time as i64);
        scan.count += 1;
    }
    Ok(scan)
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| sqlite_err(path, e))
}

fn scan_sqlite(path: &Path) -> Result<Scan> {
    let conn = open_sqlite(path)?;
    let has_hash = conn.prepare("SELECT type_description_hash FROM topics LIMIT 0").is_ok();
    let sql = if has_hash {
        "SELECT t.name, t.type, t.serialization_format, t.offered_qos_profiles, t.type_description_hash, COUNT(m.id) FROM topics t LEFT JOIN messages m ON m.topic_id = t.id GROUP BY t.id ORDER BY t.id"
    } else {
        "SELECT t.name, t.type, t.serialization_format, t.offered_qos_profiles, '', COUNT(m.id) FROM topics t LEFT JOIN messages m ON m.topic_id = t.id GROUP BY t.id ORDER BY t.id"
    };
    let mut stmt = conn.prepare(sql).map_err(|e| sqlite_err(path, e))?;
    let topics = stmt
        .query_map([], |r| {
            let qos: String = r.get(3)?;
            Ok(Topic {
                name: r.get(0)?,
                type_name: r.get(1)?,
                serialization_format: r.get(2)?,
                offered_qos_profiles: serde_norway::from_str(&qos).unwrap_or(serde_norway::Value::String(qos)),
                type_description_hash: r.get(4)?,
                message_definition: None,
                message_count: r.get::<_, i64>(5)? as u64,
            })
        })
        .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| sqlite_err(path, e))?;
    let (start, end, count): (Option<i64>, Option<i64>, i64) = conn
        .query_row("SELECT MIN(timestamp), MAX(timestamp), COUNT(*) FROM messages", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(|e| sqlite_err(path, e))?;
    Ok(Scan { topics, start: start.unwrap_or(0), end: end.unwrap_or(0), count: count as u64 })
}

// ---- writing (MCAP) ------------------------------------------------------------------

/// Writes a rosbag2 directory with MCAP storage and, on `finish`, `metadata.yaml` (version
/// 9) as rosbag2's recorder does.
pub struct BagWriter {
    dir: PathBuf,
    file_name: String,
    writer: mcap::Writer<BufWriter<File>>,
    topics: Vec<(TopicMetadata, u16, u64)>,
    start: i64,
    end: i64,
    count: u64,
}

impl BagWriter {
    /// Creates `dir` (which must not exist, as with `ros2 bag record -o`).
    pub fn create(dir: impl AsRef<Path>) -> Result<BagWriter> {
        let dir = dir.as_ref().to_path_buf();
        if dir.exists() {
            return Err(BagError::Write { path: dir, source: std::io::Error::from(std::io::ErrorKind::AlreadyExists) });
        }
        std::fs::create_dir_all(&dir).map_err(|source| BagError::Write { path: dir.clone(), source })?;
        let stem = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "bag".into());
        let file_name = format!("{stem}_0.mcap");
        let path = dir.join(&file_name);
        let file = File::create(&path).map_err(|source| BagError::Write { path: path.clone(), source })?;
        let writer = mcap::WriteOptions::new()
            .profile("ros2")
            .library("sensor_fusion fusion_bag")
            .compression(None)
            .create(BufWriter::with_capacity(1 << 20, file))
            .map_err(|e| mcap_write_err(&path, e))?;
        Ok(BagWriter { dir, file_name, writer, topics: vec![], start: i64::MAX, end: i64::MIN, count: 0 })
    }

    /// Registers a topic; returns its id for `write`. `qos_yaml` is the offered QoS list
    /// (rosbag2 format); `definition` the ros2msg text of the type.
    pub fn add_topic(
        &mut self,
        name: &str,
        type_name: &str,
        definition: &str,
        qos: serde_norway::Value,
    ) -> Result<usize> {
        let path = self.dir.join(&self.file_name);
        let schema = self
            .writer
            .add_schema(type_name, "ros2msg", definition.as_bytes())
            .map_err(|e| mcap_write_err(&path, e))?;
        let qos_text = serde_norway::to_string(&qos).unwrap_or_default();
        let meta = BTreeMap::from([
            ("offered_qos_profiles".to_string(), qos_text.trim_end().to_string()),
            ("topic_type_hash".to_string(), String::new()),
        ]);
        let channel = self.writer.add_channel(schema, name, "cdr", &meta).map_err(|e| mcap_write_err(&path, e))?;
        self.topics.push((
            TopicMetadata {
                name: name.into(),
                type_name: type_name.into(),
                serialization_format: "cdr".into(),
                offered_qos_profiles: qos,
                type_description_hash: String::new(),
            },
            channel,
            0,
        ));
        Ok(self.topics.len() - 1)
    }

    pub fn write(&mut self, topic: usize, log_time_ns: i64, data: &[u8]) -> Result<()> {
        let (_, channel_id, n) = &mut self.topics[topic];
        *n += 1;
        let header = mcap::records::MessageHeader {
            channel_id: *channel_id,
            sequence: *n as u32,
            log_time: log_time_ns as u64,
            publish_time: log_time_ns as u64,
        };
        self.writer
            .write_to_known_channel(&header, data)
            .map_err(|e| mcap_write_err(&self.dir.join(&self.file_name), e))?;
        self.start = self.start.min(log_time_ns);
        self.end = self.end.max(log_time_ns);
        self.count += 1;
        Ok(())
    }

    pub fn message_count(&self) -> u64 {
        self.count
    }

    /// Closes the MCAP file (summary and index) and writes metadata.yaml.
    pub fn finish(mut self) -> Result<PathBuf> {
        let path = self.dir.join(&self.file_name);
        self.writer.finish().map_err(|e| mcap_write_err(&path, e))?;
        let (start, duration) =
            if self.count > 0 { (self.start, self.end.saturating_sub(self.start).max(0)) } else { (0, 0) };
        let info = BagfileInformation {
            version: 9,
            storage_identifier: "mcap".into(),
            relative_file_paths: vec![self.file_name.clone()],
            duration: Nanoseconds { nanoseconds: duration },
            starting_time: SinceEpoch { nanoseconds_since_epoch: start },
            message_count: self.count,
            topics_with_message_count: self
                .topics
                .iter()
                .map(|(m, _, n)| TopicWithCount { topic_metadata: m.clone(), message_count: *n })
                .collect(),
            compression_format: String::new(),
            compression_mode: String::new(),
            files: vec![FileInfo {
                path: self.file_name.clone(),
                starting_time: SinceEpoch { nanoseconds_since_epoch: start },
                duration: Nanoseconds { nanoseconds: duration },
                message_count: self.count,
            }],
            custom_data: None,
            ros_distro: "jazzy".into(),
        };
        let text = serde_norway::to_string(&Metadata { rosbag2_bagfile_information: info })
            .map_err(|e| BagError::Metadata { path: self.dir.clone(), msg: e.to_string() })?;
        let meta_path = self.dir.join("metadata.yaml");
        let mut f = File::create(&meta_path).map_err(|source| BagError::Write { path: meta_path.clone(), source })?;
        f.write_all(text.as_bytes()).map_err(|source| BagError::Write { path: meta_path.clone(), source })?;
        Ok(self.dir)
    }
}

// ---- recovery ----------------------------------------------------------------------------

/// What [`reindex`] recovered from a bag whose recorder died.
#[derive(Debug, Clone, PartialEq)]
pub struct Reindexed {
    pub messages: u64,
    pub topics: usize,
    pub files: usize,
    /// Where reading stopped, when it did before a file's end: the damaged or unflushed tail
    /// (a killed recorder's last chunk), with the reason.
    pub stopped: Vec<String>,
}

/// Recovers a rosbag2 MCAP bag whose recorder was killed (no summary, no end magic, a cut
/// last chunk, no metadata.yaml): every complete, CRC-checked record of its MCAP files, in
/// file order, is written to a new bag at `out` with its indexes, summary and
/// metadata.yaml. Reading a file stops at its first damaged or incomplete record; what came
/// before is kept. The original is never modified.
pub fn reindex(input: &Path, out: &Path) -> Result<Reindexed> {
    use mcap::records::Record;
    use std::collections::HashMap;
    let files: Vec<PathBuf> = if input.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(input)
            .map_err(|source| BagError::Io { path: input.into(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("mcap"))
            .collect();
        f.sort_by_cached_key(|p| split_order(p));
        f
    } else if input.is_file() {
        vec![input.into()]
    } else {
        return Err(BagError::NotFound(input.into()));
    };
    if files.is_empty() {
        return Err(BagError::UnsupportedStorage {
            path: input.into(),
            storage: "no .mcap file (a sqlite3 bag survives a killed recorder and plays without metadata.yaml)".into(),
        });
    }
    let mut w = BagWriter::create(out)?;
    // Topics by name across split files (each file declares its own schemas and channels).
    let mut topic_ids: HashMap<String, usize> = HashMap::new();
    let mut stopped = vec![];
    for f in &files {
        let bytes = read_file(f)?;
        let mut schemas: HashMap<u16, (String, String)> = HashMap::new();
        let mut channels: HashMap<u16, usize> = HashMap::new();
        let options = mcap::read::Options::IgnoreEndMagic | CHECKED_CHUNKS;
        let records = mcap::read::ChunkFlattener::new_with_options(&bytes, options).map_err(|e| mcap_err(f, e))?;
        for record in records {
            match record {
                Ok(Record::Schema { header, data }) => {
                    schemas.insert(header.id, (header.name, String::from_utf8_lossy(&data).into_owned()));
                }
                Ok(Record::Channel(c)) => {
                    let (type_name, definition) = schemas.get(&c.schema_id).cloned().unwrap_or_default();
                    let id = match topic_ids.get(&c.topic) {
                        Some(id) => *id,
                        None => {
                            let qos = c
                                .metadata
                                .get("offered_qos_profiles")
                                .map(|s| serde_norway::from_str(s).unwrap_or(serde_norway::Value::String(s.clone())))
                                .unwrap_or_else(empty_qos);
                            let id = w.add_topic(&c.topic, &type_name, &definition, qos)?;
                            topic_ids.insert(c.topic.clone(), id);
                            id
                        }
                    };
                    channels.insert(c.id, id);
                }
                Ok(Record::Message { header, data }) => {
                    if let Some(&topic) = channels.get(&header.channel_id) {
                        w.write(topic, header.log_time as i64, &data)?;
                    }
                }
                Ok(Record::DataEnd(_)) => break,
                Ok(_) => {}
                Err(e) => {
                    stopped.push(format!("{}: {e}", f.display()));
                    break;
                }
            }
        }
    }
    let (messages, topics) = (w.message_count(), topic_ids.len());
    w.finish()?;
    Ok(Reindexed { messages, topics, files: files.len(), stopped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_recording_is_recovered_up_to_its_cut_chunk() {
        let dir = tmpdir("killed");
        let mut w = BagWriter::create(&dir).unwrap();
        let a = w.add_topic("/a", "std_msgs/msg/String", "string data\n", empty_qos()).unwrap();
        // Big enough for several chunks (the writer's default chunk size is 768 KiB).
        let payload = vec![7u8; 64 * 1024];
        for i in 0..100 {
            w.write(a, 1_000 + i, &payload).unwrap();
        }
        w.finish().unwrap();
        // What SIGKILL leaves: no metadata.yaml, and the file cut inside its last chunk.
        std::fs::remove_file(dir.join("metadata.yaml")).unwrap();
        let file = dir.join(format!("{}_0.mcap", dir.file_name().unwrap().to_string_lossy()));
        let full = std::fs::read(&file).unwrap();
        std::fs::write(&file, &full[..full.len() * 3 / 4]).unwrap();
        assert!(Bag::open(&dir).is_err(), "unreadable as it is");
        let out = tmpdir("killed-reindexed");
        let r = reindex(&dir, &out).unwrap();
        assert_eq!((r.topics, r.files, r.stopped.len()), (1, 1, 1), "{r:?}");
        assert!(r.messages >= 50 && r.messages < 100, "whole chunks before the cut: {}", r.messages);
        let bag = Bag::open(&out).unwrap();
        assert_eq!(bag.message_count, r.messages);
        let mut n = 0u64;
        bag.for_each_message(|m| {
            assert_eq!((m.log_time_ns, m.data.len()), (1_000 + n as i64, payload.len()));
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, r.messages);
        assert!(std::fs::read(&file).unwrap().len() == full.len() * 3 / 4, "the original is left as it was");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&out);
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sf-bag-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_then_read_back() {
        let dir = tmpdir("rw");
        let mut w = BagWriter::create(&dir).unwrap();
        let a = w.add_topic("/a", "std_msgs/msg/String", "string data\n", empty_qos()).unwrap();
        let b = w.add_topic("/b", "std_msgs/msg/String", "string data\n", empty_qos()).unwrap();
        for i in 0..5 {
            w.write(a, 1_000 + i, &[0, 1, 0, 0, i as u8]).unwrap();
        }
        w.write(b, 2_000, b"xyz").unwrap();
        w.finish().unwrap();
        let bag = Bag::open(&dir).unwrap();
        assert_eq!(bag.message_count, 6);
        assert_eq!((bag.start_ns, bag.duration_ns), (1_000, 1_000));
        assert_eq!(
            bag.topics.iter().map(|t| (t.name.as_str(), t.message_count)).collect::<Vec<_>>(),
            vec![("/a", 5), ("/b", 1)]
        );
        assert_eq!(bag.topics[0].message_definition.as_deref(), Some("string data\n"));
        let mut got = vec![];
        bag.for_each_message(|m| {
            got.push(m);
            true
        })
        .unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got[4], BagMessage { topic: 0, log_time_ns: 1_004, data: vec![0, 1, 0, 0, 4] });
        // Writing over an existing bag is refused, as ros2 bag record does.
        assert!(BagWriter::create(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_files_without_metadata_play_in_number_order() {
        // 12 storage files split_0 … split_11 (no metadata.yaml, as after a killed
        // recorder): as strings split_10 and split_11 would sort before split_2.
        let dir = tmpdir("split");
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..12i64 {
            let one = tmpdir(&format!("split-part{k}"));
            let mut w = BagWriter::create(&one).unwrap();
            let a = w.add_topic("/a", "std_msgs/msg/String", "string data\n", empty_qos()).unwrap();
            w.write(a, 1_000 + k, &[0, 1, 0, 0, k as u8]).unwrap();
            let written = w.finish().unwrap().join(format!("{}_0.mcap", one.file_name().unwrap().to_string_lossy()));
            std::fs::rename(&written, dir.join(format!("split_{k}.mcap"))).unwrap();
            std::fs::remove_dir_all(&one).unwrap();
        }
        let bag = Bag::open(&dir).unwrap();
        let mut times = vec![];
        bag.for_each_message(|m| {
            times.push(m.log_time_ns);
            true
        })
        .unwrap();
        assert_eq!(times, (1_000..1_012).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_time_span_past_i64_saturates_instead_of_overflowing() {
        let dir = tmpdir("span");
        let mut w = BagWriter::create(&dir).unwrap();
        let a = w.add_topic("/a", "std_msgs/msg/String", "string data\n", empty_qos()).unwrap();
        // A garbage log time (i64::MIN, or 2^63 as MCAP's u64 holds it) beside a sane one:
        // `end - start` overflowed (a panic in debug, a negative duration in release).
        w.write(a, 1, b"x").unwrap();
        w.write(a, i64::MIN, b"y").unwrap();
        w.finish().unwrap();
        let meta = std::fs::read_to_string(dir.join("metadata.yaml")).unwrap();
        assert!(meta.contains(&format!("nanoseconds: {}", i64::MAX)), "the recorder's duration: {meta}");
        let d = Bag::open(&dir).unwrap().duration_ns;
        assert!(d >= 0, "with metadata.yaml: {d}");
        // And from the storage file alone.
        std::fs::remove_file(dir.join("metadata.yaml")).unwrap();
        let d = Bag::open(&dir).unwrap().duration_ns;
        assert!(d >= 0, "from the MCAP summary: {d}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_chunk_with_flipped_bytes_is_named_not_played() {
        let dir = tmpdir("crc");
        let mut w = BagWriter::create(&dir).unwrap();
        let a = w.add_topic("/a", "std_msgs/msg/String", "string data\n", empty_qos()).unwrap();
        for i in 0..300 {
            w.write(a, 1_000 + i, &[(i % 251) as u8; 64]).unwrap();
        }
        let path = w.finish().unwrap().join(format!("{}_0.mcap", dir.file_name().unwrap().to_string_lossy()));
        let mut bytes = std::fs::read(&path).unwrap();
        // The payload of message 100 (64 bytes of 100), inside the one chunk: the records
        // around it stay well-formed, only the chunk's CRC can tell.
        let at = bytes.windows(64).position(|w| w.iter().all(|&b| b == 100)).expect("uncompressed payload");
        for b in &mut bytes[at..at + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let bag = Bag::open(&dir).unwrap();
        let err = bag.for_each_message(|_| true).unwrap_err().to_string();
        assert!(err.contains("CRC") && err.contains(".mcap"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let dir = tmpdir("trunc");
        let mut w = BagWriter::create(&dir).unwrap();
        let a = w.add_topic("/a", "std_msgs/msg/String", "string data\n", empty_qos()).unwrap();
        for i in 0..100 {
            w.write(a, i, &[7; 64]).unwrap();
        }
        let path = w.finish().unwrap().join(format!("{}_0.mcap", dir.file_name().unwrap().to_string_lossy()));
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        let err = Bag::open(&dir).unwrap_err().to_string();
        assert!(err.contains("not a readable MCAP"), "{err}");
        std::fs::write(&path, b"this is not a bag at all").unwrap();
        assert!(Bag::open(&dir).is_err());
        assert!(matches!(Bag::open(dir.join("nope")), Err(BagError::NotFound(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
