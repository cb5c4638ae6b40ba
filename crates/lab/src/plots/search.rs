//! A study's plots, in `DIR/plots/` (docs/search.md shows how to read them):
//! `history.png` (each trial's value and the best so far), `parallel.png` (parallel
//! coordinates of the parameters, coloured by value), `importance.png` (random-forest
//! importance per parameter), `intermediate.png` (each trial's intermediate values by step,
//! pruned ones grey) and, with several objectives, `pareto.png` (the first two objectives with
//! the Pareto front).

use std::path::Path;

use anyhow::Result;
use attune_search::importance::{ForestConfig, importances};
use attune_search::pareto;
use attune_search::{Space, Trial, TrialState};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{Area, CENTER, err, font_ready, label, shade};

/// Writes every plot of the study into `dir/plots/`, each committed whole.
pub fn write_all(dir: &Path, space: &Space, trials: &[Trial]) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots)?;
    let commit = |name: &str, draw: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
        Ok(attune_persist::write_atomic_with(&plots.join(name), |tmp| draw(tmp).map_err(|e| format!("{e:#}")))?)
    };
    commit("history.png", &|p| history(p, space, trials))?;
    commit("parallel.png", &|p| parallel(p, space, trials))?;
    commit("importance.png", &|p| importance(p, space, trials))?;
    commit("intermediate.png", &|p| intermediate(p, trials))?;
    if space.directions.len() > 1 {
        commit("pareto.png", &|p| pareto_plot(p, space, trials))?;
    }
    Ok(())
}

fn complete(trials: &[Trial]) -> impl Iterator<Item = (&Trial, &[f64])> {
    trials.iter().filter(|t| t.state == TrialState::Complete).filter_map(|t| t.values.as_deref().map(|v| (t, v)))
}

/// `(lo, hi)` of `values` padded by 5%, or `(0, 1)` when there are none.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9 + lo.abs() * 1e-6);
    (lo - pad, hi + pad)
}

/// A titled chart frame with axis descriptions (no text without a font).
fn frame<'a, 'b>(
    root: &'a Area<'b>,
    title: &str,
    x: (f64, f64),
    y: (f64, f64),
    x_desc: &str,
    y_desc: &str,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let labelled = font_ready();
    let mut b = ChartBuilder::on(root);
    b.margin(16).x_label_area_size(if labelled { 40 } else { 8 }).y_label_area_size(if labelled { 70 } else { 8 });
    if labelled {
        b.caption(title, ("sans-serif", 22));
    }
    let mut chart = b.build_cartesian_2d(x.0..x.1, y.0..y.1).map_err(err)?;
    if labelled {
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).label_style(("sans-serif", 14)).draw().map_err(err)?;
    } else {
        chart.configure_mesh().disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0).draw().map_err(err)?;
    }
    Ok(chart)
}

fn history(path: &Path, space: &Space, trials: &[Trial]) -> Result<()> {
    let d = space.directions[0];
    let points: Vec<(f64, f64)> = complete(trials).map(|(t, v)| (t.number as f64, v[0])).collect();
    let mut best = Vec::new();
    for &(x, v) in &points {
        let b = best.last().map(|&(_, b): &(f64, f64)| if d.better(v, b) { v } else { b }).unwrap_or(v);
        best.push((x, b));
    }
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = trials.len().max(1) as f64;
    let mut chart =
        frame(&root, "optimisation history", (-0.5, n - 0.5), range(points.iter().map(|p| p.1)), "trial", "objective")?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled()))).map_err(err)?;
    chart.draw_series(LineSeries::new(best, RED.stroke_width(2))).map_err(err)?;
    root.present().map_err(err)
}

fn parallel(path: &Path, space: &Space, trials: &[Trial]) -> Result<()> {
    let d = space.directions[0];
    let rows: Vec<(Vec<f64>, f64)> = complete(trials).map(|(t, v)| (space.to_unit(&t.params), v[0])).collect();
    let (lo, hi) = range(rows.iter().map(|r| r.1));
    let axes = space.len() + 1;
    let root = BitMapBackend::new(path, (200 + 140 * axes as u32, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = frame(
        &root,
        "parallel coordinates (unit scale; colour: objective, dark = best)",
        (-0.3, axes as f64 - 0.7),
        (-0.05, 1.1),
        "",
        "",
    )?;
    // Worst first, so the best lines are drawn on top.
    let mut order: Vec<&(Vec<f64>, f64)> = rows.iter().collect();
    order.sort_by(|a, b| d.loss(b.1).partial_cmp(&d.loss(a.1)).unwrap_or(std::cmp::Ordering::Equal));
    for (u, v) in order {
        let score = (v - lo) / (hi - lo);
        let goodness = if d == attune_search::Direction::Maximize { score } else { 1.0 - score };
        let pts: Vec<(f64, f64)> = u.iter().copied().chain([score]).enumerate().map(|(i, y)| (i as f64, y)).collect();
        chart.draw_series(LineSeries::new(pts, shade(0.15 + 0.85 * goodness).stroke_width(2))).map_err(err)?;
    }
    for i in 0..axes {
        chart.draw_series(LineSeries::new([(i as f64, 0.0), (i as f64, 1.0)], BLACK.stroke_width(1))).map_err(err)?;
        let name = space.params.get(i).map(|p| p.name.as_str()).unwrap_or("objective");
        let at = chart.backend_coord(&(i as f64, 1.05));
        label(&root, name, at, 13, &BLACK, CENTER)?;
    }
    root.present().map_err(err)
}

fn importance(path: &Path, space: &Space, trials: &[Trial]) -> Result<()> {
    let imp = importances(space, trials, ForestConfig::default());
    let root = BitMapBackend::new(path, (900, 120 + 40 * space.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = space.len() as f64;
    let mut chart = frame(
        &root,
        "parameter importance (random forest, share of variance)",
        (0.0, 1.0),
        (-0.5, n - 0.5),
        "importance",
        "",
    )?;
    for (i, (name, v)) in imp.iter().rev().enumerate() {
        let y = i as f64;
        chart.draw_series([Rectangle::new([(0.0, y - 0.35), (*v, y + 0.35)], shade(0.7).filled())]).map_err(err)?;
        let at = chart.backend_coord(&(0.01, y));
        label(&root, &format!("{name}  {:.2}", v), at, 14, &BLACK, super::LEFT)?;
    }
    root.present().map_err(err)
}

fn intermediate(path: &Path, trials: &[Trial]) -> Result<()> {
    let steps = trials.iter().flat_map(|t| t.intermediate.iter().map(|&(s, _)| s as f64));
    let x = range(steps.chain([0.0]));
    let y = range(trials.iter().flat_map(|t| t.intermediate.iter().map(|&(_, v)| v)));
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = frame(&root, "intermediate values (grey: pruned)", x, y, "step", "intermediate value")?;
    for t in trials {
        let color = if t.state == TrialState::Pruned { RGBColor(170, 170, 170) } else { BLUE };
        let pts: Vec<(f64, f64)> = t.intermediate.iter().map(|&(s, v)| (s as f64, v)).collect();
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(1))).map_err(err)?;
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 2, color.filled()))).map_err(err)?;
    }
    root.present().map_err(err)
}

fn pareto_plot(path: &Path, space: &Space, trials: &[Trial]) -> Result<()> {
    let points: Vec<Vec<f64>> = complete(trials).map(|(_, v)| v.to_vec()).collect();
    let front = pareto::front(&points, &space.directions);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = frame(
        &root,
        "objectives (red: Pareto front)",
        range(points.iter().map(|p| p[0])),
        range(points.iter().map(|p| p[1])),
        "objective 1",
        "objective 2",
    )?;
    chart
        .draw_series(points.iter().map(|p| Circle::new((p[0], p[1]), 4, RGBColor(120, 120, 200).filled())))
        .map_err(err)?;
    let mut f: Vec<(f64, f64)> = front.iter().map(|&i| (points[i][0], points[i][1])).collect();
    f.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    chart.draw_series(LineSeries::new(f.clone(), RED.stroke_width(2))).map_err(err)?;
    chart.draw_series(f.into_iter().map(|p| Circle::new(p, 5, RED.filled()))).map_err(err)?;
    root.present().map_err(err)
}
