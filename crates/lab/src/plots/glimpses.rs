//! `glimpses.png`, for the RAM tasks: held-out images spread over the split (which is in
//! label order, so they show several classes), each with the boxes its glimpses covered on the
//! policy's mean path (the deterministic evaluation path), one box per scale (the finest bold),
//! coloured by the glimpse's order from yellow (first) to dark purple (last) and numbered at its
//! centre, under a line with the label and the prediction.

use std::path::Path;

use anyhow::{Context, Result};
use attune_nn::{RamMode, RecurrentAttentionModel};
use attune_tensor::{DType, Device, Rng};
use plotters::prelude::*;

use super::{CENTER, LEFT, err, label};
use crate::batch::DeviceBatch;
use crate::tasks::{Split, Task};

/// Images shown.
const EXAMPLES: usize = 6;
/// Plot pixels per image side (each image is scaled to it).
const PANEL: u32 = 300;
const MARGIN: u32 = 16;
const CAPTION: u32 = 26;
const TITLE_PX: u32 = 40;

/// The colour of glimpse `t` of `n`: viridis-like, light (first) to dark (last).
fn order_colour(t: usize, n: usize) -> RGBColor {
    const STOPS: [[f64; 3]; 4] = [[253.0, 231.0, 37.0], [53.0, 183.0, 121.0], [49.0, 104.0, 142.0], [68.0, 1.0, 84.0]];
    let x = if n > 1 { t as f64 / (n - 1) as f64 } else { 0.0 } * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let mix = |k: usize| (STOPS[i][k] + f * (STOPS[i + 1][k] - STOPS[i][k])).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// The pixel window `[start, start + side)` the sensor takes on an axis of `n` pixels at
/// location `l` (docs/ram.md, "Rounding": the nearest window, halves rounded up).
fn window(l: f64, n: usize, side: usize) -> (f64, f64) {
    let y = (l + 1.0) / 2.0 * n as f64;
    let start = (y - side as f64 / 2.0 + 0.5).floor();
    (start, start + side as f64)
}

/// One image of the plot: pixels, label, the mean path's locations and logits.
struct Example {
    pixels: Vec<f32>,
    label: i64,
    locations: Vec<f64>,
    logits: Vec<f32>,
}

/// The first image of each of `EXAMPLES` held-out batches spread over the split.
fn examples(model: &RecurrentAttentionModel, task: &dyn Task, device: &Device) -> Result<(Vec<Example>, usize, usize)> {
    let size = task.split_size(Split::Valid).unwrap_or(EXAMPLES).max(1);
    let n = size.min(EXAMPLES);
    let stride = size / n;
    let mut out = Vec::new();
    let (mut rows, mut cols) = (0, 0);
    for k in 0..n {
        let batch = DeviceBatch::new(&task.batch(Split::Valid, k as u64, stride)?, device)?;
        let images = batch.images.as_ref().context("plotting glimpses: the task's batches are not images")?;
        let first = images.narrow(0usize, 0, 1)?;
        (rows, cols) = (images.dims()[1], images.dims()[2]);
        let path = model.forward(&first, RamMode::Mean, &mut Rng::new(0))?;
        out.push(Example {
            pixels: first.to_dtype(DType::F32)?.to_vec::<f32>()?,
            label: batch.host_targets[0],
            locations: path.locations.to_dtype(DType::F64)?.to_vec::<f64>()?,
            logits: path.logits.to_dtype(DType::F32)?.to_vec::<f32>()?,
        });
    }
    Ok((out, rows, cols))
}

/// Writes the plot of held-out images with their glimpse paths to `path`.
pub(super) fn write(path: &Path, model: &RecurrentAttentionModel, task: &dyn Task, device: &Device) -> Result<()> {
    let _guard = attune_tensor::no_grad();
    let (examples, rows, cols) = examples(model, task, device)?;
    let n = examples.len();
    let cfg = model.config();
    let glimpses = cfg.glimpses;
    // Room around each image for the half of the largest patch that can lie outside it.
    let reach = (cfg.glimpse_size << (cfg.scales - 1)) as f64 / 2.0;

    let per_row = 3u32.min(n as u32);
    let grid_rows = (n as u32).div_ceil(per_row);
    let width = MARGIN + per_row * (PANEL + MARGIN);
    let height = TITLE_PX + grid_rows * (PANEL + CAPTION + MARGIN);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "{}: {} glimpses of {}x{} at {} scale{} (mean path; 1 = first, yellow to purple)",
        task.name(),
        glimpses,
        cfg.glimpse_size,
        cfg.glimpse_size,
        cfg.scales,
        if cfg.scales == 1 { "" } else { "s" }
    );
    label(&root, &title, (MARGIN as i32, TITLE_PX as i32 / 2), 16, &BLACK, LEFT)?;
    let px = PANEL as f64 / (rows.max(cols) as f64 + 2.0 * reach);
    for (b, ex) in examples.iter().enumerate() {
        let (gx, gy) = ((b as u32 % per_row), (b as u32 / per_row));
        let x0 = (MARGIN + gx * (PANEL + MARGIN)) as f64;
        let y0 = (TITLE_PX + gy * (PANEL + CAPTION + MARGIN) + CAPTION) as f64;
        let to_px = |r: f64, c: f64| ((x0 + (c + reach) * px).round() as i32, (y0 + (r + reach) * px).round() as i32);
        // Ink is dark on white, as the digits are printed.
        for r in 0..rows {
            for c in 0..cols {
                let v = ex.pixels[r * cols + c].clamp(0.0, 1.0);
                let g = (255.0 * (1.0 - v)).round() as u8;
                let cell = [to_px(r as f64, c as f64), to_px(r as f64 + 1.0, c as f64 + 1.0)];
                root.draw(&Rectangle::new(cell, RGBColor(g, g, g).filled())).map_err(err)?;
            }
        }
        let frame = [to_px(0.0, 0.0), to_px(rows as f64, cols as f64)];
        root.draw(&Rectangle::new(frame, RGBColor(160, 160, 160).stroke_width(1))).map_err(err)?;
        for t in 0..glimpses {
            let (lr, lc) = (ex.locations[t * 2], ex.locations[t * 2 + 1]);
            let colour = order_colour(t, glimpses);
            for s in 0..cfg.scales {
                let side = cfg.glimpse_size << s;
                let (r0, r1) = window(lr, rows, side);
                let (c0, c1) = window(lc, cols, side);
                let rect = [to_px(r0, c0), to_px(r1, c1)];
                // The finest patch bold, the coarser context thin, so 3-scale paths stay legible.
                let width = if s == 0 { 3 } else { 1 };
                root.draw(&Rectangle::new(rect, colour.stroke_width(width))).map_err(err)?;
            }
            let centre = to_px((lr + 1.0) / 2.0 * rows as f64, (lc + 1.0) / 2.0 * cols as f64);
            label(&root, &(t + 1).to_string(), centre, 14, &colour, CENTER)?;
        }
        let predicted = ex
            .logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
            .0;
        let truth = ex.label;
        let verdict = if predicted as i64 == truth { RGBColor(0, 120, 0) } else { RGBColor(200, 0, 0) };
        let at = (x0 as i32, (y0 - CAPTION as f64 / 2.0) as i32);
        label(&root, &format!("label {truth}   predicted {predicted}"), at, 14, &verdict, LEFT)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_sensor_rounding() {
        // docs/ram.md: at the centre of a 6-pixel axis a 2-pixel patch is pixels 2 and 3; at the
        // centre of 5 pixels it is 2 and 3 too (the tie goes down and right).
        assert_eq!(window(0.0, 6, 2), (2.0, 4.0));
        assert_eq!(window(0.0, 5, 2), (2.0, 4.0));
        assert_eq!(window(-1.0, 28, 8), (-4.0, 4.0));
        assert_ne!(order_colour(0, 6), order_colour(5, 6));
    }
}
