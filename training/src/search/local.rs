//! The local search driver: samples the trials, skips those in the ledger, runs the rest
//! in this process on data loaded once, records each in the ledger, then writes the
//! report and retrains the best. Re-running the same search resumes it.

use std::path::{Path, PathBuf};

use tch::Device;

use super::asha::Asha;
use super::ledger::{Ledger, TrialRecord};
use super::report::{ColorBy, write_report};
use super::retrain::{RetrainOptions, retrain_top};
use super::settings::{SearchMeta, SearchRequest, SearchResults, TrialJob};
use super::trial::{TrialEvent, run_trial};
use super::{LEDGER_FILE, PLOT_FILE, SUMMARY_FILE, SearchError, SearchEvent};
use crate::dataset::Cifar10Tensors;
use crate::device::{self, DeviceChoice};

/// The device and the dataset, set up on first use: a search with nothing left to
/// train and nothing to retrain needs neither.
#[derive(Debug)]
pub struct Workbench {
    device: DeviceChoice,
    data_dir: Option<PathBuf>,
    ready: Option<(Device, Cifar10Tensors)>,
}

impl Workbench {
    /// `data_dir`: the CIFAR-10 folder, else `$CIFAR10_DIR`, else the download cache.
    pub fn new(device: DeviceChoice, data_dir: Option<PathBuf>) -> Self {
        Workbench {
            device,
            data_dir,
            ready: None,
        }
    }

    /// The resolved device and the loaded dataset.
    pub fn get(
        &mut self,
        on_event: &mut dyn FnMut(SearchEvent),
    ) -> Result<(Device, &Cifar10Tensors), SearchError> {
        if self.ready.is_none() {
            let device = self.device.resolve()?;
            let dir = tpsnet_zoo::cifar::resolve_dir(self.data_dir.as_deref())?;
            on_event(SearchEvent::Setup {
                device: &device::describe(device),
                data_dir: &dir,
            });
            let data = Cifar10Tensors::load(&dir, device)?;
            self.ready = Some((device, data));
        }
        let (device, data) = self.ready.as_ref().expect("set up above");
        Ok((*device, data))
    }
}

/// How the report is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReportOptions {
    /// Rows in the summary table.
    pub top: usize,
    /// The hyperparameter that colours the plot's points.
    pub color_by: ColorBy,
}

/// A local search as `train-zoo search` runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSearch {
    /// Folder of the search: search.json, ledger.jsonl, trials/, summary.md, plot.
    pub dir: PathBuf,
    /// The search's settings.
    pub request: SearchRequest,
    /// Number of trials (a larger number extends the search).
    pub trials: u64,
    /// Samples tried per trial before giving up on a spec under the budget.
    pub max_attempts: u64,
    /// Successive halving `(grace_epochs, eta)`; `None` trains every trial to the end.
    pub early_stop: Option<(u32, u32)>,
    /// Keep each finished trial's checkpoint (default: deleted once recorded).
    pub keep_checkpoints: bool,
    /// How the report is drawn.
    pub report: ReportOptions,
    /// Retrain the best trials afterwards (`--retrain-top`); `None`: no retraining.
    pub retrain: Option<RetrainOptions>,
}

/// The settings, ledger and sampled trials of a search, with the pending ones' indices.
struct Plan {
    meta: SearchMeta,
    ledger: Ledger,
    plans: Vec<super::space::TrialPlan>,
    pending: Vec<usize>,
}

fn plan(
    dir: &Path,
    request: &SearchRequest,
    trials: u64,
    max_attempts: u64,
    on_event: &mut dyn FnMut(SearchEvent),
) -> Result<Plan, SearchError> {
    let meta = request.meta()?;
    meta.establish(dir)?;
    let ledger = open_ledger(dir, on_event)?;
    let plans = meta.plans(trials, max_attempts)?;
    let pending = (0..plans.len())
        .filter(|&i| !ledger.is_finished(&plans[i].trial_id))
        .collect();
    Ok(Plan {
        meta,
        ledger,
        plans,
        pending,
    })
}

fn open_ledger(dir: &Path, on_event: &mut dyn FnMut(SearchEvent)) -> Result<Ledger, SearchError> {
    let ledger = Ledger::open(&dir.join(LEDGER_FILE))?;
    for repair in &ledger.repairs {
        on_event(SearchEvent::LedgerRepaired {
            path: ledger.path(),
            repair,
        });
    }
    Ok(ledger)
}

/// The trials of a search not yet in its ledger, as jobs for another runner
/// (`train-zoo search --emit-specs`, read by `search/ray_search.py`).
pub fn pending_jobs(
    dir: &Path,
    request: &SearchRequest,
    trials: u64,
    max_attempts: u64,
    on_event: &mut dyn FnMut(SearchEvent),
) -> Result<Vec<TrialJob>, SearchError> {
    let p = plan(dir, request, trials, max_attempts, on_event)?;
    Ok(p.pending.iter().map(|&i| p.meta.job(&p.plans[i])).collect())
}

/// Runs the pending trials of `search`, then [`report`]s (and retrains).
pub fn run_search(
    search: &LocalSearch,
    bench: &mut Workbench,
    on_event: &mut dyn FnMut(SearchEvent),
) -> Result<(), SearchError> {
    let mut p = plan(
        &search.dir,
        &search.request,
        search.trials,
        search.max_attempts,
        on_event,
    )?;
    on_event(SearchEvent::Planned {
        trials: p.plans.len(),
        budget: p.meta.space.budget_params,
        rejected: p.plans.iter().map(|p| p.rejected_over_budget).sum(),
        finished: p.plans.len() - p.pending.len(),
        pending: p.pending.len(),
        ledger: p.ledger.path(),
    });
    if !p.pending.is_empty() {
        run_pending(search, &mut p, bench, on_event)?;
    }
    let results = SearchResults {
        dir: &search.dir,
        meta: &p.meta,
        records: &p.ledger.records,
    };
    write_report_and_retrain(
        &results,
        &search.report,
        search.retrain.as_ref(),
        bench,
        on_event,
    )
}

/// Trains the pending trials of `p` one after another (under successive halving when
/// the search stops early), each recorded in the ledger as it finishes.
fn run_pending(
    search: &LocalSearch,
    p: &mut Plan,
    bench: &mut Workbench,
    on_event: &mut dyn FnMut(SearchEvent),
) -> Result<(), SearchError> {
    let Plan {
        meta,
        ledger,
        plans,
        pending,
    } = p;
    let asha = search
        .early_stop
        .map(|(grace, eta)| Asha::new(grace, eta, meta.epochs));
    if let Some(a) = &asha {
        on_event(SearchEvent::EarlyStopping { asha: a });
    }
    let (device, data) = bench.get(on_event)?;
    for &i in pending.iter() {
        let plan = &plans[i];
        let run_dir = search.dir.join("trials").join(&plan.trial_id);
        let outcome = run_trial(
            &meta.job(plan),
            &run_dir,
            device,
            data,
            asha.as_ref().map(|a| (a, ledger.records.as_slice())),
            &mut |e| match e {
                TrialEvent::Resumed { trial_id, history } => on_event(SearchEvent::TrialResumed {
                    trial_id,
                    epochs_done: history.len() as u32,
                }),
                TrialEvent::Train(e) => on_event(SearchEvent::Train(e)),
            },
        )
        .map_err(|source| SearchError::Trial {
            trial: plan.trial_id.clone(),
            summary: plan.summary.clone(),
            run_dir: run_dir.clone(),
            source: Box::new(source),
        })?;
        if !search.keep_checkpoints {
            remove_checkpoint(&run_dir, on_event);
        }
        // The wall time of an earlier, interrupted attempt is not on disk; its
        // training time is, and stands in for it.
        let wall = outcome.earlier_train_time_s + outcome.wall_time_s;
        let record =
            TrialRecord::from_history(plan, &outcome.history, outcome.status, wall, outcome.note);
        on_event(SearchEvent::TrialFinished {
            record: &record,
            total: plans.len(),
        });
        ledger.append(record)?;
    }
    Ok(())
}

/// Deletes a recorded trial's checkpoint (a warning when it cannot).
fn remove_checkpoint(run_dir: &Path, on_event: &mut dyn FnMut(SearchEvent)) {
    let ckpt = crate::checkpoint::checkpoint_path(run_dir);
    if ckpt.exists() {
        if let Err(e) = std::fs::remove_file(&ckpt) {
            on_event(SearchEvent::Warning(format!(
                "cannot remove {}: {e}",
                ckpt.display()
            )));
        }
    }
}

/// Trains nothing: writes `summary.md` and the plot from an existing search's ledger,
/// then retrains when asked.
pub fn report(
    dir: &Path,
    opts: &ReportOptions,
    retrain: Option<&RetrainOptions>,
    bench: &mut Workbench,
    on_event: &mut dyn FnMut(SearchEvent),
) -> Result<(), SearchError> {
    let meta = SearchMeta::load(dir)?;
    let ledger = open_ledger(dir, on_event)?;
    let results = SearchResults {
        dir,
        meta: &meta,
        records: &ledger.records,
    };
    write_report_and_retrain(&results, opts, retrain, bench, on_event)
}

fn write_report_and_retrain(
    search: &SearchResults,
    opts: &ReportOptions,
    retrain: Option<&RetrainOptions>,
    bench: &mut Workbench,
    on_event: &mut dyn FnMut(SearchEvent),
) -> Result<(), SearchError> {
    let (dir, records) = (search.dir, search.records);
    let table = write_report(dir, search.meta, records, opts.top, opts.color_by)?;
    on_event(SearchEvent::Reported {
        table: &table,
        summary: &dir.join(SUMMARY_FILE),
        plot: &dir.join(PLOT_FILE),
    });
    if let Some(r) = retrain.filter(|r| r.top > 0) {
        if super::retrain::best_completed(records, 1).is_empty() {
            return Err(SearchError::NothingToRetrain);
        }
        let (device, data) = bench.get(on_event)?;
        let exported = retrain_top(search, r, device, data, on_event)?;
        on_event(SearchEvent::RetrainedAll {
            count: exported.len(),
            list: &dir.join("retrain").join(super::retrain::RETRAINED_FILE),
        });
    }
    Ok(())
}
