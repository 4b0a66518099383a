"""The recommender checkpoints' file format: what ``last.pt`` and ``best.pt`` hold, written and read here only.

Every writer (the trainer) and every reader (rebuilding a model, resuming, exporting a bundle,
reading a model's item IDs) goes through this module, so the keys, the atomic write and the safe
read are stated once.

``last.pt`` (resume; rewritten after every epoch and on a signal), format ``FORMAT``:
``format``, ``fingerprint``, ``fingerprint_info``, ``model`` (state dict), ``method`` (the
method's state: optimisers, schedulers, loss strategy, its own), ``state`` (the trainer's
counters), ``sampler``, ``rng`` (python / numpy / torch states), and ``item_tokens`` only when a
method changed the item IDs during training. Format 1 (``LEGACY_FORMATS``) kept the plain
method's ``optimizer``, ``scheduler`` and ``loss_strategy`` at the top level; ``method_state``
reads both.

``best.pt`` (the selected model; self-contained, so a model is rebuilt from this file alone):
``format``, ``fingerprint``, ``model``, ``epoch``, ``step``, ``valid`` (its validation metrics),
then the caller's model description (``Trainer``'s ``checkpoint_meta``): for a generative model
``GENERATIVE_KEYS`` (``params`` as a dict, ``vocab`` as a dict, ``tokenizer`` name,
``item_tokens`` [N, L]), for an item-ID model ``ITEM_ID_KEYS`` (``model_kind``, ``config``) and
``params``; optional extras (``epochs_auto``, ``model_kind`` of a generative model).

Writes are atomic (``io.save_torch``: a temporary file renamed over the old one, with a fixed
archive name so equal checkpoints are equal bytes). Reads use ``weights_only=True``: a checkpoint
may come from a shared DVC remote, and a pickle of arbitrary objects would run code on load;
everything stored is tensors and plain containers.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from genrec_core.config import RecommenderParams
from genrec_core.errors import GenrecError, InputFormatError
from genrec_core.io import save_torch

LAST = "last.pt"
BEST = "best.pt"
#: 2: the method's state under "method"
FORMAT = 2
#: 1: the plain method's optimizer, scheduler and loss_strategy at the top level (still resumes)
LEGACY_FORMATS = (1,)
#: best.pt's entries that rebuild a generative model (besides ``model``)
GENERATIVE_KEYS = ("params", "vocab", "tokenizer", "item_tokens")
#: best.pt's entries that rebuild an item-ID model (besides ``model``); ``params`` is optional
ITEM_ID_KEYS = ("model_kind", "config")
#: best.pt's entries that describe the run rather than the model
RUN_KEYS = ("format", "fingerprint", "epoch", "step", "valid")
_LEGACY_METHOD_KEYS = ("optimizer", "scheduler", "loss_strategy")


class UnsafeCheckpoint(GenrecError):
    """The file holds objects other than tensors and plain values (refused by ``weights_only``)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: holds objects other than tensors and plain values, which are not loaded (weights_only) ({reason})")


# --------------------------------------------------------------------------- writing


def write_last(
    path: str | Path,
    *,
    fingerprint: str,
    fingerprint_info: dict[str, Any],
    model: dict[str, torch.Tensor],
    method: dict[str, Any],
    state: dict[str, Any],
    sampler: dict[str, Any],
    rng: dict[str, Any],
    item_tokens: torch.Tensor | None = None,
) -> Path:
    """Write ``last.pt`` (``item_tokens``: only when the IDs changed during training)."""
    return save_torch(
        {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "fingerprint_info": fingerprint_info,
            "model": model,
            "method": method,
            "state": state,
            "sampler": sampler,
            "rng": rng,
            **({"item_tokens": item_tokens} if item_tokens is not None else {}),
        },
        path,
    )


def write_best(
    path: str | Path, *, fingerprint: str, model: dict[str, torch.Tensor], epoch: int, step: int, valid: dict[str, float], meta: dict[str, Any]
) -> Path:
    """Write ``best.pt``: the run's record, then ``meta`` (what rebuilds the model)."""
    return save_torch(
        {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "model": model,
            "epoch": epoch,
            "step": step,
            "valid": valid,
            **meta,
        },
        path,
    )


def generative_meta(params: dict[str, Any], vocab: dict[str, Any], tokenizer: str, item_tokens: torch.Tensor, **extra: Any) -> dict[str, Any]:
    """A generative model's description for ``best.pt`` (``GENERATIVE_KEYS``, then ``extra``)."""
    return {"params": params, "vocab": vocab, "tokenizer": tokenizer, "item_tokens": item_tokens, **extra}


def item_id_meta(kind: str, config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """An item-ID model's description for ``best.pt`` (``ITEM_ID_KEYS`` and ``params``)."""
    return {"model_kind": kind, "config": dict(config), "params": params}


# --------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict, on the CPU, read with ``weights_only=True`` (``UnsafeCheckpoint`` when
    the file needs more; torch's own error when it is no checkpoint at all)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickle that needs more than weights_only allows
        raise UnsafeCheckpoint(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model's state dict saved in a checkpoint."""
    return read_checkpoint(path)["model"]


def read_item_tokens(path: str | Path) -> torch.Tensor:
    """The item tokens [N, L] a generative ``best.pt`` decodes to (the IDs it was selected on)."""
    ckpt = read_checkpoint(path)
    if ckpt.get("item_tokens") is None:
        raise InputFormatError(path, "holds no item tokens (not a generative model's checkpoint)")
    return ckpt["item_tokens"]


def resumable(ckpt: dict[str, Any], fingerprint: str) -> bool:
    """Whether a ``last.pt`` is of a format this code resumes and was written for ``fingerprint``."""
    return ckpt.get("format") in (FORMAT, *LEGACY_FORMATS) and ckpt.get("fingerprint") == fingerprint


def method_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The method's state of a ``last.pt``, in either format (format 1: the plain method's, at the top level)."""
    if ckpt["format"] == 1:
        return {k: ckpt[k] for k in _LEGACY_METHOD_KEYS}
    return ckpt["method"]


def stored_params(ckpt: dict[str, Any], default_model: str | None = None) -> RecommenderParams:
    """The ``RecommenderParams`` a checkpoint was trained with: the one place a stored params dict
    becomes params again (where renamed params would keep their old names as aliases). Without
    ``params`` (an old item-ID checkpoint): the defaults with ``model = default_model``."""
    if "params" not in ckpt and default_model is not None:
        return RecommenderParams(model=default_model)
    return RecommenderParams(**ckpt["params"])


def missing_keys(ckpt: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Which of ``model`` and ``keys`` a checkpoint lacks."""
    return [k for k in ("model", *keys) if k not in ckpt]
