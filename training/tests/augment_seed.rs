//! Augmentations replay exactly from a seed. A test binary of its own with one test:
//! torch's random generator is global to the process, and the library's unit tests
//! draw from it in parallel threads, so exact replays can only be checked here.

use tch::{Device, Kind, Tensor};
use tpsnet_training::augment::Augment;

/// Images whose pixels are all ≥ 2, so a mean-coloured cutout pixel (< 1) stands out.
fn bright(n: i64) -> Tensor {
    Tensor::rand([n, 3, 32, 32], (Kind::Float, Device::Cpu)) + 2.0
}

fn with_seed(seed: i64, a: &Augment, x: &Tensor) -> Tensor {
    tch::manual_seed(seed);
    a.apply(x)
}

#[test]
fn augmentations_replay_exactly_from_a_seed() {
    tch::manual_seed(0);
    let x = bright(32);

    // translate N is crop_pad N with border-pixel reflection, draw for draw.
    let translate = Augment {
        translate: 4,
        flip: true,
        ..Augment::none()
    };
    let crop = Augment {
        crop_pad: 4,
        reflect: true,
        reflect_101: true,
        flip: true,
        ..Augment::none()
    };
    assert!(
        with_seed(21, &translate, &x).equal(&with_seed(21, &crop, &x)),
        "translate 4 differs from crop_pad 4 + reflect + reflect_101"
    );

    // Everything on: the same seed gives the same images, another seed others.
    let all = Augment {
        cutout: 12,
        rotate_deg: 5.0,
        ..translate.clone()
    };
    assert!(with_seed(5, &all, &x).equal(&with_seed(5, &all, &x)));
    assert!(!with_seed(5, &all, &x).equal(&with_seed(6, &all, &x)));

    // Cutout runs last and draws last: outside its square the images are what the
    // same seed gives without it, so recipes without cutout replay as they did before.
    let without = with_seed(33, &translate, &x);
    let with = with_seed(
        33,
        &Augment {
            cutout: 8,
            ..translate.clone()
        },
        &x,
    );
    let square = with.ne_tensor(&without);
    assert_eq!(square.sum(Kind::Int64).int64_value(&[]), 32 * 3 * 64);
    let outside = square.logical_not();
    assert!(
        with.masked_select(&outside)
            .equal(&without.masked_select(&outside))
    );
}
