"""Shared test data builders (imported by the test modules; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

EXAMPLE_SCHEMA = {"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32}


def next_item_pattern_splits(n_items: int = 40, window: int = 5, n_users: int = 60, seq_len: int = 8, seed: int = 0) -> dict[str, pl.DataFrame]:
    """Leave-one-out example tables of users whose next item is (7 * last + 3) mod n_items.

    A deterministic pattern every model can learn well above chance in a few epochs.
    """
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {s: [] for s in ("train", "valid", "test")}
    for u in range(n_users):
        seq = [int(rng.integers(n_items))]
        for _ in range(seq_len - 1):
            seq.append((seq[-1] * 7 + 3) % n_items)
        train = seq[:-2]
        rows["train"] += [(u, train[max(0, t - window) : t], train[t]) for t in range(1, len(train))]
        rows["valid"].append((u, train[-window:], seq[-2]))
        rows["test"].append((u, (train + [seq[-2]])[-window:], seq[-1]))
    return {
        s: pl.DataFrame({"user_id": [r[0] for r in v], "history": [r[1] for r in v], "target": [r[2] for r in v]}, schema=EXAMPLE_SCHEMA)
        for s, v in rows.items()
    }


def manual_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[label], written out element by element (independent of F.cross_entropy)."""
    out = torch.zeros(labels.shape)
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            row = logits[b, t]
            out[b, t] = -(row[labels[b, t]] - torch.log(torch.exp(row).sum()))
    return out


def tokenizer_params(**kw):
    """``TokenizerParams`` from keywords that mix the shared params and the kind's own (its
    ``kind_params``), as the test helpers wrote them before ``kind_params`` existed."""
    import dataclasses

    from genrec_core.config import TokenizerParams

    shared = {f.name for f in dataclasses.fields(TokenizerParams)} - {"kind_params"}
    own = {**kw.pop("kind_params", {}), **{k: kw.pop(k) for k in list(kw) if k not in shared}}
    return TokenizerParams(**kw, kind_params=own)
