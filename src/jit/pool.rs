//! Worker pools: threads started once, shared by every kernel of the process,
//! that run one job at a time alongside the caller.
//!
//! A job is a function of the worker's index (`0` is the caller's thread) and a
//! [`Team`] whose [`Team::barrier`] makes the workers meet between phases. The
//! caller publishes the job by bumping an epoch and waking the workers; it runs
//! its own share, then waits until every worker has finished.
//!
//! **Waiting.** Every wait (a worker for a job, a thread at a barrier, the caller
//! for the end of a job) spins briefly and then blocks (`park`), so that an idle
//! pool costs no CPU and a waiting thread does not hold a core that the thread
//! it waits for needs. Idle workers block until they are woken: no timeouts.
//!
//! **Sharing.** Pools are shared by all kernels ([`shared`]): one per worker
//! count, created on first use, so that many kernels do not multiply threads. A
//! pool runs one job at a time: [`Pool::try_run`] returns `false` when it is
//! busy, and the caller then runs the job alone (the results are the same: each
//! output is computed by one worker in a fixed order, whatever the count).
//!
//! **Busy machines.** A barrier that keeps waiting after its spin means a
//! worker lost its core. The pool measures how long its threads sit blocked at
//! barriers against how long its jobs take; when that exceeds a quarter of the
//! threads' time over recent jobs, `try_run` declines jobs for a while (the
//! callers run alone, as fast as one core allows) and then tries again.
//!
//! **Panics.** A panic in any worker's share (the caller's included) poisons the
//! job: barrier waits stop waiting and unwind, every worker finishes, and only
//! then does `try_run` re-raise the first panic in the caller, so that no worker
//! can touch the caller's job after `try_run` has returned or unwound.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it blocks: longer than a barrier
/// between balanced phases takes, far shorter than a time slice.
const SPIN: Duration = Duration::from_micros(50);

/// How long a pool declines jobs once it found its threads without cores.
const BACK_OFF: Duration = Duration::from_millis(200);

/// Nanoseconds since the first call: a clock that fits in an atomic.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A job: a borrowed `Fn(worker, team)` with its lifetime erased. Dereferenced
/// only between its publication and the end of the job (see `Pool::try_run`).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize, &Team) + Sync));

/// The panic that stops a poisoned job's barrier waits (not a bug: another
/// worker's panic is re-raised instead).
struct Poisoned;

struct Shared {
    workers: usize,
    /// Bumped to publish a job.
    epoch: AtomicU64,
    job: UnsafeCell<Option<JobPtr>>,
    /// Workers (not the caller) that finished the current job.
    done: AtomicUsize,
    quit: AtomicBool,
    /// A worker panicked in the current job; its payload.
    poisoned: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// The barrier: arrivals in this generation, and the generation.
    arrived: AtomicUsize,
    generation: AtomicU64,
    /// Threads to wake: the workers, and the caller of the current job.
    threads: OnceLock<Vec<Thread>>,
    caller: Mutex<Option<Thread>>,
    /// Recent jobs; the time their threads sat blocked at barriers, and the
    /// threads' time in them (wall time times workers), in nanoseconds.
    jobs: AtomicU32,
    blocked_ns: AtomicU64,
    busy_ns: AtomicU64,
    /// Until when (`now_ns`) the pool declines jobs.
    avoid_until: AtomicU64,
}

// SAFETY: `job` is written only by the caller in `Pool::try_run`, which holds
// the pool's run lock, before the epoch is bumped (Release), and read by workers
// after they see the new epoch (Acquire); it is cleared only after every worker
// has reported the job done (Acquire on `done`). Everything else is atomic or
// behind a mutex. The job pointer's pointee is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; `JobPtr` is only dereferenced under that protocol.
unsafe impl Send for Shared {}

impl Shared {
    /// Wakes every worker and the caller (a token for a thread that is not
    /// parked only makes its next park return at once; every wait loops on its
    /// condition).
    fn wake_all(&self) {
        if let Some(threads) = self.threads.get() {
            for t in threads {
                t.unpark();
            }
        }
        if let Ok(c) = self.caller.lock() {
            if let Some(t) = c.as_ref() {
                t.unpark();
            }
        }
    }

    /// Spins, then parks, until `ready`. Returns how long it was parked
    /// (nanoseconds; 0 if it did not park).
    fn wait_until(&self, ready: impl Fn() -> bool) -> u64 {
        let start = Instant::now();
        let mut i = 0u32;
        loop {
            if ready() {
                return 0;
            }
            std::hint::spin_loop();
            i = i.wrapping_add(1);
            if i.is_multiple_of(64) && start.elapsed() > SPIN {
                break;
            }
        }
        let parked = Instant::now();
        while !ready() {
            std::thread::park();
        }
        parked.elapsed().as_nanos() as u64
    }

    fn barrier(&self) {
        if self.poisoned.load(Ordering::Acquire) {
            std::panic::panic_any(Poisoned);
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.workers {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.wake_all();
            return;
        }
        let parked = self.wait_until(|| {
            self.generation.load(Ordering::Acquire) != generation
                || self.poisoned.load(Ordering::Acquire)
        });
        if parked > 0 {
            self.blocked_ns.fetch_add(parked, Ordering::Relaxed);
        }
        if self.generation.load(Ordering::Acquire) == generation {
            std::panic::panic_any(Poisoned);
        }
    }

    fn poison(&self, payload: Box<dyn Any + Send>) {
        if !payload.is::<Poisoned>() {
            if let Ok(mut p) = self.panic.lock() {
                p.get_or_insert(payload);
            }
        }
        self.poisoned.store(true, Ordering::Release);
        self.wake_all();
    }
}

/// What a running job sees: its worker count and the barrier.
pub struct Team {
    shared: Arc<Shared>,
    pub workers: usize,
}

impl Team {
    /// Waits until every worker of the job reaches this point. In a job that a
    /// panic poisoned, it unwinds instead of waiting.
    pub fn barrier(&self) {
        self.shared.barrier();
    }
}

/// `workers - 1` threads (the caller is worker 0).
pub struct Pool {
    shared: Arc<Shared>,
    /// Declines jobs while its threads lack cores (the shared pools do; a pool
    /// made for a test runs every job it can).
    backs_off: bool,
    handles: Vec<JoinHandle<()>>,
    /// One job at a time.
    running: Mutex<()>,
}

impl Pool {
    /// Starts the threads; if one cannot be started, those that were are
    /// stopped and joined before the error returns.
    pub fn new(workers: usize) -> std::io::Result<Pool> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            workers,
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            done: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            panic: Mutex::new(None),
            arrived: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            threads: OnceLock::new(),
            caller: Mutex::new(None),
            jobs: AtomicU32::new(0),
            blocked_ns: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            avoid_until: AtomicU64::new(0),
        });
        let mut pool = Pool {
            backs_off: false,
            shared: shared.clone(),
            handles: Vec::with_capacity(workers - 1),
            running: Mutex::new(()),
        };
        for w in 1..workers {
            let team = Team {
                shared: shared.clone(),
                workers,
            };
            let h = spawn_worker(id, w, team)?; // `pool`'s drop stops the others.
            pool.handles.push(h);
        }
        let _ = shared
            .threads
            .set(pool.handles.iter().map(|h| h.thread().clone()).collect());
        Ok(pool)
    }

    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Whether the pool declines jobs now, having found its threads blocked at
    /// barriers for much of recent jobs (threads without cores).
    pub fn backing_off(&self) -> bool {
        self.backs_off && now_ns() < self.shared.avoid_until.load(Ordering::Relaxed)
    }

    /// Adds a job's figures; decides whether to back off.
    fn account(&self, wall_ns: u64) {
        let s = &*self.shared;
        let jobs = s.jobs.fetch_add(1, Ordering::Relaxed) + 1;
        s.busy_ns
            .fetch_add(wall_ns.saturating_mul(s.workers as u64), Ordering::Relaxed);
        if jobs < 8 {
            return;
        }
        let blocked = s.blocked_ns.load(Ordering::Relaxed);
        let busy = s.busy_ns.load(Ordering::Relaxed);
        if 4 * blocked > busy {
            s.avoid_until
                .store(now_ns() + BACK_OFF.as_nanos() as u64, Ordering::Relaxed);
        }
        if jobs >= 64 || 4 * blocked > busy {
            // Keep the figures recent.
            s.jobs.store(0, Ordering::Relaxed);
            s.blocked_ns.store(0, Ordering::Relaxed);
            s.busy_ns.store(0, Ordering::Relaxed);
        }
    }

    /// Runs `job(w, team)` on every worker `w` (the caller is 0) and returns
    /// `true` when all have finished; returns `false` at once, without running
    /// anything, if another job holds the pool or the pool is backing off. A
    /// panic in any worker's share is re-raised here, after every worker has
    /// stopped touching the job.
    pub fn try_run(&self, job: &(dyn Fn(usize, &Team) + Sync)) -> bool {
        if self.backing_off() {
            return false;
        }
        let Ok(_running) = self.running.try_lock() else {
            return false;
        };
        let shared = &*self.shared;
        if let Ok(mut c) = shared.caller.lock() {
            *c = Some(std::thread::current());
        }
        let start = Instant::now();
        // SAFETY: the erased lifetime is sound because this function does not
        // return or unwind until every worker has reported the job done (the
        // guard below waits for that even while unwinding), after which no
        // worker touches the job again (they wait for the next epoch).
        let ptr = JobPtr(unsafe {
            std::mem::transmute::<
                &(dyn Fn(usize, &Team) + Sync),
                &'static (dyn Fn(usize, &Team) + Sync),
            >(job)
        });
        // SAFETY: no worker reads `job` now: all have finished the previous job
        // and wait for the next epoch; we hold the run lock.
        unsafe { *shared.job.get() = Some(ptr) };
        shared.done.store(0, Ordering::Relaxed);
        shared.epoch.fetch_add(1, Ordering::AcqRel);
        shared.wake_all();
        /// Waits for every worker to finish the job, even while unwinding.
        struct EndOfJob<'a>(&'a Shared);
        impl Drop for EndOfJob<'_> {
            fn drop(&mut self) {
                let s = self.0;
                let others = s.workers - 1;
                s.wait_until(|| s.done.load(Ordering::Acquire) == others);
                // SAFETY: every worker is done with the job.
                unsafe { *s.job.get() = None };
            }
        }
        let team = Team {
            shared: self.shared.clone(),
            workers: shared.workers,
        };
        let end = EndOfJob(shared);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(0, &team))) {
            shared.poison(payload);
        }
        drop(end);
        if shared.poisoned.load(Ordering::Acquire) {
            // Every worker is done: reset the barrier for the next job.
            shared.arrived.store(0, Ordering::Relaxed);
            shared.generation.fetch_add(1, Ordering::AcqRel);
            shared.poisoned.store(false, Ordering::Release);
            let payload = shared.panic.lock().ok().and_then(|mut p| p.take());
            drop(_running);
            resume_unwind(payload.unwrap_or_else(|| Box::new("a pool worker panicked")));
        }
        self.account(start.elapsed().as_nanos() as u64);
        true
    }
}

fn spawn_worker(pool: u64, w: usize, team: Team) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("cellc-p{pool}-w{w}"))
        .spawn(move || worker(w, team))
}

fn worker(w: usize, team: Team) {
    let shared = team.shared.clone();
    let mut seen = 0u64;
    loop {
        shared.wait_until(|| {
            shared.epoch.load(Ordering::Acquire) != seen || shared.quit.load(Ordering::Acquire)
        });
        if shared.quit.load(Ordering::Acquire) {
            return;
        }
        seen = shared.epoch.load(Ordering::Acquire);
        // SAFETY: the epoch moved (Acquire), so `job` holds the caller's job,
        // which stays alive until this worker reports it done below.
        let job = unsafe { *shared.job.get() };
        if let Some(JobPtr(f)) = job {
            // SAFETY: see above.
            let run = catch_unwind(AssertUnwindSafe(|| unsafe { (*f)(w, &team) }));
            if let Err(payload) = run {
                shared.poison(payload);
            }
        }
        shared.done.fetch_add(1, Ordering::AcqRel);
        if let Ok(c) = shared.caller.lock() {
            if let Some(t) = c.as_ref() {
                t.unpark();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        for h in &self.handles {
            h.thread().unpark();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The process's pool of `workers` threads (the caller included), started on
/// first use; `None` if its threads cannot be started.
pub fn shared(workers: usize) -> Option<&'static Pool> {
    static POOLS: Mutex<Vec<&'static Pool>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().ok()?;
    if let Some(p) = pools.iter().find(|p| p.workers() == workers) {
        return Some(p);
    }
    let mut pool = Pool::new(workers).ok()?;
    pool.backs_off = true;
    let pool: &'static Pool = Box::leak(Box::new(pool));
    pools.push(pool);
    Some(pool)
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
            assert!(pool.try_run(&|_w, team| {
                counter.fetch_add(1, Ordering::SeqCst);
                team.barrier();
                // Every worker's first phase is done.
                assert!(counter.load(Ordering::SeqCst) >= 3 * (round + 1));
                seen_after_barrier.fetch_add(1, Ordering::SeqCst);
            }));
            assert_eq!(seen_after_barrier.load(Ordering::SeqCst), 3);
        }
        assert_eq!(counter.load(Ordering::SeqCst), 600);
    }

    /// Two threads calling at once: one job at a time, every job run whole
    /// (by the pool or, when it is busy, by its caller alone).
    #[test]
    fn concurrent_callers_take_turns() {
        let pool = Pool::new(2).unwrap();
        let runs = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        let job = |_w: usize, team: &Team| {
                            runs.fetch_add(1, Ordering::Relaxed);
                            team.barrier();
                            runs.fetch_add(1, Ordering::Relaxed);
                        };
                        if !pool.try_run(&job) {
                            // Alone: both shares by hand, as `Kernel` does.
                            runs.fetch_add(4, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(runs.load(Ordering::Relaxed), 2 * 20_000 * 4);
    }

    fn panics_in(pool: &Pool, who: usize, at_barrier: bool) -> String {
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.try_run(&|w, team| {
                if !at_barrier && w == who {
                    panic!("worker {w} failed");
                }
                team.barrier();
                if at_barrier && w == who {
                    panic!("worker {w} failed after the barrier");
                }
                team.barrier();
            })
        }));
        let payload = r.expect_err("the panic must reach the caller");
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    }

    /// A panic in the caller's share or in a worker's, before or between
    /// barriers: re-raised in the caller, and the pool runs the next job.
    #[test]
    fn panics_reach_the_caller_and_the_pool_survives() {
        let pool = Pool::new(3).unwrap();
        for who in 0..3 {
            for at_barrier in [false, true] {
                let msg = panics_in(&pool, who, at_barrier);
                assert!(msg.contains(&format!("worker {who} failed")), "{msg}");
                let count = AtomicUsize::new(0);
                assert!(pool.try_run(&|_, team| {
                    team.barrier();
                    count.fetch_add(1, Ordering::SeqCst);
                }));
                assert_eq!(count.load(Ordering::SeqCst), 3);
            }
        }
        drop(pool); // joins its threads: no hang
    }

    /// The caller's job lives on its stack: after a panic in the caller's share,
    /// no worker may still run it when the stack frame is gone.
    #[test]
    fn a_panicking_caller_waits_for_the_workers() {
        let pool = Pool::new(2).unwrap();
        let finished = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let local = vec![1u64; 1000];
            pool.try_run(&|w, _team| {
                if w == 0 {
                    panic!("caller failed");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                // Reads the caller's stack: must still be there.
                assert_eq!(local.iter().sum::<u64>(), 1000);
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }));
        assert!(r.is_err());
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn idle_workers_block() {
        let pool = Pool::new(2).unwrap();
        assert!(pool.try_run(&|_, _| {}));
        std::thread::sleep(std::time::Duration::from_millis(50));
        // A parked thread's CPU time stops growing; compare two reads of
        // /proc's per-thread times where available.
        #[cfg(target_os = "linux")]
        {
            let names: Vec<String> = pool
                .handles
                .iter()
                .filter_map(|h| h.thread().name().map(str::to_string))
                .collect();
            assert_eq!(names.len(), 1);
            let ticks = || -> u64 {
                let mut total = 0;
                if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
                    for e in dir.flatten() {
                        let stat =
                            std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                        let comm_end = stat.rfind(')').unwrap_or(0);
                        let fields: Vec<&str> = stat[comm_end..].split_whitespace().collect();
                        if names.iter().any(|n| stat.contains(&format!("({n})"))) {
                            total += fields
                                .get(12)
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(0);
                            total += fields
                                .get(13)
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(0);
                        }
                    }
                }
                total
            };
            let before = ticks();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let after = ticks();
            // Clock ticks are 10 ms: an idle worker uses none in 300 ms.
            assert!(
                after - before <= 1,
                "idle workers used {} ticks",
                after - before
            );
        }
    }

    /// A worker that keeps its partner waiting (as a thread without a core
    /// does) makes a shared pool decline jobs for a while.
    #[test]
    fn a_pool_whose_workers_lack_cores_backs_off() {
        let mut pool = Pool::new(2).unwrap();
        pool.backs_off = true;
        let mut ran = 0;
        for _ in 0..20 {
            let job = |w: usize, team: &Team| {
                if w == 1 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                team.barrier();
            };
            if pool.try_run(&job) {
                ran += 1;
            }
        }
        assert!(pool.backing_off());
        assert!(ran < 20, "the pool never declined a job");
        assert!(!pool.try_run(&|_, _| {}));
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
