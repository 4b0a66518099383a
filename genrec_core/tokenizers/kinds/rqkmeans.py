"""``tokenizer.kind: rqkmeans``: residual k-means (SPEC section 9; GRID, OneRec, MiniOneRec).

The tokenizer is ``tokenizers/rqkmeans.py``; ``training.train_rqkmeans`` fits it in one shot (no
epochs: one kept tokenizer, ``kept/rqkmeans.pt``). The shared training-schedule params do not
apply. ``normalize`` was ``tokenizer.rqkmeans_normalize``.
"""

from __future__ import annotations

from typing import Any

from genrec_core.tokenizers.spec import TokenizerSpec, check, register_tokenizer

#: ``normalize``: L2-normalise nothing, the item vectors, or what every level clusters.
NORMALIZE = ("none", "input", "residuals")


@register_tokenizer("rqkmeans")
class RQKMeansSpec(TokenizerSpec):
    """k-means per level on the residuals of the level before: its iterations and normalisation."""

    fit_function = "genrec_core.tokenizers.fit:fit_rqkmeans"
    tokenizer_class = "genrec_core.tokenizers.rqkmeans:RQKMeansTokenizer"
    param_defaults = {
        "kmeans_iters": 50,  # Lloyd iterations per level (k-means++ init)
        "normalize": "none",  # none | input | residuals (tokenizers/rqkmeans.py)
    }
    legacy_params = {"kmeans_iters": "kmeans_iters", "rqkmeans_normalize": "normalize"}

    def check_values(self, p: dict[str, Any], prefix: str) -> None:
        check(p["kmeans_iters"] >= 1, f"{prefix}.kmeans_iters", f"must be >= 1, got {p['kmeans_iters']}")
        check(p["normalize"] in NORMALIZE, f"{prefix}.normalize", f"must be none, input or residuals, got {p['normalize']!r}")
