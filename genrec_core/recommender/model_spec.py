"""One spec per recommender model: what ``recommender.model`` may name and what each name means.

Everything that depends on the model (config validation, the stages' choice between beam search
over semantic IDs and full ranking over item ids, packed batches, the resume fingerprint, report
labels, checkpoint loading) asks this registry instead of typing model names.

Adding a model is one new module with its class and one registration line: append a
``register_model(ModelSpec(...))`` line at the end of this file (or call it from your own code):

    register_model(ModelSpec("toy", "generative", "Toy model over semantic IDs", "mypkg.toy:ToyRecommender"))

A ``generative`` class is built as ``cls(params, vocab)`` and ranks by beam search
(``model.SemanticIdRanking``); an ``item_id`` class has ``from_params(num_items, max_len, rp)``
and is rebuilt as ``cls(**model.config)`` (``sequential/models.py``). Classes and loaders are
named as ``"module:attribute"`` and imported on first use, so validating params imports neither
torch nor transformers. This module imports nothing from genrec_core but ``errors``
(``config.py`` imports it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from genrec_core.errors import ParamError

#: generative: over semantic IDs, ranked by trie-constrained beam search; item_id: over plain
#: item ids, ranked by the top-k of all item scores.
FAMILIES = ("generative", "item_id")
#: A checkpoint loader per family: ``loader(path, ckpt) -> (model, LoadedRecommender)``.
FAMILY_LOADERS = {
    "generative": "genrec_core.recommender.checkpoint:generative_from_checkpoint",
    "item_id": "genrec_core.recommender.checkpoint:item_id_from_checkpoint",
}
#: The model a checkpoint without ``model_kind`` holds (the T5, the first model; stages/train.py
#: still omits the key for it) and RecommenderParams' default.
DEFAULT_MODEL = "t5"


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # recommender.model
    family: str  # one of FAMILIES
    label: str  # the trained model's row in the analyse reports
    model: str  # "module:Class" (see the module docstring for how each family builds it)
    packs: bool = False  # has a packed forward: recommender.pack_examples applies (the others ignore it)
    item_embedding: bool = False  # supports recommender.item_embedding (a vector per item beside its semantic ID)
    aliases: tuple[str, ...] = ()  # older names still accepted in params and stored checkpoints
    check: Callable[[Any, str], None] | None = None  # check(recommender_params, prefix): constraints of this model (raise ParamError)
    loader: str | None = None  # "module:function" loading its checkpoint; None = its family's (FAMILY_LOADERS)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model {self.name!r}: family must be one of {', '.join(FAMILIES)}, got {self.family!r}")

    @property
    def generative(self) -> bool:
        return self.family == "generative"

    def model_class(self) -> type:
        return _resolve(self.model)

    def checkpoint_loader(self) -> Callable[..., Any]:
        return _resolve(self.loader or FAMILY_LOADERS[self.family])

    def check_params(self, rp: Any, prefix: str = "recommender") -> None:
        if self.check is not None:
            self.check(rp, prefix)


#: recommender.model -> its spec (registration order: the order error messages list them in).
MODEL_SPECS: dict[str, ModelSpec] = {}
#: An older name -> today's (``tiger`` -> ``t5``).
MODEL_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Make ``spec.name`` (and its aliases) valid values of ``recommender.model``."""
    for name in (spec.name, *spec.aliases):
        if name in MODEL_SPECS or name in MODEL_ALIASES:
            raise ValueError(f"model {name!r} registered twice")
    MODEL_SPECS[spec.name] = spec
    MODEL_ALIASES.update({alias: spec.name for alias in spec.aliases})
    return spec


def unregister_model(name: str) -> None:
    """Remove a model and its aliases (tests that register a toy model clean up with this)."""
    spec = MODEL_SPECS.pop(name)
    for alias in spec.aliases:
        MODEL_ALIASES.pop(alias, None)


def canonical_model_name(name: Any) -> Any:
    """Today's name of ``name`` (``tiger`` -> ``t5``); any other value unchanged."""
    return MODEL_ALIASES.get(name, name) if isinstance(name, str) else name


def model_names(family: str | None = None) -> tuple[str, ...]:
    """The registered names (of one family), in registration order."""
    return tuple(name for name, spec in MODEL_SPECS.items() if family is None or spec.family == family)


def model_spec(name: str, param: str = "recommender.model") -> ModelSpec:
    """The spec ``name`` (or an alias of it) registers; an unknown name is a ParamError naming
    ``param`` and listing the choices."""
    spec = MODEL_SPECS.get(canonical_model_name(name))
    if spec is None:
        aliases = f" ({', '.join(f'{old} = {new}' for old, new in MODEL_ALIASES.items())})" if MODEL_ALIASES else ""
        raise ParamError(param, f"must be one of {', '.join(MODEL_SPECS)}{aliases}, got {name!r}")
    return spec


class FamilyNames:
    """The names of one family, read from the registry at each use (``name in GENERATIVE_KINDS``
    also sees a model registered after import). For older callers; new code asks ``model_spec``."""

    def __init__(self, family: str):
        self.family = family

    def __contains__(self, name: object) -> bool:
        return name in model_names(self.family)

    def __iter__(self) -> Iterator[str]:
        return iter(model_names(self.family))

    def __repr__(self) -> str:
        return repr(model_names(self.family))


def _rope_needs_even_head_dim(rp: Any, prefix: str) -> None:
    if rp.d_kv % 2:
        raise ParamError(f"{prefix}.d_kv", f"decoder_only rotates pairs of head dimensions (RoPE): must be even, got {rp.d_kv}")


def _heads_divide_d_model(rp: Any, prefix: str) -> None:
    if rp.d_model % rp.num_heads:
        raise ParamError(f"{prefix}.num_heads", f"must divide {prefix}.d_model ({rp.d_model}), got {rp.num_heads}")


def _decoder_only_checks(rp: Any, prefix: str) -> None:
    """RoPE's even head dimension, and transformers' LlamaConfig, which refuses a hidden size that
    is not a multiple of the heads even with an explicit head_dim (its error would come from deep
    inside model construction, after the data are loaded)."""
    _rope_needs_even_head_dim(rp, prefix)
    _heads_divide_d_model(rp, prefix)


register_model(ModelSpec("t5", "generative", "TIGER (T5 over semantic IDs)", "genrec_core.recommender.model:GenerativeRecommender", aliases=("tiger",)))
register_model(
    ModelSpec(
        "decoder_only",
        "generative",
        "Decoder-only over semantic IDs",
        "genrec_core.recommender.decoder_only:DecoderOnlyRecommender",
        packs=True,
        item_embedding=True,
        check=_decoder_only_checks,
    )
)
register_model(ModelSpec("sasrec", "item_id", "SASRec (item IDs)", "genrec_core.sequential.models:SASRec", check=_heads_divide_d_model))
register_model(ModelSpec("gru4rec", "item_id", "GRU4Rec (item IDs)", "genrec_core.sequential.models:GRU4Rec"))
