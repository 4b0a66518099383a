"""The training loop of every recommender: epochs, evaluation, early stopping, checkpoints, signals.

What is trained how is the method's (``genrec_core.methods``, ``recommender.method``): the trainer
asks it for each training batch (``collate``), runs its optimisation ``step``, counts the step and
logs what it reports, and saves its ``state_dict`` in ``last.pt``; nothing here is specific to a
method (MTGRec's tokenizer sampling and influence scores, BLOGER's look-ahead and tokenizer
updates live in their methods). Validation ranks with the model's own ``rank`` (the interface
every recommender shares, ``interface.py``) on batches from the method's ``eval_collate``.
``train_model`` is the module training forward passes run through (the DDP wrapper under torchrun).

Data parallel (``torchrun``, ``recommender.processes``; ``distributed.py``): the sampler stays
global and seeded, so every rank draws the same global batches; each rank collates its contiguous
part (``distributed.shard_slice``; packed batches are cut between chunks) and scales its loss by
``shard_size * world / batch_size``. The loss strategies average per-example losses over the
batch, so DDP's gradient average is the gradient of the whole batch's mean loss: one process with
the same global batch and seed gives the same run up to float summation order. Clipping and the
optimiser step then run on identical gradients on every rank. Rank 0 alone validates (its metrics
are broadcast, so early stopping and best.pt decisions agree) and writes (last.pt, best.pt,
dvclive, summary.json, valid_curve.csv); every rank resumes from last.pt. A signal on any rank
stops all of them after the same step (an all-reduced flag). Dropout masks come from each rank's
own torch RNG, which last.pt saves for rank 0 only: with dropout > 0 a DDP run is a fair
stochastic run but neither bit-equal to one process nor bit-identical across a resume.

Determinism and resumption: on the CPU, with one seed, a run is a pure function of its inputs.
``last.pt`` holds everything that evolves (model, the method's optimisers, schedulers, loss
strategy and own state, counters, python/numpy/torch RNG states, the sampler position), so a run
resumed from it, even mid-epoch, ends with bit-identical weights and metrics. SIGINT/SIGTERM finish
the current step, save ``last.pt`` and raise ``TrainingInterrupted`` (the CLI exits non-zero).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from genrec_core.config import RecommenderParams
from genrec_core.errors import GenrecError
from genrec_core.io import write_json, write_text
from genrec_core.recommender import checkpoint_format, distributed
from genrec_core.recommender.data import Batch, BucketBatchSampler, ExampleArrays, seeded_subset
from genrec_core.recommender.interface import rank_examples
from genrec_core.recommender.model_spec import DEFAULT_MODEL, model_spec
from genrec_core.recommender.optim import fused_adamw_kwargs, warmup_cosine  # noqa: F401 - re-exported for older imports
from genrec_core.recommender.packing import AUTO_LENGTH_PADDING, PackedBatchSampler
from genrec_core.runtime import resolve_device, shared_cpu_warning

if TYPE_CHECKING:
    from genrec_core.methods.base import Method, StepOutput

log = logging.getLogger(__name__)

VALID_KS = (1, 5, 10)
SELECTION_METRIC = "ndcg@10"

#: ``recommender.max_eval_users: auto``: every validation user up to this many, a fixed seeded
#: sample of this many above. Validation only picks the epoch (early stopping, best.pt); the test
#: split always ranks every user. Why 5,000: NDCG@10 is a mean of per-user scores in [0, 1], mostly
#: 0 (ml-100k after 4 epochs: per-user sd 0.20 at a mean of 0.071, reports/benchmarks/valid_sample.md),
#: so a sample of n of N users estimates the all-user value with a standard error of about
#: sd / sqrt(n) x sqrt(1 - n/N): at n = 5,000 of Beauty's 22,363, 0.20 / 71 x 0.88 = 0.0025, ~3.5% of
#: such a mean (more where the mean is lower: hits are rarer). Choosing the epoch compares epochs on
#: the same users, whose scores at two epochs are correlated: the sd of the per-user difference
#: between the two best epochs was 0.135 (0.0017 at 5,000), so the sample's choice differs from the
#: all-user choice only between epochs whose all-user values are that close. Cost: 5,000 users of a
#: beam-20 search take ~12 s a validation on Beauty against ~55 s for all 22,363 (Yelp: 30,431 users),
#: ~17% of a ~250 s one-thread epoch there; below 5,000 users a validation is cheap enough to keep all.
AUTO_EVAL_USERS = 5000
#: The auto sample's own seed: not the run's ``seed``, so runs over several seeds select their epoch
#: on the same users, and drawn from a generator of its own (``seeded_subset``), so it does not depend
#: on what the run draws from the global RNGs.
AUTO_EVAL_SAMPLE_SEED = 0


def eval_user_index(n: int, max_eval_users: int | str, seed: int) -> tuple[np.ndarray, str]:
    """(rows of the ``n`` validation users to validate on, ascending; how they were chosen).

    ``max_eval_users``: ``auto`` = all when ``n <= AUTO_EVAL_USERS``, else a sample of
    ``AUTO_EVAL_USERS`` seeded by ``AUTO_EVAL_SAMPLE_SEED``; 0 = all; N = a sample of N seeded by
    ``seed`` (all when N >= n). The same users at every epoch: nothing here draws from the global RNGs."""
    if max_eval_users == "auto":
        if n <= AUTO_EVAL_USERS:
            return np.arange(n, dtype=np.int64), f"auto: all, <= {AUTO_EVAL_USERS}"
        return seeded_subset(n, AUTO_EVAL_USERS, AUTO_EVAL_SAMPLE_SEED), "auto sample"
    if isinstance(max_eval_users, bool) or not isinstance(max_eval_users, int) or max_eval_users < 0:
        from genrec_core.errors import ParamError

        raise ParamError("recommender.max_eval_users", f"must be auto, 0 (every validation user) or a positive number of users, got {max_eval_users!r}")
    index = seeded_subset(n, max_eval_users, seed)
    return index, "all" if len(index) == n else f"sample: max_eval_users={max_eval_users}"


#: Callables ``fn(trainer, ranks)`` run after every validation of ``trainer.valid_examples`` with
#: each validation user's 1-based rank of its target (0: not ranked), in ``valid_examples`` order.
#: Empty in the pipeline; benchmarks/valid_sample.py records the per-user results here. They must
#: not change the trainer or draw random numbers (the run stays a pure function of its inputs).
VALIDATION_OBSERVERS: list[Any] = []


class TrainingInterrupted(GenrecError):
    """A signal stopped training after a checkpoint was saved; rerunning the stage resumes."""


@dataclass
class TrainState:
    """Counters that evolve during training (saved in last.pt)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps done
    total_steps: int = 0
    best_score: float = -1.0  # best validation NDCG@10 (-1: no evaluation yet)
    best_epoch: int = 0
    bad_evals: int = 0  # evaluations since the best one (early stopping)
    finished: bool = False
    stopped_early: bool = False
    seconds: float = 0.0  # training wall time over all (resumed) runs
    evals: list[dict[str, float]] = field(default_factory=list)  # validation metrics per evaluation
    # wall-clock per evaluation: {epoch, step, seconds (training + validation so far, over resumed
    # runs too), train_seconds (that epoch's training alone)}; kept apart from the deterministic evals
    eval_times: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def validation_metrics(items: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Hit@K / NDCG@K (K = 1, 5, 10) of ranked item lists, SPEC 5 definitions."""
    from genrec_core.evaluation.metrics import hit_ndcg, target_ranks

    return hit_ndcg(target_ranks(items, targets), VALID_KS)


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _truncate_live_plots(live_dir: Path, step: int) -> None:
    """Drop dvclive rows logged after ``step`` (a crash after the last checkpoint), so a resumed
    run's curves do not hold the lost steps twice."""
    plots = live_dir / "plots" / "metrics"
    if not plots.is_dir():
        return
    for tsv in plots.rglob("*.tsv"):
        lines = tsv.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header:
            continue
        col = header.index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split("\t")[col]) <= step]
        if len(kept) != len(lines):
            tsv.write_text("\n".join(kept) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- trainer


#: Seconds between progress lines when training logs to a file (no progress bar).
PROGRESS_EVERY_S = 60.0


class ProgressLines:
    """Training progress as log lines when no progress bar is shown (output to a file or a pipe):
    about every ``PROGRESS_EVERY_S`` seconds, the epoch's step, examples/s, the last batch's loss
    and the time the epoch still needs at that rate."""

    def __init__(self, epoch: int, epochs: int, batches: int, done: int):
        self.epoch, self.epochs, self.batches, self.done = epoch, epochs, batches, done
        self.timed = self.examples = 0
        self.t0 = self.last = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.last >= PROGRESS_EVERY_S

    def step(self, examples: int, loss: float | None) -> None:
        """One batch of ``examples`` done; ``loss`` only when a line is due (``due()``)."""
        self.done += 1
        self.timed += 1
        self.examples += examples
        if loss is None:
            return
        self.last = time.perf_counter()
        elapsed = max(self.last - self.t0, 1e-9)
        log.info(
            "epoch %d/%d: step %d/%d, %.0f examples/s, loss %.4f, about %.0f s left in the epoch",
            self.epoch,
            self.epochs,
            self.done,
            self.batches,
            self.examples / elapsed,
            loss,
            (self.batches - self.done) * elapsed / self.timed,
        )


def epoch_line(
    epoch: int, epochs: int, seconds: float, train_seconds: float, total_seconds: float, metrics: dict[str, float] | None, stopped_early: bool = False
) -> str:
    """The log line that closes an epoch: the epoch's own seconds (training and, when it validated,
    validation), the run's total apart from them (over resumed runs too: a bare cumulative figure
    read like the epoch's own), the epochs still to come at most (early stopping may end sooner)
    with their time at the run's mean pace, and the validation metrics when there are any."""
    own = f"train {train_seconds:.0f} s, valid {seconds - train_seconds:.0f} s" if metrics is not None else f"train {train_seconds:.0f} s, no validation"
    line = f"epoch {epoch}/{epochs}: {seconds:.0f} s ({own}); total {total_seconds:.0f} s"
    if stopped_early:
        line += "; stopping early (recommender.patience)"
    elif left := epochs - epoch:
        line += f"; at most {left} epoch{'s' if left > 1 else ''} left, ~{left * total_seconds / epoch:.0f} s at this pace"
    if metrics:
        line += ": valid " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    return line


class Trainer:
    """The loop around a method: early stopping on validation ``select_metric``, resumable checkpoints.

    ``model`` is any recommender (``interface.Recommender``: ``rank`` ranks validation users);
    ``method`` (``genrec_core.methods.build_method``) trains it. ``checkpoint_meta`` (plain data:
    params, vocab, tokenizer name, item tokens) is stored in ``best.pt`` so the evaluate stage can
    rebuild the model from that file alone.
    """

    def __init__(
        self,
        model: nn.Module,
        params: RecommenderParams,
        method: Method,
        train: ExampleArrays,
        valid: ExampleArrays,
        *,
        checkpoint_dir: str | Path,
        reports_dir: str | Path,
        seed: int,
        fingerprint: str,
        fingerprint_info: dict[str, Any] | None = None,
        checkpoint_meta: dict[str, Any] | None = None,
        device: str | None = None,
        progress: bool = True,
        use_dvclive: bool = True,
    ):
        self.params = params
        if getattr(params, "threads", 0):
            torch.set_num_threads(params.threads)
        self.device = distributed.device_for(resolve_device(device or params.device))
        if torch.device(self.device).type == "cpu" and (warning := shared_cpu_warning(torch.get_num_threads())):
            log.warning("%s", warning)
        distributed.init(self.device)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.model = model.to(self.device)
        self.method = method
        self.train_examples = train
        self.valid_index, how = eval_user_index(len(valid), getattr(params, "max_eval_users", 0), seed)
        self.valid_examples = valid.subset(self.valid_index)
        #: e.g. "5000 of 22363 (auto sample)": summary.json's valid_users_chosen, logged at start
        self.valid_users_note = f"{len(self.valid_index)} of {len(valid)} ({how})"
        log.info("valid users: %s", self.valid_users_note)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.reports_dir = Path(reports_dir)
        self.seed = int(seed)
        self.fingerprint = fingerprint
        self.fingerprint_info = fingerprint_info or {}
        self.checkpoint_meta = checkpoint_meta or {}
        self.progress = progress
        self.use_dvclive = use_dvclive
        pack = int(getattr(params, "pack_examples", 0)) if model_spec(getattr(params, "model", DEFAULT_MODEL)).packs else 0  # the other models ignore it
        self.pack_examples = pack  # Method.collate packs when > 0 (methods.trainer_view)
        self.sampler = (
            PackedBatchSampler(train, pack, params.batch_size, seed, order=getattr(params, "pack_order", "random"))
            if pack
            else BucketBatchSampler(train.lengths, params.batch_size, seed)
        )
        if pack:
            log.info(
                "packed batches: %s order (%s; random batches would be %.0f%% padding)",
                self.sampler.order,
                f"pack_order {params.pack_order}" if getattr(params, "pack_order", "random") != "auto" else f"auto: length above {AUTO_LENGTH_PADDING:.0%}",
                100 * self.sampler.random_padding,
            )
        self.state = TrainState(total_steps=params.epochs * len(self.sampler))
        self.train_model = self.model  # the module training forward passes run through
        if self.world > 1:
            self.train_model = self.ddp_wrapper()
        self.loss_scale = 1.0  # this rank's share of the global batch x world (Method.step)
        self.method.setup(self)  # optimisers and schedulers: before a resume loads their state
        self.live = None
        self.stop_signal: int | None = None
        self.resumed_from: str | None = None
        self.item_tokens_changed = False  # set_item_tokens was called: last.pt keeps the new IDs

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)

    @property
    def linked_examples(self) -> np.ndarray | None:
        """The packed sampler's ``linked_examples`` of the training split (None when not packing)."""
        return getattr(self.sampler, "linked", None)

    # ------------------------------------------------------------------ data parallel
    def ddp_wrapper(self) -> nn.Module:
        """DistributedDataParallel around the model (its constructor broadcasts rank 0's weights)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(self.device).index] if torch.device(self.device).type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): validates and writes checkpoints and reports."""
        return self.rank == 0

    def shard(self, index: np.ndarray) -> slice | None:
        """This rank's positions of the global batch ``index`` (None: one process, all of it);
        sets ``loss_scale``. Packed batches are cut between chunks only. A rank left without
        examples (a batch smaller than the world) runs its pass on the first example with
        weight 0, since every rank must take part in the gradient all-reduce."""
        if self.world <= 1:
            return None
        starts = None
        chunks = getattr(self.sampler, "chunks", None)
        if chunks is not None:
            starts = np.flatnonzero(np.isin(index, chunks[:, 0]))
        part = distributed.shard_slice(len(index), self.rank, self.world, starts)
        size = part.stop - part.start
        self.loss_scale = size * self.world / len(index)
        if size == 0:
            end = int(starts[1]) if starts is not None and len(starts) > 1 else 1
            part = slice(0, end)
        return part

    @contextlib.contextmanager
    def local_forward(self) -> Iterator[None]:
        """Forward passes through the plain model, not the DDP wrapper: for computations every
        rank repeats alike on the same data (MTGRec's influence gradients), no all-reduce."""
        wrapper = self.train_model
        self.train_model = self.model
        try:
            yield
        finally:
            self.train_model = wrapper

    def _reduced_stop(self) -> bool:
        """Whether any rank received a signal (all-reduced every step: all stop at the same step)."""
        if self.world > 1:
            signum = int(distributed.all_reduce_max(self.stop_signal or 0, self.device))
            self.stop_signal = signum or None
        return self.stop_signal is not None

    # ------------------------------------------------------------------ paths
    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / checkpoint_format.LAST

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / checkpoint_format.BEST

    @property
    def live_dir(self) -> Path:
        return self.reports_dir / "live"

    @property
    def summary_path(self) -> Path:
        return self.reports_dir / "summary.json"

    # ------------------------------------------------------------------ item IDs
    def set_item_tokens(self, item_tokens: torch.Tensor) -> None:
        """The item IDs changed during training (a runtime tokenizer's refresh; a method calls
        this through ``Method.update_item_tokens``): ``item_tokens`` [N, L] token ids (row = item
        id) become what the model's ``rank`` decodes to (its trie is rebuilt) and what ``best.pt``
        and ``last.pt`` store, so a checkpoint always reloads with the IDs its weights were
        trained and selected on."""
        tokens = torch.as_tensor(item_tokens, dtype=torch.long).detach().cpu().clone()
        if hasattr(self.model, "set_items"):
            self.model.set_items(tokens)
        self.checkpoint_meta["item_tokens"] = tokens
        self.item_tokens_changed = True

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Batch) -> StepOutput:
        """One optimisation step of the method on a training batch (on the device), counted."""
        out = self.method.step(self, batch)
        self.state.step += 1
        self.method.on_step_end(self, batch, out)
        return out

    def evaluate(self, examples: ExampleArrays | None = None) -> dict[str, float]:
        """Hit/NDCG@{1,5,10} of the model's ``rank`` (``eval_beam_size`` items: beam search or full
        ranking) on validation (default) or ``examples``."""
        from genrec_core.evaluation.metrics import hit_ndcg, target_ranks

        observed = examples is None and VALIDATION_OBSERVERS
        examples = self.valid_examples if examples is None else examples
        items, _ = rank_examples(self.model, examples, self.method.eval_collate, self.params.eval_beam_size, self.params.eval_batch_size, self.progress)
        ranks = target_ranks(items, examples.targets)
        if observed:
            for observer in list(VALIDATION_OBSERVERS):
                observer(self, ranks.copy())
        return hit_ndcg(ranks, VALID_KS)

    # ------------------------------------------------------------------ signals
    def handle_signal(self, signum: int, frame: Any = None) -> None:
        """First signal: stop after the current step and save; a second SIGINT aborts at once."""
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = signum
        log.warning("received %s: finishing the current step, then saving %s", signal.Signals(signum).name, self.last_path)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _interrupt(self) -> None:
        self.save_last()  # rank 0 writes; all wait for it
        name = signal.Signals(self.stop_signal).name
        raise TrainingInterrupted(f"{name} received at step {self.state.step} (epoch {self.state.epoch + 1}); saved {self.last_path}; rerun to resume")

    # ------------------------------------------------------------------ checkpoints
    def save_last(self) -> None:
        """Rank 0 writes last.pt; every rank waits for it (a resume reads it on every rank)."""
        if self.is_main:
            self._write_last()
        distributed.barrier()

    def _write_last(self) -> None:
        checkpoint_format.write_last(
            self.last_path,
            fingerprint=self.fingerprint,
            fingerprint_info=self.fingerprint_info,
            model=self.model.state_dict(),
            method=self.method.state_dict(),
            state=dataclasses.asdict(self.state),
            sampler=self.sampler.state_dict(),
            rng=rng_state(),
            item_tokens=self.checkpoint_meta["item_tokens"] if self.item_tokens_changed else None,
        )

    def save_best(self, metrics: dict[str, float]) -> None:
        if not self.is_main:
            return
        checkpoint_format.write_best(
            self.best_path,
            fingerprint=self.fingerprint,
            model=self.model.state_dict(),
            epoch=self.state.epoch,
            step=self.state.step,
            valid=dict(metrics),
            meta=self.checkpoint_meta,
        )

    def try_resume(self) -> bool:
        """Load last.pt when it exists and its fingerprint matches; otherwise start fresh (logged)."""
        if not self.last_path.exists():
            return False
        try:
            ckpt = checkpoint_format.read_checkpoint(self.last_path)  # weights_only: it may come from a shared remote
        except checkpoint_format.UnsafeCheckpoint as exc:
            raise GenrecError(
                f"{self.last_path}: holds objects other than tensors and plain values, which are not loaded (weights_only); "
                f"delete it to start training afresh ({exc.reason})"
            ) from None
        except Exception as exc:  # a foreign or damaged file must not block a fresh run
            log.warning("cannot read %s (%s); starting fresh", self.last_path, exc)
            return False
        if not checkpoint_format.resumable(ckpt, self.fingerprint):
            old = ckpt.get("fingerprint_info", {})
            changed = sorted(k for k in set(old) | set(self.fingerprint_info) if old.get(k) != self.fingerprint_info.get(k))
            log.warning("%s was written for other params or data (differs in: %s); starting fresh", self.last_path, ", ".join(changed) or "format")
            return False
        self.model.load_state_dict(ckpt["model"])
        self.method.load_state_dict(checkpoint_format.method_state(ckpt))  # either format
        self.state = TrainState(**ckpt["state"])
        self.sampler.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        if "item_tokens" in ckpt:  # the IDs had changed before the checkpoint: decode to those
            self.set_item_tokens(ckpt["item_tokens"])
        self.resumed_from = str(self.last_path)
        log.info("resumed from %s at epoch %d, step %d", self.last_path, self.state.epoch, self.state.step)
        return True

    # ------------------------------------------------------------------ logging
    def _open_live(self, resumed: bool) -> None:
        if not self.use_dvclive or not self.is_main:
            return
        from dvclive import Live

        if resumed:
            _truncate_live_plots(self.live_dir, self.state.step)
        # dvcyaml=None: the pipeline's dvc.yaml declares these outputs; dvclive must not edit it.
        self.live = Live(dir=str(self.live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)

    def _log(self, metrics: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = self.state.step
        for name, value in metrics.items():
            self.live.log_metric(name, float(value))

    def write_summary(self) -> dict[str, Any]:
        s = self.state
        summary = {
            "best_epoch": s.best_epoch,
            f"best_valid_{self.params.select_metric}": s.best_score,
            "best_valid": s.evals[[e["epoch"] for e in s.evals].index(s.best_epoch)] if s.best_epoch and s.evals else {},
            "epochs": s.epoch,
            "steps": s.step,
            "seconds": round(s.seconds, 3),
            "stopped_early": s.stopped_early,
            "device": self.device,
            "params_count": count_parameters(self.model),
            "valid_users": len(self.valid_examples),
            "valid_users_chosen": self.valid_users_note,
            "train_examples": len(self.train_examples),
            "encoder_input": self.params.encoder_input,
            "loss": self.params.loss,
            "resumed": self.resumed_from is not None,
        }
        summary.update({k: v for k, v in self.checkpoint_meta.items() if k in ("tokenizer", "model_kind", "epochs_auto")})
        if not self.is_main:  # the method's summary may write reports (MTGRec's influence.csv)
            return summary
        summary.update(self.method.summary(self))
        write_json(summary, self.summary_path)
        self.write_curve()
        return summary

    @property
    def curve_path(self) -> Path:
        return self.reports_dir / "valid_curve.csv"

    def write_curve(self) -> None:
        """Validation metrics against epoch, step and wall-clock seconds (one row per evaluation):
        the learning curve ``dvc plots`` and ``benchmarks/convergence.py`` read."""
        if not self.state.evals or not self.is_main:
            return
        times = {t["epoch"]: t for t in self.state.eval_times}
        rows = [{**times.get(e["epoch"], {}), **e} for e in self.state.evals]
        columns = ["epoch", "step", "seconds", "train_seconds"] + [k for k in self.state.evals[0] if k != "epoch"]
        lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
        write_text("\n".join(lines) + "\n", self.curve_path)

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict[str, Any]:
        """Train (resuming from last.pt when it matches), keep best.pt, write the summary."""
        resumed = self.try_resume()
        distributed.barrier()
        if self.state.finished:
            log.info("%s says training already finished; rewriting the summary only", self.last_path)
            return self.write_summary()
        self._open_live(resumed)
        self.method.on_fit_start(self)
        if self.is_main:  # what the log lines to come count against
            log.info(
                "training epochs %d to %d at most: %d batches an epoch (%d examples), validation every %d epoch(s)",
                self.state.epoch + 1,
                self.params.epochs,
                len(self.sampler),
                len(self.train_examples),
                self.params.eval_every,
            )
        try:
            with self._signals():
                self._loop()
        finally:
            if self.live is not None:
                self.live.make_summary()
                self.live.end()
        return self.write_summary()

    def _loop(self) -> None:
        p, s = self.params, self.state
        window: list[torch.Tensor] = []
        while s.epoch < p.epochs:
            epoch = s.epoch
            t0 = time.perf_counter()
            if self.sampler.epoch != epoch:
                self.sampler.set_epoch(epoch)
            self.method.on_epoch_start(self, epoch)
            self.model.train()
            bar = tqdm(
                total=len(self.sampler), initial=self.sampler.batches_done, desc=f"epoch {epoch + 1}/{p.epochs}", disable=not self.progress or None, leave=False
            )
            progress = ProgressLines(epoch + 1, p.epochs, len(self.sampler), self.sampler.batches_done) if bar.disable and self.is_main else None
            for index in self.sampler:
                part = self.shard(index)
                batch = self.method.collate(self, self.train_examples, index, part).to(self.device)
                out = self.train_step(batch)
                window.append(out.loss.detach() * (self.loss_scale / self.world))  # summed over ranks: the global mean
                bar.update(1)
                if progress is not None:
                    progress.step(len(index), float(out.loss.detach()) if progress.due() else None)
                if s.step % p.log_every == 0:
                    mean_loss = distributed.all_reduce_sum(float(torch.stack(window).mean()), self.device)
                    window.clear()
                    if not math.isfinite(mean_loss):
                        raise FloatingPointError(f"training loss is {mean_loss} at step {s.step}; lower recommender.lr or check the data")
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    self._log({"train/loss": mean_loss, **{f"train/{k}": v for k, v in self.method.logs(self, out).items()}})
                if self._reduced_stop():
                    s.seconds += time.perf_counter() - t0
                    bar.close()
                    self._interrupt()
            bar.close()
            s.epoch = epoch + 1
            self.sampler.set_epoch(s.epoch)
            self.method.on_epoch_end(self, epoch)
            train_seconds = time.perf_counter() - t0
            metrics = None
            if s.epoch % p.eval_every == 0 or s.epoch == p.epochs:
                metrics = distributed.broadcast_object(self.evaluate() if self.is_main else None)  # rank 0 validates
                # wall-clock of the run so far (training and validation, over resumed runs too):
                # the x axis of learning curves (benchmarks/convergence.py)
                elapsed = s.seconds + time.perf_counter() - t0
                s.evals.append({"epoch": s.epoch, **metrics})
                s.eval_times.append({"epoch": s.epoch, "step": s.step, "seconds": round(elapsed, 3), "train_seconds": round(train_seconds, 3)})
                self.method.after_evaluate(self, metrics)
                self._log({f"valid/{k}": v for k, v in metrics.items()})
                score = metrics[self.params.select_metric]
                if score > s.best_score:
                    s.best_score, s.best_epoch, s.bad_evals = score, s.epoch, 0
                    self.save_best(metrics)
                else:
                    s.bad_evals += 1
                self.write_curve()  # the learning curve so far, readable while training runs
                if s.bad_evals >= p.patience:
                    s.stopped_early = True
            seconds = time.perf_counter() - t0
            s.seconds += seconds
            self._log({"epoch": s.epoch, "epoch_seconds": seconds})
            if self.is_main:
                log.info("%s", epoch_line(s.epoch, p.epochs, seconds, train_seconds, s.seconds, metrics, s.stopped_early))
            if self.live is not None:
                self.live.summary[f"best/valid_{self.params.select_metric}"] = s.best_score
                self.live.summary["best/epoch"] = s.best_epoch
                self.live.make_summary()
            if s.stopped_early or s.epoch == p.epochs:
                s.finished = True
            self.save_last()
            if s.finished:
                break
            if self._reduced_stop():
                self._interrupt()
        if self.is_main and not self.best_path.exists():  # e.g. zero evaluations: still leave a usable model
            self.save_best({})
