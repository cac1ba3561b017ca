"""KServe v2 over gRPC vs REST on one tpsnet-serve: C concurrent clients (one process
each) send single real CIFAR-10 test images, through Triton's Python clients
(`tritonclient.grpc` with raw_input_contents, `tritonclient.http` with binary tensors),
to one server serving both protocols (`--grpc-port`). Protocols alternate within each
round (order flipped every round); a fresh server per round. Every answer is compared
with Python onnxruntime's logits. Prints per clients level the medians over rounds of
throughput, p50 and p99 latency, and the gRPC/REST throughput ratio.

  python bench/serve_grpc.py --server target/release/tpsnet-serve [--model resnet20]
      [--clients 1,16] [--rounds 3] [--requests 200] [--seconds 8] [-- SERVER-OPTION...]

Bounded: each client stops after --requests timed requests or --seconds, whichever
comes first. Run by `BENCH_ENDPOINT=grpc bench/serve.sh`. Needs CIFAR10_DIR.
"""

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = 64


def load_images(cifar):
    raw = np.fromfile(os.path.join(cifar, "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)
    return (raw[:IMAGES, 1:].reshape(IMAGES, 3, 32, 32).astype(np.float32) / 255.0).copy()


def start_server(args):
    cmd = [args.server, "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0"]
    cmd += ["--models-dir", args.models_dir, "--model", args.model] + args.server_options
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    http = grpc = None
    deadline = time.monotonic() + 60
    while (http is None or grpc is None) and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"listening on http://(\S+)", line)
        http = m.group(1) if m else http
        m = re.search(r"gRPC listening on (\S+)", line)
        grpc = m.group(1) if m else grpc
    if http is None or grpc is None:
        proc.kill()
        sys.exit(f"tpsnet-serve did not start: {' '.join(cmd)}")
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, http, grpc


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    if code != 0:
        sys.exit(f"tpsnet-serve exited with {code}")


def client_loop(protocol, addr, model, images, ref, requests, seconds, start, out):
    """One client: a warm-up request, then timed requests until the count or time runs out."""
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    client = tc.InferenceServerClient(url=addr)
    name = client.get_model_metadata(model, as_json=True) if protocol == "grpc" else client.get_model_metadata(model)
    in_name, out_name = name["inputs"][0]["name"], name["outputs"][0]["name"]
    wanted = [tc.InferRequestedOutput(out_name)] if protocol == "grpc" else [tc.InferRequestedOutput(out_name, binary_data=True)]

    def infer(i):
        x = images[i % IMAGES : i % IMAGES + 1]
        t = tc.InferInput(in_name, list(x.shape), "FP32")
        if protocol == "grpc":
            t.set_data_from_numpy(x)
        else:
            t.set_data_from_numpy(x, binary_data=True)
        got = client.infer(model, [t], outputs=wanted).as_numpy(out_name)
        return float(np.max(np.abs(got[0] - ref[i % IMAGES])))

    infer(0)
    start.wait()
    latencies, mismatches, i = [], 0, 0
    t_end = time.monotonic() + seconds
    while i < requests and time.monotonic() < t_end:
        t0 = time.perf_counter()
        diff = infer(os.getpid() + i)
        latencies.append(time.perf_counter() - t0)
        mismatches += diff > 1e-4
        i += 1
    out.put((latencies, mismatches, time.perf_counter()))


def run(protocol, addr, args, images, ref, clients):
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=client_loop,
            args=(protocol, addr, args.model, images, ref, args.requests, args.seconds, start, out),
        )
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    results = [out.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    wall = max(r[2] for r in results) - t0
    return {
        "requests": len(lat),
        "mismatches": sum(r[1] for r in results),
        "throughput": len(lat) / wall,
        "p50_ms": 1e3 * lat[len(lat) // 2],
        "p99_ms": 1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def main():
    argv = sys.argv[1:]
    server_options = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="the tpsnet-serve executable")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--models-dir", default=os.path.join(ROOT, "models"))
    p.add_argument("--clients", default="1,16", help="comma-separated client counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=200, help="most timed requests per client")
    p.add_argument("--seconds", type=float, default=8.0, help="most seconds per run")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    args.server_options = server_options
    cifar = os.environ.get("CIFAR10_DIR") or sys.exit("set CIFAR10_DIR to the CIFAR-10 binary folder")
    images = load_images(cifar)

    import onnxruntime as ort

    manifest = next(
        os.path.join(args.models_dir, f)
        for f in sorted(os.listdir(args.models_dir))
        if re.fullmatch(re.escape(args.model) + r"-[0-9a-f]{8}\.json", f)
    )
    onnx = os.path.join(args.models_dir, json.load(open(manifest))["file"])
    sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: images})[0]

    levels = [int(c) for c in args.clients.split(",")]
    rows = {(c, proto): [] for c in levels for proto in ("rest", "grpc")}
    print(f"# load average at start: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    for r in range(args.rounds):
        proc, http, grpc = start_server(args)
        try:
            for c in levels:
                order = ("rest", "grpc") if r % 2 == 0 else ("grpc", "rest")
                for proto in order:
                    res = run(proto, http if proto == "rest" else grpc, args, images, ref, c)
                    rows[(c, proto)].append(res)
                    print(
                        f"round {r + 1} clients {c:3d} {proto:4s}: {res['throughput']:8.1f} req/s  "
                        f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                        f"({res['requests']} requests, {res['mismatches']} mismatches)",
                        flush=True,
                    )
        finally:
            stop_server(proc)
    print(f"# load average at end: {open('/proc/loadavg').read().split()[:3]}")
    print("\n| clients | REST req/s | gRPC req/s | gRPC / REST | REST p50 / p99 ms | gRPC p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    summary = []
    for c in levels:
        med = {
            proto: {k: statistics.median(x[k] for x in rows[(c, proto)]) for k in ("throughput", "p50_ms", "p99_ms")}
            for proto in ("rest", "grpc")
        }
        ratio = statistics.median(
            g["throughput"] / h["throughput"] for g, h in zip(rows[(c, "grpc")], rows[(c, "rest")])
        )
        rest, grpc = med["rest"], med["grpc"]
        print(
            f"| {c} | {rest['throughput']:.0f} | {grpc['throughput']:.0f} | {ratio:.2f}x | "
            f"{rest['p50_ms']:.2f} / {rest['p99_ms']:.2f} | {grpc['p50_ms']:.2f} / {grpc['p99_ms']:.2f} |"
        )
        summary.append({"clients": c, "rest": med["rest"], "grpc": med["grpc"], "grpc_over_rest": ratio})
    bad = sum(x["mismatches"] for v in rows.values() for x in v)
    print(f"\nmismatches with onnxruntime (> 1e-4): {bad}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "rounds": args.rounds, "levels": summary}, f, indent=2)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
