"""Collision handling: turn raw L-level codes into one unique ID per item (SPEC section 3).

A generative recommender decodes an ID and must map it back to exactly one item, so two items
with the same L codes are unusable as they are. Two remedies, chosen by ``ids.collision``:

* ``dedup_level`` (TIGER, MTGRec): append a level that numbers the items of each colliding group
  (0, 1, 2, ... in item order; items without a collision get 0). IDs become L+1 tokens and the
  extra level needs a vocabulary of ``max group size`` tokens.
* ``reassign_last`` (paper 001): keep IDs L tokens long. In each colliding group the item whose
  last residual is nearest to the shared last-level code keeps it; every other item moves to the
  nearest last-level code that no item under the same L-1 prefix uses. Movers are placed one at
  a time, in order of increasing distance to their current code (ties: lower item index first),
  so the result depends only on the inputs.

Everything is vectorised over items except the greedy placement of movers, which loops over the
(few, small) prefixes that contain a collision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrec_core.errors import GenrecError
from genrec_core.tokenizers.base import QuantizeResult

MODES = ("reassign_last", "dedup_level")


@dataclass
class CollisionStats:
    """What collision handling found and did, for reports/ids/emit.json.

    collision_rate: share of items whose raw L codes are shared with at least one other item.
    duplicate_rate: 1 - (distinct raw IDs / N), the share of items that cannot keep their raw ID.
    colliding_groups: number of raw IDs shared by two or more items.
    max_group_size: largest number of items sharing one raw ID (1 = no collision); with
        ``dedup_level`` this is the vocabulary size of the appended level.
    items_moved: items whose final ID differs from their raw codes on the first L levels
        (``reassign_last``; always 0 for ``dedup_level``).
    id_length: tokens per final ID.
    """

    n_items: int
    collision_rate: float
    duplicate_rate: float
    colliding_groups: int
    max_group_size: int
    items_moved: int
    id_length: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _lex_order(codes: np.ndarray) -> np.ndarray:
    """Stable order sorting the rows of ``codes`` lexicographically (column 0 most significant)."""
    if codes.shape[1] == 0:
        return np.arange(codes.shape[0])
    return np.lexsort(codes[:, ::-1].T)


def _group_starts(sorted_codes: np.ndarray) -> np.ndarray:
    """Boolean [N]: True where a row of lexicographically sorted codes starts a new group."""
    n = sorted_codes.shape[0]
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
        if sorted_codes.shape[1]:
            starts[1:] = np.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)
    return starts


def group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label rows by identical code tuples: (group id per item [N], size of each group [G]).

    Group ids follow the lexicographic order of the code tuples, so they are deterministic.
    """
    order = _lex_order(codes)
    starts = _group_starts(codes[order])
    gid_sorted = np.cumsum(starts) - 1
    gid = np.empty(codes.shape[0], dtype=np.int64)
    gid[order] = gid_sorted
    sizes = np.bincount(gid_sorted) if codes.shape[0] else np.zeros(0, dtype=np.int64)
    return gid, sizes


def assert_unique_ids(ids: np.ndarray) -> None:
    """Fail loudly if two items share an ID: a duplicate would make decoding ambiguous."""
    if ids.ndim != 2:
        raise AssertionError(f"IDs must be a 2-d array [N, L'], got shape {ids.shape}")
    _, sizes = group_ids(ids)
    if sizes.size and sizes.max() > 1:
        raise AssertionError(f"{int((sizes > 1).sum())} IDs are shared by several items after collision handling")


def _check_inputs(result: QuantizeResult, codebook_size: int) -> np.ndarray:
    codes = np.asarray(result.codes)
    if codes.ndim != 2 or codes.shape[1] < 1:
        raise ValueError(f"codes must be int [N, L] with L >= 1, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got {codes.dtype}")
    codes = codes.astype(np.int64, copy=False)
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in 0..{codebook_size - 1} (codebook_size), got {codes.min()}..{codes.max()}")
    return codes


def dedup_level(codes: np.ndarray) -> np.ndarray:
    """Append the rank of each item inside its group of identical codes (item order)."""
    n = codes.shape[0]
    order = _lex_order(codes)  # stable: equal rows stay in item order
    starts = _group_starts(codes[order])
    pos = np.arange(n)
    group_start_pos = np.maximum.accumulate(np.where(starts, pos, 0)) if n else pos
    rank = np.empty(n, dtype=np.int64)
    rank[order] = pos - group_start_pos
    return np.concatenate([codes, rank[:, None]], axis=1)


def reassign_last(result: QuantizeResult, codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Move all but one item of each colliding group to the nearest free last-level code."""
    n, n_levels = codes.shape
    residual = np.asarray(result.last_residual, dtype=np.float64)
    codebook = np.asarray(result.last_codebook, dtype=np.float64)
    if residual.shape[0] != n or residual.ndim != 2:
        raise ValueError(f"last_residual must be [N={n}, d], got shape {residual.shape}")
    if codebook.shape != (codebook_size, residual.shape[1]):
        raise ValueError(f"last_codebook must be [K={codebook_size}, d={residual.shape[1]}], got shape {codebook.shape}")

    prefix = codes[:, : n_levels - 1]
    prefix_gid, prefix_sizes = group_ids(prefix)
    too_big = np.flatnonzero(prefix_sizes > codebook_size)
    if too_big.size:
        worst = int(prefix_sizes[too_big].max())
        example = prefix[np.flatnonzero(prefix_gid == too_big[0])[0]].tolist()
        raise GenrecError(
            f"param ids.collision: reassign_last cannot give unique {n_levels}-token IDs: "
            f"{too_big.size} prefix(es) of the first {n_levels - 1} levels hold more items than the "
            f"{codebook_size} last-level codes (largest: {worst} items, e.g. prefix {example}); "
            "use ids.collision=dedup_level or a larger tokenizer.codebook_size"
        )

    full_gid, full_sizes = group_ids(codes)
    in_collision = np.flatnonzero(full_sizes[full_gid] > 1)
    final = codes.copy()
    if in_collision.size == 0:
        return final

    own = codebook[codes[in_collision, -1]]
    dist_own = ((residual[in_collision] - own) ** 2).sum(axis=1)
    # keeper of each colliding group: smallest distance to the shared code, then lowest index
    order = np.lexsort((in_collision, dist_own, full_gid[in_collision]))
    g_sorted = full_gid[in_collision][order]
    is_keeper_sorted = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    movers_local = order[~is_keeper_sorted]
    movers = in_collision[movers_local]
    mover_dist = dist_own[movers_local]
    # placement order: by prefix, then increasing distance to the current code, then item index
    place = np.lexsort((movers, mover_dist, prefix_gid[movers]))
    movers = movers[place]
    mover_prefix = prefix_gid[movers]

    # codes in use under each affected prefix: the last codes of all its items (movers included,
    # since a mover's old code stays used by its group's keeper)
    affected = np.unique(mover_prefix)
    members_order = np.argsort(prefix_gid, kind="stable")
    bounds = np.r_[0, np.cumsum(prefix_sizes)]
    split = np.flatnonzero(np.r_[True, mover_prefix[1:] != mover_prefix[:-1]])
    split = np.r_[split, movers.size]
    for j, p in enumerate(affected):
        members = members_order[bounds[p] : bounds[p + 1]]
        used = np.zeros(codebook_size, dtype=bool)
        used[codes[members, -1]] = True
        group_movers = movers[split[j] : split[j + 1]]
        dist = ((residual[group_movers][:, None, :] - codebook[None, :, :]) ** 2).sum(axis=2)
        for row, item in enumerate(group_movers):
            d = np.where(used, np.inf, dist[row])
            new_code = int(np.argmin(d))  # ties: the lowest code index
            used[new_code] = True
            final[item, -1] = new_code
    return final


def resolve_collisions(result: QuantizeResult, mode: str, codebook_size: int) -> np.ndarray:
    """Final IDs [N, L] (reassign_last) or [N, L+1] (dedup_level), int64, unique per item."""
    if mode not in MODES:
        raise GenrecError(f"param ids.collision: must be reassign_last or dedup_level, got {mode!r}")
    codes = _check_inputs(result, codebook_size)
    ids = dedup_level(codes) if mode == "dedup_level" else reassign_last(result, codes, codebook_size)
    if ids.shape[0] != codes.shape[0]:
        raise AssertionError("collision handling changed the number of items")
    assert_unique_ids(ids)
    return ids


def collision_stats(codes: np.ndarray, ids: np.ndarray) -> CollisionStats:
    """Summarise raw collisions (``codes``, [N, L]) and what resolution did (``ids``)."""
    codes = np.asarray(codes, dtype=np.int64)
    n, n_levels = codes.shape
    gid, sizes = group_ids(codes)
    moved = int(np.any(ids[:, :n_levels] != codes, axis=1).sum()) if n else 0
    return CollisionStats(
        n_items=int(n),
        collision_rate=float((sizes[gid] > 1).mean()) if n else 0.0,
        duplicate_rate=float(1.0 - sizes.size / n) if n else 0.0,
        colliding_groups=int((sizes > 1).sum()),
        max_group_size=int(sizes.max()) if sizes.size else 0,
        items_moved=moved,
        id_length=int(ids.shape[1]),
    )
