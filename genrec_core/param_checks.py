"""Type checks of free-form params dicts (``recommender.loss_params``, ``method_params``,
``tokenizer.kind_params``) against the defaults their owner declares.

A module of its own (not config.py) so that registries config.py reads at validation time (the
tokenizer kinds) can use it without importing config.py back.
"""

from __future__ import annotations

from typing import Any

from genrec_core.errors import ParamError


def check_param_dict(defaults: dict[str, Any], given: dict[str, Any] | None, prefix: str, owner: str) -> dict[str, Any]:
    """``defaults`` updated with ``given``, each value type-checked against its default (ints are
    accepted for floats; a default of None accepts anything). A key not in ``defaults`` or a value
    of the wrong type is a ParamError naming ``<prefix>.<key>``; ``owner`` (e.g. "loss 'pos'")
    says whose params these are."""
    out = dict(defaults)
    for key, value in (given or {}).items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ParamError(f"{prefix}.{key}", f"unknown param for {owner}; known: {known}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif default is None:
            ok = True
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ParamError(f"{prefix}.{key}", f"expected {type(default).__name__}, got {value!r}")
        out[key] = value
    return out
