#!/usr/bin/env python3
"""Random architecture search on a Ray cluster: Ray Tune schedules, `train-zoo` trains.

The Rust binary owns everything about the search itself: `train-zoo search --emit-specs`
samples the trials (exact parameter counting, budget rejection, fixed seed), skips the
ones already in the ledger and prints the rest as JSON lines. Each Tune trial runs
`train-zoo trial --job <line>` as a child process and reports the per-epoch validation
accuracy it prints to Tune, so Tune's ASHA scheduler can stop weak trials early. A Tune
callback in this (driver) process appends one line per finished trial to the same
`<search-dir>/ledger.jsonl` the local search uses; `train-zoo search --report` then
writes the summary table and the plot.

Re-running the same command resumes: trials in the ledger are skipped, and a trial
that was interrupted continues from the checkpoint in `<search-dir>/trials/<id>/`.

    # one machine
    python search/ray_search.py --search-dir runs/search --trials 40 --epochs 30
    # a cluster started with `ray start --head` / `ray start --address=HEAD:6379`
    python search/ray_search.py --address auto --gpus-per-trial 1 --cpus-per-trial 4 ...

See docs/search.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def default_binary() -> str:
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "train-zoo"
        if p.exists():
            return str(p)
    found = shutil.which("train-zoo")
    return found or str(REPO / "target" / "release" / "train-zoo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Random architecture search under a parameter budget, run by Ray Tune.",
        epilog="Search options are those of `train-zoo search` (same meaning, same defaults).",
    )
    s = ap.add_argument_group("search (passed to `train-zoo search`)")
    s.add_argument("--search-dir", default="runs/search")
    s.add_argument("--trials", type=int, default=20)
    s.add_argument("--space", help="search space JSON (default: built-in)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--budget", type=int, help="parameter budget (strict upper bound)")
    s.add_argument("--recipe", default="paper", help="trials' recipe: paper, fast or a JSON file")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE")
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--train-limit", type=int)
    s.add_argument("--val-size", type=int, default=5000)
    s.add_argument("--data-dir", default=os.environ.get("CIFAR10_DIR"),
                   help="CIFAR-10 binary folder, same path on every node (default: $CIFAR10_DIR)")
    s.add_argument("--train-zoo", default=default_binary(),
                   help="train-zoo binary, same path on every node (default: target/{release,debug})")
    s.add_argument("--keep-checkpoints", action="store_true")
    s.add_argument("--top", type=int, default=10, help="rows in summary.md")
    s.add_argument("--color-by", default="blocks", help="hyperparameter colouring the plot")
    r = ap.add_argument_group("Ray")
    r.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    r.add_argument("--cpus-per-trial", type=float, default=1)
    r.add_argument("--gpus-per-trial", type=float, default=0)
    r.add_argument("--max-concurrent", type=int, default=0, help="0: as many as resources allow")
    r.add_argument("--no-early-stop", action="store_true", help="FIFO instead of ASHA")
    r.add_argument("--eta", type=float, default=3, help="ASHA reduction factor")
    r.add_argument("--grace-epochs", type=int, default=1, help="ASHA grace period")
    return ap.parse_args(argv)


def search_flags(a: argparse.Namespace) -> list[str]:
    """The flags that define the search, as `train-zoo search` takes them."""
    f = ["--search-dir", a.search_dir, "--trials", str(a.trials), "--seed", str(a.seed),
         "--recipe", a.recipe, "--epochs", str(a.epochs), "--val-size", str(a.val_size)]
    if a.space:
        f += ["--space", a.space]
    if a.budget is not None:
        f += ["--budget", str(a.budget)]
    if a.train_limit is not None:
        f += ["--train-limit", str(a.train_limit)]
    for s in a.sets:
        f += ["--set", s]
    return f


def pending_jobs(a: argparse.Namespace) -> list[dict]:
    out = subprocess.run([a.train_zoo, "search", *search_flags(a), "--emit-specs"],
                         stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"ray_search: `train-zoo search --emit-specs` failed (exit {out.returncode})")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def append_line(path: Path, record: dict) -> None:
    """One write of the whole line, then fsync: a crash leaves at most a torn last
    line, which the next `train-zoo search` drops."""
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# Prefix of the error a trainable raises when training itself failed (diverged): such a
# trial is recorded as `failed`. Any other error leaves it pending for the next run.
TRAINING_FAILED = "train-zoo trial: training failed:"


def make_trainable(binary: str, search_dir: Path, data_dir: str | None, gpus: float, cpus: float):
    from ray import tune

    def train_zoo_trial(config: dict) -> None:
        job = config["job"]
        plan = job["plan"]
        cmd = [binary, "trial", "--job", json.dumps(job, separators=(",", ":")),
               "--run-dir", str(search_dir / "trials" / plan["trial_id"]),
               "--device", "cuda" if gpus > 0 else "cpu",
               "--threads", str(max(1, int(cpus))), "--exit-on-stdin-eof"]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        # stdin stays open while this function lives; if Tune stops the trial and this
        # worker goes away, the child sees EOF and exits (its checkpoint is kept).
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            done = None
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("event") == "epoch":
                    tune.report({
                        "epoch": event["epoch"],
                        "val_acc": event["val_acc"],
                        "val_loss": event["val_loss"],
                        "train_loss": event["train_loss"],
                        "epoch_train_time_s": event["train_time_s"],
                    })
                elif event.get("event") == "done":
                    done = event
            rc = proc.wait()
            if done is not None and done.get("status") == "failed":
                raise RuntimeError(f"{TRAINING_FAILED} {plan['trial_id']}: {done.get('error')}")
            if rc != 0 or done is None:
                raise RuntimeError(f"train-zoo trial {plan['trial_id']} exited with status {rc} "
                                   "(see the trial's stderr in the Ray logs)")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    return train_zoo_trial


def trial_error_text(trial) -> str:
    """The error a trial raised. The driver-side copy (`error_file`) exists when the
    callback runs; the storage copy behind `get_error()` may not be synced yet."""
    local = getattr(trial, "error_file", None)
    if local and Path(local).exists():
        return Path(local).read_text(errors="replace")
    return str(trial.get_error() or "")


def ledger_callback(ledger: Path, search_dir: Path, keep_checkpoints: bool):
    from ray.tune import Callback

    class LedgerWriter(Callback):
        """Appends a ledger line when a trial completes, is stopped by the scheduler,
        or fails; driver-side, so one process writes the ledger."""

        def __init__(self):
            self.started: dict[str, float] = {}
            self.results: dict[str, list[dict]] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started.setdefault(trial.trial_id, time.time())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "val_acc" in result:
                self.results.setdefault(trial.trial_id, []).append(result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._write(trial, failed=False)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = trial_error_text(trial)
            plan = trial.config["job"]["plan"]
            if TRAINING_FAILED in error:
                line = next(l for l in error.splitlines() if TRAINING_FAILED in l)
                self._write(trial, failed=True, note=line[line.index(TRAINING_FAILED):])
            else:
                print(f"ray_search: {plan['trial_id']} errored outside training; it is not "
                      "recorded and runs again on the next invocation", file=sys.stderr)

        def _write(self, trial, failed: bool, note: str | None = None) -> None:
            plan = trial.config["job"]["plan"]
            history = sorted(self.results.get(trial.trial_id, []), key=lambda r: r["epoch"])
            # A trial restarted by Tune reports its epochs again: keep the last of each.
            by_epoch = {r["epoch"]: r for r in history}
            history = [by_epoch[e] for e in sorted(by_epoch)]
            done = len(history)
            if failed:
                status = "failed"
            elif done >= plan["epochs"]:
                status, note = "completed", None
            else:
                status = "stopped"
                note = f"stopped by Ray Tune's scheduler after epoch {done}"
            record = dict(plan)
            record.update({
                "status": status,
                "epochs_done": done,
                "val_acc": [r["val_acc"] for r in history],
                "val_loss": [r["val_loss"] for r in history],
                "final_val_acc": history[-1]["val_acc"] if history else None,
                "train_time_s": sum(r["epoch_train_time_s"] for r in history),
                "wall_time_s": time.time() - self.started.get(trial.trial_id, time.time()),
                "note": note,
                "runner": "ray",
                "finished_at": utc_now(),
            })
            append_line(ledger, record)
            ckpt = search_dir / "trials" / plan["trial_id"] / "checkpoint.ot"
            if not keep_checkpoints and ckpt.exists():
                ckpt.unlink()
            print(f"ray_search: {plan['trial_id']} {plan['summary']}: {status} after {done} "
                  f"epoch(s), val acc {record['final_val_acc']}", file=sys.stderr)

    return LedgerWriter()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not Path(a.train_zoo).exists():
        sys.exit(f"ray_search: {a.train_zoo} does not exist; build it with "
                 "`cargo build --release -p tpsnet-training` or pass --train-zoo")
    a.train_zoo = str(Path(a.train_zoo).resolve())
    search_dir = Path(a.search_dir).resolve()
    a.search_dir = str(search_dir)
    if a.data_dir:
        a.data_dir = str(Path(a.data_dir).resolve())
    jobs = pending_jobs(a)
    print(f"ray_search: {len(jobs)} trial(s) to run in {search_dir}", file=sys.stderr)

    if jobs:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        if a.address:
            ray.init(address=a.address)
        else:
            ray.init(num_cpus=a.num_cpus, include_dashboard=False)
        if a.no_early_stop:
            scheduler = FIFOScheduler()
        else:
            scheduler = ASHAScheduler(time_attr="epoch", max_t=a.epochs,
                                      grace_period=a.grace_epochs, reduction_factor=a.eta)
        trainable = tune.with_resources(
            make_trainable(a.train_zoo, search_dir, a.data_dir, a.gpus_per_trial, a.cpus_per_trial),
            {"cpu": a.cpus_per_trial, "gpu": a.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"job": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(
                metric="val_acc", mode="max", scheduler=scheduler,
                max_concurrent_trials=a.max_concurrent or None,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(search_dir / "ray"),
                callbacks=[ledger_callback(search_dir / "ledger.jsonl", search_dir,
                                           a.keep_checkpoints)],
                verbose=1,
            ),
        )
        tuner.fit()
        ray.shutdown()

    report = subprocess.run([a.train_zoo, "search", "--search-dir", a.search_dir, "--report",
                             "--top", str(a.top), "--color-by", a.color_by])
    return report.returncode


if __name__ == "__main__":
    sys.exit(main())
