"""SASRec: causal (perturbation test), learns a deterministic toy pattern with either loss, resumes
bit-identically through the shared Trainer, and the train/evaluate stages write the common
predictions schema by full ranking.

Synthetic data (as tests/test_trainer.py): 40 items; every user's sequence follows
next = (7 x + 3) mod 40, so the target is a function of the last history item; chance NDCG@10 is
about 0.11.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import polars as pl
import pytest
import torch
from helpers import next_item_pattern_splits

from genrec_core.config import Params, RecommenderParams
from genrec_core.evaluation.baselines import PREDICTION_SCHEMA
from genrec_core.io import write_parquet
from genrec_core.methods import MethodContext
from genrec_core.methods.plain import PlainMethod
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.data import examples_from_frame
from genrec_core.recommender.interface import rank_examples
from genrec_core.recommender.trainer import Trainer, TrainingInterrupted
from genrec_core.runtime import seed_everything
from genrec_core.sequential.models import SASRec
from genrec_core.sequential.training import ItemIdEncoder, SequentialLoss

N_ITEMS = 40
MAX_LEN = 5


def synthetic(n_users=60, seq_len=8, seed=0):
    return next_item_pattern_splits(N_ITEMS, MAX_LEN, n_users, seq_len, seed)


FRAMES = synthetic()


def small_params(**kw) -> RecommenderParams:
    base = dict(
        num_layers=2,
        d_model=32,
        d_ff=64,
        num_heads=2,
        dropout=0.1,
        lr=0.01,
        warmup_steps=5,
        batch_size=32,
        epochs=8,
        patience=20,
        eval_beam_size=10,
        eval_batch_size=32,
        log_every=4,
    )
    base.update(kw)
    return RecommenderParams(**base)


def make_trainer(tmp_path, params, loss="ce", method=PlainMethod, init_seed=0):
    seed_everything(init_seed)
    model = SASRec(N_ITEMS, MAX_LEN, d_model=params.d_model, num_layers=params.num_layers, num_heads=params.num_heads, d_ff=params.d_ff, dropout=params.dropout)
    return Trainer(
        model,
        params,
        method(MethodContext(ItemIdEncoder(N_ITEMS), SequentialLoss(loss))),
        examples_from_frame(FRAMES["train"]),
        examples_from_frame(FRAMES["valid"]),
        checkpoint_dir=tmp_path / "ckpt",
        reports_dir=tmp_path / "reports",
        seed=0,
        fingerprint="fp",
        fingerprint_info={"fp": "fp"},
        device="cpu",
        progress=False,
        use_dvclive=False,
    )


def test_causal_mask_perturbation():
    """Changing the item at position j never changes SASRec's output at positions < j."""
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, 8, d_model=16, num_layers=2, num_heads=2, d_ff=32, dropout=0.1).eval()
    ids = torch.randint(1, N_ITEMS + 1, (4, 8))
    mask = torch.ones_like(ids)
    base = model.sequence_output(ids, mask)
    for j in range(1, 8):
        changed = ids.clone()
        changed[:, j] = (changed[:, j] % N_ITEMS) + 1  # another real item
        out = model.sequence_output(changed, mask)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, j], base[:, j])  # the changed position itself does move


def test_padding_and_scores_shape():
    """Right padding does not change a row's result; forward scores all N items."""
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, 6, d_model=16, num_layers=1, num_heads=1, d_ff=32).eval()
    short = torch.tensor([[3, 9, 12]])
    padded = torch.tensor([[3, 9, 12, 0, 0, 0]])
    a = model(short, torch.ones_like(short))
    b = model(padded, (padded > 0).long())
    assert a.shape == (1, N_ITEMS)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_learns_a_deterministic_pattern(tmp_path, loss):
    trainer = make_trainer(tmp_path, small_params(epochs=10 if loss == "ce" else 20), loss=loss)
    summary = trainer.fit()
    # Measured on an AMD EPYC (1 and 2 threads, the same): NDCG@10 0.77 (ce), 0.69 (bce).
    assert summary["best_valid_ndcg@10"] > 0.5  # chance is about 0.11
    assert (tmp_path / "ckpt" / "best.pt").exists()


class SignalAt(PlainMethod):
    """The default method, plus a SIGTERM after optimiser step 13."""

    def on_step_end(self, trainer, batch, out):
        super().on_step_end(trainer, batch, out)
        if trainer.state.step == 13:
            trainer.handle_signal(signal.SIGTERM, None)


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    """BCE draws negatives from torch's RNG: last.pt must restore it for an identical run."""
    params = small_params(epochs=3)
    reference = make_trainer(tmp_path / "ref", params, loss="bce")
    reference.fit()
    killed = make_trainer(tmp_path / "run", params, loss="bce", method=SignalAt)
    with pytest.raises(TrainingInterrupted):
        killed.fit()
    resumed = make_trainer(tmp_path / "run", params, loss="bce", init_seed=123)
    resumed.fit()
    assert resumed.resumed_from is not None
    for (name, a), (_, b) in zip(reference.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert reference.state.evals == resumed.state.evals


def test_full_ranking_is_top_k_of_all_scores():
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, MAX_LEN, d_model=16, num_layers=1, num_heads=1, d_ff=32)
    ex = examples_from_frame(FRAMES["test"])
    items, scores = rank_examples(model, ex, ItemIdEncoder(N_ITEMS).collate, 7, 16)
    assert items.shape == scores.shape == (len(ex), 7)
    assert (np.diff(scores, axis=1) <= 0).all()
    enc = ItemIdEncoder(N_ITEMS)
    b = enc.collate(ex, np.arange(3))
    with torch.no_grad():
        full = model.eval()(b.input_ids, b.attention_mask)
    np.testing.assert_array_equal(items[:3], torch.argsort(full, dim=1, descending=True)[:, :7].numpy())


def _write_processed(root):
    paths = ArtifactPaths(root)
    items = pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(N_ITEMS), dtype=pl.Int32),
            "source_item_id": [str(i) for i in range(N_ITEMS)],
            "title": [f"item {i}" for i in range(N_ITEMS)],
        }
    )
    write_parquet(items, paths.items)
    for split, df in FRAMES.items():
        write_parquet(df, paths.examples(split))
    return paths


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_train_and_evaluate_stages_write_the_common_predictions_schema(tmp_path, kind):
    from stages import evaluate, train

    paths = _write_processed(tmp_path)
    params = Params()
    params.data.max_items = MAX_LEN
    params.recommender = small_params(epochs=3, device="cpu")
    params.recommender.model = kind
    params.evaluate.beam_size = 20
    params.evaluate.ks = [1, 5, 10, 20]
    train.run(params, tmp_path)
    summary = json.loads((paths.train_reports_dir / "summary.json").read_text())
    assert summary["model_kind"] == kind and summary["epochs"] == 3
    evaluate.run(params, tmp_path)
    preds = pl.read_parquet(paths.predictions)
    assert dict(preds.schema) == PREDICTION_SCHEMA
    assert preds.height == FRAMES["test"].height
    assert (preds["items"].list.len() == 20).all()
    assert all(len(set(row)) == 20 for row in preds["items"].to_list())  # distinct items
    assert all(np.all(np.diff(row) <= 0) for row in preds["scores"].to_list())  # best first
    assert preds["target_item"].to_list() == FRAMES["test"]["target"].to_list()
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["model"] == kind and metrics["users"] == preds.height
    from genrec_core.evaluation.metrics import metrics_from_predictions

    again = metrics_from_predictions(preds, [1, 5, 10, 20])
    assert all(abs(metrics[k] - v) < 1e-12 for k, v in again.items())


def test_a_generative_only_loss_is_refused():
    from genrec_core.errors import ParamError

    with pytest.raises(ParamError, match="recommender.loss"):
        SequentialLoss("cft")
