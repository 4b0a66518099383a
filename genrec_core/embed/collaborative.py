"""Item vectors without text (SPEC section 9): from the training sequences alone.

Two methods, both fed only the *training part* of every user's sequence (``train_items`` of
``sequences.parquet``: the validation and test targets are never seen, so the IDs built on these
vectors leak nothing of the held-out items):

- ``cooccurrence_svd_vectors``: truncated SVD of the item-item co-occurrence matrix.
  Co-occurrence counts pairs of positions of one user's training sequence holding two different
  items (``window=0``: every pair of the sequence, i.e. ``X^T X`` of the user x item count matrix
  without its diagonal; ``window=w``: only positions at most ``w`` apart). Weighting: **PPMI**
  with smoothed marginals, ``max(0, log(P(i,j) / (P_a(i) P_a(j))))``, ``P_a(i) ~ n_i^0.75``
  (applied on both sides, so the matrix stays symmetric).
  Raw or log-scaled counts are dominated by popularity (the first singular vectors of a count
  matrix mostly order items by frequency, so rare items all land together); PPMI keeps only
  "more often together than chance", which is what similar items share, and its truncated SVD
  is the classic count-based counterpart of item2vec/SGNS (Levy & Goldberg 2014; Levy et al.
  2015 for the 0.75 smoothing, which stops rare items getting inflated PMIs). On ml-100k, an
  item-kNN check (last training item -> nearest items, hit@10 on the validation item) gave the
  positive-spectrum vectors below the same score as plain U*sqrt(S) (0.094 vs 0.097).
  SVD: the matrix is symmetric, so its SVD is its eigendecomposition (``s = |lambda|``); the
  rank-k truncation keeps the k largest *positive* eigenvalues (see ``truncated_svd``: the
  negative ones would make two always-together items orthogonal). Exact (LAPACK
  ``numpy.linalg.eigh``) when N <= 2048, else ARPACK (``scipy.sparse.linalg.eigsh``) started from
  a seeded random vector; either way a seed fixes the result, and each component's sign is fixed
  (largest-magnitude entry of U positive). Item vectors are the rows of ``U_k * sqrt(S_k)`` (the
  symmetric split of the singular values), ``k = min(dim, N - 1)`` (columns of missing positive
  eigenvalues stay 0). Items without any positive association (no co-occurrence in the
  training parts, e.g. items seen only as validation/test targets) get small seeded Gaussian
  noise (norm 1e-3 of the median vector norm) rather than a zero vector: identical zero vectors
  would all quantise to one semantic ID and could overflow a collision group, while distinct
  noise vectors (random directions once L2-normalised) get distinct, uninformative IDs. Their
  count is reported.
- ``sasrec_item_vectors``: train the project's SASRec (``genrec_core.sequential``) with the
  generic ``Trainer`` in a temporary directory (no dvclive) and return its item embedding table
  (items 0..N-1, the padding row dropped). Early stopping uses an inner hold-out that is also
  inside the training part: each user's last *training* item is the held-out target, the
  earlier positions are the training examples.
- ``combine``: L2-normalise the text and the collaborative vectors separately, then concatenate
  (SPEC 9), so both parts weigh the same whatever their scales and dimensions.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from genrec_core.errors import EmptyResultError

log = logging.getLogger(__name__)

#: Context-distribution smoothing of the PPMI weighting (Levy et al. 2015).
CDS_ALPHA = 0.75
#: Up to this many items the SVD is an exact dense one; above it ARPACK's truncated one.
DENSE_SVD_MAX_ITEMS = 2048
#: Norm of the noise vectors of items without co-occurrence, relative to the median vector norm.
EMPTY_NOISE_SCALE = 1e-3


def _flatten(train_sequences: Sequence[Sequence[int]] | Sequence[np.ndarray], num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat item ids int64, user index of each position int64); ids checked to lie in 0..N-1."""
    seqs = [np.asarray(s, dtype=np.int64).ravel() for s in train_sequences]
    lengths = np.array([s.size for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= num_items):
        bad = int(flat.min()) if flat.min() < 0 else int(flat.max())
        raise ValueError(f"item id {bad} outside 0..{num_items - 1}")
    users = np.repeat(np.arange(len(seqs), dtype=np.int64), lengths)
    return flat, users


def cooccurrence_matrix(train_sequences: Sequence[Sequence[int]], num_items: int, window: int = 0) -> sp.csr_matrix:
    """Symmetric [N, N] float64 counts of position pairs (one user, different items), zero diagonal.

    ``window=0``: all pairs of a sequence; ``window=w``: pairs at most ``w`` positions apart.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    flat, users = _flatten(train_sequences, num_items)
    n = int(num_items)
    if window == 0:
        x = sp.csr_matrix((np.ones(flat.size), (users, flat)), shape=(int(users.max(initial=-1)) + 1, n))
        x.sum_duplicates()
        c = (x.T @ x).tocsr()
    else:
        rows, cols = [], []
        for d in range(1, window + 1):
            if d >= flat.size:
                break
            same = users[:-d] == users[d:]
            rows.append(flat[:-d][same])
            cols.append(flat[d:][same])
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        k = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        upper = sp.csr_matrix((np.ones(r.size), (r, k)), shape=(n, n))
        c = (upper + upper.T).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    c.sum_duplicates()
    return c


def ppmi(counts: sp.spmatrix, alpha: float = CDS_ALPHA) -> sp.csr_matrix:
    """Positive PMI of a symmetric co-occurrence count matrix: ``max(0, log P(i,j) - log P_a(i) -
    log P_a(j))`` with ``P_a(i) = n_i^a / sum_j n_j^a`` (item marginals smoothed by ``alpha``, on
    both sides so the result stays symmetric)."""
    c = sp.coo_matrix(counts, dtype=np.float64)
    total = float(c.sum())
    if total <= 0:
        return sp.csr_matrix(c.shape, dtype=np.float64)
    marginal = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel() ** alpha
    log_p = np.log(np.where(marginal > 0, marginal / marginal.sum(), 1.0))
    pmi = np.log(c.data / total) - log_p[c.row] - log_p[c.col]
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (c.row[keep], c.col[keep])), shape=c.shape)


def _fix_signs(u: np.ndarray) -> np.ndarray:
    """Flip each column so its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    if u.size == 0:
        return u
    idx = np.abs(u).argmax(axis=0)
    signs = np.sign(u[idx, np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    return u * signs


def truncated_svd(matrix: sp.spmatrix, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Rank-k truncated SVD of a symmetric matrix over its positive spectrum: (U [N, k], singular
    values [k] descending, solver name), deterministic for a seed.

    For a symmetric matrix the SVD is the eigendecomposition with ``s = |lambda|`` and
    ``V = U sign(lambda)``; the components of negative eigenvalues are dropped (their singular
    values set to 0) because they encode anti-similarity: with them, two items that always occur
    together get orthogonal ``U sqrt(S)`` rows (each one's PPMI row holds the other, not itself).
    Keeping ``lambda > 0`` is the same as the ``W + C`` (word + context vector) sum of Levy et
    al. (2015), and equals the plain truncated SVD when the matrix is positive semi-definite.
    """
    n = matrix.shape[0]
    if n <= max(DENSE_SVD_MAX_ITEMS, 2 * k + 1):
        lam, u = np.linalg.eigh(matrix.toarray())
        solver = "dense"
    else:
        from scipy.sparse.linalg import eigsh

        v0 = np.random.default_rng(seed).standard_normal(n)
        lam, u = eigsh(matrix.astype(np.float64), k=k, which="LA", v0=v0)
        solver = "arpack"
    order = np.argsort(-lam, kind="stable")[:k]
    lam, u = lam[order], u[:, order]
    return _fix_signs(u), np.clip(lam, 0.0, None), solver


def cooccurrence_svd_vectors(
    train_sequences: Sequence[Sequence[int]],
    num_items: int,
    dim: int,
    seed: int = 0,
    window: int = 0,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """float32 [N, min(dim, N-1)] item vectors: rows of U*sqrt(S) of the PPMI co-occurrence matrix.

    ``train_sequences``: the training part of each user's sequence (item ids 0..N-1, time order).
    With ``return_info``, also a dict for the report (rank, solver, items without co-occurrence,
    share of the PPMI matrix's squared norm the kept components explain).
    """
    n = int(num_items)
    if n < 2:
        raise EmptyResultError(f"collaborative vectors need at least 2 items, got {n}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    k = min(int(dim), n - 1)
    counts = cooccurrence_matrix(train_sequences, n, window)
    if counts.nnz == 0:
        raise EmptyResultError(
            "no two different items share a training sequence: no co-occurrence to factorise (collaborative vectors need users with 2+ training items)"
        )
    weights = ppmi(counts)
    u, s, solver = truncated_svd(weights, k, seed)
    vectors = u * np.sqrt(s)[None, :]
    empty = np.diff(weights.indptr) == 0
    if empty.any():
        norms = np.linalg.norm(vectors[~empty], axis=1)
        scale = EMPTY_NOISE_SCALE * (float(np.median(norms)) if norms.size and np.median(norms) > 0 else 1.0)
        noise = np.random.default_rng([seed, 1]).standard_normal((int(empty.sum()), k))
        vectors[empty] = noise * (scale / np.sqrt(k))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not return_info:
        return vectors
    frob2 = float(weights.multiply(weights).sum())
    info = {
        "weighting": f"ppmi (context smoothing {CDS_ALPHA})",
        "window": int(window),
        "rank": k,
        "svd_solver": solver,
        "cooccurrence_nonzeros": int(counts.nnz),
        "ppmi_nonzeros": int(weights.nnz),
        "explained_energy": round(float((s**2).sum()) / frob2, 6) if frob2 > 0 else 0.0,
        "items_without_cooccurrence": int(empty.sum()),
    }
    return vectors, info


# --------------------------------------------------------------------------- SASRec


def inner_split(train_sequences: Sequence[Sequence[int]], max_len: int):
    """(train, held-out) ``ExampleArrays`` from the training parts only: every user's last
    training item is held out (history = the items before it); the earlier positions t >= 1 are
    the training examples (history = up to ``max_len`` items before t)."""
    from genrec_core.recommender.data import ExampleArrays

    parts: dict[str, tuple[list[int], list[np.ndarray], list[int]]] = {"train": ([], [], []), "held": ([], [], [])}
    for user, seq in enumerate(train_sequences):
        seq = np.asarray(seq, dtype=np.int32).ravel()
        for t in range(1, seq.size):
            users, hists, targets = parts["held" if t == seq.size - 1 else "train"]
            users.append(user)
            hists.append(seq[max(0, t - max_len) : t])
            targets.append(int(seq[t]))

    def arrays(users: list[int], hists: list[np.ndarray], targets: list[int]) -> ExampleArrays:
        lengths = np.array([h.size for h in hists], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        history = np.concatenate(hists).astype(np.int32) if hists else np.zeros(0, np.int32)
        return ExampleArrays(np.array(users, dtype=np.int32), offsets, history, np.array(targets, dtype=np.int32))

    return arrays(*parts["train"]), arrays(*parts["held"])


def sasrec_item_vectors(
    train_sequences: Sequence[Sequence[int]],
    num_items: int,
    dim: int = 64,
    seed: int = 0,
    epochs: int = 20,
    patience: int = 3,
    max_len: int = 20,
    device: str = "cpu",
    num_layers: int = 2,
    num_heads: int = 1,
    dropout: float = 0.2,
    lr: float = 1e-3,
    batch_size: int = 256,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """float32 [N, dim]: the item embeddings (rows 1..N of the table) of a SASRec trained on the
    training parts with full-softmax CE, from the epoch with the best held-out NDCG@10."""
    from genrec_core.config import RecommenderParams
    from genrec_core.methods import MethodContext, build_method
    from genrec_core.recommender.checkpoint_format import read_weights
    from genrec_core.recommender.trainer import Trainer, TrainingInterrupted
    from genrec_core.runtime import resolve_device, seed_everything
    from genrec_core.sequential.models import build_model
    from genrec_core.sequential.training import ItemIdEncoder, SequentialLoss

    start = time.perf_counter()
    n = int(num_items)
    train, held = inner_split(train_sequences, max_len)
    if len(train) == 0 or len(held) == 0:
        raise EmptyResultError(f"SASRec item vectors need users with 3+ training items ({len(train)} training, {len(held)} held-out examples)")
    rp = RecommenderParams(
        model="sasrec",
        d_model=int(dim),
        num_layers=num_layers,
        num_heads=num_heads,
        d_ff=int(dim),  # the original SASRec's point-wise FFN keeps the hidden size
        dropout=dropout,
        loss="ce",
        lr=lr,
        weight_decay=0.0,
        warmup_steps=0,
        batch_size=batch_size,
        epochs=int(epochs),
        patience=int(patience),
        eval_every=1,
        eval_beam_size=20,
        max_eval_users=0,
        device=device,
    )
    rp.validate("embed(sasrec)")
    device = resolve_device(device)
    seed_everything(seed)
    model = build_model("sasrec", n, max_len, rp)
    method = build_method(rp.method, rp.method_params, MethodContext(ItemIdEncoder(n), SequentialLoss("ce")))
    with tempfile.TemporaryDirectory(prefix="genrec-sasrec-vectors-") as tmp:
        trainer = Trainer(
            model,
            rp,
            method,
            train,
            held,
            checkpoint_dir=f"{tmp}/ckpt",
            reports_dir=f"{tmp}/reports",
            seed=seed,
            fingerprint="embed-sasrec",
            device=device,
            progress=False,
            use_dvclive=False,
        )
        try:
            summary = trainer.fit()
        except TrainingInterrupted:
            raise TrainingInterrupted("interrupted while training the SASRec for item vectors (nothing is kept); rerun the embed stage") from None
        weights = read_weights(trainer.best_path)
    table = weights["item_embedding.weight"][1:].float().numpy()
    vectors = np.ascontiguousarray(table, dtype=np.float32)
    log.info("SASRec item vectors: best held-out NDCG@10 %.4f at epoch %d of %d", summary["best_valid_ndcg@10"], summary["best_epoch"], summary["epochs"])
    if not return_info:
        return vectors
    info = {
        "d_model": int(dim),
        "num_layers": num_layers,
        "train_examples": len(train),
        "heldout_examples": len(held),
        "epochs_run": int(summary["epochs"]),
        "best_epoch": int(summary["best_epoch"]),
        "best_heldout_ndcg@10": round(float(summary["best_valid_ndcg@10"]), 6),
        "train_seconds": round(time.perf_counter() - start, 3),
    }
    return vectors, info


# --------------------------------------------------------------------------- text + collaborative


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x64, axis=1, keepdims=True)
    return x64 / np.where(norms > 0, norms, 1.0)


def combine(text_vectors: np.ndarray, collab_vectors: np.ndarray) -> np.ndarray:
    """[N, d_text + d_collab] float32: each part L2-normalised per row, then concatenated."""
    text_vectors = np.asarray(text_vectors)
    collab_vectors = np.asarray(collab_vectors)
    if text_vectors.ndim != 2 or collab_vectors.ndim != 2 or text_vectors.shape[0] != collab_vectors.shape[0]:
        raise ValueError(f"need two [N, d] matrices with the same N, got {text_vectors.shape} and {collab_vectors.shape}")
    return np.ascontiguousarray(np.concatenate([_unit_rows(text_vectors), _unit_rows(collab_vectors)], axis=1), dtype=np.float32)
