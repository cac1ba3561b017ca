"""Models served together by one tpsnet-serve, from outside over gRPC: Triton's gRPC
client (PyPI `tritonclient[grpc]`) sends the same real CIFAR-10 test images to several
models at once, and each answer must equal Python onnxruntime running that model's own
ONNX file (and differ from the other models' answers), so ModelInfer is routed by
model_name. Unloaded and unknown models get UNAVAILABLE and NOT_FOUND.

Usage: python zoo_grpc_client.py GRPC_ADDR CIFAR10_DIR UNLOADED_MODEL MODEL=ONNX...
Run by serve/tests/zoo.rs; prints "N passed, 0 failed" on success, exits 1 on the first
failed check.
"""

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client_checks import check, done, first_test_images

URL, CIFAR, UNLOADED = sys.argv[1:4]
MODELS = dict(arg.split("=", 1) for arg in sys.argv[4:])
N = 8
x = first_test_images(CIFAR, N)

reference = {}
for model, onnx in MODELS.items():
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    reference[model] = session.run(None, {session.get_inputs()[0].name: x})[0]

client = grpcclient.InferenceServerClient(url=URL)


def infer(model, i):
    inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(x[i : i + 1])
    res = client.infer(model, [inp])
    return model, i, res.as_numpy(res.get_response().outputs[0].name)[0]


# Every image to every model, all at once.
with ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(lambda job: infer(*job), [(m, i) for m in MODELS for i in range(N)]))
for model, i, got in answers:
    diff = float(np.max(np.abs(got.astype(np.float64) - reference[model][i])))
    check(diff < 1e-4, f"{model} image {i}: logits differ from onnxruntime's by {diff}")
    for other in MODELS:
        if other != model:
            apart = float(np.max(np.abs(got - reference[other][i])))
            check(apart > 1e-3, f"{model} image {i} answered like {other}")
    check(client.is_model_ready(model), f"{model} ready")


def status_of(call):
    try:
        call()
        return "OK"
    except InferenceServerException as e:
        return e.status()


check(not client.is_model_ready(UNLOADED), f"{UNLOADED} is not ready")
got = status_of(lambda: infer(UNLOADED, 0))
check(got == "StatusCode.UNAVAILABLE", f"{UNLOADED}: {got}, want UNAVAILABLE")
got = status_of(lambda: infer("no-such-model", 0))
check(got == "StatusCode.NOT_FOUND", f"unknown model: {got}, want NOT_FOUND")
done()
