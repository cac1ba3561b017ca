"""Does a training step of a zoo ResNet survive cuDNN, and how fast is it, for one choice
of activation layout, weight layout, parameter storage, precision and cuDNN autotuning?

Why (issue 14, item 3): on an H200 with torch 2.11.0+cu130, `train-zoo` died with
"CUDA error: misaligned address" for Model-1 and Model-2 under bf16 autocast with
channels-last activations (docs/lab/training-log.md, 2026-11-26), while PyTorch eager trained
the same nets channels-last on an H100 (docs/benchmarks.md). One difference: train-zoo
re-points every parameter to a view of ONE flat fp32 buffer (training/src/optim.rs,
`FlatSgd`), packed without padding. With Model-1/Model-2's widths (34/22 x 2^i) almost every
tensor then starts at an address that is 8 but not 16 bytes aligned; with TPSNet's
(16 x 2^i) every tensor is 64-byte aligned. PyTorch's caching allocator gives each
separately allocated tensor 512-byte alignment. Kernels that load per-channel vectors
(BatchNorm scale/shift in NHWC, say) with 16-byte loads fault on the former.

This script reproduces each storage on purpose:
  --params separate        one allocation per tensor (PyTorch's default)
  --params flat --align 1  one flat buffer, packed like train-zoo (the suspect)
  --params flat --align N  one flat buffer, each tensor's offset rounded up to N floats
and times a full step (the `fast` recipe's: on-device affine augmentation, forward under
autocast, label-smoothed cross-entropy, backward, Nesterov SGD over the flat buffer or
torch.optim.SGD), like bench/train_torch.py.

Prints one JSON line per variant: ok (bool), error (the exception, if any, with the last
frames of the traceback: run with CUDA_LAUNCH_BLOCKING=1 to make them point at the failing
kernel), median images/s. A CUDA error poisons the process's context, so run one variant
per process when a crash is possible (tools/gpu/cudnn-variants.sh does).

Usage: cudnn_layout.py --spec SPEC.json [--name model2] [--params flat|separate]
          [--align 1] [--input channels_last|nchw] [--weights nchw|channels_last]
          [--precision bf16|fp16|fp32|fp32-strict] [--benchmark 1|0]
          [--batch-size 512] [--warmup 3] [--steps 10] [--device cuda]
          [--variants FILE]
  --spec may also be a manifest JSON (its "spec" field is used).
  --variants: run several variants one after another in this process (one start-up for
  all: for timing variants already known to survive), one JSON object per line with
  the options to change, e.g. {"variant": "aligned", "params": "flat", "align": 64}.
  After a failure the process's CUDA context is suspect: the rest are reported skipped.
"""
import argparse
import json
import math
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

from torch_resnet import ZooResNet
from train_torch import augment


def load_spec(path):
    with open(path) as f:
        d = json.load(f)
    return d["spec"] if "spec" in d else d


def flatten_params(model, align, device):
    """Re-points every parameter to a view of one fp32 buffer, offsets rounded up to
    `align` floats (1 = packed, as train-zoo's FlatSgd). Returns the buffer and how many
    tensors start off a 16-byte boundary."""
    params = list(model.parameters())
    offsets, off = [], 0
    for p in params:
        off = (off + align - 1) // align * align
        offsets.append(off)
        off += p.numel()
    flat = torch.zeros(off, device=device)
    misaligned = 0
    with torch.no_grad():
        for p, o in zip(params, offsets):
            view = flat[o:o + p.numel()].view_as(p)
            view.copy_(p)
            p.data = view
            misaligned += (view.data_ptr() % 16) != 0
    return flat, offsets, misaligned


class FlatNesterov:
    """SGD with Nesterov momentum over the flat buffer, as FlatSgd does: gather the
    gradients into one tensor, a few kernels over the whole buffer."""

    def __init__(self, params, flat, offsets, lr=1e-3, momentum=0.9, wd=5e-4):
        self.params, self.flat, self.offsets = params, flat, offsets
        self.buf = torch.zeros_like(flat)
        self.lr, self.momentum, self.wd = lr, momentum, wd

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        g = torch.zeros_like(self.flat)
        for p, o in zip(self.params, self.offsets):
            if p.grad is not None:
                g[o:o + p.numel()].copy_(p.grad.reshape(-1))
        g.add_(self.flat, alpha=self.wd)
        self.buf.mul_(self.momentum).add_(g)
        self.flat.add_(g.add(self.buf, alpha=self.momentum), alpha=-self.lr)


def run(a):
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = bool(a.benchmark)
    torch.backends.cudnn.allow_tf32 = a.precision != "fp32-strict"
    torch.backends.cuda.matmul.allow_tf32 = a.precision != "fp32-strict"
    torch.manual_seed(0)
    spec = load_spec(a.spec)
    model = ZooResNet(spec).to(dev)
    misaligned = None
    if a.params == "flat":
        if a.weights == "channels_last":
            raise ValueError("--weights channels_last needs --params separate (flat views stay NCHW, as in train-zoo)")
        flat, offsets, misaligned = flatten_params(model, a.align, dev)
        opt = FlatNesterov(list(model.parameters()), flat, offsets)
    else:
        if a.weights == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
        misaligned = sum((p.data_ptr() % 16) != 0 for p in model.parameters())
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    images = torch.randint(0, 256, (a.batch_size, 3, 32, 32), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, spec["num_classes"], (a.batch_size,), device=dev)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model.train()
    times = []
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        x = augment(images.float() / 255)
        if a.input == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"loss is {loss.item()} after {a.warmup + a.steps} steps")
    return {"median_images_per_s": a.batch_size / statistics.median(times),
            "step_seconds": times, "tensors_not_16B_aligned": int(misaligned)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--variant", default=None, help="a label copied into the output")
    ap.add_argument("--params", choices=["flat", "separate"], default="flat")
    ap.add_argument("--align", type=int, default=1, help="flat: offset alignment in floats (1 = packed)")
    ap.add_argument("--input", choices=["channels_last", "nchw"], default="channels_last")
    ap.add_argument("--weights", choices=["nchw", "channels_last"], default="nchw")
    ap.add_argument("--precision", choices=["bf16", "fp16", "fp32", "fp32-strict"], default="bf16")
    ap.add_argument("--benchmark", type=int, choices=[0, 1], default=1)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--variants", default=None, help="JSON lines of option overrides, run in turn")
    a = ap.parse_args()
    todo = [{}]
    if a.variants:
        todo = [json.loads(l) for l in open(a.variants) if l.strip()]
    failed = False
    for overrides in todo:
        v = argparse.Namespace(**{**vars(a), **overrides})
        out = describe(v)
        if failed:
            out.update(ok=False, error="skipped: an earlier variant in this process failed")
        else:
            try:
                out.update(run(v))
                out["ok"] = True
            except Exception as e:  # a CUDA error, reported instead of a traceback dump
                failed = True
                out["ok"] = False
                out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
                out["where"] = traceback.format_exc()[-1200:]
        print(json.dumps(out), flush=True)
    sys.exit(3 if failed else 0)


def describe(a):
    out = {"bench": "cudnn_layout", "model": a.name or a.spec, "variant": a.variant,
           "params": a.params, "align": a.align if a.params == "flat" else None,
           "input": a.input, "weights": a.weights, "precision": a.precision,
           "benchmark": a.benchmark, "batch_size": a.batch_size, "steps": a.steps,
           "device": a.device, "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if a.device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


if __name__ == "__main__":
    main()
