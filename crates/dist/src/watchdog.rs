//! Ends the process when a collective does not return in time.
//!
//! A blocking MPI or NCCL call waits for every rank; a rank that hangs (a stuck file system, a
//! deadlock, a host that vanished without its TCP connection closing) would hold the others
//! forever. The watchdog is a thread that watches the deadline of the call in flight and, when
//! it passes, prints what was waited on and exits the process with [`TIMEOUT_EXIT_CODE`]; the
//! MPI launcher then ends the other ranks (a rank that exits without finalising kills the job).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The exit status of a rank the watchdog ended.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

type Armed = Arc<Mutex<Option<(Instant, String)>>>;

/// The watching thread's handle; dropping it stops watching.
pub struct Watchdog {
    armed: Armed,
    timeout: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// A collective in flight; dropping it disarms the watchdog.
pub struct InFlight<'a> {
    watchdog: &'a Watchdog,
}

impl Watchdog {
    /// Starts watching: a call armed with [`Watchdog::arm`] that runs past `timeout` ends the
    /// process (after printing `rank` and what it waited on).
    pub fn start(timeout: Duration, rank: usize) -> Watchdog {
        Self::start_with(timeout, rank, |code| {
            // SAFETY: _exit ends the process at once; nothing after it runs.
            unsafe { libc::_exit(code) }
        })
    }

    /// [`Watchdog::start`] with the action taken at the deadline (tests observe it).
    pub fn start_with(timeout: Duration, rank: usize, on_timeout: impl Fn(i32) + Send + 'static) -> Watchdog {
        let armed: Armed = Arc::new(Mutex::new(None));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, s) = (armed.clone(), stop.clone());
        let tick = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(tick);
                let late = a.lock().map(|g| g.as_ref().filter(|(d, _)| Instant::now() >= *d).map(|(_, w)| w.clone()));
                if let Ok(Some(what)) = late {
                    eprintln!(
                        "attune: rank {rank}: {what} did not complete in {:.0} s: another rank is dead or hung. \
                         Ending this rank so the launcher stops the job (raise --collective-timeout for slow steps)",
                        timeout.as_secs_f64()
                    );
                    on_timeout(TIMEOUT_EXIT_CODE);
                    return;
                }
            }
        });
        Watchdog { armed, timeout, stop }
    }

    /// Marks `what` as in flight until the returned guard drops.
    pub fn arm(&self, what: impl Into<String>) -> InFlight<'_> {
        if let Ok(mut g) = self.armed.lock() {
            *g = Some((Instant::now() + self.timeout, what.into()));
        }
        InFlight { watchdog: self }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.watchdog.armed.lock() {
            *g = None;
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    #[test]
    fn a_late_call_fires_and_a_prompt_one_does_not() {
        let fired = Arc::new(AtomicI32::new(0));
        let f = fired.clone();
        let wd = Watchdog::start_with(Duration::from_millis(100), 1, move |code| f.store(code, Ordering::SeqCst));
        {
            let _g = wd.arm("a quick all-reduce");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(fired.load(Ordering::SeqCst), 0, "a disarmed watchdog fired");
        let _g = wd.arm("an all-reduce that hangs");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(fired.load(Ordering::SeqCst), TIMEOUT_EXIT_CODE);
    }
}
