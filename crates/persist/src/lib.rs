//! attune-persist: the one commit protocol for everything Attune writes to disk.
//!
//! - [`write_atomic`]: a single file replaced whole (temporary sibling, fsync, rename,
//!   directory fsync).
//! - [`Staging`] / [`Committed`]: a directory (a checkpoint) committed by one rename, with a
//!   manifest of every file's size and BLAKE3; reads verify them.
//! - [`AppendLog`]: append-only logs whose committed length a checkpoint records and a resume
//!   restores with one truncate.
//! - [`DirLock`]: one process per directory (`flock`, never stale).
//! - Fault injection at every step for crash tests (feature `failpoints`, see `fault`).
//!
//! The fsync order and what survives a crash, a full disk or a power cut are written down in
//! docs/persistence.md. This crate depends on no tensor code, so every crate can use it.

mod append;
mod atomic;
mod commit;
mod error;
mod fault;
mod fsops;
mod lock;

pub use append::AppendLog;
pub use atomic::{TEMP_MARKER, link_atomic, remove_temporaries, write_atomic, write_atomic_with};
pub use commit::{Committed, FileEntry, MANIFEST, Manifest, Staging, list_committed, remove_committed};
pub use error::{PersistError, Result};
pub use lock::{DirLock, LOCK_FILE};
