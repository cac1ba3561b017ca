//! Weight averages: the exponential moving average of the weights a recipe reports
//! (`ema`), and the lookahead's slow copy (`lookahead`), with their per-step schedules.

use tch::Tensor;
use tch::nn::VarStore;

use crate::optim::StateError;
use crate::recipe::Recipe;

/// Exponential moving average of all float variables (weights and BN statistics).
#[derive(Debug)]
pub struct Ema {
    /// Weight of the old average at each update (0 copies the live weights).
    pub decay: f64,
    /// (name, live variable, averaged copy)
    pairs: Vec<(String, Tensor, Tensor)>,
}

impl Ema {
    /// An average of `vs`'s float variables, starting as a copy of them.
    pub fn new(vs: &VarStore, decay: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let _guard = tch::no_grad_guard();
        let pairs = vars
            .into_iter()
            .map(|(n, t)| {
                let avg = t.detach().copy();
                (n, t, avg)
            })
            .collect();
        Ema { decay, pairs }
    }

    /// Moves each average `1 - decay` of the way to its live variable.
    pub fn update(&mut self) {
        let _guard = tch::no_grad_guard();
        for (_, live, avg) in &mut self.pairs {
            let _ = avg.lerp_(live, 1.0 - self.decay);
        }
    }

    /// Averaged tensors by name (for checkpoints and export).
    pub fn averaged(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.pairs.iter().map(|(n, _, a)| (n.as_str(), a))
    }

    /// Restores averaged tensors saved as `ema.<name>`.
    pub fn load(
        &mut self,
        saved: &std::collections::HashMap<String, Tensor>,
    ) -> Result<(), StateError> {
        self.load_prefixed(saved, "ema")
    }

    /// Restores averaged tensors saved as `<prefix>.<name>`.
    pub fn load_prefixed(
        &mut self,
        saved: &std::collections::HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<(), StateError> {
        let _guard = tch::no_grad_guard();
        for (n, _, a) in &mut self.pairs {
            let t = saved
                .get(&format!("{prefix}.{n}"))
                .ok_or_else(|| StateError::Missing {
                    copy: prefix.to_string(),
                    name: n.clone(),
                })?;
            a.copy_(t);
        }
        Ok(())
    }

    /// Trick "lookahead" (Zhang et al. 2019, as airbench uses it): the slow copy moves
    /// `1 - decay` of the way to the live variables, which then restart from it. Like
    /// airbench's, it covers the BatchNorm statistics too, so they always belong to the
    /// weights they are used with.
    pub fn lookahead(&mut self, decay: f64) {
        self.decay = decay;
        self.update();
        self.copy_to_model();
    }

    /// Copies the averaged weights into the live variables (before evaluation/export).
    pub fn copy_to_model(&self) {
        let _guard = tch::no_grad_guard();
        for (_, live, avg) in &self.pairs {
            live.shallow_clone().copy_(avg);
        }
    }
}

/// A run's weight averages, as its recipe asks for them.
#[derive(Debug)]
pub(crate) struct WeightAverages {
    /// The EMA of the weights (the ones evaluated and exported).
    pub ema: Option<Ema>,
    /// Lookahead's slow weights.
    pub lookahead: Option<Ema>,
}

/// Where a training step sits in the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepAt {
    /// 0-based epoch.
    pub epoch: u32,
    /// 0-based step within the epoch.
    pub step: i64,
    pub steps_per_epoch: i64,
}

impl WeightAverages {
    /// The averages `recipe` asks for (EMA, lookahead's slow copy), over `vs`.
    pub fn new(vs: &VarStore, recipe: &Recipe) -> Self {
        WeightAverages {
            ema: recipe.ema.as_ref().map(|e| Ema::new(vs, e.decay)),
            lookahead: recipe.lookahead.as_ref().map(|_| Ema::new(vs, 0.0)),
        }
    }

    /// The updates due after the step `at`: lookahead every `every_steps` global steps at
    /// the scheduled decay, and once more with decay 1 after the run's last step; the EMA
    /// every `every_steps` steps of an epoch.
    pub fn after_step(&mut self, recipe: &Recipe, at: StepAt) {
        if let (Some(la), Some(slow)) = (&recipe.lookahead, self.lookahead.as_mut()) {
            let global = at.epoch as i64 * at.steps_per_epoch + at.step + 1;
            if global % la.every_steps.max(1) as i64 == 0 {
                let t = global as f64 / at.steps_per_epoch as f64;
                slow.lookahead(recipe.lookahead_decay_at(t).unwrap_or(0.0));
            }
            if at.epoch + 1 == recipe.epochs && at.step + 1 == at.steps_per_epoch {
                // The run ends on the slow weights (airbench's final decay 1).
                slow.lookahead(1.0);
            }
        }
        if let (Some(e), Some(ec)) = (self.ema.as_mut(), recipe.ema.as_ref()) {
            if (at.step as u32) % ec.every_steps.max(1) == 0 {
                e.update();
            }
        }
    }

    /// Runs an evaluation `f` on the weights the run reports: the EMA ones when the
    /// recipe averages (swapped in without disturbing the live ones), else the live ones.
    pub fn on_eval_weights<T>(&self, vs: &VarStore, f: impl FnOnce() -> T) -> T {
        match &self.ema {
            Some(e) => with_ema_weights(vs, e, f),
            None => f(),
        }
    }
}

/// Runs `f` with the EMA weights swapped into the model, then restores the live ones.
fn with_ema_weights<T>(vs: &VarStore, ema: &Ema, f: impl FnOnce() -> T) -> T {
    let _guard = tch::no_grad_guard();
    let backup: Vec<(Tensor, Tensor)> = vs
        .variables()
        .into_values()
        .map(|t| {
            let copy = t.detach().copy();
            (t, copy)
        })
        .collect();
    ema.copy_to_model();
    let out = f();
    for (live, saved) in backup {
        live.shallow_clone().copy_(&saved);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Lookahead moves the slow copy toward the live variables and restarts them from
    /// it, BatchNorm statistics included.
    #[test]
    fn lookahead_interpolates_weights_and_statistics() {
        let spec = tpsnet_zoo::ResNetSpec::paper(&[1], 2, 2);
        let vs = VarStore::new(Device::Cpu);
        let _net = crate::model::ResNet::new(&vs.root(), &spec);
        let mut la = Ema::new(&vs, 0.0);
        let vars = vs.variables();
        let w = vars["stem.conv.weight"].shallow_clone();
        let rm = vars["stem.bn.running_mean"].shallow_clone();
        let (w0, rm0) = (w.detach().copy(), rm.detach().copy());
        {
            let _g = tch::no_grad_guard();
            let _ = w.shallow_clone().g_add_scalar_(1.0);
            let _ = rm.shallow_clone().g_add_scalar_(2.0);
        }
        la.lookahead(0.75);
        let near = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-6;
        assert!(
            near(&w, &(&w0 + 0.25)),
            "live weights restart from the slow ones"
        );
        assert!(near(&rm, &(&rm0 + 0.5)), "BN statistics move with them");
        la.lookahead(1.0);
        assert!(near(&w, &(&w0 + 0.25)), "decay 1 keeps the slow weights");
    }
}
