"""Any trained recommender, rebuilt from its self-contained ``best.pt`` (the one loader).

Which model a checkpoint holds is its ``model_kind`` (absent for the T5, the first model), else
its params' ``recommender.model``; that model's ``ModelSpec`` names the loader. A generative
checkpoint (t5, decoder_only) holds the params, the vocabulary, the tokenizer's name and the item
tokens; an item-ID one (sasrec, gru4rec) holds ``model_kind`` and the model's ``config``. Either
way the model comes back in eval mode on the device, ready for ``rank(batch, k)`` (generative
models with their item IDs set). Older names in a checkpoint (``tiger``) load as today's (``t5``).
What the file holds, and how it is read, is ``checkpoint_format``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from genrec_core.config import RecommenderParams
from genrec_core.errors import InputFormatError, MissingInputError, ParamError
from genrec_core.recommender import checkpoint_format as fmt
from genrec_core.recommender.model_spec import DEFAULT_MODEL, ModelSpec, model_spec


class LoadedRecommender(NamedTuple):
    model: torch.nn.Module  # any recommender (interface.Recommender), in eval mode on the device
    vocab: Any  # SemanticIdVocab; None for the item-ID models
    tokenizer: str | None  # the ID table's tokenizer the model was trained on (None: item-ID model)
    item_tokens: torch.Tensor | None  # [N, L] token ids of every item under that tokenizer (row = item id)
    params: RecommenderParams
    kind: str = DEFAULT_MODEL  # recommender.model


def load_recommender(path: str | Path, device: str = "cpu") -> LoadedRecommender:
    """Rebuild the model saved in best.pt, whichever ``recommender.model`` trained it."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "the trained recommender; run the train stage first")
    ckpt = fmt.read_checkpoint(path)
    return recommender_from_checkpoint(ckpt, path, device)


def recommender_from_checkpoint(ckpt: dict[str, Any], source: str | Path, device: str = "cpu") -> LoadedRecommender:
    """``load_recommender`` of a checkpoint already in memory (``best.pt``'s dict, or the same
    entries read back from an exported bundle; ``source`` names it in errors)."""
    path = Path(source)
    model, loaded = checkpoint_spec(ckpt, path).checkpoint_loader()(path, ckpt)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return loaded._replace(model=model)


def checkpoint_spec(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> ModelSpec:
    """The spec of the model ``ckpt`` holds: its ``model_kind``, else its params' model, else the T5."""
    params = ckpt.get("params")
    name = ckpt.get("model_kind") or (params.get("model") if isinstance(params, dict) else None) or DEFAULT_MODEL
    try:
        return model_spec(name)
    except ParamError as exc:
        raise InputFormatError(source, f"holds an unknown model: {exc}") from None


def generative_from_checkpoint(path: Path, ckpt: dict[str, Any]) -> tuple[torch.nn.Module, LoadedRecommender]:
    """The generative family's loader: the model its params name, over the stored vocabulary and item IDs."""
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.vocab import SemanticIdVocab

    missing = fmt.missing_keys(ckpt, fmt.GENERATIVE_KEYS)
    if missing:
        raise InputFormatError(path, f"not a recommender checkpoint (missing {', '.join(missing)})")
    params = fmt.stored_params(ckpt)
    vocab = SemanticIdVocab.from_dict(ckpt["vocab"])
    model = build_generative_model(params, vocab, ckpt["item_tokens"])  # T5 or decoder-only, as params.model says
    return model, LoadedRecommender(model, vocab, ckpt["tokenizer"], ckpt["item_tokens"], params, params.model)


def item_id_from_checkpoint(path: Path, ckpt: dict[str, Any]) -> tuple[torch.nn.Module, LoadedRecommender]:
    """The item-ID family's loader: ``model_kind``'s class rebuilt from the stored ``config``."""
    from genrec_core.sequential.models import model_from_config

    missing = fmt.missing_keys(ckpt, ("model", *fmt.ITEM_ID_KEYS))
    if missing:
        raise InputFormatError(path, f"not a sequential-model checkpoint (missing {', '.join(missing)})")
    kind = ckpt["model_kind"]
    params = fmt.stored_params(ckpt, default_model=kind)
    model = model_from_config(kind, ckpt["config"])
    return model, LoadedRecommender(model, None, None, None, params, kind)
