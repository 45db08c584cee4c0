//! File descriptors: clients of a listener must never take the
//! descriptors that readers, the registry and the process itself need.
//!
//! systemd starts services with a soft `RLIMIT_NOFILE` of 1024 (and a hard
//! one far above) unless the unit sets `LimitNOFILE=`; a program that does
//! not use `select(2)` may raise the soft limit to the hard one, which
//! both binaries do at start. Each listener then serves at most as many
//! clients as leave a reserve free, and refuses the rest clearly instead
//! of letting a flood of idle clients make the next `open` of a replugged
//! reader fail with "Too many open files".

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit in force afterwards (or 1024 if it cannot be read).
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// How many clients a listener may serve: at most `wanted`, and never so
/// many that fewer than `reserved` descriptors stay free for everything
/// else (at least one client is always served).
pub fn client_budget(wanted: usize, reserved: u64) -> usize {
    let soft = raise_nofile();
    let budget = usize::try_from(soft.saturating_sub(reserved)).unwrap_or(usize::MAX);
    wanted.min(budget).max(1)
}
