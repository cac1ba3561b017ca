//! Measuring a model on the CIFAR-10 test set and checking its manifest's claims.
//!
//! Every accuracy the manifest states is re-measured the same way it was claimed:
//! `metrics.top1` single-view, `metrics.top1_flip_tta` by averaging the logits of each
//! image and its horizontal mirror. The headline claim (`metrics.claim`, see
//! `Metrics::claimed_top1`) is always checked — a `flip_tta` claim turns TTA on — and
//! the other number is checked too when it is measured. A check fails when measured and
//! claimed top-1 differ by more than the tolerance (percentage points).

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;
use zoo::cifar::Cifar10;

use crate::classify::{Classifier, argmax};
use crate::error::Result;
use crate::preprocess::{IMAGE_FLOATS, InputImage};
use crate::session::Execution;

/// Default allowed |measured − claimed| top-1 difference, in percentage points.
pub const DEFAULT_TOLERANCE_PP: f64 = 0.1;

/// How to verify.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Also measure flip test-time augmentation (forced on when the claim is `flip_tta`).
    pub tta: bool,
    /// Allowed |measured − claimed| in percentage points.
    pub tolerance_pp: f64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            tta: false,
            tolerance_pp: DEFAULT_TOLERANCE_PP,
        }
    }
}

/// Accuracy of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub correct: u64,
    pub total: u64,
    /// Percent.
    pub accuracy: f64,
}

/// Results of one way of evaluating (single view or flip TTA).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// `single` or `flip_tta`.
    pub mode: String,
    pub images: u64,
    pub correct: u64,
    /// Top-1 in percent.
    pub top1: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Wall time of preprocessing + inference for this mode.
    pub seconds: f64,
    /// Images per second (a TTA image counts once though it runs twice).
    pub images_per_s: f64,
}

/// One claim checked against its measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// `top1` or `top1_flip_tta`.
    pub metric: String,
    /// Whether this is the manifest's headline claim.
    pub headline: bool,
    pub claimed: f64,
    pub measured: f64,
    /// measured − claimed, percentage points.
    pub difference_pp: f64,
    pub tolerance_pp: f64,
    pub passed: bool,
}

/// The verification of one model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelReport {
    pub name: String,
    pub model: String,
    pub manifest: String,
    pub sha256: String,
    pub execution: Execution,
    /// The manifest's headline mode: `single` or `flip_tta`.
    pub claim: String,
    pub single: Evaluation,
    pub flip_tta: Option<Evaluation>,
    pub checks: Vec<Check>,
    pub passed: bool,
}

/// The whole run, as written to the JSON report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    pub dataset: String,
    pub data_dir: String,
    pub images: u64,
    pub tolerance_pp: f64,
    pub tta_requested: bool,
    pub models: Vec<ModelReport>,
    pub passed: bool,
    pub runtime_version: String,
}

/// Runs the model over the whole dataset, single view or flip TTA, and scores it.
/// `progress` is called with the number of images finished so far.
pub fn evaluate(
    classifier: &Classifier,
    data: &Cifar10,
    flip_tta: bool,
    progress: &dyn Fn(u64),
) -> Result<Evaluation> {
    let classes = classifier.classes().len();
    let n = data.len();
    let start = Instant::now();
    let mut logits = Vec::with_capacity(n * classes);
    let batch = classifier.batch_size();
    let mut chw = Vec::with_capacity(batch * IMAGE_FLOATS);
    let mut flipped = Vec::with_capacity(batch * IMAGE_FLOATS);
    let mut done = 0u64;
    for first in (0..n).step_by(batch) {
        let last = (first + batch).min(n);
        chw.clear();
        flipped.clear();
        for i in first..last {
            let img = InputImage::from_planar_rgb8(data.image(i));
            if flip_tta {
                flipped.extend_from_slice(img.flipped_horizontally().as_slice());
            }
            chw.extend_from_slice(img.as_slice());
        }
        let mut out = classifier.logits_chw(&chw)?;
        if flip_tta {
            let other = classifier.logits_chw(&flipped)?;
            for (a, b) in out.iter_mut().zip(other) {
                *a = 0.5 * (*a + b);
            }
        }
        logits.extend_from_slice(&out);
        done += (last - first) as u64;
        progress(done);
    }
    let seconds = start.elapsed().as_secs_f64();
    let predicted: Vec<usize> = logits.chunks_exact(classes).map(argmax).collect();
    Ok(score(
        if flip_tta { "flip_tta" } else { "single" },
        classifier.classes(),
        &data.labels,
        &predicted,
        seconds,
    ))
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

/// Verifies one model: evaluates it and checks every claim of its manifest.
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
    let claim_is_tta = m.metrics.claim == "flip_tta";
    let single = evaluate(classifier, data, false, &|n| progress("single", n))?;
    let flip_tta = if opts.tta || claim_is_tta {
        Some(evaluate(classifier, data, true, &|n| {
            progress("flip_tta", n)
        })?)
    } else {
        None
    };
    let mut checks = vec![check(
        "top1",
        !claim_is_tta,
        m.metrics.top1,
        single.top1,
        opts.tolerance_pp,
    )];
    if let (Some(claimed), Some(eval)) = (m.metrics.top1_flip_tta, &flip_tta) {
        checks.push(check(
            "top1_flip_tta",
            claim_is_tta,
            claimed,
            eval.top1,
            opts.tolerance_pp,
        ));
    } else if claim_is_tta {
        // The claim says flip TTA but gives no TTA number: the headline falls back to
        // `top1` (see `Metrics::claimed_top1`), which was checked above.
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
        single,
        flip_tta,
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
    evaluation_text(&r.single, classes, &mut out);
    if let Some(t) = &r.flip_tta {
        evaluation_text(t, classes, &mut out);
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
