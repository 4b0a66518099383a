"""Stage select_tokenizer: which model the evaluate stage tests.

For a method that fine-tunes per table (``Method.tests_selected_model``; MTGRec, SPEC 7) it reads
every fine-tuning slot's ``reports/method/finetune/<slot>/result.json`` (slots of
``finetune.slots``), checks that every table to fine-tune was fine-tuned, and selects the one best
on validation ``recommender.select_metric`` (ties: the lower slot, i.e. the higher plan score). Only
that model is tested: the released MTGRec script's per-metric maximum over tokenizers on the test
set is not done. Writes ``reports/method/selected.json`` (the checkpoint to test, its tokenizer,
slot and validation metrics) and ``reports/method/finetune.csv`` (the pre-trained model and every
fine-tuned table: validation metrics, selected).

Any other method: ``selected.json`` names ``data/recommender/best.pt`` (the evaluate stage tests
the trained model) and ``finetune.csv`` holds the pre-trained row only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from genrec_core.config import Params
from genrec_core.errors import MissingInputError, ParamError
from genrec_core.io import write_json, write_text
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.checkpoint_format import BEST

log = logging.getLogger(__name__)

METRICS = [f"{m}@{k}" for k in (1, 5, 10) for m in ("hit", "ndcg")]  # the trainer's validation metrics
PRETRAINED = (Path("data") / "recommender" / BEST).as_posix()


def run(params: Params, root: Path) -> None:
    from genrec_core.methods import method_class
    from genrec_core.methods.base import finetune_table, select_tokenizer

    paths = ArtifactPaths(Path(root))
    rp = params.recommender
    pretrain = _read(paths.train_metrics, "the pre-training's best validation metrics; run the train stage first")
    rows: list[dict[str, Any]] = [{"stage": "pretrain", "best_epoch": pretrain.get("best_epoch"), **{m: pretrain.get(f"best_valid_{m}") for m in METRICS}}]
    if not method_class(rp.method).tests_selected_model:
        rows[0]["selected"] = True
        write_text(finetune_table(rows, METRICS), paths.finetune_table)
        write_json(
            {"checkpoint": PRETRAINED, "method": rp.method, "tokenizer": None, "note": "no fine-tuning: the pre-trained model is tested"}, paths.selected_model
        )
        return
    slots = sorted(params.finetune.slots)
    results = {s: _read(paths.finetune_result(s), f"fine-tuning slot {s}; run stage finetune@{s}") for s in slots}
    planned = max((r.get("planned", 0) for r in results.values()), default=0)
    if missing := [s for s in range(planned) if s not in results]:
        raise ParamError(
            "finetune.slots",
            f"{planned} tables are to be fine-tuned (the method's finetune plan, e.g. recommender.method_params.finetune_top_m) but slots {missing} are "
            f"missing from {params.finetune.slots}: add them (dvc.yaml runs one finetune stage per slot)",
        )
    done = {s: r for s, r in results.items() if r.get("tokenizer") is not None}
    if sorted(done) != list(range(planned)):
        raise MissingInputError(
            paths.method_reports_dir / "finetune", f"slots {sorted(set(range(planned)) - set(done))} were not fine-tuned; rerun their finetune stages"
        )
    best = select_tokenizer({s: done[s]["best_valid"] for s in sorted(done)}, rp.select_metric)
    for s in sorted(done):
        r = done[s]
        rows.append(
            {
                "stage": "finetune",
                "slot": s,
                "tokenizer": r["tokenizer"],
                "cumulative_influence": r["cumulative_influence"],
                "best_epoch": r["best_epoch"],
                **{m: r["best_valid"].get(m) for m in METRICS},
                "selected": s == best,
            }
        )
    rows[0]["selected"] = False
    write_text(finetune_table(rows, METRICS), paths.finetune_table)
    chosen = done[best]
    write_json(
        {
            "checkpoint": chosen["checkpoint"],
            "method": rp.method,
            "tokenizer": chosen["tokenizer"],
            "slot": best,
            "select_metric": rp.select_metric,
            "valid": chosen["best_valid"],
        },
        paths.selected_model,
    )
    log.info(
        "selected tokenizer %s (slot %d): validation %s %.4f",
        chosen["tokenizer"],
        best,
        rp.select_metric,
        chosen["best_valid"].get(rp.select_metric, float("nan")),
    )


def _read(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise MissingInputError(path, what)
    return json.loads(path.read_text(encoding="utf-8"))
