"""Reference logits for bench/soak.sh: Python onnxruntime runs an ONNX file on the first
N real CIFAR-10 test images (float32 NCHW RGB in [0, 1], as the server's clients send
them) and writes the logits as little-endian float32, N x classes, to OUT.

Usage: python bench/soak_reference.py MODEL.onnx CIFAR10_DIR N OUT
"""

import os
import sys

import numpy as np
import onnxruntime as ort

onnx_path, cifar, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
raw = np.fromfile(os.path.join(cifar, "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)
x = (raw[:n, 1:].reshape(n, 3, 32, 32).astype(np.float32) / 255.0).copy()
session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
logits = session.run(None, {session.get_inputs()[0].name: x})[0].astype("<f4")
tmp = out + ".tmp"
logits.tofile(tmp)
os.replace(tmp, out)
print(f"{n} reference logits {logits.shape} from onnxruntime {ort.__version__} -> {out}")
