#!/usr/bin/env python3
"""How many epochs of the `fast` recipe each paper model needs to reach its paper top-1
plus a margin, estimated from the final accuracies of runs with different total epochs
(docs/lab/training-log.md, "Epochs needed"). Pure Python, no dependencies.

Only *final* accuracies of complete runs are data: the per-epoch points of one run are
not what a shorter run would reach, because the schedule anneals to the run's own end.

Two fits of the test error e(E) = 100 - top1 (flip TTA) against total epochs E, through
TPSNet's three runs (20, 33 and 60 epochs, seed 0):
  * power law     e = a * E^-b        (least squares in log-log; the central estimate)
  * saturating    e = c + a * E^-b    (exact through the three points; more epochs,
                                       the conservative estimate)
Model-1 and Model-2 have one run each (19 epochs); their curves are TPSNet's scaled by
e_m(19) / e_tpsnet(19), i.e. the same shape, an assumption the table states.

Usage: tools/gpu/epochs-needed.py [--margin 0.3] [--json]
"""
import argparse
import json
import math

# Final-epoch flip-TTA top-1 of complete `fast`-recipe runs on an H200, seed 0
# (docs/lab/training-log.md: 2026-11-26 table; round 5 `tps20`, docs/lab/sweeps/2026-11-27-round5.jsonl).
RUNS = {
    "tpsnet": [(20, 91.02), (33, 92.75), (60, 94.18)],
    "model1": [(19, 92.42)],
    "model2": [(19, 91.79)],
}
PAPER = {"tpsnet": 94.84, "model1": 94.02, "model2": 94.24}
# Training images/s of the published runs (mean over the run, alone on the GPU), and
# the layout they trained in: docs/lab/training-log.md 2026-11-26.
IMAGES_PER_S = {"tpsnet": 17664.0, "model1": 14424.0, "model2": 9664.0}
LAYOUT = {"tpsnet": "channels-last", "model1": "NCHW", "model2": "NCHW"}
TRAIN_IMAGES = 50000


def fit_power(points):
    """Least-squares fit of log e = log a - b log E."""
    xs = [math.log(e) for e, _ in points]
    ys = [math.log(100.0 - acc) for _, acc in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = -sxy / sxx
    a = math.exp(my + b * mx)
    return lambda ep: a * ep ** (-b), {"a": a, "b": b}


def fit_saturating(points):
    """e = c + a E^-b through three points exactly (bisection on b)."""
    (e0, p0), (e1, p1), (e2, p2) = points
    r0, r1, r2 = 100 - p0, 100 - p1, 100 - p2

    def coeffs(b):
        a = (r0 - r1) / (e0 ** -b - e1 ** -b)
        return a, r0 - a * e0 ** -b

    def resid(b):
        a, c = coeffs(b)
        return c + a * e2 ** -b - r2

    lo, hi = 0.05, 5.0
    if resid(lo) * resid(hi) > 0:
        raise SystemExit("saturating fit: no root in b in [0.05, 5]; the points are not concave")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if resid(lo) * resid(mid) <= 0:
            hi = mid
        else:
            lo = mid
    b = 0.5 * (lo + hi)
    a, c = coeffs(b)
    return lambda ep: c + a * ep ** (-b), {"a": a, "b": b, "c": c}


def epochs_for(curve, target_err, scale=1.0, cap=2000):
    """Smallest whole number of epochs whose predicted error is at most target_err."""
    for ep in range(1, cap + 1):
        if scale * curve(ep) <= target_err:
            return ep
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--margin", type=float, default=0.3, help="pp above the paper (seed spread)")
    ap.add_argument("--json", action="store_true", help="one JSON line per model")
    args = ap.parse_args()
    fits = {"power": fit_power(RUNS["tpsnet"]), "saturating": fit_saturating(RUNS["tpsnet"])}
    rows = []
    for m in ("tpsnet", "model1", "model2"):
        target = PAPER[m] + args.margin
        row = {"model": m, "paper_top1": PAPER[m], "target_top1": round(target, 2),
               "runs": RUNS[m], "layout": LAYOUT[m], "images_per_s": IMAGES_PER_S[m]}
        for name, (curve, params) in fits.items():
            # Scale TPSNet's curve to this model's run closest to the target.
            ep_m, acc_m = RUNS[m][-1]
            scale = 1.0 if m == "tpsnet" else (100 - acc_m) / curve(ep_m)
            ep = epochs_for(curve, 100 - target, scale)
            row[name] = {"epochs": ep, "scale": round(scale, 4),
                         "gpu_s": round(ep * TRAIN_IMAGES / IMAGES_PER_S[m]) if ep else None,
                         "fit": {k: round(v, 4) for k, v in params.items()}}
        rows.append(row)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"fits through TPSNet's (epochs, flip-TTA top-1) {RUNS['tpsnet']}:")
    for name, (_, p) in fits.items():
        print(f"  {name:<10} " + ", ".join(f"{k}={v:.4g}" for k, v in p.items()))
    print(f"\n{'model':<7} {'paper':>6} {'target':>6} {'layout':>13} {'img/s':>6}  "
          f"{'power-law epochs (s)':>21}  {'saturating epochs (s)':>22}")
    for r in rows:
        pw, st = r["power"], r["saturating"]
        print(f"{r['model']:<7} {r['paper_top1']:>6.2f} {r['target_top1']:>6.2f} {r['layout']:>13} "
              f"{r['images_per_s']:>6.0f}  {pw['epochs']:>13} ({pw['gpu_s']:>4} s)  "
              f"{st['epochs']:>14} ({st['gpu_s']:>4} s)")


if __name__ == "__main__":
    main()
