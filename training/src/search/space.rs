//! The search space: what a search samples, and trial `i` of seed `s` drawn from its own
//! random stream, so a trial's spec never depends on how many trials ran before. Specs
//! at or over the budget are rejected (and counted) *before* any training, using the
//! exact [`ResNetSpec::params`] count.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tpsnet_zoo::ResNetSpec;
use tpsnet_zoo::rng::SplitMix64;

use super::SearchError;

/// Inclusive integer range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntRange {
    /// The least value.
    pub min: usize,
    /// The greatest value (inclusive).
    pub max: usize,
}

impl IntRange {
    /// Uniform integer in [min, max].
    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        self.min + rng.below((self.max - self.min + 1) as u64) as usize
    }
}

/// Inclusive real range, sampled uniformly (or log-uniformly with `log: true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatRange {
    /// The least value.
    pub min: f64,
    /// The greatest value (inclusive).
    pub max: f64,
    /// Sample uniformly in log space (for rates spanning decades).
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

/// Why a search space cannot be used; each names the field to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    /// A list of choices is empty.
    #[error("`{field}` has no choices; give at least one")]
    NoChoices {
        /// The space's field.
        field: &'static str,
    },
    /// A list of counts contains 0.
    #[error("`{field}` contains 0; every choice must be at least 1")]
    ZeroChoice {
        /// The space's field.
        field: &'static str,
    },
    /// An integer range is empty or starts at 0.
    #[error("`{field}` must satisfy 1 <= min <= max (got {min}..={max})")]
    BadRange {
        /// The space's field.
        field: &'static str,
        /// The range's least value.
        min: usize,
        /// The range's greatest value.
        max: usize,
    },
    /// A kernel size is even (the network pads by `kernel / 2`, which needs odd sizes).
    #[error("`{field}` contains the even kernel {kernel}; use odd sizes")]
    EvenKernel {
        /// The space's field.
        field: &'static str,
        /// The even size.
        kernel: usize,
    },
    /// A layer count would shrink a 32x32 input below one pixel.
    #[error("`num_layers` contains {0}; with stride 2 per layer a 32x32 input allows at most 6")]
    TooManyLayers(usize),
    /// No pooling size fits a network's final feature map.
    #[error(
        "no `pool` choice divides the {side}x{side} final map of a {layers}-layer network; add a divisor of {side}"
    )]
    NoPool {
        /// Side of the final feature map, in pixels.
        side: usize,
        /// The layer count that gives it.
        layers: usize,
    },
    /// The dropout range is outside [0, 1) or log-scaled.
    #[error("`dropout` must satisfy 0 <= min <= max < 1, not log-scaled (got {min}..={max})")]
    BadDropout {
        /// The range's least value.
        min: f64,
        /// The range's greatest value.
        max: f64,
    },
    /// The learning-rate range is empty or not positive.
    #[error("`lr` must satisfy 0 < min <= max (got {min}..={max})")]
    BadLr {
        /// The range's least value.
        min: f64,
        /// The range's greatest value.
        max: f64,
    },
    /// The parameter floor is not below the budget, so no spec can qualify.
    #[error("`min_params` ({min}) must be below `budget_params` ({budget})")]
    MinNotBelowBudget {
        /// `min_params`.
        min: u64,
        /// `budget_params`.
        budget: u64,
    },
}

/// Side of the final feature map of an N-layer network on 32x32 inputs.
fn final_side(num_layers: usize) -> usize {
    32 >> num_layers.saturating_sub(1)
}

impl SearchSpace {
    /// Reads a space from a JSON file and checks it. Unknown keys are refused.
    pub fn load(path: &Path) -> Result<Self, SearchError> {
        let text = std::fs::read_to_string(path).map_err(|source| SearchError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let space: SearchSpace =
            serde_json::from_str(&text).map_err(|source| SearchError::SpaceJson {
                path: path.to_path_buf(),
                source,
            })?;
        space.validate().map_err(|source| SearchError::Space {
            origin: path.display().to_string(),
            source,
        })?;
        Ok(space)
    }

    /// Checks that every choice can produce a buildable network.
    pub fn validate(&self) -> Result<(), SpaceError> {
        let nonempty = |field: &'static str, v: &[usize]| {
            if v.is_empty() {
                Err(SpaceError::NoChoices { field })
            } else if v.contains(&0) {
                Err(SpaceError::ZeroChoice { field })
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
        for (field, r) in [
            ("blocks", &self.blocks),
            ("stem_channels", &self.stem_channels),
        ] {
            if r.min == 0 || r.min > r.max {
                return Err(SpaceError::BadRange {
                    field,
                    min: r.min,
                    max: r.max,
                });
            }
        }
        for (field, v) in [
            ("conv_kernels", &self.conv_kernels),
            ("skip_kernels", &self.skip_kernels),
        ] {
            if let Some(&kernel) = v.iter().find(|k| *k % 2 == 0) {
                return Err(SpaceError::EvenKernel { field, kernel });
            }
        }
        if let Some(&n) = self.num_layers.iter().find(|&&n| n > 6) {
            return Err(SpaceError::TooManyLayers(n));
        }
        for &layers in &self.num_layers {
            let side = final_side(layers);
            if !self.pool.iter().any(|p| side % p == 0) {
                return Err(SpaceError::NoPool { side, layers });
            }
        }
        let d = &self.dropout;
        if !(0.0 <= d.min && d.min <= d.max && d.max < 1.0) || d.log {
            return Err(SpaceError::BadDropout {
                min: d.min,
                max: d.max,
            });
        }
        let l = &self.lr;
        if !(l.min > 0.0 && l.min <= l.max && l.max.is_finite()) {
            return Err(SpaceError::BadLr {
                min: l.min,
                max: l.max,
            });
        }
        if self.min_params >= self.budget_params {
            return Err(SpaceError::MinNotBelowBudget {
                min: self.min_params,
                budget: self.budget_params,
            });
        }
        Ok(())
    }

    /// One candidate: every hyperparameter drawn once (no budget check yet).
    pub fn sample_candidate(&self, rng: &mut SplitMix64) -> Candidate {
        let n = rng.pick(&self.num_layers);
        let mut blocks = vec![self.blocks.sample(rng); n];
        if !self.same_blocks_in_every_layer {
            for b in blocks.iter_mut().skip(1) {
                *b = self.blocks.sample(rng);
            }
        }
        let c1 = self.stem_channels.sample(rng);
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
        // The paper's family with the drawn kernels, pool and dropout.
        let mut spec = ResNetSpec::paper(&blocks, c1, k);
        for (layer, (&c, &s)) in spec.layers.iter_mut().zip(conv.iter().zip(&skip)) {
            layer.conv_kernel = c;
            layer.skip_kernel = s;
        }
        spec.pool = pool;
        spec.dropout = dropout;
        Candidate {
            spec,
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
    /// The architecture.
    pub spec: ResNetSpec,
    /// The width multiplier drawn (layer `i` has `width_factor · C1 · 2^i` channels).
    pub width_factor: usize,
    /// The peak learning rate drawn.
    pub lr: f64,
    /// The batch size drawn.
    pub batch_size: usize,
}

/// A trial as sampled: everything fixed before training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialPlan {
    /// `t0000`, `t0001`, ...: the trial's index in the search.
    pub trial_id: String,
    /// The trial's index in the search (0-based); picks its random stream.
    pub index: u64,
    /// The architecture to train.
    pub spec: ResNetSpec,
    /// [`ResNetSpec::summary`], for people reading the ledger.
    pub summary: String,
    /// Exact trainable parameters ([`ResNetSpec::params`]).
    pub params: u64,
    /// Multiply-accumulates per image ([`ResNetSpec::macs`]).
    pub macs: u64,
    /// Weighted layers on the longest path ([`ResNetSpec::depth`]).
    pub depth: usize,
    /// The width multiplier drawn.
    pub width_factor: usize,
    /// The peak learning rate drawn.
    pub lr: f64,
    /// The batch size drawn.
    pub batch_size: usize,
    /// Epochs the trial trains unless stopped early.
    pub epochs: u32,
    /// Candidates of this trial's stream rejected for being at or over the budget.
    pub rejected_over_budget: u64,
    /// Candidates rejected for being under `min_params`.
    pub rejected_under_min: u64,
}

/// The independent random stream of trial `index` in a search with `seed`.
pub fn trial_stream(seed: u64, index: u64) -> SplitMix64 {
    let mut base = SplitMix64::new(seed);
    let key = base.next_u64() ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut rng = SplitMix64::new(key);
    rng.next_u64();
    rng
}

/// `t0000`, `t0001`, ...
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
) -> Result<TrialPlan, SearchError> {
    let mut rng = trial_stream(seed, index);
    let (mut over, mut under) = (0u64, 0u64);
    for _ in 0..max_attempts {
        let c = space.sample_candidate(&mut rng);
        c.spec.validate().map_err(SearchError::InvalidSpec)?;
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
    Err(SearchError::NoSpecInBudget {
        trial: trial_id(index),
        min: space.min_params,
        budget: space.budget_params,
        attempts: max_attempts,
        over,
        under,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::search::test_support::single_point_space;

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
            let mut rng = trial_stream(7, index);
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
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("conv_kernels")
        );
        let s = SearchSpace {
            pool: vec![16],
            num_layers: vec![4],
            ..SearchSpace::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("4x4"));
        let s = SearchSpace {
            blocks: IntRange { min: 3, max: 2 },
            ..SearchSpace::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("blocks"));
        let text = r#"{"budget_params": 1, "typo": 3}"#;
        assert!(serde_json::from_str::<SearchSpace>(text).is_err());
    }

    #[test]
    fn default_space_roundtrips_through_json() {
        let s = SearchSpace::default();
        let back: SearchSpace = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
