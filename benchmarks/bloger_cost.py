"""BLOGER's training cost against plain training (TIGER), measured in one run.

Why: the ablation's "seconds" come from runs made at different times, beside different other jobs,
so their ratio mixes method and machine load. This times both in the same run, alternating: for
each method a child process starts ``genrec train`` on the project's data (a scratch root, so no
output of the project is touched), times ``--steps`` optimisation steps after ``--warmup`` and
every tokenizer step among them, and exits. BLOGER's tokenizer steps are made frequent
(``updates_per_epoch`` = ``--probe-updates``) only to time them; the epoch estimate then uses the
configured M' (``--updates-per-epoch``, 1 = the default): ``steps_per_epoch * step + M' * tokenizer step``
(validation, the same for every method, is left out).

    OMP_NUM_THREADS=1 python benchmarks/bloger_cost.py --data-root . --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import UPSTREAM_OUTPUT  # noqa: E402  (the data folders a train run reads, as the runner links them)

METHODS = {"tiger": None, "bloger (bilevel)": "bilevel", "bloger (joint)": "joint"}  # name: BLOGER mode


def child(args: argparse.Namespace) -> None:
    """Run ``genrec train`` with timing wrappers; print one JSON line and exit after the steps."""
    from genrec_core.methods import bloger
    from genrec_core.recommender import trainer as trainer_module

    steps: list[float] = []  # ordinary step seconds (a tokenizer step's time taken out)
    tokenizer_steps: list[float] = []
    inside: list[float] = []  # tokenizer steps within the current train step
    calls = [0]
    train_step, tokenizer_step = trainer_module.Trainer.train_step, bloger.BlogerMethod.tokenizer_step

    def timed_tokenizer_step(self, trainer, batch):
        start = time.perf_counter()
        out = tokenizer_step(self, trainer, batch)
        inside.append(time.perf_counter() - start)
        return out

    def timed_train_step(self, batch):
        inside.clear()
        start = time.perf_counter()
        out = train_step(self, batch)
        total = time.perf_counter() - start
        calls[0] += 1
        if calls[0] > args.warmup:
            steps.append(total - sum(inside))
            tokenizer_steps.extend(inside)
        if len(steps) >= args.steps:
            print(
                "RESULT "
                + json.dumps(
                    {
                        "step_s": statistics.median(steps),
                        "tokenizer_step_s": statistics.median(tokenizer_steps) if tokenizer_steps else None,
                        "tokenizer_steps": len(tokenizer_steps),
                        "steps_per_epoch": len(self.sampler),
                        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    }
                ),
                flush=True,
            )
            os._exit(0)
        return out

    trainer_module.Trainer.train_step = timed_train_step
    bloger.BlogerMethod.tokenizer_step = timed_tokenizer_step
    from genrec_core.cli import app

    overrides = [o for s in args.set for o in ("-S", s)]
    sys.argv = ["genrec", "train", "--root", args.child_root, "-S", "recommender.threads=1", *overrides]
    app()


def scratch_root(data_root: Path) -> Path:
    """A project root whose inputs link to ``data_root``'s and whose outputs are its own."""
    root = Path(tempfile.mkdtemp(prefix="bloger_cost_"))
    (root / "data").mkdir()
    for name in UPSTREAM_OUTPUT.values():
        source = (data_root / "data" / name).resolve()
        if not source.exists():
            raise SystemExit(f"{source} is missing: run the pipeline up to emit_ids first (dvc repro emit_ids)")
        (root / "data" / name).symlink_to(source)
    shutil.copy(data_root / "params.yaml", root / "params.yaml")
    return root


def measure(mode: str | None, args: argparse.Namespace) -> dict:
    root = scratch_root(Path(args.data_root))
    try:
        extra = [] if mode is None else ["recommender.method=bloger", f"recommender.method_params={{mode: {mode}, updates_per_epoch: {args.probe_updates}}}"]
        command = [sys.executable, __file__, "--child-root", str(root), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        command += [a for s in extra for a in ("--set", s)]
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise SystemExit(f"child failed ({' '.join(command)}):\n{out.stderr[-3000:]}")
        return json.loads(lines[-1][len("RESULT ") :])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT), help="a project root whose data/ holds processed, ids, tokenizer, embeddings")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per method, alternating")
    parser.add_argument("--probe-updates", type=int, default=80, help="BLOGER tokenizer steps per epoch while timing them")
    parser.add_argument("--updates-per-epoch", type=int, default=1, help="M' of the epoch estimate")
    parser.add_argument("--child-root", help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_root:
        return child(args)
    results: dict[str, list[dict]] = {name: [] for name in METHODS}
    for _ in range(args.repeats):
        for name, mode in METHODS.items():
            results[name].append(measure(mode, args))
    print(
        f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch 1 thread per child; "
        f"{args.steps} timed steps after {args.warmup}, {args.repeats} alternating measurements per method (medians)"
    )
    print(f"| method | s / step | s / tokenizer step | est. s / epoch (M'={args.updates_per_epoch:d}) | ratio to tiger | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    base = None
    for name, runs in results.items():
        step = statistics.median(r["step_s"] for r in runs)
        tok = [r["tokenizer_step_s"] for r in runs if r["tokenizer_step_s"] is not None]
        tok_s = statistics.median(tok) if tok else 0.0
        epoch = runs[0]["steps_per_epoch"] * step + args.updates_per_epoch * tok_s
        base = epoch if base is None else base
        rss = max(r["peak_rss_mb"] for r in runs)
        tok_cell = f"{tok_s:.2f}" if tok else "-"
        print(f"| {name} | {step:.3f} | {tok_cell} | {epoch:.0f} | {epoch / base:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
