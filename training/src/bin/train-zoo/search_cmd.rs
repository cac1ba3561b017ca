//! `train-zoo search` and `train-zoo trial`: flags in, [`tpsnet_training::search`] does the
//! work, events out (stderr for people, stdout for the table, the emitted jobs and the
//! trial's JSON lines).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use tpsnet_training::checkpoint::checkpoint_path;
use tpsnet_training::dataset::Cifar10Tensors;
use tpsnet_training::device;
use tpsnet_training::pipeline::{Outcome, TrainJob};
use tpsnet_training::recipe::Recipe;
use tpsnet_training::search::{
    ColorBy, LocalSearch, ReportOptions, RetrainOptions, SearchEvent, SearchRequest, TrialJob,
    TrialLine, TrialPlan, TrialRecord, TrialStatus, Workbench, pending_jobs, report, run_search,
    run_trial, trial::TrialEvent,
};
use tpsnet_training::spec_file;
use tpsnet_training::trainer::TrainEvent;
use tpsnet_zoo::arch::group_thousands as group;

use crate::args::RunArgs;
use crate::console::Console;
use crate::train_cmd::print_outcome;

/// `--color-by`: the names and meanings of [`ColorBy::ALL`].
fn color_by_parser() -> impl TypedValueParser<Value = ColorBy> {
    PossibleValuesParser::new(
        ColorBy::ALL.map(|(_, name, help)| PossibleValue::new(name).help(help)),
    )
    .map(|s| s.parse::<ColorBy>().expect("a listed name"))
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
    #[command(flatten)]
    pub run: RunArgs,
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
    #[arg(long, default_value = "blocks", value_parser = color_by_parser())]
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
    #[command(flatten)]
    pub run: RunArgs,
    /// Exit as soon as stdin closes (the driver died or stopped the trial).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,
}

impl SearchArgs {
    fn request(&self) -> SearchRequest {
        SearchRequest {
            seed: self.seed,
            space: self.space.clone(),
            budget: self.budget,
            recipe: self.recipe.clone(),
            sets: self.sets.clone(),
            epochs: self.epochs,
            train_limit: self.train_limit,
            val_size: self.val_size,
        }
    }

    fn report_options(&self) -> ReportOptions {
        ReportOptions {
            top: self.top,
            color_by: self.color_by,
        }
    }

    fn retrain_options(&self) -> Option<RetrainOptions> {
        (self.retrain_top > 0).then(|| RetrainOptions {
            top: self.retrain_top,
            recipe: self.retrain_recipe.clone(),
            epochs: self.retrain_epochs,
            with_trial_hparams: self.retrain_with_trial_hparams,
            out: self.retrain_out.clone(),
            train_limit: self.retrain_train_limit,
            test_limit: self.retrain_test_limit,
        })
    }
}

/// Runs `train-zoo search`.
pub fn search(args: SearchArgs) -> Result<()> {
    let request = args.request();
    if args.print_space {
        println!("{}", serde_json::to_string_pretty(&request.space()?)?);
        return Ok(());
    }
    let mut console = Console::new(false);
    let mut show = |e: SearchEvent| show_search_event(&mut console, e);
    let dir = &args.search_dir;
    if args.emit_specs {
        let jobs = pending_jobs(dir, &request, args.trials, args.max_attempts, &mut show)?;
        let mut out = std::io::stdout().lock();
        for job in jobs {
            writeln!(out, "{}", serde_json::to_string(&job)?)?;
        }
        return Ok(());
    }
    args.run.compute.apply_threads();
    let mut bench = Workbench::new(args.run.compute.device, args.run.data_dir.clone());
    if args.report {
        report(
            dir,
            &args.report_options(),
            args.retrain_options().as_ref(),
            &mut bench,
            &mut show,
        )?;
        return Ok(());
    }
    let search = LocalSearch {
        dir: dir.clone(),
        request,
        trials: args.trials,
        max_attempts: args.max_attempts,
        early_stop: (!args.no_early_stop).then_some((args.grace_epochs, args.eta)),
        keep_checkpoints: args.keep_checkpoints,
        report: args.report_options(),
        retrain: args.retrain_options(),
    };
    run_search(&search, &mut bench, &mut show)?;
    Ok(())
}

fn show_search_event(console: &mut Console, event: SearchEvent) {
    match event {
        SearchEvent::LedgerRepaired { path, repair } => {
            eprintln!("search: {}: {repair}", path.display())
        }
        SearchEvent::Planned {
            trials,
            budget,
            rejected,
            finished,
            pending,
            ledger,
        } => eprintln!(
            "search: {trials} trials under {} parameters ({rejected} sampled specs rejected over the budget); {finished} already in {}, {pending} to run",
            group(budget),
            ledger.display(),
        ),
        SearchEvent::EarlyStopping { asha } => eprintln!(
            "search: successive halving at epochs {:?}, keeping the top 1/{} (--no-early-stop disables it)",
            asha.rungs, asha.eta
        ),
        SearchEvent::Setup { device, data_dir } => {
            eprintln!("search: training on {device}");
            eprintln!("search: CIFAR-10 from {}", data_dir.display());
        }
        SearchEvent::TrialResumed {
            trial_id,
            epochs_done,
        } => eprintln!(
            "search: {trial_id}: continuing from its checkpoint after epoch {epochs_done}"
        ),
        SearchEvent::Train(e) => console.show(e),
        SearchEvent::TrialFinished { record, total } => show_trial_finished(record, total),
        SearchEvent::Reported {
            table,
            summary,
            plot,
        } => {
            println!("{table}");
            eprintln!("search: wrote {} and {}", summary.display(), plot.display());
        }
        SearchEvent::FewerToRetrain { found, asked } => {
            eprintln!("search: only {found} completed trial(s) to retrain (asked for {asked})")
        }
        SearchEvent::Retraining { record, job } => show_retraining(record, job),
        SearchEvent::Retrained { model } => {
            console.finish();
            let outcome = Outcome::Exported(Box::new(model.clone()));
            // Printing to stderr cannot fail in a way worth stopping the search for.
            let _ = print_outcome(&model.name, &outcome, false);
        }
        SearchEvent::RetrainedAll { count, list } => eprintln!(
            "search: retrained {count} model(s); ONNX files and manifests listed in {}",
            list.display()
        ),
        SearchEvent::Warning(w) => eprintln!("search: warning: {w}"),
    }
}

/// One line per recorded trial.
fn show_trial_finished(record: &TrialRecord, total: usize) {
    let plan = &record.plan;
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
}

/// Which trial is retrained, and how.
fn show_retraining(record: &TrialRecord, job: &TrainJob) {
    let cfg = &job.run;
    eprintln!(
        "search: retraining {} ({}, val acc {:.2} % in the search) with the {} recipe",
        record.plan.trial_id,
        record.plan.summary,
        record.final_val_acc.unwrap_or(f64::NAN),
        cfg.recipe.name
    );
    eprintln!(
        "train-zoo: {}: recipe {} for {} epochs, batch {}, in {}",
        cfg.name,
        cfg.recipe.name,
        cfg.recipe.epochs,
        cfg.recipe.batch_size,
        cfg.run_dir.display()
    );
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
        let spec = if spec_arg.trim_start().starts_with('{') {
            spec_file::parse(spec_arg, "--spec-json")?
        } else {
            spec_file::load(spec_arg.as_ref())?
        };
        let mut recipe = Recipe::resolve(self.recipe.as_deref().unwrap_or("paper"))?;
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

/// Writes one protocol line on stdout. A closed stdout means the driver is gone;
/// nothing useful is left to do with the line.
fn emit(line: &TrialLine) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(line).expect("lines serialise")
    );
    let _ = out.flush();
}

/// Runs `train-zoo trial`: one trial in this process, streaming a JSON line per epoch
/// (also for the epochs of a resumed checkpoint) and a final `done` line.
pub fn trial(args: TrialArgs) -> Result<()> {
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
    let dev = args.run.compute.device()?;
    let data_dir = tpsnet_zoo::cifar::resolve_dir(args.run.data_dir.as_deref())?;
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
    eprintln!(
        "train-zoo trial {id}: {} ({} params), {} epochs, lr {}, batch {}, on {}",
        job.plan.summary,
        group(job.plan.params),
        epochs,
        job.recipe.optimizer.lr,
        job.recipe.batch_size,
        device::describe(dev)
    );
    let data = Cifar10Tensors::load(&data_dir, dev)?;
    let mut console = Console::new(false);
    let outcome = run_trial(&job, &run_dir, dev, &data, None, &mut |e| match e {
        TrialEvent::Resumed { trial_id, history } => {
            for m in history {
                emit(&TrialLine::epoch(
                    trial_id,
                    epochs,
                    t0.elapsed().as_secs_f64(),
                    m,
                ));
            }
        }
        TrialEvent::Train(e) => {
            if let TrainEvent::Epoch { metrics, .. } = &e {
                emit(&TrialLine::epoch(
                    &id,
                    epochs,
                    t0.elapsed().as_secs_f64(),
                    metrics,
                ));
            }
            console.show(e);
        }
    })
    .map_err(|e| anyhow!(e).context(format!("trial {id}")))?;
    emit(&TrialLine::done(&id, &outcome, t0.elapsed().as_secs_f64()));
    // A diverged run is an outcome of the trial (recorded as `failed`, never retried);
    // any other error is a problem of the set-up, reported only on stderr and the exit
    // status, so a driver retries the trial later.
    if outcome.status == TrialStatus::Failed {
        // A trial fails only by diverging.
        bail!(
            "trial {id}: {}; {}",
            outcome.error.as_deref().unwrap_or("training failed"),
            crate::advice::DIVERGED
        );
    }
    Ok(())
}
