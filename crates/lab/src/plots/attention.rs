//! `attention.png`: one heat map per layer and head of the attention probabilities on the first
//! held-out example. Rows are query positions (top to bottom), columns key positions; one
//! colour bar gives the scale of every map. Markers outside each map point at the task's
//! [`Marks`]: red triangles at the right edge on the query rows, green triangles above the key
//! columns that hold what those queries need (MQAR's keys, the induction trigger).

use std::path::Path;

use anyhow::{Context, Result};
use attune_nn::{Ctx, Model};
use attune_tensor::{DType, Device};
use plotters::prelude::*;

use super::{Area, CENTER, LEFT, colour_bar, err, font_ready, label, shade};
use crate::batch::DeviceBatch;
use crate::tasks::{Batch, Marks, Split, Task};

/// Colour of the query markers.
const QUERY: RGBColor = RGBColor(214, 39, 40);
/// Colour of the source markers.
const SOURCE: RGBColor = RGBColor(44, 160, 44);
/// Pixels of the title strip, the legend strip and the colour bar column.
const TITLE_PX: u32 = 44;
const LEGEND_PX: u32 = 40;
const BAR_PX: u32 = 120;
/// Longest text whose bytes label the axes one by one.
const MAX_BYTE_TICKS: usize = 64;

/// Writes the maps of validation example 0 to `path`.
pub(super) fn write(path: &Path, model: &Model, task: &dyn Task, device: &Device) -> Result<()> {
    let _guard = attune_tensor::no_grad();
    let raw = task.batch(Split::Valid, 0, 1).or_else(|_| task.batch(Split::Train, 0, 1))?;
    // A text's bytes label its axes when they fit; sequence tasks' tokens are ids, so
    // their axes show positions.
    let (seq, marks, bytes) = match &raw {
        Batch::Seq(b) => {
            let (x, y) = b.row(0).context("plotting attention: the held-out batch is empty")?;
            (b.seq_len, task.marks(x, y), None)
        }
        Batch::Class(b) => {
            let row = b.row(0).context("plotting attention: the held-out batch is empty")?;
            (row.len(), Marks::default(), (row.len() <= MAX_BYTE_TICKS).then(|| row.to_vec()))
        }
        Batch::Image(_) => anyhow::bail!("plotting attention: image tasks train the RAM, which has glimpses.png"),
    };
    let batch = DeviceBatch::new(&raw, device)?;
    let insp = model.inspect(batch.input(), batch.lengths.as_deref(), &mut Ctx::eval())?;
    // Tick labels as the task names its tokens; a class token is one more position, in front.
    let bytes: Option<Vec<String>> = bytes.map(|b| {
        let names = b.iter().map(|&t| if t == u32::from(b' ') { "␣".into() } else { task.token_label(t) });
        if insp.cls { std::iter::once("CLS".to_string()).chain(names).collect() } else { names.collect() }
    });
    let seq = insp.attention.first().map_or(seq, |p| p.dims()[2]);
    let heads = insp.attention.first().map_or(0, |p| p.dims()[1]);
    let maps = insp
        .attention
        .iter()
        .map(|p| p.to_dtype(DType::F32)?.to_vec::<f32>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let peak = maps.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max) as f64;
    let layers = maps.len();

    let panel = (1400 / heads.max(1) as u32).clamp(300, 440);
    let legend = if marks.queries.is_empty() && marks.sources.is_empty() { 0 } else { LEGEND_PX };
    let size = (panel * heads.max(1) as u32 + BAR_PX, TITLE_PX + panel * layers.max(1) as u32 + legend);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (title, rest) = root.split_vertically(TITLE_PX);
    let (grid, legend_area) = rest.split_vertically(panel * layers.max(1) as u32);
    let (panels, bar) = grid.split_horizontally(panel * heads.max(1) as u32);
    label(
        &title,
        &format!("{} attention on held-out example 0: row = query position, column = key position", task.name()),
        (12, TITLE_PX as i32 / 2),
        18,
        &BLACK,
        LEFT,
    )?;
    let cells = panels.split_evenly((layers.max(1), heads.max(1)));
    for (l, map) in maps.iter().enumerate() {
        for h in 0..heads {
            // The batch holds one example: head h's (seq, seq) block; a classifier's batch is
            // its own length, so `seq` is the block size either way.
            let block = &map[h * seq * seq..(h + 1) * seq * seq];
            let title = format!("layer {l}, head {h}");
            heat_map(&root, &cells[l * heads + h], &title, block, seq, peak, &marks, bytes.as_deref())?;
        }
    }
    colour_bar(&bar, peak, "attention probability")?;
    if legend > 0 {
        draw_legend(&legend_area, &marks)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// One head's `(seq, seq)` map in `area`, with its markers drawn on `root` (they sit outside
/// the plotting area, which clips). With `bytes`, each tick is the byte at that position.
#[allow(clippy::too_many_arguments)]
fn heat_map(
    root: &Area<'_>,
    area: &Area<'_>,
    title: &str,
    map: &[f32],
    seq: usize,
    peak: f64,
    marks: &Marks,
    bytes: Option<&[String]>,
) -> Result<()> {
    let labelled = font_ready();
    // The title is drawn by hand, not as the chart's caption, to leave a strip between it and
    // the map for the source markers.
    label(area, title, (area.dim_in_pixel().0 as i32 / 2, 12), 15, &BLACK, CENTER)?;
    let mut builder = ChartBuilder::on(area);
    builder.margin(8).margin_right(18).margin_top(34);
    if labelled {
        builder.x_label_area_size(38).y_label_area_size(48);
    }
    let end = seq as f64 - 0.5;
    // Query 0 at the top, as in a matrix.
    let mut chart = builder.build_cartesian_2d(-0.5..end, end..-0.5).map_err(err)?;
    let peak = if peak > 0.0 { peak } else { 1.0 };
    chart
        .draw_series((0..seq * seq).map(|k| {
            let (i, j) = ((k / seq) as f64, (k % seq) as f64);
            Rectangle::new([(j - 0.5, i - 0.5), (j + 0.5, i + 0.5)], shade(map[k] as f64 / peak).filled())
        }))
        .map_err(err)?;
    if labelled {
        let tick = |v: &f64| match bytes {
            // A space would leave its tick blank.
            Some(b) => b.get(v.round().max(0.0) as usize).cloned().unwrap_or_default(),
            None => format!("{v:.0}"),
        };
        let (ticks, what) = match bytes {
            Some(_) => (seq + 1, "byte"),
            None => (9, "position"),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(ticks)
            .y_labels(ticks)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc(format!("key {what}"))
            .y_desc(format!("query {what}"))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
    }
    chart.draw_series([Rectangle::new([(-0.5, -0.5), (end, end)], BLACK.stroke_width(1))]).map_err(err)?;
    // Marker size: half a cell, between 3 and 6 pixels, so neighbours stay apart.
    let cell = (chart.backend_coord(&(1.0, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0).abs();
    let half = (cell / 2).clamp(3, 6);
    for &q in marks.queries.iter().filter(|&&q| q < seq) {
        let (x, y) = chart.backend_coord(&(end, q as f64));
        root.draw(&Polygon::new(vec![(x + 2, y), (x + 11, y - half), (x + 11, y + half)], QUERY.filled()))
            .map_err(err)?;
    }
    for &s in marks.sources.iter().filter(|&&s| s < seq) {
        let (x, y) = chart.backend_coord(&(s as f64, -0.5));
        root.draw(&Polygon::new(vec![(x, y - 2), (x - half, y - 11), (x + half, y - 11)], SOURCE.filled()))
            .map_err(err)?;
    }
    Ok(())
}

/// What the markers mean.
fn draw_legend(area: &Area<'_>, marks: &Marks) -> Result<()> {
    let y = LEGEND_PX as i32 / 2;
    area.draw(&Polygon::new(vec![(14, y), (24, y - 6), (24, y + 6)], QUERY.filled())).map_err(err)?;
    label(area, "query positions (supervised; right edge)", (32, y), 14, &BLACK, LEFT)?;
    if !marks.sources.is_empty() {
        let x = 380;
        area.draw(&Polygon::new(vec![(x, y + 5), (x - 6, y - 6), (x + 6, y - 6)], SOURCE.filled())).map_err(err)?;
        label(area, &format!("{} (top edge)", marks.source_name), (x + 14, y), 14, &BLACK, LEFT)?;
    }
    Ok(())
}
