//! The embedded kernel sources (every file under kernels/, see build.rs) and the resolution of
//! their `#include "..."` lines, which both compilers need and the cache key hashes.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

include!(concat!(env!("OUT_DIR"), "/kernel_files.rs"));

/// The contents of the embedded file at `path` (relative to kernels/).
pub fn kernel_file(path: &str) -> Result<&'static str> {
    KERNEL_FILES.iter().find(|(p, _)| *p == path).map(|(_, s)| *s).ok_or_else(|| Error::UnknownKernelFile {
        file: path.to_string(),
        known: KERNEL_FILES.iter().filter(|(p, _)| p.ends_with(".cu")).map(|(p, _)| *p).collect::<Vec<_>>().join(", "),
    })
}

/// Every embedded `.cu` file (the kernel families).
pub fn kernel_families() -> Vec<&'static str> {
    KERNEL_FILES.iter().map(|(p, _)| *p).filter(|p| p.ends_with(".cu")).collect()
}

/// A kernel file with the transitive closure of its quoted includes.
#[derive(Debug, Clone)]
pub struct SourceSet {
    /// The kernel file (relative to kernels/).
    pub file: String,
    /// Its contents.
    pub source: &'static str,
    /// Every header it reaches through `#include "..."`, by the name written in the include
    /// (resolved relative to the including file, then to kernels/).
    pub headers: BTreeMap<String, &'static str>,
}

impl SourceSet {
    /// Resolves `file` and its includes from the embedded tree.
    pub fn load(file: &str) -> Result<SourceSet> {
        let source = kernel_file(file)?;
        let mut headers = BTreeMap::new();
        let mut todo = vec![(file.to_string(), source)];
        while let Some((path, text)) = todo.pop() {
            for inc in quoted_includes(text) {
                let resolved = resolve(&path, inc)
                    .ok_or_else(|| Error::MissingInclude { file: path.clone(), include: inc.to_string() })?;
                if !headers.contains_key(&resolved.0) {
                    headers.insert(resolved.0.clone(), resolved.1);
                    todo.push(resolved);
                }
            }
        }
        Ok(SourceSet { file: file.to_string(), source, headers })
    }

    /// A hex SHA-256 over the file, its headers, and `extra` (defines, arch, compiler version).
    pub fn hash(&self, extra: &[&str]) -> String {
        let mut h = Sha256::new();
        for part in [self.file.as_str(), self.source] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for (name, text) in &self.headers {
            for part in [name.as_str(), *text] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        for part in extra {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every `#include "..."` as written in the file and its headers, with the embedded path it
    /// resolves to. NVRTC matches named headers by the text written in the include, not by a
    /// resolved path, so it needs each header under each name it is included by.
    pub fn include_names(&self) -> Vec<(String, String)> {
        let files = std::iter::once((self.file.as_str(), self.source))
            .chain(self.headers.iter().map(|(p, t)| (p.as_str(), *t)));
        let mut out = Vec::new();
        for (path, text) in files {
            for inc in quoted_includes(text) {
                if let Some((resolved, _)) = resolve(path, inc) {
                    out.push((inc.to_string(), resolved));
                }
            }
        }
        out
    }
}

/// The names inside `#include "..."` lines (angle-bracket includes are left to the compiler).
fn quoted_includes(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let rest = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix("include")?.trim_start();
        let rest = rest.strip_prefix('"')?;
        rest.split('"').next()
    })
}

/// Resolves an include written in `from` to the embedded path (relative to kernels/): first
/// beside the including file, then from the kernels/ root. Returns the path as the key.
fn resolve(from: &str, include: &str) -> Option<(String, &'static str)> {
    let dir = from.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let beside = normalize(&if dir.is_empty() { include.to_string() } else { format!("{dir}/{include}") });
    for candidate in [beside, normalize(include)] {
        if let Ok(text) = kernel_file(&candidate) {
            return Some((candidate, text));
        }
    }
    None
}

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_parsed_from_quoted_lines_only() {
        let text = "#include \"a.cuh\"\n  #  include \"emu/b.h\"\n#include <cstdint>\n// #include \"c.h\" in a comment line is not a directive\n";
        let found: Vec<_> = quoted_includes(text).collect();
        assert_eq!(found, vec!["a.cuh", "emu/b.h"]);
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalize("tensor/../common.cuh"), "common.cuh");
        assert_eq!(normalize("./a/b.cu"), "a/b.cu");
    }

    #[test]
    fn unknown_files_are_reported_with_the_known_ones() {
        let err = kernel_file("no/such.cu").unwrap_err().to_string();
        assert!(err.contains("no/such.cu"), "{err}");
    }
}
