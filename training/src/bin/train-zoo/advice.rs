//! Which flags fix an error: the `training` library reports what went wrong, with the
//! data; `train-zoo` adds the advice in its own terms.

use std::error::Error;

use tpsnet_training::TrainError;
use tpsnet_training::device::DeviceError;
use tpsnet_training::init::InitError;
use tpsnet_training::pipeline::PipelineError;
use tpsnet_training::recipe::RecipeError;
use tpsnet_training::search::{SearchError, SettingDiff};
use tpsnet_training::spec_file::SpecFileError;

/// What to do about a diverged run (also a failed search trial's fix).
pub const DIVERGED: &str = "lower the learning rate (e.g. --set optimizer.lr=...) or add warm-up";

/// What to do about a missing or damaged CIFAR-10 (the data reader names the files).
pub const DATA: &str = "`train-zoo download` fetches CIFAR-10 into the cache and checks every file; --data-dir DIR or CIFAR10_DIR names a folder that holds `cifar-10-batches-bin`";

/// The advice for the first error in `e`'s chain that has one.
pub fn advice(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(for_error)
}

fn for_error(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(t) = e.downcast_ref::<TrainError>() {
        return for_train(t);
    }
    if let Some(PipelineError::Train(t)) = e.downcast_ref::<PipelineError>() {
        return for_train(t);
    }
    if let Some(s) = e.downcast_ref::<SearchError>() {
        return for_search(s);
    }
    if let Some(r) = e.downcast_ref::<RecipeError>() {
        return for_recipe(r);
    }
    if let Some(i) = e.downcast_ref::<InitError>() {
        return for_init(i);
    }
    if let Some(DeviceError::Unavailable { .. }) = e.downcast_ref::<DeviceError>() {
        return Some("use --device cpu or auto".into());
    }
    if let Some(SpecFileError::Invalid { .. }) = e.downcast_ref::<SpecFileError>() {
        return Some("see `train-zoo list --json` for valid specs".into());
    }
    if e.is::<tpsnet_zoo::cifar::CifarError>() {
        return Some(DATA.into());
    }
    None
}

fn for_train(e: &TrainError) -> Option<String> {
    let fix = match e {
        TrainError::Diverged { .. } => DIVERGED,
        TrainError::CheckpointExists { .. } => {
            "pass --resume to continue it, or --restart to discard it"
        }
        TrainError::Mismatch { .. } => "use another --run-dir or --restart",
        TrainError::BadCheckpoint { .. } => "delete it or pass --restart",
        TrainError::EmptyTrainSet => {
            "use a larger --train-limit or a smaller validation split (--val-size)"
        }
        TrainError::Init(i) => return for_init(i),
        _ => return None,
    };
    Some(fix.into())
}

fn for_init(e: &InitError) -> Option<String> {
    match e {
        InitError::OddStem(_) | InitError::TooManyChannels { .. } => {
            Some("--set whiten_stem=false switches it off".into())
        }
    }
}

fn for_recipe(e: &RecipeError) -> Option<String> {
    let fix = match e {
        RecipeError::Invalid { .. } | RecipeError::NoField { .. } => {
            "see `train-zoo recipes` for the fields (--set path=value changes one)"
        }
        RecipeError::SetSyntax { .. } => "each --set takes one path=value",
        RecipeError::InvalidOverride(_) => "check the values given with --set",
        _ => return None,
    };
    Some(fix.into())
}

fn for_search(e: &SearchError) -> Option<String> {
    let fix = match e {
        SearchError::SpaceJson { .. } => {
            "print the default with `train-zoo search --print-space`".to_string()
        }
        SearchError::Space { .. } => "check the --space file and the --budget".into(),
        SearchError::SettingsDiffer { differs, .. } => {
            let flags: Vec<&str> = differs.iter().map(flags_of).collect();
            format!(
                "resume with the same settings ({}), or use another --search-dir",
                flags.join(", ")
            )
        }
        SearchError::BadSettings { .. } => "fix it or start another --search-dir".into(),
        SearchError::NoValidationSplit => "--val-size must be > 0".into(),
        SearchError::NoEpochs => "--epochs must be at least 1".into(),
        SearchError::NothingToRetrain => {
            "--retrain-top needs a completed trial; run trials first".into()
        }
        SearchError::Trial { source, .. } => return for_train(source),
        SearchError::Recipe(r) => return for_recipe(r),
        SearchError::Retrain { source, .. } => match source.as_ref() {
            PipelineError::Train(t) => return for_train(t),
            _ => return None,
        },
        _ => return None,
    };
    Some(fix)
}

/// The flags that set a search setting.
fn flags_of(d: &SettingDiff) -> &'static str {
    match d {
        SettingDiff::Seed { .. } => "--seed",
        SettingDiff::Space => "--space/--budget",
        SettingDiff::Recipe => "--recipe/--set",
        SettingDiff::Epochs { .. } => "--epochs",
        SettingDiff::DataSelection => "--train-limit/--val-size",
    }
}
