"""``recommender.method: plain`` (the default; ``tiger`` is an accepted alias): plain training
(TIGER, SPEC 4).

Each batch is tokenized with the chosen tokenizer (``recommender.tokenizer``), the model's
teacher-forced logits go through the token-weighting strategy ``recommender.loss`` (SPEC 6;
``genrec_core.recommender.losses``), and one AdamW step follows (clipping, warm-up + cosine).
Every step of this is ``Method``'s default, so the class only registers the name; the item-ID
models (SASRec, GRU4Rec) train with it too, over their own collate and loss.
"""

from __future__ import annotations

from genrec_core.methods import register_method
from genrec_core.methods.base import Method


@register_method("plain")
class PlainMethod(Method):
    """Plain training with ``recommender.loss``; no params of its own."""


TigerMethod = PlainMethod  # the name before ``plain`` (old imports)
