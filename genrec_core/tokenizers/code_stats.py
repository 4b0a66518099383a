"""Health figures of a code assignment, the same for RQ-VAE, PQ and RQ-KMeans.

A collapsed codebook shows up as a low usage share / perplexity at some level and a high
collision rate; these are logged every epoch so a collapse is seen while training, not after.
"""

from __future__ import annotations

import numpy as np


def usage_share(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Per level: share of the K codes used by at least one item."""
    return [float(np.unique(codes[:, level]).size / codebook_size) for level in range(codes.shape[1])]


def perplexity(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Per level: exp(entropy of the code frequencies); K when uniform, 1 when collapsed."""
    out = []
    for level in range(codes.shape[1]):
        p = np.bincount(codes[:, level], minlength=codebook_size).astype(np.float64)
        p = p[p > 0] / p.sum()
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full L-code tuple is also the tuple of another item."""
    if codes.shape[0] == 0:
        return 0.0
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).mean())


def code_metrics(codes: np.ndarray, codebook_size: int) -> dict[str, float]:
    """Flat per-level metrics (``usage_l1``, ``perplexity_l1``, ...) plus ``collision_rate``."""
    row: dict[str, float] = {}
    for level, v in enumerate(usage_share(codes, codebook_size), start=1):
        row[f"usage_l{level}"] = v
    for level, v in enumerate(perplexity(codes, codebook_size), start=1):
        row[f"perplexity_l{level}"] = v
    row["collision_rate"] = collision_rate(codes)
    return row
