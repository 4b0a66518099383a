"""Stage train: example tables + ID table -> a trained recommender (SPEC 4 and 6).

Reads ``data/processed/{train,valid}.parquet`` and ``data/ids/item_ids.parquet``; trains
``recommender.model`` with the method ``recommender.method`` (default ``plain``: training with the
loss ``recommender.loss``); writes ``data/recommender/{last,best}.pt`` and ``reports/train/``
(dvclive ``live/``, ``summary.json`` and ``best_valid.json``, the part of the summary experiments
are compared on: the DVC metric). The run is assembled by ``genrec_core.training.build_training``;
what differs between methods is the method's (its pipeline hooks: how the IDs are prepared, a
fine-tuning on its final IDs after fit, its outputs such as ``reports/method/influence.csv``, which
always exists, and ``data/recommender/item_ids.parquet`` when the IDs moved).
Fine-tuning per tokenizer and selection are the ``finetune`` and ``select_tokenizer`` stages.
With ``recommender.processes`` > 1 the CLI runs this stage under torchrun (one process per
device, DDP; ``genrec_core/recommender/distributed.py``); rank 0 writes every output.
An interrupted run resumes from ``last.pt`` when its fingerprint (the recommender params, the
seed, the tokenizer and the hashes of the input files) still matches.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from genrec_core.config import Params
from genrec_core.io import write_json
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender import distributed

log = logging.getLogger(__name__)


def comparable_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The training summary's part that experiments are compared on (few keys: ``dvc metrics
    show`` has one column per key): best epoch, its validation metrics as ``best_valid_<metric>``
    (names apart from the test metrics'), training seconds."""
    best = {f"best_valid_{k}": v for k, v in (summary.get("best_valid") or {}).items() if k != "epoch"}
    return {"best_epoch": summary["best_epoch"], **best, "seconds": summary["seconds"]}


def run(params: Params, root: Path) -> None:
    from genrec_core.recommender.schedule import describe, resolve_epochs_from_artifacts
    from genrec_core.training import build_training, finetune_final_ids

    paths = ArtifactPaths(Path(root))
    params, epochs_auto = resolve_epochs_from_artifacts(params, paths)  # recommender.epochs: auto -> a number
    if epochs_auto:
        log.info(describe(epochs_auto))
    meta = {"epochs_auto": epochs_auto} if epochs_auto else {}  # summary.json records what auto chose
    run = build_training(params, paths, checkpoint_meta=meta)
    summary = run.fit()
    if not distributed.is_main():  # under torchrun only rank 0 writes
        return
    if run.ids is not None and (recipe := run.method.final_finetune_params(run.params)) is not None:
        summary = finetune_final_ids(params, paths, run, summary, recipe)
    write_json(comparable_metrics(summary), paths.train_metrics)
    run.method.write_outputs(run.trainer, paths, run.ids)
    rp = run.params
    log.info("best validation %s %.4f at epoch %d", rp.select_metric, summary[f"best_valid_{rp.select_metric}"], summary["best_epoch"])
