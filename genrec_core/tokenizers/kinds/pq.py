"""``tokenizer.kind: pq``: product quantisation (paper 001, Table 5; SPEC section 3).

The tokenizer is ``tokenizers/pq.py``; ``training.train_pq`` fits it in one shot (no epochs: one
kept tokenizer, ``kept/pq.pt``). The shared training-schedule params do not apply.
"""

from __future__ import annotations

from typing import Any

from genrec_core.tokenizers.spec import TokenizerSpec, check, register_tokenizer


@register_tokenizer("pq")
class PQSpec(TokenizerSpec):
    """k-means per segment: its iterations."""

    fit_function = "genrec_core.tokenizers.fit:fit_pq"
    tokenizer_class = "genrec_core.tokenizers.pq:PQTokenizer"
    param_defaults = {"kmeans_iters": 50}  # Lloyd iterations per segment (k-means++ init)
    legacy_params = {"kmeans_iters": "kmeans_iters"}  # was tokenizer.kmeans_iters

    def check_values(self, p: dict[str, Any], prefix: str) -> None:
        check(p["kmeans_iters"] >= 1, f"{prefix}.kmeans_iters", f"must be >= 1, got {p['kmeans_iters']}")
