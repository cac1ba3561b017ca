//! Declarative ResNet architecture specs, exact parameter and MAC counting, and presets.
//!
//! The network (docs/design-notes.md#models): a 3x3 stem (conv, BN, ReLU) followed by `N` residual
//! layers of post-activation basic blocks (conv → BN → ReLU → (dropout) → conv → BN, add
//! the shortcut, ReLU). The first block of a layer carries a projection shortcut (conv +
//! BN) whenever it changes the stride or the channel count. The head is an average pool
//! of kernel `P` (stride `P`), flatten and one linear layer.
//!
//! ```
//! use tpsnet_zoo::ResNetSpec;
//!
//! let tpsnet = ResNetSpec::preset("tpsnet").unwrap();
//! assert_eq!(tpsnet.params(), 4_959_770);
//! assert_eq!(tpsnet.layers.len(), 3);
//! ```

use serde::{Deserialize, Serialize};

/// BatchNorm epsilon used in training and when folding BN into convolutions for export.
pub const BN_EPS: f64 = 1e-5;

/// What a block of a layer is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// The paper's post-activation basic block: conv → BN → ReLU → (dropout) → conv → BN,
    /// add the shortcut (projection when the shape changes), ReLU. `stride` strides the
    /// first conv.
    #[default]
    Residual,
    /// An airbench-style block with no shortcut: conv → BN → ReLU → max-pool(`stride`) →
    /// conv → BN → ReLU. Pooling after the ReLU keeps every BN directly behind its conv,
    /// so export folds it (a max-pool between conv and BN would not commute with a
    /// negative BN scale). `skip_kernel` is unused.
    Plain,
    /// airbench's exact plain block: conv → max-pool(`stride`) → BN → act → conv → BN →
    /// act. BatchNorm then sees the pooled map (its statistics and normalisation are
    /// those of what the next conv reads); export keeps that BN as its own node.
    PlainPoolFirst,
    /// airbench96's three-conv block (Jordan 2024, `ConvGroup` in `legacy/airbench96.py`
    /// of github.com/KellerJordan/cifar10-airbench): a `plain_pool_first` head, conv →
    /// max-pool(`stride`) → BN → act, whose output `h` then feeds a residual pair, conv →
    /// BN → act → (dropout) → conv → BN, added to `h` before the last act:
    /// `act(h + BN(conv(act(BN(conv(h))))))`. Both convs of the pair keep the width, so
    /// the shortcut is always the identity and `skip_kernel` is unused. Tensors:
    /// `conv1`/`bn1` (the head), `conv2`/`bn2`, `conv3`/`bn3` (the pair).
    PoolResidual,
}

impl BlockKind {
    /// Whether the block is one of the shortcut-free, pooling kinds.
    pub fn is_plain(self) -> bool {
        matches!(self, BlockKind::Plain | BlockKind::PlainPoolFirst)
    }

    /// Whether the block downsamples with a max-pool of its `stride` (flooring) rather
    /// than a strided convolution.
    pub fn pools(self) -> bool {
        !matches!(self, BlockKind::Residual)
    }

    /// Convolutions on the block's main path (its projection shortcut not counted).
    pub fn convs(self) -> usize {
        match self {
            BlockKind::PoolResidual => 3,
            _ => 2,
        }
    }
}

/// The nonlinearity after every BatchNorm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The paper's.
    #[default]
    Relu,
    /// Exact (erf) GELU, airbench's choice.
    Gelu,
}

/// How the head pools the final feature map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadPool {
    /// Average pool (the paper's).
    #[default]
    Avg,
    /// Max pool (airbench's).
    Max,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One layer: a stack of blocks with the same width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Number of basic blocks (B_i in the paper).
    pub blocks: usize,
    /// Output channels of every block in this layer (C_i).
    pub channels: usize,
    /// Kernel size of both convolutions in each block (F_i); odd.
    pub conv_kernel: usize,
    /// Kernel size of the projection shortcut's convolution (K_i); odd.
    pub skip_kernel: usize,
    /// Stride of the first block (1 keeps the resolution, 2 halves it). For the pooling
    /// kinds (`plain`, `plain_pool_first`, `pool_residual`) it is the max-pool size
    /// (flooring, as PyTorch and ONNX do).
    pub stride: usize,
    /// Block kind; `residual` (the paper's) when absent.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: BlockKind,
}

/// A complete network description: everything needed to build, count and export it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetSpec {
    /// Side of the square input image in pixels (32 for CIFAR-10).
    pub input_size: usize,
    /// Input channels (3 for RGB).
    pub in_channels: usize,
    /// Channels of the stem convolution (C1 in the paper).
    pub stem_channels: usize,
    /// Kernel size of the stem convolution; odd, or even with an explicit
    /// `stem_padding` (airbench's 2x2 whitening stem).
    pub stem_kernel: usize,
    /// Zero padding of the stem convolution; `None` (the default) pads `stem_kernel / 2`,
    /// keeping the input size. airbench-style specs use 0 (32 → 30 for a 3x3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem_padding: Option<usize>,
    /// The residual layers, in order (N = `layers.len()`).
    pub layers: Vec<LayerSpec>,
    /// Pool kernel (and stride) applied to the final feature map (P).
    pub pool: usize,
    /// Average (default) or max pooling in the head.
    #[serde(default, skip_serializing_if = "is_default")]
    pub head_pool: HeadPool,
    /// Nonlinearity after every BatchNorm; ReLU (the paper's) when absent.
    #[serde(default, skip_serializing_if = "is_default")]
    pub activation: Activation,
    /// Dropout probability between the two convolutions of each block; in
    /// `pool_residual` blocks, between the two convolutions of the residual pair
    /// (0 disables it).
    pub dropout: f64,
    /// Number of output classes.
    pub num_classes: usize,
}

/// Why a spec cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("the spec has no residual layers; give at least one layer")]
    /// The spec has no residual layer.
    NoLayers,
    #[error("layer {layer} has 0 {what}; every layer needs at least 1")]
    /// A layer has 0 blocks or 0 channels (`what`).
    Zero {
        /// Layer index (0-based).
        layer: usize,
        /// `blocks` or `channels`.
        what: &'static str,
    },
    #[error(
        "{what} kernel size {kernel} is even; use an odd size (1, 3, 5, 7) so 'same' padding keeps the map centred"
    )]
    /// A kernel size (of `what`) is even, so 'same' padding cannot centre it.
    EvenKernel {
        /// Which kernel (the stem's, a layer's, a shortcut's).
        what: String,
        /// The even size.
        kernel: usize,
    },
    #[error(
        "layer {layer}: stride {stride} does not divide the {size}x{size} feature map; use a stride that divides it or fewer downsampling layers"
    )]
    /// A layer's stride does not divide the feature map it gets.
    StrideDoesNotFit {
        /// Layer index (0-based).
        layer: usize,
        /// The layer's stride.
        stride: usize,
        /// Side of the feature map entering the layer, pixels.
        size: usize,
    },
    #[error(
        "average-pool size {pool} does not fit the final {size}x{size} feature map; use a pool size that divides {size} (e.g. {size} for a global pool)"
    )]
    /// The head's average-pool size does not divide the final feature map.
    PoolDoesNotFit {
        /// The pool size.
        pool: usize,
        /// Side of the final feature map, pixels.
        size: usize,
    },
    #[error("dropout {0} is outside [0, 1); use a probability such as 0.0 or 0.3")]
    /// The dropout probability is outside `[0, 1)`.
    BadDropout(f64),
    #[error("{what} must be at least 1")]
    /// A size field (`what`) is 0.
    ZeroField {
        /// The field's name.
        what: &'static str,
    },
    #[error(
        "the {kernel}x{kernel} stem with this padding leaves nothing of a {size}x{size} input; use a smaller kernel or more padding"
    )]
    /// The stem's kernel and padding leave no output pixel.
    StemTooLarge {
        /// The stem's kernel size.
        kernel: usize,
        /// Side of the input image, pixels.
        size: usize,
    },
}

/// One basic block, resolved to concrete shapes. Produced by [`ResNetSpec::blocks`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPlan {
    /// Layer index (0-based).
    pub layer: usize,
    /// Block index inside the layer (0-based).
    pub index: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size of the block's convolutions.
    pub kernel: usize,
    /// Stride of the block's first convolution (1 or the layer's stride).
    pub stride: usize,
    /// Kernel of the projection shortcut, or `None` for an identity shortcut (and for
    /// `plain` blocks, which have none).
    pub skip_kernel: Option<usize>,
    /// The block's structure (see [`BlockKind`]).
    pub kind: BlockKind,
    /// Side of the block's input feature map.
    pub in_size: usize,
    /// Side of the block's output feature map.
    pub out_size: usize,
}

impl BlockPlan {
    /// Weight-name prefix of this block, e.g. `layer1.block0`.
    pub fn prefix(&self) -> String {
        format!("layer{}.block{}", self.layer, self.index)
    }
}

/// A named preset of the zoo.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// The preset's name, as `train-zoo` and manifests use it.
    pub name: &'static str,
    /// One line about what the preset is.
    pub description: &'static str,
    /// Builds the preset's spec.
    pub build: fn() -> ResNetSpec,
    /// Top-1 the paper reports for this model after 300 epochs (its selection rule).
    pub paper_top1: Option<f64>,
}

impl Preset {
    /// The preset's full spec.
    pub fn spec(&self) -> ResNetSpec {
        (self.build)()
    }
}

/// The paper's three models (docs/design-notes.md#models), in the order the paper lists them, then our
/// own members of the family.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "model1",
        description: "paper Model-1: ResNet [3,3,3], C1=34",
        build: || ResNetSpec::paper(&[3, 3, 3], 34, 2),
        paper_top1: Some(94.02),
    },
    Preset {
        name: "model2",
        description: "paper Model-2: ResNet [7,7,7], C1=22",
        build: || ResNetSpec::paper(&[7, 7, 7], 22, 2),
        paper_top1: Some(94.24),
    },
    Preset {
        name: "tpsnet",
        description: "paper TPSNet: ResNet [13,13,13], C1=16",
        build: || ResNetSpec::paper(&[13, 13, 13], 16, 2),
        paper_top1: Some(94.84),
    },
    Preset {
        name: "resnet20",
        description: "ResNet-20-sized member of the family: [3,3,3], C1=8; small enough to train on a 2-core CPU",
        build: || ResNetSpec::paper(&[3, 3, 3], 8, 2),
        paper_top1: None,
    },
    Preset {
        name: "airnet",
        description: "airbench94's network, the zoo's CPU model: 2x2 whitening stem (24), conv-pool-BN-GELU blocks 64/256/256, global max pool",
        build: ResNetSpec::airnet,
        paper_top1: None,
    },
    Preset {
        name: "airnet-wide",
        description: "airnet at airbench95's widths 128/384/384 (4.6M params): the zoo's best model, 95 % in 30 s of H200 training",
        build: ResNetSpec::airnet_wide,
        paper_top1: None,
    },
    Preset {
        name: "airnet-res",
        description: "airbench96's three-conv residual blocks (conv-pool-BN-GELU, then two convs with a shortcut) at 128/384/192 to fit 5M params: the candidate for 96 %",
        build: ResNetSpec::airnet_res,
        paper_top1: None,
    },
    Preset {
        name: "plainnet",
        description: "airbench94-shaped plain net for CPU training: unpadded 3x3 stem (24), plain blocks 64/256/256 with max-pool, global max pool",
        build: ResNetSpec::plainnet,
        paper_top1: None,
    },
];

impl ResNetSpec {
    /// The paper's family: `blocks.len()` layers, layer `i` with width `k·C1·2^i`, 3x3
    /// convs, 1x1 skips, stride 2 from the second layer on, global average pool, no dropout.
    ///
    /// ```
    /// let spec = tpsnet_zoo::ResNetSpec::paper(&[3, 3, 3], 34, 2);
    /// assert_eq!(spec.params(), 4_865_580);
    /// ```
    pub fn paper(blocks: &[usize], c1: usize, width_factor: usize) -> Self {
        let layers: Vec<LayerSpec> = blocks
            .iter()
            .enumerate()
            .map(|(i, &b)| LayerSpec {
                blocks: b,
                channels: (width_factor * c1) << i,
                conv_kernel: 3,
                skip_kernel: 1,
                stride: if i == 0 { 1 } else { 2 },
                kind: BlockKind::Residual,
            })
            .collect();
        let final_size = 32 >> blocks.len().saturating_sub(1);
        ResNetSpec {
            input_size: 32,
            in_channels: 3,
            stem_channels: c1,
            stem_kernel: 3,
            stem_padding: None,
            layers,
            pool: final_size.max(1),
            head_pool: HeadPool::Avg,
            activation: Activation::Relu,
            dropout: 0.0,
            num_classes: 10,
        }
    }

    /// The airbench94 layout (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single
    /// GPU": about 0.36 PFLOP of training for 94 %) in this spec's terms, with ReLU for
    /// GELU and an ordinary trained stem for the whitening layer: 3x3 stem with 24
    /// channels and no padding (32 → 30), then three plain blocks of widths 64, 256, 256,
    /// each halving the map with a max-pool (30 → 15 → 7 → 3), a global 3x3 max pool and
    /// a linear head. Few, wide layers at low resolution: cheap per image and fast to
    /// train, which is what a 2-core CPU needs.
    ///
    /// ```
    /// let s = tpsnet_zoo::ResNetSpec::plainnet();
    /// assert_eq!((s.final_size(), s.params(), s.macs()), (3, 1_973_186, 117_610_528));
    /// ```
    pub fn plainnet() -> Self {
        let plain = |channels| LayerSpec {
            blocks: 1,
            channels,
            conv_kernel: 3,
            skip_kernel: 1,
            stride: 2,
            kind: BlockKind::Plain,
        };
        ResNetSpec {
            input_size: 32,
            in_channels: 3,
            stem_channels: 24,
            stem_kernel: 3,
            stem_padding: Some(0),
            layers: vec![plain(64), plain(256), plain(256)],
            pool: 3,
            head_pool: HeadPool::Max,
            activation: Activation::Relu,
            dropout: 0.0,
            num_classes: 10,
        }
    }

    /// airbench94's network (Jordan 2024) in this spec language: a 2x2 unpadded stem of
    /// 24 channels (12 whitening directions and their negatives when the recipe whitens
    /// it), three [`BlockKind::PlainPoolFirst`] blocks of 64, 256 and 256 channels, GELU
    /// after every BatchNorm, and a global max pool (3x3) before the linear head.
    /// Unlike airbench the stem keeps its BatchNorm (behind a frozen whitening conv it
    /// acts as the bias airbench gives that conv) and the head has a bias.
    ///
    /// ```
    /// let s = tpsnet_zoo::ResNetSpec::airnet();
    /// assert_eq!((s.params(), s.macs()), (1_972_826, 118_147_360));
    /// assert_eq!(s.final_size(), 3);
    /// ```
    pub fn airnet() -> Self {
        let block = |channels| LayerSpec {
            blocks: 1,
            channels,
            conv_kernel: 3,
            skip_kernel: 1,
            stride: 2,
            kind: BlockKind::PlainPoolFirst,
        };
        ResNetSpec {
            input_size: 32,
            in_channels: 3,
            stem_channels: 24,
            stem_kernel: 2,
            stem_padding: Some(0),
            layers: vec![block(64), block(256), block(256)],
            pool: 3,
            head_pool: HeadPool::Max,
            activation: Activation::Gelu,
            dropout: 0.0,
            num_classes: 10,
        }
    }

    /// [`ResNetSpec::airnet`] at airbench95's widths (Jordan 2024): blocks of 128, 384 and
    /// 384 channels. 2.3x the parameters and 2.6x the MACs of `airnet`, still under the
    /// paper's 5M budget.
    ///
    /// ```
    /// let s = tpsnet_zoo::ResNetSpec::airnet_wide();
    /// assert_eq!((s.params(), s.macs()), (4_606_554, 301_560_864));
    /// ```
    pub fn airnet_wide() -> Self {
        let mut s = Self::airnet();
        for (layer, channels) in s.layers.iter_mut().zip([128, 384, 384]) {
            layer.channels = channels;
        }
        s
    }

    /// airbench96's network (Jordan 2024) narrowed to the paper's 5M budget: `airnet`'s
    /// 2x2 whitening stem (24), GELU and max-pool head, with three
    /// [`BlockKind::PoolResidual`] blocks (conv → pool → BN → GELU, then two convs with an
    /// identity shortcut around them) of 128, 384 and 192 channels. airbench96 itself
    /// has 128/384/512 (9.9M parameters here); only the last block, which runs on a 7x7
    /// and a 3x3 map, is narrowed, so the net keeps 48 % of the parameters but 80 % of the
    /// MACs.
    ///
    /// ```
    /// let s = tpsnet_zoo::ResNetSpec::airnet_res();
    /// assert_eq!((s.params(), s.macs()), (4_752_730, 361_278_624));
    /// assert_eq!(s.depth(), 11);
    /// ```
    pub fn airnet_res() -> Self {
        let mut s = Self::airnet();
        for (layer, channels) in s.layers.iter_mut().zip([128, 384, 192]) {
            layer.channels = channels;
            layer.kind = BlockKind::PoolResidual;
        }
        s
    }

    /// A preset by name (`model1`, `model2`, `tpsnet`, `resnet20`, `airnet`, `airnet-wide`,
    /// `airnet-res`, `plainnet`), see [`PRESETS`].
    pub fn preset(name: &str) -> Option<Self> {
        PRESETS.iter().find(|p| p.name == name).map(Preset::spec)
    }

    /// Checks that the spec describes a buildable network.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (what, v) in [
            ("input_size", self.input_size),
            ("in_channels", self.in_channels),
            ("stem_channels", self.stem_channels),
            ("num_classes", self.num_classes),
            ("pool", self.pool),
        ] {
            if v == 0 {
                return Err(SpecError::ZeroField { what });
            }
        }
        if self.layers.is_empty() {
            return Err(SpecError::NoLayers);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(SpecError::BadDropout(self.dropout));
        }
        if self.stem_padding.is_none() {
            check_odd("stem", self.stem_kernel)?;
        }
        if self.stem_size() == 0 {
            return Err(SpecError::StemTooLarge {
                kernel: self.stem_kernel,
                size: self.input_size,
            });
        }
        let mut size = self.stem_size();
        for (i, l) in self.layers.iter().enumerate() {
            for (what, v) in [
                ("blocks", l.blocks),
                ("channels", l.channels),
                ("stride", l.stride),
            ] {
                if v == 0 {
                    return Err(SpecError::Zero { layer: i, what });
                }
            }
            check_odd(&format!("layer {i} conv"), l.conv_kernel)?;
            check_odd(&format!("layer {i} skip"), l.skip_kernel)?;
            let fits = if l.kind.pools() {
                size >= l.stride
            } else {
                size % l.stride == 0
            };
            if !fits {
                return Err(SpecError::StrideDoesNotFit {
                    layer: i,
                    stride: l.stride,
                    size,
                });
            }
            size /= l.stride;
        }
        if size % self.pool != 0 || self.pool > size {
            return Err(SpecError::PoolDoesNotFit {
                pool: self.pool,
                size,
            });
        }
        Ok(())
    }

    /// Stem padding actually used (`stem_kernel / 2` unless the spec says otherwise).
    pub fn stem_pad(&self) -> usize {
        self.stem_padding.unwrap_or(self.stem_kernel / 2)
    }

    /// Side of the stem's output feature map (0 if the kernel does not fit).
    pub fn stem_size(&self) -> usize {
        (self.input_size + 2 * self.stem_pad() + 1).saturating_sub(self.stem_kernel)
    }

    /// Side of the final feature map, before pooling.
    pub fn final_size(&self) -> usize {
        self.layers
            .iter()
            .fold(self.stem_size(), |s, l| s / l.stride.max(1))
    }

    /// Channels of the final feature map.
    pub fn final_channels(&self) -> usize {
        self.layers
            .last()
            .map_or(self.stem_channels, |l| l.channels)
    }

    /// Input features of the linear head: channels × pooled area.
    pub fn head_features(&self) -> usize {
        let side = self.final_size() / self.pool.max(1);
        self.final_channels() * side * side
    }

    /// Every basic block with its resolved shapes, in forward order.
    pub fn blocks(&self) -> Vec<BlockPlan> {
        let mut out = Vec::new();
        let mut in_ch = self.stem_channels;
        let mut size = self.stem_size();
        for (li, l) in self.layers.iter().enumerate() {
            for b in 0..l.blocks {
                let stride = if b == 0 { l.stride } else { 1 };
                let out_size = size / stride.max(1);
                let projection =
                    l.kind == BlockKind::Residual && (stride != 1 || in_ch != l.channels);
                out.push(BlockPlan {
                    layer: li,
                    index: b,
                    in_channels: in_ch,
                    out_channels: l.channels,
                    kernel: l.conv_kernel,
                    stride,
                    skip_kernel: projection.then_some(l.skip_kernel),
                    in_size: size,
                    out_size,
                    kind: l.kind,
                });
                in_ch = l.channels;
                size = out_size;
            }
        }
        out
    }

    /// Exact number of trainable parameters (BN counts weight and bias; running
    /// statistics are buffers, not parameters).
    pub fn params(&self) -> u64 {
        let bn = |c: usize| 2 * c as u64;
        let conv = |i: usize, o: usize, k: usize| (i * o * k * k) as u64;
        let mut n =
            conv(self.in_channels, self.stem_channels, self.stem_kernel) + bn(self.stem_channels);
        for b in self.blocks() {
            n += conv(b.in_channels, b.out_channels, b.kernel) + bn(b.out_channels);
            // Every conv after the first maps the block's width to itself.
            n += (b.kind.convs() as u64 - 1)
                * (conv(b.out_channels, b.out_channels, b.kernel) + bn(b.out_channels));
            if let Some(k) = b.skip_kernel {
                n += conv(b.in_channels, b.out_channels, k) + bn(b.out_channels);
            }
        }
        n + (self.head_features() * self.num_classes + self.num_classes) as u64
    }

    /// Multiply-accumulates for one image at inference (convolutions and the linear
    /// head; BN is folded into the convolutions, pooling and additions are not counted).
    pub fn macs(&self) -> u64 {
        let conv = |i: usize, o: usize, k: usize, side: usize| (i * o * k * k * side * side) as u64;
        let mut n = conv(
            self.in_channels,
            self.stem_channels,
            self.stem_kernel,
            self.stem_size(),
        );
        for b in self.blocks() {
            // A residual block strides its first conv; the pooling kinds pool after it.
            let first_side = if b.kind.pools() {
                b.in_size
            } else {
                b.out_size
            };
            n += conv(b.in_channels, b.out_channels, b.kernel, first_side);
            n += (b.kind.convs() as u64 - 1)
                * conv(b.out_channels, b.out_channels, b.kernel, b.out_size);
            if let Some(k) = b.skip_kernel {
                n += conv(b.in_channels, b.out_channels, k, b.out_size);
            }
        }
        n + (self.head_features() * self.num_classes) as u64
    }

    /// Number of weighted layers on the longest path (convs + linear), the usual "depth".
    pub fn depth(&self) -> usize {
        1 + self.blocks().iter().map(|b| b.kind.convs()).sum::<usize>() + 1
    }

    /// A short human-readable summary, e.g. `ResNet[13,13,13] C=32/64/128 k3 s1 P8`;
    /// `Plain[...]` when the layers are airbench-style blocks, `PoolRes[...]` when they are
    /// all airbench96's three-conv blocks.
    pub fn summary(&self) -> String {
        let blocks: Vec<String> = self.layers.iter().map(|l| l.blocks.to_string()).collect();
        let chans: Vec<String> = self.layers.iter().map(|l| l.channels.to_string()).collect();
        let ks: Vec<String> = self
            .layers
            .iter()
            .map(|l| l.conv_kernel.to_string())
            .collect();
        let ss: Vec<String> = self
            .layers
            .iter()
            .map(|l| l.skip_kernel.to_string())
            .collect();
        let family = if self.layers.iter().all(|l| l.kind.is_plain()) {
            "Plain"
        } else if self
            .layers
            .iter()
            .all(|l| l.kind == BlockKind::PoolResidual)
        {
            "PoolRes"
        } else {
            "ResNet"
        };
        let mut s = format!(
            "{family}[{}] C1={} C={} F={} K={} P={}",
            blocks.join(","),
            self.stem_channels,
            chans.join("/"),
            ks.join("/"),
            ss.join("/"),
            self.pool
        );
        if self.dropout > 0.0 {
            s.push_str(&format!(" dropout={}", self.dropout));
        }
        if self.head_pool == HeadPool::Max {
            s.push_str(" maxpool");
        }
        if self.activation == Activation::Gelu {
            s.push_str(" gelu");
        }
        if let Some(p) = self.stem_padding {
            s.push_str(&format!(" stem_pad={p}"));
        }
        s
    }

    /// Names and shapes of every stored tensor (parameters and BN buffers), in the
    /// naming the trainer's `VarStore` and the ONNX writer share.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let bn = |out: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
            for t in ["weight", "bias", "running_mean", "running_var"] {
                out.push((format!("{p}.{t}"), vec![c]));
            }
        };
        let k = self.stem_kernel;
        out.push((
            "stem.conv.weight".into(),
            vec![self.stem_channels, self.in_channels, k, k],
        ));
        bn(&mut out, "stem.bn", self.stem_channels);
        for b in self.blocks() {
            let p = b.prefix();
            let (i, o, k) = (b.in_channels, b.out_channels, b.kernel);
            out.push((format!("{p}.conv1.weight"), vec![o, i, k, k]));
            bn(&mut out, &format!("{p}.bn1"), o);
            for j in 2..=b.kind.convs() {
                out.push((format!("{p}.conv{j}.weight"), vec![o, o, k, k]));
                bn(&mut out, &format!("{p}.bn{j}"), o);
            }
            if let Some(sk) = b.skip_kernel {
                out.push((format!("{p}.shortcut.conv.weight"), vec![o, i, sk, sk]));
                bn(&mut out, &format!("{p}.shortcut.bn"), o);
            }
        }
        out.push((
            "fc.weight".into(),
            vec![self.num_classes, self.head_features()],
        ));
        out.push(("fc.bias".into(), vec![self.num_classes]));
        out
    }
}

/// Formats a count with thousands separators, as the paper's tables do.
///
/// ```
/// assert_eq!(tpsnet_zoo::arch::group_thousands(4_959_770), "4,959,770");
/// ```
pub fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn check_odd(what: &str, kernel: usize) -> Result<(), SpecError> {
    if kernel % 2 == 0 {
        Err(SpecError::EvenKernel {
            what: what.to_string(),
            kernel,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The closed form in docs/design-notes.md#models for N = 3, k = 2, 3x3 convs, 1x1 skips.
    fn closed_form(c1: u64, n: u64) -> u64 {
        1512 * n * c1 * c1 - 336 * c1 * c1 + 56 * n * c1 + 137 * c1 + 10
    }

    #[test]
    fn presets_have_the_papers_exact_counts() {
        let count = |n: &str| ResNetSpec::preset(n).unwrap().params();
        assert_eq!(count("model1"), 4_865_580);
        assert_eq!(count("model2"), 4_971_680);
        assert_eq!(count("tpsnet"), 4_959_770);
        // The paper's 30-epoch search rows.
        assert_eq!(ResNetSpec::paper(&[17, 17, 17], 14, 2).params(), 4_987_384);
        assert_eq!(ResNetSpec::paper(&[23, 23, 23], 12, 2).params(), 4_976_470);
        assert_eq!(count("resnet20"), 271_250);
        assert_eq!(count("plainnet"), 1_973_186);
        assert_eq!(count("airnet-res"), 4_752_730);
    }

    #[test]
    fn macs_match_the_design_notes() {
        let m = |n: &str| ResNetSpec::preset(n).unwrap().macs() as f64 / 1e6;
        assert!((m("model1") - 711.0).abs() < 1.0, "{}", m("model1"));
        assert!((m("model2") - 726.0).abs() < 1.0, "{}", m("model2"));
        assert!((m("tpsnet") - 724.0).abs() < 1.0, "{}", m("tpsnet"));
    }

    #[test]
    fn tensor_shapes_sum_to_params_plus_buffers() {
        for p in PRESETS {
            let spec = p.spec();
            let total: usize = spec
                .tensor_shapes()
                .iter()
                .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            assert_eq!(total as u64, spec.params(), "{}", p.name);
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = ResNetSpec::preset("model1").unwrap();
        s.pool = 3;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("pool size 3") && e.contains("8x8"), "{e}");
        let mut s = ResNetSpec::preset("model1").unwrap();
        s.layers[1].conv_kernel = 4;
        assert!(matches!(s.validate(), Err(SpecError::EvenKernel { .. })));
        let mut s = ResNetSpec::preset("model1").unwrap();
        s.layers.clear();
        assert_eq!(s.validate(), Err(SpecError::NoLayers));
        let mut s = ResNetSpec::preset("model1").unwrap();
        s.dropout = 1.5;
        assert!(s.validate().is_err());
        let mut s = ResNetSpec::preset("model1").unwrap();
        s.layers.push(LayerSpec {
            stride: 16,
            ..s.layers[2].clone()
        });
        assert!(matches!(
            s.validate(),
            Err(SpecError::StrideDoesNotFit { .. })
        ));
        for p in PRESETS {
            p.spec().validate().unwrap();
        }
    }

    #[test]
    fn smaller_pool_widens_the_head() {
        let mut s = ResNetSpec::paper(&[1, 1, 1], 4, 2);
        let global = s.params();
        s.pool = 4;
        s.validate().unwrap();
        assert_eq!(s.head_features(), 32 * 4);
        assert_eq!(s.params(), global + 32 * 3 * 10);
    }

    /// airbench94's published layout, counted by hand: 3x3 stem 3→24 with BN, then per
    /// block conv(c_in→c)+BN and conv(c→c)+BN, then a 256→10 linear layer with bias.
    #[test]
    fn plainnet_counts_by_hand() {
        let s = ResNetSpec::plainnet();
        s.validate().unwrap();
        let conv = |i: u64, o: u64| i * o * 9;
        let block = |i: u64, o: u64| conv(i, o) + 2 * o + conv(o, o) + 2 * o;
        let params =
            conv(3, 24) + 2 * 24 + block(24, 64) + block(64, 256) + block(256, 256) + 256 * 10 + 10;
        assert_eq!(s.params(), params);
        // MACs: stem at 30x30; each block's first conv before its pool, second after.
        let macs = conv(3, 24) * 900
            + conv(24, 64) * 900
            + conv(64, 64) * 225
            + conv(64, 256) * 225
            + conv(256, 256) * 49
            + conv(256, 256) * 49
            + conv(256, 256) * 9
            + 2560;
        assert_eq!(s.macs(), macs);
        assert_eq!(
            s.summary(),
            "Plain[1,1,1] C1=24 C=64/256/256 F=3/3/3 K=1/1/1 P=3 maxpool stem_pad=0"
        );
        assert_eq!(
            s.blocks()
                .iter()
                .filter(|b| b.skip_kernel.is_some())
                .count(),
            0
        );
    }

    /// airbench96's block counted by hand: per block conv(c_in→c) + BN, then two
    /// conv(c→c) + BN; the first conv runs before the pool, the pair after it.
    #[test]
    fn pool_residual_counts_by_hand() {
        let conv = |i: u64, o: u64| i * o * 9;
        let block = |i: u64, o: u64| conv(i, o) + 2 * o + 2 * (conv(o, o) + 2 * o);
        let count = |w: [u64; 3]| {
            conv(3, 24) / 9 * 4
                + 2 * 24
                + block(24, w[0])
                + block(w[0], w[1])
                + block(w[1], w[2])
                + w[2] * 10
                + 10
        };
        let s = ResNetSpec::airnet_res();
        s.validate().unwrap();
        assert_eq!(s.params(), count([128, 384, 192]));
        assert_eq!(s.params(), 4_752_730);
        // Stem 2x2 unpadded: 32 → 31; pools 31 → 15 → 7 → 3.
        let macs = 3 * 24 * 4 * 31 * 31
            + conv(24, 128) * 31 * 31
            + 2 * conv(128, 128) * 15 * 15
            + conv(128, 384) * 15 * 15
            + 2 * conv(384, 384) * 7 * 7
            + conv(384, 192) * 7 * 7
            + 2 * conv(192, 192) * 3 * 3
            + 192 * 10;
        assert_eq!(s.macs(), macs);
        assert_eq!(s.depth(), 1 + 3 * 3 + 1);
        assert!(s.blocks().iter().all(|b| b.skip_kernel.is_none()));
        assert_eq!(
            s.summary(),
            "PoolRes[1,1,1] C1=24 C=128/384/192 F=3/3/3 K=1/1/1 P=3 maxpool gelu stem_pad=0"
        );
        // airbench96's own widths: its 9.9M parameters (ours trains a stem BN where
        // airbench has a conv bias, BN scales, and a head bias: a few thousand more).
        let mut full = s.clone();
        full.layers[2].channels = 512;
        assert_eq!(full.params(), count([128, 384, 512]));
        assert_eq!(full.params(), 9_918_810);
        // Tensors: conv1..3 and bn1..3 per block, in forward order.
        let names: Vec<String> = s
            .tensor_shapes()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("layer2.") && n.ends_with("weight"))
            .collect();
        assert_eq!(
            names,
            [
                "layer2.block0.conv1.weight",
                "layer2.block0.bn1.weight",
                "layer2.block0.conv2.weight",
                "layer2.block0.bn2.weight",
                "layer2.block0.conv3.weight",
                "layer2.block0.bn3.weight"
            ]
        );
    }

    #[test]
    fn pool_residual_serialises_by_name_and_pools_like_plain() {
        let s = ResNetSpec::airnet_res();
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""kind":"pool_residual""#), "{text}");
        assert_eq!(serde_json::from_str::<ResNetSpec>(&text).unwrap(), s);
        // Pooling floors (15 → 7), where a strided residual layer must divide.
        let mut odd = s.clone();
        odd.layers[1].stride = 4; // 15 → 3
        odd.layers[2].stride = 3; // 3 → 1
        odd.pool = 1;
        odd.validate().unwrap();
        assert_eq!(odd.final_size(), 1);
        odd.layers[1].kind = BlockKind::Residual;
        assert!(matches!(
            odd.validate(),
            Err(SpecError::StrideDoesNotFit { layer: 1, .. })
        ));
        // A second block in a layer keeps the map and maps the width to itself.
        let mut two = s.clone();
        two.layers[0].blocks = 2;
        let extra = 9 * 128 * 128 + 2 * 128 + 2 * (9 * 128 * 128 + 2 * 128);
        assert_eq!(two.params(), s.params() + extra);
        assert_eq!(two.macs(), s.macs() + 3 * 9 * 128 * 128 * 15 * 15);
    }

    /// The candidate specs of issue 15's sweep (`tools/gpu/specs/res-*.json`) are
    /// valid, under the paper's 5M parameters, and have the widths their names say
    /// (`res-128-320-256`; a `p` marks a `plain_pool_first` first block).
    #[test]
    fn sweep_candidate_specs_fit_the_budget() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/gpu/specs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let Some(widths) = name.strip_prefix("res-") else {
                continue;
            };
            let spec: ResNetSpec =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            spec.validate().unwrap();
            assert!(spec.params() < 5_000_000, "{name}: {}", spec.params());
            for (i, (w, l)) in widths.split('-').zip(&spec.layers).enumerate() {
                let (kind, w) = match w.strip_prefix('p') {
                    Some(w) => (BlockKind::PlainPoolFirst, w),
                    None => (BlockKind::PoolResidual, w),
                };
                assert_eq!(
                    (l.kind, l.channels.to_string()),
                    (kind, w.into()),
                    "{name} {i}"
                );
            }
            let mut preset_like = ResNetSpec::airnet_res();
            for (l, theirs) in preset_like.layers.iter_mut().zip(&spec.layers) {
                l.channels = theirs.channels;
                l.kind = theirs.kind;
            }
            assert_eq!(
                spec, preset_like,
                "{name}: airnet-res but for widths and kinds"
            );
            seen += 1;
        }
        assert!(seen >= 5, "{seen} candidate specs in {}", dir.display());
    }

    #[test]
    fn new_fields_keep_old_specs_and_their_json_unchanged() {
        // Published manifests predate `kind`, `stem_padding` and `head_pool`: they parse,
        // and the paper's specs serialise without them.
        let text = serde_json::to_string(&ResNetSpec::preset("tpsnet").unwrap()).unwrap();
        for field in ["kind", "stem_padding", "head_pool"] {
            assert!(!text.contains(field), "{field} in {text}");
        }
        let back: ResNetSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.params(), 4_959_770);
        let plain = serde_json::to_string(&ResNetSpec::plainnet()).unwrap();
        assert!(plain.contains(r#""kind":"plain""#) && plain.contains(r#""head_pool":"max""#));
        assert_eq!(
            serde_json::from_str::<ResNetSpec>(&plain).unwrap(),
            ResNetSpec::plainnet()
        );
    }

    #[test]
    fn plain_and_stem_validation() {
        let mut s = ResNetSpec::plainnet();
        s.input_size = 2;
        assert!(matches!(s.validate(), Err(SpecError::StemTooLarge { .. })));
        // Plain layers floor (15 -> 7), residual layers must divide.
        let mut s = ResNetSpec::plainnet();
        s.validate().unwrap();
        s.layers[1].kind = BlockKind::Residual;
        assert!(matches!(
            s.validate(),
            Err(SpecError::StrideDoesNotFit { layer: 1, .. })
        ));
        let mut s = ResNetSpec::plainnet();
        s.layers[2].stride = 8;
        assert!(matches!(
            s.validate(),
            Err(SpecError::StrideDoesNotFit { layer: 2, .. })
        ));
    }

    proptest! {
        #[test]
        fn closed_form_holds_for_the_paper_family(c1 in 1u64..64, n in 1u64..30) {
            let spec = ResNetSpec::paper(&[n as usize; 3], c1 as usize, 2);
            prop_assert_eq!(spec.params(), closed_form(c1, n));
        }

        #[test]
        fn spec_roundtrips_through_json(c1 in 1usize..40, b in 1usize..5, drop in 0.0f64..0.5) {
            let mut spec = ResNetSpec::paper(&[b, b + 1, b], c1, 2);
            spec.dropout = drop;
            let text = serde_json::to_string(&spec).unwrap();
            let back: ResNetSpec = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, spec);
        }
    }
}
