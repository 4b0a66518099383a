"""evaluate stage: selected checkpoint -> constrained beam search on every test user -> metrics.

The checkpoint is the one ``reports/method/selected.json`` names (the select_tokenizer stage):
``data/recommender/best.pt``, or for a method tested after fine-tuning per table
(``Method.tests_selected_model``) the selected ``data/finetune/<slot>/best.pt``; without that file,
``data/recommender/best.pt`` (refused for such a method). ``evaluate.trie: false`` decodes without
the trie, invalid IDs dropped (as the MTGRec paper's evaluation).

Ranks with the same routine as validation (``interface.rank_examples`` over the model's
``rank``: trie-constrained beam search), writes the ranked lists as
Parquet so anyone can recompute the metrics, and the metrics (SPEC section 5) as JSON. A SASRec /
GRU4Rec checkpoint is ranked in full by ``genrec_core.sequential.runner.evaluate_sequential``
into the same table and metrics.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec_core.config import Params
from genrec_core.errors import InputFormatError, MissingInputError
from genrec_core.io import write_json, write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.checkpoint_format import BEST
from genrec_core.runtime import resolve_device

log = logging.getLogger(__name__)


def run(params: Params, root: Path) -> None:
    from genrec_core.sequential.runner import evaluate_sequential, is_sequential_checkpoint

    paths = ArtifactPaths(Path(root))
    checkpoint = selected_checkpoint(params, paths)
    if checkpoint == paths.recommender_dir / BEST and is_sequential_checkpoint(checkpoint):  # SASRec / GRU4Rec: full ranking
        preds, metrics = evaluate_sequential(params, paths)
    else:
        preds, metrics = _evaluate_generative(params, paths, checkpoint)
    write_parquet(preds, paths.predictions)
    write_json(metrics, paths.metrics)
    log.info("test %s", {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})


def selected_checkpoint(params: Params, paths: ArtifactPaths) -> Path:
    """The checkpoint ``selected.json`` names (under ``data/recommender`` or ``data/finetune``)."""
    import json

    if not paths.selected_model.exists():
        from genrec_core.methods import method_class

        if method_class(params.recommender.method).tests_selected_model:
            raise MissingInputError(paths.selected_model, "the fine-tuned model to test; run the finetune and select_tokenizer stages")
        return paths.recommender_dir / BEST
    name = json.loads(paths.selected_model.read_text(encoding="utf-8"))["checkpoint"]
    if not name.startswith(("data/recommender/", "data/finetune/")):
        raise InputFormatError(paths.selected_model, f"checkpoint {name!r} is no pipeline model (data/recommender/ or data/finetune/)")
    return paths.root / name


def _evaluate_generative(params: Params, paths: ArtifactPaths, checkpoint: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Beam search of the selected generative checkpoint (T5 or decoder-only) over every test user."""
    from genrec_core.evaluation.metrics import evaluation_summary
    from genrec_core.evaluation.predictions import predictions_frame
    from genrec_core.recommender.checkpoint import load_recommender
    from genrec_core.recommender.data import SequenceEncoder, load_examples
    from genrec_core.recommender.interface import rank_examples

    device = resolve_device(params.recommender.device)
    loaded = load_recommender(checkpoint, device)
    loaded.model.decode_with_trie = params.evaluate.trie
    item_tokens = loaded.item_tokens
    test = load_examples(paths.examples("test"), num_items=item_tokens.shape[0])
    encoder = SequenceEncoder.for_recommender(item_tokens, loaded.params, loaded.vocab)

    start = time.perf_counter()
    items, scores = rank_examples(loaded.model, test, encoder.collate, params.evaluate.beam_size, params.evaluate.batch_size, progress=True)
    seconds = time.perf_counter() - start
    preds = predictions_frame(test.user_ids, test.targets, items, scores)

    codes = loaded.vocab.tokens_to_codes(item_tokens.cpu().numpy())
    metrics = evaluation_summary(preds, params.evaluate.ks, codes=codes, item_ids=np.arange(codes.shape[0]))
    metrics.update({"beam_size": params.evaluate.beam_size, "tokenizer": loaded.tokenizer, "users_per_second": round(len(test) / seconds, 2)})
    if not params.evaluate.trie:
        metrics["trie"] = False
    return preds, metrics
