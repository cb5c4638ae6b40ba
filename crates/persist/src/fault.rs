//! Fault injection at every file-system step, for the crash-point tests (feature `failpoints`).
//!
//! Every step of the commit protocol (each write, fsync, rename, directory fsync, truncate and
//! removal) calls [`step`] first. With the feature on, the environment decides what happens:
//! - `ATTUNE_FAULT_TRACE=FILE`: append `N KIND PATH` for every step, so a test can enumerate
//!   the steps of a run;
//! - `ATTUNE_FAULT_CRASH_AT=N`: abort the process on entering step N (the step does not happen:
//!   the state on disk is what a `kill -9` or power cut between steps N-1 and N leaves, as far
//!   as this process's own writes go);
//! - `ATTUNE_FAULT_FAIL_AT=N` with `ATTUNE_FAULT_ERRNO=enospc|eio`: step N fails with that
//!   error instead of running.
//!
//! Without the feature [`step`] is an empty inline function.

use std::path::Path;

/// Called before each file-system step; `what` names the kind of step.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn step(_what: &'static str, _path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Called before each file-system step; `what` names the kind of step.
#[cfg(feature = "failpoints")]
pub(crate) fn step(what: &'static str, path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    let env_u64 = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Ok(trace) = std::env::var("ATTUNE_FAULT_TRACE")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(trace)
    {
        let _ = writeln!(f, "{n} {what} {}", path.display());
    }
    if env_u64("ATTUNE_FAULT_CRASH_AT") == Some(n) {
        std::process::abort();
    }
    if env_u64("ATTUNE_FAULT_FAIL_AT") == Some(n) {
        let errno = match std::env::var("ATTUNE_FAULT_ERRNO").as_deref() {
            Ok("eio") => 5,
            _ => 28,
        };
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    Ok(())
}
