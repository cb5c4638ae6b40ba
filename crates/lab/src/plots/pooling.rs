//! `pooling.png`, for classifiers: the first held-out texts (their first 256 tokens), each token
//! in its own cell shaded by the weight the attention pooling gave it (one colour bar for all),
//! under a line with the true label and the model's prediction. A token is drawn as the task
//! names it ([`crate::tasks::Task::token_label`]): a byte outside printable ASCII (part of a
//! multi-byte UTF-8 character, or a control byte) as `·`, a word as itself.

use std::path::Path;

use anyhow::{Context, Result};
use attune_nn::{Ctx, Model};
use attune_tensor::{DType, Device};
use plotters::prelude::*;

use super::{CENTER, LEFT, colour_bar, err, ink_on, label, shade};
use crate::batch::DeviceBatch;
use crate::tasks::{Label, Split, Task, TaskConfig};

/// Examples shown.
const EXAMPLES: usize = 8;
/// Byte cells per line before a text wraps (wider word cells: fewer per line).
const MAX_COLS: usize = 64;
/// Tokens of each text shown.
const MAX_TOKENS: usize = 256;
/// Characters of a word shown.
const MAX_LABEL: usize = 12;
/// Pixels of one character cell, of the title strip, of the margin and of the colour bar.
const CELL_W: u32 = 15;
const CELL_H: u32 = 22;
const TITLE_PX: u32 = 44;
const MARGIN: u32 = 16;
const BAR_PX: u32 = 120;

/// Writes the plot of the first held-out texts to `path` (the first training texts when the
/// task holds none out).
pub(super) fn write(path: &Path, model: &Model, task: &dyn Task, device: &Device) -> Result<()> {
    let _guard = attune_tensor::no_grad();
    let split = if task.split_size(Split::Valid).unwrap_or(1) > 0 { Split::Valid } else { Split::Train };
    let n = task.split_size(split).unwrap_or(EXAMPLES).clamp(1, EXAMPLES);
    let raw = task.batch(split, 0, n)?;
    let b = raw.as_class().context("plotting pooling weights: the task's batches are not classification batches")?;
    let batch = DeviceBatch::new(&raw, device)?;
    let insp = model.inspect(batch.input(), batch.lengths.as_deref(), &mut Ctx::eval())?;
    let weights = insp
        .pooling
        .context("plotting pooling weights: the model has no pooling head")?
        .to_dtype(DType::F32)?
        .to_vec::<f32>()?;
    let logits = insp.logits.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let classes = class_names(task);
    let k = logits.len() / b.batch.max(1);

    // At most MAX_TOKENS tokens of each text, each cell as wide as the longest token's label
    // (one character for bytes, up to MAX_LABEL for words), in a plot about as wide either way.
    let rows: Vec<&[u32]> = (0..b.batch).filter_map(|r| b.row(r)).map(|t| &t[..t.len().min(MAX_TOKENS)]).collect();
    let texts: Vec<Vec<String>> = rows
        .iter()
        .map(|t| t.iter().map(|&tok| task.token_label(tok).chars().take(MAX_LABEL).collect()).collect())
        .collect();
    let widest = texts.iter().flatten().map(|l| l.chars().count()).max().unwrap_or(1) as u32;
    let cell_w = CELL_W.max(7 * widest + 6);
    let max_cols = (MAX_COLS as u32 * CELL_W / cell_w).max(4) as usize;
    let cols = rows.iter().map(|t| t.len()).max().unwrap_or(1).clamp(max_cols.min(24), max_cols);
    let lines = |len: usize| len.div_ceil(cols).max(1) as u32;
    let block_h = |len: usize| CELL_H + 4 + lines(len) * CELL_H + 14;
    let width = (2 * MARGIN + cols as u32 * cell_w).max(560) + BAR_PX;
    let height = TITLE_PX + rows.iter().map(|t| block_h(t.len())).sum::<u32>() + MARGIN;
    let root = BitMapBackend::new(path, (width, height.max(300))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (main, bar) = root.split_horizontally(width - BAR_PX);
    let shown = rows.len();
    label(
        &main,
        &format!(
            "Pooling weight of each token ({} example{} from the {split} split)",
            shown,
            if shown == 1 { "" } else { "s" }
        ),
        (MARGIN as i32, TITLE_PX as i32 / 2),
        18,
        &BLACK,
        LEFT,
    )?;
    let peak = weights.iter().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max) as f64;
    let peak = if peak > 0.0 { peak } else { 1.0 };
    let mut y = TITLE_PX as i32;
    for (r, text) in rows.iter().enumerate() {
        let row_logits = &logits[r * k..(r + 1) * k];
        let predicted = argmax(row_logits);
        let truth = b.labels[r] as usize;
        let name = |c: usize| classes.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
        let verdict = if predicted == truth { RGBColor(0, 120, 0) } else { RGBColor(200, 0, 0) };
        label(
            &main,
            &format!(
                "label {}   predicted {} (p = {:.2})",
                name(truth),
                name(predicted),
                softmax_at(row_logits, predicted)
            ),
            (MARGIN as i32, y + CELL_H as i32 / 2),
            14,
            &verdict,
            LEFT,
        )?;
        let top = y + CELL_H as i32 + 4;
        let seq = b.seq_len;
        for (i, name) in texts[r].iter().enumerate() {
            let w = weights[r * seq + i] as f64 / peak;
            let x0 = (MARGIN + (i % cols) as u32 * cell_w) as i32;
            let y0 = top + (i / cols) as i32 * CELL_H as i32;
            let cell = [(x0, y0), (x0 + cell_w as i32, y0 + CELL_H as i32)];
            main.draw(&Rectangle::new(cell, shade(w).filled())).map_err(err)?;
            main.draw(&Rectangle::new(cell, RGBColor(225, 225, 225).stroke_width(1))).map_err(err)?;
            let at = (x0 + cell_w as i32 / 2, y0 + CELL_H as i32 / 2);
            label(&main, name, at, if widest > 1 { 12 } else { 15 }, &ink_on(w), CENTER)?;
        }
        y += block_h(text.len()) as i32;
    }
    colour_bar(&bar, peak, "pooling weight")?;
    root.present().map_err(err)?;
    Ok(())
}

/// The class names in id order, as the data file writes them (strings without quotes).
fn class_names(task: &dyn Task) -> Vec<String> {
    match task.config() {
        TaskConfig::TextClassification(c) => c.classes.unwrap_or_default().iter().map(Label::plain).collect(),
        _ => Vec::new(),
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}

/// The softmax probability of entry `i`.
fn softmax_at(v: &[f32], i: usize) -> f64 {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = v.iter().map(|&x| (x as f64 - m).exp()).sum();
    (v[i] as f64 - m).exp() / z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_at_matches_a_hand_computation() {
        let p = softmax_at(&[0.0, 3.0_f32.ln()], 1);
        assert!((p - 0.75).abs() < 1e-6);
        assert_eq!(argmax(&[0.1, 3.0, -2.0]), 1);
    }
}
