//! rosbag2 reading: metadata.yaml, MCAP and sqlite3 storage, from one fuzzer input split
//! into the files of a bag directory. Opening and reading every message either works or
//! gives one error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tools/src/bag.rs"]
mod bag;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("fuzz-bag-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Layout byte: storage kind and whether a metadata.yaml comes first (its length in the
    // next two bytes).
    let (&layout, rest) = data.split_first().unwrap_or((&0, &[]));
    let (meta, storage) = if layout & 2 != 0 && rest.len() >= 2 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        (Some(&rest[2..2 + n]), &rest[2 + n..])
    } else {
        (None, rest)
    };
    let name = if layout & 1 == 0 { "fuzz_0.mcap" } else { "fuzz_0.db3" };
    std::fs::write(dir.join(name), storage).unwrap();
    if let Some(meta) = meta {
        std::fs::write(dir.join("metadata.yaml"), meta).unwrap();
    }
    if let Ok(b) = bag::Bag::open(&dir) {
        let mut n = 0u64;
        let _ = b.for_each_message(|_| {
            n += 1;
            n < 100_000
        });
    }
});
