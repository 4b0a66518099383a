"""Evaluation of ranked recommendations (SPEC section 5) and the non-neural baselines."""

from genrec_core.evaluation.metrics import (
    evaluation_summary,
    hit_ndcg,
    metrics_from_predictions,
    per_user_metrics,
    prefix_match_ranks,
    relaxed_prefix_ndcg,
    target_ranks,
)

__all__ = [
    "evaluation_summary",
    "hit_ndcg",
    "metrics_from_predictions",
    "per_user_metrics",
    "prefix_match_ranks",
    "relaxed_prefix_ndcg",
    "target_ranks",
]
