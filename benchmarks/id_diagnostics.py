"""What the semantic IDs of finished runs carry, beside what the runs reached: a diagnosis of why a
generative row lags (issue 24), measured rather than guessed.

Usage (finished run workspaces, e.g. from scripts/reproduction.py; each needs data/ids/item_ids.parquet,
data/processed/sequences.parquet, reports/metrics.json and reports/train/summary.json):

    python benchmarks/id_diagnostics.py --runs /work/repro/beauty/tiger-default-s42 \\
        /work/repro/beauty/tiger-collab-ids-s42 /work/repro/beauty/tiger-letter-ids-s42 \\
        --out reports/benchmarks/id_diagnostics

Per run, for the ID table the recommender was trained on (metrics.json's ``tokenizer``):
* codebook density per level: codes used / K and perplexity / K (``codebook_usage``), items per
  level-1 code;
* sequential information per level (``transition_information`` over every consecutive pair of the
  users' training items): the share of transitions that stay in the source's prefix group, and the
  share of the next item's prefix entropy that the current item's prefix explains, above the
  shuffled-target baseline;
* the run's test H@10 / N@10, the beam's prefix hit rates (``prefixL_ndcg@5``: the target's first L
  tokens among the top 5 beams' prefixes), best validation N@10 and the test/validation ratio.
No training; runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.runs import machine_line  # noqa: E402
from genrec_core.analysis.id_analysis import codebook_usage, transition_information  # noqa: E402
from genrec_core.recommender.model_spec import FamilyNames  # noqa: E402
from genrec_core.tokenizers.id_table import read_id_table_with_items  # noqa: E402

ITEM_ID_MODELS = FamilyNames("item_id")  # their row's "IDs" are the items themselves (one level)


def training_transitions(sequences: Path) -> np.ndarray:
    """(current, next) item pairs of every user's training part (the sequence without its validation
    and test items), in item-index space."""
    seq = pl.read_parquet(sequences, columns=["train_items"])["train_items"].to_list()
    pairs = [(a, b) for items in seq for a, b in zip(items[:-1], items[1:])]
    return np.asarray(pairs, dtype=np.int64)


def run_ids(root: Path, tokenizer: str | None) -> np.ndarray:
    """The run's ID table rows ordered by item index (the one it trained on; else the last kept)."""
    items, tables = read_id_table_with_items(root / "data" / "ids" / "item_ids.parquet")
    name = tokenizer if tokenizer in tables else list(tables)[-1]
    ids = np.asarray(tables[name])
    order = np.argsort(np.asarray(items))
    if not np.array_equal(np.asarray(items)[order], np.arange(len(items))):
        raise ValueError(f"{root}: the ID table's item_id column is not 0..N-1")
    return ids[order]


def diagnose(root: Path) -> dict:
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    if metrics.get("model") in ITEM_ID_MODELS:  # ranks item IDs: no semantic IDs to diagnose
        ids = np.arange(pl.read_parquet(root / "data" / "processed" / "items.parquet")["item_id"].max() + 1)[:, None]
    else:
        ids = run_ids(root, metrics.get("tokenizer"))
    codebook = [int(ids[:, k].max()) + 1 for k in range(ids.shape[1])]
    item_ids = metrics.get("model") in ITEM_ID_MODELS
    usage = codebook_usage(ids, codebook if item_ids else [2 ** int(np.ceil(np.log2(c))) for c in codebook])  # K: a power of two
    info = transition_information(ids, training_transitions(root / "data" / "processed" / "sequences.parquet"))
    valid = summary.get("best_valid_ndcg@10")
    return {
        "run": root.name,
        "id_shape": f"{ids.shape[1]} x {max(codebook)}",
        "items_per_first_code": ids.shape[0] / len(np.unique(ids[:, 0])),
        "usage": usage,
        "information": info,
        "test": {k: metrics.get(k) for k in ("hit@10", "ndcg@10", "prefix1_ndcg@5", "prefix2_ndcg@5", "prefix3_ndcg@5", "ndcg@5")},
        "best_valid_ndcg@10": valid,
        "test_over_valid": metrics["ndcg@10"] / valid if valid else None,
        "epochs": summary.get("epochs"),
        "best_epoch": summary.get("best_epoch"),
    }


def markov_valid_test(root: Path, width: int = 20) -> dict[str, float]:
    """The first-order Markov floor's N@10 on the validation and the test split of ``root``'s data: its
    test/valid ratio is the gap a model with no selection bias and no training at all shows."""
    from genrec_core.evaluation.baselines import baseline_predictions
    from genrec_core.evaluation.metrics import evaluation_summary

    processed = root / "data" / "processed"
    n_items = int(pl.read_parquet(processed / "items.parquet")["item_id"].max()) + 1
    sequences = pl.read_parquet(processed / "sequences.parquet")
    out = {}
    for split in ("valid", "test"):
        frame = pl.read_parquet(processed / f"{split}.parquet").select("user_id", "history", "target")
        out[split] = evaluation_summary(baseline_predictions(sequences, frame, split, n_items, width)["markov"], [10])["ndcg@10"]
    return out


def render(rows: list[dict], command: str, markov: dict[str, float] | None = None) -> str:
    f = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    lines = [
        "# What the semantic IDs carry, beside what the runs reached",
        "",
        f"Regenerate: `{command}`",
        "",
        machine_line(1, 1) + " No training: reads finished runs.",
        "",
        "Per level l: `used` = codes used / K, `ppl` = perplexity of the code distribution over items / K; "
        "`stay` = share of training transitions (consecutive training items of a user) whose next item shares the current "
        "item's first l tokens (shuffled targets in brackets); `info` = (I(next prefix; current prefix) - the same with "
        "shuffled targets) / H(next prefix): the share of the next item's l-token prefix that the current item's prefix "
        "explains (0 = the codes carry nothing of the sequence; genrec_core/analysis/id_analysis.py `transition_information`). "
        "Test: full ranking of every test user; `pN` = prefix N of the target among the prefixes of the top-5 beams "
        "(`prefixN_ndcg@5`).",
        "",
        "| run | IDs | items / level-1 code | used | ppl | stay | info | test H@10 | test N@10 | p1 | p2 | best valid N@10 (epoch) | test / valid |",
        "|---|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        used = " / ".join(f"{u['used_share']:.2f}" for u in r["usage"])
        ppl = " / ".join(f"{u['perplexity_share']:.2f}" for u in r["usage"])
        stay = " / ".join(f"{i['same_prefix']:.3f} ({i['same_prefix_shuffled']:.3f})" for i in r["information"])
        info = " / ".join(f"{i['information_share']:.3f}" for i in r["information"])
        t = r["test"]
        lines.append(
            f"| `{r['run']}` | {r['id_shape']} | {r['items_per_first_code']:.1f} | {used} | {ppl} | {stay} | {info} | "
            f"{f(t['hit@10'])} | {f(t['ndcg@10'])} | {f(t['prefix1_ndcg@5'])} | {f(t['prefix2_ndcg@5'])} | "
            f"{f(r['best_valid_ndcg@10'])} ({r['best_epoch']}) | {f(r['test_over_valid'])} |"
        )
    if markov:
        lines += [
            "",
            f"Markov floor on the first run's data (all users): validation N@10 {markov['valid']:.4f}, test N@10 {markov['test']:.4f}, "
            f"test / valid {markov['test'] / markov['valid']:.2f}: the part of a run's test/valid ratio that the split itself explains "
            "(the rest: selecting the best of many epochs on validation, and the validation transition that the test input "
            "holds but training never saw).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="finished run workspaces")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = ap.parse_args()
    rows = [diagnose(r) for r in args.runs]
    command = "python benchmarks/id_diagnostics.py --runs " + " ".join(str(r) for r in args.runs) + (f" --out {args.out}" if args.out else "")
    text = render(rows, command, markov_valid_test(args.runs[0]))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
