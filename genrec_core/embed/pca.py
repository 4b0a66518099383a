"""PCA with optional whitening (MTGRec and TIGER++ reduce item vectors this way; SPEC section 2).

Plain numpy in float64: LLaMA vectors (4096-d) have a few huge-variance directions, and a
float32 SVD loses the small components that whitening then blows up. Signs are fixed (the
largest-magnitude loading of each component is positive) so the same input always gives the
same output, whatever LAPACK build runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrec_core.errors import ParamError

PARAM = "embed.pca_dim"


@dataclass
class PCAResult:
    """A fitted PCA. components: [k, D] (orthonormal rows); mean: [D];
    explained_variance: [k] (variance of each component, ddof=1); total_variance: scalar."""

    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    total_variance: float
    whiten: bool

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.explained_variance / self.total_variance if self.total_variance > 0 else np.zeros_like(self.explained_variance)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project ``x`` [n, D] to float32 [n, k]; with whitening each component has unit variance.

        A component with (numerically) zero variance stays 0 instead of being scaled up:
        whitening it would turn rounding noise into a full-size feature.
        """
        z = (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T
        if self.whiten:
            std = np.sqrt(self.explained_variance)
            tol = max(std.max(initial=0.0), 1.0) * 1e-10
            scale = np.where(std > tol, 1.0 / np.where(std > tol, std, 1.0), 0.0)
            z = z * scale
        return z.astype(np.float32)


def check_pca_dim(dim: int, n: int, d: int) -> None:
    """PCA to ``dim`` needs dim <= min(N, D); fail before the (slow) encoding when it cannot."""
    if dim > min(n, d):
        raise ParamError(PARAM, f"is {dim} but PCA can keep at most min(n_items, vector dim) = min({n}, {d}) = {min(n, d)} components")


def fit_pca(x: np.ndarray, dim: int, whiten: bool = True) -> PCAResult:
    """Fit PCA on the rows of ``x`` [N, D] keeping ``dim`` components (float64 SVD)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    n, d = x.shape
    check_pca_dim(dim, n, d)
    mean = x.mean(axis=0)
    xc = x - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:dim].copy()
    # deterministic sign: the largest-|.| loading of each component is positive
    pivot = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(dim), pivot])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    denom = max(n - 1, 1)
    var = s**2 / denom
    return PCAResult(
        components=comps,
        mean=mean,
        explained_variance=var[:dim].copy(),
        total_variance=float(var.sum()),
        whiten=whiten,
    )
