//! Test-only support for the loader fuzz tests of Attune's crates: a seeded mutation engine
//! and the harness that runs a loader on thousands of mutants.
//!
//! Not public API of any library: the crates list it under `[dev-dependencies]` only, and it
//! is not published. It lives in its own crate (rather than behind a feature of
//! `attune-tensor`) because the loaders span four crates, and a dev-only crate neither adds a
//! feature that would rebuild `attune-tensor` and everything above it for tests, nor puts a
//! testing module into a library's API.
//!
//! - [`Rng`]: SplitMix64; case `i` of a run seeded `s` uses [`Rng::for_case`]`(s, i)`, so a
//!   failure report's seed and case number reproduce it alone.
//! - [`bytes`]: format-blind mutations (truncation, bit flips, invalid UTF-8, huge integers).
//! - [`text`]: JSON / TOML / JSON-lines mutations (boundary numbers, wrong types, deep
//!   nesting, duplicated and deleted lines).
//! - [`safetensors`]: header-aware mutations (header length, dtypes, shapes, offsets, metadata).
//! - [`Fuzz`]: runs a loader under `catch_unwind` with [`PeakAlloc`] measuring the largest
//!   single allocation; [`Tally::assert_clean`] prints `fuzz NAME: N mutations, E errors, L
//!   loaded, P panics, ...` and fails on any panic, allocation beyond [`alloc_budget`] or
//!   error message that does not name the file.

mod alloc;
pub mod bytes;
mod harness;
mod rng;
pub mod safetensors;
pub mod text;

pub use alloc::PeakAlloc;
pub use harness::{Fuzz, Tally, alloc_budget};
pub use rng::Rng;
