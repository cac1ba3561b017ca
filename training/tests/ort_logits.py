"""Outside client of our ONNX files: the pip `onnx` checker and Python onnxruntime.

Usage: ort_logits.py MODEL.onnx IMAGES.f32 N OUT_BATCH.f32 OUT_SINGLE.f32
Checks the model with onnx.checker (full_check), runs it on N images (float32 NCHW,
RGB in [0, 1]) as one batch and one image at a time, and writes both logits.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, images_path, n, out_batch, out_single = sys.argv[1:6]
n = int(n)
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
assert model.opset_import[0].version == 17, model.opset_import
inp = model.graph.input[0].type.tensor_type.shape.dim[0]
assert inp.dim_param, "batch dimension must be dynamic"

x = np.fromfile(images_path, dtype=np.float32).reshape(n, 3, 32, 32)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
batch = sess.run(["logits"], {"input": x})[0]
single = np.concatenate([sess.run(["logits"], {"input": x[i : i + 1]})[0] for i in range(n)])
batch.astype(np.float32).tofile(out_batch)
single.astype(np.float32).tofile(out_single)
print("ok", batch.shape)
