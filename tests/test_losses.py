"""Token-weighted losses: the shared weighted NLL, ce, the registry and its param checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import manual_nll

from genrec_core.errors import ParamError
from genrec_core.recommender.losses import (
    LOSSES,
    LossContext,
    LossStrategy,
    build_loss,
    check_loss_params,
    normalise_weights,
    weighted_nll,
)
from genrec_core.recommender.vocab import EOS, SemanticIdVocab

VOCAB = SemanticIdVocab((3, 3))  # vocab size 8, L = 2
ITEM_TOKENS = torch.tensor([[2, 5], [3, 6], [4, 7]])


def context():
    return LossContext(vocab=VOCAB, item_tokens=ITEM_TOKENS, total_steps=10)


def tiny_batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, VOCAB.size)
    labels = torch.tensor([[2, 6, EOS], [4, 5, EOS]])
    return logits, labels


def test_ce_matches_hand_computed_log_softmax():
    logits, labels = tiny_batch()
    ce = build_loss("ce", {}, context())
    nll = manual_nll(logits, labels)
    expected = nll.sum(dim=1).div(3).mean()  # weights 1, 1 (sum L = 2) + eos 1, per-token mean
    got = ce(logits, labels).loss
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got, F.cross_entropy(logits.reshape(-1, VOCAB.size), labels.reshape(-1)), atol=1e-6)


def test_eos_excluded_averages_the_code_tokens_only():
    logits, labels = tiny_batch()
    ce = build_loss("ce", {"eos": "exclude"}, context())
    nll = manual_nll(logits, labels)
    assert torch.allclose(ce(logits, labels).loss, nll[:, :2].mean(), atol=1e-6)


def test_weights_are_normalised_to_sum_L_per_target():
    w = normalise_weights(torch.tensor([[2.0, 1.0, 1.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]))
    assert torch.allclose(w.sum(dim=1), torch.full((3,), 3.0))
    assert torch.allclose(w[0], torch.tensor([1.5, 0.75, 0.75]))
    assert torch.allclose(w[1], torch.ones(3))  # all-zero row: uniform rather than a 0/0
    logits, labels = tiny_batch()
    nll = manual_nll(logits, labels)
    got = weighted_nll(logits, labels, torch.tensor([[3.0, 1.0], [1.0, 1.0]]), eos="include")
    expected = ((1.5 * nll[0, 0] + 0.5 * nll[0, 1] + nll[0, 2]) / 3 + nll[1].sum() / 3) / 2
    assert torch.allclose(got, expected, atol=1e-6)
    # scaling the raw weights changes nothing: only their ratios matter
    assert torch.allclose(got, weighted_nll(logits, labels, torch.tensor([[30.0, 10.0], [7.0, 7.0]])), atol=1e-6)


def test_a_subclass_only_supplies_token_weights():
    class FirstTokenOnly(LossStrategy):
        param_defaults = {"eos": "exclude", "beta": 0.5}

        def token_weights(self, labels, batch, state=None):
            w = torch.full((labels.shape[0], labels.shape[1] - 1), self.params["beta"])
            w[:, 0] = 1.0
            return w

    logits, labels = tiny_batch()
    strategy = FirstTokenOnly(context(), **FirstTokenOnly.check_params({"beta": 0}))
    nll = manual_nll(logits, labels)
    assert torch.allclose(strategy(logits, labels).loss, nll[:, 0].mean() * 2 / 2, atol=1e-6)
    assert strategy.params["beta"] == 0.0 and isinstance(strategy.params["beta"], float)


def test_loss_params_are_checked_with_dotted_names():
    with pytest.raises(ParamError) as err:
        check_loss_params("ce", {"beta_pos": 0.5})
    assert err.value.param == "recommender.loss_params.beta_pos"
    with pytest.raises(ParamError) as err:
        check_loss_params("ce", {"eos": "sometimes"})
    assert err.value.param == "recommender.loss_params.eos"
    with pytest.raises(ParamError) as err:
        check_loss_params("ce", {"eos": 1})
    assert err.value.param == "recommender.loss_params.eos"
    with pytest.raises(ParamError) as err:
        build_loss("nope", {}, context())
    assert err.value.param == "recommender.loss"
    assert "ce" in LOSSES and check_loss_params("ce", None) == {"eos": "include"}


def test_counterfactual_inputs_keep_only_eos():
    ce = build_loss("ce", {}, context())

    class B:
        input_ids = torch.tensor([[2, 5, 3, 6, EOS]])
        attention_mask = torch.ones(1, 5, dtype=torch.long)

    ids, mask = ce.extra_inputs(B)
    assert ids.tolist() == [[EOS]] and mask.tolist() == [[1]]
    B.input_ids = torch.tensor([[[2, 5], [EOS, 0]]])
    ids, mask = ce.extra_inputs(B)
    assert ids.tolist() == [[[EOS, 0]]]


def test_step_state_survives_state_dict():
    ce = build_loss("ce", {}, context())
    ce.on_step(7, 10)
    fresh = build_loss("ce", {}, context())
    fresh.load_state_dict(ce.state_dict())
    assert (fresh.step, fresh.total_steps) == (7, 10)
    assert list(ce.parameters()) == []  # ce has nothing to learn
