//! The image loaders (IDX and Fashion-MNIST, MNIST JSON, digits 8x8) on small files the tests
//! write: a good file loads to the exact pixels and labels; a truncated, corrupt or missing
//! file is a typed error naming the file (and `cargo xtask data` when it is missing).

mod common;

use std::ffi::OsStr;
use std::path::Path;

use attune_data::fashion_mnist::{self, Split};
use attune_data::idx::{self, IdxArray};
use attune_data::{DataDir, DataError, Dataset, Images, digits, mnist_json};
use common::{assert_missing, assert_names, gzip, idx_bytes, put, temp_cache};

/// A pixel pattern that differs between images and positions.
fn pattern(images: usize, size: usize) -> Vec<u8> {
    (0..images * size).map(|k| ((k / size) * 31 + (k % size) * 7) as u8).collect()
}

#[test]
fn cache_is_the_env_value_when_set_and_not_empty_else_the_workspace_data_dir() {
    let default = DataDir::resolve(None);
    assert_eq!(default.root(), DataDir::default_root());
    assert!(default.root().ends_with(".data"), "{}", default.root().display());
    // The workspace root, written without `..`, so messages show a plain path.
    assert!(default.root().parent().unwrap().join("Cargo.toml").is_file());
    assert!(!default.root().components().any(|c| c.as_os_str() == ".."));
    assert_eq!(DataDir::resolve(Some(OsStr::new(""))), default);
    assert_eq!(DataDir::resolve(Some(OsStr::new("/somewhere"))).root(), Path::new("/somewhere"));
    for d in Dataset::ALL {
        assert_eq!(Dataset::from_name(d.name()), Some(d));
    }
    assert_eq!(Dataset::from_name("cifar"), None);
}

#[test]
fn idx_reads_raw_and_gzip_files_to_the_same_array() {
    let data = pattern(3, 4 * 5);
    let raw = idx_bytes(&[3, 4, 5], &data);
    let want = IdxArray { dims: vec![3, 4, 5], data };
    assert_eq!(idx::parse_idx(&raw, Path::new("a")).unwrap(), want);
    assert_eq!(idx::parse_idx(&gzip(&raw), Path::new("a")).unwrap(), want);
    // Two concatenated gzip members are one stream, as `gzip -d` reads them.
    let (head, tail) = raw.split_at(10);
    let two = [gzip(head), gzip(tail)].concat();
    assert_eq!(idx::parse_idx(&two, Path::new("a")).unwrap(), want);
}

#[test]
fn idx_truncated_anywhere_is_a_truncated_error_with_the_byte_counts() {
    let raw = idx_bytes(&[2, 3, 3], &pattern(2, 9));
    let path = Path::new("cut.idx");
    for cut in 0..raw.len() {
        for (kind, bytes) in [("raw", raw[..cut].to_vec()), ("gzip", gzip(&raw[..cut]))] {
            let err = idx::parse_idx(&bytes, path).unwrap_err();
            let DataError::Truncated { needed, available, .. } = &err else { panic!("{kind} cut at {cut}: {err:?}") };
            assert!(available < needed, "{kind} cut at {cut}: {err}");
            assert_eq!(*available, cut as u64, "{kind} cut at {cut}: {err}");
            assert_names(&err, path);
        }
    }
    // A gzip stream cut short (not a complete stream of fewer bytes) is reported as damaged.
    let gz = gzip(&raw);
    let err = idx::parse_idx(&gz[..gz.len() - 12], path).unwrap_err();
    assert!(matches!(err, DataError::Invalid { .. } | DataError::Truncated { .. }), "{err:?}");
}

#[test]
fn idx_corrupt_headers_are_rejected_before_allocating_what_they_declare() {
    let path = Path::new("bad.idx");
    let good = idx_bytes(&[2, 2], &[1, 2, 3, 4]);
    let mut bad_magic = good.clone();
    bad_magic[0] = 0x50;
    assert!(matches!(idx::parse_idx(&bad_magic, path), Err(DataError::BadMagic { .. })));
    let mut f32_type = good.clone();
    f32_type[2] = 0x0d;
    let err = idx::parse_idx(&f32_type, path).unwrap_err();
    assert!(err.to_string().contains("0x0d (f32)"), "{err}");
    let mut no_dims = good.clone();
    no_dims[3] = 0;
    assert!(matches!(idx::parse_idx(&no_dims, path), Err(DataError::Invalid { .. })));
    // 4 G x 4 G elements: refused from the header alone, raw or gzip.
    let huge = idx_bytes(&[u32::MAX, u32::MAX], &[0; 16]);
    for bytes in [huge.clone(), gzip(&huge)] {
        let err = idx::parse_idx(&bytes, path).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { limit, .. } if limit == idx::MAX_IDX_DATA), "{err:?}");
    }
    // A header claiming fewer elements than the file holds.
    let mut extra = good.clone();
    extra.push(9);
    let err = idx::parse_idx(&extra, path).unwrap_err();
    assert!(err.to_string().contains("1 bytes follow the 2 x 2 elements"), "{err}");
    // Garbage after a valid gzip header.
    let mut gz = gzip(&good);
    for b in &mut gz[10..] {
        *b ^= 0x5a;
    }
    let err = idx::parse_idx(&gz, path).unwrap_err();
    assert!(err.to_string().contains("gzip stream is damaged"), "{err}");
    assert_names(&err, path);
}

/// Writes a small Fashion-MNIST: `n_train` and `n_test` 28x28 images.
fn write_fashion(dir: &DataDir, n_train: u32, n_test: u32) {
    for (images, labels, n) in [
        (fashion_mnist::TRAIN_IMAGES, fashion_mnist::TRAIN_LABELS, n_train),
        (fashion_mnist::TEST_IMAGES, fashion_mnist::TEST_LABELS, n_test),
    ] {
        let pixels = pattern(n as usize, 28 * 28);
        let label_bytes: Vec<u8> = (0..n).map(|i| (i * 3 % 10) as u8).collect();
        put(dir, Dataset::FashionMnist, images, &gzip(&idx_bytes(&[n, 28, 28], &pixels)));
        put(dir, Dataset::FashionMnist, labels, &gzip(&idx_bytes(&[n], &label_bytes)));
    }
}

#[test]
fn fashion_mnist_loads_each_split_with_its_pixels_and_labels() {
    let (_tmp, dir) = temp_cache();
    write_fashion(&dir, 5, 2);
    let train = fashion_mnist::load(&dir, Split::Train).unwrap();
    assert_eq!((train.len(), train.rows, train.cols, train.pixel_max), (5, 28, 28, 255));
    assert_eq!(train.labels, [0, 3, 6, 9, 2]);
    assert_eq!(train.pixels, pattern(5, 784));
    assert_eq!(train.image(1)[..3], [31, 38, 45]);
    let test = fashion_mnist::load(&dir, Split::Test).unwrap();
    assert_eq!((test.len(), test.labels.as_slice()), (2, &[0, 3][..]));
}

#[test]
fn fashion_mnist_missing_truncated_and_corrupt_files_are_errors() {
    let (_tmp, dir) = temp_cache();
    let err = fashion_mnist::load(&dir, Split::Train).unwrap_err();
    assert_missing(&err, Dataset::FashionMnist, fashion_mnist::TRAIN_IMAGES);

    write_fashion(&dir, 4, 2);
    let images = dir.dataset_dir(Dataset::FashionMnist).join(fashion_mnist::TRAIN_IMAGES);
    let full = std::fs::read(&images).unwrap();
    std::fs::write(&images, &full[..full.len() / 2]).unwrap();
    let err = fashion_mnist::load(&dir, Split::Train).unwrap_err();
    assert_names(&err, &images);
    assert!(err.to_string().contains("cargo xtask data"), "a damaged cache file names the fix: {err}");

    // A label of 10 (Fashion-MNIST has 0..=9).
    write_fashion(&dir, 4, 2);
    put(&dir, Dataset::FashionMnist, fashion_mnist::TRAIN_LABELS, &idx_bytes(&[4], &[1, 2, 10, 3]));
    let err = fashion_mnist::load(&dir, Split::Train).unwrap_err();
    assert!(err.to_string().contains("label 2 is 10"), "{err}");

    // Images of another size, and label files of another length.
    put(&dir, Dataset::FashionMnist, fashion_mnist::TRAIN_IMAGES, &idx_bytes(&[4, 8, 8], &pattern(4, 64)));
    put(&dir, Dataset::FashionMnist, fashion_mnist::TRAIN_LABELS, &idx_bytes(&[4], &[0; 4]));
    let err = fashion_mnist::load(&dir, Split::Train).unwrap_err();
    assert!(err.to_string().contains("images are 8x8"), "{err}");
    put(&dir, Dataset::FashionMnist, fashion_mnist::TRAIN_LABELS, &idx_bytes(&[3], &[0; 3]));
    let err = fashion_mnist::load(&dir, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Mismatch { .. }) && err.to_string().contains("4 images but"), "{err}");
}

/// One digit file as the mnist package writes it: each pixel `k / 255` to three decimals.
fn digit_json(pixels: &[u8]) -> String {
    let values: Vec<String> =
        pixels.iter().map(|&k| format!("{}", (f64::from(k) / 255.0 * 1000.0).round() / 1000.0)).collect();
    format!("{{\"data\":[{}]}}", values.join(","))
}

/// Writes the ten digit files, digit `d` with `d + 1` images.
fn write_mnist(dir: &DataDir) -> Vec<u8> {
    let mut all = Vec::new();
    for (d, name) in mnist_json::DIGIT_FILES.iter().enumerate() {
        let pixels = pattern(d + 1, 784).iter().map(|p| p.wrapping_add(d as u8)).collect::<Vec<_>>();
        put(dir, Dataset::Mnist, name, digit_json(&pixels).as_bytes());
        all.extend(pixels);
    }
    all
}

#[test]
fn mnist_json_recovers_every_byte_value_from_three_decimals() {
    let every_byte: Vec<u8> = (0..784).map(|k| (k % 256) as u8).collect();
    let parsed = mnist_json::parse_digit_file(digit_json(&every_byte).as_bytes(), Path::new("0.json")).unwrap();
    assert_eq!(parsed, every_byte);
}

#[test]
fn mnist_json_loads_digits_in_order_and_splits_every_tenth() {
    let (_tmp, dir) = temp_cache();
    let pixels = write_mnist(&dir);
    let images = mnist_json::load(&dir).unwrap();
    assert_eq!((images.len(), images.rows, images.cols, images.pixel_max), (55, 28, 28, 255));
    assert_eq!(images.pixels, pixels);
    assert_eq!(images.class_counts(), (1..=10).collect::<Vec<_>>());
    assert_eq!(&images.labels[..4], &[0, 1, 1, 2]);
    let split = mnist_json::split(&images);
    assert_eq!((split.train.len(), split.held_out.len()), (50, 5));
    // Held out: load positions 9, 19, ..., 49.
    assert_eq!(split.held_out.image(0), images.image(9));
    assert_eq!(split.held_out.labels, [3, 5, 7, 8, 9]);
    // The documented 9,000 / 1,000 of 10,000.
    let ten_k = Images { rows: 1, cols: 1, pixel_max: 255, pixels: vec![0; 10_000], labels: vec![0; 10_000] };
    let s = mnist_json::split(&ten_k);
    assert_eq!((s.train.len(), s.held_out.len()), (9_000, 1_000));
}

#[test]
fn mnist_json_missing_truncated_and_corrupt_files_are_errors() {
    let (_tmp, dir) = temp_cache();
    write_mnist(&dir);
    let seven = dir.dataset_dir(Dataset::Mnist).join("7.json");
    std::fs::remove_file(&seven).unwrap();
    assert_missing(&mnist_json::load(&dir).unwrap_err(), Dataset::Mnist, "7.json");

    let good = digit_json(&pattern(2, 784));
    let path = Path::new("3.json");
    let cases: [(&str, String, &str); 6] = [
        ("truncated", good[..good.len() / 2].to_string(), "not a JSON object"),
        ("short by one pixel", good.replacen("0,", "", 1), "not a positive multiple of 784"),
        ("empty data", "{\"data\":[]}".into(), "holds 0 numbers"),
        ("pixel above 1", good.replacen("0,", "1.5,", 1), "pixels are intensities in [0, 1]"),
        ("negative pixel", good.replacen("0,", "-0.1,", 1), "is -0.1"),
        ("wrong type", good.replacen("0,", "\"0\",", 1), "not a JSON object"),
    ];
    for (what, text, expected) in cases {
        let err = mnist_json::parse_digit_file(text.as_bytes(), path).unwrap_err();
        assert!(err.to_string().contains(expected), "{what}: {err}");
        assert_names(&err, path);
    }
}

fn digits_csv(rows: &[(Vec<u8>, u8)]) -> String {
    rows.iter()
        .map(|(px, label)| {
            let mut f: Vec<String> = px.iter().map(u8::to_string).collect();
            f.push(label.to_string());
            f.join(",") + "\n"
        })
        .collect()
}

fn digit_rows() -> Vec<(Vec<u8>, u8)> {
    (0..3u8).map(|i| ((0..64u8).map(|j| (i + j) % 17).collect(), i * 4)).collect()
}

#[test]
fn digits_load_from_gzip_or_plain_csv() {
    let (_tmp, dir) = temp_cache();
    let csv = digits_csv(&digit_rows());
    put(&dir, Dataset::Digits, digits::CSV_FILE, &gzip(csv.as_bytes()));
    let images = digits::load(&dir).unwrap();
    assert_eq!((images.len(), images.rows, images.cols, images.pixel_max), (3, 8, 8, 16));
    assert_eq!(images.labels, [0, 4, 8]);
    assert_eq!(images.image(2), digit_rows()[2].0.as_slice());
    assert_eq!(images.to_f32()[64 + 15], 1.0, "pixel 16 of 16 is full intensity");
    let plain = dir.dataset_dir(Dataset::Digits).join("plain.csv");
    std::fs::write(&plain, &csv).unwrap();
    assert_eq!(digits::load_file(&plain).unwrap(), images);
}

#[test]
fn digits_missing_truncated_and_corrupt_files_are_errors() {
    let (_tmp, dir) = temp_cache();
    assert_missing(&digits::load(&dir).unwrap_err(), Dataset::Digits, digits::CSV_FILE);

    let csv = digits_csv(&digit_rows());
    let gz = gzip(csv.as_bytes());
    let path = dir.dataset_dir(Dataset::Digits).join(digits::CSV_FILE);
    put(&dir, Dataset::Digits, digits::CSV_FILE, &gz[..gz.len() - 20]);
    let err = digits::load(&dir).unwrap_err();
    assert!(err.to_string().contains("gzip stream is damaged or cut short"), "{err}");
    assert_names(&err, &path);

    // A line cut in the middle, a pixel of 17, a label of 10, a non-number, non-UTF-8, nothing.
    let cut = &csv[..csv.len() - 30];
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("truncated line", cut.as_bytes().to_vec(), "line 3: "),
        ("pixel 17", csv.replacen("16,", "17,", 1).into_bytes(), "(pixel) is \"17\""),
        ("label 10", csv.replacen(",8\n", ",10\n", 1).into_bytes(), "column 65 (label) is \"10\""),
        ("not a number", csv.replacen("1,", "x,", 1).into_bytes(), "expected an integer 0 to 16"),
        ("not UTF-8", [csv.as_bytes(), b"\xff"].concat(), "not UTF-8"),
        ("empty", Vec::new(), "holds no digits"),
    ];
    for (what, bytes, expected) in cases {
        let err = digits::parse_csv(&bytes, &path).unwrap_err();
        assert!(err.to_string().contains(expected), "{what}: {err}");
        assert_names(&err, &path);
    }
}

#[test]
fn images_select_split_and_convert() {
    let images = Images { rows: 1, cols: 2, pixel_max: 4, pixels: vec![0, 1, 2, 3, 4, 0], labels: vec![2, 0, 2] };
    assert_eq!(images.select(&[2, 0]).pixels, [4, 0, 0, 1]);
    assert_eq!(images.class_counts(), [1, 0, 2]);
    assert_eq!(images.to_f32(), [0.0, 0.25, 0.5, 0.75, 1.0, 0.0]);
    let split = images.split_every(2);
    assert_eq!((split.train.labels, split.held_out.labels), (vec![2, 2], vec![0]));
}
