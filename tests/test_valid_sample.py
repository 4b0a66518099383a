"""recommender.max_eval_users: ``auto`` (all validation users up to AUTO_EVAL_USERS, a fixed seeded
sample of that many above), 0 (all), N (a sample seeded by the run seed); the validation observer hook.

Hand-made sizes: AUTO_EVAL_USERS is lowered with monkeypatch so a 60-user validation split is
"large"; the real threshold is checked on sizes alone (no model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import FRAMES, TOKENS, VOCAB, make_trainer, small_params

from genrec_core.config import RecommenderParams, load_params
from genrec_core.errors import ParamError
from genrec_core.evaluation.metrics import hit_ndcg
from genrec_core.methods import MethodContext
from genrec_core.methods.plain import PlainMethod
from genrec_core.recommender import trainer as trainer_mod
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame, seeded_subset
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import GenerativeRecommender
from genrec_core.recommender.trainer import AUTO_EVAL_USERS, eval_user_index

N_VALID = len(FRAMES["valid"])  # 60 users


def test_auto_is_all_users_up_to_the_threshold_and_a_sample_of_exactly_that_size_above():
    assert AUTO_EVAL_USERS == 5000
    for n in (1, 943, AUTO_EVAL_USERS):
        index, how = eval_user_index(n, "auto", 42)
        assert index.tolist() == list(range(n)) and how.startswith("auto: all")
    for n in (AUTO_EVAL_USERS + 1, 22363, 30431):
        index, how = eval_user_index(n, "auto", 42)
        assert how == "auto sample"
        assert len(index) == AUTO_EVAL_USERS == len(np.unique(index))
        assert np.all(np.diff(index) > 0) and index[0] >= 0 and index[-1] < n


def test_auto_with_hand_made_threshold(monkeypatch):
    monkeypatch.setattr(trainer_mod, "AUTO_EVAL_USERS", 7)
    assert eval_user_index(7, "auto", 0)[0].tolist() == list(range(7))
    assert len(eval_user_index(8, "auto", 0)[0]) == 7
    assert len(eval_user_index(500, "auto", 0)[0]) == 7


def test_auto_sample_is_seeded_by_its_own_seed_not_the_runs_nor_the_global_rngs():
    n = 22363
    first, _ = eval_user_index(n, "auto", 42)
    np.random.seed(1)
    np.random.random(1000)  # whatever a run drew from the global RNGs before
    torch.manual_seed(5)
    torch.rand(1000)
    for seed in (0, 42, 43, 1234):  # the training seed does not choose the users
        assert eval_user_index(n, "auto", seed)[0].tolist() == first.tolist()
    assert first.tolist() == seeded_subset(n, AUTO_EVAL_USERS, trainer_mod.AUTO_EVAL_SAMPLE_SEED).tolist()
    assert first.tolist() != seeded_subset(n, AUTO_EVAL_USERS, trainer_mod.AUTO_EVAL_SAMPLE_SEED + 1).tolist()  # the sample seed does


def test_zero_and_n_keep_their_meaning():
    assert eval_user_index(100, 0, 3)[0].tolist() == list(range(100))
    assert eval_user_index(100, 0, 3)[1] == "all"
    # N: as before the auto default, seeded by the run seed
    assert eval_user_index(100, 10, 3)[0].tolist() == seeded_subset(100, 10, 3).tolist()
    assert eval_user_index(100, 10, 3)[0].tolist() != eval_user_index(100, 10, 4)[0].tolist()
    assert eval_user_index(100, 500, 3)[0].tolist() == list(range(100))


@pytest.mark.parametrize("value", ["-1", "foo", "1.5", "true", "null"])
def test_invalid_values_fail_naming_the_param(value):
    with pytest.raises(ParamError) as info:
        load_params(None, [f"recommender.max_eval_users={value}"])
    assert info.value.param == "recommender.max_eval_users"
    assert "recommender.max_eval_users" in str(info.value)


def test_valid_values_load():
    # the project's default (params.yaml) is auto; the dataclass keeps the SPEC's all users (and with
    # it the default checkpoint fingerprint, tests/test_reference_runs.py)
    assert load_params(Path(__file__).resolve().parents[1] / "params.yaml").recommender.max_eval_users == "auto"
    assert load_params(None, []).recommender.max_eval_users == 0
    assert load_params(None, ["recommender.max_eval_users=auto"]).recommender.max_eval_users == "auto"
    assert load_params(None, ["recommender.max_eval_users=0"]).recommender.max_eval_users == 0
    assert load_params(None, ["recommender.max_eval_users=300"]).recommender.max_eval_users == 300
    assert RecommenderParams().max_eval_users == 0
    with pytest.raises(ParamError, match="recommender.max_eval_users"):
        RecommenderParams(max_eval_users=-1).validate()
    with pytest.raises(ParamError, match="recommender.max_eval_users"):
        eval_user_index(10, "foo", 0)


def seeded_trainer(tmp_path, params, seed):
    """test_trainer's trainer, with the run seed ``seed``."""
    method = PlainMethod(MethodContext(SequenceEncoder(TOKENS, params.encoder_input), build_loss("ce", {}, LossContext(VOCAB, TOKENS))))
    return trainer_mod.Trainer(
        GenerativeRecommender(params, VOCAB),
        params,
        method,
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "c",
        reports_dir=tmp_path / "r",
        seed=seed,
        fingerprint="fp",
        progress=False,
        use_dvclive=False,
    )


def test_trainer_validates_the_same_sampled_users_every_epoch_and_for_every_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "AUTO_EVAL_USERS", 20)
    seen: list[tuple[int, list[int], np.ndarray]] = []
    monkeypatch.setattr(
        trainer_mod, "VALIDATION_OBSERVERS", [lambda trainer, ranks: seen.append((trainer.seed, trainer.valid_examples.user_ids.tolist(), ranks))]
    )
    users = {}
    for seed in (0, 1):
        t = seeded_trainer(tmp_path / f"s{seed}", small_params(epochs=2, max_eval_users="auto"), seed)
        users[seed] = t.valid_examples.user_ids.tolist()
        assert t.valid_users_note == f"20 of {N_VALID} (auto sample)"
        summary = t.fit()
        assert summary["valid_users"] == 20 and summary["valid_users_chosen"] == f"20 of {N_VALID} (auto sample)"
    assert users[0] == users[1] and len(set(users[0])) == 20
    assert [s for s, _, _ in seen] == [0, 0, 1, 1]  # one observation per epoch
    assert all(u == users[0] for _, u, _ in seen)  # the same users at every epoch and for every seed
    assert all(r.shape == (20,) for _, _, r in seen)


def test_observer_ranks_give_the_logged_metrics_and_their_sample_restriction(tmp_path, monkeypatch):
    """The per-user ranks an observer gets reproduce the epoch's metrics; restricted to a sample
    they give what validating on that sample alone gives (benchmarks/valid_sample.py)."""
    got = []
    monkeypatch.setattr(trainer_mod, "VALIDATION_OBSERVERS", [lambda trainer, ranks: got.append(ranks)])
    t = make_trainer(tmp_path, small_params(epochs=1, max_eval_users=0))
    t.fit()
    (ranks,) = got
    assert hit_ndcg(ranks, (1, 5, 10)) == pytest.approx({k: v for k, v in t.state.evals[0].items() if k != "epoch"}, abs=0)
    sample = seeded_subset(N_VALID, 25, 7)
    monkeypatch.setattr(trainer_mod, "VALIDATION_OBSERVERS", [])
    alone = t.evaluate(t.valid_examples.subset(sample))
    assert hit_ndcg(ranks[sample], (1, 5, 10)) == pytest.approx(alone, abs=1e-12)


def test_auto_resolving_to_all_users_trains_exactly_as_zero(tmp_path):
    runs = {}
    for value in (0, "auto"):
        t = make_trainer(tmp_path / str(value), small_params(epochs=2, max_eval_users=value))
        t.fit()
        runs[value] = (t.state.evals, {k: v.clone() for k, v in t.model.state_dict().items()}, t.valid_index.tolist())
    assert runs[0][0] == runs["auto"][0]
    assert runs[0][2] == runs["auto"][2] == list(range(N_VALID))
    assert all(torch.equal(runs[0][1][k], runs["auto"][1][k]) for k in runs[0][1])


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_sequential_models_validate_on_the_auto_sample_and_test_on_every_user(tmp_path, monkeypatch, kind):
    """The SASRec/GRU4Rec runner takes max_eval_users: auto through the shared Trainer; the
    evaluate stage still ranks every test user."""
    import json

    from test_sasrec import FRAMES as SEQ_FRAMES
    from test_sasrec import MAX_LEN, _write_processed
    from test_sasrec import small_params as seq_params

    from genrec_core.config import Params
    from stages import evaluate, train

    monkeypatch.setattr(trainer_mod, "AUTO_EVAL_USERS", 25)
    paths = _write_processed(tmp_path)
    params = Params()
    params.data.max_items = MAX_LEN
    params.recommender = seq_params(epochs=1, device="cpu", max_eval_users="auto")
    params.recommender.model = kind
    params.validate()
    train.run(params, tmp_path)
    summary = json.loads((paths.train_reports_dir / "summary.json").read_text())
    n_valid = SEQ_FRAMES["valid"].height
    assert summary["valid_users"] == 25 and summary["valid_users_chosen"] == f"25 of {n_valid} (auto sample)"
    evaluate.run(params, tmp_path)
    assert json.loads(paths.metrics.read_text())["users"] == SEQ_FRAMES["test"].height
