//! Word tokens for the text task (`tokens = "words"`): a text's words are its maximal runs of
//! alphanumeric characters, lower-cased; the vocabulary is the `size` most frequent words of
//! the train split that occur at least [`MIN_COUNT`] times (ties by first appearance), so no
//! held-out text shapes it. Id [`PAD`] pads, id [`UNKNOWN`] stands for every other word, and
//! the vocabulary's words follow from id 2 in order of frequency.

use std::collections::HashMap;

/// The padding id.
pub const PAD: u32 = 0;
/// The id of a word outside the vocabulary.
pub const UNKNOWN: u32 = 1;
/// Occurrences in the train split a word needs to get an id.
pub const MIN_COUNT: usize = 2;

/// The words of `text`, lower-cased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// A vocabulary of words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    ids: HashMap<String, u32>,
    words: Vec<String>,
}

impl Vocabulary {
    /// The vocabulary of `texts` (the train split), at most `size` words.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, size: usize) -> Vocabulary {
        // Each word's count and the order of its first appearance.
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for text in texts {
            for w in words(text) {
                let n = counts.len();
                counts.entry(w).or_insert((0, n)).0 += 1;
            }
        }
        let mut ranked: Vec<(String, (usize, usize))> =
            counts.into_iter().filter(|(_, (c, _))| *c >= MIN_COUNT).collect();
        ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
        ranked.truncate(size);
        let words: Vec<String> = ranked.into_iter().map(|(w, _)| w).collect();
        let ids = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32 + 2)).collect();
        Vocabulary { ids, words }
    }

    /// Token ids: [`PAD`], [`UNKNOWN`] and the words.
    pub fn len(&self) -> usize {
        self.words.len() + 2
    }

    /// Whether the vocabulary has no words (only the two special ids).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The ids of the first `max_len` words of `text`.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        words(text).take(max_len).map(|w| self.ids.get(&w).copied().unwrap_or(UNKNOWN)).collect()
    }

    /// The word of `id` (`<pad>`, `<unk>` for the special ids, `?` past the end).
    pub fn word(&self, id: u32) -> &str {
        match id {
            PAD => "<pad>",
            UNKNOWN => "<unk>",
            _ => self.words.get(id as usize - 2).map_or("?", String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_alphanumeric_runs() {
        let w: Vec<String> = words("Blair's U.K. plan: £2bn, NOW!").collect();
        assert_eq!(w, ["blair", "s", "u", "k", "plan", "2bn", "now"]);
    }

    #[test]
    fn the_vocabulary_ranks_by_count_then_first_appearance_and_drops_rare_words() {
        let v = Vocabulary::build(["b a c a", "c b d", "a e e"], 10);
        // a: 3, b: 2, c: 2 (b first), e: 2; d: 1 is dropped.
        assert_eq!(v.len(), 6);
        assert_eq!((v.word(2), v.word(3), v.word(4), v.word(5)), ("a", "b", "c", "e"));
        assert_eq!(v.encode("A d C zebra e", 4), [2, UNKNOWN, 4, UNKNOWN]);
        assert_eq!(Vocabulary::build(["b a c a", "c b d", "a e e"], 2).len(), 4);
        assert_eq!((v.word(PAD), v.word(UNKNOWN), v.word(99)), ("<pad>", "<unk>", "?"));
    }
}
