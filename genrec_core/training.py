"""``build_training``: one place that assembles a training run (encoder, loss, method, model,
Trainer) from params and the pipeline's artifacts, for every caller: the train stage (both model
families), a method's fine-tuning (MTGRec per tokenizer, BLOGER on its final IDs) and scripts.

What differs between methods is asked of the method class (``Method.prepare_ids`` and friends,
``genrec_core.methods.base``); what differs between models, of the model (``recommender.model``):
semantic-ID models get a ``SequenceEncoder`` over the ID tables and a token-level loss strategy,
item-ID models (SASRec, GRU4Rec) an ``ItemIdEncoder`` and the full-softmax / sampled loss.

The order in which parts are built is fixed (loss, method, model, trainer; the model's
initialisation draws from the RNGs seeded at command start), so a run is bit-identical to what
the stages built by hand before this module existed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec_core.config import Params, RecommenderParams
from genrec_core.errors import InputFormatError
from genrec_core.io import write_json
from genrec_core.methods.base import PreparedIds
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.checkpoint_format import BEST, generative_meta, item_id_meta, read_checkpoint, read_weights
from genrec_core.recommender.model_spec import DEFAULT_MODEL, model_spec

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """A run ready to ``fit``: the parts, kept for what runs after training (fine-tuning, outputs)."""

    trainer: Any  # Trainer
    method: Any  # Method
    params: RecommenderParams  # the run's recommender params (a fine-tuning recipe's, when one)
    fingerprint: str
    ids: PreparedIds | None = None  # None for item-ID models

    def fit(self) -> dict[str, Any]:
        return self.trainer.fit()


def target_counts(targets: np.ndarray, num_items: int) -> np.ndarray:
    """Item frequency among training targets (frequency-based losses)."""
    return np.bincount(targets, minlength=num_items).astype(np.int64)


def item_vectors(paths: ArtifactPaths, n_items: int) -> np.ndarray:
    """Item embeddings [N, D] in item-id order (losses that need them load them lazily)."""
    from genrec_core.artifacts import load_item_vectors

    ids, vectors = load_item_vectors(paths.embeddings)
    if not np.array_equal(ids, np.arange(n_items)):
        raise InputFormatError(paths.embeddings, f"item ids must be 0..{n_items - 1}")
    return vectors


def read_ids(paths: ArtifactPaths, tokenizer: str) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(item ids, every table's codes by tokenizer name, the chosen name) of the ID table."""
    from genrec_core.tokenizers.id_table import choose_tokenizer, read_id_table_with_items

    item_ids, tables = read_id_table_with_items(paths.id_table)
    if not np.array_equal(item_ids, np.arange(item_ids.size)):
        raise InputFormatError(paths.id_table, "item ids must be 0..N-1 (the preprocess stage numbers items densely)")
    return item_ids, tables, choose_tokenizer(list(tables), tokenizer)


def is_item_id_model(name: str) -> bool:
    """SASRec / GRU4Rec (ranked in full over item ids), not a semantic-ID model (``ModelSpec.family``)."""
    return model_spec(name).family == "item_id"


def resolve_item_embedding(rp: RecommenderParams) -> tuple[RecommenderParams, str | None]:
    """``rp`` with ``recommender.item_embedding: auto`` made true or false, and a log line saying
    which and why (None when it was given). Auto turns it on where it can find items: a model that
    has it (``ModelSpec.item_embedding``), one position per history item (``encoder_input: items``),
    and a method that trains on one fixed ID table (``Method.fixed_item_ids``)."""
    if rp.item_embedding != "auto":
        return rp, None
    from genrec_core.methods import method_class

    spec = model_spec(rp.model)
    missing = [
        why
        for ok, why in (
            (spec.item_embedding, f"model {rp.model} has none"),
            (rp.encoder_input == "items", f"encoder_input {rp.encoder_input}"),
            (method_class(rp.method).fixed_item_ids, f"method {rp.method} mixes or changes the IDs"),
        )
        if not ok
    ]
    line = "recommender.item_embedding auto: " + ("on (a learned vector per item beside its semantic ID)" if not missing else f"off ({'; '.join(missing)})")
    return dataclasses.replace(rp, item_embedding=not missing), line if spec.generative else None


def build_training(
    params: Params,
    paths: ArtifactPaths,
    *,
    recommender: RecommenderParams | None = None,
    ids: PreparedIds | None = None,
    examples: tuple[Any, Any] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    checkpoint_dir: Path | None = None,
    reports_dir: Path | None = None,
    fingerprint: tuple[str, dict[str, Any]] | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    decode_with_trie: bool | None = None,
    use_dvclive: bool = True,
    progress: bool = True,
) -> TrainingRun:
    """A ready ``TrainingRun`` of ``params`` (``recommender`` replaces ``params.recommender``, e.g.
    a fine-tuning recipe) over the artifacts under ``paths``.

    Defaults are the train stage's: IDs prepared by the method (``Method.prepare_ids`` on
    ``recommender.tokenizer``'s table), examples read from ``data/processed``, a fresh model,
    checkpoints in ``data/recommender`` and reports in ``reports/train``, the fingerprint of the
    params, the tokenizer and the input files. A fine-tuning passes its ``ids`` (which table),
    ``init_state`` (the pre-trained weights), its own folders, ``fingerprint`` and
    ``checkpoint_meta`` additions, and ``use_dvclive=False`` (one dvclive run per pipeline)."""
    from genrec_core.recommender.schedule import resolve_dropout

    rp, chosen = resolve_item_embedding(recommender or params.recommender)
    rp, dropout_chosen = resolve_dropout(rp)  # after the stage resolved recommender.epochs
    for line in (chosen, dropout_chosen):
        if line:
            log.info(line)
    if is_item_id_model(rp.model):
        return _build_item_id(params, paths, rp, checkpoint_dir, reports_dir, use_dvclive, progress)
    return _build_generative(
        params, paths, rp, ids, examples, init_state, checkpoint_dir, reports_dir, fingerprint, checkpoint_meta or {}, decode_with_trie, use_dvclive, progress
    )


def _build_generative(
    params, paths, rp, ids, examples, init_state, checkpoint_dir, reports_dir, fp, meta, decode_with_trie, use_dvclive, progress
) -> TrainingRun:
    from genrec_core.methods import MethodContext, build_method, check_method_params, method_class
    from genrec_core.recommender.data import SequenceEncoder, load_examples
    from genrec_core.recommender.fingerprint import fingerprint as fingerprint_of
    from genrec_core.recommender.losses import LossContext, build_loss, check_loss_params
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.trainer import Trainer

    check_loss_params(rp.loss, rp.loss_params)  # fail before reading anything
    check_method_params(rp.method, rp.method_params)
    if ids is None:
        item_ids, tables, chosen = read_ids(paths, rp.tokenizer)
        ids = method_class(rp.method).prepare_ids(params, paths, item_ids, tables, chosen)
    encoder = SequenceEncoder.for_recommender(ids.tables, rp, ids.vocab, default_tokenizer=ids.default)
    item_tokens = ids.item_tokens
    n_items = int(item_tokens.shape[0])
    if examples is None:
        examples = (load_examples(paths.examples("train"), n_items), load_examples(paths.examples("valid"), n_items))
    train, valid = examples
    if fp is None:
        inputs = {"id_table": paths.id_table, "train": paths.examples("train"), "valid": paths.examples("valid"), **ids.inputs}
        fp = fingerprint_of(dataclasses.replace(params, recommender=rp), ids.tokenizer, inputs)
    context = LossContext(
        vocab=ids.vocab,
        item_tokens=item_tokens,
        target_counts=target_counts(train.targets, n_items),
        item_vectors=lambda: item_vectors(paths, n_items),
        total_steps=rp.epochs * -(-len(train) // rp.batch_size),
    )
    loss = build_loss(rp.loss, rp.loss_params, context)
    method = build_method(rp.method, rp.method_params, MethodContext(encoder, loss, extra=dict(ids.extra)))
    model = build_generative_model(rp, ids.vocab, item_tokens)
    log.info(
        "training %s with method %s on tokenizer %s (%d items, ID length %d, vocab %d, %d train examples, %d params)",
        rp.model,
        rp.method,
        ids.tokenizer,
        n_items,
        ids.vocab.id_length,
        ids.vocab.size,
        len(train),
        sum(p.numel() for p in model.parameters()),
    )
    if init_state is not None:
        model.load_state_dict(init_state)
    if decode_with_trie is not None:
        model.decode_with_trie = decode_with_trie
    trainer = Trainer(
        model,
        rp,
        method,
        train,
        valid,
        checkpoint_dir=checkpoint_dir or paths.recommender_dir,
        reports_dir=reports_dir or paths.train_reports_dir,
        seed=params.seed,
        fingerprint=fp[0],
        fingerprint_info=fp[1],
        checkpoint_meta=generative_meta(
            dataclasses.asdict(rp), ids.vocab.to_dict(), ids.tokenizer, item_tokens, **({} if rp.model == DEFAULT_MODEL else {"model_kind": rp.model}), **meta
        ),  # the T5 was the only kind when model_kind came
        progress=progress,
        use_dvclive=use_dvclive,
    )
    return TrainingRun(trainer, method, rp, fp[0], ids)


def _build_item_id(params, paths, rp, checkpoint_dir, reports_dir, use_dvclive, progress) -> TrainingRun:
    """SASRec / GRU4Rec over item ids (``genrec_core.sequential``): full ranking, same trainer."""
    from genrec_core.methods import MethodContext, build_method, check_method_params
    from genrec_core.recommender.data import load_examples
    from genrec_core.recommender.trainer import Trainer
    from genrec_core.runtime import resolve_device
    from genrec_core.sequential.models import build_model
    from genrec_core.sequential.runner import check_sizes, num_items, sequential_fingerprint
    from genrec_core.sequential.training import ItemIdEncoder, SequentialLoss

    kind = rp.model
    loss = SequentialLoss(rp.loss)  # fail on a generative-only loss before reading anything
    check_method_params(rp.method, rp.method_params)
    check_sizes(kind, rp)
    n_items = num_items(paths)
    train = load_examples(paths.examples("train"), n_items)
    valid = load_examples(paths.examples("valid"), n_items)
    max_len = int(params.data.max_items)
    longest = int(max(train.lengths.max(initial=0), valid.lengths.max(initial=0)))
    if longest > max_len:
        raise InputFormatError(paths.examples("train"), f"a history has {longest} items but data.max_items is {max_len}; rerun preprocess")
    files = {"items": paths.items, "train": paths.examples("train"), "valid": paths.examples("valid")}
    fp, fp_info = sequential_fingerprint(params, kind, max_len, files)
    model = build_model(kind, n_items, max_len, rp)
    log.info("training %s on %d items (%d train examples, %d params, loss %s)", kind, n_items, len(train), sum(p.numel() for p in model.parameters()), rp.loss)
    method = build_method(rp.method, rp.method_params, MethodContext(ItemIdEncoder(n_items), loss))  # loss: over all-item scores
    trainer = Trainer(
        model,
        rp,
        method,
        train,
        valid,
        checkpoint_dir=checkpoint_dir or paths.recommender_dir,
        reports_dir=reports_dir or paths.train_reports_dir,
        seed=params.seed,
        fingerprint=fp,
        fingerprint_info=fp_info,
        checkpoint_meta=item_id_meta(kind, model.config, dataclasses.asdict(rp)),
        device=resolve_device(rp.device),
        progress=progress,
        use_dvclive=use_dvclive,
    )
    return TrainingRun(trainer, method, rp, fp)


# --------------------------------------------------------------------------- fine-tuning


def finetune_final_ids(params: Params, paths: ArtifactPaths, run: TrainingRun, summary: dict[str, Any], recipe: RecommenderParams) -> dict[str, Any]:
    """Fine-tuning on the frozen final IDs after a run whose IDs moved (``Method.final_finetune_params``,
    e.g. BLOGER's ``finetune_epochs``): ``recipe`` from ``best.pt``'s weights on its IDs,
    checkpoints and summary in ``data/recommender/finetune/``, selection on validation: its best
    replaces ``data/recommender/best.pt`` only when it beats the run's best ``select_metric``.
    Returns the training summary with ``final_ids_finetune`` (and the fine-tuned validation when it
    won), rewritten to ``reports/train/summary.json``."""
    best = read_checkpoint(paths.recommender_dir / BEST)
    tokens = torch.as_tensor(best["item_tokens"])
    ids = PreparedIds(run.ids.vocab, tokens[None], [run.ids.tokenizer], 0)
    folder = paths.recommender_dir / "finetune"
    base_keys = ("params", "vocab", "tokenizer", "item_tokens", "model_kind")
    ft_run = build_training(
        params,
        paths,
        recommender=recipe,
        ids=ids,
        examples=(run.trainer.train_examples, run.trainer.valid_examples),
        init_state=best["model"],
        checkpoint_dir=folder,
        reports_dir=folder,
        fingerprint=(f"{run.fingerprint}:finetune", {}),
        checkpoint_meta={k: v for k, v in run.trainer.checkpoint_meta.items() if k not in base_keys},
        use_dvclive=False,
    )
    ft = ft_run.fit()
    metric = f"best_valid_{recipe.select_metric}"
    won = bool(ft["best_epoch"]) and ft[metric] > summary[metric]
    if won:
        tmp = paths.recommender_dir / f"{BEST}.finetuned"
        shutil.copyfile(ft_run.trainer.best_path, tmp)
        tmp.replace(paths.recommender_dir / BEST)
    out = dict(summary)
    out["final_ids_finetune"] = {
        "epochs": ft["epochs"],
        "best_epoch": ft["best_epoch"],
        metric: ft[metric],
        "best_valid": ft["best_valid"],
        "seconds": ft["seconds"],
        "selected": won,
    }
    if won:
        out.update({metric: ft[metric], "best_valid": ft["best_valid"]})
    write_json(out, paths.train_reports_dir / "summary.json")
    log.info(
        "fine-tuning on the final IDs: best validation %s %.4f (before %.4f): %s",
        recipe.select_metric,
        ft[metric],
        summary[metric],
        "selected" if won else "not selected",
    )
    return out


def slot_finetune_recipe(rp: RecommenderParams) -> RecommenderParams:
    """The recommender params of a finetune slot: the method's recipe (``Method.finetune_params``,
    plain training) over the pre-training's params with ``item_embedding`` and ``dropout`` as the
    pre-training resolved them, so that the fine-tuned model has the pre-trained one's parameters
    (MTGRec under auto: none, although plain training alone would have them) and its dropout (the
    recipe's shorter schedule alone would resolve none)."""
    from genrec_core.methods import method_class
    from genrec_core.recommender.schedule import resolve_dropout

    pretraining, _ = resolve_item_embedding(rp)
    pretraining, _ = resolve_dropout(pretraining)  # the stage resolved recommender.epochs first
    return method_class(pretraining.method).finetune_params(pretraining)


def build_slot_finetuning(params: Params, paths: ArtifactPaths, slot: int, table: int) -> TrainingRun:
    """The finetune stage's run of ``slot``: the method's fine-tuning recipe
    (``Method.finetune_params``) from the pre-trained ``data/recommender/best.pt`` on table
    ``table`` of the ID table alone (the pre-training's vocabulary over every table), validation
    decoding as the test will (``evaluate.trie``); checkpoints in ``data/finetune/<slot>``."""
    from genrec_core.errors import MissingInputError
    from genrec_core.methods import method_class
    from genrec_core.recommender.fingerprint import fingerprint as fingerprint_of

    pretrained = paths.recommender_dir / BEST
    if not pretrained.exists():
        raise MissingInputError(pretrained, "the pre-trained model; run the train stage first")
    recipe = slot_finetune_recipe(params.recommender)
    item_ids, tables, _ = read_ids(paths, params.recommender.tokenizer)
    names = list(tables)
    ids = dataclasses.replace(method_class(recipe.method).prepare_ids(params, paths, item_ids, tables, names[table]), extra={})
    _, info = fingerprint_of(
        dataclasses.replace(params, recommender=recipe),
        names[table],
        {"pretrained": pretrained, "id_table": paths.id_table, "train": paths.examples("train"), "valid": paths.examples("valid")},
    )
    info["evaluate.trie"] = params.evaluate.trie
    fp = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()
    log.info("fine-tuning slot %d on tokenizer %s from %s (lr %g, %d epochs)", slot, names[table], pretrained, recipe.lr, recipe.epochs)
    return build_training(
        params,
        paths,
        recommender=recipe,
        ids=ids,
        init_state=read_weights(pretrained),
        checkpoint_dir=paths.finetune_dir(slot),
        reports_dir=paths.finetune_reports_dir(slot),
        fingerprint=(fp, info),
        decode_with_trie=params.evaluate.trie,
        use_dvclive=False,
    )  # one dvclive run per pipeline (the train stage's)
