//! The image tasks of the Recurrent Attention Model (Mnih, Heess, Graves and Kavukcuoglu,
//! "Recurrent Models of Visual Attention", 2014), built from a set of digits (docs/ram.md):
//!
//! - [`RamTask::Centred`]: the digits as they are (28x28 for MNIST);
//! - [`RamTask::Translated`]: each digit pasted at a uniformly random position fully inside a
//!   larger blank canvas (60x60 in the paper, [`RamTask::TRANSLATED_60`]);
//! - [`RamTask::Cluttered`]: translated, plus clutter pieces (four 8x8 in the paper,
//!   [`RamTask::CLUTTERED_60`]) cut at random positions from other random digits of the same
//!   set and pasted at random positions of the canvas.
//!
//! Everything random is drawn from an [`attune_rng::Rng`] stream keyed by `(seed, image
//! index)` alone, so an image is the same whichever batch it is generated in, in whatever
//! order, and a resumed run regenerates its batches from their indices. Composition is the
//! pixel-wise maximum, so clutter never erases the digit (it can only add ink next to or on it).

use attune_rng::{Rng, tag};

use crate::error::{DataError, Result};
use crate::images::Images;

const OP: &str = "generating RAM task images";

/// Separates the placement streams from every other use of the same seed.
const STREAM_TAG: u64 = tag(b"ramtask");

/// The largest canvas side accepted: far beyond the paper's 60 and 100, small enough that a
/// canvas's pixel count cannot overflow and a typo cannot ask for terabytes.
pub const MAX_CANVAS: usize = 4096;

/// The most clutter pieces per image accepted (the paper uses 4 and 8).
pub const MAX_PIECES: usize = 1024;

/// One of the RAM paper's image tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamTask {
    /// The digits unchanged: the canvas is the digit's own size and nothing is drawn.
    Centred,
    /// The digit at a uniformly random position fully inside a `canvas x canvas` canvas.
    Translated {
        /// The canvas side in pixels (at least the digit's height and width).
        canvas: usize,
    },
    /// [`RamTask::Translated`] plus `pieces` clutter pieces of `piece x piece` pixels.
    Cluttered {
        /// The canvas side in pixels (at least the digit's height and width).
        canvas: usize,
        /// The number of clutter pieces per image.
        pieces: usize,
        /// The side of a clutter piece (at most the digit's height and width).
        piece: usize,
    },
}

impl RamTask {
    /// The paper's translated MNIST: 28x28 digits in a 60x60 canvas.
    pub const TRANSLATED_60: RamTask = RamTask::Translated { canvas: 60 };
    /// The paper's cluttered translated MNIST: 60x60 with four 8x8 clutter pieces.
    pub const CLUTTERED_60: RamTask = RamTask::Cluttered { canvas: 60, pieces: 4, piece: 8 };

    /// The canvas `(rows, cols)` for digits of `rows x cols`: the digit's own for `Centred`.
    fn canvas(&self, rows: usize, cols: usize) -> (usize, usize) {
        match *self {
            RamTask::Centred => (rows, cols),
            RamTask::Translated { canvas } | RamTask::Cluttered { canvas, .. } => (canvas, canvas),
        }
    }

    /// `(pieces, piece side)`: `(0, 0)` without clutter.
    fn clutter(&self) -> (usize, usize) {
        match *self {
            RamTask::Cluttered { pieces, piece, .. } => (pieces, piece),
            _ => (0, 0),
        }
    }
}

/// A `[row, col]` pixel position: the top-left corner of what was pasted or cut.
pub type At = [usize; 2];

/// One clutter piece of a generated image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clutter {
    /// The index (in the source set) of the digit the piece was cut from; never the image's own.
    pub from: usize,
    /// Where the piece was cut in that digit.
    pub cut_at: At,
    /// Where the piece was pasted in the canvas.
    pub placed_at: At,
}

/// How one generated image was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The index of the digit in the source set (its label is the image's label).
    pub index: usize,
    /// Where the digit's top-left pixel is in the canvas (`[0, 0]` for `Centred`).
    pub digit_at: At,
    /// The clutter pieces, in the order they were drawn (empty without clutter).
    pub clutter: Vec<Clutter>,
}

/// Images generated for a task: the canvases (with the source's labels and `pixel_max`) and,
/// for each, how it was made (which the tests and plots of glimpses use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamImages {
    /// One canvas per requested index, in the order requested.
    pub images: Images,
    /// How each canvas was made, in the same order.
    pub placements: Vec<Placement>,
}

/// Generates the task's image for each of `indices` (positions in `source`), deterministic in
/// `(seed, index)`: the same index under the same seed gives the same image in any call, and
/// the digit's position is drawn before the clutter, so `Translated` and `Cluttered` with the
/// same canvas and seed put each digit in the same place.
///
/// Use one seed per set and epoch (a held-out set gets its own seed, so its placements are not
/// those of the training images with the same index). Clutter is cut from other digits of
/// `source` itself, so held-out images are cluttered only with held-out digits.
///
/// Errors ([`DataError::BadArgument`]): `source` whose pixel count is not `len * rows * cols`,
/// empty digits, a canvas smaller than the digit or larger than [`MAX_CANVAS`], more than
/// [`MAX_PIECES`] pieces, a clutter piece of side 0 or larger than
/// the digit, clutter with fewer than two digits in `source` (a piece never comes from the
/// image's own digit), or an index past `source`.
pub fn generate(source: &Images, task: RamTask, seed: u64, indices: &[usize]) -> Result<RamImages> {
    validate(source, task)?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= source.len()) {
        return Err(bad_argument(format!(
            "index {bad} is past the {} images of the source set; indices are positions in it, 0..{}",
            source.len(),
            source.len()
        )));
    }
    let (canvas_rows, canvas_cols) = task.canvas(source.rows, source.cols);
    // `validate` bounds the canvas by MAX_CANVAS, so its pixel count cannot overflow.
    let canvas_size = canvas_rows * canvas_cols;
    let total = indices.len().checked_mul(canvas_size).ok_or_else(|| {
        bad_argument(format!("{} canvases of {canvas_size} pixels do not fit in memory", indices.len()))
    })?;
    let mut pixels = vec![0u8; total];
    let mut placements = Vec::with_capacity(indices.len());
    // `validate` guarantees a canvas of at least one pixel, so the chunks are never empty.
    for (out, &index) in pixels.chunks_exact_mut(canvas_size).zip(indices) {
        let placement = place(source, task, seed, index);
        draw(source, task, &placement, out, canvas_cols);
        placements.push(placement);
    }
    Ok(RamImages {
        images: Images {
            rows: canvas_rows,
            cols: canvas_cols,
            pixel_max: source.pixel_max,
            pixels,
            labels: indices.iter().map(|&i| source.labels[i]).collect(),
        },
        placements,
    })
}

/// [`generate`] for every image of `source`, in order.
pub fn generate_all(source: &Images, task: RamTask, seed: u64) -> Result<RamImages> {
    let indices: Vec<usize> = (0..source.len()).collect();
    generate(source, task, seed, &indices)
}

fn bad_argument(reason: String) -> DataError {
    DataError::BadArgument { op: OP, reason }
}

/// Every check that does not depend on the indices, so that `place` and `draw` cannot fail.
fn validate(source: &Images, task: RamTask) -> Result<()> {
    let (rows, cols) = (source.rows, source.cols);
    let want = rows.checked_mul(cols).and_then(|s| s.checked_mul(source.len()));
    if want != Some(source.pixels.len()) {
        return Err(bad_argument(format!(
            "the source set declares {} images of {rows}x{cols} pixels but holds {} pixel bytes; build it with a \
             loader or `Images::select` so pixels and labels agree",
            source.len(),
            source.pixels.len()
        )));
    }
    if rows == 0 || cols == 0 {
        return Err(bad_argument(format!("the source digits are {rows}x{cols}; a digit needs at least one pixel")));
    }
    let (canvas_rows, canvas_cols) = task.canvas(rows, cols);
    if canvas_rows.max(canvas_cols) > MAX_CANVAS {
        return Err(bad_argument(format!(
            "{task:?} asks for a {canvas_rows}x{canvas_cols} canvas, larger than the limit of {MAX_CANVAS}x{MAX_CANVAS}; \
             the paper's canvases are 60x60 and 100x100"
        )));
    }
    if canvas_rows < rows || canvas_cols < cols {
        return Err(bad_argument(format!(
            "{task:?} has a {canvas_rows}x{canvas_cols} canvas, smaller than the {rows}x{cols} digits; the digit must \
             fit inside the canvas (the paper puts 28x28 digits in 60x60)"
        )));
    }
    let (pieces, piece) = task.clutter();
    if pieces > MAX_PIECES {
        return Err(bad_argument(format!(
            "{task:?} asks for {pieces} clutter pieces per image, more than the limit of {MAX_PIECES}; the paper uses 4 \
             (60x60) and 8 (100x100)"
        )));
    }
    if pieces > 0 {
        if piece == 0 || piece > rows || piece > cols {
            return Err(bad_argument(format!(
                "{task:?} cuts {piece}x{piece} clutter pieces from {rows}x{cols} digits; a piece needs a side in \
                 1..={} (the paper cuts 8x8 from 28x28)",
                rows.min(cols)
            )));
        }
        if source.len() < 2 {
            return Err(bad_argument(format!(
                "{task:?} cuts clutter from the other digits of the set, but the set has {} image(s); it needs at \
                 least 2",
                source.len()
            )));
        }
    }
    Ok(())
}

/// Draws the placement of image `index` from its own stream. `validate` has checked that the
/// canvas holds the digit and that there is another digit to cut clutter from.
fn place(source: &Images, task: RamTask, seed: u64, index: usize) -> Placement {
    let (rows, cols) = (source.rows, source.cols);
    let (canvas_rows, canvas_cols) = task.canvas(rows, cols);
    let mut rng = Rng::from_key(&[seed, STREAM_TAG, index as u64]);
    // Uniform over every position that keeps the whole digit inside the canvas; for Centred
    // there is one such position and nothing is drawn.
    let digit_at = match task {
        RamTask::Centred => [0, 0],
        _ => [rng.index(canvas_rows - rows + 1), rng.index(canvas_cols - cols + 1)],
    };
    let (pieces, piece) = task.clutter();
    let clutter = (0..pieces)
        .map(|_| {
            // Uniform over the other len - 1 digits: skip over the image's own index.
            let other = rng.index(source.len() - 1);
            let from = if other >= index { other + 1 } else { other };
            let cut_at = [rng.index(rows - piece + 1), rng.index(cols - piece + 1)];
            let placed_at = [rng.index(canvas_rows - piece + 1), rng.index(canvas_cols - piece + 1)];
            Clutter { from, cut_at, placed_at }
        })
        .collect();
    Placement { index, digit_at, clutter }
}

/// Pastes the digit and its clutter into the blank canvas `out` (row-major, `canvas_cols` wide)
/// by pixel-wise maximum.
fn draw(source: &Images, task: RamTask, placement: &Placement, out: &mut [u8], canvas_cols: usize) {
    let paste = |out: &mut [u8], from: usize, cut_at: At, size: [usize; 2], at: At| {
        let digit = source.image(from);
        for r in 0..size[0] {
            let src = &digit[(cut_at[0] + r) * source.cols + cut_at[1]..][..size[1]];
            let dst = &mut out[(at[0] + r) * canvas_cols + at[1]..][..size[1]];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (*d).max(s);
            }
        }
    };
    paste(out, placement.index, [0, 0], [source.rows, source.cols], placement.digit_at);
    let (_, piece) = task.clutter();
    for c in &placement.clutter {
        paste(out, c.from, c.cut_at, [piece, piece], c.placed_at);
    }
}
