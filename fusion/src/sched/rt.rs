//! OS real-time scheduling: the policy and priority of the scheduler's threads, CPU
//! affinity, locked memory, and the detector's kernel pool on normal scheduling.
use std::{str::FromStr, sync::Once};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Other,
    Fifo,
    RoundRobin,
}

impl Policy {
    /// The parameter value that selects it (`sched.policy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Other => "other",
            Policy::Fifo => "fifo",
            Policy::RoundRobin => "rr",
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "other" | "" => Ok(Policy::Other),
            "fifo" => Ok(Policy::Fifo),
            "rr" => Ok(Policy::RoundRobin),
            _ => Err(format!("'{s}' is not a scheduling policy (other, fifo, rr)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RtConfig {
    pub policy: Policy,
    /// 1..99 for fifo/rr. The fusion thread gets this, the inference and CPU workers one less
    /// (a set's sequential end must not wait behind the next set's perception).
    pub priority: i32,
    /// CPUs the scheduler's threads may run on (empty = all).
    pub cpus: Vec<usize>,
    /// Lock the process's memory (no page faults on the deadline path).
    pub mlockall: bool,
}

/// Normal scheduling: what offline runs (replay, tests) get unless they ask.
impl Default for RtConfig {
    fn default() -> Self {
        Self { policy: Policy::Other, ..Self::NODE }
    }
}

impl RtConfig {
    /// What fusion_node asks for by default (its `sched.*` parameters, config/fusion.yaml,
    /// and fusion_sched_bench's flags): SCHED_FIFO at 20, so that the scheduler's threads run
    /// before the ingest nodes' and the summarizer's; it falls back to normal scheduling,
    /// with one warning, where not permitted.
    pub const NODE: RtConfig = RtConfig { policy: Policy::Fifo, priority: 20, cpus: Vec::new(), mlockall: false };
}

/// Parses "0,1,3" or "" into CPU indices.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().parse::<usize>().map_err(|_| format!("'{c}' is not a CPU index")))
        .collect()
}

/// What applying the real-time settings to a thread did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtOutcome {
    /// Normal scheduling was asked for.
    NotRequested,
    Applied,
    /// Not permitted (no CAP_SYS_NICE / RLIMIT_RTPRIO, CPUs not in the allowed set, ...):
    /// the thread runs with normal scheduling.
    Fallback(String),
}

static RT_WARNING: Once = Once::new();

/// Applies policy, priority (`cfg.priority - lower`) and affinity to the calling thread.
/// Never fails: what could not be applied is returned as a fallback, and the first
/// fallback in the process logs one warning.
pub fn apply_rt(cfg: &RtConfig, lower: i32) -> RtOutcome {
    let mut problems = vec![];
    if !cfg.cpus.is_empty() {
        // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &cfg.cpus {
                if c < libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(c, &mut set);
                }
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                problems.push(format!("CPU affinity {:?}: {}", cfg.cpus, std::io::Error::last_os_error()));
            }
        }
    }
    let policy = match cfg.policy {
        Policy::Other => None,
        Policy::Fifo => Some((libc::SCHED_FIFO, "SCHED_FIFO")),
        Policy::RoundRobin => Some((libc::SCHED_RR, "SCHED_RR")),
    };
    if let Some((p, name)) = policy {
        let prio = (cfg.priority - lower).clamp(1, 99);
        let param = libc::sched_param { sched_priority: prio };
        // SAFETY: pid 0 is the calling thread; param is a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, p, &param) } != 0 {
            problems.push(format!("{name} priority {prio}: {}", std::io::Error::last_os_error()));
        }
    }
    if problems.is_empty() {
        return if policy.is_some() || !cfg.cpus.is_empty() { RtOutcome::Applied } else { RtOutcome::NotRequested };
    }
    let why = problems.join("; ");
    RT_WARNING.call_once(|| {
        tracing::warn!(
            "real-time scheduling not permitted ({why}): running with normal scheduling. Grant CAP_SYS_NICE \
             (or an RLIMIT_RTPRIO, e.g. `ulimit -r 99`) for SCHED_FIFO/RR"
        )
    });
    RtOutcome::Fallback(why)
}

/// Builds rayon's global pool, on which the detector's data-parallel kernels run (burn-flex,
/// gemm), with every thread on normal scheduling (SCHED_OTHER), before any scheduler thread
/// turns real-time.
///
/// Why: a pool thread inherits the policy of the thread that creates it, and rayon creates
/// its pool lazily, at the first parallel kernel: in the inference thread (SCHED_FIFO). The
/// whole network then ran at real-time priority on every core, and a long inference (the
/// first after a respawn) left no CPU for anything else: the ingest nodes and the drivers
/// feeding them paused for up to 2 s (a CI run, `test_each_node_killed_with_sigkill_...`).
/// Real-time priority orders our own stages; the kernels share the cores with the rest of
/// the robot, and the degradation ladder answers a slow frame.
pub fn build_compute_pool() {
    // Fails only when the pool exists already (a kernel ran before, e.g. a detector's
    // self-check at load): its threads are moved to normal scheduling below either way.
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("fusion-compute-{i}"))
        .start_handler(|_| normal_scheduling())
        .build_global();
    rayon::broadcast(|_| normal_scheduling());
}

/// The calling thread to SCHED_OTHER (a no-op when it is already).
fn normal_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param. Lowering one's own
    // policy needs no privilege, so this cannot fail with a valid policy.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

/// mlockall(MCL_CURRENT | MCL_FUTURE); a fallback (with its warning) when not permitted.
pub fn lock_memory() -> RtOutcome {
    // SAFETY: plain syscall.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
        RtOutcome::Applied
    } else {
        let why = format!("mlockall: {}", std::io::Error::last_os_error());
        tracing::warn!("{why}: memory not locked (needs CAP_IPC_LOCK or RLIMIT_MEMLOCK)");
        RtOutcome::Fallback(why)
    }
}
