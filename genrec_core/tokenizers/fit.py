"""The built-in kinds' ``fit`` (what their specs name, ``kinds/``), all with the signature of
``spec.TokenizerSpec.fit``: vectors + params -> the kept tokenizer files and reports; returns the
metrics.json summary. The training code itself is ``training.py`` (and ``seed_runs.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from genrec_core.config import TokenizerParams
from genrec_core.tokenizers.seed_runs import SEEDS_DIR, train_rqvae_seeds
from genrec_core.tokenizers.training import train_pq, train_rqkmeans, train_rqvae


def fit_rqvae(
    vectors: np.ndarray, tp: TokenizerParams, tokenizer_dir: str | Path, reports_dir: str | Path, *, item_ids: np.ndarray | None = None, progress: bool = True
) -> dict[str, Any]:
    """The last ``keep_last`` epochs of one run (resumable), or with ``kept_from: seeds`` the final
    tokenizers of ``keep_last`` seeded runs."""
    if tp.kept_from == "seeds":
        return train_rqvae_seeds(vectors, tp, tokenizer_dir, reports_dir, item_ids=item_ids, progress=progress)
    shutil.rmtree(Path(tokenizer_dir) / SEEDS_DIR, ignore_errors=True)  # a kept_from seeds run's (data/tokenizer persists)
    return train_rqvae(vectors, tp, tp.seed, tokenizer_dir, reports_dir, item_ids=item_ids, progress=progress)


def fit_pq(
    vectors: np.ndarray, tp: TokenizerParams, tokenizer_dir: str | Path, reports_dir: str | Path, *, item_ids: np.ndarray | None = None, progress: bool = True
) -> dict[str, Any]:
    """One shot: ``kept/pq.pt``."""
    return train_pq(vectors, tp, tp.seed, tokenizer_dir, reports_dir)


def fit_rqkmeans(
    vectors: np.ndarray, tp: TokenizerParams, tokenizer_dir: str | Path, reports_dir: str | Path, *, item_ids: np.ndarray | None = None, progress: bool = True
) -> dict[str, Any]:
    """One shot: ``kept/rqkmeans.pt``."""
    return train_rqkmeans(vectors, tp, tp.seed, tokenizer_dir, reports_dir)
