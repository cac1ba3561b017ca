//! Named f32 tensors: the hand-over format between the trainer and the ONNX writer.

use std::collections::BTreeMap;

use crate::arch::ResNetSpec;
use crate::rng::SplitMix64;

/// One dense, row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values, row-major; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

impl WeightTensor {
    /// A tensor from its shape and data; panics if they disagree (a programming error).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not match shape {shape:?}"
        );
        WeightTensor { shape, data }
    }
}

/// Why a set of weights does not fit a spec.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("weight `{0}` is missing; was the model built from the same spec?")]
    /// No tensor of this name.
    Missing(String),
    #[error("weight `{name}` has shape {got:?}, the spec needs {want:?}")]
    /// A tensor's shape differs from the one the spec needs.
    Shape {
        /// The tensor's name.
        name: String,
        /// Its shape.
        got: Vec<usize>,
        /// The shape the spec needs.
        want: Vec<usize>,
    },
    #[error("weight `{0}` holds a NaN or infinite value; the model diverged")]
    /// The named tensor holds a NaN or infinity.
    NotFinite(String),
}

/// All tensors of a model, keyed by the names [`ResNetSpec::tensor_shapes`] gives.
///
/// ```
/// use tpsnet_zoo::{ResNetSpec, Weights};
/// let spec = ResNetSpec::paper(&[1, 1, 1], 4, 2);
/// let w = Weights::random(&spec, 7);
/// w.check(&spec).unwrap();
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    /// Tensors by name.
    pub tensors: BTreeMap<String, WeightTensor>,
}

impl Weights {
    /// Adds (or replaces) the tensor `name`.
    pub fn insert(&mut self, name: impl Into<String>, t: WeightTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// The tensor `name`, or [`WeightsError::Missing`].
    pub fn get(&self, name: &str) -> Result<&WeightTensor, WeightsError> {
        self.tensors
            .get(name)
            .ok_or_else(|| WeightsError::Missing(name.to_string()))
    }

    /// Verifies that every tensor the spec needs is present, finite and of the right shape.
    pub fn check(&self, spec: &ResNetSpec) -> Result<(), WeightsError> {
        for (name, want) in spec.tensor_shapes() {
            let t = self.get(&name)?;
            if t.shape != want {
                return Err(WeightsError::Shape {
                    name,
                    got: t.shape.clone(),
                    want,
                });
            }
            if t.data.iter().any(|v| !v.is_finite()) {
                return Err(WeightsError::NotFinite(name));
            }
        }
        Ok(())
    }

    /// Deterministic, plausibly scaled random weights (He-normal convs, BN statistics
    /// near identity). Meant for tests and benchmarks of untrained architectures.
    pub fn random(spec: &ResNetSpec, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15);
        let mut w = Weights::default();
        for (name, shape) in spec.tensor_shapes() {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("running_var") {
                (0..n).map(|_| 0.5 + rng.uniform_f32()).collect()
            } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
                (0..n).map(|_| 0.1 * rng.normal_f32()).collect()
            } else if name.contains(".bn") && name.ends_with("weight") {
                (0..n).map(|_| 0.8 + 0.4 * rng.uniform_f32()).collect()
            } else if name.ends_with("bias") {
                (0..n).map(|_| 0.01 * rng.normal_f32()).collect()
            } else {
                let fan_in: usize = shape[1..].iter().product();
                let std = (2.0 / fan_in as f32).sqrt();
                (0..n).map(|_| std * rng.normal_f32()).collect()
            };
            w.insert(name, WeightTensor::new(shape, data));
        }
        w
    }
}
