//! Training recipes: every choice of a run in one readable, serialisable value.
//!
//! A recipe is plain data. `paper` reproduces the paper's schedule; `fast` is ours, for
//! reaching the paper's accuracy in far fewer epochs. Each trick has a name and a
//! switch, and any field can be changed from the command line with
//! `--set path=value` (e.g. `--set label_smoothing=0`, `--set ema=null`,
//! `--set optimizer.lr=0.2`).
//!
//! ```
//! let r = training::recipe::Recipe::by_name("paper").unwrap();
//! assert_eq!((r.batch_size, r.optimizer.lr, r.epochs), (128, 0.01, 300));
//! ```

use serde::{Deserialize, Serialize};

use crate::data::Augment;

/// Stochastic gradient descent with momentum (PyTorch semantics, dampening 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    pub momentum: f64,
    /// Trick "nesterov": Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Trick "no_bn_bias_decay": no weight decay on BatchNorm scales/shifts and biases.
    pub decay_bn_and_bias: bool,
}

/// Learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Trick "warmup": linear warm-up from 0 over this many epochs (0 disables it).
    pub warmup_epochs: f64,
    /// Cosine annealing to 0 after the warm-up.
    pub cosine: bool,
    /// Update the rate every step (smooth) instead of once per epoch (the paper's
    /// `CosineAnnealingLR` stepped per epoch).
    pub per_step: bool,
}

/// Exponential moving average of the weights, evaluated and exported instead of the raw
/// weights (trick "ema").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmaConfig {
    pub decay: f64,
    /// Update the average every this many steps.
    pub every_steps: u32,
}

/// A complete training recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub epochs: u32,
    pub batch_size: usize,
    pub optimizer: SgdConfig,
    pub schedule: Schedule,
    pub augment: Augment,
    /// Trick "label_smoothing": cross-entropy against smoothed targets (0 disables it).
    pub label_smoothing: f64,
    pub ema: Option<EmaConfig>,
    /// Trick "flip_tta": the headline accuracy averages the logits of each test image
    /// and its mirror image (both numbers are always recorded).
    pub flip_tta: bool,
    /// Trick "bf16_autocast": bfloat16 mixed precision (CUDA only; ignored on CPU,
    /// where it was measured slower, DESIGN.md §7).
    pub bf16_autocast: bool,
    /// Trick "channels_last": NHWC activations. On CUDA for tensor cores; on the CPU
    /// it spares oneDNN its NCHW reorders (training step +22 % for `plainnet`, +40 % for
    /// `resnet20` on the 2-core EPYC, docs/training-log.md).
    pub channels_last: bool,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
}

/// Names of the built-in recipes.
pub const RECIPES: &[(&str, &str)] = &[
    (
        "paper",
        "the paper's: SGD 0.01, momentum 0.9, wd 5e-4, cosine per epoch over 300 epochs, batch 128",
    ),
    (
        "fast",
        "ours: batch 512, Nesterov SGD 0.4 with 2-epoch warm-up, per-step cosine, label smoothing 0.1, no decay on BN/bias, flip TTA, bf16 + channels-last on CUDA; 40 epochs",
    ),
    (
        "cpu",
        "ours for a small CPU and `plainnet`: batch 256, Nesterov SGD 0.2 with 1-epoch warm-up, per-step cosine, label smoothing 0.2, crop 2 + flip (no rotation), channels-last, flip TTA; 13 epochs (~55 min on 2 cores)",
    ),
];

impl Recipe {
    /// The paper's recipe (DESIGN.md §2).
    pub fn paper() -> Self {
        Recipe {
            name: "paper".into(),
            epochs: 300,
            batch_size: 128,
            optimizer: SgdConfig {
                lr: 0.01,
                momentum: 0.9,
                nesterov: false,
                weight_decay: 5e-4,
                decay_bn_and_bias: true,
            },
            schedule: Schedule {
                warmup_epochs: 0.0,
                cosine: true,
                per_step: false,
            },
            augment: Augment::paper(),
            label_smoothing: 0.0,
            ema: None,
            flip_tta: false,
            bf16_autocast: false,
            channels_last: false,
            eval_batch_size: 500,
        }
    }

    /// Our recipe for reaching the paper's accuracy in far fewer epochs.
    ///
    /// Large batch for device throughput with the learning rate scaled linearly
    /// (0.1 per 128 images) and warmed up; Nesterov momentum; smooth per-step cosine
    /// annealing; label smoothing; weight decay only on conv/linear weights; the
    /// paper's augmentation; flip test-time augmentation; bf16 and channels-last on CUDA.
    pub fn fast() -> Self {
        Recipe {
            name: "fast".into(),
            epochs: 40,
            batch_size: 512,
            optimizer: SgdConfig {
                lr: 0.4,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
                decay_bn_and_bias: false,
            },
            schedule: Schedule {
                warmup_epochs: 2.0,
                cosine: true,
                per_step: true,
            },
            augment: Augment::paper(),
            label_smoothing: 0.1,
            ema: None,
            flip_tta: true,
            bf16_autocast: true,
            channels_last: true,
            eval_batch_size: 1000,
        }
    }

    /// Our recipe for training `plainnet` on a 2-core CPU within an hour.
    ///
    /// Built on `fast`, changed where a 13-epoch budget asks for it, following airbench94
    /// (Jordan 2024): light augmentation (2-pixel crop and flip; no rotation, whose
    /// bilinear resampling also blurs every training image), heavier label smoothing
    /// (0.2), a one-epoch warm-up, batch 256 with the linearly scaled rate 0.2, and
    /// channels-last activations, the largest speed lever on this CPU.
    ///
    /// ```
    /// let r = training::recipe::Recipe::cpu();
    /// assert_eq!((r.batch_size, r.epochs, r.augment.crop_pad), (256, 13, 2));
    /// ```
    pub fn cpu() -> Self {
        let mut r = Self::fast();
        r.name = "cpu".into();
        r.epochs = 13;
        r.batch_size = 256;
        r.optimizer.lr = 0.2;
        r.schedule.warmup_epochs = 1.0;
        r.augment = Augment {
            crop_pad: 2,
            rotate_deg: 0.0,
            flip: true,
        };
        r.label_smoothing = 0.2;
        r.eval_batch_size = 500;
        r
    }

    /// A built-in recipe by name.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "paper" => Some(Self::paper()),
            "fast" => Some(Self::fast()),
            "cpu" => Some(Self::cpu()),
            _ => None,
        }
    }

    /// A built-in recipe by name, or a recipe JSON file (as `train-zoo recipes` prints).
    pub fn resolve(name: &str) -> Result<Self, String> {
        if let Some(r) = Self::by_name(name) {
            return Ok(r);
        }
        let path = std::path::Path::new(name);
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read recipe file {}: {e}", path.display()))?;
            return serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{} is not a valid recipe ({e}); see `train-zoo recipes`",
                    path.display()
                )
            });
        }
        let names: Vec<&str> = RECIPES.iter().map(|r| r.0).collect();
        Err(format!(
            "unknown recipe `{name}`; use one of {} or a recipe .json file",
            names.join(", ")
        ))
    }

    /// Drops tricks that the spec cannot use safely, saying why (returned for the log).
    ///
    /// Channels-last is switched off when a convolution's channel count is not a multiple
    /// of 8: on an H200 with torch 2.11+cu130, Model-2 (22/44/88/176 channels) and
    /// Model-1 (34/68/136/272) both died in cuDNN with "CUDA error: misaligned address"
    /// under bf16 + channels-last, while TPSNet (16/32/64/128) and both models in NCHW
    /// trained fine (docs/training-log.md, 2026-11-26).
    ///
    /// ```
    /// use training::recipe::Recipe;
    /// let (r, why) = Recipe::fast().fit_to_spec(&zoo::ResNetSpec::preset("model2").unwrap());
    /// assert!(!r.channels_last && why.is_some());
    /// let (r, why) = Recipe::fast().fit_to_spec(&zoo::ResNetSpec::preset("tpsnet").unwrap());
    /// assert!(r.channels_last && why.is_none());
    /// ```
    pub fn fit_to_spec(mut self, spec: &zoo::ResNetSpec) -> (Self, Option<String>) {
        let odd: Vec<usize> = std::iter::once(spec.stem_channels)
            .chain(spec.layers.iter().map(|l| l.channels))
            .filter(|c| c % 8 != 0)
            .collect();
        if self.channels_last && !odd.is_empty() {
            self.channels_last = false;
            let why = format!(
                "channels_last switched off: channel counts {odd:?} are not multiples of 8 (cuDNN misaligned-address failure)"
            );
            return (self, Some(why));
        }
        (self, None)
    }

    /// Learning rate at fractional epoch `t` (e.g. 3.25 = a quarter into epoch 4).
    pub fn lr_at(&self, t: f64) -> f64 {
        let t = if self.schedule.per_step { t } else { t.floor() };
        let peak = self.optimizer.lr;
        let warm = self.schedule.warmup_epochs;
        if warm > 0.0 && t < warm {
            // Ends at `peak` when the warm-up ends; never exactly 0 so step 0 learns.
            return peak * (t + 1.0 / 1024.0).min(warm) / warm;
        }
        if !self.schedule.cosine {
            return peak;
        }
        let span = (self.epochs as f64 - warm).max(1e-9);
        let progress = ((t - warm) / span).clamp(0.0, 1.0);
        0.5 * peak * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// Applies `path=value` overrides (`value` is JSON; bare words are strings).
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self, String> {
        let mut v = serde_json::to_value(self).expect("recipe serialises");
        for s in sets {
            let (path, raw) = s.split_once('=').ok_or_else(|| {
                format!("`--set {s}`: expected path=value, e.g. label_smoothing=0.1")
            })?;
            let value: serde_json::Value = serde_json::from_str(raw)
                .unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
            let pointer = format!("/{}", path.replace('.', "/"));
            let slot = v.pointer_mut(&pointer).ok_or_else(|| {
                format!(
                    "`--set {s}`: the recipe has no field `{path}`; see `train-zoo recipes` for the fields"
                )
            })?;
            *slot = value;
        }
        serde_json::from_value(v)
            .map_err(|e| format!("`--set`: the changed recipe is invalid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_schedule_is_cosine_per_epoch() {
        let r = Recipe::paper();
        assert_eq!(r.lr_at(0.0), 0.01);
        assert_eq!(r.lr_at(0.9), 0.01);
        assert!((r.lr_at(150.0) - 0.005).abs() < 1e-12);
        assert!(r.lr_at(299.0) < 1e-5);
    }

    #[test]
    fn fast_warms_up_then_anneals() {
        let r = Recipe::fast();
        assert!(r.lr_at(0.0) > 0.0 && r.lr_at(0.0) < 0.01);
        assert!((r.lr_at(1.0) - 0.2).abs() < 1e-3);
        assert!((r.lr_at(2.0) - 0.4).abs() < 1e-12);
        assert!(r.lr_at(21.0) < 0.21 && r.lr_at(21.0) > 0.19);
        assert!(r.lr_at(40.0) < 1e-12);
    }

    #[test]
    fn overrides_edit_fields_and_reject_unknown_ones() {
        let r = Recipe::fast()
            .with_overrides(&[
                "label_smoothing=0".into(),
                "optimizer.lr=0.2".into(),
                "ema={\"decay\":0.99,\"every_steps\":5}".into(),
            ])
            .unwrap();
        assert_eq!(r.label_smoothing, 0.0);
        assert_eq!(r.optimizer.lr, 0.2);
        assert_eq!(r.ema.as_ref().unwrap().every_steps, 5);
        let e = Recipe::fast()
            .with_overrides(&["nope=1".into()])
            .unwrap_err();
        assert!(e.contains("no field `nope`"), "{e}");
        assert!(
            Recipe::fast()
                .with_overrides(&["epochs=abc".into()])
                .is_err()
        );
    }
}
