"""The converged comparison: every method x seed trained to early stopping, tested, and tabled with p-values.

Usage (repository root, venv active, after ``dvc repro`` has built data/processed, data/embeddings,
data/tokenizer and data/ids):

    python scripts/converged.py --seeds 42,43,44 --epochs 100 --patience 5 --jobs 2 --threads 1 \\
        --work-dir /tmp/genrec_converged --out reports/converged
    python scripts/converged.py --methods tiger sasrec-ce=recommender.model=sasrec,recommender.loss=ce
    python scripts/converged.py --config my_methods.yaml    # a YAML list of {name, label, overrides}
    python scripts/converged.py --seeds 1 --methods sasrec-ce=recommender.model=sasrec,recommender.loss=ce \\
        --epochs 1 --set recommender.max_eval_users=100 --out /tmp/converged_smoke      # smoke check

Methods (default): ``tiger`` (params.yaml as is), ``tiger-paper`` (the overlay
configs/tiger-paper.yaml, through ``genrec overrides``; skipped with a note while that file does not
exist), ``sasrec-ce``, ``sasrec-bce``, ``gru4rec-ce``. ``--methods`` takes ``NAME`` (a default
method) or ``NAME=key=value,key=value``. Each method x seed is ``genrec train`` then ``genrec
evaluate`` (``recommender.method=mtgrec``: the fine-tuning slots and select-tokenizer between
them, ``runs.stage_commands``) in a scratch workspace ``<work-dir>/<method>-s<seed>`` (benchmarks/runs.py) with ``-S``
overrides: ``seed=<seed> recommender.epochs=<--epochs> recommender.patience=<--patience>``, then
the method's (a method that pins its own schedule, e.g. ``recommender.epochs=4`` for a default
sized to the 15-minute budget, keeps it), then every ``--set``. Finished workspaces whose params
resolve to the same values are reused (``--force`` retrains).

The MostPop and Markov floors are computed once (genrec_core.evaluation.baselines on the project
root's data/processed test split) and, being deterministic, enter the table with the same value
for every seed. The table is genrec_core.evaluation.significance.results_table (mean ± sample std
over seeds; relative gain and two-sided Mann-Whitney U p against ``--baseline``).

Writes ``<out>.md`` (tables, per-method training summary, machine, command), ``<out>.csv`` (the
results table) and ``<out>_runs.csv`` (every run's test metrics and training summary, and the floors).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.runs import RunSpec, command_line, machine_line, override_key, parse_spec, report_failures, run_all, split_overrides  # noqa: E402

TABLE_METRICS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10", "hit@20", "ndcg@20")
FLOORS = ("mostpop", "markov")
FLOOR_LABELS = {"mostpop": "MostPop (floor)", "markov": "Markov chain (floor)"}
PAPER_OVERLAY = ROOT / "configs" / "tiger-paper.yaml"
RUN_FIELDS = ("best_valid_ndcg@10", "epochs", "best_epoch", "stopped_early", "seconds", "train_examples")


@dataclass
class ResultRow:
    """One row of the results table (``--methods``/``--config`` entries: a training set-up by name,
    not ``recommender.method``): its workspace prefix, label and overrides."""

    name: str
    label: str
    overrides: list[str] = field(default_factory=list)


def default_methods() -> tuple[list[ResultRow], list[str]]:
    """(the default methods, notes about skipped ones)."""
    methods = [ResultRow("tiger", "TIGER (our CPU default)")]
    notes = []
    if PAPER_OVERLAY.exists():
        methods.append(ResultRow("tiger-paper", "TIGER (paper settings, configs/tiger-paper.yaml)", overlay_overrides(PAPER_OVERLAY)))
    else:
        notes.append(f"tiger-paper skipped: {PAPER_OVERLAY.relative_to(ROOT)} does not exist yet.")
    # The item-ID baselines keep dropout 0.1 (their usual setting and the one of reports/results.md)
    # and whole histories: params.yaml's dropout 0 and history_dropout 0.2 are TIGER's CPU default,
    # measured for TIGER, not for them.
    baseline = ["recommender.dropout=0.1", "recommender.history_dropout=0.0"]
    methods += [
        ResultRow("sasrec-ce", "SASRec (full-softmax CE)", ["recommender.model=sasrec", "recommender.loss=ce", *baseline]),
        ResultRow("sasrec-bce", "SASRec (BCE, one sampled negative)", ["recommender.model=sasrec", "recommender.loss=bce", *baseline]),
        ResultRow("gru4rec-ce", "GRU4Rec (full-softmax CE)", ["recommender.model=gru4rec", "recommender.loss=ce", *baseline]),
    ]
    return methods, notes


def overlay_overrides(path: Path) -> list[str]:
    """``genrec overrides FILE`` (``-S k=v -S k=v ...``) as a list of ``k=v``."""
    out = subprocess.run([sys.executable, "-m", "genrec_core.cli", "overrides", str(path)], capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"genrec overrides {path}: {out.stderr.strip()}")
    words = out.stdout.split()
    return [w for flag, w in zip(words[::2], words[1::2]) if flag == "-S"]


def methods_from_config(path: Path) -> list[ResultRow]:
    """A YAML list of ``{name, label, overrides}``; overrides: a list of ``k=v``, a ``{k: v}`` map or ``"k=v,k=v"``."""
    import yaml

    out = []
    for entry in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
        out.append(ResultRow(str(entry["name"]), str(entry.get("label") or entry["name"]), override_list(entry.get("overrides"))))
    return out


def override_list(ov: Any) -> list[str]:
    """Overrides as YAML gives them (a list of ``k=v``, a ``{k: v}`` map, ``"k=v,k=v"`` or nothing) as a list of ``k=v``."""
    ov = ov or []
    if isinstance(ov, str):
        ov = split_overrides(ov)
    elif isinstance(ov, dict):
        ov = [f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}" for k, v in ov.items()]
    return [str(o) for o in ov]


def methods_from_args(specs: list[str], defaults: list[ResultRow]) -> list[ResultRow]:
    known = {m.name: m for m in defaults}
    out = []
    for text in specs:
        name, ov = parse_spec(text)
        if "=" not in text:
            if name == "tiger-paper" and not PAPER_OVERLAY.exists():
                raise SystemExit(f"--methods tiger-paper: {PAPER_OVERLAY} does not exist yet")
            if name not in known:
                raise SystemExit(f"--methods: {name!r} is not a default method ({', '.join(known)}); give NAME=key=value,...")
            out.append(known[name])
        else:
            out.append(ResultRow(name, known[name].label if name in known else name, ov))
    return out


# --------------------------------------------------------------------------- floors and table


def floor_metrics(root: Path, ks: list[int], width: int) -> dict[str, dict[str, float]]:
    """Test metrics of MostPop and Markov on ``root``'s processed data (every test user)."""
    import polars as pl

    from genrec_core.evaluation.baselines import baseline_predictions
    from genrec_core.evaluation.metrics import evaluation_summary

    processed = root / "data" / "processed"
    items = pl.read_parquet(processed / "items.parquet")
    sequences = pl.read_parquet(processed / "sequences.parquet")
    test = pl.read_parquet(processed / "test.parquet").select("user_id", "history", "target")
    base = baseline_predictions(sequences, test, "test", int(items["item_id"].max()) + 1, width)
    return {name: evaluation_summary(base[name], ks) for name in FLOORS}


def assemble(runs: list[dict[str, Any]], floors: dict[str, dict[str, float]], order: list[str], n_seeds: int, baseline: str | None, metrics=TABLE_METRICS):
    """The results table: one group per method with a finished run (``runs``: dicts with ``method``,
    ``seed``, ``metrics``), in ``order``, then each floor repeated ``n_seeds`` times (identical values)."""
    from genrec_core.evaluation.significance import results_table

    groups: dict[str, list[dict[str, float]]] = {}
    seeds: dict[str, list[Any]] = {}
    for name in order:
        mine = [r for r in runs if r["method"] == name]
        if mine:
            groups[name] = [r["metrics"] for r in mine]
            seeds[name] = [r["seed"] for r in mine]
    for name, met in floors.items():
        groups[name] = [met] * n_seeds
        seeds[name] = ["all"] * n_seeds
    metrics = [m for m in metrics if all(m in run for g in groups.values() for run in g)]
    return results_table(groups, baseline=baseline if baseline in groups else None, metrics=metrics, seeds=seeds)


def _mean(values: list[Any]) -> float:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def lead_sentence(table, labels: dict[str, str], method: str = "sasrec-ce") -> str:
    """Where ``method`` is ahead of the baseline, by how much (relative difference of the means)."""
    rows = {r.method: r for r in table.rows}
    base = table.baseline
    if base is None or method not in rows or method == base:
        return f"Where {labels.get(method, method)} is ahead of TIGER, by how much: not computed ({method} and the baseline both need finished runs)."
    parts, ahead = [], []
    for m, short in (("ndcg@10", "N@10"), ("hit@10", "H@10")):
        a, b = rows[method].mean.get(m, float("nan")), rows[base].mean.get(m, float("nan"))
        rel = a / b - 1 if b else float("nan")
        ahead.append(short if rel > 0 else None)
        parts.append(f"{short} {a:.4f} vs {b:.4f} ({100 * rel:+.1f}% relative, p={rows[method].p.get(m, float('nan')):.3g})")
    won = [a for a in ahead if a]
    verdict = f"ahead on {' and '.join(won)}" if won else "not ahead on N@10 or H@10"
    return (
        f"Where {labels.get(method, method)} is ahead of {labels.get(base, base)}, by how much: {verdict}; "
        + "; ".join(parts)
        + " (means over seeds; p: two-sided Mann-Whitney U)."
    )


def _f(v: float, fmt: str = ".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(table, methods: list[ResultRow], runs: list[dict[str, Any]], notes: list[str], failures: list[str], args, command: str, machine: str) -> str:
    from genrec_core.evaluation.significance import to_markdown

    labels = {**{m.name: m.label for m in methods}, **FLOOR_LABELS}
    lines = [
        "# Converged comparison on the test split (every run to early stopping or the end of its schedule)",
        "",
        f"Regenerate: `{command}`",
        "",
        machine,
        "",
        (
            f"Seeds: {', '.join(map(str, args.seeds))}. Every method x seed: `genrec train` then `genrec evaluate` in a scratch workspace, "
            f"params.yaml plus `seed=<seed> recommender.epochs={args.epochs} recommender.patience={args.patience}`, then the method's overrides (a method's "
            "own `recommender.epochs` wins)"
        )
        + (" and " + " ".join(f"`{s}`" for s in args.set) if args.set else "")
        + " (applied in that order; later wins). "
        "Model selection on validation NDCG@10; test metrics of the selected checkpoint.",
        "",
        "MostPop and Markov are deterministic (computed once on the project's test split): they enter with the same "
        f"value for every seed (std 0), so their p-values against `{table.baseline or args.baseline}` are only about the spread of its seeds.",
        "",
    ]
    if table.baseline is None:
        lines += [f"(baseline `{args.baseline}` has no finished runs: no gains or p-values)", ""]
    for note in getattr(args, "note", None) or []:
        lines += [note, ""]
    lines += [
        to_markdown(table),
        "",
        lead_sentence(table, labels),
        "",
        "## Methods",
        "",
        "| method | label | overrides | runs | best valid N@10 (mean) | epochs (mean) | stopped early | seconds (mean) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        mine = [r for r in runs if r["method"] == m.name]
        if not mine:
            continue
        stopped = sum(bool(r.get("stopped_early")) for r in mine)
        lines.append(
            f"| `{m.name}` | {m.label} | `{','.join(m.overrides) or '(params.yaml)'}` | {len(mine)} | "
            f"{_f(_mean([r.get('best_valid_ndcg@10') for r in mine]))} | "
            f"{_f(_mean([r.get('epochs') for r in mine]), '.1f')} | {stopped}/{len(mine)} | {_f(_mean([r.get('seconds') for r in mine]), '.0f')} |"
        )
    for name in FLOORS:
        lines.append(f"| `{name}` | {FLOOR_LABELS[name]} | (no training) | - | - | - | - | - |")
    lines += [
        "",
        "Seconds: training + validation wall-clock of `genrec train` (summary.json), comparable only within one invocation. "
        f"Per-run test metrics: `{args.out.name}_runs.csv`.",
    ]
    lines += cost_and_ids_lines(methods, runs, table.baseline or args.baseline)
    if notes or failures:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes], *[f"- FAILED {f}" for f in failures]]
    return "\n".join(lines) + "\n"


def run_extras(summary: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """Per run: seconds per epoch, the train stage's peak resident memory (benchmarks/runs.py records
    it per stage), and for BLOGER runs the level-1 codebook density and entropy of the starting and
    of the final (selected) IDs."""
    out: dict[str, Any] = {}
    if summary.get("seconds") is not None and summary.get("epochs"):
        out["seconds_per_epoch"] = summary["seconds"] / summary["epochs"]
    peak = (record.get("peak_rss_mb") or {}).get("train")
    if peak is None:
        peak = summary.get("peak_rss_mb")
    out["peak_rss_train_mb"] = peak
    for when in ("before", "after"):
        usage = summary.get(f"bloger_{when}")
        if usage:
            out[f"density_1_{when}"], out[f"entropy_1_{when}"] = usage["density"][0], usage["entropy"][0]
    return out


def cost_and_ids_lines(methods: list[ResultRow], runs: list[dict[str, Any]], baseline: str) -> list[str]:
    """A section on runs with IDs that move (BLOGER): cost per epoch and peak memory against the
    baseline, level-1 codebook density / entropy (bits) before and after; none without such runs."""
    if not any("density_1_before" in r for r in runs):
        return []

    def mean(name: str, key: str) -> float | None:
        value = _mean([r.get(key) for r in runs if r["method"] == name])
        return None if math.isnan(value) else value

    base = mean(baseline, "seconds_per_epoch")
    base_peak = mean(baseline, "peak_rss_train_mb")
    lines = [
        "",
        "## Cost and IDs",
        "",
        f"| method | seconds / epoch (mean) | ratio to `{baseline}` | peak RSS of train, MiB (mean) | ratio | level-1 density before -> after | level-1 "
        "entropy (bits) before -> after |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for m in methods:
        if not any(r["method"] == m.name for r in runs):
            continue
        spe, peak = mean(m.name, "seconds_per_epoch"), mean(m.name, "peak_rss_train_mb")
        ids = [
            f"{_f(mean(m.name, f'{k}_1_before'), '.3f')} -> {_f(mean(m.name, f'{k}_1_after'), '.3f')}"
            if mean(m.name, f"{k}_1_before") is not None
            else "(fixed IDs)"
            for k in ("density", "entropy")
        ]
        lines.append(
            f"| `{m.name}` | {_f(spe, '.1f')} | {_f(spe / base if spe and base else None, '.2f')} | {_f(peak, '.0f')} | "
            f"{_f(peak / base_peak if peak and base_peak else None, '.2f')} | {ids[0]} | {ids[1]} |"
        )
    lines += [
        "",
        "Seconds per epoch: training + validation seconds of summary.json over its epochs. Peak RSS: the `genrec train` "
        "process's maximum resident memory (recorded by benchmarks/runs.py per stage; '-' for workspaces run before it did). "
        "Density: share of the K level-1 codes some item uses; entropy of the items' level-1 codes; before = the kept "
        "tokenizer's IDs BLOGER starts from (= the fixed IDs), after = the IDs of the selected checkpoint.",
    ]
    return lines


def run_row(r) -> dict[str, Any]:
    """One run's line of the runs table (a ``runs.RunResult`` whose ``spec.info`` has ``method`` and
    ``seed``): status, workspace, test metrics, training summary fields and ``run_extras``."""
    row = {
        "method": r.spec.info["method"],
        "seed": r.spec.info["seed"],
        "status": "ok" if r.ok else "failed",
        "workspace": str(r.root),
        "metrics": {k: v for k, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        "error": r.short_error(),
    }
    row.update({k: r.summary.get(k) for k in RUN_FIELDS})
    row.update(run_extras(r.summary, r.record))
    return row


def write_runs_csv(path: Path, runs: list[dict[str, Any]], floors: dict[str, dict[str, float]], metric_keys: list[str], lead: tuple[str, ...] = ()) -> None:
    """Every run's line (``run_row``), then the floors; ``lead``: extra first columns the rows carry."""
    cols = [*lead, "method", "seed", "status", "workspace", *RUN_FIELDS, *metric_keys, "error"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in runs:
            w.writerow({**r, **r.get("metrics", {})})
        for name, met in floors.items():
            w.writerow({"method": name, "seed": "", "status": "deterministic", **met})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[42, 43, 44], help="comma-separated seeds")
    ap.add_argument("--methods", nargs="+", default=None, metavar="NAME[=KEY=VALUE,...]", help="methods (default: all defaults)")
    ap.add_argument("--config", type=Path, default=None, help="YAML list of {name, label, overrides} (added after --methods)")
    ap.add_argument("--baseline", default="tiger", help="method the gains and p-values compare against")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run (repeatable)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/genrec_converged"))
    ap.add_argument("--params", type=Path, default=None, help="params file (default: the project's params.yaml)")
    ap.add_argument("--out", type=Path, default=Path("reports/converged"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--note", action="append", default=[], help="a paragraph for the report (repeatable): the reading of the table")
    args = ap.parse_args(argv)

    from genrec_core.config import load_params

    command = command_line()
    defaults, notes = default_methods()
    methods = methods_from_args(args.methods, defaults) if args.methods else ([] if args.config else defaults)
    if args.methods:
        notes = []
    if args.config:
        methods += methods_from_config(args.config)
    if not methods:
        raise SystemExit("no methods to run")
    for m in methods:
        if any(override_key(o).startswith("data.") for o in m.overrides):
            notes.append(f"`{m.name}` overrides data.*: the floors are on the project's data, not its.")
    for n in notes:
        print(f"note: {n}")

    specs = [
        RunSpec(
            f"{m.name}-s{seed}",
            [f"seed={seed}", f"recommender.epochs={args.epochs}", f"recommender.patience={args.patience}", *m.overrides, *args.set],
            ("train", "evaluate"),
            {"method": m.name, "seed": seed},
        )
        for m in methods
        for seed in args.seeds
    ]
    try:
        results = run_all(specs, args.work_dir, args.params, args.jobs, args.threads, args.force, command)
    except Exception as exc:  # bad override, missing project data: nothing ran
        raise SystemExit(f"error: {exc}") from None
    n_failed = report_failures(results)

    params = load_params(args.params or ROOT / "params.yaml", args.set)
    ks = list(params.evaluate.ks)
    floors = floor_metrics(ROOT, ks, max(params.evaluate.beam_size, max(ks)))
    runs = [run_row(r) for r in results]
    ok_runs = [r for r in runs if r["status"] == "ok"]
    table = assemble(ok_runs, floors, [m.name for m in methods], len(args.seeds), args.baseline)

    from genrec_core.evaluation.significance import to_csv

    failures = [f"{r.spec.name}: {r.short_error()} (log: {r.root}/run.log)" for r in results if not r.ok]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(table, methods, ok_runs, notes, failures, args, command, machine_line(args.threads, args.jobs))
    Path(f"{args.out}.md").write_text(md, encoding="utf-8")
    Path(f"{args.out}.csv").write_text(to_csv(table), encoding="utf-8")
    metric_keys = list(dict.fromkeys(k for r in runs for k in r["metrics"])) or list(TABLE_METRICS)
    write_runs_csv(args.out.parent / f"{args.out.name}_runs.csv", runs, floors, metric_keys)
    print(md)
    print(f"wrote {args.out}.md, {args.out}.csv, {args.out}_runs.csv")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
