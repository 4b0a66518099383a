"""``recommender.epochs: auto``: a schedule length that adapts to how sparse the dataset is.

The CPU default's 7-epoch cosine was chosen on MovieLens-100K, where one epoch makes every item a
training target ~72 times (96,458 examples over 1,349 items). Amazon Beauty has ~11 targets per
item and epoch (131,413 over 12,101) and Yelp ~11 (225,061 over 20,033): at 7 epochs its items
are seen a seventh as often, and the 7-epoch run's validation NDCG@10 was still rising at its
last epoch (issue 24). ``auto`` therefore sizes the schedule in target visits per item:

    epochs = clamp(ceil(AUTO_VISITS_PER_ITEM x items / train examples), AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS)

``AUTO_VISITS_PER_ITEM`` = 500 is what ml-100k's 7 epochs give (so ml-100k keeps exactly its
measured schedule: ceil(6.99) = 7); ``AUTO_MAX_EPOCHS`` = 20 is a CPU budget, not a measured
optimum (Beauty and Yelp would ask for 45-47 epochs: ~100 minutes at one thread; 20 take ~45),
which is why the chosen value and the uncapped one are both logged and written to summary.json.

``recommender.dropout: auto`` follows the schedule's length: AUTO_DROPOUT (0.1, TIGER's) on a
schedule longer than AUTO_MIN_EPOCHS, none on the short one. Without dropout the model recites its
training windows and overfits late in a long schedule: on Beauty's 20 epochs it peaked at epoch 8-9
and its last.pt ranked 67% of the last training targets in its top 10 but fewer test targets than
the selected epoch (reports/benchmarks/memorization_beauty.md), and dropout 0.1 raised test H@10 and
N@10 by ~20% there (reports/reproduction.md); ml-100k's 7-epoch schedule was better at every epoch
without it (1.6x faster per step; reports/findings.md section 3), and keeps exactly that run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

AUTO_VISITS_PER_ITEM = 500
AUTO_MIN_EPOCHS = 7
AUTO_MAX_EPOCHS = 20
AUTO_DROPOUT = 0.1


def auto_dropout(epochs: int) -> float:
    """The dropout ``auto`` chooses for a schedule of ``epochs`` epochs."""
    return AUTO_DROPOUT if epochs > AUTO_MIN_EPOCHS else 0.0


def resolve_dropout(rp: Any, epochs: int | None = None) -> tuple[Any, str | None]:
    """``rp`` (RecommenderParams) with ``dropout: auto`` replaced by its value for the schedule
    (``epochs``, else ``rp.epochs``, which must be resolved by then), and a log line (None when
    dropout was given as a number)."""
    if rp.dropout != "auto":
        return rp, None
    epochs = rp.epochs if epochs is None else epochs
    if not isinstance(epochs, int):
        raise ValueError(f"recommender.dropout auto follows the schedule: resolve recommender.epochs ({epochs!r}) first")
    value = auto_dropout(epochs)
    why = f"longer than {AUTO_MIN_EPOCHS}" if value else f"not longer than {AUTO_MIN_EPOCHS}"
    return dataclasses.replace(rp, dropout=value), f"recommender.dropout auto: {value} (a {epochs}-epoch schedule, {why} epochs)"


def auto_epochs(num_items: int, num_train_examples: int) -> tuple[int, float]:
    """(the epochs ``auto`` chooses, the uncapped number of epochs for AUTO_VISITS_PER_ITEM)."""
    if num_items < 1 or num_train_examples < 1:
        raise ValueError(f"need at least one item and one training example, got {num_items} and {num_train_examples}")
    wanted = AUTO_VISITS_PER_ITEM * num_items / num_train_examples
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, math.ceil(wanted))), wanted


def resolve_epochs(params: Any, num_items: int, num_train_examples: int) -> tuple[Any, dict[str, Any] | None]:
    """``params`` (a Params) with ``recommender.epochs: auto`` replaced by its value, and a record of
    the choice for logs and summary.json (None when epochs was given as a number)."""
    rp = params.recommender
    if rp.epochs != "auto":
        return params, None
    epochs, wanted = auto_epochs(num_items, num_train_examples)
    record = {
        "epochs": epochs,
        "visits_per_item_wanted": AUTO_VISITS_PER_ITEM,
        "epochs_uncapped": round(wanted, 2),
        "bounds": [AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS],
        "items": int(num_items),
        "train_examples": int(num_train_examples),
    }
    return dataclasses.replace(params, recommender=dataclasses.replace(rp, epochs=epochs)), record


def describe(record: dict[str, Any]) -> str:
    """One log line for the choice."""
    return (
        f"recommender.epochs auto: {record['epochs']} epochs ({record['train_examples']} train examples over {record['items']} items; "
        f"{record['visits_per_item_wanted']} target visits per item would take {record['epochs_uncapped']}, bounds {record['bounds'][0]}-{record['bounds'][1]})"
    )


def artifact_counts(paths: Any) -> tuple[int, int]:
    """(items, training examples) of ``paths``' processed data (an ``ArtifactPaths``)."""
    import polars as pl

    from genrec_core.errors import MissingInputError

    counts = []
    for path, what in ((paths.items, "the processed items"), (paths.examples("train"), "the training examples")):
        if not path.exists():
            raise MissingInputError(path, f"{what} (recommender.epochs: auto counts them); run the preprocess stage first")
        counts.append(int(pl.scan_parquet(path).select(pl.len()).collect().item()))
    return counts[0], counts[1]


def resolve_epochs_from_artifacts(params: Any, paths: Any) -> tuple[Any, dict[str, Any] | None]:
    """``resolve_epochs`` with the item and training-example counts of ``paths``' processed data
    (an ``ArtifactPaths``); params without ``epochs: auto`` are returned without reading anything."""
    if params.recommender.epochs != "auto":
        return params, None
    return resolve_epochs(params, *artifact_counts(paths))
