"""What must match for a training checkpoint to be resumed: params, seed, tokenizer, input hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from genrec_core.config import Params
from genrec_core.io import sha256_file
from genrec_core.recommender.model_spec import DEFAULT_MODEL, model_spec

#: Params that change neither the trajectory nor the result (``processes``: up to float summation
#: order, the same global batches): a resume ignores them.
FINGERPRINT_EXCLUDED = ("log_every", "eval_batch_size", "device", "threads", "processes")


def fingerprint(params: Params, tokenizer: str, files: dict[str, Path]) -> tuple[str, dict[str, Any]]:
    """(hash, its parts): what must match for last.pt to be resumed."""
    rec = {k: v for k, v in dataclasses.asdict(params.recommender).items() if k not in FINGERPRINT_EXCLUDED}
    spec = model_spec(params.recommender.model)
    if spec.name == DEFAULT_MODEL:  # the T5, once the only model (named tiger then): left out, as before the param, so older checkpoints resume
        rec.pop("model")
    if rec.get("select_metric") == "ndcg@10":  # likewise the default selection metric
        rec.pop("select_metric")
    if rec.get("method") in ("tiger", "plain"):  # and the default training method (either name) and its (empty) params
        rec.pop("method")
    if rec.get("method_params") == {}:
        rec.pop("method_params")
    if rec.get("pack_examples") == 0 or not spec.packs:  # unpacked training (before the param; the only kind of a model without a packed forward)
        rec.pop("pack_examples")
    if rec.get("pack_order") == "random" or "pack_examples" not in rec:  # random packed batches (before the param), or unpacked
        rec.pop("pack_order", None)
    if not spec.item_embedding or not rec.get("item_embedding", True):  # no item vectors (before the param), or a model without them
        rec.pop("item_embedding", None)
    if rec.get("precision") == "auto":  # and the default autocast (float32 on a CPU, as before the param)
        rec.pop("precision")
    info: dict[str, Any] = {f"recommender.{k}": v for k, v in rec.items()}
    info.update({"seed": params.seed, "tokenizer": tokenizer})
    info.update({f"sha256:{name}": sha256_file(path) for name, path in files.items()})
    digest = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()
    return digest, info
