//! One side of a DDS transport measurement (issue 21): `--side pub` publishes a stream of one
//! topic class at its sensor rate with the QoS the node set uses for it, each message stamped
//! with the wall clock; `--side sub` receives it, measures stamp-to-receipt latency, and for
//! JPEG images decodes each one as camera_ingest would have to. Each side prints one JSON line
//! with its own CPU per message. `scripts/bench_transport.py` runs the pairs on one host
//! (Fast DDS shared memory) and across hosts (UDP over a veth LAN), as `make bench` does.
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use futures::{FutureExt, Stream, StreamExt};
use r2r::builtin_interfaces::msg::Time;
use r2r::std_msgs::msg::Header;
use r2r::QosProfile;
use sensor_fusion::graph;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Side {
    Pub,
    Sub,
}

/// The topic classes of the node set that cross a host boundary when it is split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Class {
    /// sensor_msgs/Image 640x480 rgb8 (sensors/camera)
    Image,
    /// sensor_msgs/CompressedImage, the same frame as JPEG (decoded by the subscriber)
    ImageJpeg,
    /// sensor_msgs/PointCloud2, x y z intensity float32 (sensors/lidar)
    Cloud,
    /// sensor_msgs/Imu (sensors/imu)
    Imu,
    /// fusion_msgs/AnomalyEvent (anomaly/events)
    Event,
}

#[derive(Parser, Debug)]
#[command(about = "One side of a DDS transport measurement: publisher or subscriber of one topic class")]
struct Args {
    #[arg(long, value_enum)]
    side: Side,
    #[arg(long, value_enum)]
    class: Class,
    /// Messages per second (the publisher's rate)
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Messages to send (publisher) or to wait for (subscriber)
    #[arg(long, default_value_t = 150)]
    count: usize,
    /// The frame for image classes: 921,600 raw rgb8 bytes (image) or a JPEG file (image_jpeg)
    #[arg(long)]
    frame: Option<std::path::PathBuf>,
    /// Points per cloud (cloud class)
    #[arg(long, default_value_t = 19_000)]
    points: usize,
    /// Best-effort instead of the node set's QoS for the class (both sides must agree)
    #[arg(long)]
    best_effort: bool,
    /// Seconds the subscriber waits for its messages at most
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;

fn wall_stamp() -> Time {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Time { sec: now.as_secs() as i32, nanosec: now.subsec_nanos() }
}

fn header() -> Header {
    Header { stamp: wall_stamp(), frame_id: "base_link".into() }
}

fn age_ms(stamp: &Time) -> f64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (now.as_secs_f64() - (stamp.sec as f64 + stamp.nanosec as f64 * 1e-9)) * 1000.0
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn qos(args: &Args) -> QosProfile {
    let shipped = match args.class {
        Class::Image | Class::ImageJpeg => graph::SENSORS_CAMERA.qos.profile(),
        Class::Cloud => graph::SENSORS_LIDAR.qos.profile(),
        Class::Imu => graph::SENSORS_IMU.qos.profile(),
        Class::Event => graph::ANOMALY_EVENTS.qos.profile(),
    };
    if args.best_effort {
        shipped.best_effort()
    } else {
        shipped
    }
}

fn topic(class: Class) -> &'static str {
    match class {
        Class::Image => "/bench/image",
        Class::ImageJpeg => "/bench/image/compressed",
        Class::Cloud => "/bench/cloud",
        Class::Imu => "/bench/imu",
        Class::Event => "/bench/event",
    }
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("fusion_bench_transport: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<serde_json::Value> {
    let ctx = r2r::Context::create()?;
    let name = format!("bench_transport_{}", if args.side == Side::Pub { "pub" } else { "sub" });
    let mut node = r2r::Node::create(ctx, &name, "")?;
    let frame = match (args.class, &args.frame) {
        (Class::Image | Class::ImageJpeg, None) => bail!("--frame is needed for {:?}", args.class),
        (Class::Image | Class::ImageJpeg, Some(path)) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => vec![],
    };
    if args.class == Class::Image && frame.len() != (WIDTH * HEIGHT * 3) as usize {
        bail!("--frame holds {} bytes, a 640x480 rgb8 frame is {}", frame.len(), WIDTH * HEIGHT * 3);
    }
    match args.side {
        Side::Pub => publish(&mut node, args, frame),
        Side::Sub => subscribe(&mut node, args),
    }
}

fn publish(node: &mut r2r::Node, args: &Args, frame: Vec<u8>) -> Result<serde_json::Value> {
    use r2r::sensor_msgs::msg::{CompressedImage, Image, Imu, PointCloud2, PointField};
    let cloud_data: Vec<u8> = (0..args.points * 4).flat_map(|i| (i as f32 * 0.001).to_le_bytes()).collect();
    // One publisher, typed by class; `send` builds and publishes one message, `matched` counts
    // the subscriptions it has matched.
    let (matched, mut send): (Box<dyn Fn() -> usize>, Box<dyn FnMut() -> Result<()>>) = match args.class {
        Class::Image => {
            let p = node.create_publisher::<Image>(topic(args.class), qos(args))?;
            (
                matched_count(&p),
                Box::new(move || {
                    let msg = Image {
                        header: header(),
                        height: HEIGHT,
                        width: WIDTH,
                        encoding: "rgb8".into(),
                        is_bigendian: 0,
                        step: WIDTH * 3,
                        data: frame.clone(),
                    };
                    Ok(p.publish(&msg)?)
                }),
            )
        }
        Class::ImageJpeg => {
            let p = node.create_publisher::<CompressedImage>(topic(args.class), qos(args))?;
            (
                matched_count(&p),
                Box::new(move || {
                    Ok(p.publish(&CompressedImage { header: header(), format: "jpeg".into(), data: frame.clone() })?)
                }),
            )
        }
        Class::Cloud => {
            let p = node.create_publisher::<PointCloud2>(topic(args.class), qos(args))?;
            let n = args.points as u32;
            (
                matched_count(&p),
                Box::new(move || {
                    let fields = ["x", "y", "z", "intensity"]
                        .iter()
                        .enumerate()
                        .map(|(i, f)| PointField { name: f.to_string(), offset: 4 * i as u32, datatype: 7, count: 1 })
                        .collect();
                    let msg = PointCloud2 {
                        header: header(),
                        height: 1,
                        width: n,
                        fields,
                        is_bigendian: false,
                        point_step: 16,
                        row_step: 16 * n,
                        data: cloud_data.clone(),
                        is_dense: true,
                    };
                    Ok(p.publish(&msg)?)
                }),
            )
        }
        Class::Imu => {
            let p = node.create_publisher::<Imu>(topic(args.class), qos(args))?;
            (matched_count(&p), Box::new(move || Ok(p.publish(&Imu { header: header(), ..Default::default() })?)))
        }
        Class::Event => {
            let p = node.create_publisher::<r2r::fusion_msgs::msg::AnomalyEvent>(topic(args.class), qos(args))?;
            let mut id = 0;
            (
                matched_count(&p),
                Box::new(move || {
                    id += 1;
                    let evidence = ["label", "x_m", "y_m", "distance_m", "ttc_s"]
                        .iter()
                        .map(|k| r2r::diagnostic_msgs::msg::KeyValue { key: k.to_string(), value: "4.87".into() })
                        .collect();
                    let msg = r2r::fusion_msgs::msg::AnomalyEvent {
                        header: header(),
                        event_id: id,
                        kind: "zone_intrusion".into(),
                        severity: 2,
                        rule: "object_in_zone".into(),
                        sensors: vec!["camera".into(), "lidar".into()],
                        track_ids: vec![2],
                        zone: "forward".into(),
                        evidence,
                        ..Default::default()
                    };
                    Ok(p.publish(&msg)?)
                }),
            )
        }
    };
    // Start once the subscriber is matched (it is started first), as a driver would run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while matched() == 0 {
        if Instant::now() > deadline {
            bail!("no subscriber on {} within 30 s", topic(args.class));
        }
        node.spin_once(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    for i in 0..args.count {
        let due = start + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send()?;
    }
    let cpu = cpu_seconds() - cpu0;
    // Stay a while so that a reliable writer can repair what the reader still lacks.
    let linger = Instant::now() + Duration::from_secs(2);
    while Instant::now() < linger {
        node.spin_once(Duration::from_millis(50));
    }
    Ok(json!({"side": "pub", "class": format!("{:?}", args.class).to_lowercase(), "sent": args.count,
              "rate_hz": args.rate, "cpu_ms_per_msg": 1000.0 * cpu / args.count as f64}))
}

fn subscribe(node: &mut r2r::Node, args: &Args) -> Result<serde_json::Value> {
    use r2r::sensor_msgs::msg::{CompressedImage, Image, Imu, PointCloud2};
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut bytes = 0usize;
    let mut decode_failures = 0usize;
    let mut received = 0usize;
    let (mut cpu0, mut first) = (0.0, None);
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    // Each class's stream, mapped to (stamp age in ms, payload bytes, decoded ok).
    let mut stream: std::pin::Pin<Box<dyn Stream<Item = (f64, usize, bool)>>> = match args.class {
        Class::Image => Box::pin(
            node.subscribe::<Image>(topic(args.class), qos(args))?
                .map(|m| (age_ms(&m.header.stamp), m.data.len(), true)),
        ),
        Class::ImageJpeg => Box::pin(node.subscribe::<CompressedImage>(topic(args.class), qos(args))?.map(|m| {
            // What camera_ingest does with it (image_transport: compressed).
            let ok = fusion::camera::decode_compressed(&m.format, &m.data, Some((WIDTH, HEIGHT)))
                .is_ok_and(|rgb| rgb.data.len() == (WIDTH * HEIGHT * 3) as usize);
            (age_ms(&m.header.stamp), m.data.len(), ok)
        })),
        Class::Cloud => Box::pin(
            node.subscribe::<PointCloud2>(topic(args.class), qos(args))?
                .map(|m| (age_ms(&m.header.stamp), m.data.len(), true)),
        ),
        Class::Imu => {
            Box::pin(node.subscribe::<Imu>(topic(args.class), qos(args))?.map(|m| (age_ms(&m.header.stamp), 0, true)))
        }
        Class::Event => Box::pin(
            node.subscribe::<r2r::fusion_msgs::msg::AnomalyEvent>(topic(args.class), qos(args))?
                .map(|m| (age_ms(&m.header.stamp), 0, true)),
        ),
    };
    while received < args.count && Instant::now() < deadline {
        node.spin_once(Duration::from_millis(20));
        while let Some(Some((age, size, ok))) = stream.next().now_or_never() {
            if first.is_none() {
                first = Some(Instant::now());
                cpu0 = cpu_seconds();
            }
            received += 1;
            bytes = size;
            decode_failures += usize::from(!ok);
            latency.saturating_record((age.max(0.0) * 1000.0) as u64);
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({"side": "sub", "class": format!("{:?}", args.class).to_lowercase(), "received": received,
              "expected": args.count, "payload_bytes": bytes, "decode_failures": decode_failures,
              "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0},
              "cpu_ms_per_msg": if received > 1 { 1000.0 * cpu / (received - 1) as f64 } else { 0.0 }}))
}

fn matched_count<T: r2r::WrappedTypesupport + 'static>(p: &r2r::Publisher<T>) -> Box<dyn Fn() -> usize> {
    let p = p.clone();
    Box::new(move || p.get_inter_process_subscription_count().unwrap_or(0))
}
