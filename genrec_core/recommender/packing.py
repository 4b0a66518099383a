"""``recommender.pack_examples``: train the decoder-only model on a user's consecutive examples at once.

Why: the training examples are sliding windows (``history`` = up to ``data.max_items`` items before
the target), so consecutive examples of one user share all but one history item. Trained one by
one, every example runs its whole history through the model again to score the target's L + 1
tokens; with ``items`` inputs that is ~21 prefix positions per 4 scored ones. Packed, one causal
sequence holds the chunk's items once, then one short segment per example,

    item_1 .. item_C | eos PAD y_1 .. y_L (example 1) | eos PAD y_1 .. y_L (example 2) | ...

and an explicit attention mask lets each segment see exactly its example's history window (with
``history_dropout``: the kept items of it) and its own earlier tokens. Rotary positions are
relative, so a segment placed at positions p .. p + L + 1 after items p - n .. p - 1 scores its
tokens exactly as the unpacked sequence ``history, eos, PAD, y_1 ..`` does: same inputs, same
distances. The one difference: the shared item positions attend causally to the chunk's earlier
items (at most ``band`` back), where an unpacked example's items see only its own window; where
every window starts at the chunk's first item the two are identical (the test checks this).

Per example that is (chunk items / examples) + L + 2 positions instead of history + L + 2
(ml-100k, 20 examples a chunk: ~7 instead of ~25). The losses, methods and checkpoints see the
same [B, L + 1, V] logits and ``Batch`` as before; only training is packed (evaluation, beam
search and serving are unchanged).

Examples are *linked* when one continues the other: same user, and its history is the previous
example's history plus the previous target (truncated to its length). A chunk is up to
``pack_examples`` linked consecutive examples; its item sequence is the first example's history,
then every example's target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from genrec_core.recommender.data import ExampleArrays, SeededBatchSampler


def linked_examples(examples: ExampleArrays) -> np.ndarray:
    """[E] bool: example e continues example e - 1 (same user; its history is e - 1's history
    followed by e - 1's target, keeping its own length's most recent items)."""
    n = len(examples)
    linked = np.zeros(n, dtype=bool)
    if n < 2:
        return linked
    lengths = examples.lengths
    width = int(lengths.max()) + 1
    # right-aligned histories [E, width], -1 = none; extended[e] = history_e then target_e
    right = np.full((n, width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(n), lengths)
    k = np.arange(rows.shape[0]) - np.repeat(examples.offsets[:-1], lengths)  # position in its history
    right[rows, width - lengths[rows] + k] = examples.history
    extended = np.concatenate([right[:, 1:], examples.targets[:, None].astype(np.int64)], axis=1)
    current = right[1:]
    previous = extended[:-1]
    valid = current >= 0
    linked[1:] = (examples.user_ids[1:] == examples.user_ids[:-1]) & (lengths[1:] <= lengths[:-1] + 1) & np.all(~valid | (current == previous), axis=1)
    return linked


def chunk_starts(linked: np.ndarray, pack_examples: int) -> np.ndarray:
    """[E] bool: example e opens a chunk (it is not linked to e - 1, or the chunk is full)."""
    starts = ~linked
    run_id = np.cumsum(starts) - 1
    run_first = np.flatnonzero(starts)
    offset_in_run = np.arange(linked.shape[0]) - run_first[run_id]
    return (offset_in_run % pack_examples) == 0


#: ``recommender.pack_order``: how chunks are dealt into batches.
PACK_ORDERS = ("auto", "random", "length")
#: ``pack_order: auto`` sorts by length when random batches would be more than this share padding.
AUTO_LENGTH_PADDING = 0.25


class PackedBatchSampler(SeededBatchSampler):
    """Seeded, resumable training batches made of whole chunks (``BucketBatchSampler``'s interface).

    Chunks are fixed (every ``pack_examples`` linked examples from a run's start); each epoch a
    permutation from ``(seed, epoch)`` deals them into batches of ``batch_size // pack_examples``
    chunks (at least one), so the number of batches per epoch, and with it the cosine's length,
    does not depend on the epoch. State: ``(epoch, batches_done)``.

    ``order``: ``random`` batches follow the permutation; ``length`` sorts the permuted chunks by
    size (examples, then items; stable, so chunks of one size stay shuffled), cuts the batches there
    and shuffles their order, as ``BucketBatchSampler`` does for unpacked examples: a batch pads
    every chunk to its largest, and on short-sequence data (Amazon Beauty: users of 5-10 items,
    so chunks of 2-10 examples) random batches are ~60% padding. ``auto`` takes ``length`` when
    epoch 0's random batches would be more than ``AUTO_LENGTH_PADDING`` padding (``padding_share``,
    with segments of ``segment`` positions per example) and ``random`` otherwise (ml-100k: 7%, so
    its runs are unchanged); ``self.order`` is the resolved choice.
    """

    def __init__(self, examples: ExampleArrays, pack_examples: int, batch_size: int, seed: int, order: str = "random", segment: int = 4):
        if pack_examples < 1 or batch_size < 1:
            raise ValueError(f"pack_examples and batch_size must be >= 1, got {pack_examples} and {batch_size}")
        if order not in PACK_ORDERS:
            raise ValueError(f"order must be one of {', '.join(PACK_ORDERS)}, got {order!r}")
        self.linked = linked_examples(examples)
        starts = np.flatnonzero(chunk_starts(self.linked, pack_examples))
        self.chunks = np.stack([starts, np.append(starts[1:], len(examples))], axis=1)  # [n, 2]: [first, end)
        self.chunks_per_batch = max(1, batch_size // pack_examples)
        self.batch_size = int(batch_size)
        self.pack_examples = int(pack_examples)
        self.seed = int(seed)
        self.epoch = 0
        self.batches_done = 0
        self.chunk_examples = self.chunks[:, 1] - self.chunks[:, 0]
        self.chunk_items = examples.lengths[self.chunks[:, 0]] + self.chunk_examples  # the first history, then every target
        self.segment = int(segment)
        self.order = "random"
        self.random_padding = self.padding_share(self.batches(0))
        self.order = order if order != "auto" else ("length" if self.random_padding > AUTO_LENGTH_PADDING else "random")

    def __len__(self) -> int:
        return -(-self.chunks.shape[0] // self.chunks_per_batch)

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 1])
        perm = rng.permutation(self.chunks.shape[0])
        if self.order == "length":
            perm = perm[np.lexsort((self.chunk_items[perm], self.chunk_examples[perm]))]
        cuts = [np.sort(perm[i : i + self.chunks_per_batch]) for i in range(0, perm.shape[0], self.chunks_per_batch)]
        if self.order == "length":
            cuts = [cuts[i] for i in rng.permutation(len(cuts))]
        return [np.concatenate([np.arange(a, b) for a, b in self.chunks[chosen]]) for chosen in cuts]

    def padding_share(self, batches: list[np.ndarray]) -> float:
        """Share of a packed batch's positions that are padding (chunk items plus ``segment``
        positions per example, every chunk padded to the batch's longest items and most examples)."""
        first = {int(a): k for k, a in enumerate(self.chunks[:, 0])}
        padded = needed = 0
        for batch in batches:
            ks = np.array([first[int(e)] for e in batch if int(e) in first])
            items, examples = self.chunk_items[ks], self.chunk_examples[ks]
            padded += ks.shape[0] * (int(items.max()) + self.segment * int(examples.max()))
            needed += int(items.sum() + self.segment * examples.sum())
        return 1.0 - needed / padded if padded else 0.0

    def identity(self) -> dict:
        return {**super().identity(), "pack_examples": self.pack_examples, **({"pack_order": self.order} if self.order != "random" else {})}


@dataclass
class Packing:
    """How a batch's examples share item sequences (built by ``pack_batch``; all tensors).

    ``items`` [G, C, L]: the chunks' item tokens (PAD beyond ``item_mask``), ``item_ids`` [G, C]
    their item ids (-1 beyond ``item_mask``: what a method that embeds items by id, e.g. BLOGER's
    soft inputs, looks up); per example e:
    ``group`` (its chunk), ``slot`` (its segment's index in the chunk), ``target_pos`` (its
    target's index p in the chunk), ``window`` [E, C]: the chunk items its history attends to.
    ``band``: how far back a chunk item attends to earlier items (the longest history).
    """

    items: torch.Tensor
    item_ids: torch.Tensor
    item_mask: torch.Tensor
    group: torch.Tensor
    slot: torch.Tensor
    target_pos: torch.Tensor
    window: torch.Tensor
    band: int

    def to(self, device: str | torch.device) -> Packing:
        return replace(self, **{k: getattr(self, k).to(device) for k in ("items", "item_ids", "item_mask", "group", "slot", "target_pos", "window")})


def chunk_groups(index: np.ndarray, linked: np.ndarray, pack_examples: int) -> np.ndarray:
    """[E] the chunk (0, 1, ...) of each of the training examples ``index`` in ``pack_batch``:
    runs of linked consecutive examples, cut every ``pack_examples``. Methods that must treat a
    chunk as one unit (MTGRec draws one tokenizer per chunk) group the batch with it."""
    index = np.asarray(index, dtype=np.int64)
    e = index.shape[0]
    new_group = np.ones(e, dtype=bool)
    if e > 1:
        new_group[1:] = (index[1:] != index[:-1] + 1) | ~linked[index[1:]]
    # cap chunks at pack_examples: count within each run of new_group == False
    run_id = np.cumsum(new_group) - 1
    offset = np.arange(e) - np.flatnonzero(new_group)[run_id]
    new_group |= (offset % pack_examples) == 0
    return np.cumsum(new_group) - 1


def pack_batch(
    examples: ExampleArrays, index: np.ndarray, linked: np.ndarray, pack_examples: int, item_tokens, keep: np.ndarray | None = None, band: int | None = None
) -> Packing:
    """The ``Packing`` of training examples ``index`` (any order: runs of linked consecutive
    examples become chunks of at most ``pack_examples``, ``chunk_groups``). ``item_tokens(items
    [G, C]) -> [G, C, L]`` tokenizes the chunk items (row g: chunk g, so a caller may use one
    ID table per chunk); ``keep`` [E, H] (``ExampleArrays.dropout_keep`` over the padded
    histories) thins each example's window, None keeps it whole. ``band``: default the batch's
    longest history; a DDP rank passes its global batch's, so its part scores as in the whole."""
    index = np.asarray(index, dtype=np.int64)
    e = index.shape[0]
    lengths = examples.lengths[index]
    group = chunk_groups(index, linked, pack_examples)
    firsts = np.flatnonzero(np.diff(group, prepend=-1))
    slot = np.arange(e) - firsts[group]
    first_len = lengths[firsts]  # the chunk's first example's history opens the chunk
    target_pos = first_len[group] + slot
    chunk_len = first_len + np.bincount(group, minlength=firsts.shape[0])
    g, c = firsts.shape[0], int(chunk_len.max())
    items = np.full((g, c), -1, dtype=np.int64)
    for k, first in enumerate(firsts):
        start = examples.offsets[index[first]]
        members = index[first : first + int(chunk_len[k] - first_len[k])]
        items[k, : first_len[k]] = examples.history[start : start + first_len[k]]
        items[k, first_len[k] : chunk_len[k]] = examples.targets[members]
    cols = np.arange(c)
    win_start = target_pos - lengths
    window = (cols[None, :] >= win_start[:, None]) & (cols[None, :] < target_pos[:, None])
    if keep is not None:
        in_window = np.clip(cols[None, :] - win_start[:, None], 0, keep.shape[1] - 1)
        window &= np.take_along_axis(keep, in_window, axis=1)
    item_mask = items >= 0
    tokens = item_tokens(torch.from_numpy(items.clip(min=0))) * torch.from_numpy(item_mask)[..., None]
    return Packing(
        items=tokens,
        item_ids=torch.from_numpy(items),
        item_mask=torch.from_numpy(item_mask),
        group=torch.from_numpy(group),
        slot=torch.from_numpy(slot),
        target_pos=torch.from_numpy(target_pos.astype(np.int64)),
        window=torch.from_numpy(window),
        band=band if band is not None else (int(lengths.max()) if e else 1),
    )


def packed_attention(packing: Packing, segment: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(attention mask [G, 1, T, T] bool, position ids [G, T], rows [E, segment] of each example's
    segment) for ``packing``'s chunks followed by ``segment`` positions per example.

    Chunk item i sees chunk items i - band + 1 .. i; example e's segment sees its ``window`` and
    its own earlier segment positions. Every row sees itself (padding rows too: no empty softmax).
    """
    g, c = packing.item_mask.shape
    device = packing.item_mask.device
    slots = int(packing.slot.max()) + 1
    total = c + slots * segment
    i = torch.arange(c, device=device)
    mask = torch.zeros(g, total, total, dtype=torch.bool, device=device)
    mask[:, :c, :c] = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - packing.band)
    mask[:, :c, :c] &= packing.item_mask[:, None, :]
    rows = c + packing.slot[:, None] * segment + torch.arange(segment, device=device)[None, :]  # [E, segment]
    grp = packing.group[:, None, None]
    mask[grp, rows[:, :, None], i[None, None, :]] = packing.window[:, None, :]
    causal = torch.ones(segment, segment, dtype=torch.bool, device=device).tril()
    mask[grp, rows[:, :, None], rows[:, None, :]] = causal[None]
    mask |= torch.eye(total, dtype=torch.bool, device=device)[None]
    positions = torch.zeros(g, total, dtype=torch.long, device=device)
    positions[:, :c] = i[None, :]
    positions[packing.group[:, None], rows] = packing.target_pos[:, None] + torch.arange(segment, device=device)[None, :]
    return mask[:, None], positions, rows
