//! `attention.png` for recommendation: for the first held-out users, the last items of their
//! history, each in a cell shaded by the attention the position that predicts the next item
//! gave it (the last layer, averaged over heads; one colour bar for all), labelled with the
//! item's id in the data file, under a line with the held-out item and its rank among all
//! items (crate::ranking).

use std::path::Path;

use anyhow::{Context, Result};
use attune_nn::{Ctx, Model};
use attune_tensor::{DType, Device};
use plotters::prelude::*;

use super::{CENTER, LEFT, colour_bar, err, ink_on, label, shade};
use crate::batch::DeviceBatch;
use crate::evaluate::final_split;
use crate::ranking::{K, rank_of};
use crate::tasks::{IGNORE_INDEX, Task};

/// Users shown.
const USERS: usize = 8;
/// History items shown per user (the most recent).
const ITEMS: usize = 20;
const CELL_W: u32 = 54;
const CELL_H: u32 = 26;
const TITLE_PX: u32 = 44;
const MARGIN: u32 = 16;
const BAR_PX: u32 = 120;

/// Writes the plot of the first held-out users' attention over their past items to `path`.
pub(super) fn write(path: &Path, model: &Model, task: &dyn Task, device: &Device) -> Result<()> {
    let _guard = attune_tensor::no_grad();
    let split = final_split(task);
    let n = task.split_size(split).unwrap_or(USERS).clamp(1, USERS);
    let raw = task.batch(split, 0, n)?;
    let seq = raw.as_seq().context("plotting item attention: the task's batches are not sequences")?;
    let batch = DeviceBatch::new(&raw, device)?;
    let insp = model.inspect(batch.input(), None, &mut Ctx::eval())?;
    let last = insp.attention.last().context("plotting item attention: the model has no layers")?;
    let (heads, s) = (last.dims()[1], last.dims()[2]);
    let probs = last.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let logits = insp.logits.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let vocab = logits.len() / (seq.batch * s).max(1);

    struct Row {
        items: Vec<(u32, f32)>,
        hidden_before: usize,
        target: u32,
        rank: usize,
    }
    let mut rows = Vec::new();
    for b in 0..seq.batch {
        let (inputs, targets) = seq.row(b).context("plotting item attention: short batch")?;
        let Some(q) = targets.iter().position(|&t| t != IGNORE_INDEX) else { continue };
        // Mean over heads of the query position's row.
        let weight =
            |k: usize| (0..heads).map(|h| probs[((b * heads + h) * s + q) * s + k]).sum::<f32>() / heads as f32;
        let first = (q + 1).saturating_sub(ITEMS);
        let scores = &logits[(b * s + q) * vocab..(b * s + q + 1) * vocab];
        rows.push(Row {
            items: (first..=q).map(|k| (inputs[k], weight(k))).collect(),
            hidden_before: first,
            target: targets[q] as u32,
            rank: rank_of(scores, targets[q] as usize, None),
        });
    }

    let cols = rows.iter().map(|r| r.items.len()).max().unwrap_or(1) as u32;
    let block_h = 2 * CELL_H + 10;
    let width = (2 * MARGIN + cols * CELL_W).max(560) + BAR_PX;
    let height = TITLE_PX + rows.len() as u32 * block_h + MARGIN;
    let root = BitMapBackend::new(path, (width, height.max(300))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (main, bar) = root.split_horizontally(width - BAR_PX);
    let title = format!(
        "{}: attention of the next-item position over each user's last {ITEMS} items ({split} split, last layer)",
        task.name()
    );
    label(&main, &title, (MARGIN as i32, TITLE_PX as i32 / 2), 16, &BLACK, LEFT)?;
    let peak = rows.iter().flat_map(|r| r.items.iter().map(|i| i.1)).fold(0.0f32, f32::max) as f64;
    let peak = if peak > 0.0 { peak } else { 1.0 };
    let mut y = TITLE_PX as i32;
    for (u, row) in rows.iter().enumerate() {
        let verdict = if row.rank < K { RGBColor(0, 120, 0) } else { RGBColor(200, 0, 0) };
        let head = format!(
            "user {u}: next item {} ranked {} of all items{}",
            task.token_label(row.target),
            row.rank + 1,
            if row.hidden_before > 0 {
                format!(" ({} earlier items not shown)", row.hidden_before)
            } else {
                String::new()
            }
        );
        label(&main, &head, (MARGIN as i32, y + CELL_H as i32 / 2), 14, &verdict, LEFT)?;
        y += CELL_H as i32;
        for (c, &(item, w)) in row.items.iter().enumerate() {
            let x = MARGIN as i32 + c as i32 * CELL_W as i32;
            let v = f64::from(w) / peak;
            let cell = [(x, y), (x + CELL_W as i32 - 2, y + CELL_H as i32 - 2)];
            main.draw(&Rectangle::new(cell, shade(v).filled())).map_err(err)?;
            let centre = (x + CELL_W as i32 / 2 - 1, y + CELL_H as i32 / 2 - 1);
            label(&main, &task.token_label(item), centre, 12, &ink_on(v), CENTER)?;
        }
        y += CELL_H as i32 + 10;
    }
    colour_bar(&bar, peak, "attention weight")?;
    root.present().map_err(err)?;
    Ok(())
}
