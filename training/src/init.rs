//! Initialisations that a recipe can ask for on top of PyTorch's defaults (airbench's
//! "whitening" and "dirac" tricks, Jordan 2024).

use tch::nn::VarStore;
use tch::{Kind, Tensor};
use tpsnet_zoo::ResNetSpec;
use tpsnet_zoo::manifest::{CIFAR10_MEAN, CIFAR10_STD};

/// Small ridge added to every eigenvalue before scaling, so near-constant directions do
/// not blow up (airbench's 5e-4).
const WHITEN_EPS: f64 = 5e-4;

/// Why the stem cannot be whitened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InitError {
    #[error(
        "whiten_stem needs an even number of stem channels (each component and its negative); the spec has {0}. Use an even stem_channels or switch whiten_stem off"
    )]
    /// The stem has an odd number of channels (the spec's `stem_channels`).
    OddStem(usize),
    #[error(
        "whiten_stem: {channels} stem channels need {half} components, but a {k}x{k}x{c} patch has only {dims}; use at most {max} stem channels or switch whiten_stem off"
    )]
    /// The stem has more channels than twice the patch's dimensions.
    TooManyChannels {
        /// The stem's channels.
        channels: usize,
        /// Components needed (half the channels).
        half: usize,
        /// The stem kernel's side.
        k: usize,
        /// Input channels (3).
        c: usize,
        /// Dimensions of a `k`×`k`×`c` patch.
        dims: usize,
        /// The most stem channels the patch allows (`2 · dims`).
        max: usize,
    },
}

/// Sets `stem.conv.weight` to the whitening filters of `images` (N×3×H×W uint8 or float
/// in [0, 1], normalised here as the model does): the top `stem_channels / 2` principal
/// directions of the stem's input patches, each scaled by 1/√(λ + ε), followed by their
/// negatives (so a ReLU keeps both signs).
///
/// ```
/// use tch::{Device, Kind, Tensor, nn::VarStore};
/// let spec = tpsnet_zoo::ResNetSpec::preset("plainnet").unwrap();
/// let vs = VarStore::new(Device::Cpu);
/// let _net = tpsnet_training::model::ResNet::new(&vs.root(), &spec);
/// let images = Tensor::randint(256, [64, 3, 32, 32], (Kind::Uint8, Device::Cpu));
/// tpsnet_training::init::whiten_stem(&vs, &spec, &images).unwrap();
/// let w = &vs.variables()["stem.conv.weight"];
/// let (a, b) = (w.narrow(0, 0, 12), w.narrow(0, 12, 12));
/// assert!((a + b).abs().max().double_value(&[]) == 0.0);
/// ```
pub fn whiten_stem(vs: &VarStore, spec: &ResNetSpec, images: &Tensor) -> Result<(), InitError> {
    let (ch, k, c) = (spec.stem_channels, spec.stem_kernel, spec.in_channels);
    let dims = k * k * c;
    if ch % 2 != 0 {
        return Err(InitError::OddStem(ch));
    }
    if ch / 2 > dims {
        return Err(InitError::TooManyChannels {
            channels: ch,
            half: ch / 2,
            k,
            c,
            dims,
            max: 2 * dims,
        });
    }
    let _guard = tch::no_grad_guard();
    let weight = vs.variables()["stem.conv.weight"].shallow_clone();
    // Whitening statistics in f64 on the CPU: a 27×27 eigenproblem is instant there.
    let x = crate::model::to_unit_float(&images.to_device(tch::Device::Cpu)).to_kind(Kind::Double);
    let stat = |v: [f32; 3]| Tensor::from_slice(&v.map(f64::from)).view([1, 3, 1, 1]);
    let x = (x - stat(CIFAR10_MEAN)) / stat(CIFAR10_STD);
    let pad = spec.stem_pad() as i64;
    let x = if pad > 0 {
        x.constant_pad_nd([pad, pad, pad, pad])
    } else {
        x
    };
    let k = k as i64;
    // N×C×H'×W'×k×k → rows of (C, kh, kw), the conv weight's layout.
    let patches = x
        .unfold(2, k, 1)
        .unfold(3, k, 1)
        .permute([0, 2, 3, 1, 4, 5])
        .reshape([-1, dims as i64]);
    let n = patches.size()[0] as f64;
    let cov = patches.transpose(0, 1).matmul(&patches) / n;
    let (eigenvalues, eigenvectors) = cov.linalg_eigh("L");
    // eigh sorts ascending; the largest `half` components are the last columns.
    let half = (ch / 2) as i64;
    let top = dims as i64 - half;
    let vals = eigenvalues.narrow(0, top, half).flip([0]);
    let vecs = eigenvectors.narrow(1, top, half).flip([1]).transpose(0, 1);
    let filters = vecs / (vals + WHITEN_EPS).sqrt().unsqueeze(1);
    let filters = Tensor::cat(&[&filters, &(-&filters)], 0)
        .view([ch as i64, c as i64, k, k])
        .to_kind(weight.kind())
        .to_device(weight.device());
    weight.shallow_clone().copy_(&filters);
    Ok(())
}

/// Starts the first `in_channels` filters of every block convolution as the identity
/// (PyTorch's `dirac_` on that slice, as airbench does; in `pool_residual` blocks all
/// three convs, as airbench96 does); the other filters keep their default
/// initialisation. Shortcut convolutions are left alone.
///
/// ```
/// use tch::{Device, nn::VarStore};
/// let spec = tpsnet_zoo::ResNetSpec::preset("plainnet").unwrap();
/// let vs = VarStore::new(Device::Cpu);
/// let _net = tpsnet_training::model::ResNet::new(&vs.root(), &spec);
/// tpsnet_training::init::dirac_init(&vs, &spec);
/// let w = &vs.variables()["layer1.block0.conv2.weight"]; // 256 → 256, 3x3
/// assert_eq!(w.double_value(&[5, 5, 1, 1]), 1.0);
/// assert_eq!(w.double_value(&[5, 6, 1, 1]), 0.0);
/// ```
pub fn dirac_init(vs: &VarStore, spec: &ResNetSpec) {
    let _guard = tch::no_grad_guard();
    let vars = vs.variables();
    for b in spec.blocks() {
        // conv1 maps the block's input width, every later conv its own width.
        for j in 1..=b.kind.convs() {
            let c_in = if j == 1 {
                b.in_channels
            } else {
                b.out_channels
            };
            let name = format!("layer{}.block{}.conv{j}.weight", b.layer, b.index);
            let w = &vars[&name];
            let size = w.size();
            let (c_out, k) = (size[0], size[2]);
            let n = (c_in as i64).min(c_out);
            let slice = w.narrow(0, 0, n);
            let _ = slice.shallow_clone().zero_();
            let idx = Tensor::arange(n, (Kind::Int64, w.device()));
            let centre = Tensor::full([n], k / 2, (Kind::Int64, w.device()));
            let ones = Tensor::ones([n], (w.kind(), w.device()));
            let _ = slice.shallow_clone().index_put_(
                &[
                    Some(idx.shallow_clone()),
                    Some(idx),
                    Some(centre.shallow_clone()),
                    Some(centre),
                ],
                &ones,
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The whitened stem's outputs are decorrelated with unit variance (before the ±
    /// copies), which is what the initialisation is for.
    #[test]
    fn whitened_stem_decorrelates_its_input() {
        let spec = ResNetSpec::preset("plainnet").unwrap();
        let vs = VarStore::new(Device::Cpu);
        let _net = crate::model::ResNet::new(&vs.root(), &spec);
        tch::manual_seed(0);
        // Correlated synthetic images: smooth random fields plus noise.
        let base = Tensor::rand([256, 3, 8, 8], (Kind::Float, Device::Cpu)).upsample_bilinear2d(
            [32, 32],
            false,
            None,
            None,
        );
        let images = (base * 0.8
            + Tensor::rand([256, 3, 32, 32], (Kind::Float, Device::Cpu)) * 0.2)
            .clamp(0.0, 1.0);
        whiten_stem(&vs, &spec, &images).unwrap();
        let w = vs.variables()["stem.conv.weight"].narrow(0, 0, 12);
        let stat = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]);
        let x = (&images - stat(CIFAR10_MEAN)) / stat(CIFAR10_STD);
        let y = x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        let rows = y
            .permute([0, 2, 3, 1])
            .reshape([-1, 12])
            .to_kind(Kind::Double);
        let cov = rows.transpose(0, 1).matmul(&rows) / rows.size()[0] as f64;
        let eye = Tensor::eye(12, (Kind::Double, Device::Cpu));
        let err = (cov - eye).abs().max().double_value(&[]);
        assert!(
            err < 0.05,
            "whitened covariance is {err} away from the identity"
        );
    }

    /// airbench96 starts all three convs of its blocks as the identity (on the first
    /// `in_channels` filters); conv2 and conv3 map the width to itself, so fully.
    #[test]
    fn dirac_covers_all_three_convs_of_pool_residual_blocks() {
        let spec = ResNetSpec::preset("airnet-res").unwrap();
        let vs = VarStore::new(Device::Cpu);
        let _net = crate::model::ResNet::new(&vs.root(), &spec);
        dirac_init(&vs, &spec);
        let vars = vs.variables();
        for (conv, filters, inputs) in [
            ("conv1", 192, 384),
            ("conv2", 192, 192),
            ("conv3", 192, 192),
        ] {
            let w = &vars[&format!("layer2.block0.{conv}.weight")];
            assert_eq!(w.size(), [filters, inputs, 3, 3]);
            let n = filters.min(inputs);
            let centre = w.narrow(0, 0, n).select(3, 1).select(2, 1);
            let eye = Tensor::eye(n, (Kind::Float, Device::Cpu));
            let eye = if inputs > n {
                Tensor::cat(
                    &[
                        eye,
                        Tensor::zeros([n, inputs - n], (Kind::Float, Device::Cpu)),
                    ],
                    1,
                )
            } else {
                eye
            };
            assert!(
                centre.equal(&eye),
                "{conv}: centre taps are not the identity"
            );
            let ring = w.narrow(0, 0, n).abs().sum(Kind::Float).double_value(&[]);
            assert_eq!(ring, n as f64, "{conv}: only the centre taps are set");
        }
    }

    #[test]
    fn whitening_rejects_stems_it_cannot_fill() {
        let mut spec = ResNetSpec::preset("plainnet").unwrap();
        spec.stem_channels = 7;
        let vs = VarStore::new(Device::Cpu);
        let _net = crate::model::ResNet::new(&vs.root(), &spec);
        let images = Tensor::zeros([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(whiten_stem(&vs, &spec, &images), Err(InitError::OddStem(7)));
        spec.stem_channels = 56;
        let vs = VarStore::new(Device::Cpu);
        let _net = crate::model::ResNet::new(&vs.root(), &spec);
        let e = whiten_stem(&vs, &spec, &images).unwrap_err();
        assert!(e.to_string().contains("at most 54"), "{e}");
    }
}
