//! Storage URLs, the one way commands name a shared study's store: `sqlite:PATH` (one host,
//! many processes) or `postgres://USER@HOST:PORT/DB` (many machines). docs/search.md
//! "Shared studies".

use std::path::Path;
use std::sync::Arc;

use super::{PostgresStorage, SqliteStorage, Storage};
use crate::error::{Result, SearchError};

/// Whether a study must already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// The study must exist (workers, `attune study show`).
    Existing,
    /// Create the study (and the SQLite file) when it is missing.
    CreateOrOpen,
}

/// What a storage URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl<'a> {
    /// A SQLite file.
    Sqlite(&'a Path),
    /// A PostgreSQL connection string.
    Postgres(&'a str),
}

/// Parses a storage URL.
pub fn parse(url: &str) -> Result<StorageUrl<'_>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(bad(url));
        }
        return Ok(StorageUrl::Sqlite(Path::new(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StorageUrl::Postgres(url));
    }
    Err(bad(url))
}

fn bad(url: &str) -> SearchError {
    SearchError::config(
        "storage",
        format!("'{}' is not a storage URL", super::postgres::redact(url)),
        "use sqlite:PATH (one machine) or postgres://USER@HOST:PORT/DB (many)",
    )
}

/// Opens study `study` in the storage at `url`.
pub fn open(url: &str, study: &str, mode: Open) -> Result<Arc<dyn Storage>> {
    Ok(match (parse(url)?, mode) {
        (StorageUrl::Sqlite(p), Open::Existing) => Arc::new(SqliteStorage::open(p, study)?),
        (StorageUrl::Sqlite(p), Open::CreateOrOpen) => Arc::new(SqliteStorage::open_or_create(p, study)?),
        (StorageUrl::Postgres(u), mode) => {
            if mode == Open::Existing && !super::list_studies(u)?.iter().any(|n| n == study) {
                return Err(SearchError::NotAStudy {
                    path: super::postgres::redact(u).into(),
                    why: format!(
                        "it has no study named '{study}'; create it with attune search --storage URL --study {study} ..."
                    ),
                });
            }
            Arc::new(PostgresStorage::connect(u, study)?)
        }
    })
}

/// The studies in the storage at `url` with their trial counts.
pub fn list(url: &str) -> Result<Vec<(String, u64)>> {
    match parse(url)? {
        StorageUrl::Sqlite(p) => SqliteStorage::list_studies(p),
        StorageUrl::Postgres(u) => super::list_studies(u)?
            .into_iter()
            .map(|name| {
                let n = PostgresStorage::connect(u, &name)?.trials()?.len() as u64;
                Ok((name, n))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_anything_else_is_named() {
        assert_eq!(parse("sqlite:/tmp/s.db").unwrap(), StorageUrl::Sqlite(Path::new("/tmp/s.db")));
        assert_eq!(parse("sqlite:rel/s.db").unwrap(), StorageUrl::Sqlite(Path::new("rel/s.db")));
        assert_eq!(parse("sqlite:///abs/s.db").unwrap(), StorageUrl::Sqlite(Path::new("/abs/s.db")));
        assert!(matches!(parse("postgres://u@h:5432/db").unwrap(), StorageUrl::Postgres(_)));
        let e = parse("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(e.contains("not a storage URL") && e.contains("sqlite:PATH") && !e.contains("secret"), "{e}");
        assert!(parse("sqlite:").is_err());
    }
}
