//! Test-time augmentation (TTA): which views of an image a model is evaluated on, and how
//! their logits are averaged. One definition shared by the trainer (which measures a
//! manifest's claims in libtorch) and the runtime (which re-measures them in ONNX Runtime
//! and classifies with them), so that both mean the same thing by `flip` or `6view`.
//!
//! | mode | views (weight of each view's logits) |
//! |---|---|
//! | `none` | the image (1) |
//! | `flip` | the image, its mirror (½ each) |
//! | `6view` | the image, its mirror (¼ each); the image shifted 1 px down-right and 1 px up-left, each also mirrored (⅛ each) |
//!
//! `6view` is airbench94's `tta_level=2` (Jordan 2024, `infer_mirror_translate`): the
//! unshifted pair keeps half the weight, the two shifted pairs share the other half. A
//! shift moves the picture by one pixel and fills the uncovered border row and column by
//! mirroring about the border pixel (reflect padding): the view shifted by `(dy, dx)` has
//! `view[y][x] = image[reflect(y - dy)][reflect(x - dx)]`. The logits (not the
//! probabilities) are averaged, as in airbench.

use serde::{Deserialize, Serialize};

/// How many views of each image a prediction averages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TtaMode {
    /// One view: the image itself.
    #[default]
    #[serde(rename = "none")]
    None,
    /// The image and its horizontal mirror.
    #[serde(rename = "flip")]
    Flip,
    /// Mirror × {no shift, 1 px down-right, 1 px up-left} (airbench's six views).
    #[serde(rename = "6view")]
    SixView,
}

/// One view of an image: a shift by `(dy, dx)` pixels (positive = the picture moves down /
/// right) with reflect padding, then an optional horizontal mirror; and its weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    /// Whether the view is mirrored left-right (after the shift).
    pub mirror: bool,
    /// Vertical shift, pixels (positive: the picture moves down).
    pub dy: i32,
    /// Horizontal shift, pixels (positive: the picture moves right).
    pub dx: i32,
    /// Weight of this view's softmax in the average (a mode's weights sum to 1).
    pub weight: f32,
}

impl View {
    /// The image itself.
    pub const IDENTITY: View = view(false, 0, 1.0);
}

const fn view(mirror: bool, shift: i32, weight: f32) -> View {
    View {
        mirror,
        dy: shift,
        dx: shift,
        weight,
    }
}

const NONE_VIEWS: [View; 1] = [view(false, 0, 1.0)];
const FLIP_VIEWS: [View; 2] = [view(false, 0, 0.5), view(true, 0, 0.5)];
const SIX_VIEWS: [View; 6] = [
    view(false, 0, 0.25),
    view(true, 0, 0.25),
    view(false, 1, 0.125),
    view(true, 1, 0.125),
    view(false, -1, 0.125),
    view(true, -1, 0.125),
];

/// The modes, in order of cost.
pub const TTA_MODES: [TtaMode; 3] = [TtaMode::None, TtaMode::Flip, TtaMode::SixView];

impl TtaMode {
    /// The views this mode averages; their weights sum to 1.
    pub fn views(self) -> &'static [View] {
        match self {
            TtaMode::None => &NONE_VIEWS,
            TtaMode::Flip => &FLIP_VIEWS,
            TtaMode::SixView => &SIX_VIEWS,
        }
    }

    /// The name on command lines and in recipes: `none`, `flip`, `6view`.
    pub fn as_str(self) -> &'static str {
        match self {
            TtaMode::None => "none",
            TtaMode::Flip => "flip",
            TtaMode::SixView => "6view",
        }
    }

    /// The manifest's name for a claim measured in this mode (`metrics.claim`): `single`,
    /// `flip_tta` (the names manifests have used since schema 1) or `6view`.
    pub fn claim_name(self) -> &'static str {
        match self {
            TtaMode::None => "single",
            TtaMode::Flip => "flip_tta",
            TtaMode::SixView => "6view",
        }
    }

    /// The mode of a manifest claim name (see [`TtaMode::claim_name`]).
    pub fn from_claim_name(claim: &str) -> Option<Self> {
        TTA_MODES.into_iter().find(|m| m.claim_name() == claim)
    }

    /// The manifest metric that holds this mode's top-1: `top1`, `top1_flip_tta`,
    /// `top1_6view`.
    pub fn metric_name(self) -> &'static str {
        match self {
            TtaMode::None => "top1",
            TtaMode::Flip => "top1_flip_tta",
            TtaMode::SixView => "top1_6view",
        }
    }
}

impl std::fmt::Display for TtaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TtaMode {
    type Err = String;
    /// `none`, `flip` or `6view` (also the claim names `single` and `flip_tta`).
    fn from_str(s: &str) -> Result<Self, String> {
        TTA_MODES
            .into_iter()
            .find(|m| m.as_str() == s || m.claim_name() == s)
            .ok_or_else(|| format!("unknown TTA mode `{s}`; expected none, flip or 6view"))
    }
}

/// Index `i - d` reflected into `0..n` about the border pixels (`-1 → 1`, `n → n - 2`),
/// for shifts of at most `n - 1` pixels.
fn reflect(i: i32, d: i32, n: i32) -> usize {
    let j = i - d;
    let j = if j < 0 { -j } else { j };
    let j = if j >= n { 2 * (n - 1) - j } else { j };
    j as usize
}

/// Writes `view` of one CHW image (`channels` planes of `height × width`) into `out`.
pub fn apply_view(
    chw: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    v: View,
    out: &mut [f32],
) {
    assert_eq!(chw.len(), channels * height * width, "image size");
    assert_eq!(out.len(), chw.len(), "output size");
    let (h, w) = (height as i32, width as i32);
    for c in 0..channels {
        let plane = &chw[c * height * width..(c + 1) * height * width];
        let out_plane = &mut out[c * height * width..(c + 1) * height * width];
        for y in 0..height {
            let sy = reflect(y as i32, v.dy, h);
            for x in 0..width {
                // The mirror of the shifted picture (airbench mirrors each shifted view).
                let xm = if v.mirror { width - 1 - x } else { x };
                out_plane[y * width + x] = plane[sy * width + reflect(xm as i32, v.dx, w)];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_views_are_distinct() {
        for m in TTA_MODES {
            let sum: f32 = m.views().iter().map(|v| v.weight).sum();
            assert!((sum - 1.0).abs() < 1e-6, "{m}: {sum}");
            for (i, a) in m.views().iter().enumerate() {
                for b in &m.views()[i + 1..] {
                    assert!((a.mirror, a.dy, a.dx) != (b.mirror, b.dy, b.dx), "{m}");
                }
            }
        }
        assert_eq!(TtaMode::SixView.views().len(), 6);
    }

    #[test]
    fn names_round_trip() {
        for m in TTA_MODES {
            assert_eq!(m.as_str().parse::<TtaMode>().unwrap(), m);
            assert_eq!(m.claim_name().parse::<TtaMode>().unwrap(), m);
            assert_eq!(TtaMode::from_claim_name(m.claim_name()), Some(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<TtaMode>(&json).unwrap(), m);
        }
        assert!("7view".parse::<TtaMode>().unwrap_err().contains("6view"));
    }

    /// A 1×3×4 image with distinct pixels makes every source index visible.
    #[test]
    fn views_shift_with_reflect_padding_then_mirror() {
        // rows: 0 1 2 3 / 4 5 6 7 / 8 9 10 11
        let img: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let run = |mirror, d| {
            let mut out = vec![0.0; 12];
            let v = View {
                mirror,
                dy: d,
                dx: d,
                weight: 1.0,
            };
            apply_view(&img, 1, 3, 4, v, &mut out);
            out
        };
        assert_eq!(run(false, 0), img);
        assert_eq!(run(true, 0)[..4], [3., 2., 1., 0.]);
        // Down-right by one: row/column -1 reflects to 1.
        assert_eq!(
            run(false, 1),
            [5., 4., 5., 6., 1., 0., 1., 2., 5., 4., 5., 6.]
        );
        // Up-left by one: the last row/column reflects to the one before the border.
        assert_eq!(
            run(false, -1),
            [5., 6., 7., 6., 9., 10., 11., 10., 5., 6., 7., 6.]
        );
        // The mirror of the down-right view.
        assert_eq!(run(true, 1)[4..8], [2., 1., 0., 1.]);
    }
}
