"""Training methods (``recommender.method``): how a model is trained, one registry.

A method (``base.Method``) owns what differs between TIGER, MTGRec and BLOGER: how a batch is
tokenized (``collate``, with a per-example tokenizer choice), which named losses it computes per
example (``compute_losses``), the optimisation step and its optimisers (``step``), its state in
``last.pt`` (``state_dict``/``load_state_dict``) and what it logs (``logs``). The trainer
(``genrec_core.recommender.trainer``) runs the loop, evaluation, checkpoints, early stopping and
signals around it and knows nothing method-specific.

Registered: ``plain`` (``plain.py``; ``tiger`` is an accepted alias, ``config.METHOD_ALIASES``):
plain training with the token-weighting strategy ``recommender.loss``; the default. ``mtgrec`` (``mtgrec.py``): MTGRec pre-training (paper 002,
SPEC 7): per-example tokenizer sampling from p, influence-driven p updates at stage ends.
``bloger`` (``bloger.py``): BLOGER (paper 003, SPEC 8): a runtime RQ-VAE trained beside the
recommender by a one-step look-ahead meta-gradient with gradient surgery; the IDs move. A new method is one module here with a class decorated
``@register_method("<name>")`` plus its module name in ``BUILTIN_METHOD_MODULES`` (or, outside
the package, any module imported before the params are checked); what the stages ask of it
(IDs, outputs, fine-tuning, the tested checkpoint) are ``Method``'s pipeline hooks;
``recommender.method_params`` is checked against the class's ``param_defaults`` (an unknown key
is a ParamError naming ``recommender.method_params.<key>``).
"""

from __future__ import annotations

import importlib
from typing import Any

from genrec_core.config import METHOD_ALIASES
from genrec_core.errors import ParamError
from genrec_core.methods.base import Method, MethodContext, PreparedIds, StepOutput
from genrec_core.registry import registrar

#: Modules of ``genrec_core.methods`` whose import registers the built-in methods.
BUILTIN_METHOD_MODULES = ("plain", "mtgrec", "bloger")

METHODS: dict[str, type[Method]] = {}


#: Class decorator: make a method available as ``recommender.method: <name>``.
register_method = registrar(METHODS, "method")


def method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (the built-in methods are imported first)."""
    for module in BUILTIN_METHOD_MODULES:
        importlib.import_module(f"genrec_core.methods.{module}")
    name = METHOD_ALIASES.get(name, name)
    if name not in METHODS:
        raise ParamError("recommender.method", f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def check_method_params(name: str, method_params: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``recommender.method`` and its params without data (fail fast at stage start)."""
    return method_class(name).check_params(method_params or {})


def build_method(name: str, method_params: dict[str, Any] | None, context: MethodContext) -> Method:
    """The method ``name`` with validated params over ``context`` (its encoder and loss strategy)."""
    return method_class(name)(context, **(method_params or {}))


__all__ = [
    "BUILTIN_METHOD_MODULES",
    "METHODS",
    "Method",
    "MethodContext",
    "PreparedIds",
    "StepOutput",
    "build_method",
    "check_method_params",
    "method_class",
    "register_method",
]
