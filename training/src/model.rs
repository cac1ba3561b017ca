//! The ResNet of a [`ResNetSpec`], built with tch.
//!
//! Variable names follow [`ResNetSpec::tensor_shapes`] exactly (`stem.conv.weight`,
//! `layer0.block0.bn1.running_mean`, `fc.bias`, ...), so the ONNX writer in `zoo` can read
//! them back by name and the parameter count can be checked against the spec.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};
use tpsnet_zoo::manifest::{CIFAR10_MEAN, CIFAR10_STD};
use tpsnet_zoo::{Activation, BlockKind, HeadPool, ResNetSpec};

struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    /// The convolution's stride and padding (tch keeps its own copy private), for the
    /// bf16 path of [`ConvBn::convolve`].
    stride: i64,
    padding: i64,
}

impl ConvBn {
    fn new(
        vs: nn::Path,
        (conv, bn): (&str, &str),
        (c_in, c_out, k): (usize, usize, usize),
        s: usize,
        pad: Option<usize>,
        opts: &BuildOptions,
    ) -> Self {
        let cfg = nn::ConvConfig {
            stride: s as i64,
            padding: pad.unwrap_or(k / 2) as i64,
            bias: false,
            ws_init: opts.weight_init(),
            ..Default::default()
        };
        let bn_momentum = opts.bn_momentum;
        let mut bn_cfg = nn::BatchNormConfig {
            momentum: bn_momentum,
            ..Default::default()
        };
        if opts.bn_scale_one {
            // tch draws BN scales from U(0, 1); PyTorch (and airbench) start them at 1.
            bn_cfg.ws_init = nn::Init::Const(1.0);
        }
        let (stride, padding) = (cfg.stride, cfg.padding);
        ConvBn {
            conv: nn::conv2d(&vs / conv, c_in as i64, c_out as i64, k as i64, cfg),
            bn: nn::batch_norm2d(&vs / bn, c_out as i64, bn_cfg),
            stride,
            padding,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool, seen: ConvObserver) -> Tensor {
        self.convolve(x, seen).apply_t(&self.bn, train)
    }

    /// The convolution alone, in bf16 inside [`crate::conv_precision::with_bf16_convs`]
    /// on the CPU, else as tch runs it.
    fn convolve(&self, x: &Tensor, seen: ConvObserver) -> Tensor {
        let conv = &self.conv;
        let y = if crate::conv_precision::bf16_convs() && x.device() == tch::Device::Cpu {
            let bf16 = |t: &Tensor| t.to_kind(Kind::BFloat16);
            x.to_kind(Kind::BFloat16).conv2d(
                &bf16(&conv.ws),
                conv.bs.as_ref().map(bf16).as_ref(),
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            )
        } else {
            x.apply(conv)
        };
        seen(conv, &y);
        y
    }
}

/// Called with every convolution and its output as a forward pass runs (MAC counting,
/// [`ResNet::measured_macs`]); a no-op in training and inference.
type ConvObserver<'a> = &'a mut dyn FnMut(&nn::Conv2D, &Tensor);

fn activate(x: Tensor, act: Activation) -> Tensor {
    match act {
        Activation::Relu => x.relu(),
        Activation::Gelu => x.gelu("none"),
    }
}

fn max_pool(x: Tensor, s: i64) -> Tensor {
    if s > 1 {
        x.max_pool2d([s, s], [s, s], [0, 0], [1, 1], false)
    } else {
        x
    }
}

struct BasicBlock {
    first: ConvBn,
    second: ConvBn,
    /// The last conv of a `pool_residual` block's residual pair.
    third: Option<ConvBn>,
    shortcut: Option<ConvBn>,
    dropout: f64,
    act: Activation,
    kind: BlockKind,
    /// Max-pool size of a plain block (its `stride`).
    pool: i64,
}

impl BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool, seen: ConvObserver) -> Tensor {
        let act = self.act;
        let mut h = match self.kind {
            BlockKind::Plain => max_pool(
                activate(self.first.forward_t(x, train, seen), act),
                self.pool,
            ),
            BlockKind::PlainPoolFirst | BlockKind::PoolResidual => {
                let c = max_pool(self.first.convolve(x, seen), self.pool);
                activate(c.apply_t(&self.first.bn, train), act)
            }
            BlockKind::Residual => activate(self.first.forward_t(x, train, seen), act),
        };
        if let Some(third) = &self.third {
            // airbench96's ConvGroup: the pooled, normalised head output `h` is the
            // shortcut of the two convs after it, added before their last activation.
            let mut r = activate(self.second.forward_t(&h, train, seen), act);
            if self.dropout > 0.0 {
                r = r.dropout(self.dropout, train);
            }
            return activate(third.forward_t(&r, train, seen) + h, act);
        }
        if self.dropout > 0.0 {
            h = h.dropout(self.dropout, train);
        }
        let h = self.second.forward_t(&h, train, seen);
        if self.kind.is_plain() {
            return activate(h, act);
        }
        let short = match &self.shortcut {
            Some(s) => s.forward_t(x, train, seen),
            None => x.shallow_clone(),
        };
        activate(h + short, act)
    }
}

/// A post-activation ResNet built from a [`ResNetSpec`]. Takes RGB in [0, 1]
/// (N×3×H×W float) and normalises inside, like the exported ONNX graph.
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    fc: nn::Linear,
    pool: i64,
    head_max: bool,
    act: Activation,
    logit_scale: f64,
    mean: Tensor,
    inv_std: Tensor,
    /// Shape of one input image (C, H, W).
    input_shape: [i64; 3],
}

/// Training-time choices that do not change the exported network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BuildOptions {
    /// BatchNorm running-statistics momentum (PyTorch convention).
    pub bn_momentum: f64,
    /// Factor on the logits; [`ResNet::fold_logit_scale`] moves it into the head.
    pub logit_scale: f64,
    /// Draw conv and linear weights as PyTorch does (uniform ±1/√fan_in) instead of
    /// tch's default (uniform ±√6/√fan_in, 2.45× wider).
    pub pytorch_init: bool,
    /// Start BatchNorm scales at 1, as PyTorch does, instead of tch's default draw from
    /// U(0, 1). Needed wherever the scales are frozen: frozen at a random draw, a
    /// channel with scale 0.01 is all but dead and the whitened stem loses its equal
    /// variances (the bug behind `airnet-b8c9d1af`'s plateau, docs/lab/training-log.md).
    pub bn_scale_one: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            bn_momentum: 0.1,
            logit_scale: 1.0,
            pytorch_init: false,
            bn_scale_one: false,
        }
    }
}

impl BuildOptions {
    /// The options a recipe asks for.
    pub fn from_recipe(r: &crate::recipe::Recipe) -> Self {
        BuildOptions {
            bn_momentum: r.bn_momentum,
            logit_scale: r.logit_scale,
            pytorch_init: r.pytorch_init,
            // Frozen scales must be airbench's 1; `pytorch_init` means PyTorch's init
            // throughout. Otherwise tch's draw is kept, so that the published GPU models'
            // recipes still reproduce them.
            bn_scale_one: r.freeze_bn_scale || r.pytorch_init,
        }
    }

    /// The weight initialisation of convolutions and the linear head.
    fn weight_init(&self) -> nn::Init {
        if self.pytorch_init {
            // PyTorch's kaiming_uniform_(a=√5): gain √(2/(1+5)), bound gain·√(3/fan_in).
            nn::Init::Kaiming {
                dist: nn::init::NormalOrUniform::Uniform,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ExplicitGain((1.0f64 / 3.0).sqrt()),
            }
        } else {
            nn::init::DEFAULT_KAIMING_UNIFORM
        }
    }
}

impl ResNet {
    /// Creates the network's variables under `vs` (tch's default initialisation; see
    /// [`BuildOptions::pytorch_init`]).
    pub fn new(vs: &nn::Path, spec: &ResNetSpec) -> Self {
        Self::with_options(vs, spec, BuildOptions::default())
    }

    /// [`ResNet::new`] with training-time [`BuildOptions`].
    pub fn with_options(vs: &nn::Path, spec: &ResNetSpec, opts: BuildOptions) -> Self {
        let m = &opts;
        let stem = ConvBn::new(
            vs / "stem",
            ("conv", "bn"),
            (spec.in_channels, spec.stem_channels, spec.stem_kernel),
            1,
            spec.stem_padding,
            m,
        );
        let blocks = spec
            .blocks()
            .iter()
            .map(|b| {
                let p = vs / format!("layer{}", b.layer) / format!("block{}", b.index);
                let (i, o, k) = (b.in_channels, b.out_channels, b.kernel);
                // The pooling kinds pool instead of striding their first conv.
                let conv_stride = if b.kind.pools() { 1 } else { b.stride };
                BasicBlock {
                    first: ConvBn::new(
                        p.clone(),
                        ("conv1", "bn1"),
                        (i, o, k),
                        conv_stride,
                        None,
                        m,
                    ),
                    second: ConvBn::new(p.clone(), ("conv2", "bn2"), (o, o, k), 1, None, m),
                    third: (b.kind.convs() == 3)
                        .then(|| ConvBn::new(p.clone(), ("conv3", "bn3"), (o, o, k), 1, None, m)),
                    shortcut: b.skip_kernel.map(|sk| {
                        ConvBn::new(
                            &p / "shortcut",
                            ("conv", "bn"),
                            (i, o, sk),
                            b.stride,
                            None,
                            m,
                        )
                    }),
                    dropout: spec.dropout,
                    act: spec.activation,
                    kind: b.kind,
                    pool: b.stride as i64,
                }
            })
            .collect();
        let fc = nn::linear(
            vs / "fc",
            spec.head_features() as i64,
            spec.num_classes as i64,
            nn::LinearConfig {
                ws_init: opts.weight_init(),
                ..Default::default()
            },
        );
        let device = vs.device();
        let channel = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
        ResNet {
            stem,
            blocks,
            fc,
            pool: spec.pool as i64,
            head_max: spec.head_pool == HeadPool::Max,
            act: spec.activation,
            logit_scale: opts.logit_scale,
            mean: channel(CIFAR10_MEAN),
            inv_std: channel(CIFAR10_STD.map(|s| 1.0 / s)),
            input_shape: [
                spec.in_channels as i64,
                spec.input_size as i64,
                spec.input_size as i64,
            ],
        }
    }

    /// Moves the logit scale into the head's weights and bias, so the variables alone
    /// (what export reads) compute the same logits. Idempotent.
    pub fn fold_logit_scale(&mut self) {
        if self.logit_scale == 1.0 {
            return;
        }
        let _guard = tch::no_grad_guard();
        let _ = self.fc.ws.g_mul_scalar_(self.logit_scale);
        if let Some(b) = self.fc.bs.as_mut() {
            let _ = b.g_mul_scalar_(self.logit_scale);
        }
        self.logit_scale = 1.0;
    }

    /// Multiply-accumulates per image as libtorch runs the network: for every
    /// convolution, the elements of the output it actually produced (after its stride,
    /// padding and the pools before it) times `in_channels·k²`, plus the linear head.
    /// An independent check of [`ResNetSpec::macs`], which must equal it.
    pub fn measured_macs(&self) -> u64 {
        let _guard = tch::no_grad_guard();
        let [c, h, w] = self.input_shape;
        let x = Tensor::zeros([1, c, h, w], (Kind::Float, self.mean.device()));
        let mut macs = 0u64;
        let mut count = |conv: &nn::Conv2D, y: &Tensor| {
            let per_output: i64 = conv.ws.size()[1..].iter().product();
            macs += (y.numel() as i64 * per_output) as u64;
        };
        let _ = self.forward_seen(&x, false, &mut count);
        let fc = self.fc.ws.size();
        macs + (fc[0] * fc[1]) as u64
    }

    fn forward_seen(&self, x: &Tensor, train: bool, seen: ConvObserver) -> Tensor {
        let x = (x - &self.mean.to_kind(x.kind())) * &self.inv_std.to_kind(x.kind());
        let mut x = activate(self.stem.forward_t(&x, train, seen), self.act);
        for b in &self.blocks {
            x = b.forward_t(&x, train, seen);
        }
        let p = [self.pool, self.pool];
        let x = if self.head_max {
            x.max_pool2d(p, p, [0, 0], [1, 1], false)
        } else {
            x.avg_pool2d(p, p, [0, 0], false, true, None)
        };
        // The head runs in fp32 whatever precision the convolutions ran in.
        let logits = x.flatten(1, -1).to_kind(Kind::Float).apply(&self.fc);
        if self.logit_scale == 1.0 {
            logits
        } else {
            logits * self.logit_scale
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
        self.forward_seen(x, train, &mut |_, _| {})
    }
}

/// Number of trainable scalars in a var store, as the model itself sees it.
pub fn trainable_params(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}

/// uint8 pixels → float in [0, 1]; float input is passed through.
pub fn to_unit_float(x: &Tensor) -> Tensor {
    if x.kind() == Kind::Uint8 {
        x.to_kind(Kind::Float) / 255.0
    } else {
        x.shallow_clone()
    }
}

/// Moves a batch to NHWC memory order, keeping its NCHW shape (tch 0.24 has no
/// memory-format API; convolutions follow their input's layout).
pub fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// bf16 convolutions give the fp32 network's logits to bf16 precision, fp32 logits,
    /// and fp32 gradients on every weight.
    #[test]
    fn bf16_convolutions_track_fp32_and_train_fp32_weights() {
        tch::manual_seed(0);
        let spec = ResNetSpec::preset("airnet").unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = ResNet::new(&vs.root(), &spec);
        let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let fp32 = m.forward_t(&x, false);
        let bf16 = crate::conv_precision::with_bf16_convs(true, || m.forward_t(&x, false));
        assert_eq!(bf16.kind(), Kind::Float);
        let scale = fp32.abs().max().double_value(&[]);
        let diff = (&fp32 - &bf16).abs().max().double_value(&[]);
        // bf16 keeps 8 bits of mantissa: a few parts in a hundred after 7 layers.
        assert!(
            diff > 0.0 && diff < 0.1 * scale,
            "diff {diff}, scale {scale}"
        );
        assert!(
            !crate::conv_precision::bf16_convs(),
            "the switch is restored"
        );

        let loss =
            crate::conv_precision::with_bf16_convs(true, || m.forward_t(&x, true)).sum(Kind::Float);
        loss.backward();
        for (name, w) in vs.trainable_variables().iter().enumerate() {
            let g = w.grad();
            assert!(g.defined(), "variable {name} got no gradient");
            assert_eq!(g.kind(), Kind::Float);
        }
    }

    #[test]
    fn param_count_matches_spec_for_presets() {
        for p in tpsnet_zoo::arch::PRESETS {
            let spec = p.spec();
            let vs = nn::VarStore::new(Device::Cpu);
            let m = ResNet::new(&vs.root(), &spec);
            assert_eq!(trainable_params(&vs), spec.params(), "{}", p.name);
            assert_eq!(m.measured_macs(), spec.macs(), "{}", p.name);
            assert_eq!(shapes(&vs), spec_shapes(&spec), "{}", p.name);
        }
    }

    type Shapes = std::collections::BTreeMap<String, Vec<i64>>;

    /// Every variable of the var store (parameters and BN buffers) with its shape.
    fn shapes(vs: &nn::VarStore) -> Shapes {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect()
    }

    /// What [`ResNetSpec::tensor_shapes`] says the var store holds.
    fn spec_shapes(spec: &ResNetSpec) -> Shapes {
        spec.tensor_shapes()
            .into_iter()
            .map(|(n, s)| (n, s.into_iter().map(|d| d as i64).collect()))
            .collect()
    }

    fn arb_spec() -> impl proptest::strategy::Strategy<Value = ResNetSpec> {
        use proptest::prelude::*;
        let layer = (
            1usize..3,
            1usize..12,
            prop::sample::select(vec![1usize, 3, 5]),
            prop::sample::select(vec![1usize, 3]),
            1usize..3,
            0u8..4,
        );
        (
            1usize..10,
            prop::sample::select(vec![1usize, 2, 3]),
            prop::option::of(0usize..2),
            prop::collection::vec(layer, 1..4),
            0.0f64..0.5,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(c1, stem_k, stem_pad, layers, dropout, head_max, gelu)| {
                let mut spec = ResNetSpec::paper(&[1], c1, 1);
                spec.stem_kernel = stem_k;
                spec.stem_padding = stem_pad;
                spec.dropout = dropout;
                if head_max {
                    spec.head_pool = HeadPool::Max;
                }
                if gelu {
                    spec.activation = Activation::Gelu;
                }
                spec.layers = layers
                    .into_iter()
                    .map(
                        |(blocks, channels, conv_kernel, skip_kernel, stride, kind)| {
                            tpsnet_zoo::LayerSpec {
                                blocks,
                                channels,
                                conv_kernel,
                                skip_kernel,
                                stride,
                                kind: match kind {
                                    0 => BlockKind::Residual,
                                    1 => BlockKind::Plain,
                                    2 => BlockKind::PlainPoolFirst,
                                    _ => BlockKind::PoolResidual,
                                },
                            }
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
            // Unpadded stems give odd maps that a residual stride-2 layer rejects.
            .prop_filter("buildable", |s| s.validate().is_ok())
    }

    /// A `pool_residual` network computes airbench96's ConvGroup (Jordan 2024,
    /// `legacy/airbench96.py`), written out here with plain tensor ops on the var store's
    /// tensors: h = act(BN1(pool(conv1 x))), out = act(h + BN3(conv3 act(BN2(conv2 h)))).
    #[test]
    fn pool_residual_block_is_airbench96s_conv_group() {
        let mut spec = ResNetSpec::paper(&[2], 4, 2);
        spec.layers[0].kind = BlockKind::PoolResidual;
        spec.layers[0].stride = 2;
        spec.activation = Activation::Gelu;
        spec.pool = 16; // global: 32 → 16 after the first block's pool
        spec.validate().unwrap();
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = ResNet::new(&vs.root(), &spec);
        let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        for _ in 0..3 {
            let _ = m.forward_t(&x, true); // running statistics away from 0 and 1
        }
        let v = vs.variables();
        let conv = |t: &Tensor, name: &str| {
            t.conv2d(
                &v[&format!("{name}.weight")],
                None::<Tensor>,
                [1, 1],
                [1, 1],
                [1, 1],
                1,
            )
        };
        let bn = |t: &Tensor, p: &str| {
            let get = |what: &str| Some(v[&format!("{p}.{what}")].shallow_clone());
            let (w, b) = (get("weight"), get("bias"));
            let (mean, var) = (get("running_mean"), get("running_var"));
            t.batch_norm(w, b, mean, var, false, 0.1, tpsnet_zoo::arch::BN_EPS, false)
                .gelu("none")
        };
        let stat = |s: [f32; 3]| Tensor::from_slice(&s).view([1, 3, 1, 1]);
        let mut y = bn(
            &conv(
                &((&x - stat(CIFAR10_MEAN)) / stat(CIFAR10_STD)),
                "stem.conv",
            ),
            "stem.bn",
        );
        for (b, pool) in [("layer0.block0", 2), ("layer0.block1", 1)] {
            let c = conv(&y, &format!("{b}.conv1"));
            let c = if pool > 1 {
                c.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
            } else {
                c
            };
            let h = bn(&c, &format!("{b}.bn1"));
            let r = bn(&conv(&h, &format!("{b}.conv2")), &format!("{b}.bn2"));
            let p = format!("{b}.bn3");
            let get = |what: &str| Some(v[&format!("{p}.{what}")].shallow_clone());
            let c3 = conv(&r, &format!("{b}.conv3")).batch_norm(
                get("weight"),
                get("bias"),
                get("running_mean"),
                get("running_var"),
                false,
                0.1,
                tpsnet_zoo::arch::BN_EPS,
                false,
            );
            y = (c3 + h).gelu("none");
        }
        let want = y
            .avg_pool2d([16, 16], [16, 16], [0, 0], false, true, None)
            .flatten(1, -1)
            .linear(&v["fc.weight"], Some(&v["fc.bias"]));
        let got = m.forward_t(&x, false);
        let d = (got - want).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }

    /// Folding the logit scale into the head leaves the logits unchanged.
    #[test]
    fn folded_logit_scale_gives_the_same_logits() {
        let spec = ResNetSpec::preset("airnet").unwrap();
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let opts = BuildOptions {
            logit_scale: 1.0 / 9.0,
            ..Default::default()
        };
        let mut m = ResNet::with_options(&vs.root(), &spec, opts);
        let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let before = m.forward_t(&x, false);
        m.fold_logit_scale();
        let after = m.forward_t(&x, false);
        let d = (&before - &after).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{d}");
        m.fold_logit_scale(); // idempotent
        assert!(
            (m.forward_t(&x, false) - &after)
                .abs()
                .max()
                .double_value(&[])
                < 1e-7
        );
    }

    /// `pytorch_init` draws within PyTorch's ±1/√fan_in; tch's default goes 2.45× wider.
    #[test]
    fn pytorch_init_matches_pytorch_bounds() {
        let spec = ResNetSpec::preset("airnet").unwrap();
        let widest = |pytorch_init: bool| {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let opts = BuildOptions {
                pytorch_init,
                ..Default::default()
            };
            let _m = ResNet::with_options(&vs.root(), &spec, opts);
            // layer1.block0.conv2: 256 -> 256, 3x3: fan_in 2304.
            let w = &vs.variables()["layer1.block0.conv2.weight"];
            w.abs().max().double_value(&[]) * (2304f64).sqrt()
        };
        let (ours, tch_default) = (widest(true), widest(false));
        assert!(ours <= 1.0 && ours > 0.99, "{ours}");
        assert!(
            tch_default <= 6f64.sqrt() && tch_default > 2.4,
            "{tch_default}"
        );
    }

    /// A recipe that freezes BN scales gets them at exactly 1 (airbench, PyTorch), in
    /// the stem and in every block; tch's own default draws them from U(0, 1), which
    /// the published GPU recipes keep so that they still reproduce.
    #[test]
    fn frozen_bn_scales_start_at_one() {
        let spec = ResNetSpec::preset("airnet").unwrap();
        let scales = |recipe: &crate::recipe::Recipe| {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let _m = ResNet::with_options(&vs.root(), &spec, BuildOptions::from_recipe(recipe));
            let vars = vs.variables();
            let names: Vec<String> = vars
                .keys()
                .filter(|n| n.contains(".bn") && n.ends_with(".weight"))
                .cloned()
                .collect();
            assert_eq!(names.len(), 7, "stem + two per block");
            Tensor::cat(
                &names.iter().map(|n| vars[n].view([-1])).collect::<Vec<_>>(),
                0,
            )
        };
        let cpu = crate::recipe::Recipe::cpu();
        assert!(cpu.freeze_bn_scale);
        let s = scales(&cpu);
        assert_eq!(s.min().double_value(&[]), 1.0);
        assert_eq!(s.max().double_value(&[]), 1.0);
        let fast = crate::recipe::Recipe::fast();
        assert!(!fast.freeze_bn_scale && !fast.pytorch_init);
        let s = scales(&fast);
        assert!(s.min().double_value(&[]) >= 0.0 && s.max().double_value(&[]) < 1.0);
        assert!(s.std(true).double_value(&[]) > 0.1, "tch's U(0, 1) draw");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// The spec's exact parameter and MAC counts equal libtorch's own count of the
        /// built model and the MACs of the shapes its convolutions produce; its tensor
        /// names and shapes are the var store's.
        #[test]
        fn param_count_matches_spec_for_random_specs(spec in arb_spec()) {
            spec.validate().unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            let m = ResNet::new(&vs.root(), &spec);
            proptest::prop_assert_eq!(trainable_params(&vs), spec.params());
            proptest::prop_assert_eq!(m.measured_macs(), spec.macs());
            proptest::prop_assert_eq!(shapes(&vs), spec_shapes(&spec));
            let out = m.forward_t(&Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)), false);
            proptest::prop_assert_eq!(out.size(), vec![2, spec.num_classes as i64]);
        }
    }
}
