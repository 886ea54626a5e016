//! The ROS 2 XML launch format, the subset DESIGN.md §7 lists, parsed and evaluated without
//! ROS: the result is the list of processes to start, exactly as launch_ros would start
//! them. Every error names `file:line` and is found before any process starts.
use serde_norway::Value;
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchError {
    pub file: PathBuf,
    pub line: u32,
    pub msg: String,
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.msg)
    }
}

impl std::error::Error for LaunchError {}

type Result<T> = std::result::Result<T, LaunchError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Screen,
    Log,
    Both,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParamSource {
    /// Consecutive name/value params, written to one generated params file.
    Inline(Vec<(String, Value)>),
    /// `<param from="file.yaml"/>`.
    File(PathBuf),
}

/// One process to start, as launch_ros would.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub pkg: String,
    pub exec: String,
    pub executable: PathBuf,
    pub name: Option<String>,
    /// Fully qualified namespace ("/" when none).
    pub namespace: String,
    pub args: Vec<String>,
    pub ros_args: Vec<String>,
    pub params: Vec<ParamSource>,
    pub remaps: Vec<(String, String)>,
    /// Environment changes in order: Some = set, None = unset.
    pub env: Vec<(String, Option<String>)>,
    pub output: Output,
    pub respawn: bool,
    pub respawn_delay: f64,
    pub launch_prefix: Vec<String>,
    /// `file:line` of the `<node>` tag, for messages.
    pub origin: String,
}

impl NodeSpec {
    /// A label for output prefixes: the node name, else the executable.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.exec.clone())
    }

    /// The command line, launch_ros style. `inline_files` are the paths of the generated
    /// params files, one per `ParamSource::Inline`, in order.
    pub fn command(&self, inline_files: &[PathBuf]) -> Vec<String> {
        let mut cmd: Vec<String> = self.launch_prefix.clone();
        cmd.push(self.executable.display().to_string());
        cmd.extend(self.args.iter().cloned());
        cmd.push("--ros-args".into());
        cmd.extend(self.ros_args.iter().cloned());
        if let Some(name) = &self.name {
            cmd.extend(["-r".into(), format!("__node:={name}")]);
        }
        if self.namespace != "/" {
            cmd.extend(["-r".into(), format!("__ns:={}", self.namespace)]);
        }
        let mut inline = inline_files.iter();
        for p in &self.params {
            let path = match p {
                ParamSource::Inline(_) => inline.next().map(|p| p.display().to_string()).unwrap_or_default(),
                ParamSource::File(f) => f.display().to_string(),
            };
            cmd.extend(["--params-file".into(), path]);
        }
        for (from, to) in &self.remaps {
            cmd.extend(["-r".into(), format!("{from}:={to}")]);
        }
        if cmd.last().map(String::as_str) == Some("--ros-args") {
            cmd.pop();
        }
        cmd
    }
}

/// YAML text of a generated params file: `/**: ros__parameters: {...}`, nested on dots.
pub fn params_yaml(params: &[(String, Value)]) -> String {
    let mut root = serde_norway::Mapping::new();
    for (name, value) in params {
        let mut map = &mut root;
        let parts: Vec<&str> = name.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            let entry = map.entry(Value::from(*part)).or_insert_with(|| Value::Mapping(serde_norway::Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(serde_norway::Mapping::new());
            }
            map = entry.as_mapping_mut().expect("just made a mapping");
        }
        map.insert(Value::from(parts[parts.len() - 1]), value.clone());
    }
    let mut ros = serde_norway::Mapping::new();
    ros.insert("ros__parameters".into(), Value::Mapping(root));
    let mut top = serde_norway::Mapping::new();
    top.insert("/**".into(), Value::Mapping(ros));
    serde_norway::to_string(&Value::Mapping(top)).unwrap_or_default()
}

/// A declared launch argument (for `--show-args`).
#[derive(Debug, Clone, PartialEq)]
pub struct ArgInfo {
    pub name: String,
    pub default: Option<String>,
    pub description: String,
    pub choices: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Launch {
    pub nodes: Vec<NodeSpec>,
    pub args: Vec<ArgInfo>,
}

/// ROS YAML typing of a parameter value: `1` int, `1.0` float, `true` bool, `'1'` string,
/// `[a, b]` list; anything YAML cannot read stays a string. As in launch_ros, a value that
/// reads as YAML null (`""`, `~`, `null`) stays the string it was: `value=""` is an empty
/// string parameter, never a null (which rcl would read as the string "null").
pub fn typed_value(text: &str) -> Value {
    match serde_norway::from_str::<Value>(text) {
        Ok(Value::Null) | Ok(Value::Mapping(_)) | Err(_) => Value::String(text.into()),
        Ok(v) => v,
    }
}

/// `pkg` → its install prefix, through AMENT_PREFIX_PATH and the ament index.
pub fn find_package_prefix(pkg: &str) -> Option<PathBuf> {
    std::env::var("AMENT_PREFIX_PATH")
        .ok()?
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .find(|p| p.join("share/ament_index/resource_index/packages").join(pkg).is_file())
}

// ---- the evaluator ----------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Scope {
    vars: BTreeMap<String, String>,
    namespace: String,
    env: Vec<(String, Option<String>)>,
}

struct File<'a> {
    path: PathBuf,
    dir: PathBuf,
    doc: &'a roxmltree::Document<'a>,
}

struct Loader<'o> {
    out: &'o mut Launch,
    depth: usize,
    top_level: bool,
}

/// Launch files are small; anything past this is not one.
const MAX_LAUNCH_FILE_BYTES: u64 = 16 << 20;
const MAX_INCLUDE_DEPTH: usize = 16;

fn allowed_attrs(tag: &str) -> Option<&'static [&'static str]> {
    Some(match tag {
        "launch" => &["version"],
        "arg" => &["name", "default", "description", "if", "unless"],
        "choice" => &["value"],
        "let" => &["name", "value", "if", "unless"],
        "node" => &[
            "pkg",
            "exec",
            "name",
            "namespace",
            "args",
            "ros_args",
            "output",
            "respawn",
            "respawn_delay",
            "launch-prefix",
            "if",
            "unless",
        ],
        "param" => &["name", "value", "from", "if", "unless"],
        "remap" => &["from", "to", "if", "unless"],
        "env" => &["name", "value", "if", "unless"],
        "group" => &["scoped", "if", "unless"],
        "push_ros_namespace" | "push-ros-namespace" => &["namespace", "if", "unless"],
        "include" => &["file", "if", "unless"],
        "set_env" | "set-env" => &["name", "value", "if", "unless"],
        "unset_env" | "unset-env" => &["name", "if", "unless"],
        _ => return None,
    })
}

impl<'a> File<'a> {
    fn line(&self, n: roxmltree::Node) -> u32 {
        self.doc.text_pos_at(n.range().start).row
    }

    fn err(&self, n: roxmltree::Node, msg: impl Into<String>) -> LaunchError {
        LaunchError { file: self.path.clone(), line: self.line(n), msg: msg.into() }
    }

    fn check_attrs(&self, n: roxmltree::Node, parent: &str) -> Result<()> {
        let tag = n.tag_name().name();
        let allowed = allowed_attrs(tag).ok_or_else(|| self.err(n, format!("unknown tag <{tag}> in <{parent}>")))?;
        for a in n.attributes() {
            if !allowed.contains(&a.name()) {
                return Err(self.err(n, format!("unknown attribute '{}' on <{tag}>", a.name())));
            }
        }
        Ok(())
    }

    fn required<'b>(&self, n: roxmltree::Node<'b, '_>, attr: &str) -> Result<&'b str> {
        n.attribute(attr).ok_or_else(|| self.err(n, format!("<{}> needs attribute '{attr}'", n.tag_name().name())))
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Loads and evaluates a launch file. `cli` are the `name:=value` arguments.
pub fn load(path: &Path, cli: &BTreeMap<String, String>) -> Result<Launch> {
    let mut out = Launch::default();
    let mut loader = Loader { out: &mut out, depth: 0, top_level: true };
    let scope = Scope { namespace: "/".into(), ..Default::default() };
    loader.load_file(path, cli, scope, None)?;
    // A `name:=value` for an argument the file never declares is most likely a typo.
    for name in cli.keys() {
        if !out.args.iter().any(|a| &a.name == name) {
            return Err(LaunchError {
                file: path.into(),
                line: 1,
                msg: format!("argument '{name}' given on the command line is not declared in the launch file"),
            });
        }
    }
    Ok(out)
}

impl Loader<'_> {
    fn load_file(
        &mut self,
        path: &Path,
        given: &BTreeMap<String, String>,
        mut scope: Scope,
        from: Option<(&Path, u32)>,
    ) -> Result<()> {
        let at = |msg: String| match from {
            Some((f, l)) => LaunchError { file: f.into(), line: l, msg },
            None => LaunchError { file: path.into(), line: 0, msg },
        };
        if self.depth > MAX_INCLUDE_DEPTH {
            return Err(at(format!("includes nested deeper than {MAX_INCLUDE_DEPTH} (a cycle?)")));
        }
        // Only a regular file of a launch file's size: an include of /dev/zero or a FIFO
        // would otherwise read (and allocate) forever.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => return Err(at(format!("launch file {} is not a regular file", path.display()))),
            Ok(m) if m.len() > MAX_LAUNCH_FILE_BYTES => {
                return Err(at(format!(
                    "launch file {} is {} bytes, more than the {MAX_LAUNCH_FILE_BYTES} accepted",
                    path.display(),
                    m.len()
                )))
            }
            _ => {}
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| at(format!("cannot read launch file {}: {e}", path.display())))?;
        let doc = roxmltree::Document::parse(&text).map_err(|e| LaunchError {
            file: path.into(),
            line: e.pos().row,
            msg: format!("not well-formed XML: {e}"),
        })?;
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
        let file = File { dir: abs.parent().unwrap_or(Path::new("/")).into(), path: path.into(), doc: &doc };
        let root = doc.root_element();
        if root.tag_name().name() != "launch" {
            return Err(file.err(root, format!("root element must be <launch>, found <{}>", root.tag_name().name())));
        }
        file.check_attrs(root, "document")?;
        // Arguments given to this file (command line or <include><arg>) apply to its
        // <arg> declarations.
        scope.vars.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
        let given_names: Vec<String> = given.keys().cloned().collect();
        self.depth += 1;
        let r = self.actions(&file, root, &mut scope, &given_names);
        self.depth -= 1;
        r
    }

    fn actions(&mut self, f: &File, parent: roxmltree::Node, scope: &mut Scope, given: &[String]) -> Result<()> {
        for n in parent.children().filter(|c| c.is_element()) {
            let tag = n.tag_name().name();
            f.check_attrs(n, parent.tag_name().name())?;
            if !self.condition(f, n, scope)? {
                continue;
            }
            match tag {
                "arg" => self.arg(f, n, scope, given)?,
                "let" => {
                    let name = f.required(n, "name")?.to_string();
                    let value = subst(f, n, f.required(n, "value")?, scope)?;
                    scope.vars.insert(name, value);
                }
                "node" => {
                    let spec = self.node(f, n, scope)?;
                    self.out.nodes.push(spec);
                }
                "group" => {
                    let scoped = match n.attribute("scoped") {
                        Some(s) => parse_bool(&subst(f, n, s, scope)?)
                            .ok_or_else(|| f.err(n, "scoped must be true or false"))?,
                        None => true,
                    };
                    if scoped {
                        let mut inner = scope.clone();
                        self.actions(f, n, &mut inner, given)?;
                    } else {
                        self.actions(f, n, scope, given)?;
                    }
                }
                "push_ros_namespace" | "push-ros-namespace" => {
                    let ns = subst(f, n, f.required(n, "namespace")?, scope)?;
                    scope.namespace = join_namespace(&scope.namespace, &ns);
                }
                "include" => {
                    let file = subst(f, n, f.required(n, "file")?, scope)?;
                    let path = if Path::new(&file).is_absolute() { PathBuf::from(&file) } else { f.dir.join(&file) };
                    let mut args = BTreeMap::new();
                    for a in n.children().filter(|c| c.is_element()) {
                        if a.tag_name().name() != "arg" {
                            return Err(
                                f.err(a, format!("unknown tag <{}> in <include> (only <arg>)", a.tag_name().name()))
                            );
                        }
                        for at in a.attributes() {
                            if !["name", "value"].contains(&at.name()) {
                                return Err(
                                    f.err(a, format!("unknown attribute '{}' on <arg> in <include>", at.name()))
                                );
                            }
                        }
                        args.insert(f.required(a, "name")?.to_string(), subst(f, a, f.required(a, "value")?, scope)?);
                    }
                    // The included file sees this scope's variables, namespace and
                    // environment; what it declares does not leak back.
                    let top = std::mem::replace(&mut self.top_level, false);
                    let r = self.load_file(&path, &args, scope.clone(), Some((&f.path, f.line(n))));
                    self.top_level = top;
                    r?;
                }
                "set_env" | "set-env" => {
                    let name = subst(f, n, f.required(n, "name")?, scope)?;
                    let value = subst(f, n, f.required(n, "value")?, scope)?;
                    scope.env.push((name, Some(value)));
                }
                "unset_env" | "unset-env" => {
                    let name = subst(f, n, f.required(n, "name")?, scope)?;
                    scope.env.push((name, None));
                }
                other => return Err(f.err(n, format!("<{other}> is not allowed in <{}>", parent.tag_name().name()))),
            }
        }
        Ok(())
    }

    fn condition(&self, f: &File, n: roxmltree::Node, scope: &Scope) -> Result<bool> {
        let eval = |attr: &str| -> Result<Option<bool>> {
            match n.attribute(attr) {
                None => Ok(None),
                Some(expr) => {
                    let v = subst(f, n, expr, scope)?;
                    parse_bool(&v).map(Some).ok_or_else(|| {
                        f.err(n, format!("{attr}=\"{expr}\" evaluates to '{v}', expected true/false/1/0"))
                    })
                }
            }
        };
        let if_ = eval("if")?;
        let unless = eval("unless")?;
        if if_.is_some() && unless.is_some() {
            return Err(f.err(n, "an action takes 'if' or 'unless', not both"));
        }
        Ok(if_.unwrap_or(true) && !unless.unwrap_or(false))
    }

    fn arg(&mut self, f: &File, n: roxmltree::Node, scope: &mut Scope, given: &[String]) -> Result<()> {
        let name = f.required(n, "name")?.to_string();
        let mut choices = vec![];
        for c in n.children().filter(|c| c.is_element()) {
            if c.tag_name().name() != "choice" {
                return Err(f.err(c, format!("unknown tag <{}> in <arg> (only <choice>)", c.tag_name().name())));
            }
            f.check_attrs(c, "arg")?;
            choices.push(f.required(c, "value")?.to_string());
        }
        let default = n.attribute("default").map(|d| subst(f, n, d, scope)).transpose()?;
        let value = if given.contains(&name) {
            scope.vars.get(&name).cloned()
        } else if let Some(d) = &default {
            Some(d.clone())
        } else {
            scope.vars.get(&name).cloned()
        };
        let value = value.ok_or_else(|| {
            f.err(n, format!("required argument '{name}' not provided (pass {name}:=VALUE){}", describe(n)))
        })?;
        if !choices.is_empty() && !choices.contains(&value) {
            return Err(f.err(n, format!("argument '{name}' = '{value}' is not one of {choices:?}")));
        }
        scope.vars.insert(name.clone(), value);
        if self.top_level && !self.out.args.iter().any(|a| a.name == name) {
            self.out.args.push(ArgInfo {
                name,
                default,
                description: n.attribute("description").unwrap_or("").to_string(),
                choices,
            });
        }
        Ok(())
    }

    fn node(&mut self, f: &File, n: roxmltree::Node, scope: &Scope) -> Result<NodeSpec> {
        let s = |v: &str| subst(f, n, v, scope);
        let pkg = s(f.required(n, "pkg")?)?;
        let exec = s(f.required(n, "exec")?)?;
        let prefix = find_package_prefix(&pkg)
            .ok_or_else(|| f.err(n, format!("package '{pkg}' not found in AMENT_PREFIX_PATH")))?;
        let executable = prefix.join("lib").join(&pkg).join(&exec);
        if !executable.is_file() {
            return Err(
                f.err(n, format!("executable '{exec}' not found in package '{pkg}' ({})", executable.display()))
            );
        }
        let name = n.attribute("name").map(&s).transpose()?;
        let namespace = match n.attribute("namespace") {
            Some(ns) => join_namespace(&scope.namespace, &s(ns)?),
            None => scope.namespace.clone(),
        };
        let output = match n.attribute("output").map(&s).transpose()?.as_deref() {
            None | Some("log") => Output::Log,
            Some("screen") => Output::Screen,
            Some("both") => Output::Both,
            Some(o) => return Err(f.err(n, format!("output=\"{o}\": expected screen, log or both"))),
        };
        let respawn = match n.attribute("respawn") {
            Some(r) => parse_bool(&s(r)?).ok_or_else(|| f.err(n, "respawn must be true or false"))?,
            None => false,
        };
        let respawn_delay = match n.attribute("respawn_delay") {
            Some(d) => {
                let v = s(d)?;
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| f.err(n, format!("respawn_delay '{v}' is not a finite number ≥ 0")))?
            }
            None => 0.0,
        };
        let split = |attr: &str| -> Result<Vec<String>> {
            match n.attribute(attr) {
                // POSIX shell words, as launch_ros splits them (shlex): quotes group,
                // a backslash escapes, nothing is expanded.
                Some(v) => shlex::split(&s(v)?).ok_or_else(|| f.err(n, format!("{attr}: unbalanced quotes"))),
                None => Ok(vec![]),
            }
        };
        let mut spec = NodeSpec {
            pkg,
            exec,
            executable,
            name,
            namespace,
            args: split("args")?,
            ros_args: split("ros_args")?,
            params: vec![],
            remaps: vec![],
            env: scope.env.clone(),
            output,
            respawn,
            respawn_delay,
            launch_prefix: split("launch-prefix")?,
            origin: format!("{}:{}", f.path.display(), f.line(n)),
        };
        for c in n.children().filter(|c| c.is_element()) {
            f.check_attrs(c, "node")?;
            if !self.condition(f, c, scope)? {
                continue;
            }
            match c.tag_name().name() {
                "param" => self.param(f, c, scope, "", &mut spec.params)?,
                "remap" => spec
                    .remaps
                    .push((subst(f, c, f.required(c, "from")?, scope)?, subst(f, c, f.required(c, "to")?, scope)?)),
                "env" => spec.env.push((
                    subst(f, c, f.required(c, "name")?, scope)?,
                    Some(subst(f, c, f.required(c, "value")?, scope)?),
                )),
                other => return Err(f.err(c, format!("<{other}> is not allowed in <node>"))),
            }
        }
        Ok(spec)
    }

    fn param(
        &mut self,
        f: &File,
        n: roxmltree::Node,
        scope: &Scope,
        prefix: &str,
        out: &mut Vec<ParamSource>,
    ) -> Result<()> {
        let children: Vec<_> = n.children().filter(|c| c.is_element()).collect();
        if let Some(from) = n.attribute("from") {
            if n.attribute("name").is_some() || n.attribute("value").is_some() || !children.is_empty() {
                return Err(f.err(n, "<param from=...> takes no name, value or children"));
            }
            let path = subst(f, n, from, scope)?;
            let p = if Path::new(&path).is_absolute() { PathBuf::from(&path) } else { f.dir.join(&path) };
            if !p.is_file() {
                return Err(f.err(n, format!("parameter file {} does not exist", p.display())));
            }
            out.push(ParamSource::File(p));
            return Ok(());
        }
        let name = subst(f, n, f.required(n, "name")?, scope)?;
        let full = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
        match (n.attribute("value"), children.is_empty()) {
            (Some(v), true) => {
                let value = typed_value(&subst(f, n, v, scope)?);
                match out.last_mut() {
                    Some(ParamSource::Inline(list)) => list.push((full, value)),
                    _ => out.push(ParamSource::Inline(vec![(full, value)])),
                }
            }
            (None, false) => {
                for c in children {
                    if c.tag_name().name() != "param" {
                        return Err(f.err(c, format!("<{}> is not allowed in <param>", c.tag_name().name())));
                    }
                    f.check_attrs(c, "param")?;
                    if self.condition(f, c, scope)? {
                        self.param(f, c, scope, &full, out)?;
                    }
                }
            }
            (Some(_), false) => return Err(f.err(n, "<param> takes a value or nested <param>s, not both")),
            (None, true) => return Err(f.err(n, format!("<param name=\"{full}\"> needs a value"))),
        }
        Ok(())
    }
}

fn describe(n: roxmltree::Node) -> String {
    n.attribute("description").map(|d| format!(": {d}")).unwrap_or_default()
}

fn join_namespace(base: &str, ns: &str) -> String {
    let joined = if ns.starts_with('/') { ns.to_string() } else { format!("{}/{}", base.trim_end_matches('/'), ns) };
    let trimmed = joined.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    }
}

// ---- substitutions ----------------------------------------------------------------------

fn subst(f: &File, n: roxmltree::Node, text: &str, scope: &Scope) -> Result<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let mut out = String::new();
    while pos < chars.len() {
        if chars[pos] == '$' && chars.get(pos + 1) == Some(&'(') {
            let (v, next) = call(f, n, &chars, pos + 2, scope, text, 0)?;
            out.push_str(&v);
            pos = next;
        } else {
            out.push(chars[pos]);
            pos += 1;
        }
    }
    Ok(out)
}

/// How deep `$(…)` may nest inside another's arguments (ros2 launch files nest two or three).
const MAX_SUBST_DEPTH: usize = 32;

/// Evaluates `$(name args…)` whose name starts at `pos`, `depth` substitutions deep;
/// returns the value and the position after the closing parenthesis.
fn call(
    f: &File,
    n: roxmltree::Node,
    c: &[char],
    mut pos: usize,
    scope: &Scope,
    text: &str,
    depth: usize,
) -> Result<(String, usize)> {
    let bad = |msg: String| f.err(n, format!("bad substitution in \"{text}\": {msg}"));
    if depth >= MAX_SUBST_DEPTH {
        return Err(bad(format!("substitutions nested more than {MAX_SUBST_DEPTH} deep")));
    }
    let start = pos;
    while pos < c.len() && !c[pos].is_whitespace() && c[pos] != ')' {
        pos += 1;
    }
    let name: String = c[start..pos].iter().collect();
    let mut args: Vec<String> = vec![];
    loop {
        while pos < c.len() && c[pos].is_whitespace() {
            pos += 1;
        }
        if pos >= c.len() {
            return Err(bad("missing ')'".into()));
        }
        if c[pos] == ')' {
            pos += 1;
            break;
        }
        // One argument: up to unquoted whitespace or ')'; quotes group and are removed;
        // nested $(...) are evaluated, inside quotes too.
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while pos < c.len() {
            let ch = c[pos];
            if quote.is_none() && (ch.is_whitespace() || ch == ')') {
                break;
            }
            if ch == '$' && c.get(pos + 1) == Some(&'(') {
                let (v, next) = call(f, n, c, pos + 2, scope, text, depth + 1)?;
                arg.push_str(&v);
                pos = next;
                continue;
            }
            match quote {
                Some(q) if ch == q => quote = None,
                None if ch == '\'' || ch == '"' => quote = Some(ch),
                _ => arg.push(ch),
            }
            pos += 1;
        }
        if quote.is_some() {
            return Err(bad("unbalanced quotes".into()));
        }
        args.push(arg);
    }
    let want = |k: std::ops::RangeInclusive<usize>| -> Result<()> {
        if k.contains(&args.len()) {
            Ok(())
        } else {
            Err(bad(format!("$({name}) takes {k:?} arguments, got {}", args.len())))
        }
    };
    let boolean = |s: &str| parse_bool(s).ok_or_else(|| bad(format!("'{s}' is not a boolean")));
    let v = match name.as_str() {
        "var" => {
            want(1..=1)?;
            scope
                .vars
                .get(&args[0])
                .cloned()
                .ok_or_else(|| bad(format!("unknown launch argument or variable '{}'", args[0])))?
        }
        "env" => {
            want(1..=2)?;
            match std::env::var(&args[0]) {
                Ok(v) => v,
                Err(_) => {
                    args.get(1).cloned().ok_or_else(|| bad(format!("environment variable '{}' is not set", args[0])))?
                }
            }
        }
        "find-pkg-share" | "find-pkg-prefix" => {
            want(1..=1)?;
            let prefix =
                find_package_prefix(&args[0]).ok_or_else(|| bad(format!("package '{}' not found", args[0])))?;
            if name == "find-pkg-share" { prefix.join("share").join(&args[0]) } else { prefix }.display().to_string()
        }
        "dirname" => {
            want(0..=0)?;
            f.dir.display().to_string()
        }
        "not" => {
            want(1..=1)?;
            (!boolean(&args[0])?).to_string()
        }
        "and" => {
            want(2..=2)?;
            (boolean(&args[0])? && boolean(&args[1])?).to_string()
        }
        "or" => {
            want(2..=2)?;
            (boolean(&args[0])? || boolean(&args[1])?).to_string()
        }
        "equals" => {
            want(2..=2)?;
            let same = match (parse_bool(&args[0]), parse_bool(&args[1])) {
                (Some(a), Some(b)) => a == b,
                _ => match (args[0].parse::<f64>(), args[1].parse::<f64>()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => args[0] == args[1],
                },
            };
            same.to_string()
        }
        "eval" => {
            if args.is_empty() {
                return Err(bad("$(eval) needs an expression".into()));
            }
            eval::evaluate(&args.join(" ")).map_err(|e| bad(format!("$(eval {}): {e}", args.join(" "))))?
        }
        "" => return Err(bad("empty $()".into())),
        other => return Err(bad(format!("unknown substitution $({other})"))),
    };
    Ok((v, pos))
}

/// The value of a `$(eval EXPR)` substitution (what a launch file writes inside it).
pub fn evaluate_expression(expr: &str) -> std::result::Result<String, String> {
    eval::evaluate(expr)
}

/// `$(eval)` for the simple Python expressions launch files use: numbers, strings,
/// True/False, + - * / % //, comparisons, and/or/not, parentheses.
mod eval {
    #[derive(Debug, Clone, PartialEq)]
    enum V {
        Int(i64),
        Float(f64),
        Str(String),
        Bool(bool),
    }

    impl V {
        fn show(&self) -> String {
            match self {
                V::Int(i) => i.to_string(),
                V::Float(x) if x.fract() == 0.0 && x.is_finite() => format!("{x:.1}"),
                V::Float(x) => x.to_string(),
                V::Str(s) => s.clone(),
                V::Bool(b) => {
                    if *b {
                        "True".into()
                    } else {
                        "False".into()
                    }
                }
            }
        }
        fn truthy(&self) -> bool {
            match self {
                V::Int(i) => *i != 0,
                V::Float(x) => *x != 0.0,
                V::Str(s) => !s.is_empty(),
                V::Bool(b) => *b,
            }
        }
        fn num(&self) -> Option<f64> {
            match self {
                V::Int(i) => Some(*i as f64),
                V::Float(x) => Some(*x),
                V::Bool(b) => Some(*b as i64 as f64),
                V::Str(_) => None,
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum T {
        V(V),
        Op(String),
    }

    fn lex(s: &str) -> Result<Vec<T>, String> {
        let c: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut out = vec![];
        while i < c.len() {
            let ch = c[i];
            if ch.is_whitespace() {
                i += 1;
            } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
                let st = i;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.' || c[i] == 'e' || c[i] == 'E') {
                    i += 1;
                }
                let t: String = c[st..i].iter().collect();
                out.push(T::V(if let Ok(v) = t.parse::<i64>() {
                    V::Int(v)
                } else {
                    V::Float(t.parse().map_err(|_| format!("bad number '{t}'"))?)
                }));
            } else if ch == '\'' || ch == '"' {
                let st = i + 1;
                i += 1;
                while i < c.len() && c[i] != ch {
                    i += 1;
                }
                if i >= c.len() {
                    return Err("unterminated string".into());
                }
                out.push(T::V(V::Str(c[st..i].iter().collect())));
                i += 1;
            } else if ch.is_alphabetic() || ch == '_' {
                let st = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                let w: String = c[st..i].iter().collect();
                out.push(match w.as_str() {
                    "True" => T::V(V::Bool(true)),
                    "False" => T::V(V::Bool(false)),
                    "and" | "or" | "not" => T::Op(w),
                    _ => return Err(format!("unknown name '{w}'")),
                });
            } else {
                let two: String = c[i..(i + 2).min(c.len())].iter().collect();
                if ["==", "!=", "<=", ">=", "//"].contains(&two.as_str()) {
                    out.push(T::Op(two));
                    i += 2;
                } else if "+-*/%<>()".contains(ch) {
                    out.push(T::Op(ch.to_string()));
                    i += 1;
                } else {
                    return Err(format!("unexpected '{ch}'"));
                }
            }
        }
        Ok(out)
    }

    struct P {
        t: Vec<T>,
        i: usize,
        /// Nesting of unary minus and parentheses (each level is a stack frame).
        depth: usize,
    }
    const MAX_DEPTH: usize = 64;

    impl P {
        fn peek_op(&self) -> Option<&str> {
            match self.t.get(self.i) {
                Some(T::Op(o)) => Some(o),
                _ => None,
            }
        }
        fn eat(&mut self, op: &str) -> bool {
            if self.peek_op() == Some(op) {
                self.i += 1;
                true
            } else {
                false
            }
        }
        fn or(&mut self) -> Result<V, String> {
            let mut l = self.and()?;
            while self.eat("or") {
                let r = self.and()?;
                l = if l.truthy() { l } else { r };
            }
            Ok(l)
        }
        fn and(&mut self) -> Result<V, String> {
            let mut l = self.not()?;
            while self.eat("and") {
                let r = self.not()?;
                l = if l.truthy() { r } else { l };
            }
            Ok(l)
        }
        fn not(&mut self) -> Result<V, String> {
            let mut negations = 0;
            while self.eat("not") {
                negations += 1;
            }
            let v = self.cmp()?;
            Ok(if negations == 0 { v } else { V::Bool(v.truthy() == (negations % 2 == 0)) })
        }
        fn cmp(&mut self) -> Result<V, String> {
            let l = self.add()?;
            for op in ["==", "!=", "<=", ">=", "<", ">"] {
                if self.eat(op) {
                    let r = self.add()?;
                    let ord = match (l.num(), r.num(), &l, &r) {
                        (Some(a), Some(b), _, _) => a.partial_cmp(&b),
                        (_, _, V::Str(a), V::Str(b)) => Some(a.cmp(b)),
                        _ if op == "==" || op == "!=" => None,
                        _ => return Err("cannot compare a string with a number".into()),
                    };
                    use std::cmp::Ordering::*;
                    let b = match op {
                        "==" => ord == Some(Equal),
                        "!=" => ord != Some(Equal),
                        "<" => ord == Some(Less),
                        ">" => ord == Some(Greater),
                        "<=" => matches!(ord, Some(Less | Equal)),
                        _ => matches!(ord, Some(Greater | Equal)),
                    };
                    return Ok(V::Bool(b));
                }
            }
            Ok(l)
        }
        fn add(&mut self) -> Result<V, String> {
            let mut l = self.mul()?;
            loop {
                if self.eat("+") {
                    let r = self.mul()?;
                    l = match (&l, &r) {
                        (V::Str(a), V::Str(b)) => V::Str(format!("{a}{b}")),
                        _ => arith(&l, &r, '+')?,
                    };
                } else if self.eat("-") {
                    let r = self.mul()?;
                    l = arith(&l, &r, '-')?;
                } else {
                    return Ok(l);
                }
            }
        }
        fn mul(&mut self) -> Result<V, String> {
            let mut l = self.unary()?;
            loop {
                let op = match self.peek_op() {
                    Some(o @ ("*" | "/" | "%" | "//")) => o.to_string(),
                    _ => return Ok(l),
                };
                self.i += 1;
                let r = self.unary()?;
                l = match op.as_str() {
                    "*" => arith(&l, &r, '*')?,
                    "/" => {
                        let (a, b) = (l.num().ok_or("not a number")?, r.num().ok_or("not a number")?);
                        if b == 0.0 {
                            return Err("division by zero".into());
                        }
                        V::Float(a / b)
                    }
                    "//" => {
                        let q = arith(&l, &r, '/')?;
                        match q {
                            V::Int(i) => V::Int(i),
                            V::Float(x) => V::Float(x.floor()),
                            v => v,
                        }
                    }
                    _ => arith(&l, &r, '%')?,
                };
            }
        }
        fn unary(&mut self) -> Result<V, String> {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!("expression nested more than {MAX_DEPTH} deep"));
            }
            let v = self.unary_inner();
            self.depth -= 1;
            v
        }
        fn unary_inner(&mut self) -> Result<V, String> {
            if self.eat("-") {
                return match self.unary()? {
                    V::Int(i) => i.checked_neg().map(V::Int).ok_or_else(|| format!("integer overflow in -({i})")),
                    V::Float(x) => Ok(V::Float(-x)),
                    _ => Err("unary minus needs a number".into()),
                };
            }
            if self.eat("(") {
                let v = self.or()?;
                if !self.eat(")") {
                    return Err("missing ')'".into());
                }
                return Ok(v);
            }
            match self.t.get(self.i).cloned() {
                Some(T::V(v)) => {
                    self.i += 1;
                    Ok(v)
                }
                other => Err(format!("unexpected {other:?}")),
            }
        }
    }

    /// Python's integer and float arithmetic: `//` floors and `%` takes the divisor's sign
    /// (-7 // 2 == -4, 7 % -2 == -1); an integer result outside i64 is an error, not a
    /// wrapped number or a panic (Python would go to big integers).
    fn arith(l: &V, r: &V, op: char) -> Result<V, String> {
        if let (V::Int(a), V::Int(b)) = (l, r) {
            let (a, b) = (*a, *b);
            if matches!(op, '/' | '%') && b == 0 {
                return Err("division by zero".into());
            }
            let floor_div = |a: i64, b: i64| {
                let q = a.checked_div(b)?;
                Some(if a % b != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q })
            };
            let v = match op {
                '+' => a.checked_add(b),
                '-' => a.checked_sub(b),
                '*' => a.checked_mul(b),
                '/' => floor_div(a, b),
                _ => a.checked_rem(b).map(|m| if m != 0 && ((m < 0) != (b < 0)) { m + b } else { m }),
            };
            return v.map(V::Int).ok_or_else(|| format!("integer overflow in {a} {op} {b}"));
        }
        let (a, b) = (l.num().ok_or("not a number")?, r.num().ok_or("not a number")?);
        if matches!(op, '/' | '%') && b == 0.0 {
            return Err("division by zero".into());
        }
        Ok(V::Float(match op {
            '+' => a + b,
            '-' => a - b,
            '*' => a * b,
            '/' => (a / b).floor(),
            _ => a - b * (a / b).floor(),
        }))
    }

    pub fn evaluate(expr: &str) -> Result<String, String> {
        let mut p = P { t: lex(expr)?, i: 0, depth: 0 };
        let v = p.or()?;
        if p.i != p.t.len() {
            return Err(format!("unexpected {:?}", p.t[p.i]));
        }
        Ok(v.show())
    }

    #[cfg(test)]
    mod tests {
        use super::evaluate;

        #[test]
        fn python_like_results() {
            assert_eq!(evaluate("1 + 2 * 3").unwrap(), "7");
            assert_eq!(evaluate("7 / 2").unwrap(), "3.5");
            assert_eq!(evaluate("7 // 2").unwrap(), "3");
            assert_eq!(evaluate("'a' + 'b' == 'ab'").unwrap(), "True");
            assert_eq!(evaluate("not (2 > 3) and 1").unwrap(), "1");
            assert_eq!(evaluate("0.5 * 4").unwrap(), "2.0");
            assert!(evaluate("1 +").is_err());
            assert!(evaluate("import os").is_err());
            // Python floors and takes the divisor's sign.
            assert_eq!(evaluate("-7 // 2").unwrap(), "-4");
            assert_eq!(evaluate("7 // -2").unwrap(), "-4");
            assert_eq!(evaluate("7 % -2").unwrap(), "-1");
            assert_eq!(evaluate("-7 % 2").unwrap(), "1");
            assert_eq!(evaluate("7.0 // -2").unwrap(), "-4.0");
            assert_eq!(evaluate("not not 1").unwrap(), "True");
        }

        #[test]
        fn overflow_division_by_zero_and_deep_nesting_are_errors_not_panics() {
            for e in [
                "(-9223372036854775807 - 1) // -1",
                "(-9223372036854775807 - 1) % -1",
                "9223372036854775807 + 1",
                "-9223372036854775807 - 2",
                "4611686018427387904 * 2",
                "-(-9223372036854775807 - 1)",
                "1 // 0",
                "1 % 0",
                "1.0 % 0",
            ] {
                let r = evaluate(e);
                assert!(r.is_err(), "{e} gave {r:?}");
            }
            let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
            assert!(evaluate(&deep).unwrap_err().contains("nested"));
            assert!(evaluate(&"-".repeat(100_000)).unwrap_err().contains("nested"));
            let nots = format!("{}1", "not ".repeat(100_000));
            assert_eq!(evaluate(&nots).unwrap(), "True");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Once;

    /// A fake ament prefix with package `demo_pkg` and executable `talker`, shared by all tests.
    fn prefix() -> PathBuf {
        static INIT: Once = Once::new();
        let p = std::env::temp_dir().join(format!("sf-launch-test-prefix-{}", std::process::id()));
        INIT.call_once(|| {
            std::fs::create_dir_all(p.join("share/ament_index/resource_index/packages")).unwrap();
            std::fs::write(p.join("share/ament_index/resource_index/packages/demo_pkg"), "").unwrap();
            std::fs::create_dir_all(p.join("lib/demo_pkg")).unwrap();
            std::fs::write(p.join("lib/demo_pkg/talker"), "#!/bin/sh\n").unwrap();
            std::fs::create_dir_all(p.join("share/demo_pkg")).unwrap();
            // The node set itself, for the shipped launch file.
            std::fs::write(p.join("share/ament_index/resource_index/packages/sensor_fusion"), "").unwrap();
            std::fs::create_dir_all(p.join("lib/sensor_fusion")).unwrap();
            for node in sensor_fusion::graph::NODES {
                std::fs::write(p.join("lib/sensor_fusion").join(node.name), "#!/bin/sh\n").unwrap();
            }
            std::env::set_var("AMENT_PREFIX_PATH", &p);
        });
        p
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = prefix().join("files");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_str(name: &str, text: &str, cli: &[(&str, &str)]) -> Result<Launch> {
        let cli = cli.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        load(&write(name, text), &cli)
    }

    #[test]
    fn node_command_is_launch_ros_shaped() {
        let l = load_str(
            "cmd.launch.xml",
            r#"<launch>
  <arg name="rate" default="10"/>
  <let name="twice" value="$(eval $(var rate) * 2)"/>
  <node pkg="demo_pkg" exec="talker" name="t" namespace="ns" args="--flag 'a b' &quot;c \&quot; d&quot; e\ f ''" ros_args="--log-level debug">
    <param name="rate" value="$(var twice)"/>
    <param name="label" value="'7'"/>
    <param name="nested"><param name="x" value="1.5"/><param name="list" value="[1, 2]"/></param>
    <param from="$(dirname)/cmd.launch.xml"/>
    <param name="after" value="true"/>
    <remap from="chatter" to="/out"/>
  </node>
</launch>"#,
            &[("rate", "21")],
        )
        .unwrap();
        let n = &l.nodes[0];
        assert_eq!(n.namespace, "/ns");
        assert_eq!(n.params.len(), 3, "inline, file, inline: {:?}", n.params);
        let ParamSource::Inline(first) = &n.params[0] else { panic!() };
        assert_eq!(first[0], ("rate".to_string(), Value::from(42)));
        assert_eq!(first[1], ("label".to_string(), Value::from("7")));
        assert_eq!(first[2], ("nested.x".to_string(), Value::from(1.5)));
        let yaml = params_yaml(first);
        assert!(yaml.contains("/**:\n  ros__parameters:\n"), "{yaml}");
        assert!(yaml.contains("nested:\n      x: 1.5\n      list:\n      - 1\n      - 2"), "{yaml}");
        let cmd = n.command(&[PathBuf::from("/g1.yaml"), PathBuf::from("/g2.yaml")]);
        let exe = prefix().join("lib/demo_pkg/talker").display().to_string();
        let file = write("cmd.launch.xml", "").canonicalize().unwrap().display().to_string();
        assert_eq!(
            cmd,
            [
                exe.as_str(),
                "--flag",
                "a b",
                "c \" d",
                "e f",
                "",
                "--ros-args",
                "--log-level",
                "debug",
                "-r",
                "__node:=t",
                "-r",
                "__ns:=/ns",
                "--params-file",
                "/g1.yaml",
                "--params-file",
                &file,
                "--params-file",
                "/g2.yaml",
                "-r",
                "chatter:=/out",
            ]
        );
    }

    #[test]
    fn groups_includes_env_and_conditions() {
        write(
            "inner.launch.xml",
            r#"<launch>
  <arg name="who"/>
  <node pkg="demo_pkg" exec="talker" name="$(var who)"/>
</launch>"#,
        );
        let l = load_str(
            "outer.launch.xml",
            r#"<launch>
  <arg name="use_b" default="false"/>
  <set_env name="A" value="1"/>
  <group>
    <push_ros_namespace namespace="robot"/>
    <set_env name="B" value="2"/>
    <include file="inner.launch.xml"><arg name="who" value="inc"/></include>
    <node pkg="demo_pkg" exec="talker" name="in_group" if="$(var use_b)"/>
    <node pkg="demo_pkg" exec="talker" name="not_b" unless="$(var use_b)"/>
  </group>
  <unset_env name="A"/>
  <node pkg="demo_pkg" exec="talker" name="top" if="$(and $(not $(var use_b)) $(equals $(env SF_LAUNCH_TEST_UNSET fallback) fallback))"/>
</launch>"#,
            &[],
        )
        .unwrap();
        let names: Vec<_> = l.nodes.iter().map(|n| (n.label(), n.namespace.clone())).collect();
        assert_eq!(
            names,
            [("inc".to_string(), "/robot".to_string()), ("not_b".into(), "/robot".into()), ("top".into(), "/".into())]
        );
        assert_eq!(l.nodes[0].env, [("A".to_string(), Some("1".to_string())), ("B".into(), Some("2".into()))]);
        // The group's set_env does not leak; the unset applies after it.
        assert_eq!(l.nodes[2].env, [("A".to_string(), Some("1".to_string())), ("A".into(), None)]);
        // Arguments of included files are not the top level's.
        assert_eq!(l.args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["use_b"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases: &[(&str, &str, &str)] = &[
            ("<launch>\n  <nodee pkg=\"demo_pkg\"/>\n</launch>", "2", "unknown tag <nodee>"),
            (
                "<launch>\n\n  <node pkg=\"demo_pkg\" exec=\"talker\" nmae=\"x\"/>\n</launch>",
                "3",
                "unknown attribute 'nmae'",
            ),
            ("<launch>\n  <arg name=\"must\"/>\n</launch>", "2", "required argument 'must' not provided"),
            ("<launch>\n  <let name=\"x\" value=\"$(foo bar)\"/>\n</launch>", "2", "unknown substitution $(foo)"),
            (
                "<launch>\n  <let name=\"x\" value=\"$(var nope)\"/>\n</launch>",
                "2",
                "unknown launch argument or variable 'nope'",
            ),
            ("<launch>\n  <let name=\"x\" value=\"$(var a\"/>\n</launch>", "2", "missing ')'"),
            ("<launch>\n  <node pkg=\"demo_pkg\" exec=\"talker\"\n</launch>", "3", "not well-formed XML"),
            ("<launch>\n <arg name=\"m\" default=\"x\"><choice value=\"a\"/></arg>\n</launch>", "2", "not one of"),
            ("<launch>\n <node pkg=\"demo_pkg\" exec=\"talker\" if=\"maybe\"/>\n</launch>", "2", "expected true/false"),
            ("<launch>\n <node pkg=\"nope_pkg\" exec=\"talker\"/>\n</launch>", "2", "package 'nope_pkg' not found"),
            (
                "<launch>\n <node pkg=\"demo_pkg\" exec=\"listener\"/>\n</launch>",
                "2",
                "executable 'listener' not found",
            ),
            ("<launch>\n <let name=\"x\" value=\"$(eval 1 +)\"/>\n</launch>", "2", "$(eval 1 +)"),
        ];
        for (i, (text, line, msg)) in cases.iter().enumerate() {
            let name = format!("bad{i}.launch.xml");
            let err = load_str(&name, text, &[]).expect_err(text).to_string();
            assert!(err.contains(&format!("{name}:{line}: ")), "case {i}: {err}");
            assert!(err.contains(msg), "case {i}: {err}");
        }
        let err = load_str("ok.launch.xml", "<launch/>", &[("typo", "1")]).unwrap_err().to_string();
        assert!(err.contains("argument 'typo' given on the command line is not declared"), "{err}");
    }

    #[test]
    fn typed_values_follow_ros_yaml() {
        assert_eq!(typed_value("1"), Value::from(1));
        assert_eq!(typed_value("1.0"), Value::from(1.0));
        assert_eq!(typed_value("true"), Value::from(true));
        assert_eq!(typed_value("'1'"), Value::from("1"));
        assert_eq!(typed_value("/a/b.yaml"), Value::from("/a/b.yaml"));
        assert_eq!(typed_value("a: b"), Value::from("a: b"));
        assert_eq!(typed_value(""), Value::from(""), "an empty value is an empty string");
        assert_eq!(typed_value("null"), Value::from("null"));
        assert_eq!(join_namespace("/", ""), "/");
        assert_eq!(join_namespace("/a", "b/"), "/a/b");
        assert_eq!(join_namespace("/a", "/c"), "/c");
    }

    /// The launch file starts every node of the graph, and remaps exactly the driver inputs,
    /// each to its `*_topic` launch argument (default: the input's own name). The ingest nodes
    /// come from sensor.launch.xml, which hands every kind every input's remap (launch XML has
    /// no condition on a remap): the ones of names a node does not use touch nothing.
    #[test]
    fn the_launch_file_remaps_the_inputs_and_nothing_else() {
        use sensor_fusion::graph::{INPUTS, NODES};
        prefix();
        let file = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../launch/fusion.launch.xml"));
        let config = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config")).display().to_string();
        let mut cli: BTreeMap<String, String> = [("config_dir".to_string(), config)].into();
        let launched = load(file, &cli).expect("fusion.launch.xml");
        let names: Vec<&str> = launched.nodes.iter().map(|n| n.name.as_deref().unwrap_or("")).collect();
        assert_eq!(names, NODES.iter().map(|n| n.name).collect::<Vec<_>>());
        for (spec, node) in launched.nodes.iter().zip(NODES) {
            // An input's other transport (camera/image_raw/compressed) follows the input.
            let mut inputs: Vec<(String, String)> = vec![];
            for (t, _) in INPUTS.iter().filter(|(t, _)| node.subscribes.contains(t)) {
                inputs.push((t.name.to_string(), t.name.to_string()));
                for o in node.subscribes_optionally.iter().filter(|o| o.name.starts_with(&format!("{}/", t.name))) {
                    inputs.push((o.name.to_string(), o.name.to_string()));
                }
            }
            let used = |name: &str| node.topics().any(|t| t.name == name);
            let own: Vec<(String, String)> = spec.remaps.iter().filter(|(from, _)| used(from)).cloned().collect();
            assert_eq!(own, inputs, "{}", node.name);
            // The rest name inputs of the other ingest kinds only.
            for (from, _) in spec.remaps.iter().filter(|(from, _)| !used(from)) {
                assert!(INPUTS.iter().any(|(t, _)| from.starts_with(t.name)), "{}: {from}", node.name);
            }
        }
        // A robot's own driver topic, through the launch argument.
        cli.extend(INPUTS.iter().map(|(t, arg)| (arg.to_string(), format!("/robot/{}", t.name))));
        let launched = load(file, &cli).expect("fusion.launch.xml with topic arguments");
        for (spec, node) in launched.nodes.iter().zip(NODES) {
            for (from, to) in spec.remaps.iter().filter(|(from, _)| node.topics().any(|t| t.name == from)) {
                assert_eq!(to, &format!("/robot/{from}"), "{}", node.name);
            }
        }
    }
}
