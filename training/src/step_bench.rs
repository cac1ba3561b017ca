//! `train-zoo bench`: how fast one training step runs, and where its time goes.
//!
//! Content does not change the cost of a dense ResNet, so the steps run on random
//! images: no dataset is needed. Timed steps and profiled steps are separate so the
//! profiler's synchronisations never slow the timed ones.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tpsnet_zoo::ResNetSpec;

use crate::device;
use crate::model::{BuildOptions, ResNet};
use crate::optim::{FlatSgd, frozen_params};
use crate::recipe::Recipe;
use crate::step::{Batch, STEP_PHASES, timed_train_step, train_step};

/// Training-step throughput of `spec` under `recipe` on synthetic images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepBenchmark {
    /// Images per step.
    pub batch_size: usize,
    /// Steps timed (after the warm-up).
    pub steps: usize,
    /// Seconds of each timed step (after the warm-up steps).
    pub step_seconds: Vec<f64>,
    /// Images per second from the median step time.
    pub median_images_per_s: f64,
    /// Median seconds of each phase of a step ([`STEP_PHASES`] order): where the time
    /// goes (on CUDA each phase ends with a synchronisation, so they add up to a bit
    /// more than an unprofiled step).
    pub phase_seconds: Vec<(String, f64)>,
}

/// Times `steps` full training steps (augmentation, forward, backward, update) after
/// `warmup` untimed ones, on random uint8 images already on the device. Content does
/// not change the cost of a dense ResNet, so no dataset is needed.
pub fn benchmark_steps(
    spec: &ResNetSpec,
    recipe: &Recipe,
    device: Device,
    warmup: usize,
    steps: usize,
) -> StepBenchmark {
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let model = ResNet::with_options(&vs.root(), spec, BuildOptions::from_recipe(recipe));
    let mut opt = FlatSgd::with_frozen(&vs, spec, recipe.optimizer.clone(), &frozen_params(recipe));
    let bs = recipe.batch_size as i64;
    let images = Tensor::randint(256, [bs, 3, 32, 32], (Kind::Uint8, device));
    let labels = Tensor::randint(spec.num_classes as i64, [bs], (Kind::Int64, device));
    let batch = Batch {
        images_u8: &images,
        labels: &labels,
        flips: None,
    };
    let sync = || device::synchronize(device);
    let median = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        sync();
        let t0 = Instant::now();
        let (loss, _) = train_step(&model, &mut opt, recipe, &batch, 1e-3);
        let _ = loss.double_value(&[]);
        sync();
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    // Separate, profiled steps: the timed ones above stay free of the extra syncs.
    let mut phases = vec![Vec::with_capacity(steps); STEP_PHASES.len()];
    for _ in 0..steps {
        sync();
        let mut last = Instant::now();
        let mut mark = |i: usize| {
            sync();
            let now = Instant::now();
            phases[i].push((now - last).as_secs_f64());
            last = now;
        };
        let _ = timed_train_step(&model, &mut opt, recipe, &batch, 1e-3, &mut mark);
    }
    StepBenchmark {
        batch_size: recipe.batch_size,
        steps,
        median_images_per_s: bs as f64 / median(&times),
        step_seconds: times,
        phase_seconds: STEP_PHASES
            .iter()
            .zip(&phases)
            .map(|(name, t)| (name.to_string(), median(t)))
            .collect(),
    }
}
