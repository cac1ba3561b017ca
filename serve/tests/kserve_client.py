"""An outside KServe v2 client against tpsnet-serve: Triton's HTTP client (PyPI
`tritonclient[http]`) and plain urllib requests written from the Open Inference
Protocol's REST specification. Answers are checked against Python onnxruntime running
the same ONNX file on the same real CIFAR-10 test images.

Usage: python kserve_client.py HOST:PORT MODEL_NAME MODEL.onnx CIFAR10_DIR
Run by serve/tests/http_api.rs; prints "N passed, 0 failed" on success and exits 1 on
the first failed check.
"""

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client_checks import check, close, done, first_test_images

URL, MODEL, ONNX, CIFAR = sys.argv[1:5]
N = 8
# The first N real CIFAR-10 test images, float32 NCHW RGB in [0, 1].
x = first_test_images(CIFAR, N)

session = ort.InferenceSession(ONNX, providers=["CPUExecutionProvider"])
in_name = session.get_inputs()[0].name
out_name = session.get_outputs()[0].name
ref = session.run(None, {in_name: x})[0]

client = httpclient.InferenceServerClient(url=URL)

# Health and metadata.
check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
check(client.is_model_ready(MODEL), "model ready")
meta = client.get_server_metadata()
check(meta["name"] == "tpsnet-serve" and "binary_tensor_data" in meta["extensions"], f"server metadata {meta}")
mm = client.get_model_metadata(MODEL)
check(mm["name"] == MODEL and mm["platform"] == "onnxruntime_onnx", f"model metadata {mm}")
check(mm["inputs"] == [{"name": in_name, "datatype": "FP32", "shape": [-1, 3, 32, 32]}], f"inputs {mm['inputs']}")
check(mm["outputs"] == [{"name": out_name, "datatype": "FP32", "shape": [-1, ref.shape[1]]}], f"outputs {mm['outputs']}")
version = mm["versions"][0]
check(client.is_model_ready(MODEL, version), "versioned model ready")
check(not client.is_model_ready("no-such-model"), "unknown model is not ready")


def infer_input(data, binary, datatype="FP32"):
    i = httpclient.InferInput(in_name, list(data.shape), datatype)
    i.set_data_from_numpy(data, binary_data=binary)
    return i


# Logits, every combination of binary/JSON input and output, a batch of N in one request.
for binary_in in (True, False):
    for binary_out in (True, False):
        out = httpclient.InferRequestedOutput(out_name, binary_data=binary_out)
        r = client.infer(MODEL, [infer_input(x, binary_in)], outputs=[out], request_id="req-7")
        close(r.as_numpy(out_name), ref, f"logits (binary in {binary_in}, out {binary_out})")
        check(r.get_response()["id"] == "req-7", "the response echoes the request id")
        check(r.get_response()["model_version"] == version, "the response names the version")

# No outputs named: the client asks for binary outputs by default.
r = client.infer(MODEL, [infer_input(x, True)])
close(r.as_numpy(out_name), ref, "default outputs")
r = client.infer(MODEL, [infer_input(x[:1], True)], model_version=version)
close(r.as_numpy(out_name), ref[:1], "versioned infer, one image")

# The classification extension: "logit:index:label", best first.
for binary_out in (False, True):
    out = httpclient.InferRequestedOutput(out_name, binary_data=binary_out, class_count=3)
    r = client.infer(MODEL, [infer_input(x, True)], outputs=[out])
    cls = r.as_numpy(out_name)
    check(cls.shape == (N, 3), f"classification shape {cls.shape}")
    for i in range(N):
        want = list(np.argsort(-ref[i], kind="stable")[:3])
        parts = [s.decode() if isinstance(s, bytes) else s for s in cls[i]]
        got = [int(p.split(":")[1]) for p in parts]
        check(got == want, f"image {i} top-3 {got} vs onnxruntime {want}")
        check(abs(float(parts[0].split(":")[0]) - ref[i][want[0]]) < 1e-4, "classification value is the logit")

# Errors come back as InferenceServerException with the server's status and message.
def expect_error(call, status, needle, what):
    try:
        call()
    except InferenceServerException as e:
        check(str(e.status()) == status and needle in str(e.message()), f"{what}: {e.status()} {e.message()}")
        return
    check(False, f"{what}: no error")


expect_error(lambda: client.infer("no-such-model", [infer_input(x, True)]), "404", "unknown model", "unknown model")
expect_error(lambda: client.infer(MODEL, [infer_input(x.astype(np.float64), True, "FP64")]), "400", "FP64", "FP64 input")
expect_error(lambda: client.infer(MODEL, [infer_input(x[:, :, :28, :28].copy(), True)]), "400", "shape", "28x28 input")
expect_error(lambda: client.get_model_metadata("no-such-model"), "404", "unknown model", "unknown model metadata")


# Plain requests written from the specification (nested JSON data, no client library).
def post(path, body):
    req = urllib.request.Request(f"http://{URL}{path}", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


status, body = post(f"/v2/models/{MODEL}/infer", {
    "id": "nested",
    "inputs": [{"name": in_name, "shape": [2, 3, 32, 32], "datatype": "FP32", "data": x[:2].tolist()}],
    "outputs": [{"name": out_name}],
})
check(status == 200, f"spec request: {status} {body}")
check(body["model_name"] == MODEL and body["id"] == "nested", f"spec response {list(body)}")
(o,) = body["outputs"]
check(o["name"] == out_name and o["datatype"] == "FP32" and o["shape"] == [2, ref.shape[1]], f"spec output {o}")
close(np.array(o["data"], dtype=np.float32).reshape(o["shape"]), ref[:2], "spec request logits")
status, body = post(f"/v2/models/{MODEL}/infer", {"inputs": [{"name": in_name}]})
check(status == 400 and isinstance(body.get("error"), str), f"spec error shape: {status} {body}")

done()
