"""Training and evaluating SASRec / GRU4Rec from the pipeline's artifacts (the train and evaluate
stages call ``train_sequential`` and ``evaluate_sequential`` when ``recommender.model`` is an
item-ID model, family ``item_id`` in ``recommender/model_spec.py``). The caller hands over the artifact locations (``ArtifactPaths``); nothing here knows
about stages.

Which model: ``recommender.model`` (``sasrec`` | ``gru4rec``). Sizes come from the recommender
section: ``d_model`` (item embedding = hidden size), ``num_layers`` (SASRec blocks / GRU layers),
``num_heads`` and ``d_ff`` (SASRec), ``dropout``; training from ``lr``, ``weight_decay``,
``warmup_steps``, ``grad_clip``, ``batch_size``, ``epochs``, ``patience``, ``eval_every``,
``max_eval_users``; ``loss``: ``ce`` (full softmax) or ``bce`` (one sampled negative); the
training method ``recommender.method`` (default ``tiger``: plain training). The
validation list length is ``eval_beam_size`` (>= 10: validation computes Hit/NDCG up to @10 and
selects on ``select_metric``); at test time
``evaluate.beam_size`` items are kept per user, as for the generative model.

Outputs are the generative path's: training writes ``paths.recommender_dir/{last,best}.pt``
(``best.pt`` holds ``model_kind``, the model's ``config`` and the params, so evaluation needs
nothing else: ``genrec_core.recommender.checkpoint.load_recommender`` rebuilds it) and ``paths.train_reports_dir`` (dvclive, ``summary.json``); evaluation returns the
predictions table and the metrics (``users``, hit@K/ndcg@K, ``beam_size`` = list length,
``model``, ``users_per_second``; no relaxed prefix metrics: these models have no semantic IDs, the
analyse stage computes them from the ID table when one exists) for the caller to write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from genrec_core.config import Params, RecommenderParams
from genrec_core.errors import InputFormatError, ParamError
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.model_spec import DEFAULT_MODEL, FamilyNames, model_spec
from genrec_core.runtime import resolve_device
from genrec_core.sequential.models import build_model

log = logging.getLogger(__name__)

# Older names the stages import; new code asks ``model_spec(name)`` (``.family``, ``.generative``).
#: The model whose checkpoints carry no ``model_kind`` (stages/train.py).
GENERATIVE = DEFAULT_MODEL
#: Models over semantic IDs ranked by trie-constrained beam search (``name in GENERATIVE_KINDS``).
GENERATIVE_KINDS = FamilyNames("generative")


def model_kind(params: Params) -> str:
    """``recommender.model``'s registered name (validated again here for callers that build Params by hand)."""
    return model_spec(params.recommender.model).name


def _num_items(paths: ArtifactPaths) -> int:
    from genrec_core.io import read_parquet

    items = read_parquet(paths.items, "items table (stage preprocess)")
    n = int(items.height)
    if n == 0 or not np.array_equal(np.sort(items["item_id"].to_numpy()), np.arange(n)):
        raise InputFormatError(paths.items, "item ids must be 0..N-1 (the preprocess stage numbers items densely)")
    return n


def _check_sizes(kind: str, rp: RecommenderParams) -> None:
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


def train_sequential(params: Params, paths: ArtifactPaths, kind: str, progress: bool = True, use_dvclive: bool = True) -> dict[str, Any]:
    """Train ``kind`` on the example tables under ``paths``; checkpoints and reports go to
    ``paths.recommender_dir`` and ``paths.train_reports_dir``. Returns the training summary."""
    from genrec_core.methods import MethodContext, build_method, check_method_params
    from genrec_core.recommender.data import load_examples
    from genrec_core.recommender.trainer import Trainer
    from genrec_core.sequential.training import ItemIdEncoder, SequentialLoss

    rp = params.recommender
    loss = SequentialLoss(rp.loss)  # fail on a generative-only loss before reading anything
    check_method_params(rp.method, rp.method_params)
    _check_sizes(kind, rp)
    n_items = _num_items(paths)
    train = load_examples(paths.examples("train"), n_items)
    valid = load_examples(paths.examples("valid"), n_items)
    max_len = int(params.data.max_items)
    longest = int(max(train.lengths.max(initial=0), valid.lengths.max(initial=0)))
    if longest > max_len:
        raise InputFormatError(paths.examples("train"), f"a history has {longest} items but data.max_items is {max_len}; rerun preprocess")
    files = {"items": paths.items, "train": paths.examples("train"), "valid": paths.examples("valid")}
    fp, fp_info = sequential_fingerprint(params, kind, max_len, files)
    model = build_model(kind, n_items, max_len, rp)
    method = build_method(rp.method, rp.method_params, MethodContext(ItemIdEncoder(n_items), loss))  # loss: over all-item scores
    device = resolve_device(rp.device)
    log.info("training %s on %d items (%d train examples, %d params, loss %s)", kind, n_items, len(train), sum(p.numel() for p in model.parameters()), rp.loss)
    trainer = Trainer(
        model,
        rp,
        method,
        train,
        valid,
        checkpoint_dir=paths.recommender_dir,
        reports_dir=paths.train_reports_dir,
        seed=params.seed,
        fingerprint=fp,
        fingerprint_info=fp_info,
        checkpoint_meta={"model_kind": kind, "config": dict(model.config), "params": dataclasses.asdict(rp)},
        device=device,
        progress=progress,
        use_dvclive=use_dvclive,
    )
    summary = trainer.fit()
    log.info("best validation %s %.4f at epoch %d", rp.select_metric, summary[f"best_valid_{rp.select_metric}"], summary["best_epoch"])
    return summary


def is_sequential_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    if not path.exists():
        return False
    from genrec_core.recommender.checkpoint import checkpoint_spec

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint_spec(ckpt, path).family == "item_id"


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
