//! How closely an int8 model follows its fp32 source, on training images set aside from
//! calibration. This is what chooses between range methods: the test set never does.

use serde::Serialize;
use tpsnet_runtime::classify::argmax;

/// The int8 model against the fp32 one on the same images.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agreement {
    /// Images compared.
    pub images: usize,
    /// Percent of images where both predict the same class.
    pub same_top1: f64,
    /// Mean KL divergence of the int8 softmax from the fp32 softmax, in nats (lower is
    /// closer; the criterion for choosing a range method).
    pub mean_kl: f64,
    /// Top-1 of the fp32 model against the labels, percent (training images: the model
    /// has seen them, so this is high and only a reference).
    pub top1_fp32: f64,
    /// Top-1 of the int8 model against the labels, percent.
    pub top1_int8: f64,
}

/// Compares row-major logits (`labels.len()` rows of `classes`).
pub fn compare(fp32: &[f32], int8: &[f32], labels: &[u8], classes: usize) -> Agreement {
    assert_eq!(fp32.len(), int8.len());
    assert_eq!(fp32.len(), labels.len() * classes);
    let n = labels.len();
    let (mut same, mut ok32, mut ok8, mut kl) = (0usize, 0usize, 0usize, 0f64);
    for ((a, b), &label) in fp32
        .chunks_exact(classes)
        .zip(int8.chunks_exact(classes))
        .zip(labels)
    {
        let (pa, pb) = (argmax(a), argmax(b));
        same += usize::from(pa == pb);
        ok32 += usize::from(pa == label as usize);
        ok8 += usize::from(pb == label as usize);
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kl += la
            .iter()
            .zip(&lb)
            .map(|(&x, &y)| x.exp() * (x - y))
            .sum::<f64>();
    }
    let pct = |k: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * k as f64 / n as f64
        }
    };
    Agreement {
        images: n,
        same_top1: pct(same),
        mean_kl: if n == 0 { 0.0 } else { kl / n as f64 },
        top1_fp32: pct(ok32),
        top1_int8: pct(ok8),
    }
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    let log_sum = sum.ln() + max;
    row.iter().map(|&v| v as f64 - log_sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree_fully() {
        let l = [1.0, 2.0, 0.0, 3.0, 0.0, -1.0];
        let a = compare(&l, &l, &[1, 1], 3);
        assert_eq!(a.same_top1, 100.0);
        assert!(a.mean_kl.abs() < 1e-12);
        assert_eq!(a.top1_fp32, 50.0);
    }

    #[test]
    fn disagreement_and_kl_are_measured() {
        let a = [0.0, 5.0, 0.0, 5.0];
        let b = [5.0, 0.0, 0.0, 5.0];
        let r = compare(&a, &b, &[1, 1], 2);
        assert_eq!(r.same_top1, 50.0);
        assert_eq!((r.top1_fp32, r.top1_int8), (100.0, 50.0));
        // KL(p||q) for p = softmax(0, 5), q = softmax(5, 0), over two images (one equal).
        let p1 = 1.0 / (1.0 + (-5f64).exp());
        let expected = (p1 * (p1 / (1.0 - p1)).ln() + (1.0 - p1) * ((1.0 - p1) / p1).ln()) / 2.0;
        assert!((r.mean_kl - expected).abs() < 1e-9);
    }
}
