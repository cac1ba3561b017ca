"""A/B of ONNX files on the CPU: batch-256 throughput and batch-1 latency of each file in
one process, in rounds that rotate the files' order, with each file's throughput as a
ratio to the first file's *within a round* (paired), as bench/quantize_peers.py does.
For comparing two builds of the same model (e.g. `tpsnet-quantize --first-conv fp32`
against the default) on a quiet machine.

usage: .venv/bin/python bench/onnx_ab.py [--rounds 5] [--repeats 5] FILE...

Input: random images in [0, 1] (speed does not depend on the values); the input tensor
is whatever the file names its first input.
"""

import argparse
import os
import statistics

import numpy as np
import onnxruntime as ort

from timing import rotated, timed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="timed batch-256 runs per round")
    ap.add_argument("--latency-runs", type=int, default=100)
    a = ap.parse_args()
    sessions = [ort.InferenceSession(f, providers=["CPUExecutionProvider"]) for f in a.files]
    x = np.random.default_rng(0).random((256, 3, 32, 32), dtype=np.float32)
    one = x[:1].copy()
    tput = [[] for _ in a.files]
    lat = [[] for _ in a.files]
    print("load before", " ".join(open("/proc/loadavg").read().split()[:3]), flush=True)
    for r in range(a.rounds):
        for i in rotated(list(range(len(a.files))), r):
            s, name = sessions[i], sessions[i].get_inputs()[0].name
            tput[i].append(256 / timed(lambda: s.run(None, {name: x}), a.repeats, 1))
            lat[i].append(1000 * timed(lambda: s.run(None, {name: one}), a.latency_runs, 10))
    for i, f in enumerate(a.files):
        ratios = [p / q for p, q in zip(tput[i], tput[0])]
        print(f"{os.path.basename(f):40s} {statistics.median(tput[i]):7.0f} img/s (batch 256)  "
              f"{statistics.median(ratios):.2f}x the first (per round: {' '.join(f'{q:.2f}' for q in ratios)})  "
              f"batch 1: {statistics.median(lat[i]):.2f} ms", flush=True)
    print("load after", " ".join(open("/proc/loadavg").read().split()[:3]))


if __name__ == "__main__":
    main()
