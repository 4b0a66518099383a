"""Product quantisation (paper 001, Table 5; SPEC section 3): split each vector into L equal
segments and k-means each segment into K codes; an item's ID is its L segment codes.

Equal segments only: a dimension D not divisible by L is a ParamError on ``tokenizer.levels``
(SPEC says "L equal segments"; silently unequal segments would weight levels unevenly).
PQ has no epochs, so it yields one tokenizer (``keep_last`` only applies to RQ-VAE).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genrec_core.errors import ParamError
from genrec_core.tokenizers.base import QuantizeResult, SemanticTokenizer
from genrec_core.tokenizers.kmeans import kmeans, nearest


def segment_bounds(dim: int, levels: int) -> list[tuple[int, int]]:
    """[start, end) of each of the L equal segments of a D-dim vector."""
    if dim % levels != 0:
        divisors = [d for d in range(1, min(dim, 64) + 1) if dim % d == 0]
        raise ParamError("tokenizer.levels", f"PQ splits the {dim}-d vectors into equal segments, so levels must divide {dim}; got {levels} (e.g. {divisors})")
    w = dim // levels
    return [(i * w, (i + 1) * w) for i in range(levels)]


class PQTokenizer(SemanticTokenizer):
    """One k-means codebook per segment; last_residual / last_codebook are the last segment and
    its centroids (what the last level quantised, in the same space)."""

    def __init__(self, centroids: list[torch.Tensor], bounds: list[tuple[int, int]], device: str = "cpu", batch_size: int = 65536):
        self.centroids = [c.to(device) for c in centroids]
        self.bounds = bounds
        self.levels = len(bounds)
        self.codebook_size = int(centroids[0].shape[0])
        self.dim = bounds[-1][1]
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def fit(cls, vectors: np.ndarray, levels: int, codebook_size: int, iters: int, seed: int, device: str = "cpu") -> PQTokenizer:
        """k-means++ per segment, each segment from its own generator seeded ``seed + level`` so a
        segment's codebook does not depend on the others'."""
        x = torch.from_numpy(np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])).to(device)
        bounds = segment_bounds(x.shape[1], levels)
        cents = []
        for level, (a, b) in enumerate(bounds):
            g = torch.Generator().manual_seed(seed + level)
            cents.append(kmeans(x[:, a:b].contiguous(), codebook_size, iters, g).centroids)
        return cls(cents, bounds, device)

    def state(self) -> dict[str, Any]:
        return {"kind": "pq", "bounds": [list(b) for b in self.bounds], "centroids": [c.detach().cpu() for c in self.centroids]}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str = "cpu") -> PQTokenizer:
        return cls(list(state["centroids"]), [tuple(b) for b in state["bounds"]], device)

    @torch.no_grad()
    def quantize(self, vectors: np.ndarray) -> QuantizeResult:
        x_all = np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
        if x_all.ndim != 2 or x_all.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [N, {self.dim}], got {x_all.shape}")
        codes = np.empty((x_all.shape[0], self.levels), dtype=np.int64)
        for s in range(0, x_all.shape[0], self.batch_size):
            x = torch.from_numpy(x_all[s : s + self.batch_size]).to(self.device)
            for level, (a, b) in enumerate(self.bounds):
                idx, _ = nearest(x[:, a:b].contiguous(), self.centroids[level])
                codes[s : s + x.shape[0], level] = idx.cpu().numpy()
        a, b = self.bounds[-1]
        return QuantizeResult(codes, x_all[:, a:b].copy(), self.centroids[-1].float().cpu().numpy().copy())
