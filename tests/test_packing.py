"""Packed training (``recommender.pack_examples``, genrec_core/recommender/packing.py).

The packed forward must score every example as the unpacked model scores it alone wherever the
two see the same inputs (every window starting at the chunk's first item), the links between
examples must follow the sliding windows, and packed training must still learn and resume.
"""

from __future__ import annotations

import signal

import numpy as np
import polars as pl
import pytest
import torch
from helpers import EXAMPLE_SCHEMA
from test_decoder_only import LossRecorder, make_trainer, small_params

from genrec_core.config import RecommenderParams
from genrec_core.errors import ParamError
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.decoder_only import DecoderOnlyRecommender
from genrec_core.recommender.packing import PackedBatchSampler, chunk_starts, linked_examples, pack_batch, packed_attention
from genrec_core.recommender.trainer import TrainingInterrupted
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.runtime import seed_everything

N_ITEMS = 30
CODES = np.stack([np.arange(N_ITEMS) // 6, (np.arange(N_ITEMS) * 5) % 6, np.arange(N_ITEMS) % 4], axis=1)
VOCAB = SemanticIdVocab.from_codes([CODES])
TOKENS = torch.from_numpy(VOCAB.codes_to_tokens(CODES))


def windows(user: int, seq: list[int], max_items: int) -> list[tuple]:
    """The preprocess stage's sliding-window training examples of one user's sequence."""
    return [(user, seq[max(0, t - max_items) : t], seq[t]) for t in range(1, len(seq))]


def frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [r[0] for r in rows], "history": [r[1] for r in rows], "target": [r[2] for r in rows]}, schema=EXAMPLE_SCHEMA)


def model(**kw) -> DecoderOnlyRecommender:
    seed_everything(3)
    params = dict(
        model="decoder_only",
        encoder_input="items",
        num_layers=1,
        num_decoder_layers=1,
        d_model=32,
        d_ff=64,
        num_heads=2,
        d_kv=16,
        dropout=0.0,
        level_softmax=True,
    )
    params.update(kw)
    return DecoderOnlyRecommender(RecommenderParams(**params), VOCAB).eval()


def test_links_follow_the_sliding_windows_and_chunks_cut_them():
    rows = windows(0, [1, 2, 3, 4, 5, 6], 3) + windows(1, [7, 8, 9], 3) + [(1, [20, 21], 22)]
    ex = examples_from_frame(frame(rows))
    linked = linked_examples(ex)
    # user 0: 5 examples (first unlinked), user 1: 2 examples, then an example that does not continue
    assert linked.tolist() == [False, True, True, True, True, False, True, False]
    assert chunk_starts(linked, 2).tolist() == [True, False, True, False, True, True, False, True]


def test_packed_logits_equal_each_example_scored_alone():
    """Histories shorter than max_items: every window starts at the chunk's first item, where the
    packed forward sees exactly the unpacked inputs (relative positions, masks)."""
    rows = windows(0, [3, 17, 8, 25, 1, 12], 10) + windows(1, [4, 9, 29, 2], 10) + windows(2, [11, 5], 10)
    ex = examples_from_frame(frame(rows))
    enc = SequenceEncoder(TOKENS, "items")
    net = model()
    index = np.arange(len(ex))
    batch = enc.collate(ex, index)
    packing = pack_batch(ex, index, linked_examples(ex), 8, enc.item_tokens)
    assert packing.group.tolist() == [0] * 5 + [1] * 3 + [2]
    assert packing.item_ids.tolist() == [[3, 17, 8, 25, 1, 12], [4, 9, 29, 2, -1, -1], [11, 5, -1, -1, -1, -1]]  # -1: padding
    with torch.no_grad():
        packed = net.packed_forward(packing, batch.labels)
        alone = torch.cat(
            [
                net(
                    batch.input_ids[i : i + 1, : int(batch.lengths[i]) + 1],
                    batch.attention_mask[i : i + 1, : int(batch.lengths[i]) + 1],
                    batch.labels[i : i + 1],
                )
                for i in range(len(ex))
            ]
        )
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)


def test_a_segment_attends_to_its_window_only():
    """With truncated windows (max_items 2) and a dropped item, example e's segment sees exactly
    its kept history items and its own earlier positions; chunk items see at most `band` back."""
    rows = windows(0, [1, 2, 3, 4, 5], 2)
    ex = examples_from_frame(frame(rows))
    index = np.arange(len(ex))
    keep = np.ones((4, 2), dtype=bool)
    keep[3, 0] = False  # example 3 (history [3, 4], target 5) drops item 3
    packing = pack_batch(ex, index, linked_examples(ex), 10, SequenceEncoder(TOKENS, "items").item_tokens, keep)
    assert packing.items.shape[:2] == (1, 5) and packing.target_pos.tolist() == [1, 2, 3, 4]
    assert packing.item_ids.tolist() == [[1, 2, 3, 4, 5]] and torch.equal(packing.items[0], TOKENS[[1, 2, 3, 4, 5]])  # the first history, then the targets
    mask, positions, rows_of = packed_attention(packing, segment=3)
    mask = mask[0, 0]
    seen_items = [torch.nonzero(mask[rows_of[e, 0], :5]).flatten().tolist() for e in range(4)]
    assert seen_items == [[0], [0, 1], [1, 2], [3]]
    assert torch.nonzero(mask[rows_of[2, 2], 5:]).flatten().add(5).tolist() == rows_of[2].tolist()  # its own segment, causally
    assert torch.nonzero(mask[4, :5]).flatten().tolist() == [3, 4]  # chunk item 4 sees back band = 2 items
    assert positions[0, rows_of[3]].tolist() == [4, 5, 6]  # eos at the target's index, as unpacked after n items


def test_sampler_deals_whole_chunks_the_same_way_every_time():
    rows = sum((windows(u, list(range(u, u + 12)), 4) for u in range(6)), [])
    ex = examples_from_frame(frame(rows))
    s = PackedBatchSampler(ex, pack_examples=5, batch_size=10, seed=1)
    assert s.chunks.shape[0] == 6 * 3 and len(s) == 9  # 11 examples a user: chunks of 5, 5, 1
    first = s.batches(0)
    assert sorted(np.concatenate(first).tolist()) == list(range(len(ex)))
    assert all(np.array_equal(a, b) for a, b in zip(first, PackedBatchSampler(ex, 5, 10, 1).batches(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, s.batches(1)))
    with pytest.raises(ValueError, match="pack_examples"):
        s.load_state_dict({**s.state_dict(), "pack_examples": 4})


def _users_of_lengths(sizes: list[int]):
    rows = sum((windows(u, list(range(100 * u, 100 * u + n)), 20) for u, n in enumerate(sizes)), [])
    return examples_from_frame(frame(rows))


def test_padding_share_by_hand():
    # users of 3 and 6 items: 2 and 5 examples, one chunk each; first histories of 1 item
    ex = _users_of_lengths([3, 6])
    s = PackedBatchSampler(ex, pack_examples=10, batch_size=20, seed=0, segment=4)  # both chunks in one batch
    assert s.chunk_examples.tolist() == [2, 5] and s.chunk_items.tolist() == [3, 6]
    # padded: 2 chunks x (6 items + 4 x 5 segments) = 52; needed: (3 + 8) + (6 + 20) = 37
    assert s.padding_share(s.batches(0)) == pytest.approx(1 - 37 / 52)
    assert s.random_padding == pytest.approx(1 - 37 / 52)


def test_length_order_groups_chunks_of_one_size_and_keeps_every_example():
    sizes = [3, 12, 4, 12, 3, 12, 4, 12] * 3  # 2, 10, 3 and 10 examples: short and full chunks
    ex = _users_of_lengths(sizes)
    rand = PackedBatchSampler(ex, pack_examples=10, batch_size=20, seed=3, order="random")  # 2 chunks a batch
    length = PackedBatchSampler(ex, pack_examples=10, batch_size=20, seed=3, order="length")
    assert len(length) == len(rand)  # the cosine's length does not change
    for epoch in (0, 1):
        batches = length.batches(epoch)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(ex)))
        for b in batches:  # two chunks of one size: 2, 3 or 10 examples, or the 1-example rests of 12-item users
            assert len(b) in (2, 4, 6, 20)
            assert np.all(np.diff(b) > 0)  # examples in increasing order, as random batches have them
    assert length.padding_share(length.batches(0)) < rand.padding_share(rand.batches(0))
    assert length.padding_share(length.batches(0)) == pytest.approx(0.0)  # equal chunks: no padding left
    assert [b.tolist() for b in length.batches(0)] != [b.tolist() for b in length.batches(1)]  # reshuffled each epoch
    # auto: length above 25% padding, random below (and then the same batches as random)
    auto = PackedBatchSampler(ex, pack_examples=10, batch_size=20, seed=3, order="auto")
    assert rand.random_padding > 0.25 and auto.order == "length"
    even = _users_of_lengths([11] * 8)  # 10 examples each: one full chunk per user
    auto_even = PackedBatchSampler(even, pack_examples=10, batch_size=20, seed=3, order="auto")
    assert auto_even.order == "random" and auto_even.random_padding == pytest.approx(0.0)
    plain = PackedBatchSampler(even, pack_examples=10, batch_size=20, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(auto_even.batches(0), plain.batches(0)))
    # a resumed run must have been written with the same order
    with pytest.raises(ValueError, match="pack_order"):
        length.load_state_dict(rand.state_dict())


@pytest.mark.parametrize("kw", [dict(encoder_input="tokens"), dict(user_tokens=10)])
def test_packing_needs_the_decoder_only_items_model(kw):
    params = dict(model="decoder_only", encoder_input="items", pack_examples=20)
    params.update(kw)
    with pytest.raises(ParamError, match="recommender.pack_examples"):
        RecommenderParams(**params).validate()
    RecommenderParams(**{**params, "model": "sasrec"}).validate()  # models without a packed forward ignore it


class PackedStoppedAt7(LossRecorder):
    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        if trainer.state.step == 7:
            trainer.handle_signal(signal.SIGTERM, None)


def test_packed_training_learns_and_resumes_bit_identical(tmp_path):
    """The toy next-item pattern, packed 4 examples a chunk with history dropout: it learns, and a
    run stopped mid-epoch and resumed ends where the uninterrupted one does."""
    params = small_params(encoder_input="items", pack_examples=4, history_dropout=0.2, epochs=12, level_softmax=True)
    reference = make_trainer(tmp_path / "ref", params)
    assert isinstance(reference.sampler, PackedBatchSampler)
    summary = reference.fit()
    # Measured on an AMD EPYC (1 and 2 threads, the same): NDCG@10 0.73.
    assert summary["best_valid_ndcg@10"] > 0.4  # chance: ~0.11
    with pytest.raises(TrainingInterrupted):
        make_trainer(tmp_path / "run", params, method=PackedStoppedAt7).fit()
    resumed = make_trainer(tmp_path / "run", params)
    resumed.fit()
    assert resumed.resumed_from is not None
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert reference.state.evals == resumed.state.evals
