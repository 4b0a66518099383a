"""RQ-KMeans (SPEC section 9; GRID, OneRec, MiniOneRec): residual quantisation by plain k-means.

No encoder and no training loop: level 1 runs k-means (k-means++ init, ``kmeans_iters`` Lloyd
iterations) on the item vectors, level l on the residuals ``r_l = r_{l-1} - c^{l-1}_{code}`` left
by level l-1; an item's code at each level is the index of its nearest centroid. The baseline
every RQ-VAE result should be compared with: deterministic, fast, and no codebook collapse (the
project's k-means re-seeds empty clusters).

``normalize`` (``tokenizer.kind_params.normalize``, once ``tokenizer.rqkmeans_normalize``):
  * ``none``: the vectors as given (the sum of the L assigned centroids approximates them).
  * ``input``: L2-normalise the item vectors before level 1, then plain residuals.
  * ``residuals``: L2-normalise what every level clusters (the vectors, then each residual), so
    each level sees directions of equal weight; the centroids then no longer sum to the vector.

Determinism: level l's k-means draws from its own CPU generator seeded ``seed + l - 1`` (as PQ's
segments do), so on the CPU a seed fixes the codebooks bit for bit. RQ-KMeans has no epochs, so
it yields one tokenizer (``keep_last`` only applies to RQ-VAE). No balanced (size-constrained)
variant: SPEC section 9 does not ask for one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genrec_core.tokenizers.base import QuantizeResult, SemanticTokenizer
from genrec_core.tokenizers.kinds.rqkmeans import NORMALIZE
from genrec_core.tokenizers.kmeans import kmeans, nearest


def _l2(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (a zero row stays zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown RQ-KMeans normalize {normalize!r}; use one of {', '.join(NORMALIZE)}")


def _level_input(r: torch.Tensor, level: int, normalize: str) -> torch.Tensor:
    """What level ``level`` (0-based) clusters, given the residual it receives."""
    if normalize == "residuals" or (normalize == "input" and level == 0):
        return _l2(r)
    return r


class RQKMeansTokenizer(SemanticTokenizer):
    """L k-means codebooks applied to successive residuals.

    last_residual / last_codebook (for ``reassign_last``) are what the last level clustered and
    its centroids, in the same space."""

    def __init__(self, centroids: list[torch.Tensor], normalize: str = "none", device: str = "cpu", batch_size: int = 65536):
        _check_normalize(normalize)
        if not centroids:
            raise ValueError("RQ-KMeans needs at least one level of centroids")
        self.centroids = [c.to(device) for c in centroids]
        self.normalize = normalize
        self.levels = len(centroids)
        self.codebook_size = int(centroids[0].shape[0])
        self.dim = int(centroids[0].shape[1])
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def fit(
        cls, vectors: np.ndarray, levels: int, codebook_size: int, iters: int, seed: int, normalize: str = "none", device: str = "cpu"
    ) -> RQKMeansTokenizer:
        """k-means level by level on the residuals of the level before."""
        _check_normalize(normalize)
        if levels < 1:
            raise ValueError(f"RQ-KMeans needs levels >= 1, got {levels}")
        x = torch.from_numpy(np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])).to(device)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"RQ-KMeans needs non-empty vectors [N, D], got shape {tuple(x.shape)}")
        r = x
        cents = []
        for level in range(levels):
            inp = _level_input(r, level, normalize)
            g = torch.Generator().manual_seed(seed + level)
            res = kmeans(inp.contiguous(), codebook_size, iters, g)
            cents.append(res.centroids)
            r = inp - res.centroids[res.assignments]
        return cls(cents, normalize, device)

    def state(self) -> dict[str, Any]:
        return {"kind": "rqkmeans", "normalize": self.normalize, "centroids": [c.detach().cpu() for c in self.centroids]}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str = "cpu") -> RQKMeansTokenizer:
        return cls(list(state["centroids"]), str(state["normalize"]), device)

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(codes [n, L], last level input [n, d], residual after the last level [n, d],
        mean squared residual after each level) for one batch."""
        codes = torch.empty(x.shape[0], self.levels, dtype=torch.long, device=x.device)
        r, inp = x, x
        errors = []
        for level in range(self.levels):
            inp = _level_input(r, level, self.normalize)
            idx, _ = nearest(inp.contiguous(), self.centroids[level])
            codes[:, level] = idx
            r = inp - self.centroids[level][idx]
            errors.append(r.double().pow(2).sum(1))
        return codes, inp, r, errors

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        x = np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [N, {self.dim}], got {x.shape}")
        return x

    @torch.no_grad()
    def quantize(self, vectors: np.ndarray) -> QuantizeResult:
        x_all = self._check(vectors)
        n = x_all.shape[0]
        codes = np.empty((n, self.levels), dtype=np.int64)
        last = np.empty((n, self.dim), dtype=np.float32)
        for s in range(0, n, self.batch_size):
            x = torch.from_numpy(x_all[s : s + self.batch_size]).to(self.device)
            c, inp, _, _ = self._run(x)
            codes[s : s + x.shape[0]] = c.cpu().numpy()
            last[s : s + x.shape[0]] = inp.float().cpu().numpy()
        return QuantizeResult(codes, last, self.centroids[-1].float().cpu().numpy().copy())

    @torch.no_grad()
    def residual_errors(self, vectors: np.ndarray) -> list[float]:
        """Per level l: mean over items of ||r_{l+1}||^2, what is left after quantising level l
        (with ``normalize`` none/input this is the error of reconstructing the (normalised)
        vector from the first l centroids; it shrinks level by level)."""
        x_all = self._check(vectors)
        sums = np.zeros(self.levels, dtype=np.float64)
        for s in range(0, x_all.shape[0], self.batch_size):
            x = torch.from_numpy(x_all[s : s + self.batch_size]).to(self.device)
            _, _, _, errors = self._run(x)
            sums += np.array([float(e.sum()) for e in errors])
        return (sums / max(1, x_all.shape[0])).tolist()

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Sum of the assigned centroids, float32 [N, D], from codes [N, l] of the first l <= L
        levels (approximates the (normalised) vectors when ``normalize`` is none or input)."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] > self.levels:
            raise ValueError(f"codes must be [N, l] with l <= {self.levels}, got shape {codes.shape}")
        out = np.zeros((codes.shape[0], self.dim), dtype=np.float64)
        for level in range(codes.shape[1]):
            out += self.centroids[level].double().cpu().numpy()[codes[:, level]]
        return out.astype(np.float32)
