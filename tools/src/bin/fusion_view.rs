//! fusion_view: the node set's live picture without RViz — a page served on this machine
//! (`http://127.0.0.1:8765/` by default) that draws the latest bird's-eye view from
//! `/fusion/objects` and lists `/anomaly/events` and `/anomaly/summary_detailed` as they
//! arrive, pushed to the browser as server-sent events.
//!
//!     fusion_view [--port 8765] [--bind 127.0.0.1] [--ros-args -r __ns:=/robot1]
//!
//! It binds the loopback address unless told otherwise: the product's promise is that
//! nothing leaves the device. Each browser gets a bounded queue; a browser too slow to take
//! the objects stream loses messages, counted per reason on `/stats` and in the log, never
//! blocking the ROS side. A page that connects late first gets the newest objects, the last
//! 50 events and the last 20 summaries.
use anyhow::{Context as _, Result};
use clap::Parser;
use crossbeam_channel::{bounded, Sender, TrySendError};
use r2r::fusion_msgs::msg::{AnomalyEvent, AnomalySummary, FusedObjectArray};
use sensor_fusion::{graph, ros};
use serde_json::json;
use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

const PAGE: &str = include_str!("../view.html");
/// Messages a browser may fall behind by before it loses some (objects come at ~10 Hz).
const CLIENT_QUEUE: usize = 64;
const MAX_CLIENTS: usize = 16;
const KEEP_EVENTS: usize = 50;
const KEEP_SUMMARIES: usize = 20;

#[derive(Parser)]
#[command(name = "fusion_view", about = "A live bird's-eye view, events and summaries of the node set, in a browser")]
struct Cli {
    /// TCP port of the page.
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Address to listen on; the loopback by default (nothing leaves the device).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
}

/// What the page shows and who is watching.
#[derive(Default)]
struct Shared {
    objects: Option<String>,
    events: VecDeque<String>,
    summaries: VecDeque<String>,
    clients: Vec<Sender<String>>,
    /// Messages not delivered, by reason.
    dropped: BTreeMap<&'static str, u64>,
    sent: u64,
}

impl Shared {
    /// One server-sent event to every browser; a full queue loses this message for that
    /// browser only, a closed one is forgotten.
    fn broadcast(&mut self, kind: &str, data: String) {
        let frame = format!("event: {kind}\ndata: {data}\n\n");
        let mut dropped = 0;
        self.clients.retain(|c| match c.try_send(frame.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                dropped += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        *self.dropped.entry("slow_browser").or_default() += dropped;
        self.sent += 1;
        match kind {
            "objects" => self.objects = Some(frame),
            "event" => push_bounded(&mut self.events, frame, KEEP_EVENTS),
            _ => push_bounded(&mut self.summaries, frame, KEEP_SUMMARIES),
        }
    }
}

fn push_bounded(q: &mut VecDeque<String>, item: String, keep: usize) {
    if q.len() == keep {
        q.pop_front();
    }
    q.push_back(item);
}

fn objects_json(m: &FusedObjectArray) -> String {
    let objects: Vec<_> = m
        .objects
        .iter()
        .map(|o| {
            let q = &o.pose.orientation;
            let yaw = (2.0 * (q.w * q.z + q.x * q.y)).atan2(1.0 - 2.0 * (q.y * q.y + q.z * q.z));
            let ttc = o.time_to_collision;
            json!({"id": o.track_id, "label": o.label, "x": o.pose.position.x, "y": o.pose.position.y, "yaw": yaw,
                   "length": o.dimensions.x, "width": o.dimensions.y, "vx": o.velocity.x, "vy": o.velocity.y,
                   "ttc": ttc.is_finite().then_some(ttc)})
        })
        .collect();
    let t = &m.header.stamp;
    json!({"stamp": t.sec as f64 + t.nanosec as f64 * 1e-9, "partial": m.partial, "missing": m.missing_sensors,
           "latency_ms": m.latency_ms, "objects": objects})
    .to_string()
}

fn event_json(e: &AnomalyEvent) -> String {
    let t = &e.header.stamp;
    json!({"event_id": e.event_id, "kind": e.kind, "severity": e.severity, "rule": e.rule, "sensors": e.sensors,
           "track_ids": e.track_ids, "zone": e.zone, "x": e.position.x, "y": e.position.y,
           "stamp": t.sec as f64 + t.nanosec as f64 * 1e-9, "measured_value": e.measured_value,
           "threshold": e.threshold})
    .to_string()
}

fn summary_json(s: &AnomalySummary) -> String {
    let t = &s.header.stamp;
    json!({"text": s.text, "event_ids": s.event_ids, "kinds": s.kinds, "model": s.model, "fallback": s.fallback,
           "stamp": t.sec as f64 + t.nanosec as f64 * 1e-9})
    .to_string()
}

/// One browser connection: the page, the event stream, the counters, or 404.
fn serve(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // A browser that stops reading must not hold its thread (and its slot) forever.
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    // At most 16 KiB of request head, however long one line claims to be.
    let mut reader = BufReader::new(stream.try_clone()?.take(16 * 1024));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&head).context("not an HTTP request")?;
    let path = req.path.unwrap_or("/").split('?').next().unwrap_or("/");
    match (req.method.unwrap_or(""), path) {
        ("GET", "/") => respond(&mut stream, "200 OK", "text/html; charset=utf-8", PAGE.as_bytes()),
        ("GET", "/stats") => {
            let s = shared.lock().expect("view state");
            let body = json!({"clients": s.clients.len(), "sent": s.sent, "dropped": s.dropped}).to_string();
            respond(&mut stream, "200 OK", "application/json", body.as_bytes())
        }
        ("GET", "/events") => stream_events(stream, shared),
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    Ok(())
}

fn stream_events(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) -> Result<()> {
    let (tx, rx) = bounded::<String>(CLIENT_QUEUE);
    let backlog: Vec<String> = {
        let mut s = shared.lock().expect("view state");
        if s.clients.len() >= MAX_CLIENTS {
            *s.dropped.entry("too_many_browsers").or_default() += 1;
            drop(s);
            return respond(&mut stream, "503 Service Unavailable", "text/plain", b"too many browsers\n");
        }
        s.clients.push(tx.clone());
        s.summaries.iter().chain(&s.events).chain(&s.objects).cloned().collect()
    };
    let streamed = send_events(&mut stream, &rx, backlog);
    // Gone (or failed): forget this browser now, not at the next broadcast, so its slot is free.
    shared.lock().expect("view state").clients.retain(|c| !c.same_channel(&tx));
    streamed
}

fn send_events(stream: &mut TcpStream, rx: &crossbeam_channel::Receiver<String>, backlog: Vec<String>) -> Result<()> {
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\n")?;
    for frame in backlog {
        stream.write_all(frame.as_bytes())?;
    }
    stream.flush()?;
    loop {
        // A comment every 15 s keeps proxies and the browser from closing an idle stream; a
        // write to a closed page ends this thread (its queue is then forgotten).
        let frame = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(f) => f,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => ": keep-alive\n\n".to_string(),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        stream.write_all(frame.as_bytes())?;
        stream.flush()?;
    }
}

fn main() {
    ros::init_process();
    // `--ros-args …` (a namespace, remaps) is rcl's, read from the whole command line.
    let cli = Cli::parse_from(std::env::args().take_while(|a| a != "--ros-args"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("fusion_view: error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut node = ros::create_node("fusion_view")?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let listener = TcpListener::bind((cli.bind.as_str(), cli.port))
        .with_context(|| format!("cannot listen on {}:{}", cli.bind, cli.port))?;
    let url = format!("http://{}/", listener.local_addr()?);
    tracing::info!("live view at {url} (objects from {}, events, summaries)", graph::FUSED_OBJECTS.name);
    eprintln!("fusion_view: {url}");

    let objects = node.subscribe::<FusedObjectArray>(graph::FUSED_OBJECTS.name, graph::FUSED_OBJECTS.qos.profile())?;
    let events = node.subscribe::<AnomalyEvent>(graph::ANOMALY_EVENTS.name, graph::ANOMALY_EVENTS.qos.profile())?;
    let summaries =
        node.subscribe::<AnomalySummary>(graph::SUMMARY_DETAILED.name, graph::SUMMARY_DETAILED.qos.profile())?;
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    let drains = vec![
        ros::drain(objects, move |m: FusedObjectArray| {
            s1.lock().expect("view state").broadcast("objects", objects_json(&m))
        }),
        ros::drain(events, move |m: AnomalyEvent| s2.lock().expect("view state").broadcast("event", event_json(&m))),
        ros::drain(summaries, move |m: AnomalySummary| {
            s3.lock().expect("view state").broadcast("summary", summary_json(&m))
        }),
    ];

    let accept_state = shared.clone();
    std::thread::Builder::new().name("view-accept".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let state = accept_state.clone();
            let _ = std::thread::Builder::new().name("view-client".into()).spawn(move || {
                if let Err(e) = serve(stream, state) {
                    tracing::debug!("browser connection ended: {e:#}");
                }
            });
        }
    })?;
    let report_state = shared.clone();
    let stats = tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let s = report_state.lock().expect("view state");
            let dropped: u64 = s.dropped.values().sum();
            if dropped > last {
                tracing::warn!("{} messages not delivered to browsers: {:?}", dropped - last, s.dropped);
                last = dropped;
            }
        }
    });
    let worker = std::thread::spawn(|| ());
    ros::spin_until_shutdown(node, drains, stats, worker).await;
    Ok(())
}
