//! Per-epoch metrics: the JSON-lines/CSV log and the loss and accuracy curves
//! (the paper's Figures 4 and 5).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// What one epoch measured. Test figures are logged for the curves only; nothing is
/// ever selected on them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Mean training loss (label-smoothed cross-entropy) over the epoch's steps.
    pub train_loss: f64,
    /// Accuracy (%) on the augmented training batches, in training mode.
    pub train_acc: f64,
    /// Validation loss, when the run has a validation split.
    pub val_loss: Option<f64>,
    /// Validation top-1 (%), when the run has a validation split.
    pub val_acc: Option<f64>,
    /// Test loss, on the epochs the test set is evaluated.
    pub test_loss: Option<f64>,
    /// Test top-1 (%), on the epochs the test set is evaluated.
    pub test_acc: Option<f64>,
    /// Seconds spent training this epoch (evaluation excluded).
    pub train_time_s: f64,
    /// Training throughput of the epoch, in images per second.
    pub images_per_s: f64,
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// Writes `metrics.jsonl` and `metrics.csv` for the whole history (atomically).
pub fn write_logs(dir: &Path, history: &[EpochMetrics]) -> std::io::Result<()> {
    let mut jsonl = String::new();
    let mut csv = String::from(
        "epoch,lr,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,train_time_s,images_per_s\n",
    );
    for m in history {
        jsonl.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        jsonl.push('\n');
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.4},{},{},{},{},{:.3},{:.1}\n",
            m.epoch,
            m.lr,
            m.train_loss,
            m.train_acc,
            opt(m.val_loss),
            opt(m.val_acc),
            opt(m.test_loss),
            opt(m.test_acc),
            m.train_time_s,
            m.images_per_s
        ));
    }
    tpsnet_zoo::publish::write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    tpsnet_zoo::publish::write_atomic(&dir.join("metrics.csv"), csv.as_bytes())
}

/// Finds a TrueType font for the plot labels; plots are still drawn without one.
pub(crate) fn register_font() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let candidates = [
            std::env::var("TPSNET_PLOT_FONT").unwrap_or_default(),
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into(),
            "/usr/share/fonts/TTF/DejaVuSans.ttf".into(),
            "/usr/share/fonts/dejavu/DejaVuSans.ttf".into(),
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf".into(),
        ];
        for c in candidates.iter().filter(|c| !c.is_empty()) {
            if let Ok(bytes) = std::fs::read(c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Why a chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The plotting library failed.
    #[error("cannot draw {path}: {reason}")]
    Draw {
        /// The chart's file.
        path: PathBuf,
        /// The library's message.
        reason: String,
    },
    /// The chart could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The chart's file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

impl PlotError {
    /// A drawing failure of plotters (whose error types are generic over the backend).
    pub(crate) fn draw(path: &Path, reason: &dyn std::fmt::Display) -> Self {
        PlotError::Draw {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Moves a finished chart from its temporary name to `path`.
pub(crate) fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), PlotError> {
    std::fs::rename(tmp, path).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn plot(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<(), PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError::draw(path, e);
    let has_font = register_font();
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|s| s.2.iter()).collect();
    if points.is_empty() {
        return Ok(());
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if (y_max - y_min).abs() < 1e-9 {
        y_min -= 0.5;
        y_max += 0.5;
    }
    let pad = 0.05 * (y_max - y_min);
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20);
        if has_font {
            builder
                .caption(title, ("sans-serif", 24))
                .x_label_area_size(45)
                .y_label_area_size(65);
        }
        let mut chart = builder
            .build_cartesian_2d(0f64..x_max, (y_min - pad)..(y_max + pad))
            .map_err(|e| draw(&e))?;
        let mut mesh = chart.configure_mesh();
        if has_font {
            mesh.x_desc("epoch").y_desc(y_label);
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(|e| draw(&e))?;
        for (label, color, data) in series {
            if data.is_empty() {
                continue;
            }
            let s = chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                .map_err(|e| draw(&e))?;
            if has_font {
                let c = *color;
                s.label(*label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            }
        }
        if has_font {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw(&e))?;
        }
        root.present().map_err(|e| draw(&e))?;
    }
    rename_into_place(&tmp, path)
}

/// Draws `loss.png` and `accuracy.png` (train, validation and test vs epoch) in `dir`.
pub fn write_plots(dir: &Path, title: &str, history: &[EpochMetrics]) -> Result<(), PlotError> {
    let pick = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    plot(
        &dir.join("loss.png"),
        &format!("{title}: loss vs epoch"),
        "cross-entropy loss",
        &[
            ("train", BLUE, pick(&|m| Some(m.train_loss))),
            ("validation", GREEN, pick(&|m| m.val_loss)),
            ("test", RED, pick(&|m| m.test_loss)),
        ],
    )?;
    plot(
        &dir.join("accuracy.png"),
        &format!("{title}: accuracy vs epoch"),
        "top-1 accuracy (%)",
        &[
            ("train", BLUE, pick(&|m| Some(m.train_acc))),
            ("validation", GREEN, pick(&|m| m.val_acc)),
            ("test", RED, pick(&|m| m.test_acc)),
        ],
    )
}
