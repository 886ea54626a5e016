//! Each node's parameters as one typed struct (trait [`NodeConfig`]): what the node reads
//! through r2r's derived parameters (the fields' doc comments are what `ros2 param
//! describe` says), what the tools (`fusion_replay`, `fusion_sched_bench`) read from the
//! same params files (serde; a name the node does not have, in its own block, refused), and
//! what the parameter tables of docs/nodes/*.md are generated from.
//!
//! - [`FusionNodeConfig`] (fusion_node.rs): its defaults come, by name, from the ROS-free
//!   structs the parameters end up in (`PipelineParams`, `SchedConfig`, `RtConfig::NODE`,
//!   `DetectorParams`), so they live once.
//! - [`SummarizerNodeConfig`] (summarizer.rs).
//! - [`IngestNodeConfig`] (ingest.rs): the common ingest parameters beside each ingest
//!   node's own (the LiDAR and radar filters from `fusion::cloud::NumberParams`).
use anyhow::{bail, Context as _, Result};
use r2r::RosParams;
use serde::Serialize;
use serde_norway::{Mapping, Value};
use std::path::Path;

mod fusion_node;
mod ingest;
mod summarizer;

pub use fusion_node::*;
pub use ingest::*;
pub use summarizer::*;

/// Seconds a node waits at start for `/tf_static` to place its sensors (`tf_wait`).
pub const TF_WAIT_S: f64 = 1.0;

/// Parameters every ROS 2 node has, which a params file may hold for any node: not ours to
/// refuse when a tool reads the file.
const ROS_WIDE: [&str; 3] = ["use_sim_time", "qos_overrides", "start_type_description_service"];

/// A node's parameters as one typed struct: serde reads and writes it (params files, the
/// tools), r2r's derived parameters declare it on the node, and its doc comments are what
/// `ros2 param describe` and the node's page say.
pub trait NodeConfig: Default + Clone + Serialize + serde::de::DeserializeOwned + RosParams {
    /// The node's name, as params-file blocks name it.
    const NODE: &'static str;

    /// Whether `ros2 param set` changes `name` on the running node.
    fn is_live(_name: &str) -> bool {
        false
    }

    /// Whether a number given for the count `name` is taken rounded (the node always took
    /// `tracker.confirm_hits: 3.0` as 3); other counts refuse a non-integer.
    fn rounds(_name: &str) -> bool {
        false
    }

    /// Whether `name`, given to this node but not one of its parameters, is expected there
    /// (the launch file hands every ingest node the same arguments) rather than a mistake.
    fn tolerated(_name: &str) -> bool {
        false
    }

    /// This config's parameters, as r2r registers them (names, values, descriptions).
    fn clone_registered(&self, into: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>) {
        self.clone().register_parameters("", None, into).expect("a config registers");
    }
    /// Every parameter by its dotted name with its value, in declaration order.
    fn flat(&self) -> Vec<(String, Value)> {
        let mut out = vec![];
        crate::ros::flatten_params("", &serde_norway::to_value(self).expect("a plain struct"), &mut out);
        out
    }

    /// The node's blocks of a ROS 2 params file (`/**`, `/**/NODE`, `NODE`, each
    /// `ros__parameters`), applied in order over the defaults, as the node applies them. A
    /// name this node does not have is an error in a block for this node (a typo would
    /// otherwise pass unnoticed) and is passed over in a `/**` block (meant for every node);
    /// so are the parameters every ROS node has (`use_sim_time` …). A value of the wrong
    /// type is an error naming the parameter.
    fn from_params_file(path: &Path) -> Result<Self> {
        let node = Self::NODE;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let doc: Value = serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
        let Some(blocks) = doc.as_mapping() else { bail!("{}: expected a mapping of node names", path.display()) };
        let defaults = Self::default().flat();
        let mut tree = match serde_norway::to_value(Self::default()) {
            Ok(Value::Mapping(m)) => m,
            _ => unreachable!("a struct serializes to a mapping"),
        };
        for (key, block) in blocks {
            let key = key.as_str().unwrap_or("");
            let for_every_node = key == "/**" || key == "**";
            if !for_every_node && key.trim_start_matches('/').rsplit('/').next() != Some(node) {
                continue;
            }
            let Some(p) = block.get("ros__parameters") else { continue };
            let mut flat = vec![];
            crate::ros::flatten_params("", p, &mut flat);
            for (name, v) in flat {
                let Some((_, default)) = defaults.iter().find(|(n, _)| *n == name) else {
                    if for_every_node || is_ros_wide(&name) {
                        continue;
                    }
                    bail!("{}: '{name}' is not a {node} parameter", path.display());
                };
                let v = typed_like(default, v, Self::rounds(&name))
                    .map_err(|why| anyhow::anyhow!("{}: parameter {name} {why}", path.display()))?;
                put(&mut tree, &name, v);
            }
        }
        let config: Self =
            serde_norway::from_value(Value::Mapping(tree)).with_context(|| format!("{}", path.display()))?;
        config.validate().with_context(|| format!("{}: {node}", path.display()))?;
        Ok(config)
    }

    /// The checks the node makes before it starts (ranges, words, consistency), naming the
    /// parameter: the same for the node and for a tool reading its params file.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// The parameter table of the node's page (docs/nodes/NODE.md): every parameter, its
    /// type, default, whether it is live, and its meaning (the field's doc comment, as
    /// `ros2 param describe` says it).
    fn markdown_table() -> String {
        Self::markdown_table_where(|_| true)
    }

    /// The values `name` takes beyond its type, as the node checks them ("" when its
    /// meaning says it).
    fn range(_name: &str) -> &'static str {
        ""
    }

    /// [`Self::markdown_table`] of the parameters `keep` names.
    fn markdown_table_where(keep: impl Fn(&str) -> bool) -> String {
        let mut registered = r2r::indexmap::IndexMap::new();
        Self::default().register_parameters("", None, &mut registered).expect("the defaults register");
        let mut t =
            String::from("| parameter | type | default | range | live | meaning |\n|---|---|---|---|---|---|\n");
        for (name, p) in registered.iter().filter(|(name, _)| keep(name)) {
            let (ty, default) = match &p.value {
                r2r::ParameterValue::Bool(b) => ("bool", b.to_string()),
                r2r::ParameterValue::Integer(i) => ("integer", i.to_string()),
                r2r::ParameterValue::Double(x) => ("double", format!("{x:?}")),
                r2r::ParameterValue::String(s) => ("string", format!("\"{s}\"")),
                r2r::ParameterValue::DoubleArray(v) => ("double array", format!("{v:?}")),
                other => ("other", format!("{other:?}")),
            };
            let live = if Self::is_live(name) { "yes" } else { "" };
            let range = Self::range(name);
            let meaning = p.description.trim().replace('|', "\\|");
            t += &format!("| `{name}` | {ty} | `{default}` | {range} | {live} | {meaning} |\n");
        }
        t
    }
}

/// `tf_wait`, checked where every node reads it.
pub fn check_tf_wait(v: f64) -> Result<()> {
    if !(0.0..=60.0).contains(&v) {
        bail!("parameter tf_wait must be 0 .. 60 seconds, got {v}");
    }
    Ok(())
}

/// A double parameter must be finite (a NaN or infinity means nothing in any of ours).
pub(crate) fn finite(name: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        bail!("parameter {name} must be a finite number, got {v}");
    }
    Ok(())
}

/// Whether `name` is a parameter every ROS 2 node has (`use_sim_time`, `qos_overrides.…`).
pub fn is_ros_wide(name: &str) -> bool {
    ROS_WIDE.iter().any(|w| name == *w || name.starts_with(&format!("{w}.")))
}

/// Sets `name` (dotted) in a nested mapping.
pub(crate) fn put(tree: &mut Mapping, name: &str, value: Value) {
    match name.split_once('.') {
        None => {
            tree.insert(name.into(), value);
        }
        Some((section, rest)) => {
            let entry = tree.entry(section.into()).or_insert_with(|| Value::Mapping(Mapping::new()));
            if let Value::Mapping(m) = entry {
                put(m, rest, value);
            }
        }
    }
}

/// A measure as the file would write it: an f32-held value (`camera.min_iou` 0.2) reads
/// 0.2, not 0.20000000298.
pub(crate) fn measure(v: f64) -> Value {
    let single = v as f32;
    let v = if single as f64 == v { single.to_string().parse().unwrap_or(v) } else { v };
    Value::from(v)
}

/// `v` as a value of `default`'s type (an integer is a number; a number is no integer
/// unless whole), or why not.
fn typed_like(default: &Value, v: Value, rounds: bool) -> Result<Value, String> {
    match default {
        Value::Number(n) if n.is_i64() => match (v.as_i64(), v.as_f64()) {
            (Some(_), _) => Ok(v),
            (None, Some(x)) if rounds && x.is_finite() => Ok(Value::from(x.round() as i64)),
            _ => Err(format!("must be an integer, got {}", show(&v))),
        },
        Value::Number(_) => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Value::from(x)),
            _ => Err(format!("must be a finite number, got {}", show(&v))),
        },
        Value::Bool(_) => match v {
            Value::Bool(_) => Ok(v),
            _ => Err(format!("must be true or false, got {}", show(&v))),
        },
        Value::String(_) => match v {
            Value::String(_) => Ok(v),
            // A bare word YAML reads as a number (`input_size: 320`) is still the word.
            Value::Number(n) => Ok(Value::from(n.to_string())),
            _ => Err(format!("must be a string, got {}", show(&v))),
        },
        Value::Sequence(d) => match v.as_sequence() {
            Some(items) if items.len() == d.len() && items.iter().all(|x| x.as_f64().is_some()) => {
                Ok(Value::Sequence(items.iter().map(|x| Value::from(x.as_f64().expect("a number"))).collect()))
            }
            _ => Err(format!("must be {} numbers, got {}", d.len(), show(&v))),
        },
        _ => Ok(v),
    }
}

fn show(v: &Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_string()).unwrap_or_else(|_| format!("{v:?}"))
}
