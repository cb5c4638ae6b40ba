//! The text loaders (MovieLens-100K's RecBole `.inter` file, BBC News' tree of articles) on
//! small files the tests write: good files, truncated and corrupt ones, missing ones.

mod common;

use std::path::{Path, PathBuf};

use attune_data::bbc_news::{self, DroppedDuplicate};
use attune_data::movielens::{self, Interaction};
use attune_data::{DataError, Dataset};
use common::{assert_missing, assert_names, put, temp_cache};

const HEADER: &str = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n";

/// Made-up ratings (never MovieLens rows, whose licence forbids committing them): user u1 has
/// three, two in the same second; u2, u3 and u4 have one each.
const INTER: &str = "u1\ti10\t3\t900000200\n\
                     u2\ti20\t3\t900000300\n\
                     u1\ti30\t1\t900000100\n\
                     u3\ti30\t4.5\t900000100.0\n\
                     u1\ti40\t2\t900000200\n\
                     u4\ti50\t5\t100\n";

fn inter_file() -> String {
    format!("{HEADER}{INTER}")
}

#[test]
fn movielens_dense_ids_follow_first_appearance_and_file_order_is_kept() {
    let (_tmp, dir) = temp_cache();
    put(&dir, Dataset::MovieLens100k, movielens::INTER_FILE, inter_file().as_bytes());
    let data = movielens::load(&dir).unwrap();
    assert_eq!(data.user_tokens, ["u1", "u2", "u3", "u4"]);
    assert_eq!(data.item_tokens, ["i10", "i20", "i30", "i40", "i50"]);
    assert_eq!((data.num_users(), data.num_items(), data.interactions.len()), (4, 5, 6));
    assert_eq!(data.interactions[3], Interaction { user: 2, item: 2, rating: 4.5, timestamp: 900_000_100 });
    let users: Vec<u32> = data.interactions.iter().map(|i| i.user).collect();
    assert_eq!(users, [0, 1, 0, 2, 0, 3]);
}

#[test]
fn movielens_keeps_single_interaction_users_and_reports_them() {
    let data = movielens::parse_inter(inter_file().as_bytes(), Path::new("x.inter")).unwrap();
    assert_eq!(data.per_user_counts(), [3, 1, 1, 1]);
    assert_eq!(data.users_with_fewer_than(3), [1, 2, 3]);
    assert_eq!(data.users_with_fewer_than(1), Vec::<u32>::new());
    let sequences = data.sequences();
    // User u1: i30 (earliest), then i10 and i40 in the same second, in file order.
    assert_eq!(sequences[0], [2, 0, 3]);
    assert_eq!(sequences[1..], [vec![1], vec![2], vec![4]]);
    // Swapping the two same-second lines swaps them in the sequence: ties follow the file.
    let swapped =
        inter_file().replace("u1\ti10\t3\t900000200\n", "").replace("u4\ti50", "u1\ti10\t3\t900000200\nu4\ti50");
    let data = movielens::parse_inter(swapped.as_bytes(), Path::new("x.inter")).unwrap();
    let u1 = data.user_tokens.iter().position(|t| t == "u1").unwrap();
    let names: Vec<&str> = data.sequences()[u1].iter().map(|&i| data.item_tokens[i as usize].as_str()).collect();
    assert_eq!(names, ["i30", "i40", "i10"]);
}

#[test]
fn movielens_reads_columns_by_name_in_any_order() {
    let text = "item_id:token\textra:float\tuser_id:token\ttimestamp:float\trating:float\n\
                10\t0.5\tu1\t5\t2\n11\t0.5\tu2\t4\t3\n";
    let data = movielens::parse_inter(text.as_bytes(), Path::new("x.inter")).unwrap();
    assert_eq!(data.user_tokens, ["u1", "u2"]);
    assert_eq!(data.interactions[1], Interaction { user: 1, item: 1, rating: 3.0, timestamp: 4 });
}

#[test]
fn movielens_truncated_anywhere_is_an_error_or_a_prefix_of_the_file() {
    let full_text = inter_file();
    let path = Path::new("cut.inter");
    let full = movielens::parse_inter(full_text.as_bytes(), path).unwrap().interactions;
    for cut in 0..full_text.len() {
        match movielens::parse_inter(&full_text.as_bytes()[..cut], path) {
            Err(err) => assert_names(&err, path),
            // A cut inside the last number leaves a shorter number: only the last line may differ.
            Ok(data) => {
                let n = data.interactions.len();
                assert!(n <= full.len() && data.interactions[..n.saturating_sub(1)] == full[..n.saturating_sub(1)]);
            }
        }
    }
    let cut_line = &full_text[..full_text.len() - 8];
    let err = movielens::parse_inter(cut_line.as_bytes(), path).unwrap_err();
    assert!(err.to_string().contains("line 7: 2 tab-separated fields, the header has 4"), "{err}");
    let err = movielens::parse_inter(b"", path).unwrap_err();
    assert!(err.to_string().contains("the file is empty; it needs a header line"), "{err}");
}

#[test]
fn movielens_corrupt_files_are_errors_naming_the_line_and_value() {
    let path = Path::new("bad.inter");
    let good = inter_file();
    let cases: [(&str, Vec<u8>, &str); 8] = [
        ("rating x", good.replacen("\t3\t", "\tx\t", 1).into_bytes(), "line 2: rating \"x\" is not a finite number"),
        ("rating NaN", good.replacen("\t3\t", "\tNaN\t", 1).into_bytes(), "rating \"NaN\" is not a finite number"),
        ("fractional time", good.replacen("\t100", "\t100.5", 1).into_bytes(), "timestamp \"100.5\" is not a whole"),
        (
            "no timestamp",
            good.replacen("\ttimestamp:float", "\ttime:float", 1).into_bytes(),
            "no column `timestamp:float`",
        ),
        (
            "wrong type",
            good.replacen("rating:float", "rating:token", 1).into_bytes(),
            "has type `token`, expected `float`",
        ),
        ("empty user", good.replacen("u4\ti50", "\ti50", 1).into_bytes(), "line 7: an empty user or item token"),
        ("extra field", good.replacen("\t100", "\t100\t1", 1).into_bytes(), "5 tab-separated fields"),
        ("not UTF-8", [good.as_bytes(), b"8\t1\t2\t\xff3\n"].concat(), "not UTF-8 text"),
    ];
    for (what, bytes, expected) in cases {
        let err = movielens::parse_inter(&bytes, path).unwrap_err();
        assert!(err.to_string().contains(expected), "{what}: {err}");
        assert_names(&err, path);
    }
}

#[test]
fn movielens_missing_file_names_the_fetch_command() {
    let (_tmp, dir) = temp_cache();
    assert_missing(&movielens::load(&dir).unwrap_err(), Dataset::MovieLens100k, movielens::INTER_FILE);
}

/// Writes `files` (path relative to the corpus root, bytes) under `root`.
fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (relative, bytes) in files {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

#[test]
fn bbc_news_drops_exact_duplicates_keeping_the_first_sorted_path_and_decodes_lossily() {
    let (_tmp, dir) = temp_cache();
    let root = dir.dataset_dir(Dataset::BbcNews);
    write_tree(
        &root,
        &[
            ("sport/002.txt", b"Goal\n"),
            ("sport/001.txt", b"Text B"),
            ("sport/notes.md", b"not an article"),
            ("business/003.txt", b"Shares rise\n\nText A"),
            ("business/001.txt", b"Shares rise\n\nText A"),
            ("business/002.txt", b"Text B"),
            ("entertainment/001.txt", b"Caf\xe9 owner wins \xa35"),
            ("README.txt", b"not in a class"),
        ],
    );
    let corpus = bbc_news::load(&dir).unwrap();
    assert_eq!(corpus.classes, ["business", "entertainment", "sport"]);
    assert_eq!(corpus.files_read, 6);
    let kept: Vec<(&Path, u8)> =
        corpus.documents.iter().map(|d| (d.path.strip_prefix(&root).unwrap(), d.label)).collect();
    let want: Vec<(PathBuf, u8)> = [("business/001.txt", 0), ("business/002.txt", 0), ("entertainment/001.txt", 1)]
        .into_iter()
        .chain([("sport/002.txt", 2)])
        .map(|(p, l)| (PathBuf::from(p), l))
        .collect();
    assert_eq!(kept, want.iter().map(|(p, l)| (p.as_path(), *l)).collect::<Vec<_>>());
    assert_eq!(
        corpus.duplicates_dropped,
        [
            DroppedDuplicate { path: root.join("business/003.txt"), same_as: root.join("business/001.txt") },
            DroppedDuplicate { path: root.join("sport/001.txt"), same_as: root.join("business/002.txt") },
        ]
    );
    assert_eq!(corpus.lossy_decoded, [root.join("entertainment/001.txt")]);
    assert_eq!(corpus.documents[2].text, "Caf\u{fffd} owner wins \u{fffd}5");
    assert_eq!(corpus.documents[0].text, "Shares rise\n\nText A");
}

#[test]
fn bbc_news_truncated_article_inside_a_character_is_decoded_lossily() {
    let tmp = tempfile::tempdir().unwrap();
    let pound = "Price \u{a3}5".as_bytes();
    write_tree(tmp.path(), &[("tech/001.txt", &pound[..7]), ("tech/002.txt", b"")]);
    let corpus = bbc_news::load_tree(tmp.path()).unwrap();
    assert_eq!(corpus.documents[0].text, "Price \u{fffd}");
    assert_eq!(corpus.lossy_decoded, [tmp.path().join("tech/001.txt")]);
    assert_eq!(corpus.documents[1].text, "", "an empty file is an empty article");
}

#[test]
fn bbc_news_missing_or_misshapen_trees_are_errors() {
    let (_tmp, dir) = temp_cache();
    let err = bbc_news::load(&dir).unwrap_err();
    assert_missing(&err, Dataset::BbcNews, "bbc-news");

    let root = dir.dataset_dir(Dataset::BbcNews);
    write_tree(&root, &[("README.txt", b"x")]);
    let err = bbc_news::load(&dir).unwrap_err();
    assert!(matches!(err, DataError::Mismatch { .. }) && err.to_string().contains("has no class directories"), "{err}");

    write_tree(&root, &[("business/001.txt", b"a"), ("politics/notes.md", b"b")]);
    std::fs::create_dir_all(root.join("tech")).unwrap();
    let err = bbc_news::load(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("politics") && msg.contains("holds no .txt files"), "{msg}");
}
