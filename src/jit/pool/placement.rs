//! Keeping a worker off its caller's core.

/// The CPU the calling thread runs on, or -1 where that is unknown.
pub fn current_cpu() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: no arguments, no memory touched.
    return unsafe { libc::sched_getcpu() };
    #[cfg(not(target_os = "linux"))]
    return -1;
}

/// Moves the calling thread off `cpu` now: narrows its affinity to the
/// other CPUs it may run on (the kernel migrates it at once) and widens
/// it back, so that the scheduler stays free to place it. Does nothing
/// where that is not possible (`cpu` is the only CPU allowed, or a call
/// fails).
pub fn move_off(cpu: i32) {
    #[cfg(target_os = "linux")]
    {
        let Ok(cpu) = usize::try_from(cpu) else {
            return;
        };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if cpu >= size * 8 {
            return;
        }
        // SAFETY: `cpu_set_t` is plain bits (zeroed is an empty set);
        // each call reads or writes only the set it is given, of the size
        // it is given, and `cpu` is within that size.
        unsafe {
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut allowed) != 0
                || !libc::CPU_ISSET(cpu, &allowed)
                || libc::CPU_COUNT(&allowed) < 2
            {
                return;
            }
            let mut others = allowed;
            libc::CPU_CLR(cpu, &mut others);
            if libc::sched_setaffinity(0, size, &others) == 0 {
                libc::sched_setaffinity(0, size, &allowed);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}
