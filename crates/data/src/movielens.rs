//! MovieLens-100K ratings (GroupLens; its licence forbids redistribution, so the cache is never
//! committed) as RecBole's atomic `.inter` file from the `recbole==1.2.1` wheel: tab-separated,
//! a first line of typed column names (`user_id:token`, `item_id:token`, `rating:float`,
//! `timestamp:float`, separated by tabs), then one interaction per line.
//!
//! User and item tokens become dense ids `0..n` in order of first appearance in the file, so the
//! same file always gives the same ids; [`Interactions::user_tokens`] and
//! [`Interactions::item_tokens`] map them back. Interactions keep the file's order.

use std::collections::HashMap;
use std::path::Path;

use crate::dir::{DataDir, Dataset};
use crate::error::{DataError, Result};
use crate::read::read_file;

/// The interaction file, in the data set's directory.
pub const INTER_FILE: &str = "ml-100k.inter";

/// The columns read, with the RecBole type each must have; other columns are ignored.
pub const COLUMNS: [(&str, &str); 4] =
    [("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")];

/// The largest `.inter` file read (ml-100k's is 2 MB, ml-20m's about 600 MB).
const MAX_FILE: u64 = 1 << 30;

const OP: &str = "loading a RecBole .inter file";

/// One rating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    /// Dense user id, an index into [`Interactions::user_tokens`].
    pub user: u32,
    /// Dense item id, an index into [`Interactions::item_tokens`].
    pub item: u32,
    /// The rating (1 to 5 in MovieLens).
    pub rating: f32,
    /// Seconds since the Unix epoch (RecBole types it `float`; MovieLens' are whole seconds).
    pub timestamp: i64,
}

/// The interactions of a `.inter` file, with the maps from dense ids back to the file's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Interactions {
    /// Every interaction, in file order.
    pub interactions: Vec<Interaction>,
    /// `user_tokens[u]` is the file's token of dense user `u`.
    pub user_tokens: Vec<String>,
    /// `item_tokens[i]` is the file's token of dense item `i`.
    pub item_tokens: Vec<String>,
}

impl Interactions {
    /// The number of distinct users.
    pub fn num_users(&self) -> usize {
        self.user_tokens.len()
    }

    /// The number of distinct items.
    pub fn num_items(&self) -> usize {
        self.item_tokens.len()
    }

    /// How many interactions each user has, indexed by dense user id. The loader keeps every
    /// user the file names, even one with a single interaction; a split that needs several
    /// per user (leave-one-out needs 3: train, validation, test) reports or drops the short
    /// ones itself, with [`Interactions::users_with_fewer_than`].
    pub fn per_user_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.user_slots()];
        for it in &self.interactions {
            counts[it.user as usize] += 1;
        }
        counts
    }

    /// The dense ids of the users with fewer than `min` interactions, ascending.
    pub fn users_with_fewer_than(&self, min: usize) -> Vec<u32> {
        // Ids fit u32: the loader refuses more than 2^32 users, and `user_slots` is bounded by
        // the largest id present.
        self.per_user_counts().iter().enumerate().filter(|&(_, &c)| c < min).map(|(u, _)| u as u32).collect()
    }

    /// Each user's items in time order, indexed by dense user id: the sequence a next-item
    /// model (SASRec) reads. Interactions with equal timestamps keep their order in the file
    /// (a stable sort), because MovieLens has many ratings in the same second and the result
    /// must not depend on the sort algorithm.
    pub fn sequences(&self) -> Vec<Vec<u32>> {
        let mut by_user: Vec<Vec<(i64, u32)>> = vec![Vec::new(); self.user_slots()];
        for it in &self.interactions {
            by_user[it.user as usize].push((it.timestamp, it.item));
        }
        by_user
            .into_iter()
            .map(|mut events| {
                events.sort_by_key(|&(timestamp, _)| timestamp);
                events.into_iter().map(|(_, item)| item).collect()
            })
            .collect()
    }

    /// Per-user tables are indexed by dense id; the fields are public, so an `Interactions`
    /// built by hand may name a user past `user_tokens`, and the tables grow to hold it
    /// rather than panic.
    fn user_slots(&self) -> usize {
        let largest = self.interactions.iter().map(|it| it.user as usize + 1).max().unwrap_or(0);
        largest.max(self.num_users())
    }
}

/// Loads MovieLens-100K from the cache.
pub fn load(dir: &DataDir) -> Result<Interactions> {
    let path = dir.require("loading MovieLens-100K", Dataset::MovieLens100k, INTER_FILE)?;
    load_file(&path)
}

/// Loads any RecBole `.inter` file that has the [`COLUMNS`].
pub fn load_file(path: &Path) -> Result<Interactions> {
    let bytes = read_file(OP, path, MAX_FILE)?;
    parse_inter(&bytes, path)
}

/// Parses a `.inter` file's bytes; `path` only names the file in errors.
pub fn parse_inter(bytes: &[u8], path: &Path) -> Result<Interactions> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DataError::invalid(OP, path, None, format!("not UTF-8 text (at byte {}): {e}", e.valid_up_to()))
    })?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let Some((_, header)) = lines.next() else {
        return Err(DataError::invalid(OP, path, None, "the file is empty; it needs a header line".into()));
    };
    let columns = column_indices(header, path)?;
    let width = header.split('\t').count();
    let mut user_ids = IdMap::default();
    let mut item_ids = IdMap::default();
    let mut interactions = Vec::new();
    for (line_no, line) in lines {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = |reason: String| DataError::invalid(OP, path, Some(line_no), reason);
        if fields.len() != width {
            return Err(bad(format!("{} tab-separated fields, the header has {width}", fields.len())));
        }
        let [user, item, rating, timestamp] = columns.map(|c| fields[c]);
        if user.is_empty() || item.is_empty() {
            return Err(bad("an empty user or item token".into()));
        }
        let rating: f32 = rating
            .parse()
            .ok()
            .filter(|r: &f32| r.is_finite())
            .ok_or_else(|| bad(format!("rating {rating:?} is not a finite number")))?;
        let timestamp = parse_timestamp(timestamp)
            .ok_or_else(|| bad(format!("timestamp {timestamp:?} is not a whole number of seconds")))?;
        let user = user_ids.id(user).ok_or_else(|| bad("more than 2^32 distinct users".into()))?;
        let item = item_ids.id(item).ok_or_else(|| bad("more than 2^32 distinct items".into()))?;
        interactions.push(Interaction { user, item, rating, timestamp });
    }
    Ok(Interactions { interactions, user_tokens: user_ids.tokens, item_tokens: item_ids.tokens })
}

/// The positions of the [`COLUMNS`] in the header, checking their types.
fn column_indices(header: &str, path: &Path) -> Result<[usize; 4]> {
    let fields: Vec<(&str, &str)> = header.split('\t').map(|f| f.split_once(':').unwrap_or((f, ""))).collect();
    let mut found = [0; 4];
    for (slot, (name, kind)) in found.iter_mut().zip(COLUMNS) {
        let Some(at) = fields.iter().position(|(n, _)| *n == name) else {
            return Err(DataError::invalid(
                OP,
                path,
                Some(1),
                format!(
                    "the header {header:?} has no column `{name}:{kind}`; RecBole interaction files name theirs `name:type`"
                ),
            ));
        };
        if fields[at].1 != kind {
            return Err(DataError::invalid(
                OP,
                path,
                Some(1),
                format!("column `{name}` has type `{}`, expected `{kind}`", fields[at].1),
            ));
        }
        *slot = at;
    }
    Ok(found)
}

/// Whole seconds, written as an integer or as a float with no fraction (`900000000.0`).
fn parse_timestamp(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        let v: f64 = s.parse().ok()?;
        // The range check keeps `as` from saturating a value outside i64.
        (v.fract() == 0.0 && v.abs() < 9.0e18).then_some(v as i64)
    })
}

/// Dense ids in order of first appearance.
#[derive(Default)]
struct IdMap {
    ids: HashMap<String, u32>,
    tokens: Vec<String>,
}

impl IdMap {
    fn id(&mut self, token: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(token) {
            return Some(id);
        }
        let id = u32::try_from(self.tokens.len()).ok()?;
        self.ids.insert(token.to_string(), id);
        self.tokens.push(token.to_string());
        Some(id)
    }
}
