"""Where an ONNX file's time goes on the CPU: ONNX Runtime's own profiler (kernel time per
node) over a few batch-256 runs, summed by operator type, with the slowest nodes.

usage: .venv/bin/python bench/onnx_profile.py [--runs 5] [--top 10] FILE...

Kernel times only (not the time between kernels); on a shared machine read the shares by
operator, not the absolute milliseconds.
"""

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def profile(path, runs, batch=256):
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((batch, 3, 32, 32), dtype=np.float32)
        name = s.get_inputs()[0].name
        for _ in range(runs):
            s.run(None, {name: x})
        events = json.load(open(s.end_profiling()))
    by_node, by_op = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_node[e["name"][: -len("_kernel_time")]] += e["dur"]
            by_op[e["args"]["op_name"]] += e["dur"]
    return by_node, by_op


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args()
    for path in a.files:
        by_node, by_op = profile(path, a.runs)
        total = sum(by_op.values())
        print(f"== {path}: {total / 1000 / a.runs:.1f} ms of kernels per batch-256 run")
        for op, us in by_op.most_common():
            print(f"  {op:24s} {us / 1000 / a.runs:8.2f} ms  {100 * us / total:5.1f} %")
        print(f"  slowest {a.top} nodes:")
        for node, us in by_node.most_common(a.top):
            print(f"    {node:48s} {us / 1000 / a.runs:8.2f} ms")


if __name__ == "__main__":
    main()
