"""Learning curves: validation NDCG@10 against epochs and wall-clock seconds, each run trained to early stopping.

Usage (repository root, venv active, after ``dvc repro`` has built data/processed, data/embeddings,
data/tokenizer and data/ids):

    python benchmarks/convergence.py                     # the four default runs, 100 epochs max, patience 5
    python benchmarks/convergence.py --runs tiger-items=recommender.encoder_input=items \\
        sasrec-bce=recommender.model=sasrec,recommender.loss=bce --epochs 100 --patience 5 \\
        --jobs 2 --threads 1 --work-dir /tmp/genrec_convergence --out reports/benchmarks/convergence
    python benchmarks/convergence.py --runs sasrec-bce=recommender.model=sasrec,recommender.loss=bce --append
                                                         # one more run; the others come from <out>.json
    python benchmarks/convergence.py --runs tiger-items=recommender.encoder_input=items --epochs 1 \\
        --set recommender.max_eval_users=100 --out /tmp/conv_smoke   # smoke check

Default runs: ``tiger-items`` (recommender.encoder_input=items), ``tiger-tokens``
(encoder_input=tokens), ``sasrec-ce`` and ``gru4rec-ce`` (model=sasrec/gru4rec, loss=ce). Each
run is ``genrec train`` in its own scratch workspace ``<work-dir>/<name>`` (benchmarks/runs.py) with
``-S`` overrides: the run's, then ``recommender.epochs=<--epochs> recommender.patience=<--patience>
recommender.eval_every=1``, then every ``--set``. A finished workspace with the same overrides is
reused (``--force`` retrains).

Per run, from reports/train/valid_curve.csv and summary.json: the plateau (best validation
NDCG@10), the epoch and seconds of the first evaluation reaching 95% of it, total seconds
(training + validation), epochs run, whether it stopped early, and training samples/s
(train_examples x epochs timed / the sum of those epochs' train_seconds, validation excluded).

Writes ``<out>.md`` (table, machine, command), ``<out>.csv`` (every curve, long format),
``<out>.png`` (NDCG@10 vs seconds and vs epoch) and ``<out>.json`` (the per-run records
``--append`` reads back, so earlier runs stay in the table without their workspaces).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runs import RunSpec, command_line, machine_line, parse_spec, read_curve, report_failures, run_all  # noqa: E402

DEFAULT_RUNS = (
    "tiger-items=recommender.encoder_input=items",
    "tiger-tokens=recommender.encoder_input=tokens",
    # baselines keep dropout 0.1 and whole histories (TIGER's CPU default is dropout 0, history_dropout 0.2)
    "sasrec-ce=recommender.model=sasrec,recommender.loss=ce,recommender.dropout=0.1,recommender.history_dropout=0.0",
    "gru4rec-ce=recommender.model=gru4rec,recommender.loss=ce,recommender.dropout=0.1,recommender.history_dropout=0.0",
)
METRIC = "ndcg@10"
CURVE_COLUMNS = ("run", "epoch", "step", "seconds", "train_seconds", "hit@1", "ndcg@1", "hit@5", "ndcg@5", "hit@10", "ndcg@10")
FRACTION = 0.95


def samples_per_second(train_examples: int, epochs: int, train_seconds: float) -> float:
    """Training throughput: examples seen (``train_examples`` per epoch) per second of training."""
    return train_examples * epochs / train_seconds if train_seconds > 0 else float("nan")


def curve_stats(curve: list[dict[str, float]], train_examples: int, fraction: float = FRACTION, metric: str = METRIC) -> dict[str, Any]:
    """Plateau (max of ``metric``), the first evaluation reaching ``fraction`` of it (epoch,
    seconds), and samples/s over the epochs in the curve (one row per evaluated epoch)."""
    if not curve:
        return {"plateau": float("nan"), "epoch_95": None, "seconds_95": float("nan"), "samples_per_s": float("nan")}
    plateau = max(r[metric] for r in curve)
    first = next(r for r in curve if r[metric] >= fraction * plateau)
    train_s = sum(r.get("train_seconds", 0.0) for r in curve)
    return {
        "plateau": plateau,
        "epoch_95": int(first["epoch"]),
        "seconds_95": float(first["seconds"]),
        "samples_per_s": samples_per_second(train_examples, len(curve), train_s),
    }


def record_of(result) -> dict[str, Any]:
    """What the tables need from one finished run (kept in <out>.json for --append)."""
    s = result.summary
    return {
        "test": test_metrics(result.root),
        "run": result.spec.name,
        "overrides": result.spec.info["own_overrides"],
        "all_overrides": result.spec.overrides,
        "threads": result.record.get("threads"),
        "started": result.record.get("started", ""),
        "command": result.record.get("command", ""),
        "workspace": str(result.root),
        "summary": {k: s.get(k) for k in ("train_examples", "epochs", "best_epoch", "best_valid_ndcg@10", "stopped_early", "seconds", "params_count")},
        "curve": result.curve,
    }


def record_of_dir(text: str) -> dict[str, Any]:
    """``NAME=DIR``: the record of a run trained elsewhere (a converged.py workspace, a hand-run
    ``genrec train --root DIR``): its curve and summary are read, nothing is trained. Its overrides
    come from DIR/overrides.json (benchmarks/runs.py workspaces) or DIR/overrides.txt (one line describing the run)."""
    name, sep, folder = text.partition("=")
    root = Path(folder)
    if not sep or not (root / "reports" / "train" / "summary.json").exists():
        raise SystemExit(f"error: --include {text!r}: expected NAME=DIR with DIR/reports/train/summary.json")
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text(encoding="utf-8"))
    record = json.loads((root / "overrides.json").read_text(encoding="utf-8")) if (root / "overrides.json").exists() else {}
    overrides = record.get("overrides") or ([(root / "overrides.txt").read_text(encoding="utf-8").strip()] if (root / "overrides.txt").exists() else [])
    return {
        "run": name,
        "overrides": overrides,
        "all_overrides": overrides,
        "threads": record.get("threads", summary.get("threads")),
        "started": record.get("started", ""),
        "command": record.get("command", f"genrec train --root {root} " + " ".join(f"-S {o}" for o in overrides)),
        "workspace": str(root),
        "summary": {k: summary.get(k) for k in ("train_examples", "epochs", "best_epoch", "best_valid_ndcg@10", "stopped_early", "seconds", "params_count")},
        "curve": read_curve(root / "reports" / "train" / "valid_curve.csv"),
        "test": test_metrics(root),
    }


def test_metrics(root: Path) -> dict[str, float]:
    """Test hit@10 / ndcg@10 of the run's selected model, when its evaluate stage ran (reports/metrics.json)."""
    path = root / "reports" / "metrics.json"
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text(encoding="utf-8"))
    return {k: float(metrics[k]) for k in ("hit@10", "ndcg@10") if k in metrics}


def row_of(rec: dict[str, Any]) -> dict[str, Any]:
    s = rec["summary"]
    stats = curve_stats(rec["curve"], int(s.get("train_examples") or 0))
    test = rec.get("test") or {}
    return {
        "run": rec["run"],
        "overrides": ",".join(rec["overrides"]),
        **stats,
        "best_epoch": s.get("best_epoch"),
        "seconds": s.get("seconds"),
        "test_hit@10": test.get("hit@10"),
        "test_ndcg@10": test.get("ndcg@10"),
        "curve": rec["curve"],
        "epochs": s.get("epochs"),
        "stopped_early": s.get("stopped_early"),
        "threads": rec.get("threads"),
        "started": rec.get("started", "")[:16].replace("T", " "),
    }


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(rows: list[dict[str, Any]], commands: list[str], machine: str, failures: list[str], args) -> str:
    lines = [
        "# Convergence: validation NDCG@10 until early stopping",
        "",
        f"Command: `{commands[0]}`",
        *[f"Runs kept from an earlier invocation (`--append`): `{c}`" for c in commands[1:]],
        "",
        machine,
        "",
        (
            f"Each run trained here: `genrec train` on ml-100k data of the project root, params.yaml plus the run's overrides, "
            f"`recommender.epochs={args.epochs} recommender.patience={args.patience} recommender.eval_every=1`"
            + (" and " + " ".join(f"`{s}`" for s in args.set) if args.set else "")
            + ". "
            if args.runs
            else ""
        )
        + ("Runs included from elsewhere (`--include`): read from their workspaces, overrides as listed. " if args.include else "")
        + "Plateau: best validation NDCG@10; 95%: the first evaluation reaching 95% of it; seconds: cumulative "
        "training + validation wall-clock; samples/s: training examples per second of training alone.",
        "",
        "**Timings compare only within one run of the benchmark** (same machine, load, threads and parallel runs); "
        "a row reused or appended from another invocation keeps that invocation's timings (see `started`).",
        "",
        "| run | overrides | plateau N@10 | best epoch | 95%: epoch | 95%: seconds | total seconds | epochs | stopped early | train samples/s | "
        "threads | test H@10 | test N@10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | `{r['overrides']}` | {_f(r['plateau'], '.4f')} | {r['best_epoch']} | {r['epoch_95']} | {_f(r['seconds_95'], '.0f')} | "
            f"{_f(r['seconds'], '.0f')} | {r['epochs']} | {'yes' if r['stopped_early'] else 'no'} | {_f(r['samples_per_s'], '.0f')} | {r['threads']} | "
            f"{_f(r['test_hit@10'], '.4f')} | {_f(r['test_ndcg@10'], '.4f')} |"
        )
    longest = max((len(r["curve"]) for r in rows), default=0)
    if longest:
        lines += [
            "",
            "Validation NDCG@10 by epoch (the learning curves of the table; `.` = not evaluated, the run had stopped):",
            "",
            "| run | " + " | ".join(str(e) for e in range(1, longest + 1)) + " |",
            "|---|" + "---:|" * longest,
        ]
        for r in rows:
            by_epoch = {int(c["epoch"]): c.get(METRIC) for c in r["curve"]}
            lines.append(f"| {r['run']} | " + " | ".join(_f(by_epoch.get(e), ".4f") if e in by_epoch else "." for e in range(1, longest + 1)) + " |")
    lines += ["", "Test metrics (where the run's evaluate stage ran) are of the model selected on validation; they are not used for any choice."]
    for note in getattr(args, "note", []):
        lines += ["", note]
    if failures:
        lines += ["", "## Failed runs (not in the table)", "", *[f"- {f}" for f in failures]]
    return "\n".join(lines) + "\n"


def write_curves(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for rec in records:
            for point in rec["curve"]:
                w.writerow({"run": rec["run"], **point})


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for rec in records:
        xs = [p["seconds"] for p in rec["curve"]]
        ep = [p["epoch"] for p in rec["curve"]]
        ys = [p[METRIC] for p in rec["curve"]]
        axes[0].plot(xs, ys, marker=".", label=rec["run"])
        axes[1].plot(ep, ys, marker=".", label=rec["run"])
    axes[0].set_xlabel("wall-clock seconds (training + validation)")
    axes[1].set_xlabel("epoch")
    axes[0].set_ylabel("validation NDCG@10")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=list(DEFAULT_RUNS), metavar="NAME=KEY=VALUE,...", help="runs to train (default: the four above)")
    ap.add_argument("--epochs", type=int, default=100, help="recommender.epochs (the ceiling; early stopping ends runs sooner)")
    ap.add_argument("--patience", type=int, default=5, help="recommender.patience")
    ap.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per run")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/genrec_convergence"))
    ap.add_argument("--params", type=Path, default=None, help="params file (default: the project's params.yaml)")
    ap.add_argument("--out", type=Path, default=Path("reports/benchmarks/convergence"), help="writes <out>.{md,csv,png,json}")
    ap.add_argument("--append", action="store_true", help="keep the runs already in <out>.json that are not rerun now")
    ap.add_argument("--force", action="store_true", help="retrain even when a finished workspace matches")
    ap.add_argument("--note", action="append", default=[], help="a paragraph for the report (repeatable), e.g. how included runs were made")
    ap.add_argument(
        "--include", nargs="+", default=[], metavar="NAME=DIR", help="also table runs finished elsewhere (e.g. converged.py workspaces); nothing is retrained"
    )
    args = ap.parse_args(argv)

    command = command_line()
    specs = []
    for text in args.runs:
        name, own = parse_spec(text)
        extra = [f"recommender.epochs={args.epochs}", f"recommender.patience={args.patience}", "recommender.eval_every=1", *args.set]
        specs.append(RunSpec(name, [*own, *extra], ("train",), {"own_overrides": own}))
    try:
        results = run_all(specs, args.work_dir, args.params, args.jobs, args.threads, args.force, command)
    except Exception as exc:  # bad override, missing project data: nothing ran
        raise SystemExit(f"error: {exc}") from None
    n_failed = report_failures(results)

    json_path = Path(f"{args.out}.json")
    previous = json.loads(json_path.read_text(encoding="utf-8"))["runs"] if args.append and json_path.exists() else []
    now = {r.spec.name for r in results}
    records = [p for p in previous if p["run"] not in now] + [record_of(r) for r in results if r.ok]
    included = [record_of_dir(text) for text in args.include]
    records = [r for r in records if r["run"] not in {i["run"] for i in included}] + included
    failures = [f"{r.spec.name}: {r.short_error()} (log: {r.root}/run.log)" for r in results if not r.ok]
    commands = [command, *dict.fromkeys(p.get("command", "") for p in previous if p["run"] not in now)]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [row_of(rec) for rec in records]
    md = markdown(rows, [c for c in commands if c], machine_line(args.threads, args.jobs), failures, args)
    Path(f"{args.out}.md").write_text(md, encoding="utf-8")
    write_curves(records, Path(f"{args.out}.csv"))
    json_path.write_text(json.dumps({"runs": records}, indent=1) + "\n", encoding="utf-8")
    if records:
        plot(records, Path(f"{args.out}.png"))
    print(md)
    print(f"wrote {args.out}.md, .csv, .json" + (", .png" if records else ""))
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
