//! Inference with test-time augmentation ([`tpsnet_zoo::tta`]): every view of a set of images
//! through a trained model in batches, and the views' logits combined as the shared
//! definition weighs them.

use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};
use tpsnet_zoo::tta::{TtaMode, View};

use crate::model::to_channels_last;

/// Evaluates `model` on `images` (N×3×32×32 uint8 or float in [0, 1]) in batches and
/// returns the logits on the CPU as f32, averaged over the views of `tta`.
pub fn predict_logits(
    model: &impl ModuleT,
    images: &Tensor,
    device: Device,
    batch: i64,
    tta: TtaMode,
) -> Tensor {
    combine_views(
        tta,
        &predict_views(model, images, device, batch, tta, false),
    )
}

/// The logits of every view of `tta` for every image (CPU, f32), one sweep per view.
/// `channels_last` feeds NHWC activations (faster on the CPU's oneDNN and on tensor
/// cores; the result is the same function).
pub fn predict_views(
    model: &impl ModuleT,
    images: &Tensor,
    device: Device,
    batch: i64,
    tta: TtaMode,
    channels_last: bool,
) -> Vec<Tensor> {
    tta.views()
        .iter()
        .map(|v| predict_batches(model, images, device, batch, *v, channels_last))
        .collect()
}

/// The weighted mean of per-view logits, as [`tpsnet_zoo::tta`] defines it.
pub fn combine_views(tta: TtaMode, view_logits: &[Tensor]) -> Tensor {
    tta.views()
        .iter()
        .zip(view_logits)
        .map(|(v, l)| l * f64::from(v.weight))
        .reduce(|a, b| a + b)
        .expect("every mode has a view")
}

/// One view of a batch of float images in [0, 1] ([`tpsnet_zoo::tta::View`]): shifted with
/// reflect padding, then mirrored.
pub fn view_of(x: &Tensor, v: View) -> Tensor {
    let mut x = if (v.dy, v.dx) == (0, 0) {
        x.shallow_clone()
    } else {
        let (h, w) = (x.size()[2], x.size()[3]);
        let pad = i64::from(v.dy.abs().max(v.dx.abs()));
        // view[y] = image[y - dy]: row y of the view is row y + pad - dy of the padding.
        x.reflection_pad2d([pad, pad, pad, pad])
            .narrow(2, pad - i64::from(v.dy), h)
            .narrow(3, pad - i64::from(v.dx), w)
    };
    if v.mirror {
        x = x.flip([3]);
    }
    x
}

/// The logits (CPU, f32) of one view of every image, in batches of `batch` on `device`.
pub(crate) fn predict_batches(
    model: &impl ModuleT,
    images: &Tensor,
    device: Device,
    batch: i64,
    view: View,
    channels_last: bool,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = images.size()[0];
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let mut x = view_of(
            &crate::model::to_unit_float(&images.narrow(0, start, len).to_device(device)),
            view,
        );
        if channels_last {
            x = to_channels_last(&x);
        }
        out.push(
            model
                .forward_t(&x, false)
                .to_kind(Kind::Float)
                .to_device(Device::Cpu),
        );
        start += len;
    }
    Tensor::cat(&out, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trainer's tensor views are the shared definition's (`tpsnet_zoo::tta::apply_view`),
    /// which the runtime uses: the claims and the runtime measure the same thing.
    #[test]
    fn tensor_views_equal_the_shared_definition() {
        tch::manual_seed(3);
        let x = Tensor::rand([2, 3, 5, 6], (Kind::Float, Device::Cpu));
        for mode in tpsnet_zoo::tta::TTA_MODES {
            for v in mode.views() {
                let got = Vec::<f32>::try_from(view_of(&x, *v).contiguous().view(-1)).unwrap();
                for i in 0..2 {
                    let img = Vec::<f32>::try_from(x.get(i).contiguous().view(-1)).unwrap();
                    let mut want = vec![0.0; img.len()];
                    tpsnet_zoo::tta::apply_view(&img, 3, 5, 6, *v, &mut want);
                    assert_eq!(
                        &got[i as usize * 90..(i as usize + 1) * 90],
                        &want[..],
                        "{v:?}"
                    );
                }
            }
        }
    }
}
