//! What a rerun of a zoo model's recipe should expect: the headline claim measured over
//! seeds fixed in advance (docs/cpu-recipe.md). A run of such a model and recipe, unchanged
//! and on the full data, records the spread in its manifest
//! (`training.rerun_expectation`), so that whoever reruns it knows what range to land in.

use tpsnet_zoo::arch::PRESETS;
use tpsnet_zoo::manifest::SeedSpread;

use crate::config::RunConfig;
use crate::recipe::Recipe;

/// `airnet` with `cpu-short`, the CPU job: seeds 0, 1 and 2, fixed before the first of
/// them ran, each trained by `scripts/run`'s command on the 2-core Intel Xeon with AMX
/// (2026-12-06, docs/lab/training-log.md); six-view top-1 at the final epoch.
fn airnet_cpu_short() -> SeedSpread {
    SeedSpread {
        seeds: vec![0, 1, 2],
        top1: vec![94.20, 94.18, 94.39],
        claim: "6view".into(),
        device: "cpu (2 threads, Intel(R) Xeon(R) Processor), bf16 convolutions (AMX-BF16)".into(),
    }
}

/// The spread measured for `preset` trained with the built-in `recipe`, if any.
pub fn measured(preset: &str, recipe: &str) -> Option<SeedSpread> {
    match (preset, recipe) {
        ("airnet", "cpu-short") => Some(airnet_cpu_short()),
        _ => None,
    }
}

/// The spread measured for this run's model and recipe, if the run repeats a measured
/// one: a zoo preset, a built-in recipe with nothing overridden, all 50,000 training
/// images and the full test set.
pub fn for_run(cfg: &RunConfig) -> Option<SeedSpread> {
    let full_data = cfg.train_limit.is_none() && cfg.test_limit.is_none() && cfg.val_size == 0;
    let builtin = Recipe::by_name(&cfg.recipe.name)?;
    if !full_data || builtin != cfg.recipe {
        return None;
    }
    let preset = PRESETS.iter().find(|p| p.spec() == cfg.spec)?;
    measured(preset.name, &cfg.recipe.name)
}
