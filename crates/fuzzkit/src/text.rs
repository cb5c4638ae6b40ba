//! Mutations of text formats (JSON, TOML, JSON lines) that keep most of the syntax intact, so
//! the mutant reaches the loader's checks rather than dying in the parser: boundary numbers,
//! wrong value types, odd strings, duplicated or missing lines, deep nesting, plus the
//! format-blind byte mutations (truncation, bit flips, invalid UTF-8).

use crate::{Rng, bytes};

/// Numbers at the edges of the types loaders parse into.
pub const BOUNDARY_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0.0",
    "1.5",
    "1e999",
    "-1e999",
    "1e-400",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "-9223372036854775808",
    "9223372036854775807",
    "1099511627776",
    "nan",
    "inf",
    "NaN",
];

/// Values of the wrong type for almost any field.
pub const WRONG_TYPES: &[&str] = &["null", "true", "\"\"", "\"x\"", "[]", "{}", "[1, \"a\"]", "{\"a\": 1}", "0"];

/// Odd string contents.
pub const ODD_STRINGS: &[&str] =
    &["", " ", "\\u0000", "\\ud800", "..", "/", "NaN", "inf", "F64", "BOOL", "cuda:99999999999", "\u{202e}é\u{1f600}"];

/// A token of the text: a string literal, a number or a bare word.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Num,
    Word,
}

/// The spans of string literals, numbers and bare words (enough of JSON and TOML lexing to
/// hit values and keys; a lexing slip only makes a mutant more broken).
fn tokens(s: &[u8]) -> Vec<(usize, usize, Kind)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let start = i;
        if c == b'"' {
            i += 1;
            while i < s.len() && s[i] != b'"' {
                i += if s[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(s.len());
            out.push((start, i, Kind::Str));
        } else if c.is_ascii_digit() || c == b'-' {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || b".+-_".contains(&s[i])) {
                i += 1;
            }
            out.push((start, i, Kind::Num));
        } else if c.is_ascii_alphabetic() {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
                i += 1;
            }
            out.push((start, i, Kind::Word));
        } else {
            i += 1;
        }
    }
    out
}

/// Nesting far past any parser's recursion limit: arrays (JSON and TOML) or objects.
pub fn deep_nesting(rng: &mut Rng, toml: bool) -> String {
    let depth = *rng.pick(&[200usize, 2_000, 20_000]);
    match rng.below(2) {
        0 => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
        _ if toml => format!("{}1{}", "{a = ".repeat(depth), "}".repeat(depth)),
        _ => format!("{}1{}", "{\"a\": ".repeat(depth), "}".repeat(depth)),
    }
}

/// Applies one mutation to a JSON (`toml` false) or TOML (`toml` true) document and names it.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, toml: bool) -> &'static str {
    let toks = tokens(data);
    let lines: Vec<(usize, usize)> = line_spans(data);
    let replace = |data: &mut Vec<u8>, span: (usize, usize), with: &str| {
        data.splice(span.0..span.1, with.bytes());
    };
    match rng.below(10) {
        0 | 1 if !toks.is_empty() => {
            let nums: Vec<_> = toks.iter().filter(|t| t.2 == Kind::Num).collect();
            let &&(a, b, _) = if nums.is_empty() { &&toks[rng.below(toks.len())] } else { rng.pick(&nums) };
            let number = *rng.pick(BOUNDARY_NUMBERS);
            replace(data, (a, b), number);
            "boundary number"
        }
        2 if !toks.is_empty() => {
            let (a, b, _) = toks[rng.below(toks.len())];
            let value = *rng.pick(WRONG_TYPES);
            replace(data, (a, b), value);
            "wrong type"
        }
        3 if !toks.is_empty() => {
            let strs: Vec<_> = toks.iter().filter(|t| t.2 == Kind::Str).collect();
            let &&(a, b, _) = if strs.is_empty() { &&toks[rng.below(toks.len())] } else { rng.pick(&strs) };
            let s = if rng.chance(0.1) { "x".repeat(20_000) } else { rng.pick(ODD_STRINGS).to_string() };
            replace(data, (a, b), &format!("\"{s}\""));
            "odd string"
        }
        4 if !toks.is_empty() => {
            let (a, b, _) = toks[rng.below(toks.len())];
            let deep = deep_nesting(rng, toml);
            replace(data, (a, b), &deep);
            "deep nesting"
        }
        5 if !lines.is_empty() => {
            let (a, b) = *rng.pick(&lines);
            data.drain(a..b);
            "delete line"
        }
        6 if !lines.is_empty() => {
            let (a, b) = *rng.pick(&lines);
            let line = data[a..b].to_vec();
            data.splice(a..a, line);
            "duplicate line"
        }
        7 => {
            let (a, b) = (rng.below(data.len() + 1), rng.below(data.len() + 1));
            let junk =
                *rng.pick(&["{", "}", "[", "]", ",", ":", "=", "\"", "\n", "\r\n", "\u{feff}", "\0", "#", "'''"]);
            data.splice(a.min(b)..a.min(b), junk.bytes());
            "stray syntax"
        }
        _ => bytes::mutate(rng, data),
    }
}

/// The byte spans of the lines of `data`, each with its newline.
fn line_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &c) in data.iter().enumerate() {
        if c == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push((start, data.len()));
    }
    out
}

/// Mutates one random line of a JSON-lines file with [`mutate`] (and sometimes the file as a
/// whole), naming the mutation.
pub fn mutate_lines(rng: &mut Rng, data: &mut Vec<u8>) -> &'static str {
    let lines = line_spans(data);
    if lines.is_empty() || rng.chance(0.2) {
        return mutate(rng, data, false);
    }
    let (a, b) = *rng.pick(&lines);
    let mut line = data[a..b].to_vec();
    let what = mutate(rng, &mut line, false);
    data.splice(a..b, line);
    what
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_find_strings_numbers_and_words() {
        let t = tokens(br#"{"a": -1.5e3, "b\"c": true}"#);
        let kinds: Vec<_> = t.iter().map(|t| t.2).collect();
        assert_eq!(kinds, [Kind::Str, Kind::Num, Kind::Str, Kind::Word]);
        assert_eq!(t[1].0..t[1].1, 6..12);
    }

    #[test]
    fn every_mutation_changes_a_nonempty_document_for_some_seed() {
        let doc = br#"{"steps": 10, "name": "x"}"#.to_vec();
        let changed = (0..64).filter(|&s| {
            let mut d = doc.clone();
            mutate(&mut Rng::new(s), &mut d, false);
            d != doc
        });
        assert!(changed.count() > 48);
    }
}
