"""Seeds and significance (SPEC 5): a results table over several runs per method.

For each method (several seeds each) and metric: the mean, the sample standard deviation
(``ddof=1``, the n - 1 estimator; empty for a single run), the relative gain of the mean over a
baseline method's mean (``mean / baseline_mean - 1``; empty when the baseline mean is 0) and the
two-sided Mann-Whitney U p-value of the method's per-run values against the baseline's
(``scipy.stats.mannwhitneyu(x, y, alternative="two-sided")``, scipy's default ``method="auto"``:
the exact distribution when one group has at most 8 runs and there are no ties, else the
normal approximation with tie correction and continuity correction). With 5 vs 5 runs the smallest reachable p is
2/C(10,5) = 0.0079; with 3 vs 3 it is 2/C(6,3) = 0.1, so 3 seeds can never reach p < 0.05.

Also: reading finished DVC experiments out of ``dvc exp show --json`` (``runs_from_exp_show``) and
grouping them by a method key.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genrec_core.recommender.model_spec import DEFAULT_MODEL, canonical_model_name  # DEFAULT_MODEL: what a run without recommender.model trained

DEFAULT_METHOD_KEYS = ("recommender.model", "recommender.loss")


@dataclass
class MethodRow:
    method: str
    runs: int
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)  # nan for a single run
    gain: dict[str, float] = field(default_factory=dict)  # relative to the baseline; nan where undefined
    p: dict[str, float] = field(default_factory=dict)  # nan for the baseline row itself
    seeds: list[Any] = field(default_factory=list)


@dataclass
class ResultsTable:
    rows: list[MethodRow]
    metrics: list[str]
    baseline: str | None
    ddof: int = 1


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value (scipy, method='auto'); nan if a group is empty."""
    from scipy.stats import mannwhitneyu

    if len(x) == 0 or len(y) == 0:
        return float("nan")
    return float(mannwhitneyu(np.asarray(x, float), np.asarray(y, float), alternative="two-sided").pvalue)


def results_table(
    groups: Mapping[str, Sequence[Mapping[str, float]]],
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    ddof: int = 1,
    seeds: Mapping[str, Sequence[Any]] | None = None,
) -> ResultsTable:
    """``groups``: method -> one metric dict per run (seed). ``baseline``: the method the gains and
    p-values compare against (None: no gains/p). ``metrics``: which keys (default: the numeric
    keys every run of every method has, in first-seen order). Rows keep ``groups``' order."""
    if baseline is not None and baseline not in groups:
        raise KeyError(f"baseline method {baseline!r} not among {list(groups)}")
    if metrics is None:
        first = [k for runs in groups.values() for run in runs for k, v in run.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        metrics = [k for k in dict.fromkeys(first) if all(k in run for runs in groups.values() for run in runs)]
    metrics = list(metrics)

    def values(method: str, metric: str) -> np.ndarray:
        return np.asarray([float(run[metric]) for run in groups[method] if metric in run and run[metric] is not None], dtype=np.float64)

    rows = []
    for method, runs in groups.items():
        row = MethodRow(method, len(runs), seeds=list((seeds or {}).get(method, [])))
        for m in metrics:
            x = values(method, m)
            row.mean[m] = float(x.mean()) if x.size else float("nan")
            row.std[m] = float(x.std(ddof=ddof)) if x.size > ddof else float("nan")
            if baseline is None or method == baseline:
                row.gain[m] = 0.0 if method == baseline else float("nan")
                row.p[m] = float("nan")
                continue
            y = values(baseline, m)
            base_mean = float(y.mean()) if y.size else float("nan")
            row.gain[m] = row.mean[m] / base_mean - 1.0 if y.size and base_mean != 0 else float("nan")
            row.p[m] = mann_whitney_p(x, y)
        rows.append(row)
    return ResultsTable(rows, metrics, baseline, ddof)


# --------------------------------------------------------------------------- writers


def _fmt(value: float, digits: int = 4) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return ""
    return f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def _fmt_gain(g: float) -> str:
    return "" if g is None or not math.isfinite(g) else f"{100 * g:+.1f}%"


def to_markdown(table: ResultsTable, digits: int = 4) -> str:
    """One row per method: ``mean ± std`` per metric, then gain and p against the baseline."""
    head = ["method", "runs", *table.metrics]
    lines = []
    title = f"Mean ± std (ddof={table.ddof}) over runs"
    if table.baseline is not None:
        title += f"; under each value: relative gain over `{table.baseline}` and the two-sided Mann-Whitney U p-value"
    lines += [title + ".", "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(table.metrics)) + "|"]
    for row in table.rows:
        cells = [f"`{row.method}`", str(row.runs)]
        for m in table.metrics:
            cell = _fmt(row.mean[m], digits)
            if math.isfinite(row.std[m]):
                cell += f" ± {_fmt(row.std[m], digits)}"
            if table.baseline is not None and row.method != table.baseline:
                cell += f"<br>{_fmt_gain(row.gain[m])}, p={_fmt_p(row.p[m])}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(table: ResultsTable) -> list[dict[str, Any]]:
    out = []
    for row in table.rows:
        rec: dict[str, Any] = {"method": row.method, "runs": row.runs, "baseline": table.baseline or "", "seeds": " ".join(map(str, row.seeds))}
        for m in table.metrics:
            rec[f"{m}_mean"] = row.mean[m]
            rec[f"{m}_std"] = row.std[m]
            rec[f"{m}_gain"] = row.gain[m]
            rec[f"{m}_p"] = row.p[m]
        out.append(rec)
    return out


def to_csv(table: ResultsTable) -> str:
    """Wide CSV: method, runs, baseline, seeds, then <metric>_{mean,std,gain,p}; nan left empty."""
    rows = csv_rows(table)
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["method", "runs", "baseline", "seeds"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for rec in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else (repr(v) if isinstance(v, float) else v)) for k, v in rec.items()})
    return buf.getvalue()


# --------------------------------------------------------------------------- DVC experiments


@dataclass
class Run:
    rev: str
    name: str | None
    params: dict[str, Any]  # flattened: "recommender.model" -> "sasrec"
    metrics: dict[str, Any]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value and not path.endswith("loss_params"):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def _file_data(results: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    entry = (results or {}).get(name)
    if not isinstance(entry, Mapping) or entry.get("error") or not isinstance(entry.get("data"), Mapping):
        return None
    return dict(entry["data"])


def runs_from_exp_show(
    exp_show: Sequence[Mapping[str, Any]],
    metrics_file: str = "reports/metrics.json",
    params_file: str = "params.yaml",
    include_baselines: bool = False,
) -> list[Run]:
    """Finished runs out of ``dvc exp show --json`` (DVC 3.x; tested with 3.67).

    The JSON shape relied on (``ExpState.dumpd()`` of dvc.repo.experiments.serialize)::

        [ {"rev": "workspace" | <commit sha>, "name": <branch or null>, "error": null,
           "data": {"rev": ..., "timestamp": ..., "params": {"params.yaml": {"data": {<params tree>}}},
                    "metrics": {"reports/metrics.json": {"data": {"hit@10": ..., ...}}},
                    "deps": {...}, "outs": {...}, "meta": {...}},
           "experiments": null | [ {"name": <exp name>, "executor": null | {"state": "success" |
                    "queued" | "running" | "failed", ...}, "revs": [ <ExpState as above> ]} ] } ]

    Kept: every experiment rev whose executor is null or ``success`` and whose params and metrics
    files were read without error; with ``include_baselines`` also the commits' own results
    (the workspace entry is never kept: it duplicates the last applied experiment or HEAD).
    """
    runs: list[Run] = []

    def take(state: Mapping[str, Any], name: str | None) -> None:
        data = state.get("data") or {}
        if state.get("error") or not data:
            return
        params = _file_data(data.get("params"), params_file)
        metrics = _file_data(data.get("metrics"), metrics_file)
        if params is None or metrics is None:
            return
        runs.append(Run(str(state.get("rev")), name or state.get("name"), flatten(params), metrics))

    for top in exp_show:
        if include_baselines and top.get("rev") != "workspace":
            take(top, top.get("name"))
        for exp_range in top.get("experiments") or []:
            executor = exp_range.get("executor")
            if executor and executor.get("state") not in (None, "success"):
                continue
            for state in exp_range.get("revs") or []:
                take(state, exp_range.get("name") or state.get("name"))
    return runs


def method_of(run: Run, keys: Sequence[str] = DEFAULT_METHOD_KEYS) -> str:
    """``value/value`` of the method keys; recommender.model by today's name (a missing one, or
    ``tiger``, reads as t5)."""
    parts = []
    for key in keys:
        value = run.params.get(key)
        if key == "recommender.model":
            value = canonical_model_name(DEFAULT_MODEL if value is None else value)
        parts.append(str(value))
    return "/".join(parts)


def canonical_method(method: str, keys: Sequence[str] = DEFAULT_METHOD_KEYS) -> str:
    """``method`` (``value/value`` of ``keys``) with an older model name replaced (``tiger/ce`` -> ``t5/ce``)."""
    parts = method.split("/")
    if "recommender.model" in keys and len(parts) == len(keys):
        i = list(keys).index("recommender.model")
        parts[i] = str(canonical_model_name(parts[i]))
    return "/".join(parts)


def group_runs(
    runs: Sequence[Run], keys: Sequence[str] = DEFAULT_METHOD_KEYS, seed_key: str = "seed"
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[Any]]]:
    """(method -> metric dicts, method -> seeds); a (method, seed) seen twice keeps its first run
    (``dvc exp show`` lists the newest experiment first)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    seeds: dict[str, list[Any]] = {}
    for run in runs:
        method = method_of(run, keys)
        seed = run.params.get(seed_key)
        if seed in seeds.get(method, []):
            continue
        groups.setdefault(method, []).append(run.metrics)
        seeds.setdefault(method, []).append(seed)
    return groups, seeds
