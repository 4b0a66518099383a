"""One interface for every recommender: ``loss(batch)`` and ``rank(batch, k)`` on the T5, the
decoder-only model, SASRec and GRU4Rec, and one loader that rebuilds each from its ``best.pt``.

Synthetic data (as tests/test_trainer.py): 40 items with 2-token IDs; next = (7 x + 3) mod 40.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import next_item_pattern_splits

from genrec_core.config import RecommenderParams
from genrec_core.methods import MethodContext
from genrec_core.methods.plain import PlainMethod
from genrec_core.recommender.beam_search import constrained_beam_search
from genrec_core.recommender.checkpoint import load_recommender
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.interface import Recommender, rank_examples
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import GenerativeRecommender, build_generative_model
from genrec_core.recommender.model_spec import FamilyNames
from genrec_core.recommender.trainer import Trainer
from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.runtime import seed_everything
from genrec_core.sequential.models import build_model
from genrec_core.sequential.training import ItemIdEncoder, SequentialLoss

N_ITEMS = 40
MAX_LEN = 5
FRAMES = next_item_pattern_splits(N_ITEMS, MAX_LEN, 24, 8, 0)
CODES = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
VOCAB = SemanticIdVocab.from_codes([CODES])
TOKENS = torch.from_numpy(VOCAB.codes_to_tokens(CODES))
KINDS = ["t5", "decoder_only", "sasrec", "gru4rec"]
GENERATIVE_MODELS = FamilyNames("generative")


def params(kind: str, **kw) -> RecommenderParams:
    base = dict(
        model=kind,
        num_layers=1,
        num_decoder_layers=1,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        dropout=0.1,
        lr=0.01,
        warmup_steps=3,
        batch_size=16,
        epochs=1,
        eval_beam_size=10,
        eval_batch_size=16,
        user_tokens=2 if kind == "t5" else 0,
    )
    base.update(kw)
    return RecommenderParams(**base)


def build(kind: str):
    """(model, encoder, loss strategy) of ``kind``, generative models with their item IDs set."""
    seed_everything(0)
    p = params(kind)
    if kind in GENERATIVE_MODELS:
        encoder = SequenceEncoder(TOKENS, p.encoder_input, user_buckets=p.user_tokens, user_token_offset=VOCAB.size)
        return build_generative_model(p, VOCAB, TOKENS), encoder, build_loss("ce", {}, LossContext(VOCAB, TOKENS))
    return build_model(kind, N_ITEMS, MAX_LEN, p), ItemIdEncoder(N_ITEMS), SequentialLoss("ce")


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_implements_loss_and_rank(kind):
    model, encoder, strategy = build(kind)
    assert isinstance(model, Recommender)
    batch = encoder.collate(examples_from_frame(FRAMES["train"]), np.arange(8))
    model.eval()
    per = model.loss(batch)
    assert per.shape == (8,) and bool(torch.isfinite(per).all()) and bool((per > 0).all())
    # the model's own objective is the plain cross-entropy the default method's ce strategy computes
    expected = strategy(model(batch.input_ids, batch.attention_mask, batch.labels), batch.labels, batch).per_example
    torch.testing.assert_close(per, expected)
    per[:3].sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1)

    items, scores = model.rank(batch, 7)
    assert items.shape == scores.shape == (8, 7)
    assert bool(((items >= 0) & (items < N_ITEMS)).all()) and all(len(set(row)) == 7 for row in items.tolist())
    assert bool((scores[:, 1:] <= scores[:, :-1]).all())  # best first
    with torch.no_grad():
        if kind in GENERATIVE_MODELS:  # trie-constrained beam search over the item IDs
            ref = constrained_beam_search(model, batch.input_ids, batch.attention_mask, ItemTrie.build(TOKENS, VOCAB.size), 7)
            assert torch.equal(items, ref.items) and torch.equal(scores, ref.scores)
        else:  # full ranking
            top = torch.topk(model(batch.input_ids, batch.attention_mask).float(), 7, dim=1)
            assert torch.equal(items, top.indices) and torch.equal(scores, top.values)


def test_generative_rank_needs_the_item_ids():
    model = GenerativeRecommender(params("t5"), VOCAB)
    batch = SequenceEncoder(TOKENS, "tokens").collate(examples_from_frame(FRAMES["test"]), np.arange(2))
    with pytest.raises(RuntimeError, match="set_items"):
        model.rank(batch, 3)
    model.set_items(TOKENS.flip(0))  # another ID assignment: item i gets item N-1-i's ID
    items, _ = model.rank(batch, 3)
    model.set_items(TOKENS)
    again, _ = model.rank(batch, 3)
    assert torch.equal(items, N_ITEMS - 1 - again)


@pytest.mark.parametrize("kind", KINDS)
def test_one_loader_rebuilds_every_model(tmp_path, kind):
    """Trained through the Trainer with the metadata the stages store, ``load_recommender``
    returns the same weights and the same rankings, whatever the kind."""
    model, encoder, strategy = build(kind)
    p = params(kind)
    if kind in GENERATIVE_MODELS:
        meta = {"params": dataclasses.asdict(p), "vocab": VOCAB.to_dict(), "tokenizer": "epoch_0001", "item_tokens": TOKENS}
    else:
        meta = {"model_kind": kind, "config": dict(model.config), "params": dataclasses.asdict(p)}
    trainer = Trainer(
        model,
        p,
        PlainMethod(MethodContext(encoder, strategy)),
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports",
        seed=0,
        fingerprint="fp",
        checkpoint_meta=meta,
        device="cpu",
        progress=False,
        use_dvclive=False,
    )
    trainer.fit()  # one epoch: best.pt holds the final weights
    loaded = load_recommender(tmp_path / "ckpt" / "best.pt")
    assert loaded.kind == kind and loaded.params == p and not loaded.model.training
    assert (loaded.vocab is None) == (kind not in GENERATIVE_MODELS)
    a, b = trainer.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    test = examples_from_frame(FRAMES["test"])
    got = rank_examples(loaded.model, test, encoder.collate, 10, 16)
    want = rank_examples(trainer.model, test, encoder.collate, 10, 16)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[0].shape == (len(test), 10)
