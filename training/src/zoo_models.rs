//! The models `train-zoo --all` trains and publishes, in training order.

/// `(model name, preset, recipe)`. TPSNet first: if a run is cut short, the paper's
/// headline model is the one that finished. `airnet-short` is the zoo's CPU model (94 %
/// in 9 minutes on 2 cores with AMX, docs/cpu-recipe.md), `airnet` the same network
/// trained 15 epochs in fp32; `airnet-wide` the zoo's best, trained on a GPU.
pub const PUBLISHED: &[(&str, &str, &str)] = &[
    ("tpsnet", "tpsnet", "fast"),
    ("model2", "model2", "fast"),
    ("model1", "model1", "fast"),
    ("airnet", "airnet", "cpu"),
    ("airnet-short", "airnet", "cpu-short"),
    ("airnet-wide", "airnet-wide", "wide"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Recipe;
    use tpsnet_test_support::shipped::models_dir;
    use tpsnet_zoo::{Manifest, ResNetSpec};

    /// Every manifest shipped in `models/`.
    fn shipped() -> Vec<Manifest> {
        let manifests = tpsnet_test_support::shipped::manifests();
        manifests.into_iter().map(|(_, m)| m).collect()
    }

    /// `train-zoo --all` rebuilds what the zoo ships: every shipped model's spec is its
    /// preset's, and the recipes whose published runs used them unchanged (`cpu` for
    /// airnet, `cpu-short` for airnet-short, `wide` for airnet-wide) still equal, field for field, the recipe recorded in
    /// the manifest. A change to a recipe default that would silently stop the documented
    /// command from reproducing the published model fails here. (The `fast` models' runs
    /// were sized to the device time, with `--epochs`, so only their specs are compared.)
    #[test]
    fn published_models_match_their_presets_and_recipes() {
        let shipped = shipped();
        for (name, preset, recipe) in PUBLISHED {
            let Some(m) = shipped.iter().find(|m| m.name == *name) else {
                panic!("the zoo ships no {name} in {}", models_dir().display())
            };
            assert_eq!(m.spec, ResNetSpec::preset(preset).unwrap(), "{name}: spec");
            if *recipe == "fast" {
                continue;
            }
            let mut ours = serde_json::to_value(Recipe::by_name(recipe).unwrap()).unwrap();
            let mut theirs = m.training.recipe_config.clone();
            ours.as_object_mut().unwrap().remove("name");
            theirs.as_object_mut().unwrap().remove("name");
            assert_eq!(
                ours, theirs,
                "{name}: recipe {recipe} drifted from the manifest's"
            );
        }
    }

    /// A shipped model whose model and recipe have a measured seed spread carries exactly
    /// that spread in its manifest (what a rerun should expect), and the spread's seeds
    /// include the published run's.
    #[test]
    fn published_models_carry_their_recipes_measured_spread() {
        for m in shipped() {
            let Some((_, preset, recipe)) = PUBLISHED.iter().find(|(n, _, _)| *n == m.name) else {
                continue;
            };
            let want = crate::expectations::measured(preset, recipe);
            assert_eq!(m.training.rerun_expectation, want, "{}", m.name);
            if let Some(spread) = want {
                let i = (spread.seeds.iter().position(|s| *s == m.training.seed))
                    .unwrap_or_else(|| panic!("{}: its seed is not among the spread's", m.name));
                // The spread lists percentages to two decimals.
                let claimed = m.metrics.claimed_top1();
                assert!(
                    (spread.top1[i] - claimed).abs() < 0.005,
                    "{}: {claimed}",
                    m.name
                );
            }
        }
    }

    /// Specs and recipes refuse unknown keys; everything the repository ships still
    /// parses: every manifest in `models/` (spec and recorded recipe) and the GPU
    /// sweeps' recipe and spec files.
    #[test]
    fn shipped_specs_and_recipes_have_no_unknown_keys() {
        let root = models_dir().parent().unwrap().to_path_buf();
        let files = |dir: &str| -> Vec<std::path::PathBuf> {
            let mut v: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            v.sort();
            v
        };
        let manifests = files("models");
        assert!(manifests.len() >= PUBLISHED.len());
        for p in manifests {
            let m = Manifest::load(&p).unwrap_or_else(|e| panic!("{e}"));
            serde_json::from_value::<Recipe>(m.training.recipe_config)
                .unwrap_or_else(|e| panic!("{}: recipe_config: {e}", p.display()));
        }
        for p in files("tools/gpu/recipes") {
            Recipe::resolve(p.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
        }
        for p in files("tools/gpu/specs") {
            crate::spec_file::load(&p).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
