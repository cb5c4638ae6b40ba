//! `attention.png` for a Vision Transformer: held-out images, each overlaid with what the
//! prediction attended to, by attention rollout (Abnar & Zuidema 2020).
//!
//! **Rollout.** Each layer's attention is averaged over its heads and mixed half and half with
//! the identity (the residual connection carries the rest of each token through), rows
//! renormalised; the product over the layers, last layer on the left, says how much of each
//! input position reaches each final position. The class token's row of it (or, for a pooled
//! model, the pooling weights times it) gives one weight per patch; each pixel gets the mean
//! weight of the patches covering it, scaled so the image's largest is 1, and is drawn as the
//! grey image tinted by the heat colour of [`super::shade`] with that strength.

use std::path::Path;

use anyhow::{Context, Result, bail};
use attune_nn::{Ctx, Model, PatchSpec};
use attune_tensor::{DType, Device};
use plotters::prelude::*;

use super::{LEFT, err, label, shade};
use crate::batch::DeviceBatch;
use crate::evaluate::final_split;
use crate::tasks::Task;

/// Images shown.
const EXAMPLES: usize = 8;
/// Plot pixels per image side.
const PANEL: u32 = 240;
const MARGIN: u32 = 16;
const CAPTION: u32 = 26;
const TITLE_PX: u32 = 40;

/// Attention rollout of one example: `layers[l]` is layer `l`'s attention `(heads, s, s)`
/// flattened; returns the `s x s` product `A_L ... A_1` with `A_l = (mean_h P_l + I) / 2`,
/// each row renormalised to sum to 1.
pub fn rollout(layers: &[Vec<f64>], heads: usize, s: usize) -> Vec<f64> {
    let mut total: Vec<f64> = (0..s * s).map(|k| if k / s == k % s { 1.0 } else { 0.0 }).collect();
    for probs in layers {
        let mut a = vec![0.0; s * s];
        for h in 0..heads {
            for (k, v) in a.iter_mut().enumerate() {
                *v += probs[h * s * s + k] / heads as f64;
            }
        }
        for i in 0..s {
            a[i * s + i] += 1.0;
            let row = &mut a[i * s..(i + 1) * s];
            let sum: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum.max(f64::MIN_POSITIVE));
        }
        // total <- A_l total: this layer mixes what the layers below already mixed.
        let mut next = vec![0.0; s * s];
        for i in 0..s {
            for k in 0..s {
                let aik = a[i * s + k];
                if aik != 0.0 {
                    for j in 0..s {
                        next[i * s + j] += aik * total[k * s + j];
                    }
                }
            }
        }
        total = next;
    }
    total
}

/// The weight of each pixel `(rows * cols)`: the mean of `patch_weights` over the patches that
/// cover it, divided by the largest so the image's peak is 1.
pub fn pixel_weights(spec: &PatchSpec, patch_weights: &[f64]) -> Vec<f64> {
    let mut sum = vec![0.0; spec.rows * spec.cols];
    let mut count = vec![0usize; spec.rows * spec.cols];
    for (n, pixels) in spec.indices().chunks(spec.pixels()).enumerate() {
        for &p in pixels {
            sum[p] += patch_weights.get(n).copied().unwrap_or(0.0);
            count[p] += 1;
        }
    }
    let mean: Vec<f64> = sum.iter().zip(&count).map(|(s, &c)| if c > 0 { s / c as f64 } else { 0.0 }).collect();
    let peak = mean.iter().copied().fold(0.0, f64::max);
    mean.iter().map(|v| if peak > 0.0 { v / peak } else { 0.0 }).collect()
}

/// One panel: the image, its pixel weights, the label and the prediction.
struct Example {
    pixels: Vec<f32>,
    weights: Vec<f64>,
    label: i64,
    predicted: usize,
}

fn examples(model: &Model, spec: &PatchSpec, task: &dyn Task, device: &Device) -> Result<Vec<Example>> {
    let split = final_split(task);
    let size = task.split_size(split).unwrap_or(EXAMPLES).max(1);
    let n = size.min(EXAMPLES);
    let stride = size / n;
    let mut out = Vec::new();
    for k in 0..n {
        let batch = DeviceBatch::new(&task.batch(split, k as u64, stride)?, device)?;
        let images = batch.images.as_ref().context("plotting patches: the task's batches are not images")?;
        let first = images.narrow(0usize, 0, 1)?;
        let insp = model.inspect(&first, None, &mut Ctx::eval())?;
        let heads = model.config().n_heads;
        let s = spec.count() + usize::from(insp.cls);
        let layers: Vec<Vec<f64>> =
            insp.attention.iter().map(|p| p.to_dtype(DType::F64)?.to_vec::<f64>()).collect::<Result<_, _>>()?;
        let rolled = rollout(&layers, heads, s);
        // What the head reads, as weights over the final positions.
        let query: Vec<f64> = match &insp.pooling {
            _ if insp.cls => (0..s).map(|j| if j == 0 { 1.0 } else { 0.0 }).collect(),
            Some(w) => w.to_dtype(DType::F64)?.to_vec::<f64>()?,
            None => bail!("plotting patches: the model neither pools nor has a class token"),
        };
        let mut reach = vec![0.0; s];
        for (i, q) in query.iter().enumerate() {
            for (j, r) in reach.iter_mut().enumerate() {
                *r += q * rolled[i * s + j];
            }
        }
        let patch_weights = &reach[usize::from(insp.cls)..];
        let logits = insp.logits.to_dtype(DType::F64)?.to_vec::<f64>()?;
        let predicted =
            logits.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        out.push(Example {
            pixels: first.to_dtype(DType::F32)?.to_vec::<f32>()?,
            weights: pixel_weights(spec, patch_weights),
            label: batch.host_targets[0],
            predicted,
        });
    }
    Ok(out)
}

/// Writes the rollout overlays of held-out images to `path`.
pub(super) fn write(path: &Path, model: &Model, task: &dyn Task, device: &Device) -> Result<()> {
    let _guard = attune_tensor::no_grad();
    let spec = model.config().patches.context("plotting patches: the model is not a Vision Transformer")?;
    let examples = examples(model, &spec, task, device)?;
    let n = examples.len() as u32;
    let per_row = 4u32.min(n.max(1));
    let grid_rows = n.div_ceil(per_row);
    let width = MARGIN + per_row * (PANEL + MARGIN);
    let height = TITLE_PX + grid_rows * (PANEL + CAPTION + MARGIN);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let how = if model.config().has_cls() { "class token" } else { "pooling" };
    let title = format!(
        "{}: attention rollout from the {how} over {} patches of {}x{} (stride {}); darker blue = more",
        task.name(),
        spec.count(),
        spec.size,
        spec.size,
        spec.stride
    );
    label(&root, &title, (MARGIN as i32, TITLE_PX as i32 / 2), 15, &BLACK, LEFT)?;
    let px = PANEL as f64 / spec.rows.max(spec.cols) as f64;
    for (b, ex) in examples.iter().enumerate() {
        let (gx, gy) = (b as u32 % per_row, b as u32 / per_row);
        let x0 = (MARGIN + gx * (PANEL + MARGIN)) as f64;
        let y0 = (TITLE_PX + gy * (PANEL + CAPTION + MARGIN) + CAPTION) as f64;
        let to_px = |r: f64, c: f64| ((x0 + c * px).round() as i32, (y0 + r * px).round() as i32);
        for r in 0..spec.rows {
            for c in 0..spec.cols {
                let k = r * spec.cols + c;
                // Ink dark on white, tinted towards the heat colour by the pixel's weight.
                let grey = 255.0 * (1.0 - f64::from(ex.pixels[k].clamp(0.0, 1.0)));
                let heat = shade(ex.weights[k]);
                let alpha = 0.75 * ex.weights[k];
                let mix = |h: u8| ((1.0 - alpha) * grey + alpha * f64::from(h)).round() as u8;
                let cell = [to_px(r as f64, c as f64), to_px(r as f64 + 1.0, c as f64 + 1.0)];
                root.draw(&Rectangle::new(cell, RGBColor(mix(heat.0), mix(heat.1), mix(heat.2)).filled()))
                    .map_err(err)?;
            }
        }
        let frame = [to_px(0.0, 0.0), to_px(spec.rows as f64, spec.cols as f64)];
        root.draw(&Rectangle::new(frame, RGBColor(160, 160, 160).stroke_width(1))).map_err(err)?;
        let name = |id: usize| task.class_name(id);
        let verdict = if ex.predicted as i64 == ex.label { RGBColor(0, 120, 0) } else { RGBColor(200, 0, 0) };
        let text = format!("{} -> {}", name(ex.label as usize), name(ex.predicted));
        label(&root, &text, (x0 as i32, (y0 - CAPTION as f64 / 2.0) as i32), 14, &verdict, LEFT)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_of_identity_attention_is_the_identity_and_uniform_mixes_evenly() {
        let s = 3;
        let eye: Vec<f64> = (0..s * s).map(|k| if k / s == k % s { 1.0 } else { 0.0 }).collect();
        assert_eq!(rollout(&[eye.clone(), eye.clone()], 1, s), eye);
        // One layer, two heads: one attends uniformly, the other to itself. Mean: 1/6 off the
        // diagonal, 2/3 on it; plus I and halved: 1/12 off, 5/6 on.
        let uniform = vec![1.0 / 3.0; s * s];
        let r = rollout(&[[uniform, eye].concat()], 2, s);
        for (k, v) in r.iter().enumerate() {
            let want = if k / s == k % s { 5.0 / 6.0 } else { 1.0 / 12.0 };
            assert!((v - want).abs() < 1e-12, "{k}: {v}");
        }
    }

    #[test]
    fn rollout_multiplies_later_layers_on_the_left() {
        // Layer 1 sends position 1 to position 0; layer 2 sends position 0 to position 1.
        let l1 = vec![1.0, 0.0, 1.0, 0.0];
        let l2 = vec![0.0, 1.0, 0.0, 1.0];
        // A1 = [[1, 0], [1/2, 1/2]], A2 = [[1/2, 1/2], [0, 1]]; A2 A1 = [[3/4, 1/4], [1/2, 1/2]].
        let r = rollout(&[l1, l2], 1, 2);
        assert_eq!(r, vec![0.75, 0.25, 0.5, 0.5]);
    }

    #[test]
    fn pixel_weights_average_overlapping_patches_and_peak_at_one() {
        let spec = PatchSpec { rows: 2, cols: 3, size: 2, stride: 1 };
        // Patches cover columns 0-1 and 1-2; column 1 is shared.
        let w = pixel_weights(&spec, &[0.2, 0.6]);
        let want = [0.2 / 0.6, 0.4 / 0.6, 1.0];
        for r in 0..2 {
            for c in 0..3 {
                assert!((w[r * 3 + c] - want[c]).abs() < 1e-12, "{r},{c}: {}", w[r * 3 + c]);
            }
        }
    }
}
