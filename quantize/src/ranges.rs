//! Activation statistics gathered during calibration, and the clipping range chosen from
//! them for each tensor.
//!
//! Calibration makes two passes over the images: the first finds each tensor's minimum
//! and maximum, the second fills a histogram of [`BINS`] bins between them. Exact zeros
//! (ReLU's, and zero padding's) are counted apart: zero is always representable, so they
//! cost no error whatever the range.

use serde::{Deserialize, Serialize};

/// Histogram bins per tensor.
pub const BINS: usize = 2048;

/// How the clipping range `[lo, hi]` of an activation is chosen from its histogram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum RangeMethod {
    /// The smallest and largest values seen (ONNX Runtime's default, `MinMax`).
    MinMax,
    /// Clip the `(100 − percentile) %` most extreme values on each side.
    Percentile {
        /// The percentile kept, in (50, 100].
        percentile: f64,
    },
    /// The range that minimises the expected squared quantization error: rounding
    /// (`scale² / 12` per value inside) plus clipping (`(x − clip)²` per value outside).
    Mse,
}

impl RangeMethod {
    /// Short name, e.g. `minmax`, `percentile-99.99`, `mse`.
    pub fn label(&self) -> String {
        match self {
            RangeMethod::MinMax => "minmax".into(),
            RangeMethod::Percentile { percentile } => format!("percentile-{percentile}"),
            RangeMethod::Mse => "mse".into(),
        }
    }

    /// Parses a [`RangeMethod::label`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "minmax" => Some(RangeMethod::MinMax),
            "mse" => Some(RangeMethod::Mse),
            _ => s
                .strip_prefix("percentile-")
                .and_then(|p| p.parse::<f64>().ok())
                .filter(|p| *p > 50.0 && *p <= 100.0)
                .map(|percentile| RangeMethod::Percentile { percentile }),
        }
    }
}

/// What calibration saw of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorStats {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    /// Values seen (including zeros).
    pub count: u64,
    /// Values exactly 0.
    pub zeros: u64,
    /// Non-zero values in [`BINS`] equal bins over `[min, max]` (empty until pass two).
    pub hist: Vec<u64>,
}

impl Default for TensorStats {
    fn default() -> Self {
        TensorStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            zeros: 0,
            hist: Vec::new(),
        }
    }
}

impl TensorStats {
    /// Pass one: widens `[min, max]` to cover `values`. Returns the first non-finite
    /// value, if any.
    pub fn observe_range(&mut self, values: &[f32]) -> Option<f32> {
        let (mut lo, mut hi) = (self.min, self.max);
        let mut bad = None;
        for &v in values {
            if !v.is_finite() {
                bad.get_or_insert(v);
                continue;
            }
            lo = lo.min(v);
            hi = hi.max(v);
        }
        self.min = lo;
        self.max = hi;
        bad
    }

    /// Pass two: counts `values` into the histogram over the range of pass one.
    pub fn observe_histogram(&mut self, values: &[f32]) {
        if self.hist.is_empty() {
            self.hist = vec![0; BINS];
        }
        let width = self.max - self.min;
        let per = if width > 0.0 {
            BINS as f32 / width
        } else {
            0.0
        };
        for &v in values {
            self.count += 1;
            if v == 0.0 {
                self.zeros += 1;
                continue;
            }
            let b = ((v - self.min) * per) as usize;
            self.hist[b.min(BINS - 1)] += 1;
        }
    }

    fn bin_width(&self) -> f64 {
        (self.max as f64 - self.min as f64) / BINS as f64
    }

    fn edge(&self, k: usize) -> f64 {
        self.min as f64 + k as f64 * self.bin_width()
    }

    /// The clipping range `[lo, hi]` by `method`. `lo` is never above 0 and `hi` never
    /// below it; `non_negative` forces `lo = 0` (a fused ReLU's output).
    pub fn range(&self, method: RangeMethod, non_negative: bool) -> (f32, f32) {
        let (lo, hi) = if !(self.min.is_finite() && self.max.is_finite()) || self.max <= self.min {
            (self.min.min(0.0), self.max.max(0.0))
        } else {
            match method {
                RangeMethod::MinMax => (self.min, self.max),
                RangeMethod::Percentile { percentile } => self.percentile_range(percentile),
                RangeMethod::Mse => self.mse_range(),
            }
        };
        let lo = if non_negative || !lo.is_finite() {
            0.0
        } else {
            lo.min(0.0)
        };
        let hi = if hi.is_finite() { hi.max(0.0) } else { 0.0 };
        (lo, hi)
    }

    /// Value below which `q` of all values (zeros included) lie, interpolated in its bin.
    fn quantile(&self, q: f64) -> f64 {
        let target = q * self.count as f64;
        let mut seen = 0f64;
        let zero_bin = if self.min <= 0.0 && self.max >= 0.0 {
            Some(((-self.min as f64) / self.bin_width()).floor() as usize)
        } else {
            None
        };
        for (k, &n) in self.hist.iter().enumerate() {
            let mut n = n as f64;
            if Some(k.min(BINS - 1)) == zero_bin.map(|z| z.min(BINS - 1)) {
                n += self.zeros as f64;
            }
            if seen + n >= target && n > 0.0 {
                let frac = ((target - seen) / n).clamp(0.0, 1.0);
                return self.edge(k) + frac * self.bin_width();
            }
            seen += n;
        }
        self.max as f64
    }

    fn percentile_range(&self, percentile: f64) -> (f32, f32) {
        let tail = (100.0 - percentile) / 100.0;
        let lo = if self.min < 0.0 {
            self.quantile(tail)
        } else {
            0.0
        };
        let hi = if self.max > 0.0 {
            self.quantile(1.0 - tail)
        } else {
            0.0
        };
        (lo as f32, hi as f32)
    }

    /// Exhaustive search over bin edges (lo ≤ 0 ≤ hi), with prefix sums so that each
    /// candidate costs O(1). Values are taken at their bin's centre.
    fn mse_range(&self) -> (f32, f32) {
        let w = self.bin_width();
        let mut p0 = vec![0f64; BINS + 1];
        let mut p1 = vec![0f64; BINS + 1];
        let mut p2 = vec![0f64; BINS + 1];
        for (k, &n) in self.hist.iter().enumerate() {
            let n = n as f64;
            let c = self.min as f64 + (k as f64 + 0.5) * w;
            p0[k + 1] = p0[k] + n;
            p1[k + 1] = p1[k] + n * c;
            p2[k + 1] = p2[k] + n * c * c;
        }
        // Edge indices at or beyond zero on each side.
        let zero_edge = if self.min >= 0.0 {
            0
        } else if self.max <= 0.0 {
            BINS
        } else {
            ((-self.min as f64) / w).ceil() as usize
        };
        let lo_candidates: Vec<usize> = if self.min >= 0.0 {
            vec![0]
        } else {
            (0..=zero_edge.min(BINS)).collect()
        };
        let hi_candidates: Vec<usize> = if self.max <= 0.0 {
            vec![BINS]
        } else {
            (zero_edge.min(BINS)..=BINS).collect()
        };
        let total = BINS;
        let mut best = (f64::INFINITY, self.min as f64, self.max as f64);
        for &j in &lo_candidates {
            let lo = if self.min >= 0.0 {
                0.0
            } else {
                self.edge(j).min(0.0)
            };
            // Error of the values below lo (bins 0..j), all clipped to lo.
            let below = p2[j] - 2.0 * lo * p1[j] + lo * lo * p0[j];
            for &k in &hi_candidates {
                if k < j {
                    continue;
                }
                let hi = if self.max <= 0.0 {
                    0.0
                } else {
                    self.edge(k).max(0.0)
                };
                let above = (p2[total] - p2[k]) - 2.0 * hi * (p1[total] - p1[k])
                    + hi * hi * (p0[total] - p0[k]);
                let inside = p0[k] - p0[j];
                let scale = (hi - lo) / 255.0;
                let err = below + above + inside * scale * scale / 12.0;
                if err < best.0 {
                    best = (err, lo, hi);
                }
            }
        }
        (best.1 as f32, best.2 as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[f32]) -> TensorStats {
        let mut s = TensorStats::default();
        assert!(s.observe_range(values).is_none());
        s.observe_histogram(values);
        s
    }

    #[test]
    fn minmax_is_the_observed_range_widened_to_zero() {
        let s = stats(&[0.5, 1.0, 3.0]);
        assert_eq!(s.range(RangeMethod::MinMax, false), (0.0, 3.0));
        let s = stats(&[-2.0, 1.0]);
        assert_eq!(s.range(RangeMethod::MinMax, false), (-2.0, 1.0));
        assert_eq!(s.range(RangeMethod::MinMax, true), (0.0, 1.0));
    }

    #[test]
    fn zeros_are_counted_apart_and_non_finite_values_reported() {
        let s = stats(&[0.0, 0.0, 0.0, 1.0]);
        assert_eq!((s.count, s.zeros), (4, 3));
        assert_eq!(s.hist.iter().sum::<u64>(), 1);
        let mut t = TensorStats::default();
        assert!(t.observe_range(&[1.0, f32::NAN]).unwrap().is_nan());
    }

    /// Squared error of quantizing `v` with the range `(lo, hi)`.
    fn measured(v: &[f32], (lo, hi): (f32, f32)) -> f64 {
        let p = crate::params::ActivationParams::from_range(lo, hi);
        v.iter()
            .map(|&x| ((p.dequantize(p.quantize(x)) - x) as f64).powi(2))
            .sum()
    }

    #[test]
    fn percentile_and_mse_clip_a_far_outlier() {
        // 1,000,000 values in [0, 1) and one at 300: MinMax spends the whole range on the
        // outlier, the percentile clips it away, and MSE balances the outlier's clipping
        // error (300 − hi)² against everyone's rounding error 1e6 · (hi/255)² / 12,
        // which is least near hi = 300 / (1 + 1e6 / (12 · 255²)) ≈ 131.
        let mut v: Vec<f32> = (0..1_000_000).map(|i| (i as f32 + 0.5) / 1e6).collect();
        v.push(300.0);
        let s = stats(&v);
        let minmax = s.range(RangeMethod::MinMax, false);
        assert_eq!(minmax, (0.0, 300.0));
        let pct = s.range(RangeMethod::Percentile { percentile: 99.99 }, false);
        assert_eq!(pct.0, 0.0);
        assert!(pct.1 < 2.0, "{pct:?}");
        let mse = s.range(RangeMethod::Mse, false);
        assert_eq!(mse.0, 0.0);
        assert!((mse.1 - 131.5).abs() < 2.0, "{mse:?}");
        let e = measured(&v, mse);
        assert!(e < measured(&v, minmax) && e < measured(&v, pct));
    }

    #[test]
    fn mse_keeps_an_outlier_that_costs_more_to_clip_than_to_keep() {
        // 100,000 values and one at 1000: clipping costs ≈ 1e6, keeping ≈ 1.3e5.
        let mut v: Vec<f32> = (0..100_000).map(|i| (i as f32 + 0.5) / 1e5).collect();
        v.push(1000.0);
        let (_, hi) = stats(&v).range(RangeMethod::Mse, false);
        assert!(hi > 500.0, "{hi}");
    }

    #[test]
    fn mse_keeps_the_whole_range_of_a_uniform_distribution() {
        // No tail: clipping only adds error, so the MSE range is (nearly) the full range.
        let v: Vec<f32> = (0..100_000)
            .map(|i| -1.0 + 3.0 * i as f32 / 100_000.0)
            .collect();
        let s = stats(&v);
        let (lo, hi) = s.range(RangeMethod::Mse, false);
        assert!(lo < -0.95 && hi > 1.9, "{lo} {hi}");
    }

    #[test]
    fn mse_error_beats_minmax_on_a_heavy_tail() {
        // Laplace-like data: the MSE range has lower measured squared error than MinMax.
        let v: Vec<f32> = (1..200_000)
            .map(|i| {
                let u = i as f64 / 200_000.0;
                let x = if u < 0.5 {
                    (2.0 * u).ln()
                } else {
                    -(2.0 * (1.0 - u)).ln()
                };
                x as f32
            })
            .collect();
        let s = stats(&v);
        let e_mse = measured(&v, s.range(RangeMethod::Mse, false));
        let e_minmax = measured(&v, s.range(RangeMethod::MinMax, false));
        assert!(e_mse < 0.8 * e_minmax, "{e_mse} vs {e_minmax}");
    }

    #[test]
    fn labels_round_trip() {
        for m in [
            RangeMethod::MinMax,
            RangeMethod::Mse,
            RangeMethod::Percentile { percentile: 99.99 },
        ] {
            assert_eq!(RangeMethod::parse(&m.label()), Some(m));
        }
        assert_eq!(RangeMethod::parse("percentile-20"), None);
        assert_eq!(RangeMethod::parse("entropy"), None);
    }
}
