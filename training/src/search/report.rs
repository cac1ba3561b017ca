//! The search's report: a Table-1-style `summary.md` of the best trials and a
//! Figure-3-style plot of validation accuracy against size and depth, from the ledger.

use std::path::Path;

use tpsnet_zoo::arch::LayerSpec;
use tpsnet_zoo::arch::group_thousands as group;

use super::ledger::{TrialRecord, TrialStatus};
use super::settings::SearchMeta;
use super::{PLOT_FILE, SUMMARY_FILE, SearchError};
use crate::metrics::{PlotError, rename_into_place};

/// Hyperparameter that colours the points of the plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorBy {
    /// Number of residual layers N.
    Layers,
    /// Blocks per layer (total over layers when they differ).
    Blocks,
    /// Stem channels C1.
    Channels,
    /// Width factor k.
    Width,
    /// Largest convolution kernel.
    Kernel,
    /// Largest skip-connection kernel.
    Skip,
    /// Average-pool kernel P.
    Pool,
    /// Dropout rate.
    Dropout,
    /// Peak learning rate.
    Lr,
    /// Batch size.
    Batch,
    /// Completed or stopped early.
    Status,
}

impl ColorBy {
    /// Every choice with its name (as `--color-by` takes it) and what it means.
    pub const ALL: [(ColorBy, &'static str, &'static str); 11] = [
        (ColorBy::Layers, "layers", "Number of residual layers N"),
        (
            ColorBy::Blocks,
            "blocks",
            "Blocks per layer (total over layers when they differ)",
        ),
        (ColorBy::Channels, "channels", "Stem channels C1"),
        (ColorBy::Width, "width", "Width factor k"),
        (ColorBy::Kernel, "kernel", "Largest conv kernel"),
        (ColorBy::Skip, "skip", "Largest skip kernel"),
        (ColorBy::Pool, "pool", "Average-pool kernel P"),
        (ColorBy::Dropout, "dropout", "Dropout"),
        (ColorBy::Lr, "lr", "Learning rate"),
        (ColorBy::Batch, "batch", "Batch size"),
        (ColorBy::Status, "status", "completed / stopped"),
    ];

    /// The name `--color-by` takes for this choice.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|c| c.0 == self)
            .map(|c| c.1)
            .expect("every choice is listed")
    }
}

/// A `--color-by` name that is not one of [`ColorBy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown colouring `{0}`; use one of {names}", names = ColorBy::names().join(", "))]
pub struct UnknownColorBy(pub String);

impl ColorBy {
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.1).collect()
    }
}

impl std::str::FromStr for ColorBy {
    type Err = UnknownColorBy;

    fn from_str(s: &str) -> Result<Self, UnknownColorBy> {
        Self::ALL
            .iter()
            .find(|c| c.1 == s)
            .map(|c| c.0)
            .ok_or_else(|| UnknownColorBy(s.to_string()))
    }
}

/// Finished trials best first: completed before stopped before failed, then by the
/// validation accuracy of the last epoch, then by index.
pub fn ranked(records: &[TrialRecord]) -> Vec<&TrialRecord> {
    let status_rank = |s: TrialStatus| match s {
        TrialStatus::Completed => 0,
        TrialStatus::Stopped => 1,
        TrialStatus::Failed => 2,
    };
    let mut v: Vec<&TrialRecord> = records.iter().collect();
    v.sort_by(|a, b| {
        status_rank(a.status)
            .cmp(&status_rank(b.status))
            .then_with(|| {
                let (x, y) = (
                    a.final_val_acc.unwrap_or(f64::NEG_INFINITY),
                    b.final_val_acc.unwrap_or(f64::NEG_INFINITY),
                );
                y.total_cmp(&x)
            })
            .then_with(|| a.plan.index.cmp(&b.plan.index))
    });
    v
}

/// Per-layer values as `3/5/3`.
fn joined(values: impl Iterator<Item = usize>) -> String {
    values.map(|x| x.to_string()).collect::<Vec<_>>().join("/")
}

/// Writes `summary.md` and the plot; returns the markdown.
pub fn write_report(
    dir: &Path,
    meta: &SearchMeta,
    records: &[TrialRecord],
    top: usize,
    color_by: ColorBy,
) -> Result<String, SearchError> {
    let count = |s: TrialStatus| records.iter().filter(|r| r.status == s).count();
    let rejected: u64 = records.iter().map(|r| r.plan.rejected_over_budget).sum();
    let mut md = String::new();
    md.push_str(&format!(
        "# Architecture search: top {} of {} trials\n\n",
        top.min(records.len()),
        records.len()
    ));
    md.push_str(&format!(
        "Random search under a budget of < {} trainable parameters (exact count); seed {}; \
         {} epochs per trial with the `{}` recipe (lr and batch size sampled). \
         {} completed, {} stopped early by successive halving, {} failed; \
         {rejected} sampled specs were rejected over the budget before any training.\n\n",
        group(meta.space.budget_params),
        meta.seed,
        meta.epochs,
        meta.recipe.name,
        count(TrialStatus::Completed),
        count(TrialStatus::Stopped),
        count(TrialStatus::Failed),
    ));
    md.push_str(&format!(
        "Scored by top-1 on a {}-image validation split held out of the {}training set, \
         after the trial's last epoch; the test set is never used.\n\n",
        meta.val_size,
        meta.train_limit
            .map(|n| format!("first {n} images of the "))
            .unwrap_or_default()
    ));
    md.push_str(
        "| rank | trial | N | blocks | C1 | k | F | K | P | dropout | lr | batch | params | MACs | depth | epochs | val acc (%) | status |\n\
         |---:|---|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (rank, r) in ranked(records).into_iter().take(top).enumerate() {
        let s = &r.plan.spec;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.1}M | {} | {}/{} | {} | {} |\n",
            rank + 1,
            r.plan.trial_id,
            s.layers.len(),
            joined(s.layers.iter().map(|l| l.blocks)),
            s.stem_channels,
            r.plan.width_factor,
            joined(s.layers.iter().map(|l| l.conv_kernel)),
            joined(s.layers.iter().map(|l| l.skip_kernel)),
            s.pool,
            s.dropout,
            r.plan.lr,
            r.plan.batch_size,
            group(r.plan.params),
            r.plan.macs as f64 / 1e6,
            r.plan.depth,
            r.epochs_done,
            r.plan.epochs,
            r.final_val_acc
                .map(|a| format!("{a:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.status.as_str()
        ));
    }
    let summary = dir.join(SUMMARY_FILE);
    std::fs::create_dir_all(dir)
        .and_then(|_| tpsnet_zoo::publish::write_atomic(&summary, md.as_bytes()))
        .map_err(|source| SearchError::Write {
            path: summary,
            source,
        })?;
    plot_search(&dir.join(PLOT_FILE), records, color_by)?;
    Ok(md)
}

fn color_value(r: &TrialRecord, by: ColorBy) -> f64 {
    let s = &r.plan.spec;
    let max = |f: fn(&LayerSpec) -> usize| s.layers.iter().map(f).max().unwrap_or(0) as f64;
    match by {
        ColorBy::Layers => s.layers.len() as f64,
        ColorBy::Blocks => {
            if s.layers.windows(2).all(|w| w[0].blocks == w[1].blocks) {
                s.layers[0].blocks as f64
            } else {
                s.layers.iter().map(|l| l.blocks).sum::<usize>() as f64
            }
        }
        ColorBy::Channels => s.stem_channels as f64,
        ColorBy::Width => r.plan.width_factor as f64,
        ColorBy::Kernel => max(|l| l.conv_kernel),
        ColorBy::Skip => max(|l| l.skip_kernel),
        ColorBy::Pool => s.pool as f64,
        ColorBy::Dropout => s.dropout,
        ColorBy::Lr => r.plan.lr,
        ColorBy::Batch => r.plan.batch_size as f64,
        ColorBy::Status => match r.status {
            TrialStatus::Completed => 0.0,
            TrialStatus::Stopped => 1.0,
            TrialStatus::Failed => 2.0,
        },
    }
}

fn color_name(by: ColorBy) -> String {
    by.name().to_string()
}

fn color_label(by: ColorBy, v: f64) -> String {
    match by {
        ColorBy::Status => [
            TrialStatus::Completed,
            TrialStatus::Stopped,
            TrialStatus::Failed,
        ][v as usize]
            .as_str()
            .into(),
        ColorBy::Dropout => format!("{v:.2}"),
        ColorBy::Lr => format!("{v:.3}"),
        _ => format!("{v}"),
    }
}

/// Groups of points with one colour and legend label each: every distinct value when
/// there are at most 8, else 6 equal-width bins.
fn colour_groups(values: &[f64], by: ColorBy) -> Vec<(String, Vec<usize>)> {
    let mut distinct: Vec<f64> = values.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() <= 8 {
        return distinct
            .iter()
            .map(|&d| {
                let idx = (0..values.len()).filter(|&i| values[i] == d).collect();
                (format!("{} {}", color_name(by), color_label(by, d)), idx)
            })
            .collect();
    }
    let (lo, hi) = (distinct[0], distinct[distinct.len() - 1]);
    let bins = 6;
    let width = (hi - lo) / bins as f64;
    (0..bins)
        .map(|b| {
            let (a, z) = (lo + width * b as f64, lo + width * (b + 1) as f64);
            let idx = (0..values.len())
                .filter(|&i| {
                    let bin = (((values[i] - lo) / width) as usize).min(bins - 1);
                    bin == b
                })
                .collect();
            (
                format!(
                    "{} {}–{}",
                    color_name(by),
                    color_label(by, a),
                    color_label(by, z)
                ),
                idx,
            )
        })
        .filter(|(_, idx): &(String, Vec<usize>)| !idx.is_empty())
        .collect()
}

/// Validation accuracy against parameters (left) and depth (right), one colour per
/// value of `color_by`; filled dots trained to the end, rings were stopped early.
fn plot_search(path: &Path, records: &[TrialRecord], by: ColorBy) -> Result<(), PlotError> {
    use plotters::prelude::*;
    let draw = |e: &dyn std::fmt::Display| PlotError::draw(path, e);
    let has_font = crate::metrics::register_font();
    let pts: Vec<&TrialRecord> = records
        .iter()
        .filter(|r| r.final_val_acc.is_some())
        .collect();
    let values: Vec<f64> = pts.iter().map(|r| color_value(r, by)).collect();
    let groups = colour_groups(&values, by);
    let accs: Vec<f64> = pts.iter().filter_map(|r| r.final_val_acc).collect();
    let scatter = Scatter {
        path,
        pts: &pts,
        accs: &accs,
        groups: &groups,
        y: accuracy_axis(&accs),
        has_font,
    };
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1400, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let root = if has_font {
            root.titled(
                &format!(
                    "Architecture search: validation accuracy of {} trials, coloured by {}",
                    pts.len(),
                    color_name(by)
                ),
                ("sans-serif", 24),
            )
            .map_err(|e| draw(&e))?
        } else {
            root
        };
        let panels = root.split_evenly((1, 2));
        let axes: [Axis; 2] = [
            ("trainable parameters (millions)", |r| {
                r.plan.params as f64 / 1e6
            }),
            ("depth (weighted layers)", |r| r.plan.depth as f64),
        ];
        for (panel, axis) in panels.iter().zip(axes) {
            scatter.draw_panel(panel, axis)?;
        }
        root.present().map_err(|e| draw(&e))?;
    }
    rename_into_place(&tmp, path)
}

/// The accuracy axis's range: the accuracies' with a margin, within [0, 100].
fn accuracy_axis(accs: &[f64]) -> (f64, f64) {
    let (mut y0, mut y1) = accs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !y0.is_finite() {
        (y0, y1) = (0.0, 100.0);
    }
    if y1 - y0 < 1.0 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = 0.08 * (y1 - y0);
    ((y0 - pad).max(0.0), (y1 + pad).min(100.0))
}

/// A panel's x axis: its description and each trial's value.
type Axis = (&'static str, fn(&TrialRecord) -> f64);

/// The trials of [`plot_search`], ready to draw against any x axis.
struct Scatter<'a> {
    path: &'a Path,
    pts: &'a [&'a TrialRecord],
    accs: &'a [f64],
    /// (legend label, indices into `pts`) per colour.
    groups: &'a [(String, Vec<usize>)],
    /// The accuracy axis's range.
    y: (f64, f64),
    has_font: bool,
}

impl Scatter<'_> {
    fn draw_panel(
        &self,
        panel: &plotters::drawing::DrawingArea<
            plotters::prelude::BitMapBackend<'_>,
            plotters::coord::Shift,
        >,
        (x_desc, x_of): Axis,
    ) -> Result<(), PlotError> {
        use plotters::prelude::*;
        let draw = |e: &dyn std::fmt::Display| PlotError::draw(self.path, e);
        let (pts, accs, has_font) = (self.pts, self.accs, self.has_font);
        let xs: Vec<f64> = pts.iter().map(|r| x_of(r)).collect();
        let x_max = xs.iter().copied().fold(0.0, f64::max).max(1e-3) * 1.08;
        let mut builder = ChartBuilder::on(panel);
        builder.margin(20);
        if has_font {
            builder.x_label_area_size(45).y_label_area_size(60);
        }
        let mut chart = builder
            .build_cartesian_2d(0f64..x_max, self.y.0..self.y.1)
            .map_err(|e| draw(&e))?;
        let mut mesh = chart.configure_mesh();
        if has_font {
            mesh.x_desc(x_desc).y_desc("validation top-1 (%)");
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(|e| draw(&e))?;
        for (g, (label, idx)) in self.groups.iter().enumerate() {
            let colour = Palette99::pick(g).to_rgba();
            let points = |completed: bool| {
                idx.iter()
                    .filter(|&&i| (pts[i].status == TrialStatus::Completed) == completed)
                    .map(|&i| (xs[i], accs[i]))
                    .collect::<Vec<(f64, f64)>>()
            };
            let s = chart
                .draw_series(
                    points(true)
                        .into_iter()
                        .map(|p| Circle::new(p, 6, colour.filled())),
                )
                .map_err(|e| draw(&e))?;
            if has_font {
                s.label(label.clone())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
            }
            chart
                .draw_series(
                    points(false)
                        .into_iter()
                        .map(|p| Circle::new(p, 6, colour.stroke_width(2))),
                )
                .map_err(|e| draw(&e))?;
        }
        if has_font && !self.groups.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw(&e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::test_support::record;

    #[test]
    fn ranking_puts_completed_first_then_accuracy() {
        let rs = vec![
            record(0, TrialStatus::Stopped, &[90.0]),
            record(1, TrialStatus::Completed, &[10.0, 20.0, 30.0]),
            record(2, TrialStatus::Completed, &[10.0, 20.0, 40.0]),
            record(3, TrialStatus::Failed, &[]),
        ];
        let ids: Vec<&str> = ranked(&rs)
            .iter()
            .map(|r| r.plan.trial_id.as_str())
            .collect();
        assert_eq!(ids, ["t0002", "t0001", "t0000", "t0003"]);
    }

    #[test]
    fn color_names_round_trip() {
        for (c, name, _) in ColorBy::ALL {
            assert_eq!(c.name(), name);
            assert_eq!(name.parse::<ColorBy>().unwrap(), c);
        }
        assert!(
            "size"
                .parse::<ColorBy>()
                .unwrap_err()
                .to_string()
                .contains("blocks")
        );
    }
}
