"""Evaluating SASRec / GRU4Rec from the pipeline's artifacts, and the checks and fingerprint their
training uses (``genrec_core.training.build_training`` assembles it; the evaluate stage calls
``evaluate_sequential`` when ``recommender.model`` is an item-ID model, family ``item_id`` in
``recommender/model_spec.py``). The caller hands over the artifact locations (``ArtifactPaths``); nothing here knows
about stages.

Which model: ``recommender.model`` (``sasrec`` | ``gru4rec``). Sizes come from the recommender
section: ``d_model`` (item embedding = hidden size), ``num_layers`` (SASRec blocks / GRU layers),
``num_heads`` and ``d_ff`` (SASRec), ``dropout``; training from ``lr``, ``weight_decay``,
``warmup_steps``, ``grad_clip``, ``batch_size``, ``epochs``, ``patience``, ``eval_every``,
``max_eval_users``; ``loss``: ``ce`` (full softmax) or ``bce`` (one sampled negative); the
training method ``recommender.method`` (default ``plain``). The
validation list length is ``eval_beam_size`` (>= 10: validation computes Hit/NDCG up to @10 and
selects on ``select_metric``); at test time
``evaluate.beam_size`` items are kept per user, as for the generative model.

Outputs are the generative path's: training writes ``paths.recommender_dir/{last,best}.pt``
(``best.pt`` holds ``model_kind``, the model's ``config`` and the params, so evaluation needs
nothing else: ``genrec_core.recommender.checkpoint.load_recommender`` rebuilds it) and
``paths.train_reports_dir`` (dvclive, ``summary.json``); evaluation returns the
predictions table and the metrics (``users``, hit@K/ndcg@K, ``beam_size`` = list length,
``model``, ``users_per_second``; no relaxed prefix metrics: these models have no semantic IDs, the
analyse stage computes them from the ID table when one exists) for the caller to write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec_core.config import Params, RecommenderParams
from genrec_core.errors import InputFormatError, ParamError
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.checkpoint_format import read_checkpoint
from genrec_core.recommender.model_spec import DEFAULT_MODEL, FamilyNames, model_spec
from genrec_core.runtime import resolve_device

log = logging.getLogger(__name__)

# Older names the stages import; new code asks ``model_spec(name)`` (``.family``, ``.generative``).
#: The model whose checkpoints carry no ``model_kind`` (stages/train.py).
GENERATIVE = DEFAULT_MODEL
#: Models over semantic IDs ranked by trie-constrained beam search (``name in GENERATIVE_KINDS``).
GENERATIVE_KINDS = FamilyNames("generative")


def model_kind(params: Params) -> str:
    """``recommender.model``'s registered name (validated again here for callers that build Params by hand)."""
    return model_spec(params.recommender.model).name


def num_items(paths: ArtifactPaths) -> int:
    from genrec_core.io import read_parquet

    items = read_parquet(paths.items, "items table (stage preprocess)")
    n = int(items.height)
    if n == 0 or not np.array_equal(np.sort(items["item_id"].to_numpy()), np.arange(n)):
        raise InputFormatError(paths.items, "item ids must be 0..N-1 (the preprocess stage numbers items densely)")
    return n


def check_sizes(kind: str, rp: RecommenderParams) -> None:
    model_spec(kind).check_params(rp)  # e.g. SASRec's heads divide d_model (checked again for hand-built Params)
    if rp.eval_beam_size < 10:
        raise ParamError("recommender.eval_beam_size", f"validation ranks this many items and selects on NDCG@10; must be >= 10, got {rp.eval_beam_size}")


def sequential_fingerprint(params: Params, kind: str, max_len: int, files: dict[str, Path]) -> tuple[str, dict[str, Any]]:
    """The generative fingerprint's parts (recommender params, seed, input hashes) plus the model kind."""
    from genrec_core.recommender.fingerprint import fingerprint

    _, info = fingerprint(params, "-", files)
    info.pop("tokenizer", None)
    info.update({"model": kind, "max_len": max_len})
    return hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest(), info


def is_sequential_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    if not path.exists():
        return False
    from genrec_core.recommender.checkpoint import checkpoint_spec

    return checkpoint_spec(read_checkpoint(path), path).family == "item_id"


def evaluate_sequential(params: Params, paths: ArtifactPaths) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Full ranking of every test user by ``paths.recommender_dir/best.pt`` -> (the predictions
    table, the metrics) of SPEC 5."""
    from genrec_core.evaluation.metrics import evaluation_summary
    from genrec_core.evaluation.predictions import predictions_frame
    from genrec_core.recommender.checkpoint import load_recommender
    from genrec_core.recommender.data import load_examples
    from genrec_core.recommender.interface import rank_examples
    from genrec_core.sequential.training import ItemIdEncoder

    device = resolve_device(params.recommender.device)
    loaded = load_recommender(paths.recommender_dir / "best.pt", device)
    n_items = int(loaded.model.num_items)
    test = load_examples(paths.examples("test"), num_items=n_items)
    start = time.perf_counter()
    items, scores = rank_examples(loaded.model, test, ItemIdEncoder(n_items).collate, params.evaluate.beam_size, params.evaluate.batch_size)
    seconds = time.perf_counter() - start
    preds = predictions_frame(test.user_ids, test.targets, items, scores)
    metrics = evaluation_summary(preds, params.evaluate.ks)
    metrics.update({"beam_size": params.evaluate.beam_size, "model": loaded.kind, "users_per_second": round(len(test) / max(seconds, 1e-9), 2)})
    return preds, metrics
