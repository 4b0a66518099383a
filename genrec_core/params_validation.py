"""Every check of the params that needs no data, run by every ``genrec`` command at start.

Apart from ``config`` because the names it checks belong to registries (methods, losses, item-ID
models) that import torch and, through the methods, ``config`` itself: imported here, inside the
function, they would otherwise close an import circle with ``config``.
"""

from __future__ import annotations

from genrec_core.config import Params, _check


def validate_everything(params: Params) -> Params:
    """Every check that needs no data, for every command at start (the CLI, after ``config.load_params``): each section's
    values (``Params.validate``, which also relates fields within a section, e.g. evaluate.ks and
    beam_size), the names that registries own (recommender.method and method_params,
    recommender.loss and loss_params) and the constraints between sections.

    Why at every command: a misspelt method would otherwise pass preprocess, embed and the
    tokenizer and fail only when train starts, and a stage's own check runs only after DVC has
    removed that stage's outputs. The registries import torch, so they are imported here, when
    called, not when this module is."""
    from genrec_core.methods import check_method_params
    from genrec_core.sequential.runner import GENERATIVE_KINDS, check_sizes

    params.validate()
    rp = params.recommender
    check_method_params(rp.method, rp.method_params)
    if rp.item_embedding is True and rp.model in GENERATIVE_KINDS:
        from genrec_core.methods import method_class

        _check(
            method_class(rp.method).fixed_item_ids,
            "recommender.item_embedding",
            f"needs a method that trains on one fixed ID table to find items by; {rp.method!r} mixes or changes the IDs (use auto or false)",
        )
    if rp.model in GENERATIVE_KINDS:
        from genrec_core.recommender.losses import check_loss_params

        check_loss_params(rp.loss, rp.loss_params)
    else:  # item-ID models (SASRec, GRU4Rec) score all items: their own two losses and sizes
        from genrec_core.sequential.training import SEQUENTIAL_LOSSES

        _check(rp.loss in SEQUENTIAL_LOSSES, "recommender.loss", f"recommender.model {rp.model} trains with {' or '.join(SEQUENTIAL_LOSSES)}, got {rp.loss!r}")
        check_sizes(rp.model, rp)
    _check(
        params.ids.source != "index_json" or params.data.dataset == "inter_json",
        "ids.source",
        f"index_json imports <data.raw_dir>/<name>.index.json of an inter_json dataset, but data.dataset is {params.data.dataset!r}; use ids.source: tokenizer",
    )
    return params
