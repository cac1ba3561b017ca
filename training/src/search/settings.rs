//! What defines a search: the request as the user gives it, `<search-dir>/search.json`
//! as it is kept, and one trial as a self-contained job for a trial runner.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ledger::TrialRecord;
use super::space::{SearchSpace, TrialPlan, sample_trial};
use super::{META_FILE, SearchError};
use crate::recipe::Recipe;

/// A search as the user asks for it (the flags of `train-zoo search` that define it).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchRequest {
    /// Seed of the sampling (trial i's spec depends only on the seed and i) and of training.
    pub seed: u64,
    /// Search space JSON file (default: [`SearchSpace::default`]).
    pub space: Option<PathBuf>,
    /// Parameter budget (strict upper bound), overriding the space's `budget_params`.
    pub budget: Option<u64>,
    /// Trials' recipe (a built-in name or a JSON file); lr and batch size are sampled.
    pub recipe: String,
    /// `path=value` changes to the trials' recipe.
    pub sets: Vec<String>,
    /// Epochs per trial (unless stopped early).
    pub epochs: u32,
    /// Train on the first N training images only (quick searches and tests).
    pub train_limit: Option<usize>,
    /// Validation images held out of the training set for scoring.
    pub val_size: usize,
}

impl SearchRequest {
    /// The space to sample: the file's or the default, with the budget applied, checked.
    pub fn space(&self) -> Result<SearchSpace, SearchError> {
        let mut space = match &self.space {
            Some(p) => SearchSpace::load(p)?,
            None => SearchSpace::default(),
        };
        if let Some(b) = self.budget {
            space.budget_params = b;
        }
        let origin = match &self.space {
            Some(p) => format!("{} with the budget applied", p.display()),
            None => "(built-in) with the budget applied".into(),
        };
        space
            .validate()
            .map_err(|source| SearchError::Space { origin, source })?;
        Ok(space)
    }

    /// The settings the search keeps in `search.json`.
    pub fn meta(&self) -> Result<SearchMeta, SearchError> {
        if self.val_size == 0 {
            return Err(SearchError::NoValidationSplit);
        }
        if self.epochs == 0 {
            return Err(SearchError::NoEpochs);
        }
        let recipe = Recipe::resolve(&self.recipe)?.with_overrides(&self.sets)?;
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

/// What a search has recorded: its folder, settings and trial records.
#[derive(Clone, Copy, Debug)]
pub struct SearchResults<'a> {
    /// The search directory.
    pub dir: &'a Path,
    /// Its settings (`search.json`).
    pub meta: &'a SearchMeta,
    /// Its finished trials (the ledger), in ledger order.
    pub records: &'a [TrialRecord],
}

/// A setting in which a resumed search differs from the one its folder was started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingDiff {
    /// The search's seed.
    Seed {
        /// The value the folder was started with.
        saved: u64,
        /// The value asked for now.
        now: u64,
    },
    /// The search space or its parameter budget.
    Space,
    /// The trials' recipe (or a change to it).
    Recipe,
    /// Epochs per trial.
    Epochs {
        /// The value the folder was started with.
        saved: u32,
        /// The value asked for now.
        now: u32,
    },
    /// The training subset or the validation split.
    DataSelection,
}

impl std::fmt::Display for SettingDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingDiff::Seed { saved, now } => write!(f, "seed ({saved} vs {now})"),
            SettingDiff::Space => f.write_str("search space"),
            SettingDiff::Recipe => f.write_str("trial recipe"),
            SettingDiff::Epochs { saved, now } => write!(f, "epochs ({saved} vs {now})"),
            SettingDiff::DataSelection => f.write_str("data selection"),
        }
    }
}

/// The settings, comma-separated, as an error lists them.
pub(crate) fn list(differs: &[SettingDiff]) -> String {
    differs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `<search-dir>/search.json`: what defines the search. Resuming with different values
/// would silently mix incomparable trials, so it is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchMeta {
    /// Seeds the trials' sampling and their training.
    pub seed: u64,
    /// What is sampled (with its parameter budget).
    pub space: SearchSpace,
    /// The trials' recipe before each trial's sampled `lr` and `batch_size`.
    pub recipe: Recipe,
    /// Epochs per trial (unless stopped early).
    pub epochs: u32,
    /// Train on the first N training images only.
    pub train_limit: Option<usize>,
    /// Validation images held out of the training set for scoring.
    pub val_size: usize,
}

impl SearchMeta {
    /// Writes the settings on first use; afterwards checks they are unchanged.
    pub fn establish(&self, dir: &Path) -> Result<(), SearchError> {
        let path = dir.join(META_FILE);
        if path.exists() {
            let saved = Self::load(dir)?;
            let mut differs = Vec::new();
            if saved.seed != self.seed {
                differs.push(SettingDiff::Seed {
                    saved: saved.seed,
                    now: self.seed,
                });
            }
            if saved.space != self.space {
                differs.push(SettingDiff::Space);
            }
            if saved.recipe != self.recipe {
                differs.push(SettingDiff::Recipe);
            }
            if saved.epochs != self.epochs {
                differs.push(SettingDiff::Epochs {
                    saved: saved.epochs,
                    now: self.epochs,
                });
            }
            if (saved.train_limit, saved.val_size) != (self.train_limit, self.val_size) {
                differs.push(SettingDiff::DataSelection);
            }
            if !differs.is_empty() {
                return Err(SearchError::SettingsDiffer {
                    dir: dir.to_path_buf(),
                    differs,
                    path,
                });
            }
            return Ok(());
        }
        let text = serde_json::to_string_pretty(self).expect("settings serialise");
        std::fs::create_dir_all(dir)
            .and_then(|_| tpsnet_zoo::publish::write_atomic(&path, text.as_bytes()))
            .map_err(|source| SearchError::Write { path, source })
    }

    /// Reads the settings of the search directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, SearchError> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SearchError::NotASearch {
            path: path.clone(),
            dir: dir.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| SearchError::BadSettings { path, source })
    }

    /// The line `train-zoo search --emit-specs` prints for `plan`.
    pub fn job(&self, plan: &TrialPlan) -> TrialJob {
        TrialJob {
            plan: plan.clone(),
            recipe: self.trial_recipe(plan),
            seed: self.seed,
            train_limit: self.train_limit,
            val_size: self.val_size,
        }
    }

    /// Trials `0..trials` of the search, sampled (trial `i` depends only on the seed
    /// and `i`, so extending a search keeps the trials it has).
    pub fn plans(&self, trials: u64, max_attempts: u64) -> Result<Vec<TrialPlan>, SearchError> {
        (0..trials)
            .map(|i| sample_trial(&self.space, self.seed, i, self.epochs, max_attempts))
            .collect()
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
    /// The sampled trial.
    pub plan: TrialPlan,
    /// The full recipe of this trial (its lr, batch size and epochs applied).
    pub recipe: Recipe,
    /// The search's seed (the trial's training seeds from it).
    pub seed: u64,
    /// Train on the first N training images only.
    pub train_limit: Option<usize>,
    /// Validation images held out of the training set for scoring.
    pub val_size: usize,
}
