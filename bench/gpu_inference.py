"""Inference throughput of the zoo's networks on a GPU at a large batch, through libtorch
(PyTorch eager: the same ATen/cuDNN kernels tch calls), for issue 5's GPU table.

Each manifest's spec is built by torch_resnet.py with random weights (throughput does not
depend on the values), in eval mode, and timed in three settings: fp32 NCHW, fp32
channels-last, and bf16 autocast channels-last. cuDNN autotuning is on; every setting gets
`--warmup` untimed runs first. A run is one forward pass of `--batch` images already on
the GPU, synchronised; throughput is batch / median time over `--repeats` runs.

usage: gpu_inference.py [--batch 1024] [--repeats 30] [--warmup 10] [--device cuda]
                        [--json OUT.jsonl] MANIFEST.json...
"""

import argparse
import json

import torch

import torch_resnet
from bench_peers import timed


def median_seconds(model, x, repeats, warmup, bf16):
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def once():
        with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            model(x)
        sync()

    return timed(once, repeats, warmup)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifests", nargs="+")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    a = ap.parse_args()

    dev = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    rows = []
    for path in a.manifests:
        with open(path) as f:
            m = json.load(f)
        torch.manual_seed(0)
        model = torch_resnet.ZooResNet(m["spec"]).eval().to(dev)
        n = torch_resnet.params(model)
        if n != m["params"]:
            raise SystemExit(f"{path}: the PyTorch build has {n} parameters, the manifest says {m['params']}")
        x = torch.rand(a.batch, 3, 32, 32, device=dev)
        for layout, bf16 in (("nchw", False), ("channels_last", False), ("channels_last", True)):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            model = model.to(memory_format=fmt)
            xs = x.contiguous(memory_format=fmt)
            s = median_seconds(model, xs, a.repeats, a.warmup, bf16)
            row = {
                "model": m["name"], "file": m["file"], "device": gpu, "batch": a.batch,
                "layout": layout, "precision": "bf16-autocast" if bf16 else "fp32",
                "median_s": s, "images_per_s": a.batch / s,
                "tflops": 2 * m["macs"] * a.batch / s / 1e12,
                "torch": torch.__version__, "repeats": a.repeats,
            }
            rows.append(row)
            print(f"{m['name']:<12} {layout:<13} {row['precision']:<13} {row['images_per_s']:>10,.0f} img/s "
                  f"{1e3 * s:7.2f} ms/batch {row['tflops']:6.1f} TFLOP/s", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
