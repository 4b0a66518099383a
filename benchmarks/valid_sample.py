"""Validating on a seeded sample of users: does it pick the epoch validation on all users picks?

    python benchmarks/valid_sample.py --root PROJECT_ROOT [--sample 5000] [--epochs 10] [--set key=value ...] \
        [--out reports/benchmarks/valid_sample]

``PROJECT_ROOT`` holds a built pipeline up to ``emit_ids`` (data/processed, data/embeddings,
data/tokenizer, data/ids) and its params.yaml; the run trains in a scratch root whose ``data/``
inputs link to those (nothing under ``PROJECT_ROOT`` is written). One training run of ``--epochs``
epochs with the root's params (plus ``--set`` overrides), validating on every user
(``max_eval_users: 0``) and without early stopping (``patience`` > epochs), while a validation
observer (``recommender.trainer.VALIDATION_OBSERVERS``) keeps every user's target rank at every
epoch. The sample's metric at an epoch is then the same ranks restricted to the sample's users:
exactly what validating on the sample alone would give, from the same pass.

Reported: the per-epoch metric on all users and on the sample (``--sample`` users seeded by
``--sample-seed``, by default the ``auto`` sample's seed: the users ``auto`` would pick when
``--sample`` is ``AUTO_EVAL_USERS``); the epoch each selects (``select_metric``, the first best, as
the trainer keeps best.pt); what the all-user metric is at the sample's choice (the price of
sampling); and over ``--draws`` other seeded samples of the same size, how often the choice agrees
and the mean/worst price, next to the standard error sd / sqrt(n) x sqrt(1 - n/N) of the sample
metric and of the sampled difference between the two best epochs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from genrec_core.runtime import set_openmp_env_defaults  # noqa: E402

set_openmp_env_defaults()  # as the genrec command does, before torch starts

import numpy as np  # noqa: E402

INPUTS = ("processed", "embeddings", "tokenizer", "ids")  # benchmarks.runs.UPSTREAM_OUTPUT's folders


def scratch_root(data_root: Path, work: Path) -> Path:
    """``work`` as a project root whose data inputs link to ``data_root``'s, outputs its own."""
    if work.exists():
        shutil.rmtree(work)
    (work / "data").mkdir(parents=True)
    for name in INPUTS:
        source = (data_root / "data" / name).resolve()
        if not source.exists():
            raise SystemExit(f"{source} is missing: build the pipeline up to emit_ids first (dvc repro emit_ids in {data_root})")
        (work / "data" / name).symlink_to(source, target_is_directory=True)
    shutil.copy(data_root / "params.yaml", work / "params.yaml")
    return work


def train_recording(root: Path, overrides: list[str]) -> tuple[dict[int, np.ndarray], dict, list[dict]]:
    """``genrec train`` in ``root`` with ``overrides``, in this process (as the pipeline runs it:
    params, seeding, the train stage); ({epoch: per-user ranks}, summary, eval_times)."""
    from genrec_core.cli import app
    from genrec_core.recommender import trainer as trainer_mod

    ranks: dict[int, np.ndarray] = {}
    times: list = []  # the trainer

    def observer(trainer, r):  # after each validation (trainer.state.epoch: the epochs done)
        ranks[trainer.state.epoch] = r
        times[:] = [trainer]

    argv = sys.argv
    sys.argv = ["genrec", "train", "--root", str(root), "--params", str(root / "params.yaml"), *(a for o in overrides for a in ("-S", o))]
    trainer_mod.VALIDATION_OBSERVERS.append(observer)
    try:
        app()
    except SystemExit as exc:  # typer exits when the command returns
        if exc.code:
            raise
    finally:
        trainer_mod.VALIDATION_OBSERVERS.remove(observer)
        sys.argv = argv
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    eval_times = times[-1].state.eval_times if times else []
    return ranks, summary, eval_times


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    from genrec_core.evaluation.metrics import per_user_metrics

    k = int(metric.split("@")[1])
    return per_user_metrics(ranks, (k,))[metric]


def first_best(values: list[float]) -> int:
    """Index of the first maximum (the trainer replaces best.pt only on a strictly better score)."""
    return int(np.argmax(np.asarray(values)))


def main() -> None:
    from genrec_core.recommender.data import seeded_subset
    from genrec_core.recommender.trainer import AUTO_EVAL_SAMPLE_SEED, AUTO_EVAL_USERS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="project root with the pipeline built up to emit_ids (and its params.yaml)")
    ap.add_argument("--sample", type=int, default=AUTO_EVAL_USERS, help=f"sampled users (default: auto's {AUTO_EVAL_USERS})")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--sample-seed", type=int, default=AUTO_EVAL_SAMPLE_SEED, help="the reported sample's seed (default: auto's)")
    ap.add_argument("--draws", type=int, default=1000, help="other seeded samples scored from the same ranks")
    ap.add_argument("--threads", type=int, default=1, help="recommender.threads of the run")
    ap.add_argument("--set", action="append", default=[], help="a params override (repeatable), e.g. recommender.seed=43")
    ap.add_argument("--work-dir", default=None, help="scratch project root (default: a temporary folder, removed after)")
    ap.add_argument("--out", default=None, help="write <out>.md (and <out>.json)")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    t_all = time.perf_counter()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="valid_sample_"))
    root = scratch_root(Path(args.root).resolve(), work)
    overrides = [
        *args.set,
        f"recommender.epochs={args.epochs}",
        f"recommender.patience={args.epochs + 1}",
        "recommender.max_eval_users=0",
        f"recommender.threads={args.threads}",
    ]
    try:
        ranks, summary, eval_times = train_recording(root, overrides)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    from genrec_core.config import load_params

    metric = load_params(Path(args.root) / "params.yaml", overrides).recommender.select_metric
    epochs = sorted(ranks)
    n_users = len(ranks[epochs[0]])
    n = min(args.sample, n_users)
    scores = np.stack([per_user(ranks[e], metric) for e in epochs])  # [E, N]
    hits = np.stack([per_user(ranks[e], "hit@10") for e in epochs])
    full = scores.mean(axis=1)
    sample = seeded_subset(n_users, n, args.sample_seed)
    sampled = scores[:, sample].mean(axis=1)
    best_full, best_sample = first_best(full.tolist()), first_best(sampled.tolist())

    # other samples of the same size: agreement and the all-user metric lost by the sample's choice
    choices = np.array([first_best(scores[:, seeded_subset(n_users, n, 10_000 + d)].mean(axis=1).tolist()) for d in range(args.draws)])
    loss = full[best_full] - full[choices]
    fpc = math.sqrt(max(0.0, 1 - n / n_users))
    sd = float(scores[best_full].std(ddof=1))
    second = int(np.argsort(-full, kind="stable")[1]) if len(epochs) > 1 else best_full
    sd_diff = float((scores[best_full] - scores[second]).std(ddof=1))

    val_seconds = []
    prev = 0.0
    for t in eval_times:
        val_seconds.append(t["seconds"] - prev - t["train_seconds"])
        prev = t["seconds"]
    train_s = float(np.mean([t["train_seconds"] for t in eval_times])) if eval_times else float("nan")
    val_s = float(np.mean(val_seconds)) if val_seconds else float("nan")

    lines = [f"| epoch | all {n_users} users {metric} | sample {n} {metric} | sample - all | all hit@10 | sample hit@10 |", "|---:|---:|---:|---:|---:|---:|"]
    for i, e in enumerate(epochs):
        mark = (" (best: all)" if i == best_full else "") + (" (best: sample)" if i == best_sample else "")
        lines.append(f"| {e}{mark} | {full[i]:.4f} | {sampled[i]:.4f} | {sampled[i] - full[i]:+.4f} | {hits[i].mean():.4f} | {hits[i, sample].mean():.4f} |")
    table = "\n".join(lines)
    facts = [
        f"Selected epoch ({metric}, first best): all users {epochs[best_full]}, the sample {epochs[best_sample]}; "
        f"all-user {metric} at the sample's choice {full[best_sample]:.4f} against {full[best_full]:.4f} at the best "
        f"({full[best_sample] - full[best_full]:+.4f}, {(full[best_sample] - full[best_full]) / full[best_full]:+.1%}).",
        f"Over {args.draws} other seeded samples of {n}: the same epoch as all users in {np.mean(choices == best_full):.0%}; all-user {metric} lost by "
        "the sample's choice: "
        f"mean {loss.mean():.4f} ({loss.mean() / full[best_full]:.1%}), 95th percentile {np.percentile(loss, 95):.4f}, worst {loss.max():.4f} "
        f"({loss.max() / full[best_full]:.1%}); "
        f"epochs chosen: {', '.join(f'{epochs[i]}: {int(c)}' for i, c in enumerate(np.bincount(choices, minlength=len(epochs))) if c)}.",
        f"Standard error of the sample's {metric} at the best epoch: sd {sd:.4f} / sqrt({n}) x sqrt(1 - {n}/{n_users}) = {sd / math.sqrt(n) * fpc:.4f} "
        f"({sd / math.sqrt(n) * fpc / full[best_full]:.1%} of {full[best_full]:.4f}); of the sampled difference between the two best epochs "
        f"({epochs[best_full]}, {epochs[second]}): "
        f"sd {sd_diff:.4f} -> {sd_diff / math.sqrt(n) * fpc:.4f}, against an all-user difference of {full[best_full] - full[second]:.4f}.",
        f"At {AUTO_EVAL_USERS} sampled users the same per-user sd gives a standard error of {sd / math.sqrt(AUTO_EVAL_USERS):.4f} "
        f"({sd / math.sqrt(AUTO_EVAL_USERS) / full[best_full]:.1%} of the mean) "
        "before the finite-population factor (Beauty, 5,000 of 22,363: x 0.88).",
        f"Time per epoch: training {train_s:.0f} s, validation on all {n_users} users {val_s:.0f} s (the sample's would be about "
        f"{val_s * n / n_users:.0f} s: beam search costs per user).",
    ]
    print(table)
    print("\n".join(facts))
    total = time.perf_counter() - t_all
    if args.out:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.processor())
        text = (
            "# Validation on a seeded sample of users\n\n"
            f"Command: `python benchmarks/valid_sample.py {' '.join(sys.argv[1:])}`\n\n"
            f"Data: {args.root} ({n_users} validation users); params: its params.yaml with {' '.join(overrides)}; model {summary.get('model_kind', 'tiger')} "
            f"({summary.get('params_count')} params), seed {load_params(Path(args.root) / 'params.yaml', overrides).seed}. "
            f"Machine: {cpu}, {os.cpu_count()} CPUs, {args.threads} thread(s); `uptime` at the start: `{uptime}`; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, total {total:.0f} s.\n\n"
            f"One training run validating every user at every epoch; the sample's metric is the same pass's per-user results restricted to "
            f"{n} users seeded by {args.sample_seed} (`recommender.trainer.eval_user_index`'s draw).\n\n"
            + table
            + "\n\n"
            + "\n".join(f"- {f}" for f in facts)
            + "\n"
        )
        Path(args.out).with_suffix(".md").write_text(text, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(
            json.dumps(
                {
                    "epochs": epochs,
                    "metric": metric,
                    "users": n_users,
                    "sample": n,
                    "sample_seed": args.sample_seed,
                    "all": full.tolist(),
                    "sampled": sampled.tolist(),
                    "best_epoch_all": epochs[best_full],
                    "best_epoch_sample": epochs[best_sample],
                    "draws": args.draws,
                    "draws_same_epoch": float(np.mean(choices == best_full)),
                    "draws_loss_mean": float(loss.mean()),
                    "draws_loss_max": float(loss.max()),
                    "sd_per_user": sd,
                    "train_seconds_per_epoch": train_s,
                    "valid_seconds_per_epoch": val_s,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
