//! `--retrain-top K`: the best K completed trials retrained with a full recipe through
//! [`crate::pipeline::run`], in this process and on the search's loaded data, so they
//! are checkpointed, exported to ONNX with a manifest and (with `out`) published exactly
//! like zoo models. Re-running continues unfinished retrains and re-exports finished ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Device;

use super::ledger::{TrialRecord, TrialStatus};
use super::report::ranked;
use super::settings::{SearchMeta, SearchResults};
use super::{SearchError, SearchEvent};
use crate::config::RunConfig;
use crate::dataset::Cifar10Tensors;
use crate::pipeline::{self, ExportedModel, Outcome, TrainJob};
use crate::recipe::Recipe;

/// How the best trials are retrained.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrainOptions {
    /// How many of the best completed trials.
    pub top: usize,
    /// Recipe name or JSON file.
    pub recipe: String,
    /// Override the recipe's epochs.
    pub epochs: Option<u32>,
    /// Keep each trial's sampled lr and batch size instead of the recipe's.
    pub with_trial_hparams: bool,
    /// Also publish into this folder.
    pub out: Option<PathBuf>,
    /// First N training images only (quick checks; the manifest says so).
    pub train_limit: Option<usize>,
    /// First N test images only (quick checks; the manifest says so).
    pub test_limit: Option<usize>,
}

/// File listing every retrained model, in `<search-dir>/retrain/`.
pub const RETRAINED_FILE: &str = "retrained.json";

/// The best `opts.top` completed trials, best first.
pub fn best_completed(records: &[TrialRecord], top: usize) -> Vec<&TrialRecord> {
    ranked(records)
        .into_iter()
        .filter(|r| r.status == TrialStatus::Completed)
        .take(top)
        .collect()
}

/// The pipeline job that retrains trial `r`: its spec under the name `search-<id>`,
/// the retrain recipe (fitted to the spec as `train-zoo` fits every recipe), the
/// search's seed, no validation split, run folder `<root>/search-<id>`, resumed.
pub fn retrain_job(
    r: &TrialRecord,
    opts: &RetrainOptions,
    meta: &SearchMeta,
    root: &Path,
    device: Device,
    data_dir: &Path,
) -> Result<TrainJob, SearchError> {
    let name = format!("search-{}", r.plan.trial_id);
    let mut recipe = Recipe::resolve(&opts.recipe)?;
    if let Some(e) = opts.epochs {
        recipe.epochs = e;
    }
    if opts.with_trial_hparams {
        recipe.batch_size = r.plan.batch_size;
        recipe.optimizer.lr = r.plan.lr;
    }
    let (recipe, _) = recipe.fit_to_spec(&r.plan.spec);
    Ok(TrainJob {
        run: RunConfig {
            run_dir: root.join(&name),
            name,
            spec: r.plan.spec.clone(),
            recipe,
            seed: meta.seed,
            device,
            data_dir: data_dir.to_path_buf(),
            train_limit: opts.train_limit,
            test_limit: opts.test_limit,
            val_size: 0,
            eval_test_every: 1,
            resume: true,
            stop_after: None,
        },
        restart: false,
        publish_to: opts.out.clone(),
    })
}

/// Retrains the best completed trials of `search` into `<search-dir>/retrain/` and
/// lists them in `retrained.json`; returns that list by model name.
pub fn retrain_top(
    search: &SearchResults,
    opts: &RetrainOptions,
    device: Device,
    data: &Cifar10Tensors,
    on_event: &mut dyn FnMut(SearchEvent),
) -> Result<BTreeMap<String, ExportedModel>, SearchError> {
    let (meta, best) = (search.meta, best_completed(search.records, opts.top));
    if best.is_empty() {
        return Err(SearchError::NothingToRetrain);
    }
    if best.len() < opts.top {
        on_event(SearchEvent::FewerToRetrain {
            found: best.len(),
            asked: opts.top,
        });
    }
    let root = search.dir.join("retrain");
    let mut exported = BTreeMap::new();
    for r in best {
        let job = retrain_job(r, opts, meta, &root, device, &data.dir)?;
        let cfg = &job.run;
        // The spec beside its run folder, for `train-zoo --model <file>` by hand.
        let spec_path = root.join(format!("{}.json", cfg.name));
        let spec_json = serde_json::to_string_pretty(&cfg.spec).expect("specs serialise");
        tpsnet_zoo::publish::write_atomic(&spec_path, spec_json.as_bytes()).map_err(|source| {
            SearchError::Write {
                path: spec_path.clone(),
                source,
            }
        })?;
        on_event(SearchEvent::Retraining {
            record: r,
            job: &job,
        });
        let retrain_err = |source| SearchError::Retrain {
            trial: r.plan.trial_id.clone(),
            run_dir: cfg.run_dir.clone(),
            source: Box::new(source),
        };
        let outcome = pipeline::run(&job, data, &mut |e| on_event(SearchEvent::Train(e)))
            .map_err(retrain_err)?;
        match outcome {
            Outcome::Exported(m) => {
                on_event(SearchEvent::Retrained { model: &m });
                exported.insert(cfg.name.clone(), *m);
            }
            Outcome::Stopped { .. } => unreachable!("retrains have no stop_after"),
        }
    }
    let path = root.join(RETRAINED_FILE);
    let text = serde_json::to_string_pretty(&exported).expect("summaries serialise");
    tpsnet_zoo::publish::write_atomic(&path, text.as_bytes())
        .map_err(|source| SearchError::Write { path, source })?;
    Ok(exported)
}
