"""Results table over finished DVC experiments: mean ± std per method, gain and Mann-Whitney p.

Usage (from the project root, after the seeds of each method have run, see scripts/seeds.py)::

    python -m stages.results --baseline t5/ce                   # runs `dvc exp show --json`
    python -m stages.results --json exps.json --baseline t5/ce --metrics hit@10,ndcg@10
    python -m stages.results --by recommender.model,recommender.loss,tokenizer.levels -A
    python -m stages.results --runs /tmp/genrec_converged/*-s4? --baseline t5/ce   # run folders instead

``--runs`` reads run folders instead of DVC experiments: the workspaces that
``scripts/converged.py`` and ``benchmarks/convergence.py`` train in (``params.yaml``, the
``overrides.json`` record of the ``-S`` overrides, ``reports/metrics.json``); each run's params are
those files resolved as the stages resolve them (defaults filled in), so ``--by`` works alike.

A method is the ``/``-joined values of ``--by`` params (default ``recommender.model`` and
``recommender.loss``; models by today's name: a run without ``recommender.model``, or with its old
name ``tiger``, is ``t5``). Each method's runs are its
experiments with distinct ``seed`` values. Writes ``reports/results.md`` and
``reports/results.csv`` (genrec_core.evaluation.significance documents the columns and the test).
Not a DVC stage: it reads the experiments DVC keeps, not a pipeline output.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from genrec_core.config import load_params, params_record
from genrec_core.evaluation.significance import Run, canonical_method, flatten, group_runs, results_table, runs_from_exp_show, to_csv, to_markdown
from genrec_core.io import write_text

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")


def exp_show_json(all_commits: bool = False) -> list:
    cmd = ["dvc", "exp", "show", "--json"] + (["-A"] if all_commits else [])
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout)


def runs_from_folders(folders: list[Path], metrics_file: str = "reports/metrics.json") -> list[Run]:
    """One run per folder with a metrics file (folders without one, e.g. unfinished runs, are
    skipped with a log line): params.yaml + the recorded overrides, resolved and flattened."""
    runs = []
    for folder in folders:
        metrics_path = folder / metrics_file
        if not metrics_path.exists():
            log.info("skipped %s: no %s (not finished?)", folder, metrics_file)
            continue
        record_path = folder / "overrides.json"
        overrides = json.loads(record_path.read_text(encoding="utf-8")).get("overrides", []) if record_path.exists() else []
        params = params_record(load_params(folder / "params.yaml", list(overrides)))  # tokenizer section flat, as before kind_params
        runs.append(Run(str(folder), folder.name, flatten(params), json.loads(metrics_path.read_text(encoding="utf-8"))))
    return runs


def floor_groups(path: Path) -> dict[str, list[dict]]:
    """MostPop and Markov rows from an analyse stage's baselines.json (one deterministic run each:
    they depend on the split only, not on the seed)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {name: [data[name]] for name in ("mostpop", "markov") if name in data}


def build(
    exp_show: list | None,
    by: list[str],
    baseline: str | None,
    metrics: list[str] | None,
    metrics_file: str,
    include_baselines: bool = False,
    floors: Path | None = None,
    folders: list[Path] | None = None,
):
    if folders:
        runs = runs_from_folders(folders, metrics_file)
        if not runs:
            raise SystemExit(f"none of the {len(folders)} --runs folders has {metrics_file}")
    else:
        runs = runs_from_exp_show(exp_show or [], metrics_file=metrics_file, include_baselines=include_baselines)
        if not runs:
            raise SystemExit(f"no finished experiment with {metrics_file} found in `dvc exp show --json`")
    groups, seeds = group_runs(runs, by)
    if floors is not None:
        groups.update(floor_groups(floors))
    baseline = canonical_method(baseline, by) if baseline is not None else None  # tiger/ce names t5/ce
    if baseline is not None and baseline not in groups:
        raise SystemExit(f"baseline {baseline!r} not found; methods: {', '.join(groups)}")
    return results_table(groups, baseline=baseline, metrics=metrics, seeds=seeds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="a saved `dvc exp show --json` output (default: run it)")
    ap.add_argument(
        "--runs", type=Path, nargs="+", default=None, help="run folders (params.yaml, overrides.json, reports/metrics.json) instead of DVC experiments"
    )
    ap.add_argument("-A", "--all-commits", action="store_true", help="pass -A to dvc exp show (experiments of every commit)")
    ap.add_argument("--include-baselines", action="store_true", help="also count the commits' own results as runs")
    ap.add_argument("--by", default="recommender.model,recommender.loss", help="comma-separated params that define a method")
    ap.add_argument("--baseline", default=None, help="method the gains and p-values compare against, e.g. t5/ce")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric keys (empty: all shared numeric keys)")
    ap.add_argument("--metrics-file", default="reports/metrics.json")
    ap.add_argument("--out", type=Path, default=Path("reports"), help="folder for results.md and results.csv")
    ap.add_argument(
        "--floors",
        type=Path,
        default=Path("reports/analysis/baselines.json"),
        help="add the MostPop and Markov rows of this analyse-stage file (skipped when absent)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    data = None if args.runs else json.loads(args.json.read_text(encoding="utf-8")) if args.json else exp_show_json(args.all_commits)
    metrics = [m for m in args.metrics.split(",") if m] or None
    floors = args.floors if args.floors and args.floors.exists() else None
    table = build(data, args.by.split(","), args.baseline, metrics, args.metrics_file, args.include_baselines, floors, args.runs)
    import shlex

    shown = sys.argv[1:] if argv is None else argv
    md = "# Results over seeds\n\n" + f"Regenerate: `python -m stages.results {shlex.join(map(str, shown))}`\n\n" + to_markdown(table)
    if any(row.runs < 2 for row in table.rows):
        md += (
            "\nRows with a single run have no std, and their Mann-Whitney p cannot fall below 1 (1 vs 1) "
            "or 2/3 (1 vs 2): run several seeds (scripts/seeds.py) before reading a p-value.\n"
        )
    write_text(md, args.out / "results.md")
    write_text(to_csv(table), args.out / "results.csv")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
