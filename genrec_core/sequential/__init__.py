"""ID-based sequential baselines (SASRec, GRU4Rec) trained and evaluated like the generative model.

They read the same example tables (history -> target), train with the same ``Trainer``
(checkpoints, resume, fingerprint, dvclive, early stopping on validation NDCG@10) and write the
same predictions Parquet and metrics, so their numbers sit beside TIGER's by construction. What
differs: items are plain ids (no semantic IDs), the loss is over all N items (``ce``: full softmax
cross-entropy; ``bce``: the original SASRec's binary cross-entropy with one sampled negative), and
ranking is the top-K of the full score matrix instead of beam search.
"""

from genrec_core.sequential.models import MODEL_KINDS, GRU4Rec, SASRec, build_model

__all__ = ["MODEL_KINDS", "GRU4Rec", "SASRec", "build_model"]
