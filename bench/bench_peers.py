"""Times the peers of the Rust runtime on the same ONNX model and the same images:
Python onnxruntime (same file) and PyTorch eager (same architecture and weights, built by
torch_resnet.py). Same protocol as runtime/benches/inference.rs: batch-1 latency is the
median over single-image runs, batch throughput is images / median time of whole-batch runs.

usage: bench_peers.py MODEL.onnx BENCH_DIR INPUT.f32 [--batch 256] [--repeats 5]
                      [--latency-runs 100] [--torch-repeats 3] [--json OUT]
"""

import argparse
import json
import os
import platform

import numpy as np
import onnxruntime as ort
import torch

import torch_resnet
from timing import timed




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("bench_dir")
    ap.add_argument("input")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-repeats", type=int, default=2)
    ap.add_argument("--latency-runs", type=int, default=100)
    ap.add_argument("--only", choices=["all", "ort", "torch"], default="all")
    ap.add_argument("--json")
    a = ap.parse_args()

    x = np.fromfile(a.input, dtype="<f4").reshape(-1, 3, 32, 32)[: a.batch].copy()
    assert x.shape[0] == a.batch, f"{a.input} holds fewer than {a.batch} images"
    one = x[:1].copy()

    out = {"batch": a.batch, "python": platform.python_version()}
    ort_logits = torch_logits = None
    if a.only in ("all", "ort"):
        sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
        ort_batch = timed(lambda: sess.run(["logits"], {"input": x}), a.repeats, 1)
        ort_lat = timed(lambda: sess.run(["logits"], {"input": one}), a.latency_runs, 10)
        ort_logits = sess.run(["logits"], {"input": x})[0]
        out["python_onnxruntime"] = {
            "version": ort.__version__,
            "batch_images_per_s": a.batch / ort_batch,
            "batch1_ms": 1000 * ort_lat,
        }
    if a.only in ("all", "torch"):
        d = a.bench_dir
        model = torch_resnet.load(os.path.join(d, "spec.json"), os.path.join(d, "weights.json"),
                                  os.path.join(d, "weights.bin"))
        tx, tone = torch.from_numpy(x), torch.from_numpy(one)
        with torch.inference_mode():
            torch_logits = model(tx).numpy()
            torch_batch = timed(lambda: model(tx), a.torch_repeats, 1)
            torch_lat = timed(lambda: model(tone), a.latency_runs, 10)
        out["pytorch_eager"] = {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "params": torch_resnet.params(model),
            "batch_images_per_s": a.batch / torch_batch,
            "batch1_ms": 1000 * torch_lat,
        }
        if ort_logits is None:
            sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
            ort_logits = sess.run(["logits"], {"input": x})[0]
        diff = float(np.abs(torch_logits - ort_logits).max())
        scale = float(np.abs(ort_logits).max())
        out["torch_vs_onnx_max_abs_logit_diff"] = diff
        out["onnx_max_abs_logit"] = scale
        out["torch_vs_onnx_relative_diff"] = diff / max(1.0, scale)
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    # Random deep ResNets have huge logits, so the agreement is judged relative to them.
    if out.get("torch_vs_onnx_relative_diff", 0.0) > 1e-4:
        raise SystemExit(f"PyTorch and ONNX disagree: {out}")

if __name__ == "__main__":
    main()
