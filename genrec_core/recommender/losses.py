"""Token-weighted training losses (SPEC section 6): one interface, one registry.

Every loss of SPEC 6 is a weighted NLL over the target's L tokens (plus eos):
``-sum_i w_i log P(y_i | y_<i, x)``, with the weights of one target normalised to sum L. A loss is
therefore a small ``LossStrategy`` subclass that mostly says how to weight tokens
(``token_weights``); the shared ``weighted_nll`` does the normalisation and the eos handling,
so the losses stay comparable. Hooks cover the rest of SPEC 6:

- ``extra_forward_needed`` + ``extra_inputs``: a second forward pass (CFT's counterfactual input
  with the history removed); the training method (``genrec_core.methods.plain``) runs it and
  passes ``extra_logits``;
- learnable parameters (multi_target's lambdas): a strategy is an ``nn.Module``, the method adds
  ``strategy.parameters()`` to the optimiser and saves ``state_dict()`` in checkpoints;
- ``on_step(step, total_steps)``: curricula that change with the optimiser step;
- ``setup(context)``: statistics of the training data (item frequencies, embeddings) computed once.

A strategy returns ``LossOutput``: the scalar to back-propagate, plus its named terms per example
(``terms``: name -> [B], e.g. ``ce``; ``normal``/``causal`` for cft; ``fg``/``fr``/``or`` for the
mixtures) and each example's total (``per_example``), so a method can take gradients of any term
over any subset of a batch. The scalar is computed exactly as before the terms existed.

Registered: ``ce``, ``pos``, ``cft``, ``rank``, ``igd``, ``front_greater``, ``frequency`` (one
weighting each), and the mixtures ``sum_j alpha_j L_j`` over {fg, fr, or} computed from one
log-softmax (``MixtureLoss``): ``fg_to_ce`` and ``fg_ce_fr`` (paper 001 Table 4's linear
schedules, ``linear_path``), ``multi_target`` (learnable lambdas) and ``curriculum`` (``e^{-ct}``,
``curriculum_rate``). Data-derived weights come from ``token_weights.py``; mixtures log
``alpha_<j>``/``loss_<j>`` (and ``curriculum``) in ``LossOutput.logs`` every step.

Losses are looked up by ``recommender.loss``; ``recommender.loss_params`` is checked against the
strategy's ``param_defaults`` (an unknown key is a ParamError naming
``recommender.loss_params.<key>``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec_core.config import check_param_dict
from genrec_core.errors import ParamError
from genrec_core.recommender.vocab import EOS, MASKED_LOGIT, PAD, SemanticIdVocab
from genrec_core.registry import registrar

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
    # The named losses it is made of, per example ([B], with gradients), so a caller can back-propagate
    # any of them over any subset of the batch (MTGRec: per tokenizer group; BLOGER: per level).
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    per_example: torch.Tensor | None = None  # [B] each example's total: ``loss`` is its mean (up to float rounding)


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
    return weighted_mean_nll(token_nll(logits, labels), labels, code_weights, eos)


def weighted_mean_nll(nll: torch.Tensor, labels: torch.Tensor, code_weights: torch.Tensor, eos: str = "include") -> torch.Tensor:
    """``weighted_nll`` from precomputed ``token_nll`` [B, L + 1] (several weightings, one log-softmax)."""
    return per_example_nll(nll, labels, code_weights, eos).mean()


def per_example_nll(nll: torch.Tensor, labels: torch.Tensor, code_weights: torch.Tensor, eos: str = "include") -> torch.Tensor:
    """[B] each target's ``sum_i w_i nll_i / (L + w_eos)`` (``weighted_mean_nll`` is its mean)."""
    if eos not in EOS_MODES:
        raise ValueError(f"eos must be one of {EOS_MODES}, got {eos!r}")
    length_l = labels.shape[1] - 1
    if code_weights.shape != (labels.shape[0], length_l):
        raise ValueError(f"code_weights must be [B, L] = {(labels.shape[0], length_l)}, got {tuple(code_weights.shape)}")
    eos_w = 1.0 if eos == "include" else 0.0
    w = torch.cat([normalise_weights(code_weights.float()), torch.full_like(code_weights[:, :1], eos_w, dtype=torch.float32)], dim=1)
    w = w * (labels != PAD).float()  # padded label positions (never produced here) carry no weight
    return (w * nll).sum(dim=1) / (length_l + eos_w)


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
        out = check_param_dict(cls.param_defaults, loss_params, prefix, f"loss {cls.name!r}")
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
        return self.single(per_example_nll(token_nll(logits, labels), labels, weights, self.eos))

    def single(self, per_example: torch.Tensor) -> LossOutput:
        """The output of a loss with one term: per-example values [B] named after the strategy, and their mean."""
        return LossOutput(per_example.mean(), terms={self.name or "loss": per_example}, per_example=per_example)

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


#: Class decorator: make a strategy available as ``recommender.loss: <name>``.
register_loss = registrar(LOSSES, "loss")


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


# --------------------------------------------------------------------------- shared pieces
# Weight sources computed once from the data (token_weights.py) and looked up per batch, and the
# schedules; every strategy below is a combination of these and the one weighted-NLL path.

OBJECTIVES = ("fg", "fr", "or")  # front_greater, frequency, original (plain) cross-entropy
LAMBDA_PARAMS = ("exp", "softplus")
REGULARISERS = ("none", "uncertainty")
DEFAULT_HALF_LIFE = 0.2  # curriculum half-life as a fraction of training (paper: c=2e-5 at ~2e5 steps ~ 0.17)


def position_weights(length_l: int, beta_pos: float) -> torch.Tensor:
    """CFT's linear decay ``w_p = 1 - (p - 1)(1 - beta_pos)/(L - 1)``, p = 1..L ([L]; L = 1: [1])."""
    if length_l == 1:
        return torch.ones(1)
    p = torch.arange(length_l, dtype=torch.float32)
    return 1.0 - p * (1.0 - beta_pos) / (length_l - 1)


def _codes(context: LossContext) -> np.ndarray:
    return context.vocab.tokens_to_codes(context.item_tokens.cpu().numpy())


def _item_counts(context: LossContext, loss: str) -> np.ndarray:
    if context.target_counts is None:
        raise ValueError(f"loss {loss!r} needs LossContext.target_counts (item frequency among training targets)")
    counts = np.asarray(context.target_counts)
    if counts.shape != (context.item_tokens.shape[0],):
        raise ValueError(f"target_counts must be [N={context.item_tokens.shape[0]}], got shape {counts.shape}")
    return counts


def front_greater_level_weights(context: LossContext, variant: str) -> torch.Tensor:
    """[L] Front-Greater weights (sum L) from the item embeddings and the training tokenizer's IDs."""
    from genrec_core.recommender import token_weights as tw

    if context.item_vectors is None:
        raise ValueError("front_greater needs LossContext.item_vectors (the item embeddings)")
    vectors = np.asarray(context.item_vectors())
    mu = tw.front_greater_dispersion(vectors, _codes(context), variant)
    return torch.as_tensor(tw.front_greater_weights(mu, variant), dtype=torch.float32)


def frequency_token_table(context: LossContext, beta: float) -> torch.Tensor:
    """[vocab] ``1/E_n`` of every code token (n = its count at its level among training targets); pad/eos 1."""
    from genrec_core.recommender import token_weights as tw

    vocab = context.vocab
    counts = tw.level_token_counts(_codes(context), _item_counts(context, "frequency"), vocab.level_sizes)
    table = torch.ones(vocab.size, dtype=torch.float32)
    for level, offset in enumerate(vocab.level_offsets.tolist()):
        table[offset : offset + vocab.level_sizes[level]] = torch.as_tensor(tw.frequency_weights(counts[level], beta), dtype=torch.float32)
    return table


def id_keys(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """One int64 key per row of token ids [..., L] (base-``vocab_size`` number)."""
    if vocab_size ** tokens.shape[-1] >= 2**63:
        raise ValueError(f"IDs of length {tokens.shape[-1]} over a vocabulary of {vocab_size} do not fit an int64 key")
    base = vocab_size ** torch.arange(tokens.shape[-1] - 1, -1, -1, dtype=torch.int64, device=tokens.device)
    return (tokens.long() * base).sum(dim=-1)


def lookup_token_table(table: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, L] weights of the code labels (labels [B, L + 1] end with eos) from a [vocab] table."""
    return table[labels[:, :-1].clamp_min(0)]


def lookup_id_table(keys: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, L] per-ID weights (rows of ``weights`` [N, L], ``keys`` sorted) of each target's ID;
    a target not in the table (e.g. another tokenizer's ID) gets weights 1."""
    q = id_keys(labels[:, :-1], vocab_size)
    pos = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
    found = keys[pos] == q
    return torch.where(found.unsqueeze(1), weights[pos], torch.ones_like(weights[pos]))


def training_progress(step: int, total_steps: int, end: float = 1.0) -> float:
    """``step / (end * total_steps)`` clipped to [0, 1] (0 when the length is unknown)."""
    span = end * total_steps
    return 0.0 if span <= 0 else min(1.0, max(0.0, step / span))


def linear_path(progress: float, names: tuple[str, ...]) -> dict[str, float]:
    """Piecewise-linear walk over one-hot mixtures ``names[0] -> names[1] -> ...`` (equal legs)."""
    x = progress * (len(names) - 1)
    i = min(int(x), len(names) - 2) if len(names) > 1 else 0
    frac = x - i
    out = dict.fromkeys(names, 0.0)
    if len(names) == 1:
        out[names[0]] = 1.0
        return out
    out[names[i]] += 1.0 - frac
    out[names[i + 1]] += frac
    return out


def curriculum_rate(c: float | None, half_life: float | None, total_steps: int) -> float:
    """c of ``e^{-ct}``: given directly, or ``ln 2 / (half_life * total_steps)`` (same shape at any run length)."""
    if c is not None:
        return float(c)
    h = DEFAULT_HALF_LIFE if half_life is None else float(half_life)
    return 0.0 if total_steps <= 0 else math.log(2.0) / (h * total_steps)


def _check_range(params: dict[str, Any], key: str, prefix: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
    v = params[key]
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ParamError(f"{prefix}.{key}", f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v}")


def _check_choice(params: dict[str, Any], key: str, prefix: str, choices: tuple[str, ...]) -> None:
    if params[key] not in choices:
        raise ParamError(f"{prefix}.{key}", f"must be one of {', '.join(choices)}, got {params[key]!r}")


def _check_optional_positive(params: dict[str, Any], key: str, prefix: str) -> None:
    v = params[key]
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ParamError(f"{prefix}.{key}", f"must be a positive number or null, got {v!r}")
    params[key] = float(v)


# --------------------------------------------------------------------------- single weightings


@register_loss("pos")
class PositionLoss(LossStrategy):
    """CFT's positional weighting: linear decay from 1 (first token) to ``beta_pos`` (last)."""

    param_defaults = {"eos": "include", "beta_pos": 0.5}

    @classmethod
    def validate_params(cls, params, prefix):
        _check_range(params, "beta_pos", prefix, 0.0, 1.0)

    def token_weights(self, labels, batch=None, state=None):
        w = position_weights(labels.shape[1] - 1, self.params["beta_pos"]).to(labels.device)
        return w.expand(labels.shape[0], -1)


@register_loss("cft")
class CounterfactualLoss(PositionLoss):
    """CFT (Zhang et al. 2024): pos-weighted CE plus ``alpha`` x the same weighted CE on
    ``logits(x) - logits(x_cf)``, x_cf = the input with the history removed (eos only; the
    trainer runs that extra forward pass from ``extra_inputs``)."""

    param_defaults = {"eos": "include", "beta_pos": 0.5, "alpha": 0.1, "detach_counterfactual": False}
    extra_forward_needed = True

    @classmethod
    def validate_params(cls, params, prefix):
        super().validate_params(params, prefix)
        _check_range(params, "alpha", prefix, 0.0, math.inf)

    def forward(self, logits, labels, batch=None, state=None, extra_logits=None):
        if extra_logits is None:
            raise ValueError("cft needs the counterfactual logits (extra_logits) of the input without history")
        w = self.token_weights(labels, batch, state)
        cf = extra_logits.detach() if self.params["detach_counterfactual"] else extra_logits
        per_n = per_example_nll(token_nll(logits, labels), labels, w, self.eos)
        loss_n = per_n.mean()
        diff = logits.float() - cf.float()
        # under level_softmax both logits are MASKED_LOGIT outside the step's level: keep those masked
        diff = torch.where(logits.float() <= MASKED_LOGIT / 2, logits.float(), diff)
        per_c = per_example_nll(token_nll(diff, labels), labels, w, self.eos)
        loss_c = per_c.mean()
        alpha = self.params["alpha"]
        logs = {"loss_normal": loss_n.detach(), "loss_causal": loss_c.detach()}
        return LossOutput(loss_n + alpha * loss_c, logs, terms={"normal": per_n, "causal": per_c}, per_example=per_n + alpha * per_c)


@register_loss("rank")
class RankingLoss(LossStrategy):
    """LETTER's ranking-guided loss: CE on ``logits / tau`` (tau < 1 sharpens toward hard negatives)."""

    param_defaults = {"eos": "include", "tau": 0.6}

    @classmethod
    def validate_params(cls, params, prefix):
        _check_range(params, "tau", prefix, 0.0, math.inf, lo_open=True)

    def forward(self, logits, labels, batch=None, state=None, extra_logits=None):
        return self.single(per_example_nll(token_nll(logits / self.params["tau"], labels), labels, self.token_weights(labels, batch, state), self.eos))


@register_loss("igd")
class InformationGainLoss(LossStrategy):
    """IGD (Lin et al. 2025): tokens whose information gain in the frequency-weighted trie of
    training targets is zero get ``beta_igd``, the others 1 (per item ID)."""

    param_defaults = {"eos": "include", "beta_igd": 0.1}

    @classmethod
    def validate_params(cls, params, prefix):
        _check_range(params, "beta_igd", prefix, 0.0, 1.0)

    def setup(self, context):
        from genrec_core.recommender import token_weights as tw

        gains = tw.igd_gains(_codes(context), _item_counts(context, "igd"))
        keys = id_keys(context.item_tokens, context.vocab.size)
        order = torch.argsort(keys)
        self.vocab_size = context.vocab.size
        self.register_buffer("id_keys", keys[order], persistent=False)
        self.register_buffer("id_weights", torch.as_tensor(tw.igd_weights(gains, self.params["beta_igd"]), dtype=torch.float32)[order], persistent=False)

    def token_weights(self, labels, batch=None, state=None):
        return lookup_id_table(self.id_keys, self.id_weights, labels, self.vocab_size)


@register_loss("front_greater")
class FrontGreaterLoss(LossStrategy):
    """Paper 001 Front-Greater weighting: one weight per level from the drop in expected
    within-prefix-group dispersion of the item embeddings (``variant: released`` = the authors' code)."""

    param_defaults = {"eos": "include", "variant": "paper"}

    @classmethod
    def validate_params(cls, params, prefix):
        from genrec_core.recommender.token_weights import FG_VARIANTS

        _check_choice(params, "variant", prefix, FG_VARIANTS)

    def setup(self, context):
        self.register_buffer("level_weights", front_greater_level_weights(context, self.params["variant"]), persistent=False)

    def token_weights(self, labels, batch=None, state=None):
        return self.level_weights.to(labels.device).expand(labels.shape[0], -1)


@register_loss("frequency")
class FrequencyLoss(LossStrategy):
    """Paper 001 Frequency weighting: ``1/E_n``, n = the token's count at its level among training
    targets, ``E_n = (1 - beta^n)/(1 - beta)``, beta = 0.99; normalised per target to sum L."""

    param_defaults = {"eos": "include", "beta": 0.99}

    @classmethod
    def validate_params(cls, params, prefix):
        _check_range(params, "beta", prefix, 0.0, 1.0, lo_open=True, hi_open=True)

    def setup(self, context):
        self.register_buffer("token_table", frequency_token_table(context, self.params["beta"]), persistent=False)

    def token_weights(self, labels, batch=None, state=None):
        return lookup_token_table(self.token_table, labels)


# --------------------------------------------------------------------------- mixtures of objectives


class MixtureLoss(LossStrategy):
    """``sum_j alpha_j L_j`` over objectives j in {fg, fr, or}, each L_j the shared weighted NLL
    (one log-softmax for all). Subclasses give the mixing weights (``mixture``); logs carry
    ``alpha_<j>`` and ``loss_<j>`` every step."""

    param_defaults = {"eos": "include", "fg_variant": "paper", "fr_beta": 0.99}
    objective_names: tuple[str, ...] = OBJECTIVES

    @classmethod
    def validate_params(cls, params, prefix):
        from genrec_core.recommender.token_weights import FG_VARIANTS

        _check_choice(params, "fg_variant", prefix, FG_VARIANTS)
        _check_range(params, "fr_beta", prefix, 0.0, 1.0, lo_open=True, hi_open=True)

    def setup(self, context):
        if "fg" in self.objective_names:
            self.register_buffer("fg_weights", front_greater_level_weights(context, self.params["fg_variant"]), persistent=False)
        if "fr" in self.objective_names:
            self.register_buffer("fr_table", frequency_token_table(context, self.params["fr_beta"]), persistent=False)

    def objective_weights(self, name: str, labels: torch.Tensor) -> torch.Tensor:
        if name == "fg":
            return self.fg_weights.to(labels.device).expand(labels.shape[0], -1)
        if name == "fr":
            return lookup_token_table(self.fr_table, labels)
        return torch.ones(labels.shape[0], labels.shape[1] - 1, device=labels.device)

    def mixture(self) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor | None]:
        """(alphas [J] on the simplex, extra logs, regulariser or None)."""
        raise NotImplementedError

    def forward(self, logits, labels, batch=None, state=None, extra_logits=None):
        nll = token_nll(logits, labels)
        per = [per_example_nll(nll, labels, self.objective_weights(n, labels), self.eos) for n in self.objective_names]
        losses = torch.stack([p.mean() for p in per])
        alphas, logs, reg = self.mixture()
        alphas = alphas.to(losses.device)
        loss = (alphas * losses).sum()
        per_example = (alphas.unsqueeze(1) * torch.stack(per)).sum(dim=0)
        if reg is not None:
            loss = loss + reg
            per_example = per_example + reg
            logs["regulariser"] = reg.detach()
        for j, name in enumerate(self.objective_names):
            logs[f"alpha_{name}"] = alphas[j].detach()
            logs[f"loss_{name}"] = losses[j].detach()
        return LossOutput(loss, logs, terms=dict(zip(self.objective_names, per)), per_example=per_example)


@register_loss("fg_to_ce")
class FrontGreaterToCeLoss(MixtureLoss):
    """Table 4 "+FrontGreater": Front-Greater weights, linearly handed back to plain CE by
    ``schedule_end`` (fraction of training)."""

    param_defaults = {"eos": "include", "fg_variant": "paper", "schedule_end": 1.0}
    objective_names = ("fg", "or")
    path: tuple[str, ...] = ("fg", "or")

    @classmethod
    def validate_params(cls, params, prefix):
        from genrec_core.recommender.token_weights import FG_VARIANTS

        _check_choice(params, "fg_variant", prefix, FG_VARIANTS)
        if "fr_beta" in params:
            _check_range(params, "fr_beta", prefix, 0.0, 1.0, lo_open=True, hi_open=True)
        _check_range(params, "schedule_end", prefix, 0.0, 1.0, lo_open=True)

    def mixture(self):
        p = training_progress(self.step, self.total_steps, self.params["schedule_end"])
        a = linear_path(p, self.path)
        return torch.tensor([a[n] for n in self.objective_names]), {"schedule_progress": p}, None


@register_loss("fg_ce_fr")
class FrontGreaterCeFrequencyLoss(FrontGreaterToCeLoss):
    """Table 4 "+Frequency": linear FG -> CE -> FR over training (equal halves up to ``schedule_end``)."""

    param_defaults = {"eos": "include", "fg_variant": "paper", "fr_beta": 0.99, "schedule_end": 1.0}
    objective_names = ("fg", "fr", "or")
    path = ("fg", "or", "fr")


@register_loss("multi_target")
class MultiTargetLoss(MixtureLoss):
    """Paper 001 4.2.1: learnable positive ``lambda_j`` (``exp`` or ``softplus`` of a raw
    parameter), ``alpha_j = lambda_j / sum lambda``, loss ``sum_j alpha_j L_j``.

    ``regulariser: uncertainty`` adds Kendall et al. 2018's ``-log(precision)`` term with the
    normalised learnable alphas as precisions, ``-uncertainty_weight * sum_j log alpha_j``: left
    alone the alphas drift to the smallest loss; with it their optimum is ``alpha_j ~ 1/(L_j + nu)``
    (Kendall's inverse-loss weighting on the simplex). (The released code's ``0.5 * sum log_vars``
    moves every lambda alike and so cannot change the alphas; it was also left out.)
    """

    param_defaults = {
        "eos": "include",
        "objectives": list(OBJECTIVES),
        "fg_variant": "paper",
        "fr_beta": 0.99,
        "lambda_param": "exp",
        "lambda_init": 1.0,
        "regulariser": "none",
        "uncertainty_weight": 1.0,
    }

    @classmethod
    def validate_params(cls, params, prefix):
        super().validate_params(params, prefix)
        obj = params["objectives"]
        if not obj or any(o not in OBJECTIVES for o in obj) or len(set(obj)) != len(obj):
            raise ParamError(f"{prefix}.objectives", f"must be a non-empty list of distinct objectives from {', '.join(OBJECTIVES)}, got {obj!r}")
        _check_choice(params, "lambda_param", prefix, LAMBDA_PARAMS)
        _check_range(params, "lambda_init", prefix, 0.0, math.inf, lo_open=True)
        _check_choice(params, "regulariser", prefix, REGULARISERS)
        _check_range(params, "uncertainty_weight", prefix, 0.0, math.inf)

    def __init__(self, context, **params):
        super().__init__(context, **params)
        self.objective_names = tuple(params["objectives"])
        lam0 = float(params["lambda_init"])
        raw0 = math.log(lam0) if params["lambda_param"] == "exp" else lam0 + math.log(-math.expm1(-lam0))  # inverse softplus
        self.lambda_raw = nn.Parameter(torch.full((len(self.objective_names),), raw0))

    def lambdas(self) -> torch.Tensor:
        return torch.exp(self.lambda_raw) if self.params["lambda_param"] == "exp" else F.softplus(self.lambda_raw)

    def schedule_factors(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Per-objective multipliers of the lambdas (curriculum); 1 here."""
        return torch.ones(len(self.objective_names)), {}

    def mixture(self):
        lam = self.lambdas()
        factors, logs = self.schedule_factors()
        scaled = lam * factors.to(lam.device)
        alphas = scaled / scaled.sum().clamp_min(1e-12)
        reg = None
        if self.params["regulariser"] == "uncertainty":
            learned = lam / lam.sum()
            reg = -self.params["uncertainty_weight"] * torch.log(learned.clamp_min(1e-12)).sum()
        for j, name in enumerate(self.objective_names):
            logs[f"lambda_{name}"] = lam[j].detach()
        return alphas, logs, reg


@register_loss("curriculum")
class CurriculumLoss(MultiTargetLoss):
    """Paper 001 4.2.2: ``lambda'_fg = e^{-ct} lambda_fg``, ``lambda'_or = e^{-ct} lambda_or``,
    ``lambda'_fr = (1 - e^{-ct}) lambda_fr``, t = optimiser step, then normalised. ``c`` is given
    directly or as ``half_life``, the fraction of training after which ``e^{-ct} = 1/2`` (default
    0.2), so short CPU runs and long GPU runs follow the same shape. The factor ``e^{-ct}`` is
    logged as ``curriculum``."""

    param_defaults = {**MultiTargetLoss.param_defaults, "c": None, "half_life": None}

    @classmethod
    def check_params(cls, loss_params, prefix="recommender.loss_params"):
        given = loss_params or {}
        if given.get("c") is not None and given.get("half_life") is not None:
            raise ParamError(f"{prefix}.c", "give c or half_life, not both")
        return super().check_params(loss_params, prefix)

    @classmethod
    def validate_params(cls, params, prefix):
        super().validate_params(params, prefix)
        _check_optional_positive(params, "c", prefix)
        _check_optional_positive(params, "half_life", prefix)
        obj = params["objectives"]
        if "fr" not in obj or not ({"fg", "or"} & set(obj)):
            raise ParamError(f"{prefix}.objectives", f"the curriculum moves weight from fg/or to fr: needs fr and at least one of fg, or; got {obj!r}")

    def rate(self) -> float:
        return curriculum_rate(self.params["c"], self.params["half_life"], self.total_steps)

    def decay(self) -> float:
        """``e^{-ct}`` at the current optimiser step."""
        return math.exp(-self.rate() * self.step)

    def schedule_factors(self):
        d = self.decay()
        factors = torch.tensor([(1.0 - d) if n == "fr" else d for n in self.objective_names])
        return factors, {"curriculum": d}
