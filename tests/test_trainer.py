"""The trainer: it learns, resumes bit-identically, refuses foreign checkpoints, saves on SIGTERM.

Synthetic data: 40 items with 2-token IDs; every user's sequence follows next = (7 x + 3) mod 40,
so the target is a function of the last history item (chance NDCG@10 is about 0.11).
"""

from __future__ import annotations

import json
import logging
import signal

import numpy as np
import pytest
import torch
from helpers import next_item_pattern_splits

from genrec_core.config import Params, RecommenderParams
from genrec_core.io import write_parquet
from genrec_core.methods import MethodContext
from genrec_core.methods.plain import PlainMethod
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.data import SequenceEncoder, examples_from_frame
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.model import GenerativeRecommender
from genrec_core.recommender.trainer import Trainer, TrainingInterrupted
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.runtime import seed_everything

N_ITEMS = 40


def synthetic(n_users=60, seq_len=8, seed=0):
    frames = next_item_pattern_splits(N_ITEMS, 5, n_users, seq_len, seed)
    codes = np.stack([np.arange(N_ITEMS) // 8, np.arange(N_ITEMS) % 8], axis=1)
    return frames, codes


FRAMES, CODES = synthetic()
VOCAB = SemanticIdVocab.from_codes([CODES])
TOKENS = torch.from_numpy(VOCAB.codes_to_tokens(CODES))


def small_params(**kw) -> RecommenderParams:
    base = dict(
        num_layers=1,
        num_decoder_layers=1,
        d_model=32,
        d_ff=64,
        num_heads=2,
        d_kv=16,
        dropout=0.1,
        lr=0.01,
        warmup_steps=5,
        batch_size=32,
        epochs=3,
        patience=10,
        eval_beam_size=10,
        eval_batch_size=32,
        log_every=4,
    )
    base.update(kw)
    return RecommenderParams(**base)


def make_trainer(tmp_path, params, method=PlainMethod, fingerprint="fp", init_seed=0, use_dvclive=False):
    """``method``: the class of the method (built over this data's encoder and the ce loss)."""
    seed_everything(init_seed)  # a resumed run must not depend on its fresh initialisation
    model = GenerativeRecommender(params, VOCAB)
    loss = build_loss("ce", {}, LossContext(VOCAB, TOKENS))
    return Trainer(
        model,
        params,
        method(MethodContext(SequenceEncoder(TOKENS, params.encoder_input), loss)),
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports",
        seed=0,
        fingerprint=fingerprint,
        fingerprint_info={"fp": fingerprint},
        progress=False,
        use_dvclive=use_dvclive,
    )


def signal_at(step=None, epoch=None):
    """The default method, plus a SIGTERM arriving after optimiser step ``step`` (or at the end of epoch ``epoch``)."""

    class SignalAt(PlainMethod):
        def on_step_end(self, trainer, batch, out):
            super().on_step_end(trainer, batch, out)
            if trainer.state.step == step:
                trainer.handle_signal(signal.SIGTERM, None)

        def on_epoch_end(self, trainer, e):
            if e == epoch:
                trainer.handle_signal(signal.SIGTERM, None)

    return SignalAt


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run (tokens input, dropout on so RNG state matters)."""
    trainer = make_trainer(tmp_path_factory.mktemp("ref"), small_params())
    trainer.fit()
    return trainer


def assert_same_run(a: Trainer, b: Trainer):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.state.evals == b.state.evals
    assert (a.state.step, a.state.best_epoch, a.state.best_score) == (b.state.step, b.state.best_epoch, b.state.best_score)


def test_learns_a_deterministic_pattern(tmp_path):
    trainer = make_trainer(tmp_path, small_params(encoder_input="items", dropout=0.0, lr=0.03, epochs=6))
    summary = trainer.fit()
    first, best = trainer.state.evals[0], summary["best_valid"]
    # Measured on an AMD EPYC (1 and 2 threads, the same): NDCG@10 0.52 (first evaluation 0.35), hit@10 1.0.
    assert summary["best_valid_ndcg@10"] > 0.4  # chance: ~0.11
    assert best["hit@10"] > 0.8  # chance: 0.25
    assert summary["best_valid_ndcg@10"] > first["ndcg@10"] or first["ndcg@10"] > 0.4
    assert summary["steps"] == 6 * 10 and summary["device"] == "cpu"
    assert (tmp_path / "ckpt" / "best.pt").exists() and (tmp_path / "ckpt" / "last.pt").exists()


def test_resume_after_kill_at_epoch_end_is_identical(tmp_path, reference):
    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        make_trainer(tmp_path, small_params(), method=signal_at(epoch=0)).fit()
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 1 and ckpt["sampler"] == {"seed": 0, "batch_size": 32, "epoch": 1, "batches_done": 0}
    resumed = make_trainer(tmp_path, small_params(), init_seed=123)
    summary = resumed.fit()
    assert summary["resumed"] and resumed.resumed_from
    assert_same_run(reference, resumed)
    best = torch.load(tmp_path / "ckpt" / "best.pt", weights_only=True)
    assert best["epoch"] == reference.state.best_epoch


def test_sigterm_mid_epoch_saves_a_resumable_checkpoint(tmp_path, reference):
    with pytest.raises(TrainingInterrupted):
        make_trainer(tmp_path, small_params(), method=signal_at(step=14)).fit()  # epoch 2, batch 4 of 10
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 14 and ckpt["state"]["epoch"] == 1
    assert ckpt["sampler"]["epoch"] == 1 and ckpt["sampler"]["batches_done"] == 4
    resumed = make_trainer(tmp_path, small_params(), init_seed=7)
    resumed.fit()
    assert_same_run(reference, resumed)


def test_the_seed_matters(tmp_path, reference):
    """Guards the resume tests: a run from another initialisation does not end on the same weights."""
    other = make_trainer(tmp_path, small_params(), init_seed=1)
    other.fit()
    assert not torch.equal(other.model.state_dict()["t5.shared.weight"], reference.model.state_dict()["t5.shared.weight"])


def test_fingerprint_mismatch_starts_fresh(tmp_path, caplog):
    params = small_params(epochs=1)
    make_trainer(tmp_path, params, fingerprint="old").fit()
    # same fingerprint, finished run: nothing is retrained
    again = make_trainer(tmp_path, params, fingerprint="old")
    assert again.fit()["resumed"] and again.state.step == 10
    with caplog.at_level(logging.WARNING):
        fresh = make_trainer(tmp_path, params, fingerprint="new", init_seed=5)
        summary = fresh.fit()
    assert not summary["resumed"] and fresh.state.step == 10
    assert "starting fresh" in caplog.text and "differs in: fp" in caplog.text
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)["fingerprint"] == "new"


class _Payload:
    """Stands for whatever a tampered last.pt could make ``pickle`` construct (or run)."""

    loaded = False

    def __setstate__(self, state):
        _Payload.loaded = True


def test_epoch_line_gives_the_epochs_own_seconds_and_the_total_apart():
    from genrec_core.recommender.trainer import epoch_line

    line = epoch_line(2, 7, 447.2, 412.0, 1417.4, {"hit@1": 0.01, "ndcg@10": 0.05})
    # 1417 s over 2 epochs: 708.7 s each, 5 to go at most = 3544 s
    assert line == ("epoch 2/7: 447 s (train 412 s, valid 35 s); total 1417 s; at most 5 epochs left, ~3544 s at this pace: valid hit@1=0.0100, ndcg@10=0.0500")
    assert (
        epoch_line(3, 7, 400.0, 400.0, 1800.0, None)
        == "epoch 3/7: 400 s (train 400 s, no validation); total 1800 s; at most 4 epochs left, ~2400 s at this pace"
    )
    assert epoch_line(7, 7, 400.0, 380.0, 3000.0, {"ndcg@10": 0.05}) == "epoch 7/7: 400 s (train 380 s, valid 20 s); total 3000 s: valid ndcg@10=0.0500"
    assert "; stopping early (recommender.patience):" in epoch_line(5, 20, 400.0, 380.0, 3000.0, {"ndcg@10": 0.05}, stopped_early=True)


def test_without_a_terminal_training_logs_progress_and_one_line_per_epoch(tmp_path, caplog, monkeypatch):
    """Output to a file (no progress bar): progress lines during an epoch (every step here, as if
    each took a minute), and one line closing each epoch, with or without validation."""
    from genrec_core.recommender import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "PROGRESS_EVERY_S", 0.0)
    trainer = make_trainer(tmp_path, small_params(epochs=3, eval_every=2))
    with caplog.at_level(logging.INFO, logger=trainer_module.log.name):
        trainer.fit()
    lines = [r.getMessage() for r in caplog.records if r.name == trainer_module.log.name]
    assert f"training epochs 1 to 3 at most: {len(trainer.sampler)} batches an epoch" in lines[0]
    progress = [m for m in lines if "examples/s" in m and "s left in the epoch" in m]
    assert len(progress) == trainer.state.step == 3 * len(trainer.sampler)
    closing = [m for m in lines if " s (train " in m]
    assert [m.split(":")[0] for m in closing] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "no validation" in closing[0] and "at most 2 epochs left" in closing[0]
    assert ": valid hit@1=" in closing[1] and ": valid hit@1=" in closing[2] and "left" not in closing[2]


def test_a_last_pt_holding_other_objects_is_refused_not_unpickled(tmp_path):
    """last.pt is loaded with weights_only=True: a pickle of arbitrary objects (a shared DVC
    remote can supply one) is one clear error and none of its objects is built."""
    from genrec_core.errors import GenrecError

    trainer = make_trainer(tmp_path, small_params(epochs=1))
    trainer.last_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 2, "fingerprint": "fp", "model": {}, "payload": _Payload()}, trainer.last_path)
    with pytest.raises(GenrecError, match="weights_only"):
        trainer.try_resume()
    assert not _Payload.loaded


def test_dvclive_logs_and_summary(tmp_path):
    trainer = make_trainer(tmp_path, small_params(epochs=2, encoder_input="items", eval_every=1), use_dvclive=True)
    trainer.fit()
    live = tmp_path / "reports" / "live"
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 20 and "ndcg@10" in metrics["valid"] and "loss" in metrics["train"]
    loss_rows = (live / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t") == ["step", "loss"] and len(loss_rows) == 1 + 20 // 4
    assert len((live / "plots" / "metrics" / "valid" / "ndcg@10.tsv").read_text().splitlines()) == 1 + 2
    assert (live / "plots" / "metrics" / "epoch_seconds.tsv").exists()
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    for key in ("best_epoch", "best_valid_ndcg@10", "steps", "seconds", "device", "params_count"):
        assert key in summary
    assert summary["params_count"] == sum(p.numel() for p in trainer.model.parameters())


def test_train_stage_end_to_end_and_load_recommender(tmp_path):
    from genrec_core.recommender.beam_search import constrained_beam_search
    from genrec_core.recommender.checkpoint import load_recommender
    from genrec_core.recommender.trie import ItemTrie
    from genrec_core.tokenizers.id_table import build_id_table
    from stages.train import run

    paths = ArtifactPaths(tmp_path)
    for split, df in FRAMES.items():
        write_parquet(df, paths.examples(split))
    other = CODES[::-1].copy()  # a second kept tokenizer (shares the vocabulary)
    write_parquet(build_id_table(np.arange(N_ITEMS), {"epoch_0001": other, "epoch_0002": CODES}), paths.id_table)
    params = Params(seed=0)
    params.recommender = small_params(epochs=1, encoder_input="items", tokenizer="last")
    run(params, tmp_path)
    assert (paths.recommender_dir / "last.pt").exists() and (paths.train_reports_dir / "summary.json").exists()
    loaded = load_recommender(paths.recommender_dir / "best.pt")
    assert loaded.tokenizer == "epoch_0002" and torch.equal(loaded.item_tokens, TOKENS)
    assert loaded.params.encoder_input == "items" and not loaded.model.training
    batch = SequenceEncoder(loaded.item_tokens, "items").collate(examples_from_frame(FRAMES["valid"]), np.arange(4))
    result = constrained_beam_search(loaded.model, batch.input_ids, batch.attention_mask, ItemTrie.build(loaded.item_tokens, loaded.vocab.size), 5)
    assert result.items.shape == (4, 5) and bool((result.items >= 0).all())
    # a different tokenizer choice changes the fingerprint: the finished run is not reused
    params.recommender.tokenizer = "first"
    run(params, tmp_path)
    assert load_recommender(paths.recommender_dir / "best.pt").tokenizer == "epoch_0001"


def test_select_metric_drives_model_selection_and_names_the_summary_key(tmp_path):
    from genrec_core.config import SELECT_METRICS
    from genrec_core.recommender.trainer import validation_metrics

    # the param's choices are exactly the metrics validation computes
    assert set(SELECT_METRICS) == set(validation_metrics(np.arange(10)[None, :], np.array([3])))
    trainer = make_trainer(tmp_path, small_params(select_metric="hit@1", encoder_input="items", epochs=3))
    summary = trainer.fit()
    scores = [e["hit@1"] for e in trainer.state.evals]
    assert summary["best_valid_hit@1"] == max(scores) and "best_valid_ndcg@10" not in summary
    assert summary["best_epoch"] == trainer.state.evals[scores.index(max(scores))]["epoch"]
    assert torch.load(tmp_path / "ckpt" / "best.pt", weights_only=True)["valid"]["hit@1"] == max(scores)


def test_the_default_select_metric_keeps_older_fingerprints():
    from genrec_core.recommender.fingerprint import fingerprint

    _, info = fingerprint(Params(), "epoch_0001", {})
    assert "recommender.select_metric" not in info  # default: as before the param existed
    params = Params()
    params.recommender.select_metric = "hit@10"
    _, other = fingerprint(params, "epoch_0001", {})
    assert other["recommender.select_metric"] == "hit@10"
