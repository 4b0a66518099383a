"""Training beside another busy process: seconds per step at 2 threads, with and without the fix.

    python benchmarks/oversubscription.py [--steps 8] [--warmup 2] [--out reports/benchmarks/oversubscription]

A user measured a default ml-100k run (``recommender.threads: 0`` = one thread per core = 2 on
this machine) started beside one other one-thread training job: 907 s for its first epoch against
~50 s alone. torch's OpenMP threads spin while they wait for each other; with more busy threads
than cores the spinning thread holds the core the thread it waits for needs.

Each variant runs in a fresh process (the OpenMP runtime reads its environment once, when torch
starts), timing ``--steps`` packed training steps of the default decoder-only model (the project's
params.yaml recommender section; ``benchmarks/train_step_speed.py``'s synthetic ml-100k-like
data and trainer) after ``--warmup``:

- ``alone``: nothing else of ours running (other people's jobs may be: the load is reported);
- ``+ busy``: beside a competitor, a one-thread training loop of the same model in another process
  (started first; its steps during the timed window are counted, to show what it loses);
- ``fix``: the worker imports ``genrec_core.cli`` before torch, as the ``genrec`` command does,
  which sets ``OMP_WAIT_POLICY=PASSIVE`` (``genrec_core.runtime.OPENMP_ENV_DEFAULTS``) where the
  environment does not set it; ``default``: torch's own start-up (libgomp's default wait);
- ``1 thread``: the other way out, fewer threads than cores.

The un-contended 2-thread rows run ``--repeats`` times, alternating, so the fix's cost there (sleeping
threads take a few microseconds to wake) is compared within one run. Slowdown = seconds per step
against ``alone, default`` at 2 threads.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    """One variant in this fresh process: prints one JSON line (seconds per timed step, the window)."""
    if args.fix:
        import genrec_core.cli  # noqa: F401  (what `genrec` does first: the OpenMP environment defaults)
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from benchmarks.train_step_speed import default_params, model_trainer, random_ids, sliding_examples

    torch.set_num_threads(args.threads)
    base = default_params(args.params)
    vocab, tokens = random_ids(args.items, 3, args.codebook)
    n_steps = args.steps + args.warmup
    examples = sliding_examples(256 * (n_steps + 2), args.items, 106, 20, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = model_trainer("decoder_only", base, vocab, tokens, examples, tmp, 256, seed=args.seed)
        batches = list(trainer.sampler)
        if args.competitor:  # until killed: one line (wall-clock time) per step
            with open(args.competitor, "a", encoding="utf-8") as log:
                while True:
                    for index in batches:
                        trainer.train_step(trainer.method.collate(trainer, examples, index, None))
                        log.write(f"{time.time()}\n")
                        log.flush()
        times, start = [], None
        for i, index in enumerate(batches[:n_steps]):
            if i == args.warmup:
                start = time.time()
            t0 = time.perf_counter()
            trainer.train_step(trainer.method.collate(trainer, examples, index, None))
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        print(
            json.dumps(
                {
                    "median": float(np.median(times)),
                    "mean": float(np.mean(times)),
                    "start": start,
                    "end": time.time(),
                    "threads": torch.get_num_threads(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                }
            )
        )


def child_env(threads: int) -> dict[str, str]:
    """The environment of a variant: ours without any OpenMP wait settings (the fix sets its own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def base_cmd(args) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--items",
        str(args.items),
        "--codebook",
        str(args.codebook),
        "--params",
        args.params,
    ]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_variant(args, threads: int, fix: bool, busy: bool, competitor_log: Path) -> dict:
    cmd = base_cmd(args) + ["--threads", str(threads)] + (["--fix"] if fix else [])
    before = load()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=child_env(threads), capture_output=True, text=True, cwd=ROOT, timeout=args.timeout)
    if out.returncode:
        raise SystemExit(f"variant failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(load_before=before, wall=time.perf_counter() - t0, threads=threads, fix=fix, busy=busy)
    if busy:
        stamps = [float(x) for x in competitor_log.read_text().split()]
        inside = [t for t in stamps if result["start"] <= t <= result["end"]]
        result["competitor_steps_per_s"] = len(inside) / (result["end"] - result["start"])
    print(json.dumps(result), flush=True)
    return result


def start_competitor(args, log: Path) -> subprocess.Popen:
    log.write_text("")
    cmd = base_cmd(args) + ["--threads", "1", "--competitor", str(log), "--seed", "1"]
    proc = subprocess.Popen(cmd, env=child_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while len(log.read_text().split()) < 3:  # running steps, past its start-up
        if proc.poll() is not None:
            raise SystemExit(f"competitor failed:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise SystemExit("competitor did not start within 120 s")
        time.sleep(0.5)
    return proc


def competitor_alone(log: Path, seconds: float) -> float:
    n0, t0 = len(log.read_text().split()), time.time()
    time.sleep(seconds)
    return (len(log.read_text().split()) - n0) / (time.time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each un-contended 2-thread variant (alternating)")
    ap.add_argument("--items", type=int, default=1349)
    ap.add_argument("--codebook", type=int, default=64)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--timeout", type=int, default=240, help="seconds one variant may take")
    ap.add_argument("--out", default=None, help="write <out>.md")
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--fix", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--competitor", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    t_all = time.perf_counter()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.processor())
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{cpu}, {os.cpu_count()} CPUs; uptime: {uptime}", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "competitor.log"
        for _ in range(args.repeats):  # un-contended, alternating
            rows.append(run_variant(args, 2, False, False, log))
            rows.append(run_variant(args, 2, True, False, log))
        proc = start_competitor(args, log)
        try:
            alone_rate = competitor_alone(log, 8.0)
            print(f"competitor alone: {alone_rate:.2f} steps/s", flush=True)
            rows.append(run_variant(args, 2, False, True, log))
            rows.append(run_variant(args, 2, True, True, log))
            rows.append(run_variant(args, 1, False, True, log))
            alone_after = competitor_alone(log, 8.0)
            print(f"competitor alone again: {alone_after:.2f} steps/s", flush=True)
        finally:
            proc.kill()
            proc.wait()
    comp_alone = (alone_rate + alone_after) / 2

    def key(r):
        return (r["threads"], r["fix"], r["busy"])

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    base = statistics.median(r["median"] for r in groups[(2, False, False)])
    lines = [
        f"| threads | beside a 1-thread job | OpenMP wait | s/step (median) | runs | slowdown | competitor steps/s (alone: {comp_alone:.2f}) | load before |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for k, rs in groups.items():
        threads, fix, busy = k
        s = statistics.median(r["median"] for r in rs)
        policy = "PASSIVE (fix: `genrec_core.cli`)" if fix else "default (unset)"
        comp = (
            f"{statistics.mean(r['competitor_steps_per_s'] for r in rs):.2f} ({statistics.mean(r['competitor_steps_per_s'] for r in rs) / comp_alone:.0%})"
            if busy
            else "-"
        )
        per_run = ", ".join(f"{r['median']:.3f}" for r in rs)
        lines.append(
            f"| {threads} | {'yes' if busy else 'no'} | {policy} | {s:.3f}"
            + (f" ({per_run})" if len(rs) > 1 else "")
            + f" | {len(rs)} | {s / base:.2f}x | {comp} | {' / '.join(r['load_before'] for r in rs)} |"
        )
    table = "\n".join(lines)
    total = time.perf_counter() - t_all
    print(table)
    print(f"total {total:.0f} s")
    if args.out:
        text = (
            "# Training beside another busy process (OpenMP oversubscription)\n\n"
            f"Command: `python benchmarks/oversubscription.py {' '.join(sys.argv[1:])}`\n\n"
            f"Machine: {cpu}, {os.cpu_count()} CPUs; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; `uptime` at the start: `{uptime}`; "
            f"total {total:.0f} s.\n\n"
            f"Each row: a fresh process timing {args.steps} packed training steps (after {args.warmup}) of the default decoder-only model "
            "(params.yaml's recommender section, synthetic ml-100k-like data: benchmarks/train_step_speed.py), batch 256. "
            "'beside a 1-thread job': a competing one-thread training loop of the same model runs in another process; its steps per second "
            "during the timed window are against its rate with nothing of ours running (measured before and after). "
            "Slowdown: against 2 threads, alone, default wait. Load before: /proc/loadavg's 1/5/15-minute load when the row started "
            "(other people's jobs on the machine count in it).\n\n" + table + "\n"
        )
        Path(args.out).with_suffix(".md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
