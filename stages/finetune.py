"""Stage finetune@<slot>: the method's fine-tuning of the pre-trained model on one ID table
(MTGRec's per-tokenizer fine-tuning, SPEC 7).

dvc.yaml fans this stage out over ``finetune.slots`` (``foreach``). The method says which tables to
fine-tune, slot 0 first (``Method.finetune_plan``; MTGRec: the kept tokenizers by cumulative
influence, ``reports/method/influence.csv``) and with which recipe (``Method.finetune_params``:
plain training from ``data/recommender/best.pt``, early stopping on validation, validation decoding
as the test will, ``evaluate.trie``); ``genrec_core.training.build_slot_finetuning`` assembles the
run. Writes ``data/finetune/<slot>/{last,best}.pt`` (a killed run resumes) and
``reports/method/finetune/<slot>/`` (``result.json``: tokenizer and best validation metrics; the
trainer's ``summary.json`` and ``valid_curve.csv``).

A slot with nothing to do is a cheap no-op that writes ``data/finetune/<slot>/skipped.json`` and
a ``result.json`` saying why: methods that fine-tune nothing (the default), item-ID models, and
slots at or beyond the number of tables to fine-tune.
"""

from __future__ import annotations

import logging
from pathlib import Path

from genrec_core.config import Params
from genrec_core.io import write_json
from genrec_core.paths import ArtifactPaths

log = logging.getLogger(__name__)


def run(params: Params, root: Path, slot: int = 0) -> None:
    from genrec_core.methods import method_class
    from genrec_core.recommender.schedule import resolve_epochs_from_artifacts
    from genrec_core.tokenizers.id_table import read_id_table_with_items
    from genrec_core.training import build_slot_finetuning, is_item_id_model

    paths = ArtifactPaths(Path(root))
    params, _ = resolve_epochs_from_artifacts(params, paths)  # recommender.epochs: auto, as the train stage chose it
    rp = params.recommender
    method = method_class(rp.method)
    if is_item_id_model(rp.model):
        _skip(paths, slot, f"recommender.model is {rp.model!r}: item-ID models fine-tune nothing", planned=0)
        return
    if not method.tests_selected_model:  # the trained model is tested as it is
        _skip(paths, slot, f"recommender.method is {rp.method!r}: nothing to fine-tune", planned=0)
        return
    _, tables = read_id_table_with_items(paths.id_table)
    names = list(tables)
    plan = method.finetune_plan(params, paths, names)  # [(table, the score it was ordered by)]
    chosen = [t for t, _ in plan]
    if slot >= len(chosen):
        _skip(paths, slot, f"slot {slot}: only {len(chosen)} tokenizers to fine-tune", planned=len(chosen))
        return
    t = chosen[slot]
    run = build_slot_finetuning(params, paths, slot, t)
    (paths.finetune_dir(slot) / "skipped.json").unlink(missing_ok=True)
    summary = run.fit()
    best = summary.get("best_valid") or {}
    result = {
        "slot": slot,
        "planned": len(chosen),
        "tokenizer": names[t],
        "tokenizer_index": t,
        "cumulative_influence": float(plan[slot][1]),  # the plan's score (MTGRec: cumulative influence)
        "best_epoch": summary["best_epoch"],
        "best_valid": {k: v for k, v in best.items() if k != "epoch"},
        "seconds": summary["seconds"],
        "checkpoint": (Path("data") / "finetune" / str(slot) / "best.pt").as_posix(),
    }
    write_json(result, paths.finetune_result(slot))
    log.info(
        "fine-tuned slot %d (tokenizer %s): best validation %s %.4f at epoch %s",
        slot,
        names[t],
        rp.select_metric,
        best.get(rp.select_metric, float("nan")),
        summary["best_epoch"],
    )


def _skip(paths: ArtifactPaths, slot: int, reason: str, planned: int) -> None:
    out = paths.finetune_dir(slot)
    for stale in ("best.pt", "last.pt"):  # data/finetune/<slot> persists (resume): drop an old run
        (out / stale).unlink(missing_ok=True)
    write_json({"slot": slot, "skipped": reason}, out / "skipped.json")
    write_json({"slot": slot, "planned": planned, "tokenizer": None, "skipped": reason}, paths.finetune_result(slot))
    log.info("finetune slot %d: %s", slot, reason)
