"""The token-weighting baseline and ablation ladder of paper 001 (Tables 3 and 4), as DVC experiments.

Two modes (run from the repository root, with the venv active):

``python scripts/ladder.py queue [--seeds 5] [--run] [-S key=value ...]``
    Prints one ``dvc exp run --queue -n <loss>-s<seed> -S recommender.loss=<loss> -S seed=<seed> ...``
    line per rung and seed (``--run`` also executes them; then ``dvc queue start`` runs the queue).
    Extra ``-S`` overrides (e.g. a GPU configuration from ``genrec overrides configs/yelp-gpu.yaml``)
    are appended to every experiment. Rungs: ``RUNGS`` below (ce = TIGER, the token-weighting
    baselines, the single weightings, the Table 4 ablation steps and the regularised multi-target).

``python scripts/ladder.py collect [--json exp.json | --metrics-dir DIR] [--out reports/ladder]``
    Reads ``dvc exp show --json`` (run it when ``--json`` is not given) or per-experiment
    ``DIR/<exp name>/metrics.json`` files, groups the experiments by rung (the name without its
    ``-s<seed>`` suffix, or ``recommender.loss`` from the params), and writes ``<out>.md`` (Table 3
    and Table 4 layouts: mean and std over seeds of H@5 N@5 H@10 N@10, and the two-sided
    Mann-Whitney U p of each rung's per-seed NDCG@5 against ce's) and ``<out>.csv`` (one row per rung).

Each experiment trains and evaluates the whole pipeline (``dvc exp run`` reruns the out-of-date
stages), so a ladder of 12 rungs x 5 seeds is a GPU job; nothing here trains by itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")
METRIC_LABELS = {"hit@5": "H@5", "ndcg@5": "N@5", "hit@10": "H@10", "ndcg@10": "N@10"}
BASELINE = "ce"
SIGNIFICANCE_METRIC = "ndcg@5"
#: Best validation NDCG@10 (reports/train/best_valid.json, the DVC metric; also in summary.json):
#: the model-selection score, on other users' targets than the test.
VALID_METRIC = "best_valid_ndcg@10"


@dataclass(frozen=True)
class Rung:
    name: str  # experiment name stem (also the row key)
    loss: str  # recommender.loss
    label: str  # row label in the tables
    loss_params: dict[str, Any] = field(default_factory=dict)


RUNGS: tuple[Rung, ...] = (
    Rung("ce", "ce", "TIGER"),
    Rung("rank", "rank", "TIGER + Rank"),
    Rung("pos", "pos", "TIGER + Pos"),
    Rung("cft", "cft", "TIGER + CFT"),
    Rung("igd", "igd", "TIGER + IGD"),
    Rung("front_greater", "front_greater", "TIGER + FrontGreater (fixed)"),
    Rung("frequency", "frequency", "TIGER + Frequency (fixed)"),
    Rung("fg_to_ce", "fg_to_ce", "+ FrontGreater"),
    Rung("fg_ce_fr", "fg_ce_fr", "+ Frequency"),
    Rung("multi_target", "multi_target", "+ Multi-Target"),
    Rung("multi_target_unc", "multi_target", "+ Multi-Target (uncertainty reg.)", {"regulariser": "uncertainty"}),
    Rung("curriculum", "curriculum", "+ Curriculum"),
)
#: Paper 001 Table 3 (main comparison) and Table 4 (ablation ladder), as rung names.
TABLE3 = ("ce", "rank", "pos", "cft", "igd", "curriculum")
TABLE4 = ("ce", "fg_to_ce", "fg_ce_fr", "multi_target", "curriculum")
TABLE_EXTRA = ("front_greater", "frequency", "multi_target_unc")
#: Rungs of paper 001 Figure 3 (head/tail): TIGER, Frequency weighting only, the full method.
HEAD_TAIL_RUNGS = ("ce", "frequency", "curriculum")

#: What paper 001 reports (H@5, N@5, H@10, N@10; mean of 5 runs, RQ IDs 4x256, LLaMA2-7B item
#: embeddings), quoted so that ``collect --reference`` prints them beside ours. Table 3 and
#: Table 4 give slightly different TIGER rows for MovieLens-1M; each table keeps its own.
PAPER_001: dict[str, dict[str, dict[str, tuple[float, float, float, float]]]] = {
    "yelp": {
        "table3": {
            "ce": (0.0240, 0.0155, 0.0391, 0.0202),
            "rank": (0.0241, 0.0155, 0.0396, 0.0205),
            "pos": (0.0239, 0.0154, 0.0387, 0.0201),
            "cft": (0.0239, 0.0154, 0.0390, 0.0202),
            "igd": (0.0245, 0.0158, 0.0401, 0.0208),
            "curriculum": (0.0264, 0.0175, 0.0419, 0.0225),
        },
        "table4": {
            "ce": (0.0240, 0.0155, 0.0391, 0.0202),
            "fg_to_ce": (0.0251, 0.0166, 0.0401, 0.0214),
            "fg_ce_fr": (0.0253, 0.0162, 0.0401, 0.0210),
            "multi_target": (0.0255, 0.0165, 0.0415, 0.0216),
            "curriculum": (0.0264, 0.0175, 0.0419, 0.0225),
        },
    },
    "ml-1m": {
        "table3": {
            "ce": (0.1859, 0.1275, 0.2648, 0.1530),
            "rank": (0.1841, 0.1268, 0.2644, 0.1528),
            "pos": (0.1868, 0.1302, 0.2687, 0.1566),
            "cft": (0.1876, 0.1299, 0.2665, 0.1553),
            "igd": (0.1878, 0.1296, 0.2617, 0.1534),
            "curriculum": (0.1945, 0.1354, 0.2727, 0.1605),
        },
        "table4": {
            "ce": (0.1854, 0.1293, 0.2658, 0.1551),
            "fg_to_ce": (0.1891, 0.1303, 0.2713, 0.1568),
            "fg_ce_fr": (0.1914, 0.1319, 0.2697, 0.1572),
            "multi_target": (0.1928, 0.1336, 0.2680, 0.1577),
            "curriculum": (0.1945, 0.1354, 0.2727, 0.1605),
        },
    },
    "instruments": {
        "table3": {
            "ce": (0.0316, 0.0203, 0.0501, 0.0263),
            "rank": (0.0311, 0.0204, 0.0482, 0.0258),
            "pos": (0.0320, 0.0207, 0.0497, 0.0264),
            "cft": (0.0321, 0.0208, 0.0502, 0.0266),
            "igd": (0.0325, 0.0210, 0.0503, 0.0268),
            "curriculum": (0.0330, 0.0215, 0.0512, 0.0273),
        },
        "table4": {
            "ce": (0.0316, 0.0203, 0.0501, 0.0263),
            "fg_to_ce": (0.0323, 0.0209, 0.0501, 0.0265),
            "fg_ce_fr": (0.0324, 0.0211, 0.0500, 0.0268),
            "multi_target": (0.0327, 0.0212, 0.0509, 0.0271),
            "curriculum": (0.0330, 0.0215, 0.0512, 0.0273),
        },
    },
}


# --------------------------------------------------------------------------- queue


def _value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def experiment_commands(seeds: Iterable[int], overrides: Iterable[str] = (), rungs: Iterable[Rung] = RUNGS) -> list[list[str]]:
    """``dvc exp run --queue`` argument lists, one per rung and seed.

    ``loss_params`` keys may be new under params.yaml's ``recommender.loss_params``, hence Hydra's
    add-or-override ``++`` prefix. Every queued experiment starts from the workspace params.yaml.
    """
    cmds = []
    for rung in rungs:
        for seed in seeds:
            cmd = ["dvc", "exp", "run", "--queue", "-n", f"{rung.name}-s{seed}", "-S", f"recommender.loss={rung.loss}", "-S", f"seed={seed}"]
            for key, value in rung.loss_params.items():
                cmd += ["-S", f"++recommender.loss_params.{key}={_value(value)}"]
            for ov in overrides:
                cmd += ["-S", ov]
            cmds.append(cmd)
    return cmds


def archive_reports(reports: Path, dest: Path) -> Path:
    """Copy the files a ladder table reads (test metrics, head/tail, training summary and the
    dvclive log with the alphas) of the run just finished, so the next run cannot overwrite them."""
    for rel in ("metrics.json", "analysis/head_tail.json", "analysis/popularity_deciles.json", "train/summary.json", "train/live"):
        src = reports / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, dirs_exist_ok=True)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


# --------------------------------------------------------------------------- collect


def _walk(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _merged(files: dict[str, Any] | None) -> dict[str, Any]:
    """{key: value} over every file of a ``params``/``metrics`` block (``{file: {"data": {...}}}``)."""
    out: dict[str, Any] = {}
    for content in (files or {}).values():
        if isinstance(content, dict) and isinstance(content.get("data"), dict):
            out.update(content["data"])
    return out


def experiments_from_exp_show(payload: Any) -> list[dict[str, Any]]:
    """[{name, loss, loss_params, seed, metrics}] of every named experiment in ``dvc exp show --json``."""
    out = []
    seen = set()
    for node in _walk(payload):
        data = node.get("data")
        if not isinstance(data, dict) or "metrics" not in data:
            continue
        name = node.get("name") or data.get("name")
        if not name:
            continue
        metrics = _merged(data.get("metrics"))
        if not metrics or name in seen:
            continue
        seen.add(name)
        params = _merged(data.get("params"))
        rec = params.get("recommender", {}) or {}
        out.append({"name": name, "loss": rec.get("loss"), "loss_params": rec.get("loss_params") or {}, "seed": params.get("seed"), "metrics": metrics})
    return out


def experiments_from_dir(metrics_dir: str | Path) -> list[dict[str, Any]]:
    """[{name, metrics}] from ``DIR/<name>/metrics.json`` (plus ``train/summary.json`` when present,
    whose keys include those of ``train/best_valid.json``, which ``dvc exp show`` merges)."""
    out = []
    for path in sorted(Path(metrics_dir).glob("*/metrics.json")):
        metrics = json.loads(path.read_text(encoding="utf-8"))
        summary = path.parent / "train" / "summary.json"
        if summary.exists():
            metrics = {**json.loads(summary.read_text(encoding="utf-8")), **metrics}
        out.append({"name": path.parent.name, "loss": None, "loss_params": {}, "seed": None, "metrics": metrics})
    return out


def rung_of(exp: dict[str, Any], rungs: Iterable[Rung] = RUNGS) -> str:
    """The rung an experiment belongs to: its name minus ``-s<seed>`` if that is a rung, else the
    rung with the same loss and loss params, else the bare name."""
    stem = re.sub(r"-s\d+$", "", exp["name"])
    names = {r.name for r in rungs}
    if stem in names:
        return stem
    for r in rungs:
        if exp.get("loss") == r.loss and (exp.get("loss_params") or {}) == r.loss_params:
            return r.name
    return stem


def summarise(experiments: list[dict[str, Any]], rungs: Iterable[Rung] = RUNGS) -> list[dict[str, Any]]:
    """One row per rung present: label, seeds, mean/std of each metric, p vs the baseline.

    The statistics are ``genrec_core.evaluation.significance.results_table``'s (mean, sample std,
    two-sided Mann-Whitney U); a single run's std is written as 0 and a p-value needs at least two
    runs on each side (else None).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from genrec_core.evaluation.significance import results_table

    rungs = list(rungs)
    groups: dict[str, list[dict[str, Any]]] = {}
    for exp in experiments:
        groups.setdefault(rung_of(exp, rungs), []).append(exp)
    labels = {r.name: r.label for r in rungs}
    order = [r.name for r in rungs if r.name in groups] + sorted(set(groups) - {r.name for r in rungs})
    table = results_table(
        {name: [e["metrics"] for e in groups[name]] for name in order},
        baseline=BASELINE if BASELINE in groups else None,
        metrics=[*METRICS, VALID_METRIC],
    )
    n_base = len(groups.get(BASELINE, []))
    rows = []
    for stats in table.rows:
        row: dict[str, Any] = {"rung": stats.method, "label": labels.get(stats.method, stats.method), "seeds": stats.runs}
        for m in table.metrics:
            row[m] = stats.mean[m]
            row[f"{m}_std"] = 0.0 if math.isnan(stats.std[m]) else stats.std[m]
        enough = stats.method != BASELINE and min(stats.runs, n_base) >= 2
        row["p_vs_ce"] = stats.p[SIGNIFICANCE_METRIC] if enough else None
        rows.append(row)
    return rows


def _fmt(row: dict[str, Any], m: str) -> str:
    if math.isnan(row[m]):
        return "-"
    return f"{row[m]:.4f}" + (f" ± {row[f'{m}_std']:.4f}" if row["seeds"] > 1 else "")


def markdown_table(rows: list[dict[str, Any]], rung_names: Iterable[str], title: str) -> str:
    by = {r["rung"]: r for r in rows}
    present = [n for n in rung_names if n in by]
    if not present:
        return f"### {title}\n\n(no experiments)\n"
    base = by.get(BASELINE)
    head = "| Method | seeds | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " | N@5 vs TIGER | p (N@5) | valid N@10 |"
    lines = [f"### {title}", "", head, "|" + "---|" * (len(METRICS) + 5)]
    for n in present:
        r = by[n]
        gain = f"{100 * (r['ndcg@5'] / base['ndcg@5'] - 1):+.1f}%" if base and n != BASELINE and base["ndcg@5"] > 0 else ""
        p = "" if r.get("p_vs_ce") is None else f"{r['p_vs_ce']:.3g}"
        lines.append(f"| {r['label']} | {r['seeds']} | " + " | ".join(_fmt(r, m) for m in METRICS) + f" | {gain} | {p} | {_fmt(r, VALID_METRIC)} |")
    return "\n".join(lines) + "\n"


def paper_table(dataset: str, table: str, rung_names: Iterable[str], title: str) -> str:
    """Paper 001's reported rows of one table for ``dataset`` (a key of ``PAPER_001``)."""
    reported = PAPER_001[dataset][table]
    labels = {r.name: r.label for r in RUNGS}
    base = reported.get(BASELINE)
    lines = [f"### {title}", "", "| Method | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " | N@5 vs TIGER |", "|" + "---|" * (len(METRICS) + 2)]
    for n in rung_names:
        if n not in reported:
            continue
        vals = reported[n]
        gain = f"{100 * (vals[1] / base[1] - 1):+.1f}%" if base and n != BASELINE else ""
        lines.append(f"| {labels.get(n, n)} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {gain} |")
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], out_stem: str | Path, reference: str | None = None, preamble: str = "") -> tuple[Path, Path]:
    """``<out>.md`` (Table 3, Table 4, other rungs; with ``reference``, paper 001's rows for that
    dataset after each of ours) and ``<out>.csv``."""
    if reference is not None and reference not in PAPER_001:
        raise SystemExit(f"--reference: unknown dataset {reference!r}; one of {sorted(PAPER_001)}")
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    others = [r["rung"] for r in rows if r["rung"] not in set(TABLE3) | set(TABLE4)]
    parts = [
        "## Token-weighting ladder (paper 001 layout)",
        "",
        f"Test metrics, mean ± std over seeds; p: two-sided Mann-Whitney U of per-seed {SIGNIFICANCE_METRIC} against TIGER (ce); "
        "valid N@10: the best validation NDCG@10 of training (the model-selection score).",
        "",
    ]
    if preamble:
        parts += [preamble.strip(), ""]
    parts.append(markdown_table(rows, TABLE3, "Table 3: token-weighting baselines vs ours (curriculum)"))
    if reference:
        parts.append(paper_table(reference, "table3", TABLE3, f"Paper 001 Table 3, {reference} (reported)"))
    parts.append(markdown_table(rows, TABLE4, "Table 4: ablation ladder"))
    if reference:
        parts.append(paper_table(reference, "table4", TABLE4, f"Paper 001 Table 4, {reference} (reported)"))
    parts.append(markdown_table(rows, others, "Other rungs"))
    md = "\n".join(parts)
    md_path = out_stem.with_suffix(".md")
    md_path.write_text(md, encoding="utf-8")
    csv_path = out_stem.with_suffix(".csv")
    cols = ["rung", "label", "seeds"] + [c for m in (*METRICS, VALID_METRIC) for c in (m, f"{m}_std")] + ["p_vs_ce"]
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return md_path, csv_path


# --------------------------------------------------------------------------- head / tail


HEAD_TAIL_METRICS = ("hit@10", "ndcg@10")


def head_tail_summary(archive: str | Path, rung_names: Iterable[str] = HEAD_TAIL_RUNGS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mean over seeds of each rung's head and tail metrics, from ``DIR/<experiment>/analysis/head_tail.json``
    (the analyse stage's split: test-target items ranked by training count, halves by item), and
    the split's group sizes."""
    found: dict[str, list[dict[str, Any]]] = {}
    groups_info: dict[str, Any] = {}
    for path in sorted(Path(archive).glob("*/analysis/head_tail.json")):
        rung = rung_of({"name": path.parent.parent.name})
        report = json.loads(path.read_text(encoding="utf-8"))
        found.setdefault(rung, []).append(report["metrics"]["model"])
        groups_info = report.get("groups", groups_info)
    labels = {r.name: r.label for r in RUNGS}
    rows = []
    for name in rung_names:
        if name not in found:
            continue
        row: dict[str, Any] = {"rung": name, "label": labels.get(name, name), "seeds": len(found[name])}
        for group in ("head", "tail"):
            for m in HEAD_TAIL_METRICS:
                vals = [float(r[group][m]) for r in found[name]]
                row[f"{group}_{m}"] = sum(vals) / len(vals)
        rows.append(row)
    return rows, groups_info


def _short_label(label: str) -> str:
    """'TIGER + Frequency (fixed)' -> 'Frequency', '+ Curriculum' -> 'Curriculum'; 'TIGER' stays."""
    return label.replace("TIGER + ", "").removeprefix("+ ").replace(" (fixed)", "")


def write_head_tail(rows: list[dict[str, Any]], groups: dict[str, Any], out_stem: str | Path) -> tuple[Path, Path]:
    """``<out>.md`` (table) and ``<out>.png`` (paper 001 Figure 3: NDCG@10 on head and tail items)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise SystemExit("head-tail: no DIR/<experiment>/analysis/head_tail.json for the requested rungs")
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    cols = [f"{g}_{m}" for g in ("head", "tail") for m in HEAD_TAIL_METRICS]
    lines = [
        "## Head / tail (paper 001 Figure 3 layout)",
        "",
        "Test-target items ranked by training interactions and split in two equal halves by item; "
        + ", ".join(f"{g}: {v.get('items')} items, {v.get('users')} test users" for g, v in groups.items())
        + ". Metrics over the users whose target is in the group; mean over seeds.",
        "",
        "| Method | seeds | " + " | ".join(c.replace("_", " ").replace("hit@", "H@").replace("ndcg@", "N@") for c in cols) + " |",
        "|" + "---|" * (len(cols) + 2),
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['seeds']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    md_path = out_stem.with_suffix(".md")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, group in zip(axes, ("head", "tail")):
        ax.bar([_short_label(r["label"]) for r in rows], [r[f"{group}_ndcg@10"] for r in rows], color=[f"C{i}" for i in range(len(rows))])
        ax.set_title(f"{group} items")
        ax.set_ylabel("NDCG@10")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    png_path = out_stem.with_suffix(".png")
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return md_path, png_path


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("queue", help="print (or queue with --run) the ladder's dvc experiments")
    q.add_argument("--seeds", type=int, default=5, help="number of seeds per rung (paper: 5)")
    q.add_argument("--first-seed", type=int, default=1, help="seeds first..first+N-1 (42 = params.yaml's, so ce repeats the default run)")
    q.add_argument("--rungs", nargs="*", default=None, help="only these rungs (default: all)")
    q.add_argument("--config", type=Path, default=None, help="a params overlay (e.g. configs/yelp-gpu.yaml) applied to every experiment")
    q.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="extra -S override for every experiment (after --config)")
    q.add_argument("--run", action="store_true", help="execute the dvc exp run --queue commands")
    q.add_argument("--now", action="store_true", help="run each experiment at once, one after another in the workspace (no queue)")
    q.add_argument("--archive", type=Path, default=None, help="with --now: copy each run's reports to DIR/<experiment>/")
    c = sub.add_parser("collect", help="tables from dvc exp show --json or per-experiment metrics.json")
    c.add_argument("--json", type=Path, default=None, help="saved `dvc exp show --json` output (default: run it)")
    c.add_argument("--metrics-dir", type=Path, default=None, help="DIR/<experiment>/metrics.json instead")
    c.add_argument("--out", type=Path, default=Path("reports/ladder"), help="output stem (.md and .csv)")
    c.add_argument("--reference", choices=sorted(PAPER_001), default=None, help="print paper 001's reported rows for this dataset beside ours")
    c.add_argument("--note", type=Path, default=None, help="Markdown file whose text goes under the table header (setting, how it was run)")
    h = sub.add_parser("head-tail", help="Figure 3: head/tail metrics of ce, frequency and curriculum from an --archive folder")
    h.add_argument("archive", type=Path, help="DIR/<experiment>/analysis/head_tail.json (queue --now --archive DIR)")
    h.add_argument("--rungs", nargs="*", default=list(HEAD_TAIL_RUNGS))
    h.add_argument("--out", type=Path, default=Path("reports/ladder_head_tail"))
    p = sub.add_parser("plot-alphas", help="Figure 5: alpha trajectories of a multi_target/curriculum run")
    p.add_argument("--live", type=Path, default=Path("reports/train/live"))
    p.add_argument("--out", type=Path, default=Path("reports/alphas.png"))
    args = ap.parse_args(argv)

    if args.mode == "queue":
        rungs = [r for r in RUNGS if args.rungs is None or r.name in args.rungs]
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from genrec_core.config import absolute_path_overrides, flatten_overlay

        overrides = (flatten_overlay(args.config) if args.config is not None else []) + list(args.overrides)
        if not args.now:
            overrides = absolute_path_overrides(overrides)
        for cmd in experiment_commands(seeds, overrides, rungs):
            if args.now:
                cmd = [c for c in cmd if c != "--queue"]
            print(shlex.join(cmd), flush=True)
            if args.run or args.now:
                subprocess.run(cmd, check=True)
            if args.now and args.archive is not None:
                archive_reports(Path("reports"), args.archive / cmd[cmd.index("-n") + 1])
        if args.run and not args.now:
            print("queued; start with: dvc queue start -j 1")
        return 0
    if args.mode == "collect":
        if args.metrics_dir is not None:
            exps = experiments_from_dir(args.metrics_dir)
        else:
            text = (
                args.json.read_text(encoding="utf-8")
                if args.json
                else subprocess.run(["dvc", "exp", "show", "--json"], check=True, capture_output=True, text=True).stdout
            )
            exps = experiments_from_exp_show(json.loads(text))
        rows = summarise(exps)
        note = args.note.read_text(encoding="utf-8") if args.note else ""
        md, csv_path = write_tables(rows, args.out, args.reference, note)
        print(md.read_text(encoding="utf-8"))
        print(f"wrote {md} and {csv_path}", file=sys.stderr)
        return 0
    if args.mode == "head-tail":
        md, png = write_head_tail(*head_tail_summary(args.archive, args.rungs), args.out)
        print(md.read_text(encoding="utf-8"))
        print(f"wrote {md} and {png}", file=sys.stderr)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from genrec_core.analysis.training_logs import plot_alpha_trajectories

    print(plot_alpha_trajectories(args.live, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
