"""How often a model ranks an item the user already has first: the diagnosis of a near-zero Hit@1.

For each run's test predictions (``data/predictions/test.parquet``) against its test examples
(``data/processed/test.parquet`` of the run, or ``--processed``): the share of users whose top-1
item is the last item of their history, the share whose top-1 is anywhere in their history, and
the share of test targets that lie in the history (five-core leave-one-out data without repeats:
0, so a top-1 from the history is a wasted slot). Hit@1 and Hit@10 beside them.

    python benchmarks/top1_in_history.py --processed /work/repro/beauty/upstream/data/processed \\
        --runs /work/repro/beauty/{sasrec-bce,sasrec-ce,gru4rec-ce,tiger-default}-s42 --out reports/benchmarks/top1_in_history
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl


def history_shares(predictions: pl.DataFrame, test: pl.DataFrame) -> dict[str, float]:
    """Shares over users: top-1 = last history item, top-1 in history, target in history; Hit@1, Hit@10."""
    joined = predictions.join(test.select("user_id", "history"), on="user_id", how="inner")
    if joined.height != predictions.height:
        raise SystemExit(f"{predictions.height - joined.height} predicted users are missing from the test examples")
    ranked = joined["items"].to_list()
    histories = [set(h) for h in joined["history"].to_list()]
    last = [h[-1] for h in joined["history"].to_list()]
    targets = joined["target_item"].to_list()
    top1 = [r[0] for r in ranked]
    return {
        "users": float(joined.height),
        "top1_is_last_item": float(np.mean([t == x for t, x in zip(top1, last)])),
        "top1_in_history": float(np.mean([t in h for t, h in zip(top1, histories)])),
        "target_in_history": float(np.mean([t in h for t, h in zip(targets, histories)])),
        "hit@1": float(np.mean([t == x for t, x in zip(top1, targets)])),
        "hit@10": float(np.mean([x in r[:10] for r, x in zip(ranked, targets)])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="run workspaces (each with data/predictions/test.parquet)")
    ap.add_argument("--processed", type=Path, default=None, help="data/processed of the runs (default: each run's own)")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.md")
    args = ap.parse_args(argv)
    rows = []
    for run in args.runs:
        processed = args.processed or run / "data" / "processed"
        shares = history_shares(pl.read_parquet(run / "data" / "predictions" / "test.parquet"), pl.read_parquet(processed / "test.parquet"))
        rows.append((run.name, shares))
    header = "| run | users | top-1 = last history item | top-1 in history | target in history | Hit@1 | Hit@10 |\n|---|---:|---:|---:|---:|---:|---:|"
    lines = [header] + [
        f"| {name} | {int(s['users'])} | {s['top1_is_last_item']:.4f} | {s['top1_in_history']:.4f} | "
        f"{s['target_in_history']:.4f} | {s['hit@1']:.4f} | {s['hit@10']:.4f} |"
        for name, s in rows
    ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        command = "python benchmarks/top1_in_history.py " + " ".join(sys.argv[1:])
        text = f"# Top-1 from the user's own history\n\nRegenerate: `{command}`\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n{table}\n"
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
