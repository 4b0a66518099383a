"""What makes TIGER learn faster (issue: convergence): the level-restricted softmax, the lr
schedule's floor on the last step, ``codebook_size: auto`` and the hashed user token.

References are derived independently: per-level log-softmax written out from the unrestricted
model's logits, the schedule's closed form, hand-computed codebook sizes, the hash by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import next_item_pattern_splits

from genrec_core.config import RecommenderParams, load_params
from genrec_core.errors import ParamError
from genrec_core.methods import MethodContext, build_method
from genrec_core.recommender.beam_search import constrained_beam_search
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import GenerativeRecommender
from genrec_core.recommender.trainer import Trainer, warmup_cosine
from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import EOS, PAD, SemanticIdVocab
from genrec_core.runtime import seed_everything
from genrec_core.tokenizers.base import auto_codebook_size

VOCAB = SemanticIdVocab((6, 5, 4))


def model_pair(encoder_input: str = "items", seed: int = 0) -> tuple[GenerativeRecommender, GenerativeRecommender]:
    """The same random weights with and without ``level_softmax`` (scaled up so scores spread)."""
    out = []
    for level_softmax in (True, False):
        torch.manual_seed(seed)
        params = RecommenderParams(
            encoder_input=encoder_input, num_layers=1, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=4, d_kv=8, level_softmax=level_softmax
        )
        model = GenerativeRecommender(params, VOCAB)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".weight") and "layer_norm" not in name:
                    p.mul_(2.5)
        out.append(model.eval())
    return out[0], out[1]


def all_items() -> torch.Tensor:
    codes = np.array([(a, b, c) for a in range(6) for b in range(5) for c in range(4)])
    return torch.from_numpy(VOCAB.codes_to_tokens(codes))


def histories(items: torch.Tensor, b: int = 3, h: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    enc = SequenceEncoder(items, "items")
    hist = torch.randint(0, items.shape[0], (b, h), generator=gen)
    return enc.encode_history(hist, torch.full((b,), h))


def level_blocks() -> list[range]:
    offsets = VOCAB.level_offsets.tolist()
    return [range(o, o + s) for o, s in zip(offsets, VOCAB.level_sizes)] + [range(EOS, EOS + 1)]


def test_level_softmax_puts_no_probability_on_other_levels():
    restricted, _ = model_pair()
    items = all_items()
    ids, mask = histories(items)
    labels = torch.cat([items[:3], torch.full((3, 1), EOS)], dim=1)
    with torch.no_grad():
        probs = torch.softmax(restricted(ids, mask, labels), dim=-1)  # [B, L + 1, V]
    for step, block in enumerate(level_blocks()):
        inside = probs[:, step, block.start : block.stop].sum(-1)
        assert torch.allclose(inside, torch.ones_like(inside), atol=1e-6)
        outside = probs[:, step].clone()
        outside[:, block.start : block.stop] = 0
        assert float(outside.max()) == 0.0  # exactly zero, not merely small


def test_level_softmax_equals_per_level_log_softmax_of_the_raw_logits():
    restricted, plain = model_pair()
    items = all_items()
    ids, mask = histories(items)
    labels = torch.cat([items[5:8], torch.full((3, 1), EOS)], dim=1)
    with torch.no_grad():
        got = torch.log_softmax(restricted(ids, mask, labels), -1)
        raw = plain(ids, mask, labels)
    for step, block in enumerate(level_blocks()):
        sub = raw[:, step, block.start : block.stop]
        expected = sub - torch.logsumexp(sub, dim=-1, keepdim=True)
        assert torch.allclose(got[:, step, block.start : block.stop], expected, atol=1e-5)


def test_beam_search_decodes_with_the_level_softmax_and_stays_in_level():
    """Beam scores = sums of per-level log-softmax log-probs computed by hand from the raw logits;
    with a beam at least the number of 2-token prefixes the search is exact, so the ranking must
    equal brute force over all 120 items; every decoded token lies in its level's block."""
    restricted, plain = model_pair()
    items = all_items()
    ids, mask = histories(items, b=2)
    trie = ItemTrie.build(items, VOCAB.size)
    result = constrained_beam_search(restricted, ids, mask, trie, beam_size=30)
    blocks = level_blocks()
    n = items.shape[0]
    labels = torch.cat([items, torch.full((n, 1), EOS)], dim=1)
    for b in range(2):
        with torch.no_grad():
            raw = plain(ids[b : b + 1].expand(n, -1, -1), mask[b : b + 1].expand(n, -1), labels)
        ref = torch.zeros(n)
        for step in range(3):
            block = blocks[step]
            sub = raw[:, step, block.start : block.stop]
            ref += sub.gather(1, (items[:, step] - block.start).unsqueeze(1)).squeeze(1) - torch.logsumexp(sub, dim=-1)
        top = torch.topk(ref, 30)
        assert torch.allclose(result.scores[b], top.values, atol=1e-4)
        assert set(result.items[b].tolist()) == set(top.indices.tolist())
        decoded = items[result.items[b]]
        for step in range(3):
            assert bool(((decoded[:, step] >= blocks[step].start) & (decoded[:, step] < blocks[step].stop)).all())


def test_level_softmax_keeps_cft_finite():
    restricted, _ = model_pair()
    items = all_items()
    ids, mask = histories(items)
    labels = torch.cat([items[:3], torch.full((3, 1), EOS)], dim=1)
    loss = build_loss("cft", {}, LossContext(VOCAB, items))
    cf_ids = torch.zeros_like(ids)
    cf_ids[:, 0, 0] = EOS
    cf_mask = torch.zeros_like(mask)
    cf_mask[:, 0] = 1
    with torch.no_grad():
        out = loss(restricted(ids, mask, labels), labels, None, None, extra_logits=restricted(cf_ids, cf_mask, labels))
    assert math.isfinite(float(out.loss))


# --------------------------------------------------------------------------- lr schedule


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_cosine_schedule_formula(floor):
    total, warmup = 50, 5
    fn = warmup_cosine(warmup, total, floor)
    assert fn(0) == pytest.approx(1 / warmup)
    assert fn(warmup - 1) == pytest.approx(1.0)
    assert fn(warmup) == pytest.approx(1.0)
    mid = warmup + (total - 1 - warmup) / 2
    assert fn(int(mid)) == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * int(mid - warmup) / (total - 1 - warmup))))
    assert fn(total - 1) == pytest.approx(floor, abs=1e-12)
    values = [fn(s) for s in range(warmup, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert warmup_cosine(warmup, total, floor, "constant")(total - 1) == 1.0


@pytest.mark.parametrize("floor", [0.0, 0.25])
def test_cosine_schedule_reaches_its_floor_on_the_last_training_step(tmp_path, floor):
    """Through the real Trainer: the lr of the final optimiser step is lr * min_lr_ratio."""
    frames = next_item_pattern_splits(40, 5, 30, 8, 0)
    codes = np.stack([np.arange(40) // 8, np.arange(40) % 8], axis=1)
    vocab = SemanticIdVocab.from_codes([codes])
    tokens = torch.from_numpy(vocab.codes_to_tokens(codes))
    params = RecommenderParams(
        num_layers=1,
        num_decoder_layers=1,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        lr=0.01,
        warmup_steps=3,
        min_lr_ratio=floor,
        batch_size=16,
        epochs=2,
        eval_beam_size=10,
        encoder_input="items",
    )
    seed_everything(0)
    method = build_method("tiger", {}, MethodContext(SequenceEncoder(tokens, "items"), build_loss("ce", {}, LossContext(vocab, tokens))))
    trainer = Trainer(
        GenerativeRecommender(params, vocab),
        params,
        method,
        examples_from_frame(frames["train"]),
        examples_from_frame(frames["valid"]),
        checkpoint_dir=tmp_path / "c",
        reports_dir=tmp_path / "r",
        seed=0,
        fingerprint="fp",
        progress=False,
        use_dvclive=False,
    )
    seen: list[float] = []
    method.optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    trainer.fit()
    assert len(seen) == trainer.state.total_steps
    assert seen[-1] == pytest.approx(0.01 * floor, abs=1e-12)
    assert max(seen) == pytest.approx(0.01)
    curve = (tmp_path / "r" / "valid_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,step,seconds,train_seconds,hit@1")
    assert len(curve) == 3  # header + one row per epoch


# --------------------------------------------------------------------------- codebook size


@pytest.mark.parametrize(
    ("items", "levels", "expected"),
    [
        (1349, 3, 64),  # sqrt(1349) = 36.7 -> 64 (ml-100k)
        (20033, 3, 256),  # sqrt = 141.5 -> 256 (Yelp)
        (1349, 4, 16),  # cube root = 11.05 -> 16
        (100_000, 4, 64),  # cube root = 46.4 -> 64
        (4096, 3, 64),  # exactly 64^2: no rounding up
        (50, 3, 16),  # clamped below
        (10**7, 3, 256),  # clamped above
        (300, 1, 512),  # one level: K >= N
    ],
)
def test_auto_codebook_size(items, levels, expected):
    assert auto_codebook_size(items, levels) == expected


def test_codebook_size_param_accepts_auto_and_rejects_words(tmp_path):
    assert load_params(None, ["tokenizer.codebook_size=auto"]).tokenizer.codebook_size == "auto"
    with pytest.raises(ParamError, match="tokenizer.codebook_size"):
        load_params(None, ["tokenizer.codebook_size=big"])


# --------------------------------------------------------------------------- user token


@pytest.mark.parametrize("encoder_input", ["tokens", "items"])
def test_user_token_is_prepended_with_the_hashed_bucket(encoder_input):
    items = all_items()
    enc = SequenceEncoder(items, encoder_input, user_buckets=7, user_token_offset=VOCAB.size)
    plain = SequenceEncoder(items, encoder_input)
    hist = torch.tensor([[3, 4, -1], [5, 6, 7]])
    lengths = torch.tensor([2, 3])
    users = torch.tensor([10, 11])
    ids, mask = enc.encode_history(hist, lengths, None, users)
    ref_ids, ref_mask = plain.encode_history(hist, lengths)
    expected = [VOCAB.size + (10 * 2654435761) % 7, VOCAB.size + (11 * 2654435761) % 7]
    first = ids[:, 0] if encoder_input == "tokens" else ids[:, 0, 0]
    assert first.tolist() == expected
    if encoder_input == "items":
        assert bool((ids[:, 0, 1:] == PAD).all())
    assert torch.equal(ids[:, 1:], ref_ids)
    assert mask[:, 0].tolist() == [1, 1] and torch.equal(mask[:, 1:], ref_mask)
    with pytest.raises(ValueError, match="user_ids"):
        enc.encode_history(hist, lengths)


def test_user_token_model_trains_and_decodes():
    params = RecommenderParams(
        num_layers=1, num_decoder_layers=1, d_model=16, d_ff=32, num_heads=2, d_kv=8, encoder_input="items", user_tokens=5, level_softmax=True
    )
    model = GenerativeRecommender(params, VOCAB).eval()
    assert model.config.vocab_size == VOCAB.size + 5
    items = all_items()
    enc = SequenceEncoder(items, "items", user_buckets=5, user_token_offset=VOCAB.size)
    ids, mask = enc.encode_history(torch.tensor([[1, 2]]), torch.tensor([2]), None, torch.tensor([3]))
    result = constrained_beam_search(model, ids, mask, ItemTrie.build(items, model.config.vocab_size), beam_size=5)
    assert bool((result.items >= 0).all())
    assert torch.isfinite(result.scores).all()


# --------------------------------------------------------------------------- history dropout


def _examples(histories: list[list[int]]):
    from genrec_core.recommender.data import ExampleArrays

    lengths = np.array([len(h) for h in histories])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate([np.asarray(h) for h in histories]).astype(np.int32)
    return ExampleArrays(np.arange(len(histories), dtype=np.int32), offsets, flat, np.zeros(len(histories), dtype=np.int32))


def test_history_dropout_keeps_order_and_the_most_recent_item():
    histories = [list(range(100 * i, 100 * i + n)) for i, n in enumerate([1, 2, 7, 20, 20])]
    ex = _examples(histories)
    for seed in range(20):
        hist, lengths = ex.padded_with_dropout(np.arange(5), 0.5, np.random.default_rng(seed))
        for row, n, original in zip(hist, lengths, histories):
            kept = row[:n].tolist()
            assert (row[n:] == -1).all()
            assert kept[-1] == original[-1]  # the most recent item always stays
            assert kept == [x for x in original if x in set(kept)]  # a subsequence, in order
            assert len(kept) == len(set(kept))


def test_history_dropout_leaves_out_the_configured_share():
    ex = _examples([list(range(21))] * 2000)  # 20 droppable items per example
    _, lengths = ex.padded_with_dropout(np.arange(2000), 0.3, np.random.default_rng(0))
    dropped = (21 - lengths).sum() / (20 * 2000)
    assert abs(dropped - 0.3) < 0.01  # binomial sd ~ 0.0023


def test_history_dropout_zero_is_the_plain_batch_and_a_seed_fixes_the_draw():
    ex = _examples([[1, 2, 3, 4], [5, 6], [7]])
    plain = ex.padded(np.arange(3))
    zero = ex.padded_with_dropout(np.arange(3), 0.0, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(plain, zero))
    a = ex.padded_with_dropout(np.arange(3), 0.5, np.random.default_rng([42, 7]))
    b = ex.padded_with_dropout(np.arange(3), 0.5, np.random.default_rng([42, 7]))
    assert all((x == y).all() for x, y in zip(a, b))


def test_history_dropout_param_is_checked(tmp_path):
    with pytest.raises(ParamError, match="recommender.history_dropout"):
        RecommenderParams(history_dropout=1.0).validate()


def test_item_id_batches_thin_histories_the_same_way():
    from genrec_core.sequential.training import ItemIdEncoder

    ex = _examples([[1, 2, 3, 4, 5, 6], [7, 8]])
    batch = ItemIdEncoder(10).collate(ex, np.arange(2), history_dropout=0.5, rng=np.random.default_rng([3, 1]))
    want_hist, want_len = ex.padded_with_dropout(np.arange(2), 0.5, np.random.default_rng([3, 1]))
    assert (batch.history.numpy() == want_hist).all() and (batch.lengths.numpy() == want_len).all()
    assert (batch.input_ids.numpy() == want_hist + 1).all()  # item ids shifted, pad 0
    with pytest.raises(ValueError, match="rng"):
        ItemIdEncoder(10).collate(ex, np.arange(2), history_dropout=0.5)
