"""Tokenizer kinds (``tokenizer.kind``): one ``TokenizerSpec`` per kind, in one registry.

A kind's spec is everything the pipeline knows about it:

- its own params, ``tokenizer.kind_params``: ``param_defaults`` (the names, their defaults and,
  through the defaults, their types) and ``check_values`` (ranges). An unknown key is a
  ParamError naming ``tokenizer.kind_params.<key>``. The params every kind shares (levels,
  codebook size, the training schedule, the kept tokenizers, device, seed) stay in ``tokenizer``
  itself (``config.TokenizerParams``);
- ``fit``: what the train-tokenizer stage runs: item vectors + params -> the kept tokenizer files
  (``<tokenizer_dir>/kept/*.pt``) and ``<reports_dir>/{history.csv,metrics.json}``; returns the
  metrics.json summary. By default the function named ``fit_function`` ("module:function");
- ``from_state``: a kept file's state dict -> its tokenizer (``training.load_tokenizer``; the
  state's ``"kind"`` entry names the spec). By default ``from_state`` of the class named
  ``tokenizer_class`` ("module:Class");
- ``seed_runs``: whether ``tokenizer.kept_from: seeds`` (independently seeded runs) is possible;
- ``legacy_params``: the flat ``tokenizer.<key>`` names its params had before ``kind_params``
  existed; params files and ``-S`` overrides that use them keep working (``split_legacy_params``,
  ``merge_legacy_params``), and digests of resolved params keep that shape (``flat_params``).

What the runtime tokenizer (``runtime.RuntimeItemTokenizer``, BLOGER) trains is the tokenizer's
own ``trainable_module()`` (``base.SemanticTokenizer``; None for kinds with hard IDs only).

Adding a kind ``mykind``: a module ``kinds/mykind.py`` with its spec, and ``"mykind"`` in
``BUILTIN_TOKENIZER_MODULES``:

    @register_tokenizer("mykind")
    class MyKindSpec(TokenizerSpec):
        param_defaults = {"alpha": 0.5}  # tokenizer.kind_params.alpha
        fit_function = "genrec_core.tokenizers.mykind:fit"
        tokenizer_class = "genrec_core.tokenizers.mykind:MyKindTokenizer"

The tokenizer is a ``base.SemanticTokenizer`` whose ``state()`` has ``"kind": "mykind"``; ``fit``
has the signature of ``TokenizerSpec.fit`` (``resolved_kind_params(tp)`` gives its params; a kind
without epochs writes its files with ``training.write_one_shot``). Keep the spec module light (no
torch, nothing heavy imported even inside a function): every command imports the specs to
validate its params, and dvc.yaml declares them as code of every stage; the "module:name" strings
are imported only when a run or a load needs them. A kind whose code is light may instead
override ``fit`` and ``from_state`` in the spec itself (tests/test_tokenizer_spec.py's toy kind).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genrec_core.errors import ParamError
from genrec_core.param_checks import check_param_dict
from genrec_core.registry import registrar

# ``tp: Any`` below is a config.TokenizerParams (not imported: config imports this module)
if TYPE_CHECKING:
    import numpy as np

    from genrec_core.tokenizers.base import SemanticTokenizer

#: Modules of ``genrec_core.tokenizers.kinds`` whose import registers the built-in kinds.
BUILTIN_TOKENIZER_MODULES = ("rqvae", "pq", "rqkmeans")

PREFIX = "tokenizer.kind_params"


def check(cond: bool, param: str, message: str) -> None:
    """A ParamError naming ``param`` unless ``cond`` (for ``check_values``)."""
    if not cond:
        raise ParamError(param, message)


class TokenizerSpec:
    """One tokenizer kind (see the module doc). Subclasses are stateless; ``tokenizer_spec``
    hands out an instance."""

    name: str = ""  # set by @register_tokenizer
    #: the kind's own params (``tokenizer.kind_params``) and their defaults
    param_defaults: dict[str, Any] = {}
    #: old flat name ``tokenizer.<old>`` -> its name in ``param_defaults``
    legacy_params: dict[str, str] = {}
    #: ``tokenizer.kept_from: seeds`` possible (``fit`` then trains one run per seed)
    seed_runs: bool = False
    #: "module:function" that ``fit`` calls (the same signature)
    fit_function: str = ""
    #: "module:Class" whose ``from_state`` rebuilds a kept file (a ``base.SemanticTokenizer``)
    tokenizer_class: str = ""

    def check_params(self, given: dict[str, Any] | None, prefix: str = PREFIX) -> dict[str, Any]:
        """The defaults updated with ``given``, type- and range-checked (errors name ``<prefix>.<key>``)."""
        out = check_param_dict(copy.deepcopy(self.param_defaults), given, prefix, f"tokenizer kind {self.name!r}")
        self.check_values(out, prefix)
        return out

    def check_values(self, params: dict[str, Any], prefix: str) -> None:
        """Range checks of the resolved params (the types are checked already); none by default."""

    def fit(
        self,
        vectors: np.ndarray,
        tp: Any,
        tokenizer_dir: str | Path,
        reports_dir: str | Path,
        *,
        item_ids: np.ndarray | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train on ``vectors`` [N, D] (float32, rows in ``item_ids`` order) with ``tp``
        (``codebook_size`` already resolved to an int); write the kept tokenizers and reports;
        return the metrics.json summary."""
        return _named(self.fit_function, self.name, "fit_function")(vectors, tp, tokenizer_dir, reports_dir, item_ids=item_ids, progress=progress)

    def from_state(self, state: dict[str, Any], device: str = "cpu") -> SemanticTokenizer:
        """The tokenizer a kept file holds (``state``: what its ``state()`` wrote)."""
        return _named(self.tokenizer_class, self.name, "tokenizer_class").from_state(state, device)


def _named(target: str, kind: str, attribute: str) -> Callable[..., Any]:
    """The object a "module:name" string names, imported now (a spec module stays light)."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise NotImplementedError(f'tokenizer kind {kind!r}: set {attribute} ("module:name") or override the method')
    return getattr(importlib.import_module(module), name)


TOKENIZERS: dict[str, type[TokenizerSpec]] = {}

#: Class decorator: make a spec available as ``tokenizer.kind: <name>``.
register_tokenizer = registrar(TOKENIZERS, "tokenizer kind")


def _import_builtins() -> None:
    for module in BUILTIN_TOKENIZER_MODULES:
        importlib.import_module(f"genrec_core.tokenizers.kinds.{module}")


def tokenizer_kinds() -> list[str]:
    """Every registered kind, sorted."""
    _import_builtins()
    return sorted(TOKENIZERS)


def tokenizer_spec(kind: str, param: str = "tokenizer.kind") -> TokenizerSpec:
    """The spec registered as ``kind``; an unknown kind is a ParamError naming ``param``."""
    _import_builtins()
    if not isinstance(kind, str) or kind not in TOKENIZERS:
        raise ParamError(param, f"unknown tokenizer kind {kind!r}; choose one of {', '.join(sorted(TOKENIZERS))}")
    return TOKENIZERS[kind]()


def resolved_kind_params(tp: Any, kind: str | None = None) -> dict[str, Any]:
    """``tp.kind``'s own params: its defaults updated with ``tp.kind_params``, checked. ``kind``:
    the kind the caller implements (``train_pq`` ...): params of another kind are a ValueError."""
    if kind is not None and tp.kind != kind:
        raise ValueError(f"tokenizer params of kind {tp.kind!r} given to the {kind!r} tokenizer")
    return tokenizer_spec(tp.kind).check_params(tp.kind_params)


# --------------------------------------------------------------------------- the old flat names


def _legacy_owners() -> dict[str, list[tuple[TokenizerSpec, str]]]:
    """Old flat name -> [(a kind that has it, its name there)], in registration order."""
    _import_builtins()
    owners: dict[str, list[tuple[TokenizerSpec, str]]] = {}
    for cls in TOKENIZERS.values():
        for old, new in cls.legacy_params.items():
            owners.setdefault(old, []).append((cls(), new))
    return owners


def split_legacy_params(section: Any) -> dict[str, Any]:
    """Pop the old flat kind params (``latent_dim``, ``rqkmeans_normalize``, ...) out of a raw
    ``tokenizer`` section (in place) and return them."""
    if not isinstance(section, dict):
        return {}
    owners = _legacy_owners()
    return {key: section.pop(key) for key in list(section) if key in owners}


def _checked(spec: TokenizerSpec, params: dict[str, Any], origin: dict[str, str]) -> None:
    """``spec.check_params(params)``; an error on a key given by its old name names that name."""
    try:
        spec.check_params(params)
    except ParamError as err:
        new = err.param.removeprefix(PREFIX + ".")
        if new not in origin:
            raise
        message = str(err).removeprefix(f"param {err.param}: ")
        raise ParamError(f"tokenizer.{origin[new]}", f"{message} (its new name: {PREFIX}.{new})") from None


def merge_legacy_params(
    section: dict[str, Any], from_file: dict[str, Any], from_overrides: dict[str, Any], file_kind_params: dict[str, Any], default_kind: str
) -> None:
    """Move the old flat kind params (split off before and after the overrides were applied) into
    ``section["kind_params"]``, in place, for the section's kind (``default_kind`` when unset):

    - a param the kind does not have configured another kind (the old section listed every
      kind's params flat, and old params files still do): it is checked against the kind that
      has it, as it always was, and dropped;
    - a file's old name fills ``kind_params`` unless the key is there: the same value from the
      file is fine, another one a ParamError naming both; an override of ``kind_params.<key>`` wins;
    - an override's old name wins over the file (as any override does); an override of
      ``kind_params.<key>`` to another value as well is a ParamError.

    A bad value is a ParamError naming the old name the user wrote."""
    if not (from_file or from_overrides):
        return
    kind = section.get("kind", default_kind)
    spec = tokenizer_spec(kind)
    given = section.get("kind_params")
    if given is not None and not isinstance(given, dict):
        raise ParamError("tokenizer.kind_params", f"expected dict, got {given!r}")
    given = dict(given or {})
    overridden = {key for key, value in given.items() if key not in file_kind_params or file_kind_params[key] != value}
    merged = dict(given)
    owners = _legacy_owners()
    origin: dict[str, str] = {}
    for layer, legacy in (("file", from_file), ("override", from_overrides)):
        for old, value in legacy.items():
            new = spec.legacy_params.get(old)
            if new is None:  # another kind's param
                owner, owner_name = owners[old][0]
                _checked(owner, {owner_name: value}, {owner_name: old})
                continue
            if layer == "file":
                if new in file_kind_params and file_kind_params[new] != value:
                    raise ParamError(
                        f"tokenizer.{old}", f"given as {value!r} and as {PREFIX}.{new} (its new name) = {file_kind_params[new]!r}; keep only {PREFIX}.{new}"
                    )
                if new in given:  # the file's kind_params (the same value) or an override of it
                    continue
            elif new in overridden and given[new] != value:
                raise ParamError(f"tokenizer.{old}", f"overridden as {value!r} and as {PREFIX}.{new} (its new name) = {given[new]!r}; set only {PREFIX}.{new}")
            merged[new] = value
            origin[new] = old
    section["kind_params"] = merged
    _checked(spec, merged, origin)


def own_flat_params(tp: Any) -> dict[str, Any]:
    """The shared params (all but ``kind_params``) and the kind's own resolved params under their
    old flat names: the identity of a training run of this kind (``training.params_hash``; for
    rqvae exactly the dict hashed before ``kind_params`` existed, so its checkpoints resume)."""
    spec = tokenizer_spec(tp.kind)
    out = {f.name: copy.deepcopy(getattr(tp, f.name)) for f in dataclasses.fields(tp) if f.name != "kind_params"}
    old_name = {new: old for old, new in spec.legacy_params.items()}
    for key, value in spec.check_params(tp.kind_params).items():
        out[old_name.get(key, key)] = value
    return out


def flat_params(tp: Any) -> dict[str, Any]:
    """``tp`` in the flat shape of the tokenizer section before ``kind_params``: ``own_flat_params``
    plus every other old flat name at its old default. Digests of resolved params (a finished
    workspace's reuse key, results tables) computed from it match those of the old shape."""
    out = own_flat_params(tp)
    for old, kinds in _legacy_owners().items():
        owner, name = kinds[0]
        out.setdefault(old, copy.deepcopy(owner.param_defaults[name]))
    return out


__all__ = [
    "BUILTIN_TOKENIZER_MODULES",
    "TOKENIZERS",
    "TokenizerSpec",
    "check",
    "flat_params",
    "merge_legacy_params",
    "own_flat_params",
    "register_tokenizer",
    "resolved_kind_params",
    "split_legacy_params",
    "tokenizer_kinds",
    "tokenizer_spec",
]
