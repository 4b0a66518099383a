"""Batched, seeded k-means in torch: codebook initialisation for RQ-VAE, the PQ and RQ-KMeans quantisers.

Why our own: a codebook initialised at the data (instead of at random) is what keeps RQ-VAE
codebooks from collapsing, and PQ *is* k-means. It must be deterministic for a seed (the whole
pipeline is), work on CPU and GPU, and not allocate an [N, K, d] tensor (distances come from
``|x|^2 - 2 x.c + |c|^2`` in row chunks, so memory is O(chunk * K)).

Determinism: every random draw comes from the caller's CPU ``torch.Generator`` (so the draws are
the same on every device); on the CPU the result is then bitwise reproducible. On CUDA the
``index_add_`` sums use atomics, so centroids may differ in the last bits between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_CHUNK = 16384  # rows per distance block: 16384 x 256 x 4 B = 16 MiB


@dataclass
class KMeansResult:
    """centroids [K, d]; assignments [N] int64; counts [K] int64 (items per centroid); inertia =
    sum of squared distances of the items to their centroid (float)."""

    centroids: torch.Tensor
    assignments: torch.Tensor
    counts: torch.Tensor
    inertia: float


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """[N, 1] row squared norms: computed once per k-means run and passed to ``squared_distances``
    (each k-means++ draw and Lloyd iteration would otherwise recompute them, as much work as the
    distances to one centre)."""
    return x.pow(2).sum(1, keepdim=True)


def squared_distances(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """[N, K] squared Euclidean distances without an [N, K, d] intermediate (clamped at 0, since
    the expansion can go slightly negative in float32). ``x_sq``: ``squared_norms(x)``, if known."""
    d = torch.addmm(c.pow(2).sum(1).unsqueeze(0), x, c.t(), beta=1.0, alpha=-2.0)
    d.add_(squared_norms(x) if x_sq is None else x_sq)
    return d.clamp_min_(0.0)


def nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = _CHUNK, x_sq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest row of ``c`` for every row of ``x`` (ties -> lowest index) and the
    squared distance to it, computed in row chunks (``x_sq``: ``squared_norms(x)``, if known)."""
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk):
        d = squared_distances(x[s : s + chunk], c, None if x_sq is None else x_sq[s : s + chunk])
        dmin, amin = d.min(dim=1)
        idx[s : s + chunk] = amin
        dist[s : s + chunk] = dmin
    return idx, dist


def _draw(weights: torch.Tensor, generator: torch.Generator) -> int:
    """One index drawn proportionally to ``weights`` (uniformly when they are all zero, e.g. when
    every distinct point is already a centre), on the CPU generator so draws match across devices."""
    w = weights.detach().to("cpu", torch.float64)
    total = float(w.sum())
    if not total > 0.0:
        return int(torch.randint(w.numel(), (1,), generator=generator).item())
    return int(torch.multinomial(w / total, 1, generator=generator).item())


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): spread-out starting centres, so Lloyd's
    iterations rarely end with empty or merged clusters."""
    n = x.shape[0]
    centres = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=generator).item())
    centres[0] = x[first]
    x_sq = squared_norms(x)
    closest = squared_distances(x, centres[:1], x_sq).squeeze(1)
    for j in range(1, k):
        i = _draw(closest, generator)
        centres[j] = x[i]
        closest = torch.minimum(closest, squared_distances(x, centres[j : j + 1], x_sq).squeeze(1))
    return centres


def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 50,
    generator: torch.Generator | None = None,
    init: str = "kmeans++",
    chunk: int = _CHUNK,
) -> KMeansResult:
    """Lloyd's k-means with a fixed number of iterations (no tolerance test, so the run length and
    result do not depend on float noise). Clusters left empty are re-seeded with the points
    farthest from their current centre, so all ``k`` centres stay in use whenever there are at
    least ``k`` distinct points.

    ``init``: "kmeans++" or "random" (k distinct random points; with replacement when N < k).
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, d] tensor, got shape {tuple(x.shape)}")
    if k < 1 or iters < 0:
        raise ValueError(f"kmeans needs k >= 1 and iters >= 0, got k={k}, iters={iters}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    x = x.detach()
    n = x.shape[0]
    if init == "kmeans++":
        centroids = kmeans_plusplus(x, k, generator)
    elif init == "random":
        if n >= k:
            pick = torch.randperm(n, generator=generator)[:k]
        else:
            pick = torch.randint(n, (k,), generator=generator)
        centroids = x[pick.to(x.device)].clone()
    else:
        raise ValueError(f"unknown kmeans init {init!r}; use 'kmeans++' or 'random'")

    x_sq = squared_norms(x)
    assign, dist = nearest(x, centroids, chunk, x_sq)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        live = counts > 0
        centroids = torch.where(live.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype), centroids)
        n_empty = int((~live).sum())
        if n_empty:
            # the worst-served points become the new centres: splits the widest clusters
            far = torch.topk(dist, min(n_empty, n)).indices
            empty = torch.nonzero(~live).squeeze(1)[: far.numel()]
            centroids[empty] = x[far]
        assign, dist = nearest(x, centroids, chunk, x_sq)
    counts = torch.bincount(assign, minlength=k)
    return KMeansResult(centroids, assign, counts, float(dist.double().sum()))
