"""benchmarks/large_catalogue.py at a tiny size, in-process: the steps after embedding (the embed
stage's streaming has its own tests in test_embed.py) run end to end on the pipeline's code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "large_catalogue.py"


def _script():
    spec = importlib.util.spec_from_file_location("large_catalogue", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # ~11 s of CPU (mostly importing torch/transformers)
def test_tiny_catalogue_runs_every_step_after_embedding(tmp_path):
    lc = _script()
    n = 1500
    args = lc.parser().parse_args(
        ["--items", str(n), "--users", "40", "--log-users", "300", "--kmeans-iters", "2", "--ids-from", "rqkmeans", "--workdir", str(tmp_path)]
    )
    rows = {name: lc.run_step(name, args) for name in ("vectors", "log", "rqkmeans", "emit-rqkmeans", "trie", "beam")}

    # the streamed vectors file holds exactly the generated chunks, item i in row i
    table = pl.read_parquet(tmp_path / "vectors" / "data" / "embeddings" / "item_vectors.parquet")
    assert table["item_id"].to_list() == list(range(n))
    expected = np.concatenate(list(lc.vector_chunks(n, 65536)))
    np.testing.assert_array_equal(table["vector"].to_numpy(), expected)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, rtol=1e-5)

    # every item got a distinct ID, and the trie maps each ID back to its own item
    vocab, tokens = lc._item_tokens(tmp_path, "rqkmeans")
    assert tokens.shape == (n, 3) and np.unique(tokens.numpy(), axis=0).shape[0] == n
    from genrec_core.recommender.trie import ItemTrie

    assert ItemTrie.build(tokens, vocab.size).lookup(tokens).tolist() == list(range(n))
    assert rows["trie"]["items"] == n and rows["emit-rqkmeans"]["items"] == n

    # beam search ranked every user, and the long-tailed log is long-tailed
    assert rows["beam"]["items"] == 40 and rows["beam"]["rate"] > 0
    offsets, items = lc.interaction_log(n, 300)
    counts = np.sort(np.bincount(items, minlength=n))[::-1]
    assert counts[: n // 100].sum() > 0.2 * items.size  # top 1% of items: over a fifth of the interactions
    for row in rows.values():
        assert 0 < row["peak_rss_gib"] < 16
