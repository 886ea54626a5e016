//! What every node binary shares: process set-up, typed parameters with declared
//! defaults, `/diagnostics` messages, and the spin thread.
use anyhow::{Context as _, Result};
use fusion::{
    calib::{Calibration, Resolved},
    StampNs,
};
use r2r::{
    builtin_interfaces::msg::Time,
    diagnostic_msgs::msg::{DiagnosticStatus, KeyValue},
    tf2_msgs::msg::TFMessage,
    Parameter, ParameterValue,
};
use std::{
    sync::{
        atomic::{
            AtomicBool,
            Ordering::{self, Relaxed},
        },
        Arc, Mutex,
    },
    time::Duration,
};

/// Logging and the rcl log directory. rcl writes its log under `$HOME/.ros/log`, and fails
/// to initialise without HOME; under systemd or a minimal container HOME may be unset, so
/// fall back to a directory under the system temp dir.
pub fn init_process() {
    if std::env::var_os("HOME").is_none() && std::env::var_os("ROS_LOG_DIR").is_none() {
        let dir = std::env::temp_dir().join("sensor_fusion_ros_log");
        let _ = std::fs::create_dir_all(&dir);
        // Single-threaded at this point: no other thread reads the environment yet.
        std::env::set_var("ROS_LOG_DIR", &dir);
        if std::env::var_os("ROS_HOME").is_none() {
            std::env::set_var("ROS_HOME", &dir);
        }
    }
    init_logging();
}

/// The node's name as its /diagnostics statuses and log lines give it: `fusion_node` in the
/// root namespace, `robot1/fusion_node` under `namespace:=robot1`, so that two robots' node
/// sets on one host (one global /diagnostics) are told apart.
pub fn node_label(node: &r2r::Node) -> Result<String> {
    Ok(node.fully_qualified_name()?.trim_start_matches('/').to_string())
}

/// `tracing` to stderr, filtered by RUST_LOG (default info): for tools that do not start rcl.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Creates the context and the node. `--ros-args` on the command line (remaps, `__node`,
/// `__ns`, `--params-file`, `-p`) are applied by rcl.
pub fn create_node(default_name: &str) -> Result<r2r::Node> {
    let ctx = rcl_context()?;
    let node =
        r2r::Node::create(ctx, default_name, "").with_context(|| format!("cannot create node {default_name}"))?;
    apply_param_overrides(&node, std::env::args().skip(1))?;
    Ok(node)
}

/// Parameter overrides as rclcpp resolves them. r2r 0.9.7 applies a params file's block only
/// when its key is `/**`, `**` or the node's exact name, so the `/**/fusion_node:` blocks of
/// our own config files (ROS 2's usual form: any namespace) were silently ignored and every
/// node ran on its built-in defaults. Here every `--params-file` and `-p name:=value` of the
/// command line is read again, merged as rcl merges them (a block per key, in the order its
/// key first appears, later values winning within a block), and each block whose key matches
/// the node's fully qualified name (`*` one token, `**` any number) is applied in that order.
fn apply_param_overrides(node: &r2r::Node, args: impl Iterator<Item = String>) -> Result<()> {
    let blocks = override_blocks(args)?;
    let fqn = node.fully_qualified_name()?;
    let mut params = node.params.lock().expect("parameter lock");
    for (key, values) in blocks.iter().filter(|(key, _)| node_key_matches(key, &fqn)) {
        for (name, value) in values {
            match yaml_parameter(value) {
                Some(v) => {
                    params.insert(name.clone(), Parameter::new(v));
                }
                None => tracing::warn!("parameter {name} (params key {key}): unsupported value {value:?}, ignored"),
            }
        }
    }
    Ok(())
}

type OverrideBlocks = Vec<(String, Vec<(String, serde_norway::Value)>)>;

/// The command line's parameter overrides, merged by node key as rcl merges them.
fn override_blocks(args: impl Iterator<Item = String>) -> Result<OverrideBlocks> {
    let mut blocks: OverrideBlocks = vec![];
    let mut put = |key: &str, name: String, value: serde_norway::Value| {
        // A bare node name stays bare (it names the node in any namespace, as r2r takes it);
        // a path gets its leading '/'.
        let key = if key.starts_with('/') || !key.contains('/') { key.to_string() } else { format!("/{key}") };
        let i = blocks.iter().position(|(k, _)| *k == key).unwrap_or_else(|| {
            blocks.push((key, vec![]));
            blocks.len() - 1
        });
        let block = &mut blocks[i].1;
        match block.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => block.push((name, value)),
        }
    };
    let (mut in_ros_args, mut args) = (false, args.peekable());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ros-args" => in_ros_args = true,
            "--" => in_ros_args = false,
            "--params-file" if in_ros_args => {
                let path = args.next().context("--params-file without a file")?;
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
                let doc: serde_norway::Value =
                    serde_norway::from_str(&text).with_context(|| format!("{path} is not YAML"))?;
                // Keys may nest namespaces (`robot1: {fusion_node: {ros__parameters: …}}`).
                let mut nodes = vec![];
                node_blocks("", &doc, &mut nodes);
                for (key, body) in nodes {
                    let mut flat = vec![];
                    flatten_params("", body, &mut flat);
                    for (name, value) in flat {
                        put(&key, name, value);
                    }
                }
            }
            "-p" | "--param" if in_ros_args => {
                let rule = args.next().context("-p without name:=value")?;
                if let Some((name, text)) = rule.split_once(":=") {
                    let value = serde_norway::from_str(text).unwrap_or(serde_norway::Value::String(text.to_string()));
                    // `-p node:name:=value` is for that node only (rcl's node-name prefix).
                    match name.split_once(':') {
                        Some((node, name)) => put(node, name.to_string(), value),
                        None => put("/**", name.to_string(), value),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(blocks)
}

/// The `ros__parameters` blocks of a params file with their node keys, namespaces joined.
fn node_blocks<'a>(prefix: &str, value: &'a serde_norway::Value, out: &mut Vec<(String, &'a serde_norway::Value)>) {
    for (key, body) in value.as_mapping().into_iter().flatten() {
        let Some(key) = key.as_str() else { continue };
        let key = if prefix.is_empty() { key.to_string() } else { format!("{prefix}/{}", key.trim_start_matches('/')) };
        match body.get("ros__parameters") {
            Some(params) => out.push((key, params)),
            None if body.is_mapping() => node_blocks(&key, body, out),
            None => {}
        }
    }
}

/// Nested parameter maps as rcl names them: `sync: {wait_ms: 50}` is `sync.wait_ms`.
pub fn flatten_params(prefix: &str, value: &serde_norway::Value, out: &mut Vec<(String, serde_norway::Value)>) {
    match value.as_mapping() {
        Some(map) => {
            for (k, v) in map {
                let Some(k) = k.as_str() else { continue };
                let name = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                flatten_params(&name, v, out);
            }
        }
        None => out.push((prefix.to_string(), value.clone())),
    }
}

/// Whether a params-file key (`/**`, `/**/fusion_node`, `/robot1/*`, `fusion_node`) names
/// the node `fqn` (`/robot1/fusion_node`), with rclcpp's wildcards.
fn node_key_matches(key: &str, fqn: &str) -> bool {
    fn tokens(s: &str) -> Vec<&str> {
        s.split('/').filter(|t| !t.is_empty()).collect()
    }
    fn matches(key: &[&str], name: &[&str]) -> bool {
        match key.split_first() {
            None => name.is_empty(),
            Some((&"**", rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
            Some((&"*", rest)) => !name.is_empty() && matches(rest, &name[1..]),
            Some((t, rest)) => name.first() == Some(t) && matches(rest, &name[1..]),
        }
    }
    let key_tokens = tokens(key);
    // A bare node name (no '/') names the node in any namespace, as r2r took it.
    if !key.contains('/') {
        return tokens(fqn).last() == Some(&key);
    }
    matches(&key_tokens, &tokens(fqn))
}

fn yaml_parameter(value: &serde_norway::Value) -> Option<ParameterValue> {
    use serde_norway::Value as Y;
    Some(match value {
        Y::Bool(b) => ParameterValue::Bool(*b),
        Y::Number(n) if n.is_i64() => ParameterValue::Integer(n.as_i64()?),
        Y::Number(n) => ParameterValue::Double(n.as_f64()?),
        Y::String(s) => ParameterValue::String(s.clone()),
        Y::Sequence(items) if items.iter().all(Y::is_bool) => {
            ParameterValue::BoolArray(items.iter().filter_map(Y::as_bool).collect())
        }
        Y::Sequence(items) if items.iter().all(|v| v.as_i64().is_some()) => {
            ParameterValue::IntegerArray(items.iter().filter_map(Y::as_i64).collect())
        }
        Y::Sequence(items) if items.iter().all(Y::is_number) => {
            ParameterValue::DoubleArray(items.iter().filter_map(Y::as_f64).collect())
        }
        Y::Sequence(items) if items.iter().all(Y::is_string) => {
            ParameterValue::StringArray(items.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        }
        _ => return None,
    })
}

/// The rcl context, from this process's command line. r2r panics when rcl refuses the
/// command line (a malformed `--params-file`, a bad remap rule): that is the user's input, so
/// it becomes an error carrying rcl's own message instead of a panic.
fn rcl_context() -> Result<r2r::Context> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let created = std::panic::catch_unwind(r2r::Context::create);
    std::panic::set_hook(quiet);
    match created {
        Ok(ctx) => ctx.context("rcl init failed"),
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("rcl_init failed");
            anyhow::bail!("invalid ROS arguments: {}", why.lines().next().unwrap_or(why).trim())
        }
    }
}

/// Typed access to the node's parameters. `declare` inserts the default when the user
/// gave none, so that `ros2 param list/get` show every parameter with its effective value.
pub struct Params {
    params: Arc<Mutex<r2r::indexmap::IndexMap<String, Parameter>>>,
}

impl Params {
    pub fn of(node: &r2r::Node) -> Self {
        Self { params: node.params.clone() }
    }

    pub fn declare(&self, name: &str, default: ParameterValue) -> ParameterValue {
        let mut p = self.params.lock().expect("parameter lock");
        let entry = p.entry(name.to_string()).or_insert_with(|| Parameter::new(ParameterValue::NotSet));
        if matches!(entry.value, ParameterValue::NotSet) {
            entry.value = default;
        }
        entry.value.clone()
    }

    pub fn f64(&self, name: &str, default: f64) -> Result<f64> {
        match self.declare(name, ParameterValue::Double(default)) {
            // No parameter of ours means anything at NaN or infinity; refusing them here
            // keeps them out of every Duration, size and threshold computed from one.
            ParameterValue::Double(v) if v.is_finite() => Ok(v),
            ParameterValue::Double(v) => anyhow::bail!("parameter {name} must be a finite number, got {v}"),
            ParameterValue::Integer(v) => Ok(v as f64),
            other => anyhow::bail!("parameter {name} must be a number, got {other:?}"),
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.declare(name, ParameterValue::Bool(default)) {
            ParameterValue::Bool(v) => Ok(v),
            other => anyhow::bail!("parameter {name} must be a bool, got {other:?}"),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.declare(name, ParameterValue::String(default.into())) {
            ParameterValue::String(v) => Ok(v),
            other => anyhow::bail!("parameter {name} must be a string, got {other:?}"),
        }
    }
}

/// Registers `config`'s fields as the node's parameters, with their doc comments as what
/// `ros2 param describe` says: each takes the value the params files and `-p` gave it (as
/// [`create_node`] applied them), else keeps the one `config` holds, and `config` is
/// updated to match. A value of the wrong type fails here, naming the parameter.
/// Then runs the node's start-up checks ([`NodeConfig::validate`]), and warns once about
/// each name the params files or `-p` gave that the node does not have (a typo, or another
/// node's parameter in a `/**` block): rcl ignores those too, but silently.
pub fn declare_config<C: crate::config::NodeConfig>(node: &r2r::Node, config: &mut C) -> Result<()> {
    let mut defaults = r2r::indexmap::IndexMap::new();
    config.register_parameters("", None, &mut defaults).map_err(|e| anyhow::anyhow!("{e}"))?;
    {
        let mut params = node.params.lock().expect("parameter lock");
        for (name, given) in params.iter_mut() {
            match defaults.get(name) {
                Some(default) => given.value = as_declared(C::rounds(name), &default.value, given.value.clone()),
                None if crate::config::is_ros_wide(name) || C::tolerated(name) => {}
                None => tracing::warn!("parameter {name} is not a {} parameter: ignored", C::NODE),
            }
            if let ParameterValue::Double(x) = given.value {
                if !x.is_finite() {
                    anyhow::bail!("parameter {name} must be a finite number, got {x}");
                }
            }
        }
        config.register_parameters("", None, &mut params).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    config.validate()
}

/// A whole number given for a double parameter (`wait_ms: 40` in a YAML file, `-p
/// tf_wait:=2`, `ros2 param set … 2`) is that double, as our nodes always took it; r2r's
/// derived double parameters would refuse the integer. A number given for a count that the
/// node always rounded (`rounds`: the pipeline's counts, `tracker.confirm_hits: 3.0`) is that
/// count, rounded.
fn as_declared(rounds: bool, declared: &ParameterValue, given: ParameterValue) -> ParameterValue {
    match (declared, given) {
        (ParameterValue::Double(_), ParameterValue::Integer(i)) => ParameterValue::Double(i as f64),
        (ParameterValue::Integer(_), ParameterValue::Double(x)) if rounds && x.is_finite() => {
            ParameterValue::Integer(x.round() as i64)
        }
        (_, given) => given,
    }
}

/// A check of a new value for a parameter the node applies while running.
pub type LiveCheck = Box<dyn Fn(&ParameterValue) -> Result<(), String> + Send>;

/// What `ros2 param set` may change on a running node. r2r's plain parameter handler
/// acknowledges every set, and our nodes read their parameters once at start, so a set was
/// accepted and then did nothing. Behind this gate a set either names a parameter the node
/// applies while running (its value checked here, then handed to the node on the stream
/// `make_derived_parameter_handler` returns), or it is refused with the reason: unknown
/// name, wrong type, out of range, or read at start-up only.
///
/// The typed parameters ([`declare_config`]) answer `ros2 param get` (r2r asks the gate
/// first); the others stay in r2r's node map (declared by [`Params`]). r2r writes an
/// accepted set into its map as given (an integer for a double stays an integer there, so
/// `ros2 param describe` may say INTEGER while the node holds the double). Never lock that
/// map here: r2r holds it while it calls `get_parameter` and `register_parameters`.
pub struct ParamGate {
    declared: std::collections::BTreeSet<String>,
    live: std::collections::BTreeMap<String, LiveCheck>,
    /// The node's typed parameters ([`declare_config`]), kept current by an accepted set.
    config: Option<Box<dyn r2r::RosParams + Send>>,
    /// Each typed parameter's declared value (its type), and whether a number given for it
    /// is rounded ([`as_declared`]): what a check needs without `&mut` access.
    declared_values: std::collections::BTreeMap<String, (ParameterValue, bool)>,
}

impl ParamGate {
    /// Every parameter declared so far (through [`Params`]), none live yet.
    pub fn new(node: &r2r::Node) -> Self {
        let declared = node.params.lock().expect("parameter lock").keys().cloned().collect();
        Self { declared, live: Default::default(), config: None, declared_values: Default::default() }
    }

    /// The node's typed parameters, declared already ([`declare_config`]): `ros2 param
    /// get` reads them and an accepted set updates them.
    pub fn with_config<C: crate::config::NodeConfig + Send + 'static>(mut self, config: C) -> Self {
        let mut registered = r2r::indexmap::IndexMap::new();
        config.clone_registered(&mut registered);
        self.declared_values =
            registered.into_iter().map(|(name, p)| (name.clone(), (p.value, C::rounds(&name)))).collect();
        self.config = Some(Box::new(config));
        self
    }

    /// `value` as the typed parameter `name` holds it (see [`as_declared`]).
    fn typed(&self, name: &str, value: &ParameterValue) -> ParameterValue {
        match self.declared_values.get(name) {
            Some((declared, rounds)) => as_declared(*rounds, declared, value.clone()),
            None => value.clone(),
        }
    }

    /// `name` may change while the node runs, when `check` accepts the new value.
    pub fn live(mut self, name: &str, check: LiveCheck) -> Self {
        self.live.insert(name.to_string(), check);
        self
    }

    /// The node's parameter services behind this gate, and the stream of accepted changes.
    /// Fails when `use_sim_time` is true and r2r cannot follow /clock (`check_sim_time`).
    pub fn serve(
        self,
        node: &mut r2r::Node,
    ) -> Result<(impl std::future::Future<Output = ()> + Send, impl futures::Stream<Item = (String, ParameterValue)>)>
    {
        let served = node.make_derived_parameter_handler(Arc::new(Mutex::new(self)))?;
        check_sim_time(node)?;
        Ok(served)
    }

    fn refusal(&self, name: &str, value: &ParameterValue) -> Option<String> {
        if !self.declared.contains(name) {
            return Some("this node has no such parameter".into());
        }
        match self.live.get(name) {
            None => Some("read once at start-up; relaunch the node with the new value".into()),
            Some(check) => check(value).err(),
        }
    }
}

impl r2r::RosParams for ParamGate {
    /// The typed parameters were declared into the node's map already (with the values the
    /// user gave): registering them again leaves every value as it is.
    fn register_parameters(
        &mut self,
        prefix: &str,
        param: Option<Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, Parameter>,
    ) -> r2r::Result<()> {
        match &mut self.config {
            Some(config) => config.register_parameters(prefix, param, params),
            None => Ok(()),
        }
    }

    /// The typed parameters' values; every other one comes from r2r's node map (r2r falls
    /// back to it on an error here).
    fn get_parameter(&mut self, name: &str) -> r2r::Result<ParameterValue> {
        match &mut self.config {
            Some(config) => config.get_parameter(name),
            None => Err(r2r::Error::InvalidParameterName { name: name.to_string() }),
        }
    }

    fn set_parameter(&mut self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        self.check_parameter(name, value)?;
        let value = self.typed(name, value);
        match &mut self.config {
            Some(config) if self.declared_values.contains_key(name) => config.set_parameter(name, &value),
            _ => Ok(()),
        }
    }

    /// Everything a set could fail on, so that r2r's atomic set (which checks, then sets
    /// without looking at the result) never reports success for a value not applied.
    fn check_parameter(&self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        if let Some(msg) = self.refusal(name, value) {
            // r2r words this "Parameter NAME conversion failed: MSG"; MSG is the reason.
            return Err(r2r::Error::ParameterValueConv { name: name.to_string(), msg });
        }
        let value = self.typed(name, value);
        if let ParameterValue::Double(x) = value {
            if !x.is_finite() {
                return Err(r2r::Error::ParameterValueConv {
                    name: name.into(),
                    msg: format!("must be finite, got {x}"),
                });
            }
        }
        match &self.config {
            Some(config) if self.declared_values.contains_key(name) => config.check_parameter(name, &value),
            _ => Ok(()),
        }
    }
}

/// A live number parameter: a double (or an integer, as `ros2 param set` types `2`) that
/// `check` accepts.
pub fn live_number(check: impl Fn(f64) -> Result<(), String> + Send + 'static) -> LiveCheck {
    Box::new(move |v| match number(v) {
        Some(x) => check(x),
        None => Err(format!("must be a number, got {v:?}")),
    })
}

/// The number a parameter value holds, if it is one.
pub fn number(v: &ParameterValue) -> Option<f64> {
    match v {
        ParameterValue::Double(x) if x.is_finite() => Some(*x),
        ParameterValue::Integer(x) => Some(*x as f64),
        _ => None,
    }
}

pub fn key_values(kv: Vec<(String, String)>) -> Vec<KeyValue> {
    kv.into_iter().map(|(key, value)| KeyValue { key, value }).collect()
}

pub fn status(
    name: String,
    hardware_id: &str,
    level: u8,
    message: String,
    kv: Vec<(String, String)>,
) -> DiagnosticStatus {
    DiagnosticStatus { level, name, message, hardware_id: hardware_id.into(), values: key_values(kv) }
}

/// This process's CPU use, for its /diagnostics status: `cpu.seconds` (user + system since
/// start), `cpu.cores` over the last period (1.0 = one core busy) and `cpu.host_share` (of
/// the cores this process may run on). With several robots on one compute host, a robot's
/// share is the sum over the nodes of its namespace (docs/deployment.md).
pub struct ProcessCpu {
    last_seconds: f64,
    last: std::time::Instant,
    cores_available: f64,
}

impl Default for ProcessCpu {
    fn default() -> Self {
        Self {
            last_seconds: process_cpu_seconds(),
            last: std::time::Instant::now(),
            cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        }
    }
}

impl ProcessCpu {
    /// The key/values since the previous call (or since creation).
    pub fn key_values(&mut self) -> Vec<(String, String)> {
        let seconds = process_cpu_seconds();
        let window = self.last.elapsed().as_secs_f64().max(1e-3);
        let cores = (seconds - self.last_seconds).max(0.0) / window;
        self.last_seconds = seconds;
        self.last = std::time::Instant::now();
        vec![
            ("cpu.seconds".into(), format!("{seconds:.3}")),
            ("cpu.cores".into(), format!("{cores:.3}")),
            ("cpu.host_share".into(), format!("{:.3}", cores / self.cores_available)),
        ]
    }
}

/// User + system CPU seconds of this process, all threads.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// With `use_sim_time` true, r2r's parameter handler switches the node's clock to /clock,
/// which reads 0 until the first /clock message: a clock that reads the wall time there is
/// an r2r built without its sim-time code. r2r's build script emits the cfg that compiles
/// that code (`r2r__rosgraph_msgs__msg__Clock`) only when it generates its bindings, not when
/// it reuses them from its cache: rebuilding after a build run in another environment (ROS
/// not sourced, say) gave nodes that silently stamped with the wall clock and missed every
/// deadline of a bag played with `--clock`. Refuse to start instead.
fn check_sim_time(node: &r2r::Node) -> Result<()> {
    let use_sim_time = node.params.lock().expect("parameter lock").get("use_sim_time").map(|p| p.value.clone());
    if !matches!(use_sim_time, Some(ParameterValue::Bool(true))) {
        return Ok(());
    }
    if !reads_zero(&node.get_ros_clock()) {
        anyhow::bail!(
            "use_sim_time is true but this binary's r2r was compiled without sim-time support (its \
             clock reads the wall time, not /clock). r2r's build script reused cached bindings without \
             enabling it; rebuild with `cargo clean --release -p r2r && make build`"
        );
    }
    Ok(())
}

/// A ROS clock under `use_sim_time` reads 0 until the first /clock message sets it.
fn reads_zero(clock: &Arc<Mutex<r2r::Clock>>) -> bool {
    let t = now(clock);
    t.sec == 0 && t.nanosec == 0
}

/// The clock fusion_node schedules by: the node's ROS clock, and under `use_sim_time` what
/// it knows beside /clock.
///
/// - Whether it runs: always with the wall clock, under `use_sim_time` once the first /clock
///   message has set it. The answer latches, so that the clock is locked (once per message)
///   only until then.
/// - Under `use_sim_time` it reads no earlier than the newest data stamp it has taken in, when
///   that leads /clock by at most [`MAX_CLOCK_LAG_NS`]: a player publishes /clock from a timer
///   of its own (40 Hz for `fusion_bag play --clock` by default), and on a loaded host that
///   timer ran 31 ms behind the data (CI: sets published with a latency of −31 ms and their
///   deadlines judged that late). See [`SimFloor`] for what moves nothing.
pub struct NodeClock {
    clock: Arc<Mutex<r2r::Clock>>,
    use_sim_time: bool,
    started: AtomicBool,
    floor: Mutex<SimFloor>,
}

/// How far a data stamp may lead /clock and still count as a late /clock: a few periods of a
/// 40 Hz /clock, half the 100 ms hard deadline, and well under the 0.2 s a stream must be
/// silent to count as a dropout, so that a sensor whose stamps run ahead of the recording's
/// clock cannot make the others look late.
pub const MAX_CLOCK_LAG_NS: i64 = 50_000_000;

impl NodeClock {
    pub fn new(clock: Arc<Mutex<r2r::Clock>>, use_sim_time: bool) -> Self {
        Self { clock, use_sim_time, started: AtomicBool::new(!use_sim_time), floor: Mutex::default() }
    }

    pub fn has_started(&self) -> bool {
        if self.started.load(Relaxed) {
            return true;
        }
        let running = !reads_zero(&self.clock);
        if running {
            self.started.store(true, Relaxed);
        }
        running
    }

    /// Notes the stamp of a message taken in (only under `use_sim_time`).
    pub fn saw_stamp(&self, stamp: StampNs) {
        if self.use_sim_time {
            let clock = self.ros_now_ns();
            self.floor.lock().expect("clock floor").saw(stamp, clock);
        }
    }

    /// Now, in ns since the epoch (sim time when `use_sim_time` is true).
    pub fn now_ns(&self) -> StampNs {
        let clock = self.ros_now_ns();
        match self.use_sim_time {
            true => self.floor.lock().expect("clock floor").now(clock),
            false => clock,
        }
    }

    fn ros_now_ns(&self) -> StampNs {
        time_ns(&now(&self.clock))
    }
}

/// The newest data stamp near /clock (see [`NodeClock`]). What moves nothing: a stamp more
/// than [`MAX_CLOCK_LAG_NS`] ahead of /clock (a sensor clock gone wrong), and the stamps of
/// before /clock went back (a bag played in a loop, a seek back), which are forgotten then.
#[derive(Default)]
struct SimFloor {
    newest: Option<StampNs>,
    last_clock: StampNs,
}

impl SimFloor {
    fn clock_read(&mut self, clock: StampNs) {
        if clock < self.last_clock {
            self.newest = None;
        }
        self.last_clock = clock;
    }

    fn saw(&mut self, stamp: StampNs, clock: StampNs) {
        self.clock_read(clock);
        if stamp - clock <= MAX_CLOCK_LAG_NS && self.newest.is_none_or(|n| stamp > n) {
            self.newest = Some(stamp);
        }
    }

    fn now(&mut self, clock: StampNs) -> StampNs {
        self.clock_read(clock);
        match self.newest {
            Some(n) if n > clock && n - clock <= MAX_CLOCK_LAG_NS => n,
            _ => clock,
        }
    }
}

/// The node's ROS clock (sim time when `use_sim_time` is true) as a message stamp.
pub fn now(clock: &Arc<Mutex<r2r::Clock>>) -> Time {
    let d = clock.lock().expect("clock lock").get_now().unwrap_or_default();
    r2r::Clock::to_builtin_time(&d)
}

/// `share/sensor_fusion/<relative>` in the first prefix of AMENT_PREFIX_PATH that has it
/// (the `make install` layout).
pub fn installed_share_file(relative: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var("AMENT_PREFIX_PATH").ok()?;
    paths.split(':').map(|p| std::path::Path::new(p).join("share/sensor_fusion").join(relative)).find(|p| p.is_file())
}

/// A data stamp (ns since the epoch) as a message stamp.
pub fn to_time(ns: i64) -> Time {
    Time { sec: ns.div_euclid(1_000_000_000) as i32, nanosec: ns.rem_euclid(1_000_000_000) as u32 }
}

/// A ROS time as nanoseconds (the inverse of [`to_time`]).
pub fn time_ns(t: &Time) -> i64 {
    fusion::stamp_ns(t.sec, t.nanosec)
}

/// Empties one r2r subscription stream without waiting; called right after every
/// `spin_once`.
pub type Drain = Box<dyn FnMut() + Send>;

/// A drain that hands every message waiting in `stream` to `sink`.
pub fn drain<T: Send + 'static>(
    mut stream: impl futures::Stream<Item = T> + Unpin + Send + 'static,
    mut sink: impl FnMut(T) + Send + 'static,
) -> Drain {
    use futures::{FutureExt, StreamExt};
    Box::new(move || {
        while let Some(Some(msg)) = stream.next().now_or_never() {
            sink(msg);
        }
    })
}

/// Spins the node on a blocking thread until `stop` is set, draining the given streams
/// after every `spin_once`. r2r's subscription channels hold 10 messages and drop silently
/// when full; `spin_once` takes at most one message per subscription, so draining in the
/// same loop means they can never overflow, whatever the async runtime is doing.
pub fn spawn_spin(
    node: Arc<Mutex<r2r::Node>>,
    stop: Arc<AtomicBool>,
    drains: Arc<Mutex<Vec<Drain>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::Relaxed) {
            node.lock().expect("node lock").spin_once(Duration::from_millis(5));
            for d in drains.lock().expect("drain lock").iter_mut() {
                d();
            }
        }
    })
}

/// A node's life after set-up: spins it (draining `drains`) until SIGINT or SIGTERM, then
/// stops the spin thread, aborts `background` (the diagnostics task) and joins `worker`, which
/// ends once the drains, and with them its input channel, are gone.
pub async fn spin_until_shutdown<B, W>(
    node: r2r::Node,
    drains: Vec<Drain>,
    background: tokio::task::JoinHandle<B>,
    worker: std::thread::JoinHandle<W>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let spin = spawn_spin(Arc::new(Mutex::new(node)), stop.clone(), Arc::new(Mutex::new(drains)));
    shutdown_signal().await;
    tracing::info!("shutting down");
    stop.store(true, Ordering::Relaxed);
    background.abort();
    let torn_down = Arc::new(AtomicBool::new(false));
    watch_teardown(torn_down.clone());
    let _ = spin.await;
    torn_down.store(true, Ordering::Relaxed);
    let _ = worker.join();
}

/// How long dropping the node (rmw's participant teardown) may take at shutdown.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(3);

/// Exits the process if the node's teardown has not finished `TEARDOWN_LIMIT` after
/// shutdown began. Fast DDS's `DomainParticipant::set_listener`, which rmw's
/// destroy_participant calls, waits for listener callbacks to finish and once spun on a core
/// for 33 minutes (a fusion_node whose launcher had been killed, so nothing sent SIGKILL; the
/// SIGTERM handler was already spent). Under a launcher the node would be killed after its
/// grace; alone it must not spin forever. A clean teardown takes milliseconds.
fn watch_teardown(torn_down: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new().name("teardown-watch".into()).spawn(move || {
        std::thread::sleep(TEARDOWN_LIMIT);
        if !torn_down.load(Ordering::Relaxed) {
            tracing::error!(
                "the DDS participant's teardown has not finished {} s after shutdown began: exiting without it",
                TEARDOWN_LIMIT.as_secs()
            );
            std::process::exit(1);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the teardown: {e}");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The CDR bytes of `msg`, the same bytes for the same message on every run.
///
/// Why not `to_serialized_bytes` alone: rmw's CDR serializer steps over alignment padding
/// without writing it, and r2r serializes into a buffer each thread keeps and reuses, so a
/// padding byte holds whatever that buffer held before; for a thread's first messages that
/// is uninitialised heap (pointers, different under ASLR). Two bags from one seed differed in
/// 11 bytes of their first `/tf_static` message that way. Filling the thread's buffer once
/// with a message that has no padding (a byte sequence of zeros, longer than any message's
/// part before its payload array) makes every later padding byte a byte of an earlier
/// message of the same thread: as reproducible as the messages themselves.
pub fn serialize<T: r2r::WrappedTypesupport>(msg: &T) -> Result<Vec<u8>> {
    thread_local! {
        static FILLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !FILLED.get() {
        let zeros = r2r::std_msgs::msg::UInt8MultiArray { data: vec![0; 64 * 1024], ..Default::default() };
        r2r::WrappedTypesupport::to_serialized_bytes(&zeros)?;
        FILLED.set(true);
    }
    Ok(msg.to_serialized_bytes()?)
}

/// `tf2_msgs/TFMessage` → the transforms of the ROS-free buffer.
pub fn transforms_of(msg: TFMessage) -> impl Iterator<Item = fusion::tf::Transform> {
    msg.transforms.into_iter().map(|t| {
        let (tr, q) = (t.transform.translation, t.transform.rotation);
        fusion::tf::Transform {
            parent: t.header.frame_id,
            child: t.child_frame_id,
            stamp_ns: fusion::stamp_ns(t.header.stamp.sec, t.header.stamp.nanosec),
            translation: [tr.x, tr.y, tr.z],
            rotation_xyzw: [q.x, q.y, q.z, q.w],
        }
    })
}

/// `nav_msgs/Odometry` → the pipeline's odometry sample (checked when the buffer takes it).
pub fn odometry_sample(msg: &r2r::nav_msgs::msg::Odometry) -> fusion::odom::OdometrySample {
    let (p, q) = (&msg.pose.pose.position, &msg.pose.pose.orientation);
    let (v, w) = (&msg.twist.twist.linear, &msg.twist.twist.angular);
    fusion::odom::OdometrySample {
        stamp: fusion::stamp_ns(msg.header.stamp.sec, msg.header.stamp.nanosec),
        frame_id: msg.header.frame_id.clone(),
        child_frame_id: msg.child_frame_id.clone(),
        position: [p.x, p.y, p.z],
        orientation_xyzw: [q.x, q.y, q.z, q.w],
        linear: [v.x, v.y, v.z],
        angular: [w.x, w.y, w.z],
    }
}

/// Transforms → one `tf2_msgs/TFMessage`, each stamped `stamp`.
pub fn tf_message(transforms: &[fusion::tf::Transform], stamp: Time) -> TFMessage {
    use r2r::geometry_msgs::msg::{Quaternion, Transform, TransformStamped, Vector3};
    let transforms = transforms
        .iter()
        .map(|t| {
            let ([x, y, z], [qx, qy, qz, qw]) = (t.translation, t.rotation_xyzw);
            TransformStamped {
                header: r2r::std_msgs::msg::Header { stamp: stamp.clone(), frame_id: t.parent.clone() },
                child_frame_id: t.child.clone(),
                transform: Transform {
                    translation: Vector3 { x, y, z },
                    rotation: Quaternion { x: qx, y: qy, z: qz, w: qw },
                },
            }
        })
        .collect();
    TFMessage { transforms }
}

/// The transform tree a node keeps current from `/tf_static` and `/tf` while it runs.
pub type SharedTf = Arc<Mutex<fusion::tf::TransformBuffer>>;

/// The extrinsics a node works with, and what keeps listening to `/tf_static` after start.
pub struct Extrinsics {
    pub resolved: Resolved,
    /// The `calibration` parameter ("" = the built-in defaults).
    pub path: String,
    /// Drains later `/tf_static` and `/tf` messages into `tf`: a fixed mount that changes
    /// after start is warned about (applying it needs a restart; the node's fixed transforms
    /// are built once); a moving one ([`fusion::calib::PoseSource::TfMoving`]) is looked up
    /// in `tf` at each stamp by whoever transforms its data.
    pub watch: Drain,
    pub tf: SharedTf,
    /// The node's `/tf_static` publisher, kept for the node's life: it latched the poses
    /// taken from the file, unless `tf_wait` is 0 (tf unread, so latching could re-parent
    /// the robot's own frames). It exists either way, so the node's graph does not depend on
    /// the robot's tf.
    pub latched: r2r::Publisher<TFMessage>,
}

/// The calibration of the sensors `used`, as tf2 users expect it: the `calibration` file (or
/// the built-in defaults when the parameter is empty) names the frames and gives the camera
/// intrinsics and the zones; each sensor's pose comes from `/tf_static` where that places the
/// frame in the base frame ([`Calibration::with_tf_for`]). The node waits at most `tf_wait`
/// seconds for tf, less when every sensor is placed. (Stopping early when no `/tf_static`
/// publisher is known after 0.4 s was tried: discovery of an existing latched publisher
/// sometimes takes longer, and the node then silently ignored the robot's tf.)
/// Without a file, tf must place every used sensor, or start-up fails naming the frame.
/// `used`: the sensors' names (None: every sensor the calibration declares).
pub fn extrinsics(node: &mut r2r::Node, params: &Params, used: Option<&[&str]>) -> Result<Extrinsics> {
    use futures::{FutureExt, StreamExt};
    let path = params.string("calibration", "")?;
    let tf_wait = params.f64("tf_wait", crate::config::TF_WAIT_S)?;
    crate::config::check_tf_wait(tf_wait)?;
    let base = Calibration::load(&path).context("parameter 'calibration'")?;
    let declared: Vec<&str> = base.sensors.keys().map(String::as_str).collect();
    let used: Vec<String> = used.unwrap_or(&declared).iter().map(|s| s.to_string()).collect();
    if let Some(unknown) = used.iter().find(|name| !base.sensors.contains_key(name.as_str())) {
        // The launch file's imu_ingest serves `imu`: on a robot whose IMU has another name, or
        // that has none, say what to launch instead.
        let imu = base.sensor_set().ok().and_then(|set| set.first(fusion::Sensor::Imu).map(|id| set.name(id)));
        let hint = match (unknown.as_str(), imu) {
            ("imu", None) => "; a robot without an IMU launches with imu:=false".to_string(),
            ("imu", Some(name)) => format!("; its IMU is '{name}': give imu_ingest the parameter sensor:={name}"),
            _ => String::new(),
        };
        anyhow::bail!(
            "{} declares no sensor '{unknown}' (it declares: {}){hint}",
            if path.is_empty() { "the built-in calibration".to_string() } else { format!("calibration {path}") },
            declared.join(", ")
        );
    }
    let from_file = !path.is_empty();
    let topic = crate::graph::TF_STATIC;
    // tf2's static listener: reliable, transient local, deep enough for every publisher's
    // latched message.
    let latched = node.subscribe::<TFMessage>(topic.name, topic.qos.depth(100).profile())?;
    let moving = node.subscribe::<TFMessage>(crate::graph::TF.name, crate::graph::TF.qos.profile())?;
    // Both streams, each message marked with whether it is static.
    let mut tf_stream = futures::stream::select(latched.map(|m| (true, m)).boxed(), moving.map(|m| (false, m)).boxed());
    let buffer: SharedTf = Arc::new(Mutex::new(fusion::tf::TransformBuffer::default()));
    let add = {
        let buffer = buffer.clone();
        // tf2 refuses a repeated stamp on a link (TF_REPEATED_DATA) and so does the buffer;
        // a robot that republishes one would flood the log, so each link is warned once.
        let mut warned = std::collections::BTreeSet::new();
        move |(is_static, msg): (bool, TFMessage)| {
            let mut buffer = buffer.lock().expect("tf buffer");
            for t in transforms_of(msg) {
                if let Err(e) = buffer.set(&t, is_static) {
                    if warned.insert((t.parent.clone(), t.child.clone())) {
                        let name = if is_static { crate::graph::TF_STATIC.name } else { crate::graph::TF.name };
                        tracing::warn!("{name}: {e} (warned once per link)");
                    }
                }
            }
        }
    };
    let placed = |buffer: &fusion::tf::TransformBuffer| {
        used.iter().all(|s| {
            let frame = &base.sensor(s).frame_id;
            buffer.lookup(&base.base_frame, frame, fusion::tf::At::Latest).is_ok()
        })
    };
    let start = std::time::Instant::now();
    let mut stopped = "tf_wait passed";
    let mut add = add;
    while start.elapsed().as_secs_f64() < tf_wait {
        node.spin_once(Duration::from_millis(10));
        while let Some(Some(msg)) = tf_stream.next().now_or_never() {
            add(msg);
        }
        if placed(&buffer.lock().expect("tf buffer")) {
            stopped = "sensors placed";
            break;
        }
    }
    tracing::info!(
        "{}: {} frames after {:.2} s ({stopped})",
        topic.name,
        buffer.lock().expect("tf buffer").frames().len(),
        start.elapsed().as_secs_f64()
    );
    let used_names: Vec<&str> = used.iter().map(String::as_str).collect();
    let resolved = base.with_tf_for(&buffer.lock().expect("tf buffer"), from_file, &used_names).map_err(|e| {
        anyhow::anyhow!(
            "{e} (waited {:.1} s for {} and {}; parameter tf_wait)",
            start.elapsed().as_secs_f64(),
            topic.name,
            crate::graph::TF.name
        )
    })?;
    warn_about(&resolved);
    // What the file placed goes out latched: RViz and every tf user sees the frames the node
    // set works with, and a respawned node finds them at once instead of waiting out tf_wait.
    let publisher = node.create_publisher::<TFMessage>(topic.name, topic.qos.profile())?;
    let from_file = if tf_wait > 0.0 { resolved.for_tf_static() } else { vec![] };
    if !from_file.is_empty() {
        publisher.publish(&tf_message(&from_file, now(&node.get_ros_clock())))?;
    }
    // After start: keep the buffer current and say when a mount in use moves.
    let in_use = resolved.calibration.clone();
    let fixed: Vec<String> = used
        .iter()
        .filter(|s| resolved.sources.get(*s) != Some(&fusion::calib::PoseSource::TfMoving))
        .cloned()
        .collect();
    let mut warned = std::collections::BTreeSet::new();
    let shared = buffer.clone();
    let watch = drain(tf_stream, move |msg: (bool, TFMessage)| {
        let is_static = msg.0;
        add(msg);
        if !is_static {
            return; // a fixed mount changes only on /tf_static; a /tf link stays moving
        }
        let buffer = buffer.lock().expect("tf buffer");
        for s in &fixed {
            let pose = in_use.sensor(s);
            let Ok(now) = buffer.lookup(&in_use.base_frame, &pose.frame_id, fusion::tf::At::Latest) else { continue };
            let moved = (now.translation.vector - pose.to_base().translation.vector).norm() > 0.01
                || now.rotation.angle_to(&pose.to_base().rotation).to_degrees() > 0.5;
            if moved && warned.insert(s.clone()) {
                tracing::warn!(
                    "the {s} mount ({}) changed on {} after start; restart the node to use it",
                    pose.frame_id,
                    crate::graph::TF_STATIC.name
                );
            }
        }
    });
    Ok(Extrinsics { resolved, path, watch, tf: shared, latched: publisher })
}

/// What a user should hear about the extrinsics in effect: where tf and the file disagree,
/// where tf holds a frame it cannot place, and poses that are only the built-in defaults.
pub fn warn_about(resolved: &Resolved) {
    for d in &resolved.disagreements {
        tracing::warn!(
            "{}: tf and the calibration file disagree by {:.3} m and {:.2} deg; using tf",
            d.sensor,
            d.translation_m,
            d.rotation_deg
        );
    }
    for (sensor, why) in &resolved.tf_errors {
        tracing::warn!("{sensor}: tf holds its frame but cannot place it ({why}); using the calibration file");
    }
    let defaults: Vec<&str> = resolved
        .sources
        .iter()
        .filter(|(_, s)| **s == fusion::calib::PoseSource::Defaults)
        .map(|(name, _)| name.as_str())
        .collect();
    if !defaults.is_empty() {
        tracing::warn!(
            "no calibration file and no tf: {} placed at the built-in defaults (docs/calibration.md)",
            defaults.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_is_a_double_and_a_rounded_count_an_integer() {
        use ParameterValue::{Double, Integer, String as Text};
        assert_eq!(as_declared(false, &Double(1.0), Integer(2)), Double(2.0));
        assert_eq!(as_declared(true, &Integer(5), Double(3.0)), Integer(3));
        assert_eq!(as_declared(true, &Integer(5), Double(2.6)), Integer(3));
        // Counts the node never rounded, and a non-finite number, stay as given (refused later).
        assert_eq!(as_declared(false, &Integer(5), Double(3.0)), Double(3.0));
        assert!(matches!(as_declared(true, &Integer(5), Double(f64::NAN)), Double(x) if x.is_nan()));
        assert_eq!(as_declared(true, &Text("a".into()), Integer(1)), Integer(1));
    }

    #[test]
    fn params_file_keys_name_nodes_with_rclcpp_s_wildcards() {
        for (key, fqn, expected) in [
            ("/**", "/fusion_node", true),
            ("/**/fusion_node", "/fusion_node", true),
            ("/**/fusion_node", "/robot1/fusion_node", true),
            ("/**/fusion_node", "/robot1/lidar_ingest", false),
            ("/*/fusion_node", "/robot1/fusion_node", true),
            ("/*/fusion_node", "/fusion_node", false),
            ("/robot1/fusion_node", "/robot2/fusion_node", false),
            ("fusion_node", "/robot1/fusion_node", true),
            ("/fusion_node", "/robot1/fusion_node", false),
        ] {
            assert_eq!(node_key_matches(key, fqn), expected, "{key} vs {fqn}");
        }
    }

    /// Blocks merge as rcl merges them: one per key in first-appearance order, later values
    /// winning inside a block; nested maps are dotted names; `-p` goes to `/**`.
    #[test]
    fn params_files_and_p_rules_merge_in_rcl_s_order() {
        let dir = std::env::temp_dir().join(format!("sf_params_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (dir.join("a.yaml"), dir.join("b.yaml"), dir.join("c.yaml"));
        std::fs::write(&c, "robot1:\n  lidar_ingest:\n    ros__parameters:\n      max_range: 12.0\n").unwrap();
        std::fs::write(&a, "/**/fusion_node:\n  ros__parameters:\n    calibration: ''\n    sync: {wait_ms: 40.0}\n")
            .unwrap();
        std::fs::write(&b, "/**:\n  ros__parameters:\n    calibration: /c.yaml\n/**/fusion_node:\n  ros__parameters:\n    sync:\n      wait_ms: 30\n").unwrap();
        let args = [
            "--ros-args",
            "--params-file",
            a.to_str().unwrap(),
            "--params-file",
            b.to_str().unwrap(),
            "-p",
            "zones:=[1.5, 2]",
            "--params-file",
            c.to_str().unwrap(),
            "-p",
            "lidar_ingest:min_range:=1.0",
        ];
        let blocks = override_blocks(args.iter().map(|s| s.to_string())).unwrap();
        let keys: Vec<&str> = blocks.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["/**/fusion_node", "/**", "/robot1/lidar_ingest", "lidar_ingest"]);
        assert_eq!(blocks[2].1[0].0, "max_range", "nested namespaces join into the key");
        assert_eq!(blocks[3].1[0].0, "min_range", "a node-name prefix on -p is that node's");
        let fusion = &blocks[0].1;
        assert_eq!(fusion[0].0, "calibration");
        assert_eq!(
            (fusion[1].0.as_str(), yaml_parameter(&fusion[1].1)),
            ("sync.wait_ms", Some(ParameterValue::Integer(30)))
        );
        let global: Vec<_> = blocks[1].1.iter().map(|(n, v)| (n.as_str(), yaml_parameter(v))).collect();
        assert_eq!(
            global,
            [
                ("calibration", Some(ParameterValue::String("/c.yaml".into()))),
                ("zones", Some(ParameterValue::DoubleArray(vec![1.5, 2.0])))
            ]
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_sim_clock_reads_no_earlier_than_the_data_it_holds() {
        const MS: i64 = 1_000_000;
        let t = 1_000_000 * 1_000 * MS;
        let mut f = SimFloor::default();
        assert_eq!(f.now(t), t, "no data yet");
        // /clock 31 ms behind the newest set's stamp (a player's clock timer run late).
        f.saw(t + 31 * MS, t);
        assert_eq!(f.now(t), t + 31 * MS);
        assert_eq!(f.now(t + 10 * MS), t + 31 * MS);
        // /clock catches up and passes it: the clock.
        assert_eq!(f.now(t + 40 * MS), t + 40 * MS);
        // A stamp seconds ahead (a sensor clock gone wrong) moves nothing and does not wipe
        // the floor it found.
        f.saw(t + 60 * MS, t + 40 * MS);
        f.saw(t + 7_000 * MS, t + 40 * MS);
        assert_eq!(f.now(t + 40 * MS), t + 60 * MS);
        // Nor does a stamp just beyond the bound.
        let mut g = SimFloor::default();
        g.saw(t + MAX_CLOCK_LAG_NS + 1, t);
        assert_eq!(g.now(t), t);
        // /clock went back 20 ms (a seek back, a loop): what was seen before is forgotten,
        // the new timeline's stamps count.
        f.now(t + 50 * MS);
        assert_eq!(f.now(t + 30 * MS), t + 30 * MS);
        f.saw(t + 45 * MS, t + 30 * MS);
        assert_eq!(f.now(t + 30 * MS), t + 45 * MS);
        // Back by the whole bag.
        f.saw(t + 10 * MS, t);
        assert_eq!(f.now(t), t + 10 * MS);
    }
}
