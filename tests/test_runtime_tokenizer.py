"""The runtime item tokenizer (issue 11, SPEC 3 and 8): soft code probabilities whose gradient to
the RQ-VAE matches finite differences, ``refresh`` after a codebook change (collision-free IDs,
a trie accepting exactly them), kept files with and without a decoder, the codebook-sized vocab.

A tiny RQ-VAE (6-d vectors, 3 levels of 6 codes) on 60 random items, k-means initialised.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec_core.errors import GenrecError
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.tokenizers.collisions import group_ids
from genrec_core.tokenizers.pq import PQTokenizer
from genrec_core.tokenizers.rqvae import RQVAE, RQVAEConfig, RQVAETokenizer
from genrec_core.tokenizers.runtime import RuntimeItemTokenizer
from genrec_core.tokenizers.training import load_tokenizer

N, D, L, K = 60, 6, 3, 6


def make_tokenizer(seed: int = 0) -> tuple[RQVAETokenizer, np.ndarray]:
    torch.manual_seed(seed)
    x = np.random.default_rng(seed).normal(size=(N, D)).astype(np.float32)
    model = RQVAE(RQVAEConfig(D, L, K, [10], 4))
    with torch.no_grad():
        model.quantizer.kmeans_init(model.encoder(torch.from_numpy(x)), 10, torch.Generator().manual_seed(seed))
    return RQVAETokenizer.from_model(model), x


def brute_force_codes(rt: RuntimeItemTokenizer, name: str | None = None) -> np.ndarray:
    """Residual quantisation written out in numpy (float64), independent of the quantiser code."""
    model = rt.model(name)
    with torch.no_grad():
        r = model.encoder.eval()(rt.vectors).double().numpy()
    model.train()
    books = model.quantizer.codebooks.detach().double().numpy()
    codes = []
    for level in range(L):
        d = ((r[:, None, :] - books[level][None]) ** 2).sum(-1)
        c = d.argmin(1)
        codes.append(c)
        r = r - books[level][c]
    return np.stack(codes, 1)


# --------------------------------------------------------------------------- soft codes


def test_soft_codes_are_softmax_of_negative_squared_distances():
    tok, x = make_tokenizer()
    rt = RuntimeItemTokenizer({"a": tok}, x, temperature=0.5).double()
    probs, codes = rt.soft_assign(items=torch.arange(N))
    assert probs.shape == (N, L, K) and codes.shape == (N, L)
    # independent: numpy residuals with the hard codes, softmax(-d^2 / T)
    model = rt.model()
    with torch.no_grad():
        r = model.encoder(rt.vectors).numpy()
    books = model.quantizer.codebooks.detach().numpy()
    for level in range(L):
        d2 = ((r[:, None, :] - books[level][None]) ** 2).sum(-1)
        e = np.exp(-(d2 - d2.min(1, keepdims=True)) / 0.5)
        np.testing.assert_allclose(probs[:, level].detach().numpy(), e / e.sum(1, keepdims=True), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(codes[:, level].numpy(), d2.argmin(1))
        r = r - books[level][d2.argmin(1)]
    # the hard codes are the argmax of the probabilities and the raw codes of the table
    assert torch.equal(codes, probs.argmax(-1)) and torch.equal(codes, rt.raw_codes())
    # any item-id shape; vectors instead of ids
    assert rt.soft_codes(items=torch.arange(6).view(2, 3)).shape == (2, 3, L, K)
    torch.testing.assert_close(rt.soft_codes(vectors=rt.vectors[:4]), probs[:4])
    # temperature changes sharpness, not the argmax
    hot = rt.soft_codes(items=torch.arange(N), temperature=5.0)
    assert torch.equal(hot.argmax(-1), codes) and bool((hot.max(-1).values <= probs.max(-1).values + 1e-12).all())


def _fd_check(residual_grad: str, seed: int = 0) -> list[tuple[float, float]]:
    """(autograd, central finite difference) of f = sum(W * soft_codes) along random directions
    in the space of every encoder and codebook parameter (float64)."""
    tok, x = make_tokenizer(seed)
    rt = RuntimeItemTokenizer({"a": tok}, x, temperature=0.7, residual_grad=residual_grad).double()
    model = rt.model()
    model.eval()
    params = [p for n, p in model.named_parameters() if not n.startswith("decoder")]
    assert any(p is model.quantizer.codebooks for p in params)
    gen = torch.Generator().manual_seed(seed + 1)
    weights = torch.randn(N, L, K, generator=gen, dtype=torch.float64)

    def f() -> torch.Tensor:
        return (rt.soft_codes(items=torch.arange(N)) * weights).sum()

    grads = torch.autograd.grad(f(), params)
    assert all(bool(g.abs().sum() > 0) for g in grads)  # every tensor gets a gradient
    base_codes = rt.soft_assign(items=torch.arange(N))[1]
    out = []
    eps = 1e-6
    for _ in range(4):
        dirs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        analytic = float(sum((g * v).sum() for g, v in zip(grads, dirs)))
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, v in zip(params, dirs):
                    p.add_(sign * eps * v)
                values.append(float(f()))
                assert torch.equal(rt.soft_assign(items=torch.arange(N))[1], base_codes)  # no hard code flipped
                for p, v in zip(params, dirs):
                    p.sub_(sign * eps * v)
        out.append((analytic, (values[0] - values[1]) / (2 * eps)))
    return out


def test_soft_codes_gradient_matches_finite_differences():
    for analytic, numeric in _fd_check("exact"):
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)


def test_straight_through_residuals_are_not_the_exact_gradient():
    """The check can fail: detaching the chosen codes in the residual changes the gradient."""
    pairs = _fd_check("straight_through")
    assert any(abs(a - n) > 1e-4 * max(1.0, abs(n)) for a, n in pairs)


# --------------------------------------------------------------------------- refresh


def _assert_trie_accepts_exactly(rt: RuntimeItemTokenizer, rejected: np.ndarray) -> None:
    tokens = rt.item_tokens()
    trie = rt.trie()
    assert torch.equal(trie.lookup(tokens), torch.arange(N))  # every item's ID, walked token by token
    assert trie.num_nodes - trie.first_leaf == N  # N leaves: nothing else is accepted
    if rejected.size:
        assert bool((trie.lookup(torch.from_numpy(rt.vocab.codes_to_tokens(rejected))) == -1).all())


@pytest.mark.parametrize("collision", ["reassign_last", "dedup_level"])
def test_refresh_after_a_codebook_change(collision):
    tok, x = make_tokenizer()
    rt = RuntimeItemTokenizer([("epoch_0001", tok)], x, collision=collision, dedup_size=8)
    assert rt.vocab == SemanticIdVocab.from_codebook(L, K, 8 if collision == "dedup_level" else None)
    old = rt.hard_ids().numpy()
    np.testing.assert_array_equal(rt.raw_codes().numpy(), brute_force_codes(rt))

    # 1. swap codes 0 and 1 of level 1: every ID's first token swaps, nothing else changes
    with torch.no_grad():
        book = rt.model().quantizer.codebooks
        book[0, [0, 1]] = book[0, [1, 0]].clone()
    report = rt.refresh()
    new = rt.hard_ids().numpy()
    expected = old.copy()
    expected[:, 0] = np.where(old[:, 0] == 0, 1, np.where(old[:, 0] == 1, 0, old[:, 0]))
    np.testing.assert_array_equal(new, expected)
    share = float(np.isin(old[:, 0], [0, 1]).mean())
    assert share > 0
    assert report.tables["epoch_0001"].changed == pytest.approx(share) and report.tables["epoch_0001"].first_changed == pytest.approx(share)
    gone = old[np.any(old != new, axis=1)]  # old IDs no longer held by any item
    gone = gone[~(gone[:, None, :] == new[None]).all(-1).any(1)]
    _assert_trie_accepts_exactly(rt, gone)

    # 2. a random perturbation of every codebook: collision-free, the raw codes are the brute-force ones
    with torch.no_grad():
        book = rt.model().quantizer.codebooks
        book.add_(0.2 * book.std() * torch.randn(L, K, 4, generator=torch.Generator().manual_seed(5)))
    report = rt.refresh()
    ids = rt.hard_ids().numpy()
    raw = brute_force_codes(rt)
    np.testing.assert_array_equal(rt.raw_codes().numpy(), raw)
    assert group_ids(ids)[1].max() == 1  # no two items share an ID
    if collision == "reassign_last":
        assert ids.shape == (N, L)
        np.testing.assert_array_equal(ids[:, :-1], raw[:, :-1])  # only last tokens move
        assert report.tables["epoch_0001"].items_moved == int(np.any(ids != raw, axis=1).sum())
        _, raw_sizes = group_ids(raw)
        assert report.tables["epoch_0001"].items_moved == int((raw_sizes - 1).sum())  # all but one per group
    else:
        assert ids.shape == (N, L + 1)
        np.testing.assert_array_equal(ids[:, :-1], raw)
    assert report.changed and report.tables["epoch_0001"].changed == pytest.approx(float(np.any(ids != new, axis=1).mean()))
    rng = np.random.default_rng(3)
    random_ids = np.stack([rng.integers(0, s, 400) for s in rt.vocab.level_sizes], 1)
    non_items = random_ids[~(random_ids[:, None, :] == ids[None]).all(-1).any(1)]
    assert non_items.shape[0] > 0
    _assert_trie_accepts_exactly(rt, non_items)
    # a refresh without a change reports none
    assert not rt.refresh().changed


def test_refresh_rejects_a_dedup_group_larger_than_the_vocabulary():
    tok, x = make_tokenizer()
    with torch.no_grad():  # every code of every level the same vector: all items collide
        tok.quantizer.codebooks.copy_(tok.quantizer.codebooks[:, :1].expand(-1, K, -1))
    with pytest.raises(GenrecError, match="dedup_size"):
        RuntimeItemTokenizer({"a": tok}, x, collision="dedup_level", dedup_size=4)


def test_hard_ids_follow_the_device_and_dtype_of_the_module():
    tok, x = make_tokenizer()
    rt = RuntimeItemTokenizer({"a": tok}, x)
    ids32 = rt.hard_ids()
    rt = rt.double()
    assert rt.vectors.dtype == torch.float64 and rt.hard_ids().device == rt.vectors.device
    assert torch.equal(rt.hard_ids(), ids32)
    assert rt.all_item_tokens().shape == (1, N, L)


# --------------------------------------------------------------------------- kept files, other kinds


def test_kept_files_with_and_without_a_decoder(tmp_path):
    tok, x = make_tokenizer()
    state = tok.state()
    assert set(state) >= {"encoder", "quantizer", "decoder"}
    torch.save(state, tmp_path / "new.pt")
    old_state = {k: v for k, v in state.items() if k != "decoder"}  # what kept files held before
    torch.save(old_state, tmp_path / "old.pt")
    new_tok, old_tok = load_tokenizer(tmp_path / "new.pt"), load_tokenizer(tmp_path / "old.pt")
    assert new_tok.has_decoder and not old_tok.has_decoder
    for k, v in tok.decoder.state_dict().items():
        assert torch.equal(new_tok.decoder.state_dict()[k], v)
    np.testing.assert_array_equal(old_tok.quantize(x).codes, tok.quantize(x).codes)
    assert "decoder" not in old_tok.state()  # re-saving an old tokenizer does not invent one

    rt_old = RuntimeItemTokenizer({"old": old_tok}, x)
    assert torch.equal(rt_old.hard_ids(), torch.from_numpy(RuntimeItemTokenizer({"n": new_tok}, x).hard_ids().numpy()))
    assert rt_old.soft_codes(items=[0, 1]).shape == (2, L, K)  # soft codes need no decoder
    with pytest.raises(GenrecError, match="no decoder"):
        rt_old.tokenizer_loss()

    # with a decoder: the SPEC 3 loss, written out independently
    rt = RuntimeItemTokenizer({"new": new_tok}, x)
    model = rt.model()
    loss = rt.tokenizer_loss()
    with torch.no_grad():
        xt = torch.from_numpy(x)
        z = model.encoder(xt)
        r, zq, quant = z, torch.zeros_like(z), 0.0
        for level in range(L):
            book = model.quantizer.codebooks[level]
            e = book[((r[:, None] - book[None]) ** 2).sum(-1).argmin(1)]
            quant = quant + (1 + model.cfg.beta) * ((r - e) ** 2).sum(-1).mean()
            zq, r = zq + e, r - e
        expected = ((xt - model.decoder(zq)) ** 2).sum(-1).mean() + quant
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert model.decoder[0].weight.grad is not None and model.encoder[0].weight.grad is not None


def test_pq_gives_hard_ids_only():
    x = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    pq = PQTokenizer.fit(x, L, K, 5, 0)
    rq, _ = make_tokenizer()
    rt = RuntimeItemTokenizer([("pq", pq), ("rq", rq)], x, default="pq")
    assert rt.hard_ids("pq").shape == (N, L) and group_ids(rt.hard_ids("pq").numpy())[1].max() == 1
    assert not rt.is_trainable("pq") and rt.is_trainable("rq")
    with pytest.raises(GenrecError, match="PQTokenizer"):
        rt.soft_codes(items=[0])
    assert rt.soft_codes("rq", items=[0]).shape == (1, L, K)
    assert not rt.refresh(["pq"]).changed


def test_vocab_from_codebook():
    vocab = SemanticIdVocab.from_codebook(3, 64)
    assert vocab.level_sizes == (64, 64, 64) and vocab.size == 2 + 3 * 64
    # the same as the observed-code vocabulary when every code is used (ml-100k's defaults)
    codes = np.stack([np.arange(64)] * 3, 1)
    assert SemanticIdVocab.from_codes([codes]) == vocab
    assert SemanticIdVocab.from_codebook(3, 64, dedup_size=5).level_sizes == (64, 64, 64, 5)
    with pytest.raises(ValueError):
        SemanticIdVocab.from_codebook(0, 64)
