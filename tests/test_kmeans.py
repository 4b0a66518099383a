"""k-means: deterministic for a seed, assignments are true nearest centroids, empty clusters re-seeded."""

import numpy as np
import torch

from genrec_core.tokenizers.kmeans import kmeans, nearest, squared_distances, squared_norms


def _blobs(n=600, k=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, d))
    labels = rng.integers(0, k, n)
    return torch.from_numpy((centres[labels] + rng.normal(scale=0.1, size=(n, d))).astype(np.float32)), labels


def test_same_seed_same_result_other_seed_differs():
    x, _ = _blobs()
    a = kmeans(x, 16, 20, torch.Generator().manual_seed(7))
    b = kmeans(x, 16, 20, torch.Generator().manual_seed(7))
    c = kmeans(x, 16, 20, torch.Generator().manual_seed(8))
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    assert not torch.equal(a.centroids, c.centroids)


def test_assignments_are_brute_force_nearest_and_counts_match():
    x, _ = _blobs(seed=1)
    res = kmeans(x, 10, 15, torch.Generator().manual_seed(0))
    xn, cn = x.numpy().astype(np.float64), res.centroids.numpy().astype(np.float64)
    brute = ((xn[:, None, :] - cn[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(res.assignments.numpy(), brute)
    np.testing.assert_array_equal(res.counts.numpy(), np.bincount(brute, minlength=10))
    idx, dist = nearest(x, res.centroids, chunk=7)  # chunking must not change the answer
    np.testing.assert_array_equal(idx.numpy(), brute)
    assert abs(float(dist.double().sum()) - res.inertia) < 1e-3 * max(1.0, res.inertia)


def test_recovers_separated_clusters():
    x, labels = _blobs(k=6)
    res = kmeans(x, 6, 30, torch.Generator().manual_seed(3))
    # each true cluster maps to exactly one centroid and vice versa
    pairs = {(int(label), int(a)) for label, a in zip(labels, res.assignments.numpy())}
    assert len(pairs) == 6 and len({a for _, a in pairs}) == 6
    # only the noise is left: its variance, 0.1^2 per dimension, is a tenth of the bound (measured 0.079 of 0.8)
    assert res.inertia / x.shape[0] < 0.1 * x.shape[1]


def test_empty_clusters_are_reseeded():
    # 60 copies of one point + 40 distinct points: random init picks duplicate centres, which leave
    # clusters empty; re-seeding must put every one of the 30 centres to use (41 distinct points).
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros((60, 4)), rng.normal(size=(40, 4)) + 5.0]).astype(np.float32)
    res = kmeans(torch.from_numpy(x), 30, 10, torch.Generator().manual_seed(0), init="random")
    assert int((res.counts > 0).sum()) == 30


def test_fewer_points_than_clusters_does_not_fail():
    x = torch.randn(5, 3)
    for init in ("kmeans++", "random"):
        res = kmeans(x, 8, 5, torch.Generator().manual_seed(0), init=init)
        assert res.centroids.shape == (8, 3) and int((res.counts > 0).sum()) == 5


def test_cached_row_norms_give_the_same_distances_bit_for_bit():
    """k-means computes the row norms once (squared_norms) instead of in every distance call: the
    distances are the brute-force ones and, chunked or not, bitwise those of the uncached call."""
    x, _ = _blobs(n=50, d=5, seed=2)
    c = x[[3, 17, 40]] + 0.5
    cached = squared_distances(x, c, squared_norms(x))
    assert torch.equal(cached, squared_distances(x, c))
    brute = ((x.double()[:, None, :] - c.double()[None]) ** 2).sum(-1)
    np.testing.assert_allclose(cached.double().numpy(), brute.numpy(), rtol=1e-4, atol=1e-3)
    idx, dist = nearest(x, c, chunk=7, x_sq=squared_norms(x))
    ref_idx, ref_dist = nearest(x, c, chunk=7)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist) and torch.equal(idx, brute.argmin(1))
