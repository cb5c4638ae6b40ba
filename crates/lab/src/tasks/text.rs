//! Classification of the texts in a user JSONL file.
//!
//! **Format.** One JSON object per line, `{"text": "...", "label": ...}`, where the label is a
//! string or an integer (`"positive"`, `3`; the string `"3"` and the integer `3` are different
//! labels). Blank lines are skipped; other fields are ignored. Errors name the file and the
//! 1-based line.
//!
//! **Classes.** Class ids index the sorted unique labels of the training file (integers, in
//! numeric order, before strings, in byte order), unless the config lists `classes`, which then
//! fixes the mapping. [`super::Task::config`] returns the config with `classes` filled in, so a
//! run that saves it evaluates with the same mapping; a label of the test file that is not
//! a class is an error.
//!
//! **Built-in data.** `dataset = "bbc-news"` reads BBC News from the cache
//! (`attune_data::bbc_news`: 2,127 distinct articles, duplicates dropped, labels the class
//! directory names) instead of a file.
//!
//! **Tokens.** `bytes` (the default): a text becomes its UTF-8 bytes (ids 0..=255), truncated
//! to `max_len`; [`PAD_ID`] = 256 pads rows to the batch's longest, so the vocabulary has
//! [`VOCAB_SIZE`] = 257 ids. `words`: lower-cased words looked up in a vocabulary built from
//! the train split alone ([`super::words`]; id 0 pads, id 1 is any other word). Empty texts
//! are rejected, and so is a text with no word under `words`: a row with no tokens has
//! nothing to pool.
//!
//! **Splits.** With `folds = k`, the texts are cut into k stratified folds by position (within
//! each class, the i-th text in source order goes to fold `i % k`; no randomness, so a peer
//! rebuilds them exactly) and fold `fold` is the test split; the other folds are the training
//! texts. The training texts are shuffled by the seed, the first `round(n * valid_fraction)`
//! (at least 1 when the fraction is positive) become the valid split and the rest the
//! train split. The optional `test_path` file is the test split, in file order. Train batch `i`
//! of size `B` holds positions `i B .. i B + B` of an endless stream that visits the train
//! examples in a fresh seeded order every epoch; valid and test batches cover their examples
//! once, in order, the last batch short when `B` does not divide the split.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{TextConfig, TextDataset, TextTokens};
use super::rng::{Rng, tag};
use super::words::{self, Vocabulary};
use super::{Batch, ClassBatch, Split, Task, TaskConfig, TaskError};

const NAME: &str = "text";
const TAG: u64 = tag(b"text");

/// The padding token id (one past the byte ids).
pub const PAD_ID: u32 = 256;

/// Token ids of the text task: the 256 byte values and [`PAD_ID`].
pub const VOCAB_SIZE: usize = 257;

/// A class label as written in the data file: an integer or a string.
///
/// Ordered integers first (numerically), then strings (by bytes), which is the order of the
/// class ids when the config does not list `classes`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Label {
    /// An integer label, e.g. `3`.
    Int(i64),
    /// A string label, e.g. `"positive"`.
    Str(String),
}

impl Label {
    /// The label as plain text: a string without quotes, an integer's digits (for plots and
    /// listings, where the two kinds need not be told apart).
    pub fn plain(&self) -> String {
        match self {
            Label::Int(i) => i.to_string(),
            Label::Str(s) => s.clone(),
        }
    }
}

impl fmt::Display for Label {
    /// The label as JSON (`3`, `"positive"`), so the two kinds stay distinguishable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Int(i) => write!(f, "{i}"),
            Label::Str(s) => write!(f, "{}", Value::String(s.clone())),
        }
    }
}

/// One example: its tokens (already truncated) and class id.
#[derive(Debug, Clone)]
struct Example {
    tokens: Vec<u32>,
    class: usize,
}

/// A text and its class id, before tokenisation.
struct Labelled {
    text: String,
    class: usize,
}

/// One parsed line of a data file.
struct Line {
    number: usize,
    text: String,
    label: Label,
}

/// The text classification task; build it with [`super::build`] or [`TextClassification::new`].
#[derive(Debug, Clone)]
pub struct TextClassification {
    /// With `classes` filled in.
    config: TextConfig,
    seed: u64,
    train: Vec<Example>,
    valid: Vec<Example>,
    test: Vec<Example>,
    /// The vocabulary of `tokens = "words"`.
    vocab: Option<Vocabulary>,
}

impl TextClassification {
    /// Reads and checks the files of `config` and splits them with `seed` (see the module
    /// docs).
    pub fn new(mut config: TextConfig, seed: u64) -> Result<TextClassification, TaskError> {
        let err = |msg: String| Err(TaskError::config(NAME, msg));
        if config.max_len == 0 {
            return err("max_len is 0; texts need at least one token (256 is the default)".into());
        }
        let f = config.valid_fraction;
        if !(f.is_finite() && (0.0..1.0).contains(&f)) {
            return err(format!("valid_fraction {f} must be in [0, 1) (0.1 is the default)"));
        }
        let p = config.token_dropout;
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return err(format!("token_dropout {p} must be in [0, 1) (0.1 to 0.3 is usual)"));
        }
        if config.tokens == TextTokens::Words && config.vocab_size == 0 {
            return err("vocab_size is 0; a word vocabulary needs at least one word (20000 is the default)".into());
        }
        let fold = match (config.folds, config.fold) {
            (Some(k), _) if k < 2 => return err(format!("folds {k}: cross-validation needs at least 2 folds")),
            (Some(k), Some(i)) if i >= k => return err(format!("fold {i} is not one of the {k} folds 0..{k}")),
            (Some(_), _) if config.test_path.is_some() => {
                return err("folds and test_path both choose the test split; give one".into());
            }
            (Some(k), i) => Some((k, i.unwrap_or(0))),
            (None, Some(i)) => return err(format!("fold {i} needs folds (e.g. folds = 5)")),
            (None, None) => None,
        };
        let (source, lines) = match (&config.path, config.dataset) {
            (Some(path), None) => (path.clone(), read_lines(path)?),
            (None, Some(TextDataset::BbcNews)) => bbc_news_lines()?,
            (Some(_), Some(_)) => return err("give either path (a JSONL file) or dataset, not both".into()),
            (None, None) => {
                return err("needs path (a JSONL file of {\"text\", \"label\"} lines) or dataset (bbc-news)".into());
            }
        };
        let classes = match &config.classes {
            Some(given) => check_classes(given)?,
            None => classes_of(&source, &lines)?,
        };
        let mut all = labelled(&source, lines, &classes)?;
        let mut test = Vec::new();
        if let Some((k, i)) = fold {
            let folds = stratified_folds(&all.iter().map(|t| t.class).collect::<Vec<_>>(), k);
            let (held, kept): (Vec<_>, Vec<_>) = all.into_iter().zip(folds).partition(|(_, f)| *f == i);
            test = held.into_iter().map(|(t, _)| t).collect();
            all = kept.into_iter().map(|(t, _)| t).collect();
        }

        let n = all.len();
        let n_valid = if f == 0.0 { 0 } else { ((n as f64 * f).round() as usize).max(1) };
        if n_valid >= n {
            return err(format!(
                "{} has {n} examples and valid_fraction {f} holds out {n_valid}, leaving none to train on; \
                 add examples or lower valid_fraction",
                source.display()
            ));
        }
        Rng::from_key(&[seed, TAG, tag(b"split")]).shuffle(&mut all);
        let train = all.split_off(n_valid);
        let valid = all;
        if let Some(path) = &config.test_path {
            test = labelled(path, read_lines(path)?, &classes)?;
        }
        let vocab = (config.tokens == TextTokens::Words)
            .then(|| Vocabulary::build(train.iter().map(|t| t.text.as_str()), config.vocab_size));
        let encode = |set: Vec<Labelled>, what: &str| -> Result<Vec<Example>, TaskError> {
            set.into_iter()
                .map(|t| {
                    let tokens: Vec<u32> = match &vocab {
                        Some(v) => v.encode(&t.text, config.max_len),
                        None => t.text.bytes().take(config.max_len).map(u32::from).collect(),
                    };
                    if tokens.is_empty() {
                        let start: String = t.text.chars().take(40).collect();
                        return Err(TaskError::config(
                            NAME,
                            format!(
                                "a {what} text has no words to read ({start:?}); use tokens = \"bytes\" or drop it"
                            ),
                        ));
                    }
                    Ok(Example { tokens, class: t.class })
                })
                .collect()
        };
        let (train, valid, test) = (encode(train, "train")?, encode(valid, "valid")?, encode(test, "test")?);
        config.classes = Some(classes);
        Ok(TextClassification { config, seed, train, valid, test, vocab })
    }

    /// The label of each class id.
    pub fn classes(&self) -> &[Label] {
        self.config.classes.as_deref().unwrap_or(&[])
    }

    fn split(&self, split: Split) -> &[Example] {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// The examples of train batch `index`: positions of an endless stream in which epoch `e`
    /// visits the train examples in the order of a permutation keyed by `(seed, e)`; with
    /// `token_dropout` p, each token of the example at stream position `g` is dropped with
    /// probability p, drawn from a stream keyed by `(seed, g)` (one token always stays).
    fn train_rows(&self, first: u64, batch_size: usize) -> Vec<Example> {
        let n = self.train.len() as u64;
        let mut perm: Option<(u64, Vec<usize>)> = None;
        let mut rows = Vec::with_capacity(batch_size);
        for g in first..first + batch_size as u64 {
            let (epoch, offset) = (g / n, (g % n) as usize);
            if perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let p = Rng::from_key(&[self.seed, TAG, tag(b"epoch"), epoch]).permutation(self.train.len());
                perm = Some((epoch, p));
            }
            if let Some(ex) = perm.as_ref().and_then(|(_, p)| p.get(offset)).and_then(|&i| self.train.get(i)) {
                let p = self.config.token_dropout;
                if p > 0.0 {
                    let mut rng = Rng::from_key(&[self.seed, TAG, tag(b"token_dropout"), g]);
                    let mut tokens: Vec<u32> = ex.tokens.iter().copied().filter(|_| !rng.chance(p)).collect();
                    if tokens.is_empty() {
                        tokens.push(ex.tokens[0]);
                    }
                    rows.push(Example { tokens, class: ex.class });
                } else {
                    rows.push(ex.clone());
                }
            }
        }
        rows
    }
}

/// The lines of `path` that hold examples, parsed, with their 1-based numbers.
fn read_lines(path: &Path) -> Result<Vec<Line>, TaskError> {
    let content = std::fs::read_to_string(path).map_err(|source| TaskError::Io { path: path.to_owned(), source })?;
    let content = content.strip_prefix('\u{feff}').unwrap_or(&content);
    let mut out = Vec::new();
    for (i, raw) in content.split('\n').enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        out.push(parse_line(path, i + 1, raw)?);
    }
    if out.is_empty() {
        return Err(TaskError::EmptyFile { path: path.to_owned() });
    }
    Ok(out)
}

/// Parses one non-blank line into its text and label.
fn parse_line(path: &Path, number: usize, raw: &str) -> Result<Line, TaskError> {
    let bad = |msg: String| TaskError::BadLine { path: path.to_owned(), line: number, msg };
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        bad(format!(
            "not valid JSON ({e}); each line must be one object like {{\"text\": \"...\", \"label\": \"...\"}}"
        ))
    })?;
    let Value::Object(mut obj) = value else {
        return Err(bad(format!("expected a JSON object with \"text\" and \"label\", found {}", kind(&value))));
    };
    let text = match obj.remove("text") {
        Some(Value::String(s)) if s.is_empty() => {
            return Err(bad("field \"text\" is empty; every example needs at least one character".into()));
        }
        Some(Value::String(s)) => s,
        Some(other) => return Err(bad(format!("field \"text\" must be a string, found {}", kind(&other)))),
        None => return Err(bad("missing field \"text\" (the string to classify)".into())),
    };
    let label = match obj.remove("label") {
        Some(Value::String(s)) => Label::Str(s),
        Some(Value::Number(num)) => match num.as_i64() {
            Some(i) => Label::Int(i),
            None => {
                return Err(bad(format!(
                    "field \"label\" is {num}; a numeric label must be an integer in the i64 range (or use a string)"
                )));
            }
        },
        Some(other) => {
            return Err(bad(format!("field \"label\" must be a string or an integer, found {}", kind(&other))));
        }
        None => return Err(bad("missing field \"label\" (a string or an integer)".into())),
    };
    Ok(Line { number, text, label })
}

/// A short description of a JSON value's kind for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks classes given in the config: at least two, no repeats.
fn check_classes(given: &[Label]) -> Result<Vec<Label>, TaskError> {
    if given.len() < 2 {
        return Err(TaskError::config(
            NAME,
            format!("classes lists {} label(s); classification needs at least two", given.len()),
        ));
    }
    for (i, a) in given.iter().enumerate() {
        if given[..i].contains(a) {
            return Err(TaskError::config(NAME, format!("classes lists {a} twice; each label must appear once")));
        }
    }
    Ok(given.to_vec())
}

/// The sorted unique labels of the training file; errors when there is only one.
fn classes_of(path: &Path, lines: &[Line]) -> Result<Vec<Label>, TaskError> {
    let mut labels: Vec<Label> = lines.iter().map(|l| l.label.clone()).collect();
    labels.sort();
    labels.dedup();
    match labels.as_slice() {
        [only] => Err(TaskError::SingleClass { path: path.to_owned(), label: only.to_string() }),
        _ => Ok(labels),
    }
}

/// Maps the labels of `lines` to class ids; a label outside `classes` is an error naming its
/// line.
fn labelled(path: &Path, lines: Vec<Line>, classes: &[Label]) -> Result<Vec<Labelled>, TaskError> {
    lines
        .into_iter()
        .map(|line| {
            let class = classes.iter().position(|c| *c == line.label).ok_or_else(|| TaskError::BadLine {
                path: path.to_owned(),
                line: line.number,
                msg: format!(
                    "label {} is not one of the classes [{}]; classes come from the training file or the config's \"classes\"",
                    line.label,
                    classes.iter().map(Label::to_string).collect::<Vec<_>>().join(", ")
                ),
            })?;
            Ok(Labelled { text: line.text, class })
        })
        .collect()
}

/// The fold of each text of a `k`-fold stratified split by position: within each class, the
/// i-th text (in `classes`' order) goes to fold `i % k`.
pub fn stratified_folds(classes: &[usize], k: usize) -> Vec<usize> {
    let mut seen: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    classes
        .iter()
        .map(|c| {
            let n = seen.entry(*c).or_insert(0);
            *n += 1;
            (*n - 1) % k.max(1)
        })
        .collect()
}

/// Where each text of the task's source lands in a `folds`-fold split: `(name, label, fold)`
/// in source order, the name being the article's path under the data set's directory for a
/// built-in data set, `line N` for a JSONL file. What `folds.json` lists for peers.
pub fn fold_listing(config: &TextConfig, folds: usize) -> Result<Vec<(String, String, usize)>, TaskError> {
    let (names, labels): (Vec<String>, Vec<Label>) = match (&config.path, config.dataset) {
        (_, Some(TextDataset::BbcNews)) => {
            let dir = attune_data::DataDir::from_env();
            let root = dir.dataset_dir(attune_data::Dataset::BbcNews);
            let news = attune_data::bbc_news::load(&dir)?;
            news.documents
                .iter()
                .map(|d| {
                    let name = d.path.strip_prefix(&root).unwrap_or(&d.path).display().to_string();
                    (name, Label::Str(news.classes.get(usize::from(d.label)).cloned().unwrap_or_default()))
                })
                .unzip()
        }
        (Some(path), None) => read_lines(path)?.into_iter().map(|l| (format!("line {}", l.number), l.label)).unzip(),
        (None, None) => return Err(TaskError::config(NAME, "needs path or dataset")),
    };
    let mut order = labels.clone();
    order.sort();
    order.dedup();
    let ids: Vec<usize> = labels.iter().map(|l| order.binary_search(l).unwrap_or(0)).collect();
    let folds = stratified_folds(&ids, folds);
    Ok(names.into_iter().zip(labels).zip(folds).map(|((n, l), f)| (n, l.plain(), f)).collect())
}

/// BBC News from the cache as lines labelled by class name, in the loader's sorted order (the
/// "line number" of an article is its 1-based position), and the cache directory to name in
/// messages.
fn bbc_news_lines() -> Result<(std::path::PathBuf, Vec<Line>), TaskError> {
    let dir = attune_data::DataDir::from_env();
    let news = attune_data::bbc_news::load(&dir)?;
    let lines = news
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| Line {
            number: i + 1,
            text: d.text,
            label: Label::Str(news.classes.get(usize::from(d.label)).cloned().unwrap_or_default()),
        })
        .collect();
    Ok((dir.dataset_dir(attune_data::Dataset::BbcNews), lines))
}

/// Pads `rows` with `pad` into a [`ClassBatch`] as long as its longest row.
fn class_batch(rows: &[&Example], pad: u32) -> ClassBatch {
    let seq_len = rows.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
    let mut tokens = vec![pad; rows.len() * seq_len];
    for (row, ex) in tokens.chunks_exact_mut(seq_len.max(1)).zip(rows) {
        row[..ex.tokens.len()].copy_from_slice(&ex.tokens);
    }
    ClassBatch {
        tokens,
        lengths: rows.iter().map(|e| e.tokens.len()).collect(),
        labels: rows.iter().map(|e| e.class as i64).collect(),
        batch: rows.len(),
        seq_len,
    }
}

impl Task for TextClassification {
    fn name(&self) -> &'static str {
        NAME
    }

    fn vocab_size(&self) -> usize {
        self.vocab.as_ref().map_or(VOCAB_SIZE, Vocabulary::len)
    }

    fn token_label(&self, token: u32) -> String {
        match &self.vocab {
            Some(v) => v.word(token).to_string(),
            None => crate::plots::glyph(token),
        }
    }

    fn seq_len(&self) -> usize {
        self.config.max_len
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.classes().len())
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::TextClassification(self.config.clone())
    }

    fn train_size(&self) -> Option<usize> {
        Some(self.train.len())
    }

    fn split_size(&self, split: Split) -> Option<usize> {
        match split {
            Split::Train => None,
            Split::Valid | Split::Test => Some(self.split(split).len()),
        }
    }

    fn batch(&self, split: Split, index: u64, batch_size: usize) -> Result<Batch, TaskError> {
        let bad = |msg: String| Err(TaskError::BadBatch { task: NAME, split, msg });
        if batch_size == 0 {
            return bad("batch_size is 0; ask for at least one row".into());
        }
        let examples = self.split(split);
        if examples.is_empty() {
            return match split {
                Split::Valid => {
                    bad("the valid split is empty because valid_fraction is 0; raise it to evaluate".into())
                }
                _ => {
                    bad("there is no test split; set test_path in the task config to a JSONL test file, or folds"
                        .into())
                }
            };
        }
        let Some(first) = index.checked_add(1).and_then(|n| n.checked_mul(batch_size as u64)) else {
            return bad(format!("batch index {index} times batch_size {batch_size} overflows u64"));
        };
        let first = first - batch_size as u64;
        let dropped;
        let rows: Vec<&Example> = match split {
            Split::Train => {
                dropped = self.train_rows(first, batch_size);
                dropped.iter().collect()
            }
            Split::Valid | Split::Test => {
                let n = examples.len();
                let batches = n.div_ceil(batch_size);
                match usize::try_from(first).ok().and_then(|s| examples.get(s..(s + batch_size).min(n))) {
                    Some(rows) if !rows.is_empty() => rows.iter().collect(),
                    _ => {
                        return bad(format!(
                            "batch index {index} is past the end: the {split} split has {n} examples, \
                             {batches} batch(es) of {batch_size} (indices 0..{batches})"
                        ));
                    }
                }
            }
        };
        let pad = if self.vocab.is_some() { words::PAD } else { PAD_ID };
        Ok(Batch::Class(class_batch(&rows, pad)))
    }
}
