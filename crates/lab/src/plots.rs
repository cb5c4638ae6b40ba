//! PNG plots of a run, in `plots/` (docs/metrics.md shows how to read them):
//!
//! - `loss.png`, `accuracy.png`: train and valid curves by step;
//! - `attention.png` ([`attention`]): every layer's and head's attention map on one held-out
//!   example, with position axes, a colour bar and the task's query and source positions marked;
//! - `pooling.png` ([`pooling`], classifiers only): held-out texts, each byte shaded by the
//!   weight the attention pooling gave it, with the true and predicted labels;
//! - for recommendation, `attention.png` ([`items`]) is instead held-out users' last items
//!   shaded by the attention the next-item prediction gave them;
//! - for a Vision Transformer, `attention.png` ([`patches`]) is instead held-out images
//!   overlaid with the attention rollout from the class token (or pooling) over their patches;
//! - `glimpses.png` ([`glimpses`], the RAM's tasks instead of the two above): held-out images
//!   with the boxes of each glimpse's scales on the policy's mean path, coloured by order.
//!
//! Text needs a TrueType font: the DejaVu or Liberation fonts Debian ships
//! (`fonts-dejavu-core`), or the file `ATTUNE_FONT` names; without one the plots are drawn
//! without any text.

mod attention;
mod glimpses;
mod items;
mod patches;
mod pooling;
pub mod search;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use attune_tensor::Device;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::MetricRow;
use crate::net::Net;
use crate::tasks::Task;

const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font once; false when none could be found, or `ATTUNE_FONT=none` (plots are then
/// drawn without text: a machine with no fonts, such as a bare GPU image, still gets its plots).
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        if std::env::var_os("ATTUNE_FONT").is_some_and(|v| v == "none") {
            return false;
        }
        let mut paths: Vec<PathBuf> = std::env::var_os("ATTUNE_FONT").map(PathBuf::from).into_iter().collect();
        paths.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
        paths.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// The drawing surface every plot uses.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Writes every plot into `dir/plots/`.
pub fn write_all(dir: &Path, rows: &[MetricRow], net: &Net, task: &dyn Task, device: &Device) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots)?;
    // Each picture is drawn into a temporary file and committed whole (docs/persistence.md).
    let commit = |name: &str, draw: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
        Ok(attune_persist::write_atomic_with(&plots.join(name), |tmp| draw(tmp).map_err(|e| format!("{e:#}")))?)
    };
    commit("loss.png", &|p| curves(p, rows, "loss", |r| r.loss, true))?;
    commit("accuracy.png", &|p| curves(p, rows, "accuracy", |r| r.accuracy, false))?;
    let model = match net {
        Net::Transformer(m) => m,
        Net::Ram { model, .. } => return commit("glimpses.png", &|p| glimpses::write(p, model, task, device)),
    };
    let pooling_png = plots.join("pooling.png");
    if model.config().patches.is_some() {
        let _ = std::fs::remove_file(pooling_png);
        return commit("attention.png", &|p| patches::write(p, model, task, device));
    }
    if crate::ranking::is_ranking(task) {
        let _ = std::fs::remove_file(pooling_png);
        return commit("attention.png", &|p| items::write(p, model, task, device));
    }
    commit("attention.png", &|p| attention::write(p, model, task, device))?;
    // A class token pools nothing: its attention is in attention.png.
    if task.num_classes().is_some() && !model.config().has_cls() {
        commit("pooling.png", &|p| pooling::write(p, model, task, device))?;
    } else {
        // A classifier's plot left by an earlier run in this directory would mislead.
        let _ = std::fs::remove_file(pooling_png);
    }
    Ok(())
}

/// The colour of `v` in `[0, 1]` on the scale all heat plots share: white through light blue
/// to dark blue, so that zero is the background and the largest values stand out.
fn shade(v: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 4] = [
        (0.0, [255.0, 255.0, 255.0]),
        (0.25, [189.0, 215.0, 238.0]),
        (0.6, [66.0, 146.0, 198.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let i = STOPS.iter().rposition(|s| s.0 <= v).unwrap_or(0).min(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let t = (v - a) / (b - a);
    let mix = |k: usize| (ca[k] + t * (cb[k] - ca[k])).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// How a byte token is drawn: printable ASCII as itself, anything else as `·`.
pub(crate) fn glyph(tok: u32) -> String {
    match u8::try_from(tok) {
        Ok(b) if b.is_ascii_graphic() => char::from(b).to_string(),
        Ok(b' ') => " ".into(),
        _ => "·".into(),
    }
}

/// Text that stays readable on `shade(v)`.
fn ink_on(v: f64) -> RGBColor {
    if v > 0.55 { WHITE } else { BLACK }
}

/// Draws `text` with its anchor `pos` at pixel `at` of `area`; nothing without a font.
fn label(area: &Area<'_>, text: &str, at: (i32, i32), size: u32, color: &RGBColor, pos: Pos) -> Result<()> {
    if !font_ready() {
        return Ok(());
    }
    let style = TextStyle::from(("sans-serif", size).into_font()).color(color).pos(pos);
    area.draw(&Text::new(text.to_string(), at, style)).map_err(err)
}

/// Left-aligned, vertically centred text anchor.
const LEFT: Pos = Pos { h_pos: HPos::Left, v_pos: VPos::Center };
/// Centred text anchor.
const CENTER: Pos = Pos { h_pos: HPos::Center, v_pos: VPos::Center };

/// A vertical colour bar for values `0..=peak` filling `area`, its axis labelled `desc`.
fn colour_bar(area: &Area<'_>, peak: f64, desc: &str) -> Result<()> {
    let labelled = font_ready();
    let mut builder = ChartBuilder::on(area);
    builder.margin_top(30).margin_bottom(50).margin_left(8).margin_right(if labelled { 4 } else { 8 });
    builder.x_label_area_size(0).y_label_area_size(0);
    if labelled {
        builder.right_y_label_area_size(70);
    }
    let peak = if peak.is_finite() && peak > 0.0 { peak } else { 1.0 };
    let mut chart = builder.build_cartesian_2d(0.0..1.0, 0.0..peak).map_err(err)?;
    const STEPS: usize = 128;
    chart
        .draw_series((0..STEPS).map(|i| {
            let (lo, hi) = (i as f64 / STEPS as f64, (i + 1) as f64 / STEPS as f64);
            Rectangle::new([(0.0, lo * peak), (1.0, hi * peak)], shade((lo + hi) / 2.0).filled())
        }))
        .map_err(err)?;
    chart.draw_series([Rectangle::new([(0.0, 0.0), (1.0, peak)], BLACK.stroke_width(1))]).map_err(err)?;
    if labelled {
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .y_desc(desc)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Train and valid curves of one metric against the step.
fn curves(path: &Path, rows: &[MetricRow], what: &str, value: impl Fn(&MetricRow) -> f64, log_y: bool) -> Result<()> {
    let series = |split: &str| -> Vec<(f64, f64)> {
        rows.iter().filter(|r| r.split == split && value(r).is_finite()).map(|r| (r.step as f64, value(r))).collect()
    };
    let (train, valid) = (series("train"), series("valid"));
    let all: Vec<f64> = train.iter().chain(&valid).map(|p| p.1).collect();
    let max_step = train.iter().chain(&valid).map(|p| p.0).fold(1.0, f64::max);
    let (mut lo, mut hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let labelled = font_ready();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16).x_label_area_size(if labelled { 40 } else { 8 }).y_label_area_size(if labelled {
        64
    } else {
        8
    });
    if labelled {
        builder.caption(format!("{what} by step"), ("sans-serif", 22));
    }
    let to_plot = |v: f64| if log_y { v.max(1e-6).log10() } else { v };
    let (ylo, yhi) = if log_y { (to_plot(lo), to_plot(hi)) } else { (lo.min(0.0), hi.max(1.0)) };
    let pad = ((yhi - ylo) * 0.05).max(1e-3);
    let mut chart = builder.build_cartesian_2d(0.0..max_step, (ylo - pad)..(yhi + pad)).map_err(err)?;
    if labelled {
        let y_desc = if log_y { format!("log10 {what}") } else { what.to_string() };
        chart.configure_mesh().x_desc("step").y_desc(y_desc).label_style(("sans-serif", 14)).draw().map_err(err)?;
    } else {
        // No tick labels either: drawing one needs the font there is none of.
        chart.configure_mesh().disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0).draw().map_err(err)?;
    }
    for (name, pts, color) in [("train", &train, BLUE), ("valid", &valid, RED)] {
        let s = chart
            .draw_series(LineSeries::new(pts.iter().map(|&(x, y)| (x, to_plot(y))), color.stroke_width(2)))
            .map_err(err)?;
        if labelled {
            s.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
    }
    if labelled {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_outside_printable_ascii_are_drawn_as_a_dot() {
        assert_eq!(glyph(u32::from(b'a')), "a");
        assert_eq!(glyph(u32::from(b' ')), " ");
        assert_eq!(glyph(0xc3), "·");
        assert_eq!(glyph(u32::from(b'\n')), "·");
        assert_eq!(glyph(crate::tasks::PAD_ID), "·");
    }

    #[test]
    fn the_shade_runs_from_white_to_dark_and_darkens_monotonically() {
        assert_eq!(shade(0.0), WHITE);
        assert_eq!(shade(1.0), RGBColor(8, 48, 107));
        assert_eq!(shade(f64::NAN), WHITE);
        let lum = |c: RGBColor| 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
        let mut last = f64::INFINITY;
        for i in 0..=100 {
            let l = lum(shade(i as f64 / 100.0));
            assert!(l <= last + 1e-9, "luminance rises at {i}");
            last = l;
        }
    }
}
