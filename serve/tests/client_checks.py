"""What the outside-client test scripts share (kserve_client.py, kserve_grpc_client.py,
zoo_grpc_client.py): a counted check that stops at the first failure, a logits
comparison, the first CIFAR-10 test images as the runtime sees them, and the summary line
the Rust tests read ("N passed, 0 failed")."""

import os
import sys

import numpy as np

_passed = 0


def check(cond, what):
    """Counts a passed check; on a failed one prints it and the count, and exits 1."""
    global _passed
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        print(f"{_passed} passed, 1 failed")
        sys.exit(1)
    _passed += 1


def close(got, want, what):
    """Logits equal to the reference within 1e-4 (and of its shape)."""
    got = np.asarray(got)
    diff = float(np.max(np.abs(got.astype(np.float64) - want))) if got.shape == want.shape else float("inf")
    check(diff < 1e-4, f"{what}: shape {got.shape} vs {want.shape}, max diff {diff}")


def first_test_images(cifar_dir, n):
    """The first `n` CIFAR-10 test images as N×3×32×32 floats in [0, 1]."""
    raw = np.fromfile(os.path.join(cifar_dir, "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)
    return (raw[:n, 1:].reshape(n, 3, 32, 32).astype(np.float32) / 255.0).copy()


def done():
    """The summary line of a script whose checks all passed."""
    print(f"{_passed} passed, 0 failed")
