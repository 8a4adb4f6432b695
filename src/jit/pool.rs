//! A persistent worker pool: threads started once per kernel that run one job at
//! a time alongside the caller, meeting at a spin barrier.
//!
//! A job is a function of the worker's index (`0` is the caller's thread). The
//! caller publishes it by bumping an epoch; workers wait for the epoch to move
//! (a bounded spin, then parking), run the job, and meet the caller at the
//! barrier, after which the caller returns. Inside a job, workers meet at the
//! same barrier between phases ([`Team::barrier`]): a spin of bounded length,
//! then yielding the core.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Spins before a waiting thread gives up its core.
const SPINS: u32 = 20_000;

/// A sense-reversing barrier for a fixed number of threads.
struct SpinBarrier {
    n: usize,
    count: AtomicUsize,
    generation: AtomicU64,
}

impl SpinBarrier {
    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A job: a borrowed `Fn(worker)` with its lifetime erased. Only dereferenced
/// between its publication and the barrier that ends it (see `Pool::run`).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize, &Team) + Sync));

// SAFETY: the pointee is `Sync`, and the pointer is only used while the caller
// that owns the pointee is blocked in `Pool::run` (see there).
unsafe impl Send for JobPtr {}

struct Shared {
    barrier: SpinBarrier,
    epoch: AtomicU64,
    job: UnsafeCell<Option<JobPtr>>,
    quit: AtomicBool,
}

// SAFETY: `job` is written only by the caller in `Pool::run` before the epoch is
// bumped (Release) and read by workers after they see the new epoch (Acquire);
// it is not written again until every worker has passed the job's final barrier.
unsafe impl Sync for Shared {}

/// What a running job sees: its worker count and the barrier.
pub struct Team {
    shared: Arc<Shared>,
    pub workers: usize,
}

impl Team {
    /// Waits until every worker of the job reaches this point.
    pub fn barrier(&self) {
        self.shared.barrier.wait();
    }
}

/// A pool of `workers - 1` threads (the caller is worker 0).
pub struct Pool {
    team: Team,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn new(workers: usize) -> std::io::Result<Pool> {
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            barrier: SpinBarrier {
                n: workers,
                count: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
            },
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            quit: AtomicBool::new(false),
        });
        let mut handles = Vec::with_capacity(workers - 1);
        for w in 1..workers {
            let team = Team {
                shared: shared.clone(),
                workers,
            };
            let h = std::thread::Builder::new()
                .name(format!("cellc-worker-{w}"))
                .spawn(move || worker(w, team))?;
            handles.push(h);
        }
        Ok(Pool {
            team: Team { shared, workers },
            handles,
        })
    }

    pub fn workers(&self) -> usize {
        self.team.workers
    }

    /// Runs `job(w, team)` on every worker `w` (the caller is 0) and returns when
    /// all have finished.
    pub fn run(&self, job: &(dyn Fn(usize, &Team) + Sync)) {
        let shared = &self.team.shared;
        // SAFETY: the erased lifetime is sound because this function does not
        // return until every worker has passed the final barrier below, after
        // which no worker touches the job again (they wait for the next epoch).
        let ptr = JobPtr(unsafe {
            std::mem::transmute::<
                &(dyn Fn(usize, &Team) + Sync),
                &'static (dyn Fn(usize, &Team) + Sync),
            >(job)
        });
        // SAFETY: no worker reads `job` now: all are waiting for the next epoch.
        unsafe { *shared.job.get() = Some(ptr) };
        shared.epoch.fetch_add(1, Ordering::Release);
        for h in &self.handles {
            h.thread().unpark();
        }
        job(0, &self.team);
        shared.barrier.wait();
    }
}

fn worker(w: usize, team: Team) {
    let shared = team.shared.clone();
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let e = shared.epoch.load(Ordering::Acquire);
            if e != seen || shared.quit.load(Ordering::Acquire) {
                break e;
            }
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::park_timeout(Duration::from_millis(1));
            }
        };
        if shared.quit.load(Ordering::Acquire) {
            return;
        }
        seen = epoch;
        // SAFETY: the epoch moved (Acquire), so `job` holds the caller's job,
        // which stays alive until this worker passes the barrier below.
        let job = unsafe { *shared.job.get() };
        if let Some(JobPtr(f)) = job {
            // SAFETY: see above.
            unsafe { (*f)(w, &team) };
        }
        shared.barrier.wait();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.team.shared.quit.store(true, Ordering::Release);
        for h in &self.handles {
            h.thread().unpark();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The tiles of `0..tiles` that worker `w` of `n` owns: a contiguous slice, the
/// same every step, so its weights stay in that worker's cache.
pub fn share(tiles: usize, w: usize, n: usize) -> (usize, usize) {
    (tiles * w / n, tiles * (w + 1) / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_worker_runs_every_job_and_phases_are_ordered() {
        let pool = Pool::new(3).unwrap();
        let counter = AtomicUsize::new(0);
        for round in 0..200 {
            let seen_after_barrier = AtomicUsize::new(0);
            pool.run(&|_w, team| {
                counter.fetch_add(1, Ordering::SeqCst);
                team.barrier();
                // Every worker's first phase is done.
                assert!(counter.load(Ordering::SeqCst) >= 3 * (round + 1));
                seen_after_barrier.fetch_add(1, Ordering::SeqCst);
            });
            assert_eq!(seen_after_barrier.load(Ordering::SeqCst), 3);
        }
        assert_eq!(counter.load(Ordering::SeqCst), 600);
    }

    #[test]
    fn shares_cover_the_range_once() {
        for tiles in [0, 1, 5, 32, 33] {
            for n in 1..5 {
                let mut next = 0;
                for w in 0..n {
                    let (a, b) = share(tiles, w, n);
                    assert_eq!(a, next);
                    next = b;
                }
                assert_eq!(next, tiles);
            }
        }
    }
}
