"""SPEC 6 loss strategies on a hand-computed tiny batch: weights, normalisation to L, eos, schedules.

Items (vocab (3, 3): level-1 tokens 2..4, level-2 tokens 5..7; L = 2):
    item 0 = [2, 5]  codes (0, 0)   trained as a target 2 times   embedding (0, 0)
    item 1 = [2, 6]  codes (0, 1)                       1 time     (2, 0)
    item 2 = [3, 5]  codes (1, 0)                       1 time     (0, 4)
    item 3 = [4, 7]  codes (2, 2)                       4 times    (6, 4)
The batch's targets are item 1 and item 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import manual_nll

from genrec_core.errors import ParamError
from genrec_core.recommender.losses import (
    LOSSES,
    LossContext,
    build_loss,
    check_loss_params,
    curriculum_rate,
    linear_path,
    position_weights,
)
from genrec_core.recommender.vocab import EOS, SemanticIdVocab

VOCAB = SemanticIdVocab((3, 3))
ITEM_TOKENS = torch.tensor([[2, 5], [2, 6], [3, 5], [4, 7]])
COUNTS = np.array([2, 1, 1, 4])
VECTORS = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [6.0, 4.0]])
LABELS = torch.tensor([[2, 6, EOS], [3, 5, EOS]])


def context(total_steps=100):
    return LossContext(vocab=VOCAB, item_tokens=ITEM_TOKENS, target_counts=COUNTS, item_vectors=lambda: VECTORS, total_steps=total_steps)


def batch_logits(seed=0):
    torch.manual_seed(seed)
    return torch.randn(2, 3, VOCAB.size)


def nll_of(logits, labels=LABELS):
    """[B, 3] -log softmax, element by element."""
    return manual_nll(logits, labels)


def expected(nll, w, eos=True):
    """mean_b (sum_i w_bi nll_bi + [eos] nll_b,eos) / (L + [eos]) with rows of w scaled to sum L = 2."""
    w = torch.as_tensor(w, dtype=torch.float32)
    w = w * (2 / w.sum(dim=1, keepdim=True))
    code = (w * nll[:, :2]).sum(dim=1)
    return ((code + nll[:, 2]) / 3).mean() if eos else (code / 2).mean()


def test_pos_linear_decay_normalised_to_L_with_and_without_eos():
    assert torch.allclose(position_weights(4, 0.1), torch.tensor([1.0, 0.7, 0.4, 0.1]))
    assert torch.allclose(position_weights(1, 0.1), torch.ones(1))
    logits = batch_logits()
    nll = nll_of(logits)
    pos = build_loss("pos", {"beta_pos": 0.5}, context())
    # w = [1, 0.5] -> [4/3, 2/3] (sum L = 2); eos weight 1; divided by L + 1
    manual = (((4 / 3) * nll[:, 0] + (2 / 3) * nll[:, 1] + nll[:, 2]) / 3).mean()
    assert torch.allclose(pos(logits, LABELS).loss, manual, atol=1e-6)
    pos_x = build_loss("pos", {"beta_pos": 0.5, "eos": "exclude"}, context())
    assert torch.allclose(pos_x(logits, LABELS).loss, (((4 / 3) * nll[:, 0] + (2 / 3) * nll[:, 1]) / 2).mean(), atol=1e-6)
    assert check_loss_params("pos", {})["beta_pos"] == 0.5  # the CFT authors' default


def test_cft_adds_alpha_times_weighted_ce_of_the_logit_difference():
    logits, cf = batch_logits(0), batch_logits(1)
    cft = build_loss("cft", {"alpha": 0.3, "beta_pos": 0.5}, context())
    assert cft.extra_forward_needed
    w = [[1.0, 0.5], [1.0, 0.5]]
    manual = expected(nll_of(logits), w) + 0.3 * expected(nll_of(logits - cf), w)
    out = cft(logits, LABELS, extra_logits=cf)
    assert torch.allclose(out.loss, manual, atol=1e-5)
    assert set(out.logs) == {"loss_normal", "loss_causal"}
    with pytest.raises(ValueError, match="counterfactual"):
        cft(logits, LABELS)


@pytest.mark.parametrize("layout", ["tokens", "items"])
def test_cft_counterfactual_input_has_no_history(layout):
    cft = build_loss("cft", {}, context())

    class B:
        if layout == "tokens":
            input_ids = torch.tensor([[2, 5, 3, 6, EOS], [4, 7, EOS, 0, 0]])
        else:
            input_ids = torch.tensor([[[2, 5], [3, 6], [EOS, 0]], [[4, 7], [EOS, 0], [0, 0]]])
        attention_mask = torch.ones(2, 3, dtype=torch.long)

    ids, mask = cft.extra_inputs(B)
    flat = ids.reshape(2, -1)
    assert (flat[:, 0] == EOS).all() and (flat[:, 1:] == 0).all()  # eos, nothing of the history
    assert ids.shape[1] == 1 and mask.tolist() == [[1], [1]]


def test_rank_is_ce_on_tempered_logits():
    logits = batch_logits()
    rank = build_loss("rank", {"tau": 0.5}, context())
    assert torch.allclose(rank(logits, LABELS).loss, nll_of(logits / 0.5).mean(), atol=1e-6)
    assert check_loss_params("rank", {})["tau"] == 0.6


def test_igd_gives_beta_to_zero_gain_tokens_per_target():
    logits = batch_logits()
    igd = build_loss("igd", {"beta_igd": 0.1}, context())
    # item 1 = [2, 6]: prefix (0,) holds items 0 and 1 (freq 2:1) -> token 2 has gain H(2/3, 1/3) > 0 -> 1
    # item 2 = [3, 5]: prefix (1,) holds item 2 alone -> token 2 has zero gain -> beta
    w = igd.token_weights(LABELS)
    assert torch.allclose(w, torch.tensor([[1.0, 1.0], [1.0, 0.1]]))
    assert torch.allclose(igd(logits, LABELS).loss, expected(nll_of(logits), w), atol=1e-6)
    # a label that is no item's ID (e.g. another tokenizer's) falls back to weights 1
    assert torch.allclose(igd.token_weights(torch.tensor([[3, 7, EOS]])), torch.ones(1, 2))


def test_front_greater_weights_from_the_embeddings():
    # mu_0: centroid (2, 2), squared distances 8, 4, 8, 20 -> 10
    # mu_1: group (0,) = items 0, 1, centroid (1, 0): 1, 1; singletons 0 -> 0.5;  mu_2 = 0
    # delta = (9.5, 0.5) -> weights (1.9, 0.1)
    logits = batch_logits()
    fg = build_loss("front_greater", {}, context())
    assert torch.allclose(fg.level_weights, torch.tensor([1.9, 0.1]), atol=1e-6)
    assert torch.allclose(fg(logits, LABELS).loss, expected(nll_of(logits), [[1.9, 0.1], [1.9, 0.1]]), atol=1e-6)
    # released: mean (unsquared) distance, log1p(gain)
    mu0 = (math.sqrt(8) + 2 + math.sqrt(8) + math.sqrt(20)) / 4
    raw = np.log1p([mu0 - 0.5, 0.5])
    rel = build_loss("front_greater", {"variant": "released"}, context())
    assert np.allclose(rel.level_weights.numpy(), 2 * raw / raw.sum(), atol=1e-6)


def test_frequency_weights_per_token_and_target():
    # level-1 counts: code 0 (items 0, 1) 3, code 1 (item 2) 1; level-2: code 1 (item 1) 1, code 0 (items 0, 2) 3
    e = lambda n: (1 - 0.99**n) / (1 - 0.99)  # noqa: E731
    logits = batch_logits()
    fr = build_loss("frequency", {}, context())
    w = fr.token_weights(LABELS)
    assert torch.allclose(w, torch.tensor([[1 / e(3), 1 / e(1)], [1 / e(1), 1 / e(3)]]), atol=1e-6)
    assert torch.allclose(fr(logits, LABELS).loss, expected(nll_of(logits), w), atol=1e-6)
    assert check_loss_params("frequency", {})["beta"] == 0.99


def test_multi_target_alphas_start_equal_and_learn():
    logits = batch_logits()
    nll = nll_of(logits)
    fg = [[1.9, 0.1]] * 2
    fr = build_loss("frequency", {}, context()).token_weights(LABELS)
    losses = [expected(nll, fg), expected(nll, fr), expected(nll, [[1, 1]] * 2)]
    for lp in ("exp", "softplus"):
        mt = build_loss("multi_target", {"lambda_param": lp}, context())
        out = mt(logits, LABELS)
        assert torch.allclose(out.loss, sum(losses) / 3, atol=1e-5)
        for name, lj in zip(("fg", "fr", "or"), losses):
            assert float(out.logs[f"alpha_{name}"]) == pytest.approx(1 / 3)
            assert float(out.logs[f"loss_{name}"]) == pytest.approx(float(lj), abs=1e-5)
        out.loss.backward()
        grads = mt.lambda_raw.grad
        # d loss / d raw_j is proportional to (L_j - mean L): the smallest loss attracts weight
        smallest = int(torch.stack(losses).argmin())
        assert int(grads.argmin()) == smallest
    reg = build_loss("multi_target", {"regulariser": "uncertainty", "uncertainty_weight": 0.5}, context())
    out = reg(logits, LABELS)
    assert torch.allclose(out.loss, sum(losses) / 3 + 0.5 * 3 * math.log(3), atol=1e-5)
    assert float(out.logs["regulariser"]) == pytest.approx(1.5 * math.log(3), abs=1e-6)
    sub = build_loss("multi_target", {"objectives": ["fg", "or"]}, context())
    assert set(k for k in sub(logits, LABELS).logs if k.startswith("alpha_")) == {"alpha_fg", "alpha_or"}


def test_multi_target_lambdas_survive_state_dict():
    mt = build_loss("multi_target", {}, context())
    with torch.no_grad():
        mt.lambda_raw.add_(torch.tensor([0.5, -0.2, 0.0]))
    mt.on_step(5, 100)
    fresh = build_loss("multi_target", {}, context())
    fresh.load_state_dict(mt.state_dict())
    assert torch.equal(fresh.lambda_raw, mt.lambda_raw) and fresh.step == 5
    assert set(mt.state_dict()) == {"lambda_raw", "_extra_state"}  # data-derived tables are rebuilt, not saved


def test_curriculum_schedule_at_start_half_life_and_end():
    logits = batch_logits()
    cur = build_loss("curriculum", {"half_life": 0.25}, context(total_steps=1000))
    out = cur(logits, LABELS)  # t = 0: fg and or equal, fr off (paper Figure 5)
    assert float(out.logs["curriculum"]) == 1.0
    assert [float(out.logs[f"alpha_{n}"]) for n in ("fg", "fr", "or")] == pytest.approx([0.5, 0.0, 0.5])
    cur.on_step(250, 1000)  # half-life: e^{-ct} = 1/2 -> lambdas' (0.5, 0.5, 0.5) -> alphas 1/3
    out = cur(logits, LABELS)
    assert float(out.logs["curriculum"]) == pytest.approx(0.5)
    assert float(out.logs["alpha_fr"]) == pytest.approx(1 / 3)
    cur.on_step(1000, 1000)  # end: 2^{-1/0.25} = 1/16
    out = cur(logits, LABELS)
    d = 1 / 16
    assert float(out.logs["curriculum"]) == pytest.approx(d)
    assert float(out.logs["alpha_fr"]) == pytest.approx((1 - d) / (1 - d + 2 * d))
    # the same half-life keeps the shape for a 10x longer run
    long = build_loss("curriculum", {"half_life": 0.25}, context(total_steps=10000))
    long.on_step(2500, 10000)
    assert long.decay() == pytest.approx(0.5)
    # c given directly (paper: 2e-5 per step)
    direct = build_loss("curriculum", {"c": 2e-5}, context())
    direct.on_step(34657, 100)
    assert direct.decay() == pytest.approx(0.5, abs=1e-4)
    assert curriculum_rate(None, None, 1000) == pytest.approx(math.log(2) / 200)  # default half-life 0.2
    with pytest.raises(ParamError) as err:
        check_loss_params("curriculum", {"c": 1e-5, "half_life": 0.2})
    assert err.value.param == "recommender.loss_params.c"


def test_linear_schedules_fg_to_ce_and_fg_ce_fr():
    assert linear_path(0.0, ("fg", "or")) == {"fg": 1.0, "or": 0.0}
    assert linear_path(0.5, ("fg", "or")) == {"fg": 0.5, "or": 0.5}
    path = ("fg", "or", "fr")
    assert linear_path(0.25, path) == {"fg": 0.5, "or": 0.5, "fr": 0.0}
    assert linear_path(0.5, path) == {"fg": 0.0, "or": 1.0, "fr": 0.0}
    assert linear_path(0.75, path) == {"fg": 0.0, "or": 0.5, "fr": 0.5}
    assert linear_path(1.0, path) == {"fg": 0.0, "or": 0.0, "fr": 1.0}
    logits = batch_logits()
    nll = nll_of(logits)
    ftc = build_loss("fg_to_ce", {}, context(total_steps=100))
    assert torch.allclose(ftc(logits, LABELS).loss, expected(nll, [[1.9, 0.1]] * 2), atol=1e-6)
    ftc.on_step(100, 100)
    assert torch.allclose(ftc(logits, LABELS).loss, nll.mean(), atol=1e-6)  # back to plain CE
    early = build_loss("fg_to_ce", {"schedule_end": 0.5}, context(total_steps=100))
    early.on_step(50, 100)
    assert float(early(logits, LABELS).logs["alpha_or"]) == 1.0
    fcf = build_loss("fg_ce_fr", {}, context(total_steps=100))
    fcf.on_step(75, 100)
    out = fcf(logits, LABELS)
    fr = build_loss("frequency", {}, context()).token_weights(LABELS)
    assert torch.allclose(out.loss, 0.5 * nll.mean() + 0.5 * expected(nll, fr), atol=1e-6)


@pytest.mark.parametrize(
    "loss,params,key",
    [
        ("pos", {"beta": 0.5}, "beta"),
        ("pos", {"beta_pos": 1.5}, "beta_pos"),
        ("cft", {"alpha": -1.0}, "alpha"),
        ("rank", {"tau": 0}, "tau"),
        ("igd", {"beta_igd": "low"}, "beta_igd"),
        ("front_greater", {"variant": "squared"}, "variant"),
        ("frequency", {"beta": 1.0}, "beta"),
        ("frequency", {"beta_fr": 0.9}, "beta_fr"),
        ("multi_target", {"objectives": ["fg", "xx"]}, "objectives"),
        ("multi_target", {"lambda_param": "relu"}, "lambda_param"),
        ("multi_target", {"regulariser": "l2"}, "regulariser"),
        ("curriculum", {"c": -1e-5}, "c"),
        ("curriculum", {"half_life": "fast"}, "half_life"),
        ("curriculum", {"objectives": ["fg", "or"]}, "objectives"),
        ("fg_to_ce", {"fr_beta": 0.99}, "fr_beta"),
        ("fg_to_ce", {"schedule_end": 0.0}, "schedule_end"),
        ("fg_ce_fr", {"fg_variant": "x"}, "fg_variant"),
    ],
)
def test_params_are_validated_with_dotted_names(loss, params, key):
    with pytest.raises(ParamError) as err:
        check_loss_params(loss, params)
    assert err.value.param == f"recommender.loss_params.{key}"


def test_registry_holds_every_strategy_and_defaults_validate():
    expected_names = {"ce", "pos", "cft", "igd", "rank", "front_greater", "frequency", "multi_target", "curriculum", "fg_to_ce", "fg_ce_fr"}
    assert expected_names <= set(LOSSES)
    for name in expected_names:
        check_loss_params(name, {})
        assert "eos" in LOSSES[name].param_defaults


# --------------------------------------------------------------------------- with the trainer


def _tiny_training_data():
    import polars as pl

    from genrec_core.recommender.data import examples_from_frame

    rng = np.random.default_rng(0)
    rows = {"train": [], "valid": []}
    for u in range(30):
        seq = [int(rng.integers(16))]
        for _ in range(6):
            seq.append((seq[-1] * 5 + 3) % 16)
        rows["train"] += [(u, seq[max(0, t - 4) : t], seq[t]) for t in range(1, 6)]
        rows["valid"].append((u, seq[2:6], seq[6]))
    schema = {"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32}
    return {
        s: examples_from_frame(pl.DataFrame({"user_id": [r[0] for r in v], "history": [r[1] for r in v], "target": [r[2] for r in v]}, schema=schema))
        for s, v in rows.items()
    }


@pytest.mark.parametrize("loss,params", [("curriculum", {"half_life": 0.25}), ("cft", {})])
def test_trainer_logs_alphas_and_runs_the_counterfactual_pass(tmp_path, loss, params):
    from genrec_core.analysis.training_logs import plot_alpha_trajectories, read_live_series
    from genrec_core.config import RecommenderParams
    from genrec_core.methods import MethodContext, build_method
    from genrec_core.recommender.data import SequenceEncoder
    from genrec_core.recommender.model import GenerativeRecommender
    from genrec_core.recommender.trainer import Trainer
    from genrec_core.runtime import seed_everything

    codes = np.stack([np.arange(16) // 4, np.arange(16) % 4], axis=1)
    vocab = SemanticIdVocab.from_codes([codes])
    tokens = torch.from_numpy(vocab.codes_to_tokens(codes))
    data = _tiny_training_data()
    rp = RecommenderParams(
        num_layers=1,
        num_decoder_layers=1,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        lr=0.01,
        warmup_steps=2,
        batch_size=16,
        epochs=2,
        eval_beam_size=5,
        eval_batch_size=32,
        log_every=2,
        encoder_input="items",
        device="cpu",
    )
    seed_everything(0)
    rng = np.random.default_rng(1)
    ctx = LossContext(
        vocab,
        tokens,
        target_counts=np.bincount(data["train"].targets, minlength=16),
        item_vectors=lambda: rng.normal(size=(16, 4)) + codes[:, :1],
        total_steps=20,
    )
    strategy = build_loss(loss, params, ctx)
    method = build_method("tiger", {}, MethodContext(SequenceEncoder(tokens, "items"), strategy))
    trainer = Trainer(
        GenerativeRecommender(rp, vocab),
        rp,
        method,
        data["train"],
        data["valid"],
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports",
        seed=0,
        fingerprint="fp",
        progress=False,
    )
    trainer.fit()
    live = tmp_path / "reports" / "live"
    if loss == "cft":
        assert (live / "plots" / "metrics" / "train" / "loss_causal.tsv").exists()
        return
    series = read_live_series(live)
    steps, fr = series["fr"]
    assert steps.tolist() == list(range(2, trainer.state.step + 1, 2)) and np.all(np.diff(fr) > 0)  # fr takes over
    assert np.allclose(series["fg"][1] + series["fr"][1] + series["or"][1], 1.0)
    ((_, decay),) = read_live_series(live, "train/curriculum").values()
    total = trainer.state.total_steps
    assert decay[0] == pytest.approx(2 ** (-(steps[0] - 1) / (0.25 * total)), rel=1e-5)  # logged before step t's update
    assert any(p is strategy.lambda_raw for g in trainer.method.optimizer.param_groups for p in g["params"])
    assert plot_alpha_trajectories(live, tmp_path / "alphas.png").exists()
