//! The images quantization looks at: training images only.
//!
//! [`TrainingImages`] can only be made from CIFAR-10's training split, so neither
//! calibration nor the choice of range method can see a test image. Both sets are drawn
//! from one seeded permutation of the 50,000 training indices: calibration takes the
//! first `calibration` indices, validation (for choosing between range methods) the
//! next `validation`, so the two never overlap.

use std::path::Path;

use tpsnet_zoo::cifar::{self, Cifar10, IMAGE_BYTES, Split};

use crate::error::Result;

/// CIFAR-10 training images (never the test set).
#[derive(Clone, Debug)]
pub struct TrainingImages {
    data: Cifar10,
}

impl TrainingImages {
    /// Loads `data_batch_1..5.bin` from `dir` (md5-checked); never reads `test_batch.bin`.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(TrainingImages {
            data: cifar::load(dir, Split::Train)?,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Label of image `i`.
    pub fn label(&self, i: usize) -> u8 {
        self.data.labels[i]
    }

    /// Images `indices` as float32 NCHW RGB in [0, 1] (the zoo's input contract).
    pub fn batch(&self, indices: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        for &i in indices {
            out.extend(self.data.image(i).iter().map(|&b| b as f32 / 255.0));
        }
        out
    }
}

/// Which training images calibrate and which validate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Seed of the SplitMix64-driven shuffle the indices come from.
    pub seed: u64,
    /// Training-set indices the activation ranges are measured on.
    pub calibration: Vec<usize>,
    /// Other training-set indices, used to choose between range methods.
    pub validation: Vec<usize>,
}

impl Selection {
    /// The first `calibration` and the next `validation` indices of a seeded
    /// Fisher–Yates shuffle of `0..total` (SplitMix64 random numbers).
    pub fn new(total: usize, seed: u64, calibration: usize, validation: usize) -> Option<Self> {
        if calibration + validation > total || calibration == 0 {
            return None;
        }
        let order = permutation(total, seed);
        Some(Selection {
            seed,
            calibration: order[..calibration].to_vec(),
            validation: order[calibration..calibration + validation].to_vec(),
        })
    }

    /// In words, for the manifest.
    pub fn describe(&self, total: usize) -> String {
        format!(
            "CIFAR-10 training images: the first {} of a Fisher-Yates shuffle of indices 0..{} \
             (record order of data_batch_1..5.bin) driven by SplitMix64 seeded with {}; \
             `tpsnet-quantize --print-calibration-set` lists them",
            self.calibration.len(),
            total,
            self.seed
        )
    }
}

/// sha256 of the indices written as decimal numbers joined by commas.
pub fn indices_sha256(indices: &[usize]) -> String {
    let text = indices
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    tpsnet_zoo::hashing::sha256_hex(text.as_bytes())
}

/// A seeded permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        // SplitMix64 (Steele, Lea, Flood 2014).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // Multiply-shift maps 64 random bits onto 0..=i without modulo bias to speak of.
        let j = ((next() as u128 * (i as u128 + 1)) >> 64) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_is_seeded_disjoint_and_in_range() {
        let a = Selection::new(50_000, 0, 512, 2000).unwrap();
        let b = Selection::new(50_000, 0, 512, 2000).unwrap();
        assert_eq!(a, b);
        let c = Selection::new(50_000, 1, 512, 2000).unwrap();
        assert_ne!(a.calibration, c.calibration);
        let mut all: Vec<usize> = a.calibration.iter().chain(&a.validation).copied().collect();
        assert!(all.iter().all(|&i| i < 50_000));
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            2512,
            "calibration and validation overlap or repeat"
        );
        assert!(Selection::new(100, 0, 90, 20).is_none());
        assert!(Selection::new(100, 0, 0, 20).is_none());
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = permutation(1000, 7);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
        assert_eq!(permutation(0, 1), Vec::<usize>::new());
        assert_eq!(permutation(1, 1), vec![0]);
    }

    #[test]
    fn indices_hash_is_of_the_comma_list() {
        // printf '1,2,3' | sha256sum
        assert_eq!(
            indices_sha256(&[1, 2, 3]),
            "8a6ae15122001229edb8866f56e342af12ae8187203c3e3b33931743e7c0c48d"
        );
        assert_ne!(indices_sha256(&[1, 2, 3]), indices_sha256(&[1, 2, 4]));
    }
}
