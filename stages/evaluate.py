"""evaluate stage: best checkpoint -> constrained beam search on every test user -> metrics.

Ranks with the same routine as validation (``trainer.rank_split``), writes the ranked lists as
Parquet so anyone can recompute the metrics, and the metrics (SPEC section 5) as JSON.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.config import Params
from genrec_core.io import write_json, write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.runtime import resolve_device

log = logging.getLogger(__name__)


def predictions_frame(user_ids: np.ndarray, targets: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    """One row per user; ``items``/``scores`` ranked best first, beam padding (-1) dropped."""
    valid = items >= 0
    lengths = valid.sum(axis=1)
    flat_items = items[valid].astype(np.int32)
    flat_scores = scores[valid].astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    split = lambda flat: [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]  # noqa: E731
    return pl.DataFrame(
        {
            "user_id": pl.Series(user_ids, dtype=pl.Int32),
            "target_item": pl.Series(targets, dtype=pl.Int32),
            "items": pl.Series(split(flat_items), dtype=pl.List(pl.Int32)),
            "scores": pl.Series(split(flat_scores), dtype=pl.List(pl.Float32)),
        }
    )


def run(params: Params, root: Path) -> None:
    from genrec_core.evaluation.metrics import evaluation_summary
    from genrec_core.recommender.data import SequenceEncoder, load_examples
    from genrec_core.recommender.trainer import rank_split
    from genrec_core.recommender.trie import ItemTrie
    from genrec_core.sequential.stage import is_sequential_checkpoint, run_evaluate
    from stages.train import load_recommender

    paths = ArtifactPaths(Path(root))
    if is_sequential_checkpoint(paths.recommender_dir / "best.pt"):  # SASRec / GRU4Rec: full ranking
        run_evaluate(params, root)
        return
    device = resolve_device(params.recommender.device)
    loaded = load_recommender(paths.recommender_dir / "best.pt", device)
    item_tokens = loaded.item_tokens
    test = load_examples(paths.examples("test"), num_items=item_tokens.shape[0])
    encoder = SequenceEncoder(item_tokens, encoder_input=loaded.params.encoder_input, user_buckets=loaded.params.user_tokens, user_token_offset=loaded.vocab.size)
    trie = ItemTrie.build(item_tokens, loaded.vocab.size)

    start = time.perf_counter()
    items, scores = rank_split(loaded.model, test, encoder, trie, params.evaluate.beam_size, params.evaluate.batch_size, device, progress=True)
    seconds = time.perf_counter() - start
    preds = predictions_frame(test.user_ids, test.targets, items, scores)

    codes = loaded.vocab.tokens_to_codes(item_tokens.cpu().numpy())
    metrics = evaluation_summary(preds, params.evaluate.ks, codes=codes, item_ids=np.arange(codes.shape[0]))
    metrics.update({"beam_size": params.evaluate.beam_size, "tokenizer": loaded.tokenizer, "users_per_second": round(len(test) / seconds, 2)})
    write_parquet(preds, paths.predictions)
    write_json(metrics, paths.metrics)
    log.info("test %s", {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
