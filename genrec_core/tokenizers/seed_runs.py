"""``tokenizer.kept_from: seeds``: n independently seeded RQ-VAE runs as the kept tokenizers.

MTGRec's ablation "w/o relevant tokenizers" (paper 002 Table 3, SPEC 7) replaces the last n epochs
of one RQ-VAE run by the final tokenizers of n runs that share nothing but the data and params.
Run i (i = 0 .. keep_last - 1) is an ordinary ``train_rqvae`` with seed ``tokenizer.seed + i``
(run 0 is the epochs mode's run itself), so each table equals a single run with that seed.

Files: each run trains in ``tokenizer_dir/seeds/seed_XXXX/`` (its own ``last.pt``, so a killed
stage resumes the run it was in and skips finished ones; its ``history.csv`` and
``metrics.json`` under ``reports/``), and its final tokenizer is copied to
``tokenizer_dir/kept/seed_XXXX.pt``, where emit-ids reads kept tokenizers (in seed order; the
highest seed is ``recommender.tokenizer: last``). ``reports_dir/history.csv`` holds every run's
rows with a ``seed`` column; ``metrics.json`` is the last run's summary plus the seeds.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec_core.config import TokenizerParams
from genrec_core.io import atomic_path, write_json, write_text
from genrec_core.tokenizers.training import kept_name, train_rqvae

SEEDS_DIR = "seeds"


def run_seeds(tp: TokenizerParams) -> list[int]:
    """The documented derivation: ``tokenizer.seed + i`` for i in 0 .. keep_last - 1."""
    return [tp.seed + i for i in range(tp.keep_last)]


def seed_name(seed: int) -> str:
    return f"seed_{seed:04d}"


def train_rqvae_seeds(
    vectors: np.ndarray, tp: TokenizerParams, tokenizer_dir: str | Path, reports_dir: str | Path, item_ids: np.ndarray | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) one RQ-VAE per seed of ``run_seeds``; kept/ then holds their final tokenizers."""
    tokenizer_dir, reports_dir = Path(tokenizer_dir), Path(reports_dir)
    single = dataclasses.replace(tp, keep_last=1, kept_from="epochs")
    seeds = run_seeds(tp)
    kept = tokenizer_dir / "kept"
    kept.mkdir(parents=True, exist_ok=True)
    for f in kept.glob("*.pt"):  # an epochs run's files, or seeds no longer asked for
        if f.stem not in {seed_name(s) for s in seeds}:
            f.unlink()
    (tokenizer_dir / "last.pt").unlink(missing_ok=True)  # the epochs mode's checkpoint describes no run here
    runs_root = tokenizer_dir / SEEDS_DIR
    if runs_root.is_dir():
        for d in runs_root.iterdir():
            if d.name not in {seed_name(s) for s in seeds}:
                shutil.rmtree(d)
    histories, summaries = [], {}
    for seed in seeds:
        run_dir = runs_root / seed_name(seed)
        summaries[seed] = train_rqvae(vectors, single, seed, run_dir, run_dir / "reports", item_ids=item_ids, progress=progress)
        with atomic_path(kept / f"{seed_name(seed)}.pt") as tmp:
            shutil.copyfile(run_dir / "kept" / f"{kept_name(tp.epochs)}.pt", tmp)
        histories.append(pl.read_csv(run_dir / "reports" / "history.csv").with_columns(pl.lit(seed).alias("seed")).select("seed", pl.exclude("seed")))
    write_text(pl.concat(histories, how="diagonal").write_csv(), reports_dir / "history.csv")
    summary = {**summaries[seeds[-1]], "kept_from": "seeds", "seeds": seeds, "seconds": round(sum(s["seconds"] for s in summaries.values()), 3)}
    write_json(summary, reports_dir / "metrics.json")
    return summary
