"""An outside KServe v2 gRPC client against tpsnet-serve --grpc-port: Triton's gRPC client
(PyPI `tritonclient[grpc]`) and its generated stubs for `inference.GRPCInferenceService`.
Answers are checked against Python onnxruntime running the same ONNX file on the same
real CIFAR-10 test images; errors against the gRPC status codes the server promises.

Usage: python kserve_grpc_client.py GRPC_ADDR MODEL MODEL.onnx CIFAR10_DIR \\
           BUSY_GRPC_ADDR BUSY_HTTP_ADDR BUSY_PID
GRPC_ADDR serves MODEL with --max-body-bytes 64K; the "busy" server (pid BUSY_PID) has
--max-queue 4 and a long --max-delay-ms, so four one-image requests fill its queue; this
script SIGTERMs it once they do. Run by serve/tests/grpc_api.rs; prints
"N passed, 0 failed" on success and exits 1 on the first failed check.
"""

import os
import signal
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from client_checks import check, close, done, first_test_images

URL, MODEL, ONNX, CIFAR, BUSY_URL, BUSY_HTTP, BUSY_PID = sys.argv[1:8]
N = 8
def status_of(call):
    """The gRPC status code a stub call ends with (OK if it succeeds)."""
    try:
        call()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def expect(code, call, what, needle=""):
    got, details = status_of(call)
    check(got == code and needle in details, f"{what}: {got} {details!r}, want {code} with {needle!r}")


# Real CIFAR-10 test images, float32 NCHW RGB in [0, 1].
x = first_test_images(CIFAR, N)

session = ort.InferenceSession(ONNX, providers=["CPUExecutionProvider"])
in_name = session.get_inputs()[0].name
out_name = session.get_outputs()[0].name
ref = session.run(None, {in_name: x})[0]

client = grpcclient.InferenceServerClient(url=URL)
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(URL))

# Health and metadata.
check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
check(client.is_model_ready(MODEL), "model ready")
meta = client.get_server_metadata(as_json=True)
check(meta["name"] == "tpsnet-serve" and meta.get("version"), f"server metadata {meta}")
mm = client.get_model_metadata(MODEL, as_json=True)
version = mm["versions"][0]
check(mm["name"] == MODEL and mm["platform"] == "onnxruntime_onnx" and len(version) == 8, f"model metadata {mm}")
check(
    [(t["name"], t["datatype"], t["shape"]) for t in mm["inputs"]] == [(in_name, "FP32", ["-1", "3", "32", "32"])],
    f"inputs {mm['inputs']}",
)
check(
    [(t["name"], t["datatype"], t["shape"]) for t in mm["outputs"]] == [(out_name, "FP32", ["-1", "10"])],
    f"outputs {mm['outputs']}",
)
check(client.is_model_ready(MODEL, model_version=version), "model ready at its version")
check(client.get_model_metadata(MODEL, model_version=version, as_json=True)["name"] == MODEL, "metadata by version")

# ModelInfer with raw_input_contents (what tritonclient sends): images 0-3, answered raw.
inp = grpcclient.InferInput(in_name, [4, 3, 32, 32], "FP32")
inp.set_data_from_numpy(x[:4])
res = client.infer(MODEL, [inp], request_id="raw-1", outputs=[grpcclient.InferRequestedOutput(out_name)])
close(res.as_numpy(out_name), ref[:4], "raw_input_contents logits")
resp = res.get_response()
check(resp.id == "raw-1" and resp.model_version == version and len(resp.raw_output_contents) == 1, "raw answer")


# ModelInfer with typed contents (fp32_contents): images 4-7, answered typed.
def typed_request(images, name=in_name, datatype="FP32", shape=None, model=MODEL, values=None):
    r = service_pb2.ModelInferRequest(model_name=model, id="typed")
    t = r.inputs.add(name=name, datatype=datatype, shape=shape or list(images.shape))
    t.contents.fp32_contents.extend(images.ravel().tolist() if values is None else values)
    return r


resp = stub.ModelInfer(typed_request(x[4:8]))
check(resp.id == "typed" and not resp.raw_output_contents, "typed answer has typed contents")
out = resp.outputs[0]
check((out.name, out.datatype, list(out.shape)) == (out_name, "FP32", [4, 10]), f"typed output {out}")
close(np.array(out.contents.fp32_contents, dtype=np.float32).reshape(4, 10), ref[4:8], "fp32_contents logits")

# One image per request from 8 threads at once: answers still match (batched together).
def one(i):
    c = grpcclient.InferenceServerClient(url=URL)
    t = grpcclient.InferInput(in_name, [1, 3, 32, 32], "FP32")
    t.set_data_from_numpy(x[i : i + 1])
    return c.infer(MODEL, [t]).as_numpy(out_name)[0]


with ThreadPoolExecutor(8) as pool:
    close(np.stack(list(pool.map(one, range(N)))), ref, "8 concurrent one-image requests")

# The classification extension: the top 3 classes as "logit:index:label" strings.
inp = grpcclient.InferInput(in_name, [2, 3, 32, 32], "FP32")
inp.set_data_from_numpy(x[:2])
res = client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput(out_name, class_count=3)])
top = res.as_numpy(out_name)
check(top.shape == (2, 3), f"classification shape {top.shape}")
check(
    [int(s.decode().split(":")[1]) for s in top[:, 0]] == list(np.argmax(ref[:2], axis=1)),
    f"classification top-1 {top[:, 0]} vs {np.argmax(ref[:2], axis=1)}",
)

# Errors: each maps to its status code and names the problem.
IA, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
one_image = x[:1]
expect(IA, lambda: stub.ModelInfer(typed_request(one_image, datatype="FP64")), "FP64 datatype", "datatype `FP64`")
expect(IA, lambda: stub.ModelInfer(typed_request(one_image, shape=[1, 1, 32, 32])), "wrong shape", "has shape")
expect(IA, lambda: stub.ModelInfer(typed_request(one_image, shape=[2, 3, 32, 32])), "too few values", "holds 3072")
expect(IA, lambda: stub.ModelInfer(typed_request(one_image, name="pixels")), "unknown input", "unknown input")
nan = one_image.copy()
nan[0, 0, 0, 0] = np.nan
expect(IA, lambda: stub.ModelInfer(typed_request(nan)), "NaN value", "NaN")
empty = service_pb2.ModelInferRequest(model_name=MODEL)
empty.inputs.add(name=in_name, datatype="FP32", shape=[1, 3, 32, 32])
expect(IA, lambda: stub.ModelInfer(empty), "no values", "no values")
short_raw = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[one_image.tobytes()[:-4]])
short_raw.inputs.add(name=in_name, datatype="FP32", shape=[1, 3, 32, 32])
expect(IA, lambda: stub.ModelInfer(short_raw), "short raw contents", "holds 3071")
bad_out = typed_request(one_image)
bad_out.outputs.add(name="probs")
expect(IA, lambda: stub.ModelInfer(bad_out), "unknown output", "unknown output")
expect(NF, lambda: stub.ModelInfer(typed_request(one_image, model="nope")), "unknown model", "unknown model")
wrong_version = typed_request(one_image)
wrong_version.model_version = "ffffffff"
expect(NF, lambda: stub.ModelInfer(wrong_version), "unknown version", "no version")
expect(NF, lambda: stub.ModelReady(service_pb2.ModelReadyRequest(name="nope")), "ModelReady unknown model")
expect(NF, lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope")), "ModelMetadata unknown model")
expect(
    grpc.StatusCode.UNIMPLEMENTED,
    lambda: stub.RepositoryIndex(service_pb2.RepositoryIndexRequest()),
    "a call outside the served subset",
)
# More than --max-body-bytes (64K): 8 images are 98,304 bytes of tensor.
big = grpcclient.InferInput(in_name, [N, 3, 32, 32], "FP32")
big.set_data_from_numpy(x)
try:
    client.infer(MODEL, [big])
    check(False, "a message over the body limit was accepted")
except InferenceServerException as e:
    check("RESOURCE_EXHAUSTED" in str(e.status()), f"message over the limit: {e.status()} {e.message()}")
# Still healthy and right after all that.
close(stub.ModelInfer(typed_request(x[:1])).outputs[0].contents.fp32_contents, ref[0], "answer after errors")

# The busy server: four one-image requests fill its queue of 4 and wait for its delay.
busy = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(BUSY_URL))


def queued_images():
    with urllib.request.urlopen(f"http://{BUSY_HTTP}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'tpsnet_queue_images{{model="{MODEL}"}} '):
                return float(line.split()[1])
    return None


with ThreadPoolExecutor(4) as pool:
    waiting = [pool.submit(busy.ModelInfer, typed_request(x[i : i + 1]), timeout=60) for i in range(4)]
    t0 = time.monotonic()
    while queued_images() != 4.0:
        check(time.monotonic() - t0 < 10, "four requests never filled the busy server's queue")
        time.sleep(0.02)
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: busy.ModelInfer(typed_request(x[:1])), "queue full", "busy")
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: busy.ModelInfer(typed_request(x[:5])), "5 images", "split it")
    # SIGTERM: the queued requests are answered at once, not after the delay.
    t0 = time.monotonic()
    os.kill(int(BUSY_PID), signal.SIGTERM)
    for i, f in enumerate(waiting):
        out = f.result().outputs[0].contents.fp32_contents
        close(np.array(out, dtype=np.float32), ref[i], f"queued request {i} answered on SIGTERM")
    check(time.monotonic() - t0 < 10, "queued requests waited for the delay after SIGTERM")
# Once it has stopped, calls fail as UNAVAILABLE.
t0 = time.monotonic()
while status_of(lambda: busy.ModelInfer(typed_request(x[:1]), timeout=5))[0] != grpc.StatusCode.UNAVAILABLE:
    check(time.monotonic() - t0 < 10, "the busy server still answers 10 s after SIGTERM")
    time.sleep(0.05)
check(True, "the busy server answers UNAVAILABLE after SIGTERM")

done()
