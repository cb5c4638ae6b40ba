//! The RAM image tasks (docs/ram.md): the digit lands intact at its recorded position, clutter
//! is exactly the recorded crops of other digits combined by maximum, every image depends on
//! `(seed, index)` alone, and impossible arguments are typed errors.

use attune_data::ram_tasks::{self, At, RamTask};
use attune_data::{DataError, Images};

/// `n` digits of `rows x cols` whose pixel `(r, c)` of digit `i` is `value(i, r, c)`.
fn digits(n: usize, rows: usize, cols: usize, value: impl Fn(usize, usize, usize) -> u8) -> Images {
    let mut pixels = Vec::with_capacity(n * rows * cols);
    for i in 0..n {
        for r in 0..rows {
            for c in 0..cols {
                pixels.push(value(i, r, c));
            }
        }
    }
    Images { rows, cols, pixel_max: 255, pixels, labels: (0..n).map(|i| (i % 10) as u8).collect() }
}

/// A pattern with no zero pixel, different in every digit and position, so a misplaced or
/// partly lost pixel shows.
fn inked(i: usize, r: usize, c: usize) -> u8 {
    (1 + (i * 37 + r * 28 + c) % 254) as u8
}

/// Pixel `(r, c)` of canvas `k` of `images`.
fn px(images: &Images, k: usize, r: usize, c: usize) -> u8 {
    images.image(k)[r * images.cols + c]
}

fn inside(p: [usize; 2], at: At, size: usize) -> bool {
    (at[0]..at[0] + size).contains(&p[0]) && (at[1]..at[1] + size).contains(&p[1])
}

#[test]
fn centred_is_the_digits_unchanged() {
    let source = digits(5, 28, 28, inked);
    let out = ram_tasks::generate_all(&source, RamTask::Centred, 7).unwrap();
    assert_eq!(out.images, source);
    assert!(
        out.placements.iter().enumerate().all(|(i, p)| p.index == i && p.digit_at == [0, 0] && p.clutter.is_empty())
    );
}

#[test]
fn translated_60_holds_the_whole_digit_at_its_recorded_position_on_a_blank_canvas() {
    let source = digits(40, 28, 28, inked);
    let out = ram_tasks::generate_all(&source, RamTask::TRANSLATED_60, 11).unwrap();
    assert_eq!((out.images.rows, out.images.cols, out.images.len()), (60, 60, 40));
    assert_eq!(out.images.pixels.len(), 40 * 60 * 60);
    assert_eq!(out.images.labels, source.labels);
    assert_eq!(out.images.pixel_max, 255);
    for (k, p) in out.placements.iter().enumerate() {
        assert_eq!(p.index, k);
        assert!(p.digit_at[0] <= 32 && p.digit_at[1] <= 32, "digit at {:?} leaves the canvas", p.digit_at);
        for r in 0..60 {
            for c in 0..60 {
                let want =
                    if inside([r, c], p.digit_at, 28) { inked(k, r - p.digit_at[0], c - p.digit_at[1]) } else { 0 };
                assert_eq!(px(&out.images, k, r, c), want, "image {k} pixel ({r}, {c}), digit at {:?}", p.digit_at);
            }
        }
    }
}

#[test]
fn translated_positions_are_uniform_over_every_position_that_keeps_the_digit_inside() {
    // A 2x2 digit in a 6x6 canvas has 5 possible rows and 5 columns; 5,000 draws put about
    // 1,000 on each (standard deviation about 28), edges included.
    let source = digits(5000, 2, 2, inked);
    let out = ram_tasks::generate_all(&source, RamTask::Translated { canvas: 6 }, 3).unwrap();
    for axis in 0..2 {
        let mut counts = [0usize; 5];
        for p in &out.placements {
            counts[p.digit_at[axis]] += 1;
        }
        assert!(counts.iter().all(|&n| (850..=1150).contains(&n)), "axis {axis}: {counts:?}");
    }
}

#[test]
fn cluttered_piece_is_an_exact_crop_of_another_digit_pasted_where_recorded() {
    // Digit 0 is blank, so the canvas of image 0 shows only its one clutter piece.
    let source = digits(30, 28, 28, |i, r, c| if i == 0 { 0 } else { inked(i, r, c) });
    let task = RamTask::Cluttered { canvas: 60, pieces: 1, piece: 8 };
    for seed in 0..50 {
        let out = ram_tasks::generate(&source, task, seed, &[0]).unwrap();
        let [clutter] = out.placements[0].clutter[..] else { panic!("seed {seed}: {:?}", out.placements[0]) };
        assert_ne!(clutter.from, 0, "seed {seed}: clutter cut from the image's own digit");
        assert!(clutter.cut_at[0] <= 20 && clutter.cut_at[1] <= 20, "seed {seed}: {clutter:?}");
        assert!(clutter.placed_at[0] <= 52 && clutter.placed_at[1] <= 52, "seed {seed}: {clutter:?}");
        for r in 0..60 {
            for c in 0..60 {
                let want = if inside([r, c], clutter.placed_at, 8) {
                    let (dr, dc) = (r - clutter.placed_at[0], c - clutter.placed_at[1]);
                    inked(clutter.from, clutter.cut_at[0] + dr, clutter.cut_at[1] + dc)
                } else {
                    0
                };
                assert_eq!(px(&out.images, 0, r, c), want, "seed {seed} pixel ({r}, {c}), {clutter:?}");
            }
        }
    }
}

#[test]
fn cluttered_60_lands_exactly_four_8x8_pieces() {
    // Digit 0 blank, every other digit fully inked: image 0's ink is the union of its pieces.
    let source = digits(20, 28, 28, |i, _, _| if i == 0 { 0 } else { 255 });
    let mut disjoint = 0;
    for seed in 0..200 {
        let out = ram_tasks::generate(&source, RamTask::CLUTTERED_60, seed, &[0]).unwrap();
        let pieces = &out.placements[0].clutter;
        assert_eq!(pieces.len(), 4, "seed {seed}");
        let mut lit = 0;
        for r in 0..60 {
            for c in 0..60 {
                let covered = pieces.iter().any(|p| inside([r, c], p.placed_at, 8));
                let v = px(&out.images, 0, r, c);
                assert_eq!(v, if covered { 255 } else { 0 }, "seed {seed} pixel ({r}, {c}): {pieces:?}");
                lit += usize::from(v > 0);
            }
        }
        // Pieces that do not overlap light exactly 4 x 64 pixels; overlapping ones fewer.
        let overlap = |a: At, b: At| a[0].abs_diff(b[0]) < 8 && a[1].abs_diff(b[1]) < 8;
        let apart = (0..4).all(|i| (0..i).all(|j| !overlap(pieces[i].placed_at, pieces[j].placed_at)));
        if apart {
            assert_eq!(lit, 4 * 64, "seed {seed}: {pieces:?}");
            disjoint += 1;
        } else {
            assert!(lit < 4 * 64, "seed {seed}: {lit} pixels lit by overlapping pieces {pieces:?}");
        }
    }
    // Two pieces overlap with probability about 0.07, so about 65% of images have four apart.
    assert!(disjoint > 50, "only {disjoint} of 200 images had four disjoint pieces");
}

#[test]
fn clutter_adds_ink_by_maximum_and_never_erases_the_digit() {
    // Clutter of value 100 over a digit of values 1..=254: the maximum of the two everywhere.
    let source = digits(10, 28, 28, |i, r, c| if i == 0 { inked(0, r, c) } else { 100 });
    for seed in 0..100 {
        let out = ram_tasks::generate(&source, RamTask::CLUTTERED_60, seed, &[0]).unwrap();
        let p = &out.placements[0];
        for r in 0..60 {
            for c in 0..60 {
                let digit =
                    if inside([r, c], p.digit_at, 28) { inked(0, r - p.digit_at[0], c - p.digit_at[1]) } else { 0 };
                let clutter = if p.clutter.iter().any(|q| inside([r, c], q.placed_at, 8)) { 100 } else { 0 };
                assert_eq!(px(&out.images, 0, r, c), digit.max(clutter), "seed {seed} pixel ({r}, {c})");
            }
        }
    }
}

#[test]
fn clutter_never_comes_from_the_image_s_own_digit() {
    // Two digits: 0 fully inked, 1 blank. Clutter for image 0 must come from digit 1, which
    // adds nothing, so exactly the digit's 784 pixels are lit whatever the seed; a piece of
    // digit 0 itself would light pixels outside it.
    let source = digits(2, 28, 28, |i, _, _| if i == 0 { 255 } else { 0 });
    for seed in 0..100 {
        let out = ram_tasks::generate(&source, RamTask::CLUTTERED_60, seed, &[0]).unwrap();
        assert!(out.placements[0].clutter.iter().all(|c| c.from == 1), "seed {seed}: {:?}", out.placements[0]);
        assert_eq!(out.images.pixels.iter().filter(|&&v| v > 0).count(), 28 * 28, "seed {seed}");
    }
}

#[test]
fn an_image_depends_on_seed_and_index_only_not_on_its_batch() {
    let source = digits(12, 28, 28, inked);
    for task in [RamTask::TRANSLATED_60, RamTask::CLUTTERED_60] {
        let all = ram_tasks::generate_all(&source, task, 99).unwrap();
        let picked = ram_tasks::generate(&source, task, 99, &[9, 2, 9, 5]).unwrap();
        for (k, &i) in [9, 2, 9, 5].iter().enumerate() {
            assert_eq!(picked.images.image(k), all.images.image(i), "{task:?} image {i}");
            assert_eq!(picked.placements[k], all.placements[i], "{task:?} image {i}");
            assert_eq!(picked.images.labels[k], source.labels[i]);
        }
        assert_eq!(ram_tasks::generate_all(&source, task, 99).unwrap(), all, "{task:?} is not reproducible");
    }
}

#[test]
fn different_seeds_give_different_images() {
    let source = digits(20, 28, 28, inked);
    for task in [RamTask::TRANSLATED_60, RamTask::CLUTTERED_60] {
        let a = ram_tasks::generate_all(&source, task, 1).unwrap();
        let b = ram_tasks::generate_all(&source, task, 2).unwrap();
        // 33 x 33 digit positions: two seeds agree on one image with probability about 1/1089.
        let moved = (0..20).filter(|&i| a.placements[i].digit_at != b.placements[i].digit_at).count();
        assert!(moved >= 18, "{task:?}: only {moved} of 20 digits moved between seeds 1 and 2");
        assert_ne!(a.images.pixels, b.images.pixels);
    }
}

#[test]
fn translated_and_cluttered_put_each_digit_in_the_same_place_under_one_seed() {
    let source = digits(30, 28, 28, inked);
    let t = ram_tasks::generate_all(&source, RamTask::TRANSLATED_60, 5).unwrap();
    let c = ram_tasks::generate_all(&source, RamTask::CLUTTERED_60, 5).unwrap();
    for i in 0..30 {
        assert_eq!(t.placements[i].digit_at, c.placements[i].digit_at, "image {i}");
    }
}

fn bad_argument(result: Result<ram_tasks::RamImages, DataError>) -> String {
    match result {
        Err(e @ DataError::BadArgument { .. }) => e.to_string(),
        other => panic!("expected BadArgument, got {other:?}"),
    }
}

#[test]
fn impossible_arguments_are_typed_errors_with_the_values() {
    let source = digits(3, 28, 28, inked);
    let msg = bad_argument(ram_tasks::generate_all(&source, RamTask::Translated { canvas: 20 }, 0));
    assert!(msg.contains("20x20") && msg.contains("28x28"), "{msg}");

    let msg = bad_argument(ram_tasks::generate(&source, RamTask::TRANSLATED_60, 0, &[0, 3]));
    assert!(msg.contains("index 3") && msg.contains("3 images"), "{msg}");

    let mut short = source.clone();
    short.pixels.pop();
    let msg = bad_argument(ram_tasks::generate_all(&short, RamTask::Centred, 0));
    assert!(msg.contains("2351") && msg.contains("28x28"), "{msg}");

    let empty = Images { rows: 0, cols: 28, pixel_max: 255, pixels: vec![], labels: vec![1] };
    let msg = bad_argument(ram_tasks::generate_all(&empty, RamTask::TRANSLATED_60, 0));
    assert!(msg.contains("0x28"), "{msg}");

    for piece in [0, 29] {
        let task = RamTask::Cluttered { canvas: 60, pieces: 4, piece };
        let msg = bad_argument(ram_tasks::generate_all(&source, task, 0));
        assert!(msg.contains(&format!("{piece}x{piece}")) && msg.contains("1..=28"), "{msg}");
    }

    let msg = bad_argument(ram_tasks::generate_all(&source, RamTask::Translated { canvas: usize::MAX }, 0));
    assert!(msg.contains(&format!("{}x{}", usize::MAX, usize::MAX)) && msg.contains("4096"), "{msg}");
    let task = RamTask::Cluttered { canvas: 60, pieces: usize::MAX, piece: 8 };
    let msg = bad_argument(ram_tasks::generate_all(&source, task, 0));
    assert!(msg.contains(&format!("{} clutter pieces", usize::MAX)) && msg.contains("1024"), "{msg}");

    let one = digits(1, 28, 28, inked);
    let msg = bad_argument(ram_tasks::generate_all(&one, RamTask::CLUTTERED_60, 0));
    assert!(msg.contains("1 image") && msg.contains("at least 2"), "{msg}");
    // Without clutter one digit is enough, and no index is no work.
    assert_eq!(ram_tasks::generate_all(&one, RamTask::TRANSLATED_60, 0).unwrap().images.len(), 1);
    assert!(ram_tasks::generate(&source, RamTask::CLUTTERED_60, 0, &[]).unwrap().images.is_empty());
}
