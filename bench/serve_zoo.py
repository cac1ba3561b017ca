"""Several models in one tpsnet-serve sharing one CPU budget: one model busy vs two busy
at once, same server, same thread budget. C client threads per busy model send single
real CIFAR-10 test images as Triton binary tensors (keep-alive connections) for S
seconds; prints total throughput and per-request p50/p99 latency for each step, with
the load average, and each model's own requests per second. A third step runs the two models on a server whose budget is
oversubscribed on purpose (--cpu-threads far above the cores: each model's batch runs
with T threads at the same time as the other's), for comparison. Then the memory step: a server started with one model loads
each model alone in a fresh server, then every model (--all), reading the server's RSS
after a few requests.

  python bench/serve_zoo.py --server target/release/tpsnet-serve
      [--models resnet20,airnet-short] [--clients 4] [--seconds 8] [--memory]
      [--server-arg=ARG]...   (to both servers, e.g. --server-arg=--spin-us=0)

Bounded: every step stops after --seconds; the whole run takes about 6 × --seconds plus
start-ups (and about half a minute for --memory). Needs CIFAR10_DIR.
"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def images(cifar, n=64):
    raw = np.fromfile(os.path.join(cifar, "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)
    return (raw[:n, 1:].reshape(n, 3, 32, 32).astype(np.float32) / 255.0).copy()


def start(server, args):
    cmd = [server, "--host", "127.0.0.1", "--port", "0", "--models-dir", os.path.join(ROOT, "models")]
    p = subprocess.Popen(cmd + args, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:
        lines.append(line.rstrip())
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            host, port = m.group(1).rsplit(":", 1)
            return p, (host, int(port)), lines
    raise SystemExit(f"server did not start: {lines}")


def body(x):
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    ).encode()
    return header, header + x.tobytes()


def client(addr, model, payloads, until, latencies, errors, done):
    conn = http.client.HTTPConnection(*addr, timeout=30)
    i = 0
    while time.monotonic() < until:
        header, data = payloads[i % len(payloads)]
        i += 1
        t = time.perf_counter()
        try:
            conn.request("POST", f"/v2/models/{model}/infer", data,
                         {"Inference-Header-Content-Length": str(len(header))})
            r = conn.getresponse()
            r.read()
            ok = r.status == 200
        except OSError:
            ok = False
            conn = http.client.HTTPConnection(*addr, timeout=30)
        if ok:
            latencies.append(time.perf_counter() - t)
            done[model] = done.get(model, 0) + 1
        else:
            errors.append(1)


def step(addr, models, payloads, clients, seconds):
    until = time.monotonic() + seconds
    lat, err, done = [], [], {}
    threads = [threading.Thread(target=client, args=(addr, m, payloads, until, lat, err, done))
               for m in models for _ in range(clients)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.monotonic() - t
    lat.sort()
    return {
        "models": "+".join(models), "requests": len(lat), "errors": len(err),
        "req_per_s": len(lat) / took,
        "p50_ms": 1e3 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        "load": os.getloadavg()[0],
        "per_model": ", ".join(f"{m} {done.get(m, 0) / took:.0f}" for m in models),
    }


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory(server, x):
    """RSS of a fresh server with each model alone (after a few requests), and of one
    server with every model loaded (--all)."""
    names = sorted({json.load(open(os.path.join(ROOT, "models", f)))["name"]
                    for f in os.listdir(os.path.join(ROOT, "models")) if f.endswith(".json")})
    payload = [body(x[:1])]
    for args, label in [(["--model", n], f"`{n}`") for n in names] + [(["--all"], "`--all`")]:
        p, addr, _ = start(server, args)
        try:
            busy = [n for n in names] if args == ["--all"] else [args[1]]
            step(addr, busy, payload, 1, 0.3)  # a few requests: each session's arena
            print(f"| {label} | {rss_kib(p.pid) / 1024:.0f} |")
        finally:
            p.terminate()
            p.wait(30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.path.join(ROOT, "target/release/tpsnet-serve"))
    ap.add_argument("--models", default="resnet20,airnet-short")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--threads", type=int, default=0, help="per batch (default: the logical cores)")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="an extra server option for both servers, e.g. --server-arg=--spin-us=0")
    a = ap.parse_args()
    x = images(os.environ["CIFAR10_DIR"])
    payloads = [body(x[i:i + 1]) for i in range(len(x))]
    models = a.models.split(",")
    cores = os.cpu_count()
    model_args = [arg for m in models for arg in ("--model", m)]
    print(f"CPU: {cpu_name()}, {cores} logical cores; load average {os.getloadavg()}; "
          f"server options {' '.join(a.server_arg) or '(defaults)'}")
    print("| server | busy models | requests | errors | req/s (all) | req/s per model | p50 ms | p99 ms | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    threads = a.threads or cores
    over = 2 * cores * threads
    configs = [
        (f"budget: --threads {threads} --cpu-threads {cores}",
         ["--threads", str(threads), "--cpu-threads", str(cores)]),
        (f"oversubscribed: --threads {threads} --cpu-threads {over}",
         ["--threads", str(threads), "--cpu-threads", str(over)]),
    ]
    for label, extra in configs:
        p, addr, _ = start(a.server, model_args + extra + a.server_arg)
        try:
            step(addr, models, payloads, 1, 1.0)  # warm-up
            runs = [models[:1], models[1:], models]
            for busy in runs:
                r = step(addr, busy, payloads, a.clients, a.seconds)
                print(f"| {label} | {r['models']} | {r['requests']} | {r['errors']} | "
                      f"{r['req_per_s']:.0f} | {r['per_model']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['load']:.1f} |")
        finally:
            p.terminate()
            p.wait(30)
    if a.memory:
        print("\n| served | RSS MiB |\n|---|---|")
        memory(a.server, x)


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
