"""A/B of ONNX files on the CPU: batch-256 throughput and batch-1 latency of each file in
one process, in rounds that rotate the files' order, with each file's throughput as a
ratio to the first file's *within a round* (paired), as bench/quantize_peers.py does.
For comparing two builds of the same model (e.g. `tpsnet-quantize --first-conv fp32`
against the default) on a quiet machine.

usage: .venv/bin/python bench/onnx_ab.py [--rounds 5] [--repeats 5] FILE...
       .venv/bin/python bench/onnx_ab.py --interleave 300 FILE...

--interleave N: instead of rounds, N passes of one batch-256 run of each file (the order
rotated each pass); each file's median img/s, and the median and quartiles of its per-pass
ratio to the first file. For differences of a few per cent on a machine whose speed
drifts (a VM with busy neighbours): a drift touches the files of one pass alike.

Input: random images in [0, 1] (speed does not depend on the values); the input tensor
is whatever the file names its first input.
"""

import argparse
import os
import statistics

import numpy as np
import onnxruntime as ort

from timing import rotated, timed


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="timed batch-256 runs per round")
    ap.add_argument("--latency-runs", type=int, default=100)
    ap.add_argument("--interleave", type=int, default=0, metavar="N",
                    help="N passes of one batch-256 run per file instead of rounds")
    a = ap.parse_args()
    sessions = [ort.InferenceSession(f, providers=["CPUExecutionProvider"]) for f in a.files]
    x = np.random.default_rng(0).random((256, 3, 32, 32), dtype=np.float32)
    if a.interleave:
        interleaved(a.files, sessions, x, a.interleave)
        return
    one = x[:1].copy()
    tput = [[] for _ in a.files]
    lat = [[] for _ in a.files]
    print("load before", loadavg(), flush=True)
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
    print("load after", loadavg())


def interleaved(files, sessions, x, passes):
    runs = [lambda s=s: s.run(None, {s.get_inputs()[0].name: x}) for s in sessions]
    for run in runs:
        timed(run, 1, 2)
    seconds = [[] for _ in files]
    print("load before", loadavg(), flush=True)
    for p in range(passes):
        for i in rotated(list(range(len(files))), p):
            seconds[i].append(timed(runs[i], 1, 0))
    for i, f in enumerate(files):
        ratios = [a / b for a, b in zip(seconds[0], seconds[i])]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(f"{os.path.basename(f):40s} {256 / statistics.median(seconds[i]):7.0f} img/s (batch 256)  "
              f"{statistics.median(ratios):.3f}x the first, median of {passes} passes "
              f"(quartiles {q1:.3f}-{q3:.3f})", flush=True)
    print("load after", loadavg())


if __name__ == "__main__":
    main()
