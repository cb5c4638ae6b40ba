//! Test helpers shared by the lab's integration tests (each test file uses a part of them).
#![allow(dead_code)]

pub mod run_dir;
pub mod shared;
