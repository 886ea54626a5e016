//! A persistent pool for the decoder: one job per token, run by every thread at once, with a
//! spinning barrier between the steps of the token (llama.cpp's shape). Rayon's fork/join
//! around each of the 121 matrix products of a token cost more than the products' halves
//! took on 2 cores; here a token costs one wake-up, and each step a barrier (~0.1 µs when
//! both threads arrive together).
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The job of one token: called once on each thread with (thread index, barrier).
type Job<'a> = dyn Fn(usize, &Barrier) + Sync + 'a;

/// A barrier that spins (the threads of a token are all running), yielding the core only
/// after a while, so a descheduled thread does not starve. Poisoned when a thread panics, so
/// the others unwind too instead of waiting forever.
pub struct Barrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl Barrier {
    fn new(threads: usize) -> Self {
        Barrier {
            threads,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Returns once every thread of the pool has called `wait` as often as this one.
    pub fn wait(&self) {
        if self.threads == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Relaxed) {
                panic!("another decoder thread panicked");
            }
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

struct Slot {
    /// The job of the current token, lifetime erased: `run` does not return before every
    /// worker has finished with it.
    job: Option<*const Job<'static>>,
    epoch: u64,
    shutdown: bool,
}

// SAFETY: the pointer is only dereferenced while `run` keeps the job alive (see `run`).
unsafe impl Send for Slot {}

struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    /// `slot.epoch`, readable without the lock (workers spin on it between tokens).
    epoch: AtomicU64,
    /// Workers still inside the current job.
    busy: AtomicUsize,
    barrier: Barrier,
    panicked: AtomicBool,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` (one token at a time per pool).
    running: Mutex<()>,
}

impl Pool {
    /// `threads` in all, the caller's thread included (so `threads - 1` are spawned).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot { job: None, epoch: 0, shutdown: false }),
            wake: Condvar::new(),
            epoch: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            barrier: Barrier::new(threads),
            panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for index in 1..threads {
            let shared = shared.clone();
            let handle =
                std::thread::Builder::new().name(format!("llm-decode-{index}")).spawn(move || worker(shared, index))?;
            workers.push(handle);
        }
        Ok(Pool { shared, workers, running: Mutex::new(()) })
    }

    pub fn threads(&self) -> usize {
        self.shared.barrier.threads
    }

    /// Runs `job(index, barrier)` on every thread of the pool (index 0 on the caller's) and
    /// returns when all have finished. Err if any of them panicked (the pool stays usable).
    pub fn run(&self, job: &Job<'_>) -> Result<(), String> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let shared = &*self.shared;
        shared.panicked.store(false, Ordering::Relaxed);
        shared.barrier.poisoned.store(false, Ordering::Relaxed);
        shared.barrier.arrived.store(0, Ordering::Relaxed);
        shared.busy.store(self.workers.len(), Ordering::Release);
        {
            let mut slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY (lifetime erasure): the job is borrowed for this call, and this call
            // does not return before `busy` is back to 0, i.e. before every worker has
            // returned from it; the slot is cleared before returning.
            slot.job = Some(unsafe { std::mem::transmute::<*const Job<'_>, *const Job<'static>>(job as *const _) });
            slot.epoch += 1;
            shared.epoch.store(slot.epoch, Ordering::Release);
        }
        shared.wake.notify_all();
        if catch_unwind(AssertUnwindSafe(|| job(0, &shared.barrier))).is_err() {
            shared.panicked.store(true, Ordering::Relaxed);
            shared.barrier.poisoned.store(true, Ordering::Relaxed);
        }
        let mut spins = 0u32;
        while shared.busy.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        shared.slot.lock().unwrap_or_else(|p| p.into_inner()).job = None;
        if shared.panicked.load(Ordering::Relaxed) {
            return Err("a decoder thread panicked".into());
        }
        Ok(())
    }
}

fn worker(shared: Arc<Shared>, index: usize) {
    let mut seen = 0u64;
    loop {
        // Spin a little first: the next token's job follows within microseconds while a
        // summary is being written; then sleep until woken.
        let mut job = None;
        for _ in 0..50_000 {
            if shared.epoch.load(Ordering::Acquire) != seen {
                let slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
                seen = slot.epoch;
                job = slot.job;
                break;
            }
            std::hint::spin_loop();
        }
        if job.is_none() {
            let mut slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
            while slot.epoch == seen && !slot.shutdown {
                slot = shared.wake.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
            if slot.shutdown {
                return;
            }
            seen = slot.epoch;
            job = slot.job;
        }
        if let Some(job) = job {
            // SAFETY: `Pool::run` keeps the job alive until `busy` reaches 0 below.
            let job = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| job(index, &shared.barrier))).is_err() {
                shared.panicked.store(true, Ordering::Relaxed);
                shared.barrier.poisoned.store(true, Ordering::Relaxed);
            }
            shared.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.slot.lock().unwrap_or_else(|p| p.into_inner()).shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_each_step_after_all_finished_the_previous_one() {
        let pool = Pool::new(3).unwrap();
        for _ in 0..200 {
            let counts: Vec<AtomicUsize> = (0..50).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|t, barrier| {
                for (step, count) in counts.iter().enumerate() {
                    count.fetch_add(1, Ordering::Relaxed);
                    barrier.wait();
                    // Every thread has counted this step before any reads it.
                    assert_eq!(count.load(Ordering::Relaxed), 3, "thread {t} step {step}");
                    barrier.wait();
                }
            })
            .unwrap();
        }
    }

    #[test]
    fn a_panicking_thread_fails_the_run_and_leaves_the_pool_usable() {
        let pool = Pool::new(2).unwrap();
        let err = pool.run(&|t, barrier| {
            if t == 1 {
                panic!("test");
            }
            barrier.wait();
        });
        assert!(err.is_err());
        let ran = AtomicUsize::new(0);
        pool.run(&|_, barrier| {
            barrier.wait();
            ran.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(ran.load(Ordering::Relaxed), 2);
    }
}
