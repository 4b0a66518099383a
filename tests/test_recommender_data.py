"""Example tables -> token tensors, and the length-bucketed resumable sampler."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from genrec_core.errors import InputFormatError
from genrec_core.recommender.data import (
    BucketBatchSampler,
    SequenceEncoder,
    eval_batches,
    examples_from_frame,
    load_examples,
    seeded_subset,
)
from genrec_core.recommender.vocab import EOS, PAD, SemanticIdVocab

SCHEMA = {"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32}


def frame(rows):
    return pl.DataFrame({"user_id": [r[0] for r in rows], "history": [r[1] for r in rows], "target": [r[2] for r in rows]}, schema=SCHEMA)


CODES = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]])  # 5 items, L = 2
VOCAB = SemanticIdVocab.from_codes([CODES])  # levels (3, 2): item i -> tokens codes + [2, 5]
TOKENS = torch.from_numpy(VOCAB.codes_to_tokens(CODES))


def test_examples_are_flat_arrays_in_table_order():
    ex = examples_from_frame(frame([(7, [1, 2, 3], 4), (8, [0], 2), (9, [4, 3], 1)]))
    assert ex.offsets.tolist() == [0, 3, 4, 6]
    assert ex.history.tolist() == [1, 2, 3, 0, 4, 3]
    assert ex.lengths.tolist() == [3, 1, 2]
    assert ex.user_ids.tolist() == [7, 8, 9] and ex.targets.tolist() == [4, 2, 1]
    sub = ex.subset(np.array([2, 0]))
    assert sub.history.tolist() == [4, 3, 1, 2, 3] and sub.offsets.tolist() == [0, 2, 5] and sub.targets.tolist() == [1, 4]


def test_bad_tables_are_rejected(tmp_path):
    with pytest.raises(InputFormatError, match="empty history"):
        examples_from_frame(frame([(0, [], 1)]))
    path = tmp_path / "train.parquet"
    frame([(0, [1, 9], 2)]).write_parquet(path)
    with pytest.raises(InputFormatError, match="item id 9 has no semantic ID"):
        load_examples(path, num_items=5)
    assert len(load_examples(path, num_items=10)) == 1


def test_tokens_mode_flattens_history_then_eos():
    ex = examples_from_frame(frame([(0, [1, 2], 4), (1, [3], 0)]))
    batch = SequenceEncoder(TOKENS, "tokens").collate(ex, np.array([0, 1]))
    t = TOKENS.tolist()
    assert batch.input_ids.tolist() == [t[1] + t[2] + [EOS], t[3] + [EOS, PAD, PAD]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.labels.tolist() == [t[4] + [EOS], t[0] + [EOS]]
    assert batch.history.tolist() == [[1, 2], [3, -1]] and batch.lengths.tolist() == [2, 1]


def test_items_mode_groups_tokens_per_item_then_eos_group():
    ex = examples_from_frame(frame([(0, [1, 2], 4), (1, [3], 0)]))
    batch = SequenceEncoder(TOKENS, "items").collate(ex, np.array([1, 0]))
    t = TOKENS.tolist()
    assert batch.input_ids.shape == (2, 3, 2)
    assert batch.input_ids.tolist() == [[t[3], [EOS, PAD], [PAD, PAD]], [t[1], t[2], [EOS, PAD]]]
    assert batch.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.example_index.tolist() == [1, 0] and batch.user_ids.tolist() == [1, 0]


def test_per_example_tokenizer_choice_and_retokenize():
    other = torch.flip(TOKENS, dims=[0])  # a second "tokenizer": item i gets item 4-i's tokens
    enc = SequenceEncoder(torch.stack([TOKENS, other]), "tokens")
    ex = examples_from_frame(frame([(0, [1], 2), (1, [1], 2)]))
    batch = enc.collate(ex, np.array([0, 1]))
    assert batch.input_ids[0].tolist() == batch.input_ids[1].tolist()  # default tokenizer 0 for both
    mixed = enc.retokenize(batch, torch.tensor([0, 1]))
    assert mixed.input_ids[0, :2].tolist() == TOKENS[1].tolist()
    assert mixed.input_ids[1, :2].tolist() == other[1].tolist()
    assert mixed.labels[1, :2].tolist() == other[2].tolist() and mixed.tokenizer_index.tolist() == [0, 1]


def test_sampler_covers_each_example_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 21, size=1000)
    sampler = BucketBatchSampler(lengths, 64, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 16
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    spread = [lengths[b].max() - lengths[b].min() for b in batches]
    assert max(spread) <= 2  # ~50 examples per length, 64 per batch: at most three adjacent lengths
    # the batch order is shuffled, not sorted by length
    firsts = [lengths[b].min() for b in batches]
    assert firsts != sorted(firsts)


def test_sampler_is_seeded_per_epoch_and_resumable():
    lengths = np.random.default_rng(1).integers(1, 6, size=200)
    a, b = BucketBatchSampler(lengths, 16, seed=5), BucketBatchSampler(lengths, 16, seed=5)
    ep0 = [x.tolist() for x in a.batches(0)]
    assert ep0 == [x.tolist() for x in b.batches(0)]
    assert ep0 != [x.tolist() for x in a.batches(1)]
    assert ep0 != [x.tolist() for x in BucketBatchSampler(lengths, 16, seed=6).batches(0)]
    a.set_epoch(1)
    it = iter(a)
    consumed = [next(it).tolist() for _ in range(4)]
    state = a.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == 4
    b.load_state_dict(state)
    rest = [x.tolist() for x in b]
    assert consumed + rest == [x.tolist() for x in a.batches(1)]


def test_eval_batches_and_subset_are_deterministic():
    ex = examples_from_frame(frame([(u, list(range(1 + u % 3)), 0) for u in range(10)]))
    batches = eval_batches(ex, 4)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(10))
    assert np.all(np.diff(ex.lengths[np.concatenate(batches)]) >= 0)  # sorted by length: little padding
    assert seeded_subset(100, 10, 1).tolist() == seeded_subset(100, 10, 1).tolist()
    assert seeded_subset(100, 10, 1).tolist() != seeded_subset(100, 10, 2).tolist()
    assert seeded_subset(5, 0, 1).tolist() == [0, 1, 2, 3, 4]
