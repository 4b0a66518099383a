"""``recommender.method: mtgrec``: curriculum pre-training on several ID tables (MTGRec, paper 002, SPEC 7).

Data groups are the training examples tokenized by each of the encoder's n ID tables (the kept
tokenizers of one RQ-VAE run, ``tokenizer.keep_last``). Every training example draws its own
tokenizer from the sampling distribution ``p`` (uniform at first) with a generator seeded by
``(seed, step)``, so a resumed run draws the same tokenizers. Deviation under packed training
(``recommender.pack_examples`` > 0, the CPU default's decoder-only): a chunk holds its items once,
so it takes one ID table, and the draw is one per chunk (up to ``pack_examples`` consecutive
windows of one user) instead of one per example. Each example's tokenizer is still distributed as
p; the draws of one chunk's examples are no longer independent. ``pack_examples: 0`` draws per
example as the paper does. Training is split into stages: a
warm-up of ``warmup``, then a stage end every ``stage_length`` (in ``schedule_unit``: fractions of
the planned training or epochs; paper: 60 then every 20 of 200 epochs = 0.3 and 0.1). At each
stage end (an optimiser step, so a stage may end mid-epoch; ends at or after the last step are
dropped since no draw would follow them) the influence of every group is estimated (SPEC 7)::

    I_i = eta_t * g_val . Gamma_i,   Gamma_i = m^ / (sqrt(v^) + eps)
    m = b1 m_t + (1 - b1) g_i,  v = b2 v_t + (1 - b2) g_i^2,  m^ = m / (1 - b1^(t+1)), v^ = v / (1 - b2^(t+1))

with ``m_t``, ``v_t``, ``t`` the live AdamW moments and step count (``t + 1``: the step these
moments would be used in, so ``eta_t Gamma_i`` is exactly the AdamW update, weight decay aside),
``eta_t`` each parameter group's learning rate for the coming step (the scheduler's), ``g_val``
the gradient of the mean loss over the validation examples tokenized by every tokenizer (the
trainer's validation users: ``recommender.max_eval_users``; under params.yaml's ``auto``, the fixed
5,000-user sample on data sets with more validation users), ``g_i``
the mean gradient over group i's training examples (all, or a seeded sample of
``group_sample_size`` examples, the same examples for every group). Then ``I~ += I`` and
``p = softmax(I~ / tau)``. A positive I_i: a step on group i's data lowers the validation loss by
about I_i.

``influence: released`` follows the authors' code instead (SPEC 7): no bias correction and eps
inside the square root (``m / sqrt(v + eps)``); stage scores ``g_val . Gamma_i`` combined as
``I~_k = sum_{s<=k} lr_s / (sum_{s'<=k} lr_s') * score_s`` (the ``influence`` recorded per stage
is its weighted term at the stage it was computed); dropout left on while collecting gradients
(from a generator seeded by (seed, step), so the run's own RNG stream is untouched); the
validation score taken per tokenizer j and averaged over j, which is the score of the mean of the
per-tokenizer gradients (linear), computed that way.

``projection_dim`` > 0 scores with a seeded Gaussian random projection (Johnson-Lindenstrauss)
of g_val and eta Gamma_i to that many dimensions (``(R g) . (R eta Gamma)``, R of entries
N(0, 1/d)); the full dot products are computed alongside (the gradients are full anyway), and
each stage records their agreement (Pearson correlation and Spearman rank correlation of the n
scores), in ``summary.json`` and the stage records.

Params (``recommender.method_params``):

- ``warmup`` (float, 0.3): training before the first stage end; ``stage_length`` (float, 0.1):
  between stage ends; ``schedule_unit`` (``fraction`` | ``epochs``): fractions of the planned
  optimiser steps (epochs x batches per epoch), or epochs (fractional epochs allowed);
- ``tau`` (float, 1.0): softmax temperature (paper: 0.1 .. 10, best 1 .. 3);
- ``influence`` (``paper`` | ``released``): see above;
- ``group_sample_size`` (int, 0): training examples per group for g_i; 0 = all of them;
- ``projection_dim`` (int, 0): 0 = full gradients;
- ``eval_mode_gradients`` (bool, true): collect gradients with dropout off (``released``: on);
- ``gradient_batch_size`` (int, 0): batch size of the gradient passes; 0 = ``eval_batch_size``;
- fine-tuning (after pre-training, one run per tokenizer; ``finetune_tokenizers``,
  ``finetune_recommender_params``, ``select_tokenizer``): ``finetune_top_m`` (int, 0): fine-tune
  the m tokenizers of highest cumulative influence, 0 = all; ``finetune_lr`` (float, 2e-4: AdamW,
  cosine, no warm-up); ``finetune_epochs`` (int, 0 = ``recommender.epochs``), early stopping on
  validation with ``recommender.patience``.

Under DDP (``recommender.processes`` > 1, torchrun): every rank draws the same tokenizers for the
whole global batch (seeded by (seed, step)) and trains on its part; at a stage end every rank
computes the influence itself on the full validation and training data with the plain model (no
DDP wrapper, no all-reduce: ``Trainer.local_forward``). The ranks hold identical weights and
optimiser state after each step, so they compute the same scores and the same p, with no
broadcast; the drawn counts are those of the global batches. Rank 0 alone writes influence.csv.

Random draws come from generators seeded by the run seed (``seed``) and the step, never from the
global RNGs. State (in ``last.pt``): optimiser, scheduler, loss strategy, ``p``, ``I~``, the
per-stage records and the counts of drawn tokenizers. At the end of training
``<reports>/mtgrec/influence.csv`` (columns stage, epoch, step, tokenizer, influence, cumulative,
p; ``<reports>`` is the parent of the trainer's reports folder unless the context's
``extra["reports_dir"]`` names the folder) is written atomically; p is logged per stage and as
``train/p_<i>``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec_core.errors import ParamError
from genrec_core.io import write_text
from genrec_core.methods import register_method
from genrec_core.methods.base import INFLUENCE_COLUMNS, Method, MethodContext, finetune_recipe, finetune_table, select_tokenizer  # noqa: F401 - the last two re-exported
from genrec_core.methods.trainer_view import TrainerView as Trainer
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.data import ExampleArrays
from genrec_core.recommender.interface import autocast_for, training_precision

log = logging.getLogger(__name__)

INFLUENCE_MODES = ("paper", "released")
SCHEDULE_UNITS = ("fraction", "epochs")
#: stream tags mixed into the (seed, step) seeds, so the draws of one step are independent
_DRAW, _SAMPLE, _DROPOUT, _PROJECT = 0x6D74, 0x6773, 0x6470, 0x7072
PROJECTION_CHUNK = 1 << 14  # parameter entries projected per random block


def softmax(x: np.ndarray, tau: float) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / tau
    z = np.exp(z - z.max())
    return z / z.sum()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def stage_end_steps(total_steps: int, steps_per_epoch: int, warmup: float, stage_length: float, unit: str) -> list[int]:
    """Optimiser steps (steps done) after which the influence is estimated and p updated:
    ``W, W + S, W + 2S, ...`` below ``total_steps`` (W = 0: the first end is S)."""
    scale = total_steps if unit == "fraction" else steps_per_epoch
    w = int(round(warmup * scale))
    s = max(1, int(round(stage_length * scale)))
    ends, end = [], w if w > 0 else s
    while end < total_steps:
        ends.append(end)
        end += s
    return ends


@register_method("mtgrec")
class MTGRecMethod(Method):
    """Per-example tokenizer sampling from p, influence-driven p updates at stage ends (module docstring)."""

    fixed_item_ids = False  # several ID tables at once
    param_defaults = {
        "warmup": 0.3,
        "stage_length": 0.1,
        "schedule_unit": "fraction",
        "tau": 1.0,
        "influence": "paper",
        "group_sample_size": 0,
        "projection_dim": 0,
        "eval_mode_gradients": True,
        "gradient_batch_size": 0,
        "finetune_top_m": 0,
        "finetune_lr": 2e-4,
        "finetune_epochs": 0,
    }

    @classmethod
    def validate_params(cls, params: dict[str, Any], prefix: str) -> None:
        if params["schedule_unit"] not in SCHEDULE_UNITS:
            raise ParamError(f"{prefix}.schedule_unit", f"must be one of {', '.join(SCHEDULE_UNITS)}, got {params['schedule_unit']!r}")
        if params["influence"] not in INFLUENCE_MODES:
            raise ParamError(f"{prefix}.influence", f"must be one of {', '.join(INFLUENCE_MODES)}, got {params['influence']!r}")
        if not params["warmup"] >= 0 or (params["schedule_unit"] == "fraction" and params["warmup"] > 1):
            raise ParamError(f"{prefix}.warmup", f"must be >= 0 (and <= 1 as a fraction), got {params['warmup']}")
        if not params["stage_length"] > 0 or (params["schedule_unit"] == "fraction" and params["stage_length"] > 1):
            raise ParamError(f"{prefix}.stage_length", f"must be > 0 (and <= 1 as a fraction), got {params['stage_length']}")
        if not (params["tau"] > 0 and math.isfinite(params["tau"])):
            raise ParamError(f"{prefix}.tau", f"must be a positive number, got {params['tau']}")
        if not params["finetune_lr"] > 0:
            raise ParamError(f"{prefix}.finetune_lr", f"must be > 0, got {params['finetune_lr']}")
        for key in ("group_sample_size", "projection_dim", "gradient_batch_size", "finetune_top_m", "finetune_epochs"):
            if params[key] < 0:
                raise ParamError(f"{prefix}.{key}", f"must be >= 0, got {params[key]}")

    def __init__(self, context: MethodContext, **params: Any):
        super().__init__(context, **params)
        tables = getattr(self.encoder, "tables", None)
        if tables is None or tables.dim() != 3 or tables.shape[0] < 2:
            raise ParamError(
                "recommender.method", "mtgrec needs an encoder with several ID tables (the kept tokenizers of one RQ-VAE run: tokenizer.keep_last >= 2)"
            )
        self.n = int(tables.shape[0])
        self.reports_dir: Path | None = Path(context.extra["reports_dir"]) if "reports_dir" in context.extra else None
        self.p = np.full(self.n, 1.0 / self.n)
        self.cumulative = np.zeros(self.n)
        self.records: list[dict[str, Any]] = []  # one per stage end
        self.counts = np.zeros(self.n, dtype=np.int64)  # training examples drawn per tokenizer
        self.stage_ends: list[int] = []

    # ------------------------------------------------------------------ pipeline hooks
    tests_selected_model = True  # pre-training alone is not MTGRec: evaluate tests the selected fine-tuned model

    @classmethod
    def finetune_plan(cls, params: Any, paths: ArtifactPaths, names: list[str]) -> list[tuple[int, float]]:
        """The kept tokenizers by cumulative influence at the last stage end (``influence.csv``),
        best first: all of them or the top ``finetune_top_m``."""
        top_m = cls.check_params(params.recommender.method_params)["finetune_top_m"]
        cumulative = cumulative_influence(paths.influence_csv, len(names))
        return [(t, float(cumulative[t])) for t in finetune_tokenizers(cumulative, top_m)]

    @classmethod
    def finetune_params(cls, rp: Any) -> Any:
        return finetune_recommender_params(rp)

    def write_outputs(self, trainer: Trainer, paths: ArtifactPaths, ids: Any) -> None:
        """``influence.csv`` was written at the end of training (``summary``); the IDs never moved."""
        paths.final_id_table.unlink(missing_ok=True)

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: Trainer) -> None:
        super().setup(trainer)
        p = self.params
        self.stage_ends = stage_end_steps(trainer.state.total_steps, trainer.steps_per_epoch, p["warmup"], p["stage_length"], p["schedule_unit"])
        if self.reports_dir is None:
            self.reports_dir = Path(trainer.reports_dir).parent / "method"

    @property
    def influence_path(self) -> Path:
        return Path(self.reports_dir) / "influence.csv"

    # ------------------------------------------------------------------ tokenization
    def tokenizer_index(self, trainer: Trainer, examples: ExampleArrays, index: np.ndarray) -> torch.Tensor:
        """Each example's tokenizer, drawn from p by a generator seeded by (seed, step); packed
        training (``recommender.pack_examples``) draws one per chunk, which all its examples take."""
        rng = np.random.default_rng([trainer.seed, trainer.state.step, _DRAW])
        chunk = self.chunk_of_examples(trainer, examples, index)
        if chunk is None:
            draw = rng.choice(self.n, size=len(index), p=self.p)
        else:
            draw = rng.choice(self.n, size=int(chunk[-1]) + 1 if len(chunk) else 0, p=self.p)[chunk]
        self.last_draw = draw  # the global batch's draw (a DDP rank's batch holds only its part)
        return torch.from_numpy(draw.astype(np.int64))

    def on_step_end(self, trainer: Trainer, batch, out) -> None:
        super().on_step_end(trainer, batch, out)
        draw = getattr(self, "last_draw", None)
        if draw is not None:
            self.counts += np.bincount(draw, minlength=self.n)
            self.last_draw = None
        if trainer.state.step in self.stage_ends:
            self.end_stage(trainer)

    # ------------------------------------------------------------------ gradients
    def optimised_parameters(self) -> list[torch.Tensor]:
        return [q for g in self.optimizer.param_groups for q in g["params"]]

    @contextlib.contextmanager
    def _gradient_mode(self, trainer: Trainer):
        """Dropout off (eval mode) or on, from a generator seeded by (seed, step) in the latter case;
        the model's mode, the global RNGs and the gradients are restored afterwards."""
        model = trainer.model
        was_training = model.training
        local = trainer.local_forward() if hasattr(trainer, "local_forward") else contextlib.nullcontext()
        eval_mode = self.params["eval_mode_gradients"] and self.params["influence"] == "paper"
        devices = [torch.device(trainer.device).index or 0] if torch.device(trainer.device).type == "cuda" else []
        with local, torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(np.random.default_rng([trainer.seed, trainer.state.step, _DROPOUT]).integers(2**62)))
            model.train(not eval_mode)
            self.optimizer.zero_grad(set_to_none=True)
            try:
                yield
            finally:
                self.optimizer.zero_grad(set_to_none=True)
                model.train(was_training)

    def mean_gradient(self, trainer: Trainer, examples: ExampleArrays, index: np.ndarray, tokenizers: list[int]) -> list[torch.Tensor]:
        """Gradient (one tensor per optimised parameter) of the mean loss over ``examples[index]``
        each tokenized by every tokenizer in ``tokenizers`` (call inside ``_gradient_mode``)."""
        params = self.optimised_parameters()
        for q in params:
            q.grad = None
        bs = self.params["gradient_batch_size"] or trainer.params.eval_batch_size
        total = len(index) * len(tokenizers)
        for t in tokenizers:
            for start in range(0, len(index), bs):
                idx = index[start : start + bs]
                batch = self.encoder.collate(examples, idx, tokenizer_index=torch.full((len(idx),), t, dtype=torch.long)).to(trainer.device)
                with autocast_for(trainer.device, training_precision(trainer.params)):
                    out = self.compute_losses(trainer, batch)
                per_example = out.per_example if out.per_example is not None else out.loss.expand(len(idx))
                (per_example.float().sum() / total).backward()
        grads = [q.grad.detach().float().clone() if q.grad is not None else torch.zeros_like(q, dtype=torch.float32) for q in params]
        for q in params:
            q.grad = None
        return grads

    def adam_update(self, grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
        """The update direction the live AdamW would take on ``grads``: per parameter ``eta Gamma``
        (paper) or ``Gamma`` (released: unscaled, weighted by lr later); and the first group's lr."""
        paper = self.params["influence"] == "paper"
        out: list[torch.Tensor] = []
        k = 0
        for group in self.optimizer.param_groups:
            b1, b2 = group["betas"]
            eps, lr = group["eps"], float(group["lr"])
            for q in group["params"]:
                g = grads[k]
                k += 1
                state = self.optimizer.state.get(q, {})
                m = state["exp_avg"].float() if "exp_avg" in state else torch.zeros_like(g)
                v = state["exp_avg_sq"].float() if "exp_avg_sq" in state else torch.zeros_like(g)
                t = float(state["step"]) if "step" in state else 0.0
                m1 = b1 * m + (1 - b1) * g
                v1 = b2 * v + (1 - b2) * g * g
                if paper:
                    m_hat = m1 / (1 - b1 ** (t + 1))
                    v_hat = v1 / (1 - b2 ** (t + 1))
                    out.append(lr * m_hat / (v_hat.sqrt() + eps))
                else:
                    out.append(m1 / (v1 + eps).sqrt())
        return out, float(self.optimizer.param_groups[0]["lr"])

    def project(self, vectors: list[torch.Tensor], seed: int) -> torch.Tensor:
        """``R x`` [d] of a gradient-like list: R [d, P] Gaussian with entries N(0, 1/d), drawn in
        fixed blocks from a generator seeded by ``seed`` (the same R for every call with it)."""
        d = self.params["projection_dim"]
        device = vectors[0].device
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        out = torch.zeros(d, device=device)
        for x in vectors:
            flat = x.reshape(-1).float()
            for start in range(0, flat.numel(), PROJECTION_CHUNK):
                block = flat[start : start + PROJECTION_CHUNK]
                r = torch.randn(d, block.numel(), generator=gen, device=device)
                out += r @ block
        return out / math.sqrt(d)

    def influence_scores(self, trainer: Trainer) -> dict[str, Any]:
        """The n groups' scores at the current parameters and optimiser state (no state changes):
        ``score`` (paper: ``eta g_val . Gamma_i``; released: ``g_val . Gamma_i``; projected when
        ``projection_dim`` > 0), ``full`` (the full-dimension scores), ``lr``."""
        step = trainer.state.step
        valid = trainer.valid_examples
        train = trainer.train_examples
        size = self.params["group_sample_size"]
        if size and size < len(train):
            index = np.sort(np.random.default_rng([trainer.seed, step, _SAMPLE]).choice(len(train), size=size, replace=False))
        else:
            index = np.arange(len(train))
        tokenizers = list(range(self.n))
        with self._gradient_mode(trainer):
            g_val = self.mean_gradient(trainer, valid, np.arange(len(valid)), tokenizers)
            full, projected, lr = np.zeros(self.n), np.zeros(self.n), 0.0
            proj_seed = int(np.random.default_rng([trainer.seed, _PROJECT]).integers(2**62))
            pv = self.project(g_val, proj_seed) if self.params["projection_dim"] else None
            for i in tokenizers:
                g_i = self.mean_gradient(trainer, train, index, [i])
                update, lr = self.adam_update(g_i)
                full[i] = float(sum((a.double() * b.double()).sum() for a, b in zip(g_val, update)))
                if pv is not None:
                    projected[i] = float(pv.double() @ self.project(update, proj_seed).double())
        score = projected if pv is not None else full
        return {"score": score, "full": full, "lr": lr}

    # ------------------------------------------------------------------ stages
    def end_stage(self, trainer: Trainer) -> None:
        """Influence of every group, cumulative influence and the new p (one record)."""
        s = trainer.state
        res = self.influence_scores(trainer)
        record: dict[str, Any] = {
            "stage": len(self.records) + 1,
            "epoch": s.step / trainer.steps_per_epoch,
            "step": s.step,
            "lr": res["lr"],
            "score": res["score"].tolist(),
        }
        if self.params["influence"] == "paper":
            influence = res["score"]
            self.cumulative = self.cumulative + influence
        else:  # released: stage scores weighted by lr_s / sum of the stage lrs so far
            lrs = np.array([r["lr"] for r in self.records] + [res["lr"]])
            scores = np.array([r["score"] for r in self.records] + [res["score"].tolist()])
            weights = lrs / lrs.sum()
            influence = weights[-1] * res["score"]
            self.cumulative = (weights[:, None] * scores).sum(axis=0)
        self.p = softmax(self.cumulative, self.params["tau"])
        record.update(influence=np.asarray(influence).tolist(), cumulative=self.cumulative.tolist(), p=self.p.tolist())
        if self.params["projection_dim"]:
            record.update(
                full_score=res["full"].tolist(), projection_pearson=pearson(res["score"], res["full"]), projection_spearman=spearman(res["score"], res["full"])
            )
        self.records.append(record)
        log.info(
            "mtgrec stage %d (step %d): influence %s, p %s",
            record["stage"],
            s.step,
            np.array2string(np.asarray(influence), precision=4),
            np.array2string(self.p, precision=4),
        )

    # ------------------------------------------------------------------ logs, reports, state
    def logs(self, trainer: Trainer, out) -> dict[str, float]:
        return {**super().logs(trainer, out), **{f"p_{i}": float(v) for i, v in enumerate(self.p)}}

    def influence_csv(self) -> str:
        lines = [INFLUENCE_COLUMNS]
        for r in self.records:
            for i in range(self.n):
                lines.append(f"{r['stage']},{r['epoch']!r},{r['step']},{i},{r['influence'][i]!r},{r['cumulative'][i]!r},{r['p'][i]!r}")
        return "\n".join(lines) + "\n"

    def summary(self, trainer: Trainer) -> dict[str, Any]:
        """Final p, I~, drawn counts, stage ends; writes the influence CSV (end of training)."""
        write_text(self.influence_csv(), self.influence_path)
        out: dict[str, Any] = {
            "mtgrec_p": self.p.tolist(),
            "mtgrec_cumulative_influence": self.cumulative.tolist(),
            "mtgrec_counts": self.counts.tolist(),
            "mtgrec_stage_ends": list(self.stage_ends),
        }
        if self.params["projection_dim"]:
            out["mtgrec_projection_agreement"] = [
                {"stage": r["stage"], "pearson": r["projection_pearson"], "spearman": r["projection_spearman"]} for r in self.records
            ]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            # tensors and plain Python values only: last.pt is read with weights_only=True
            "mtgrec": {
                "p": torch.from_numpy(self.p.copy()),
                "cumulative": torch.from_numpy(self.cumulative.copy()),
                "records": [{k: _plain(v) for k, v in r.items()} for r in self.records],
                "counts": torch.from_numpy(self.counts.copy()),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        own = state["mtgrec"]
        self.p = np.asarray(own["p"], dtype=np.float64).copy()
        self.cumulative = np.asarray(own["cumulative"], dtype=np.float64).copy()
        self.records = [dict(r) for r in own["records"]]
        self.counts = np.asarray(own["counts"], dtype=np.int64).copy()


def _plain(value: Any) -> Any:
    """A record value as plain Python (numpy scalars become floats/ints), for a weights-only checkpoint."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- fine-tuning and selection


def finetune_tokenizers(cumulative: np.ndarray | list[float], top_m: int = 0) -> list[int]:
    """The tokenizers to fine-tune: all (``top_m`` = 0) or the ``top_m`` of highest cumulative
    influence, best first (ties: lower index first)."""
    cumulative = np.asarray(cumulative, dtype=np.float64)
    order = sorted(range(len(cumulative)), key=lambda i: (-cumulative[i], i))
    return order[:top_m] if top_m else order


def finetune_recommender_params(rp: Any, method_params: dict[str, Any] | None = None) -> Any:
    """The recommender params of one fine-tuning run from MTGRec's (SPEC 7): ``finetune_recipe``
    at ``finetune_lr`` for ``finetune_epochs`` (0: the pre-training's). Which tokenizer it trains
    on is the encoder's default table (the caller's choice)."""
    p = MTGRecMethod.check_params(method_params if method_params is not None else rp.method_params)
    return finetune_recipe(rp, p["finetune_lr"], p["finetune_epochs"] or rp.epochs)


def cumulative_influence(path: str | Path, n: int) -> np.ndarray:
    """The cumulative influence [n] at the last stage end recorded in ``influence.csv`` (zeros when
    no stage ended: every tokenizer ties, fine-tuning order is then the tokenizers' order)."""
    import csv

    out = np.zeros(n)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows:
        last = max(int(r["stage"]) for r in rows)
        for r in rows:
            if int(r["stage"]) == last and int(r["tokenizer"]) < n:
                out[int(r["tokenizer"])] = float(r["cumulative"])
    return out
