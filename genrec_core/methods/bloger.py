"""``recommender.method: bloger``: the tokenizer and the recommender trained together (BLOGER, paper 003, SPEC 8).

The item IDs are no fixed table: they come from a runtime RQ-VAE (``tokenizers.runtime.
RuntimeItemTokenizer``, built by the train stage from the chosen kept tokenizer and handed over as
``MethodContext.extra["runtime_tokenizer"]``) that trains beside the recommender.

- **Every batch**: one ordinary recommender step (AdamW, the trainer's lr and schedule) on the
  current hard IDs. The history items and the teacher-forced decoder inputs enter as
  straight-through embeddings ``s + sg(h - s)`` (``recommender.soft_inputs``) with ``s = P @ E_l``,
  ``P = softmax(-||r_l - e^l_k||^2 / temperature)`` the runtime tokenizer's code probabilities
  (held fixed in this step); labels stay hard.
- **Every len(loader) / M' batches** (``updates_per_epoch`` = M'), after that batch's step, one
  tokenizer step on the same batch (``outer_batch: valid``: a seeded validation batch for the
  outer loss)::

      bilevel:  theta' = theta - lookahead_lr * grad_theta L_rec(theta, phi)   (create_graph)
                g_rec  = d L_rec(theta', phi) / d phi                           (second order)
      joint:    g_rec  = d L_rec(theta, phi) / d phi                            (no look-ahead)
      g_tok  = d L_token(phi) / d phi    (RQ-VAE loss over every item: reconstruction + codebook + commitment)
      update = lam * g_tok + surgery(g_rec, g_tok)      per tokenizer parameter tensor

  theta' is evaluated with ``torch.func.functional_call`` of the recommender itself (its input
  embedding table included: the soft inputs are built from theta''s table), not a second model;
  the second-order pass runs scaled-dot-product attention on its math kernel (the fused ones have
  no double backward). With straight-through inputs the loss's value does not depend on phi, so
  g_rec is the gradient of the soft surrogate (what SPEC 8's ``s + sg(h - s)`` differentiates).
  ``surgery``: ``projection`` (SPEC 8, PCGrad per tensor: if ``g_tok . g_rec < 0``,
  ``g_rec -= (g_rec . g_tok / ||g_tok||^2) g_tok``); ``rowwise`` (our reading of the released
  code's ``normalize(dim=-1)``: the same per-tensor conflict test, then every row, i.e. every
  vector along the last dimension, of ``g_rec`` loses its component along that row of ``g_tok``;
  a 1-D tensor is one row, so there it equals ``projection``); ``none``. A tensor with no
  ``g_rec`` (the RQ-VAE decoder) gets ``lam * g_tok``. Then an AdamW step of the tokenizer
  (``tokenizer_lr``, ``tokenizer_weight_decay``; its own optimiser), ``refresh()`` (collisions as
  ``ids.collision``) and ``update_item_tokens``: the encoder's table, the model's trie and the
  item tokens checkpoints store follow the new IDs.

Every update is recorded (``summary.json`` ``bloger_updates``): the share of items whose ID
changed (any token, first token), the share of tokenizer tensors in conflict, per level the
codebook density (share of the K codes some item uses) and entropy (bits) of the hard IDs, the
tokenizer loss. ``bloger_before`` / ``bloger_after`` hold density and entropy of the starting IDs
and of the final IDs (those of ``best.pt``, the model selected on validation); ``peak_rss_mb``
the process's peak resident memory (for the cost against TIGER beside ``seconds``).

Packed training (``recommender.pack_examples``, the decoder-only CPU default) takes the soft
inputs as the unpacked path does: each chunk's items enter once, straight-through
(``soft_inputs.packed_items_embeds`` over ``Packing.item_ids``' code probabilities), and every
example's teacher-forced decoder inputs as above; the look-ahead and the outer loss run the packed
batch through ``functional_call`` too (``outer_batch: valid`` is collated unpacked, as validation
always is). Not supported (ParamError): several processes (DDP), a loss strategy with a second forward pass
(``cft``); a kept tokenizer without its decoder (older kept files) fails at start. The RQ-VAE runs
in eval mode throughout (IDs are a function of its parameters; its
dropout, 0 by default, is off); all its parameters are trained, codebooks included (also under
``codebook_update: ema``, whose EMA is not run here).

State (``last.pt``): the recommender's optimiser, scheduler and loss strategy, the tokenizer's
parameters and AdamW state, its current codes and IDs, the update records; a run resumed between
two tokenizer steps ends bit-identical.

Fine-tuning on the frozen final IDs (``finetune_epochs`` > 0; ``finetune_lr``, 2e-4): after BLOGER,
the train stage trains the selected model on its final IDs with plain training
(``final_finetune_params``) and keeps the result only when it beats BLOGER's best on
validation (``genrec_core.training.finetune_final_ids``).
"""

from __future__ import annotations

import logging
import math
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from genrec_core.errors import GenrecError, InputFormatError, MissingInputError, ParamError
from genrec_core.io import write_text
from genrec_core.methods import register_method
from genrec_core.methods.base import INFLUENCE_COLUMNS, Method, MethodContext, PreparedIds, StepOutput, finetune_recipe
from genrec_core.methods.trainer_view import TrainerView as Trainer
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.checkpoint_format import BEST, read_checkpoint, read_item_tokens
from genrec_core.recommender.data import Batch
from genrec_core.recommender.interface import autocast_for, training_precision
from genrec_core.recommender.soft_inputs import decoder_inputs_embeds, history_inputs_embeds, packed_items_embeds

if TYPE_CHECKING:
    from genrec_core.tokenizers.runtime import RuntimeItemTokenizer

log = logging.getLogger(__name__)

MODES = ("bilevel", "joint")
SURGERIES = ("projection", "rowwise", "none")
OUTER_BATCHES = ("train", "valid")
_VALID_DRAW = 0x626C  # stream tag of the outer validation batch's draw


# --------------------------------------------------------------------------- pure helpers


def gradient_surgery(g_tok: list[torch.Tensor | None], g_rec: list[torch.Tensor | None], lam: float, mode: str) -> tuple[list[torch.Tensor | None], list[bool]]:
    """(per tensor ``lam * g_tok + g_rec'``, per tensor with both gradients whether they conflicted
    (``g_tok . g_rec < 0``)). ``g_rec'`` is ``g_rec`` after the surgery ``mode`` (module doc); a
    missing gradient (None) counts as absent, not as zeros."""
    if mode not in SURGERIES:
        raise ValueError(f"surgery must be one of {SURGERIES}, got {mode!r}")
    out: list[torch.Tensor | None] = []
    conflicts: list[bool] = []
    for tok, rec in zip(g_tok, g_rec):
        if rec is None:
            out.append(None if tok is None else lam * tok)
            continue
        if tok is None:
            out.append(rec)
            continue
        dot = (tok * rec).sum()
        conflict = bool(dot < 0)
        conflicts.append(conflict)
        if conflict and mode == "projection":
            norm2 = (tok * tok).sum()
            if norm2 > 0:
                rec = rec - (dot / norm2) * tok
        elif conflict and mode == "rowwise":
            rows_tok = tok.reshape(-1, tok.shape[-1]) if tok.dim() > 0 else tok.reshape(1, 1)
            unit = torch.nn.functional.normalize(rows_tok, dim=-1)
            rows_rec = rec.reshape(unit.shape)
            rec = (rows_rec - (rows_rec * unit).sum(-1, keepdim=True) * unit).reshape(rec.shape)
        out.append(lam * tok + rec)
    return out, conflicts


def code_usage(ids: np.ndarray, levels: int, codebook_size: int) -> tuple[list[float], list[float]]:
    """Per level of the first ``levels`` columns of ``ids`` [N, L']: (density = share of the K codes
    some item uses, entropy in bits of the codes' item distribution)."""
    density, entropy = [], []
    for level in range(levels):
        counts = np.bincount(np.asarray(ids)[:, level], minlength=codebook_size).astype(np.float64)
        density.append(float((counts > 0).sum() / codebook_size))
        p = counts[counts > 0] / counts.sum()
        entropy.append(float(-(p * np.log2(p)).sum()))
    return density, entropy


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


# --------------------------------------------------------------------------- the method


@register_method("bloger")
class BlogerMethod(Method):
    """Bi-level (or joint) training of a runtime RQ-VAE tokenizer and the recommender (module docstring)."""

    fixed_item_ids = False  # the IDs change with the tokenizer
    param_defaults = {
        "mode": "bilevel",
        "surgery": "projection",
        "lam": 1.0,
        "lookahead_lr": 5e-4,
        "tokenizer_lr": 1e-4,
        "tokenizer_weight_decay": 1e-4,
        "updates_per_epoch": 1,
        "temperature": 1.0,
        "outer_batch": "train",
        "finetune_epochs": 0,
        "finetune_lr": 2e-4,
    }

    @classmethod
    def validate_params(cls, params: dict[str, Any], prefix: str) -> None:
        for key, choices in (("mode", MODES), ("surgery", SURGERIES), ("outer_batch", OUTER_BATCHES)):
            if params[key] not in choices:
                raise ParamError(f"{prefix}.{key}", f"must be one of {', '.join(choices)}, got {params[key]!r}")
        for key in ("lam", "lookahead_lr", "tokenizer_weight_decay"):
            if not (params[key] >= 0 and math.isfinite(params[key])):
                raise ParamError(f"{prefix}.{key}", f"must be a finite number >= 0, got {params[key]}")
        if params["finetune_epochs"] < 0:
            raise ParamError(f"{prefix}.finetune_epochs", f"must be >= 0 (0 = no fine-tuning on the final IDs), got {params['finetune_epochs']}")
        for key in ("tokenizer_lr", "temperature", "finetune_lr"):
            if not (params[key] > 0 and math.isfinite(params[key])):
                raise ParamError(f"{prefix}.{key}", f"must be a positive number, got {params[key]}")
        if params["updates_per_epoch"] < 1:
            raise ParamError(f"{prefix}.updates_per_epoch", f"must be >= 1 (tokenizer updates per epoch, M'), got {params['updates_per_epoch']}")

    def __init__(self, context: MethodContext, **params: Any):
        super().__init__(context, **params)
        rt = context.extra.get("runtime_tokenizer")
        if rt is None:
            raise ParamError(
                "recommender.method",
                "bloger needs the runtime tokenizer (MethodContext.extra['runtime_tokenizer']; the train stage builds it from the kept RQ-VAE)",
            )
        self.runtime: RuntimeItemTokenizer = rt
        self.tokenizer_name: str = context.extra.get("tokenizer_name", rt.default)
        if not rt.is_trainable(self.tokenizer_name):
            raise ParamError("tokenizer.kind", f"bloger trains the tokenizer: it needs an RQ-VAE, tokenizer {self.tokenizer_name!r} is not one")
        if self.runtime.model(self.tokenizer_name).decoder is None:  # fail now, not at the first tokenizer step
            raise GenrecError(
                f"tokenizer {self.tokenizer_name!r} has no decoder (a kept file written before kept files stored it): BLOGER needs the "
                "RQ-VAE's own loss; rerun the train-tokenizer stage (dvc repro train_tokenizer)"
            )
        if getattr(self.loss_strategy, "extra_forward_needed", False):
            raise ParamError("recommender.loss", "bloger's look-ahead takes losses with one forward pass; this one needs a second (cft)")
        tables = getattr(self.encoder, "tables", None)
        if tables is None or tables.shape[0] != 1 or not torch.equal(tables[0], rt.item_tokens(self.tokenizer_name).cpu()):
            raise ValueError("bloger's encoder must hold one ID table: the runtime tokenizer's item_tokens()")
        self.vocab = rt.vocab
        self.tokenizer_optimizer: torch.optim.Optimizer | None = None
        self.records: list[dict[str, Any]] = []  # one per tokenizer update
        self.before = self.usage()
        self.update_steps: set[int] = set()  # batches of an epoch (1-based) after which the tokenizer steps
        self.embedding_name = ""

    # ------------------------------------------------------------------ pipeline hooks
    @classmethod
    def prepare_ids(cls, params: Any, paths: ArtifactPaths, item_ids: np.ndarray, tables: dict[str, np.ndarray], chosen: str) -> PreparedIds:
        """The IDs come from a tokenizer that trains along (SPEC 8): the runtime tokenizer over the
        kept RQ-VAE ``chosen``; one table, a codebook-sized vocabulary (every ID a tokenizer update
        can produce has tokens); the kept tokenizer and the item vectors join the fingerprint."""
        runtime = runtime_tokenizer(paths, item_ids, tables[chosen], chosen)
        tokens = runtime.item_tokens(chosen).cpu()[None]  # [1, N, L]
        extra = {"reports_dir": paths.method_reports_dir, "runtime_tokenizer": runtime, "tokenizer_name": chosen}
        return PreparedIds(
            runtime.vocab, tokens, [chosen], 0, extra=extra, inputs={"kept_tokenizer": kept_tokenizer_path(paths, chosen), "embeddings": paths.embeddings}
        )

    def final_finetune_params(self, rp: Any) -> Any | None:
        """With ``finetune_epochs`` > 0: plain training on the frozen final IDs at ``finetune_lr``
        (MTGRec's fine-tuning recipe, SPEC 7; the BLOGER sources give none), packed as BLOGER itself."""
        p = self.params
        return finetune_recipe(rp, p["finetune_lr"], p["finetune_epochs"]) if p["finetune_epochs"] else None

    def write_outputs(self, trainer: Trainer, paths: ArtifactPaths, ids: PreparedIds) -> None:
        """No influence (header only); the final IDs, those of the model selected on validation
        (``best.pt``'s item tokens), as an ID table with emit-ids' schema: what evaluate decodes to
        (it reads them from best.pt) and what the analyses of this model's IDs should read."""
        from genrec_core.io import write_parquet
        from genrec_core.tokenizers.id_table import build_id_table, validate_id_table

        write_text(INFLUENCE_COLUMNS + "\n", paths.influence_csv)
        tokens = read_item_tokens(paths.recommender_dir / BEST)
        item_ids = np.arange(tokens.shape[0])
        table = build_id_table(item_ids, {ids.tokenizer: self.vocab.tokens_to_codes(torch.as_tensor(tokens).numpy())})
        validate_id_table(table, paths.final_id_table, item_ids)
        write_parquet(table, paths.final_id_table)

    # ------------------------------------------------------------------ set-up
    @property
    def tokenizer(self) -> nn.Module:
        return self.runtime.model(self.tokenizer_name)

    def tokenizer_parameters(self) -> list[nn.Parameter]:
        return list(self.tokenizer.parameters())

    def setup(self, trainer: Trainer) -> None:
        if trainer.world > 1:
            raise ParamError("recommender.processes", "bloger trains in one process (its tokenizer step is not data-parallel); set processes: 1")
        self.runtime.to(trainer.device)
        tok = self.tokenizer.eval()
        for p in tok.parameters():
            p.requires_grad_(True)
        weight = trainer.model.token_embedding
        self.embedding_name = next(n for n, p in trainer.model.named_parameters() if p is weight)
        super().setup(trainer)
        self.tokenizer_optimizer = torch.optim.AdamW(
            self.tokenizer_parameters(), lr=self.params["tokenizer_lr"], weight_decay=self.params["tokenizer_weight_decay"]
        )
        steps = trainer.steps_per_epoch
        m = min(self.params["updates_per_epoch"], steps)
        self.update_steps = {max(1, round(k * steps / m)) for k in range(1, m + 1)}

    # ------------------------------------------------------------------ soft inputs
    def soft_embeds(self, batch: Batch, weight: torch.Tensor, grad: bool) -> dict[str, torch.Tensor]:
        """``inputs_embeds`` and ``decoder_inputs_embeds`` of ``batch``: straight-through embeddings
        over ``weight`` (the token table) of the runtime tokenizer's code probabilities, which carry
        gradients to the tokenizer when ``grad``. Computed once per distinct item of the batch. A
        packed batch's ``inputs_embeds`` are its chunk items' [G, C, L, d] (``packed_forward``)."""
        packing = batch.packing
        source = batch.history if packing is None else packing.item_ids  # [B, H] or [G, C], -1 = pad
        n = source.numel()
        items = torch.cat([source.clamp(min=0).reshape(-1), batch.targets.long()])  # pads: item 0, masked out below
        unique, inverse = torch.unique(items, return_inverse=True)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            probs = self.runtime.soft_codes(self.tokenizer_name, items=unique, temperature=self.params["temperature"])
        inputs = probs[inverse[:n]].reshape(*source.shape, *probs.shape[1:])  # the embeds below keep pads hard (no gradient)
        target = probs[inverse[n:]]
        if packing is None:
            inputs_embeds = history_inputs_embeds(batch.input_ids, batch.history, batch.lengths, inputs, weight, self.vocab)
        else:
            inputs_embeds = packed_items_embeds(packing.items, packing.item_mask, inputs, weight, self.vocab)
        return {"inputs_embeds": inputs_embeds, "decoder_inputs_embeds": decoder_inputs_embeds(batch.labels, target, weight, self.vocab)}

    def step(self, trainer: Trainer, batch: Batch) -> StepOutput:
        """The ordinary recommender step on the current hard IDs, soft (straight-through) inputs."""
        with autocast_for(trainer.device, training_precision(trainer.params)):
            soft = self.soft_embeds(batch, trainer.model.token_embedding, grad=False)
            batch.inputs_embeds, batch.decoder_inputs_embeds = soft["inputs_embeds"], soft["decoder_inputs_embeds"]
            out = self.compute_losses(trainer, batch)
        out.loss.backward()
        grad_norm = self.clip_gradients(trainer)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        batch.inputs_embeds = batch.decoder_inputs_embeds = None
        return StepOutput(out.loss, out, grad_norm, out.logs)

    # ------------------------------------------------------------------ the tokenizer step
    def recommender_loss(self, trainer: Trainer, batch: Batch, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_rec of ``batch`` with the recommender's parameters replaced by ``params`` (functional
        call of the model itself; the soft inputs over ``params``' token table), gradients to phi.
        A packed batch runs packed."""
        soft = self.soft_embeds(batch, params[self.embedding_name], grad=True)
        if batch.packing is not None:
            soft["packing"] = batch.packing
        logits = torch.func.functional_call(trainer.model, params, (batch.input_ids, batch.attention_mask, batch.labels), soft)
        return self.loss_strategy(logits, batch.labels, batch, trainer.state).loss

    def outer_batch(self, trainer: Trainer, batch: Batch) -> Batch:
        """The batch of the outer loss: the current one, or validation examples drawn by (seed, step)
        from the trainer's validation users (``recommender.max_eval_users``: under ``auto`` the fixed
        sample on data sets of more than 5,000 validation users)."""
        if self.params["outer_batch"] == "train":
            return batch
        valid = trainer.valid_examples
        size = min(len(valid), trainer.params.batch_size)
        index = np.sort(np.random.default_rng([trainer.seed, trainer.state.step, _VALID_DRAW]).choice(len(valid), size=size, replace=False))
        return self.encoder.collate(valid, index).to(trainer.device)

    def rec_gradient(self, trainer: Trainer, batch: Batch) -> list[torch.Tensor | None]:
        """g_rec per tokenizer parameter: of L_rec(theta', phi) (bilevel) or L_rec(theta, phi) (joint)."""
        phi = self.tokenizer_parameters()
        theta = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
        outer_batch = self.outer_batch(trainer, batch)
        if self.params["mode"] == "joint":
            outer = self.recommender_loss(trainer, outer_batch, theta)
            return list(torch.autograd.grad(outer, phi, allow_unused=True))
        # second order: the fused attention kernels (flash, memory-efficient) have no double
        # backward, the math one does
        with sdpa_kernel(SDPBackend.MATH):
            inner = self.recommender_loss(trainer, batch, theta)
            names = list(theta)
            grads = torch.autograd.grad(inner, [theta[n] for n in names], create_graph=True, allow_unused=True)
            eta = self.params["lookahead_lr"]
            lookahead = {n: theta[n] if g is None else theta[n] - eta * g for n, g in zip(names, grads)}
            outer = self.recommender_loss(trainer, outer_batch, lookahead)
            return list(torch.autograd.grad(outer, phi, allow_unused=True))

    def tokenizer_gradient(self) -> tuple[list[torch.Tensor | None], float]:
        """(g_tok per tokenizer parameter, L_token) of the RQ-VAE loss over every item."""
        loss = self.runtime.tokenizer_loss(self.tokenizer_name)
        return list(torch.autograd.grad(loss, self.tokenizer_parameters(), allow_unused=True)), float(loss.detach())

    def tokenizer_step(self, trainer: Trainer, batch: Batch) -> dict[str, Any]:
        """One AdamW step of the tokenizer (module doc), then the IDs are refreshed everywhere."""
        g_rec = self.rec_gradient(trainer, batch)
        g_tok, tok_loss = self.tokenizer_gradient()
        combined, conflicts = gradient_surgery(g_tok, g_rec, self.params["lam"], self.params["surgery"])
        for p, g in zip(self.tokenizer_parameters(), combined):
            p.grad = None if g is None else g.detach()
        self.tokenizer_optimizer.step()
        self.tokenizer_optimizer.zero_grad(set_to_none=True)
        report = self.runtime.refresh([self.tokenizer_name]).tables[self.tokenizer_name]
        self.update_item_tokens(trainer, self.runtime.item_tokens(self.tokenizer_name))
        density, entropy = self.usage()
        rec_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g_rec if g is not None))
        record = {
            "update": len(self.records) + 1,
            "epoch": trainer.state.step / trainer.steps_per_epoch,
            "step": trainer.state.step,
            "changed": report.changed,
            "first_changed": report.first_changed,
            "conflict_share": float(np.mean(conflicts)) if conflicts else 0.0,
            "tokenizer_loss": tok_loss,
            "rec_grad_norm": rec_norm,
            "density": density,
            "entropy": entropy,
        }
        self.records.append(record)
        log.info(
            "bloger update %d (step %d): %.1f%% of IDs changed, %.0f%% of tensors in conflict, level-1 density %.3f, entropy %.3f bits",
            record["update"],
            record["step"],
            100 * record["changed"],
            100 * record["conflict_share"],
            density[0],
            entropy[0],
        )
        return record

    def on_step_end(self, trainer: Trainer, batch: Batch, out: StepOutput) -> None:
        super().on_step_end(trainer, batch, out)
        in_epoch = (trainer.state.step - 1) % trainer.steps_per_epoch + 1
        if in_epoch in self.update_steps:
            self.tokenizer_step(trainer, batch)

    # ------------------------------------------------------------------ reports
    def usage(self, ids: np.ndarray | None = None) -> tuple[list[float], list[float]]:
        """(density, entropy) per code level of ``ids`` (default: the current hard IDs)."""
        ids = self.runtime.hard_ids(self.tokenizer_name).cpu().numpy() if ids is None else ids
        return code_usage(ids, self.runtime.levels, self.runtime.codebook_size)

    def logs(self, trainer: Trainer, out: StepOutput) -> dict[str, float]:
        logs = super().logs(trainer, out)
        if self.records:
            last = self.records[-1]
            logs.update(
                bloger_changed=last["changed"],
                bloger_conflict_share=last["conflict_share"],
                bloger_density_1=last["density"][0],
                bloger_entropy_1=last["entropy"][0],
            )
        return logs

    def summary(self, trainer: Trainer) -> dict[str, Any]:
        """Updates, density/entropy of the starting and of the final (best.pt's) IDs, peak memory."""
        after = None
        if trainer.best_path.exists():
            tokens = read_checkpoint(trainer.best_path).get("item_tokens")
            if tokens is not None:
                after = self.usage(self.vocab.tokens_to_codes(torch.as_tensor(tokens).numpy()))
        return {
            "bloger_updates": [dict(r) for r in self.records],
            "bloger_before": {"density": self.before[0], "entropy": self.before[1]},
            "bloger_after": None if after is None else {"density": after[0], "entropy": after[1]},
            "peak_rss_mb": peak_rss_mb(),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "bloger": {
                "tokenizer": {k: v.detach().clone() for k, v in self.tokenizer.state_dict().items()},
                "tokenizer_optimizer": self.tokenizer_optimizer.state_dict(),
                "ids": self.runtime.ids_state(self.tokenizer_name),
                "records": [dict(r) for r in self.records],
                "before": [list(self.before[0]), list(self.before[1])],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        own = state["bloger"]
        self.tokenizer.load_state_dict(own["tokenizer"])
        self.tokenizer_optimizer.load_state_dict(own["tokenizer_optimizer"])
        self.runtime.load_ids_state(own["ids"], self.tokenizer_name)
        self.records = [dict(r) for r in own["records"]]
        self.before = (list(own["before"][0]), list(own["before"][1]))


def kept_tokenizer_path(paths: ArtifactPaths, name: str) -> Path:
    """The kept tokenizer file of ``name`` (data/tokenizer/kept/<name>.pt) BLOGER trains on."""
    path = paths.tokenizer_dir / "kept" / f"{name}.pt"
    if not path.exists():
        raise MissingInputError(path, f"the kept tokenizer {name!r} BLOGER trains on; rerun the train-tokenizer stage")
    return path


def runtime_tokenizer(paths: ArtifactPaths, item_ids: np.ndarray, table_ids: np.ndarray, name: str) -> RuntimeItemTokenizer:
    """The runtime tokenizer BLOGER trains: the kept RQ-VAE ``name`` over the item vectors, with
    the collision handling the ID table was made with (``ids.collision``: read off the table, one
    token longer than the codebook levels under ``dedup_level``), so it starts from the table's IDs."""
    from genrec_core.artifacts import load_item_vectors
    from genrec_core.tokenizers.runtime import DEFAULT_DEDUP_SIZE, RuntimeItemTokenizer
    from genrec_core.tokenizers.training import load_tokenizer

    tokenizer = load_tokenizer(kept_tokenizer_path(paths, name))
    vec_ids, vectors = load_item_vectors(paths.embeddings)
    if not np.array_equal(vec_ids, item_ids):
        raise InputFormatError(paths.embeddings, "the item vectors do not list the ID table's items")
    dedup = table_ids.shape[1] == int(tokenizer.levels) + 1
    dedup_size = max(DEFAULT_DEDUP_SIZE, 2 * int(table_ids[:, -1].max()) + 2) if dedup else None
    runtime = RuntimeItemTokenizer([(name, tokenizer)], vectors.copy(), "dedup_level" if dedup else "reassign_last", dedup_size=dedup_size)
    if not np.array_equal(runtime.hard_ids(name).cpu().numpy(), table_ids):
        log.warning(
            "tokenizer %s: the runtime IDs differ from %s for %.2f%% of the items (float rounding); BLOGER starts from the runtime ones",
            name,
            paths.id_table,
            100 * float(np.any(runtime.hard_ids(name).cpu().numpy() != table_ids, axis=1).mean()),
        )
    return runtime
