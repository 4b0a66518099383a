"""Plots from the train stage's dvclive logs: paper 001 Figure 5 (multi-target alphas per step)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from genrec_core.errors import MissingInputError


def read_live_series(live_dir: str | Path, prefix: str = "train/alpha_") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} of the dvclive TSV files ``<live>/plots/metrics/<prefix>*.tsv``."""
    root = Path(live_dir) / "plots" / "metrics"
    folder, stem = (root / prefix).parent, Path(prefix).name
    out = {}
    for tsv in sorted(folder.glob(f"{stem}*.tsv")):
        with tsv.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            continue
        value_col = [c for c in rows[0] if c not in ("step", "timestamp")][0]
        steps = np.array([int(r["step"]) for r in rows])
        values = np.array([float(r[value_col]) for r in rows])
        out[tsv.stem[len(stem) :]] = (steps, values)
    return out


LABELS = {"fg": "Front-Greater", "fr": "Frequency", "or": "Original CE"}


def plot_alpha_trajectories(live_dir: str | Path, out_png: str | Path, title: str = "Objective weights over training") -> Path:
    """Paper 001 Figure 5: alpha_j per optimiser step (and the curriculum factor, dashed) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_live_series(live_dir)
    if not series:
        raise MissingInputError(Path(live_dir) / "plots" / "metrics" / "train", "no alpha_*.tsv logged: train with recommender.loss multi_target or curriculum")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (steps, values) in series.items():
        ax.plot(steps, values, label=LABELS.get(name, name))
    curriculum = read_live_series(live_dir, "train/curriculum")
    for _, (steps, values) in curriculum.items():
        ax.plot(steps, values, "k--", linewidth=0.8, label="e^{-ct}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("alpha")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
