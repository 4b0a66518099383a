"""MTGRec pre-training (``recommender.method: mtgrec``, paper 002, SPEC 7) on a tiny T5.

Synthetic data (as tests/test_methods.py): 40 items; next = (7 x + 3) mod 40; three ID tables over
one vocabulary (the second and third: the first's IDs permuted), 10 batches per epoch.
"""

from __future__ import annotations

import copy
import csv
import signal

import numpy as np
import pytest
import torch
from helpers import next_item_pattern_splits

from genrec_core.config import RecommenderParams
from genrec_core.errors import ParamError
from genrec_core.methods import MethodContext, build_method, check_method_params, method_class
from genrec_core.methods.mtgrec import MTGRecMethod, softmax, stage_end_steps
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import GenerativeRecommender, build_generative_model
from genrec_core.recommender.trainer import Trainer, TrainingInterrupted
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.runtime import seed_everything

N_ITEMS = 40
FRAMES = next_item_pattern_splits(N_ITEMS, 5, 30, 8, 0)
CODES = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
ALL_CODES = [CODES, CODES[np.random.default_rng(3).permutation(N_ITEMS)], CODES[np.random.default_rng(4).permutation(N_ITEMS)]]
VOCAB = SemanticIdVocab.from_codes(ALL_CODES)
TABLES = torch.from_numpy(np.stack([VOCAB.codes_to_tokens(c) for c in ALL_CODES]))  # [3, N, L]
#: stage ends after steps 10 and 20 of 30 (warm-up one epoch, then every epoch)
STAGES = {"warmup": 1.0, "stage_length": 1.0, "schedule_unit": "epochs"}


def small_params(method_params, **kw) -> RecommenderParams:
    base = dict(
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
        encoder_input="items",
    )
    base.update(kw)
    return RecommenderParams(method="mtgrec", method_params=method_params, **base)


def make_trainer(tmp_path, method_cls=MTGRecMethod, init_seed=0, method_params=None, **kw) -> Trainer:
    seed_everything(init_seed)
    method_params = dict(STAGES if method_params is None else method_params)
    params = small_params(method_params, **kw)
    context = MethodContext(SequenceEncoder(TABLES, "items", default_tokenizer=0), build_loss("ce", {}, LossContext(VOCAB, TABLES[0])))
    return Trainer(
        build_generative_model(params, VOCAB),
        params,
        method_cls(context, **method_params),
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports" / "train",
        seed=0,
        fingerprint="fp",
        device="cpu",
        progress=False,
        use_dvclive=False,
    )


def train_steps(trainer: Trainer, n: int) -> None:
    """``n`` optimisation steps of the method (as the trainer's loop takes them)."""
    trainer.model.train()
    trainer.sampler.set_epoch(0)
    for _, index in zip(range(n), trainer.sampler):
        trainer.train_step(trainer.method.collate(trainer, trainer.train_examples, index))


def mixed_validation_loss(trainer: Trainer) -> float:
    """Mean loss over the validation examples tokenized by every tokenizer (eval mode)."""
    method, valid = trainer.method, trainer.valid_examples
    trainer.model.eval()
    total = 0.0
    with torch.no_grad():
        for t in range(method.n):
            batch = method.encoder.collate(valid, np.arange(len(valid)), tokenizer_index=torch.full((len(valid),), t))
            total += float(method.compute_losses(trainer, batch).per_example.double().sum())
    trainer.model.train()
    return total / (method.n * len(valid))


# --------------------------------------------------------------------------- params and schedule


def test_mtgrec_is_registered_and_its_params_are_validated():
    assert method_class("mtgrec") is MTGRecMethod
    assert check_method_params("mtgrec", {"tau": 3}) == {**MTGRecMethod.param_defaults, "tau": 3.0}
    for given, key in [
        ({"tua": 1.0}, "tua"),
        ({"tau": 0.0}, "tau"),
        ({"influence": "lesss"}, "influence"),
        ({"schedule_unit": "steps"}, "schedule_unit"),
        ({"warmup": 1.5}, "warmup"),
        ({"stage_length": 0}, "stage_length"),
        ({"projection_dim": -1}, "projection_dim"),
        ({"eval_mode_gradients": 1}, "eval_mode_gradients"),
    ]:
        with pytest.raises(ParamError, match=rf"recommender\.method_params\.{key}"):
            check_method_params("mtgrec", given)
    context = MethodContext(SequenceEncoder(TABLES[0], "items"), build_loss("ce", {}, LossContext(VOCAB, TABLES[0])))
    with pytest.raises(ParamError, match="several ID tables"):
        build_method("mtgrec", {}, context)


def test_stage_ends_in_epochs_and_fractions():
    assert stage_end_steps(200, 1, 60, 20, "epochs") == [60, 80, 100, 120, 140, 160, 180]
    assert stage_end_steps(2000, 10, 0.3, 0.1, "fraction") == [600, 800, 1000, 1200, 1400, 1600, 1800]
    assert stage_end_steps(30, 10, 1.0, 1.0, "epochs") == [10, 20]
    assert stage_end_steps(30, 10, 0.0, 0.5, "epochs") == [5, 10, 15, 20, 25]


# --------------------------------------------------------------------------- tokenization


def test_each_example_is_tokenized_by_the_tokenizer_it_drew(tmp_path):
    trainer = make_trainer(tmp_path)
    method = trainer.method
    method.p = np.array([0.6, 0.3, 0.1])
    index = np.arange(len(trainer.train_examples))
    batch = method.collate(trainer, trainer.train_examples, index)
    drawn = batch.tokenizer_index
    assert drawn.shape == (len(index),) and set(drawn.tolist()) == {0, 1, 2}
    counts = np.bincount(drawn.numpy(), minlength=3) / len(index)
    assert np.abs(counts - method.p).max() < 0.1  # drawn from p, per example
    for t in range(3):  # inputs and targets of the examples that drew t are t's tokens
        alone = method.encoder.collate(trainer.train_examples, index, tokenizer_index=torch.full((len(index),), t))
        rows = drawn == t
        assert torch.equal(batch.input_ids[rows], alone.input_ids[rows]) and torch.equal(batch.labels[rows], alone.labels[rows])
        targets = torch.from_numpy(trainer.train_examples.targets[index])[rows]
        assert torch.equal(batch.labels[rows, :2], TABLES[t][targets])
    # the draw depends on (seed, step) only: the same step draws the same, the next one differs
    assert torch.equal(method.collate(trainer, trainer.train_examples, index).tokenizer_index, drawn)
    trainer.state.step += 1
    assert not torch.equal(method.collate(trainer, trainer.train_examples, index).tokenizer_index, drawn)


def test_packed_training_draws_one_tokenizer_per_chunk_and_tokenizes_the_chunk_with_it(tmp_path):
    """Deviation (packed decoder-only, the CPU default): a chunk holds its items once, so all its
    examples take the chunk's draw; targets and the chunk's item tokens are that tokenizer's."""
    from genrec_core.recommender.decoder_only import DecoderOnlyRecommender
    from genrec_core.recommender.packing import chunk_groups

    trainer = make_trainer(tmp_path, model="decoder_only", pack_examples=4, dropout=0.0)
    method, train = trainer.method, trainer.train_examples
    method.p = np.array([0.6, 0.3, 0.1])
    assert isinstance(trainer.model, DecoderOnlyRecommender) and trainer.sampler.pack_examples == 4
    chunk_draws = []
    for step, index in enumerate(trainer.sampler.batches(0)):
        trainer.state.step = step
        batch = method.collate(trainer, train, index)
        drawn, packing = batch.tokenizer_index, batch.packing
        group = chunk_groups(index, trainer.sampler.linked, 4)
        assert np.array_equal(packing.group.numpy(), group)
        firsts = np.flatnonzero(np.diff(group, prepend=-1))
        assert all(len(set(drawn[group == g].tolist())) == 1 for g in range(len(firsts)))  # one draw per chunk
        chunk_draws += drawn[firsts].tolist()
        targets = torch.from_numpy(train.targets[index])
        for t in range(3):  # labels of the examples that drew t are t's IDs
            rows = drawn == t
            assert torch.equal(batch.labels[rows, :2], TABLES[t][targets[rows]])
        for g, first in enumerate(firsts):  # the chunk: its first example's history, then every target
            members = index[group == g]
            start, n = train.offsets[index[first]], train.lengths[index[first]]
            items = np.concatenate([train.history[start : start + n], train.targets[members]])
            assert torch.equal(packing.items[g, : len(items)], TABLES[int(drawn[first])][torch.from_numpy(items)])
    assert max(len(np.unique(chunk_groups(i, trainer.sampler.linked, 4), return_counts=True)[1]) for i in trainer.sampler.batches(0)) > 1
    freq = np.bincount(chunk_draws, minlength=3) / len(chunk_draws)
    assert np.abs(freq - method.p).max() < 0.12, freq  # chunks draw from p
    trainer.state.step = 0
    train_steps(trainer, 3)  # and the packed batches train
    assert method.counts.sum() == sum(len(i) for i in trainer.sampler.batches(0)[:3])


# --------------------------------------------------------------------------- influence


def test_influence_is_the_first_order_change_of_the_validation_loss_of_one_adam_step(tmp_path):
    """I_i = eta g_val . Gamma_i against the validation loss actually lost by one AdamW step on
    group i's gradient from the live moments (weight decay off: the influence leaves it out)."""
    trainer = make_trainer(tmp_path, lr=2e-4, warmup_steps=0, weight_decay=0.0, dropout=0.0)  # a small step: first order holds
    train_steps(trainer, 6)  # non-zero moments, step count 6
    method = trainer.method
    scores = method.influence_scores(trainer)
    influence = scores["score"]
    assert np.array_equal(influence, scores["full"])
    before = mixed_validation_loss(trainer)
    model_state = copy.deepcopy(trainer.model.state_dict())
    optim_state = copy.deepcopy(method.optimizer.state_dict())
    index = np.arange(len(trainer.train_examples))
    drops = []
    for i in range(method.n):
        with method._gradient_mode(trainer):
            grads = method.mean_gradient(trainer, trainer.train_examples, index, [i])
        for q, g in zip(method.optimised_parameters(), grads):
            q.grad = g.clone()
        method.optimizer.step()  # the real AdamW step on group i's gradient
        method.optimizer.zero_grad(set_to_none=True)
        drops.append(before - mixed_validation_loss(trainer))
        trainer.model.load_state_dict(model_state)
        method.optimizer.load_state_dict(copy.deepcopy(optim_state))
    drops = np.array(drops)
    assert np.all(np.abs(influence) > 1e-4)
    np.testing.assert_allclose(influence, drops, rtol=0.01)
    # the groups' differences (what p is made of) too, not only the common part
    spread = influence.max() - influence.min()
    assert spread > 0 and np.abs((influence - influence.mean()) - (drops - drops.mean())).max() < 0.1 * spread
    assert np.argsort(influence).tolist() == np.argsort(drops).tolist()
    # nothing changed by computing the scores
    assert np.array_equal(method.influence_scores(trainer)["score"], influence)


def test_released_influence_uses_the_uncorrected_direction(tmp_path):
    trainer = make_trainer(tmp_path, lr=1e-3, warmup_steps=0, weight_decay=0.0, method_params={**STAGES, "influence": "released"})
    train_steps(trainer, 4)
    method = trainer.method
    g = [torch.ones_like(q) for q in method.optimised_parameters()]
    direction, lr = method.adam_update(g)
    q0 = method.optimised_parameters()[0]
    state = method.optimizer.state[q0]
    b1, b2 = method.optimizer.param_groups[0]["betas"]
    eps = method.optimizer.param_groups[0]["eps"]
    m = b1 * state["exp_avg"] + (1 - b1)
    v = b2 * state["exp_avg_sq"] + (1 - b2)
    torch.testing.assert_close(direction[0], m / (v + eps).sqrt())
    assert lr == method.optimizer.param_groups[0]["lr"]


def test_p_after_each_stage_is_the_softmax_of_the_cumulative_influence(tmp_path):
    trainer = make_trainer(tmp_path, method_params={**STAGES, "tau": 0.01})
    trainer.fit()
    method = trainer.method
    assert [r["step"] for r in method.records] == [10, 20] and [r["epoch"] for r in method.records] == [1.0, 2.0]
    cumulative = np.zeros(3)
    for r in method.records:
        cumulative += np.array(r["influence"])
        np.testing.assert_allclose(r["cumulative"], cumulative, rtol=1e-12)
        np.testing.assert_allclose(r["p"], softmax(cumulative, 0.01), rtol=1e-12)
    np.testing.assert_allclose(method.p, method.records[-1]["p"])
    assert not np.allclose(method.p, 1 / 3)  # a sharp tau moved p away from uniform
    # the draws of the last stage follow p (and every tokenizer was drawn in the first)
    assert method.counts.sum() == 3 * len(trainer.train_examples) and method.counts.min() > 0
    # reports/method/influence.csv: per stage and tokenizer; p = softmax(cumulative / tau) per stage
    path = tmp_path / "reports" / "method" / "influence.csv"
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["stage", "epoch", "step", "tokenizer", "influence", "cumulative", "p"] and len(rows) == 6
    for stage in ("1", "2"):
        group = [r for r in rows if r["stage"] == stage]
        assert [int(r["tokenizer"]) for r in group] == [0, 1, 2]
        cum = np.array([float(r["cumulative"]) for r in group])
        np.testing.assert_allclose([float(r["p"]) for r in group], softmax(cum, 0.01), rtol=1e-9)
    summary = trainer.method.summary(trainer)
    assert summary["mtgrec_stage_ends"] == [10, 20] and summary["mtgrec_p"] == method.p.tolist()


def test_released_cumulative_weights_stages_by_their_learning_rates(tmp_path):
    trainer = make_trainer(tmp_path, method_params={**STAGES, "influence": "released", "group_sample_size": 40})
    trainer.fit()
    records = trainer.method.records
    lrs = np.array([r["lr"] for r in records])
    scores = np.array([r["score"] for r in records])
    np.testing.assert_allclose(records[-1]["cumulative"], (lrs[:, None] * scores).sum(0) / lrs.sum(), rtol=1e-12)
    np.testing.assert_allclose(trainer.method.p, softmax(records[-1]["cumulative"], 1.0))


class StoppedAt13(MTGRecMethod):
    """SIGTERM after step 13: between the stage ends at steps 10 and 20."""

    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        if trainer.state.step == 13:
            trainer.handle_signal(signal.SIGTERM, None)


@pytest.mark.parametrize("influence", ["paper", "released"])
def test_resumed_between_two_stage_ends_is_bit_identical(tmp_path, influence):
    """Dropout on (the global RNG matters); released also collects gradients with dropout on."""
    method_params = {**STAGES, "tau": 0.05, "influence": influence, "group_sample_size": 60}
    reference = make_trainer(tmp_path / "ref", method_params=method_params)
    reference.fit()
    with pytest.raises(TrainingInterrupted):
        make_trainer(tmp_path / "run", StoppedAt13, method_params=method_params).fit()
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 13 and len(ckpt["method"]["mtgrec"]["records"]) == 1
    resumed = make_trainer(tmp_path / "run", init_seed=77, method_params=method_params)
    resumed.fit()
    assert resumed.resumed_from is not None
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert reference.method.records == resumed.method.records and np.array_equal(reference.method.p, resumed.method.p)
    assert np.array_equal(reference.method.counts, resumed.method.counts)
    sa, sb = reference.method.optimizer.state_dict()["state"], resumed.method.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k])
    assert reference.state.evals == resumed.state.evals
    assert (tmp_path / "ref" / "reports" / "method" / "influence.csv").read_text() == (tmp_path / "run" / "reports" / "method" / "influence.csv").read_text()


def test_projected_scores_converge_to_the_full_ones(tmp_path):
    trainer = make_trainer(tmp_path, lr=1e-3, warmup_steps=0, dropout=0.0)
    train_steps(trainer, 6)
    method = trainer.method
    errors = {}
    for d in (8, 128, 2048, 16384):
        method.params["projection_dim"] = d
        res = method.influence_scores(trainer)
        full = res["full"]
        errors[d] = float(np.abs(res["score"] - full).max() / np.abs(full).max())
    assert errors[16384] < errors[128] < errors[8] and errors[2048] < errors[8]
    assert errors[16384] < 0.1


# --------------------------------------------------------------------------- fine-tuning and selection


def test_finetuning_starts_from_the_pretrained_weights_on_one_tokenizer_and_selects_on_validation(tmp_path):
    from genrec_core.methods.mtgrec import finetune_recommender_params, finetune_tokenizers, select_tokenizer
    from genrec_core.methods.plain import PlainMethod

    pre = make_trainer(tmp_path / "pre", method_params={**STAGES, "finetune_top_m": 2, "finetune_epochs": 1})
    pre.fit()
    pretrained = torch.load(pre.best_path, weights_only=False)["model"]
    chosen = finetune_tokenizers(pre.method.cumulative, pre.method.params["finetune_top_m"])
    assert len(chosen) == 2 and pre.method.cumulative[chosen[0]] >= pre.method.cumulative[chosen[1]] >= pre.method.cumulative.min()
    assert finetune_tokenizers([0.1, 0.3, 0.2]) == [1, 2, 0] and finetune_tokenizers([0.1, 0.3, 0.2], 1) == [1]
    rp = finetune_recommender_params(pre.params)
    assert (rp.method, rp.method_params, rp.lr, rp.warmup_steps, rp.lr_schedule, rp.epochs) == ("plain", {}, 2e-4, 0, "cosine", 1)
    valid = {}
    for t in chosen:
        model = GenerativeRecommender(rp, VOCAB)
        model.load_state_dict(pretrained)
        context = MethodContext(SequenceEncoder(TABLES, "items", default_tokenizer=t), build_loss("ce", {}, LossContext(VOCAB, TABLES[t])))
        trainer = Trainer(
            model,
            rp,
            PlainMethod(context),
            examples_from_frame(FRAMES["train"]),
            examples_from_frame(FRAMES["valid"]),
            checkpoint_dir=tmp_path / f"ft{t}",
            reports_dir=tmp_path / f"ft{t}" / "reports",
            seed=0,
            fingerprint="fp",
            device="cpu",
            progress=False,
            use_dvclive=False,
        )
        assert all(torch.equal(model.state_dict()[k], pretrained[k]) for k in pretrained)  # from the pre-trained weights
        assert trainer.method.scheduler.get_last_lr()[0] == pytest.approx(2e-4)  # no warm-up
        batch = trainer.method.collate(trainer, trainer.train_examples, np.arange(8))
        assert torch.equal(batch.labels[:, :2], TABLES[t][torch.from_numpy(trainer.train_examples.targets[:8])])  # tokenizer t only
        trainer.fit()
        valid[t] = trainer.state.evals[-1]
    best = select_tokenizer(valid)
    assert valid[best]["ndcg@10"] == max(v["ndcg@10"] for v in valid.values())
    assert select_tokenizer({"a": {"ndcg@10": 0.2}, "b": {"ndcg@10": 0.2}}) == "a"


def test_the_pipeline_pretrains_finetunes_per_tokenizer_selects_on_validation_and_tests_only_that_one(tmp_path):
    """Every dvc.yaml stage up to evaluate on the tiny dataset of tests/test_dvc_dependencies.py
    with ``recommender.method: mtgrec``: pre-training on both kept tokenizers (keep_last = 2,
    reports/method/influence.csv: one row per stage end and tokenizer), finetune@0 and @1 on one
    tokenizer each (by cumulative influence; finetune@2.. are no-ops), select_tokenizer takes the
    argmax of validation, evaluate tests that fine-tuned model; every written file is declared."""
    import json

    import polars as pl
    from test_dvc_dependencies import load_dvc_yaml, run_stages_recording_writes, tiny_project, undeclared_writes

    from genrec_core.methods.mtgrec import cumulative_influence
    from genrec_core.recommender.checkpoint import load_recommender
    from genrec_core.recommender.data import load_examples
    from genrec_core.recommender.interface import rank_examples

    root, overrides = tiny_project(tmp_path)
    overrides += [
        "recommender.epochs=3",
        "recommender.method=mtgrec",
        'recommender.method_params={"warmup":1,"stage_length":1,"schedule_unit":"epochs","tau":0.5,"finetune_epochs":2,"finetune_lr":0.003}',
    ]
    dvc = load_dvc_yaml()
    names = [n for n in dvc["stages"] if n not in ("analyse_ids", "token_weights", "analyse")]
    assert names[-1] == "evaluate" and "finetune@0" in names and "select_tokenizer" in names
    written = run_stages_recording_writes(root, names, overrides)
    assert undeclared_writes(dvc, written) == {}
    # pre-training: influence per stage end and tokenizer, p = softmax(cumulative / tau)
    rows = list(csv.DictReader((root / "reports" / "method" / "influence.csv").open()))
    assert [(r["stage"], r["tokenizer"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    for stage in ("1", "2"):
        group = [r for r in rows if r["stage"] == stage]
        np.testing.assert_allclose([float(r["p"]) for r in group], softmax(np.array([float(r["cumulative"]) for r in group]), 0.5), rtol=1e-9)
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert len(summary["mtgrec_p"]) == 2 and sum(summary["mtgrec_counts"]) > 0
    cumulative = cumulative_influence(root / "reports" / "method" / "influence.csv", 2)
    np.testing.assert_allclose(cumulative, summary["mtgrec_cumulative_influence"])
    # fine-tuning: slot r on the r-th tokenizer by cumulative influence, from the pre-trained weights
    results = {s: json.loads((root / "reports" / "method" / "finetune" / str(s) / "result.json").read_text()) for s in range(5)}
    order = sorted(range(2), key=lambda i: (-cumulative[i], i))
    assert [results[s]["tokenizer_index"] for s in (0, 1)] == order
    assert all(results[s]["tokenizer"] is None and "only 2 tokenizers" in results[s]["skipped"] for s in (2, 3, 4))
    pretrained = torch.load(root / "data" / "recommender" / "best.pt", weights_only=True)
    for s in (0, 1):
        ckpt = torch.load(root / "data" / "finetune" / str(s) / "best.pt", weights_only=True)
        assert ckpt["tokenizer"] == results[s]["tokenizer"] and ckpt["params"]["method"] == "plain" and ckpt["params"]["lr"] == 0.003
        assert not all(torch.equal(ckpt["model"][k], pretrained["model"][k]) for k in pretrained["model"])  # it trained
        ft_summary = json.loads((root / "reports" / "method" / "finetune" / str(s) / "summary.json").read_text())
        assert ft_summary["tokenizer"] == results[s]["tokenizer"] and ft_summary["epochs"] <= 2
    assert results[0]["tokenizer"] != results[1]["tokenizer"]
    # selection: the argmax of validation NDCG@10 (ties: the lower slot)
    selected = json.loads((root / "reports" / "method" / "selected.json").read_text())
    valid = [results[s]["best_valid"]["ndcg@10"] for s in (0, 1)]
    best = int(np.argmax(valid))
    assert selected["slot"] == best and selected["tokenizer"] == results[best]["tokenizer"] and selected["checkpoint"] == f"data/finetune/{best}/best.pt"
    table = list(csv.DictReader((root / "reports" / "method" / "finetune.csv").open()))
    assert [r["stage"] for r in table] == ["pretrain", "finetune", "finetune"]
    assert [r["selected"] for r in table] == ["False", str(best == 0), str(best == 1)]
    assert [float(r["ndcg@10"]) for r in table[1:]] == valid
    # the test metrics are that fine-tuned model's: rank the test split with it directly
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["tokenizer"] == selected["tokenizer"] and "trie" not in metrics
    loaded = load_recommender(root / selected["checkpoint"])
    test = load_examples(root / "data" / "processed" / "test.parquet", loaded.item_tokens.shape[0])
    encoder = SequenceEncoder(loaded.item_tokens, encoder_input=loaded.params.encoder_input)
    items, _ = rank_examples(loaded.model, test, encoder.collate, 10, 256)
    preds = pl.read_parquet(root / "data" / "predictions" / "test.parquet")
    assert preds["items"].to_list() == items.tolist()


def test_the_default_method_has_nothing_to_finetune_and_tests_the_pretrained_model(tmp_path):
    """tiger: the train stage writes an influence.csv header only, every finetune slot is a no-op,
    selected.json names data/recommender/best.pt (on the stage outputs of the dependency test)."""
    import json

    from genrec_core.config import load_params
    from genrec_core.paths import ArtifactPaths
    from stages import finetune, select_tokenizer

    paths = ArtifactPaths(tmp_path)
    params = load_params(None)
    (tmp_path / "reports" / "train").mkdir(parents=True)
    (tmp_path / "reports" / "train" / "best_valid.json").write_text(json.dumps({"best_epoch": 2, "best_valid_ndcg@10": 0.25}))
    finetune.run(params, tmp_path, slot=0)  # no ID table, no model: nothing is read
    assert json.loads(paths.finetune_result(0).read_text())["skipped"].startswith("recommender.method is 'plain'")
    assert sorted(p.name for p in paths.finetune_dir(0).iterdir()) == ["skipped.json"]
    select_tokenizer.run(params, tmp_path)
    assert json.loads(paths.selected_model.read_text())["checkpoint"] == "data/recommender/best.pt"
    rows = list(csv.DictReader(paths.finetune_table.open()))
    assert len(rows) == 1 and rows[0]["stage"] == "pretrain" and rows[0]["ndcg@10"] == "0.25" and rows[0]["selected"] == "True"


def test_selection_fails_when_a_tokenizer_to_finetune_has_no_slot(tmp_path):
    import json

    from genrec_core.config import load_params
    from genrec_core.paths import ArtifactPaths
    from stages import select_tokenizer

    paths = ArtifactPaths(tmp_path)
    params = load_params(None, ["recommender.method=mtgrec", "finetune.slots=[0]"])
    (tmp_path / "reports" / "train").mkdir(parents=True)
    (tmp_path / "reports" / "train" / "best_valid.json").write_text(json.dumps({"best_epoch": 1}))
    paths.finetune_result(0).parent.mkdir(parents=True)
    paths.finetune_result(0).write_text(json.dumps({"slot": 0, "planned": 3, "tokenizer": "epoch_0009", "best_valid": {"ndcg@10": 0.1}}))
    with pytest.raises(ParamError, match=r"finetune\.slots.*\[1, 2\]"):
        select_tokenizer.run(params, tmp_path)


# --------------------------------------------------------------------------- decoding without the trie


class _TableDecoder:
    """Logits of the next token given the last one fed (a fixed table): no state to reorder."""

    def __init__(self, table: torch.Tensor, batch: int):
        self.table, self.batch = table, batch

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]

    def reorder(self, parent: torch.Tensor) -> None:
        pass


class _TableModel(torch.nn.Module):
    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def beam_decoder(self, input_ids, attention_mask, max_steps):
        return _TableDecoder(self.table, input_ids.shape[0])


def test_decoding_without_the_trie_drops_invalid_ids():
    """Items 0 = (1, 3), 1 = (2, 4). P(first) = 0.5 / 0.3 / 0.2 for tokens 1 / 2 / 5; after 1:
    4 (0.6, (1, 4) is no item) or 3 (0.4); after 2: 4 (0.9); after 5: 3. Free beams of width 2:
    (1, 4) 0.30 and (2, 4) 0.27 -> the invalid one is dropped: [item 1, -1]. Width 3 adds (1, 3)
    0.20. Within the trie: item 1 (0.27), item 0 (0.20)."""
    from genrec_core.recommender.beam_search import constrained_beam_search, free_beam_search
    from genrec_core.recommender.trie import ItemTrie

    V = 6
    probs = torch.full((V, V), 1e-6)
    probs[0, 1], probs[0, 2], probs[0, 5] = 0.5, 0.3, 0.2  # fed PAD (0): the first token
    probs[1, 4], probs[1, 3] = 0.6, 0.4
    probs[2, 4] = 0.9
    probs[5, 3] = 1.0
    model = _TableModel(probs.log())
    trie = ItemTrie.build(torch.tensor([[1, 3], [2, 4]]), V)
    inputs, mask = torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long)
    two = free_beam_search(model, inputs, mask, trie, 2)
    assert two.items.tolist() == [[1, -1]] and two.scores[0, 1] == float("-inf")
    assert two.scores[0, 0].item() == pytest.approx(float(torch.log_softmax(probs.log()[0], -1)[2] + torch.log_softmax(probs.log()[2], -1)[4]), rel=1e-5)
    three = free_beam_search(model, inputs, mask, trie, 3)
    assert three.items.tolist() == [[1, 0, -1]]
    assert constrained_beam_search(model, inputs, mask, trie, 2).items.tolist() == [[1, 0]]


def test_a_model_decodes_without_the_trie_when_told():
    """A tiny untrained T5 (``decode_with_trie`` false): only valid items or -1, the valid ones
    first with the same scores the trie search gives them (both use the full softmax's log-probs)."""
    params = RecommenderParams(num_layers=1, num_decoder_layers=1, d_model=16, d_ff=32, num_heads=2, d_kv=8, encoder_input="items", device="cpu")
    torch.manual_seed(0)
    model = GenerativeRecommender(params, VOCAB)
    model.set_items(TABLES[0])
    batch = SequenceEncoder(TABLES[0], "items").collate(examples_from_frame(FRAMES["test"]), np.arange(8))
    c_items, c_scores = model.rank(batch, 40)  # every item
    model.decode_with_trie = False
    items, scores = model.rank(batch, 40)
    assert items.shape == (8, 40) and ((items >= -1) & (items < N_ITEMS)).all()
    dropped = 0
    for row in range(8):
        n_valid = int((items[row] >= 0).sum())
        assert (items[row][:n_valid] >= 0).all() and (items[row][n_valid:] == -1).all() and torch.isinf(scores[row][n_valid:]).all()
        dropped += 40 - n_valid
        constrained = dict(zip(c_items[row].tolist(), c_scores[row].tolist()))
        for item, score in zip(items[row][:n_valid].tolist(), scores[row][:n_valid].tolist()):
            assert score == pytest.approx(constrained[item], abs=1e-4)
    assert dropped > 0  # some of the 40 best sequences name no item (40 of the 64 level-by-level IDs exist)
