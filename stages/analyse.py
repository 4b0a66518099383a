"""Stage analyse: put the model's test predictions next to MostPop and Markov floors, and explain them.

Reads ``data/predictions/test.parquet`` (stage evaluate), ``data/processed/{items,sequences,
test}.parquet``, ``reports/metrics.json`` and ``data/ids/item_ids.parquet`` when present (relaxed
prefix metrics; the final IDs ``data/recommender/item_ids.parquet`` instead when a method moved
them), ``reports/data_stats.md`` and ``reports/ids/analysis/`` when present. Writes to
``reports/analysis/``: ``baselines.json``, ``head_tail.{json,md,png}``,
``popularity_deciles.{json,png}``, ``examples.md``; and ``reports/README.md``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.analysis.recommendations import (
    decile_report,
    head_tail_markdown,
    head_tail_report,
    item_titles,
    method_labels,
    pick_examples,
    plot_deciles,
    plot_head_tail,
    qualitative_markdown,
    render_readme,
)
from genrec_core.config import Params
from genrec_core.errors import InputFormatError
from genrec_core.evaluation.baselines import baseline_predictions, train_counts
from genrec_core.evaluation.metrics import as_padded, hit_ndcg, metric_keys, relaxed_prefix_ndcg, target_ranks
from genrec_core.io import read_parquet, write_json, write_text
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.id_table import choose_tokenizer, read_id_table_with_items

log = logging.getLogger(__name__)

N_EXAMPLES = 4  # qualitative users (Table 7 shows one)
RELAXED_K = 5  # paper 001 Table 6 reports NDCG@5


def _read_predictions(path: Path) -> pl.DataFrame:
    preds = read_parquet(path, "test predictions (stage evaluate)")
    for col in ("user_id", "target_item", "items"):
        if col not in preds.columns:
            raise InputFormatError(path, f"missing column {col!r}; expected user_id, target_item, items, scores")
    if not isinstance(preds.schema["items"], pl.List):
        raise InputFormatError(path, f"column 'items' must be a list of item ids, got {preds.schema['items']}")
    if preds["user_id"].n_unique() != preds.height:
        raise InputFormatError(path, "a user has more than one row")
    return preds


def run(params: Params, root: Path) -> None:
    paths = ArtifactPaths(Path(root))
    ks = list(params.evaluate.ks)
    labels = method_labels(params.recommender.model)
    preds = _read_predictions(paths.predictions)
    items = read_parquet(paths.items, "items table (stage preprocess)")
    sequences = read_parquet(paths.sequences, "sequences table (stage preprocess)")
    test = read_parquet(paths.examples("test"), "test examples (stage preprocess)")
    n_items = int(items["item_id"].max()) + 1
    counts = train_counts(sequences["train_items"], n_items)

    # the baselines answer for exactly the model's users, on the same targets
    examples = preds.select("user_id", "target_item").join(test, on="user_id", how="left", maintain_order="left")
    if examples["target"].null_count():
        raise InputFormatError(paths.predictions, "some users are not in data/processed/test.parquet (stale predictions? rerun evaluate)")
    if (examples["target"] != examples["target_item"]).any():
        raise InputFormatError(paths.predictions, "target_item differs from data/processed/test.parquet (stale predictions? rerun evaluate)")
    examples = examples.select("user_id", "history", "target")
    targets = examples["target"].to_numpy().astype(np.int64)
    width = max(params.evaluate.beam_size, max(ks))
    lists = {"model": as_padded(preds["items"])}
    base = baseline_predictions(sequences, examples, "test", n_items, width)
    for name in ("markov", "mostpop"):  # report order: model, the stronger floor, the weaker one
        lists[name] = as_padded(base[name]["items"])
    ranks = {m: target_ranks(mat, targets) for m, mat in lists.items()}
    metrics = {m: hit_ndcg(r, ks) for m, r in ranks.items()}

    # relaxed prefix match: the model's from metrics.json when evaluate wrote them, else from IDs
    relaxed: dict[str, dict[str, float]] = {}
    stored = json.loads(paths.metrics.read_text(encoding="utf-8")) if paths.metrics.exists() else {}
    stored_relaxed = {k: float(v) for k, v in stored.items() if k.startswith("prefix") and k.endswith(f"_ndcg@{RELAXED_K}")}
    codes_lookup = None
    # a method whose IDs moved during training (BLOGER) left its final table: the tested model's IDs
    id_table = paths.final_id_table if paths.final_id_table.exists() else paths.id_table
    if id_table.exists():
        item_ids, tables = read_id_table_with_items(id_table)
        # the tested model's tokenizer (MTGRec: the selected fine-tuned one), else the param's
        name = stored.get("tokenizer")
        codes = tables[name if name in tables else choose_tokenizer(list(tables), params.recommender.tokenizer)]
        row = np.full(int(item_ids.max()) + 1, -1, dtype=np.int64)
        row[item_ids] = np.arange(item_ids.size)

        def codes_lookup(ids: np.ndarray) -> np.ndarray:
            return codes[row[ids]]

        for m, mat in lists.items():
            if m == "model" and stored_relaxed:
                relaxed[m] = stored_relaxed
            else:
                try:
                    relaxed[m] = relaxed_prefix_ndcg(mat, targets, codes, item_ids, RELAXED_K)
                except ValueError as exc:  # ID table of another item set: rerun emit-ids
                    raise InputFormatError(id_table, str(exc)) from None
    elif stored_relaxed:
        relaxed["model"] = stored_relaxed

    out = paths.analysis_dir
    baselines = {
        "split": "test",
        "users": int(examples.height),
        "list_length": width,
        "definitions": {
            "mostpop": "items ranked by their number of occurrences in the users' train_items (ties: item id); same list for every user",
            "markov": "items ranked by the count of transitions from the user's last history item (consecutive pairs of train_items "
            "followed by valid_item, within users), ties and remaining places in MostPop order",
            "exclusion": "none: history items may be recommended (repeat interactions are allowed by the protocol)",
        },
    }
    for m in ("mostpop", "markov"):
        baselines[m] = {**metrics[m], **relaxed.get(m, {})}
    write_json(baselines, out / "baselines.json")

    keys = metric_keys(ks)
    ht = head_tail_report(ranks, targets, counts, ks)
    write_json(ht, out / "head_tail.json")
    write_text(head_tail_markdown(ht, keys, labels), out / "head_tail.md")
    ht_keys = [k for k in keys if k.endswith(("@5", "@10"))] or keys
    plot_head_tail(ht, out / "head_tail.png", ht_keys, labels)

    deciles = decile_report(targets, lists, counts, items["item_id"].to_numpy())
    write_json(deciles, out / "popularity_deciles.json")
    plot_deciles(deciles, out / "popularity_deciles.png", "model", labels)

    rows = pick_examples(ranks["model"], N_EXAMPLES, params.seed)
    examples_md = qualitative_markdown(
        rows,
        examples["user_id"].to_numpy(),
        examples["history"].to_list(),
        targets,
        {"model": lists["model"], "markov": lists["markov"]},
        item_titles(items),
        codes_lookup,
        labels=labels,
    )
    write_text(examples_md, out / "examples.md")

    dataset = params.data.dataset
    if paths.dataset_info.exists():
        info = json.loads(paths.dataset_info.read_text(encoding="utf-8"))
        dataset = info.get("display_name", info.get("dataset", dataset))
    id_dir = paths.id_reports_dir / "analysis"
    id_md = id_dir / "analysis.md"
    readme = render_readme(
        dataset=dataset,
        model_metrics=metrics["model"],
        baseline_metrics={"markov": metrics["markov"], "mostpop": metrics["mostpop"]},
        ks=ks,
        n_users=int(examples.height),
        beam_size=params.evaluate.beam_size,
        relaxed=relaxed or None,
        head_tail=ht,
        deciles=deciles,
        examples_md=examples_md,
        data_stats_md=paths.data_stats_md.read_text(encoding="utf-8") if paths.data_stats_md.exists() else None,
        id_analysis_md=id_md.read_text(encoding="utf-8") if id_md.exists() else None,
        id_pngs=[p.relative_to(paths.reports_dir).as_posix() for p in sorted(id_dir.glob("*.png"))],
        analysis_pngs={
            "head_tail": (out / "head_tail.png").relative_to(paths.reports_dir).as_posix(),
            "deciles": (out / "popularity_deciles.png").relative_to(paths.reports_dir).as_posix(),
        },
        labels=labels,
    )
    write_text(readme, paths.reports_readme)
    log.info(
        "test NDCG@%d: model %.4f, Markov %.4f, MostPop %.4f",
        ks[-1],
        metrics["model"][f"ndcg@{ks[-1]}"],
        metrics["markov"][f"ndcg@{ks[-1]}"],
        metrics["mostpop"][f"ndcg@{ks[-1]}"],
    )
