"""Stage finetune@<slot>: MTGRec's fine-tuning of the pre-trained model on one tokenizer (SPEC 7).

dvc.yaml fans this stage out over ``finetune.slots`` (``foreach``). Slot r fine-tunes the r-th
tokenizer to fine-tune: the kept tokenizers ordered by cumulative influence (the last stage end
of ``reports/mtgrec/influence.csv``, best first), all of them or the top
``recommender.method_params.finetune_top_m``. From ``data/recommender/best.pt`` (the pre-trained
weights) it trains plain next-item prediction on that tokenizer's IDs alone (method ``tiger``,
``recommender.loss``), AdamW at ``finetune_lr``, cosine without warm-up over ``finetune_epochs``
(0: ``recommender.epochs``), early stopping on validation (``recommender.patience``,
``select_metric``); validation decodes as the test will (``evaluate.trie``). Writes
``data/finetune/<slot>/{last,best}.pt`` (a killed run resumes) and ``reports/mtgrec/finetune/<slot>/``
(``result.json``: tokenizer and best validation metrics; the trainer's ``summary.json`` and
``valid_curve.csv``).

A slot with nothing to do is a cheap no-op that writes ``data/finetune/<slot>/skipped.json`` and
a ``result.json`` saying why: every method but ``mtgrec`` (the default ``tiger`` pipeline is
unchanged), and slots at or beyond the number of tokenizers to fine-tune.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from genrec_core.config import Params
from genrec_core.io import write_json
from genrec_core.paths import ArtifactPaths

log = logging.getLogger(__name__)


def run(params: Params, root: Path, slot: int = 0) -> None:
    from genrec_core.methods.mtgrec import MTGRecMethod, cumulative_influence, finetune_tokenizers
    from genrec_core.sequential.runner import GENERATIVE_KINDS, model_kind
    from genrec_core.tokenizers.id_table import read_id_table_with_items

    from genrec_core.recommender.schedule import resolve_epochs_from_artifacts

    paths = ArtifactPaths(Path(root))
    params, _ = resolve_epochs_from_artifacts(params, paths)  # recommender.epochs: auto, as the train stage chose it
    rp = params.recommender
    if rp.method != "mtgrec" or model_kind(params) not in GENERATIVE_KINDS:
        _skip(paths, slot, f"recommender.method is {rp.method!r}: nothing to fine-tune (MTGRec only)", planned=0)
        return
    mp = MTGRecMethod.check_params(rp.method_params)
    item_ids, tables = read_id_table_with_items(paths.id_table)
    names = list(tables)
    cumulative = cumulative_influence(paths.influence_csv, len(names))
    chosen = finetune_tokenizers(cumulative, mp["finetune_top_m"])
    if slot >= len(chosen):
        _skip(paths, slot, f"slot {slot}: only {len(chosen)} tokenizers to fine-tune", planned=len(chosen))
        return
    t = chosen[slot]
    summary = _finetune(params, paths, slot, tables, names, t)
    best = summary.get("best_valid") or {}
    result = {
        "slot": slot,
        "planned": len(chosen),
        "tokenizer": names[t],
        "tokenizer_index": t,
        "cumulative_influence": float(cumulative[t]),
        "best_epoch": summary["best_epoch"],
        "best_valid": {k: v for k, v in best.items() if k != "epoch"},
        "seconds": summary["seconds"],
        "checkpoint": (Path("data") / "finetune" / str(slot) / "best.pt").as_posix(),
    }
    write_json(result, paths.finetune_result(slot))
    log.info("fine-tuned slot %d (tokenizer %s): best validation %s %.4f at epoch %s", slot, names[t], rp.select_metric, best.get(rp.select_metric, float("nan")), summary["best_epoch"])


def _skip(paths: ArtifactPaths, slot: int, reason: str, planned: int) -> None:
    out = paths.finetune_dir(slot)
    for stale in ("best.pt", "last.pt"):  # data/finetune/<slot> persists (resume): drop an old run
        (out / stale).unlink(missing_ok=True)
    write_json({"slot": slot, "skipped": reason}, out / "skipped.json")
    write_json({"slot": slot, "planned": planned, "tokenizer": None, "skipped": reason}, paths.finetune_result(slot))
    log.info("finetune slot %d: %s", slot, reason)


def _finetune(params: Params, paths: ArtifactPaths, slot: int, tables: dict[str, np.ndarray], names: list[str], t: int) -> dict[str, Any]:
    import torch

    from genrec_core.errors import MissingInputError
    from genrec_core.methods import MethodContext, build_method
    from genrec_core.methods.mtgrec import finetune_recommender_params
    from genrec_core.recommender.data import SequenceEncoder, load_examples
    from genrec_core.recommender.fingerprint import fingerprint
    from genrec_core.recommender.losses import LossContext, build_loss
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.trainer import Trainer
    from genrec_core.recommender.vocab import SemanticIdVocab

    pretrained = paths.recommender_dir / "best.pt"
    if not pretrained.exists():
        raise MissingInputError(pretrained, "the pre-trained model; run the train stage first")
    ft = finetune_recommender_params(params.recommender)
    vocab = SemanticIdVocab.from_codes(tables.values())  # the pre-training's vocabulary (every tokenizer)
    all_tokens = torch.from_numpy(np.stack([vocab.codes_to_tokens(tables[n]) for n in names]))
    encoder = SequenceEncoder(all_tokens, ft.encoder_input, default_tokenizer=t, user_buckets=ft.user_tokens, user_token_offset=vocab.size)
    item_tokens = all_tokens[t].clone()
    n_items = int(item_tokens.shape[0])
    train = load_examples(paths.examples("train"), n_items)
    valid = load_examples(paths.examples("valid"), n_items)

    model = build_generative_model(ft, vocab, item_tokens)
    model.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True)["model"])
    model.decode_with_trie = params.evaluate.trie
    context = LossContext(
        vocab=vocab,
        item_tokens=item_tokens,
        target_counts=np.bincount(train.targets, minlength=n_items).astype(np.int64),
        item_vectors=lambda: _item_vectors(paths, n_items),
        total_steps=ft.epochs * -(-len(train) // ft.batch_size),
    )
    method = build_method(ft.method, ft.method_params, MethodContext(encoder, build_loss(ft.loss, ft.loss_params, context)))
    ft_params = dataclasses.replace(params, recommender=ft)
    fp, info = fingerprint(ft_params, names[t], {"pretrained": pretrained, "id_table": paths.id_table, "train": paths.examples("train"), "valid": paths.examples("valid")})
    info["evaluate.trie"] = params.evaluate.trie
    fp = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()
    log.info("fine-tuning slot %d on tokenizer %s from %s (lr %g, %d epochs)", slot, names[t], pretrained, ft.lr, ft.epochs)
    trainer = Trainer(
        model,
        ft,
        method,
        train,
        valid,
        checkpoint_dir=paths.finetune_dir(slot),
        reports_dir=paths.finetune_reports_dir(slot),
        seed=params.seed,
        fingerprint=fp,
        fingerprint_info=info,
        checkpoint_meta={"params": dataclasses.asdict(ft), "vocab": vocab.to_dict(), "tokenizer": names[t], "item_tokens": item_tokens},
        use_dvclive=False,  # one dvclive run per pipeline (the train stage's)
    )
    (paths.finetune_dir(slot) / "skipped.json").unlink(missing_ok=True)
    return trainer.fit()


def _item_vectors(paths: ArtifactPaths, n_items: int) -> np.ndarray:
    from genrec_core.artifacts import load_item_vectors
    from genrec_core.errors import InputFormatError

    ids, vectors = load_item_vectors(paths.embeddings)
    if not np.array_equal(ids, np.arange(n_items)):
        raise InputFormatError(paths.embeddings, f"item ids must be 0..{n_items - 1}")
    return vectors
