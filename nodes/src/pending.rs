//! The summarizer's pending events, kept on disk so that a summarizer killed with SIGKILL
//! (or by the OOM killer, or a power cut after the last sync) still summarizes, once
//! respawned, every event it had accepted and not yet published a summary for.
//!
//! The store is an append-only JSON-lines journal: one `{"add": …}` line per accepted
//! event, one `{"done": […]}` line per published summary. Reading it back, the events added
//! and never done are the pending ones. It also remembers the keys of the newest
//! `DONE_REMEMBERED` summarized events, so an event delivered twice (fusion_node publishes
//! `/anomaly/events` transient-local: a respawned summarizer is handed the last 100 events
//! again) is summarized once. When the journal grows past `COMPACT_BYTES` it is rewritten
//! (temporary file + rename) with only what is still needed.
//!
//! ROS-free; the node decides where the file lives. A journal that cannot be written (disk
//! full, read-only) never stops summaries: the error is returned and counted by the caller,
//! and the events are still summarized from memory.
use anyhow::{Context as _, Result};
use models::llm::summary::EventInfo;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Summarized events remembered for de-duplication: far more than the 100 a transient-local
/// publisher keeps.
pub const DONE_REMEMBERED: usize = 1000;
/// The journal is compacted when it grows past this.
pub const COMPACT_BYTES: u64 = 1 << 20;

/// An event's identity: its id and its stamp. Ids restart with fusion_node; the pair does not
/// repeat unless the same event is delivered again.
pub type EventKey = (u64, i64);

pub fn key(e: &EventInfo) -> EventKey {
    (e.event_id, e.stamp_ns)
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Add { event: EventInfo, frame_id: String },
    Done(Vec<EventKey>),
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Restored {
    /// Accepted and never summarized, in the order they were accepted.
    pub pending: Vec<(EventInfo, String)>,
    /// Lines that could not be read (a write torn by the kill, or damage): skipped.
    pub unreadable_lines: usize,
}

/// The journal, open and locked for this process.
pub struct PendingStore {
    path: PathBuf,
    file: File,
    bytes: u64,
    /// Accepted, not yet summarized, by acceptance order.
    pending: BTreeMap<u64, (EventInfo, String)>,
    pending_keys: HashSet<EventKey>,
    next_seq: u64,
    done: VecDeque<EventKey>,
    done_keys: HashSet<EventKey>,
    /// fdatasync after every write: survives a power cut, not only a killed process.
    sync: bool,
}

impl PendingStore {
    /// Opens (creating) the journal at `path` and reads back what it holds. Another live
    /// process holding the same journal is an error (two summarizers with one name).
    pub fn open(path: &Path, sync: bool) -> Result<(PendingStore, Restored)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // Tried for a while: a predecessor being reaped, or a child process of ours between
        // fork and exec (it holds a copy of the descriptor for that instant), lets go soon.
        let mut tries = 0;
        // SAFETY: flock on a file descriptor this function owns.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            tries += 1;
            if tries < 40 {
                std::thread::sleep(std::time::Duration::from_millis(25));
                continue;
            }
            anyhow::bail!(
                "{} is held by another process (a second summarizer with the same name?): {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        let mut store = PendingStore {
            path: path.to_path_buf(),
            bytes: file.metadata().map(|m| m.len()).unwrap_or(0),
            file,
            pending: BTreeMap::new(),
            pending_keys: HashSet::new(),
            next_seq: 0,
            done: VecDeque::new(),
            done_keys: HashSet::new(),
            sync,
        };
        let mut restored = Restored::default();
        let reader = BufReader::new(File::open(path).with_context(|| format!("cannot read {}", path.display()))?);
        for line in reader.split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Line>(&line) {
                Ok(Line::Add { event, frame_id }) => store.insert_pending(event, frame_id),
                Ok(Line::Done(keys)) => store.remove_done(&keys),
                Err(_) => restored.unreadable_lines += 1,
            }
        }
        restored.pending = store.pending.values().cloned().collect();
        // Start from a compact file: what is pending and what was done, nothing else.
        store.compact()?;
        Ok((store, restored))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether this event was already accepted (pending or summarized).
    pub fn seen(&self, e: &EventInfo) -> bool {
        let k = key(e);
        self.pending_keys.contains(&k) || self.done_keys.contains(&k)
    }

    /// Records an accepted event. Call `seen` first: an event is accepted once.
    pub fn accept(&mut self, e: &EventInfo, frame_id: &str) -> Result<()> {
        self.insert_pending(e.clone(), frame_id.to_string());
        self.append(&Line::Add { event: e.clone(), frame_id: frame_id.to_string() })
    }

    /// Records that these events' summary was published.
    pub fn done(&mut self, events: &[EventInfo]) -> Result<()> {
        let keys: Vec<EventKey> = events.iter().map(key).collect();
        self.remove_done(&keys);
        self.append(&Line::Done(keys))?;
        if self.bytes > COMPACT_BYTES {
            self.compact()?;
        }
        Ok(())
    }

    fn insert_pending(&mut self, event: EventInfo, frame_id: String) {
        if self.pending_keys.insert(key(&event)) {
            self.pending.insert(self.next_seq, (event, frame_id));
            self.next_seq += 1;
        }
    }

    fn remove_done(&mut self, keys: &[EventKey]) {
        for k in keys {
            if self.pending_keys.remove(k) {
                self.pending.retain(|_, (e, _)| key(e) != *k);
            }
            if self.done_keys.insert(*k) {
                self.done.push_back(*k);
            }
        }
        while self.done.len() > DONE_REMEMBERED {
            if let Some(old) = self.done.pop_front() {
                self.done_keys.remove(&old);
            }
        }
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let mut text = serde_json::to_vec(line)?;
        text.push(b'\n');
        // One write of a whole line: a kill can tear only the last line, which is skipped on
        // reading.
        self.file.write_all(&text).with_context(|| format!("cannot write {}", self.path.display()))?;
        if self.sync {
            self.file.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
        }
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// Rewrites the journal with the pending events and the remembered done keys.
    fn compact(&mut self) -> Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = Vec::new();
        if !self.done.is_empty() {
            serde_json::to_writer(&mut out, &Line::Done(self.done.iter().copied().collect()))?;
            out.push(b'\n');
        }
        for (event, frame_id) in self.pending.values() {
            serde_json::to_writer(&mut out, &Line::Add { event: event.clone(), frame_id: frame_id.clone() })?;
            out.push(b'\n');
        }
        let write = || -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)?;
            OpenOptions::new().read(true).append(true).open(&self.path)
        };
        match write() {
            Ok(file) => {
                // The lock moves to the new file (the old inode is gone with the rename).
                // SAFETY: flock on a file descriptor this store owns.
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                self.file = file;
                self.bytes = out.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(anyhow::Error::new(e).context(format!("cannot compact {}", self.path.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64) -> EventInfo {
        EventInfo {
            event_id: id,
            stamp_ns: 1_000_000_000 * id as i64,
            kind: "zone_intrusion".into(),
            severity: 2,
            rule: "track_inside".into(),
            measured_value: 3.5,
            threshold: 0.0,
            sensors: vec!["lidar".into()],
            track_ids: vec![7],
            zone: "forward".into(),
            position: [3.5, 0.2, 0.0],
            onset_ns: 1_000_000_000 * id as i64,
            evidence: vec![("label".into(), "person".into())],
        }
    }

    #[test]
    fn events_accepted_and_not_done_survive_a_kill() {
        let dir = tempfile_dir();
        let path = dir.join("s.pending.jsonl");
        {
            let (mut s, r) = PendingStore::open(&path, false).unwrap();
            assert!(r.pending.is_empty());
            for id in 1..=4 {
                s.accept(&ev(id), "base_link").unwrap();
            }
            s.done(&[ev(1), ev(2)]).unwrap();
            // Dropped without any shutdown step: as a SIGKILL leaves it.
        }
        let (s, r) = PendingStore::open(&path, false).unwrap();
        let ids: Vec<u64> = r.pending.iter().map(|(e, _)| e.event_id).collect();
        assert_eq!(ids, vec![3, 4]);
        assert_eq!(r.pending[0], (ev(3), "base_link".to_string()));
        // Summarized and pending events are both recognised when delivered again.
        assert!(s.seen(&ev(1)) && s.seen(&ev(3)) && !s.seen(&ev(5)));
        // Same id, another stamp (fusion_node restarted): a new event.
        let mut later = ev(1);
        later.stamp_ns += 1;
        assert!(!s.seen(&later));
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile_dir();
        let path = dir.join("s.pending.jsonl");
        {
            let (mut s, _) = PendingStore::open(&path, true).unwrap();
            s.accept(&ev(1), "base_link").unwrap();
            s.accept(&ev(2), "base_link").unwrap();
        }
        let mut text = std::fs::read(&path).unwrap();
        text.truncate(text.len() - 20);
        std::fs::write(&path, text).unwrap();
        let (_, r) = PendingStore::open(&path, false).unwrap();
        assert_eq!(r.unreadable_lines, 1);
        assert_eq!(r.pending.iter().map(|(e, _)| e.event_id).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn the_journal_stays_small_and_forgets_only_old_done_keys() {
        let dir = tempfile_dir();
        let path = dir.join("s.pending.jsonl");
        let (mut s, _) = PendingStore::open(&path, false).unwrap();
        for id in 1..=5000u64 {
            s.accept(&ev(id), "base_link").unwrap();
            s.done(&[ev(id)]).unwrap();
        }
        s.accept(&ev(5001), "base_link").unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= COMPACT_BYTES + 4096);
        drop(s);
        let (s, r) = PendingStore::open(&path, false).unwrap();
        assert_eq!(r.pending.len(), 1);
        assert!(s.seen(&ev(5000)) && s.seen(&ev(4001)) && !s.seen(&ev(4000)));
    }

    #[test]
    fn a_second_process_cannot_hold_the_same_journal() {
        let dir = tempfile_dir();
        let path = dir.join("s.pending.jsonl");
        let (_held, _) = PendingStore::open(&path, false).unwrap();
        // flock locks are per open file description: a second open in this process conflicts
        // as another process's would.
        let err = PendingStore::open(&path, false).err().expect("refused");
        assert!(format!("{err:#}").contains("held by another process"), "{err:#}");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sf_pending_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
