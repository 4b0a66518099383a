"""BLOGER (``recommender.method: bloger``, paper 003, SPEC 8) on tiny models.

Synthetic data as tests/test_mtgrec.py (40 items, next = (7 x + 3) mod 40, 10 batches per epoch);
the IDs come from a tiny RQ-VAE (6-d random item vectors, 3 levels of 8 codes, k-means
initialised) held by a ``RuntimeItemTokenizer``.

- the meta-gradient d L_rec(theta - eta grad_theta L_rec(theta, phi), phi) / d phi against central
  finite differences in float64 (the recommender and its look-ahead written out here with a deep
  copy of the model, not ``functional_call``);
- gradient surgery on hand-made tensors (projection, the row-wise variant, none);
- joint mode: the tokenizer's gradient is d(L_rec + lam L_token) / d phi at the current theta;
- after a tokenizer step: the trie accepts exactly the new IDs, no two items share one, the IDs
  are those a fresh tokenizer from the updated weights gives;
- packed batches (``pack_examples``): the soft inputs keep the packed hard forward exactly, score as
  the unpacked ones where the windows agree, and carry the same gradient to the tokenizer; the
  meta-gradient check also runs packed; packed configs train packed;
- resume between two tokenizer steps ends bit-identical (also packed);
- the train stage writes the final IDs and evaluate decodes with them.
"""

from __future__ import annotations

import copy
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import next_item_pattern_splits
from torch import nn

from genrec_core.config import RecommenderParams
from genrec_core.errors import GenrecError, ParamError
from genrec_core.methods import MethodContext, build_method, check_method_params, method_class
from genrec_core.methods.bloger import BlogerMethod, code_usage, gradient_surgery
from genrec_core.recommender import soft_inputs
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.losses import LossContext, LossOutput, build_loss
from genrec_core.recommender.model import build_generative_model
from genrec_core.recommender.packing import PackedBatchSampler
from genrec_core.recommender.trainer import Trainer, TrainingInterrupted
from genrec_core.runtime import seed_everything
from genrec_core.tokenizers.collisions import group_ids
from genrec_core.tokenizers.rqvae import RQVAE, RQVAEConfig, RQVAETokenizer
from genrec_core.tokenizers.runtime import RuntimeItemTokenizer

N_ITEMS, D, L, K = 40, 6, 3, 8
FRAMES = next_item_pattern_splits(N_ITEMS, 5, 30, 8, 0)
NAME = "epoch_0001"


def runtime_tokenizer(seed: int = 0) -> RuntimeItemTokenizer:
    """The tiny RQ-VAE as a kept tokenizer would give it (the same weights for the same seed)."""
    torch.manual_seed(seed)
    x = np.random.default_rng(seed).normal(size=(N_ITEMS, D)).astype(np.float32)
    rq = RQVAE(RQVAEConfig(D, L, K, [10], 4))
    with torch.no_grad():
        rq.quantizer.kmeans_init(rq.encoder(torch.from_numpy(x)), 10, torch.Generator().manual_seed(seed))
    return RuntimeItemTokenizer({NAME: RQVAETokenizer.from_model(rq)}, x)


class DoubleCE(nn.Module):
    """Token-mean cross-entropy in the logits' dtype (the project's losses compute in float32,
    too coarse for a float64 finite-difference check)."""

    extra_forward_needed = False

    def forward(self, logits, labels, batch, state, extra_logits=None):
        per = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)
        return LossOutput(per.mean(), per_example=per)

    def on_step(self, step, total):
        pass


def make_trainer(tmp_path, method_params=None, kind="tiger", init_seed=0, method_cls=BlogerMethod, double=False, loss=None, **kw) -> Trainer:
    rt = runtime_tokenizer()
    if double:
        rt = rt.double()
    seed_everything(init_seed)
    base = dict(
        model=kind,
        encoder_input="items",
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
        epochs=3,
        patience=10,
        eval_beam_size=10,
        eval_batch_size=32,
        log_every=2,
    )
    base.update(kw)
    method_params = dict(method_params or {})
    params = RecommenderParams(method="bloger", method_params=method_params, **base)
    tokens = rt.item_tokens()
    model = build_generative_model(params, rt.vocab, tokens)
    if double:
        model = model.double()
    loss = loss if loss is not None else build_loss("ce", {}, LossContext(rt.vocab, tokens))
    encoder = SequenceEncoder(tokens, params.encoder_input, user_buckets=params.user_tokens, user_token_offset=rt.vocab.size)
    method = method_cls(MethodContext(encoder, loss, extra={"runtime_tokenizer": rt}), **method_params)
    return Trainer(
        model,
        params,
        method,
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports" / "train",
        seed=0,
        fingerprint="fp",
        device="cpu",
        progress=False,
        use_dvclive=False,
        checkpoint_meta={"item_tokens": tokens.clone()},
    )


def first_batch(trainer: Trainer, n: int = 16):
    return trainer.method.collate(trainer, trainer.train_examples, np.arange(n)).to("cpu")


def phi_of(trainer: Trainer) -> list[torch.Tensor]:
    return trainer.method.tokenizer_parameters()


# --------------------------------------------------------------------------- params


def test_bloger_is_registered_and_its_params_are_validated():
    assert method_class("bloger") is BlogerMethod
    assert check_method_params("bloger", {"lam": 1}) == {**BlogerMethod.param_defaults, "lam": 1.0}
    for given, key in [
        ({"lamda": 1.0}, "lamda"),
        ({"mode": "bi"}, "mode"),
        ({"surgery": "pcgrad"}, "surgery"),
        ({"outer_batch": "test"}, "outer_batch"),
        ({"lam": -1.0}, "lam"),
        ({"lookahead_lr": float("nan")}, "lookahead_lr"),
        ({"tokenizer_lr": 0.0}, "tokenizer_lr"),
        ({"tokenizer_weight_decay": -1e-4}, "tokenizer_weight_decay"),
        ({"updates_per_epoch": 0}, "updates_per_epoch"),
        ({"updates_per_epoch": 1.5}, "updates_per_epoch"),
        ({"temperature": 0}, "temperature"),
        ({"finetune_epochs": -1}, "finetune_epochs"),
        ({"finetune_lr": 0.0}, "finetune_lr"),
    ]:
        with pytest.raises(ParamError, match=rf"recommender\.method_params\.{key}"):
            check_method_params("bloger", given)
    rt = runtime_tokenizer()
    tokens = rt.item_tokens()
    ce = build_loss("ce", {}, LossContext(rt.vocab, tokens))
    with pytest.raises(ParamError, match="runtime tokenizer"):
        build_method("bloger", {}, MethodContext(SequenceEncoder(tokens, "items"), ce))
    old_file = runtime_tokenizer()
    old_file.model(NAME).decoder = None  # a kept file written before kept files stored the decoder
    with pytest.raises(GenrecError, match="no decoder"):
        build_method("bloger", {}, MethodContext(SequenceEncoder(tokens, "items"), ce, extra={"runtime_tokenizer": old_file}))
    with pytest.raises(ParamError, match=r"recommender\.loss"):
        build_method(
            "bloger", {}, MethodContext(SequenceEncoder(tokens, "items"), build_loss("cft", {}, LossContext(rt.vocab, tokens)), extra={"runtime_tokenizer": rt})
        )


# --------------------------------------------------------------------------- surgery


def test_projection_removes_the_conflict_and_leaves_agreeing_gradients_untouched():
    tok = [torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0], [0.0, 2.0]]), torch.tensor([3.0]), None]
    rec = [torch.tensor([-1.0, 1.0]), torch.tensor([[2.0, 0.5], [1.0, 1.0]]), None, torch.tensor([4.0])]
    out, conflicts = gradient_surgery(tok, rec, 0.5, "projection")
    # conflict: g_rec' = g_rec - (g_rec . g_tok / |g_tok|^2) g_tok = [-1, 1] + [1, 0] = [0, 1]
    assert torch.equal(out[0], 0.5 * tok[0] + torch.tensor([0.0, 1.0]))
    assert torch.equal(out[1], 0.5 * tok[1] + rec[1])  # agreeing (dot 4.5 > 0): untouched
    assert torch.equal(out[2], 0.5 * tok[2]) and torch.equal(out[3], rec[3])  # one gradient missing
    assert conflicts == [True, False]
    none, flags = gradient_surgery(tok, rec, 0.5, "none")
    assert torch.equal(none[0], 0.5 * tok[0] + rec[0]) and flags == [True, False]

    gen = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(200):
        t, r = torch.randn(4, 5, generator=gen, dtype=torch.float64), torch.randn(4, 5, generator=gen, dtype=torch.float64)
        (g,), (c,) = gradient_surgery([t], [r], 1.0, "projection")
        projected = g - t
        before = float((t * r).sum())
        assert c == (before < 0)
        if before < 0:
            seen += 1
            assert float((t * projected).sum()) >= -1e-12  # no conflict left (orthogonal)
            assert abs(float((t * projected).sum())) <= 1e-12
        else:
            assert torch.equal(g, t + r)  # untouched
    assert 50 < seen < 150


def test_rowwise_surgery_projects_every_row_on_its_own():
    gen = torch.Generator().manual_seed(1)
    t = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    r = -t + 0.3 * torch.randn(3, 4, generator=gen, dtype=torch.float64)  # in conflict
    (g,), (c,) = gradient_surgery([t], [r], 2.0, "rowwise")
    assert c
    expected = r.numpy().copy()
    for i in range(3):  # written out: each row of g_rec minus its component along that row of g_tok
        u = t[i].numpy() / np.linalg.norm(t[i].numpy())
        expected[i] = r[i].numpy() - (r[i].numpy() @ u) * u
    np.testing.assert_allclose((g - 2.0 * t).numpy(), expected, rtol=1e-12, atol=1e-14)
    assert all(abs(float(t[i] @ (g - 2.0 * t)[i])) < 1e-12 for i in range(3))  # every row orthogonal
    (p,), _ = gradient_surgery([t], [r], 2.0, "projection")
    assert not torch.allclose(p, g)  # not the per-tensor projection for a 2-D tensor
    (g1,), _ = gradient_surgery([t[0]], [r[0]], 2.0, "rowwise")
    (p1,), _ = gradient_surgery([t[0]], [r[0]], 2.0, "projection")
    torch.testing.assert_close(g1, p1, rtol=1e-12, atol=1e-14)  # a 1-D tensor is one row
    agree = t + 0.1 * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    (a,), _ = gradient_surgery([t], [agree], 2.0, "rowwise")
    assert torch.equal(a, 2.0 * t + agree)  # no conflict: untouched


# --------------------------------------------------------------------------- the meta-gradient


def _soft_loss(method: BlogerMethod, model: nn.Module, batch) -> torch.Tensor:
    soft = method.soft_embeds(batch, model.token_embedding, grad=True)
    if batch.packing is not None:
        soft["packing"] = batch.packing
    logits = model(batch.input_ids, batch.attention_mask, batch.labels, **soft)
    return F.cross_entropy(logits.transpose(1, 2), batch.labels, reduction="none").mean(1).mean()


def lookahead_loss(method: BlogerMethod, model: nn.Module, batch, eta: float) -> float:
    """L_rec(theta - eta grad_theta L_rec(theta, phi), phi), written out: the gradient, then a deep
    copy of the model with its parameters moved by -eta times it."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(_soft_loss(method, model, batch), params)
    shadow = copy.deepcopy(model)
    with torch.no_grad():
        for q, g in zip([p for p in shadow.parameters() if p.requires_grad], grads):
            q.sub_(eta * g)
        return float(_soft_loss(method, shadow, batch))


def _rms_norm_in_input_dtype(self, hidden_states):
    """T5LayerNorm / LlamaRMSNorm without their float32 variance (float64 throughout)."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@pytest.mark.parametrize("kind,pack", [("tiger", 0), ("decoder_only", 0), ("decoder_only", 3)])
def test_meta_gradient_matches_finite_differences(tmp_path, kind, pack, monkeypatch):
    """With straight-through inputs the loss's value does not depend on phi (hard forward), so the
    meta-gradient is that of the soft surrogate: the check runs with fully soft item inputs
    (``straight_through`` -> the soft embedding), where L_rec is a smooth function of (theta, phi)
    as long as no hard code flips, and the look-ahead must be differentiated through. The
    transformers norm layers compute their variance in float32 whatever the input; they are made
    float64 here, else their rounding swamps a float64 finite difference."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    monkeypatch.setattr(soft_inputs, "straight_through", lambda soft, hard: soft)
    monkeypatch.setattr(T5LayerNorm, "forward", _rms_norm_in_input_dtype)
    monkeypatch.setattr(LlamaRMSNorm, "forward", _rms_norm_in_input_dtype)
    eta = 0.5  # large, so that the second-order term is far above the tolerance
    trainer = make_trainer(tmp_path, {"lookahead_lr": eta, "surgery": "none"}, kind=kind, double=True, loss=DoubleCE(), dropout=0.0, pack_examples=pack)
    method = trainer.method
    batch = first_batch(trainer)
    assert (batch.packing is not None) == bool(pack)  # packed: the look-ahead and the outer loss run the packed batch
    g_meta = method.rec_gradient(trainer, batch)
    method.params["mode"] = "joint"
    g_joint = method.rec_gradient(trainer, batch)
    phi = phi_of(trainer)
    assert all(g is None for g, (n, _) in zip(g_meta, method.tokenizer.named_parameters()) if n.startswith("decoder"))  # L_rec does not reach the decoder
    assert any(g is not None and bool(g.abs().sum() > 0) for g in g_meta)
    codes = method.runtime.soft_assign(items=torch.arange(N_ITEMS))[1]
    gen = torch.Generator().manual_seed(3)
    eps = 1e-5
    gaps = []
    for _ in range(3):
        dirs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in phi]
        analytic = sum(float((g * v).sum()) for g, v in zip(g_meta, dirs) if g is not None)
        joint = sum(float((g * v).sum()) for g, v in zip(g_joint, dirs) if g is not None)
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, v in zip(phi, dirs):
                    p.add_(sign * eps * v)
            assert torch.equal(method.runtime.soft_assign(items=torch.arange(N_ITEMS))[1], codes)  # no hard code flipped
            values.append(lookahead_loss(method, trainer.model, batch, eta))
            with torch.no_grad():
                for p, v in zip(phi, dirs):
                    p.sub_(sign * eps * v)
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(analytic - numeric) <= 1e-6 * max(1e-3, abs(numeric)), (analytic, numeric)
        gaps.append(abs(analytic - joint))
    assert max(gaps) > 1e-3 * max(1e-3, abs(numeric))  # the look-ahead changes the gradient: the check can fail


def test_joint_mode_steps_on_the_gradient_of_the_summed_losses(tmp_path):
    lam = 0.7
    trainer = make_trainer(tmp_path, {"mode": "joint", "surgery": "none", "lam": lam}, double=True, loss=DoubleCE(), dropout=0.0)
    method = trainer.method
    batch = first_batch(trainer)
    phi = phi_of(trainer)
    theta = {n: p for n, p in trainer.model.named_parameters()}
    total = method.recommender_loss(trainer, batch, theta) + lam * method.runtime.tokenizer_loss(NAME)
    expected = torch.autograd.grad(total, phi, allow_unused=True)
    seen = []
    original = method.tokenizer_optimizer.step

    def spy(*args, **kwargs):
        seen.extend(None if p.grad is None else p.grad.clone() for p in phi)
        return original(*args, **kwargs)

    method.tokenizer_optimizer.step = spy
    method.tokenizer_step(trainer, batch)
    assert len(seen) == len(phi)
    for got, want in zip(seen, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert seen[[n for n, _ in method.tokenizer.named_parameters()].index("decoder.0.weight")] is not None  # L_token reaches the decoder


# --------------------------------------------------------------------------- IDs that move


def test_after_a_tokenizer_step_the_trie_accepts_exactly_the_new_ids(tmp_path):
    trainer = make_trainer(tmp_path, {"tokenizer_lr": 0.003})
    method, model = trainer.method, trainer.model
    old = method.runtime.item_tokens(NAME).clone()
    batch = first_batch(trainer)
    record = method.tokenizer_step(trainer, batch)
    new = method.runtime.item_tokens(NAME)
    changed = torch.any(new != old, dim=1)
    assert bool(changed.any()) and record["changed"] == pytest.approx(float(changed.double().mean()))
    assert group_ids(new.numpy())[1].max() == 1  # no two items share an ID
    trie = model.item_trie
    assert torch.equal(trie.lookup(new), torch.arange(N_ITEMS)) and trie.num_nodes - trie.first_leaf == N_ITEMS
    gone = old[changed][~(old[changed][:, None] == new[None]).all(-1).any(1)]
    assert gone.shape[0] > 0 and bool((trie.lookup(gone) == -1).all())
    # the IDs a fresh tokenizer from the updated weights gives (independent of the refresh)
    fresh = RuntimeItemTokenizer({NAME: RQVAETokenizer.from_model(method.tokenizer)}, method.runtime.vectors.numpy())
    assert torch.equal(fresh.item_tokens(), new)
    # the encoder tokenizes, and checkpoints store, the new IDs
    assert torch.equal(method.encoder.tables[0], new) and torch.equal(trainer.checkpoint_meta["item_tokens"], new)
    assert torch.equal(
        method.collate(trainer, trainer.train_examples, np.arange(4)).labels[:, :L], new[torch.from_numpy(trainer.train_examples.targets[:4]).long()]
    )
    density, entropy = code_usage(method.runtime.hard_ids(NAME).numpy(), L, K)
    assert record["density"] == density and record["entropy"] == entropy
    ids = method.runtime.hard_ids(NAME).numpy()
    counts = np.bincount(ids[:, 0], minlength=K)
    p = counts[counts > 0] / N_ITEMS
    assert density[0] == (counts > 0).mean() and entropy[0] == pytest.approx(float(-(p * np.log2(p)).sum()))


class PackedBatchesSeen(BlogerMethod):
    """Records, per ordinary step, whether the batch was packed with its chunk items' soft inputs."""

    seen: list[bool] = []

    def step(self, trainer, batch):
        out = super().step(trainer, batch)
        PackedBatchesSeen.seen.append(batch.packing is not None)
        return out

    def compute_losses(self, trainer, batch):
        assert batch.inputs_embeds.shape[:-1] == batch.packing.items.shape and batch.decoder_inputs_embeds.shape[:2] == batch.labels.shape
        return super().compute_losses(trainer, batch)


def test_packed_configs_train_packed_with_updates_where_planned(tmp_path):
    PackedBatchesSeen.seen = []
    trainer = make_trainer(tmp_path, {"updates_per_epoch": 2}, kind="decoder_only", pack_examples=3, epochs=2, method_cls=PackedBatchesSeen)
    # 30 users x 5 linked windows: chunks of 3 and 2 windows, 60 chunks, 16 // 3 = 5 chunks a batch
    assert isinstance(trainer.sampler, PackedBatchSampler) and len(trainer.sampler) == 12 and trainer.state.total_steps == 24
    summary = trainer.fit()
    assert PackedBatchesSeen.seen == [True] * 24
    assert [r["step"] for r in summary["bloger_updates"]] == [6, 12, 18, 24]
    assert summary["bloger_before"]["density"][0] > 0 and len(summary["bloger_after"]["entropy"]) == L and summary["peak_rss_mb"] > 0
    best = torch.load(trainer.best_path, weights_only=True)["item_tokens"]
    assert torch.equal(trainer.model.item_trie.lookup(trainer.method.runtime.item_tokens(NAME)), torch.arange(N_ITEMS))
    assert summary["bloger_after"]["density"] == code_usage(trainer.method.vocab.tokens_to_codes(best.numpy()), L, K)[0]


def packed_and_unpacked(trainer: Trainer, n: int = 20):
    """The first ``n`` training examples collated packed (the trainer's sampler packs) and unpacked.
    In this data every history is the user's whole prefix (5 items at most, window 5), so every
    window starts at its chunk's first item: the packed forward sees exactly the unpacked inputs."""
    method, ex = trainer.method, trainer.train_examples
    packed = method.collate(trainer, ex, np.arange(n))
    plain = method.encoder.collate(ex, np.arange(n))
    pk = packed.packing
    assert pk is not None and int(pk.group.max()) > 0 and bool((pk.target_pos == packed.lengths).all())
    # the chunk items' ids, read back from the examples: target at target_pos, history before it
    for e in range(n):
        g, p, h = int(pk.group[e]), int(pk.target_pos[e]), int(packed.lengths[e])
        assert int(pk.item_ids[g, p]) == int(packed.targets[e]) and pk.item_ids[g, p - h : p].tolist() == packed.history[e, :h].tolist()
    assert torch.equal(pk.item_ids >= 0, pk.item_mask) and torch.equal(pk.items[pk.item_mask], method.encoder.tables[0][pk.item_ids[pk.item_mask]])
    return packed, plain


def test_packed_soft_inputs_keep_the_packed_hard_forward_and_score_as_unpacked(tmp_path):
    trainer = make_trainer(tmp_path, {}, kind="decoder_only", pack_examples=3, dropout=0.0)
    method, model = trainer.method, trainer.model.eval()
    packed, plain = packed_and_unpacked(trainer)
    weight = model.token_embedding
    with torch.no_grad():
        soft = method.soft_embeds(packed, weight, grad=False)
        assert soft["inputs_embeds"].shape == (*packed.packing.items.shape, weight.shape[1])
        packed_soft = model(packed.input_ids, packed.attention_mask, packed.labels, packing=packed.packing, **soft)
        packed_hard = model(packed.input_ids, packed.attention_mask, packed.labels, packing=packed.packing)
        unpacked_soft = model(plain.input_ids, plain.attention_mask, plain.labels, **method.soft_embeds(plain, weight, grad=False))
    assert torch.equal(packed_soft, packed_hard)  # forward value: the hard IDs', bit for bit
    torch.testing.assert_close(packed_soft, unpacked_soft, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="items_embeds"):  # per-example inputs given to a packed forward
        model(packed.input_ids, packed.attention_mask, packed.labels, packing=packed.packing, **method.soft_embeds(plain, weight, grad=False))


def test_packed_soft_inputs_carry_the_unpacked_gradient_to_the_tokenizer(tmp_path, monkeypatch):
    """float64 (norms too), straight-through: d loss / d phi of the packed batch equals that of the
    same examples unpacked (the forward values agree, see above, and so do the surrogate's)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    monkeypatch.setattr(LlamaRMSNorm, "forward", _rms_norm_in_input_dtype)
    trainer = make_trainer(tmp_path, {}, kind="decoder_only", pack_examples=3, double=True, loss=DoubleCE(), dropout=0.0)
    method, model = trainer.method, trainer.model.eval()
    packed, plain = packed_and_unpacked(trainer)
    phi = phi_of(trainer)
    names = [n for n, _ in method.tokenizer.named_parameters()]
    grads = []
    for batch in (packed, plain):
        loss = _soft_loss(method, model, batch)
        grads.append(dict(zip(names, torch.autograd.grad(loss, phi, allow_unused=True))))
    g_packed, g_plain = grads
    assert g_packed["quantizer.codebooks"].abs().sum() > 0 and g_packed["encoder.0.weight"].abs().sum() > 0
    for n in names:
        if n.startswith("decoder"):
            assert g_packed[n] is None and g_plain[n] is None
        else:
            torch.testing.assert_close(g_packed[n], g_plain[n], rtol=1e-9, atol=1e-12)
    # the ordinary step's packed soft inputs carry no gradient to the tokenizer
    trainer.model.train()
    trainer.train_step(packed)
    assert all(p.grad is None for p in method.tokenizer.parameters())


@pytest.mark.parametrize("kind,encoder_input,user_tokens", [("tiger", "tokens", 3), ("decoder_only", "items", 0), ("tiger", "items", 2)])
def test_the_soft_inputs_keep_the_hard_forward_and_reach_the_tokenizer(tmp_path, kind, encoder_input, user_tokens):
    trainer = make_trainer(tmp_path, {}, kind=kind, encoder_input=encoder_input, user_tokens=user_tokens, dropout=0.0)
    method, model = trainer.method, trainer.model.eval()
    batch = first_batch(trainer)
    soft = method.soft_embeds(batch, model.token_embedding, grad=True)
    logits = model(batch.input_ids, batch.attention_mask, batch.labels, **soft)
    assert torch.equal(logits, model(batch.input_ids, batch.attention_mask, batch.labels))  # forward value: the hard IDs'
    logits.sum().backward()
    grads = {n: p.grad for n, p in method.tokenizer.named_parameters()}
    assert grads["quantizer.codebooks"].abs().sum() > 0 and grads["encoder.0.weight"].abs().sum() > 0
    assert all(g is None for n, g in grads.items() if n.startswith("decoder"))
    method.tokenizer.zero_grad(set_to_none=True)  # the ordinary step's soft inputs carry no gradient to the tokenizer
    trainer.model.train()
    trainer.train_step(batch)
    assert all(p.grad is None for p in method.tokenizer.parameters())


class StoppedAt13(BlogerMethod):
    """SIGTERM after step 13: between the tokenizer steps after steps 10 and 15 (packed: 12 and 18)."""

    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        if trainer.state.step == 13:
            trainer.handle_signal(signal.SIGTERM, None)


@pytest.mark.parametrize(
    "method_params,kw",
    [
        ({"updates_per_epoch": 2, "tokenizer_lr": 0.003}, {}),
        ({"updates_per_epoch": 2, "mode": "joint", "outer_batch": "valid", "surgery": "rowwise"}, {}),
        ({"updates_per_epoch": 2}, {"kind": "decoder_only", "pack_examples": 3, "history_dropout": 0.2}),
    ],
)
def test_resumed_between_two_tokenizer_steps_is_bit_identical(tmp_path, method_params, kw):
    """Dropout on (the global RNG matters); the last case trains packed with history dropout (12
    batches an epoch: tokenizer steps after 6, 12, 18, ..., step 13 still lies between two)."""
    reference = make_trainer(tmp_path / "ref", method_params, **kw)
    assert isinstance(reference.sampler, PackedBatchSampler) == bool(kw.get("pack_examples"))
    reference.fit()
    with pytest.raises(TrainingInterrupted):
        make_trainer(tmp_path / "run", method_params, method_cls=StoppedAt13, **kw).fit()
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 13 and len(ckpt["method"]["bloger"]["records"]) == 2
    resumed = make_trainer(tmp_path / "run", method_params, init_seed=77, **kw)
    resumed.fit()
    assert resumed.resumed_from is not None
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = reference.method.tokenizer.state_dict(), resumed.method.tokenizer.state_dict()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    for opt in ("optimizer", "tokenizer_optimizer"):
        sa, sb = getattr(reference.method, opt).state_dict()["state"], getattr(resumed.method, opt).state_dict()["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(torch.as_tensor(sa[k][n]), torch.as_tensor(sb[k][n])) for k in sa for n in sa[k])
    assert torch.equal(reference.method.runtime.hard_ids(NAME), resumed.method.runtime.hard_ids(NAME))
    assert torch.equal(reference.method.encoder.tables, resumed.method.encoder.tables)
    assert reference.method.records == resumed.method.records and len(reference.method.records) == 6
    assert reference.state.evals == resumed.state.evals
    ba, bb = torch.load(reference.best_path, weights_only=True), torch.load(resumed.best_path, weights_only=True)
    assert torch.equal(ba["item_tokens"], bb["item_tokens"])


# --------------------------------------------------------------------------- the stages


def summary_evals(root) -> list[dict]:
    """BLOGER's validation metrics per evaluation (reports/train/valid_curve.csv)."""
    import csv

    return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader((root / "reports" / "train" / "valid_curve.csv").open())]


def test_the_train_stage_writes_the_final_ids_and_evaluate_decodes_with_them(tmp_path):
    """preprocess .. emit_ids, train (bloger, ``dedup_level`` IDs, 2 epochs of fine-tuning on the
    final IDs) and evaluate on the tiny dataset of tests/test_dvc_dependencies.py, as their commands
    run them: every written file is declared; the runtime tokenizer starts from data/ids' IDs;
    data/recommender/item_ids.parquet holds best.pt's IDs in emit-ids' schema; the fine-tuned model
    replaces best.pt only if better on validation; the test predictions are the ranking within
    those IDs' trie."""
    import json

    import polars as pl
    from test_dvc_dependencies import load_dvc_yaml, run_stages_recording_writes, tiny_project, undeclared_writes

    from genrec_core.recommender.checkpoint import load_recommender
    from genrec_core.recommender.data import load_examples
    from genrec_core.recommender.interface import rank_examples
    from genrec_core.recommender.trie import ItemTrie
    from genrec_core.tokenizers.id_table import read_id_table_with_items, validate_id_table

    root, overrides = tiny_project(tmp_path)
    overrides += [
        "ids.collision=dedup_level",
        "recommender.method=bloger",
        'recommender.method_params={"tokenizer_lr":0.01,"updates_per_epoch":2,"finetune_epochs":2,"finetune_lr":0.003}',
    ]
    dvc = load_dvc_yaml()
    names = ["preprocess", "embed", "train_tokenizer", "emit_ids", "train", "evaluate", "analyse"]
    written = run_stages_recording_writes(root, names, overrides)
    assert undeclared_writes(dvc, written) == {}
    final = root / "data" / "recommender" / "item_ids.parquet"
    assert "data/recommender/item_ids.parquet" in written["train"]
    item_ids, tables = read_id_table_with_items(final)
    validate_id_table(pl.read_parquet(final), final, item_ids)
    start_ids, start = read_id_table_with_items(root / "data" / "ids" / "item_ids.parquet")
    ((name, ids),) = tables.items()
    assert name == list(start)[-1] and np.array_equal(item_ids, start_ids) and ids.shape == start[name].shape  # the dedup level kept
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert len(summary["bloger_updates"]) == 2 * summary["epochs"] and summary["bloger_before"]["density"][0] > 0
    best = torch.load(root / "data" / "recommender" / "best.pt", weights_only=True)
    vocab = load_recommender(root / "data" / "recommender" / "best.pt").vocab
    assert np.array_equal(vocab.tokens_to_codes(best["item_tokens"].numpy()), ids)
    moved = [r["changed"] for r in summary["bloger_updates"] if r["epoch"] <= summary["best_epoch"]]
    assert moved and max(moved) > 0 and not np.array_equal(ids, start[name])  # the selected model's IDs moved
    # fine-tuning on the frozen final IDs: plain training from BLOGER's best, kept only if better on validation
    ft = summary["final_ids_finetune"]
    tuned = torch.load(root / "data" / "recommender" / "finetune" / "best.pt", weights_only=True)
    assert (
        ft["epochs"] == 2 and tuned["params"]["method"] == "plain" and tuned["params"]["lr"] == 0.003 and torch.equal(tuned["item_tokens"], best["item_tokens"])
    )
    ft_summary = json.loads((root / "data" / "recommender" / "finetune" / "summary.json").read_text())
    bloger_best = max(e["ndcg@10"] for e in summary_evals(root))
    assert ft["selected"] == (ft_summary["best_valid_ndcg@10"] > bloger_best)
    same = all(torch.equal(best["model"][k], tuned["model"][k]) for k in best["model"])
    assert same == ft["selected"]
    assert json.loads((root / "reports" / "train" / "best_valid.json").read_text())["best_valid_ndcg@10"] == max(bloger_best, ft_summary["best_valid_ndcg@10"])
    # evaluate: the ranking within the final IDs' trie
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["tokenizer"] == name
    loaded = load_recommender(root / "data" / "recommender" / "best.pt")
    assert torch.equal(loaded.item_tokens, torch.from_numpy(vocab.codes_to_tokens(ids)))
    assert loaded.model.item_trie.num_nodes == ItemTrie.build(loaded.item_tokens, loaded.model.config.vocab_size).num_nodes
    assert torch.equal(loaded.model.item_trie.lookup(loaded.item_tokens), torch.arange(len(item_ids)))
    test = load_examples(root / "data" / "processed" / "test.parquet", len(item_ids))
    encoder = SequenceEncoder(loaded.item_tokens, encoder_input=loaded.params.encoder_input)
    items, _ = rank_examples(loaded.model, test, encoder.collate, 10, 256)
    assert pl.read_parquet(root / "data" / "predictions" / "test.parquet")["items"].to_list() == items.tolist()
    # analyse: the floors' relaxed prefix metrics over the final IDs, not data/ids' starting ones
    from genrec_core.evaluation.baselines import baseline_predictions
    from genrec_core.evaluation.metrics import as_padded, relaxed_prefix_ndcg

    preds = pl.read_parquet(root / "data" / "predictions" / "test.parquet")
    examples = preds.select("user_id", "target_item").join(
        pl.read_parquet(root / "data" / "processed" / "test.parquet"), on="user_id", how="left", maintain_order="left"
    )
    sequences = pl.read_parquet(root / "data" / "processed" / "sequences.parquet")
    n_items = int(pl.read_parquet(root / "data" / "processed" / "items.parquet")["item_id"].max()) + 1
    mostpop = as_padded(baseline_predictions(sequences, examples.select("user_id", "history", "target"), "test", n_items, 10)["mostpop"]["items"])
    targets = examples["target"].to_numpy().astype(np.int64)
    on_final = relaxed_prefix_ndcg(mostpop, targets, ids, item_ids, 5)
    on_start = relaxed_prefix_ndcg(mostpop, targets, start[name], item_ids, 5)
    stored = json.loads((root / "reports" / "analysis" / "baselines.json").read_text())["mostpop"]
    assert {k: stored[k] for k in on_final} == pytest.approx(on_final)
    assert on_final != on_start and {k: stored[k] for k in on_start} != pytest.approx(on_start)  # the tables differ for these lists


def test_the_ablation_rows_and_the_gpu_configuration_are_valid():
    import sys
    from pathlib import Path

    from genrec_core.config import flatten_overlay, load_params

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    import converged

    sys.path.pop(0)
    rows = {m.name: m for m in converged.methods_from_config(root / "scripts" / "bloger_ablation.yaml")}
    assert list(rows) == ["decoder-only-packed", "bloger-joint", "bloger-joint-surgery", "bloger-no-surgery", "bloger"]
    params = {name: load_params(root / "params.yaml", m.overrides) for name, m in rows.items()}
    fixed = params["decoder-only-packed"].recommender
    assert fixed.method == "plain" and (fixed.model, fixed.pack_examples, fixed.epochs, fixed.history_dropout) == (
        "decoder_only",
        10,
        7,
        0.2,
    )  # the packed CPU default
    expected = {
        "bloger-joint": ("joint", "none"),
        "bloger-joint-surgery": ("joint", "projection"),
        "bloger-no-surgery": ("bilevel", "none"),
        "bloger": ("bilevel", "projection"),
    }
    for name, (mode, surgery) in expected.items():
        rp = params[name].recommender
        mp = BlogerMethod.check_params(rp.method_params)
        assert rp.method == "bloger" and (mp["mode"], mp["surgery"]) == (mode, surgery)
        # the same backbone and schedule as Fixed: the rows differ by the method only
        assert {k: v for k, v in vars(rp).items() if k not in ("method", "method_params")} == {
            k: v for k, v in vars(fixed).items() if k not in ("method", "method_params")
        }
    conv = {m.name: m.overrides for m in converged.methods_from_config(root / "scripts" / "converged_methods.yaml")}
    assert rows["decoder-only-packed"].overrides == conv["decoder-only-packed"]  # reports/converged.md's workspace, reused
    mtgrec = {m.name: m.overrides for m in converged.methods_from_config(root / "scripts" / "mtgrec_ablation.yaml")}
    assert rows["decoder-only-packed"].overrides == mtgrec["decoder-only-packed"]  # MTGRec's table's baseline too
    gpu = load_params(root / "params.yaml", flatten_overlay(root / "configs" / "bloger-gpu.yaml"))
    rp = gpu.recommender
    assert (gpu.tokenizer.levels, gpu.tokenizer.codebook_size, rp.model, rp.num_layers, rp.num_decoder_layers, rp.d_model, rp.d_ff, rp.num_heads) == (
        4,
        256,
        "t5",
        4,
        4,
        128,
        1024,
        6,
    )
    assert rp.method == "bloger" and BlogerMethod.check_params(rp.method_params)["lookahead_lr"] == 5e-4 and rp.lr == 5e-4
