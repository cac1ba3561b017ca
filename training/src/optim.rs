//! SGD over one flat parameter buffer.
//!
//! tch's built-in optimizer hides its momentum buffers, so a checkpoint could not resume
//! exactly. Here every trainable variable is re-pointed to a view of one contiguous
//! buffer (trick "flat_params"): the update is a handful of kernels over one tensor
//! whatever the depth, and the optimizer state is one tensor to save and restore.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::recipe::{Recipe, SgdConfig};

/// Saved optimizer or averaging state that does not fit the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// The saved momentum buffer's shape differs from the model's flat buffer.
    #[error("optimizer state has {saved:?} elements, the model needs {model:?}")]
    MomentumSize {
        /// The saved buffer's shape.
        saved: Vec<i64>,
        /// The shape the model needs.
        model: Vec<i64>,
    },
    /// A weight average (EMA or lookahead) has no saved copy of a variable.
    #[error("checkpoint lacks the {copy} copy of `{name}`")]
    Missing {
        /// Which copy (`ema`, `slow`).
        copy: String,
        /// The variable's name.
        name: String,
    },
}

/// The trainable tensors a recipe keeps fixed: the whitened stem, and BN scales when
/// they are frozen.
pub(crate) fn frozen_params(recipe: &Recipe) -> impl Fn(&str) -> bool {
    let (stem, bn_scale) = (recipe.whiten_stem, recipe.freeze_bn_scale);
    move |name: &str| {
        (stem && name == "stem.conv.weight")
            || (bn_scale && name.contains(".bn") && name.ends_with(".weight"))
    }
}

/// SGD with momentum (PyTorch semantics) over one flat buffer that every trainable
/// variable views, with per-element weight decay and learning-rate multipliers.
#[derive(Debug)]
pub struct FlatSgd {
    params: Vec<Tensor>,
    flat: Tensor,
    momentum: Tensor,
    /// Per-element weight decay (0 where decay is switched off).
    decay: Tensor,
    /// Per-element learning-rate multiplier: 0 for frozen tensors, `bias_lr_scale` for
    /// shifts and biases, 1 elsewhere.
    lr_scale: Tensor,
    cfg: SgdConfig,
}

/// What the optimizer does with one named trainable tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamRule {
    /// Multiplier of the learning rate (0: frozen).
    pub lr_scale: f64,
    /// L2 weight decay of this tensor.
    pub weight_decay: f64,
}

impl ParamRule {
    /// The rule for `name` under `cfg`, with `frozen` tensors never changing.
    ///
    /// BN scales and shifts and all biases get no decay unless `decay_bn_and_bias`; the
    /// shifts of the blocks' BatchNorms learn `bias_lr_scale` times faster with their
    /// decay divided by the same factor (airbench's "bias_scaler": lr × decay is kept).
    ///
    /// ```
    /// use tpsnet_training::optim::ParamRule;
    /// let mut cfg = tpsnet_training::recipe::Recipe::cpu().optimizer;
    /// cfg.bias_lr_scale = 64.0;
    /// assert_eq!(ParamRule::for_param("layer0.block0.bn1.bias", &cfg, false).lr_scale, 64.0);
    /// assert_eq!(ParamRule::for_param("fc.bias", &cfg, false).lr_scale, 1.0);
    /// assert_eq!(ParamRule::for_param("stem.bn.bias", &cfg, false).lr_scale, 1.0);
    /// assert_eq!(ParamRule::for_param("stem.conv.weight", &cfg, true).lr_scale, 0.0);
    /// ```
    pub fn for_param(name: &str, cfg: &SgdConfig, frozen: bool) -> Self {
        if frozen {
            return ParamRule {
                lr_scale: 0.0,
                weight_decay: 0.0,
            };
        }
        let is_bn = name.contains(".bn");
        let is_bias = name.ends_with("bias");
        let mut wd = if (is_bn || is_bias) && !cfg.decay_bn_and_bias {
            0.0
        } else {
            cfg.weight_decay
        };
        // airbench scales BatchNorm shifts only: its head has no bias, and its whitening
        // layer's bias (here the stem BN's shift behind the frozen whitening conv) keeps
        // the base rate. A 64x rate on the head's bias made the logits swing from step
        // to step (eval accuracy near chance mid-run in the 2026-11-26 sweep).
        let scaled = is_bn && is_bias && !name.starts_with("stem.");
        let lr_scale = if scaled { cfg.bias_lr_scale } else { 1.0 };
        wd /= lr_scale;
        ParamRule {
            lr_scale,
            weight_decay: wd,
        }
    }
}

/// Trainable variables in the spec's canonical order, with their names.
pub fn named_trainables(vs: &VarStore, spec: &tpsnet_zoo::ResNetSpec) -> Vec<(String, Tensor)> {
    let vars = vs.variables();
    spec.tensor_shapes()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .map(|(n, _)| {
            let t = vars[&n].shallow_clone();
            (n, t)
        })
        .collect()
}

impl FlatSgd {
    /// Moves the trainables of `vs` into one buffer and sets up the optimizer state.
    pub fn new(vs: &VarStore, spec: &tpsnet_zoo::ResNetSpec, cfg: SgdConfig) -> Self {
        Self::with_frozen(vs, spec, cfg, &|_| false)
    }

    /// [`FlatSgd::new`] where the tensors named by `frozen` keep their values (learning
    /// rate and decay 0; they still get gradients, which costs little next to a conv).
    pub fn with_frozen(
        vs: &VarStore,
        spec: &tpsnet_zoo::ResNetSpec,
        cfg: SgdConfig,
        frozen: &dyn Fn(&str) -> bool,
    ) -> Self {
        let named = named_trainables(vs, spec);
        let device = vs.device();
        let total: i64 = named.iter().map(|(_, t)| t.numel() as i64).sum();
        let flat = Tensor::zeros([total], (Kind::Float, device));
        let mut decay = Vec::with_capacity(named.len());
        let mut lr_scale = Vec::with_capacity(named.len());
        let mut params = Vec::with_capacity(named.len());
        let mut offset = 0;
        let _guard = tch::no_grad_guard();
        for (name, t) in named {
            let n = t.numel() as i64;
            let view = flat.narrow(0, offset, n);
            view.view(t.size().as_slice()).copy_(&t);
            let mut var = t.shallow_clone();
            var.set_data(&view.view(t.size().as_slice()));
            let rule = ParamRule::for_param(&name, &cfg, frozen(&name));
            decay.push(Tensor::full([n], rule.weight_decay, (Kind::Float, device)));
            lr_scale.push(Tensor::full([n], rule.lr_scale, (Kind::Float, device)));
            params.push(var);
            offset += n;
        }
        FlatSgd {
            params,
            momentum: flat.zeros_like(),
            decay: Tensor::cat(&decay, 0),
            lr_scale: Tensor::cat(&lr_scale, 0),
            flat,
            cfg,
        }
    }

    /// Clears the gradients of every trainable variable.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One SGD step at learning rate `lr` (PyTorch's update rule, dampening 0).
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad().view([-1])).collect();
        let mut g = Tensor::cat(&grads, 0);
        if self.cfg.weight_decay != 0.0 {
            g += &self.decay * &self.flat;
        }
        let m = self.cfg.momentum;
        let update = if m != 0.0 {
            let _ = self.momentum.g_mul_scalar_(m).g_add_(&g);
            if self.cfg.nesterov {
                g + &self.momentum * m
            } else {
                self.momentum.shallow_clone()
            }
        } else {
            g
        };
        let _ = self.flat.g_add_(&(update * &self.lr_scale * -lr));
    }

    /// The momentum buffer, for checkpoints.
    pub fn state(&self) -> &Tensor {
        &self.momentum
    }

    /// Restores the momentum buffer saved by [`FlatSgd::state`].
    pub fn load_state(&mut self, momentum: &Tensor) -> Result<(), StateError> {
        if momentum.size() != self.momentum.size() {
            return Err(StateError::MomentumSize {
                saved: momentum.size(),
                model: self.momentum.size(),
            });
        }
        let _guard = tch::no_grad_guard();
        self.momentum.copy_(momentum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tch::nn::{ModuleT, OptimizerConfig};
    use tch::{Device, nn};

    /// Tensors by variable name.
    type Named = HashMap<String, Tensor>;

    /// One SGD step at `cfg.lr` on a random batch of 4, `frozen` held fixed: each
    /// variable before the step, how far it moved (before - after), and the gradient it
    /// was given.
    fn step_once(
        vs: &VarStore,
        net: &crate::model::ResNet,
        spec: &tpsnet_zoo::ResNetSpec,
        cfg: SgdConfig,
        frozen: &dyn Fn(&str) -> bool,
    ) -> (Named, Named, Named) {
        let lr = cfg.lr;
        let before: Named = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        let mut opt = FlatSgd::with_frozen(vs, spec, cfg, frozen);
        let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
        opt.zero_grad();
        net.forward_t(&x, true)
            .cross_entropy_for_logits(&y)
            .backward();
        let vars = vs.variables();
        let grads = vars
            .iter()
            .filter(|(_, t)| t.grad().defined())
            .map(|(n, t)| (n.clone(), t.grad().detach().copy()))
            .collect();
        opt.step(lr);
        let moved = vars
            .iter()
            .map(|(n, t)| (n.clone(), &before[n] - t))
            .collect();
        (before, moved, grads)
    }

    /// Frozen tensors never change and BN shifts take the scaled rate.
    #[test]
    fn frozen_tensors_stay_and_bn_shifts_move_faster() {
        let spec = tpsnet_zoo::ResNetSpec::paper(&[1], 2, 2);
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let net = crate::model::ResNet::new(&vs.root(), &spec);
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            decay_bn_and_bias: false,
            bias_lr_scale: 64.0,
        };
        let (_, moved, g) = step_once(&vs, &net, &spec, cfg, &|n| n == "stem.conv.weight");
        let (g_bias, g_fc) = (&g["layer0.block0.bn1.bias"], &g["fc.bias"]);
        assert_eq!(moved["stem.conv.weight"].abs().max().double_value(&[]), 0.0);
        let d = (&moved["layer0.block0.bn1.bias"] - g_bias * 6.4)
            .abs()
            .max();
        assert!(
            d.double_value(&[]) < 1e-5,
            "BN shift step is 64 x lr x grad"
        );
        let d = (&moved["fc.bias"] - g_fc * 0.1).abs().max();
        assert!(
            d.double_value(&[]) < 1e-6,
            "the head's bias keeps the base rate"
        );
    }

    /// With `decay_bn_and_bias`, a BN shift at 64x rate decays with the base rate's
    /// strength (airbench: lr x decay is the same for every tensor), the head's bias at
    /// the base rate decays as a weight does, and frozen tensors do not decay at all.
    #[test]
    fn scaled_bn_shifts_decay_at_the_base_strength() {
        let spec = tpsnet_zoo::ResNetSpec::paper(&[1], 2, 2);
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let net = crate::model::ResNet::new(&vs.root(), &spec);
        {
            // Nonzero shifts, so that decay shows.
            let _g = tch::no_grad_guard();
            for (n, t) in vs.variables() {
                if n.ends_with(".bias") {
                    t.shallow_clone().copy_(&(t.rand_like() + 0.5));
                }
            }
        }
        let (lr, wd) = (0.1, 0.01);
        let cfg = SgdConfig {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: wd,
            decay_bn_and_bias: true,
            bias_lr_scale: 64.0,
        };
        let (before, moved, g) = step_once(&vs, &net, &spec, cfg, &|n| n.ends_with("bn1.weight"));
        let (g_shift, g_fc) = (&g["layer0.block0.bn1.bias"], &g["fc.bias"]);
        let max_abs = |t: Tensor| t.abs().max().double_value(&[]);
        let shift = "layer0.block0.bn1.bias";
        let want = g_shift * (64.0 * lr) + &before[shift] * (lr * wd);
        assert!(max_abs(&moved[shift] - want) < 1e-5, "64x step, 1x decay");
        let want = g_fc * lr + &before["fc.bias"] * (lr * wd);
        assert!(
            max_abs(&moved["fc.bias"] - want) < 1e-6,
            "head bias: base rate, decayed"
        );
        assert_eq!(
            max_abs(moved["layer0.block0.bn1.weight"].shallow_clone()),
            0.0,
            "frozen: no decay"
        );
    }

    /// Our flat SGD must follow exactly the trajectory of tch's (= PyTorch's) SGD.
    #[test]
    fn flat_sgd_matches_torch_sgd() {
        let spec = tpsnet_zoo::ResNetSpec::paper(&[1, 1, 1], 2, 2);
        for nesterov in [false, true] {
            tch::manual_seed(0);
            let vs_a = VarStore::new(Device::Cpu);
            let net_a = crate::model::ResNet::new(&vs_a.root(), &spec);
            let mut vs_b = VarStore::new(Device::Cpu);
            let net_b = crate::model::ResNet::new(&vs_b.root(), &spec);
            vs_b.copy(&vs_a).unwrap();
            let cfg = SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                nesterov,
                weight_decay: 5e-4,
                decay_bn_and_bias: true,
                bias_lr_scale: 1.0,
            };
            let mut ours = FlatSgd::new(&vs_a, &spec, cfg.clone());
            let mut theirs = nn::Sgd {
                momentum: 0.9,
                dampening: 0.0,
                wd: 5e-4,
                nesterov,
            }
            .build(&vs_b, 0.05)
            .unwrap();
            let x = Tensor::rand([8, 3, 32, 32], (Kind::Float, Device::Cpu));
            let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
            for _ in 0..3 {
                ours.zero_grad();
                net_a
                    .forward_t(&x, true)
                    .cross_entropy_for_logits(&y)
                    .backward();
                ours.step(0.05);
                theirs.zero_grad();
                net_b
                    .forward_t(&x, true)
                    .cross_entropy_for_logits(&y)
                    .backward();
                theirs.step();
            }
            let a = vs_a.variables();
            for (n, tb) in vs_b.variables() {
                let diff = (&a[&n] - &tb).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{n}: {diff} (nesterov={nesterov})");
            }
        }
    }
}
