"""Token-weighted training losses (SPEC section 6): one interface, one registry.

Every loss of SPEC 6 is a weighted NLL over the target's L tokens (plus eos):
``-sum_i w_i log P(y_i | y_<i, x)``, with the weights of one target normalised to sum L. A loss is
therefore a small ``LossStrategy`` subclass that mostly says how to weight tokens
(``token_weights``); the shared ``weighted_nll`` does the normalisation and the eos handling,
so the losses stay comparable. Hooks cover the rest of SPEC 6:

- ``extra_forward_needed`` + ``extra_inputs``: a second forward pass (CFT's counterfactual input
  with the history removed); the trainer runs it and passes ``extra_logits``;
- learnable parameters (multi_target's lambdas): a strategy is an ``nn.Module``, the trainer adds
  ``strategy.parameters()`` to the optimiser and saves ``state_dict()`` in checkpoints;
- ``on_step(step, total_steps)``: curricula that change with the optimiser step;
- ``setup(context)``: statistics of the training data (item frequencies, embeddings) computed once.

Losses are looked up by ``recommender.loss``; ``recommender.loss_params`` is checked against the
strategy's ``param_defaults`` (an unknown key is a ParamError naming
``recommender.loss_params.<key>``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec_core.errors import ParamError
from genrec_core.recommender.vocab import EOS, PAD, SemanticIdVocab

EOS_MODES = ("include", "exclude")


@dataclass
class LossContext:
    """What a loss may need from the data, gathered once by the train stage."""

    vocab: SemanticIdVocab
    item_tokens: torch.Tensor  # [N, L] token ids of the training tokenizer
    target_counts: np.ndarray | None = None  # [N] item frequency among training targets
    item_vectors: Callable[[], np.ndarray] | None = None  # lazy [N, D] item embeddings (front_greater)
    total_steps: int = 0

    @property
    def id_length(self) -> int:
        return int(self.item_tokens.shape[1])


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to back-propagate
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)  # extra values logged as train/<key> every log_every steps


def normalise_weights(code_weights: torch.Tensor) -> torch.Tensor:
    """Scale each row of [B, L] non-negative code-token weights to sum L (uniform if a row is all 0)."""
    length_l = code_weights.shape[1]
    total = code_weights.sum(dim=1, keepdim=True)
    uniform = torch.ones_like(code_weights)
    return torch.where(total > 0, code_weights * (length_l / total.clamp_min(1e-12)), uniform)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, T] negative log-likelihood of each label (fp32 log-softmax, also under bf16 autocast)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)


def weighted_nll(logits: torch.Tensor, labels: torch.Tensor, code_weights: torch.Tensor, eos: str = "include") -> torch.Tensor:
    """Mean over targets of ``sum_i w_i nll_i / (L + w_eos)``, code weights normalised to sum L.

    ``labels`` [B, L + 1] ends with eos; ``code_weights`` [B, L] covers the code tokens. eos gets
    weight 1 (``include``) or 0 (``exclude``). Dividing by ``L + w_eos`` makes ``ce`` equal to the
    usual token-mean cross-entropy, so loss values stay comparable across strategies.
    """
    if eos not in EOS_MODES:
        raise ValueError(f"eos must be one of {EOS_MODES}, got {eos!r}")
    length_l = labels.shape[1] - 1
    if code_weights.shape != (labels.shape[0], length_l):
        raise ValueError(f"code_weights must be [B, L] = {(labels.shape[0], length_l)}, got {tuple(code_weights.shape)}")
    eos_w = 1.0 if eos == "include" else 0.0
    w = torch.cat([normalise_weights(code_weights.float()), torch.full_like(code_weights[:, :1], eos_w, dtype=torch.float32)], dim=1)
    w = w * (labels != PAD).float()  # padded label positions (never produced here) carry no weight
    nll = token_nll(logits, labels)
    return ((w * nll).sum(dim=1) / (length_l + eos_w)).mean()


# --------------------------------------------------------------------------- interface


class LossStrategy(nn.Module):
    """Base class: a token-weighted NLL; subclasses override ``token_weights`` (and maybe more).

    ``param_defaults`` lists every accepted ``loss_params`` key with its default; values keep the
    default's type (ints accepted for floats).
    """

    name: ClassVar[str] = ""
    param_defaults: ClassVar[dict[str, Any]] = {"eos": "include"}
    extra_forward_needed: ClassVar[bool] = False

    def __init__(self, context: LossContext, **params: Any):
        super().__init__()
        self.id_length = context.id_length
        self.params = params
        self.eos = params["eos"]
        self.step = 0
        self.total_steps = context.total_steps

    # --- construction
    @classmethod
    def check_params(cls, loss_params: dict[str, Any], prefix: str = "recommender.loss_params") -> dict[str, Any]:
        """Fill defaults and type-check; raise ParamError naming the offending key."""
        out = dict(cls.param_defaults)
        for key, value in (loss_params or {}).items():
            if key not in cls.param_defaults:
                known = ", ".join(sorted(cls.param_defaults)) or "none"
                raise ParamError(f"{prefix}.{key}", f"unknown param for loss {cls.name!r}; known: {known}")
            default = cls.param_defaults[key]
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
        if out.get("eos") not in EOS_MODES:
            raise ParamError(f"{prefix}.eos", f"must be one of {', '.join(EOS_MODES)}, got {out.get('eos')!r}")
        cls.validate_params(out, prefix)
        return out

    @classmethod
    def validate_params(cls, params: dict[str, Any], prefix: str) -> None:
        """Value checks of a subclass (ranges); raise ParamError."""

    def setup(self, context: LossContext) -> None:
        """Precompute statistics from the training data (called once, before training)."""

    # --- per step
    def token_weights(self, labels: torch.Tensor, batch: Any, state: Any = None) -> torch.Tensor:
        """[B, L] unnormalised non-negative weights of the target's code tokens (ce: all 1)."""
        return torch.ones(labels.shape[0], labels.shape[1] - 1, device=labels.device)

    def extra_inputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs of the extra forward pass; default: the counterfactual input (history removed, eos only)."""
        ids = batch.input_ids[:, :1].clone()
        ids.zero_()
        if ids.dim() == 2:
            ids[:, 0] = EOS
        else:
            ids[:, 0, 0] = EOS
        return ids, torch.ones(ids.shape[0], 1, dtype=batch.attention_mask.dtype, device=ids.device)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, batch: Any = None, state: Any = None, extra_logits: torch.Tensor | None = None) -> LossOutput:
        weights = self.token_weights(labels, batch, state)
        return LossOutput(weighted_nll(logits, labels, weights, self.eos))

    def on_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (curricula read ``self.step``)."""
        self.step = int(step)
        self.total_steps = int(total_steps)

    # --- checkpointing of non-tensor state (tensors/parameters go through state_dict)
    def get_extra_state(self) -> dict[str, Any]:
        return {"step": self.step, "total_steps": self.total_steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.total_steps = int(state.get("total_steps", self.total_steps))


LOSSES: dict[str, type[LossStrategy]] = {}


def register_loss(name: str) -> Callable[[type[LossStrategy]], type[LossStrategy]]:
    """Class decorator: make a strategy available as ``recommender.loss: <name>``."""

    def deco(cls: type[LossStrategy]) -> type[LossStrategy]:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return deco


def build_loss(name: str, loss_params: dict[str, Any] | None, context: LossContext) -> LossStrategy:
    """The strategy ``name`` with validated params, set up on the training data."""
    if name not in LOSSES:
        raise ParamError("recommender.loss", f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    cls = LOSSES[name]
    strategy = cls(context, **cls.check_params(loss_params or {}))
    strategy.setup(context)
    return strategy


def check_loss_params(name: str, loss_params: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``recommender.loss`` and its params without data (fail fast at stage start)."""
    if name not in LOSSES:
        raise ParamError("recommender.loss", f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    return LOSSES[name].check_params(loss_params or {})


# --------------------------------------------------------------------------- strategies


@register_loss("ce")
class CrossEntropyLoss(LossStrategy):
    """TIGER: every token weight 1 (the plain token-mean cross-entropy)."""
