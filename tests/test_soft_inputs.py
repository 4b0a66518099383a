"""Soft token inputs (issue 11: the foundation of BLOGER's differentiable IDs, SPEC 8) and IDs
that change during training.

- One-hot "soft" inputs (``inputs_embeds``, ``decoder_inputs_embeds``) give exactly the hard-id
  logits, for the T5 (both ``encoder_input``s, with user tokens) and the decoder-only model.
- The straight-through batch embeddings keep the hard forward value exactly and pass the gradient
  to the code probabilities as ``dL/d(embedding) @ E_l^T`` (derived here by hand).
- ``Method.update_item_tokens`` -> ``Trainer.set_item_tokens``: beam search decodes to the new IDs
  only; best.pt / last.pt reload with them.

Synthetic data as tests/test_trainer.py: 40 items with 2-token IDs (codes < 8, a codebook-sized
vocabulary of 2 x 8), next = (7 x + 3) mod 40.
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
from genrec_core.recommender.decoder_only import shift_right
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import build_generative_model
from genrec_core.recommender.soft_inputs import decoder_inputs_embeds, history_inputs_embeds, one_hot_embeds, straight_through
from genrec_core.recommender.trainer import Trainer
from genrec_core.recommender.trie import ItemTrie
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.runtime import seed_everything

N_ITEMS, MAX_LEN, L, K = 40, 5, 2, 8
FRAMES = next_item_pattern_splits(N_ITEMS, MAX_LEN, 24, 8, 0)
CODES = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
VOCAB = SemanticIdVocab.from_codebook(L, K)
TOKENS = torch.from_numpy(VOCAB.codes_to_tokens(CODES))
CASES = [("tiger", "tokens", 0), ("tiger", "items", 2), ("tiger", "tokens", 3), ("decoder_only", "tokens", 2), ("decoder_only", "items", 0)]


def params(kind: str, encoder_input: str = "tokens", user_tokens: int = 0, **kw) -> RecommenderParams:
    base = dict(
        model=kind,
        encoder_input=encoder_input,
        user_tokens=user_tokens,
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
    )
    base.update(kw)
    return RecommenderParams(**base)


def model_and_batch(kind: str, encoder_input: str, user_tokens: int, n: int = 8):
    seed_everything(0)
    p = params(kind, encoder_input, user_tokens)
    model = build_generative_model(p, VOCAB, TOKENS).eval()
    encoder = SequenceEncoder(TOKENS, encoder_input, user_buckets=user_tokens, user_token_offset=VOCAB.size)
    return model, encoder.collate(examples_from_frame(FRAMES["train"]), np.arange(n))


@pytest.mark.parametrize("kind,encoder_input,user_tokens", CASES)
def test_one_hot_inputs_embeds_give_the_hard_logits_exactly(kind, encoder_input, user_tokens):
    model, batch = model_and_batch(kind, encoder_input, user_tokens)
    weight = model.token_embedding
    with torch.no_grad():
        hard = model(batch.input_ids, batch.attention_mask, batch.labels)
        soft = model(
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            inputs_embeds=one_hot_embeds(batch.input_ids, weight),
            decoder_inputs_embeds=one_hot_embeds(shift_right(batch.labels), weight),
        )
        only_encoder = model(batch.input_ids, batch.attention_mask, batch.labels, inputs_embeds=one_hot_embeds(batch.input_ids, weight))
        only_decoder = model(batch.input_ids, batch.attention_mask, batch.labels, decoder_inputs_embeds=one_hot_embeds(shift_right(batch.labels), weight))
        # the inputs do matter: another decoder input changes the logits
        other = model(batch.input_ids, batch.attention_mask, batch.labels, decoder_inputs_embeds=one_hot_embeds(shift_right(batch.labels.flip(0)), weight))
    assert torch.equal(soft, hard) and torch.equal(only_encoder, hard) and torch.equal(only_decoder, hard)
    assert not torch.equal(other, hard)
    # model.loss accepts them too
    torch.testing.assert_close(model.loss(batch, inputs_embeds=one_hot_embeds(batch.input_ids, weight)), model.loss(batch), rtol=0, atol=0)


def _random_probs(shape, seed):
    return torch.softmax(3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1).requires_grad_()


@pytest.mark.parametrize("kind,encoder_input,user_tokens", CASES)
def test_straight_through_embeddings_forward_hard_and_pass_soft_gradients(kind, encoder_input, user_tokens):
    model, batch = model_and_batch(kind, encoder_input, user_tokens)
    weight = model.token_embedding
    b, h = batch.history.shape
    history_probs = _random_probs((b, h, L, K), 1)
    target_probs = _random_probs((b, L, K), 2)
    enc = history_inputs_embeds(batch.input_ids, batch.history, batch.lengths, history_probs, weight, VOCAB)
    dec = decoder_inputs_embeds(batch.labels, target_probs, weight, VOCAB)
    assert torch.equal(enc, weight[batch.input_ids]) and torch.equal(dec, weight[shift_right(batch.labels)])  # forward value: hard, exactly
    logits = model(batch.input_ids, batch.attention_mask, batch.labels, inputs_embeds=enc, decoder_inputs_embeds=dec)
    hard = model(batch.input_ids, batch.attention_mask, batch.labels)  # with autograd on too: CPU kernels differ by an ulp with and without it
    assert torch.equal(logits, hard)
    g = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3))
    (logits * g).sum().backward()

    # by hand: gradient at each input embedding (leaf copies of the hard embeddings) ...
    enc_leaf = weight[batch.input_ids].detach().requires_grad_()
    dec_leaf = weight[shift_right(batch.labels)].detach().requires_grad_()
    (model(batch.input_ids, batch.attention_mask, batch.labels, inputs_embeds=enc_leaf, decoder_inputs_embeds=dec_leaf) * g).sum().backward()
    w = weight.detach()
    offsets = VOCAB.level_offsets
    lead = batch.input_ids.shape[1] - (h * L + 1 if encoder_input == "tokens" else h + 1)
    assert lead == (1 if user_tokens else 0)
    expected_h = torch.zeros_like(history_probs)
    for i in range(b):
        for j in range(int(batch.lengths[i])):
            for level in range(L):
                grad_emb = enc_leaf.grad[i, lead + j * L + level] if encoder_input == "tokens" else enc_leaf.grad[i, lead + j, level]
                expected_h[i, j, level] = grad_emb @ w[offsets[level] : offsets[level] + K].T  # ... times E_l^T
    expected_t = torch.stack([dec_leaf.grad[:, 1 + level] @ w[offsets[level] : offsets[level] + K].T for level in range(L)], dim=1)
    torch.testing.assert_close(history_probs.grad, expected_h, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(target_probs.grad, expected_t, rtol=1e-4, atol=1e-6)
    assert bool(history_probs.grad.abs().sum() > 0) and bool((history_probs.grad[batch.history < 0] == 0).all())


def test_straight_through_value_and_gradient():
    soft = torch.tensor([0.3, 0.7], requires_grad=True)
    hard = torch.tensor([1.7, -2.1], requires_grad=True)
    out = straight_through(soft, hard)
    assert torch.equal(out, hard.detach())  # exactly h, not h up to rounding
    (out * torch.tensor([2.0, 5.0])).sum().backward()
    assert torch.equal(soft.grad, torch.tensor([2.0, 5.0])) and hard.grad is None


# --------------------------------------------------------------------------- IDs that change


def make_trainer(tmp_path, method=PlainMethod, epochs=1):
    seed_everything(0)
    p = params("tiger", epochs=epochs)
    model = build_generative_model(p, VOCAB, TOKENS)
    loss = build_loss("ce", {}, LossContext(VOCAB, TOKENS))
    meta = {"params": dataclasses.asdict(p), "vocab": VOCAB.to_dict(), "tokenizer": "epoch_0001", "item_tokens": TOKENS}
    return Trainer(
        model,
        p,
        method(MethodContext(SequenceEncoder(TOKENS, p.encoder_input), loss)),
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports",
        seed=0,
        fingerprint="fp",
        checkpoint_meta=meta,
        progress=False,
        use_dvclive=False,
    )


PERM = torch.from_numpy(np.random.default_rng(7).permutation(N_ITEMS))  # item i gets the old ID of item PERM[i]
SHIFTED = TOKENS.clone()  # every third item moves to a first code no item used (5, 6, 7), keeping its last code
SHIFTED[::3, 0] = int(VOCAB.level_offsets[0]) + 5 + torch.arange(0, N_ITEMS, 3) // 3 % 3


def test_trainer_decodes_and_saves_the_new_ids(tmp_path):
    trainer = make_trainer(tmp_path)
    model, method = trainer.model, trainer.method
    batch = method.eval_collate(trainer.valid_examples, np.arange(12))
    model.eval()
    with torch.no_grad():
        old_items, old_scores = model.rank(batch, 10)

    # a permutation of the IDs: the same token sequences, now naming other items
    method.update_item_tokens(trainer, TOKENS[PERM])
    with torch.no_grad():
        items, scores = model.rank(batch, 10)
    inverse = torch.argsort(PERM)
    assert torch.equal(items, inverse[old_items]) and torch.equal(scores, old_scores)
    assert torch.equal(method.encoder.tables[0], TOKENS[PERM])
    assert torch.equal(
        method.collate(trainer, trainer.train_examples, np.arange(4)).labels[:, :L], TOKENS[PERM][torch.from_numpy(trainer.train_examples.targets[:4]).long()]
    )

    # IDs outside the old set: the trie holds exactly the new IDs, beam search returns only them
    method.update_item_tokens(trainer, SHIFTED)
    trie = model.item_trie
    assert torch.equal(trie.lookup(SHIFTED), torch.arange(N_ITEMS)) and trie.num_nodes - trie.first_leaf == N_ITEMS
    gone = torch.tensor([i for i in range(N_ITEMS) if not (SHIFTED == TOKENS[i]).all(1).any()])
    assert gone.numel() > 0 and bool((trie.lookup(TOKENS[gone]) == -1).all())
    with torch.no_grad():
        items, scores = model.rank(batch, 10)
        ref = constrained_beam_search(model, batch.input_ids, batch.attention_mask, ItemTrie.build(SHIFTED, VOCAB.size), 10)
    assert torch.equal(items, ref.items) and torch.equal(scores, ref.scores)
    assert not torch.equal(scores, old_scores)  # the changed IDs do change the ranking

    # best.pt reloads with the new IDs
    trainer.save_best({})
    loaded = load_recommender(trainer.best_path)
    assert torch.equal(loaded.item_tokens, SHIFTED)
    with torch.no_grad():
        again = loaded.model.rank(batch, 10)
    assert torch.equal(again[0], items) and torch.equal(again[1], scores)

    # last.pt too: a resumed trainer decodes and tokenizes with the new IDs
    trainer.save_last()
    resumed = make_trainer(tmp_path)
    assert torch.equal(resumed.model.item_trie.lookup(TOKENS), torch.arange(N_ITEMS))  # fresh: the old IDs
    assert resumed.try_resume()
    assert torch.equal(resumed.model.item_trie.lookup(SHIFTED), torch.arange(N_ITEMS))
    assert torch.equal(resumed.method.encoder.tables[0], SHIFTED) and torch.equal(resumed.checkpoint_meta["item_tokens"], SHIFTED)


class ChangeIdsAtEpochEnd(PlainMethod):
    """What a runtime tokenizer's method does after a refresh: hand the new IDs to the trainer."""

    def on_epoch_end(self, trainer, epoch):
        self.update_item_tokens(trainer, TOKENS[PERM])


def test_fit_keeps_the_ids_of_the_selected_model(tmp_path):
    trainer = make_trainer(tmp_path, ChangeIdsAtEpochEnd)
    trainer.fit()
    loaded = load_recommender(trainer.best_path)
    assert torch.equal(loaded.item_tokens, TOKENS[PERM])
    assert torch.equal(loaded.model.item_trie.lookup(TOKENS[PERM]), torch.arange(N_ITEMS))
    assert "item_tokens" in torch.load(trainer.last_path, map_location="cpu", weights_only=False)


def test_unchanged_ids_leave_last_pt_as_before(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.save_last()
    state = torch.load(trainer.last_path, map_location="cpu", weights_only=False)
    assert "item_tokens" not in state and "encoder_tables" not in state["method"]


def test_recommender_loss_reaches_the_rq_vae_through_soft_codes():
    """The whole chain BLOGER builds on: runtime tokenizer IDs (dedup level included) tokenize the
    batch, its soft codes feed the model straight-through, the loss's gradient reaches the
    RQ-VAE's encoder and codebooks while the logits stay those of the hard IDs."""
    from genrec_core.tokenizers.rqvae import RQVAE, RQVAEConfig, RQVAETokenizer
    from genrec_core.tokenizers.runtime import RuntimeItemTokenizer

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(N_ITEMS, 6)).astype(np.float32)
    rq = RQVAE(RQVAEConfig(6, L, K, [10], 4))
    with torch.no_grad():
        rq.quantizer.kmeans_init(rq.encoder(torch.from_numpy(x)), 10, torch.Generator().manual_seed(0))
    rt = RuntimeItemTokenizer({"epoch_0001": RQVAETokenizer.from_model(rq)}, x, collision="dedup_level", dedup_size=N_ITEMS)
    vocab, tokens = rt.vocab, rt.item_tokens()
    assert tokens.shape == (N_ITEMS, L + 1)
    seed_everything(0)
    model = build_generative_model(params("tiger", "items", 2), vocab, tokens).eval()
    batch = SequenceEncoder(tokens, "items", user_buckets=2, user_token_offset=vocab.size).collate(examples_from_frame(FRAMES["train"]), np.arange(8))
    weight = model.token_embedding
    enc = history_inputs_embeds(batch.input_ids, batch.history, batch.lengths, rt.soft_codes(items=batch.history.clamp(min=0)), weight, vocab)
    dec = decoder_inputs_embeds(batch.labels, rt.soft_codes(items=batch.targets), weight, vocab)
    soft_loss = model.loss(batch, inputs_embeds=enc, decoder_inputs_embeds=dec)
    assert torch.equal(soft_loss, model.loss(batch))
    soft_loss.sum().backward()
    tok = rt.model()
    assert bool(tok.encoder[0].weight.grad.abs().sum() > 0)
    assert all(bool(tok.quantizer.codebooks.grad[level].abs().sum() > 0) for level in range(L))
