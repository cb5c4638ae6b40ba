//! What each data set loads to through attune-data, checked by `cargo xtask data` after the
//! files are verified: the one place the expected counts are pinned.

use anyhow::Result;
use attune_data::{DataDir, Dataset, Images, bbc_news, digits, fashion_mnist, mnist_json, movielens};

/// What each data set loads to through attune-data: the lines `cargo xtask data` prints once
/// the files are verified. Pinned beside the package sums because a verified file can still
/// load wrongly (a loader that drops rows, a changed split or duplicate rule), and the
/// experiments' numbers rest on these counts (docs/data.md, "What the loaders return").
pub const EXPECTED_COUNTS: [(Dataset, &str); 5] = [
    (Dataset::FashionMnist, "fashion-mnist: 60000 train + 10000 test 28x28, 10 classes"),
    (Dataset::Mnist, "mnist: 10000 images 28x28 (9000 train + 1000 held out), 10 classes"),
    (Dataset::MovieLens100k, "ml-100k: 943 users, 1682 items, 100000 interactions, at least 20 per user"),
    (
        Dataset::BbcNews,
        "bbc-news: 2225 files, 2127 distinct, 5 classes (98 duplicates dropped, 1 file decoded lossily)",
    ),
    (Dataset::Digits, "digits: 1797 images 8x8, 10 classes"),
];

/// Loads `dataset` from the cache and describes it in one line (the form of [`EXPECTED_COUNTS`]).
pub fn describe(dir: &DataDir, dataset: Dataset) -> Result<String> {
    let classes = |images: &Images| images.class_counts().iter().filter(|&&c| c > 0).count();
    Ok(match dataset {
        Dataset::FashionMnist => {
            let train = fashion_mnist::load(dir, fashion_mnist::Split::Train)?;
            let test = fashion_mnist::load(dir, fashion_mnist::Split::Test)?;
            format!(
                "fashion-mnist: {} train + {} test {}x{}, {} classes",
                train.len(),
                test.len(),
                train.rows,
                train.cols,
                classes(&train)
            )
        }
        Dataset::Mnist => {
            let images = mnist_json::load(dir)?;
            let split = mnist_json::split(&images);
            format!(
                "mnist: {} images {}x{} ({} train + {} held out), {} classes",
                images.len(),
                images.rows,
                images.cols,
                split.train.len(),
                split.held_out.len(),
                classes(&images)
            )
        }
        Dataset::MovieLens100k => {
            let data = movielens::load(dir)?;
            let fewest = data.per_user_counts().into_iter().min().unwrap_or(0);
            format!(
                "ml-100k: {} users, {} items, {} interactions, at least {fewest} per user",
                data.num_users(),
                data.num_items(),
                data.interactions.len()
            )
        }
        Dataset::BbcNews => {
            let corpus = bbc_news::load(dir)?;
            format!(
                "bbc-news: {} files, {} distinct, {} classes ({} duplicates dropped, {} file decoded lossily)",
                corpus.files_read,
                corpus.documents.len(),
                corpus.classes.len(),
                corpus.duplicates_dropped.len(),
                corpus.lossy_decoded.len()
            )
        }
        Dataset::Digits => {
            let images = digits::load(dir)?;
            format!("digits: {} images {}x{}, {} classes", images.len(), images.rows, images.cols, classes(&images))
        }
    })
}

/// The pinned line of `dataset` (empty if it has none, which never matches a loaded line).
pub fn expected(dataset: Dataset) -> &'static str {
    EXPECTED_COUNTS.iter().find(|e| e.0 == dataset).map(|e| e.1).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_set_has_one_pinned_line_starting_with_its_name() {
        for d in Dataset::ALL {
            assert_eq!(EXPECTED_COUNTS.iter().filter(|e| e.0 == d).count(), 1, "{}", d.name());
            assert!(expected(d).starts_with(&format!("{}: ", d.name())), "{}", expected(d));
        }
    }
}
