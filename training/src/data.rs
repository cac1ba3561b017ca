//! CIFAR-10 as tensors on the training device, with batched on-device augmentation.
//!
//! The whole dataset (150 MB as uint8) lives on the device, so an epoch is a random
//! permutation plus `index_select` per batch: no loader threads, no host↔device copies.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use zoo::cifar::Cifar10;

/// Images (N×3×32×32 uint8) and labels (N int64), on one device.
#[derive(Debug)]
pub struct TensorDataset {
    pub images: Tensor,
    pub labels: Tensor,
}

impl TensorDataset {
    /// Moves a decoded CIFAR-10 split onto `device`.
    pub fn from_cifar(data: &Cifar10, device: Device) -> Self {
        let n = data.len() as i64;
        let images = Tensor::from_slice(&data.images)
            .view([n, 3, 32, 32])
            .to_device(device);
        let labels = Tensor::from_slice(&data.labels)
            .to_kind(Kind::Int64)
            .to_device(device);
        TensorDataset { images, labels }
    }

    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` records (or all of them if there are fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len()) as i64;
        TensorDataset {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
        }
    }

    /// Splits off a validation set of `val` records chosen by a fixed permutation of
    /// `seed`, so searches and early stopping never look at the test set.
    /// Returns `(train, validation)`.
    pub fn split_validation(&self, val: usize, seed: u64) -> (Self, Self) {
        let n = self.len();
        let val = val.min(n);
        let mut order: Vec<i64> = (0..n as i64).collect();
        // Fisher–Yates with a SplitMix64 stream: independent of torch's RNG state.
        let mut s = seed ^ 0xD1B5_4A32_D192_ED03;
        for i in (1..n).rev() {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let j = ((z ^ (z >> 31)) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let device = self.images.device();
        let pick = |idx: &[i64]| {
            let idx = Tensor::from_slice(idx).to_device(device);
            TensorDataset {
                images: self.images.index_select(0, &idx),
                labels: self.labels.index_select(0, &idx),
            }
        };
        (pick(&order[val..]), pick(&order[..val]))
    }
}

/// uint8 pixels → float in [0, 1]; float input is passed through.
pub fn to_unit_float(x: &Tensor) -> Tensor {
    if x.kind() == Kind::Uint8 {
        x.to_kind(Kind::Float) / 255.0
    } else {
        x.shallow_clone()
    }
}

/// The paper's augmentation, applied to a whole batch on its device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Random crop of the original size after zero padding by this many pixels
    /// (uniform integer shift in `[-pad, pad]` on each axis). 0 disables it.
    pub crop_pad: i64,
    /// Random rotation, uniform in `[-deg, deg]` degrees, zero fill. 0 disables it.
    pub rotate_deg: f64,
    /// Random horizontal flip with probability 1/2.
    pub flip: bool,
    /// Fill the border that a crop shift uncovers by mirroring the image (airbench's
    /// reflect padding) instead of with zeros.
    #[serde(default)]
    pub reflect: bool,
    /// With `reflect`, mirror about the border pixel (`dcb|abcd`: PyTorch's `reflect`
    /// padding, OpenCV's BORDER_REFLECT_101, what airbench pads with) instead of about the
    /// image edge (`cba|abcd`, grid_sample's reflection, which repeats the border pixel).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reflect_101: bool,
    /// Trick "alternating flip" (airbench): each image gets one random orientation for
    /// the run and is shown mirrored in every other epoch, so consecutive epochs see both
    /// views instead of a fresh coin toss each time. Needs `flip`.
    #[serde(default)]
    pub alternate_flip: bool,
}

impl Augment {
    pub fn none() -> Self {
        Augment {
            crop_pad: 0,
            rotate_deg: 0.0,
            flip: false,
            reflect: false,
            reflect_101: false,
            alternate_flip: false,
        }
    }

    pub fn paper() -> Self {
        Augment {
            crop_pad: 4,
            rotate_deg: 5.0,
            flip: true,
            reflect: false,
            reflect_101: false,
            alternate_flip: false,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.crop_pad == 0 && self.rotate_deg == 0.0 && !self.flip
    }

    /// Augments `x` (N×C×H×W float in [0, 1]) using torch's global RNG.
    ///
    /// Trick "fused affine augmentation": crop, rotation and flip are one affine map per
    /// image, resampled once with `grid_sample` (bilinear, zero fill). A pure integer
    /// shift lands on pixel centres, so crop-only is exact; with rotation the result
    /// equals crop-then-rotate up to the zero fill in the corners.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        self.apply_with_flips(x, None)
    }

    /// [`Augment::apply`] with the mirror decision of each image given (`flips`: N
    /// values, nonzero = mirror) instead of drawn, when `flip` is on.
    pub fn apply_with_flips(&self, x: &Tensor, flips: Option<&Tensor>) -> Tensor {
        if self.is_identity() {
            return x.shallow_clone();
        }
        let size = x.size();
        let (n, h, w) = (size[0], size[2], size[3]);
        let opts = (Kind::Float, x.device());
        let angle = if self.rotate_deg > 0.0 {
            (Tensor::rand([n], opts) * 2.0 - 1.0) * self.rotate_deg.to_radians()
        } else {
            Tensor::zeros([n], opts)
        };
        let shift = |side: i64| {
            if self.crop_pad > 0 {
                let k = Tensor::randint_low(-self.crop_pad, self.crop_pad + 1, [n], opts);
                // Normalised coordinates span 2 units over `side` pixels.
                k * (2.0 / side as f64)
            } else {
                Tensor::zeros([n], opts)
            }
        };
        let (tx, ty) = (shift(w), shift(h));
        let flip = if self.flip {
            let bits = match flips {
                Some(f) => f.ne(0).to_kind(Kind::Float),
                None => Tensor::randint(2, [n], opts),
            };
            bits * -2.0 + 1.0
        } else {
            Tensor::ones([n], opts)
        };
        let (cos, sin) = (angle.cos(), angle.sin());
        // Output pixel p samples the input at R·F·p + t (F = optional mirror in x).
        let row0 = Tensor::stack(&[&cos * &flip, -&sin, tx], 1);
        let row1 = Tensor::stack(&[&sin * &flip, cos, ty], 1);
        // Border-pixel reflection: pad first, then sample the padded image. Its pixel
        // p + pad sits at normalised (w / (w + 2·pad)) times the original's, so scaling
        // a row of θ by that ratio keeps every integer shift on a pixel centre.
        let (src, row0, row1) = if self.reflect && self.reflect_101 && self.crop_pad > 0 {
            let p = self.crop_pad;
            let (sx, sy) = (w as f64 / (w + 2 * p) as f64, h as f64 / (h + 2 * p) as f64);
            (x.reflection_pad2d([p, p, p, p]), row0 * sx, row1 * sy)
        } else {
            (x.shallow_clone(), row0, row1)
        };
        let theta = Tensor::stack(&[row0, row1], 1);
        let grid = Tensor::affine_grid_generator(&theta, size.as_slice(), false);
        // interpolation 0 = bilinear; padding 0 = zeros, 2 = reflection.
        let padding = if self.reflect { 2 } else { 0 };
        src.grid_sampler(&grid.to_kind(x.kind()), 0, padding, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: i64) -> Tensor {
        Tensor::arange(n * 3 * 32 * 32, (Kind::Float, Device::Cpu)).view([n, 3, 32, 32]) / 1e4
    }

    #[test]
    fn identity_and_flip_only() {
        let x = ramp(4);
        assert!(Augment::none().apply(&x).equal(&x));
        tch::manual_seed(1);
        let a = Augment {
            flip: true,
            ..Augment::none()
        };
        let y = a.apply(&x);
        for i in 0..4 {
            let yi = y.get(i);
            let xi = x.get(i);
            assert!(
                yi.allclose(&xi, 1e-5, 1e-6, false)
                    || yi.allclose(&xi.flip([2]), 1e-5, 1e-6, false),
                "image {i} is neither itself nor its mirror"
            );
        }
    }

    #[test]
    fn given_flips_mirror_exactly_those_images() {
        let x = ramp(4);
        let a = Augment {
            flip: true,
            ..Augment::none()
        };
        let flips = Tensor::from_slice(&[1i64, 0, 0, 1]);
        let y = a.apply_with_flips(&x, Some(&flips));
        for (i, mirrored) in [true, false, false, true].into_iter().enumerate() {
            let want = if mirrored {
                x.get(i as i64).flip([2])
            } else {
                x.get(i as i64)
            };
            assert!(
                y.get(i as i64).allclose(&want, 1e-5, 1e-6, false),
                "image {i}"
            );
        }
    }

    #[test]
    fn reflect_fill_mirrors_the_border() {
        let x = ramp(1) + 1.0;
        let a = Augment {
            crop_pad: 2,
            reflect: true,
            ..Augment::none()
        };
        tch::manual_seed(5);
        // Whatever the shift, reflect fill leaves no zeros behind.
        for _ in 0..8 {
            let y = a.apply(&x);
            assert!(
                y.min().double_value(&[]) >= 1.0,
                "reflect fill must not zero-pad"
            );
        }
    }

    /// Every 32x32 window of a C×36×36 image (the crops a ±2 shift can yield).
    fn reflect_crops(padded: &Tensor) -> Vec<Tensor> {
        let mut out = Vec::new();
        for dy in 0..=4 {
            for dx in 0..=4 {
                out.push(padded.narrow(1, dy, 32).narrow(2, dx, 32));
            }
        }
        out
    }

    #[test]
    fn reflect_modes_mirror_about_the_edge_or_the_border_pixel() {
        let x = ramp(6) + 1.0;
        // Edge mirror repeats the border pixel: x[-1] = x[0], x[-2] = x[1].
        let edge = |xi: &Tensor| {
            let idx: Vec<i64> = [1, 0].into_iter().chain(0..32).chain([31, 30]).collect();
            let idx = Tensor::from_slice(&idx);
            xi.index_select(1, &idx).index_select(2, &idx)
        };
        // Border-pixel mirror (PyTorch's reflect): x[-1] = x[1], x[-2] = x[2].
        let b101 = |xi: &Tensor| {
            xi.unsqueeze(0)
                .reflection_pad2d([2, 2, 2, 2])
                .squeeze_dim(0)
        };
        for (reflect_101, pad) in [(false, &edge as &dyn Fn(&Tensor) -> Tensor), (true, &b101)] {
            let a = Augment {
                crop_pad: 2,
                reflect: true,
                reflect_101,
                ..Augment::none()
            };
            tch::manual_seed(11);
            let y = a.apply(&x);
            for i in 0..6 {
                let crops = reflect_crops(&pad(&x.get(i)));
                let hit = crops
                    .iter()
                    .any(|c| c.allclose(&y.get(i), 1e-4, 1e-5, false));
                assert!(
                    hit,
                    "reflect_101={reflect_101}: image {i} is no crop of its padding"
                );
            }
        }
    }

    #[test]
    fn crop_is_an_exact_integer_shift() {
        let x = ramp(8) + 1.0; // strictly positive, so zero fill is recognisable
        tch::manual_seed(3);
        let a = Augment {
            crop_pad: 4,
            ..Augment::none()
        };
        let y = a.apply(&x);
        for i in 0..8 {
            let (xi, yi) = (x.get(i), y.get(i));
            let found = (-4i64..=4).any(|dy| {
                (-4i64..=4).any(|dx| {
                    // y[r, c] = x[r + dy, c + dx] inside, 0 outside.
                    let shifted = xi.roll([-dy, -dx], [1, 2]);
                    let rows = Tensor::arange(32, (Kind::Int64, Device::Cpu)) + dy;
                    let cols = Tensor::arange(32, (Kind::Int64, Device::Cpu)) + dx;
                    let rmask = rows.ge(0).logical_and(&rows.lt(32)).view([1, 32, 1]);
                    let cmask = cols.ge(0).logical_and(&cols.lt(32)).view([1, 1, 32]);
                    let mask = rmask.logical_and(&cmask).to_kind(Kind::Float);
                    (shifted * mask).allclose(&yi, 1e-4, 1e-5, false)
                })
            });
            assert!(found, "image {i} is not an integer shift of the input");
        }
    }

    #[test]
    fn validation_split_is_disjoint_and_seeded() {
        let images = Tensor::arange(10 * 3 * 32 * 32, (Kind::Int64, Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8)
            .view([10, 3, 32, 32]);
        let labels = Tensor::arange(10, (Kind::Int64, Device::Cpu));
        let d = TensorDataset { images, labels };
        let (t, v) = d.split_validation(3, 5);
        assert_eq!((t.len(), v.len()), (7, 3));
        let mut all: Vec<i64> = Vec::<i64>::try_from(&t.labels).unwrap();
        all.extend(Vec::<i64>::try_from(&v.labels).unwrap());
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let (_, v2) = d.split_validation(3, 5);
        assert!(v.labels.equal(&v2.labels));
    }
}
