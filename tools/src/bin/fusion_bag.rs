//! fusion_bag: `info`, `play` and `record` for rosbag2 bags (MCAP storage; sqlite3 read),
//! the subset of `ros2 bag` the sensor_fusion tests and users need where rosbag2 itself
//! cannot be installed. Raw CDR bytes go out unchanged with `publish_raw`.
use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use r2r::{qos::ReliabilityPolicy, QosProfile};
use sensor_fusion::ros;
use sensor_fusion_tools::{
    bag::{Bag, BagWriter},
    msgdef,
};
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

#[derive(Parser)]
#[command(name = "fusion_bag", about = "Inspect, play and record rosbag2 bags (MCAP; sqlite3 read-only)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// What `ros2 bag info` shows.
    Info {
        bag: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Publish a bag's messages at their recorded timing.
    Play {
        bag: String,
        /// Playback speed factor.
        #[arg(short, long, default_value_t = 1.0)]
        rate: f64,
        /// Start again at the end, until interrupted.
        #[arg(short, long = "loop")]
        loop_: bool,
        /// Publish /clock at this rate (Hz) for use_sim_time nodes; 40 Hz if no value.
        #[arg(long, num_args = 0..=1, default_missing_value = "40")]
        clock: Option<f64>,
        /// Only these topics (default: all).
        #[arg(long, num_args = 1..)]
        topics: Vec<String>,
        /// Topic remaps, `from:=to`.
        #[arg(short = 'm', long, num_args = 1..)]
        remap: Vec<String>,
        /// Skip this many seconds from the start of the bag.
        #[arg(long, default_value_t = 0.0)]
        start_offset: f64,
        /// Sleep this many seconds before publishing (lets subscribers be discovered).
        #[arg(short, long, default_value_t = 0.0)]
        delay: f64,
        /// Before playing, wait (up to 30 s) until every played topic has a matched
        /// subscriber: DDS drops what a volatile publisher sends before matching.
        #[arg(long)]
        wait_for_subscribers: bool,
        /// Shift every header stamp so the bag's time lines up with the wall clock at
        /// playback (relations between stamps kept): the nodes then measure real latency
        /// on the system clock, without sim time. Messages that begin with a
        /// std_msgs/Header (sensor_msgs/*, ...) are rewritten; others go out unchanged.
        #[arg(long)]
        restamp: bool,
    },
    /// Record topics into a new rosbag2 directory (MCAP storage).
    /// Recover a bag whose recorder was killed (SIGKILL, power loss): every complete record
    /// up to the cut is written to a new, indexed bag with metadata.yaml; the original is
    /// left as it is.
    Reindex {
        bag: String,
        /// Output directory (must not exist); default BAG_reindexed.
        #[arg(short, long)]
        output: Option<String>,
    },
    Record {
        /// Topics to record.
        topics: Vec<String>,
        /// Record every topic (except /rosout and /parameter_events).
        #[arg(short, long)]
        all: bool,
        /// Output directory (must not exist).
        #[arg(short, long)]
        output: String,
        /// Stop after this many seconds (default: until SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
    },
}

fn main() {
    let cli = Cli::parse();
    ros::init_process();
    let result = match cli.cmd {
        Cmd::Info { bag, json } => info(&bag, json),
        Cmd::Play { bag, rate, loop_, clock, topics, remap, start_offset, delay, wait_for_subscribers, restamp } => {
            play(
                &bag,
                PlayOptions { rate, loop_, clock, topics, remap, start_offset, delay, wait_for_subscribers, restamp },
            )
        }
        Cmd::Record { topics, all, output, duration } => record(topics, all, &output, duration),
        Cmd::Reindex { bag, output } => reindex(&bag, output),
    };
    if let Err(e) = result {
        // One line, whatever went wrong.
        eprintln!("fusion_bag: error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

// ---- info -------------------------------------------------------------------------------

fn reindex(bag: &str, output: Option<String>) -> Result<()> {
    let out = output.unwrap_or_else(|| format!("{}_reindexed", bag.trim_end_matches('/')));
    let r = sensor_fusion_tools::bag::reindex(std::path::Path::new(bag), std::path::Path::new(&out))?;
    for s in &r.stopped {
        eprintln!("fusion_bag reindex: stopped reading at the damaged tail: {s}");
    }
    println!("{out}: {} messages on {} topics recovered from {} file(s)", r.messages, r.topics, r.files);
    Ok(())
}

/// UTC calendar date of a Unix time, for the `Start:`/`End:` lines.
fn utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{} {:>2} {} {:02}:{:02}:{:02}.{:09} ({}.{:09})",
        MONTHS[(m - 1) as usize],
        d,
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        nanos,
        secs,
        nanos
    )
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn info(path: &str, json: bool) -> Result<()> {
    let bag = Bag::open(path)?;
    let files: Vec<String> =
        bag.files.iter().map(|f| f.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    if json {
        let topics: Vec<_> = bag
            .topics
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "type": t.type_name, "serialization_format": t.serialization_format,
                    "message_count": t.message_count, "type_description_hash": t.type_description_hash,
                })
            })
            .collect();
        let v = serde_json::json!({
            "path": path, "files": files, "size_bytes": bag.size_bytes(), "storage_identifier": bag.storage_identifier,
            "ros_distro": bag.ros_distro, "start_ns": bag.start_ns, "end_ns": bag.start_ns.saturating_add(bag.duration_ns),
            "duration_ns": bag.duration_ns, "message_count": bag.message_count, "topics": topics,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("Files:             {}", files.join("\n                   "));
    println!("Bag size:          {}", human_size(bag.size_bytes()));
    println!("Storage id:        {}", bag.storage_identifier);
    println!("ROS Distro:        {}", if bag.ros_distro.is_empty() { "unknown" } else { &bag.ros_distro });
    println!("Duration:          {}.{:09}s", bag.duration_ns / 1_000_000_000, bag.duration_ns % 1_000_000_000);
    println!("Start:             {}", utc(bag.start_ns));
    println!("End:               {}", utc(bag.start_ns.saturating_add(bag.duration_ns)));
    println!("Messages:          {}", bag.message_count);
    let lines: Vec<String> = bag
        .topics
        .iter()
        .map(|t| {
            format!(
                "Topic: {} | Type: {} | Count: {} | Serialization Format: {}",
                t.name, t.type_name, t.message_count, t.serialization_format
            )
        })
        .collect();
    println!("Topic information: {}", lines.join("\n                   "));
    Ok(())
}

// ---- play -------------------------------------------------------------------------------

struct PlayOptions {
    rate: f64,
    loop_: bool,
    clock: Option<f64>,
    topics: Vec<String>,
    remap: Vec<String>,
    start_offset: f64,
    delay: f64,
    wait_for_subscribers: bool,
    restamp: bool,
}

/// Types whose CDR starts with a std_msgs/Header (stamp first).
fn starts_with_header(type_name: &str) -> bool {
    type_name.starts_with("sensor_msgs/") && !type_name.ends_with("/JoyFeedback")
        || ["std_msgs/msg/Header", "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/TwistStamped"]
            .contains(&type_name)
}

/// The header stamp of a little-endian CDR message (after the 4-byte encapsulation), ns.
fn cdr_stamp(data: &[u8]) -> Option<i64> {
    if data.len() < 12 || data[1] != 1 {
        return None;
    }
    let sec = i32::from_le_bytes(data[4..8].try_into().ok()?);
    let nsec = u32::from_le_bytes(data[8..12].try_into().ok()?);
    Some(sec as i64 * 1_000_000_000 + nsec as i64)
}

fn set_cdr_stamp(data: &mut [u8], ns: i64) {
    data[4..8].copy_from_slice(&(ns.div_euclid(1_000_000_000) as i32).to_le_bytes());
    data[8..12].copy_from_slice(&(ns.rem_euclid(1_000_000_000) as u32).to_le_bytes());
}

fn wall_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// The publisher QoS for a recorded topic, as rosbag2 play chooses it: the recorded
/// reliability, durability and depth (first offered profile), else reliable, volatile,
/// keep-last 10. The depth matters for large messages: every sample in the history is
/// held in the shared-memory segment (config/fastdds.xml), so a deep image history fills it.
fn play_qos(recorded: &serde_norway::Value) -> QosProfile {
    let profile = match recorded {
        serde_norway::Value::String(s) => serde_norway::from_str::<serde_norway::Value>(s).ok(),
        v => Some(v.clone()),
    };
    let first = profile.as_ref().and_then(|p| p.as_sequence()).and_then(|s| s.first()).cloned();
    let mut qos = QosProfile::default().keep_last(10);
    if let Some(p) = first {
        if let Some(depth) = p.get("depth").and_then(|d| d.as_u64()).filter(|d| *d > 0) {
            qos = qos.keep_last(depth as usize);
        }
        let best_effort =
            matches!(p.get("reliability"), Some(v) if v.as_u64() == Some(2) || v.as_str() == Some("best_effort"));
        let transient =
            matches!(p.get("durability"), Some(v) if v.as_u64() == Some(1) || v.as_str() == Some("transient_local"));
        if best_effort {
            qos = qos.best_effort();
        }
        if transient {
            qos = qos.transient_local();
        }
    }
    qos
}

fn play(path: &str, o: PlayOptions) -> Result<()> {
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        bail!("--rate must be > 0, got {}", o.rate);
    }
    let delay = sensor_fusion::seconds("--delay", o.delay)?;
    if !o.start_offset.is_finite() {
        bail!("--start-offset must be a finite number of seconds, got {}", o.start_offset);
    }
    let bag = Bag::open(path)?;
    let mut remaps = BTreeMap::new();
    for r in &o.remap {
        let (from, to) = r.split_once(":=").with_context(|| format!("remap '{r}' is not from:=to"))?;
        remaps.insert(from.to_string(), to.to_string());
    }
    for t in &o.topics {
        if bag.topic_index(t).is_none() {
            bail!("topic {t} is not in the bag");
        }
    }
    let mut node = ros::create_node("fusion_bag_player")?;
    let mut publishers = Vec::with_capacity(bag.topics.len());
    for t in &bag.topics {
        let wanted = o.topics.is_empty() || o.topics.contains(&t.name);
        publishers.push(if wanted {
            let name = remaps.get(&t.name).cloned().unwrap_or_else(|| t.name.clone());
            let p =
                node.create_publisher_untyped(&name, &t.type_name, play_qos(&t.offered_qos_profiles)).with_context(
                    || format!("cannot publish {} ({}): type not built into this binary", name, t.type_name),
                )?;
            Some(p)
        } else {
            None
        });
    }
    let clock_pub = match o.clock {
        Some(hz) if hz > 0.0 && (1.0 / hz).is_finite() => Some((
            node.create_publisher::<r2r::rosgraph_msgs::msg::Clock>("/clock", QosProfile::default().keep_last(1))?,
            hz,
        )),
        Some(hz) => bail!("--clock must be > 0 Hz, got {hz}"),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(ros::shutdown_signal());
            stop.store(true, Ordering::Relaxed);
        });
    }
    if o.wait_for_subscribers {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let unmatched: Vec<&str> = publishers
                .iter()
                .zip(&bag.topics)
                .filter_map(|(p, t)| p.as_ref().map(|p| (p, t)))
                .filter(|(p, _)| p.get_inter_process_subscription_count().unwrap_or(0) == 0)
                .map(|(_, t)| t.name.as_str())
                .collect();
            if unmatched.is_empty() || stop.load(Ordering::Relaxed) {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("fusion_bag play: no subscriber after 30 s on {}; playing anyway", unmatched.join(", "));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    sleep_unless_stopped(delay, &stop);

    let offset_ns = (o.start_offset.max(0.0) * 1e9) as i64;
    let first = bag.start_ns + offset_ns;
    // Bag time now, shared with the /clock thread (i64::MIN until playback starts).
    let bag_now = Arc::new(AtomicU64::new(first as u64));
    let clock_thread = clock_pub.map(|(publisher, hz)| {
        let (stop, bag_now) = (stop.clone(), bag_now.clone());
        std::thread::spawn(move || {
            let publish = || {
                let t = bag_now.load(Ordering::Relaxed) as i64;
                let msg = r2r::rosgraph_msgs::msg::Clock {
                    clock: r2r::builtin_interfaces::msg::Time {
                        sec: (t / 1_000_000_000) as i32,
                        nanosec: (t % 1_000_000_000) as u32,
                    },
                };
                let _ = publisher.publish(&msg);
            };
            while !stop.load(Ordering::Relaxed) {
                publish();
                std::thread::sleep(Duration::from_secs_f64(1.0 / hz));
            }
            // Sim time ends at the last message played.
            publish();
        })
    });

    let mut published = 0u64;
    let mut failed = 0u64;
    loop {
        // --restamp: wall time − bag time, fixed at the first message of each play.
        let mut offset: Option<i64> = None;
        // Bag time → wall time: bag time `base_ns` (the first message played) is `start`.
        // The clock starts at the first message actually read: reading a large storage file
        // takes a while, and starting before it would turn the backlog into one burst. It is
        // anchored at a message, not at the summary's start time, which a damaged file can
        // put anywhere (and `Instant::now() - huge` panics).
        let mut anchor: Option<(Instant, i64)> = None;
        bag.for_each_message(|mut m| {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let Some(publisher) = &publishers[m.topic] else { return true };
            if m.log_time_ns < first {
                return true;
            }
            let (start, base_ns) = *anchor.get_or_insert_with(|| (Instant::now(), m.log_time_ns));
            // A message stamped before the first one played is due at once; one due past
            // what an Instant can hold (a garbage log time) too, rather than never.
            let after = Duration::from_nanos((m.log_time_ns.saturating_sub(base_ns).max(0) as f64 / o.rate) as u64);
            let due = start.checked_add(after).unwrap_or(start);
            // Keep /clock moving while waiting for the next message.
            while let Some(wait) = due.checked_duration_since(Instant::now()) {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let elapsed = start.elapsed().as_nanos() as f64 * o.rate;
                bag_now.store(base_ns.saturating_add(elapsed as i64).min(m.log_time_ns) as u64, Ordering::Relaxed);
                std::thread::sleep(wait.min(Duration::from_millis(5)));
            }
            bag_now.store(m.log_time_ns as u64, Ordering::Relaxed);
            if o.restamp && starts_with_header(&bag.topics[m.topic].type_name) {
                if let Some(stamp) = cdr_stamp(&m.data) {
                    let off = *offset.get_or_insert_with(|| wall_ns().saturating_sub(m.log_time_ns));
                    set_cdr_stamp(&mut m.data, stamp.saturating_add(off));
                }
            }
            match publisher.publish_raw(&m.data) {
                Ok(()) => published += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!("publish on {} failed: {e}", bag.topics[m.topic].name);
                }
            }
            true
        })?;
        if !o.loop_ || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = clock_thread {
        let _ = t.join();
    }
    // Give reliable subscribers a moment to take the last messages before the publishers go.
    std::thread::sleep(Duration::from_millis(300));
    node.spin_once(Duration::from_millis(1));
    eprintln!("fusion_bag play: published {published} messages ({failed} failed)");
    if failed > 0 {
        bail!("{failed} messages could not be published");
    }
    Ok(())
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now().checked_add(d);
    while end.is_none_or(|end| Instant::now() < end) && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- record -----------------------------------------------------------------------------

/// The publishers' QoS profiles in metadata.yaml version 9 form, as rosbag2 records them
/// (and as `play` reads them back).
fn offered_qos<'a>(profiles: impl Iterator<Item = &'a QosProfile>) -> serde_norway::Value {
    use r2r::qos::{DurabilityPolicy, HistoryPolicy, LivelinessPolicy};
    use serde_norway::{Mapping, Value};
    let dur = |d: Duration| {
        let mut m = Mapping::new();
        m.insert("sec".into(), Value::from(d.as_secs()));
        m.insert("nsec".into(), Value::from(d.subsec_nanos()));
        Value::Mapping(m)
    };
    let profiles = profiles
        .map(|q| {
            let mut m = Mapping::new();
            let history = match q.history {
                HistoryPolicy::KeepAll => "keep_all",
                HistoryPolicy::KeepLast => "keep_last",
                HistoryPolicy::SystemDefault => "system_default",
                _ => "unknown",
            };
            let reliability = match q.reliability {
                ReliabilityPolicy::Reliable => "reliable",
                ReliabilityPolicy::BestEffort => "best_effort",
                ReliabilityPolicy::SystemDefault => "system_default",
                _ => "unknown",
            };
            let durability = match q.durability {
                DurabilityPolicy::TransientLocal => "transient_local",
                DurabilityPolicy::Volatile => "volatile",
                DurabilityPolicy::SystemDefault => "system_default",
                _ => "unknown",
            };
            let liveliness = match q.liveliness {
                LivelinessPolicy::Automatic => "automatic",
                LivelinessPolicy::ManualByTopic => "manual_by_topic",
                LivelinessPolicy::SystemDefault => "system_default",
                _ => "unknown",
            };
            m.insert("history".into(), history.into());
            m.insert("depth".into(), Value::from(q.depth as u64));
            m.insert("reliability".into(), reliability.into());
            m.insert("durability".into(), durability.into());
            m.insert("deadline".into(), dur(q.deadline));
            m.insert("lifespan".into(), dur(q.lifespan));
            m.insert("liveliness".into(), liveliness.into());
            m.insert("liveliness_lease_duration".into(), dur(q.liveliness_lease_duration));
            m.insert("avoid_ros_namespace_conventions".into(), q.avoid_ros_namespace_conventions.into());
            Value::Mapping(m)
        })
        .collect();
    Value::Sequence(profiles)
}

struct TopicCounts {
    name: String,
    received: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    written: u64,
}

fn record(topics: Vec<String>, all: bool, output: &str, duration: Option<f64>) -> Result<()> {
    if topics.is_empty() && !all {
        bail!("name the topics to record, or --all");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(record_async(topics, all, output, duration))
}

/// Messages wait here between the drain tasks and the writer thread; big enough for a few
/// seconds of every nominal stream, and every overflow is counted.
const RECORD_QUEUE: usize = 4096;

async fn record_async(topics: Vec<String>, all: bool, output: &str, duration: Option<f64>) -> Result<()> {
    let mut writer = BagWriter::create(output)?;
    let node = Arc::new(std::sync::Mutex::new(ros::create_node("fusion_bag_recorder")?));
    let clock = node.lock().expect("node").get_ros_clock();
    let (tx, rx) = crossbeam_channel::bounded::<(usize, i64, Vec<u8>)>(RECORD_QUEUE);

    let stop = Arc::new(AtomicBool::new(false));
    let drains: Arc<std::sync::Mutex<Vec<ros::Drain>>> = Default::default();
    let spin = ros::spawn_spin(node.clone(), stop.clone(), drains.clone());

    // The writer runs on its own thread; it owns the bag.
    let (topic_tx, topic_rx) = crossbeam_channel::unbounded::<(String, String, serde_norway::Value)>();
    let writer_thread = std::thread::spawn(move || -> Result<(BagWriter, Vec<u64>)> {
        let mut written: Vec<u64> = vec![];
        loop {
            // New topics first, so that a message never precedes its channel.
            while let Ok((name, ty, qos)) = topic_rx.try_recv() {
                let def = msgdef::definition(&ty).unwrap_or_default();
                writer.add_topic(&name, &ty, &def, qos)?;
                written.push(0);
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok((topic, t, data)) => {
                    while topic >= written.len() {
                        let (name, ty, qos) = topic_rx.recv()?;
                        let def = msgdef::definition(&ty).unwrap_or_default();
                        writer.add_topic(&name, &ty, &def, qos)?;
                        written.push(0);
                    }
                    writer.write(topic, t, &data)?;
                    written[topic] += 1;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok((writer, written)),
            }
        }
    });

    let mut counts: Vec<TopicCounts> = vec![];
    let mut unsupported: Vec<String> = vec![];
    let deadline = match duration {
        // A duration past what an Instant holds records until stopped.
        Some(d) => Instant::now().checked_add(sensor_fusion::seconds("--duration", d)?),
        None => None,
    };
    let mut signal = Box::pin(ros::shutdown_signal());
    eprintln!("fusion_bag record: writing {output}");
    loop {
        // Discover (new) topics every 100 ms.
        let found = node.lock().expect("node").get_topic_names_and_types()?;
        for (name, types) in found {
            let wanted = if all { name != "/rosout" && name != "/parameter_events" } else { topics.contains(&name) };
            if !wanted || counts.iter().any(|c| c.name == name) || unsupported.contains(&name) {
                continue;
            }
            let Some(ty) = types.first().cloned() else { continue };
            // Adapt to the publishers as rosbag2 does: reliable only if every one is.
            let pubs = node.lock().expect("node").get_publishers_info_by_topic(&name, false)?;
            if pubs.is_empty() {
                continue;
            }
            let all_reliable = pubs.iter().all(|p| matches!(p.qos_profile.reliability, ReliabilityPolicy::Reliable));
            let qos = if all_reliable {
                QosProfile::default().keep_last(100)
            } else {
                QosProfile::default().keep_last(100).best_effort()
            };
            let sub = match node.lock().expect("node").subscribe_raw(&name, &ty, qos.clone()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("fusion_bag record: cannot record {name} [{ty}]: {e}");
                    unsupported.push(name);
                    continue;
                }
            };
            let index = counts.len();
            let recorded_qos = offered_qos(pubs.iter().map(|p| &p.qos_profile));
            topic_tx.send((name.clone(), ty.clone(), recorded_qos))?;
            let (received, dropped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let (r, d, tx, clock) = (received.clone(), dropped.clone(), tx.clone(), clock.clone());
            drains.lock().expect("drains").push(ros::drain(sub, move |data: Vec<u8>| {
                r.fetch_add(1, Ordering::Relaxed);
                let t = clock.lock().expect("clock").get_now().map(|d| d.as_nanos() as i64).unwrap_or(0);
                if tx.try_send((index, t, data)).is_err() {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }));
            eprintln!("fusion_bag record: subscribed to {name} [{ty}]");
            counts.push(TopicCounts { name, received, dropped, written: 0 });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // The writer stopped on an error (the disk full, the device gone): stop recording
        // now rather than count every later message as dropped until someone notices.
        if writer_thread.is_finished() {
            break;
        }
        tokio::select! {
            _ = &mut signal => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Let what DDS already delivered reach the queue, then close it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = spin.await;
    drains.lock().expect("drains").clear();
    drop(tx);
    drop(topic_tx);
    let (writer, written) = match writer_thread.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))? {
        Ok(done) => done,
        Err(e) => {
            for c in &counts {
                let (r, d) = (c.received.load(Ordering::Relaxed), c.dropped.load(Ordering::Relaxed));
                eprintln!("fusion_bag record: {}: received {r}, dropped {d}", c.name);
            }
            // What was written before the error is intact up to the last complete chunk;
            // reindex makes it a playable bag (elsewhere, if this disk is full).
            bail!(
                "{e:#}; recording stopped. The part written before the error is recovered by \
                 `fusion_bag reindex {output} -o <a directory with free space>`"
            );
        }
    };
    let total_written = writer.message_count();
    writer.finish()?;
    let mut total_received = 0;
    let mut total_dropped = 0;
    for (index, c) in counts.iter_mut().enumerate() {
        c.written = written.get(index).copied().unwrap_or(0);
        let (r, d) = (c.received.load(Ordering::Relaxed), c.dropped.load(Ordering::Relaxed));
        total_received += r;
        total_dropped += d;
        eprintln!("fusion_bag record: {}: received {r}, written {}, dropped {d}", c.name, c.written);
    }
    println!("received {total_received} written {total_written} dropped {total_dropped}");
    Ok(())
}
