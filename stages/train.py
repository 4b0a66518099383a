"""Stage train: example tables + ID table -> a trained generative recommender (SPEC 4 and 6):
the T5 (``recommender.model: tiger``) or the decoder-only transformer (``decoder_only``).

Reads ``data/processed/{train,valid}.parquet`` and ``data/ids/item_ids.parquet``; trains on the
IDs of ``recommender.tokenizer`` with the method ``recommender.method`` (default ``tiger``: plain
training with the loss ``recommender.loss``); writes
``data/recommender/{last,best}.pt`` and ``reports/train/`` (dvclive ``live/``, ``summary.json``
and ``best_valid.json``, the part of the summary experiments are compared on: the DVC metric).
With ``recommender.method: mtgrec`` every kept tokenizer of the ID table is a data group and
``reports/mtgrec/influence.csv`` holds the influence per stage end and tokenizer; any other method
(or model) writes it with its header only (no influence computed), so the output always exists.
Fine-tuning and selection are the ``finetune`` and ``select_tokenizer`` stages.
With ``recommender.processes`` > 1 the CLI runs this stage under torchrun (one process per
device, DDP; ``genrec_core/recommender/distributed.py``); rank 0 writes every output.
An interrupted run resumes from ``last.pt`` when its fingerprint (the recommender params, the
seed, the tokenizer and the hashes of the input files) still matches.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec_core.config import Params
from genrec_core.errors import InputFormatError
from genrec_core.io import write_json, write_text
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender import distributed
from genrec_core.recommender.fingerprint import fingerprint
from genrec_core.tokenizers.id_table import choose_tokenizer

log = logging.getLogger(__name__)

def target_counts(train, num_items: int) -> np.ndarray:
    """Item frequency among training targets (frequency-based losses)."""
    return np.bincount(train.targets, minlength=num_items).astype(np.int64)


def comparable_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The training summary's part that experiments are compared on (few keys: ``dvc metrics
    show`` has one column per key): best epoch, its validation metrics as ``best_valid_<metric>``
    (names apart from the test metrics'), training seconds."""
    best = {f"best_valid_{k}": v for k, v in (summary.get("best_valid") or {}).items() if k != "epoch"}
    return {"best_epoch": summary["best_epoch"], **best, "seconds": summary["seconds"]}


def run(params: Params, root: Path) -> None:
    from genrec_core.methods import MethodContext, build_method, check_method_params
    from genrec_core.recommender.data import SequenceEncoder, load_examples
    from genrec_core.recommender.losses import LossContext, build_loss, check_loss_params
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.trainer import Trainer
    from genrec_core.recommender.vocab import SemanticIdVocab
    from genrec_core.sequential.runner import GENERATIVE, GENERATIVE_KINDS, model_kind, train_sequential
    from genrec_core.tokenizers.id_table import read_id_table_with_items

    from genrec_core.recommender.schedule import describe, resolve_epochs_from_artifacts

    paths = ArtifactPaths(Path(root))
    params, epochs_auto = resolve_epochs_from_artifacts(params, paths)  # recommender.epochs: auto -> a number
    if epochs_auto:
        log.info(describe(epochs_auto))
    kind = model_kind(params)
    if kind not in GENERATIVE_KINDS:  # SASRec / GRU4Rec over item ids: same trainer, outputs and metrics
        summary = train_sequential(params, paths, kind)
        if distributed.is_main():  # under torchrun only rank 0 writes
            write_json(comparable_metrics(summary), paths.train_metrics)
            _no_influence(paths)
        return
    rp = params.recommender
    check_loss_params(rp.loss, rp.loss_params)  # fail before reading anything
    check_method_params(rp.method, rp.method_params)
    item_ids, tables = read_id_table_with_items(paths.id_table)
    if not np.array_equal(item_ids, np.arange(item_ids.size)):
        raise InputFormatError(paths.id_table, "item ids must be 0..N-1 (the preprocess stage numbers items densely)")
    names = list(tables)
    chosen = choose_tokenizer(names, rp.tokenizer)
    extra: dict[str, Any] = {"reports_dir": paths.mtgrec_reports_dir}
    inputs = {"id_table": paths.id_table, "train": paths.examples("train"), "valid": paths.examples("valid")}
    if rp.method == "bloger":  # the IDs come from a tokenizer that trains along (SPEC 8)
        runtime = bloger_runtime_tokenizer(paths, item_ids, tables[chosen], chosen)
        vocab = runtime.vocab  # codebook-sized: every ID a tokenizer update can produce has tokens
        all_tokens = runtime.item_tokens(chosen).cpu()[None]  # [1, N, L]
        encoder = SequenceEncoder(all_tokens, rp.encoder_input, user_buckets=rp.user_tokens, user_token_offset=vocab.size)
        extra.update(runtime_tokenizer=runtime, tokenizer_name=chosen)
        inputs.update(kept_tokenizer=kept_tokenizer_path(paths, chosen), embeddings=paths.embeddings)
        item_tokens = all_tokens[0].clone()
    else:
        vocab = SemanticIdVocab.from_codes(tables.values())  # shared by every tokenizer (MTGRec)
        all_tokens = torch.from_numpy(np.stack([vocab.codes_to_tokens(tables[n]) for n in names]))  # [T, N, L]
        encoder = SequenceEncoder(all_tokens, rp.encoder_input, default_tokenizer=names.index(chosen), user_buckets=rp.user_tokens, user_token_offset=vocab.size)
        item_tokens = all_tokens[names.index(chosen)].clone()

    n_items = int(item_ids.size)
    train = load_examples(paths.examples("train"), n_items)
    valid = load_examples(paths.examples("valid"), n_items)
    fp, fp_info = fingerprint(params, chosen, inputs)

    steps_per_epoch = -(-len(train) // rp.batch_size)
    context = LossContext(
        vocab=vocab,
        item_tokens=item_tokens,
        target_counts=target_counts(train, n_items),
        item_vectors=lambda: _item_vectors(paths, n_items),
        total_steps=rp.epochs * steps_per_epoch,
    )
    loss = build_loss(rp.loss, rp.loss_params, context)
    method = build_method(rp.method, rp.method_params, MethodContext(encoder, loss, extra=extra))
    model = build_generative_model(rp, vocab, item_tokens)  # tiger: T5; decoder_only: LLaMA-style decoder
    log.info("training %s with method %s on tokenizer %s (%d items, ID length %d, vocab %d, %d train examples, %d params)", kind, rp.method, chosen, n_items, vocab.id_length, vocab.size, len(train), sum(p.numel() for p in model.parameters()))
    trainer = Trainer(
        model,
        rp,
        method,
        train,
        valid,
        checkpoint_dir=paths.recommender_dir,
        reports_dir=paths.train_reports_dir,
        seed=params.seed,
        fingerprint=fp,
        fingerprint_info=fp_info,
        checkpoint_meta={
            "params": dataclasses.asdict(rp),
            "vocab": vocab.to_dict(),
            "tokenizer": chosen,
            "item_tokens": item_tokens,
            **({"epochs_auto": epochs_auto} if epochs_auto else {}),  # summary.json records what auto chose
            **({} if kind == GENERATIVE else {"model_kind": kind}),  # summary.json names a non-default model
        },
    )
    summary = trainer.fit()
    if not distributed.is_main():  # under torchrun only rank 0 writes
        return
    if rp.method == "bloger" and method.params["finetune_epochs"]:
        summary = bloger_finetune(params, paths, summary, trainer, fp)
    write_json(comparable_metrics(summary), paths.train_metrics)
    if rp.method != "mtgrec":  # MTGRec wrote its influence at the end of training
        _no_influence(paths)
    if rp.method == "bloger":
        write_final_ids(paths, item_ids, vocab, chosen)
    else:  # a BLOGER table left by an earlier run in this workspace would not describe this model
        paths.final_id_table.unlink(missing_ok=True)
    log.info("best validation %s %.4f at epoch %d", rp.select_metric, summary[f"best_valid_{rp.select_metric}"], summary["best_epoch"])


def kept_tokenizer_path(paths: ArtifactPaths, name: str) -> Path:
    """The kept tokenizer file of ``name`` (data/tokenizer/kept/<name>.pt)."""
    from genrec_core.errors import MissingInputError

    path = paths.tokenizer_dir / "kept" / f"{name}.pt"
    if not path.exists():
        raise MissingInputError(path, f"the kept tokenizer {name!r} BLOGER trains on; rerun the train-tokenizer stage")
    return path


def bloger_runtime_tokenizer(paths: ArtifactPaths, item_ids: np.ndarray, table_ids: np.ndarray, name: str):
    """The runtime tokenizer BLOGER trains: the kept RQ-VAE ``name`` over the item vectors, with
    the collision handling the ID table was made with (``ids.collision``: read off the table, one
    token longer than the codebook levels under ``dedup_level``), so it starts from the table's IDs."""
    from genrec_core.artifacts import load_item_vectors
    from genrec_core.tokenizers.runtime import DEFAULT_DEDUP_SIZE, RuntimeItemTokenizer
    from genrec_core.tokenizers.training import load_tokenizer

    tokenizer = load_tokenizer(kept_tokenizer_path(paths, name))
    vec_ids, vectors = load_item_vectors(paths.embeddings)
    if not np.array_equal(vec_ids, item_ids):
        raise InputFormatError(paths.embeddings, "the item vectors do not list the ID table's items")
    dedup = table_ids.shape[1] == int(tokenizer.levels) + 1
    dedup_size = max(DEFAULT_DEDUP_SIZE, 2 * int(table_ids[:, -1].max()) + 2) if dedup else None
    runtime = RuntimeItemTokenizer([(name, tokenizer)], vectors.copy(), "dedup_level" if dedup else "reassign_last", dedup_size=dedup_size)
    if not np.array_equal(runtime.hard_ids(name).cpu().numpy(), table_ids):
        log.warning("tokenizer %s: the runtime IDs differ from %s for %.2f%% of the items (float rounding); BLOGER starts from the runtime ones",
                    name, paths.id_table, 100 * float(np.any(runtime.hard_ids(name).cpu().numpy() != table_ids, axis=1).mean()))
    return runtime


def bloger_finetune(params: Params, paths: ArtifactPaths, summary: dict[str, Any], bloger: Any, fp: str) -> dict[str, Any]:
    """BLOGER's optional fine-tuning on the frozen final IDs (``method_params.finetune_epochs``):
    plain training (``tiger``) from ``best.pt``'s weights on its IDs (``finetune_recommender_params``),
    checkpoints and summary in ``data/recommender/finetune/``, selection on validation: its best
    replaces ``data/recommender/best.pt`` only when it beats BLOGER's best ``select_metric``. Returns
    the training summary with ``bloger_finetune`` (and the fine-tuned validation when it won),
    rewritten to ``reports/train/summary.json``."""
    import shutil

    from genrec_core.methods import MethodContext
    from genrec_core.methods.bloger import finetune_recommender_params
    from genrec_core.methods.tiger import TigerMethod
    from genrec_core.recommender.data import SequenceEncoder
    from genrec_core.recommender.losses import LossContext, build_loss
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.trainer import Trainer

    rp = finetune_recommender_params(params.recommender)
    best = torch.load(paths.recommender_dir / "best.pt", map_location="cpu", weights_only=True)
    tokens = best["item_tokens"]
    vocab = bloger.method.vocab
    model = build_generative_model(rp, vocab, tokens)
    model.load_state_dict(best["model"])
    train, load_valid = bloger.train_examples, bloger.valid_examples
    encoder = SequenceEncoder(tokens[None], rp.encoder_input, user_buckets=rp.user_tokens, user_token_offset=vocab.size)
    loss = build_loss(rp.loss, rp.loss_params, LossContext(vocab=vocab, item_tokens=tokens, target_counts=target_counts(train, tokens.shape[0]), total_steps=rp.epochs * -(-len(train) // rp.batch_size)))
    folder = paths.recommender_dir / "finetune"
    trainer = Trainer(model, rp, TigerMethod(MethodContext(encoder, loss)), train, load_valid, checkpoint_dir=folder, reports_dir=folder, seed=params.seed,
                      fingerprint=f"{fp}:finetune", checkpoint_meta={**bloger.checkpoint_meta, "params": dataclasses.asdict(rp), "item_tokens": tokens}, use_dvclive=False)
    ft = trainer.fit()
    metric = f"best_valid_{rp.select_metric}"
    won = bool(ft["best_epoch"]) and ft[metric] > summary[metric]
    if won:
        tmp = paths.recommender_dir / "best.pt.finetuned"
        shutil.copyfile(trainer.best_path, tmp)
        tmp.replace(paths.recommender_dir / "best.pt")
    out = dict(summary)
    out["bloger_finetune"] = {"epochs": ft["epochs"], "best_epoch": ft["best_epoch"], metric: ft[metric], "best_valid": ft["best_valid"], "seconds": ft["seconds"], "selected": won}
    if won:
        out.update({metric: ft[metric], "best_valid": ft["best_valid"]})
    write_json(out, paths.train_reports_dir / "summary.json")
    log.info("fine-tuning on the final IDs: best validation %s %.4f (BLOGER %.4f): %s", rp.select_metric, ft[metric], summary[metric], "selected" if won else "not selected")
    return out


def write_final_ids(paths: ArtifactPaths, item_ids: np.ndarray, vocab, name: str) -> None:
    """BLOGER's final IDs, those of the model selected on validation (``best.pt``'s item tokens),
    as an ID table with emit-ids' schema (tokenizer ``name``): what evaluate decodes to (it reads
    them from best.pt) and what the analyses of this model's IDs should read."""
    from genrec_core.io import write_parquet
    from genrec_core.tokenizers.id_table import build_id_table, validate_id_table

    tokens = torch.load(paths.recommender_dir / "best.pt", map_location="cpu", weights_only=True)["item_tokens"]
    table = build_id_table(item_ids, {name: vocab.tokens_to_codes(torch.as_tensor(tokens).numpy())})
    validate_id_table(table, paths.final_id_table, item_ids)
    write_parquet(table, paths.final_id_table)


def _no_influence(paths: ArtifactPaths) -> None:
    from genrec_core.methods.mtgrec import empty_influence_csv

    write_text(empty_influence_csv(), paths.influence_csv)


def _item_vectors(paths: ArtifactPaths, n_items: int) -> np.ndarray:
    """Item embeddings [N, D] in item-id order (losses that need them load them lazily)."""
    from genrec_core.artifacts import load_item_vectors

    ids, vectors = load_item_vectors(paths.embeddings)
    if not np.array_equal(ids, np.arange(n_items)):
        raise InputFormatError(paths.embeddings, f"item ids must be 0..{n_items - 1}")
    return vectors
