//! Worker pools: threads started once, shared by every kernel of the process,
//! that run one job at a time alongside the caller.
//!
//! A job is a function of the worker's index (`0` is the caller's thread) and a
//! [`Team`] whose [`Team::barrier`] makes the workers meet between phases. The
//! caller publishes the job by bumping an epoch and waking the workers; it runs
//! its own share, then waits until every worker has finished.
//!
//! **Waiting.** Inside a job (a thread at a barrier, the caller for the
//! workers) a thread spins for about a quarter of a millisecond, then yields
//! its core until the others arrive (the thread it waits for may share it).
//! Between jobs a worker spins as long, then sleeps until the next job wakes
//! it (waking on its own at growing intervals, up to 64 ms), so that an idle
//! pool costs next to no CPU.
//!
//! **Sharing.** Pools are shared by all kernels ([`shared`]): one per worker
//! count, created on first use, so that many kernels do not multiply threads. A
//! pool runs one job at a time: [`Pool::try_run`] returns `false` when it is
//! busy, and the caller then runs the job alone (the results are the same: each
//! output is computed by one worker in a fixed order, whatever the count).
//!
//! **Busy machines.** A worker that lost its core makes the others wait. The
//! pool measures its jobs' time against the time their threads did not spend
//! waiting (about what one thread alone would take); when a window of jobs
//! shows the threads did not pay, `try_run` declines jobs for a while (the
//! callers run alone, as fast as one core allows) and then tries again.
//!
//! **Panics.** A panic in any worker's share (the caller's included) poisons the
//! job: barrier waits stop waiting and unwind, every worker finishes, and only
//! then does `try_run` re-raise the first panic in the caller, so that no worker
//! can touch the caller's job after `try_run` has returned or unwound.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first part of a wait: this many spins (about a quarter of a
/// millisecond on a recent x86 core), without yielding and without reading
/// the clock. A yield lets a thread waiting for another on the same core hand
/// it the core, but threads that yield to each other often enough stay on one
/// core, taking turns (measured: a 2-thread LSTM step then takes twice its
/// 1-thread time), so yielding starts late.
const SPINS: u32 = 20_000;
/// About how long `SPINS` take.
const PURE_SPIN: Duration = Duration::from_micros(230);

/// How long after a pool's first job windows are not judged: threads just
/// started can share a core for tens of milliseconds (measured: ~20 ms)
/// until the scheduler spreads them.
const SETTLE_NS: u64 = 50_000_000;

/// A window of jobs the back-off decision judges: at least this many jobs
/// and this much wall time.
/// Long enough to span several of the time slices in which a busy core is
/// shared (a worker's windows alternate good and bad with them), short
/// enough that a bad window costs little: next to a busy loop a job can wait
/// for a whole time slice, and windows of 8 jobs and 20 ms lasted 55–70 ms
/// (measured with `examples/contention.rs`), against 35 ms now.
const WINDOW_JOBS: u32 = 2;
const WINDOW_NS: u64 = 20_000_000;
/// How long a pool first declines jobs once it found its threads without
/// cores, and the longest it declines them.
const BACK_OFF_NS: u64 = 50_000_000;
const MAX_BACK_OFF_NS: u64 = 1_600_000_000;

/// Nanoseconds since the first call: a clock that fits in an atomic.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The jobs a pool judges together (`Pool::account`), and its back-off.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    jobs: u32,
    wall_ns: u64,
    useful_ns: u64,
    /// Until when (`now_ns`) windows are not judged after the first job; the
    /// next pause.
    settled_at: u64,
    pause_ns: u64,
}

/// A job: a borrowed `Fn(worker, team)` with its lifetime erased. Dereferenced
/// only between its publication and the end of the job (see `Pool::try_run`).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize, &Team) + Sync));

/// The panic that stops a poisoned job's barrier waits (not a bug: another
/// worker's panic is re-raised instead).
struct Poisoned;

/// A value on cache lines of its own (two 64-byte lines: x86 fetches lines in
/// pairs), so that threads polling it are not disturbed by writes to its
/// neighbours, nor it by theirs. (Measured: with the caller's per-job and
/// per-barrier writes next to the words the worker polls, an empty 2-thread
/// step cost ~0.6 µs more than with the old pool.)
#[repr(align(128))]
#[derive(Default)]
struct OwnLine<T>(T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    workers: usize,
    /// The current job, written by the caller once per job and polled by
    /// idle workers.
    dispatch: OwnLine<Dispatch>,
    /// Workers that started running.
    started: AtomicUsize,
    /// Workers (not the caller) that finished the current job (they write it,
    /// the caller polls it).
    done: OwnLine<AtomicUsize>,
    quit: AtomicBool,
    /// The barrier's words, on one line: a barrier then moves it between
    /// threads twice (arrivals, release), as the old spin barrier did.
    meet: OwnLine<Meet>,
    /// The payload of a worker's panic in the current job.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Sleeping threads wait on `sleep`, counted in `sleepers`, so that a
    /// thread that makes a condition true takes the lock only when someone
    /// sleeps.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    sleep: Condvar,
    /// The time the caller spent waiting for workers in the current job
    /// (nanoseconds; the caller's alone).
    caller_waits_ns: OwnLine<AtomicU64>,
    /// Until when (`now_ns`) the pool declines jobs (0: it does not).
    avoid_until: AtomicU64,
}

struct Meet {
    /// Arrivals in this generation, and the generation (polled by the waiting
    /// threads).
    arrived: AtomicUsize,
    generation: AtomicU64,
    /// A thread panicked in the current job (waiting threads stop).
    poisoned: AtomicBool,
}

struct Dispatch {
    /// Bumped to publish a job.
    epoch: AtomicU64,
    job: UnsafeCell<Option<JobPtr>>,
    /// The CPU the caller published the current job from (-1: unknown).
    caller_cpu: AtomicI32,
}

// SAFETY: `job` is written only by the caller in `Pool::try_run`, which holds
// the pool's run lock, before the epoch is bumped (Release), and read by
// workers after they see the new epoch (Acquire) and before they report the
// job done; it is written again only after every worker has reported the job
// done (Acquire on `done`). Everything else is atomic or behind a mutex. The
// job pointer's pointee is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; `JobPtr` is only dereferenced under that protocol.
unsafe impl Send for Shared {}

impl Shared {
    /// Wakes every sleeping thread, after a condition some may wait for became
    /// true (by an atomic write). Cheap when nobody sleeps: a fence and a load.
    fn wake_all(&self) {
        // The condition was written with a SeqCst operation, the sleeper
        // counted itself with one and reads the condition with one: in their
        // single order, either the sleeper sees the condition before it
        // sleeps, or this sees the sleeper.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.sleep_lock.lock();
            self.sleep.notify_all();
        }
    }

    /// Waits inside a job (at a barrier, or the caller for the workers):
    /// spins [`SPINS`] times (the other threads are about to arrive), then
    /// yields its core until `ready` (the thread waited for may share it).
    /// Returns how long it waited beyond the spin (nanoseconds; 0 for a short
    /// wait): the time lost to a thread that had no core.
    fn wait_in_job(&self, ready: impl Fn() -> bool) -> u64 {
        for _ in 0..SPINS {
            if ready() {
                return 0;
            }
            std::hint::spin_loop();
        }
        let start = Instant::now();
        while !ready() {
            std::thread::yield_now();
        }
        (start.elapsed() + PURE_SPIN).as_nanos() as u64
    }

    /// Waits between jobs (a worker for the next one): spins [`SPINS`] times,
    /// then sleeps until woken, waking on its own after 1 ms, then 2, 4, ...
    /// up to 64 ms, in case.
    fn wait_idle(&self, ready: impl Fn() -> bool) {
        for _ in 0..SPINS {
            if ready() {
                return;
            }
            std::hint::spin_loop();
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut nap = Duration::from_millis(1);
        while !ready() {
            guard = self
                .sleep
                .wait_timeout(guard, nap)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            nap = (nap * 2).min(Duration::from_millis(64));
        }
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Meets the other workers; returns the time lost waiting for them.
    fn barrier(&self) -> u64 {
        if self.meet.poisoned.load(Ordering::Acquire) {
            std::panic::panic_any(Poisoned);
        }
        let generation = self.meet.generation.load(Ordering::Acquire);
        if self.meet.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.workers {
            self.meet.arrived.store(0, Ordering::Relaxed);
            self.meet.generation.fetch_add(1, Ordering::SeqCst);
            self.wake_all();
            return 0;
        }
        let lost = self.wait_in_job(|| {
            self.meet.generation.load(Ordering::SeqCst) != generation
                || self.meet.poisoned.load(Ordering::SeqCst)
        });
        if self.meet.generation.load(Ordering::Acquire) == generation {
            std::panic::panic_any(Poisoned);
        }
        lost
    }

    fn poison(&self, payload: Box<dyn Any + Send>) {
        if !payload.is::<Poisoned>() {
            if let Ok(mut p) = self.panic.lock() {
                p.get_or_insert(payload);
            }
        }
        self.meet.poisoned.store(true, Ordering::SeqCst);
        self.wake_all();
    }
}

/// What a running job sees: its worker count and the barrier.
pub struct Team {
    shared: Arc<Shared>,
    pub workers: usize,
    /// Whether this is the caller's view (worker 0).
    caller: bool,
}

impl Team {
    /// Waits until every worker of the job reaches this point. In a job that a
    /// panic poisoned, it unwinds instead of waiting.
    pub fn barrier(&self) {
        let lost = self.shared.barrier();
        if self.caller && lost > 0 {
            self.shared
                .caller_waits_ns
                .fetch_add(lost, Ordering::Relaxed);
        }
    }
}

/// `workers - 1` threads (the caller is worker 0).
pub struct Pool {
    shared: Arc<Shared>,
    /// What the caller's share of a job sees (made once: cloning the `Arc`
    /// per job would write a line the workers read).
    caller_team: Team,
    /// Declines jobs while its threads lack cores (the shared pools do; a pool
    /// made for a test runs every job it can).
    backs_off: bool,
    handles: Vec<JoinHandle<()>>,
    /// One job at a time; the figures of the current window of jobs.
    running: Mutex<Window>,
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
            dispatch: OwnLine(Dispatch {
                epoch: AtomicU64::new(0),
                job: UnsafeCell::new(None),
                caller_cpu: AtomicI32::new(-1),
            }),
            started: AtomicUsize::new(0),
            done: OwnLine::default(),
            quit: AtomicBool::new(false),
            panic: Mutex::new(None),
            meet: OwnLine(Meet {
                arrived: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
                poisoned: AtomicBool::new(false),
            }),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            sleep: Condvar::new(),
            caller_waits_ns: OwnLine::default(),
            avoid_until: AtomicU64::new(0),
        });
        let mut pool = Pool {
            backs_off: false,
            shared: shared.clone(),
            caller_team: Team {
                shared: shared.clone(),
                workers,
                caller: true,
            },
            handles: Vec::with_capacity(workers - 1),
            running: Mutex::new(Window {
                pause_ns: BACK_OFF_NS,
                ..Window::default()
            }),
        };
        for w in 1..workers {
            let team = Team {
                shared: shared.clone(),
                workers,
                caller: false,
            };
            let h = spawn_worker(id, w, team)?; // `pool`'s drop stops the others.
            pool.handles.push(h);
        }
        // Wait until every worker runs, so that the first job does not find
        // one still starting (and maybe placed on the caller's core).
        shared.wait_in_job(|| shared.started.load(Ordering::SeqCst) == workers - 1);
        Ok(pool)
    }

    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Whether the pool declines jobs now, having found its threads blocked at
    /// barriers for much of recent jobs (threads without cores).
    pub fn backing_off(&self) -> bool {
        let until = self.shared.avoid_until.load(Ordering::Relaxed);
        if !self.backs_off || until == 0 {
            return false;
        }
        if now_ns() < until {
            return true;
        }
        // The pause is over: no clock for the next calls.
        self.shared.avoid_until.store(0, Ordering::Relaxed);
        false
    }

    /// Adds a job that took `wall_ns` to the current window, and at the end
    /// of a window (2 jobs and 20 ms) judges it: what
    /// one thread alone would take is about the caller's time in the jobs
    /// less its waits, times the workers; when the jobs took longer than nine
    /// tenths of that, the threads did not pay (workers without cores), and
    /// the pool declines jobs for 50 ms, doubling while the windows after each
    /// pause are as bad (up to 1.6 s). A good window resets the pause.
    /// The windows of the pool's first 50 ms are not judged. (Jobs that wake a
    /// sleeping worker are: when calls come that far apart, the wake-up costs
    /// more than the second thread saves.)
    fn account(&self, window: &mut Window, wall_ns: u64) {
        let s = &*self.shared;
        let caller_waits = match s.caller_waits_ns.load(Ordering::Relaxed) {
            0 => 0,
            _ => s.caller_waits_ns.swap(0, Ordering::Relaxed),
        };
        if window.settled_at == 0 {
            // The pool's first job starts a settling period: threads just
            // started can share a core until the scheduler spreads them.
            window.settled_at = now_ns() + SETTLE_NS;
            return;
        }
        window.jobs += 1;
        window.wall_ns += wall_ns;
        // One thread alone would take about the caller's share times the
        // workers (the shares are balanced): its time less its waits. A
        // worker that lost its core shows as the caller's wait; the worker's
        // own lost time is invisible (it is not running).
        window.useful_ns += wall_ns
            .saturating_sub(caller_waits)
            .saturating_mul(s.workers as u64);
        let full = window.jobs >= WINDOW_JOBS && window.wall_ns >= WINDOW_NS;
        if !full {
            return;
        }
        if now_ns() < window.settled_at {
            // Not judged (see the cold jobs above).
        } else if window.wall_ns.saturating_mul(10) > window.useful_ns.saturating_mul(9) {
            s.avoid_until
                .store(now_ns() + window.pause_ns, Ordering::Relaxed);
            window.pause_ns = (window.pause_ns * 2).min(MAX_BACK_OFF_NS);
        } else {
            window.pause_ns = BACK_OFF_NS;
        }
        window.jobs = 0;
        window.wall_ns = 0;
        window.useful_ns = 0;
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
        let Ok(mut window) = self.running.try_lock() else {
            return false;
        };
        let shared = &*self.shared;
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
        unsafe { *shared.dispatch.job.get() = Some(ptr) };
        shared.done.store(0, Ordering::Relaxed);
        shared
            .dispatch
            .caller_cpu
            .store(placement::current_cpu(), Ordering::Relaxed);
        shared.dispatch.epoch.fetch_add(1, Ordering::SeqCst);
        shared.wake_all();
        /// Waits for every worker to finish the job, even while unwinding.
        struct EndOfJob<'a>(&'a Shared);
        impl Drop for EndOfJob<'_> {
            fn drop(&mut self) {
                let s = self.0;
                let others = s.workers - 1;
                let lost = s.wait_in_job(|| s.done.load(Ordering::SeqCst) == others);
                // Waiting for a worker to finish is a wait for its core too.
                if lost > 0 {
                    s.caller_waits_ns.fetch_add(lost, Ordering::Relaxed);
                }
                // SAFETY: every worker is done with the job.
                unsafe { *s.dispatch.job.get() = None };
            }
        }
        let end = EndOfJob(shared);
        let team = &self.caller_team;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(0, team))) {
            shared.poison(payload);
        }
        drop(end);
        if shared.meet.poisoned.load(Ordering::Acquire) {
            // Every worker is done: reset the barrier for the next job.
            shared.meet.arrived.store(0, Ordering::Relaxed);
            shared.meet.generation.fetch_add(1, Ordering::AcqRel);
            shared.meet.poisoned.store(false, Ordering::Release);
            let payload = shared.panic.lock().ok().and_then(|mut p| p.take());
            drop(window);
            resume_unwind(payload.unwrap_or_else(|| Box::new("a pool worker panicked")));
        }
        self.account(&mut window, start.elapsed().as_nanos() as u64);
        true
    }
}

mod placement;

fn spawn_worker(pool: u64, w: usize, team: Team) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("cellc-p{pool}-w{w}"))
        .spawn(move || worker(w, team))
}

fn worker(w: usize, team: Team) {
    let shared = team.shared.clone();
    shared.started.fetch_add(1, Ordering::SeqCst);
    shared.wake_all();
    let mut seen = 0u64;
    loop {
        shared.wait_idle(|| {
            shared.dispatch.epoch.load(Ordering::SeqCst) != seen
                || shared.quit.load(Ordering::SeqCst)
        });
        if shared.quit.load(Ordering::Acquire) {
            return;
        }
        seen = shared.dispatch.epoch.load(Ordering::Acquire);
        let caller_cpu = shared.dispatch.caller_cpu.load(Ordering::Relaxed);
        if caller_cpu >= 0 && placement::current_cpu() == caller_cpu {
            // Two threads that take turns on one core can stay there for
            // 100 ms and more (measured: a 2-thread LSTM sequence then runs
            // at a tenth of its speed until the back-off gives up on it).
            placement::move_off(caller_cpu);
        }
        // SAFETY: the epoch moved (Acquire), so `job` holds the caller's job,
        // which stays alive until this worker reports it done below.
        let job = unsafe { *shared.dispatch.job.get() };
        if let Some(JobPtr(f)) = job {
            // SAFETY: see above.
            let run = catch_unwind(AssertUnwindSafe(|| unsafe { (*f)(w, &team) }));
            if let Err(payload) = run {
                shared.poison(payload);
            }
        }
        shared.done.fetch_add(1, Ordering::SeqCst);
        shared.wake_all();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::SeqCst);
        self.shared.wake_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The process's `k`-th pool of `workers` threads (the caller included),
/// started on first use (only after the `k - 1` before it); `None` if its
/// threads cannot be started.
fn shared_nth(workers: usize, k: usize) -> Option<&'static Pool> {
    static POOLS: Mutex<Vec<&'static Pool>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().ok()?;
    if let Some(p) = pools.iter().filter(|p| p.workers() == workers).nth(k) {
        return Some(p);
    }
    let mut pool = Pool::new(workers).ok()?;
    pool.backs_off = true;
    let pool: &'static Pool = Box::leak(Box::new(pool));
    pools.push(pool);
    Some(pool)
}

/// Runs `job` on a shared pool of `workers` threads: the first of the
/// process's pools of that size that is free, a new one when every one is
/// busy (two kernels running at once on two threads each, as a
/// bidirectional layer's directions do, each get a pool instead of one
/// running alone), at most as many pools of a size as the process's thread
/// bound holds. Returns `false`, having run nothing, when they are all busy
/// or backing off (threads without cores): the caller runs alone.
///
/// Pools live as long as the process: the sizes are bounded by
/// `Options::threads`' bound, the pools of one size by the bound over the
/// size, so the threads a process can start are bounded too.
pub fn run_shared(workers: usize, job: &(dyn Fn(usize, &Team) + Sync)) -> bool {
    let most = (crate::codegen::options::max_threads() / workers.max(1)).max(1);
    for k in 0..most {
        let Some(pool) = shared_nth(workers, k) else {
            return false;
        };
        if pool.backing_off() {
            return false;
        }
        if pool.try_run(job) {
            return true;
        }
    }
    false
}

/// The tiles of `0..tiles` that worker `w` of `n` owns: a contiguous slice, the
/// same every step, so its weights stay in that worker's cache.
pub fn share(tiles: usize, w: usize, n: usize) -> (usize, usize) {
    (tiles * w / n, tiles * (w + 1) / n)
}

#[cfg(test)]
mod tests;
