"""Data-derived token weights of SPEC section 6 (nothing hard-coded per dataset).

Pure numpy, shared by the loss strategies (``losses.py``) and the ``token_weights`` report stage:

- ``prefix_groups``: for every prefix length k = 0..L, the group (distinct length-k prefix) of
  each item; k = 0 is the whole item set, k = L the single items (IDs are unique).
- Front-Greater (paper 001, 4.1.1): ``front_greater_dispersion`` gives
  ``mu_k = E_I[V(G_k(I))]`` with ``V(G)`` the mean squared distance of the group's embeddings to
  its centroid (``variant="paper"``) or the mean (unsquared) distance (``variant="released"``, the
  authors' code); ``front_greater_weights`` turns ``delta_k = mu_{k-1} - mu_k`` into one weight per
  level: ``max(delta_k, 0)`` (paper) or ``log1p(max(delta_k, 0))`` (released), normalised to sum L.
- Frequency (paper 001, 4.1.2): ``level_token_counts`` counts each code among the training targets
  (an item counted once per time it is a target); ``effective_number`` ``E_n = (1 - beta^n)/(1 - beta)``
  and ``frequency_weights`` ``1/E_n`` per (level, code); per-target normalisation to sum L happens in
  the shared weighted NLL.
- IGD (Lin et al. 2025): ``igd_gains`` is the information gain of each token of each item ID in the
  trie of training targets weighted by item frequency,
  ``H(items | prefix_<i) - H(items | prefix_<=i)``; ``igd_weights`` gives zero-gain tokens ``beta``.
"""

from __future__ import annotations

import numpy as np

FG_VARIANTS = ("paper", "released")
ZERO_GAIN_TOL = 1e-9


def prefix_groups(codes: np.ndarray) -> list[np.ndarray]:
    """[L + 1] arrays of int64 [N]: entry k numbers the distinct length-k prefixes of ``codes`` [N, L]."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"codes must be a non-empty [N, L] array, got shape {codes.shape}")
    n, length = codes.shape
    groups = [np.zeros(n, dtype=np.int64)]
    for k in range(1, length + 1):
        # number the pairs (parent group, code at level k) densely: a refinement of level k - 1
        pair = groups[-1] * (int(codes[:, k - 1].max()) + 1) + codes[:, k - 1]
        groups.append(np.unique(pair, return_inverse=True)[1].astype(np.int64).reshape(-1))
    return groups


def _group_sums(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Row sums of ``values`` [N, D] per group (sorted reduceat: fast and exact enough in float64)."""
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    out = np.zeros((n_groups,) + values.shape[1:], dtype=np.float64)
    out[g[starts]] = np.add.reduceat(values[order].astype(np.float64), starts, axis=0)
    return out


def front_greater_dispersion(vectors: np.ndarray, codes: np.ndarray, variant: str = "paper") -> np.ndarray:
    """mu_k for k = 0..L ([L + 1]): expected within-group dispersion of an item drawn uniformly.

    ``V(G)`` = mean over the group's items of ``||u - centroid||^2`` (paper) or ``||u - centroid||``
    (released); ``mu_k = (1/N) sum_I V(G_k(I)) = sum_G |G|/N V(G)``, which is also the mean over
    items of their own squared (or plain) distance to their group centroid.
    """
    if variant not in FG_VARIANTS:
        raise ValueError(f"variant must be one of {FG_VARIANTS}, got {variant!r}")
    vectors = np.asarray(vectors, dtype=np.float64)
    codes = np.asarray(codes)
    if vectors.ndim != 2 or vectors.shape[0] != codes.shape[0]:
        raise ValueError(f"vectors must be [N={codes.shape[0]}, D], got shape {vectors.shape}")
    mus = []
    for group in prefix_groups(codes):
        n_groups = int(group.max()) + 1
        counts = np.bincount(group, minlength=n_groups).astype(np.float64)
        centroids = _group_sums(vectors, group, n_groups) / counts[:, None]
        sq = ((vectors - centroids[group]) ** 2).sum(axis=1)
        dist = sq if variant == "paper" else np.sqrt(sq)
        mus.append(float(dist.mean()))
    return np.asarray(mus)


def front_greater_weights(mu: np.ndarray, variant: str = "paper") -> np.ndarray:
    """[L] level weights from mu_0..mu_L: ``max(delta_k, 0)`` (paper) or ``log1p`` of it (released), sum L.

    All gains zero (e.g. one item) -> uniform weights 1.
    """
    if variant not in FG_VARIANTS:
        raise ValueError(f"variant must be one of {FG_VARIANTS}, got {variant!r}")
    mu = np.asarray(mu, dtype=np.float64)
    gain = np.maximum(mu[:-1] - mu[1:], 0.0)
    raw = gain if variant == "paper" else np.log1p(gain)
    length_l = raw.shape[0]
    total = raw.sum()
    return raw * (length_l / total) if total > 0 else np.ones(length_l)


def level_token_counts(codes: np.ndarray, item_counts: np.ndarray, level_sizes: tuple[int, ...] | list[int] | None = None) -> list[np.ndarray]:
    """Per level l, int64 [K_l]: how often each code appears at level l among the training targets.

    ``item_counts`` [N] = how often each item is a training target, so a code's count is the sum of
    the counts of the items whose ID has that code at that level.
    """
    codes = np.asarray(codes, dtype=np.int64)
    item_counts = np.asarray(item_counts, dtype=np.int64)
    if item_counts.shape != (codes.shape[0],):
        raise ValueError(f"item_counts must be [N={codes.shape[0]}], got shape {item_counts.shape}")
    out = []
    for level in range(codes.shape[1]):
        size = int(level_sizes[level]) if level_sizes is not None else int(codes[:, level].max()) + 1
        out.append(np.bincount(codes[:, level], weights=item_counts, minlength=size).astype(np.int64))
    return out


def effective_number(n: np.ndarray, beta: float) -> np.ndarray:
    """Cui et al. 2019: ``E_n = (1 - beta^n) / (1 - beta)`` (E_0 = 0, E_1 = 1, E_inf = 1/(1 - beta))."""
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    n = np.asarray(n, dtype=np.float64)
    return -np.expm1(n * np.log(beta)) / (1.0 - beta)


def frequency_weights(counts: np.ndarray, beta: float = 0.99) -> np.ndarray:
    """``1 / E_n`` per code (unnormalised). A code never seen as a target (n = 0, never a label
    during training) gets the weight of n = 1 instead of an infinite one."""
    return 1.0 / effective_number(np.maximum(np.asarray(counts), 1), beta)


def _entropies(item_counts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of the item distribution inside each group, items weighted by
    ``item_counts``; an empty (zero-mass) group has entropy 0."""
    f = np.asarray(item_counts, dtype=np.float64)
    n_groups = int(group.max()) + 1
    mass = np.bincount(group, weights=f, minlength=n_groups)
    flogf = np.where(f > 0, f * np.log(np.where(f > 0, f, 1.0)), 0.0)
    s = np.bincount(group, weights=flogf, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(mass > 0, np.log(np.where(mass > 0, mass, 1.0)) - s / np.where(mass > 0, mass, 1.0), 0.0)
    return np.maximum(h, 0.0)  # rounding can leave -1e-16


def igd_gains(codes: np.ndarray, item_counts: np.ndarray) -> np.ndarray:
    """[N, L] information gain of token i of each item's ID in the frequency-weighted trie:
    ``H(items | prefix_<i) - H(items | prefix_<=i)`` (nats; may be negative, 0 when the prefix
    already determines the next token among items that occur as targets)."""
    groups = prefix_groups(codes)
    ent = [_entropies(item_counts, g)[g] for g in groups]  # per item: entropy of its level-k group
    return np.stack([ent[k - 1] - ent[k] for k in range(1, len(groups))], axis=1)


def igd_weights(gains: np.ndarray, beta: float = 0.1, tol: float = ZERO_GAIN_TOL) -> np.ndarray:
    """[N, L]: ``beta`` where the gain is zero (|gain| <= tol), 1 elsewhere."""
    gains = np.asarray(gains, dtype=np.float64)
    return np.where(np.abs(gains) <= tol, float(beta), 1.0)


def zero_gain_share(gains: np.ndarray, item_counts: np.ndarray | None = None, tol: float = ZERO_GAIN_TOL) -> dict[str, list[float]]:
    """Share of zero-gain tokens per level: over distinct item IDs, and over training targets
    (items weighted by ``item_counts``) when given."""
    zero = np.abs(np.asarray(gains)) <= tol
    out = {"items": zero.mean(axis=0).tolist()}
    if item_counts is not None:
        w = np.asarray(item_counts, dtype=np.float64)
        out["targets"] = ((zero * w[:, None]).sum(axis=0) / max(w.sum(), 1e-12)).tolist()
    return out
