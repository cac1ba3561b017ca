//! Test- and validation-set evaluation of a trained model: loss, top-1 and the TTA
//! top-1s a run reports.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tpsnet_zoo::tta::{TtaMode, View};

use crate::dataset::TensorDataset;
use crate::model::ResNet;
use crate::predict::{combine_views, predict_batches, predict_views};

/// Final test-set numbers of a finished run (fp32, eval mode, final epoch's weights).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalMetrics {
    /// Test images evaluated.
    pub test_images: usize,
    /// Single-view top-1 accuracy (%).
    pub top1: f64,
    /// Top-1 accuracy (%) averaging each image's logits with its mirror's.
    pub top1_flip_tta: f64,
    /// Six-view TTA top-1, measured when the recipe claims it (`six_view_tta`).
    #[serde(default)]
    pub top1_6view: Option<f64>,
    /// Mean cross-entropy (no label smoothing) of the single view.
    pub loss: f64,
}

/// How a model is evaluated: on which device, in batches of which size, with the
/// activations channels-last when `channels_last` (as in training).
#[derive(Clone, Copy, Debug)]
pub struct EvalSettings {
    /// The device the model and data are on.
    pub device: Device,
    /// Images per forward pass.
    pub batch: usize,
    /// NHWC activations (the recipe's `channels_last`).
    pub channels_last: bool,
}

impl EvalSettings {
    /// The evaluation a run's recipe asks for, on `device`.
    pub fn of(recipe: &crate::recipe::Recipe, device: Device) -> Self {
        EvalSettings {
            device,
            batch: recipe.eval_batch_size,
            channels_last: recipe.channels_last,
        }
    }
}

/// Loss (mean), top-1, flip-TTA top-1 and, when `six_view`, six-view top-1 (percent) of
/// `model` on a dataset.
pub fn evaluate(
    model: &ResNet,
    ds: &TensorDataset,
    how: EvalSettings,
    six_view: bool,
) -> FinalMetrics {
    let labels = ds.labels.to_device(Device::Cpu);
    // One pass per view; the first two views of every mode past `none` are the image
    // and its mirror, so the single-view and flip numbers come from the same passes.
    let mode = if six_view {
        TtaMode::SixView
    } else {
        TtaMode::Flip
    };
    let views = predict_views(
        model,
        &ds.images,
        how.device,
        how.batch as i64,
        mode,
        how.channels_last,
    );
    let flip = combine_views(TtaMode::Flip, &views[..2]);
    FinalMetrics {
        test_images: ds.len(),
        top1: top1(&views[0], &labels),
        top1_flip_tta: top1(&flip, &labels),
        top1_6view: six_view.then(|| top1(&combine_views(mode, &views), &labels)),
        loss: views[0].cross_entropy_for_logits(&labels).double_value(&[]),
    }
}

/// Loss and single-view top-1 only: one pass, for the per-epoch curves (on a CPU a
/// full two-view evaluation of 10,000 images costs about half a minute per epoch).
pub(crate) fn evaluate_single_view(
    model: &ResNet,
    ds: &TensorDataset,
    how: EvalSettings,
) -> (f64, f64) {
    let labels = ds.labels.to_device(Device::Cpu);
    let logits = predict_batches(
        model,
        &ds.images,
        how.device,
        how.batch as i64,
        View::IDENTITY,
        how.channels_last,
    );
    (
        logits.cross_entropy_for_logits(&labels).double_value(&[]),
        top1(&logits, &labels),
    )
}

fn top1(logits: &Tensor, labels: &Tensor) -> f64 {
    100.0
        * logits
            .argmax(1, false)
            .eq_tensor(labels)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
}
