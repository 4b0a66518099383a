"""Collision handling: hand-computed cases, a brute-force reference over many seeds, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from genrec_core.errors import GenrecError
from genrec_core.tokenizers.base import QuantizeResult
from genrec_core.tokenizers.collisions import (
    assert_unique_ids,
    collision_stats,
    group_ids,
    resolve_collisions,
)

# Last-level codebook on a line: code c sits at position c (K = 3, d = 1).
CODEBOOK = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)


def hand_case() -> QuantizeResult:
    """6 items, L = 2, K = 3, two designed collisions.

    prefix 0: items 0, 1 share (0, 0); item 2 holds (0, 2). Item 1 (r = 0.1, dist 0.01 to code 0)
      beats item 0 (r = 1.9, dist 3.61) and keeps (0, 0). Item 0's nearest code is 2 (dist 0.01)
      but item 2 uses it, so it gets the only free code, 1: (0, 1).
    prefix 1: items 3, 4, 5 share (1, 1). Item 3 (r = 1.0, dist 0) keeps it. Movers in order of
      distance to code 1: item 5 (r = 1.4, dist 0.16) then item 4 (r = 1.6, dist 0.36). Free codes
      {0, 2}: item 5 takes 2 (dist 0.36 < 1.96), item 4 gets the remaining 0 -> (1, 2), (1, 0).
      (Index order would have given item 4 code 2 instead: the processing order matters.)
    """
    codes = np.array([[0, 0], [0, 0], [0, 2], [1, 1], [1, 1], [1, 1]], dtype=np.int64)
    residual = np.array([[1.9], [0.1], [2.0], [1.0], [1.6], [1.4]], dtype=np.float32)
    return QuantizeResult(codes, residual, CODEBOOK)


def test_reassign_last_hand_case():
    ids = resolve_collisions(hand_case(), "reassign_last", 3)
    expected = np.array([[0, 1], [0, 0], [0, 2], [1, 1], [1, 0], [1, 2]])
    np.testing.assert_array_equal(ids, expected)


def test_dedup_level_hand_case():
    ids = resolve_collisions(hand_case(), "dedup_level", 3)
    # rank inside each group in item order: group (0,0) = items 0, 1; (1,1) = items 3, 4, 5
    expected = np.array([[0, 0, 0], [0, 0, 1], [0, 2, 0], [1, 1, 0], [1, 1, 1], [1, 1, 2]])
    np.testing.assert_array_equal(ids, expected)


def test_stats_hand_case():
    result = hand_case()
    ids = resolve_collisions(result, "reassign_last", 3)
    s = collision_stats(result.codes, ids)
    assert s.n_items == 6
    assert s.collision_rate == pytest.approx(5 / 6)  # items 0, 1, 3, 4, 5 share their raw ID
    assert s.duplicate_rate == pytest.approx(1 - 3 / 6)  # 3 distinct raw IDs for 6 items
    assert s.colliding_groups == 2
    assert s.max_group_size == 3
    assert s.items_moved == 3  # items 0, 4, 5
    assert s.id_length == 2
    d = collision_stats(result.codes, resolve_collisions(result, "dedup_level", 3))
    assert d.items_moved == 0 and d.id_length == 3 and d.max_group_size == 3


def test_keeper_tie_goes_to_lower_index():
    # both at distance 0.25 from code 0: item 0 keeps it; item 1 (r = -0.5) moves to code 1
    res = QuantizeResult(np.array([[0, 0], [0, 0]]), np.array([[0.5], [-0.5]], dtype=np.float32), CODEBOOK)
    np.testing.assert_array_equal(resolve_collisions(res, "reassign_last", 3), [[0, 0], [0, 1]])


def test_prefix_out_of_codes_raises_naming_the_param():
    # prefix 0 holds 4 items but only K = 3 last-level codes exist
    codes = np.array([[0, 0], [0, 1], [0, 2], [0, 0], [1, 0]])
    res = QuantizeResult(codes, np.zeros((5, 1), dtype=np.float32), CODEBOOK)
    with pytest.raises(GenrecError) as err:
        resolve_collisions(res, "reassign_last", 3)
    msg = str(err.value)
    assert "ids.collision" in msg and "dedup_level" in msg and "tokenizer.codebook_size" in msg
    # dedup_level has no capacity limit: the fourth item of (0, 0) gets extra token 1
    ids = resolve_collisions(res, "dedup_level", 3)
    np.testing.assert_array_equal(ids[:, 2], [0, 0, 0, 1, 0])


def test_single_level_ids():
    # L = 1: the prefix is empty, all items compete for the K codes
    res = QuantizeResult(np.array([[2], [2], [0]]), np.array([[2.0], [1.2], [0.0]], dtype=np.float32), CODEBOOK)
    np.testing.assert_array_equal(resolve_collisions(res, "reassign_last", 3), [[2], [1], [0]])


def test_bad_inputs():
    res = hand_case()
    with pytest.raises(GenrecError, match="ids.collision"):
        resolve_collisions(res, "nope", 3)
    with pytest.raises(ValueError, match="codebook_size"):
        resolve_collisions(res, "dedup_level", 2)  # code 2 >= K
    wrong_cb = QuantizeResult(res.codes, res.last_residual, CODEBOOK[:2])
    with pytest.raises(ValueError, match="last_codebook"):
        resolve_collisions(wrong_cb, "reassign_last", 3)


def test_assert_unique_ids_detects_duplicates():
    assert_unique_ids(np.array([[0, 1], [1, 0]]))
    with pytest.raises(AssertionError):
        assert_unique_ids(np.array([[0, 1], [0, 1]]))


def reference_reassign(codes: np.ndarray, residual: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Plain-loop statement of the reassign_last rule, to check the vectorised one against."""
    n = len(codes)
    dist = ((residual[:, None, :].astype(np.float64) - codebook[None].astype(np.float64)) ** 2).sum(-1)
    own = dist[np.arange(n), codes[:, -1]]
    groups: dict[tuple, list[int]] = {}
    for i in range(n):
        groups.setdefault(tuple(codes[i]), []).append(i)
    movers = []
    for members in groups.values():
        keeper = min(members, key=lambda i: (own[i], i))
        movers += [i for i in members if i != keeper]
    final = codes.copy()
    used: dict[tuple, set] = {}
    for i in range(n):
        used.setdefault(tuple(codes[i, :-1]), set()).add(int(codes[i, -1]))
    for i in sorted(movers, key=lambda i: (tuple(codes[i, :-1]), own[i], i)):
        u = used[tuple(codes[i, :-1])]
        best = min((c for c in range(len(codebook)) if c not in u), key=lambda c: (dist[i, c], c))
        u.add(best)
        final[i, -1] = best
    return final


@pytest.mark.parametrize("seed", range(60))
def test_random_codes_unique_and_match_reference(seed):
    rng = np.random.default_rng(seed)
    n_levels = int(rng.integers(1, 4))
    k = int(rng.integers(2, 9))
    n = int(rng.integers(1, 2 ** (n_levels - 1) * k + 2))  # around capacity: both outcomes occur
    codes = rng.integers(0, k, size=(n, n_levels))
    codes[:, :-1] = rng.integers(0, 2, size=(n, n_levels - 1))  # few prefixes: many collisions
    residual = rng.normal(size=(n, 3)).astype(np.float32)
    codebook = rng.normal(size=(k, 3)).astype(np.float32)
    res = QuantizeResult(codes, residual, codebook)

    ded = resolve_collisions(res, "dedup_level", k)
    assert ded.shape == (n, n_levels + 1)
    np.testing.assert_array_equal(ded[:, :n_levels], codes)
    assert len({tuple(r) for r in ded.tolist()}) == n
    gid, sizes = group_ids(codes)
    assert (ded[:, -1] < sizes[gid]).all()
    # within a group, the extra token counts up in item order
    for g in np.flatnonzero(sizes > 1):
        np.testing.assert_array_equal(ded[gid == g, -1], np.arange(sizes[g]))

    _, prefix_sizes = group_ids(codes[:, :-1])
    if prefix_sizes.max() > k:
        with pytest.raises(GenrecError, match="ids.collision"):
            resolve_collisions(res, "reassign_last", k)
        return
    ids = resolve_collisions(res, "reassign_last", k)
    assert ids.shape == (n, n_levels)
    assert len({tuple(r) for r in ids.tolist()}) == n
    np.testing.assert_array_equal(ids[:, :-1], codes[:, :-1])  # prefixes never change
    alone = sizes[gid] == 1
    np.testing.assert_array_equal(ids[alone], codes[alone])  # non-colliding items stay
    kept = (ids == codes).all(axis=1)
    assert np.bincount(gid[kept], minlength=sizes.size).tolist() == [1] * sizes.size  # one keeper per group
    np.testing.assert_array_equal(ids, reference_reassign(codes, residual, codebook))


def test_deterministic_and_input_untouched():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 4, size=(500, 3))
    codes[:, 0] = rng.integers(0, 8, size=500)
    codes[:, 1] = rng.integers(0, 16, size=500)  # 128 prefixes of ~4 items, last codes 0..3
    res = QuantizeResult(codes.copy(), rng.normal(size=(500, 4)).astype(np.float32), rng.normal(size=(16, 4)).astype(np.float32))
    a = resolve_collisions(res, "reassign_last", 16)
    b = resolve_collisions(res, "reassign_last", 16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.codes, codes)
    assert collision_stats(codes, a).items_moved > 0
