"""Stage token-weights: the data-derived token weights of SPEC section 6, as a report.

Reads ``data/processed/train.parquet`` (training targets), ``data/ids/item_ids.parquet`` (the
``recommender.tokenizer`` IDs) and ``data/embeddings/item_vectors.parquet``; writes
``reports/token_weights.json``:

- ``front_greater``: per variant (``paper``, ``released``) ``mu`` (mu_0..mu_L), ``delta`` and one
  ``weights`` entry per level (sum L);
- ``frequency``: ``beta`` (0.99) and, per level, ``weights[level][code]`` = 1/E_n (unnormalised;
  a training batch normalises each target's L weights to sum L) and ``counts[level][code]`` = n;
- ``igd``: share of zero-gain tokens per level, over item IDs and over training targets, with
  ``beta_igd`` the weight such tokens get.

The same functions (``genrec_core.recommender.token_weights``) feed the loss strategies, so the
report shows exactly what training uses. (The multi-target alphas the train stage logs are drawn
by ``genrec_core.analysis.training_logs.plot_alpha_trajectories``, paper 001 Figure 5.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from genrec_core.config import Params
from genrec_core.errors import InputFormatError, MissingInputError
from genrec_core.io import write_json
from genrec_core.paths import ArtifactPaths

log = logging.getLogger(__name__)

DEFAULT_FR_BETA = 0.99
DEFAULT_IGD_BETA = 0.1


def token_weight_report(
    codes: np.ndarray, item_counts: np.ndarray, vectors: np.ndarray | None, fr_beta: float = DEFAULT_FR_BETA, igd_beta: float = DEFAULT_IGD_BETA
) -> dict[str, Any]:
    """The report's content from IDs [N, L] (codes), training-target counts [N] and embeddings [N, D]."""
    from genrec_core.recommender import token_weights as tw

    codes = np.asarray(codes, dtype=np.int64)
    report: dict[str, Any] = {"items": int(codes.shape[0]), "id_length": int(codes.shape[1]), "training_targets": int(np.sum(item_counts))}
    if vectors is not None:
        fg = {}
        for variant in tw.FG_VARIANTS:
            mu = tw.front_greater_dispersion(vectors, codes, variant)
            fg[variant] = {"mu": mu.tolist(), "delta": (mu[:-1] - mu[1:]).tolist(), "weights": tw.front_greater_weights(mu, variant).tolist()}
        report["front_greater"] = fg
    counts = tw.level_token_counts(codes, item_counts)
    report["frequency"] = {
        "beta": fr_beta,
        "weights": [np.round(tw.frequency_weights(c, fr_beta), 8).tolist() for c in counts],
        "counts": [c.tolist() for c in counts],
    }
    gains = tw.igd_gains(codes, item_counts)
    report["igd"] = {"beta_igd": igd_beta, "zero_gain_share": tw.zero_gain_share(gains, item_counts)}
    return report


def run(params: Params, root: Path) -> None:
    from genrec_core.artifacts import load_item_vectors
    from genrec_core.recommender.data import load_examples
    from genrec_core.tokenizers.id_table import choose_tokenizer, read_id_table

    paths = ArtifactPaths(Path(root))
    tables = read_id_table(paths.id_table)
    name = choose_tokenizer(list(tables), params.recommender.tokenizer)
    codes = tables[name]
    train = load_examples(paths.examples("train"), codes.shape[0])
    item_counts = np.bincount(train.targets, minlength=codes.shape[0]).astype(np.int64)
    if not paths.embeddings.exists():
        raise MissingInputError(paths.embeddings, "item embeddings (stage embed) for the Front-Greater weights")
    ids, vectors = load_item_vectors(paths.embeddings)
    if not np.array_equal(ids, np.arange(codes.shape[0])):
        raise InputFormatError(paths.embeddings, f"item ids must be 0..{codes.shape[0] - 1}, as in the ID table")
    lp = params.recommender.loss_params or {}
    fr_beta = (
        float(lp.get("beta", lp.get("fr_beta", DEFAULT_FR_BETA)))
        if params.recommender.loss in ("frequency", "fg_ce_fr", "multi_target", "curriculum")
        else DEFAULT_FR_BETA
    )
    report = {"tokenizer": name, **token_weight_report(codes, item_counts, vectors, fr_beta=fr_beta)}
    out = paths.reports_dir / "token_weights.json"
    write_json(report, out)
    fg = report["front_greater"]["paper"]
    log.info(
        "front-greater mu %s -> weights %s; zero-gain share per level %s; wrote %s",
        np.round(fg["mu"], 4).tolist(),
        np.round(fg["weights"], 4).tolist(),
        np.round(report["igd"]["zero_gain_share"]["items"], 4).tolist(),
        out,
    )
