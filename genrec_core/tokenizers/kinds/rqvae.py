"""``tokenizer.kind: rqvae``: the RQ-VAE of TIGER (SPEC section 3), the default kind.

The model is ``tokenizers/rqvae.py``; its training (epochs, resumable from ``last.pt``, the last
``keep_last`` epochs kept) is ``training.train_rqvae``; ``kept_from: seeds`` trains one run per
seed (``seed_runs.py``). It is the one kind the runtime tokenizer can train (BLOGER).
"""

from __future__ import annotations

from typing import Any

from genrec_core.tokenizers.spec import TokenizerSpec, check, register_tokenizer

CODEBOOK_UPDATES = ("ste", "ema")


@register_tokenizer("rqvae")
class RQVAESpec(TokenizerSpec):
    """Architecture and codebook training of the RQ-VAE; the optimiser, epochs and batch size are
    the shared ``tokenizer`` params."""

    fit_function = "genrec_core.tokenizers.fit:fit_rqvae"
    tokenizer_class = "genrec_core.tokenizers.rqvae:RQVAETokenizer"
    seed_runs = True
    param_defaults = {
        "hidden_dims": [512, 256, 128],  # encoder widths (the decoder mirrors them)
        "latent_dim": 32,  # e_dim
        "dropout": 0.0,
        "beta": 0.25,  # commitment weight
        "codebook_update": "ste",  # ste (straight-through gradient) | ema
        "ema_decay": 0.99,
        "kmeans_init": True,  # k-means on the first batch of residuals
        "kmeans_iters": 50,  # its Lloyd iterations
        "dead_code_reseed": True,
        "dead_code_threshold": 1.0,  # codes used fewer times than this in an epoch are re-seeded
    }
    legacy_params = {key: key for key in param_defaults}  # each was tokenizer.<key>

    def check_values(self, p: dict[str, Any], prefix: str) -> None:
        dims = p["hidden_dims"]
        check(all(isinstance(h, int) and not isinstance(h, bool) for h in dims), f"{prefix}.hidden_dims", f"expected a list of integers, got {dims!r}")
        check(all(h >= 1 for h in dims), f"{prefix}.hidden_dims", f"widths must be >= 1, got {dims}")
        check(p["latent_dim"] >= 1, f"{prefix}.latent_dim", f"must be >= 1, got {p['latent_dim']}")
        check(0.0 <= p["dropout"] < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {p['dropout']}")
        check(p["beta"] >= 0, f"{prefix}.beta", f"must be >= 0, got {p['beta']}")
        check(p["codebook_update"] in CODEBOOK_UPDATES, f"{prefix}.codebook_update", f"must be ste or ema, got {p['codebook_update']!r}")
        check(0.0 < p["ema_decay"] < 1.0, f"{prefix}.ema_decay", f"must be in (0, 1), got {p['ema_decay']}")
        check(p["kmeans_iters"] >= 1, f"{prefix}.kmeans_iters", f"must be >= 1, got {p['kmeans_iters']}")
        check(p["dead_code_threshold"] >= 0, f"{prefix}.dead_code_threshold", f"must be >= 0, got {p['dead_code_threshold']}")
