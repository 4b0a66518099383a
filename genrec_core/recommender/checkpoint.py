"""The trained generative recommender, rebuilt from its self-contained ``best.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from genrec_core.config import RecommenderParams
from genrec_core.errors import InputFormatError, MissingInputError


class LoadedRecommender(NamedTuple):
    model: torch.nn.Module  # GenerativeRecommender or DecoderOnlyRecommender, in eval mode on the device
    vocab: Any  # SemanticIdVocab
    tokenizer: str  # the ID table's tokenizer the model was trained on
    item_tokens: torch.Tensor  # [N, L] token ids of every item under that tokenizer (row = item id)
    params: RecommenderParams


def load_recommender(path: str | Path, device: str = "cpu") -> LoadedRecommender:
    """Rebuild the model saved in best.pt (self-contained: params, vocab, tokenizer, item tokens)."""
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.vocab import SemanticIdVocab

    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "the trained recommender; run the train stage first")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in ("model", "params", "vocab", "tokenizer", "item_tokens") if k not in ckpt]
    if missing:
        raise InputFormatError(path, f"not a recommender checkpoint (missing {', '.join(missing)})")
    params = RecommenderParams(**ckpt["params"])
    vocab = SemanticIdVocab.from_dict(ckpt["vocab"])
    model = build_generative_model(params, vocab)  # T5 or decoder-only, as params.model says
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return LoadedRecommender(model, vocab, ckpt["tokenizer"], ckpt["item_tokens"], params)
