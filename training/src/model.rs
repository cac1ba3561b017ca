//! The ResNet of a [`ResNetSpec`], built with tch.
//!
//! Variable names follow [`ResNetSpec::tensor_shapes`] exactly (`stem.conv.weight`,
//! `layer0.block0.bn1.running_mean`, `fc.bias`, ...), so the ONNX writer in `zoo` can read
//! them back by name and the parameter count can be checked against the spec.

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use zoo::ResNetSpec;
use zoo::manifest::{CIFAR10_MEAN, CIFAR10_STD};

struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    fn new(
        vs: nn::Path,
        conv: &str,
        bn: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        s: usize,
    ) -> Self {
        let cfg = nn::ConvConfig {
            stride: s as i64,
            padding: (k / 2) as i64,
            bias: false,
            ..Default::default()
        };
        ConvBn {
            conv: nn::conv2d(&vs / conv, c_in as i64, c_out as i64, k as i64, cfg),
            bn: nn::batch_norm2d(&vs / bn, c_out as i64, Default::default()),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.conv).apply_t(&self.bn, train)
    }
}

struct BasicBlock {
    first: ConvBn,
    second: ConvBn,
    shortcut: Option<ConvBn>,
    dropout: f64,
}

impl BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = self.first.forward_t(x, train).relu();
        if self.dropout > 0.0 {
            h = h.dropout(self.dropout, train);
        }
        let h = self.second.forward_t(&h, train);
        let short = match &self.shortcut {
            Some(s) => s.forward_t(x, train),
            None => x.shallow_clone(),
        };
        (h + short).relu()
    }
}

/// A post-activation ResNet built from a [`ResNetSpec`]. Takes RGB in [0, 1]
/// (N×3×H×W float) and normalises inside, like the exported ONNX graph.
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    fc: nn::Linear,
    pool: i64,
    mean: Tensor,
    inv_std: Tensor,
}

impl ResNet {
    /// Creates the network's variables under `vs` (PyTorch-default initialisation).
    pub fn new(vs: &nn::Path, spec: &ResNetSpec) -> Self {
        let stem = ConvBn::new(
            vs / "stem",
            "conv",
            "bn",
            spec.in_channels,
            spec.stem_channels,
            spec.stem_kernel,
            1,
        );
        let blocks = spec
            .blocks()
            .iter()
            .map(|b| {
                let p = vs / format!("layer{}", b.layer) / format!("block{}", b.index);
                let (i, o, k) = (b.in_channels, b.out_channels, b.kernel);
                BasicBlock {
                    first: ConvBn::new(p.clone(), "conv1", "bn1", i, o, k, b.stride),
                    second: ConvBn::new(p.clone(), "conv2", "bn2", o, o, k, 1),
                    shortcut: b
                        .skip_kernel
                        .map(|sk| ConvBn::new(&p / "shortcut", "conv", "bn", i, o, sk, b.stride)),
                    dropout: spec.dropout,
                }
            })
            .collect();
        let fc = nn::linear(
            vs / "fc",
            spec.head_features() as i64,
            spec.num_classes as i64,
            Default::default(),
        );
        let device = vs.device();
        let channel = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
        ResNet {
            stem,
            blocks,
            fc,
            pool: spec.pool as i64,
            mean: channel(CIFAR10_MEAN),
            inv_std: channel(CIFAR10_STD.map(|s| 1.0 / s)),
        }
    }
}

impl std::fmt::Debug for ResNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResNet({} blocks)", self.blocks.len())
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = (x - &self.mean.to_kind(x.kind())) * &self.inv_std.to_kind(x.kind());
        let mut x = self.stem.forward_t(&x, train).relu();
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        let x = x.avg_pool2d(
            [self.pool, self.pool],
            [self.pool, self.pool],
            [0, 0],
            false,
            true,
            None,
        );
        x.flatten(1, -1).apply(&self.fc)
    }
}

/// Number of trainable scalars in a var store, as the model itself sees it.
pub fn trainable_params(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}

/// Evaluates `model` on `images` (N×3×32×32 uint8 or float in [0, 1]) in batches and
/// returns the logits on the CPU as f32. `flip_tta` averages with the mirrored image.
pub fn predict_logits(
    model: &impl ModuleT,
    images: &Tensor,
    device: Device,
    batch: i64,
    flip_tta: bool,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = images.size()[0];
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let x = crate::data::to_unit_float(&images.narrow(0, start, len).to_device(device));
        let mut logits = model.forward_t(&x, false);
        if flip_tta {
            logits = (logits + model.forward_t(&x.flip([3]), false)) * 0.5;
        }
        out.push(logits.to_kind(Kind::Float).to_device(Device::Cpu));
        start += len;
    }
    Tensor::cat(&out, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_count_matches_spec_for_presets() {
        for p in zoo::arch::PRESETS {
            let spec = p.spec();
            let vs = nn::VarStore::new(Device::Cpu);
            let _m = ResNet::new(&vs.root(), &spec);
            assert_eq!(trainable_params(&vs), spec.params(), "{}", p.name);
            let names: std::collections::BTreeSet<String> = vs.variables().into_keys().collect();
            let want: std::collections::BTreeSet<String> =
                spec.tensor_shapes().into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, want, "{}", p.name);
        }
    }

    fn arb_spec() -> impl proptest::strategy::Strategy<Value = ResNetSpec> {
        use proptest::prelude::*;
        let layer = (
            1usize..3,
            1usize..12,
            prop::sample::select(vec![1usize, 3, 5]),
            prop::sample::select(vec![1usize, 3]),
            1usize..3,
        );
        (
            1usize..10,
            prop::sample::select(vec![1usize, 3]),
            prop::collection::vec(layer, 1..4),
            0.0f64..0.5,
        )
            .prop_map(|(c1, stem_k, layers, dropout)| {
                let mut spec = ResNetSpec::paper(&[1], c1, 1);
                spec.stem_kernel = stem_k;
                spec.dropout = dropout;
                spec.layers = layers
                    .into_iter()
                    .map(
                        |(blocks, channels, conv_kernel, skip_kernel, stride)| zoo::LayerSpec {
                            blocks,
                            channels,
                            conv_kernel,
                            skip_kernel,
                            stride,
                        },
                    )
                    .collect();
                // The largest pool that divides the final map, or a global pool.
                let side = spec.final_size();
                spec.pool = if side % 2 == 0 && side > 2 {
                    side / 2
                } else {
                    side
                };
                spec
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// The spec's exact count equals libtorch's own count of the built model.
        #[test]
        fn param_count_matches_spec_for_random_specs(spec in arb_spec()) {
            spec.validate().unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            let m = ResNet::new(&vs.root(), &spec);
            proptest::prop_assert_eq!(trainable_params(&vs), spec.params());
            let out = m.forward_t(&Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)), false);
            proptest::prop_assert_eq!(out.size(), vec![2, spec.num_classes as i64]);
        }
    }
}
