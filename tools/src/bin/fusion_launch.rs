//! fusion_launch: runs a ROS 2 XML launch file the way `ros2 launch` does, for machines
//! where the ROS 2 CLI and launch_ros cannot be installed.
//!
//!     fusion_launch <pkg> <file> [name:=value ...]
//!     fusion_launch <path> [name:=value ...]
//!
//! Every node starts as launch_ros starts it (`exe args --ros-args -r __node:=… -r __ns:=…
//! --params-file … -r from:=to`), its output prefixed with its name. SIGINT/SIGTERM are
//! forwarded; after a grace period SIGTERM, then SIGKILL. Exit status 1 when a node failed.
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use sensor_fusion_tools::launch::{self, LaunchError, NodeSpec, Output, ParamSource};
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// `ros2 launch` for a machine without the ROS 2 CLI: the same two forms, the same
/// `name:=value` launch arguments.
#[derive(Parser)]
#[command(
    name = "fusion_launch",
    about = "Run a ROS 2 XML launch file the way `ros2 launch` does",
    override_usage = "fusion_launch <PKG> <FILE> [name:=value ...]\n       fusion_launch <PATH> [name:=value ...]"
)]
struct Cli {
    /// A launch file's path, or a package and a file in its share directory, then the
    /// launch arguments as `name:=value`.
    #[arg(required = true, value_name = "PKG FILE | PATH, name:=value")]
    words: Vec<String>,
    /// List the launch arguments and exit.
    #[arg(short, long)]
    show_args: bool,
    /// Print the commands that would run and exit.
    #[arg(short, long)]
    print: bool,
    /// Seconds between SIGINT and SIGTERM (and SIGTERM and SIGKILL) at shutdown.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    grace: f64,
}

struct Options {
    file: PathBuf,
    args: BTreeMap<String, String>,
    show_args: bool,
    print: bool,
    grace: f64,
}

fn parse_cli() -> Result<Options> {
    let cli = Cli::parse();
    sensor_fusion::seconds("--grace", cli.grace)?;
    // As in `ros2 launch`, a word holding `:=` is a launch argument wherever it stands.
    let (assignments, positional): (Vec<&String>, Vec<&String>) = cli.words.iter().partition(|w| w.contains(":="));
    let args = assignments
        .into_iter()
        .filter_map(|a| a.split_once(":="))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file = match positional.as_slice() {
        [path] if Path::new(path.as_str()).is_file() => PathBuf::from(path.as_str()),
        [path] => bail!("{path}: no such launch file"),
        [pkg, name] => find_in_package(pkg, name)?,
        _ => bail!("expected a launch file's path, or a package and a file name; got {positional:?}"),
    };
    Ok(Options { file, args, show_args: cli.show_args, print: cli.print, grace: cli.grace })
}

/// `ros2 launch <pkg> <file>`: the file anywhere under the package's share directory.
fn find_in_package(pkg: &str, name: &str) -> Result<PathBuf> {
    let prefix =
        launch::find_package_prefix(pkg).with_context(|| format!("package '{pkg}' not found in AMENT_PREFIX_PATH"))?;
    let share = prefix.join("share").join(pkg);
    let mut stack = vec![share.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|f| f == name) {
                return Ok(p);
            }
        }
    }
    bail!("file '{name}' was not found in the share directory of package '{pkg}' ({})", share.display())
}

fn main() {
    let opts = match parse_cli() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fusion_launch: {e:#}");
            std::process::exit(2);
        }
    };
    let launch = match launch::load(&opts.file, &opts.args) {
        Ok(l) => l,
        Err(e) => {
            report(&e);
            std::process::exit(1);
        }
    };
    if opts.show_args {
        println!("Arguments (pass arguments as '<name>:=<value>'):");
        for a in &launch.args {
            println!(
                "\n    '{}':\n        {}",
                a.name,
                if a.description.is_empty() { "no description given" } else { &a.description }
            );
            if !a.choices.is_empty() {
                println!("        Valid choices are: {:?}", a.choices);
            }
            match &a.default {
                Some(d) => println!("        (default: '{d}')"),
                None => println!("        (required)"),
            }
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let code = match rt.block_on(run(launch.nodes, opts.print, opts.grace)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("[fusion_launch] error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn report(e: &LaunchError) {
    eprintln!("{e}");
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[fusion_launch] {}", msg.as_ref());
}

/// Fast DDS leaves the shared-memory segment of a process that dies without closing it (a
/// crash, SIGKILL) in /dev/shm, and nothing reclaims it: RAM, up to the 32 MiB
/// `segment_size` of config/fastdds.xml per dead process (1.2 GB after one CI run's kill
/// tests). After an abnormal exit the launcher runs Fast DDS's own `fastdds shm clean`, which
/// removes only segments that no live process holds. Skipped with another RMW, and when the
/// tool is not installed.
async fn clean_dead_shared_memory(label: &str) {
    let rmw = std::env::var("RMW_IMPLEMENTATION").unwrap_or_default();
    if !(rmw.is_empty() || rmw.starts_with("rmw_fastrtps")) {
        return;
    }
    let run = Command::new("fastdds")
        .args(["shm", "clean"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(out)) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let cleaned = text
                .lines()
                .find_map(|l| l.trim().strip_suffix(" zombie segments cleaned"))
                .and_then(|n| n.trim().parse::<u64>().ok());
            if let Some(n @ 1..) = cleaned {
                say(format!(
                    "{label}: removed {n} shared-memory segment(s) left by dead processes (fastdds shm clean)"
                ));
            }
        }
        Ok(Ok(out)) => say(format!(
            "{label}: fastdds shm clean failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => say(format!("{label}: cannot run fastdds shm clean: {e}")),
        Err(_) => say(format!("{label}: fastdds shm clean took over 5 s; stopped it")),
    }
}

fn log_dir() -> PathBuf {
    let base = std::env::var_os("ROS_LOG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("ROS_HOME").map(|h| PathBuf::from(h).join("log")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ros/log")))
        .unwrap_or_else(|| std::env::temp_dir().join("sensor_fusion_ros_log"));
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    base.join(format!("fusion_launch_{stamp}_{}", std::process::id()))
}

/// Labels made unique as ros2 launch does: `name-1`, `name-2`, ...
fn labels(nodes: &[NodeSpec]) -> Vec<String> {
    nodes.iter().enumerate().map(|(i, n)| format!("{}-{}", n.label(), i + 1)).collect()
}

async fn run(nodes: Vec<NodeSpec>, print_only: bool, grace: f64) -> Result<i32> {
    if nodes.is_empty() {
        say("the launch file starts no node");
        return Ok(0);
    }
    let logs = log_dir();
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // Generated params files, one per run of inline <param>s, as launch_ros writes them.
    let mut commands = vec![];
    for (i, n) in nodes.iter().enumerate() {
        let mut files = vec![];
        for (j, p) in n.params.iter().enumerate() {
            if let ParamSource::Inline(list) = p {
                let path = logs.join(format!("params_{}_{j}.yaml", i + 1));
                std::fs::write(&path, launch::params_yaml(list))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                files.push(path);
            }
        }
        commands.push(n.command(&files));
    }
    let labels = labels(&nodes);
    if print_only {
        for (label, cmd) in labels.iter().zip(&commands) {
            println!("{label}: {}", cmd.join(" "));
        }
        return Ok(0);
    }
    say(format!("all log files can be found below {}", logs.display()));

    let shutting_down = Arc::new(AtomicBool::new(false));
    let children: Arc<Mutex<BTreeMap<usize, i32>>> = Default::default(); // index → pid (= pgid)
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for (i, (spec, cmd)) in nodes.into_iter().zip(commands).enumerate() {
        let label = labels[i].clone();
        let (shutting_down, children, failed, logs) =
            (shutting_down.clone(), children.clone(), failed.clone(), logs.clone());
        tasks.push(tokio::spawn(
            async move { supervise(i, spec, cmd, label, shutting_down, children, failed, logs).await },
        ));
    }

    let all_done = async {
        for t in &mut tasks {
            let _ = t.await;
        }
    };
    tokio::select! {
        _ = sensor_fusion::ros::shutdown_signal() => {
            say("signal received, shutting down");
            shutting_down.store(true, Ordering::SeqCst);
            let mut killed_any = false;
            for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
                let pids: Vec<i32> = children.lock().expect("children").values().copied().collect();
                if pids.is_empty() {
                    break;
                }
                if sig != libc::SIGINT {
                    say(format!("sending {name} to {} process(es) still running", pids.len()));
                }
                killed_any |= sig == libc::SIGKILL;
                for pid in pids {
                    // The whole process group: a node's own children go too.
                    unsafe { libc::kill(-pid, sig) };
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(grace.max(0.1));
                while tokio::time::Instant::now() < deadline && !children.lock().expect("children").is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            for t in tasks {
                let _ = t.await;
            }
            if killed_any {
                clean_dead_shared_memory("fusion_launch").await;
            }
        }
        _ = all_done => {}
    }
    Ok(if failed.load(Ordering::SeqCst) { 1 } else { 0 })
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    index: usize,
    spec: NodeSpec,
    cmd: Vec<String>,
    label: String,
    shutting_down: Arc<AtomicBool>,
    children: Arc<Mutex<BTreeMap<usize, i32>>>,
    failed: Arc<AtomicBool>,
    logs: PathBuf,
) {
    let log_path = logs.join(format!("{label}.log"));
    loop {
        if shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        for (k, v) in &spec.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        // If fusion_launch itself dies (even by SIGKILL), the kernel stops the node too.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                say(format!("{label}: cannot start {}: {e}", cmd[0]));
                failed.store(true, Ordering::SeqCst);
                return;
            }
        };
        let pid = child.id().unwrap_or(0) as i32;
        children.lock().expect("children").insert(index, pid);
        say(format!("{label}: process started with pid [{pid}]"));
        let log = Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(&log_path).ok()));
        let pump = |stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>, is_err: bool| {
            let (label, log, output) = (label.clone(), log.clone(), spec.output);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if output != Output::Log {
                        if is_err {
                            eprintln!("[{label}] {line}");
                        } else {
                            println!("[{label}] {line}");
                        }
                    }
                    if output != Output::Screen {
                        if let Some(f) = log.lock().expect("log").as_mut() {
                            let _ = writeln!(f, "{line}");
                        }
                    }
                }
            })
        };
        let out = pump(Box::new(child.stdout.take().expect("piped")), false);
        let err = pump(Box::new(child.stderr.take().expect("piped")), true);
        let status = child.wait().await;
        let _ = out.await;
        let _ = err.await;
        children.lock().expect("children").remove(&index);
        let died_at = tokio::time::Instant::now();
        let stopping = shutting_down.load(Ordering::SeqCst);
        let ok = status.as_ref().map(|s| s.success()).unwrap_or(false);
        let desc = match &status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(s)) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "unknown status".into(),
            },
            Err(e) => e.to_string(),
        };
        if stopping {
            say(format!("{label}: process has finished cleanly [pid {pid}] ({desc})"));
            return;
        }
        if ok {
            say(format!("{label}: process has finished cleanly [pid {pid}]"));
        } else {
            say(format!("{label}: process has died [pid {pid}, {desc}, cmd '{}']", cmd.join(" ")));
            // Before a respawn (within its delay), so that the cleaning never races the new
            // process's start.
            clean_dead_shared_memory(&label).await;
        }
        if !spec.respawn {
            if !ok {
                failed.store(true, Ordering::SeqCst);
            }
            return;
        }
        say(format!("{label}: respawning in {:.1} s", spec.respawn_delay));
        let end = died_at + Duration::from_secs_f64(spec.respawn_delay);
        while tokio::time::Instant::now() < end {
            if shutting_down.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
