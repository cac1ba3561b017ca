"""Is one classifier more accurate than another on the same test images, or is the gap
noise? McNemar's exact test on the discordant images: of the images exactly one of the
two gets right, how many are A's, how many B's; under "equally accurate" each such image
is A's with probability 1/2, so the two-sided p-value is a binomial tail.

A gap of a few images out of 10,000 between two int8 variants of one model is usually
made of a few dozen discordant images each way; this says whether it means anything.

usage: .venv/bin/python bench/paired.py --data-dir CIFAR10 A.onnx B.onnx
(prints single-view and flip-TTA counts and p-values for the full test set; used by
bench/quantize_peers.py for ours against onnxruntime's best)
"""

import argparse
import math

import numpy as np


def discordant(labels, pred_a, pred_b):
    """(images only A gets right, images only B gets right)."""
    a, b = pred_a == labels, pred_b == labels
    return int(np.sum(a & ~b)), int(np.sum(b & ~a))


def mcnemar_p(a_only, b_only):
    """Two-sided exact McNemar p-value (1.0 when there is no discordant image)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(labels, logits_a, logits_b, flipped_a, flipped_b):
    """Single view and flip TTA (mean of the logits of each image and its mirror)."""
    out = {}
    for mode, (la, lb) in {
        "single": (logits_a, logits_b),
        "flip_tta": (logits_a + flipped_a, logits_b + flipped_b),
    }.items():
        a_only, b_only = discordant(labels, la.argmax(1), lb.argmax(1))
        out[mode] = {"a_only": a_only, "b_only": b_only, "p": mcnemar_p(a_only, b_only)}
    return out


def main():
    from quantize_peers import load_cifar, logits, session

    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    x, y = load_cifar(args.data_dir, ["test_batch.bin"])
    mirrored = x[:, :, :, ::-1].copy()
    sa, sb = session(args.a), session(args.b)
    r = compare(y, logits(sa, x), logits(sb, x), logits(sa, mirrored), logits(sb, mirrored))
    for mode, c in r.items():
        print(f"{mode:9s} only A right: {c['a_only']:4d}  only B right: {c['b_only']:4d}  "
              f"difference {c['a_only'] - c['b_only']:+d} images, McNemar exact p = {c['p']:.2f}")


if __name__ == "__main__":
    main()
