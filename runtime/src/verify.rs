//! Measuring a model on the CIFAR-10 test set and checking its manifest's claims.
//!
//! Every accuracy the manifest states is re-measured the same way it was claimed:
//! `metrics.top1` single-view, `metrics.top1_flip_tta` by averaging the logits of each
//! image and its horizontal mirror, `metrics.top1_6view` over six views (`tpsnet_zoo::tta`).
//! Single view and the headline claim's mode (`metrics.claim`, see
//! `Metrics::claimed_top1`) are always measured; the mode asked for with
//! [`VerifyOptions::tta`] too. Every claim whose mode was measured is checked. A check
//! fails when measured and claimed top-1 differ by more than the tolerance (percentage
//! points).
//!
//! The modes share their views ([`evaluate_modes`]): the image itself is a view of all
//! three, its mirror one of `flip` and `6view`, so verifying single view and flip TTA runs
//! two passes over the test set, not three, and adding six views runs six, not nine.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;
use tpsnet_zoo::cifar::Cifar10;

use crate::classify::{Classifier, argmax};
use crate::error::Result;
use crate::preprocess::{IMAGE_FLOATS, InputImage, SIDE};
use crate::session::Execution;
use tpsnet_zoo::tta::{self, TTA_MODES, TtaMode, View};

/// Default allowed |measured − claimed| top-1 difference, in percentage points.
pub const DEFAULT_TOLERANCE_PP: f64 = 0.1;

/// How to verify.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Also measure this test-time augmentation (the claim's mode is always measured).
    pub tta: Option<TtaMode>,
    /// Allowed |measured − claimed| in percentage points.
    pub tolerance_pp: f64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            tta: None,
            tolerance_pp: DEFAULT_TOLERANCE_PP,
        }
    }
}

/// Accuracy of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassAccuracy {
    /// The class name (CIFAR-10's `airplane`, ...).
    pub class: String,
    /// Test images of this class predicted correctly.
    pub correct: u64,
    /// Test images of this class.
    pub total: u64,
    /// Percent.
    pub accuracy: f64,
}

/// Results of one way of evaluating (single view, flip or six-view TTA).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// `single`, `flip_tta` or `6view` (`TtaMode::claim_name`).
    pub mode: String,
    /// Images evaluated.
    pub images: u64,
    /// Images whose top-1 prediction is their label.
    pub correct: u64,
    /// Top-1 in percent.
    pub top1: f64,
    /// Accuracy per class, in class-index order.
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Wall time of preprocessing + inference for this mode: with [`evaluate_modes`], the
    /// sum of the passes of this mode's views (what measuring the mode alone costs).
    pub seconds: f64,
    /// Images per second (a TTA image counts once though it runs once per view).
    pub images_per_s: f64,
}

/// One claim checked against its measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// `top1`, `top1_flip_tta` or `top1_6view`.
    pub metric: String,
    /// Whether this is the manifest's headline claim.
    pub headline: bool,
    /// What the manifest claims, percent.
    pub claimed: f64,
    /// What was measured, percent.
    pub measured: f64,
    /// measured − claimed, percentage points.
    pub difference_pp: f64,
    /// How far below the claim the measurement may fall, percentage points.
    pub tolerance_pp: f64,
    /// Whether `measured >= claimed - tolerance_pp`.
    pub passed: bool,
}

/// The verification of one model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelReport {
    /// The model's name in its manifest.
    pub name: String,
    /// Path of the ONNX file.
    pub model: String,
    /// Path of the manifest.
    pub manifest: String,
    /// sha256 (hex) of the ONNX file, as checked against the manifest.
    pub sha256: String,
    /// Where inference ran (backend, provider, device).
    pub execution: Execution,
    /// The manifest's headline mode: `single`, `flip_tta` or `6view`.
    pub claim: String,
    /// The single-view evaluation (always measured).
    pub single: Evaluation,
    /// The flip-TTA evaluation, when measured.
    pub flip_tta: Option<Evaluation>,
    /// The six-view TTA evaluation, when measured.
    #[serde(rename = "6view", skip_serializing_if = "Option::is_none")]
    pub six_view: Option<Evaluation>,
    /// Every claim of the manifest checked against its measurement.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub passed: bool,
}

/// The whole run, as written to the JSON report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The dataset evaluated on (`cifar10-test`).
    pub dataset: String,
    /// The folder the CIFAR-10 files were read from.
    pub data_dir: String,
    /// Test images used per model (all 10,000 unless limited).
    pub images: u64,
    /// The tolerance every check used, percentage points.
    pub tolerance_pp: f64,
    /// The mode `--tta` asked for, if any.
    pub tta_requested: Option<TtaMode>,
    /// One report per model verified.
    pub models: Vec<ModelReport>,
    /// Whether every model passed.
    pub passed: bool,
    /// This crate's version.
    pub runtime_version: String,
}

/// Runs the model over the whole dataset with the views of `tta` (each batch's views in
/// one call) and scores it. `progress` is called with the number of images finished.
pub fn evaluate(
    classifier: &Classifier,
    data: &Cifar10,
    tta: TtaMode,
    progress: &dyn Fn(u64),
) -> Result<Evaluation> {
    let classes = classifier.classes().len();
    let n = data.len();
    let start = Instant::now();
    let mut logits = Vec::with_capacity(n * classes);
    let batch = classifier.batch_size();
    let mut chw = Vec::with_capacity(batch * IMAGE_FLOATS);
    let mut done = 0u64;
    for first in (0..n).step_by(batch) {
        let last = (first + batch).min(n);
        chw.clear();
        for i in first..last {
            chw.extend_from_slice(InputImage::from_planar_rgb8(data.image(i)).as_slice());
        }
        logits.extend_from_slice(&classifier.logits_chw_tta(&chw, tta)?);
        done += (last - first) as u64;
        progress(done);
    }
    let seconds = start.elapsed().as_secs_f64();
    let predicted: Vec<usize> = logits.chunks_exact(classes).map(argmax).collect();
    Ok(score(
        tta.claim_name(),
        classifier.classes(),
        &data.labels,
        &predicted,
        seconds,
    ))
}

/// Evaluates each of `modes` over the whole dataset, running every distinct view the
/// modes use once (one pass over the data per view, batches of the classifier's batch
/// size) and averaging each mode's views with that mode's weights, the sum taken in the
/// same order as [`Classifier::logits_tta`]. One [`Evaluation`] per mode, in the order
/// given; a mode's `seconds` is the sum of its views' passes. `progress(view, done)` is
/// called with a label of the view being run (`view 2/6 (mirror)`) and the number of
/// images it has finished.
pub fn evaluate_modes(
    classifier: &Classifier,
    data: &Cifar10,
    modes: &[TtaMode],
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<Evaluation>> {
    let mut views: Vec<View> = Vec::new();
    for mode in modes {
        for v in mode.views() {
            if !views.iter().any(|u| same_view(u, v)) {
                views.push(*v);
            }
        }
    }
    let mut passes = Vec::with_capacity(views.len());
    for (k, view) in views.iter().enumerate() {
        let label = format!("view {}/{} ({})", k + 1, views.len(), view_name(view));
        passes.push(run_view(classifier, data, view, &|n| progress(&label, n))?);
    }
    let classes = classifier.classes().len();
    let n = data.len();
    let mut evaluations = Vec::with_capacity(modes.len());
    for &mode in modes {
        let spec = mode.views();
        let mine: Vec<&ViewPass> = spec
            .iter()
            .map(|v| {
                let k = views.iter().position(|u| same_view(u, v));
                &passes[k.expect("every view of a mode was run")]
            })
            .collect();
        let mut predicted = Vec::with_capacity(n);
        let mut mean = vec![0.0f32; classes];
        for i in 0..n {
            mean.fill(0.0);
            for (v, pass) in spec.iter().zip(&mine) {
                let row = &pass.logits[i * classes..(i + 1) * classes];
                for (m, l) in mean.iter_mut().zip(row) {
                    *m += v.weight * l;
                }
            }
            predicted.push(argmax(&mean));
        }
        let seconds = mine.iter().map(|p| p.seconds).sum();
        evaluations.push(score(
            mode.claim_name(),
            classifier.classes(),
            &data.labels,
            &predicted,
            seconds,
        ));
    }
    Ok(evaluations)
}

/// The logits of one view of every image, and how long computing them took.
struct ViewPass {
    logits: Vec<f32>,
    seconds: f64,
}

fn run_view(
    classifier: &Classifier,
    data: &Cifar10,
    view: &View,
    progress: &dyn Fn(u64),
) -> Result<ViewPass> {
    let n = data.len();
    let start = Instant::now();
    let mut logits = Vec::with_capacity(n * classifier.classes().len());
    let batch = classifier.batch_size();
    let mut chw = Vec::with_capacity(batch * IMAGE_FLOATS);
    let identity = same_view(view, &View::IDENTITY);
    for first in (0..n).step_by(batch) {
        let last = (first + batch).min(n);
        chw.clear();
        for i in first..last {
            let image = InputImage::from_planar_rgb8(data.image(i));
            if identity {
                chw.extend_from_slice(image.as_slice());
            } else {
                let at = chw.len();
                chw.resize(at + IMAGE_FLOATS, 0.0);
                tta::apply_view(image.as_slice(), 3, SIDE, SIDE, *view, &mut chw[at..]);
            }
        }
        logits.extend_from_slice(&classifier.logits_chw_tta(&chw, TtaMode::None)?);
        progress(last as u64);
    }
    Ok(ViewPass {
        logits,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Whether two views show the same pixels (their weights may differ).
fn same_view(a: &View, b: &View) -> bool {
    (a.mirror, a.dy, a.dx) == (b.mirror, b.dy, b.dx)
}

fn view_name(v: &View) -> String {
    match (v.mirror, v.dy == 0 && v.dx == 0) {
        (false, true) => "image".into(),
        (true, true) => "mirror".into(),
        (mirror, false) => format!(
            "{}shift {:+},{:+}",
            if mirror { "mirror, " } else { "" },
            v.dy,
            v.dx
        ),
    }
}

/// Scores predictions against labels: top-1, per-class accuracy, confusion matrix.
pub fn score(
    mode: &str,
    classes: &[String],
    labels: &[u8],
    predicted: &[usize],
    seconds: f64,
) -> Evaluation {
    let k = classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&t, &p) in labels.iter().zip(predicted) {
        let t = t as usize;
        if t < k && p < k {
            confusion[t][p] += 1;
        }
    }
    let per_class: Vec<ClassAccuracy> = classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let total: u64 = confusion[c].iter().sum();
            let correct = confusion[c][c];
            ClassAccuracy {
                class: name.clone(),
                correct,
                total,
                accuracy: percent(correct, total),
            }
        })
        .collect();
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let images = labels.len() as u64;
    Evaluation {
        mode: mode.to_string(),
        images,
        correct,
        top1: percent(correct, images),
        per_class,
        confusion,
        seconds,
        images_per_s: if seconds > 0.0 {
            images as f64 / seconds
        } else {
            0.0
        },
    }
}

fn percent(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn check(metric: &str, headline: bool, claimed: f64, measured: f64, tolerance_pp: f64) -> Check {
    let difference_pp = measured - claimed;
    Check {
        metric: metric.to_string(),
        headline,
        claimed,
        measured,
        difference_pp,
        tolerance_pp,
        // Compare with a hair of slack so that a difference of exactly the tolerance
        // (e.g. 0.1 pp = 10 images) passes despite floating-point rounding.
        passed: difference_pp.abs() <= tolerance_pp + 1e-9,
    }
}

/// Verifies one model: evaluates it ([`evaluate_modes`]) and checks every claim of its
/// manifest. `progress(view, done)` as in [`evaluate_modes`].
pub fn verify_model(
    classifier: &Classifier,
    data: &Cifar10,
    opts: &VerifyOptions,
    progress: &dyn Fn(&str, u64),
) -> Result<ModelReport> {
    let m = classifier.manifest();
    // A quick run (`train-zoo --test-limit N`) measured its claim on the first N test
    // images; checking it against all 10,000 would fail a claim that holds. Published
    // models always claim the full set (tests/published.rs).
    let claimed_on = m.metrics.images as usize;
    let first_n;
    let data = if claimed_on > 0 && claimed_on < data.len() {
        first_n = data.subset(0..claimed_on);
        &first_n
    } else {
        data
    };
    let claim = m.metrics.claim_mode();
    let modes: Vec<TtaMode> = TTA_MODES
        .into_iter()
        .filter(|&mode| mode == TtaMode::None || mode == claim || opts.tta == Some(mode))
        .collect();
    let evaluations = evaluate_modes(classifier, data, &modes, progress)?;
    let mut single = None;
    let mut flip_tta = None;
    let mut six_view = None;
    let mut checks = Vec::new();
    for (mode, eval) in modes.into_iter().zip(evaluations) {
        if let Some(claimed) = m.metrics.top1_for(mode) {
            checks.push(check(
                mode.metric_name(),
                mode == claim,
                claimed,
                eval.top1,
                opts.tolerance_pp,
            ));
        }
        *match mode {
            TtaMode::None => &mut single,
            TtaMode::Flip => &mut flip_tta,
            TtaMode::SixView => &mut six_view,
        } = Some(eval);
    }
    if !checks.iter().any(|c| c.headline) {
        // The claim names a mode but gives no number for it: the headline falls back to
        // `top1` (see `Metrics::claimed_top1`), which is always checked.
        checks[0].headline = true;
    }
    let passed = checks.iter().all(|c| c.passed);
    Ok(ModelReport {
        name: m.name.clone(),
        model: classifier.model_path().display().to_string(),
        manifest: classifier.manifest_path().display().to_string(),
        sha256: m.sha256.clone(),
        execution: classifier.execution().clone(),
        claim: m.metrics.claim.clone(),
        single: single.expect("single view is always measured"),
        flip_tta,
        six_view,
        checks,
        passed,
    })
}

/// Checks that a loaded dataset is what `verify --dataset cifar10-test` promises.
pub fn check_test_set(data: &Cifar10) -> std::result::Result<(), String> {
    if data.len() != 10_000 || data.labels.len() != 10_000 {
        return Err(format!(
            "the CIFAR-10 test set has 10000 images, this one has {}",
            data.len()
        ));
    }
    if let Some(bad) = data.labels.iter().find(|&&l| l >= 10) {
        return Err(format!("label {bad} is not a CIFAR-10 class (0..9)"));
    }
    Ok(())
}

fn evaluation_text(e: &Evaluation, classes: &[String], out: &mut String) {
    let _ = writeln!(
        out,
        "  {}: top-1 {:.2} % ({} / {}), {:.0} images/s ({:.1} s)",
        e.mode, e.top1, e.correct, e.images, e.images_per_s, e.seconds
    );
    let _ = writeln!(out, "    per class:");
    for c in &e.per_class {
        let _ = writeln!(
            out,
            "      {:<12} {:>6.2} %  ({} / {})",
            c.class, c.accuracy, c.correct, c.total
        );
    }
    let short: Vec<String> = classes
        .iter()
        .map(|c| c.chars().take(5).collect())
        .collect();
    let _ = writeln!(
        out,
        "    confusion matrix (rows: true class, columns: predicted):"
    );
    let mut header = format!("      {:<12}", "");
    for s in &short {
        let _ = write!(header, "{s:>6}");
    }
    let _ = writeln!(out, "{header}");
    for (name, row) in classes.iter().zip(&e.confusion) {
        let mut line = format!("      {name:<12}");
        for v in row {
            let _ = write!(line, "{v:>6}");
        }
        let _ = writeln!(out, "{line}");
    }
}

/// The human-readable verification summary of one model.
pub fn summary_text(r: &ModelReport, classes: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}), {} on {}",
        r.name, r.model, r.execution.provider, r.execution.device
    );
    for e in std::iter::once(&r.single)
        .chain(&r.flip_tta)
        .chain(&r.six_view)
    {
        evaluation_text(e, classes, &mut out);
    }
    for c in &r.checks {
        let _ = writeln!(
            out,
            "  {} {}{}: measured {:.2} %, manifest claims {:.2} % (difference {:+.2} pp, tolerance {:.2} pp)",
            if c.passed { "PASS" } else { "FAIL" },
            c.metric,
            if c.headline { " (headline claim)" } else { "" },
            c.measured,
            c.claimed,
            c.difference_pp,
            c.tolerance_pp
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_counts_per_class_and_confusion() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let labels = [0u8, 0, 1, 1, 2, 2];
        let predicted = [0usize, 1, 1, 1, 0, 2];
        let e = score("single", &classes, &labels, &predicted, 2.0);
        assert_eq!(e.correct, 4);
        assert!((e.top1 - 400.0 / 6.0).abs() < 1e-9);
        assert_eq!(
            e.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]
        );
        assert_eq!(e.per_class[1].accuracy, 100.0);
        assert_eq!(e.per_class[2].accuracy, 50.0);
        assert_eq!(e.images_per_s, 3.0);
    }

    #[test]
    fn tolerance_is_inclusive_and_symmetric() {
        assert!(check("top1", true, 90.0, 90.1, 0.1).passed);
        assert!(check("top1", true, 90.0, 89.9, 0.1).passed);
        assert!(!check("top1", true, 90.0, 90.11, 0.1).passed);
        assert!(!check("top1", true, 90.0, 89.0, 0.1).passed);
    }
}
