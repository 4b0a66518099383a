"""The interface every semantic-ID tokenizer implements (RQ-VAE, PQ, and later BLOGER's).

Collision handling and ID emission only see ``QuantizeResult``, so any tokenizer that can say
which code each item got at each level, and how far its last-level input is from every
last-level code, gets collision-free ID tables for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class QuantizeResult:
    """codes: int64 [N, L], code of each item at each level (0..K-1).
    last_residual: float32 [N, d], what the last level quantised (RQ: r_L; PQ: the last segment).
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
