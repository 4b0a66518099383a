"""The interface every semantic-ID tokenizer implements (RQ-VAE, PQ, RQ-KMeans, and later BLOGER's).

Collision handling and ID emission only see ``QuantizeResult``, so any tokenizer that can say
which code each item got at each level, and how far its last-level input is from every
last-level code, gets collision-free ID tables for free.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

#: ``tokenizer.codebook_size: auto`` stays within these bounds (powers of two).
AUTO_CODEBOOK_MIN = 16
AUTO_CODEBOOK_MAX = 256


def auto_codebook_size(num_items: int, levels: int) -> int:
    """K for ``tokenizer.codebook_size: auto``: the smallest power of two with K^(L-1) >= N.

    Why: the first L-1 levels can then give every item a prefix of its own, so the last level
    only separates near-duplicates, while each code is shared by as many items as possible
    (a code seen by few training targets is learnt slowly). On ml-100k (N = 1,349, L = 3) this
    gives 64, which trained better than 256 (reports/benchmarks/convergence.md); Yelp (20,033
    items, L = 3) gets 256. Clamped to [16, 256]; L = 1 needs K >= N and gets the next power of
    two (not clamped above).
    """
    if num_items < 1 or levels < 1:
        raise ValueError(f"need num_items >= 1 and levels >= 1, got {num_items}, {levels}")
    if levels == 1:
        return max(2, 1 << max(0, math.ceil(math.log2(num_items))))
    root = num_items ** (1.0 / (levels - 1))
    k = 1 << max(0, math.ceil(math.log2(root) - 1e-9))
    return int(min(AUTO_CODEBOOK_MAX, max(AUTO_CODEBOOK_MIN, k)))


@dataclass
class QuantizeResult:
    """codes: int64 [N, L], code of each item at each level (0..K-1).
    last_residual: float32 [N, d], what the last level quantised (RQ-VAE, RQ-KMeans: r_L; PQ: the last segment).
    last_codebook: float32 [K, d], the last level's code vectors, in the same space.
    """

    codes: np.ndarray
    last_residual: np.ndarray
    last_codebook: np.ndarray


class SemanticTokenizer(ABC):
    """Maps item vectors to L-level codes. ``levels`` = L, ``codebook_size`` = K."""

    levels: int
    codebook_size: int

    @abstractmethod
    def quantize(self, vectors: np.ndarray) -> QuantizeResult:
        """Assign codes to every row of ``vectors`` (float32 [N, D]); deterministic."""

    def trainable_module(self):
        """What the runtime tokenizer (``runtime.RuntimeItemTokenizer``, BLOGER) trains: a new
        ``torch.nn.Module`` with this tokenizer's parameters and ``rqvae.RQVAE``'s interface
        (``encoder``, ``quantizer.assign``/``soft_assign``, ``forward(x).loss``); None (the
        default) for a kind that only gives hard IDs, with nothing to train."""
        return None
