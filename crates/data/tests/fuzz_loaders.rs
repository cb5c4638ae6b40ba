//! Fuzz tests of every attune-data loader (docs/testing.md, "Fuzz tests of loaders"): seeded
//! mutants of a valid small file each load or fail with an error naming the file, never a
//! panic, and never one allocation beyond a small multiple of the file's size.

mod common;

use std::path::Path;

use attune_data::{bbc_news, digits, idx, mnist_json, movielens};
use attune_fuzzkit::{Fuzz, PeakAlloc, Rng, Tally, bytes, text};
use common::{gzip, idx_bytes};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Runs `fuzz` with each mutant written to a fresh file named `file` and read back by `load`;
/// every error must name the file, and no mutant may panic or over-allocate.
fn fuzz_file<T, E: std::fmt::Display>(
    fuzz: Fuzz,
    file: &str,
    mutate: impl FnMut(&mut Rng) -> (Vec<u8>, &'static str),
    load: impl Fn(&Path) -> Result<T, E>,
) -> Tally {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    let tally = fuzz.errors_name(file).run(mutate, |b| {
        write(&path, b);
        load(&path)
    });
    tally.assert_clean();
    tally
}

/// Overwrites one big-endian dimension of an IDX header with a boundary value: the sizes a
/// format-blind mutation rarely hits.
fn mutate_idx_header(rng: &mut Rng, data: &mut [u8]) -> &'static str {
    let ndims = usize::from(data[3]);
    let at = 4 + 4 * rng.below(ndims.max(1));
    let value = *rng.pick(&[0u32, 1, 27, 29, 60_000, 1 << 16, u32::MAX]);
    if let Some(slot) = data.get_mut(at..at + 4) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
    "idx dimension"
}

#[test]
fn fuzz_idx_raw_and_gzip() {
    let valid: Vec<u8> = idx_bytes(&[3, 28, 28], &(0..3 * 784).map(|k| (k % 251) as u8).collect::<Vec<_>>());
    let tally = fuzz_file(
        Fuzz::new("idx (raw)", 0x1d01).cases(2000),
        "fuzz-images.idx",
        |rng| {
            let mut d = valid.clone();
            let what = if rng.chance(0.3) { mutate_idx_header(rng, &mut d) } else { bytes::mutate(rng, &mut d) };
            (d, what)
        },
        idx::read_idx,
    );
    assert!(tally.errors > tally.cases / 2, "{}", tally.summary());

    let gz_valid = gzip(&valid);
    let tally = fuzz_file(
        Fuzz::new("idx (gzip)", 0x1d02).cases(2000),
        "fuzz-images.idx",
        |rng| {
            // Half damage the compressed stream, half compress a damaged file.
            if rng.chance(0.5) {
                let mut d = gz_valid.clone();
                let what = bytes::mutate(rng, &mut d);
                (d, what)
            } else {
                let mut d = valid.clone();
                let what = if rng.chance(0.4) { mutate_idx_header(rng, &mut d) } else { bytes::mutate(rng, &mut d) };
                (gzip(&d), what)
            }
        },
        idx::read_idx,
    );
    assert!(tally.errors > tally.cases / 2, "{}", tally.summary());
}

#[test]
fn fuzz_mnist_json() {
    let values: Vec<String> = (0..2 * 784).map(|k| format!("{}", f64::from((k * 7 % 256) as u8) / 255.0)).collect();
    let valid = format!("{{\"data\":[{}]}}", values.join(",")).into_bytes();
    let tally = fuzz_file(
        Fuzz::new("mnist json", 0x3501).cases(1500),
        "fuzz-digit.json",
        |rng| {
            let mut d = valid.clone();
            let what = text::mutate(rng, &mut d, false);
            (d, what)
        },
        mnist_json::read_digit_file,
    );
    assert!(tally.errors > tally.cases / 2, "{}", tally.summary());
}

#[test]
fn fuzz_digits_csv() {
    let csv: String = (0..4)
        .map(|i| {
            let mut f: Vec<String> = (0..64).map(|j| ((i + j) % 17).to_string()).collect();
            f.push((i % 10).to_string());
            f.join(",") + "\n"
        })
        .collect();
    let tally = fuzz_file(
        Fuzz::new("digits csv", 0xd161).cases(1500),
        "fuzz-digits.csv.gz",
        |rng| {
            let mut d = csv.clone().into_bytes();
            let what = text::mutate_lines(rng, &mut d);
            // The real file is gzip; half the mutants are too, half are plain CSV.
            (if rng.chance(0.5) { gzip(&d) } else { d }, what)
        },
        digits::load_file,
    );
    assert!(tally.errors > tally.cases / 3, "{}", tally.summary());
}

#[test]
fn fuzz_movielens_inter() {
    let valid = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
                 u1\ti10\t3\t900000200\nu2\ti20\t3\t900000300\nu3\ti30\t1\t900000100\nu1\ti40\t2\t900000400\n";
    let tally = fuzz_file(
        Fuzz::new("movielens .inter", 0x1e7e).cases(1500),
        "fuzz.inter",
        |rng| {
            let mut d = valid.as_bytes().to_vec();
            let what = text::mutate_lines(rng, &mut d);
            (d, what)
        },
        movielens::load_file,
    );
    assert!(tally.errors > tally.cases / 4 && tally.loaded > 0, "{}", tally.summary());
}

#[test]
fn fuzz_bbc_news_articles_always_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fuzz-bbc");
    std::fs::create_dir_all(root.join("tech")).unwrap();
    write(&root.join("tech/001.txt"), "Chip sales up \u{a3}5bn\n\nThe firm said...".as_bytes());
    let article = root.join("tech/002.txt");
    let valid = "Gadget show\n\nVisitors queued for hours.\n".as_bytes().to_vec();
    let tally = Fuzz::new("bbc news article", 0xbbc1).cases(500).errors_name("fuzz-bbc").run(
        |rng| {
            let mut d = valid.clone();
            let what = bytes::mutate(rng, &mut d);
            (d, what)
        },
        |b| {
            write(&article, b);
            bbc_news::load_tree(&root)
        },
    );
    tally.assert_clean();
    // Any bytes are an article: invalid UTF-8 is decoded lossily, not refused.
    assert_eq!(tally.loaded, tally.cases, "{}", tally.summary());
}
