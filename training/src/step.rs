//! One training step: augment on the device, forward, smoothed cross-entropy, backward,
//! SGD update.

use tch::nn::ModuleT;
use tch::{Kind, Reduction, Tensor};

use crate::model::{ResNet, to_channels_last, to_unit_float};
use crate::optim::FlatSgd;
use crate::recipe::Recipe;

/// One batch of a training step, on the training device.
#[derive(Debug)]
pub struct Batch<'a> {
    /// N×3×32×32 uint8 images.
    pub images_u8: &'a Tensor,
    /// N int64 labels.
    pub labels: &'a Tensor,
    /// Each image's mirror decision (alternating flip); `None` draws them.
    pub flips: Option<&'a Tensor>,
}

/// The phases of a training step, in order, as [`timed_train_step`] reports them.
pub const STEP_PHASES: [&str; 4] = ["augment", "forward", "backward", "update"];

/// One optimisation step on a batch: augment on the device, forward (channels-last when
/// the recipe asks; bf16 autocast when it asks and the batch is on CUDA), smoothed
/// cross-entropy, backward, SGD at `lr`. Returns the loss and the fp32 logits.
pub fn train_step(
    model: &ResNet,
    opt: &mut FlatSgd,
    recipe: &Recipe,
    batch: &Batch,
    lr: f64,
) -> (Tensor, Tensor) {
    timed_train_step(model, opt, recipe, batch, lr, &mut |_| {})
}

/// [`train_step`] with `mark(i)` called as phase `i` of [`STEP_PHASES`] ends, so a
/// profiler can read a clock there (and synchronise a GPU first).
pub fn timed_train_step(
    model: &ResNet,
    opt: &mut FlatSgd,
    recipe: &Recipe,
    batch: &Batch,
    lr: f64,
    mark: &mut dyn FnMut(usize),
) -> (Tensor, Tensor) {
    let cuda = batch.images_u8.device().is_cuda();
    let x = recipe
        .augment
        .apply_with_flips(&to_unit_float(batch.images_u8), batch.flips);
    let x = if recipe.channels_last {
        to_channels_last(&x)
    } else {
        x
    };
    mark(0);
    let bf16_convs = crate::conv_precision::honoured(recipe.cpu_bf16, batch.images_u8.device());
    let logits = tch::autocast(recipe.bf16_autocast && cuda, || {
        crate::conv_precision::with_bf16_convs(bf16_convs, || model.forward_t(&x, true))
    })
    .to_kind(Kind::Float);
    let loss = logits.cross_entropy_loss::<Tensor>(
        batch.labels,
        None,
        Reduction::Mean,
        -100,
        recipe.label_smoothing,
    );
    mark(1);
    opt.zero_grad();
    loss.backward();
    mark(2);
    opt.step(lr);
    mark(3);
    (loss, logits)
}
