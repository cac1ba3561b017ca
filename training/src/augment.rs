//! The training augmentations, applied to a whole batch on its device (the dataset lives
//! there: [`crate::dataset`]).

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tpsnet_zoo::manifest::CIFAR10_MEAN;

/// The training augmentations, applied to a whole batch on its device. Every switch is
/// a recipe field (`augment.<name>`, settable with `--set`); all are off in
/// [`Augment::none`].
///
/// * `crop_pad` (+ `reflect`, `reflect_101`): random crop = integer shift, the paper's
///   with zero fill.
/// * `translate`: airbench's random translation, an integer shift with the uncovered
///   border mirrored about the border pixel. The same transformation as `crop_pad` with
///   `reflect` and `reflect_101` (the same code runs); the older spelling stays for the
///   recipes and manifests written with it. A recipe sets one or the other.
/// * `rotate_deg`, `flip`, `alternate_flip`: rotation, mirror, airbench's alternation.
/// * `cutout`: one square per image set to the mean colour, after everything else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AugmentFields")]
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
    /// Trick "translate" (airbench's `translate`, 2 in airbench94, 4 in airbench96): shift
    /// each image by a uniform integer in `[-translate, translate]` pixels on each axis,
    /// independently, filling what the shift uncovers by mirroring the image about its
    /// border pixel (PyTorch's `reflect` padding, as airbench pads). Exactly `crop_pad`
    /// = `translate` with `reflect` and `reflect_101` on: the same code runs, and the
    /// same seed gives the same images (tested). Cannot be combined with `crop_pad`.
    /// 0 disables it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub translate: u32,
    /// Trick "cutout" (DeVries & Taylor 2017; airbench96 uses 12): each image gets one
    /// `cutout`×`cutout` square set to the CIFAR-10 mean colour — what airbench's zero in
    /// normalised pixels is. The square's corner is uniform over the positions where it
    /// fits inside the image, so it is never clipped at the border (airbench's rule; a
    /// size above the image side is cut to the side). Applied after the shift, rotation
    /// and flip. 0 disables it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cutout: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// [`Augment`] as written in JSON, checked before it becomes one (unknown keys refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AugmentFields {
    crop_pad: i64,
    rotate_deg: f64,
    flip: bool,
    #[serde(default)]
    reflect: bool,
    #[serde(default)]
    reflect_101: bool,
    #[serde(default)]
    alternate_flip: bool,
    #[serde(default)]
    translate: u32,
    #[serde(default)]
    cutout: u32,
}

impl TryFrom<AugmentFields> for Augment {
    type Error = String;

    fn try_from(f: AugmentFields) -> Result<Self, String> {
        if f.translate > 0 && f.crop_pad != 0 {
            return Err(format!(
                "augment sets both translate ({}) and crop_pad ({}); they are the same shift: keep translate and set crop_pad to 0 (translate N = crop_pad N with reflect and reflect_101)",
                f.translate, f.crop_pad
            ));
        }
        if f.crop_pad < 0 {
            return Err(format!(
                "augment.crop_pad is {}; use 0 (off) or a positive number of pixels",
                f.crop_pad
            ));
        }
        Ok(Augment {
            crop_pad: f.crop_pad,
            rotate_deg: f.rotate_deg,
            flip: f.flip,
            reflect: f.reflect,
            reflect_101: f.reflect_101,
            alternate_flip: f.alternate_flip,
            translate: f.translate,
            cutout: f.cutout,
        })
    }
}

impl Augment {
    /// The fields left out of a recipe's JSON while they are off, so that recipes
    /// written before them (and the published manifests' `recipe_config`) still compare
    /// equal; `--set augment.<field>=...` may still set them.
    pub const OMITTED_WHEN_OFF: [&str; 3] = ["reflect_101", "translate", "cutout"];

    /// No augmentation at all.
    pub fn none() -> Self {
        Augment {
            crop_pad: 0,
            rotate_deg: 0.0,
            flip: false,
            reflect: false,
            reflect_101: false,
            alternate_flip: false,
            translate: 0,
            cutout: 0,
        }
    }

    /// The paper's: 4-pixel pad-and-crop, rotations up to ±5°, random horizontal flips.
    pub fn paper() -> Self {
        Augment {
            crop_pad: 4,
            rotate_deg: 5.0,
            flip: true,
            ..Self::none()
        }
    }

    /// Whether this augmentation leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        self.is_affine_identity() && self.cutout == 0
    }

    fn is_affine_identity(&self) -> bool {
        self.shift().0 == 0 && self.rotate_deg == 0.0 && !self.flip
    }

    /// The shift in pixels and how its border is filled: `(pad, reflect, reflect_101)`.
    /// `translate` is `crop_pad` with border-pixel reflection.
    fn shift(&self) -> (i64, bool, bool) {
        if self.translate > 0 {
            (i64::from(self.translate), true, true)
        } else {
            (self.crop_pad, self.reflect, self.reflect_101)
        }
    }

    /// Augments `x` (N×C×H×W float in [0, 1]) using torch's global RNG.
    ///
    /// Trick "fused affine augmentation": crop (or translate), rotation and flip are one
    /// affine map per image, resampled once with `grid_sample` (bilinear, zero fill). A
    /// pure integer shift lands on pixel centres, so crop-only is exact; with rotation
    /// the result equals crop-then-rotate up to the zero fill in the corners. Cutout
    /// follows. Switches that are off draw no random numbers, so a recipe without the
    /// newer switches replays the same augmentations as before they existed.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        self.apply_with_flips(x, None)
    }

    /// [`Augment::apply`] with the mirror decision of each image given (`flips`: N
    /// values, nonzero = mirror) instead of drawn, when `flip` is on.
    pub fn apply_with_flips(&self, x: &Tensor, flips: Option<&Tensor>) -> Tensor {
        let y = if self.is_affine_identity() {
            x.shallow_clone()
        } else {
            self.affine(x, flips)
        };
        if self.cutout > 0 {
            cutout(&y, i64::from(self.cutout))
        } else {
            y
        }
    }

    fn affine(&self, x: &Tensor, flips: Option<&Tensor>) -> Tensor {
        let size = x.size();
        let (n, h, w) = (size[0], size[2], size[3]);
        let opts = (Kind::Float, x.device());
        let (pad, reflect, reflect_101) = self.shift();
        let angle = if self.rotate_deg > 0.0 {
            (Tensor::rand([n], opts) * 2.0 - 1.0) * self.rotate_deg.to_radians()
        } else {
            Tensor::zeros([n], opts)
        };
        let shift = |side: i64| {
            if pad > 0 {
                let k = Tensor::randint_low(-pad, pad + 1, [n], opts);
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
        let (src, row0, row1) = if reflect && reflect_101 && pad > 0 {
            let p = pad;
            let (sx, sy) = (w as f64 / (w + 2 * p) as f64, h as f64 / (h + 2 * p) as f64);
            (x.reflection_pad2d([p, p, p, p]), row0 * sx, row1 * sy)
        } else {
            (x.shallow_clone(), row0, row1)
        };
        let theta = Tensor::stack(&[row0, row1], 1);
        let grid = Tensor::affine_grid_generator(&theta, size.as_slice(), false);
        // interpolation 0 = bilinear; padding 0 = zeros, 2 = reflection.
        let padding = if reflect { 2 } else { 0 };
        src.grid_sampler(&grid.to_kind(x.kind()), 0, padding, false)
    }
}

/// Trick "cutout": sets one `size`×`size` square of every image of `x` (N×C×H×W float
/// in [0, 1]) to the CIFAR-10 mean colour (0 where C ≠ 3), its top-left corner drawn
/// uniformly from the positions where it fits inside the image (torch's global RNG).
/// A `size` above the image side is cut to the side.
pub fn cutout(x: &Tensor, size: i64) -> Tensor {
    let dims = x.size();
    let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let (sy, sx) = (size.min(h), size.min(w));
    let device = x.device();
    let int = (Kind::Int64, device);
    let top = Tensor::randint(h - sy + 1, [n, 1, 1, 1], int);
    let left = Tensor::randint(w - sx + 1, [n, 1, 1, 1], int);
    let rows = Tensor::arange(h, int).view([1, 1, h, 1]);
    let cols = Tensor::arange(w, int).view([1, 1, 1, w]);
    let inside = |at: &Tensor, start: &Tensor, len: i64| {
        at.greater_equal_tensor(start)
            .logical_and(&at.less_tensor(&(start + len)))
    };
    let square = inside(&rows, &top, sy).logical_and(&inside(&cols, &left, sx));
    let fill = if c == 3 {
        Tensor::from_slice(&CIFAR10_MEAN).view([1, 3, 1, 1])
    } else {
        Tensor::zeros([1, c, 1, 1], (Kind::Float, Device::Cpu))
    }
    .to_kind(x.kind())
    .to_device(device);
    fill.where_self(&square, x)
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
    fn new_switches_are_off_by_default() {
        for a in [Augment::none(), Augment::paper()] {
            assert_eq!((a.translate, a.cutout), (0, 0));
        }
        assert!(Augment::none().is_identity());
        for a in [
            Augment {
                translate: 1,
                ..Augment::none()
            },
            Augment {
                cutout: 1,
                ..Augment::none()
            },
        ] {
            assert!(!a.is_identity(), "{a:?}");
        }
        // JSON from before the switches existed parses with both off.
        let old =
            r#"{"crop_pad":2,"rotate_deg":0.0,"flip":true,"reflect":true,"alternate_flip":true}"#;
        let a: Augment = serde_json::from_str(old).unwrap();
        assert_eq!((a.translate, a.cutout, a.crop_pad), (0, 0, 2));
    }

    /// The window of `padded` (C×(H+2p)×(W+2p)) that `y` (C×H×W) is, as a shift
    /// `(dy, dx)` in `[-p, p]`, if any.
    fn window_of(padded: &Tensor, y: &Tensor, p: i64) -> Option<(i64, i64)> {
        let (h, w) = (y.size()[1], y.size()[2]);
        (-p..=p)
            .flat_map(|dy| (-p..=p).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| {
                let win = padded.narrow(1, p + dy, h).narrow(2, p + dx, w);
                win.allclose(y, 0.0, 0.01, false)
            })
    }

    /// airbench's translate: reflect-pad (about the border pixel) by N, take a random
    /// window; shifts uniform in [-N, N] per axis. (That it replays `crop_pad` N with
    /// `reflect_101` image for image is tests/augment_seed.rs's.)
    #[test]
    fn translate_is_a_uniform_window_of_the_border_pixel_reflection() {
        let n = 256;
        // Distinct integers: no two windows of an image match within the tolerance.
        let x = Tensor::arange(n * 3 * 12 * 12, (Kind::Float, Device::Cpu)).view([n, 3, 12, 12]);
        let t = Augment {
            translate: 4,
            ..Augment::none()
        };
        tch::manual_seed(21);
        let y = t.apply(&x);
        let padded = x.reflection_pad2d([4, 4, 4, 4]);
        let (mut rows, mut cols) = ([0u32; 9], [0u32; 9]);
        for i in 0..n {
            let (dy, dx) = window_of(&padded.get(i), &y.get(i), 4)
                .unwrap_or_else(|| panic!("image {i} is no window of its reflect padding"));
            rows[(dy + 4) as usize] += 1;
            cols[(dx + 4) as usize] += 1;
        }
        // 256 draws over 9 shifts: about 28 each; every shift is drawn, none dominates.
        for counts in [rows, cols] {
            assert!(counts.iter().all(|&c| (8..=56).contains(&c)), "{counts:?}");
        }
    }

    /// Images whose pixels are all ≥ 2, so a mean-coloured pixel (< 1) marks the square.
    fn bright(n: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::rand([n, 3, 32, 32], (Kind::Float, Device::Cpu)) + 2.0
    }

    #[test]
    fn cutout_sets_one_whole_square_per_image_to_the_mean() {
        let n = 512;
        let x = bright(n, 4);
        tch::manual_seed(9);
        let y = Augment {
            cutout: 12,
            ..Augment::none()
        }
        .apply(&x);
        assert_eq!(y.size(), x.size());
        let changed = y.ne_tensor(&x);
        // The same pixels change in every channel, and to that channel's mean.
        for c in 0..3 {
            assert!(changed.select(1, c).equal(&changed.select(1, 0)));
            let vals = y.select(1, c).masked_select(&changed.select(1, c));
            let want = f64::from(CIFAR10_MEAN[c as usize]);
            assert!((vals.min().double_value(&[]) - want).abs() < 1e-7);
            assert!((vals.max().double_value(&[]) - want).abs() < 1e-7);
        }
        let mask = changed.select(1, 0).to_kind(Kind::Int64); // N×32×32
        let mut tops = Vec::new();
        for i in 0..n {
            let m = mask.get(i);
            assert_eq!(
                m.sum(Kind::Int64).int64_value(&[]),
                144,
                "image {i}: 12x12 pixels"
            );
            let rows = m
                .sum_dim_intlist(1, false, Kind::Int64)
                .nonzero()
                .view([-1]);
            let cols = m
                .sum_dim_intlist(0, false, Kind::Int64)
                .nonzero()
                .view([-1]);
            // 12 consecutive rows and columns: a whole square, never clipped.
            assert_eq!((rows.size()[0], cols.size()[0]), (12, 12), "image {i}");
            let (top, left) = (rows.int64_value(&[0]), cols.int64_value(&[0]));
            assert_eq!(rows.int64_value(&[11]) - top, 11);
            assert_eq!(cols.int64_value(&[11]) - left, 11);
            tops.push(top);
        }
        // Corners uniform over 0..=20: both ends are reached, the mean is near 10.
        assert_eq!(tops.iter().min(), Some(&0));
        assert_eq!(tops.iter().max(), Some(&20));
        let mean = tops.iter().sum::<i64>() as f64 / n as f64;
        assert!((mean - 10.0).abs() < 1.0, "{mean}");
    }

    #[test]
    fn cutout_wider_than_the_image_covers_it() {
        let x = bright(2, 1);
        let y = cutout(&x, 40);
        let mean = Tensor::from_slice(&CIFAR10_MEAN).view([1, 3, 1, 1]);
        assert!(y.equal(&mean.expand_as(&x).contiguous()));
    }
}
