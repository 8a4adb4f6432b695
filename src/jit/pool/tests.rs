//! The pool's tests: placement, phases and barriers, callers taking turns
//! and sharing pools, panics, idle workers blocking, back-off, shares.

use super::*;
use std::sync::atomic::AtomicUsize;

/// `move_off` moves the thread at once and leaves its affinity as it was.
#[cfg(target_os = "linux")]
#[test]
fn a_thread_moved_off_a_cpu_runs_elsewhere_with_its_affinity_unchanged() {
    std::thread::spawn(|| {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let affinity = || {
            // SAFETY: as in `placement::move_off`.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
                set
            }
        };
        let before = affinity();
        // SAFETY: reads the set.
        let allowed = unsafe { libc::CPU_COUNT(&before) };
        let cpu = placement::current_cpu();
        assert!(cpu >= 0);
        placement::move_off(cpu);
        // (With one CPU allowed there is nowhere to go: only the
        // affinity is checked.)
        if allowed >= 2 {
            assert_ne!(placement::current_cpu(), cpu);
        }
        let after = affinity();
        // SAFETY: reads the sets.
        let same = (0..size * 8)
            .all(|c| unsafe { libc::CPU_ISSET(c, &before) == libc::CPU_ISSET(c, &after) });
        assert!(same, "the affinity was not restored");
    })
    .join()
    .unwrap();
}

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

/// Two callers at once on shared pools of one size each get a team of
/// that size (a second pool), not one team and one caller alone: the
/// two directions of a layer on 4 threads ran one after the other.
#[test]
fn concurrent_callers_of_shared_pools_each_get_a_team() {
    let started = AtomicUsize::new(0);
    let teams = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let job = |w: usize, team: &Team| {
                    if w == 0 {
                        started.fetch_add(1, Ordering::SeqCst);
                        teams.lock().unwrap().push(team.workers);
                        // Hold the pool until the other caller's job runs too.
                        let t = Instant::now();
                        while started.load(Ordering::SeqCst) < 2 && t.elapsed().as_secs() < 10 {
                            std::thread::yield_now();
                        }
                    }
                    team.barrier();
                };
                if !run_shared(2, &job) {
                    started.fetch_add(1, Ordering::SeqCst);
                    teams.lock().unwrap().push(1);
                }
            });
        }
    });
    // With room for two pools of two under the thread bound (`cargo
    // test` sets one of 16), each caller gets its team.
    let second = if crate::codegen::options::max_threads() >= 4 {
        2
    } else {
        1
    };
    assert_eq!(*teams.lock().unwrap(), [2, second]);
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
                    let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
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
    let job = |w: usize, team: &Team| {
        if w == 1 {
            std::thread::sleep(Duration::from_millis(4));
        }
        team.barrier();
    };
    // Within a few windows (each 20 ms of these jobs) it declines one.
    let ran = (0..300).take_while(|_| pool.try_run(&job)).count();
    assert!(ran < 300, "the pool never declined a job");
    assert!(pool.backing_off());
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
