//! The loop: seeded mutants of valid inputs into a loader under `catch_unwind`, tallying Ok,
//! typed Err, panics, over-sized allocations and errors that do not name the file.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Rng, alloc};

/// One fuzz run at a time per process: the allocation peak and the panic hook are global.
static RUN_LOCK: Mutex<()> = Mutex::new(());
/// The message and location of the last panic, recorded by the hook installed during a run.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// How a loader is fuzzed.
#[derive(Debug, Clone)]
pub struct Fuzz {
    name: String,
    seed: u64,
    cases: u64,
    must_name: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// The loader's name in the report.
    pub name: String,
    /// Mutants tried.
    pub cases: u64,
    /// Mutants the loader rejected with an error.
    pub errors: u64,
    /// Mutants the loader accepted.
    pub loaded: u64,
    /// `seed/case mutation: message` of each panic.
    pub panics: Vec<String>,
    /// Mutants during whose load one allocation exceeded the budget.
    pub over_allocations: Vec<String>,
    /// Errors whose message does not name the file.
    pub unnamed: Vec<String>,
    /// Per mutation kind: (tried, rejected, time spent mutating and loading).
    pub kinds: BTreeMap<&'static str, (u64, u64, Duration)>,
    /// The largest single allocation seen, and the case (seed, number, mutation, input size).
    pub peak_alloc: (usize, String),
    /// The slowest single load.
    pub slowest: Duration,
}

/// The largest single allocation a load of `len` input bytes may make: decoding may widen
/// every byte to an f64 and keep a few copies, but never allocate what a header declares.
pub fn alloc_budget(len: usize) -> usize {
    32 * len + (8 << 20)
}

impl Fuzz {
    /// A run named `name` (it names the loader in the report), seeded with `seed`, of 2000 cases.
    pub fn new(name: &str, seed: u64) -> Fuzz {
        Fuzz { name: name.to_string(), seed, cases: 2000, must_name: None }
    }

    /// Sets the number of mutants.
    pub fn cases(mut self, n: u64) -> Fuzz {
        self.cases = n;
        self
    }

    /// Requires every error message to contain `s` (the file's name).
    pub fn errors_name(mut self, s: &str) -> Fuzz {
        self.must_name = Some(s.to_string());
        self
    }

    /// Runs `load` on `cases` mutants from `mutate` (given each case's own seeded stream; it
    /// returns the bytes and the mutation's name). `load` writes the bytes where its loader
    /// reads them; its error is rendered with `{:#}` (anyhow's chain, thiserror's message).
    pub fn run<T, E: Display>(
        &self,
        mut mutate: impl FnMut(&mut Rng) -> (Vec<u8>, &'static str),
        mut load: impl FnMut(&[u8]) -> Result<T, E>,
    ) -> Tally {
        let _guard = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        assert!(alloc::installed(), "install attune_fuzzkit::PeakAlloc as the test binary's #[global_allocator]");
        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            // With RUST_BACKTRACE=1 the report shows where in the loader it panicked.
            let trace = std::backtrace::Backtrace::capture();
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = format!("{info}\n{trace}");
        }));
        let mut t = Tally { name: self.name.clone(), cases: self.cases, ..Tally::default() };
        for i in 0..self.cases {
            let mut rng = Rng::for_case(self.seed, i);
            let case_start = Instant::now();
            let (input, what) = mutate(&mut rng);
            let id = || format!("seed {} case {i} ({what}, {} bytes)", self.seed, input.len());
            alloc::reset_peak();
            let start = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| load(&input).map(drop).map_err(|e| format!("{e:#}"))));
            t.slowest = t.slowest.max(start.elapsed());
            let peak = alloc::peak();
            if peak > t.peak_alloc.0 {
                t.peak_alloc = (peak, id());
            }
            if peak > alloc_budget(input.len()) {
                t.over_allocations.push(format!("{}: one allocation of {peak} bytes", id()));
            }
            let kind = t.kinds.entry(what).or_default();
            kind.0 += 1;
            kind.2 += case_start.elapsed();
            match result {
                Ok(Ok(())) => t.loaded += 1,
                Ok(Err(msg)) => {
                    t.errors += 1;
                    kind.1 += 1;
                    if let Some(name) = &self.must_name
                        && !msg.contains(name.as_str())
                    {
                        t.unnamed.push(format!("{}: {msg}", id()));
                    }
                }
                Err(_) => {
                    let msg = std::mem::take(&mut *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()));
                    t.panics.push(format!("{}: {msg}", id()));
                }
            }
        }
        std::panic::set_hook(previous_hook);
        t
    }
}

impl Tally {
    /// The one-line report, e.g. `fuzz checkpoint: 4000 mutations, 3987 errors, 13 loaded, 0 panics, ...`.
    pub fn summary(&self) -> String {
        format!(
            "fuzz {}: {} mutations, {} errors, {} loaded, {} panics, {} over-allocations, {} errors not naming the file \
             (largest allocation {} bytes, {}; slowest load {:.1} ms)",
            self.name,
            self.cases,
            self.errors,
            self.loaded,
            self.panics.len(),
            self.over_allocations.len(),
            self.unnamed.len(),
            self.peak_alloc.0,
            self.peak_alloc.1,
            self.slowest.as_secs_f64() * 1e3
        )
    }

    /// Prints the report and the per-mutation breakdown, then fails on any panic, over-sized
    /// allocation or unnamed error (listing the first few, with the seeds that reproduce them).
    pub fn assert_clean(&self) {
        println!("{}", self.summary());
        // CI collects the counts of every fuzz test from one file instead of rerunning them
        // with their output shown (ATTUNE_FUZZ_REPORT, set by .ci/run).
        if let Some(path) = std::env::var_os("ATTUNE_FUZZ_REPORT") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{}", self.summary());
            }
        }
        for (kind, (n, rejected, time)) in &self.kinds {
            println!("  {kind}: {n} tried, {rejected} rejected ({:.0} ms)", time.as_secs_f64() * 1e3);
        }
        let mut problems = Vec::new();
        for (what, list) in
            [("panic", &self.panics), ("over-allocation", &self.over_allocations), ("unnamed error", &self.unnamed)]
        {
            problems.extend(list.iter().take(5).map(|p| format!("{what}: {p}")));
        }
        assert!(problems.is_empty(), "{}\n{}", self.summary(), problems.join("\n"));
    }
}
