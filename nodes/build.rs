//! Makes the node binaries runnable with no LD_* variables when ROS 2 comes from the PyPI
//! wheels (a venv whose root is the ament prefix): rpath to every prefix's lib/, and an
//! explicit libpython link, because librcl pulls a *_generator_py library that needs
//! libpython symbols at load time. A sourced system ROS (/opt/ros/jazzy) needs neither.
use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-env-changed=AMENT_PREFIX_PATH");
    let Ok(prefixes) = env::var("AMENT_PREFIX_PATH") else { return };
    let mut python_lib: Option<(String, String)> = None;
    for prefix in prefixes.split(':').filter(|p| !p.is_empty()) {
        let cfg = Path::new(prefix).join("pyvenv.cfg");
        let Ok(text) = fs::read_to_string(&cfg) else { continue };
        println!("cargo:rerun-if-changed={}", cfg.display());
        // A wheel prefix: rpath its lib/ (DT_RPATH, so it also covers the libraries'
        // own dependencies, which DT_RUNPATH would not).
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{prefix}/lib");
        let field = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        if let (Some(home), Some(version)) = (field("home"), field("version")) {
            let mm: Vec<&str> = version.split('.').take(2).collect();
            let libdir = Path::new(&home).parent().unwrap_or(Path::new("/")).join("lib");
            python_lib = Some((libdir.display().to_string(), mm.join(".")));
        }
    }
    if let Some((libdir, ver)) = python_lib {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{libdir}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-L{libdir},-lpython{ver},--as-needed");
    }
}
