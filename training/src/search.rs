//! Random architecture search under a parameter budget (the paper's method), with
//! asynchronous successive halving, a resumable trial ledger, a Table-1-style summary,
//! a Figure-3-style plot, and a trial runner that Ray Tune drives across a cluster.
//!
//! Read top to bottom:
//! * [`SearchSpace`]: what is sampled (a serde struct, loadable from JSON with `--space`).
//! * [`sample_trial`]: trial `i` of seed `s` is drawn from its own random stream, so a
//!   trial's spec never depends on how many trials ran before; specs at or over the
//!   budget are rejected (and counted) *before* any training, using the exact
//!   [`ResNetSpec::params`] count.
//! * [`Ledger`]: `<search-dir>/ledger.jsonl`, one JSON line per finished trial, appended
//!   with a single write and an fsync; a torn last line from a crash is dropped.
//! * [`Asha`]: the stopping rule of asynchronous successive halving.
//! * [`run_search`]: the local, in-process driver; [`run_trial`]: one trial as a process
//!   that streams per-epoch validation metrics as JSON lines (`search/ray_search.py`
//!   reports them to Ray Tune).
//! * [`write_report`]: `summary.md` and `accuracy-vs-size.png` from the ledger.
//!
//! Trials are scored on a validation split carved from the training set. `train()`
//! always evaluates its final weights on the test set; trials limit that to
//! [`TRIAL_TEST_IMAGES`] images and never read or record the figure.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use zoo::ResNetSpec;
use zoo::arch::LayerSpec;
use zoo::arch::group_thousands as group;

use crate::device;
use crate::export::utc_now;
use crate::metrics::EpochMetrics;
use crate::recipe::Recipe;
use crate::train::{RunConfig, RunResult, TrainError, checkpoint_path, train};

/// Test images `train()` evaluates at the end of a trial (it always does); never read.
pub const TRIAL_TEST_IMAGES: usize = 100;
/// File names inside a search directory.
pub const LEDGER_FILE: &str = "ledger.jsonl";
pub const META_FILE: &str = "search.json";
pub const SUMMARY_FILE: &str = "summary.md";
pub const PLOT_FILE: &str = "accuracy-vs-size.png";

// ---------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------

/// SplitMix64: a small, well-mixed generator; enough for sampling hyperparameters.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The independent stream of trial `index` in a search with `seed`.
    pub fn for_trial(seed: u64, index: u64) -> Self {
        let mut base = SplitMix64(seed);
        let key = base.next_u64() ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let mut rng = SplitMix64(key);
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform integer in [min, max].
    pub fn int_in(&mut self, r: &IntRange) -> usize {
        r.min + self.below((r.max - r.min + 1) as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------
// The search space
// ---------------------------------------------------------------------------------------

/// Inclusive integer range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntRange {
    pub min: usize,
    pub max: usize,
}

/// Inclusive real range, sampled uniformly (or log-uniformly with `log: true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatRange {
    pub min: f64,
    pub max: f64,
    #[serde(default)]
    pub log: bool,
}

impl FloatRange {
    fn sample(&self, rng: &mut SplitMix64) -> f64 {
        let u = rng.unit();
        if self.log {
            (self.min.ln() + u * (self.max.ln() - self.min.ln())).exp()
        } else {
            self.min + u * (self.max - self.min)
        }
    }
}

/// What a search samples. Layer `i` has `width_factor · C1 · 2^i` channels and stride 2
/// from the second layer on (the paper's family); everything else is drawn per trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// Strict upper bound on trainable parameters: a spec with `params() >= budget` is
    /// rejected before training (the paper: "< 5M").
    pub budget_params: u64,
    /// Specs with fewer parameters are rejected too (0: no lower bound).
    #[serde(default)]
    pub min_params: u64,
    /// Choices for the number of residual layers N (1..=6 for 32x32 inputs).
    pub num_layers: Vec<usize>,
    /// Blocks per layer B_i.
    pub blocks: IntRange,
    /// One B for every layer (the paper's models) instead of one per layer.
    pub same_blocks_in_every_layer: bool,
    /// Stem channels C1.
    pub stem_channels: IntRange,
    /// Choices for the width factor k (layer i has k·C1·2^i channels).
    pub width_factor: Vec<usize>,
    /// Choices for the conv kernel F_i (odd).
    pub conv_kernels: Vec<usize>,
    /// Choices for the projection-shortcut kernel K_i (odd).
    pub skip_kernels: Vec<usize>,
    /// One F and one K for the whole network instead of one per layer.
    pub same_kernels_in_every_layer: bool,
    /// Choices for the average-pool kernel P; those that do not divide the final
    /// feature map of a sampled N are left out for that trial.
    pub pool: Vec<usize>,
    /// Dropout between the two convs of each block.
    pub dropout: FloatRange,
    /// Peak learning rate of the trial's recipe.
    pub lr: FloatRange,
    /// Choices for the trial's batch size.
    pub batch_size: Vec<usize>,
}

impl Default for SearchSpace {
    /// A space like the paper's: under 5M parameters, 2–4 layers (mostly the paper used
    /// 3), equal blocks per layer, kernels 3/5, skips 1/3, dropout 0–0.5.
    fn default() -> Self {
        SearchSpace {
            budget_params: 5_000_000,
            min_params: 0,
            num_layers: vec![2, 3, 3, 4],
            blocks: IntRange { min: 1, max: 24 },
            same_blocks_in_every_layer: true,
            stem_channels: IntRange { min: 8, max: 48 },
            width_factor: vec![1, 2, 4],
            conv_kernels: vec![3, 5],
            skip_kernels: vec![1, 3],
            same_kernels_in_every_layer: false,
            pool: vec![2, 4, 8, 16],
            dropout: FloatRange {
                min: 0.0,
                max: 0.5,
                log: false,
            },
            lr: FloatRange {
                min: 0.005,
                max: 0.1,
                log: true,
            },
            batch_size: vec![64, 128, 256],
        }
    }
}

/// Side of the final feature map of an N-layer network on 32x32 inputs.
fn final_side(num_layers: usize) -> usize {
    32 >> num_layers.saturating_sub(1)
}

impl SearchSpace {
    /// Reads a space from a JSON file and checks it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read search space {}", path.display()))?;
        let space: SearchSpace = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid search space (print the default with `train-zoo search --print-space`)",
                path.display()
            )
        })?;
        space
            .validate()
            .map_err(|e| anyhow!("search space {}: {e}", path.display()))?;
        Ok(space)
    }

    /// Checks that every choice can produce a buildable network.
    pub fn validate(&self) -> Result<(), String> {
        let nonempty = |name: &str, v: &[usize]| {
            if v.is_empty() {
                Err(format!("`{name}` has no choices; give at least one"))
            } else if v.contains(&0) {
                Err(format!(
                    "`{name}` contains 0; every choice must be at least 1"
                ))
            } else {
                Ok(())
            }
        };
        nonempty("num_layers", &self.num_layers)?;
        nonempty("width_factor", &self.width_factor)?;
        nonempty("conv_kernels", &self.conv_kernels)?;
        nonempty("skip_kernels", &self.skip_kernels)?;
        nonempty("pool", &self.pool)?;
        nonempty("batch_size", &self.batch_size)?;
        for (name, r) in [
            ("blocks", &self.blocks),
            ("stem_channels", &self.stem_channels),
        ] {
            if r.min == 0 || r.min > r.max {
                return Err(format!(
                    "`{name}` must satisfy 1 <= min <= max (got {}..={})",
                    r.min, r.max
                ));
            }
        }
        for (name, v) in [
            ("conv_kernels", &self.conv_kernels),
            ("skip_kernels", &self.skip_kernels),
        ] {
            if let Some(k) = v.iter().find(|k| *k % 2 == 0) {
                return Err(format!(
                    "`{name}` contains the even kernel {k}; use odd sizes"
                ));
            }
        }
        if let Some(n) = self.num_layers.iter().find(|&&n| n > 6) {
            return Err(format!(
                "`num_layers` contains {n}; with stride 2 per layer a 32x32 input allows at most 6"
            ));
        }
        for &n in &self.num_layers {
            let side = final_side(n);
            if !self.pool.iter().any(|p| side % p == 0) {
                return Err(format!(
                    "no `pool` choice divides the {side}x{side} final map of a {n}-layer network; add a divisor of {side}"
                ));
            }
        }
        let d = &self.dropout;
        if !(0.0 <= d.min && d.min <= d.max && d.max < 1.0) || d.log {
            return Err(format!(
                "`dropout` must satisfy 0 <= min <= max < 1, not log-scaled (got {}..={})",
                d.min, d.max
            ));
        }
        let l = &self.lr;
        if !(l.min > 0.0 && l.min <= l.max && l.max.is_finite()) {
            return Err(format!(
                "`lr` must satisfy 0 < min <= max (got {}..={})",
                l.min, l.max
            ));
        }
        if self.min_params >= self.budget_params {
            return Err(format!(
                "`min_params` ({}) must be below `budget_params` ({})",
                self.min_params, self.budget_params
            ));
        }
        Ok(())
    }

    /// One candidate: every hyperparameter drawn once (no budget check yet).
    pub fn sample_candidate(&self, rng: &mut SplitMix64) -> Candidate {
        let n = rng.pick(&self.num_layers);
        let mut blocks = vec![rng.int_in(&self.blocks); n];
        if !self.same_blocks_in_every_layer {
            for b in blocks.iter_mut().skip(1) {
                *b = rng.int_in(&self.blocks);
            }
        }
        let c1 = rng.int_in(&self.stem_channels);
        let k = rng.pick(&self.width_factor);
        let (mut conv, mut skip) = (
            vec![rng.pick(&self.conv_kernels); n],
            vec![rng.pick(&self.skip_kernels); n],
        );
        if !self.same_kernels_in_every_layer {
            for i in 1..n {
                conv[i] = rng.pick(&self.conv_kernels);
                skip[i] = rng.pick(&self.skip_kernels);
            }
        }
        let side = final_side(n);
        let pools: Vec<usize> = self
            .pool
            .iter()
            .copied()
            .filter(|p| side % p == 0)
            .collect();
        let pool = rng.pick(&pools);
        // Two decimals for dropout, three significant digits for the learning rate:
        // readable in tables and exactly reproducible from the ledger.
        let dropout = ((self.dropout.sample(rng) * 100.0).round() / 100.0)
            .clamp(self.dropout.min, self.dropout.max);
        let lr = round_sig(self.lr.sample(rng), 3).clamp(self.lr.min, self.lr.max);
        let batch_size = rng.pick(&self.batch_size);
        let layers = (0..n)
            .map(|i| LayerSpec {
                blocks: blocks[i],
                channels: (k * c1) << i,
                conv_kernel: conv[i],
                skip_kernel: skip[i],
                stride: if i == 0 { 1 } else { 2 },
                kind: Default::default(),
            })
            .collect();
        Candidate {
            spec: ResNetSpec {
                input_size: 32,
                in_channels: 3,
                stem_channels: c1,
                stem_kernel: 3,
                stem_padding: None,
                layers,
                pool,
                head_pool: Default::default(),
                activation: Default::default(),
                dropout,
                num_classes: 10,
            },
            width_factor: k,
            lr,
            batch_size,
        }
    }
}

fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// One drawn point of the space, before the budget check.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub spec: ResNetSpec,
    pub width_factor: usize,
    pub lr: f64,
    pub batch_size: usize,
}

/// A trial as sampled: everything fixed before training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialPlan {
    /// `t0000`, `t0001`, ...: the trial's index in the search.
    pub trial_id: String,
    pub index: u64,
    pub spec: ResNetSpec,
    /// [`ResNetSpec::summary`], for people reading the ledger.
    pub summary: String,
    /// Exact trainable parameters ([`ResNetSpec::params`]).
    pub params: u64,
    /// Multiply-accumulates per image ([`ResNetSpec::macs`]).
    pub macs: u64,
    /// Weighted layers on the longest path ([`ResNetSpec::depth`]).
    pub depth: usize,
    pub width_factor: usize,
    pub lr: f64,
    pub batch_size: usize,
    /// Epochs the trial trains unless stopped early.
    pub epochs: u32,
    /// Candidates of this trial's stream rejected for being at or over the budget.
    pub rejected_over_budget: u64,
    /// Candidates rejected for being under `min_params`.
    pub rejected_under_min: u64,
}

pub fn trial_id(index: u64) -> String {
    format!("t{index:04}")
}

/// Draws trial `index` of the search: candidates from the trial's own stream until one
/// is under the budget (and at least `min_params`), counting the rejections.
pub fn sample_trial(
    space: &SearchSpace,
    seed: u64,
    index: u64,
    epochs: u32,
    max_attempts: u64,
) -> Result<TrialPlan> {
    let mut rng = SplitMix64::for_trial(seed, index);
    let (mut over, mut under) = (0u64, 0u64);
    for _ in 0..max_attempts {
        let c = space.sample_candidate(&mut rng);
        c.spec
            .validate()
            .map_err(|e| anyhow!("the search space produced an invalid spec: {e}"))?;
        let params = c.spec.params();
        if params >= space.budget_params {
            over += 1;
            continue;
        }
        if params < space.min_params {
            under += 1;
            continue;
        }
        return Ok(TrialPlan {
            trial_id: trial_id(index),
            index,
            summary: c.spec.summary(),
            params,
            macs: c.spec.macs(),
            depth: c.spec.depth(),
            spec: c.spec,
            width_factor: c.width_factor,
            lr: c.lr,
            batch_size: c.batch_size,
            epochs,
            rejected_over_budget: over,
            rejected_under_min: under,
        });
    }
    bail!(
        "trial {}: no spec within [{}, {}) parameters after {max_attempts} samples ({over} over the budget, {under} under the minimum); widen the space (smaller stem_channels/blocks/width_factor) or raise the budget",
        trial_id(index),
        space.min_params,
        space.budget_params
    )
}

// ---------------------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------------------

/// How a trial ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Trained all its epochs.
    Completed,
    /// Stopped early by successive halving.
    Stopped,
    /// Training failed (e.g. diverged); not retried on resume.
    Failed,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Completed => "completed",
            TrialStatus::Stopped => "stopped",
            TrialStatus::Failed => "failed",
        }
    }
}

/// One line of `ledger.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    #[serde(flatten)]
    pub plan: TrialPlan,
    pub status: TrialStatus,
    pub epochs_done: u32,
    /// Validation top-1 (%) after each epoch.
    pub val_acc: Vec<f64>,
    /// Validation loss after each epoch.
    pub val_loss: Vec<f64>,
    /// Validation top-1 after the last epoch trained: the trial's score.
    pub final_val_acc: Option<f64>,
    /// Seconds spent in training steps (evaluation excluded), summed over epochs.
    pub train_time_s: f64,
    /// Wall-clock seconds of the trial, data loading and evaluation included.
    pub wall_time_s: f64,
    /// Why the trial stopped early or failed.
    #[serde(default)]
    pub note: Option<String>,
    /// `local` (this process) or `ray` (search/ray_search.py).
    pub runner: String,
    pub finished_at: String,
}

impl TrialRecord {
    fn from_history(
        plan: &TrialPlan,
        history: &[EpochMetrics],
        status: TrialStatus,
        wall_time_s: f64,
        note: Option<String>,
    ) -> Self {
        let val_acc: Vec<f64> = history.iter().filter_map(|m| m.val_acc).collect();
        TrialRecord {
            plan: plan.clone(),
            status,
            epochs_done: history.len() as u32,
            final_val_acc: val_acc.last().copied(),
            val_loss: history.iter().filter_map(|m| m.val_loss).collect(),
            val_acc,
            train_time_s: history.iter().map(|m| m.train_time_s).sum(),
            wall_time_s,
            note,
            runner: "local".into(),
            finished_at: utc_now(),
        }
    }
}

/// The trial ledger: `<search-dir>/ledger.jsonl`.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// Finished trials in file order (first record of an id wins).
    pub records: Vec<TrialRecord>,
}

impl Ledger {
    /// Reads the ledger (an absent file is an empty ledger). A last line without its
    /// newline is a write torn by a crash: it is dropped and cut from the file so the
    /// next append starts on a clean line. Any other unreadable line is an error.
    pub fn open(path: &Path) -> Result<Self> {
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .with_context(|| format!("cannot read {}", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        }
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            eprintln!(
                "search: {}: dropping a torn last line ({} bytes) left by an interrupted write",
                path.display(),
                bytes.len() - complete
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot repair {}", path.display()))?;
            f.set_len(complete as u64)
                .and_then(|_| f.sync_all())
                .with_context(|| format!("cannot repair {}", path.display()))?;
        }
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let r: TrialRecord = serde_json::from_slice(line).with_context(|| {
                format!(
                    "{} line {} is not a trial record; fix or remove that line",
                    path.display(),
                    i + 1
                )
            })?;
            if seen.insert(r.plan.trial_id.clone()) {
                records.push(r);
            } else {
                eprintln!(
                    "search: {}: trial {} is recorded twice; keeping the first record",
                    path.display(),
                    r.plan.trial_id
                );
            }
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            records,
        })
    }

    pub fn is_finished(&self, id: &str) -> bool {
        self.records.iter().any(|r| r.plan.trial_id == id)
    }

    /// Appends one record as a single write, then fsyncs.
    pub fn append(&mut self, record: TrialRecord) -> Result<()> {
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {} for appending", self.path.display()))?;
        f.write_all(&line)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.records.push(record);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Successive halving
// ---------------------------------------------------------------------------------------

/// Asynchronous successive halving (ASHA) as a stopping rule: at each rung (epochs
/// `grace·eta^k` below the trial length) a trial continues only if its validation
/// accuracy is at least the `1 − 1/eta` quantile of what earlier trials reached at
/// that rung. The first trial at a rung always continues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asha {
    pub eta: u32,
    pub rungs: Vec<u32>,
}

impl Asha {
    pub fn new(grace_epochs: u32, eta: u32, epochs: u32) -> Self {
        let mut rungs = Vec::new();
        let mut r = grace_epochs.max(1);
        while r < epochs {
            rungs.push(r);
            r = r.saturating_mul(eta.max(2));
        }
        Asha {
            eta: eta.max(2),
            rungs,
        }
    }

    /// Accuracy a trial needs at a rung, given what earlier trials reached there.
    pub fn cutoff(&self, peers: &[f64]) -> Option<f64> {
        (!peers.is_empty()).then(|| quantile(peers, 1.0 - 1.0 / self.eta as f64))
    }

    /// Validation accuracies that finished trials reached at `rung` (failed ones excluded).
    pub fn peers_at(rung: u32, records: &[TrialRecord]) -> Vec<f64> {
        records
            .iter()
            .filter(|r| r.status != TrialStatus::Failed)
            .filter_map(|r| r.val_acc.get(rung as usize - 1).copied())
            .collect()
    }
}

/// Linear-interpolation quantile (numpy's default), `q` in [0, 1].
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

// ---------------------------------------------------------------------------------------
// Search settings on disk
// ---------------------------------------------------------------------------------------

/// `<search-dir>/search.json`: what defines the search. Resuming with different values
/// would silently mix incomparable trials, so it is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchMeta {
    pub seed: u64,
    pub space: SearchSpace,
    /// The trials' recipe before each trial's sampled `lr` and `batch_size`.
    pub recipe: Recipe,
    pub epochs: u32,
    pub train_limit: Option<usize>,
    pub val_size: usize,
}

impl SearchMeta {
    /// Writes the settings on first use; afterwards checks they are unchanged.
    fn establish(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILE);
        if path.exists() {
            let saved = Self::load(dir)?;
            let mut differs = Vec::new();
            if saved.seed != self.seed {
                differs.push(format!("seed ({} vs {})", saved.seed, self.seed));
            }
            if saved.space != self.space {
                differs.push("search space (--space/--budget)".into());
            }
            if saved.recipe != self.recipe {
                differs.push("trial recipe (--recipe/--set)".into());
            }
            if saved.epochs != self.epochs {
                differs.push(format!("epochs ({} vs {})", saved.epochs, self.epochs));
            }
            if (saved.train_limit, saved.val_size) != (self.train_limit, self.val_size) {
                differs.push("data selection (--train-limit/--val-size)".into());
            }
            if !differs.is_empty() {
                bail!(
                    "{} was started with other settings: {} differ(s). Resume with the same settings (see {}), or use another --search-dir",
                    dir.display(),
                    differs.join(", "),
                    path.display()
                );
            }
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let text = serde_json::to_string_pretty(self)?;
        zoo::manifest::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: is {} a search directory?",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is unreadable", path.display()))
    }

    /// The recipe trial `plan` trains with.
    pub fn trial_recipe(&self, plan: &TrialPlan) -> Recipe {
        let mut r = self.recipe.clone();
        r.epochs = plan.epochs;
        r.batch_size = plan.batch_size;
        r.optimizer.lr = plan.lr;
        // Random widths are rarely multiples of 8: see Recipe::fit_to_spec.
        r.fit_to_spec(&plan.spec).0
    }
}

/// One trial with everything a `train-zoo trial` process needs (`--emit-specs` output).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialJob {
    pub plan: TrialPlan,
    /// The full recipe of this trial (its lr, batch size and epochs applied).
    pub recipe: Recipe,
    pub seed: u64,
    pub train_limit: Option<usize>,
    pub val_size: usize,
}

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// Hyperparameter that colours the points of the plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorBy {
    /// Number of residual layers N.
    Layers,
    /// Blocks per layer (total over layers when they differ).
    Blocks,
    /// Stem channels C1.
    Channels,
    /// Width factor k.
    Width,
    /// Largest conv kernel.
    Kernel,
    /// Largest skip kernel.
    Skip,
    /// Average-pool kernel P.
    Pool,
    Dropout,
    Lr,
    Batch,
    /// completed / stopped.
    Status,
}

/// Arguments of `train-zoo search`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  train-zoo search --trials 40 --epochs 30                     the paper's search, locally
  train-zoo search --trials 40 --retrain-top 3                 ...then retrain the best 3 (fast recipe) and export ONNX
  train-zoo search --space my-space.json --budget 2000000
  train-zoo search --print-space > my-space.json              the default space, to edit
  train-zoo search --report --color-by lr                      summary.md and plot from the ledger only
  train-zoo search --trials 40 --emit-specs                    pending trials as JSON lines (Ray driver)
Re-running the same command resumes: finished trials (in ledger.jsonl) are skipped, an
interrupted trial continues from its checkpoint. See docs/search.md.")]
pub struct SearchArgs {
    /// Folder of the search: search.json, ledger.jsonl, trials/, summary.md, plot.
    #[arg(long, default_value = "runs/search")]
    pub search_dir: PathBuf,
    /// Search space JSON file (default: the built-in paper-like space).
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// Print the search space (default or --space) as JSON and exit.
    #[arg(long)]
    pub print_space: bool,
    /// Number of trials (re-running with a larger number extends the search).
    #[arg(long, visible_alias = "sample", default_value_t = 20)]
    pub trials: u64,
    /// Seed of the sampling (trial i's spec depends only on the seed and i) and of training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Parameter budget (strict upper bound), overriding the space's `budget_params`.
    #[arg(long)]
    pub budget: Option<u64>,
    /// Trials' recipe (paper, fast or a JSON file); lr and batch size are sampled.
    #[arg(long, default_value = "paper")]
    pub recipe: String,
    /// Change a field of the trials' recipe: path=value (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Epochs per trial (unless stopped early).
    #[arg(long, default_value_t = 30)]
    pub epochs: u32,
    /// Use the first N training images only (quick searches).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Validation images held out of the training set for scoring.
    #[arg(long, default_value_t = 5000)]
    pub val_size: usize,
    /// Train every trial to the end (no successive halving).
    #[arg(long)]
    pub no_early_stop: bool,
    /// Successive halving: keep the top 1/ETA at each rung.
    #[arg(long, default_value_t = 3)]
    pub eta: u32,
    /// Successive halving: first rung, in epochs (rungs at grace·eta^k).
    #[arg(long, default_value_t = 1)]
    pub grace_epochs: u32,
    /// Samples tried per trial before giving up on finding a spec under the budget.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_attempts: u64,
    /// auto (CUDA if present), cpu, cuda or cuda:N.
    #[arg(long, short, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Folder with the CIFAR-10 binary files.
    #[arg(long, env = "CIFAR10_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep each finished trial's checkpoint (default: deleted once recorded).
    #[arg(long)]
    pub keep_checkpoints: bool,
    /// Print the pending trials as JSON lines (for search/ray_search.py) and exit.
    #[arg(long, conflicts_with = "report")]
    pub emit_specs: bool,
    /// Train nothing: write summary.md and the plot from the ledger (and --retrain-top).
    #[arg(long)]
    pub report: bool,
    /// Rows in the summary table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Hyperparameter that colours the plot's points.
    #[arg(long, value_enum, default_value = "blocks")]
    pub color_by: ColorBy,
    /// Retrain the best K completed trials with --retrain-recipe and export them to ONNX.
    #[arg(long, default_value_t = 0)]
    pub retrain_top: usize,
    /// Recipe for --retrain-top (paper, fast or a JSON file).
    #[arg(long, default_value = "fast")]
    pub retrain_recipe: String,
    /// Override the retrain recipe's epochs.
    #[arg(long)]
    pub retrain_epochs: Option<u32>,
    /// Retrain with each trial's sampled lr and batch size instead of the recipe's.
    #[arg(long)]
    pub retrain_with_trial_hparams: bool,
    /// Also publish retrained models (ONNX, manifest, curves) into this folder.
    #[arg(long)]
    pub retrain_out: Option<PathBuf>,
    /// Retrain on the first N training images only (quick checks; the manifest says so).
    #[arg(long)]
    pub retrain_train_limit: Option<usize>,
    /// Evaluate retrained models on the first N test images only (quick checks).
    #[arg(long)]
    pub retrain_test_limit: Option<usize>,
}

/// Arguments of `train-zoo trial`.
#[derive(Args, Debug)]
#[command(after_help = "\
Stdout carries JSON lines only: {\"event\":\"epoch\",...} after every epoch (validation
accuracy and loss) and one {\"event\":\"done\",...} at the end (status completed, or
failed when training diverged); logs go to stderr. Other errors print no done line and
exit non-zero.
Give either --job (a line of `train-zoo search --emit-specs`) or --spec-json.
An existing checkpoint in --run-dir is resumed.")]
pub struct TrialArgs {
    /// The trial as one JSON object from `train-zoo search --emit-specs`.
    #[arg(long, conflicts_with_all = ["spec_json", "recipe", "epochs", "lr", "batch_size", "seed", "train_limit", "val_size"])]
    pub job: Option<String>,
    /// The architecture: a ResNetSpec as inline JSON or a .json file.
    #[arg(long)]
    pub spec_json: Option<String>,
    /// Trial id used in names and output (default: trial).
    #[arg(long)]
    pub trial_id: Option<String>,
    /// Recipe (paper, fast or a JSON file).
    #[arg(long)]
    pub recipe: Option<String>,
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Peak learning rate (default: the recipe's).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Validation images held out of the training set (must be > 0).
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Folder for the trial's checkpoint and logs.
    #[arg(long)]
    pub run_dir: PathBuf,
    #[arg(long, short, default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub threads: Option<i32>,
    #[arg(long, env = "CIFAR10_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Exit as soon as stdin closes (the driver died or stopped the trial).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

fn load_recipe(name: &str) -> Result<Recipe> {
    Recipe::resolve(name).map_err(|e| anyhow!(e))
}

impl SearchArgs {
    fn space(&self) -> Result<SearchSpace> {
        let mut space = match &self.space {
            Some(p) => SearchSpace::load(p)?,
            None => SearchSpace::default(),
        };
        if let Some(b) = self.budget {
            space.budget_params = b;
        }
        space.validate().map_err(|e| anyhow!("search space: {e}"))?;
        Ok(space)
    }

    fn meta(&self) -> Result<SearchMeta> {
        if self.val_size == 0 {
            bail!(
                "a search scores trials on a validation split of the training set; --val-size must be > 0"
            );
        }
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        let recipe = load_recipe(&self.recipe)?
            .with_overrides(&self.sets)
            .map_err(|e| anyhow!(e))?;
        Ok(SearchMeta {
            seed: self.seed,
            space: self.space()?,
            recipe,
            epochs: self.epochs,
            train_limit: self.train_limit,
            val_size: self.val_size,
        })
    }
}

// ---------------------------------------------------------------------------------------
// `train-zoo search`
// ---------------------------------------------------------------------------------------

/// Runs `train-zoo search`.
pub fn run_search(args: SearchArgs) -> Result<()> {
    if args.print_space {
        println!("{}", serde_json::to_string_pretty(&args.space()?)?);
        return Ok(());
    }
    let dir = args.search_dir.clone();
    if args.report {
        let meta = SearchMeta::load(&dir)?;
        let ledger = Ledger::open(&dir.join(LEDGER_FILE))?;
        report_and_retrain(&args, &meta, &ledger)?;
        return Ok(());
    }
    let meta = args.meta()?;
    meta.establish(&dir)?;
    let mut ledger = Ledger::open(&dir.join(LEDGER_FILE))?;
    let plans: Vec<TrialPlan> = (0..args.trials)
        .map(|i| sample_trial(&meta.space, meta.seed, i, meta.epochs, args.max_attempts))
        .collect::<Result<_>>()?;
    let pending: Vec<&TrialPlan> = plans
        .iter()
        .filter(|p| !ledger.is_finished(&p.trial_id))
        .collect();
    if args.emit_specs {
        let mut out = std::io::stdout().lock();
        for plan in pending {
            let job = TrialJob {
                plan: plan.clone(),
                recipe: meta.trial_recipe(plan),
                seed: meta.seed,
                train_limit: meta.train_limit,
                val_size: meta.val_size,
            };
            writeln!(out, "{}", serde_json::to_string(&job)?)?;
        }
        return Ok(());
    }
    let rejected: u64 = plans.iter().map(|p| p.rejected_over_budget).sum();
    eprintln!(
        "search: {} trials under {} parameters ({rejected} sampled specs rejected over the budget); {} already in {}, {} to run",
        plans.len(),
        group(meta.space.budget_params),
        plans.len() - pending.len(),
        dir.join(LEDGER_FILE).display(),
        pending.len()
    );
    if !pending.is_empty() {
        let dev = device::parse(&args.device).map_err(|e| anyhow!(e))?;
        if let Some(t) = args.threads {
            tch::set_num_threads(t);
        }
        let data_dir = zoo::cifar::resolve_dir(args.data_dir.as_deref())?;
        let asha =
            (!args.no_early_stop).then(|| Asha::new(args.grace_epochs, args.eta, meta.epochs));
        if let Some(a) = &asha {
            eprintln!(
                "search: successive halving at epochs {:?}, keeping the top 1/{} (--no-early-stop disables it)",
                a.rungs, a.eta
            );
        }
        eprintln!("search: training on {}", device::describe(dev));
        let local = LocalRun {
            meta: &meta,
            dir: &dir,
            data_dir: &data_dir,
            device: dev,
            asha: asha.as_ref(),
            keep_checkpoints: args.keep_checkpoints,
        };
        let total = plans.len();
        for plan in pending {
            let record = local.run(plan, &ledger.records)?;
            eprintln!(
                "search: {} [{}/{total}] {} — {} params, lr {}, batch {}: {} after {} epoch(s), val acc {}, {:.1} s",
                plan.trial_id,
                plan.index + 1,
                plan.summary,
                group(plan.params),
                plan.lr,
                plan.batch_size,
                record.status.as_str(),
                record.epochs_done,
                record
                    .final_val_acc
                    .map(|a| format!("{a:.2} %"))
                    .unwrap_or_else(|| "-".into()),
                record.wall_time_s
            );
            ledger.append(record)?;
        }
    }
    report_and_retrain(&args, &meta, &ledger)
}

fn report_and_retrain(args: &SearchArgs, meta: &SearchMeta, ledger: &Ledger) -> Result<()> {
    let table = write_report(
        &args.search_dir,
        meta,
        &ledger.records,
        args.top,
        args.color_by,
    )?;
    println!("{table}");
    eprintln!(
        "search: wrote {} and {}",
        args.search_dir.join(SUMMARY_FILE).display(),
        args.search_dir.join(PLOT_FILE).display()
    );
    if args.retrain_top > 0 {
        retrain_top(args, meta, &ledger.records)?;
    }
    Ok(())
}

/// The in-process trial runner of a local search.
struct LocalRun<'a> {
    meta: &'a SearchMeta,
    dir: &'a Path,
    data_dir: &'a Path,
    device: tch::Device,
    asha: Option<&'a Asha>,
    keep_checkpoints: bool,
}

impl LocalRun<'_> {
    fn config(&self, plan: &TrialPlan, stop_after: u32) -> RunConfig {
        RunConfig {
            name: plan.trial_id.clone(),
            spec: plan.spec.clone(),
            recipe: self.meta.trial_recipe(plan),
            seed: self.meta.seed,
            device: self.device,
            data_dir: self.data_dir.to_path_buf(),
            run_dir: self.dir.join("trials").join(&plan.trial_id),
            train_limit: self.meta.train_limit,
            test_limit: Some(TRIAL_TEST_IMAGES),
            val_size: self.meta.val_size,
            eval_test_every: 0,
            resume: true,
            progress: false,
            stop_after: Some(stop_after),
        }
    }

    /// Trains one trial, rung by rung, to completion, an early stop or a divergence.
    /// An existing checkpoint (an interrupted earlier attempt) is continued exactly.
    fn run(&self, plan: &TrialPlan, finished: &[TrialRecord]) -> Result<TrialRecord> {
        let t0 = Instant::now();
        let run_dir = self.dir.join("trials").join(&plan.trial_id);
        let ckpt = checkpoint_path(&run_dir);
        let mut history: Vec<EpochMetrics> = Vec::new();
        let mut earlier_wall = 0.0;
        if ckpt.exists() {
            // stop_after = 0 loads the checkpoint without training an epoch.
            let r = self.train_chunk(plan, 0)?;
            history = r.history;
            // The wall time of an earlier, interrupted attempt is not on disk; its
            // training time is, and stands in for it.
            earlier_wall = history.iter().map(|m| m.train_time_s).sum();
            eprintln!(
                "search: {}: continuing from its checkpoint after epoch {}",
                plan.trial_id,
                history.len()
            );
        }
        let rungs: &[u32] = self.asha.map_or(&[], |a| &a.rungs);
        let wall = |t0: Instant| earlier_wall + t0.elapsed().as_secs_f64();
        loop {
            let done = history.len() as u32;
            // Rungs already reached: the same peers give the same decision on resume.
            if let Some(asha) = self.asha {
                for &rung in rungs.iter().filter(|&&r| r <= done) {
                    let acc = history[rung as usize - 1].val_acc.unwrap_or(f64::NAN);
                    let peers = Asha::peers_at(rung, finished);
                    if let Some(cut) = asha.cutoff(&peers) {
                        if acc < cut {
                            let note = format!(
                                "successive halving at epoch {rung}: val acc {acc:.2} % < cutoff {cut:.2} % (top 1/{} of {} earlier trials)",
                                asha.eta,
                                peers.len()
                            );
                            self.finish(&ckpt);
                            return Ok(TrialRecord::from_history(
                                plan,
                                &history,
                                TrialStatus::Stopped,
                                wall(t0),
                                Some(note),
                            ));
                        }
                    }
                }
            }
            if done >= plan.epochs {
                self.finish(&ckpt);
                return Ok(TrialRecord::from_history(
                    plan,
                    &history,
                    TrialStatus::Completed,
                    wall(t0),
                    None,
                ));
            }
            let next = rungs
                .iter()
                .copied()
                .find(|&r| r > done)
                .unwrap_or(plan.epochs);
            match self.train_chunk(plan, next - done) {
                Ok(r) => history = r.history,
                Err(TrainError::Diverged { epoch, value }) => {
                    self.finish(&ckpt);
                    return Ok(TrialRecord::from_history(
                        plan,
                        &history,
                        TrialStatus::Failed,
                        wall(t0),
                        Some(format!("diverged: loss {value} in epoch {epoch}")),
                    ));
                }
                Err(e) => {
                    return Err(anyhow!(e).context(format!(
                        "trial {} ({}) in {}",
                        plan.trial_id,
                        plan.summary,
                        run_dir.display()
                    )));
                }
            }
        }
    }

    fn train_chunk(&self, plan: &TrialPlan, epochs: u32) -> Result<RunResult, TrainError> {
        train(&self.config(plan, epochs))
    }

    fn finish(&self, ckpt: &Path) {
        if !self.keep_checkpoints && ckpt.exists() {
            if let Err(e) = std::fs::remove_file(ckpt) {
                eprintln!("search: warning: cannot remove {}: {e}", ckpt.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// `train-zoo trial`
// ---------------------------------------------------------------------------------------

/// One JSON line on the trial's stdout.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum TrialEvent<'a> {
    Epoch {
        trial_id: &'a str,
        epoch: u32,
        epochs: u32,
        val_acc: Option<f64>,
        val_loss: Option<f64>,
        train_loss: f64,
        train_acc: f64,
        train_time_s: f64,
        elapsed_s: f64,
    },
    Done {
        trial_id: &'a str,
        status: TrialStatus,
        epochs_done: u32,
        final_val_acc: Option<f64>,
        wall_time_s: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

fn emit(event: &TrialEvent) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the driver is gone; nothing useful is left to do with it.
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(event).expect("events serialise")
    );
    let _ = out.flush();
}

fn epoch_event<'a>(id: &'a str, epochs: u32, t0: Instant, m: &EpochMetrics) -> TrialEvent<'a> {
    TrialEvent::Epoch {
        trial_id: id,
        epoch: m.epoch,
        epochs,
        val_acc: m.val_acc,
        val_loss: m.val_loss,
        train_loss: m.train_loss,
        train_acc: m.train_acc,
        train_time_s: m.train_time_s,
        elapsed_s: t0.elapsed().as_secs_f64(),
    }
}

fn read_metrics_log(path: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl TrialArgs {
    fn job(&self) -> Result<TrialJob> {
        if let Some(text) = &self.job {
            return serde_json::from_str(text)
                .context("--job is not a line of `train-zoo search --emit-specs`");
        }
        let Some(spec_arg) = &self.spec_json else {
            bail!("give --job (from `train-zoo search --emit-specs`) or --spec-json");
        };
        let text = if spec_arg.trim_start().starts_with('{') {
            spec_arg.clone()
        } else {
            std::fs::read_to_string(spec_arg)
                .with_context(|| format!("cannot read spec file {spec_arg}"))?
        };
        let spec: ResNetSpec = serde_json::from_str(&text)
            .context("--spec-json is not a valid ResNetSpec (see `train-zoo list --json`)")?;
        spec.validate().context("--spec-json")?;
        let mut recipe = load_recipe(self.recipe.as_deref().unwrap_or("paper"))?;
        if let Some(e) = self.epochs {
            recipe.epochs = e;
        }
        if let Some(b) = self.batch_size {
            recipe.batch_size = b;
        }
        if let Some(lr) = self.lr {
            recipe.optimizer.lr = lr;
        }
        let id = self.trial_id.clone().unwrap_or_else(|| "trial".into());
        Ok(TrialJob {
            plan: TrialPlan {
                trial_id: id,
                index: 0,
                summary: spec.summary(),
                params: spec.params(),
                macs: spec.macs(),
                depth: spec.depth(),
                spec,
                width_factor: 0,
                lr: recipe.optimizer.lr,
                batch_size: recipe.batch_size,
                epochs: recipe.epochs,
                rejected_over_budget: 0,
                rejected_under_min: 0,
            },
            recipe,
            seed: self.seed.unwrap_or(0),
            train_limit: self.train_limit,
            val_size: self.val_size.unwrap_or(5000),
        })
    }
}

/// Runs `train-zoo trial`: one training run that streams per-epoch validation metrics.
pub fn run_trial(args: TrialArgs) -> Result<()> {
    let job = args.job()?;
    if job.val_size == 0 {
        bail!("a trial is scored on a validation split; --val-size must be > 0");
    }
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().lock().read_to_end(&mut sink);
            eprintln!("train-zoo trial: stdin closed, stopping (the checkpoint is kept)");
            std::process::exit(143);
        });
    }
    let dev = device::parse(&args.device).map_err(|e| anyhow!(e))?;
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let data_dir = zoo::cifar::resolve_dir(args.data_dir.as_deref())?;
    let run_dir = args.run_dir.clone();
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let log = run_dir.join("metrics.jsonl");
    if !checkpoint_path(&run_dir).exists() && log.exists() {
        // A log without a checkpoint belongs to an earlier, finished run.
        std::fs::remove_file(&log).with_context(|| format!("cannot remove {}", log.display()))?;
    }
    let id = job.plan.trial_id.clone();
    let epochs = job.recipe.epochs;
    let t0 = Instant::now();
    // train() rewrites metrics.jsonl atomically after every epoch; a watcher streams
    // each new epoch while training goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, log, id) = (stop.clone(), log.clone(), id.clone());
        std::thread::spawn(move || {
            let mut sent = 0u32;
            loop {
                let last_round = stop.load(Ordering::Acquire);
                for m in read_metrics_log(&log) {
                    if m.epoch > sent {
                        emit(&epoch_event(&id, epochs, t0, &m));
                        sent = m.epoch;
                    }
                }
                if last_round {
                    return sent;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let cfg = RunConfig {
        name: id.clone(),
        spec: job.plan.spec.clone(),
        recipe: job.recipe.clone(),
        seed: job.seed,
        device: dev,
        data_dir,
        run_dir: run_dir.clone(),
        train_limit: job.train_limit,
        test_limit: Some(TRIAL_TEST_IMAGES),
        val_size: job.val_size,
        eval_test_every: 0,
        resume: true,
        progress: false,
        stop_after: None,
    };
    eprintln!(
        "train-zoo trial {id}: {} ({} params), {} epochs, lr {}, batch {}, on {}",
        job.plan.summary,
        group(job.plan.params),
        epochs,
        job.recipe.optimizer.lr,
        job.recipe.batch_size,
        device::describe(dev)
    );
    let result = train(&cfg);
    stop.store(true, Ordering::Release);
    let sent = watcher.join().unwrap_or(0);
    match result {
        Ok(r) => {
            for m in r.history.iter().filter(|m| m.epoch > sent) {
                emit(&epoch_event(&id, epochs, t0, m));
            }
            emit(&TrialEvent::Done {
                trial_id: &id,
                status: TrialStatus::Completed,
                epochs_done: r.epochs_done,
                final_val_acc: r.history.last().and_then(|m| m.val_acc),
                wall_time_s: t0.elapsed().as_secs_f64(),
                error: None,
            });
            Ok(())
        }
        Err(e) => {
            // A diverged run is an outcome of the trial (recorded as `failed`, never
            // retried); any other error is a problem of the set-up, reported only on
            // stderr and the exit status, so a driver retries the trial later.
            if let TrainError::Diverged { .. } = e {
                let history = read_metrics_log(&log);
                emit(&TrialEvent::Done {
                    trial_id: &id,
                    status: TrialStatus::Failed,
                    epochs_done: history.len() as u32,
                    final_val_acc: history.last().and_then(|m| m.val_acc),
                    wall_time_s: t0.elapsed().as_secs_f64(),
                    error: Some(e.to_string()),
                });
            }
            Err(anyhow!(e).context(format!("trial {id}")))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Report: Table-1-style summary and Figure-3-style plot
// ---------------------------------------------------------------------------------------

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
) -> Result<String> {
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
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    zoo::manifest::write_atomic(&dir.join(SUMMARY_FILE), md.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join(SUMMARY_FILE).display()))?;
    plot_search(&dir.join(PLOT_FILE), records, color_by)
        .map_err(|e| anyhow!("cannot draw {}: {e}", dir.join(PLOT_FILE).display()))?;
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
    by.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
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
fn plot_search(path: &Path, records: &[TrialRecord], by: ColorBy) -> Result<(), String> {
    use plotters::prelude::*;
    let has_font = crate::metrics::register_font();
    let pts: Vec<&TrialRecord> = records
        .iter()
        .filter(|r| r.final_val_acc.is_some())
        .collect();
    let values: Vec<f64> = pts.iter().map(|r| color_value(r, by)).collect();
    let groups = colour_groups(&values, by);
    let accs: Vec<f64> = pts.iter().filter_map(|r| r.final_val_acc).collect();
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
    let (y0, y1) = ((y0 - pad).max(0.0), (y1 + pad).min(100.0));
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1400, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = if has_font {
            root.titled(
                &format!(
                    "Architecture search: validation accuracy of {} trials, coloured by {}",
                    pts.len(),
                    color_name(by)
                ),
                ("sans-serif", 24),
            )
            .map_err(|e| e.to_string())?
        } else {
            root
        };
        let panels = root.split_evenly((1, 2));
        type Axis = fn(&TrialRecord) -> f64;
        let axes: [(&str, Axis); 2] = [
            ("trainable parameters (millions)", |r| {
                r.plan.params as f64 / 1e6
            }),
            ("depth (weighted layers)", |r| r.plan.depth as f64),
        ];
        for (panel, (x_desc, x_of)) in panels.iter().zip(axes) {
            let xs: Vec<f64> = pts.iter().map(|r| x_of(r)).collect();
            let x_max = xs.iter().copied().fold(0.0, f64::max).max(1e-3) * 1.08;
            let mut builder = ChartBuilder::on(panel);
            builder.margin(20);
            if has_font {
                builder.x_label_area_size(45).y_label_area_size(60);
            }
            let mut chart = builder
                .build_cartesian_2d(0f64..x_max, y0..y1)
                .map_err(|e| e.to_string())?;
            let mut mesh = chart.configure_mesh();
            if has_font {
                mesh.x_desc(x_desc).y_desc("validation top-1 (%)");
            } else {
                mesh.disable_x_axis().disable_y_axis();
            }
            mesh.draw().map_err(|e| e.to_string())?;
            for (g, (label, idx)) in groups.iter().enumerate() {
                let colour = Palette99::pick(g).to_rgba();
                let filled: Vec<(f64, f64)> = idx
                    .iter()
                    .filter(|&&i| pts[i].status == TrialStatus::Completed)
                    .map(|&i| (xs[i], accs[i]))
                    .collect();
                let rings: Vec<(f64, f64)> = idx
                    .iter()
                    .filter(|&&i| pts[i].status != TrialStatus::Completed)
                    .map(|&i| (xs[i], accs[i]))
                    .collect();
                let s = chart
                    .draw_series(
                        filled
                            .into_iter()
                            .map(|p| Circle::new(p, 6, colour.filled())),
                    )
                    .map_err(|e| e.to_string())?;
                if has_font {
                    s.label(label.clone())
                        .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
                }
                chart
                    .draw_series(
                        rings
                            .into_iter()
                            .map(|p| Circle::new(p, 6, colour.stroke_width(2))),
                    )
                    .map_err(|e| e.to_string())?;
            }
            if has_font && !groups.is_empty() {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
        }
        root.present().map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// --retrain-top
// ---------------------------------------------------------------------------------------

/// Retrains the best `--retrain-top` completed trials by running this binary's training
/// command (`train-zoo --model <spec.json> --resume ...`) as a child process, so the
/// retrained models are checkpointed, exported and published exactly like zoo models.
fn retrain_top(args: &SearchArgs, meta: &SearchMeta, records: &[TrialRecord]) -> Result<()> {
    let best: Vec<&TrialRecord> = ranked(records)
        .into_iter()
        .filter(|r| r.status == TrialStatus::Completed)
        .take(args.retrain_top)
        .collect();
    if best.is_empty() {
        bail!("--retrain-top: no completed trial in the ledger yet");
    }
    if best.len() < args.retrain_top {
        eprintln!(
            "search: only {} completed trial(s) to retrain (asked for {})",
            best.len(),
            args.retrain_top
        );
    }
    let exe = std::env::current_exe().context("cannot locate the train-zoo binary")?;
    let data_dir = zoo::cifar::resolve_dir(args.data_dir.as_deref())?;
    let root = args.search_dir.join("retrain");
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let mut exported = BTreeMap::new();
    for r in best {
        let name = format!("search-{}", r.plan.trial_id);
        let spec_path = root.join(format!("{name}.json"));
        zoo::manifest::write_atomic(
            &spec_path,
            serde_json::to_string_pretty(&r.plan.spec)?.as_bytes(),
        )
        .with_context(|| format!("cannot write {}", spec_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("--model")
            .arg(&spec_path)
            .args(["--name", &name, "--recipe", &args.retrain_recipe])
            .arg("--run-dir")
            .arg(root.join(&name))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--seed", &meta.seed.to_string(), "--device", &args.device])
            .args(["--resume", "--no-progress", "--json"]);
        if let Some(e) = args.retrain_epochs {
            cmd.args(["--epochs", &e.to_string()]);
        }
        if args.retrain_with_trial_hparams {
            cmd.args(["--batch-size", &r.plan.batch_size.to_string()])
                .args(["--set", &format!("optimizer.lr={}", r.plan.lr)]);
        }
        if let Some(t) = args.threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        if let Some(n) = args.retrain_train_limit {
            cmd.args(["--train-limit", &n.to_string()]);
        }
        if let Some(n) = args.retrain_test_limit {
            cmd.args(["--test-limit", &n.to_string()]);
        }
        if let Some(out) = &args.retrain_out {
            cmd.arg("--out").arg(out);
        }
        eprintln!(
            "search: retraining {} ({}, val acc {:.2} % in the search) with the {} recipe",
            r.plan.trial_id,
            r.plan.summary,
            r.final_val_acc.unwrap_or(f64::NAN),
            args.retrain_recipe
        );
        let out = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "retraining {} failed ({}); its run folder is {} — fix the cause and re-run the same command to continue",
                r.plan.trial_id,
                out.status,
                root.join(&name).display()
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value = line
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| anyhow!("retraining {}: no JSON summary on stdout", name))?;
        exported.insert(name, summary);
    }
    let path = root.join("retrained.json");
    zoo::manifest::write_atomic(&path, serde_json::to_string_pretty(&exported)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "search: retrained {} model(s); ONNX files and manifests listed in {}",
        exported.len(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single_point_space(blocks: usize, c1: usize, budget: u64) -> SearchSpace {
        SearchSpace {
            budget_params: budget,
            min_params: 0,
            num_layers: vec![3],
            blocks: IntRange {
                min: blocks,
                max: blocks,
            },
            same_blocks_in_every_layer: true,
            stem_channels: IntRange { min: c1, max: c1 },
            width_factor: vec![2],
            conv_kernels: vec![3],
            skip_kernels: vec![1],
            same_kernels_in_every_layer: true,
            pool: vec![8],
            dropout: FloatRange {
                min: 0.0,
                max: 0.0,
                log: false,
            },
            lr: FloatRange {
                min: 0.01,
                max: 0.01,
                log: false,
            },
            batch_size: vec![128],
        }
    }

    #[test]
    fn single_point_space_is_the_papers_model() {
        let space = single_point_space(3, 34, 5_000_000);
        let plan = sample_trial(&space, 0, 0, 30, 10).unwrap();
        assert_eq!(plan.spec, ResNetSpec::paper(&[3, 3, 3], 34, 2));
        assert_eq!(plan.params, 4_865_580);
    }

    #[test]
    fn budget_is_a_strict_bound_on_the_exact_count() {
        // Model-1 has exactly 4,865,580 parameters.
        let at = single_point_space(3, 34, 4_865_580);
        let e = sample_trial(&at, 0, 0, 30, 50).unwrap_err().to_string();
        assert!(e.contains("50 over the budget"), "{e}");
        let above = single_point_space(3, 34, 4_865_581);
        let plan = sample_trial(&above, 0, 0, 30, 50).unwrap();
        assert_eq!((plan.params, plan.rejected_over_budget), (4_865_580, 0));
    }

    #[test]
    fn rejections_are_counted_exactly() {
        let space = SearchSpace {
            budget_params: 400_000,
            ..SearchSpace::default()
        };
        for index in 0..20 {
            let plan = sample_trial(&space, 7, index, 30, 1_000_000).unwrap();
            assert!(plan.params < 400_000);
            // Replay the trial's stream: exactly `rejected` candidates over the budget,
            // then the accepted one.
            let mut rng = SplitMix64::for_trial(7, index);
            for _ in 0..plan.rejected_over_budget {
                assert!(space.sample_candidate(&mut rng).spec.params() >= 400_000);
            }
            assert_eq!(space.sample_candidate(&mut rng).spec, plan.spec);
        }
    }

    #[test]
    fn trials_depend_only_on_seed_and_index() {
        let space = SearchSpace::default();
        let a = sample_trial(&space, 3, 5, 30, 1_000_000).unwrap();
        let b = sample_trial(&space, 3, 5, 30, 1_000_000).unwrap();
        assert_eq!(a, b);
        let others: Vec<TrialPlan> = (0..8)
            .map(|i| sample_trial(&space, 3, i, 30, 1_000_000).unwrap())
            .collect();
        assert!(others.windows(2).any(|w| w[0].spec != w[1].spec));
        let reseeded = sample_trial(&space, 4, 5, 30, 1_000_000).unwrap();
        assert_ne!(a.spec, reseeded.spec);
    }

    #[test]
    fn sampled_specs_cover_the_space_and_validate() {
        let space = SearchSpace::default();
        let mut layers = HashSet::new();
        let mut kernels = HashSet::new();
        for i in 0..200 {
            let p = sample_trial(&space, 1, i, 30, 1_000_000).unwrap();
            p.spec.validate().unwrap();
            assert!(p.params < 5_000_000);
            assert!((0.0..=0.5).contains(&p.spec.dropout));
            assert!((0.005..=0.1).contains(&p.lr));
            layers.insert(p.spec.layers.len());
            kernels.extend(p.spec.layers.iter().map(|l| l.conv_kernel));
        }
        assert_eq!(layers, HashSet::from([2, 3, 4]));
        assert_eq!(kernels, HashSet::from([3, 5]));
    }

    #[test]
    fn bad_spaces_are_refused_with_the_field_named() {
        let s = SearchSpace {
            conv_kernels: vec![3, 4],
            ..SearchSpace::default()
        };
        assert!(s.validate().unwrap_err().contains("conv_kernels"));
        let s = SearchSpace {
            pool: vec![16],
            num_layers: vec![4],
            ..SearchSpace::default()
        };
        assert!(s.validate().unwrap_err().contains("4x4"));
        let s = SearchSpace {
            blocks: IntRange { min: 3, max: 2 },
            ..SearchSpace::default()
        };
        assert!(s.validate().unwrap_err().contains("blocks"));
        let text = r#"{"budget_params": 1, "typo": 3}"#;
        assert!(serde_json::from_str::<SearchSpace>(text).is_err());
    }

    #[test]
    fn default_space_roundtrips_through_json() {
        let s = SearchSpace::default();
        let back: SearchSpace = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn asha_rungs_and_cutoff() {
        assert_eq!(Asha::new(1, 3, 30).rungs, vec![1, 3, 9, 27]);
        assert_eq!(Asha::new(1, 3, 2).rungs, vec![1]);
        assert!(Asha::new(1, 3, 1).rungs.is_empty());
        let a = Asha::new(1, 3, 30);
        assert_eq!(a.cutoff(&[]), None);
        assert_eq!(a.cutoff(&[40.0]), Some(40.0));
        // numpy.percentile([10, 20, 30, 40], 66.67) = 30.0
        let c = a.cutoff(&[40.0, 10.0, 30.0, 20.0]).unwrap();
        assert!((c - 30.0).abs() < 1e-9, "{c}");
        assert!((quantile(&[1.0, 2.0], 0.5) - 1.5).abs() < 1e-12);
    }

    fn record(id: u64, status: TrialStatus, accs: &[f64]) -> TrialRecord {
        let space = single_point_space(1, 4, 5_000_000);
        let plan = sample_trial(&space, 0, id, 3, 10).unwrap();
        TrialRecord {
            plan,
            status,
            epochs_done: accs.len() as u32,
            val_acc: accs.to_vec(),
            val_loss: accs.iter().map(|_| 1.0).collect(),
            final_val_acc: accs.last().copied(),
            train_time_s: 1.0,
            wall_time_s: 2.0,
            note: None,
            runner: "local".into(),
            finished_at: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn peers_skip_failed_and_short_trials() {
        let rs = vec![
            record(0, TrialStatus::Completed, &[10.0, 20.0, 30.0]),
            record(1, TrialStatus::Stopped, &[5.0]),
            record(2, TrialStatus::Failed, &[50.0, 60.0]),
        ];
        assert_eq!(Asha::peers_at(1, &rs), vec![10.0, 5.0]);
        assert_eq!(Asha::peers_at(2, &rs), vec![20.0]);
    }

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
    fn ledger_appends_and_repairs_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let mut l = Ledger::open(&path).unwrap();
        assert!(l.records.is_empty());
        l.append(record(0, TrialStatus::Completed, &[1.0, 2.0, 3.0]))
            .unwrap();
        l.append(record(1, TrialStatus::Stopped, &[0.5])).unwrap();
        let good = std::fs::read(&path).unwrap();
        // A crash in the middle of the third write.
        let torn = serde_json::to_string(&record(2, TrialStatus::Completed, &[1.0])).unwrap();
        let mut bytes = good.clone();
        bytes.extend_from_slice(&torn.as_bytes()[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.records.len(), 2);
        assert!(l.is_finished("t0001") && !l.is_finished("t0002"));
        assert_eq!(std::fs::read(&path).unwrap(), good, "torn line not cut");
        l.append(record(2, TrialStatus::Completed, &[1.0])).unwrap();
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.records.len(), 3);
        assert_eq!(l.records[2], record(2, TrialStatus::Completed, &[1.0]));
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(&path, "{\"not\": \"a record\"}\n").unwrap();
        let e = format!("{:#}", Ledger::open(&path).err().unwrap());
        assert!(e.contains("line 1"), "{e}");
    }
}
