"""Reproduction: our results on the datasets the papers measured on, beside the papers' figures.

Usage (repository root, venv active; no ``dvc repro`` needed: every dataset gets its own upstream):

    python scripts/reproduction.py --config scripts/reproduction.yaml --seeds 42,43,44 --jobs 2 --threads 1 \\
        --work-dir /work/repro --out reports/reproduction
    python scripts/reproduction.py ... --datasets beauty --rows tiger-default,sasrec-ce   # a subset now
    python scripts/reproduction.py ... --report-only          # table what the work dir holds, run nothing
    python scripts/reproduction.py ... --datasets yelp --upstream-only   # the data, floors and transitions first

The YAML (scripts/reproduction.yaml) has one section per dataset::

    beauty:
      label: Amazon Beauty 2014 ...                     # optional
      config: configs/beauty.yaml                       # optional overlay (``genrec overrides FILE``); a
                                                        #   missing file is skipped with a note
      overrides: [data.dataset=idgenrec, data.raw_dir=../shared/datasets/beauty/idgenrec]
      rows:
        - name: tiger-default                           # the workspace prefix: <work-dir>/beauty/<name>-s<seed>
          label: TIGER-style decoder-only, our CPU default
          overrides: [...]                              # optional: key=value list (or "k=v,k=v", or a map)
          config: configs/tiger-paper.yaml              # optional overlay, before ``overrides``; missing: row skipped
          base: tiger-default                           # optional: the row its p-values and effect compare against
          paper_effect: true                            # optional: the paper measured this row against the base
                                                        #   row's method on one setup (same table), so the
                                                        #   paper's effect = this row's figure / the base's - 1
          runs_of: tiger-default                        # optional: table that row's runs (same settings)
                                                        #   under this row's label and paper figures
          paper: {source: "TIGER paper", hit@5: .0454, ndcg@5: .0321, hit@10: .0648, ndcg@10: .0384}
          note: ...                                     # optional, printed under the table

Relative ``data.raw_dir``/``data.cache_dir`` values and config paths are resolved against the
repository root. Papers say R@K for our Hit@K (leave-one-out, one target per user).

Per dataset (``<work-dir>/<dataset>``):

* ``params.yaml``: ``--params`` (default the project's params.yaml) with the dataset's overlay and
  overrides applied (rewritten every invocation; only the resolved values matter for reuse);
* ``upstream/``: preprocess -> embed -> train-tokenizer -> emit-ids built once with that file
  (benchmarks/runs.py, ``stages=UPSTREAM``), reused while its resolved params are the same (delete
  the folder to rebuild it; ``--force`` does not);
* ``<row>-s<seed>/``: ``genrec train`` then ``genrec evaluate`` (MTGRec: its fine-tuning slots and
  select-tokenizer before evaluate) with ``-S seed=<seed>``, the row's overrides, then every
  ``--set``; linked to ``upstream/data/*`` (an override of ``data.``/``embed.``/``tokenizer.``/``ids.``
  rebuilds that part in the run's own workspace). A finished workspace with the same resolved params
  and inputs is reused (``--force`` retrains the selected runs).

``--datasets``/``--rows`` select what runs now; the report always tables every row of the YAML with
finished workspaces in the work dir (any seed), so partial sessions accumulate. A workspace whose
params differ from the YAML row + ``--set`` of this invocation is not tabled (a note says so).

The table per dataset: mean ± sample std (ddof 1) over seeds of H@5, N@5, H@10, N@10, the seeds
finished, the two-sided Mann-Whitney U p against the row's ``base`` (one
genrec_core.evaluation.significance.results_table call per base), mean training seconds per run
(summary.json), the paper's figures and ours/paper; then the floors (MostPop, first-order Markov:
deterministic, computed on the upstream's test split) and, under the table, the share of users whose
(last history item -> target) pair is a transition of the training data
(genrec_core.evaluation.transitions); then what each row's finished runs measured about themselves
(scripts/run_diagnostics.py: validation-test ratio, BLOGER's codebook density and entropy and IDs
changed per update, MTGRec's last tokenizer mix). Rows with no finished run are "not run yet", with
the command that runs them.

Writes ``<out>.md``, ``<out>.csv`` (one line per dataset x row, floors included) and
``<out>_runs.csv`` (every tabled run, the failed runs of this invocation and the floors).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "scripts"))
from converged import FLOOR_LABELS, _f, _mean, floor_metrics, overlay_overrides, override_list, run_row, write_runs_csv  # noqa: E402
from run_diagnostics import diagnostics_lines  # noqa: E402

from benchmarks import runs  # noqa: E402
from benchmarks.runs import RunSpec, command_line, machine_line, report_failures, run_all  # noqa: E402

METRICS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")
SHORT = {"hit@5": "H@5", "ndcg@5": "N@5", "hit@10": "H@10", "ndcg@10": "N@10"}
STAGES = ("train", "evaluate")
UPSTREAM_NAME = "upstream"  # <work-dir>/<dataset>/upstream: a row may not take this name
DATASET_KEYS = ("label", "config", "overrides", "rows", "note")
ROW_KEYS = ("name", "label", "overrides", "config", "base", "runs_of", "paper", "paper_effect", "note")
EFFECT_METRICS = ("hit@10", "ndcg@10")  # the markdown's effect column (the CSV has every metric)
PAPER_KEYS = ("source", *METRICS)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
PATH_KEYS = ("data.raw_dir", "data.cache_dir")


class ConfigError(ValueError):
    """A reproduction YAML that cannot be used: says which dataset / row and what is wrong."""


@dataclass
class Paper:
    source: str = ""
    figures: dict[str, float] = field(default_factory=dict)  # metric -> the paper's figure


@dataclass
class Row:
    name: str
    label: str
    overrides: list[str] = field(default_factory=list)
    config: Path | None = None
    base: str | None = None
    runs_of: str | None = None
    paper: Paper = field(default_factory=Paper)
    note: str = ""
    paper_effect: bool = False  # the paper's figures of this row and its base come from one comparison
    resolved: list[str] | None = None  # overlay + overrides, paths absolute (``expand``); None: skipped
    skipped: str = ""  # why the row cannot run (its overlay file is missing)

    @property
    def workspace(self) -> str:
        """The prefix of the workspaces whose runs this row tables (``runs_of``'s, else its own)."""
        return self.runs_of or self.name


@dataclass
class Dataset:
    name: str
    label: str
    overrides: list[str] = field(default_factory=list)
    config: Path | None = None
    rows: list[Row] = field(default_factory=list)
    note: str = ""
    resolved: list[str] = field(default_factory=list)  # overlay + overrides, paths absolute (``expand``)
    notes: list[str] = field(default_factory=list)  # what expand / the run found (skipped files, failures)

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)


# --------------------------------------------------------------------------- the YAML


def _unknown(section: dict, known: tuple[str, ...], where: str) -> None:
    extra = [str(k) for k in section if k not in known]
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}; known: {', '.join(known)}")


def _name(value: Any, where: str, what: str) -> str:
    if value is None or str(value).strip() == "":
        raise ConfigError(f"{where}: no {what}")
    name = str(value)
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: {what} {name!r} must be letters, digits, '_', '.', '+' or '-' (a folder name)")
    return name


def _overrides(value: Any, where: str) -> list[str]:
    try:
        out = override_list(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: overrides: {exc}") from None
    bad = [o for o in out if "=" not in o]
    if bad:
        raise ConfigError(f"{where}: overrides {bad} are not key=value")
    return out


def _path(value: Any) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value))
    return path if path.is_absolute() else ROOT / path


def _paper(value: Any, where: str) -> Paper:
    if value is None:
        return Paper()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: paper must be a mapping of source and {', '.join(METRICS)}")
    _unknown(value, PAPER_KEYS, f"{where}: paper")
    figures = {}
    for m in METRICS:
        if value.get(m) is not None:
            fig = value[m]
            if isinstance(fig, bool) or not isinstance(fig, (int, float)) or not 0 < fig <= 1:
                raise ConfigError(f"{where}: paper {m} must be a number in (0, 1], got {fig!r}")
            figures[m] = float(fig)
    return Paper(str(value.get("source") or ""), figures)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _row(entry: Any, where: str) -> Row:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping ({', '.join(ROW_KEYS)}), got {entry!r}")
    _unknown(entry, ROW_KEYS, where)
    name = _name(entry.get("name"), where, "name")
    if name == UPSTREAM_NAME:
        raise ConfigError(f"{where}: the name {UPSTREAM_NAME!r} is the dataset's upstream folder; choose another")
    where = f"{where} ({name})"
    row = Row(
        name,
        str(entry.get("label") or name),
        _overrides(entry.get("overrides"), where),
        _path(entry.get("config")),
        None if entry.get("base") is None else str(entry["base"]),
        None if entry.get("runs_of") is None else str(entry["runs_of"]),
        _paper(entry.get("paper"), where),
        str(entry.get("note") or ""),
        _flag(entry.get("paper_effect", False), f"{where}: paper_effect"),
    )
    if row.paper_effect and not row.base:
        raise ConfigError(f"{where}: paper_effect compares the paper's figure with the base row's; the row has no base")
    if row.runs_of and (row.overrides or row.config):
        raise ConfigError(f"{where}: runs_of {row.runs_of!r} tables that row's runs; it cannot have overrides or a config of its own")
    return row


def parse_config(tree: Any, source: str = "config") -> list[Dataset]:
    """The datasets of a parsed reproduction YAML, checked (``ConfigError`` on the first problem)."""
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{source}: expected a mapping of dataset name -> section, got {tree!r:.80}")
    datasets = []
    for ds_name, section in tree.items():
        where = f"{source}: dataset {ds_name!r}"
        name = _name(ds_name, where, "dataset name")
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: must be a mapping ({', '.join(DATASET_KEYS)})")
        _unknown(section, DATASET_KEYS, where)
        entries = section.get("rows")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: rows must be a non-empty list")
        rows = [_row(entry, f"{where}, row {i + 1}") for i, entry in enumerate(entries)]
        names = [r.name for r in rows]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{where}: row names must be unique: {', '.join(dup)} repeated")
        for r in rows:
            for key, target in (("base", r.base), ("runs_of", r.runs_of)):
                if target is not None and target not in names:
                    raise ConfigError(f"{where}, row {r.name!r}: {key} {target!r} names no row of {name!r} ({', '.join(names)})")
            if r.runs_of and rows[names.index(r.runs_of)].runs_of:
                raise ConfigError(f"{where}, row {r.name!r}: runs_of {r.runs_of!r} itself has runs_of; name the row that runs")
            if r.base == r.name:
                raise ConfigError(f"{where}, row {r.name!r}: base names the row itself")
        datasets.append(
            Dataset(
                name,
                str(section.get("label") or name),
                _overrides(section.get("overrides"), where),
                _path(section.get("config")),
                rows,
                str(section.get("note") or ""),
            )
        )
    return datasets


def load_config(path: Path) -> list[Dataset]:
    import yaml

    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(tree, str(path))


def root_paths(overrides: list[str]) -> list[str]:
    """``data.raw_dir``/``data.cache_dir`` values that are relative made absolute against the repository root."""
    out = []
    for ov in overrides:
        key, _, value = ov.partition("=")
        if key.strip().lstrip("+") in PATH_KEYS and value.strip() not in ("", "null", "None") and not Path(value.strip()).is_absolute():
            ov = f"{key}={(ROOT / value.strip()).resolve()}"
        out.append(ov)
    return out


def rel(path: Path) -> str:
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)


def expand(datasets: list[Dataset], overlay=overlay_overrides) -> None:
    """Fill ``resolved`` of every dataset and row: overlay file (through ``genrec overrides``), then
    the section's own overrides, paths absolute. A missing dataset overlay is skipped with a note; a
    row whose overlay is missing is skipped (``skipped`` says why)."""
    for ds in datasets:
        overlaid: list[str] = []
        if ds.config is not None:
            if ds.config.exists():
                overlaid = overlay(ds.config)
            else:
                ds.notes.append(f"Dataset overlay {rel(ds.config)} does not exist (yet): the dataset runs without it.")
        ds.resolved = root_paths([*overlaid, *ds.overrides])
        for r in ds.rows:
            if r.config is not None and not r.config.exists():
                r.skipped = f"its overlay {rel(r.config)} does not exist (yet)"
                ds.notes.append(f"`{r.name}` skipped: {r.skipped}.")
                continue
            r.resolved = root_paths([*(overlay(r.config) if r.config is not None else []), *r.overrides])
        for r in ds.rows:  # a row tabling another's runs runs what that row runs
            if r.runs_of:
                source = ds.row(r.runs_of)
                r.resolved, r.skipped = source.resolved, source.skipped


def run_overrides(row: Row, seed: int, extra: list[str]) -> list[str]:
    """The ``-S`` overrides of one run: the seed, the row's, then every ``--set`` (later wins)."""
    return root_paths([f"seed={seed}", *(row.resolved or []), *extra])


def run_spec(ds: Dataset, row: Row, seed: int, extra: list[str]) -> RunSpec:
    return RunSpec(f"{row.workspace}-s{seed}", run_overrides(row, seed, extra), STAGES, {"dataset": ds.name, "method": row.workspace, "seed": seed})


def write_dataset_params(base: Path, overrides: list[str], out: Path) -> Path:
    """``base`` (a params.yaml) with ``overrides`` applied and relative ``data.raw_dir``/``data.cache_dir``
    made absolute against the repository root, as ``out`` (checked by load_params)."""
    import yaml

    from genrec_core.config import _set_dotted, load_params, parse_override

    tree = yaml.safe_load(Path(base).read_text(encoding="utf-8")) or {}
    for ov in overrides:
        key, value = parse_override(ov)
        _set_dotted(tree, key.lstrip("+"), value)
    for key in PATH_KEYS:  # the base file's relative paths mean the repository root's (a stage's cwd is its workspace)
        section, name = key.split(".")
        value = (tree.get(section) or {}).get(name)
        if isinstance(value, str) and not Path(value).is_absolute():
            tree[section][name] = str((ROOT / value).resolve())
    text = f"# {rel(base)} with the dataset's overrides of the reproduction YAML (scripts/reproduction.py writes this file)\n"
    text += "# " + " ".join(overrides) + "\n" + yaml.safe_dump(tree, sort_keys=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")
    load_params(out)
    return out


# --------------------------------------------------------------------------- finished runs


def scan_runs(ds: Dataset, ds_dir: Path, params_file: Path, extra: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """(every finished run of ``ds``'s rows in ``ds_dir``, any seed: ``converged.run_row`` dicts with
    ``dataset``; notes on workspaces that are not tabled). Finished = what benchmarks/runs.py
    would reuse for the YAML row + ``extra`` now (same resolved params and upstream inputs, outputs present)."""
    found, notes = [], []
    upstream = ds_dir / UPSTREAM_NAME
    for prefix in dict.fromkeys(r.workspace for r in ds.rows if r.resolved is not None):
        row = ds.row(prefix)
        for root in sorted(ds_dir.glob(f"{prefix}-s*")):
            match = re.fullmatch(re.escape(prefix) + r"-s(-?\d+)", root.name)
            if not match or not root.is_dir():
                continue
            spec = run_spec(ds, row, int(match[1]), extra)
            spec.overrides = runs.absolute_overrides(spec.overrides)
            key = runs.reuse_key(spec, params_file, upstream)
            if runs.is_finished(root, key):
                found.append({"dataset": ds.name, **run_row(runs.load_result(spec, root))})
            elif runs.record_matches(root, runs.read_json(root / "overrides.json"), key):
                notes.append(f"`{root.name}`: not finished (running, failed or killed; log {root / 'run.log'}).")
            else:
                notes.append(f"`{root.name}`: other params or inputs than the YAML row + --set of this invocation, or a rebuilt upstream: not tabled.")
    return found, notes


# --------------------------------------------------------------------------- the table


def row_command(args: argparse.Namespace, dataset: str, row: str) -> str:
    """The command that runs one row of one dataset (into the same work dir and report)."""
    words = [
        "python",
        "scripts/reproduction.py",
        "--config",
        str(args.config),
        "--seeds",
        ",".join(map(str, args.seeds)),
        "--jobs",
        str(args.jobs),
        "--threads",
        str(args.threads),
        "--work-dir",
        str(args.work_dir),
        "--out",
        str(args.out),
        "--datasets",
        dataset,
        "--rows",
        row,
    ]
    for s in args.set:
        words += ["--set", s]
    return shlex.join(words)


def _ratio(ours: float, paper: float | None) -> float:
    return ours / paper if paper and math.isfinite(ours) else float("nan")


def _effect(value: float, base: float) -> float:
    """Relative change against the base (+0.07 = 7% above it); NaN where either is missing."""
    return value / base - 1 if math.isfinite(value) and math.isfinite(base) and base > 0 else float("nan")


def add_effects(ds: Dataset, records: list[dict[str, Any]]) -> None:
    """Each row's effect against its base, ``effect_<m>`` = mean / base mean - 1, and beside it the
    paper's, ``paper_effect_<m>`` = the row's figure / the base row's - 1, where the row says the
    paper compared the two (``paper_effect``); NaN where a side is missing."""
    by_name = {rec["row"]: rec for rec in records}
    for r in ds.rows:
        rec, base = by_name[r.name], by_name.get(r.base or "")
        for m in METRICS:
            rec[f"effect_{m}"] = _effect(rec[f"{m}_mean"], base[f"{m}_mean"]) if base else float("nan")
            rec[f"paper_effect_{m}"] = _effect(rec[f"paper_{m}"], base[f"paper_{m}"]) if base and r.paper_effect else float("nan")


def dataset_table(
    ds: Dataset, found: list[dict[str, Any]], floors: dict[str, dict[str, float]] | None, command=lambda dataset, row: ""
) -> list[dict[str, Any]]:
    """One record per row of ``ds`` (YAML order), then the floors: means, sample std, seeds, p
    against the row's base, mean training seconds, the paper's figures and ours/paper, status
    (``ok`` | ``not run yet`` | ``skipped: ...`` | ``deterministic``) and, for rows without a
    finished run, the command that runs them. ``found``: ``run_row`` dicts of finished runs
    (``method`` = the workspace prefix, ``seed``, ``metrics``, ``seconds``)."""
    from genrec_core.evaluation.significance import results_table

    groups: dict[str, list[dict[str, float]]] = {}
    seeds: dict[str, list[Any]] = {}
    seconds: dict[str, float] = {}
    for r in ds.rows:
        mine = sorted((x for x in found if x["method"] == r.workspace), key=lambda x: x["seed"])
        if mine and r.resolved is not None:
            groups[r.name] = [x["metrics"] for x in mine]
            seeds[r.name] = [x["seed"] for x in mine]
            seconds[r.name] = _mean([x.get("seconds") for x in mine])
    tables = {None: results_table(groups, None, METRICS, seeds=seeds)} if groups else {}
    for base in {r.base for r in ds.rows if r.base in groups}:
        tables[base] = results_table(groups, base, METRICS, seeds=seeds)
    out = []
    for r in ds.rows:
        rec: dict[str, Any] = {
            "dataset": ds.name,
            "row": r.name,
            "label": r.label,
            "base": r.base or "",
            "runs_of": r.runs_of or "",
            "paper_source": r.paper.source,
            "seeds_finished": len(seeds.get(r.name, [])),
            "seeds": " ".join(map(str, seeds.get(r.name, []))),
            "train_seconds": seconds.get(r.name, float("nan")),
            "command": "",
        }
        if r.name in groups:
            rec["status"] = "ok"
            plain = next(x for x in tables[None].rows if x.method == r.name)
            vs = next((x for x in tables[r.base].rows if x.method == r.name), None) if r.base in tables else None
        else:
            rec["status"] = f"skipped: {r.skipped}" if r.skipped else "not run yet"
            rec["command"] = "" if r.skipped else command(ds.name, r.name)
            plain = vs = None
        for m in METRICS:
            rec[f"{m}_mean"] = plain.mean[m] if plain else float("nan")
            rec[f"{m}_std"] = plain.std[m] if plain else float("nan")
            rec[f"{m}_p"] = vs.p[m] if vs else float("nan")
            rec[f"paper_{m}"] = r.paper.figures.get(m, float("nan"))
            rec[f"ratio_{m}"] = _ratio(rec[f"{m}_mean"], r.paper.figures.get(m))
        out.append(rec)
    add_effects(ds, out)
    for name, met in (floors or {}).items():
        rec = {
            "dataset": ds.name,
            "row": name,
            "label": FLOOR_LABELS.get(name, name),
            "base": "",
            "runs_of": "",
            "paper_source": "",
            "seeds_finished": "",
            "seeds": "",
            "train_seconds": float("nan"),
            "command": "",
            "status": "deterministic",
        }
        for m in METRICS:
            rec.update(
                {
                    f"{m}_mean": met.get(m, float("nan")),
                    f"{m}_std": float("nan"),
                    f"{m}_p": float("nan"),
                    f"paper_{m}": float("nan"),
                    f"ratio_{m}": float("nan"),
                    f"effect_{m}": float("nan"),
                    f"paper_effect_{m}": float("nan"),
                }
            )
        out.append(rec)
    return out


def _p(p: float) -> str:
    return "" if not math.isfinite(p) else (f"{p:.3g}" if p >= 0.001 else f"{p:.1e}")


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "-"


def effect_cell(rec: dict[str, Any]) -> str:
    """``ours +21.0% / +20.9%`` (H@10 / N@10 against the base) and, where the paper compared the
    two, ``paper +7.4% / +9.7%`` under it; empty for a row without a base."""
    if not rec["base"]:
        return ""
    cell = "ours " + " / ".join(_pct(rec[f"effect_{m}"]) for m in EFFECT_METRICS)
    paper = [rec[f"paper_effect_{m}"] for m in EFFECT_METRICS]
    if any(math.isfinite(x) for x in paper):
        cell += "<br>paper " + " / ".join(_pct(x) for x in paper)
    return cell


def markdown_table(records: list[dict[str, Any]]) -> list[str]:
    """The dataset's table: ours (mean ± std, p vs base under it), seeds, base, the effect against
    it (ours; the paper's where it compared the two), seconds, and per metric the paper's figure
    with ours/paper under it."""
    effect_head = f"effect vs base ({' / '.join(SHORT[m] for m in EFFECT_METRICS)})"
    papers = [f"paper {SHORT[m]}" for m in METRICS]
    head = ["row", "method", "seeds", *(SHORT[m] for m in METRICS), "base", effect_head, "train s / run", *papers, "paper's source"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (1 + len(METRICS)) + ["---", "---:", "---:"] + ["---:"] * len(METRICS) + ["---"]) + "|",
    ]
    for rec in records:
        if rec["status"] == "ok":
            seeds = str(rec["seeds_finished"])
        elif rec["status"] == "deterministic":
            seeds = "(floor)"
        else:
            seeds = rec["status"]
        cells = [f"`{rec['row']}`", rec["label"] + (f" (runs of `{rec['runs_of']}`)" if rec["runs_of"] else ""), seeds]
        for m in METRICS:
            mean, std, p = rec[f"{m}_mean"], rec[f"{m}_std"], rec[f"{m}_p"]
            cell = _f(mean) + (f" ± {_f(std)}" if math.isfinite(std) else "")
            cells.append(cell + (f"<br>p={_p(p)}" if math.isfinite(p) else ""))
        cells += [f"`{rec['base']}`" if rec["base"] else "", effect_cell(rec), _f(rec["train_seconds"], ".0f")]
        for m in METRICS:
            fig, ratio = rec[f"paper_{m}"], rec[f"ratio_{m}"]
            cells.append("" if not math.isfinite(fig) else _f(fig) + (f"<br>×{ratio:.2f}" if math.isfinite(ratio) else ""))
        cells.append(rec["paper_source"])
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines


def transition_lines(stats: dict[str, Any] | None) -> list[str]:
    if not stats:
        return ["Transition statistic: not computed (the upstream is not built yet)."]
    return [
        f"Known transitions: for {100 * stats['test_train+valid']:.1f}% of the {stats['users_test']:,} test users the pair (last history item -> target) "
        f"occurs as consecutive items of some user's training data (every user's sequence without its last two items, plus every user's transition into "
        f"their validation item, which the test input holds: what the Markov floor learns from); {100 * stats['test_train']:.1f}% without the validation "
        f"transitions; validation split: {100 * stats['valid']:.1f}% of {stats['users_valid']:,} users (training part only). "
        "Only for such users can the transition-ranked head of the Markov floor's list hold the target (the rest of its list is MostPop back-off; "
        "genrec_core/evaluation/transitions.py)."
    ]


def data_line(upstream: Path) -> str:
    stats = runs.read_json(upstream / "reports" / "data_stats.json")
    if not stats:
        return "Data: upstream not built yet."
    return (
        f"Data after the {stats.get('min_interactions')}-core filter: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions (history window {stats.get('max_items')}); upstream: `{upstream}`."
    )


def row_workspaces(ds: Dataset, found: list[dict[str, Any]]) -> list[tuple[str, list[Path]]]:
    """(row name, its finished workspaces in seed order) per row of ``ds`` that the table counts."""
    return [
        (r.name, [Path(x["workspace"]) for x in sorted(found, key=lambda x: x["seed"]) if x["method"] == r.workspace])
        for r in ds.rows
        if r.resolved is not None
    ]


def dataset_section(
    ds: Dataset,
    records: list[dict[str, Any]],
    upstream: Path,
    transitions: dict[str, Any] | None,
    notes: list[str],
    diagnostics: list[str] = (),
) -> list[str]:
    lines = [
        f"## {ds.name}: {ds.label}",
        "",
        f"Dataset overrides: `{' '.join(dict.fromkeys(ds.resolved)) or '(params.yaml as is)'}`.",
        "",
        data_line(upstream),
        "",
    ]
    lines += markdown_table(records)
    lines += ["", *transition_lines(transitions), ""]
    if diagnostics:
        lines += [*diagnostics, ""]
    todo = [r for r in records if r["command"]]
    if todo:
        lines += ["Not run yet (the command that runs each; it adds to this report):", ""]
        lines += [f"- `{r['row']}`: `{r['command']}`" for r in todo] + [""]
    row_notes = [f"`{r.name}`: {r.note}" for r in ds.rows if r.note]
    all_notes = [*([ds.note] if ds.note else []), *row_notes, *ds.notes, *notes]
    if all_notes:
        lines += ["Notes:", "", *[f"- {n}" for n in all_notes], ""]
    return lines


def markdown(sections: list[list[str]], command: str, machine: str, args: argparse.Namespace) -> str:
    lines = [
        "# Reproduction: our results on the papers' datasets, beside the papers' figures",
        "",
        f"Regenerate: `{command}`",
        "",
        machine,
        "",
        f"Written {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} from the work dir `{args.work_dir}` (config `{args.config}`).",
        "",
        "Per dataset, the upstream (preprocess -> embed -> train-tokenizer -> emit-ids) is built once in `<work-dir>/<dataset>/upstream` "
        "with the dataset's overrides; every row x seed is `genrec train` then `genrec evaluate` in `<work-dir>/<dataset>/<row>-s<seed>`, linked to it "
        "(a row overriding `data.`/`embed.`/`tokenizer.`/`ids.` rebuilds that part in its own workspace), params: the dataset's, then `seed`, the row's "
        "overrides"
        + (", then " + " ".join(f"`{s}`" for s in args.set) if args.set else "")
        + ". Model selection on validation NDCG@10; test metrics of the selected checkpoint, "
        "full ranking of every test user (leave-one-out: the papers' R@K is our H@K).",
        "",
        "Cells: mean ± sample std (ddof 1) over the finished seeds; under it, the two-sided Mann-Whitney U p against the row's `base` "
        "(3 vs 3 seeds can never reach p < 0.05: the smallest p is 0.1). Effect vs base: our mean over the base's mean - 1 on H@10 / N@10 "
        "and, under it, the paper's own figure over its figure for the base's method where the paper measured both on one setup "
        "(the sign and size of each method's effect beside the paper's). Paper columns: the paper's figure, under it ours/paper (×). "
        "Train s / run: training + validation seconds of summary.json (mean over seeds). The floors (MostPop, Markov chain) are deterministic, "
        "computed on the upstream's test split. Every row with finished workspaces in the work dir is tabled, whichever invocation ran it; "
        f"per-run metrics: `{Path(args.out).name}_runs.csv`.",
        "",
    ]
    for section in sections:
        lines += section
    return "\n".join(lines).rstrip() + "\n"


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    cols = [
        "dataset",
        "row",
        "label",
        "status",
        "seeds_finished",
        "seeds",
        "base",
        "runs_of",
        "train_seconds",
        *(f"{m}_{k}" for m in METRICS for k in ("mean", "std", "p")),
        *(f"{k}_{m}" for m in METRICS for k in ("paper", "ratio")),
        *(f"{k}_{m}" for m in METRICS for k in ("effect", "paper_effect")),
        "paper_source",
        "command",
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for rec in records:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()})


# --------------------------------------------------------------------------- main


def select(datasets: list[Dataset], names: list[str] | None, rows: list[str] | None) -> list[tuple[Dataset, list[Row]]]:
    """(dataset, rows to run) for ``--datasets``/``--rows`` (None: all); unknown names fail."""
    known = [d.name for d in datasets]
    for n in names or []:
        if n not in known:
            raise ConfigError(f"--datasets: {n!r} is not a dataset of the config ({', '.join(known)})")
    chosen = [d for d in datasets if names is None or d.name in names]
    all_rows = {r.name for d in chosen for r in d.rows}
    for n in rows or []:
        if n not in all_rows:
            raise ConfigError(f"--rows: {n!r} is no row of {', '.join(d.name for d in chosen)} ({', '.join(sorted(all_rows))})")
    picked = [(d, [r for r in d.rows if rows is None or r.name in rows]) for d in chosen]
    return [(d, r) for d, r in picked if r]


def run_dataset(ds: Dataset, chosen: list[Row], args: argparse.Namespace, params_file: Path, command: str) -> list[runs.RunResult]:
    """Build (or reuse) the dataset's upstream, then run (or reuse) the chosen rows x seeds."""
    ds_dir = args.work_dir / ds.name
    [up] = run_all(
        [RunSpec(UPSTREAM_NAME, [], runs.UPSTREAM, {"dataset": ds.name, "method": UPSTREAM_NAME, "seed": ""})],
        ds_dir,
        params_file,
        1,
        args.threads,
        False,
        command,
    )
    if not up.ok:
        ds.notes.append(f"FAILED upstream: {up.short_error()} (log: {up.root}/run.log); no run of {ds.name} started.")
        return [up]
    if getattr(args, "upstream_only", False):
        return [up]
    specs = {}
    for r in chosen:
        if r.resolved is None:
            continue
        for seed in args.seeds:
            spec = run_spec(ds, r, seed, args.set)
            specs.setdefault(spec.name, spec)  # a runs_of row and its source share workspaces
    results = run_all(list(specs.values()), ds_dir, params_file, args.jobs, args.threads, args.force, command, upstream_root=up.root)
    ds.notes += [f"FAILED `{r.spec.name}`: {r.short_error()} (log: {r.root}/run.log)" for r in results if not r.ok]
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("scripts/reproduction.yaml"), help="the reproduction YAML (datasets, rows, papers' figures)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[42, 43, 44], help="comma-separated seeds")
    ap.add_argument(
        "--datasets", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None, help="comma-separated datasets to run (default all)"
    )
    ap.add_argument("--rows", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None, help="comma-separated rows to run (default all)")
    ap.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run (repeatable; not the upstream)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/genrec_reproduction"))
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="params file the datasets' overrides apply to (default the project's)")
    ap.add_argument("--out", type=Path, default=Path("reports/reproduction"))
    ap.add_argument("--force", action="store_true", help="retrain the selected runs (not the upstream)")
    ap.add_argument("--report-only", action="store_true", help="run nothing: table what the work dir holds")
    ap.add_argument(
        "--upstream-only", action="store_true", help="build (or reuse) the selected datasets' upstreams, run no row: their data counts, floors and transitions"
    )
    args = ap.parse_args(argv)
    if args.report_only and args.upstream_only:
        raise SystemExit("error: --report-only runs nothing, --upstream-only builds the upstreams: choose one")

    command = command_line()
    try:
        datasets = load_config(args.config)
        chosen = select(datasets, args.datasets, args.rows)
        expand(datasets)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    work_dir = args.work_dir.resolve()
    if work_dir == ROOT or ROOT / "data" in (work_dir, *work_dir.parents):
        raise SystemExit(f"error: --work-dir {work_dir}: choose a scratch folder outside the project's data (e.g. /tmp/...)")
    results: list[runs.RunResult] = []
    params_files = {ds.name: work_dir / ds.name / "params.yaml" for ds in datasets}
    for ds in datasets:
        if (work_dir / ds.name).exists() or (not args.report_only and ds.name in [d.name for d, _ in chosen]):
            try:
                write_dataset_params(args.params, ds.resolved, params_files[ds.name])
            except Exception as exc:  # bad dataset override: nothing of it can run
                raise SystemExit(f"error: dataset {ds.name}: {exc}") from None
    if not args.report_only:
        run_args = argparse.Namespace(**{**vars(args), "work_dir": work_dir})
        for ds, rows in chosen:
            try:
                results += run_dataset(ds, rows, run_args, params_files[ds.name], command)
            except Exception as exc:  # bad override: nothing ran
                raise SystemExit(f"error: dataset {ds.name}: {exc}") from None
        report_failures(results)

    from genrec_core.config import load_params
    from genrec_core.evaluation.transitions import transition_statistics

    sections, records, run_lines = [], [], []
    for ds in datasets:
        ds_dir, upstream = work_dir / ds.name, work_dir / ds.name / UPSTREAM_NAME
        found, notes, floors, transitions = [], [], None, None
        if params_files[ds.name].exists():
            found, notes = scan_runs(ds, ds_dir, params_files[ds.name], args.set)
            if runs.is_finished(upstream, runs.reuse_key(RunSpec(UPSTREAM_NAME, [], runs.UPSTREAM), params_files[ds.name])):
                ev = load_params(params_files[ds.name], args.set).evaluate
                floors = floor_metrics(upstream, list(ev.ks), max(ev.beam_size, max(ev.ks)))
                transitions = transition_statistics(upstream)
            elif upstream.exists():
                notes.append(f"The upstream in {upstream} is not finished or was built with other params: no floors (run without --report-only to rebuild it).")
        recs = dataset_table(ds, found, floors, lambda d, r: row_command(args, d, r))
        records += recs
        sections.append(dataset_section(ds, recs, upstream, transitions, notes, diagnostics_lines(row_workspaces(ds, found))))
        run_lines += found + [
            {**run_row(r), "dataset": ds.name} for r in results if not r.ok and r.spec.info.get("dataset") == ds.name and r.spec.name != UPSTREAM_NAME
        ]
        run_lines += [{"dataset": ds.name, "method": name, "seed": "", "status": "deterministic", "metrics": met} for name, met in (floors or {}).items()]

    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(sections, command, machine_line(args.threads, args.jobs), args)
    Path(f"{out}.md").write_text(md, encoding="utf-8")
    write_csv(Path(f"{out}.csv"), records)
    metric_keys = list(dict.fromkeys(k for r in run_lines for k in r.get("metrics", {}))) or list(METRICS)
    write_runs_csv(out.parent / f"{out.name}_runs.csv", run_lines, {}, metric_keys, lead=("dataset",))
    print(md)
    print(f"wrote {out}.md, {out}.csv, {out}_runs.csv")
    return 1 if any(not r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
