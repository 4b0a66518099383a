"""How large is a change between two runs, and could validation on a user sample have seen it?

    python benchmarks/paired_difference.py --base WORKSPACE --runs WORKSPACE [WORKSPACE ...] \\
        [--sample 5000] [--ks 10] [--out reports/benchmarks/paired_difference_beauty]

Each workspace is a finished run (``data/predictions/test.parquet``; ``reports/train/best_valid.json``
when it trained with validation). Per run against the base, over the test users both ranked
(the same users, else an error): the per-user difference of Hit@K and NDCG@K (the metrics of
genrec_core.evaluation.metrics), its mean (absolute and relative to the base's mean), the paired
standard error sd(diff) / sqrt(N) with a normal 95% interval and two-sided p, and the standard
error the same per-user sd gives a difference measured on ``--sample`` of the N users
(x sqrt(1 - n/N)): what early stopping on a validation sample of that size can resolve. The test
difference's sd stands in for the validation one (the validation ranks are not kept), so the
sample's error is an estimate; the validation gain the two runs recorded is printed beside it.

Why: on Beauty the two levers tried for the default's last few percent (30 epochs, dropout 0.2)
were ahead on the 5,000-user validation sample and not on the test split; this says how much of
either figure is noise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from genrec_core.evaluation.metrics import per_user_metrics, target_ranks  # noqa: E402

PREDICTIONS = Path("data") / "predictions" / "test.parquet"
BEST_VALID = Path("reports") / "train" / "best_valid.json"


def per_user(workspace: Path, ks: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(user ids sorted, {metric: per-user values in that order}) of a workspace's test predictions."""
    path = workspace / PREDICTIONS
    if not path.exists():
        raise SystemExit(f"{path}: no test predictions (is {workspace} a finished run?)")
    frame = pl.read_parquet(path, columns=["user_id", "target_item", "items"]).sort("user_id")
    users = frame["user_id"].to_numpy()
    if len(np.unique(users)) != len(users):
        raise SystemExit(f"{path}: a user is ranked twice")
    return users, per_user_metrics(target_ranks(frame["items"], frame["target_item"].to_numpy()), ks)


def normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def paired(base: np.ndarray, run: np.ndarray, sample: int) -> dict[str, float]:
    """The paired difference run - base over the same users, and the error on a ``sample`` of them."""
    diff = run - base
    n = diff.size
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n else float("nan")
    m = min(sample, n)
    se_sample = sd / math.sqrt(m) * math.sqrt(1.0 - m / n) if m else float("nan")
    mean_base = float(base.mean())
    mean_diff = float(diff.mean())
    return {
        "base_mean": mean_base,
        "run_mean": float(run.mean()),
        "diff": mean_diff,
        "relative": mean_diff / mean_base if mean_base else float("nan"),
        "sd": sd,
        "se": se,
        "ci_low": mean_diff - 1.96 * se,
        "ci_high": mean_diff + 1.96 * se,
        "p": normal_two_sided_p(mean_diff / se) if se > 0 else (1.0 if mean_diff == 0 else 0.0),
        "se_sample": se_sample,
        "users": n,
        "sample": m,
    }


def best_valid(workspace: Path) -> dict[str, Any] | None:
    path = workspace / BEST_VALID
    return json.loads(path.read_text()) if path.exists() else None


def compare(base: Path, runs: list[Path], ks: list[int], sample: int) -> list[dict[str, Any]]:
    base_users, base_metrics = per_user(base, ks)
    base_valid = best_valid(base)
    rows = []
    for run in runs:
        users, metrics = per_user(run, ks)
        if not np.array_equal(users, base_users):
            raise SystemExit(f"{run / PREDICTIONS}: ranks other users than {base / PREDICTIONS} ({len(users)} against {len(base_users)})")
        valid = best_valid(run)
        for key in base_metrics:
            row = {"run": run.name, "metric": key, **paired(base_metrics[key], metrics[key], sample)}
            vkey = f"best_valid_{key}"
            if base_valid and valid and vkey in base_valid and vkey in valid:
                row["valid_base"], row["valid_run"] = float(base_valid[vkey]), float(valid[vkey])
                row["valid_diff"] = row["valid_run"] - row["valid_base"]
            rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]], base: Path, command: str, notes: list[str] = ()) -> str:
    lines = [
        "# Paired test differences, and what a validation sample can resolve",
        "",
        f"Command: `{command}`",
        "",
        f"Base: `{base}`. Each row: run - base per test user (same users), mean with the paired standard error "
        "sd(diff)/sqrt(N), normal 95% interval and two-sided p; then the standard error the same sd gives on the "
        "validation sample (n of N users, x sqrt(1 - n/N)) and the best-validation difference the two runs recorded, "
        "in units of that error.",
        "",
        "| run | metric | base | run | diff (relative) | SE | 95% interval | p | sd(diff) | SE on n users | valid diff | valid diff / SE |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        valid = "-" if "valid_diff" not in r else f"{r['valid_diff']:+.4f} ({r['valid_run']:.4f} - {r['valid_base']:.4f})"
        ratio = "-" if "valid_diff" not in r or not r["se_sample"] else f"{r['valid_diff'] / r['se_sample']:+.1f}"
        lines.append(
            f"| `{r['run']}` | {r['metric']} | {r['base_mean']:.4f} | {r['run_mean']:.4f} | "
            f"{r['diff']:+.4f} ({r['relative']:+.1%}) | {r['se']:.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p']:.2g} | "
            f"{r['sd']:.4f} | {r['se_sample']:.4f} (n={r['sample']:,} of {r['users']:,}) | {valid} | {ratio} |"
        )
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the base run's workspace")
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="workspaces compared with the base")
    ap.add_argument("--ks", type=int, nargs="+", default=[10], help="cut-offs (default 10)")
    ap.add_argument("--sample", type=int, default=5000, help="validation sample size whose error is estimated (default 5000)")
    ap.add_argument("--note", action="append", default=[], help="a line printed under the table (repeatable): how a run was made")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.json")
    args = ap.parse_args(argv)
    if args.sample < 1 or any(k < 1 for k in args.ks):
        ap.error("--sample and --ks must be positive")
    rows = compare(args.base, args.runs, args.ks, args.sample)
    command = "python benchmarks/paired_difference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = to_markdown(rows, args.base, command, args.note)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
