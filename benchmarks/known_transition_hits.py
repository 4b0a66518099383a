"""Where a run's test hits come from: users whose (last item -> target) pair is a known transition, and the rest.

Under leave-one-out a first-order Markov chain can rank the target high only for the test users whose
pair (last history item -> target) occurs as consecutive items somewhere in the data it learns from
(``genrec_core/evaluation/transitions.py``: every user's training part plus the transition into their
validation item, which the test input holds). On a dataset where that Markov floor is strong, the
question for every model is how much of its Hit@10 comes from those users (recalling a seen pair) and
how much from the others (generalising). This reads each finished run's test predictions
(``data/predictions/test.parquet``) and its own processed data (item indices differ between copies of
a dataset), splits the test users by the known-transition mask, and prints Hit@10 and NDCG@10 on
each part beside the Markov floor's on the same split.

    python benchmarks/known_transition_hits.py --runs /work/repro/beauty/{tiger-default,tiger-letter-ids,sasrec-ce}-s42 \\
        --out reports/benchmarks/known_transition_hits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.evaluation.baselines import baseline_predictions, sequences_before_target
from genrec_core.evaluation.metrics import per_user_metrics, target_ranks
from genrec_core.evaluation.transitions import known_transition_mask

KS = (10,)


def _per_user(predictions: pl.DataFrame, test: pl.DataFrame) -> dict[str, np.ndarray]:
    """hit@10 / ndcg@10 per test user, in ``test``'s user order (a user missing from the predictions fails)."""
    joined = test.select("user_id").join(predictions.select("user_id", "items", "target_item"), on="user_id", how="left", maintain_order="left")
    if joined["items"].null_count():
        raise SystemExit(f"{joined['items'].null_count()} test users have no prediction")
    return per_user_metrics(target_ranks(joined["items"], joined["target_item"].to_numpy()), KS)


def split_metrics(per_user: dict[str, np.ndarray], known: np.ndarray) -> dict[str, float]:
    """Hit@10 / NDCG@10 over all users, the known-transition users and the rest; each part's share of all hits."""
    hit, ndcg = per_user["hit@10"], per_user["ndcg@10"]
    out = {"hit@10": float(hit.mean()), "ndcg@10": float(ndcg.mean())}
    for name, mask in (("known", known), ("unknown", ~known)):
        out[f"{name}_hit@10"] = float(hit[mask].mean()) if mask.any() else float("nan")
        out[f"{name}_ndcg@10"] = float(ndcg[mask].mean()) if mask.any() else float("nan")
        out[f"{name}_hit_share"] = float(hit[mask].sum() / hit.sum()) if hit.sum() else float("nan")
    return out


def run_rows(run: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    """(known share, the run's split metrics, the Markov floor's on the same processed data)."""
    processed = run / "data" / "processed"
    sequences = pl.read_parquet(processed / "sequences.parquet")
    test = pl.read_parquet(processed / "test.parquet").select("user_id", "history", "target")
    last = test.select(pl.col("history").list.last().fill_null(-1)).to_series().to_numpy()
    known = known_transition_mask(sequences_before_target(sequences, "test"), last, test["target"].to_numpy())
    model = split_metrics(_per_user(pl.read_parquet(run / "data" / "predictions" / "test.parquet"), test), known)
    n_items = int(pl.read_parquet(processed / "items.parquet").height)
    markov = baseline_predictions(sequences, test, "test", n_items, 10)["markov"]
    return float(known.mean()), model, split_metrics(_per_user(markov, test), known)


def _row(name: str, share: float, m: dict[str, float]) -> str:
    return (
        f"| {name} | {share:.3f} | {m['hit@10']:.4f} | {m['ndcg@10']:.4f} | {m['known_hit@10']:.4f} | {m['known_ndcg@10']:.4f} | "
        f"{m['unknown_hit@10']:.4f} | {m['unknown_ndcg@10']:.4f} | {m['known_hit_share']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="finished run workspaces (data/processed, data/predictions/test.parquet)")
    ap.add_argument("--out", type=Path, default=None, help="write <out>.md")
    args = ap.parse_args(argv)
    lines = [
        "| run | known share | H@10 | N@10 | H@10 known | N@10 known | H@10 unknown | N@10 unknown | hits from known |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floors: dict[tuple[float, float], dict[str, float]] = {}
    for run in args.runs:
        share, model, markov = run_rows(run)
        lines.append(_row(run.name, share, model))
        floors.setdefault((round(share, 6), round(markov["hit@10"], 6)), (run.name, share, markov))
    for name, share, markov in floors.values():
        lines.append(_row(f"Markov floor (data of {name})", share, markov))
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        command = "python benchmarks/known_transition_hits.py " + " ".join(sys.argv[1:])
        text = f"# Test hits on known and unknown transitions\n\nRegenerate: `{command}`\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n{table}\n"
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
