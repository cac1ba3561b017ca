"""Timing shared by the bench scripts: the median of repeated runs after a warm-up."""

import statistics
import time


def timed(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rotated(items, round_index):
    """`items` starting at position `round_index` (mod len): the order of one round, so
    that over rounds every item is measured first, second, ... in turn."""
    k = round_index % len(items)
    return items[k:] + items[:k]
