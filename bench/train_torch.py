"""Plain PyTorch peer of `train-zoo bench`: the same ResNet (from the same spec JSON),
batch size, augmentation (on-device affine crop/rotate/flip), loss and SGD update,
timed the same way (median of timed steps after warm-up, synchronised on CUDA).

Usage: train_torch.py --spec SPEC.json [--batch-size 256] [--device cpu|cuda]
                      [--amp] [--channels-last] [--warmup 2] [--steps 5] [--threads N]
Prints one JSON line like train-zoo bench.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

# The same architecture the inference benchmark uses (bench/torch_resnet.py).
from torch_resnet import ZooResNet


def augment(x, pad=4, deg=5.0):
    n, _, h, w = x.shape
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(deg)
    tx = torch.randint(-pad, pad + 1, (n,), device=x.device).float() * 2 / w
    ty = torch.randint(-pad, pad + 1, (n,), device=x.device).float() * 2 / h
    flip = torch.randint(0, 2, (n,), device=x.device).float() * -2 + 1
    c, s = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([c * flip, -s, tx], 1), torch.stack([s * flip, c, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    spec = json.load(open(a.spec))
    dev = torch.device(a.device)
    # Same as train-zoo on CUDA: fixed shapes, so let cuDNN time its kernels once.
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    torch.manual_seed(0)
    model = ZooResNet(spec).to(dev)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    images = torch.randint(0, 256, (a.batch_size, 3, 32, 32), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, spec["num_classes"], (a.batch_size,), device=dev)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    times = []
    model.train()
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        x = augment(images.float() / 255)
        if a.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({
        "bench": "train_step", "impl": "pytorch-eager", "model": a.name or a.spec,
        "params": sum(p.numel() for p in model.parameters()), "batch_size": a.batch_size,
        "steps": a.steps, "step_seconds": times, "median_images_per_s": a.batch_size / med,
        "device": str(dev), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
