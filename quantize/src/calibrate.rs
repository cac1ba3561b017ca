//! Measuring the activations the int8 graph will quantize, on training images.
//!
//! The fp32 graph (after the exact rewrites of [`crate::rewrite`]) is run with the
//! tensor measured for each entry of [`crate::plan::Plan::calibrate`] ([`crate::plan::Plan::measured`]) as an
//! extra output: once for the ranges, once for the histograms ([`crate::ranges`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use rayon::prelude::*;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::images::TrainingImages;
use crate::params::ActivationParams;
use crate::ranges::{RangeMethod, TensorStats};

/// What calibration measured: one [`TensorStats`] per planned tensor.
///
/// (Which tensor is measured for which: [`crate::plan::Plan::measured`].)
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Statistics per tensor name (the tensor to be quantized, measured on its source).
    pub stats: BTreeMap<String, TensorStats>,
    /// Tensors whose range must start at 0 (fused ReLUs).
    pub non_negative: Vec<String>,
}

impl Calibration {
    /// Quantization parameters of every tensor with `method`.
    pub fn params(&self, method: RangeMethod) -> HashMap<String, ActivationParams> {
        self.stats
            .iter()
            .map(|(name, s)| {
                let (lo, hi) = s.range(method, self.non_negative.contains(name));
                (name.clone(), ActivationParams::from_range(lo, hi))
            })
            .collect()
    }
}

/// Which tensors a calibration measures: for each `(tensor, measured)` pair, the values
/// of `measured` become `tensor`'s statistics (see [`crate::plan::Plan::measured`]);
/// `non_negative` tensors get ranges that start at 0.
#[derive(Clone, Copy, Debug)]
pub struct Measure<'a> {
    /// `(tensor, measured)` pairs: `measured`'s values become `tensor`'s statistics.
    pub tensors: &'a [(String, String)],
    /// Tensors whose range starts at 0 (a ReLU fused into their producer).
    pub non_negative: &'a BTreeSet<String>,
}

/// The images a calibration runs on: training images `indices`, in batches of `batch`,
/// on `threads` ONNX Runtime threads.
#[derive(Clone, Copy, Debug)]
pub struct CalibrationRun<'a> {
    /// The training images.
    pub images: &'a TrainingImages,
    /// Which of them to run, by training-set index.
    pub indices: &'a [usize],
    /// Images per ONNX Runtime call.
    pub batch: usize,
    /// ONNX Runtime intra-op threads (0: one per physical core).
    pub threads: usize,
}

/// Runs the fp32 graph over the images of `run` twice (ranges, then histograms) and
/// measures the tensors of `measure`. `progress(pass, images_done)` reports as it goes.
pub fn calibrate(
    g: &Graph,
    measure: &Measure,
    run: &CalibrationRun,
    progress: &dyn Fn(usize, usize),
) -> Result<Calibration> {
    let (tensors, non_negative) = (measure.tensors, measure.non_negative);
    let (images, indices, batch) = (run.images, run.indices, run.batch);
    let threads = run.threads;
    let names: Vec<String> = tensors.iter().map(|(t, _)| t.clone()).collect();
    let measured: Vec<String> = tensors.iter().map(|(_, m)| m.clone()).collect();
    let bytes = g.fp32_model(&measured).encode_to_vec();
    let mut engine = Engine::new(&g.path, &bytes, &g.input.name, &g.output.name, threads)?;
    let mut stats: Vec<TensorStats> = vec![TensorStats::default(); names.len()];

    let mut done = 0;
    engine.for_each_batch(images, indices, batch, &measured, &mut |n, values| {
        let bad: Vec<Option<f32>> = stats
            .par_iter_mut()
            .zip(values.par_iter())
            .map(|(s, v)| s.observe_range(v))
            .collect();
        if let Some((i, v)) = bad.iter().enumerate().find_map(|(i, b)| b.map(|v| (i, v))) {
            return Err(Error::NotFinite {
                path: g.path.clone(),
                tensor: measured[i].clone(),
                value: v,
            });
        }
        done += n;
        progress(1, done);
        Ok(())
    })?;

    let mut done = 0;
    engine.for_each_batch(images, indices, batch, &measured, &mut |n, values| {
        stats
            .par_iter_mut()
            .zip(values.par_iter())
            .for_each(|(s, v)| s.observe_histogram(v));
        done += n;
        progress(2, done);
        Ok(())
    })?;

    Ok(Calibration {
        stats: names.into_iter().zip(stats).collect(),
        non_negative: non_negative.iter().cloned().collect(),
    })
}
