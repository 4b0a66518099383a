"""``Method``: how a model is trained. The defaults are plain (TIGER) training; a method overrides
what it owns.

What the trainer calls, in order (``trainer`` gives ``model``, ``train_model`` (the module forward
passes run through), ``params``, ``device``, ``seed``, ``state`` with the step and epoch counters):

- ``setup(trainer)`` once, before a resume: move what the method holds to the device, give a
  generative model its item IDs (``set_model_items``), build the optimiser(s) and scheduler(s)
  (``build_optimizer``: AdamW over the model's parameters plus ``extra_parameters`` without weight
  decay; ``build_scheduler``: warm-up + cosine);
- ``on_fit_start``, then per epoch ``on_epoch_start``; per batch ``collate`` (tokenization;
  ``tokenizer_index`` picks a tokenizer per example), ``step`` (forward, backward(s), clipping,
  optimiser and scheduler steps; returns a ``StepOutput``), the trainer's step counter + 1, then
  ``on_step_end``; ``logs`` when the step is logged; ``on_epoch_end`` before validation, which
  batches with ``eval_collate``, and ``after_evaluate``;
- ``state_dict``/``load_state_dict``: everything that evolves (optimisers, schedulers, the loss
  strategy, the method's own counters or distributions) goes into ``last.pt``, so a run resumed
  mid-epoch ends bit-identical to an uninterrupted one. Random draws should come from a generator
  seeded by ``(trainer.seed, trainer.state.step)`` (as ``history_dropout`` does) or from the global
  RNGs, which ``last.pt`` saves.

``compute_losses(trainer, batch)`` returns a ``LossOutput`` whose ``terms`` are named per-example losses
([B], with gradients), so a method can back-propagate any of them over any subset of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from genrec_core.config import check_param_dict
from genrec_core.io import write_text
from genrec_core.methods.trainer_view import TrainerView as Trainer  # what a method may use of the trainer
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.data import Batch, ExampleArrays
from genrec_core.recommender.interface import autocast_for, training_precision
from genrec_core.recommender.losses import LossOutput
from genrec_core.recommender.optim import fused_adamw_kwargs, warmup_cosine
from genrec_core.recommender.packing import chunk_groups, linked_examples, pack_batch


@dataclass
class MethodContext:
    """What a method is built from (the train stage gathers it)."""

    encoder: Any  # SequenceEncoder (semantic IDs, one or several tables) or ItemIdEncoder: collate(examples, index, ...)
    loss: nn.Module  # the token-weighting strategy (recommender.loss) or SequentialLoss (item-ID models)
    extra: dict[str, Any] = field(default_factory=dict)  # whatever else a method needs (e.g. tokenizers)


@dataclass
class PreparedIds:
    """The semantic IDs a generative run trains on (``Method.prepare_ids`` makes them)."""

    vocab: Any  # SemanticIdVocab
    tables: torch.Tensor  # [T, N, L] token ids of every table the run may use
    names: list[str]  # the tables' tokenizer names
    default: int  # the table validation, checkpoints and the trie use
    extra: dict[str, Any] = field(default_factory=dict)  # MethodContext.extra (e.g. a runtime tokenizer)
    inputs: dict[str, Any] = field(default_factory=dict)  # further files (Paths) the fingerprint hashes

    @property
    def item_tokens(self) -> torch.Tensor:
        """[N, L] the default table (a copy: the model and checkpoints keep their own)."""
        return self.tables[self.default].clone()

    @property
    def tokenizer(self) -> str:
        return self.names[self.default]


#: header of ``influence.csv``: the influence of a method's data groups per stage end (MTGRec's
#: tokenizers); a method that computes none writes the header alone, so the output always exists
INFLUENCE_COLUMNS = "stage,epoch,step,tokenizer,influence,cumulative,p"


def finetune_recipe(rp: Any, lr: float, epochs: int) -> Any:
    """The recommender params of a fine-tuning run (MTGRec per tokenizer, SPEC 7; BLOGER on its
    final IDs): plain training, no method params, AdamW at ``lr`` with a cosine schedule to 0 and
    no warm-up, ``epochs`` epochs, early stopping and everything else as ``rp``."""
    return replace(rp, method="plain", method_params={}, lr=lr, warmup_steps=0, lr_schedule="cosine", min_lr_ratio=0.0, epochs=epochs)


@dataclass
class StepOutput:
    """What one optimisation step hands back to the trainer."""

    loss: torch.Tensor  # scalar: averaged over the logging window into train/loss
    losses: LossOutput | None = None  # the step's named per-example losses
    grad_norm: torch.Tensor | None = None  # pre-clipping gradient norm (read only when logged)
    logs: dict[str, Any] = field(default_factory=dict)  # further values for ``logs`` (floats or tensors)


class Method:
    """Plain training: the model's teacher-forced logits, the loss strategy, one AdamW step."""

    name: ClassVar[str] = ""
    #: every accepted ``recommender.method_params`` key with its default (values keep its type)
    param_defaults: ClassVar[dict[str, Any]] = {}
    #: True: the model trains on one ID table that stays fixed, so an item can be found by its ID
    #: (``recommender.item_embedding``); a method that mixes several tables or changes the IDs says False
    fixed_item_ids: ClassVar[bool] = True

    def __init__(self, context: MethodContext, **params: Any):
        self.params = self.check_params(params)
        self.encoder = context.encoder
        self.loss_strategy = context.loss
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    # ------------------------------------------------------------------ params
    @classmethod
    def check_params(cls, method_params: dict[str, Any] | None, prefix: str = "recommender.method_params") -> dict[str, Any]:
        """Fill defaults and type-check; raise ParamError naming the offending key."""
        out = check_param_dict(cls.param_defaults, method_params, prefix, f"method {cls.name!r}")
        cls.validate_params(out, prefix)
        return out

    @classmethod
    def validate_params(cls, params: dict[str, Any], prefix: str) -> None:
        """Value checks of a subclass (ranges); raise ParamError."""

    # ------------------------------------------------------------------ pipeline hooks
    # What the stages ask of a method (class-level where asked before a run exists), so no stage
    # names a method: how the IDs are prepared, what runs after fit, which outputs it writes,
    # what the finetune stage's slots do and which checkpoint the evaluate stage tests.

    @classmethod
    def prepare_ids(cls, params: Any, paths: ArtifactPaths, item_ids: np.ndarray, tables: dict[str, np.ndarray], chosen: str) -> PreparedIds:
        """The IDs to train on: every table of the ID table (one shared vocabulary), ``chosen``
        the default (validation, checkpoints, trie)."""
        from genrec_core.recommender.vocab import SemanticIdVocab

        names = list(tables)
        vocab = SemanticIdVocab.from_codes(tables.values())  # shared by every tokenizer
        stacked = torch.from_numpy(np.stack([vocab.codes_to_tokens(tables[n]) for n in names]))  # [T, N, L]
        return PreparedIds(vocab, stacked, names, names.index(chosen), extra={"reports_dir": paths.method_reports_dir})

    #: True: the method's model is tested only after fine-tuning per table (``finetune_plan``) and
    #: selection (the finetune and select_tokenizer stages must have run: evaluate refuses
    #: ``data/recommender/best.pt`` alone); False: the finetune slots are no-ops
    tests_selected_model: ClassVar[bool] = False

    @classmethod
    def finetune_plan(cls, params: Any, paths: ArtifactPaths, names: list[str]) -> list[tuple[int, float]]:
        """The tables (indices into ``names``) the finetune stage fine-tunes, slot 0 first, each with
        the score the order comes from; empty: every slot is a no-op and the pre-trained model is
        tested (the default)."""
        return []

    @classmethod
    def finetune_params(cls, rp: Any) -> Any:
        """The recommender params of the finetune stage's runs (``finetune_recipe``)."""
        raise NotImplementedError(f"method {cls.name!r} fine-tunes nothing (finetune_plan is empty)")

    def final_finetune_params(self, rp: Any) -> Any | None:
        """Params of a fine-tuning on the final IDs after fit (``best.pt``'s, kept only if it beats
        the run on validation), or None (the default: none)."""
        return None

    def write_outputs(self, trainer: Trainer, paths: ArtifactPaths, ids: PreparedIds) -> None:
        """The train stage's outputs besides the trainer's (rank 0, after fit): ``influence.csv``
        (header only unless the method computes influence) and no final ID table (a table left by
        an earlier run in this workspace would not describe this model)."""
        write_text(INFLUENCE_COLUMNS + "\n", paths.influence_csv)
        paths.final_id_table.unlink(missing_ok=True)

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: Trainer) -> None:
        self.loss_strategy = self.loss_strategy.to(trainer.device)
        self.set_model_items(trainer.model)
        self.optimizer = self.build_optimizer(trainer)
        self.scheduler = self.build_scheduler(trainer, self.optimizer)

    def set_model_items(self, model: nn.Module) -> None:
        """Give a generative model the item IDs it ranks over: the encoder's default table."""
        tables = getattr(self.encoder, "tables", None)
        if tables is not None and hasattr(model, "set_items"):
            model.set_items(tables[self.encoder.default_tokenizer])

    def update_item_tokens(self, trainer: Trainer, item_tokens: torch.Tensor) -> None:
        """The IDs changed (a runtime tokenizer's ``refresh``): ``item_tokens`` [N, L] (the
        default table) or [T, N, L] (every table) of token ids replace the encoder's tables, so
        the next batches are tokenized with them, and the trainer rebuilds the model's trie and
        the item tokens it saves into checkpoints (``Trainer.set_item_tokens``). The vocabulary
        cannot change (size it from the codebook). Loss strategies built from the old IDs
        (igd, front_greater, frequency) keep their tables."""
        tokens = torch.as_tensor(item_tokens, dtype=torch.long).cpu()
        tables = getattr(self.encoder, "tables", None)
        if tables is None:
            raise TypeError(f"{type(self.encoder).__name__} has no ID tables to update")
        if tokens.dim() == 2:
            new_tables = tables.clone()
            new_tables[self.encoder.default_tokenizer] = tokens
        else:
            new_tables = tokens.contiguous()
        if new_tables.shape != tables.shape:
            raise ValueError(f"new ID tables of shape {tuple(new_tables.shape)}, the encoder's are {tuple(tables.shape)}")
        self.encoder.tables = new_tables
        self.tables_changed = True
        trainer.set_item_tokens(new_tables[self.encoder.default_tokenizer])

    def extra_parameters(self, trainer: Trainer) -> list[nn.Parameter]:
        """Parameters besides the model's that the optimiser updates without weight decay
        (default: the loss strategy's, e.g. multi_target's lambdas)."""
        return list(self.loss_strategy.parameters())

    def build_optimizer(self, trainer: Trainer) -> torch.optim.Optimizer:
        p = trainer.params
        groups = [{"params": [q for q in trainer.model.parameters() if q.requires_grad], "weight_decay": p.weight_decay}]
        extra = self.extra_parameters(trainer)
        if extra:
            groups.append({"params": extra, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=p.lr, **fused_adamw_kwargs(trainer.device))

    def build_scheduler(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        p, total = trainer.params, trainer.state.total_steps
        warmup = min(p.warmup_steps, max(0, total - 1))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total, p.min_lr_ratio, p.lr_schedule))

    def optimised_parameters(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    # ------------------------------------------------------------------ tokenization
    def tokenizer_index(self, trainer: Trainer, examples: ExampleArrays, index: np.ndarray) -> torch.Tensor | None:
        """[B] the tokenizer (row of the encoder's tables) of each training example; None: the default."""
        return None

    def collate(self, trainer: Trainer, examples: ExampleArrays, index: np.ndarray, part: slice | None = None) -> Batch:
        """The training batch of ``examples[index]`` for the coming step (``trainer.state.step``);
        with ``history_dropout`` its histories are thinned by a generator seeded from (seed, step),
        so the draw does not depend on other RNG use and survives resume. ``part``: this rank's
        positions of the global batch ``index`` under DDP; the random draws are made for the whole
        global batch and then cut, so a rank's examples see what one process would draw for them."""
        index = np.asarray(index, dtype=np.int64)
        whole = part is None or (part.start in (0, None) and part.stop in (len(index), None))
        tokenizer_index = self.tokenizer_index(trainer, examples, index)
        prob = float(trainer.params.history_dropout)
        pack = trainer.pack_examples  # the trainer packs (a model that supports it, with pack_examples)
        if not whole:
            return self.collate_part(trainer, examples, index, part, tokenizer_index, prob, pack)
        kwargs: dict[str, Any] = {}
        if tokenizer_index is not None:
            kwargs["tokenizer_index"] = tokenizer_index
        if pack:
            return self.packed_collate(trainer, examples, index, pack, prob, tokenizer_index)
        if prob > 0.0:
            kwargs.update(history_dropout=prob, rng=np.random.default_rng([trainer.seed, trainer.state.step]))
        return self.encoder.collate(examples, index, **kwargs)

    def collate_part(
        self, trainer: Trainer, examples: ExampleArrays, index: np.ndarray, part: slice, tokenizer_index: torch.Tensor | None, prob: float, pack: int
    ) -> Batch:
        """``collate`` of the rank's ``index[part]``: the global draws (tokenizers, the
        ``history_dropout`` keep mask, the one ``padded_with_dropout`` would draw) cut to it."""
        shard = index[part]
        keep = None
        if prob > 0.0:
            keep = self.dropout_keep(trainer, examples, index, prob)[part][:, : int(examples.lengths[shard].max())]
        tokens = None if tokenizer_index is None else tokenizer_index[part]
        if pack:
            return self.packed_collate(trainer, examples, shard, pack, prob, tokens, keep=keep, band=int(examples.lengths[index].max()))
        kwargs: dict[str, Any] = {} if tokens is None else {"tokenizer_index": tokens}
        if keep is not None:
            kwargs["keep"] = keep
        return self.encoder.collate(examples, shard, **kwargs)

    @staticmethod
    def dropout_keep(trainer: Trainer, examples: ExampleArrays, index: np.ndarray, prob: float) -> np.ndarray:
        """[B, H] the ``history_dropout`` keep mask of the batch ``index`` for the coming step (the
        draw ``padded_with_dropout`` makes, from a generator seeded by (seed, step))."""
        lengths = examples.lengths[index]
        return examples.dropout_keep(lengths, int(lengths.max()), prob, np.random.default_rng([trainer.seed, trainer.state.step]))

    def packed_collate(
        self,
        trainer: Trainer,
        examples: ExampleArrays,
        index: np.ndarray,
        pack: int,
        prob: float,
        tokenizer_index: torch.Tensor | None,
        keep: np.ndarray | None = None,
        band: int | None = None,
    ) -> Batch:
        """``collate`` with ``recommender.pack_examples``: the batch plus how its examples share
        their items (``packing.pack_batch``); ``history_dropout`` thins each example's window
        (``keep``: a mask drawn already; ``band``: the global batch's, ``collate_part``).
        ``tokenizer_index``: every example of a chunk must have its chunk's tokenizer (a chunk
        holds its items once, so one ID table; ``chunk_tokenizers``)."""
        index = np.asarray(index, dtype=np.int64)
        if keep is None and prob > 0.0:
            keep = self.dropout_keep(trainer, examples, index, prob)
        linked = self.linked(trainer, examples)
        item_tokens = self.encoder.item_tokens
        if tokenizer_index is not None:
            group = chunk_groups(index, linked, pack)
            per_chunk = tokenizer_index[np.flatnonzero(np.diff(group, prepend=-1))]
            if not torch.equal(per_chunk[torch.from_numpy(group)], tokenizer_index):
                raise ValueError(f"method {self.name!r}: the examples of one packed chunk drew different tokenizers (draw one per chunk)")
            item_tokens = lambda items: self.encoder.item_tokens(items, per_chunk)  # noqa: E731 - row g is chunk g
        batch = self.encoder.collate(examples, index, keep=keep, tokenizer_index=tokenizer_index)
        return replace(batch, packing=pack_batch(examples, index, linked, pack, item_tokens, keep, band))

    @staticmethod
    def linked(trainer: Trainer, examples: ExampleArrays) -> np.ndarray:
        """[E] ``packing.linked_examples`` of ``examples`` (the packed sampler's, for the training split)."""
        linked = trainer.linked_examples if examples is trainer.train_examples else None
        return linked_examples(examples) if linked is None else linked

    def chunk_of_examples(self, trainer: Trainer, examples: ExampleArrays, index: np.ndarray) -> np.ndarray | None:
        """[B] the packed chunk of each example of the training batch ``index`` (``chunk_groups``),
        or None when the trainer does not pack: what a method that draws per example must draw
        per chunk instead."""
        pack = trainer.pack_examples
        if not pack:
            return None
        return chunk_groups(np.asarray(index, dtype=np.int64), self.linked(trainer, examples), pack)

    def eval_collate(self, examples: ExampleArrays, index: np.ndarray) -> Batch:
        """A validation batch (the default tokenizer, nothing dropped)."""
        return self.encoder.collate(examples, index)

    # ------------------------------------------------------------------ losses and the step
    def compute_losses(self, trainer: Trainer, batch: Batch) -> LossOutput:
        """Forward pass(es) and the loss strategy: the scalar, its named per-example terms, logs."""
        model = trainer.train_model
        soft = batch.soft_inputs()  # empty unless a method set soft inputs (labels stay hard)
        if batch.packing is not None:  # soft inputs packed: inputs_embeds holds the chunk items' (DecoderOnlyRecommender.packed_forward)
            logits = model(
                batch.input_ids, batch.attention_mask, batch.labels, packing=batch.packing, **soft
            )  # through train_model: DDP all-reduces its gradients
        else:
            logits = model(batch.input_ids, batch.attention_mask, batch.labels, **soft)
        extra = None
        if self.loss_strategy.extra_forward_needed:
            ids, mask = self.loss_strategy.extra_inputs(batch)
            extra_soft = {k: v for k, v in soft.items() if k == "decoder_inputs_embeds"}  # the counterfactual input is hard
            extra = model(ids, mask, batch.labels, **extra_soft)
        return self.loss_strategy(logits, batch.labels, batch, trainer.state, extra_logits=extra)

    def step(self, trainer: Trainer, batch: Batch) -> StepOutput:
        """One optimisation step: losses (under ``recommender.precision``'s autocast), backward, clipping, AdamW, scheduler."""
        with autocast_for(trainer.device, training_precision(trainer.params)):
            out = self.compute_losses(trainer, batch)
        scale = trainer.loss_scale  # DDP: this rank's share of the global batch x world
        (out.loss * scale if scale != 1.0 else out.loss).backward()
        grad_norm = self.clip_gradients(trainer)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutput(out.loss, out, grad_norm, out.logs)

    def clip_gradients(self, trainer: Trainer) -> torch.Tensor | None:
        """Clip the optimised parameters' gradients to ``grad_clip`` (0: off); the norm before clipping."""
        if trainer.params.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.optimised_parameters(), trainer.params.grad_clip)
        return None

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_step_end(self, trainer: Trainer, batch: Batch, out: StepOutput) -> None:
        """After the trainer counted the step (``trainer.state.step`` = steps done): curricula."""
        self.loss_strategy.on_step(trainer.state.step, trainer.state.total_steps)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """After the epoch's last step, before validation and the epoch checkpoint."""

    def after_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        pass

    # ------------------------------------------------------------------ logs and state
    def logs(self, trainer: Trainer, out: StepOutput) -> dict[str, float]:
        """Values logged as ``train/<key>`` beside ``train/loss`` every ``log_every`` steps."""
        logs = {"lr": self.scheduler.get_last_lr()[0]}
        if out.grad_norm is not None:
            logs["grad_norm"] = float(out.grad_norm)
        logs.update({k: float(v) for k, v in out.logs.items()})
        return logs

    def summary(self, trainer: Trainer) -> dict[str, Any]:
        """Extra keys for the training summary (summary.json)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "loss_strategy": self.loss_strategy.state_dict()}
        if getattr(self, "tables_changed", False):  # IDs changed during training (update_item_tokens)
            state["encoder_tables"] = self.encoder.tables.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_strategy.load_state_dict(state["loss_strategy"])
        if "encoder_tables" in state:
            self.encoder.tables = state["encoder_tables"].clone()
            self.tables_changed = True


# --------------------------------------------------------------------------- selection among fine-tuned models


def select_tokenizer(valid: dict[Any, dict[str, float]], metric: str = "ndcg@10") -> Any:
    """The fine-tuned tokenizer best on validation ``metric`` (ties: the first given); only that
    one is tested (the released script's per-metric maximum over tokenizers on test is not done)."""
    if not valid:
        raise ValueError("no fine-tuned tokenizer to select from")
    best = max(valid.items(), key=lambda kv: kv[1].get(metric, float("-inf")))  # max keeps the first of ties
    return best[0]


def finetune_table(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    """``finetune.csv``: one row per model (stage ``pretrain``, then ``finetune`` per slot) with
    its validation ``metrics`` at its best epoch and whether it is the selected one."""
    columns = ["stage", "slot", "tokenizer", "cumulative_influence", "best_epoch", *metrics, "selected"]
    lines = [",".join(columns)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else str(r.get(c)) for c in columns))
    return "\n".join(lines) + "\n"
