"""Measures int8 quantization on the CPU: for each zoo model, the fp32 model, our int8
variant (tpsnet-quantize, published in models/) and Python onnxruntime's quantize_static
at its default and at its best configuration, calibrated on the *same* training images.

For every variant: top-1 on the test set (single view and flip TTA, the mean of the
logits of each image and its mirror), batch-256 throughput (images / median time of
whole-batch runs), batch-1 latency (median of single-image runs) and file size. All four
run in this one harness (Python onnxruntime, CPU execution provider, default threads), so
the only difference between them is the ONNX file. Throughput rounds rotate the variants'
order and ratios are taken within a round (paired), as bench/inference.sh does. Ours and
onnxruntime's best are also compared image by image (bench/paired.py: how many test images
only one of them gets right, and McNemar's exact p-value).

usage: quantize_peers.py --models-dir models --data-dir CIFAR10 --calibration CAL.json
                         --out DIR [--names tpsnet,airnet] [--repeats 5] [--rounds 3]
                         [--latency-runs 100] [--test-limit N]

CAL.json is `tpsnet-quantize --print-calibration-set` (the indices our quantizer used).
Python onnxruntime is only the peer here; the project's quantizer is Rust.
"""

import argparse
import glob
import json
import os
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from paired import compare
from timing import rotated, timed

IMAGE_BYTES = 3 * 32 * 32


def load_cifar(dir_, files):
    raw = np.concatenate(
        [np.fromfile(os.path.join(dir_, f), dtype=np.uint8).reshape(-1, 1 + IMAGE_BYTES) for f in files]
    )
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def to_float(u8):
    return (u8.astype(np.float32) / 255.0).copy()


class Reader(CalibrationDataReader):
    def __init__(self, images, batch=64):
        self.batches = [to_float(images[i : i + batch]) for i in range(0, len(images), batch)]
        self.it = iter(self.batches)

    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {"input": b}

    def rewind(self):
        self.it = iter(self.batches)


def peer_quantize(src, dst, calib, best):
    """onnxruntime's quantize_static: `best` is the fastest configuration measured in
    issue 16 (QOperator, uint8 activations, int8 per-channel weights); otherwise every
    argument is the library default (QDQ, int8 activations and weights, per tensor)."""
    kwargs = {}
    if best:
        kwargs = dict(
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    reader = Reader(calib)
    # CalibMaxIntermediateOutputs only bounds memory (MinMax merges exactly across
    # flushes). onnxruntime 1.31.1 fails with "No data is collected" when the number of
    # batches is a multiple of it (the last flush leaves nothing), so pick one that is not.
    flush = next(k for k in range(3, len(reader.batches) + 2) if len(reader.batches) % k)
    t = time.perf_counter()
    quantize_static(src, dst, reader, extra_options={"CalibMaxIntermediateOutputs": flush}, **kwargs)
    return time.perf_counter() - t


def session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def logits(sess, images, batch=256):
    out = []
    for i in range(0, len(images), batch):
        out.append(sess.run(["logits"], {"input": to_float(images[i : i + batch])})[0])
    return np.concatenate(out)




def fp32_and_int8(models_dir, name):
    fp32 = int8 = None
    for p in sorted(glob.glob(os.path.join(models_dir, "*.json"))):
        m = json.load(open(p))
        if m["name"] == name and m.get("precision", "fp32") == "fp32":
            fp32 = (os.path.join(models_dir, m["file"]), m)
        if m["name"] == name + "-int8":
            int8 = (os.path.join(models_dir, m["file"]), m)
    return fp32, int8


def cpu():
    model, flags = "?", ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and model == "?":
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1]
    return {"model": model, "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in flags.split(),
            "avx_vnni": "avx_vnni" in flags.split()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--names", default="resnet20,airnet,airnet-wide,tpsnet,model1,model2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-runs", type=int, default=100)
    ap.add_argument("--test-limit", type=int, default=None)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    cal = json.load(open(a.calibration))
    assert cal["split"] == "train"
    train_x, _ = load_cifar(a.data_dir, [f"data_batch_{i}.bin" for i in range(1, 6)])
    calib = train_x[np.array(cal["calibration"])]
    test_x, test_y = load_cifar(a.data_dir, ["test_batch.bin"])
    if a.test_limit:
        test_x, test_y = test_x[: a.test_limit], test_y[: a.test_limit]
    flipped = test_x[:, :, :, ::-1].copy()
    bench_x = to_float(test_x[:256])
    one = bench_x[:1].copy()

    report = {
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "cpu": cpu(),
        "calibration": {k: cal[k] for k in ("split", "seed", "calibration_sha256")},
        "calibration_images": len(calib),
        "test_images": len(test_y),
        "load_before": open("/proc/loadavg").read().split()[:3],
        "models": {},
    }
    variants = ["fp32", "ours", "ort_default", "ort_best"]
    for name in [n for n in a.names.split(",") if n]:
        fp32, int8 = fp32_and_int8(a.models_dir, name)
        if fp32 is None or int8 is None:
            print(f"skipping {name}: fp32 or int8 model missing in {a.models_dir}", flush=True)
            continue
        paths = {"fp32": fp32[0], "ours": int8[0]}
        row = {"quantize_s": {}}
        for v, best in (("ort_default", False), ("ort_best", True)):
            paths[v] = os.path.join(a.out, f"{name}-{v}.onnx")
            row["quantize_s"][v] = peer_quantize(fp32[0], paths[v], calib, best)
        sessions = {v: session(p) for v, p in paths.items()}
        kept = {}
        for v in variants:
            s = sessions[v]
            t = time.perf_counter()
            l1 = logits(s, test_x)
            l2 = logits(s, flipped)
            kept[v] = (l1, l2)
            row[v] = {
                "file": os.path.basename(paths[v]),
                "bytes": os.path.getsize(paths[v]),
                "top1": 100.0 * float(np.mean(l1.argmax(1) == test_y)),
                "top1_flip_tta": 100.0 * float(np.mean((l1 + l2).argmax(1) == test_y)),
                "eval_s": time.perf_counter() - t,
            }
            print(f"{name} {v}: top-1 {row[v]['top1']:.2f} %, flip TTA {row[v]['top1_flip_tta']:.2f} %", flush=True)
        # Whether the accuracy gap to onnxruntime's best is more than noise (bench/paired.py).
        row["ours_vs_ort_best_accuracy"] = compare(
            test_y, kept["ours"][0], kept["ort_best"][0], kept["ours"][1], kept["ort_best"][1]
        )
        tput = {v: [] for v in variants}
        lat = {v: [] for v in variants}
        for r in range(a.rounds):
            for v in rotated(variants, r):
                s = sessions[v]
                tput[v].append(256 / timed(lambda: s.run(["logits"], {"input": bench_x}), a.repeats, 1))
                lat[v].append(1000 * timed(lambda: s.run(["logits"], {"input": one}), a.latency_runs, 10))
        for v in variants:
            row[v]["batch256_images_per_s"] = tput[v]
            row[v]["batch1_ms"] = lat[v]
            row[v]["speedup_vs_fp32_per_round"] = [x / y for x, y in zip(tput[v], tput["fp32"])]
        row["ours_vs_ort_best_per_round"] = [x / y for x, y in zip(tput["ours"], tput["ort_best"])]
        report["models"][name] = row
        print(f"{name}: speed-up vs fp32 (median of rounds) "
              + ", ".join(f"{v} {statistics.median(row[v]['speedup_vs_fp32_per_round']):.2f}x" for v in variants[1:]),
              flush=True)
        json.dump(report, open(os.path.join(a.out, "report.json"), "w"), indent=2)
    report["load_after"] = open("/proc/loadavg").read().split()[:3]
    json.dump(report, open(os.path.join(a.out, "report.json"), "w"), indent=2)
    print_table(report)


def print_table(report):
    med = statistics.median
    labels = {
        "fp32": "fp32",
        "ours": "**tpsnet-quantize int8**",
        "ort_default": "onnxruntime quantize_static, defaults (QDQ, int8 act., per-tensor)",
        "ort_best": "onnxruntime quantize_static, best (QOperator, uint8 act., per-channel)",
    }
    print()
    c = report["cpu"]
    print(f"{c['model']}, {c['cores']} cores, AVX-512 VNNI: {c['avx512_vnni']}; "
          f"onnxruntime {report['onnxruntime']}, {report['test_images']} test images, "
          f"{report['calibration_images']} calibration images (train, seed {report['calibration']['seed']}); "
          f"load {' '.join(report['load_before'])} before, {' '.join(report.get('load_after', []))} after")
    print()
    print("| model | variant | top-1 | top-1 flip TTA | Δ vs fp32 (single / TTA), pp | batch-256 img/s: median (min–max) | vs fp32 (median of rounds) | batch-1 ms | file MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in report["models"].items():
        base = row["fp32"]
        for v in ("fp32", "ours", "ort_default", "ort_best"):
            r = row[v]
            t = r["batch256_images_per_s"]
            print(f"| `{name}` | {labels[v]} | {r['top1']:.2f} % | {r['top1_flip_tta']:.2f} % | "
                  f"{r['top1'] - base['top1']:+.2f} / {r['top1_flip_tta'] - base['top1_flip_tta']:+.2f} | "
                  f"{med(t):.0f} ({min(t):.0f}–{max(t):.0f}) | {med(r['speedup_vs_fp32_per_round']):.2f}× | "
                  f"{med(r['batch1_ms']):.2f} | {r['bytes'] / 1e6:.1f} |")
    print()
    for name, row in report["models"].items():
        print(f"* `{name}`: ours / onnxruntime best throughput per round: "
              + ", ".join(f"{x:.2f}" for x in row["ours_vs_ort_best_per_round"])
              + f" (median {med(row['ours_vs_ort_best_per_round']):.2f})")
    print()
    for name, row in report["models"].items():
        acc = row.get("ours_vs_ort_best_accuracy")
        if acc:
            print(f"* `{name}`: test images only ours / only onnxruntime best gets right: "
                  + "; ".join(f"{mode.replace('_', ' ')} {c['a_only']} / {c['b_only']} (McNemar p = {c['p']:.2f})"
                              for mode, c in acc.items()))


if __name__ == "__main__":
    main()
