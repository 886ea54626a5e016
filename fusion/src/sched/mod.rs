//! Deadline-driven execution of the fusion stage (no ROS).
//!
//! ```text
//! post(msg) ─▶ latest-wins mailboxes (camera, lidar, radar, imu; bounded, superseded counted)
//!                 │
//!   fusion thread: preprocess ─▶ Pipeline::push_jobs (sync) ─▶ admission ─┬─▶ inference thread (EDF): detector
//!                 ▲                                                        └─▶ CPU worker(s) (EDF): clustering, radar
//!                 └── completions ◀────────────────────────────────────────────┘
//!   fusion thread, in stamp order: association → tracking → rules ─▶ hard-deadline check ─▶ Sink::publish
//! ```
//!
//! Every set carries its deadlines (newest member's stamp + target / hard). Work is taken
//! earliest deadline first; a stage is not started when the measured p99 of it and of the
//! stages after it says the set would finish past its hard deadline: the set is *shed*
//! (counted with the stage that would have missed). Measured slack drives a degradation
//! ladder with hysteresis. The detector runs on one thread of its own (the GPU's submitting
//! thread on wgpu) with its own deadline accounting. [`Executor::spawn_fifo`] is the plain
//! FIFO baseline the benchmark compares against.

mod degrade;
mod exec;
mod queue;
mod rt;
mod stage;
mod stats;
mod trace;

pub use degrade::*;
pub use exec::*;
pub use queue::*;
pub use rt::*;
pub use stage::*;
pub use stats::*;
pub use trace::*;
