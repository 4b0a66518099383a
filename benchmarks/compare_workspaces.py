"""Do two runs give the same results to the last digit? (A refactor must keep results bit-identical.)

For each pair of workspaces (``BEFORE=AFTER``): the test metrics of ``reports/metrics.json``
(every key but the timing ``users_per_second``), the best validation of
``reports/train/best_valid.json``, and whether the predictions (``data/predictions/test.parquet``)
and, where present, ``reports/method/influence.csv`` (or the older ``reports/mtgrec/``) and the
final ID table are byte-identical.

    python benchmarks/compare_workspaces.py /work/before=/work/after \\
        /work/ident_before/mtgrec-s42=/work/ident_after/mtgrec-s42 --out reports/benchmarks/refactor_identity
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

TIMING = {"users_per_second", "seconds"}


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def first_existing(root: Path, *relative: str) -> Path:
    for rel in relative:
        if (root / rel).exists():
            return root / rel
    return root / relative[0]


def compare(before: Path, after: Path) -> dict:
    """What matches between the two workspaces (metrics by value, files by SHA-256)."""
    out: dict = {}
    for name, rel in (("test", "reports/metrics.json"), ("valid", "reports/train/best_valid.json")):
        a, b = (json.loads((w / rel).read_text()) for w in (before, after))
        out[name] = {k: v for k, v in a.items() if k not in TIMING}
        out[f"{name}_equal"] = out[name] == {k: v for k, v in b.items() if k not in TIMING}
    files = {
        "predictions": ("data/predictions/test.parquet",),
        "influence.csv": ("reports/method/influence.csv", "reports/mtgrec/influence.csv"),
        "final IDs": ("data/recommender/item_ids.parquet",),
    }
    for name, candidates in files.items():
        a, b = digest(first_existing(before, *candidates)), digest(first_existing(after, *candidates))
        out[name] = "absent" if a is None and b is None else ("identical" if a == b else "DIFFERENT")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", help="BEFORE=AFTER workspace pairs")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.md")
    args = ap.parse_args(argv)
    lines = [
        "| before | after | test H@10 | test N@10 | test metrics | best validation | predictions | influence.csv | final IDs |",
        "|---|---|---:|---:|---|---|---|---|---|",
    ]
    for pair in args.pairs:
        before, after = (Path(p) for p in pair.split("=", 1))
        c = compare(before, after)
        lines.append(
            f"| {before} | {after} | {c['test'].get('hit@10', float('nan')):.4f} | {c['test'].get('ndcg@10', float('nan')):.4f} | "
            f"{'identical' if c['test_equal'] else 'DIFFERENT'} | {'identical' if c['valid_equal'] else 'DIFFERENT'} | "
            f"{c['predictions']} | {c['influence.csv']} | {c['final IDs']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        command = "python benchmarks/compare_workspaces.py " + " ".join(sys.argv[1:])
        args.out.with_suffix(".md").write_text(f"# Before and after a refactor\n\nRegenerate: `{command}`\n\n{table}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
