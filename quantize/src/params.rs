//! Scale and zero-point arithmetic of the int8 scheme (docs/quantization.md).
//!
//! * Activations: **uint8, asymmetric, per tensor**. A float range `[lo, hi]` is first
//!   widened to contain 0 (so that zero padding and ReLU's zeros are exact), then
//!   `scale = (hi − lo) / 255` and `zero_point = round(−lo / scale)`; a value `x` is
//!   stored as `clamp(round(x / scale) + zero_point, 0, 255)`.
//! * Weights: **int8, symmetric, per output channel**: `scale_m = clip_m / qmax`,
//!   zero point 0, values in `[−qmax, qmax]` (the symmetric range, so `−w` quantizes to
//!   `−q(w)`). `qmax` is 127, or [`PAIR_SAFE_WEIGHT_QMAX`] = 64 where the conv's input
//!   codes are large ([`weight_qmax`]).
//! * Biases: **int32** in units of `x_scale · w_scale_m`, zero point 0, as `QLinearConv`
//!   expects, so the integer accumulator adds them without rescaling.
//!
//! Rounding is half to even everywhere, as ONNX's `QuantizeLinear` does.

/// Largest magnitude of a symmetric int8 weight.
pub const WEIGHT_QMAX: f32 = 127.0;
/// Largest weight magnitude at which no two products of a uint8 code and a weight can
/// overflow an int16: 2 · 255 · 64 = 32,640 ≤ 32,767. On x86 CPUs without VNNI (AVX2,
/// AVX-512 without VNNI) ONNX Runtime's u8×s8 kernels multiply with `vpmaddubsw`, which
/// adds each pair of adjacent products into a *saturating* int16 (with weight codes up
/// to 127, up to 2 · 255 · 127 = 64,770); VNNI's `vpdpbusd` adds into int32 and never saturates.
pub const PAIR_SAFE_WEIGHT_QMAX: f32 = 64.0;
/// Input zero point from which a conv's weights are limited to [`PAIR_SAFE_WEIGHT_QMAX`].
/// Two codes at real zero then already sum to 2 · 64 · 127 = 16,256 with full-range
/// weights, half the int16 range before any signal: saturation is common. The
/// normalised image (zero point ≈ 120) is such an input; ReLU outputs (zero point 0) and
/// GELU outputs (3–8 in the zoo) have most codes near 0 and keep the full range
/// (measured on an AVX2 CPU: docs/quantization.md, "CPUs without VNNI").
pub const PAIR_SAFE_FROM_ZERO_POINT: u8 = 64;
/// Largest uint8 activation code.
pub const ACTIVATION_QMAX: f32 = 255.0;

/// Quantization parameters of one uint8 activation tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationParams {
    /// Real value of one uint8 step.
    pub scale: f32,
    /// The uint8 code of the real value 0.
    pub zero_point: u8,
}

impl ActivationParams {
    /// The parameters that represent `[lo, hi]` (widened to contain 0) with 256 levels.
    ///
    /// A degenerate range (all zeros, or not finite) gets scale 1 and zero point 0: every
    /// value it saw is then exact.
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        let width = hi - lo;
        if !(width.is_finite() && width > f32::MIN_POSITIVE) {
            return ActivationParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = width / ACTIVATION_QMAX;
        let zero_point = round_half_even(-lo / scale).clamp(0.0, ACTIVATION_QMAX) as u8;
        ActivationParams { scale, zero_point }
    }

    /// The stored code of `x`.
    pub fn quantize(&self, x: f32) -> u8 {
        (round_half_even(x / self.scale) + self.zero_point as f32).clamp(0.0, ACTIVATION_QMAX) as u8
    }

    /// The value a code stands for.
    pub fn dequantize(&self, q: u8) -> f32 {
        (q as f32 - self.zero_point as f32) * self.scale
    }

    /// The smallest and largest representable values.
    pub fn representable(&self) -> (f32, f32) {
        (self.dequantize(0), self.dequantize(255))
    }
}

/// One convolution's weights quantized per output channel.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeights {
    /// Codes, same layout as the float weights (`[M, C/group, kh, kw]`).
    pub values: Vec<i8>,
    /// One scale per output channel.
    pub scales: Vec<f32>,
}

/// How the per-channel weight range is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightClip {
    /// The channel's largest |w| (nothing is clipped).
    #[default]
    MaxAbs,
    /// The clip in `[0.5, 1] · max|w|` that minimises the channel's squared rounding
    /// plus clipping error.
    Mse,
}

/// The largest weight code for a conv whose input has zero point `input_zero_point`:
/// [`PAIR_SAFE_WEIGHT_QMAX`] from [`PAIR_SAFE_FROM_ZERO_POINT`] on, else [`WEIGHT_QMAX`].
pub fn weight_qmax(input_zero_point: u8) -> f32 {
    if input_zero_point >= PAIR_SAFE_FROM_ZERO_POINT {
        PAIR_SAFE_WEIGHT_QMAX
    } else {
        WEIGHT_QMAX
    }
}

/// Quantizes `weights` (`out_channels` rows of equal length) per output channel, to codes
/// in `[−qmax, qmax]` (`qmax` ≤ 127, see [`weight_qmax`]).
pub fn quantize_weights(
    weights: &[f32],
    out_channels: usize,
    clip: WeightClip,
    qmax: f32,
) -> QuantizedWeights {
    assert!(qmax > 0.0 && qmax <= WEIGHT_QMAX);
    assert!(out_channels > 0 && weights.len() % out_channels == 0);
    let per = weights.len() / out_channels;
    let mut values = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(out_channels);
    for row in weights.chunks_exact(per) {
        let max_abs = row.iter().fold(0f32, |m, &w| m.max(w.abs()));
        let limit = match clip {
            WeightClip::MaxAbs => max_abs,
            WeightClip::Mse => mse_weight_clip(row, max_abs, qmax),
        };
        // An all-zero channel: any scale represents it exactly; 1 keeps the bias finite.
        let scale = if limit > 0.0 { limit / qmax } else { 1.0 };
        scales.push(scale);
        values.extend(row.iter().map(|&w| quantize_weight(w, scale, qmax)));
    }
    QuantizedWeights { values, scales }
}

/// The int8 code of one weight, within `[−qmax, qmax]`.
pub fn quantize_weight(w: f32, scale: f32, qmax: f32) -> i8 {
    round_half_even(w / scale).clamp(-qmax, qmax) as i8
}

fn mse_weight_clip(row: &[f32], max_abs: f32, qmax: f32) -> f32 {
    if max_abs == 0.0 {
        return 0.0;
    }
    let err = |limit: f32| -> f64 {
        let scale = limit / qmax;
        row.iter()
            .map(|&w| {
                let d = w - quantize_weight(w, scale, qmax) as f32 * scale;
                (d as f64) * (d as f64)
            })
            .sum()
    };
    let mut best = (err(max_abs), max_abs);
    for step in 1..=50 {
        let limit = max_abs * (1.0 - 0.01 * step as f32);
        let e = err(limit);
        if e < best.0 {
            best = (e, limit);
        }
    }
    best.1
}

/// Quantizes a bias for `QLinearConv`: `round(b / (x_scale · w_scale))` as int32.
/// Returns `None` if a value does not fit (a scale so small that the model cannot be
/// represented; never the case for calibrated zoo models).
pub fn quantize_bias(bias: &[f32], x_scale: f32, w_scales: &[f32]) -> Option<Vec<i32>> {
    bias.iter()
        .zip(w_scales)
        .map(|(&b, &ws)| {
            let q = round_half_even_f64(b as f64 / (x_scale as f64 * ws as f64));
            (q.is_finite() && q.abs() <= i32::MAX as f64).then_some(q as i32)
        })
        .collect()
}

/// Round half to even (banker's rounding), as ONNX `QuantizeLinear` does.
pub fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

fn round_half_even_f64(x: f64) -> f64 {
    x.round_ties_even()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_range_contains_zero_and_zero_is_exact() {
        // A ReLU output: [0, 2.55] → scale 0.01, zero point 0.
        let p = ActivationParams::from_range(0.0, 2.55);
        assert!((p.scale - 0.01).abs() < 1e-7);
        assert_eq!(p.zero_point, 0);
        assert_eq!(p.quantize(0.0), 0);
        assert_eq!(
            p.quantize(-1.0),
            0,
            "below the range saturates (a fused ReLU)"
        );
        assert_eq!(p.quantize(100.0), 255);
        assert_eq!(p.quantize(1.0), 100);

        // A strictly positive range is widened to [0, hi]: zero stays representable.
        let p = ActivationParams::from_range(0.5, 2.55);
        assert_eq!(p.zero_point, 0);

        // A two-sided range: zero point at −lo/scale.
        let p = ActivationParams::from_range(-1.0, 1.55);
        assert!((p.scale - 0.01).abs() < 1e-7);
        assert_eq!(p.zero_point, 100);
        assert_eq!(p.dequantize(p.quantize(0.0)), 0.0);
        let (lo, hi) = p.representable();
        assert!((lo + 1.0).abs() < 1e-6 && (hi - 1.55).abs() < 1e-6);

        // A strictly negative range: zero at the top code.
        let p = ActivationParams::from_range(-2.55, -1.0);
        assert_eq!(p.zero_point, 255);
        assert_eq!(p.dequantize(255), 0.0);

        // Degenerate ranges stay usable.
        assert_eq!(
            ActivationParams::from_range(0.0, 0.0),
            ActivationParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        assert_eq!(ActivationParams::from_range(0.0, f32::INFINITY).scale, 1.0);
        assert_eq!(ActivationParams::from_range(f32::NAN, 2.55).zero_point, 0);
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(-0.5), 0.0);
        assert_eq!(round_half_even(-1.5), -2.0);
        assert_eq!(round_half_even(1.4999), 1.0);
        assert_eq!(round_half_even(-2.6), -3.0);
        let p = ActivationParams {
            scale: 1.0,
            zero_point: 10,
        };
        assert_eq!(p.quantize(2.5), 12);
        assert_eq!(p.quantize(3.5), 14);
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        // Two channels with very different magnitudes keep their own resolution. The
        // first has scale exactly 1, so its halves show the rounding (half to even).
        let w = [127.0, -63.5, 2.5, 0.01, -0.0016, 0.0025];
        let q = quantize_weights(&w, 2, WeightClip::MaxAbs, WEIGHT_QMAX);
        assert_eq!(q.scales[0], 1.0);
        assert!((q.scales[1] - 0.01 / 127.0).abs() < 1e-10);
        assert_eq!(&q.values[..3], &[127, -64, 2]);
        assert_eq!(&q.values[3..], &[127, -20, 32]); // −20.32, 31.75
        // Symmetric: −w quantizes to −q(w).
        let neg: Vec<f32> = w.iter().map(|v| -v).collect();
        let qn = quantize_weights(&neg, 2, WeightClip::MaxAbs, WEIGHT_QMAX);
        let negated: Vec<i8> = q.values.iter().map(|v| -v).collect();
        assert_eq!(qn.values, negated);
        // An all-zero channel has a finite scale and zero codes.
        let z = quantize_weights(&[0.0, 0.0, 1.0, -1.0], 2, WeightClip::MaxAbs, WEIGHT_QMAX);
        assert_eq!(z.scales[0], 1.0);
        assert_eq!(&z.values[..2], &[0, 0]);
    }

    #[test]
    fn weights_reading_large_codes_cannot_saturate_a_pair_sum() {
        // ReLU and GELU outputs keep the full range; the normalised image does not.
        assert_eq!(weight_qmax(0), WEIGHT_QMAX);
        assert_eq!(weight_qmax(8), WEIGHT_QMAX);
        assert_eq!(
            weight_qmax(PAIR_SAFE_FROM_ZERO_POINT),
            PAIR_SAFE_WEIGHT_QMAX
        );
        assert_eq!(weight_qmax(120), PAIR_SAFE_WEIGHT_QMAX);
        // The worst pair (two codes of 255, two equal-signed weights) fits an int16 at 64
        // and would not at 65.
        let worst = |qmax: i32| 2 * 255 * qmax;
        assert!(worst(PAIR_SAFE_WEIGHT_QMAX as i32) <= i16::MAX as i32);
        assert!(worst(PAIR_SAFE_WEIGHT_QMAX as i32 + 1) > i16::MAX as i32);
        let q = quantize_weights(
            &[1.0, -0.5, 0.25, 0.3],
            1,
            WeightClip::MaxAbs,
            PAIR_SAFE_WEIGHT_QMAX,
        );
        assert_eq!(q.scales[0], 1.0 / 64.0);
        assert_eq!(q.values, [64, -32, 16, 19]); // 0.3 · 64 = 19.2
        let mse = quantize_weights(&[1.0, 0.01, -0.02], 1, WeightClip::Mse, 64.0);
        assert!(mse.values.iter().all(|v| v.abs() <= 64));
    }

    #[test]
    fn mse_clip_never_increases_the_error() {
        // One outlier: the MSE clip gives up a little on it for the many small weights.
        let mut row: Vec<f32> = (0..200).map(|i| ((i as f32) * 0.37).sin() * 0.05).collect();
        row.push(1.0);
        let err = |q: &QuantizedWeights| -> f64 {
            row.iter()
                .zip(&q.values)
                .map(|(&w, &v)| ((w - v as f32 * q.scales[0]) as f64).powi(2))
                .sum()
        };
        let max = quantize_weights(&row, 1, WeightClip::MaxAbs, WEIGHT_QMAX);
        let mse = quantize_weights(&row, 1, WeightClip::Mse, WEIGHT_QMAX);
        assert!(mse.scales[0] <= max.scales[0]);
        assert!(err(&mse) <= err(&max));
    }

    #[test]
    fn bias_is_in_accumulator_units() {
        let b = quantize_bias(&[0.5, -0.25], 0.1, &[0.01, 0.5]).unwrap();
        assert_eq!(b, vec![500, -5]);
        // A value that cannot fit in int32 is refused, not wrapped.
        assert!(quantize_bias(&[1.0], 1e-9, &[1e-9]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn activation_round_trip_error_is_at_most_half_a_step(
            lo in -50.0f32..0.0, width in 0.01f32..100.0, t in 0.0f32..1.0
        ) {
            let hi = lo + width;
            let p = ActivationParams::from_range(lo, hi);
            let (rlo, rhi) = p.representable();
            let x = lo.max(rlo) + t * (hi.min(rhi) - lo.max(rlo));
            let err = (p.dequantize(p.quantize(x)) - x).abs();
            proptest::prop_assert!(err <= 0.5 * p.scale * (1.0 + 1e-4), "x {x} err {err} scale {}", p.scale);
        }
    }
}
