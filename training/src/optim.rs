//! SGD over one flat parameter buffer, and an exponential moving average of the weights.
//!
//! tch's built-in optimizer hides its momentum buffers, so a checkpoint could not resume
//! exactly. Here every trainable variable is re-pointed to a view of one contiguous
//! buffer (trick "flat_params"): the update is a handful of kernels over one tensor
//! whatever the depth, and the optimizer state is one tensor to save and restore.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::recipe::SgdConfig;

pub struct FlatSgd {
    params: Vec<Tensor>,
    flat: Tensor,
    momentum: Tensor,
    /// Per-element weight decay (0 where decay is switched off).
    decay: Tensor,
    cfg: SgdConfig,
}

/// Trainable variables in the spec's canonical order, with their names.
pub fn named_trainables(vs: &VarStore, spec: &zoo::ResNetSpec) -> Vec<(String, Tensor)> {
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
    pub fn new(vs: &VarStore, spec: &zoo::ResNetSpec, cfg: SgdConfig) -> Self {
        let named = named_trainables(vs, spec);
        let device = vs.device();
        let total: i64 = named.iter().map(|(_, t)| t.numel() as i64).sum();
        let flat = Tensor::zeros([total], (Kind::Float, device));
        let mut decay = Vec::with_capacity(named.len());
        let mut params = Vec::with_capacity(named.len());
        let mut offset = 0;
        let _guard = tch::no_grad_guard();
        for (name, t) in named {
            let n = t.numel() as i64;
            let view = flat.narrow(0, offset, n);
            view.view(t.size().as_slice()).copy_(&t);
            let mut var = t.shallow_clone();
            var.set_data(&view.view(t.size().as_slice()));
            let is_bn_or_bias = name.contains(".bn") || name.ends_with("bias");
            let wd = if is_bn_or_bias && !cfg.decay_bn_and_bias {
                0.0
            } else {
                cfg.weight_decay
            };
            decay.push(Tensor::full([n], wd, (Kind::Float, device)));
            params.push(var);
            offset += n;
        }
        FlatSgd {
            params,
            momentum: flat.zeros_like(),
            decay: Tensor::cat(&decay, 0),
            flat,
            cfg,
        }
    }

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
        let _ = self.flat.g_add_(&(update * -lr));
    }

    /// The momentum buffer, for checkpoints.
    pub fn state(&self) -> &Tensor {
        &self.momentum
    }

    /// Restores the momentum buffer saved by [`FlatSgd::state`].
    pub fn load_state(&mut self, momentum: &Tensor) -> Result<(), String> {
        if momentum.size() != self.momentum.size() {
            return Err(format!(
                "optimizer state has {:?} elements, the model needs {:?}",
                momentum.size(),
                self.momentum.size()
            ));
        }
        let _guard = tch::no_grad_guard();
        self.momentum.copy_(momentum);
        Ok(())
    }
}

/// Exponential moving average of all float variables (weights and BN statistics).
pub struct Ema {
    pub decay: f64,
    /// (name, live variable, averaged copy)
    pairs: Vec<(String, Tensor, Tensor)>,
}

impl Ema {
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

    /// Restores averaged tensors by name.
    pub fn load(
        &mut self,
        saved: &std::collections::HashMap<String, Tensor>,
    ) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        for (n, _, a) in &mut self.pairs {
            let t = saved
                .get(&format!("ema.{n}"))
                .ok_or_else(|| format!("checkpoint lacks the EMA copy of `{n}`"))?;
            a.copy_(t);
        }
        Ok(())
    }

    /// Copies the averaged weights into the live variables (before evaluation/export).
    pub fn copy_to_model(&self) {
        let _guard = tch::no_grad_guard();
        for (_, live, avg) in &self.pairs {
            live.shallow_clone().copy_(avg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{ModuleT, OptimizerConfig};
    use tch::{Device, nn};

    /// Our flat SGD must follow exactly the trajectory of tch's (= PyTorch's) SGD.
    #[test]
    fn flat_sgd_matches_torch_sgd() {
        let spec = zoo::ResNetSpec::paper(&[1, 1, 1], 2, 2);
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
