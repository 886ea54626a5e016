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
        // auditwheel vendors private copies (tinyxml2, ...) into site-packages/*.libs and
        // points the libraries' own RPATH at the wheel's original layout, which does not
        // exist once the libraries sit in the prefix's lib/: add those directories too.
        for libs in vendored_lib_dirs(Path::new(prefix)) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", libs.display());
        }
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

fn vendored_lib_dirs(prefix: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let Ok(pys) = fs::read_dir(prefix.join("lib")) else { return out };
    for py in pys.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("python")) {
        let Ok(entries) = fs::read_dir(py.path().join("site-packages")) else { continue };
        let mut dirs: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.extension().is_some_and(|x| x == "libs"))
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}
