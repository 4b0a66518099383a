"""Cold-start evaluation: how well are items that were never trained on recommended?

Usage (repository root, venv active), on workspaces whose preprocess ran with
``data.cold_item_share`` > 0 (the same data params in both):

    python benchmarks/cold_start.py --workspace /tmp/cold/tiger --sasrec /tmp/cold/sasrec \\
        --out reports/cold_start.md

``data.cold_item_share`` holds a seeded share of the items out of training (preprocess: their
interactions are removed from every training sequence, history and validation target, and kept
only as the test target of the users whose last item they are; they stay in the catalogue with
their text, so embed, the tokenizer and emit-ids give them vectors and IDs like any item). This
script evaluates the test users whose target is such an item, with

* the generative model of ``--workspace`` (its best.pt, trie-constrained beam search with
  ``evaluate.beam_size`` beams, as the evaluate stage; a held-out item's ID comes from the
  tokenizer like any item's, but the model never saw it as a target);
* the item-ID model of ``--sasrec`` (optional; SASRec or GRU4Rec trained on the same data): it
  has a row for every catalogue item, but a held-out item's row was never trained as a positive,
  so what it scores is reported as it is (full ranking over all items; the target's median rank);
* the content-similarity floor: items by cosine of their text vector
  (``data/embeddings/item_vectors.parquet`` of ``--workspace``) to the history's last item's.

Writes a Markdown report (table, counts, machine, the command) to ``--out``. Nothing here is a
DVC stage. It ranks only the cold users (on ml-100k with share 0.1, about a tenth of the users).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec_core.evaluation.cold_start import cold_test_rows, content_floor, mix_cold_items, rank_summary  # noqa: E402
from genrec_core.io import atomic_path  # noqa: E402


def _dataset_info(root: Path) -> dict:
    path = root / "data/processed/dataset.json"
    if not path.exists():
        sys.exit(f"error: {path}: missing; run the preprocess stage in {root} first")
    return json.loads(path.read_text(encoding="utf-8"))


def _cold_items(root: Path) -> list[int]:
    cold = _dataset_info(root).get("cold_item_ids")
    if not cold:
        sys.exit(f"error: {root}: data/processed/dataset.json lists no held-out items; run preprocess with -S data.cold_item_share=0.1 (and the later stages)")
    return [int(i) for i in cold]


def _histories(root: Path, rows: pl.DataFrame) -> tuple[list[list[str]], list[str]]:
    items = pl.read_parquet(root / "data/processed/items.parquet").sort("item_id")["source_item_id"].cast(pl.String).to_list()
    users = dict(pl.read_parquet(root / "data/processed/sequences.parquet").select("user_id", pl.col("source_user_id").cast(pl.String)).iter_rows())
    return [[items[i] for i in h] for h in rows["history"].to_list()], [users[u] for u in rows["user_id"].to_list()]


def _rank_model(root: Path, rows: pl.DataFrame, k: int | None, device: str):
    """(ranked item indices [U, k], the model's kind, k used) of a workspace's best.pt."""
    from genrec_core.serving.api import Recommender

    rec = Recommender.from_workspace(root, device=device)
    histories, users = _histories(root, rows)
    k = rec.num_items if k is None else k
    recs = rec.recommend(histories, k=k, users=users if rec.needs_user else None, progress=True)
    return np.array([[i.index for i in r.items] + [-1] * (k - len(r.items)) for r in recs], dtype=np.int64), rec.kind, k, rec


def _mixed_rows(root: Path, rec, cold: list[int], ks: list[int], epsilons: list[float]) -> list[tuple[str, dict, str]]:
    """TIGER's epsilon cold-start retrieval on the evaluate stage's beam lists: the cold users, and
    what it costs all test users (the list at each K is mixed with budget floor(epsilon * K))."""
    path = root / "data/predictions/test.parquet"
    if rec.loaded.item_tokens is None or not path.exists():
        return []
    tokens = rec.loaded.item_tokens.cpu().numpy()
    preds = pl.read_parquet(path).sort("user_id")
    width = max(len(x) for x in preds["items"].to_list())
    beams = np.array([list(x) + [-1] * (width - len(x)) for x in preds["items"].to_list()], dtype=np.int64)
    targets = preds["target_item"].to_numpy()
    is_cold = np.isin(targets, np.array(cold))
    prefix = {i: tuple(row[:-1]) for i, row in enumerate(tokens.tolist())}
    cold_set = set(cold)
    warm_prefixes = {prefix[i] for i in prefix if i not in cold_set}
    reachable = sum(prefix[int(t)] in {prefix[int(i)] for i in b if i >= 0} for b, t in zip(beams[is_cold], targets[is_cold]))
    shared = sum(prefix[i] in warm_prefixes for i in cold)
    why = (
        f"{reachable} of {int(is_cold.sum())} cold targets share their first {tokens.shape[1] - 1} tokens with an item of the beam list; "
        f"{shared} of {len(cold)} held-out items share them with a trained item"
    )
    out = []
    for eps in epsilons:
        cold_m: dict = {}
        all_m: dict = {}
        for k in ks:
            mixed = mix_cold_items(beams, tokens, cold, k, eps)
            for subset, store in ((is_cold, cold_m), (np.ones_like(is_cold), all_m)):
                s = rank_summary(mixed[subset], targets[subset], [k])
                store.update({key: v for key, v in s.items() if key.endswith(f"@{k}")})
                store["users"] = s["users"]
                if k == max(ks):  # "target in the list": the longest list
                    store["found"] = s["found"]
        keys = [key for key in cold_m if "@" in key]
        note = why + f"; all {all_m['users']} test users: " + ", ".join(f"{key} {all_m[key]:.4f}" for key in keys if key.startswith(("hit@10", "ndcg@10")))
        out.append((f"{rec.kind} + TIGER cold-start retrieval, epsilon {eps:g}", cold_m, note))
    return out


def _overall(root: Path) -> dict:
    path = root / "reports/metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True, help="generative workspace (tiger / decoder_only) run with data.cold_item_share > 0")
    ap.add_argument("--sasrec", type=Path, default=None, help="item-ID model workspace (sasrec / gru4rec) on the same data")
    ap.add_argument("--out", type=Path, default=Path("reports/cold_start.md"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--note", default="", help="a reading of the table, printed under it")
    ap.add_argument(
        "--epsilon",
        type=float,
        nargs="*",
        default=[0.1, 0.2, 0.3],
        help="TIGER cold-start retrieval: max share of cold items in the top K (rows per value; none: off)",
    )
    args = ap.parse_args(argv)

    from genrec_core.artifacts import load_item_vectors
    from genrec_core.config import load_params
    from genrec_core.evaluation.metrics import metric_keys

    t0 = time.perf_counter()
    root = args.workspace
    params = load_params(root / "params.yaml" if (root / "params.yaml").exists() else None)
    ks = list(params.evaluate.ks)
    cold = _cold_items(root)
    stats_path = root / "reports/data_stats.json"
    held = json.loads(stats_path.read_text()).get("cold_items", {}) if stats_path.exists() else {}
    share, seed = held.get("share", params.data.cold_item_share), held.get("seed", params.data.cold_item_seed)
    test = pl.read_parquet(root / "data/processed/test.parquet")
    rows = cold_test_rows(test, cold)
    if rows.height == 0:
        sys.exit(f"error: {root}: no test user's target is a held-out item")
    targets = rows["target"].to_numpy()
    results: list[tuple[str, dict, str]] = []

    ranked, kind, beam, rec = _rank_model(root, rows, params.evaluate.beam_size, args.device)
    results.append((f"{kind} (generative, {beam} beams)", rank_summary(ranked, targets, ks), ""))
    results += _mixed_rows(root, rec, cold, ks, args.epsilon)

    if args.sasrec is not None:
        if _cold_items(args.sasrec) != cold or not pl.read_parquet(args.sasrec / "data/processed/test.parquet").equals(test):
            sys.exit(f"error: {args.sasrec}: its held-out items or test split differ from {root}'s; run both with the same data params")
        ranked_s, kind_s, _, _ = _rank_model(args.sasrec, rows, None, args.device)
        summary = rank_summary(ranked_s, targets, ks)
        from genrec_core.evaluation.metrics import target_ranks

        ranks = target_ranks(ranked_s, targets)
        n_items = ranked_s.shape[1]
        results.append((f"{kind_s} (item IDs, full ranking)", summary, f"target's median rank {int(np.median(ranks))} of {n_items}"))

    embed_report = root / "reports/embed.json"
    source = json.loads(embed_report.read_text()).get("source") if embed_report.exists() else "unknown"
    _, vectors = load_item_vectors(root / "data/embeddings/item_vectors.parquet")
    floor = content_floor(vectors, rows["history"].to_list(), max(ks))
    note = "" if source == "text" else f"item vectors are embed.source={source}, not text: held-out items have no collaborative signal"
    results.append(("content floor (cosine to last item)", rank_summary(floor, targets, ks), note))

    keys = metric_keys(ks)
    lines = [
        "# Cold start: recommending items never trained on",
        "",
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `benchmarks/cold_start.py` "
        f"(issue 14 part 4); {time.perf_counter() - t0:.0f} s.",
        "",
        f"Dataset {params.data.dataset}: data.cold_item_share = {share} (seed {seed}) held out "
        f"{len(cold)} of {vectors.shape[0]} items. {rows.height} of {test.height} test users have a held-out item as their test target; "
        "these users are evaluated below (Hit@K / NDCG@K, the evaluate stage's definitions; lists: the generative model's beams, all items for the "
        "item-ID model, max K for the floor). A held-out item is in no training "
        "sequence, history or validation target.",
        "",
        "TIGER cold-start retrieval (Rajput et al. 2023, 4.3; genrec_core.evaluation.cold_start.mix_cold_items): the evaluate stage's beam list "
        "(data/predictions/test.parquet) with, after each listed item, the held-out items whose ID shares its first L-1 tokens, at most "
        "floor(epsilon * K) of them in the top K (the list for each K is mixed with its own budget); the note gives what the mixing does to "
        "all test users' Hit@10 / NDCG@10 (epsilon 0 = the plain model row's list).",
        "",
        "| Model | Users | " + " | ".join(k.replace("hit", "Hit").replace("ndcg", "NDCG") for k in keys) + " | Target in the list | Note |",
        "|---|---:|" + "---:|" * len(keys) + "---:|---|",
    ]
    for name, m, note in results:
        lines.append(f"| {name} | {m['users']} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + f" | {m['found']:.3f} | {note} |")
    if args.note:
        lines += ["", args.note]
    lines += ["", "All test users, from each workspace's reports/metrics.json (for comparison):", ""]
    for label, ws in (("generative", root), ("item-ID", args.sasrec)):
        if ws is not None and _overall(ws):
            m = _overall(ws)
            lines.append(f"- {label} ({ws}): " + ", ".join(f"{k} {m[k]:.4f}" for k in keys if k in m) + f" over {m.get('users', '?')} users")
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "Command (on workspaces built by the README's cold-start recipe, section Cold-start evaluation):",
        "",
        "```",
        shlex.join(["python", "benchmarks/cold_start.py", *(sys.argv[1:] if argv is None else argv)]),
        "```",
        "",
    ]
    with atomic_path(args.out) as tmp:  # a failed run leaves no half-written report
        tmp.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
