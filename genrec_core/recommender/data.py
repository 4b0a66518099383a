"""Example tables -> token tensors for the T5 recommender (SPEC section 4).

Data stay item-level and compact (one CSR array of history item ids per split, a few bytes per
interaction) so that Amazon-scale tables fit in memory; tokens are produced on the fly in the
collate step from an item -> tokens lookup tensor. The lookup may hold several tokenizers
([T, N, L]) so a training strategy (MTGRec) can pick a tokenizer per example without reloading.

Formats (pad = 0, eos = 1, histories right-padded):
- ``tokens``: input [B, S] = the history items' tokens flattened, then eos (S = max_len*L + 1);
- ``items``: input [B, S, L] = one token group per history item, then an eos group
  ``[eos, pad, ..., pad]`` (S = max_len + 1);
- labels [B, L + 1] = the target's L tokens, then eos.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from genrec_core.errors import InputFormatError
from genrec_core.io import read_parquet
from genrec_core.recommender.vocab import EOS, PAD

ENCODER_INPUTS = ("tokens", "items")


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class ExampleArrays:
    """One split as flat arrays: example e's history is ``history[offsets[e]:offsets[e+1]]``."""

    user_ids: np.ndarray  # int32 [E]
    offsets: np.ndarray  # int64 [E + 1]
    history: np.ndarray  # int32 [sum of history lengths], oldest first
    targets: np.ndarray  # int32 [E]

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(histories [B, H] int64 right-padded with -1, lengths [B]) of the examples at ``index``."""
        index = np.asarray(index, dtype=np.int64)
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        h = int(lengths.max()) if index.size else 0
        pos = np.arange(h)
        valid = pos[None, :] < lengths[:, None]
        flat = np.where(valid, starts[:, None] + pos[None, :], 0)
        history = np.where(valid, self.history[flat] if self.history.size else 0, -1).astype(np.int64)
        return history, lengths

    def padded_with_dropout(self, index: np.ndarray, prob: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``padded`` with each history item except the most recent left out with probability ``prob``.

        A cheap augmentation against memorising exact training windows (the encoder sees a
        thinned history; order is kept and the survivors are packed to the left). The draw comes
        from ``rng`` alone, so a seeded run and its resumption see the same histories.
        """
        history, lengths = self.padded(index)
        if prob <= 0.0 or history.size == 0:
            return history, lengths
        return thin_histories(history, lengths, self.dropout_keep(lengths, history.shape[1], prob, rng))

    @staticmethod
    def dropout_keep(lengths: np.ndarray, width: int, prob: float, rng: np.random.Generator) -> np.ndarray:
        """[B, width] which padded history positions ``history_dropout`` keeps: each real one with
        probability 1 - ``prob``, the most recent always (one ``rng.random`` draw of that shape)."""
        pos = np.arange(width)
        keep = (pos[None, :] < lengths[:, None]) & (rng.random((len(lengths), width)) >= prob)
        keep[np.arange(len(lengths)), np.maximum(lengths - 1, 0)] = lengths > 0  # the most recent item stays
        return keep

    def training_histories(self, index: np.ndarray, history_dropout: float = 0.0, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``padded``, or ``padded_with_dropout`` when ``history_dropout`` > 0 (then ``rng`` is required)."""
        if history_dropout <= 0.0:
            return self.padded(index)
        if rng is None:
            raise ValueError("history_dropout needs an rng")
        return self.padded_with_dropout(index, history_dropout, rng)

    def subset(self, index: np.ndarray) -> ExampleArrays:
        """The examples at ``index`` (in that order), e.g. a seeded validation sample."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # flat positions of the chosen histories, without a Python loop over examples
        take = np.repeat(self.offsets[index] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return ExampleArrays(self.user_ids[index], offsets, self.history[take], self.targets[index])


def thin_histories(history: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded histories [B, H] with only the ``keep`` [B, H] positions, packed to the left in
    their order (pad -1), and their new lengths."""
    pos = np.arange(history.shape[1])
    new_lengths = keep.sum(axis=1)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept positions first, in their order
    packed = np.take_along_axis(history, order, axis=1)
    packed[pos[None, :] >= new_lengths[:, None]] = -1
    return packed, new_lengths.astype(lengths.dtype)


def examples_from_frame(df: pl.DataFrame, path: str | Path = "<examples>") -> ExampleArrays:
    """Convert a ``user_id, history, target`` frame (the preprocess stage's schema)."""
    for col in ("user_id", "history", "target"):
        if col not in df.columns:
            raise InputFormatError(path, f"missing column {col!r}; expected user_id, history, target")
    for col in ("user_id", "history", "target"):
        if df[col].null_count():
            raise InputFormatError(path, f"column {col!r} has null values")
    hist = df["history"].cast(pl.List(pl.Int32)).rechunk().to_arrow()
    if hasattr(hist, "combine_chunks"):
        hist = hist.combine_chunks()
    offsets = np.asarray(hist.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    values = np.asarray(hist.values.to_numpy(zero_copy_only=False), dtype=np.int32)[: offsets[-1]] if len(hist) else np.zeros(0, np.int32)
    if values.size != offsets[-1] or (values.size and values.min() < 0):
        raise InputFormatError(path, "history holds null or negative item ids")
    if (np.diff(offsets) == 0).any():
        raise InputFormatError(path, "some examples have an empty history (SPEC 1: every example has at least one history item)")
    targets = df["target"].cast(pl.Int32).to_numpy().astype(np.int32)
    if targets.size and targets.min() < 0:
        raise InputFormatError(path, "negative target item ids")
    return ExampleArrays(df["user_id"].cast(pl.Int32).to_numpy().astype(np.int32), offsets, values, targets)


def load_examples(path: str | Path, num_items: int | None = None) -> ExampleArrays:
    """Read ``data/processed/{split}.parquet``; with ``num_items``, check every id is < N."""
    ex = examples_from_frame(read_parquet(path, "example table (stage preprocess)"), path)
    if num_items is not None:
        top = max(int(ex.history.max(initial=-1)), int(ex.targets.max(initial=-1)))
        if top >= num_items:
            raise InputFormatError(path, f"item id {top} has no semantic ID (the ID table covers items 0..{num_items - 1}); rerun the stages after preprocess")
    return ex


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Model inputs plus the item-level data they came from (so a hook can re-tokenize them)."""

    input_ids: torch.Tensor  # [B, S] (tokens) or [B, S, L] (items)
    attention_mask: torch.Tensor  # [B, S]
    labels: torch.Tensor  # [B, L + 1]
    history: torch.Tensor  # [B, H] item ids, right-padded with -1
    lengths: torch.Tensor  # [B] history lengths
    targets: torch.Tensor  # [B] target item ids
    user_ids: torch.Tensor  # [B]
    example_index: torch.Tensor  # [B] rows in the split's ExampleArrays
    tokenizer_index: torch.Tensor | None = None  # [B] tokenizer used per example (multi-tokenizer tables)
    # soft inputs (BLOGER, SPEC 8; ``soft_inputs.py``): embeddings replacing those of input_ids
    # ([B, S, d] or [B, S, L, d]) and of the teacher-forced decoder inputs ([B, L + 1, d]);
    # a method sets them after collate, the default training never does
    inputs_embeds: torch.Tensor | None = None
    decoder_inputs_embeds: torch.Tensor | None = None
    # recommender.pack_examples: how the examples share their history items (packing.Packing);
    # the model's packed_forward then scores them, the fields above stay per example
    packing: Any = None

    def soft_inputs(self) -> dict[str, torch.Tensor]:
        """The soft inputs that are set, as keyword arguments of a generative model's forward."""
        return {k: v for k, v in (("inputs_embeds", self.inputs_embeds), ("decoder_inputs_embeds", self.decoder_inputs_embeds)) if v is not None}

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: str | torch.device) -> Batch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if value is not None and hasattr(value, "to") else value
        return replace(self, **moved)


def user_token_ids(user_ids: torch.Tensor, first_token: int, buckets: int) -> torch.Tensor:
    """TIGER's user token: user id -> one of ``buckets`` tokens from ``first_token`` on (hashing trick).

    A fixed multiplicative (Knuth) hash spreads consecutive ids over the buckets; users that share
    a bucket share a token (TIGER used 2,000 buckets).
    """
    return first_token + (user_ids.long() * 2654435761) % buckets


class SequenceEncoder:
    """Item ids -> encoder inputs and decoder labels through one or several ID tables.

    ``item_tokens`` is [N, L] (one tokenizer) or [T, N, L] (several; ``tokenizer_index`` picks one
    per example, default the ``default_tokenizer``-th); values are vocabulary token ids. With
    ``user_buckets`` > 0 every input starts with the user's hashed token (ids ``user_token_offset``
    .. ``user_token_offset + user_buckets - 1``; as a group ``[user, pad, ...]`` for ``items``).
    """

    @classmethod
    def for_recommender(cls, item_tokens: torch.Tensor, params: Any, vocab: Any, default_tokenizer: int = 0) -> SequenceEncoder:
        """The encoder a model trained with recommender ``params`` over ``vocab`` reads: its
        ``encoder_input``, its user tokens (``user_tokens`` buckets after the vocabulary's ids)."""
        return cls(item_tokens, params.encoder_input, default_tokenizer=default_tokenizer, user_buckets=params.user_tokens, user_token_offset=vocab.size)

    def __init__(self, item_tokens: torch.Tensor, encoder_input: str = "tokens", default_tokenizer: int = 0, user_buckets: int = 0, user_token_offset: int = 0):
        if encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input must be one of {ENCODER_INPUTS}, got {encoder_input!r}")
        tokens = torch.as_tensor(item_tokens, dtype=torch.long)
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(0)
        if tokens.dim() != 3:
            raise ValueError(f"item_tokens must be [N, L] or [T, N, L], got shape {tuple(tokens.shape)}")
        self.tables = tokens.contiguous()
        self.encoder_input = encoder_input
        self.default_tokenizer = int(default_tokenizer)
        self.user_buckets = int(user_buckets)
        self.user_token_offset = int(user_token_offset)

    @property
    def num_tokenizers(self) -> int:
        return int(self.tables.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.tables.shape[1])

    @property
    def id_length(self) -> int:
        return int(self.tables.shape[2])

    def item_tokens(self, items: torch.Tensor, tokenizer_index: torch.Tensor | None = None) -> torch.Tensor:
        """[B, ...] item ids -> [B, ..., L] tokens (tokenizer per row of the batch)."""
        if tokenizer_index is None:
            return self.tables[self.default_tokenizer][items]
        t = tokenizer_index.view(-1, *([1] * (items.dim() - 1))).expand_as(items)
        return self.tables[t, items]

    def encode_history(
        self, history: torch.Tensor, lengths: torch.Tensor, tokenizer_index: torch.Tensor | None = None, user_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded history [B, H] (-1 = pad) -> (input_ids, attention_mask) in this encoder's format."""
        ids, mask = self._encode_items(history, lengths, tokenizer_index)
        if not self.user_buckets:
            return ids, mask
        if user_ids is None:
            raise ValueError("this encoder prepends a user token (user_buckets > 0) and needs user_ids")
        user = user_token_ids(user_ids, self.user_token_offset, self.user_buckets)  # [B]
        if self.encoder_input == "tokens":
            first = user.unsqueeze(1)
        else:
            first = torch.full((ids.shape[0], 1, ids.shape[2]), PAD, dtype=torch.long)
            first[:, 0, 0] = user
        return torch.cat([first, ids], dim=1), torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)

    def _encode_items(self, history: torch.Tensor, lengths: torch.Tensor, tokenizer_index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b, h = history.shape
        length_l = self.id_length
        valid = history >= 0
        tok = self.item_tokens(history.clamp(min=0), tokenizer_index) * valid.unsqueeze(-1)  # [B, H, L]
        rows = torch.arange(b)
        if self.encoder_input == "tokens":
            s = h * length_l + 1
            ids = torch.full((b, s), PAD, dtype=torch.long)
            ids[:, : h * length_l] = tok.reshape(b, h * length_l)
            ids[rows, lengths * length_l] = EOS
            mask = torch.arange(s).unsqueeze(0) <= (lengths * length_l).unsqueeze(1)
        else:
            ids = torch.full((b, h + 1, length_l), PAD, dtype=torch.long)
            ids[:, :h] = tok
            ids[rows, lengths, 0] = EOS
            mask = torch.arange(h + 1).unsqueeze(0) <= lengths.unsqueeze(1)
        return ids, mask.long()

    def encode_targets(self, targets: torch.Tensor, tokenizer_index: torch.Tensor | None = None) -> torch.Tensor:
        """[B] target items -> labels [B, L + 1]: the target's tokens, then eos."""
        tok = self.item_tokens(targets, tokenizer_index)
        return torch.cat([tok, torch.full((tok.shape[0], 1), EOS, dtype=torch.long)], dim=1)

    def collate(
        self,
        examples: ExampleArrays,
        index: np.ndarray,
        tokenizer_index: torch.Tensor | None = None,
        history_dropout: float = 0.0,
        rng: np.random.Generator | None = None,
        keep: np.ndarray | None = None,
    ) -> Batch:
        """Gather examples ``index`` of a split and tokenize them into one right-padded batch
        (``history_dropout`` > 0 with ``rng``: training histories thinned, see ``padded_with_dropout``;
        or ``keep`` [B, H]: thinned to these padded positions, ``ExampleArrays.dropout_keep``)."""
        index = np.asarray(index, dtype=np.int64)
        if keep is not None:
            history, lengths = thin_histories(*examples.padded(index), keep)
        else:
            history, lengths = examples.training_histories(index, history_dropout, rng)
        history_t = torch.from_numpy(history)
        lengths_t = torch.from_numpy(lengths.astype(np.int64))
        targets_t = torch.from_numpy(examples.targets[index].astype(np.int64))
        user_ids_t = torch.from_numpy(examples.user_ids[index].astype(np.int64))
        input_ids, mask = self.encode_history(history_t, lengths_t, tokenizer_index, user_ids_t)
        return Batch(
            input_ids=input_ids,
            attention_mask=mask,
            labels=self.encode_targets(targets_t, tokenizer_index),
            history=history_t,
            lengths=lengths_t,
            targets=targets_t,
            user_ids=user_ids_t,
            example_index=torch.from_numpy(index),
            tokenizer_index=tokenizer_index,
        )

    def retokenize(self, batch: Batch, tokenizer_index: torch.Tensor | None) -> Batch:
        """The same examples under other tokenizers (MTGRec's per-example choice), on the batch's device."""
        device = batch.history.device
        ti = None if tokenizer_index is None else tokenizer_index.cpu()
        ids, mask = self.encode_history(batch.history.cpu(), batch.lengths.cpu(), ti, batch.user_ids.cpu())
        labels = self.encode_targets(batch.targets.cpu(), ti)
        return replace(
            batch, input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device), tokenizer_index=None if ti is None else ti.to(device)
        )


# --------------------------------------------------------------------------- samplers


class SeededBatchSampler:
    """What every training sampler shares: its batches follow from ``(seed, epoch)`` alone, so its
    state is ``(epoch, batches_done)`` plus what must match on resume (``identity``). A subclass
    sets ``seed``, ``batch_size`` (and whatever ``identity`` names) and implements ``batches``."""

    seed: int
    batch_size: int
    epoch: int = 0
    batches_done: int = 0

    def batches(self, epoch: int) -> list[np.ndarray]:
        raise NotImplementedError

    def identity(self) -> dict:
        """The settings a saved state must have been written with (saved beside the position)."""
        return {"seed": self.seed, "batch_size": self.batch_size}

    def set_epoch(self, epoch: int, batches_done: int = 0) -> None:
        self.epoch = int(epoch)
        self.batches_done = int(batches_done)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield the remaining batches of the current epoch, counting them as consumed."""
        for batch in self.batches(self.epoch)[self.batches_done :]:
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict:
        return {**self.identity(), "epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict) -> None:
        mine = self.identity()
        if any(state.get(k) != v for k, v in mine.items()):
            raise ValueError(f"sampler state from other settings ({', '.join(mine)} must match)")
        self.set_epoch(state["epoch"], state["batches_done"])


class BucketBatchSampler(SeededBatchSampler):
    """Length-bucketed, seeded, resumable batches of example indices.

    Each epoch: a permutation from ``(seed, epoch)`` is stably sorted by history length (so
    examples of one length are shuffled among themselves), cut into batches (little padding),
    and the batch order is shuffled. Everything follows from (seed, epoch), so the sampler's
    state is just ``(epoch, batches_done)`` and a resumed run sees the same batches.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self.batches_done = 0

    def __len__(self) -> int:
        n = self.lengths.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.lengths.shape[0])
        order = perm[np.argsort(self.lengths[perm], kind="stable")]
        cuts = [order[i : i + self.batch_size] for i in range(0, order.shape[0], self.batch_size)]
        if self.drop_last and cuts and cuts[-1].shape[0] < self.batch_size:
            cuts.pop()
        return [cuts[i] for i in rng.permutation(len(cuts))]


def eval_batches(examples: ExampleArrays, batch_size: int) -> list[np.ndarray]:
    """Deterministic validation/test batches: sorted by length (little padding), no shuffling.

    Each batch carries ``example_index`` so results can be put back in the split's order.
    """
    order = np.argsort(examples.lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, order.shape[0], batch_size)]


def seeded_subset(n: int, max_n: int, seed: int) -> np.ndarray:
    """A fixed sample of ``max_n`` of ``n`` rows (all when max_n is 0 or >= n), ascending."""
    if max_n <= 0 or max_n >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 7919]).choice(n, size=max_n, replace=False)).astype(np.int64)
